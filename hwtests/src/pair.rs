//! A two-node cluster of real `watchkeeper run` processes on this machine: the fixture the
//! process-level tests and the link benchmarks share.
//!
//! The nodes are `alpha` (id 1) and `beta` (id 2). They can share a serial link (a
//! [`PtyCable`]) and a UDP link, on IPv4 or IPv6 loopback, or across a veth pair between two
//! network namespaces when the caller is root (the only way to cut a UDP path for real). Each
//! node has its own state directory and control socket inside one temporary directory, which
//! also holds the generated cluster key and configuration.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::agent::{watchkeeper_bin, AgentProcess};
use crate::cable::PtyCable;
use crate::netns::VethPair;

/// Node names, index 0 and 1.
pub const NAMES: [&str; 2] = ["alpha", "beta"];

/// Where the UDP link runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// 127.0.0.1.
    Loopback4,
    /// ::1.
    Loopback6,
    /// A veth pair between two network namespaces (root only).
    Namespaces,
}

/// What the pair is built with.
#[derive(Debug, Clone, Copy)]
pub struct PairSpec {
    /// A serial link over a pty cable.
    pub serial: bool,
    /// A UDP link, and where.
    pub udp: Option<Net>,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Deadtime.
    pub deadtime: Duration,
    /// Send to and join this multicast group instead of unicasting.
    pub multicast: Option<std::net::IpAddr>,
    /// Bind each node's UDP socket to its veth interface (namespaces only).
    pub bind_interface: bool,
}

impl PairSpec {
    /// A pair with the given links and timing, unicast, not bound to an interface.
    pub fn new(serial: bool, udp: Option<Net>, interval: Duration, deadtime: Duration) -> Self {
        Self {
            serial,
            udp,
            interval,
            deadtime,
            multicast: None,
            bind_interface: false,
        }
    }
}

/// The running (or startable) pair.
#[derive(Debug)]
pub struct Pair {
    /// The cable, if the spec has a serial link.
    pub cable: Option<PtyCable>,
    /// The namespaces, if the UDP link runs across them.
    pub veth: Option<VethPair>,
    /// Each node's UDP address.
    pub udp: [Option<SocketAddr>; 2],
    /// The cluster key's bytes (as the key file holds them, trimmed).
    pub key: Vec<u8>,
    /// The configuration file.
    pub config: PathBuf,
    agents: [Option<AgentProcess>; 2],
    // Last, so the processes and cable are gone before the directory is removed.
    dir: tempfile::TempDir,
}

impl Pair {
    /// Writes key and configuration; starts nothing.
    pub fn new(spec: PairSpec) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wk").tempdir()?;
        let cable = if spec.serial {
            Some(PtyCable::new(dir.path(), "tty-alpha", "tty-beta")?)
        } else {
            None
        };
        let veth = match spec.udp {
            Some(Net::Namespaces) => Some(VethPair::new()?),
            _ => None,
        };
        let udp = match spec.udp {
            None => [None, None],
            Some(Net::Loopback4) => {
                [0, 1].map(|_| Some(SocketAddr::from(([127, 0, 0, 1], crate::free_udp_port()))))
            }
            Some(Net::Loopback6) => [0, 1].map(|_| {
                Some(SocketAddr::from((
                    std::net::Ipv6Addr::LOCALHOST,
                    crate::free_udp_port_v6(),
                )))
            }),
            Some(Net::Namespaces) => {
                let v = veth
                    .as_ref()
                    .map(|v| v.addr)
                    .unwrap_or([std::net::Ipv4Addr::UNSPECIFIED; 2]);
                [
                    Some(SocketAddr::from((v[0], 5405))),
                    Some(SocketAddr::from((v[1], 5405))),
                ]
            }
        };
        let key: String = (0..64)
            .map(|i| char::from(b"0123456789abcdef"[(i * 7 + 3) % 16]))
            .collect();
        let key_path = dir.path().join("cluster.key");
        std::fs::write(&key_path, format!("{key}\n"))?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;

