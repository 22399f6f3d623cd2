//! The emulated rig: a [`RigDesc`] built on this one machine, so that scenarios run against
//! real `watchkeeper run` processes, real simulators and real resources.
//!
//! - **Hosts.** As root, each host is a network namespace with two NICs: `hb0` on the LAN (the
//!   UDP heartbeat and the virtual IP) and `mg0` on the management network (the fence
//!   devices). Both are veth pairs into a per-rig "switch" namespace, so addresses never touch
//!   the machine's own network and two rigs can run at once. Without root, hosts share loopback (no virtual IP,
//!   no carrier loss, no one-way firewall, no full disk: [`Emulated::build`] says which).
//! - **Ethernet.** Every heartbeat path from host A to host B goes through a [`UdpRelay`] leg
//!   in the switch namespace, which gives loss, delay and corruption (this machine has no
//!   `netem`). Carrier loss is `ip link set hb0 down`; a one-way cut is an nftables rule in the
//!   receiving host's namespace: both are the kernel's own paths.
//! - **Serial cables.** [`PtyCable`]s: cut, one-way cut, delay.
//! - **Power.** Each fencing level of a host that can hold the group is a simulator of its
//!   kind (`ipmi_sim`, sushy-tools, a pymodbus or an `snmpd` PDU: [`super::fence`]), reached
//!   through management relay legs (cut them and the device is unreachable). A host has power
//!   while every one of its devices says on. A power-off SIGKILLs the agent (an IPMI BMC's hook
//!   does it before answering) and, from the rig's power watcher, every other process of that
//!   host: the processes of its namespace and its PostgreSQL. Powering on is a reboot: the
//!   host's volatile state (marker files, the virtual IP) is gone, every device switches on
//!   and its agent starts afresh.
//! - **The Catalog.** A [`PgCluster`]: the first holder's PostgreSQL is the primary, the other
//!   host's streams from it; agents reach both through the Unix socket directory, which every
//!   namespace sees.
//! - **Clock.** Each agent runs under libfaketime with its realtime clock offset read from a
//!   file (monotonic time untouched), so a scenario can step a host's wall clock as a bad NTP
//!   server would.
//!
//! Every process the rig starts is stopped by PID when it is dropped; every namespace it
//! created is deleted.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::desc::{ResourceKind, RigDesc};
use super::fence::{FencePlant, PowerProbe, Switch};
use super::ocf::{OcfRig, Volatile};
use super::relay::{UdpRelay, Way};
use crate::agent::{watchkeeper_bin, AgentProcess};
use crate::cable::{Direction, PtyCable};
use crate::ipmi_sim::IpmiSim;
use crate::ipmi_sim::{DEFAULT_PASSWORD, DEFAULT_USER};
use crate::netns::in_netns;
use crate::pg::{live_postmaster, Node, PgCluster, PG_OS_USER, SUPERUSER_PASSWORD};

/// The agents' UDP heartbeat port inside a host namespace.
const HB_PORT: u16 = 5405;
/// libfaketime, from Debian's `faketime` package.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Size of a host's state directory when the rig can give it a filesystem of its own.
const STATE_FS_BYTES: u64 = 4 << 20;
/// How often the power watcher looks at the fence devices.
const POWER_POLL: Duration = Duration::from_millis(5);
/// A script resource: a state file per node and resource, a journal line with a timestamp per
/// real start and stop. `NODE-NAME.nostart` makes its start fail, `NODE-NAME.hang` its stop
/// hang.
const MARKER_SCRIPT: &str = r#"#!/bin/sh
action=$1; name=$2; node=$3; dir=$4
state="$dir/$node-$name.state"
case "$action" in
  start) [ -e "$dir/$node-$name.nostart" ] && exit 1
         if [ ! -e "$state" ]; then : > "$state"; echo "$(date +%s.%N) $node start $name" >> "$dir/journal"; fi ;;
  stop) [ -e "$dir/$node-$name.hang" ] && sleep 3600
        if [ -e "$state" ]; then rm -f "$state"; echo "$(date +%s.%N) $node stop $name" >> "$dir/journal"; fi ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

/// What the rig could not give on this machine, and why (printed by callers).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Faults unavailable here, with the reason.
    pub missing: Vec<(&'static str, String)>,
}

/// One relayed heartbeat or management path.
#[derive(Debug)]
struct Leg {
    from: usize,
    to: usize,
    relay: UdpRelay,
}

#[derive(Debug)]
struct HostRt {
    config: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    clock: PathBuf,
    /// A small tmpfs is mounted on the state directory.
    own_fs: bool,
    agent: Option<AgentProcess>,
}

