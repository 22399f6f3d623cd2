//! The demo's cluster: a temporary directory, its key and configuration, and the agent
//! processes it starts, kills and restarts.
//!
//! Each agent is a child process (`watchkeeper run --log-json`) in its own process group, so a
//! Ctrl-C at the terminal reaches only the demo, which then stops the agents in order. Their
//! JSON log lines are copied to `DIR/NODE.log` and the events the demo reports on are passed to
//! it, stamped with the instant they were read (a pipe adds microseconds). Every child is
//! reaped: killed ones at once, the rest by [`Cluster::shutdown`]; `kill_on_drop` is the last
//! resort if the demo itself unwinds.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::bmc::{Bmc, ChassisEvent};
use super::cable::Cable;
use super::netns::{DemoNet, SWITCH_ADDRESS};
use super::pdu::{Pdu, PowerEvent};

/// What can go wrong setting up or running the demo's cluster.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// A file or directory of the demo could not be written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No random bytes for the cluster key.
    #[error("cannot make a cluster key: {0}")]
    Random(String),
    /// The generated configuration is refused by the agent's own checks.
    #[error("the generated configuration is invalid:\n{0}")]
    Config(String),
    /// An agent process could not be started.
    #[error("cannot start agent {node} ({exe}): {source}")]
    Spawn {
        /// Node name.
        node: String,
        /// Binary.
        exe: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The simulated PDU could not start.
    #[error(transparent)]
    Pdu(#[from] super::pdu::PduError),
    /// A socket in the demo's switch namespace could not be opened.
    #[error(transparent)]
    Net(#[from] super::netns::NetError),
    /// A simulated BMC could not start.
    #[error(transparent)]
    Bmc(#[from] super::bmc::BmcError),
}

/// How the resource group is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupKind {
    /// Real OCF Dummy resources (Debian's resource-agents).
    Ocf,
    /// `/bin/sh -c` one-liners on state files.
    Script,
}

/// One agent and what the demo knows of it.
#[derive(Debug)]
pub(crate) struct Node {
    /// Name in the configuration.
    pub(crate) name: &'static str,
    /// PDU outlet (coil) that powers it; a witness has none.
    pub(crate) outlet: Option<u16>,
    /// Index of its BMC in [`Cluster::bmcs`]; a witness has none.
    pub(crate) bmc: Option<usize>,
    /// Control socket.
    pub(crate) socket: PathBuf,
    /// Its running process.
    child: Option<Child>,
    /// Pid of the running process.
    pub(crate) pid: Option<u32>,
    /// The last fence result it logged, in words.
    pub(crate) last_fence: Option<String>,
}

/// A log event of one agent.
#[derive(Debug, Clone)]
pub(crate) struct LogEvent {
    /// Index of the node in [`Cluster::nodes`].
    pub(crate) node: usize,
    /// When the demo read it.
    pub(crate) at: Instant,
    /// The JSON object the agent logged.
    pub(crate) value: serde_json::Value,
}

impl LogEvent {
    /// The `event` field.
    pub(crate) fn event(&self) -> &str {
        self.value["event"].as_str().unwrap_or("")
    }

    /// A string field.
    pub(crate) fn field(&self, name: &str) -> &str {
        self.value[name].as_str().unwrap_or("")
    }

    /// The node a fence event is about: `peer`, or `target` in agents that logged it so
    /// (where tracing's own `target`, the module path, could overwrite it in JSON).
    pub(crate) fn fenced(&self) -> &str {
        match self.field("peer") {
            "" => self.field("target"),
            peer => peer,
        }
    }
}

/// What the demo was asked to build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Add the witness `gamma`.
    pub(crate) witness: bool,
    /// Keep the directory at the end.
    pub(crate) keep: bool,
    /// Stay on 127.0.0.1 even as root (no network namespaces).
    pub(crate) loopback: bool,
}

/// The whole demo cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The temporary directory.
    pub(crate) dir: PathBuf,
    /// The generated configuration.
    pub(crate) config: PathBuf,
    /// The agents.
    pub(crate) nodes: Vec<Node>,
    /// The simulated PDU.
    pub(crate) pdu: Pdu,
    /// The simulated BMCs, one per node that holds resources (alpha's first).
    pub(crate) bmcs: Vec<Bmc>,
    /// The BMCs' user name.
    pub(crate) bmc_user: &'static str,
    /// The BMCs' password, made for this run.
    pub(crate) bmc_password: String,
    /// The serial cable, if ptys were available.
    pub(crate) cable: Option<Cable>,
    /// Why there is no cable.
    pub(crate) cable_error: Option<String>,
    /// How the resource group is made.
    pub(crate) group: GroupKind,
    /// Addresses of the lan0 link, per node.
    pub(crate) lan: Vec<std::net::SocketAddr>,
    /// The nodes' network namespaces, when the demo made them (root); dropped after the
    /// agents, which ends them.
    pub(crate) net: Option<DemoNet>,
    /// Where the nodes' network is, in words (namespaces, or why loopback).
    pub(crate) network: String,
    /// Agent log events.
    pub(crate) events: mpsc::Receiver<LogEvent>,
    /// PDU writes.
    pub(crate) power: mpsc::Receiver<PowerEvent>,
    /// Chassis Control commands the BMCs served.
    pub(crate) chassis: mpsc::Receiver<ChassisEvent>,
    events_tx: mpsc::Sender<LogEvent>,
    exe: PathBuf,
    keep: bool,
}

