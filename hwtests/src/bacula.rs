//! A whole Bacula installation under two `watchkeeper run` agents, for the end-to-end tests and
//! the Bacula failover benchmark: Debian's Bacula 9.6 Director, Storage Daemon, File Daemon and
//! bconsole, a PostgreSQL 15 primary and streaming hot standby as the Catalog, ext4 on a loop
//! device as the backup storage, a virtual IP, and an `ipmi_sim` BMC per node whose power-off
//! stops every process of that node.
//!
//! What users run watchkeeper for must be proven with the real daemons, whose habits decide
//! the design: Bacula does not reconnect a dropped connection, and a Director that starts marks
//! every job the Catalog shows as running failed. Nothing is installed here:
//! `scripts/deps-bacula.sh` installs the packages; this module only writes configurations into
//! a temporary directory and starts programs.
//!
//! # The cluster
//!
//! - Three hosts, each a network namespace on one bridged Ethernet segment ([`Segment`]):
//!   `alpha` and `beta`, the nodes, each running its agent, its Catalog server, and, while it
//!   holds the group, the Storage Daemon and the Director on the virtual IP [`VIP`] (found by
//!   ARP, as on a real LAN); and the *client* at [`CLIENT_ADDR`], running the File Daemon and
//!   bconsole, which reach the Director and the Storage Daemon only through the virtual IP.
//!   Each node reaches the other's configuration replica at the other's own address.
//! - The BMCs (`ipmi_sim`) run on this machine's loopback and are reached from the nodes at the
//!   switch's address on the segment, through a UDP relay each ([`UdpRelay`]), as a
//!   management network would carry them.
//! - The Catalog servers listen on their own node's loopback (the Director connects there),
//!   and stream to each other through the Unix socket directory, which the namespaces share.
//! - Each node's resource group, in Bacula's order: `storage` (the loop device mounted at the
//!   node's own mountpoint, without fsck: see `agent_conf`), `catalog` (pgsql: promote the local standby; a former primary
//!   rejoins by `pg_rewind`), `address` (the virtual IP), `bacula-sd` and `bacula-dir` (script
//!   resources around the daemons' PID files), and `rerun-failed-jobs`, the post-takeover
//!   hook: a script resource whose start asks the new Director, through bconsole, for the
//!   backup jobs its own start-up marked failed and runs each of them again.
//! - The Director's node-local settings (working directory, Catalog port) are in each node's
//!   `bacula-dir.conf`; everything operators change (clients, storage, filesets, pools, jobs)
//!   is in `etc/shared/`, which `[replicate]` copies from the holder to the standby.
//! - The Catalog records every Director start: a statement trigger on `job` stores each
//!   `UPDATE Job SET JobStatus='f' ... WHERE JobStatus = 'R'`, the statement a 9.6 Director
//!   runs at start-up, with the time and the client port ([`BaculaCluster::director_starts`]).
//!
//! Because the two nodes share one machine, each node has its own agent configuration file
//! (Catalog data directory and port, mountpoint, replicated directory); on real hosts the file
//! is the same everywhere.
//!
//! # Contract
//!
//! - Needs root (namespaces, mount, PostgreSQL as `postgres`) and the packages;
//!   [`missing_prerequisites`] says what is missing.
//! - Every process is started here or by the agents started here, and stopped by PID: the
//!   agents through [`AgentProcess`], the daemons by the PIDs in their PID files (checked
//!   against `/proc/PID/exe` and the command line), the File Daemon as a child. Dropping the cluster powers both
//!   nodes off (the same script the BMCs run: it also detaches each node's mount), stops the
//!   File Daemon, reaps what was left to this process and detaches the loop device (the kernel
//!   frees it once nothing holds the filesystem), then removes the namespaces.
//! - Every wait is bounded in time and polls.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde_json::Value;

use crate::agent::{log_field, read_log_lines, watchkeeper_bin, AgentProcess};
use crate::cable::PtyCable;
use crate::ipmi_sim::{fence_device_toml, IpmiSim, IpmiSimConfig};
use crate::netns::{in_netns, Segment};
use crate::pair::NAMES;
use crate::pg::{Node, PgCluster};
use crate::rig::relay::UdpRelay;
use crate::status::{both_held, report_holds};
use crate::util::{run_bounded, run_bounded_input};

/// The Director's (and the Storage Daemon's) virtual IP, on the holder's LAN interface.
pub const VIP: &str = "10.231.0.100";
/// The client host's address (the File Daemon).
pub const CLIENT_ADDR: &str = "10.231.0.2";
/// The nodes' own addresses, alpha's then beta's.
pub const NODE_ADDRS: [&str; 2] = ["10.231.0.11", "10.231.0.12"];
/// The switch's address on the segment, where the BMC relays listen.
pub const SWITCH_ADDR: &str = "10.231.0.254";
/// Index of the client host in [`BaculaCluster::lan`].
pub const CLIENT: usize = 2;
/// The resources of the group, in start order.
pub const RESOURCES: [&str; 6] = [
    "storage",
    "catalog",
    "address",
    "bacula-sd",
    "bacula-dir",
    "rerun-failed-jobs",
];
/// Heartbeat interval of the agents: the takeover tests' value, fast enough for a test suite
/// and well above the scheduling jitter of a loaded 2-core CI machine.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Deadtime: a node silent this long on every link is dead (six heartbeats, as in the takeover
/// tests).
pub const DEADTIME: Duration = Duration::from_millis(600);
/// Longest wait for a change of holder, a job or a daemon: a failover takes about 2 s and a
/// backup here about 3 s; this is for a machine under load, and ends a hung test.
pub const WAIT: Duration = Duration::from_secs(60);

/// What went wrong while building or driving the cluster.
#[derive(Debug, thiserror::Error)]
pub enum BaculaError {
    /// A file or directory could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program failed or answered something unexpected.
    #[error("{what}: {detail}")]
    Command {
        /// The program and what it was asked.
        what: String,
        /// Its status and output, or what was wrong with them.
        detail: String,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {waited:?}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last thing seen, prefixed with ": " when present.
        detail: String,
    },
    /// A prerequisite of the cluster is missing.
    #[error("{0}")]
    Missing(String),
    /// Two nodes reported holding the group at once.
    #[error("two holders: {0}")]
    TwoHolders(String),
}

/// A daemon of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `bacula-dir`.
    Director,
    /// `bacula-sd`.
    Storage,
}

/// One recorded Director start, from the Catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorStart {
    /// Row number (in order of recording).
    pub id: u32,
    /// When, in seconds since the Unix epoch (PostgreSQL's clock, this machine's).
    pub at_unix: f64,
    /// The Director's TCP source port towards the Catalog.
    pub client_port: u32,
}

/// What is missing to run the cluster here, if anything.
pub fn missing_prerequisites() -> Option<String> {
    if !crate::netns::available() {
        return Some("needs root and iproute2 (network namespaces, mount, PostgreSQL)".into());
    }
    for bin in [BACULA_DIR, BACULA_SD, BACULA_FD, BCONSOLE] {
        if !Path::new(bin).is_file() {
            return Some(format!(
                "{bin} is missing: install with scripts/deps-bacula.sh"
            ));
        }
    }
    if !Path::new(CATALOG_SCRIPTS).join(MAKE_TABLES).is_file() {
        return Some(format!(
            "{CATALOG_SCRIPTS}/{MAKE_TABLES} is missing: install with scripts/deps-bacula.sh"
        ));
    }
    if crate::pg::pg_bindir().is_none() {
        return Some("PostgreSQL is missing: install with scripts/deps-bacula.sh".into());
    }
    for tool in ["losetup", "mkfs.ext4", "ipmi_sim", "ss"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!(
                "{tool} is missing: install with scripts/deps-resource.sh and deps-ipmi.sh"
            ));
        }
    }
    None
}