#[derive(Debug)]
struct Netns {
    switch: String,
    hosts: Vec<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// What a power-off ends: where the host's fence devices keep its power, the host's namespace,
/// its PostgreSQL data directory.
type PoweredHost = (Vec<PowerProbe>, Option<String>, Option<PathBuf>);

/// Shared with the power watcher thread.
#[derive(Debug, Default)]
struct PowerShared {
    stop: AtomicBool,
    /// Per host: its fence devices' power, the namespace, the PostgreSQL data directory.
    hosts: Mutex<Vec<PoweredHost>>,
    /// Power-offs the watcher acted on.
    offs: AtomicU32,
    /// Agents run detached from this process (started by a boot script, see
    /// [`Emulated::export_real`]): their zombies are reaped here too.
    detached_agents: AtomicBool,
    /// Per host, a file the watcher creates while the host has no power (what a real-rig
    /// description of this rig checks before it "reaches" the host).
    dark: Mutex<Vec<PathBuf>>,
    /// Per host: what a power-off clears of its OCF resources (mounts, addresses, run
    /// directory).
    volatile: Mutex<Vec<Volatile>>,
}

/// A built rig; see the module docs.
#[derive(Debug)]
pub struct Emulated {
    /// The description it was built from.
    pub desc: RigDesc,
    /// What this machine could not give.
    pub limits: Limits,
    hosts: Vec<HostRt>,
    cables: Vec<PtyCable>,
    heartbeat: Vec<Leg>,
    fence: FencePlant,
    pg: Option<PgCluster>,
    power: Arc<PowerShared>,
    watcher: Option<JoinHandle<()>>,
    /// The OCF resources' wrappers, run directories and loop device.
    ocf: Option<OcfRig>,
    netns: Option<Netns>,
    faketime: bool,
    // Last: removed after every process and mount is gone.
    dir: tempfile::TempDir,
}

impl Emulated {
    /// Builds `desc`: namespaces when root, cables, relays, fence devices, the Catalog, per-host
    /// configurations. Starts no agent.
    pub fn build(desc: RigDesc) -> io::Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let mut limits = Limits::default();
        if desc.needs_namespaces() && !root {
            return Err(io::Error::other(format!(
                "rig {:?} has a virtual IP, which needs a network namespace per host: run as root",
                desc.name
            )));
        }
        if desc.has_catalog() && !root {
            return Err(io::Error::other(format!(
                "rig {:?} has a Catalog, whose PostgreSQL runs as the postgres user: run as root",
                desc.name
            )));
        }
        if let Some(why) = super::ocf::unavailable(&desc, root) {
            return Err(io::Error::other(why));
        }
        let faketime = Path::new(FAKETIME_LIB).exists();
        if !faketime {
            limits.missing.push((
                "clock-jump",
                format!("{FAKETIME_LIB} is missing (apt-get install faketime)"),
            ));
        }
        if !root {
            // Links are cut in the relays on loopback instead of by nftables.
            limits.missing.push((
                "disk-full",
                "needs root (a tmpfs per state directory)".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("wk-rig-")
            .disable_cleanup(std::env::var_os("WK_RIG_KEEP").is_some())
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let n = desc.hosts.len();
        let netns = if root { Some(make_netns(n)?) } else { None };
        let power = Arc::new(PowerShared::default());
        let mut rig = Self {
            limits,
            hosts: Vec::new(),
            cables: Vec::new(),
            heartbeat: Vec::new(),
            fence: FencePlant::default(),
            pg: None,
            power,
            watcher: None,
            ocf: None,
            netns,
            faketime,
            desc,
            dir,
        };
        rig.build_parts()?;
        Ok(rig)
    }

    fn build_parts(&mut self) -> io::Result<()> {
        let d = self.dir.path().to_path_buf();
        let n = self.desc.hosts.len();
        let key: String = (0..64)
            .map(|i| char::from(b"0123456789abcdef"[(i * 5 + 1) % 16]))
            .collect();
        let key_path = d.join("cluster.key");
        fs::write(&key_path, format!("{key}\n"))?;
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))?;
        let script = d.join("marker.sh");
        fs::write(&script, MARKER_SCRIPT)?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        for h in &self.desc.hosts {
            let state_dir = d.join(format!("{}-state", h.name));
            fs::create_dir(&state_dir)?;
            let own_fs = self.netns.is_some();
            if own_fs {
                let size = format!("size={STATE_FS_BYTES},mode=0700");
                run(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &size,
                        "wk-rig-state",
                        &state_dir.to_string_lossy(),
                    ],
                )?;
            }
            let clock = d.join(format!("{}.clock", h.name));
            fs::write(&clock, "+0\n")?;
            self.hosts.push(HostRt {
                config: d.join(format!("{}.toml", h.name)),
                log: d.join(format!("{}.log", h.name)),
                socket: d.join(format!("{}.sock", h.name)),
                state_dir,
                clock,
                own_fs,
                agent: None,
            });
        }
        for c in &self.desc.cables {
            let names = c.map(|i| format!("tty-{}", self.desc.hosts[i].name));
            self.cables.push(PtyCable::new(&d, &names[0], &names[1])?);
        }
        // Heartbeat legs: every ordered pair of hosts on the Ethernet.
        let eth = self.desc.ethernet.clone();
        for &a in &eth {
            for &b in &eth {
                if a != b {
                    let relay = self.hb_relay(a, b)?;
                    self.heartbeat.push(Leg {
                        from: a,
                        to: b,
                        relay,
                    });
                }
            }
        }
        // Fence devices, and management legs from every host to each of them.
        let switch = self.netns.as_ref().map(|ns| Switch {
            netns: ns.switch.clone(),
            towards: (0..n).map(mg_switch).collect(),
        });
        self.fence = FencePlant::build(&self.desc, &d, switch.as_ref())?;
        if self.desc.has_catalog() {
            let pg = PgCluster::start();
            self.pg = Some(pg);
        }
        self.ocf = OcfRig::build(
            &self.desc,
            &d,
            self.netns.as_ref().map(|ns| ns.hosts.clone()),
        )?;
        if let Some(ocf) = &self.ocf {
            let mut volatile = self
                .power
                .volatile
                .lock()
                .map_err(|_| io::Error::other("lock"))?;
            *volatile = (0..n).map(|i| ocf.volatile(i)).collect();
        }
        for i in 0..n {
            let text = self.config_text(i, &script);
            fs::write(&self.hosts[i].config, text)?;
        }
        // The watcher: power-offs end every process of the host.
        {
            let mut hosts = self
                .power
                .hosts
                .lock()
                .map_err(|_| io::Error::other("lock"))?;
            for i in 0..n {
                let probes = self.fence.probes(i);
                let ns = self.netns.as_ref().map(|ns| ns.hosts[i].clone());
                let datadir = self
                    .pg_node(i)
                    .and_then(|node| self.pg.as_ref().map(|pg| pg.datadir(node)));
                hosts.push((probes, ns, datadir));
            }
        }
        if let Ok(mut dark) = self.power.dark.lock() {
            *dark = self
                .desc
                .hosts
                .iter()
                .map(|h| dark_mark(&d, &h.name))
                .collect();
        }
        let shared = Arc::clone(&self.power);
        self.watcher = Some(
            std::thread::Builder::new()
                .name("rig-power".into())
                .spawn(move || power_watcher(&shared))?,
        );
        Ok(())
    }

    fn hb_relay(&self, a: usize, b: usize) -> io::Result<UdpRelay> {
        match &self.netns {
            Some(ns) => {
                let (front, back) = in_netns(&ns.switch, move || {
                    let front =
                        UdpSocket::bind(SocketAddr::from((hb_switch(a), 5400 + port_u16(b))))?;
                    let back = UdpSocket::bind(SocketAddr::from((hb_switch(b), 0)))?;
                    Ok((front, back))
                })?;
                UdpRelay::from_sockets(front, back, SocketAddr::from((hb_host(b), HB_PORT)))
            }
            None => {
                // Loopback: agents bind fixed free ports, chosen now.
                let target = SocketAddr::from((Ipv4Addr::LOCALHOST, self.lo_port(b)));
                UdpRelay::start(lo0(), lo0(), target)
            }
        }
    }