impl Cluster {
    /// Creates the directory, key, cable, PDU and configuration; starts no agent yet.
    pub(crate) async fn create(options: Options) -> Result<Self, ClusterError> {
        let exe = std::env::current_exe().map_err(|source| ClusterError::Io {
            path: PathBuf::from("/proc/self/exe"),
            what: "find the watchkeeper binary",
            source,
        })?;
        let dir = make_dir()?;
        // From here on the directory exists: a failure must remove it.
        match Self::fill(dir.clone(), exe, options).await {
            Ok(c) => Ok(c),
            Err(e) => {
                if !options.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e)
            }
        }
    }

    async fn fill(dir: PathBuf, exe: PathBuf, options: Options) -> Result<Self, ClusterError> {
        write_key(&dir.join("cluster.key"))?;
        let (cable, cable_error) = match Cable::new(&dir, "tty-alpha", "tty-beta") {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (power_tx, power) = mpsc::channel(POWER_EVENTS);
        let names: &[&'static str] = if options.witness {
            &["alpha", "beta", "gamma"]
        } else {
            &["alpha", "beta"]
        };
        let (net, network) = network(&dir, names, options.loopback);
        let pdu = match &net {
            Some(net) => {
                let listener =
                    net.in_switch(|| std::net::TcpListener::bind((SWITCH_ADDRESS, 0)))?;
                Pdu::start_on(listener, 2, power_tx)?
            }
            None => Pdu::start(2, power_tx).await?,
        };
        let (chassis_tx, chassis) = mpsc::channel(POWER_EVENTS);
        let bmc_password = random_hex(BMC_PASSWORD_BYTES)?;
        let mut bmcs = Vec::with_capacity(2);
        for i in 0..2 {
            let bmc = match &net {
                Some(net) => {
                    let socket =
                        net.in_switch(|| std::net::UdpSocket::bind((SWITCH_ADDRESS, 0)))?;
                    Bmc::start_on(socket, i, BMC_USER, &bmc_password, chassis_tx.clone())?
                }
                None => Bmc::start(i, BMC_USER, &bmc_password, chassis_tx.clone()).await?,
            };
            bmcs.push(bmc);
        }
        let bmc_addresses: Vec<std::net::SocketAddr> = bmcs.iter().map(Bmc::address).collect();
        let group = if Path::new(DUMMY).exists() {
            GroupKind::Ocf
        } else {
            GroupKind::Script
        };
        let lan = match &net {
            // Each node has an address of its own: the production port will do.
            Some(_) => (0..names.len())
                .map(|i| std::net::SocketAddr::from((DemoNet::node_address(i), LAN_PORT)))
                .collect(),
            None => names
                .iter()
                .map(|_| {
                    free_udp_port(&dir)
                        .map(|p| std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, p)))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let config = dir.join("watchkeeper.toml");
        let devices = Devices {
            pdu: pdu.address(),
            bmcs: &bmc_addresses,
            password: &bmc_password,
        };
        let text = config_text(&dir, names, &lan, cable.is_some(), &devices, group);
        write_file(&config, &text, 0o644)?;
        crate::config::load(&config).map_err(|e| ClusterError::Config(e.to_string()))?;
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, &name)| Node {
                name,
                outlet: u16::try_from(i).ok().filter(|&o| o < 2),
                bmc: (i < bmcs.len()).then_some(i),
                socket: dir.join(format!("{name}.sock")),
                child: None,
                pid: None,
                last_fence: None,
            })
            .collect();
        let (events_tx, events) = mpsc::channel(LOG_EVENTS);
        Ok(Self {
            dir,
            config,
            nodes,
            pdu,
            bmcs,
            bmc_user: BMC_USER,
            bmc_password,
            cable,
            cable_error,
            group,
            lan,
            net,
            network,
            events,
            power,
            chassis,
            events_tx,
            exe,
            keep: options.keep,
        })
    }

    /// Starts node `i`'s agent unless it runs; returns its pid.
    pub(crate) fn start(&mut self, i: usize) -> Result<Option<u32>, ClusterError> {
        let Some(node) = self.nodes.get_mut(i) else {
            return Ok(None);
        };
        if node.child.is_some() {
            return Ok(node.pid);
        }
        let spawn = |source| ClusterError::Spawn {
            node: node.name.to_owned(),
            exe: self.exe.clone(),
            source,
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.stderr", node.name)))
            .map_err(spawn)?;
        // In its namespace, through nsenter, which enters it and then becomes the agent: the
        // pid the demo knows is the agent's.
        let mut command = match self.net.as_ref().and_then(|n| n.node_ns_path(i)) {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        let mut child = command
            .args(["run", "--log-json", "--node", node.name, "--config"])
            .arg(&self.config)
            // The demo relies on the info-level events: a RUST_LOG of the caller must not hide
            // them.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        if let Some(stdout) = child.stdout.take() {
            let log = self.dir.join(format!("{}.log", node.name));
            tokio::spawn(read_log(i, stdout, log, self.events_tx.clone()));
        }
        node.pid = child.id();
        node.child = Some(child);
        Ok(node.pid)
    }

    /// A TCP connection from the demo to `address` on the nodes' network: from inside the
    /// switch's namespace when the nodes have their own, where the fence devices are.
    pub(crate) async fn connect(
        &self,
        address: std::net::SocketAddr,
    ) -> std::io::Result<tokio::net::TcpStream> {
        match &self.net {
            Some(net) => {
                let stream = net
                    .in_switch(|| std::net::TcpStream::connect_timeout(&address, CONNECT_WAIT))
                    .map_err(std::io::Error::other)?;
                stream.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(stream)
            }
            None => tokio::net::TcpStream::connect(address).await,
        }
    }

    /// SIGKILLs node `i`'s agent and reaps it; returns the pid it had.
    pub(crate) async fn kill(&mut self, i: usize) -> Option<u32> {
        let node = self.nodes.get_mut(i)?;
        let mut child = node.child.take()?;
        let pid = node.pid.take();
        signal(pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
        pid
    }

    /// Whether node `i`'s agent process runs; reaps one that ended by itself and says so.
    pub(crate) fn running(&mut self, i: usize) -> bool {
        let Some(node) = self.nodes.get_mut(i) else {
            return false;
        };
        let Some(child) = &mut node.child else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::debug!(node = node.name, %status, "agent ended");
                node.child = None;
                node.pid = None;
                false
            }
            Err(_) => true,
        }
    }

    /// The node behind BMC `bmc`.
    pub(crate) fn node_of_bmc(&self, bmc: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.bmc == Some(bmc))
    }

    /// Whether node `i` has power: its outlet on and its chassis on (a witness: always).
    pub(crate) fn powered(&self, i: usize) -> Option<bool> {
        let node = self.nodes.get(i)?;
        let outlet = node.outlet.and_then(|o| self.pdu.powered(o))?;
        let chassis = node
            .bmc
            .and_then(|b| self.bmcs.get(b))
            .is_none_or(Bmc::powered);
        Some(outlet && chassis)
    }

    /// The node powered by `outlet`.
    pub(crate) fn node_of_outlet(&self, outlet: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.outlet == Some(outlet))
    }

    /// Stops every agent (SIGTERM, then SIGKILL after a bounded wait), reaps them all, stops
    /// the cable and the PDU and removes the directory unless it is kept. Returns the pids
    /// that had to be killed.
    pub(crate) async fn shutdown(mut self) -> Vec<u32> {
        let mut children: Vec<(Option<u32>, Child)> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take().map(|c| (n.pid.take(), c)))
            .collect();
        for (pid, _) in &children {
            signal(*pid, Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        let mut killed = Vec::new();
        for (pid, child) in &mut children {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                signal(*pid, Signal::SIGKILL);
                killed.extend(*pid);
                let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
            }
        }
        drop(self.cable.take());
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        killed
    }
}