/// The running cluster; see the module docs.
#[derive(Debug)]
pub struct BaculaCluster {
    agents: [Option<AgentProcess>; 2],
    fd: Option<Child>,
    /// The serial heartbeat cable between the nodes (the only heartbeat path).
    pub cable: PtyCable,
    /// Each node's BMC.
    pub bmcs: [IpmiSim; 2],
    /// The Catalog servers: [`Node::A`] is alpha's, [`Node::B`] beta's.
    pub pg: PgCluster,
    /// The LAN: hosts alpha, beta and the client ([`CLIENT`]), in that order.
    pub lan: Segment,
    /// Each node's BMC as the nodes reach it, on the switch.
    bmc_relays: Vec<UdpRelay>,
    loop_dev: PathBuf,
    first_holder: usize,
    // Last, so everything above is gone before the directory is removed.
    dir: tempfile::TempDir,
}

impl BaculaCluster {
    /// Builds the cluster, starts the File Daemon and both agents, and waits until alpha holds
    /// the whole group and beta stands by with its copy of the shared Director configuration.
    pub fn start() -> Result<BaculaCluster, BaculaError> {
        if let Some(why) = missing_prerequisites() {
            return Err(BaculaError::Missing(why));
        }
        let addr = |a: &str| {
            a.parse().map_err(|e| BaculaError::Command {
                what: format!("address {a}"),
                detail: format!("{e}"),
            })
        };
        let lan = Segment::new(
            &["alpha", "beta", "client"],
            &[
                addr(NODE_ADDRS[0])?,
                addr(NODE_ADDRS[1])?,
                addr(CLIENT_ADDR)?,
            ],
            addr(SWITCH_ADDR)?,
        )
        .map_err(io("network namespaces"))?;
        let dir = tempfile::Builder::new()
            .prefix("wk-bacula-")
            .tempdir_in("/tmp")
            .map_err(io("temporary directory"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io("chmod temporary directory"))?;
        let pg = PgCluster::start();
        // Each Catalog server moves to its node: stopped, then started from its namespace.
        for n in [Node::B, Node::A] {
            pg.stop_node(n);
        }
        for (i, n) in [Node::A, Node::B].into_iter().enumerate() {
            in_netns(&lan.hosts[i], || {
                pg.start_node(n);
                Ok(())
            })
            .map_err(io("Catalog server in its namespace"))?;
        }
        pg.wait_streaming(Node::B);
        let bmcs = [
            IpmiSim::start(&IpmiSimConfig::default()),
            IpmiSim::start(&IpmiSimConfig::default()),
        ];
        let mut bmc_relays = Vec::new();
        for (j, bmc) in bmcs.iter().enumerate() {
            let target = bmc.address();
            let front = in_netns(&lan.switch, || {
                std::net::UdpSocket::bind((SWITCH_ADDR, BMC_PORTS[j]))
            })
            .map_err(io("BMC relay on the switch"))?;
            let back = std::net::UdpSocket::bind("127.0.0.1:0").map_err(io("BMC relay"))?;
            bmc_relays.push(UdpRelay::from_sockets(front, back, target).map_err(io("BMC relay"))?);
        }
        let cable = PtyCable::new(dir.path(), "tty-alpha", "tty-beta").map_err(io("pty cable"))?;
        let loop_dev = make_loop_fs(dir.path())?;
        let mut cluster = BaculaCluster {
            agents: [None, None],
            fd: None,
            cable,
            bmcs,
            pg,
            lan,
            bmc_relays,
            loop_dev,
            first_holder: 0,
            dir,
        };
        cluster.create_catalog()?;
        cluster.write_files()?;
        cluster.start_fd()?;
        for i in 0..2 {
            let script = cluster.power_off_script(i);
            cluster.bmcs[i].run_at_power_off(&script);
        }
        cluster.start_agent(0)?;
        cluster.start_agent(1)?;
        let holder = cluster.wait_any_holder(WAIT)?;
        cluster.wait_standby(1 - holder, WAIT)?;
        cluster.first_holder = holder;
        Ok(cluster)
    }

    /// The node elected when the cluster started (alpha, the lowest id, unless its agent was
    /// late), holding the group with its Catalog server as the primary.
    pub fn first_holder(&self) -> usize {
        self.first_holder
    }

    /// Node `i`'s Catalog server.
    pub fn catalog_node(i: usize) -> Node {
        node(i)
    }

    /// The loop device holding the backup storage filesystem.
    pub fn storage_device(&self) -> &Path {
        &self.loop_dev
    }

    /// The directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The files backed up by `BackupRig` (a few MB, modes and a symlink).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// Node `i`'s agent configuration file.
    pub fn config(&self, i: usize) -> PathBuf {
        self.dir().join(format!("{}.toml", NAMES[i]))
    }

    /// Node `i`'s agent log (JSON lines).
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir().join(format!("{}.log", NAMES[i]))
    }

    /// Node `i`'s Director configuration file.
    pub fn director_config(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("etc/bacula-dir.conf")
    }

    /// Node `i`'s replicated part of the Director configuration (the holder's is served, the
    /// standby's is its copy).
    pub fn shared_config(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("etc/shared/resources.conf")
    }