    /// On loopback, the port host `i`'s agent binds: derived from its state directory so that
    /// it is stable across restarts (chosen free when the rig is built).
    fn lo_port(&self, i: usize) -> u16 {
        let path = self
            .dir
            .path()
            .join(format!("{}.port", self.desc.hosts[i].name));
        if let Some(p) = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return p;
        }
        let p = crate::free_udp_port();
        let _ = fs::write(&path, format!("{p}\n"));
        p
    }

    /// The PostgreSQL node host `i` runs, if the rig has a Catalog and `i` can hold it.
    fn pg_node(&self, i: usize) -> Option<Node> {
        if !self.desc.has_catalog() {
            return None;
        }
        let [a, b] = self.desc.holders();
        if i == a {
            Some(Node::A)
        } else if i == b {
            Some(Node::B)
        } else {
            None
        }
    }

    fn config_text(&self, me: usize, script: &Path) -> String {
        let desc = &self.desc;
        let d = self.dir.path().display();
        let mut s = String::new();
        let _ = write!(
            s,
            "# Generated by the emulated rig {:?} for {}.\n[cluster]\nname = \"rig\"\nkey_file = \"{d}/cluster.key\"\n\n\
             [timing]\nheartbeat_interval = \"{}ms\"\ndeadtime = \"{}ms\"\n\n\
             [failover]\nfence_delay = \"{}ms\"\nstartup_timeout = \"3s\"\n",
            desc.name,
            desc.hosts[me].name,
            desc.interval.as_millis(),
            desc.deadtime.as_millis(),
            desc.fence_delay.as_millis()
        );
        if !desc.cables.is_empty() {
            for (c, _) in desc.cables.iter().enumerate() {
                let _ = write!(s, "\n[[link]]\nname = \"serial{c}\"\nkind = \"serial\"\n");
            }
        }
        if !desc.ethernet.is_empty() {
            s.push_str("\n[[link]]\nname = \"lan0\"\nkind = \"udp\"\n");
        }
        for (i, h) in desc.hosts.iter().enumerate() {
            let _ = write!(
                s,
                "\n[[node]]\nid = {}\nname = \"{}\"\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n",
                i + 1,
                h.name,
                self.hosts[i].socket.display(),
                self.hosts[i].state_dir.display()
            );
            for (c, ends) in desc.cables.iter().enumerate() {
                if let Some(side) = ends.iter().position(|&e| e == i) {
                    let path = if side == 0 {
                        self.cables[c].a_path()
                    } else {
                        self.cables[c].b_path()
                    };
                    let _ = writeln!(s, "links.serial{c} = {{ device = \"{}\" }}", path.display());
                }
            }
            if desc.ethernet.contains(&i) {
                let addr = if i == me {
                    match &self.netns {
                        Some(_) => SocketAddr::from((hb_host(i), HB_PORT)),
                        None => SocketAddr::from((Ipv4Addr::LOCALHOST, self.lo_port(i))),
                    }
                } else {
                    self.heartbeat
                        .iter()
                        .find(|l| l.from == me && l.to == i)
                        .map_or_else(
                            || SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
                            |l| l.relay.front(),
                        )
                };
                let _ = writeln!(s, "links.lan0 = {{ address = \"{addr}\" }}");
            }
            if h.witness {
                s.push_str("witness = true\n");
            } else {
                s.push_str(&self.fence.levels_toml(i));
            }
        }
        s.push_str(&self.fence.agent_toml(me));
        for r in &desc.resources {
            let _ = write!(s, "\n[[resource]]\nname = \"{}\"\n", r.name);
            match &r.kind {
                ResourceKind::Marker => {
                    let sc = script.display();
                    let _ = write!(
                        s,
                        "type = \"script\"\n\
                         start = [\"{sc}\", \"start\", \"{n}\", \"{{node}}\", \"{d}\"]\n\
                         stop = [\"{sc}\", \"stop\", \"{n}\", \"{{node}}\", \"{d}\"]\n\
                         status = [\"{sc}\", \"status\", \"{n}\", \"{{node}}\", \"{d}\"]\n\
                         start_timeout = \"5s\"\nstop_timeout = \"3s\"\n",
                        n = r.name
                    );
                }
                ResourceKind::Vip { address } => {
                    let _ = write!(
                        s,
                        "type = \"vip\"\naddress = \"{address}\"\ninterface = \"hb0\"\n"
                    );
                }
                ResourceKind::Ocf(agent) => {
                    if let Some(ocf) = &self.ocf {
                        s.push_str(&ocf.config(&desc.hosts[me].name, &r.name, agent));
                    }
                }
                ResourceKind::Pgsql => {
                    if let Some(pg) = &self.pg {
                        let [a, b] = desc.holders();
                        let (na, nb) = (&desc.hosts[a].name, &desc.hosts[b].name);
                        let sock = pg.root().join("sock");
                        let _ = write!(
                            s,
                            "type = \"pgsql\"\nbindir = \"{}\"\n\
                             datadir = {{ {na} = \"{}\", {nb} = \"{}\" }}\n\
                             port = {{ {na} = {}, {nb} = {} }}\n\
                             host = \"{}\"\nuser = \"{PG_OS_USER}\"\nsuperuser = \"postgres\"\n\
                             password_file = \"{}\"\n\
                             primary_conninfo = {{ {na} = \"{}\", {nb} = \"{}\" }}\n\
                             rejoin = \"rewind\"\n",
                            pg.bindir().display(),
                            pg.datadir(Node::A).display(),
                            pg.datadir(Node::B).display(),
                            pg.port(Node::A),
                            pg.port(Node::B),
                            sock.display(),
                            pg.password_file().display(),
                            pg.conninfo_to(Node::B, Node::A),
                            pg.conninfo_to(Node::A, Node::B),
                        );
                    }
                }
            }
            s.push_str("monitor_interval = \"1s\"\n");
        }
        s
    }

    /// The rig's temporary directory (configurations, logs, the resource journal).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.desc.hosts[i].name
    }

    /// Host `i`'s configuration file.
    pub fn config(&self, i: usize) -> &Path {
        &self.hosts[i].config
    }

    /// Host `i`'s agent log (JSON lines).
    pub fn log(&self, i: usize) -> &Path {
        &self.hosts[i].log
    }

    /// The OCF resources' side of the rig, if the group has any.
    pub fn ocf(&self) -> Option<&OcfRig> {
        self.ocf.as_ref()
    }

    /// Host `i`'s IPMI BMC (on this machine's loopback), if one of its levels is IPMI.
    pub fn bmc_address(&self, i: usize) -> Option<SocketAddr> {
        self.fence
            .devices(i)
            .iter()
            .find_map(|d| d.ipmi().map(IpmiSim::address))
    }

    /// The Catalog, if the rig has one.
    pub fn catalog(&self) -> Option<&PgCluster> {
        self.pg.as_ref()
    }

    /// The PostgreSQL node host `i` runs.
    pub fn catalog_node(&self, i: usize) -> Option<Node> {
        self.pg_node(i)
    }

    /// Starts host `i`'s agent and wires its BMCs' power to it.
    pub fn start(&mut self, i: usize) -> io::Result<()> {
        let bin = watchkeeper_bin()?;
        let mut args: Vec<String> = Vec::new();
        // nsenter enters only the network namespace: `ip netns exec` would also give the agent
        // a private copy of every mount of the machine, which keeps other tests' filesystems
        // busy for as long as it runs.
        if let Some(ns) = &self.netns {
            args.push(format!("--net=/run/netns/{}", ns.hosts[i]));
            args.push("--".into());
        }
        let program = if self.netns.is_some() {
            PathBuf::from("nsenter")
        } else {
            PathBuf::from("env")
        };
        if self.netns.is_some() {
            args.push("env".into());
        }
        if self.faketime {
            // A copy only root can read: programs the agent runs as the postgres user (pg_ctl)
            // then start without it (the loader skips an unreadable preload) instead of failing
            // on the semaphore libfaketime shares from the root agent, which they may not open.
            let lib = self.dir.path().join("libfaketime.so.1");
            if !lib.exists() {
                fs::copy(FAKETIME_LIB, &lib)?;
                fs::set_permissions(&lib, fs::Permissions::from_mode(0o700))?;
            }
            args.push(format!("LD_PRELOAD={}", lib.display()));
            args.push(format!(
                "FAKETIME_TIMESTAMP_FILE={}",
                self.hosts[i].clock.display()
            ));
            args.push("FAKETIME_CACHE_DURATION=1".into());
            args.push("FAKETIME_DONT_FAKE_MONOTONIC=1".into());
        }
        args.push(bin.display().to_string());
        args.extend(["run", "--log-json", "--node", self.name(i), "--config"].map(str::to_owned));
        args.push(self.hosts[i].config.display().to_string());
        let os: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let p = AgentProcess::spawn(&program, &os, &self.hosts[i].log)?;
        self.fence
            .wire_power_to(i, u32::try_from(p.pid().as_raw()).unwrap_or(0));
        self.hosts[i].agent = Some(p);
        Ok(())
    }

    /// Writes a real-rig description of this rig (and a boot script per host) and returns its
    /// path: the same hosts, reached through `nsenter` into their namespaces, powered through
    /// `ipmitool` against their BMCs (a host fenced by IPMI alone) or a power script per host
    /// that drives each of its devices with the usual tools ([`FencePlant::power_script`]:
    /// `curl`, `snmpget`/`snmpset`, pymodbus), their agents started by a boot script that
    /// clears what a power cycle clears and starts the agent detached, as its unit would. `rig::real` then
    /// drives this rig only through the commands a real rig's description gives. Needs the
    /// namespaces (root); no agent of this rig may have been started by [`Emulated::start`].
    pub fn export_real(&self) -> io::Result<PathBuf> {
        let Some(ns) = &self.netns else {
            return Err(io::Error::other(
                "a real-rig description of the emulated rig needs its namespaces (root)",
            ));
        };
        // The boot scripts' agents are orphaned at once: they must come back to this process
        // (as they do when the Catalog's fixture made it a subreaper), or a killed one stays a
        // zombie of an init that may never reap it, and `kill -0` takes it for a live agent.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| io::Error::other(format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
        self.power.detached_agents.store(true, Ordering::SeqCst);
        let bin = watchkeeper_bin()?;
        let d = self.dir.path();
        let q = super::real::quote;
        let mut t = String::new();
        let _ = write!(
            t,
            "# The emulated rig {name:?} seen as real hosts (written by Emulated::export_real).\n\
             name = \"{name}-as-real\"\nbackend = \"real\"\n\n[timing]\n\
             heartbeat_interval = \"{hb}ms\"\ndeadtime = \"{dt}ms\"\nfence_delay = \"{fd}ms\"\n\n",
            name = self.desc.name,
            hb = self.desc.interval.as_millis(),
            dt = self.desc.deadtime.as_millis(),
            fd = self.desc.fence_delay.as_millis(),
        );
        let toml_list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        for (i, h) in self.desc.hosts.iter().enumerate() {
            let name = &h.name;
            // Like ssh to a dark host, a host without power does not answer; one with power
            // runs the line in its namespace, with its Catalog server's connection settings.
            let mut enter = format!(
                "exec nsenter --net=/run/netns/{} -- env WK_HOST={name}",
                ns.hosts[i]
            );
            if let (Some(pg), Some(node)) = (&self.pg, self.pg_node(i)) {
                let _ = write!(
                    enter,
                    " PGHOST={} PGPORT={} PGUSER=postgres PGPASSWORD={}",
                    q(&pg.root().join("sock").display().to_string()),
                    pg.port(node),
                    q(SUPERUSER_PASSWORD)
                );
            }
            enter.push_str(" sh -c \"$1\"");
            // The power watcher marks a host without power.
            let dark = if h.witness {
                String::new()
            } else {
                format!(
                    "[ ! -e {} ] || {{ echo {name}: no route to host >&2; exit 255; }}; ",
                    q(&dark_mark(d, name).display().to_string())
                )
            };
            let run = vec![
                "sh".to_owned(),
                "-c".into(),
                format!("{dark}{enter}"),
                format!("run-on-{name}"),
            ];
            let pid_file = d.join(format!("{name}.agent.pid"));
            let boot = d.join(format!("boot-{name}.sh"));
            let mut script = format!(
                "#!/bin/sh\n# A boot of {name}: what a power cycle clears is gone, and the agent \
                 starts, as its unit would.\nrm -f {markers}\n",
                markers = q(&d.join(format!("{name}-")).display().to_string()) + "*.state",
            );
            for r in &self.desc.resources {
                if let ResourceKind::Vip { address } = &r.kind {
                    let _ = writeln!(script, "ip addr del {} dev hb0 2>/dev/null", q(address));
                }
            }
            if let Some(ocf) = &self.ocf {
                script.push_str(&ocf.boot_lines(i));
            }
            let _ = writeln!(
                script,
                "setsid {bin} run --log-json --node {name} --config {conf} >>{log} 2>>{err} </dev/null &\n\
                 echo $! > {pid}",
                bin = q(&bin.display().to_string()),
                conf = q(&self.hosts[i].config.display().to_string()),
                log = q(&self.hosts[i].log.display().to_string()),
                err = q(&format!("{}.stderr", self.hosts[i].log.display())),
                pid = q(&pid_file.display().to_string()),
            );
            fs::write(&boot, script)?;
            fs::set_permissions(&boot, fs::Permissions::from_mode(0o755))?;
            let _ = write!(
                t,
                "[[host]]\nname = \"{name}\"\n{witness}{fence}run = {run}\n\
                 watchkeeper = {bin:?}\nagent_config = {conf:?}\nagent_start = {boot:?}\n\
                 agent_pid = {pid:?}\nagent_log = {log:?}\n",
                witness = if h.witness { "witness = true\n" } else { "" },
                fence = if h.witness {
                    String::new()
                } else {
                    let kinds: Vec<String> = h.fence.iter().map(|k| k.word().to_owned()).collect();
                    format!("fence = {}\n", toml_list(&kinds))
                },
                run = toml_list(&run),
                bin = q(&bin.display().to_string()),
                conf = self.hosts[i].config.display().to_string(),
                boot = q(&boot.display().to_string()),
                pid = format!("cat {} 2>/dev/null", q(&pid_file.display().to_string())),
                log = format!(
                    "cat {} 2>/dev/null",
                    q(&self.hosts[i].log.display().to_string())
                ),
            );
            let devices = self.fence.devices(i);
            let bmc = match devices {
                [only] => only.ipmi(),
                _ => None,
            };
            if bmc.is_none() && !devices.is_empty() {
                let script = d.join(format!("power-{name}.sh"));
                fs::write(
                    &script,
                    self.fence
                        .power_script(i, name, &crate::sushy::venv_python()?),
                )?;
                let power = |what: &str| {
                    toml_list(&[
                        "sh".to_owned(),
                        script.display().to_string(),
                        what.to_owned(),
                    ])
                };
                let _ = write!(
                    t,
                    "power_status = {}\npower_on = {}\npower_off = {}\n",
                    power("status"),
                    power("on"),
                    power("off")
                );
            }
            if let Some(bmc) = bmc {
                let a = bmc.address();
                let ipmi = |what: &str| {
                    let mut c: Vec<String> = ["ipmitool", "-I", "lanplus", "-C", "3", "-H"]
                        .map(str::to_owned)
                        .to_vec();
                    c.extend([
                        a.ip().to_string(),
                        "-p".into(),
                        a.port().to_string(),
                        "-U".into(),
                        DEFAULT_USER.into(),
                        "-P".into(),
                        DEFAULT_PASSWORD.into(),
                        "chassis".into(),
                        "power".into(),
                        what.into(),
                    ]);
                    toml_list(&c)
                };
                let _ = write!(
                    t,
                    "power_status = {}\npower_on = {}\npower_off = {}\n",
                    ipmi("status"),
                    ipmi("on"),
                    ipmi("off")
                );
            }
            t.push('\n');
        }
        for c in &self.desc.cables {
            let _ = write!(
                t,
                "[[cable]]\nbetween = [{:?}, {:?}]\n\n",
                self.desc.hosts[c[0]].name, self.desc.hosts[c[1]].name
            );
        }
        if !self.desc.ethernet.is_empty() {
            let names: Vec<String> = self
                .desc
                .ethernet
                .iter()
                .map(|&i| self.desc.hosts[i].name.clone())
                .collect();
            let _ = write!(t, "[ethernet]\nhosts = {}\n\n", toml_list(&names));
        }
        for r in &self.desc.resources {
            let _ = write!(t, "[[resource]]\nname = {:?}\n", r.name);
            match &r.kind {
                ResourceKind::Marker => {
                    let check = format!(
                        "test -e {}\"$WK_HOST\"-{}.state",
                        q(&format!("{}/", d.display())),
                        r.name
                    );
                    let _ = write!(t, "kind = \"marker\"\ncheck = {check:?}\n\n");
                }
                ResourceKind::Vip { address } => {
                    let _ = write!(t, "kind = \"vip\"\naddress = {address:?}\n\n");
                }
                ResourceKind::Ocf(agent) => {
                    if let Some(ocf) = &self.ocf {
                        let _ = write!(t, "kind = \"ocf\"\n{}\n", ocf.export_keys(&r.name, agent));
                    }
                }
                ResourceKind::Pgsql => {
                    let _ = write!(
                        t,
                        "kind = \"pgsql\"\npsql = \"psql -X -A -t -q -d postgres\"\n\n"
                    );
                }
            }
        }
        let path = d.join(format!("{}-as-real.toml", self.desc.name));
        fs::write(&path, t)?;
        Ok(path)
    }

    /// Host `i`'s agent process, if started.
    pub fn agent(&mut self, i: usize) -> Option<&mut AgentProcess> {
        self.hosts[i].agent.as_mut()
    }

    /// SIGKILLs host `i`'s agent (a crashed agent; the host's power stays on).
    pub fn kill(&mut self, i: usize) -> io::Result<()> {
        self.signal(i, Signal::SIGKILL)
    }

    /// Sends `signal` to host `i`'s agent.
    pub fn signal(&mut self, i: usize, signal: Signal) -> io::Result<()> {
        match &self.hosts[i].agent {
            Some(a) => a.kill(signal),
            None => Ok(()),
        }
    }

    /// Whether host `i` has power: every fence device of it says on (a witness always has).
    pub fn powered(&self, i: usize) -> bool {
        self.fence.powered(i)
    }

    /// Power-cycles host `i` into a fresh boot: its agent and every process it left are
    /// killed, its volatile state (marker files, the virtual IP) is cleared, every fence device
    /// of it reports power on, and a new agent starts.
    pub fn reboot(&mut self, i: usize) -> io::Result<()> {
        if let Some(mut a) = self.hosts[i].agent.take() {
            let _ = a.kill(Signal::SIGKILL);
            let _ = a.wait_exit(Duration::from_secs(5));
        }
        self.kill_host_processes(i);
        let name = self.name(i).to_owned();
        // The journal learns that everything this host ran is gone.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut journal = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("journal"))?;
        io::Write::write_all(
            &mut journal,
            format!(
                "{}.{:09} {name} reboot -\n",
                now.as_secs(),
                now.subsec_nanos()
            )
            .as_bytes(),
        )?;
        if let Some(ocf) = &self.ocf {
            ocf.volatile(i).clear();
        }
        for r in &self.desc.resources {
            let _ = fs::remove_file(self.dir.path().join(format!("{name}-{}.state", r.name)));
            if let (ResourceKind::Vip { address }, Some(ns)) = (&r.kind, &self.netns) {
                let _ = run(
                    "ip",
                    &["-n", &ns.hosts[i], "addr", "del", address, "dev", "hb0"],
                );
            }
        }
        self.fence.power_on(i)?;
        self.start(i)
    }

    fn kill_host_processes(&self, i: usize) {
        if let Ok(hosts) = self.power.hosts.lock() {
            if let Some(h) = hosts.get(i) {
                kill_host(h.1.as_deref(), h.2.as_deref());
            }
        }
    }

    /// Host `i`'s status report from its control socket.
    pub fn status(&self, i: usize) -> io::Result<Value> {
        crate::status::query_status(&self.hosts[i].socket, Duration::from_secs(2))
    }

    /// Host `i`'s resources report (`watchkeeper resources --json`).
    pub fn resources(&self, i: usize) -> Option<Value> {
        let out = Command::new(watchkeeper_bin().ok()?)
            .args(["resources", "--json", "--node", self.name(i), "--config"])
            .arg(&self.hosts[i].config)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Runs `watchkeeper ARGS` against host `i`'s control socket.
    pub fn cli(&self, i: usize, args: &[&str]) -> io::Result<std::process::Output> {
        Command::new(watchkeeper_bin()?)
            .args(args)
            .args(["--node", self.name(i), "--config"])
            .arg(&self.hosts[i].config)
            .output()
    }

    /// Which resources of the group host `i` runs, seen from the resources themselves: marker
    /// state files, the virtual IP on its `hb0`, its PostgreSQL accepting writes.
    pub fn running(&self, i: usize) -> Vec<String> {
        let name = self.name(i);
        let mut out = Vec::new();
        for r in &self.desc.resources {
            let on = match &r.kind {
                ResourceKind::Marker => self
                    .dir
                    .path()
                    .join(format!("{name}-{}.state", r.name))
                    .exists(),
                ResourceKind::Vip { address } => self.netns.as_ref().is_some_and(|ns| {
                    Command::new("ip")
                        .args(["-n", &ns.hosts[i], "-o", "addr", "show", "dev", "hb0"])
                        .output()
                        .is_ok_and(|o| {
                            String::from_utf8_lossy(&o.stdout).contains(&format!(" {address} "))
                        })
                }),
                ResourceKind::Pgsql => match (&self.pg, self.pg_node(i)) {
                    (Some(pg), Some(node)) => pg.in_recovery(node) == Some(false),
                    _ => false,
                },
                ResourceKind::Ocf(agent) => self
                    .ocf
                    .as_ref()
                    .is_some_and(|o| o.running(i, &r.name, agent)),
            };
            if on {
                out.push(r.name.clone());
            }
        }
        out
    }

    /// Hosts with power that run any resource of the group.
    pub fn holders(&self) -> Vec<usize> {
        (0..self.desc.hosts.len())
            .filter(|&i| self.powered(i) && !self.running(i).is_empty())
            .collect()
    }

    /// Whether host `i` runs the whole group.
    pub fn holds_all(&self, i: usize) -> bool {
        self.powered(i) && self.running(i).len() == self.desc.resources.len()
    }

    // ---- faults ----

    /// Cuts (or mends) every serial cable.
    pub fn cut_serial(&self, cut: bool) {
        for c in &self.cables {
            if cut {
                c.cut();
            } else {
                c.restore();
            }
        }
    }

    /// Cuts (or mends) host `i`'s LAN: carrier loss on `hb0` in namespaces, both relay
    /// directions on loopback.
    pub fn cut_lan(&self, i: usize, cut: bool) -> io::Result<()> {
        if let Some(ns) = &self.netns {
            return run(
                "ip",
                &[
                    "-n",
                    &ns.hosts[i],
                    "link",
                    "set",
                    "hb0",
                    if cut { "down" } else { "up" },
                ],
            );
        }
        for l in self.heartbeat.iter().filter(|l| l.from == i || l.to == i) {
            l.relay.set_cut(Way::ToTarget, cut);
        }
        Ok(())
    }

    /// Makes host `to` deaf to host `from` on every heartbeat link (`from` still hears `to`):
    /// an nftables drop in `to`'s namespace for the LAN (a relay cut on loopback), and the
    /// matching wire of every cable between them.
    pub fn deafen(&self, to: usize, from: usize) -> io::Result<()> {
        for (c, ends) in self.desc.cables.iter().enumerate() {
            if ends == &[from, to] {
                self.cables[c].cut_one_way(Direction::AtoB);
            } else if ends == &[to, from] {
                self.cables[c].cut_one_way(Direction::BtoA);
            }
        }
        let Some(leg) = self.heartbeat.iter().find(|l| l.from == from && l.to == to) else {
            return Ok(());
        };
        match &self.netns {
            Some(ns) => {
                let sport = leg.relay.back_port();
                let rules = format!(
                    "table inet wkrig {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
                     iifname \"hb0\" udp sport {sport} drop\n  }}\n}}\n"
                );
                nft(&ns.hosts[to], &rules)
            }
            None => {
                leg.relay.set_cut(Way::ToTarget, true);
                Ok(())
            }
        }
    }

    /// Every heartbeat path between every pair of hosts: loss in percent, delay.
    pub fn degrade_lan(&self, loss_percent: u32, delay: Duration) {
        for l in &self.heartbeat {
            l.relay.set_loss(Way::ToTarget, loss_percent);
            l.relay.set_delay(Way::ToTarget, delay);
        }
    }

    /// Delays every byte on every cable.
    pub fn delay_serial(&self, delay: Duration) {
        for c in &self.cables {
            c.set_delay(delay);
        }
    }

    /// Flips one bit in every heartbeat datagram on the LAN, both ways (or stops).
    pub fn corrupt_lan(&self, on: bool) {
        for l in &self.heartbeat {
            l.relay.set_corrupt(Way::ToTarget, on);
            l.relay.set_corrupt(Way::ToClient, on);
        }
    }

    /// One burst of line noise into both ends of every serial cable: a few nonzero bytes of
    /// garbage ended by the frame delimiter, as a floating line or a loose connector gives.
    /// The receiver must drop and count it and read the next real frame whole.
    pub fn serial_noise(&self, burst: u64) -> io::Result<()> {
        let mut x = burst.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = 8 + usize::try_from(x % 24).unwrap_or(0);
        let mut noise: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                u8::try_from(x % 255).unwrap_or(0) + 1
            })
            .collect();
        noise.push(0);
        for c in &self.cables {
            for d in [Direction::AtoB, Direction::BtoA] {
                c.inject(d, &noise)?;
            }
        }
        Ok(())
    }

    /// Cuts (or mends) the management path from every host to host `i`'s first fence device
    /// (its BMC on a rig fenced by IPMI; any further level stays reachable).
    pub fn cut_bmc(&self, i: usize, cut: bool) {
        self.fence.cut(i, 0, cut);
    }

    /// Makes every fence device of host `i` acknowledge power-off commands without acting on
    /// them (a stuck relay, a lying BMC), or behave again.
    pub fn bmc_ignores_off(&self, i: usize, ignore: bool) -> io::Result<()> {
        self.fence.ignore_off(i, ignore)
    }

    /// Host `i`'s fence devices, first level first.
    pub fn fence_devices(&self, i: usize) -> &[super::fence::FenceDevice] {
        self.fence.devices(i)
    }

    /// Makes resource `resource` fail to start on host `i` (or start again).
    pub fn refuse_start(&self, i: usize, resource: &str, refuse: bool) -> io::Result<()> {
        self.flag(i, resource, "nostart", refuse)
    }

    /// Makes resource `resource` hang when stopped on host `i` (or stop again).
    pub fn hang_stop(&self, i: usize, resource: &str, hang: bool) -> io::Result<()> {
        self.flag(i, resource, "hang", hang)
    }

    fn flag(&self, i: usize, resource: &str, what: &str, on: bool) -> io::Result<()> {
        let path = self
            .dir
            .path()
            .join(format!("{}-{resource}.{what}", self.name(i)));
        if on {
            fs::write(path, "")
        } else {
            fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        }
    }

    /// Fills host `i`'s state directory (or frees it again).
    pub fn fill_disk(&self, i: usize, full: bool) -> io::Result<()> {
        let h = &self.hosts[i];
        if !h.own_fs {
            return Err(io::Error::other(
                "disk-full needs root (a tmpfs per state directory)",
            ));
        }
        let fill = h.state_dir.join("ballast");
        if !full {
            return fs::remove_file(&fill).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            });
        }
        let mut f = fs::File::create(&fill)?;
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..(STATE_FS_BYTES / (64 << 10) + 1) {
            if io::Write::write_all(&mut f, &chunk).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Steps host `i`'s wall clock by `seconds` from true time (0 puts it right). Monotonic
    /// time is not touched, as with an NTP step.
    pub fn set_clock_offset(&self, i: usize, seconds: i64) -> io::Result<()> {
        if !self.faketime {
            return Err(io::Error::other(format!("clock-jump needs {FAKETIME_LIB}")));
        }
        fs::write(&self.hosts[i].clock, format!("{seconds:+}\n"))
    }

    /// Undoes every link, BMC, disk and clock fault (not power or processes).
    pub fn heal(&self) -> io::Result<()> {
        self.cut_serial(false);
        self.delay_serial(Duration::ZERO);
        for l in &self.heartbeat {
            l.relay.heal();
        }
        self.fence.heal()?;
        for i in 0..self.desc.hosts.len() {
            if let Some(ns) = &self.netns {
                run("ip", &["-n", &ns.hosts[i], "link", "set", "hb0", "up"])?;
                let _ = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &ns.hosts[i],
                        "nft",
                        "delete",
                        "table",
                        "inet",
                        "wkrig",
                    ])
                    .output();
            }
            for r in &self.desc.resources {
                self.refuse_start(i, &r.name, false)?;
                self.hang_stop(i, &r.name, false)?;
            }
            if self.hosts[i].own_fs {
                self.fill_disk(i, false)?;
            }
            if self.faketime {
                self.set_clock_offset(i, 0)?;
            }
        }
        Ok(())
    }

    /// When a fence device switched host `i` off (Unix seconds, from the devices' own logs),
    /// sorted; empty for a witness.
    pub fn off_times(&self, i: usize) -> Vec<f64> {
        self.fence.off_times(i)
    }

    /// Power-offs the watcher acted on so far.
    pub fn power_offs(&self) -> u32 {
        self.power.offs.load(Ordering::SeqCst)
    }

    /// Lines of the resource journal: `<unix time> <node> start|stop <resource>`.
    pub fn journal(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("journal"))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Checks, from the resource journal (timestamped by the resources themselves) and the
    /// fence devices' power logs, that no two hosts ever ran resources of the group at the
    /// same time: a host runs from a resource's start until its stop, its power-off or its
    /// reboot.
    pub fn check_journal(&self) -> Result<usize, String> {
        let mut events: Vec<(f64, String, String, String)> = Vec::new();
        for line in self.journal() {
            let mut f = line.split_whitespace();
            let (Some(t), Some(node), Some(what), Some(res)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(format!("journal line {line:?} is torn"));
            };
            let t: f64 = t
                .parse()
                .map_err(|_| format!("journal line {line:?}: bad time"))?;
            events.push((t, node.to_owned(), what.to_owned(), res.to_owned()));
        }
        for i in 0..self.desc.hosts.len() {
            for t in self.fence.off_times(i) {
                events.push((t, self.name(i).to_owned(), "off".into(), "-".into()));
            }
        }
        never_two_hosts(&mut events)?;
        Ok(events.len())
    }

    /// Waits until `pred` holds, polling every 20 ms, for at most `timeout`.
    pub fn wait(&self, timeout: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut a) = h.agent.take() {
                let _ = a.kill(Signal::SIGKILL);
                let _ = a.wait_exit(Duration::from_secs(5));
            }
        }
        for i in 0..self.hosts.len() {
            self.kill_host_processes(i);
        }
        self.power.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        // The Catalog stops its own servers by PID when dropped.
        self.pg = None;
        for h in &self.hosts {
            if h.own_fs {
                let _ = run("umount", &[&h.state_dir.to_string_lossy()]);
            }
        }
    }
}