/// Copies an agent's log lines to its file and passes the interesting events on.
async fn read_log(
    node: usize,
    stdout: tokio::process::ChildStdout,
    path: PathBuf,
    events: mpsc::Sender<LogEvent>,
) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok();
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let at = Instant::now();
        if let Some(f) = &mut file {
            let _ = writeln!(f, "{line}");
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let wanted = value["event"]
            .as_str()
            .is_some_and(|e| REPORTED_EVENTS.iter().any(|w| e.starts_with(w)));
        // The agent blocks on a full pipe, never the other way round: the demo drains this
        // channel on every step.
        if wanted && events.send(LogEvent { node, at, value }).await.is_err() {
            return;
        }
    }
}

fn signal(pid: Option<u32>, signal: Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn make_dir() -> Result<PathBuf, ClusterError> {
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(|e| ClusterError::Random(e.to_string()))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("wk-demo-{}-{tag}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| ClusterError::Io {
            path: dir.clone(),
            what: "create the demo directory",
            source,
        })?;
    Ok(dir)
}

fn write_key(path: &Path) -> Result<(), ClusterError> {
    let hex = random_hex(KEY_BYTES)?;
    write_file(path, &format!("{hex}\n"), 0o600)
}

/// `n` random bytes in hex.
fn random_hex(n: usize) -> Result<String, ClusterError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| ClusterError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), ClusterError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| ClusterError::Io {
            path: path.to_path_buf(),
            what: "write",
            source,
        })
}