    /// Starts node `i`'s agent (after a crash: power it on first with `bmcs[i]`).
    pub fn start_agent(&mut self, i: usize) -> Result<(), BaculaError> {
        let bin = watchkeeper_bin().map_err(io("watchkeeper binary"))?;
        let config = self.config(i);
        // The agent runs in its node's namespace (nsenter execs it in place: the PID is the
        // agent's), and what it starts lives there too.
        let enter = self.lan.enter_command(i);
        let mut args: Vec<&std::ffi::OsStr> = enter[1..].iter().map(|a| a.as_ref()).collect();
        args.extend::<[&std::ffi::OsStr; 7]>([
            bin.as_os_str(),
            "run".as_ref(),
            "--log-json".as_ref(),
            "--node".as_ref(),
            NAMES[i].as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        let agent = AgentProcess::spawn(Path::new(&enter[0]), &args, &self.log(i))
            .map_err(io("start watchkeeper"))?;
        fs::write(self.agent_pid_file(i), format!("{}\n", agent.pid()))
            .map_err(io("agent PID file"))?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Node `i`'s agent process, if started and not crashed.
    pub fn agent(&mut self, i: usize) -> Option<&mut AgentProcess> {
        self.agents[i].as_mut()
    }

    /// Runs `watchkeeper ARGS --node NODE --config NODE.toml` to completion.
    pub fn watchkeeper(&self, i: usize, args: &[&str]) -> Result<Output, BaculaError> {
        let bin = watchkeeper_bin().map_err(io("watchkeeper binary"))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .args(["--node", NAMES[i], "--config"])
            .arg(self.config(i));
        run_bounded(&mut cmd, CLI_TIMEOUT).map_err(|detail| BaculaError::Command {
            what: format!("watchkeeper {args:?} on {}", NAMES[i]),
            detail,
        })
    }

    /// Node `i`'s resource report, if its agent answers.
    pub fn resources(&self, i: usize) -> Option<Value> {
        let out = self.watchkeeper(i, &["resources", "--json"]).ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until node `who` holds the group with every resource running; on every round
    /// checks that no two live, powered nodes hold it, by their agents' word and by the
    /// virtual IP on their interfaces. `alive` says whose agent to ask.
    pub fn wait_holder(
        &self,
        who: usize,
        alive: [bool; 2],
        timeout: Duration,
    ) -> Result<Duration, BaculaError> {
        let began = Instant::now();
        let mut last = Vec::new();
        while began.elapsed() < timeout {
            let reports: Vec<Option<Value>> = (0..2)
                .map(|i| if alive[i] { self.resources(i) } else { None })
                .collect();
            let holding = |i: usize| self.bmcs[i].power_on() && report_holds(reports[i].as_ref());
            if holding(0) && holding(1) {
                if let Some(again) = both_held(reports[0].as_ref(), || self.resources(0)) {
                    return Err(BaculaError::TwoHolders(format!(
                        "{reports:?} then {again:?}"
                    )));
                }
                thread::sleep(POLL);
                continue;
            }
            let vip_owners: Vec<&str> = (0..2)
                .filter(|&i| self.bmcs[i].power_on() && self.has_vip(i))
                .map(|i| NAMES[i])
                .collect();
            if vip_owners.len() > 1 {
                return Err(BaculaError::TwoHolders(format!(
                    "the virtual IP is on {vip_owners:?}"
                )));
            }
            if reports[who].as_ref().is_some_and(holds_all) {
                return Ok(began.elapsed());
            }
            last = reports;
            thread::sleep(POLL);
        }
        Err(BaculaError::Timeout {
            what: format!("{} holding the whole group", NAMES[who]),
            waited: timeout,
            detail: format!(": {last:?}"),
        })
    }

    /// Replays both agents' logs from `since`, when node `from` held the whole group, and
    /// fails at the first moment both ran a resource of it: the agents' own record of every
    /// completed start and stop, which a planned handover must order strictly (the releasing
    /// node's last stop before the taking node's first start).
    pub fn check_handover_since(
        &self,
        since: std::time::SystemTime,
        from: usize,
    ) -> Result<usize, String> {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default()
        };
        let t0 = secs(since);
        let held = self
            .resources(from)
            .ok_or_else(|| format!("{}'s agent does not answer", NAMES[from]))?;
        let mut events: Vec<(f64, String, String, String)> = held["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .map(|r| (t0, NAMES[from].to_owned(), "start".to_owned(), r.to_owned()))
            .collect();
        for (i, name) in NAMES.iter().enumerate() {
            for line in read_log_lines(&self.log(i)) {
                let Some(t) = crate::agent::log_timestamp(&line).map(secs) else {
                    continue;
                };
                let field = |k: &str| log_field(&line, k);
                let what = match field("event") {
                    Some("resource_started") => "start",
                    Some("resource_stopped") => "stop",
                    _ => continue,
                };
                if let (true, Some(resource)) = (t > t0, field("resource")) {
                    events.push((t, (*name).to_owned(), what.to_owned(), resource.to_owned()));
                }
            }
        }
        crate::rig::emulated::never_two_hosts(&mut events)?;
        Ok(events.len())
    }

    /// Whether node `i` has the virtual IP on its LAN interface.
    pub fn has_vip(&self, i: usize) -> bool {
        VIP.parse().is_ok_and(|vip| self.lan.has_address(i, vip))
    }

    /// Waits until one node holds the whole group (never two); which one.
    pub fn wait_any_holder(&self, timeout: Duration) -> Result<usize, BaculaError> {
        let began = Instant::now();
        while began.elapsed() < timeout {
            let holding: Vec<usize> = (0..2)
                .filter(|&i| self.resources(i).is_some_and(|r| holds_all(&r)))
                .collect();
            match holding.as_slice() {
                [one] => return Ok(*one),
                [] => thread::sleep(POLL),
                _ => {
                    return Err(BaculaError::TwoHolders(
                        "both report the whole group".into(),
                    ))
                }
            }
        }
        Err(BaculaError::Timeout {
            what: "a holder of the whole group".into(),
            waited: timeout,
            detail: String::new(),
        })
    }

    /// Waits until node `i` stands by: its agent answers as standby and holds nothing, its
    /// Catalog server streams from the primary and the agent has logged that it follows, and its
    /// copy of the shared Director
    /// configuration equals the holder's.
    pub fn wait_standby(&self, i: usize, timeout: Duration) -> Result<Duration, BaculaError> {
        let began = Instant::now();
        let mut last = String::new();
        while began.elapsed() < timeout {
            let report = self.resources(i);
            let standby = report
                .as_ref()
                .is_some_and(|r| r["holds"] == Value::Bool(false) && r["role"] == "Standby");
            let streaming = self
                .pg
                .sql(node(i), STREAMING_SQL)
                .is_ok_and(|s| s == "true|streaming");
            let copied = fs::read(self.shared_config(i)).ok().is_some()
                && fs::read(self.shared_config(i)).ok() == fs::read(self.shared_config(1 - i)).ok();
            // The agent's own word that its Catalog follows: until then a takeover by this node
            // waits for the rejoin to end.
            let following = standby
                && streaming
                && read_log_lines(&self.log(i))
                    .iter()
                    .any(|v| v["event"] == "resource_following" && v["resource"] == "catalog");
            if standby && streaming && copied && following {
                return Ok(began.elapsed());
            }
            last = format!(
                "standby {standby}, streaming {streaming}, copied {copied}, agent says following \
                 {following}: {report:?}"
            );
            thread::sleep(POLL);
        }
        Err(BaculaError::Timeout {
            what: format!("{} standing by", NAMES[i]),
            waited: timeout,
            detail: format!(": {last}"),
        })
    }

    /// Runs `commands` (one per line) through bconsole on the client host, which reaches the
    /// Director at the virtual IP; bconsole's output.
    pub fn bconsole(&self, commands: &str) -> Result<String, BaculaError> {
        let conf = self.dir().join("client/bconsole.conf");
        let input = format!("{commands}\nquit\n");
        let out = in_netns(&self.lan.hosts[CLIENT], || {
            Ok(run_bounded_input(
                Command::new(BCONSOLE).args(["-n", "-c"]).arg(&conf),
                &input,
                BCONSOLE_TIMEOUT,
            ))
        })
        .map_err(io("bconsole on the client"))?
        .map_err(|detail| BaculaError::Command {
            what: format!("bconsole {commands:?}"),
            detail,
        })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("bconsole.log"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if !out.status.success() {
            return Err(BaculaError::Command {
                what: format!("bconsole {commands:?}"),
                detail: format!(
                    "{}: {text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(text)
    }

    /// Whether `status dir` through bconsole at the virtual IP answers with the Director's
    /// banner.
    pub fn director_answers(&self) -> bool {
        self.bconsole("status dir")
            .is_ok_and(|o| o.contains("rig-dir Version: 9.6"))
    }

    /// Queues job `job` (`run job=NAME yes`); its JobId.
    pub fn run_job(&self, job: &str) -> Result<u32, BaculaError> {
        let out = self.bconsole(&format!("run job={job} yes"))?;
        queued_job_id(&out).ok_or_else(|| BaculaError::Command {
            what: format!("bconsole run job={job}"),
            detail: format!("no JobId in: {out}"),
        })
    }

    /// Queues a restore of every file of `jobid` under `where_` on the client; its JobId.
    pub fn restore(&self, jobid: u32, where_: &Path) -> Result<u32, BaculaError> {
        let out = self.bconsole(&format!(
            "restore jobid={jobid} client=client-fd where={} all done yes",
            where_.display()
        ))?;
        queued_job_id(&out).ok_or_else(|| BaculaError::Command {
            what: format!("bconsole restore jobid={jobid}"),
            detail: format!("no JobId in: {out}"),
        })
    }

    /// Runs `sql` in the Catalog database on whichever server is the primary.
    pub fn catalog(&self, sql: &str) -> Result<String, BaculaError> {
        let mut last = String::from("no primary");
        for n in [Node::A, Node::B] {
            if self.pg.in_recovery(n) == Some(false) {
                match self.pg.sql_in(n, "bacula", sql) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
        }
        Err(BaculaError::Command {
            what: format!("catalog query {sql:?}"),
            detail: last,
        })
    }

    /// The Catalog's status letter of job `jobid` (`R` running, `T` done, `f` failed, ...).
    pub fn job_status(&self, jobid: u32) -> Result<String, BaculaError> {
        self.catalog(&format!("SELECT jobstatus FROM job WHERE jobid = {jobid}"))
    }

    /// Waits until job `jobid` has ended; its status letter.
    pub fn wait_job(&self, jobid: u32, timeout: Duration) -> Result<String, BaculaError> {
        let began = Instant::now();
        let mut last = String::new();
        while began.elapsed() < timeout {
            if let Ok(s) = self.job_status(jobid) {
                if matches!(s.as_str(), "T" | "E" | "e" | "f" | "A" | "W") {
                    return Ok(s);
                }
                last = s;
            }
            thread::sleep(POLL);
        }
        Err(BaculaError::Timeout {
            what: format!("end of job {jobid}"),
            waited: timeout,
            detail: format!(": status {last:?}"),
        })
    }

    /// Runs `job` and waits until it ends; its JobId and status letter.
    pub fn backup(&self, job: &str) -> Result<(u32, String), BaculaError> {
        let id = self.run_job(job)?;
        let status = self.wait_job(id, WAIT)?;
        Ok((id, status))
    }

    /// Restores every file of `jobid` into a fresh directory and compares it with the backed-up
    /// data, file by file with `cmp`, symlinks by target, modes too; the restore's JobId.
    pub fn restore_and_compare(&self, jobid: u32, tag: &str) -> Result<u32, BaculaError> {
        let where_ = self.dir().join(format!("restore-{tag}"));
        let rid = self.restore(jobid, &where_)?;
        let status = self.wait_job(rid, WAIT)?;
        if status != "T" {
            return Err(BaculaError::Command {
                what: format!("restore {rid} of job {jobid}"),
                detail: format!("ended with status {status}"),
            });
        }
        let data = self.data_dir();
        let mut restored = where_.clone().into_os_string();
        restored.push(&data);
        compare_trees(&data, Path::new(&restored))?;
        Ok(rid)
    }

    /// Bytes the File Daemon reports sent for its running job, from `status client`.
    pub fn fd_bytes_sent(&self) -> Option<u64> {
        let out = self.bconsole("status client=client-fd").ok()?;
        out.lines().find_map(|l| {
            let rest = l.split("Bytes=").nth(1)?;
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    }

    /// Every Director start the Catalog recorded, oldest first.
    pub fn director_starts(&self) -> Result<Vec<DirectorStart>, BaculaError> {
        let text = self.catalog(
            "SELECT id || '|' || client_port || '|' || extract(epoch FROM at) \
             FROM wk_director_start ORDER BY id",
        )?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, '|');
                Some(DirectorStart {
                    id: it.next()?.parse().ok()?,
                    client_port: it.next()?.parse().ok()?,
                    at_unix: it.next()?.parse().ok()?,
                })
            })
            .collect())
    }

    /// The PID of node `i`'s running daemon, from its PID file, if that process runs the
    /// daemon's program.
    pub fn daemon_pid(&self, i: usize, daemon: Daemon) -> Option<Pid> {
        let (file, bin) = match daemon {
            Daemon::Director => (self.node_dir(i).join(DIR_PID_FILE), BACULA_DIR),
            Daemon::Storage => (self.node_dir(i).join(SD_PID_FILE), BACULA_SD),
        };
        let pid: i32 = fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        (exe == Path::new(bin) && crate::pg::alive(Pid::from_raw(pid))).then(|| Pid::from_raw(pid))
    }

    /// Whether node `i`'s backup storage is mounted.
    pub fn storage_mounted(&self, i: usize) -> bool {
        let mnt = self.node_dir(i).join("storage");
        fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&*mnt.to_string_lossy()))
        })
    }

    /// Crashes node `i`: every process of the node (agent, Director, Storage Daemon, Catalog
    /// server and its children) is killed with SIGKILL at once and its mount released, as a
    /// power loss would; its BMC still reads on. Returns when they are gone.
    pub fn crash(&mut self, i: usize) -> Result<(), BaculaError> {
        let script = self.power_off_script(i);
        let out = run_bounded(Command::new("sh").arg(&script), CLI_TIMEOUT).map_err(|detail| {
            BaculaError::Command {
                what: format!("{}", script.display()),
                detail,
            }
        })?;
        if !out.status.success() {
            return Err(BaculaError::Command {
                what: format!("{}", script.display()),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        eprintln!(
            "{} crashed: {}",
            NAMES[i],
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .replace('\n', "; ")
        );
        if let Some(mut agent) = self.agents[i].take() {
            let _ = agent.wait_exit(Duration::from_secs(5));
        }
        self.reap();
        Ok(())
    }

    /// Forgets node `i`'s agent after its BMC powered it off (the power-off script killed it),
    /// reaping it and whatever else of the node was left to this process.
    pub fn powered_off(&mut self, i: usize) {
        if let Some(mut agent) = self.agents[i].take() {
            let _ = agent.wait_exit(Duration::from_secs(5));
        }
        self.reap();
    }

    /// Reaps the node daemons and Catalog servers that were left to this process (it is their
    /// subreaper) and have exited: an unreaped server keeps its PID alive, and PostgreSQL and
    /// Bacula refuse to start over a PID file whose PID is alive.
    pub fn reap(&self) {
        let me = std::process::id().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        let fd = self.fd.as_ref().map(Child::id);
        for pid in entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if Some(pid) == fd {
                continue;
            }
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let comm = head.split_once('(').map_or("", |(_, c)| c);
            let mut fields = rest.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            if state == Some("Z")
                && ppid == Some(&*me)
                && matches!(comm, "postgres" | "bacula-dir" | "bacula-sd" | "pg_ctl")
            {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
    }

    /// Runs `bacula-dir -t` on node `i`'s configuration (the standby checks its copy).
    /// Runs in node `i`'s namespace: the check connects to the node's Catalog server.
    pub fn test_director_config(&self, i: usize) -> Result<Output, BaculaError> {
        in_netns(&self.lan.hosts[i], || {
            Ok(run_bounded(
                Command::new(BACULA_DIR)
                    .arg("-t")
                    .arg("-c")
                    .arg(self.director_config(i)),
                CLI_TIMEOUT,
            ))
        })
        .map_err(io("bacula-dir -t in the node's namespace"))?
        .map_err(|detail| BaculaError::Command {
            what: "bacula-dir -t".into(),
            detail,
        })
    }

    /// The lines node `i`'s post-takeover hook logged.
    pub fn rerun_log(&self, i: usize) -> String {
        fs::read_to_string(self.node_dir(i).join("rerun.log")).unwrap_or_default()
    }

    /// Prints the end of every log of the cluster to stderr, for a failed test or run.
    pub fn print_logs(&self) {
        let mut logs = vec![
            self.dir().join("bconsole.log"),
            self.dir().join("client/fd.log"),
        ];
        for i in 0..2 {
            let n = self.node_dir(i);
            logs.extend([
                n.join("dir-work/bacula.log"),
                n.join("rerun.log"),
                self.log(i),
                self.log(i).with_extension("log.stderr"),
            ]);
        }
        let dev = self.loop_dev.display().to_string();
        let holders = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -l '{dev} ' /proc/[0-9]*/mountinfo 2>/dev/null | head -n 5; \
                 fuser -vm {dev} 2>&1 | head -n 20; ls /sys/block/{b}/holders",
                b = dev.trim_start_matches("/dev/")
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("---- what holds {dev}:\n{holders}");
        for path in logs {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- {} (last {} lines)\n{}",
                path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir().join(NAMES[i])
    }

    fn agent_pid_file(&self, i: usize) -> PathBuf {
        self.dir().join(format!("{}.agent.pid", NAMES[i]))
    }

    fn power_off_script(&self, i: usize) -> PathBuf {
        self.dir().join(format!("{}-power-off.sh", NAMES[i]))
    }

    /// Debian's three catalog scripts against alpha's server (the primary), then the Director
    /// start recorder; waits until beta's standby has it all.
    fn create_catalog(&self) -> Result<(), BaculaError> {
        let port = self.pg.port(Node::A).to_string();
        let sock = self.pg.root().join("sock");
        let sock = sock.to_string_lossy();
        for script in [CREATE_DB, MAKE_TABLES, GRANT] {
            let mut cmd = Command::new(Path::new(CATALOG_SCRIPTS).join(script));
            cmd.args(["-h", &sock, "-p", &port, "-U", "postgres"])
                .env("PGPASSWORD", crate::pg::SUPERUSER_PASSWORD)
                .env("db_name", "bacula")
                .env("db_user", "bacula")
                .env("db_password", DB_PASSWORD)
                .current_dir("/");
            let out =
                run_bounded(&mut cmd, CLI_TIMEOUT).map_err(|detail| BaculaError::Command {
                    what: script.into(),
                    detail,
                })?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() || text.contains("ERROR") {
                return Err(BaculaError::Command {
                    what: format!("{CATALOG_SCRIPTS}/{script}"),
                    detail: format!("{}: {text}", out.status),
                });
            }
        }
        self.pg
            .sql_in(Node::A, "bacula", RECORDER_SQL)
            .map_err(|detail| BaculaError::Command {
                what: "Director start recorder".into(),
                detail,
            })?;
        let began = Instant::now();
        while began.elapsed() < WAIT {
            if self
                .pg
                .sql_in(Node::B, "bacula", "SELECT count(*) FROM wk_director_start")
                .is_ok()
            {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        Err(BaculaError::Timeout {
            what: "the Catalog on beta's standby".into(),
            waited: WAIT,
            detail: String::new(),
        })
    }

    /// Test data, Bacula configurations, the daemons' control script, the post-takeover hook,
    /// the power-off scripts and the agents' configurations.
    fn write_files(&self) -> Result<(), BaculaError> {
        let d = self.dir().to_path_buf();
        let data = self.data_dir();
        mkdirs(&[
            data.join("sub/deeper"),
            d.join("slow"),
            d.join("client/work"),
        ])?;
        for i in 0..4u8 {
            write(
                &data.join(format!("blob{i}.bin")),
                &pseudo_random(512 << 10, i),
            )?;
        }
        for i in 0..20 {
            write(
                &data.join(format!("sub/f{i}.txt")),
                format!("small file {i}\n").as_bytes(),
            )?;
        }
        write(
            &data.join("sub/deeper/with space.bin"),
            &pseudo_random(300_000, 9),
        )?;
        std::os::unix::fs::symlink("../blob1.bin", data.join("sub/link-to-blob1"))
            .map_err(io("symlink"))?;
        fs::set_permissions(data.join("blob2.bin"), fs::Permissions::from_mode(0o600))
            .map_err(io("chmod"))?;
        for i in 0..SLOW_FILES {
            write(
                &d.join(format!("slow/s{i}.bin")),
                &pseudo_random(1 << 20, 100 + i),
            )?;
        }
        write(&d.join("client/bacula-fd.conf"), self.fd_conf().as_bytes())?;
        write(&d.join("client/bconsole.conf"), bconsole_conf().as_bytes())?;
        let ctl = d.join("bacula-ctl.sh");
        write(&ctl, CTL_SCRIPT.as_bytes())?;
        chmod_x(&ctl)?;
        let hook = d.join("rerun-failed-jobs.sh");
        write(&hook, RERUN_SCRIPT.as_bytes())?;
        chmod_x(&hook)?;
        let key = d.join("cluster.key");
        let key_text: String = (0..64)
            .map(|i| char::from(b"0123456789abcdef"[(i * 5 + 1) % 16]))
            .collect();
        write(&key, format!("{key_text}\n").as_bytes())?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).map_err(io("chmod key"))?;
        for i in 0..2 {
            let n = self.node_dir(i);
            mkdirs(&[
                n.join("etc/shared"),
                n.join("dir-work"),
                n.join("sd-work"),
                n.join("storage"),
                n.join("state"),
            ])?;
            write(&n.join("etc/bacula-dir.conf"), self.dir_conf(i).as_bytes())?;
            write(&self.shared_config(i), self.shared_conf().as_bytes())?;
            write(&n.join("bacula-sd.conf"), self.sd_conf(i).as_bytes())?;
            write(&n.join("bconsole.conf"), bconsole_conf().as_bytes())?;
            write(&self.power_off_script(i), self.power_off(i)?.as_bytes())?;
            write(&self.config(i), self.agent_conf(i).as_bytes())?;
        }
        Ok(())
    }

    /// Starts the File Daemon on the client host.
    fn start_fd(&mut self) -> Result<(), BaculaError> {
        let log = fs::File::create(self.dir().join("client/fd.log")).map_err(io("fd log"))?;
        let conf = self.dir().join("client/bacula-fd.conf");
        let stdout = log.try_clone().map_err(io("fd log"))?;
        let child = in_netns(&self.lan.hosts[CLIENT], || {
            Command::new(BACULA_FD)
                .args(["-f", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(log)
                .spawn()
        })
        .map_err(io("start bacula-fd"))?;
        self.fd = Some(child);
        let began = Instant::now();
        while began.elapsed() < DAEMON_TIMEOUT {
            let listening = in_netns(&self.lan.hosts[CLIENT], || {
                Command::new("ss")
                    .arg("-Hltn")
                    .arg(format!("sport = :{FD_PORT}"))
                    .output()
            })
            .map_err(io("ss"))?;
            if !listening.stdout.is_empty() {
                return Ok(());
            }
            thread::sleep(POLL);
        }
        Err(BaculaError::Timeout {
            what: "bacula-fd listening".into(),
            waited: DAEMON_TIMEOUT,
            detail: fs::read_to_string(self.dir().join("client/fd.log"))
                .map(|l| format!(": {l}"))
                .unwrap_or_default(),
        })
    }

    fn dir_conf(&self, i: usize) -> String {
        let n = self.node_dir(i);
        format!(
            "# {name}'s own Director settings; the shared part is replicated from the holder.\n\
             Director {{\n  Name = rig-dir\n  DIRport = {DIR_PORT}\n  DirAddress = {VIP}\n  \
             QueryFile = \"/etc/bacula/scripts/query.sql\"\n  WorkingDirectory = \"{w}\"\n  \
             PidDirectory = \"{w}\"\n  Maximum Concurrent Jobs = 10\n  Password = \"{DIR_PASSWORD}\"\n  \
             Messages = Standard\n}}\n\
             Catalog {{\n  Name = RigCatalog\n  dbname = \"bacula\"\n  dbaddress = \"127.0.0.1\"\n  \
             dbport = {port}\n  dbuser = \"bacula\"\n  dbpassword = \"{DB_PASSWORD}\"\n}}\n\
             Messages {{\n  Name = Standard\n  append = \"{w}/bacula.log\" = all, !skipped\n  \
             console = all, !skipped, !saved\n  catalog = all, !skipped\n}}\n\
             @{shared}\n",
            name = NAMES[i],
            w = n.join("dir-work").display(),
            port = self.pg.port(node(i)),
            shared = self.shared_config(i).display(),
        )
    }

    fn shared_conf(&self) -> String {
        let d = self.dir();
        format!(
            "# Replicated from the holder to the standby by watchkeeper ([replicate]).\n\
             Client {{\n  Name = client-fd\n  Address = {CLIENT_ADDR}\n  FDPort = {FD_PORT}\n  \
             Catalog = RigCatalog\n  Password = \"{FD_PASSWORD}\"\n  File Retention = 30 days\n  \
             Job Retention = 6 months\n  AutoPrune = no\n}}\n\
             Storage {{\n  Name = RigStorage\n  Address = {VIP}\n  SDPort = {SD_PORT}\n  \
             Password = \"{SD_PASSWORD}\"\n  Device = RigFileDev\n  Media Type = RigFile\n  \
             Maximum Concurrent Jobs = 10\n}}\n\
             FileSet {{\n  Name = RigSet\n  Include {{\n    Options {{ signature = MD5 }}\n    \
             File = \"{data}\"\n  }}\n}}\n\
             FileSet {{\n  Name = SlowSet\n  Include {{\n    Options {{ signature = MD5 }}\n    \
             File = \"{slow}\"\n  }}\n}}\n\
             Pool {{\n  Name = RigPool\n  Pool Type = Backup\n  Recycle = yes\n  AutoPrune = yes\n  \
             Volume Retention = 365 days\n  Maximum Volume Bytes = 1G\n  Maximum Volumes = 50\n  \
             Label Format = \"RigVol-\"\n}}\n\
             Job {{\n  Name = BackupRig\n  Type = Backup\n  Level = Full\n  Client = client-fd\n  \
             FileSet = RigSet\n  Storage = RigStorage\n  Pool = RigPool\n  Messages = Standard\n}}\n\
             Job {{\n  Name = BackupSlow\n  Type = Backup\n  Level = Full\n  Client = client-fd\n  \
             FileSet = SlowSet\n  Storage = RigStorage\n  Pool = RigPool\n  Messages = Standard\n  \
             Maximum Bandwidth = {SLOW_BANDWIDTH}\n}}\n\
             Job {{\n  Name = RestoreRig\n  Type = Restore\n  Client = client-fd\n  FileSet = RigSet\n  \
             Storage = RigStorage\n  Pool = RigPool\n  Messages = Standard\n  \
             Where = \"{restore}\"\n}}\n",
            data = self.data_dir().display(),
            slow = d.join("slow").display(),
            restore = d.join("restore-default").display(),
        )
    }

    fn sd_conf(&self, i: usize) -> String {
        let n = self.node_dir(i);
        format!(
            "Storage {{\n  Name = rig-sd\n  SDPort = {SD_PORT}\n  SDAddress = {VIP}\n  \
             WorkingDirectory = \"{w}\"\n  Pid Directory = \"{w}\"\n  Maximum Concurrent Jobs = 20\n}}\n\
             Director {{\n  Name = rig-dir\n  Password = \"{SD_PASSWORD}\"\n}}\n\
             Device {{\n  Name = RigFileDev\n  Media Type = RigFile\n  Archive Device = \"{s}\"\n  \
             LabelMedia = yes\n  Random Access = yes\n  AutomaticMount = yes\n  \
             RemovableMedia = no\n  AlwaysOpen = no\n  Maximum Concurrent Jobs = 5\n}}\n\
             Messages {{\n  Name = Standard\n  director = rig-dir = all\n}}\n",
            w = n.join("sd-work").display(),
            s = n.join("storage").display(),
        )
    }

    fn fd_conf(&self) -> String {
        format!(
            "FileDaemon {{\n  Name = client-fd\n  FDport = {FD_PORT}\n  FDAddress = {CLIENT_ADDR}\n  \
             WorkingDirectory = \"{w}\"\n  Pid Directory = \"{w}\"\n  Maximum Concurrent Jobs = 20\n  \
             Plugin Directory = /usr/lib/bacula\n}}\n\
             Director {{\n  Name = rig-dir\n  Password = \"{FD_PASSWORD}\"\n}}\n\
             Messages {{\n  Name = Standard\n  director = rig-dir = all, !skipped, !restored\n}}\n",
            w = self.dir().join("client/work").display(),
        )
    }

    /// The script that ends node `i` as a power cut would: every process of the node killed
    /// with SIGKILL at once (the agent, the daemons, the Catalog server and its children, by the
    /// PIDs in their PID files, each checked to be that node's program with that node's files
    /// on its command line, so a stale PID file never hits another process), then its mount
    /// detached.
    fn power_off(&self, i: usize) -> Result<String, BaculaError> {
        let bin = watchkeeper_bin().map_err(io("watchkeeper binary"))?;
        let bin = fs::canonicalize(&bin).unwrap_or(bin);
        let n = self.node_dir(i);
        Ok(POWER_OFF_SCRIPT
            .replace("@NAME@", NAMES[i])
            .replace("@AGENT_PID@", &self.agent_pid_file(i).display().to_string())
            .replace("@WATCHKEEPER@", &bin.display().to_string())
            .replace("@CONFIG@", &self.config(i).display().to_string())
            .replace("@NODE@", &n.display().to_string())
            .replace("@DIR_PID@", DIR_PID_FILE)
            .replace("@SD_PID@", SD_PID_FILE)
            .replace("@DATADIR@", &self.pg.datadir(node(i)).display().to_string())
            .replace("@NETNS@", &self.lan.hosts[i])
            .replace("@VIP@", VIP)
            .replace("@DEV@", Segment::DEV))
    }

    fn agent_conf(&self, i: usize) -> String {
        let d = self.dir();
        let mut t = String::new();
        let _ = write!(
            t,
            "# {me}'s watchkeeper configuration: the Bacula resource group.\n\
             [cluster]\nname = \"bacula\"\nkey_file = \"cluster.key\"\n\n\
             [timing]\nheartbeat_interval = \"{hb}ms\"\ndeadtime = \"{dt}ms\"\n\n\
             [[link]]\nname = \"serial0\"\nkind = \"serial\"\n\n",
            me = NAMES[i],
            hb = INTERVAL.as_millis(),
            dt = DEADTIME.as_millis(),
        );
        for (j, name) in NAMES.iter().enumerate() {
            let dev = if j == 0 {
                self.cable.a_path()
            } else {
                self.cable.b_path()
            };
            let _ = write!(
                t,
                "[[node]]\nid = {id}\nname = \"{name}\"\ncontrol_socket = \"{name}.sock\"\n\
                 state_dir = \"{name}/state\"\nfencing = [[\"ipmi-{name}\"]]\n\
                 replicate = \"{addr}:{port}\"\nlinks.serial0 = {{ device = \"{dev}\" }}\n\n",
                id = j + 1,
                addr = NODE_ADDRS[j],
                port = REPLICATE_PORTS[j],
                dev = dev.display(),
            );
        }
        let _ = write!(
            t,
            "[failover]\nfence_delay = \"300ms\"\nstartup_timeout = \"3s\"\n\n"
        );
        for (j, name) in NAMES.iter().enumerate() {
            t.push_str(&fence_device_toml(
                &format!("ipmi-{name}"),
                name,
                self.bmc_relays[j].front(),
                "5s",
            ));
        }
        t.push('\n');
        let _ = write!(
            t,
            "[replicate]\nsource = {{ alpha = \"{a}\", beta = \"{b}\" }}\ninterval = \"300ms\"\n\n",
            a = self.node_dir(0).join("etc/shared").display(),
            b = self.node_dir(1).join("etc/shared").display(),
        );
        let n = self.node_dir(i);
        // fsck = "never": one kernel serves both nodes here, so the filesystem a crashed node
        // had mounted lives on (its detached mount, or a copy in a mount namespace another
        // program on the machine made meanwhile) and fsck would find the device busy. Mounting
        // it again shares that superblock, which is safe on one kernel. On real hosts the
        // power-off ends it, and `fsck = "preen"` is the setting (docs/bacula.md).
        let ctl = d.join("bacula-ctl.sh");
        let hook = d.join("rerun-failed-jobs.sh");
        let _ = write!(
            t,
            "[[resource]]\nname = \"storage\"\ntype = \"mount\"\ndevice = \"{dev}\"\n\
             mountpoint = \"{mnt}\"\nfstype = \"ext4\"\noptions = [\"noatime\"]\nfsck = \"never\"\n\n\
             [[resource]]\nname = \"catalog\"\ntype = \"pgsql\"\nbindir = \"{bindir}\"\n\
             datadir = \"{datadir}\"\nport = {port}\nhost = \"127.0.0.1\"\nuser = \"postgres\"\n\
             password_file = \"{pgpass}\"\n\
             primary_conninfo = {{ alpha = \"{ca}\", beta = \"{cb}\" }}\nrejoin = \"rewind\"\n\
             start_timeout = \"60s\"\n\n\
             [[resource]]\nname = \"address\"\ntype = \"vip\"\naddress = \"{VIP}/24\"\n\
             interface = \"{iface}\"\n\n",
            dev = self.loop_dev.display(),
            mnt = n.join("storage").display(),
            bindir = self.pg.bindir().display(),
            datadir = self.pg.datadir(node(i)).display(),
            port = self.pg.port(node(i)),
            pgpass = self.pg.password_file().display(),
            ca = self.pg.conninfo_to(Node::B, Node::A),
            cb = self.pg.conninfo_to(Node::A, Node::B),
            iface = Segment::DEV,
        );
        for (name, daemon) in [("bacula-sd", "sd"), ("bacula-dir", "dir")] {
            let _ = write!(
                t,
                "[[resource]]\nname = \"{name}\"\ntype = \"script\"\n\
                 start = [\"{c}\", \"start\", \"{daemon}\", \"{n}\"]\n\
                 stop = [\"{c}\", \"stop\", \"{daemon}\", \"{n}\"]\n\
                 status = [\"{c}\", \"status\", \"{daemon}\", \"{n}\"]\n\
                 start_timeout = \"30s\"\nstop_timeout = \"30s\"\nmonitor_interval = \"2s\"\n\n",
                c = ctl.display(),
                n = n.display(),
            );
        }
        let _ = write!(
            t,
            "# The post-takeover hook: re-runs the backups the new Director's start marked failed.\n\
             [[resource]]\nname = \"rerun-failed-jobs\"\ntype = \"script\"\n\
             start = [\"{h}\", \"start\", \"{n}\"]\nstop = [\"{h}\", \"stop\", \"{n}\"]\n\
             status = [\"{h}\", \"status\", \"{n}\"]\nstart_timeout = \"60s\"\n",
            h = hook.display(),
            n = n.display(),
        );
        t
    }
}

impl Drop for BaculaCluster {
    fn drop(&mut self) {
        if thread::panicking() {
            self.print_logs();
        }
        for agent in self.agents.iter_mut().flatten() {
            let _ = agent.kill(Signal::SIGKILL);
        }
        for i in 0..2 {
            let _ = run_bounded(
                Command::new("sh").arg(self.power_off_script(i)),
                CLI_TIMEOUT,
            );
        }
        for agent in &mut self.agents {
            drop(agent.take());
        }
        if let Some(mut fd) = self.fd.take() {
            if let Ok(raw) = i32::try_from(fd.id()) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
            let _ = fd.wait();
        }
        self.reap();
        let began = Instant::now();
        while began.elapsed() < DAEMON_TIMEOUT && (0..2).any(|i| self.storage_mounted(i)) {
            thread::sleep(POLL);
            for i in 0..2 {
                let _ = Command::new("umount")
                    .arg(self.node_dir(i).join("storage"))
                    .output();
            }
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loop_dev)
            .output();
    }
}

/// Node `i`'s Catalog server.
fn node(i: usize) -> Node {
    if i == 0 {
        Node::A
    } else {
        Node::B
    }
}

fn holds_all(report: &Value) -> bool {
    report["holds"] == Value::Bool(true)
        && report["resources"].as_array().is_some_and(|r| {
            r.len() == RESOURCES.len() && r.iter().all(|r| r["state"] == "running")
        })
}

/// The JobId in bconsole's "Job queued. JobId=N".
fn queued_job_id(out: &str) -> Option<u32> {
    out.split("Job queued. JobId=")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// An ext4 image in `dir` on a loop device; the device.
fn make_loop_fs(dir: &Path) -> Result<PathBuf, BaculaError> {
    let image = dir.join("storage.img");
    let file = fs::File::create(&image).map_err(io("storage image"))?;
    file.set_len(STORAGE_BYTES)
        .map_err(io("size storage image"))?;
    drop(file);
    let out = run_bounded(
        Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image),
        CLI_TIMEOUT,
    )
    .map_err(|detail| BaculaError::Command {
        what: "mkfs.ext4".into(),
        detail,
    })?;
    if !out.status.success() {
        return Err(BaculaError::Command {
            what: "mkfs.ext4".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let out = run_bounded(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image),
        CLI_TIMEOUT,
    )
    .map_err(|detail| BaculaError::Command {
        what: "losetup".into(),
        detail,
    })?;
    let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || device.is_empty() {
        return Err(BaculaError::Command {
            what: "losetup --find --show".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(PathBuf::from(device))
}

/// Compares the tree `restored` with `original`: every regular file with `cmp`, every symlink
/// by its target, every mode.
fn compare_trees(original: &Path, restored: &Path) -> Result<(), BaculaError> {
    let mut stack = vec![PathBuf::new()];
    let mut files = 0usize;
    while let Some(rel) = stack.pop() {
        let entries = fs::read_dir(original.join(&rel)).map_err(io("read original"))?;
        for e in entries.filter_map(Result::ok) {
            let rel = rel.join(e.file_name());
            let (a, b) = (original.join(&rel), restored.join(&rel));
            let (ma, mb) = (
                fs::symlink_metadata(&a).map_err(io("stat original"))?,
                fs::symlink_metadata(&b).map_err(|e| BaculaError::Command {
                    what: "restore".into(),
                    detail: format!("{} missing: {e}", b.display()),
                })?,
            );
            let differ = |what: &str| BaculaError::Command {
                what: "restore".into(),
                detail: format!("{} differs from the original: {what}", b.display()),
            };
            if ma.permissions().mode() != mb.permissions().mode() {
                return Err(differ("mode"));
            }
            if ma.file_type().is_symlink() {
                if fs::read_link(&a).ok() != fs::read_link(&b).ok() {
                    return Err(differ("symlink target"));
                }
            } else if ma.is_dir() {
                stack.push(rel);
            } else {
                let out = Command::new("cmp")
                    .arg(&a)
                    .arg(&b)
                    .output()
                    .map_err(io("cmp"))?;
                if !out.status.success() {
                    return Err(differ(&String::from_utf8_lossy(&out.stdout)));
                }
                files += 1;
            }
        }
    }
    if files == 0 {
        return Err(BaculaError::Command {
            what: "restore".into(),
            detail: "no file compared".into(),
        });
    }
    Ok(())
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> BaculaError {
    move |source| BaculaError::Io {
        what: what.to_owned(),
        source,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BaculaError> {
    fs::write(path, bytes).map_err(|source| BaculaError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}

fn mkdirs(dirs: &[PathBuf]) -> Result<(), BaculaError> {
    for d in dirs {
        fs::create_dir_all(d).map_err(|source| BaculaError::Io {
            what: format!("mkdir {}", d.display()),
            source,
        })?;
    }
    Ok(())
}

fn chmod_x(path: &Path) -> Result<(), BaculaError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io("chmod +x"))
}

/// `len` bytes that do not compress (xorshift), different for each `seed`.
fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01B3);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn bconsole_conf() -> String {
    format!(
        "Director {{\n  Name = rig-dir\n  DIRport = {DIR_PORT}\n  address = {VIP}\n  \
         Password = \"{DIR_PASSWORD}\"\n}}\n"
    )
}

/// Power-off of a node (see `BaculaCluster::power_off`); `@...@` are filled in per node.
const POWER_OFF_SCRIPT: &str = r#"#!/bin/sh
# Power-off of @NAME@: what its BMC does to it, and what a crash is.
ours() {
  [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$2" ] || return 1
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$3"
}
pids=""
p=$(cat "@AGENT_PID@" 2>/dev/null)
[ -n "$p" ] && ours "$p" "@WATCHKEEPER@" "@CONFIG@" && pids="$pids $p"
p=$(cat "@NODE@/@DIR_PID@" 2>/dev/null)
[ -n "$p" ] && ours "$p" /usr/sbin/bacula-dir "@NODE@/" && pids="$pids $p"
p=$(cat "@NODE@/@SD_PID@" 2>/dev/null)
[ -n "$p" ] && ours "$p" /usr/sbin/bacula-sd "@NODE@/" && pids="$pids $p"
pm=$(head -n 1 "@DATADIR@/postmaster.pid" 2>/dev/null)
if [ -n "$pm" ] && [ "$(readlink "/proc/$pm/cwd")" = "@DATADIR@" ]; then
  pids="$pids $pm"
  for d in /proc/[0-9]*; do
    read -r stat 2>/dev/null < "$d/stat" || continue
    # After the command name: state, then the parent's PID.
    set -- ${stat##*) }
    [ "$2" = "$pm" ] && pids="$pids ${d#/proc/}"
  done
fi
[ -n "$pids" ] && kill -9 $pids 2>/dev/null
echo "$(date +%s.%N) killed:$pids"
# The node's view of its filesystem ends with it: detached at once (a BMC does not wait).
# The superblock lives on until nothing holds it; a mount by the peer shares it, as one kernel
# serves both nodes here.
if grep -q " @NODE@/storage " /proc/self/mounts; then
  umount -l "@NODE@/storage" && echo "$(date +%s.%N) detached @NODE@/storage"
fi
# So do its addresses: the virtual IP is not on the node when it boots again.
ip -n "@NETNS@" addr del "@VIP@/24" dev "@DEV@" 2>/dev/null && echo "$(date +%s.%N) dropped @VIP@"
exit 0
"#;

/// Starts, stops and checks a node's Storage Daemon or Director by the PID in its PID file
/// (checked against the program, so a reused PID is never taken for the daemon). A start
/// returns once the daemon listens; a stop waits for the exit (a Director takes about 3 s to
/// end on SIGTERM), then SIGKILL.
const CTL_SCRIPT: &str = r#"#!/bin/sh
# bacula-ctl.sh start|stop|status sd|dir NODE_DIR
action=$1; daemon=$2; n=$3
case "$daemon" in
  sd) bin=/usr/sbin/bacula-sd; conf=$n/bacula-sd.conf; pidfile=$n/sd-work/bacula-sd.9103.pid; port=9103 ;;
  dir) bin=/usr/sbin/bacula-dir; conf=$n/etc/bacula-dir.conf; pidfile=$n/dir-work/bacula-dir.9101.pid; port=9101 ;;
  *) echo "unknown daemon $daemon" >&2; exit 2 ;;
esac
running() {
  [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$bin" ] || return 1
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$conf" || return 1
  [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1)" != Z ]
}
alive() { [ -s "$pidfile" ] && running "$(cat "$pidfile")"; }
case "$action" in
  start)
    alive && exit 0
    rm -f "$pidfile"
    "$bin" -c "$conf" </dev/null >/dev/null 2>&1 || exit 1
    i=0
    while [ $i -lt 400 ]; do
      # Listening, and the listener is this daemon (not one still on its way out).
      if alive && ss -Hltnp "sport = :$port" | grep -q "pid=$(cat "$pidfile"),"; then exit 0; fi
      sleep 0.025; i=$((i + 1))
    done
    echo "$daemon did not come up" >&2; exit 1 ;;
  stop)
    alive || { rm -f "$pidfile"; exit 0; }
    # The daemon removes its PID file before it has exited: wait for the process itself.
    p=$(cat "$pidfile")
    kill -TERM "$p"
    i=0
    while running "$p" && [ $i -lt 400 ]; do sleep 0.025; i=$((i + 1)); done
    running "$p" && kill -KILL "$p"
    i=0
    while running "$p" && [ $i -lt 200 ]; do sleep 0.025; i=$((i + 1)); done
    running "$p" && exit 1
    rm -f "$pidfile"; exit 0 ;;
  status)
    alive && exit 0; exit 3 ;;
esac
exit 2
"#;

/// The post-takeover hook. A Director that starts marks every job the Catalog shows as running
/// failed (`JobStatus='f'`, `EndTime=StartTime`): on a takeover, those are the backups the old
/// holder was running. Its start asks the Director (bconsole `.sql`) for backups in that state
/// with no later run of the same job, and runs each again; stop and status keep a state file.
const RERUN_SCRIPT: &str = r#"#!/bin/sh
# rerun-failed-jobs.sh start|stop|status NODE_DIR
action=$1; n=$2; state=$n/rerun.state; log=$n/rerun.log
con() { /usr/sbin/bconsole -n -c "$n/bconsole.conf"; }
case "$action" in
  start)
    q="SELECT 'rerun:' || j.Name FROM Job j WHERE j.Type = 'B' AND j.JobStatus = 'f' AND j.EndTime = j.StartTime AND NOT EXISTS (SELECT 1 FROM Job k WHERE k.Name = j.Name AND k.JobId > j.JobId) ORDER BY j.JobId"
    out=$(printf '.sql query="%s"\nquit\n' "$q" | con) || { echo "$(date +%s.%N) bconsole failed: $out" >> "$log"; exit 1; }
    names=$(printf '%s\n' "$out" | grep -o 'rerun:[A-Za-z0-9_.-]\+' | sed 's/^rerun://' | sort -u)
    for j in $names; do
      r=$(printf 'run job=%s yes\nquit\n' "$j" | con)
      echo "$(date +%s.%N) rerun $j: $(printf '%s\n' "$r" | grep -o 'JobId=[0-9]*' | head -n 1)" >> "$log"
    done
    [ -n "$names" ] || printf '%s\n' "$out" >> "$log"
    echo "$(date +%s.%N) checked: ${names:-nothing to rerun}" >> "$log"
    : > "$state"; exit 0 ;;
  stop) rm -f "$state"; exit 0 ;;
  status) [ -e "$state" ] && exit 0; exit 3 ;;
esac
exit 2
"#;

/// The Catalog's record of Director starts: a statement trigger on `job` (it fires even when no
/// row changes) that keeps the start-up statement of a 9.6 Director, who ran it and when.
const RECORDER_SQL: &str = r"
CREATE TABLE wk_director_start (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), client_port int, query text);
CREATE FUNCTION wk_record_director_start() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF current_query() LIKE '%JobStatus=''f''%WHERE JobStatus = ''R''%' THEN
    INSERT INTO wk_director_start (client_port, query) VALUES (coalesce(inet_client_port(), 0), current_query());
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER wk_director_start AFTER UPDATE ON job FOR EACH STATEMENT EXECUTE FUNCTION wk_record_director_start();
";

const STREAMING_SQL: &str = "SELECT pg_is_in_recovery()::text || '|' || \
                             coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')";
const BACULA_DIR: &str = "/usr/sbin/bacula-dir";
const BACULA_SD: &str = "/usr/sbin/bacula-sd";
const BACULA_FD: &str = "/usr/sbin/bacula-fd";
const BCONSOLE: &str = "/usr/sbin/bconsole";
/// Where Debian's bacula-director-pgsql keeps the catalog scripts.
const CATALOG_SCRIPTS: &str = "/usr/share/bacula-director";
const CREATE_DB: &str = "create_postgresql_database";
const MAKE_TABLES: &str = "make_postgresql_tables";
const GRANT: &str = "grant_postgresql_privileges";
/// Bacula's standard ports; the namespaces are the test's own, so nothing else uses them.
const DIR_PORT: u16 = 9101;
const FD_PORT: u16 = 9102;
const SD_PORT: u16 = 9103;
const DIR_PID_FILE: &str = "dir-work/bacula-dir.9101.pid";
const SD_PID_FILE: &str = "sd-work/bacula-sd.9103.pid";
/// Each node's replication address on the cluster namespace's loopback.
const REPLICATE_PORTS: [u16; 2] = [5406, 5407];
/// Each node's BMC on the switch (the IPMI port's neighbours: alpha's, beta's).
const BMC_PORTS: [u16; 2] = [6230, 6231];
/// Passwords of this throw-away installation (daemons on the test's own namespaces only).
const DIR_PASSWORD: &str = "wk-dir-pw";
const SD_PASSWORD: &str = "wk-sd-pw";
const FD_PASSWORD: &str = "wk-fd-pw";
const DB_PASSWORD: &str = "wk-bacula-pw";
/// `BackupSlow` sends this many MiB at [`SLOW_BANDWIDTH`]: long enough to crash a node in the
/// middle of it, short enough to run again within the test budget.
const SLOW_FILES: u8 = 6;
const SLOW_BANDWIDTH: &str = "2 mb/s";
/// The backup storage: room for a few dozen small backups.
const STORAGE_BYTES: u64 = 128 << 20;
/// How often waits look again: a fraction of a heartbeat, few enough processes on 2 cores.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// A bconsole run: the Director answers in well under a second; a hung one is killed.
const BCONSOLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A `watchkeeper` command, a catalog script, mkfs or the power-off script: seconds at most.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// The File Daemon listens in about 0.1 s.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