/// Replays `(time, host, start|stop|off|reboot, resource)` events in time order and fails at
/// the first moment two hosts run resources of the group.
pub fn never_two_hosts(events: &mut [(f64, String, String, String)]) -> Result<(), String> {
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (t, node, what, res) in events.iter() {
        let set = running.entry(node.clone()).or_default();
        match what.as_str() {
            "start" => {
                set.insert(res.clone());
            }
            "stop" => {
                set.remove(res);
            }
            _ => set.clear(),
        }
        let busy: Vec<String> = running
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect();
        if busy.len() > 1 {
            return Err(format!(
                "at {t:.6} ({node} {what} {res}) two hosts ran the group: {}",
                busy.join("; ")
            ));
        }
    }
    Ok(())
}

fn power_watcher(shared: &PowerShared) {
    let mut was_on: Vec<bool> = Vec::new();
    let dark = shared.dark.lock().map(|d| d.clone()).unwrap_or_default();
    while !shared.stop.load(Ordering::SeqCst) {
        if let Ok(hosts) = shared.hosts.lock() {
            was_on.resize(hosts.len(), true);
            for (i, (probes, ns, datadir)) in hosts.iter().enumerate() {
                // Unreadable counts as on: only a device that says off darkens a host.
                let on = probes.iter().all(|p| p.read().unwrap_or(true));
                if was_on[i] && !on {
                    if let Some(mark) = dark.get(i) {
                        let _ = fs::write(mark, "");
                    }
                    kill_host(ns.as_deref(), datadir.as_deref());
                    if let Some(v) = shared.volatile.lock().ok().and_then(|v| v.get(i).cloned()) {
                        v.clear();
                    }
                    shared.offs.fetch_add(1, Ordering::SeqCst);
                }
                if !was_on[i] && on {
                    if let Some(mark) = dark.get(i) {
                        let _ = fs::remove_file(mark);
                    }
                }
                was_on[i] = on;
            }
        }
        reap_orphans(shared.detached_agents.load(Ordering::SeqCst));
        std::thread::sleep(POWER_POLL);
    }
}