/// The nodes' network namespaces when the demo may make them (root, not `--loopback`), and
/// the line saying where the network is.
fn network(dir: &Path, names: &[&str], loopback: bool) -> (Option<DemoNet>, String) {
    if loopback {
        return (None, "127.0.0.1 (--loopback)".into());
    }
    if !super::netns::available() {
        return (
            None,
            "127.0.0.1 (run as root for a network namespace per node)".into(),
        );
    }
    // Unique to this run: the pid and the directory's random tag.
    let tag: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().replace("wk-demo-", "").replace('-', ""))
        .unwrap_or_default();
    match DemoNet::create(&tag, names) {
        Ok(net) => {
            let line = format!(
                "a network namespace per node ({}), on a bridge in {}; fence devices at {SWITCH_ADDRESS}",
                (0..names.len())
                    .filter_map(|i| net.node_ns(i).map(|ns| format!(
                        "{ns} {}",
                        DemoNet::node_address(i)
                    )))
                    .collect::<Vec<_>>()
                    .join(", "),
                net.names().last().copied().unwrap_or_default()
            );
            (Some(net), line)
        }
        Err(e) => (None, format!("127.0.0.1 (no network namespaces: {e})")),
    }
}

/// A UDP port free now on 127.0.0.1. Another process could take it before the agent binds it;
/// the agent then refuses to start and says so, which on a demo machine is rare enough.
fn free_udp_port(dir: &Path) -> Result<u16, ClusterError> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|source| ClusterError::Io {
            path: dir.to_path_buf(),
            what: "find a free UDP port on 127.0.0.1",
            source,
        })
}