        let mut toml = String::new();
        let _ = writeln!(
            toml,
            "[cluster]\nname = \"pairtest\"\nkey_file = \"cluster.key\"\n"
        );
        let _ = writeln!(
            toml,
            "[timing]\nheartbeat_interval = \"{}ms\"\ndeadtime = \"{}ms\"\n",
            spec.interval.as_millis(),
            spec.deadtime.as_millis()
        );
        if spec.serial {
            let _ = writeln!(toml, "[[link]]\nname = \"serial0\"\nkind = \"serial\"\n");
        }
        if spec.udp.is_some() {
            let _ = writeln!(toml, "[[link]]\nname = \"lan0\"\nkind = \"udp\"");
            if let Some(g) = spec.multicast {
                let _ = writeln!(toml, "multicast = \"{g}\"");
            }
            toml.push('\n');
        }
        for (i, name) in NAMES.iter().enumerate() {
            let _ = writeln!(
                toml,
                "[[node]]\nid = {}\nname = \"{name}\"\ncontrol_socket = \"{name}.sock\"\nstate_dir = \"{name}-state\"",
                i + 1
            );
            if let Some(c) = &cable {
                let dev = if i == 0 { c.a_path() } else { c.b_path() };
                let _ = writeln!(toml, "links.serial0 = {{ device = \"{}\" }}", dev.display());
            }
            if let Some(a) = udp[i] {
                match veth.as_ref().filter(|_| spec.bind_interface) {
                    Some(v) => {
                        let _ = writeln!(
                            toml,
                            "links.lan0 = {{ address = \"{a}\", interface = \"{}\" }}",
                            v.dev[i]
                        );
                    }
                    None => {
                        let _ = writeln!(toml, "links.lan0 = {{ address = \"{a}\" }}");
                    }
                }
            }
            toml.push('\n');
        }
        let config = dir.path().join("watchkeeper.toml");
        std::fs::write(&config, toml)?;
        Ok(Self {
            cable,
            veth,
            udp,
            key: key.into_bytes(),
            config,
            agents: [None, None],
            dir,
        })
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Node `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", NAMES[i]))
    }

    /// Node `i`'s log file (JSON lines).
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", NAMES[i]))
    }

    /// Starts node `i` (inside its namespace when the pair has them).
    pub fn start(&mut self, i: usize) -> io::Result<&mut AgentProcess> {
        let config = self.config.clone();
        self.start_with_config(i, &config)
    }

    /// Starts node `i` with its own configuration file instead of the shared one: a harness
    /// that routes a node's heartbeats through a relay gives each node a different view of
    /// its peer's address.
    pub fn start_with_config(
        &mut self,
        i: usize,
        config: &std::path::Path,
    ) -> io::Result<&mut AgentProcess> {
        let bin = watchkeeper_bin()?;
        let mut args: Vec<String> = Vec::new();
        let program = match &self.veth {
            Some(v) => {
                let mut enter = v.enter_command(i).into_iter();
                let program = enter.next().unwrap_or_default();
                args.extend(enter);
                args.push(bin.display().to_string());
                PathBuf::from(program)
            }
            None => bin,
        };
        args.extend(
            ["run", "--log-json", "--node", NAMES[i], "--config"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        args.push(config.display().to_string());
        let os: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let p = AgentProcess::spawn(&program, &os, &self.log(i))?;
        self.agents[i] = Some(p);
        self.agents[i]
            .as_mut()
            .ok_or_else(|| io::Error::other("just started"))
    }

    /// Node `i`'s process.
    ///
    /// # Panics
    /// If node `i` was never started: a test bug.
    pub fn agent(&mut self, i: usize) -> &mut AgentProcess {
        self.agents[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {} was not started", NAMES[i]))
    }

    /// Takes node `i`'s process out of the pair (e.g. to drop it, which stops it).
    pub fn take(&mut self, i: usize) -> Option<AgentProcess> {
        self.agents[i].take()
    }

    /// Node `i`'s status, from its control socket.
    pub fn status(&self, i: usize) -> io::Result<Value> {
        crate::status::query_status(&self.socket(i), Duration::from_secs(3))
    }

    /// Waits until node `i`'s status satisfies `pred`.
    pub fn wait_status(
        &self,
        i: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        crate::status::wait_for_status(&self.socket(i), pred, timeout)
    }
}

/// The status entry of `peer` in a status report.
pub fn peer<'a>(status: &'a Value, peer: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == peer)
}

/// The per-peer state of `link` for `peer` in a status report.
pub fn peer_link<'a>(status: &'a Value, peer_name: &str, link: &str) -> Option<&'a Value> {
    peer(status, peer_name)?["links"]
        .as_array()?
        .iter()
        .find(|l| l["link"] == link)
}

/// This node's counters for `link` in a status report.
pub fn link<'a>(status: &'a Value, link: &str) -> Option<&'a Value> {
    status["links"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == link)
}

/// `config` (a pair's configuration) with one IPMI fencing level per node: `fencing =
/// [["ipmi-NAME"]]` on each node and a `[[fence_device]]` for the BMC at `bmcs[i]` fencing node
/// `i`.
///
/// # Panics
///
/// If a node's `name = "..."` line is not in `config` exactly once.
pub fn add_ipmi_fencing(config: &str, bmcs: &[SocketAddr]) -> String {
    let mut text = config.to_owned();
    for name in NAMES {
        let line = format!("name = \"{name}\"\n");
        assert_eq!(text.matches(&line).count(), 1, "{text}");
        text = text.replace(&line, &format!("{line}fencing = [[\"ipmi-{name}\"]]\n"));
    }
    for (name, bmc) in NAMES.iter().zip(bmcs) {
        text.push_str(&crate::ipmi_sim::fence_device_toml(
            &format!("ipmi-{name}"),
            name,
            *bmc,
            "5s",
        ));
    }
    text
}