/// PostgreSQL servers that agents started (`pg_ctl` daemonizes them) are re-parented to this
/// process, the subreaper the Catalog fixture set up; a killed one must be reaped here, or
/// PostgreSQL takes the zombie for a live postmaster and refuses to start again. Only zombies
/// named `postgres` (and `watchkeeper` when `agents`: agents a boot script started) whose
/// parent is this process are reaped: children the rig spawned itself are waited for by their
/// owners.
fn reap_orphans(agents: bool) {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        let ours = head.ends_with("(postgres") || (agents && head.ends_with("(watchkeeper"));
        if state == Some("Z") && ppid == Some(me.as_str()) && ours {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// Ends every process of a host: those in its namespace and its PostgreSQL.
fn kill_host(ns: Option<&str>, datadir: Option<&Path>) {
    if let Some(ns) = ns {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    if let Some(pid) = datadir.and_then(live_postmaster) {
        // The postmaster's children exit when it dies; SIGKILL is a power cut to PostgreSQL.
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The file the power watcher keeps while host `name` has no power.
fn dark_mark(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.dark"))
}

fn make_netns(n: usize) -> io::Result<Netns> {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}r{k}", std::process::id() % 100_000);
    let ns = Netns {
        switch: format!("wk{tag}s"),
        hosts: (0..n).map(|i| format!("wk{tag}h{i}")).collect(),
    };
    run("ip", &["netns", "add", &ns.switch])?;
    run("ip", &["-n", &ns.switch, "link", "set", "lo", "up"])?;
    for (i, h) in ns.hosts.iter().enumerate() {
        run("ip", &["netns", "add", h])?;
        run("ip", &["-n", h, "link", "set", "lo", "up"])?;
        for (dev, peer, host_addr, switch_addr) in [
            ("hb0", format!("h{i}"), hb_host(i), hb_switch(i)),
            ("mg0", format!("m{i}"), mg_host(i), mg_switch(i)),
        ] {
            run(
                "ip",
                &[
                    "link", "add", dev, "netns", h, "type", "veth", "peer", "name", &peer, "netns",
                    &ns.switch,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    h,
                    "addr",
                    "add",
                    &format!("{host_addr}/24"),
                    "dev",
                    dev,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &ns.switch,
                    "addr",
                    "add",
                    &format!("{switch_addr}/24"),
                    "dev",
                    &peer,
                ],
            )?;
            run("ip", &["-n", h, "link", "set", dev, "up"])?;
            run("ip", &["-n", &ns.switch, "link", "set", &peer, "up"])?;
        }
    }
    Ok(ns)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn port_u16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(0)
}

fn octet(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(0)
}

fn hb_host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, octet(i), 2)
}

fn hb_switch(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, octet(i), 1)
}

fn mg_host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, octet(i), 2)
}