/// Where the fence devices listen, for the configuration.
#[derive(Debug)]
struct Devices<'a> {
    /// The PDU.
    pdu: std::net::SocketAddr,
    /// Each node's BMC, in node order.
    bmcs: &'a [std::net::SocketAddr],
    /// The BMCs' password.
    password: &'a str,
}

/// The configuration every agent reads: each node fenced first through its BMC (IPMI), then
/// through its PDU outlet (Modbus).
fn config_text(
    dir: &Path,
    names: &[&str],
    lan: &[std::net::SocketAddr],
    serial: bool,
    devices: &Devices<'_>,
    group: GroupKind,
) -> String {
    use std::fmt::Write as _;
    let d = dir.display();
    let mut s = String::new();
    let _ = write!(
        s,
        "# Generated by `watchkeeper demo`.\n\n[cluster]\nname = \"demo\"\nkey_file = \"{d}/cluster.key\"\n\n\
         [timing]\nheartbeat_interval = \"{HEARTBEAT_MS}ms\"\ndeadtime = \"{DEADTIME_MS}ms\"\n\n\
         [failover]\nfence_delay = \"{FENCE_DELAY_MS}ms\"\nstartup_timeout = \"{STARTUP_MS}ms\"\n\
         fence_timeout = \"{FENCE_TIMEOUT_MS}ms\"\n"
    );
    if serial {
        s.push_str("\n[[link]]\nname = \"serial0\"\nkind = \"serial\"\n");
    }
    s.push_str("\n[[link]]\nname = \"lan0\"\nkind = \"udp\"\n");
    for (i, (name, address)) in names.iter().zip(lan).enumerate() {
        let _ = write!(
            s,
            "\n[[node]]\nid = {}\nname = \"{name}\"\ncontrol_socket = \"{d}/{name}.sock\"\n\
             state_dir = \"{d}/{name}-state\"\nlinks.lan0 = {{ address = \"{address}\" }}\n",
            i + 1
        );
        if i < 2 {
            if serial {
                let _ = writeln!(s, "links.serial0 = {{ device = \"{d}/tty-{name}\" }}");
            }
            let _ = writeln!(s, "fencing = [[\"bmc-{name}\"], [\"pdu\"]]");
        } else {
            s.push_str("witness = true\n");
        }
    }
    for (name, address) in names.iter().zip(devices.bmcs) {
        let _ = write!(
            s,
            "\n[[fence_device]]\nname = \"bmc-{name}\"\ntype = \"ipmi\"\ntarget = \"{name}\"\n\
             address = \"{address}\"\nusername = \"{BMC_USER}\"\npassword = \"{}\"\n\
             cipher_suite = 3\ntimeout = \"{BMC_TIMEOUT_MS}ms\"\npoll_interval = \"20ms\"\n",
            devices.password
        );
    }
    let pdu = devices.pdu;
    let _ = write!(
        s,
        "\n[[fence_device]]\nname = \"pdu\"\ntype = \"modbus\"\naddress = \"{pdu}\"\n\
         outlets = {{ alpha = [{{ coil = 0 }}], beta = [{{ coil = 1 }}] }}\n\
         request_timeout = \"500ms\"\npoll_interval = \"20ms\"\n"
    );
    for res in GROUP {
        let _ = write!(s, "\n[[resource]]\nname = \"{res}\"\n");
        let state = format!("{d}/{{node}}-{res}.state");
        match group {
            GroupKind::Ocf => {
                let _ = writeln!(
                    s,
                    "type = \"ocf\"\nagent = \"heartbeat:Dummy\"\nparams = {{ state = \"{state}\" }}"
                );
            }
            GroupKind::Script => {
                let _ = writeln!(
                    s,
                    "type = \"script\"\nstart = [\"/bin/sh\", \"-c\", \"touch {state}\"]\n\
                     stop = [\"/bin/sh\", \"-c\", \"rm -f {state}\"]\n\
                     status = [\"/bin/sh\", \"-c\", \"test -e {state} || exit 3\"]"
                );
            }
        }
        s.push_str("monitor_interval = \"2s\"\n");
    }
    s
}