fn mg_switch(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, octet(i), 1)
}

fn lo0() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn nft(ns: &str, rules: &str) -> io::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        io::Write::write_all(&mut stdin, rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft in {ns}: {} (install nftables)",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The superuser password of the Catalog (for scenarios that write rows).
pub const CATALOG_PASSWORD: &str = SUPERUSER_PASSWORD;

impl super::Rig for Emulated {
    fn desc(&self) -> &RigDesc {
        &self.desc
    }
    fn start(&mut self, i: usize) -> io::Result<()> {
        Emulated::start(self, i)
    }
    fn agent_running(&mut self, i: usize) -> bool {
        self.agent(i).is_some_and(|a| a.is_running())
    }
    fn signal(&mut self, i: usize, signal: Signal) -> io::Result<()> {
        Emulated::signal(self, i, signal)
    }
    fn powered(&self, i: usize) -> bool {
        Emulated::powered(self, i)
    }
    fn reboot(&mut self, i: usize) -> io::Result<()> {
        Emulated::reboot(self, i)
    }
    fn resources(&self, i: usize) -> Option<Value> {
        Emulated::resources(self, i)
    }
    fn cli(&self, i: usize, args: &[&str]) -> io::Result<std::process::Output> {
        Emulated::cli(self, i, args)
    }
    fn running(&self, i: usize) -> Vec<String> {
        Emulated::running(self, i)
    }
    fn catalog_sql(&self, i: usize, sql: &str) -> Result<String, String> {
        match (self.catalog(), self.catalog_node(i)) {
            (Some(pg), Some(node)) => pg.sql(node, sql),
            _ => Err(format!("{} has no Catalog server", self.name(i))),
        }
    }
    fn power_offs(&self) -> u32 {
        Emulated::power_offs(self)
    }
    fn off_times(&self, i: usize) -> Vec<f64> {
        Emulated::off_times(self, i)
    }
    fn levels_off_since(&self, i: usize, since: f64) -> Option<Vec<usize>> {
        Some(self.fence.levels_off_since(i, since))
    }
    fn start_times(&self, i: usize, resource: &str) -> Vec<f64> {
        let name = self.name(i);
        self.journal()
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    [t, n, "start", r] if *n == name && *r == resource => t.parse::<f64>().ok(),
                    _ => None,
                }
            })
            .collect()
    }
    fn check_journal(&self) -> Result<usize, String> {
        Emulated::check_journal(self)
    }
    fn heal(&mut self) -> io::Result<()> {
        Emulated::heal(self)
    }
    fn unavailable(&self) -> Vec<(&'static str, String)> {
        self.limits.missing.clone()
    }
    fn cut_serial(&mut self, cut: bool) -> io::Result<()> {
        Emulated::cut_serial(self, cut);
        Ok(())
    }
    fn deafen(&mut self, to: usize, from: usize) -> io::Result<()> {
        Emulated::deafen(self, to, from)
    }
    fn degrade_lan(&mut self, loss_percent: u32, delay: Duration) -> io::Result<()> {
        Emulated::degrade_lan(self, loss_percent, delay);
        Ok(())
    }
    fn corrupt_lan(&mut self, on: bool) -> io::Result<()> {
        Emulated::corrupt_lan(self, on);
        Ok(())
    }
    fn serial_noise(&self, burst: u64) -> io::Result<()> {
        Emulated::serial_noise(self, burst)
    }
    fn cut_bmc(&mut self, i: usize, cut: bool) -> io::Result<()> {
        Emulated::cut_bmc(self, i, cut);
        Ok(())
    }
    fn bmc_ignores_off(&mut self, i: usize, ignore: bool) -> io::Result<()> {
        Emulated::bmc_ignores_off(self, i, ignore)
    }
    fn fill_disk(&mut self, i: usize, full: bool) -> io::Result<()> {
        Emulated::fill_disk(self, i, full)
    }
    fn refuse_start(&mut self, i: usize, resource: &str, refuse: bool) -> io::Result<()> {
        Emulated::refuse_start(self, i, resource, refuse)
    }
    fn hang_stop(&mut self, i: usize, resource: &str, hang: bool) -> io::Result<()> {
        Emulated::hang_stop(self, i, resource, hang)
    }
    fn set_clock_offset(&mut self, i: usize, seconds: i64) -> io::Result<()> {
        Emulated::set_clock_offset(self, i, seconds)
    }
    fn write_storage(&self, i: usize, text: &str) -> Result<usize, String> {
        match &self.ocf {
            Some(ocf) if self.powered(i) => ocf.write_storage(i, text),
            _ => Ok(0),
        }
    }
    fn read_storage(&self, i: usize) -> Vec<(String, Option<String>)> {
        self.ocf
            .as_ref()
            .map(|o| {
                o.read_storage(i)
                    .into_iter()
                    .map(|(d, t)| (d.display().to_string(), t))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::never_two_hosts;

    fn ev(t: f64, node: &str, what: &str, res: &str) -> (f64, String, String, String) {
        (t, node.into(), what.into(), res.into())
    }

    #[test]
    fn a_handover_in_order_passes() {
        let mut events = vec![
            ev(1.0, "alpha", "start", "storage"),
            ev(1.1, "alpha", "start", "dir"),
            ev(2.0, "alpha", "stop", "dir"),
            ev(2.1, "alpha", "stop", "storage"),
            ev(2.2, "beta", "start", "storage"),
            ev(3.0, "beta", "off", "-"),
            ev(3.5, "alpha", "start", "storage"),
            ev(4.0, "beta", "reboot", "-"),
        ];
        assert_eq!(never_two_hosts(&mut events), Ok(()));
    }

    #[test]
    fn overlap_is_caught_whatever_the_order_of_lines() {
        // Out of order on purpose: the journal and the power logs are merged by time.
        let mut events = vec![
            ev(2.2, "beta", "start", "storage"),
            ev(1.0, "alpha", "start", "storage"),
            ev(2.1, "alpha", "stop", "dir"),
            ev(1.1, "alpha", "start", "dir"),
            ev(2.3, "alpha", "stop", "storage"),
        ];
        let e = never_two_hosts(&mut events).expect_err("alpha still ran storage");
        assert!(e.contains("at 2.200000 (beta start storage)"), "{e}");
        // A power-off before the start clears the old holder.
        let mut events = vec![
            ev(1.0, "alpha", "start", "storage"),
            ev(1.5, "alpha", "off", "-"),
            ev(1.6, "beta", "start", "storage"),
        ];
        assert_eq!(never_two_hosts(&mut events), Ok(()));
    }
}