/// The resource group, in start order: as on a Bacula host, storage before the Catalog before
/// the Director.
pub(crate) const GROUP: [&str; 3] = ["storage", "catalog", "director"];
/// Debian's OCF Dummy agent; without it the group is made of scripts.
pub(crate) const DUMMY: &str = "/usr/lib/ocf/resource.d/heartbeat/Dummy";
/// How long the demo waits to connect to a simulated device.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// The lan0 port when each node has a namespace, and so an address, of its own.
const LAN_PORT: u16 = 5405;
/// Heartbeat interval: the production default.
pub(crate) const HEARTBEAT_MS: u64 = 100;
/// Deadtime: five heartbeats, short enough that detection is visible as a fraction of a second
/// and long enough that a loaded laptop does not declare a live peer dead.
pub(crate) const DEADTIME_MS: u64 = 500;
/// The holder's head start in a fence race; the engine's default is 500 ms, shortened because
/// the simulated PDU answers in microseconds.
pub(crate) const FENCE_DELAY_MS: u64 = 300;
/// Agents started together hear each other within a heartbeat; 2 s is plenty (the default 20
/// s is for hosts booting at different speeds).
const STARTUP_MS: u64 = 2000;
/// One fencing level: the simulated PDU confirms in milliseconds.
const FENCE_TIMEOUT_MS: u64 = 3000;
/// One IPMI operation (log in, switch, read back): the simulated BMC answers in milliseconds.
/// A BMC that does not answer fails its level after this and the PDU's level runs.
pub(crate) const BMC_TIMEOUT_MS: u64 = 1000;
/// The BMCs' user.
const BMC_USER: &str = "admin";
/// Random bytes of the BMCs' password (hex: 16 characters, within IPMI's 20).
const BMC_PASSWORD_BYTES: usize = 8;
/// Bytes of the cluster key, as `watchkeeper keygen` makes it.
const KEY_BYTES: usize = 32;
/// PDU writes waiting for the demo: a handful per failover.
const POWER_EVENTS: usize = 64;
/// Log events waiting for the demo, which drains them every step.
const LOG_EVENTS: usize = 1024;
/// How long stopping agents get before SIGKILL: a holder stops its group (Dummy takes tens of
/// milliseconds per resource) and its links within this.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Reaping a SIGKILLed process takes microseconds; this only bounds a wedged wait.
const REAP_WAIT: Duration = Duration::from_secs(2);
/// Events the demo reports on (prefixes); the rest stay in the log files.
const REPORTED_EVENTS: [&str; 6] = [
    "peer_",
    "fence_",
    "resource_",
    "self_fence",
    "start_failed",
    "alert",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_configuration_is_valid() {
        let dir = make_dir().expect("dir");
        write_key(&dir.join("cluster.key")).expect("key");
        let pdu: std::net::SocketAddr = "127.0.0.1:5020".parse().expect("address");
        let bmcs: Vec<std::net::SocketAddr> = ["127.0.0.1:6230", "127.0.0.1:6231"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        let devices = Devices {
            pdu,
            bmcs: &bmcs,
            password: "0123456789abcdef",
        };
        for (i, names) in [&["alpha", "beta"][..], &["alpha", "beta", "gamma"][..]]
            .into_iter()
            .enumerate()
        {
            for serial in [true, false] {
                for group in [GroupKind::Ocf, GroupKind::Script] {
                    let path = dir.join(format!("{i}-{serial}-{group:?}.toml"));
                    let lan: Vec<std::net::SocketAddr> = (0..3)
                        .map(|i| std::net::SocketAddr::from((DemoNet::node_address(i), 5405)))
                        .collect();
                    let text = config_text(&dir, names, &lan, serial, &devices, group);
                    write_file(&path, &text, 0o644).expect("write");
                    let config =
                        crate::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
                    assert_eq!(config.nodes.len(), names.len());
                    assert_eq!(config.resources.len(), GROUP.len());
                    assert!(
                        text.contains("fencing = [[\"bmc-alpha\"], [\"pdu\"]]"),
                        "{text}"
                    );
                    assert_eq!(config.fencing.devices.len(), 3);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
