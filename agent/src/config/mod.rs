//! Configuration: one TOML file, parsed into raw structs, then converted once into the typed
//! [`Config`] that the rest of the agent trusts without re-checking.
//!
//! Every problem found is collected (not just the first) and reported with the file, line,
//! column and dotted key it concerns, plus a sentence saying what was expected, so that an
//! administrator can fix a broken file in one pass. The agent refuses to start on any error.
//!
//! The work is split the way it flows: `raw` holds serde structs that only fix the file's shape
//! (unknown keys and wrong types are refused there, by serde), `convert` is the single place
//! that decides what values mean and builds the typed [`Config`], `error` places problems at a
//! line and column, and `locate` names the key behind an error that `toml` reports by span only.
//!
//! # Error keys
//!
//! [`ConfigError::key`] is a dotted path: tables by name, `[[link]]` and `[[node]]` entries by
//! their 0-based position in the file, node links by link name. Examples: `cluster.name`,
//! `timing.deadtime`, `link[0].baud`, `node[1].links.lan0.address`. Errors about a whole table
//! name the table (`link[0]`, `node`); errors that concern no key use `-`.
//! Fencing keys follow the same rule: `fence_device[2].password_file`, and a node's levels as
//! `node[1].fencing[1][0]` (level, then device).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use proto::NodeId;
use proto::MAX_NODES;

pub use alert::{
    AlertConfig, AlertKind, JournalConfig, ALERT_EVENT_KINDS, DEFAULT_ALERT_TIMEOUT,
    DEFAULT_JOURNAL_KEEP, DEFAULT_JOURNAL_MAX_SIZE, JOURNAL_FILE, MAX_ALERT_NAME_LEN,
    MAX_ALERT_TIMEOUT, MAX_JOURNAL_KEEP, MAX_JOURNAL_MAX_SIZE, MIN_ALERT_TIMEOUT,
    MIN_JOURNAL_MAX_SIZE,
};
pub use bridge::{BridgeTarget, DEFAULT_BRIDGE_BAUD};
pub use convert::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use failover::{
    FailoverConfig, DEFAULT_ELECTION_TIMEOUT, DEFAULT_FENCE_DELAY, DEFAULT_FENCE_LEVEL_TIMEOUT,
    DEFAULT_FENCE_RETRY, DEFAULT_RESTART_LIMIT, DEFAULT_STALL_TIMEOUT, DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_WATCHDOG_MARGIN, MIN_FAILURE_TIMEOUT, MIN_FENCE_TIMEOUT, WATCHDOG_MARGIN_SLACK,
};
pub use fence::{
    FenceConfig, FenceDeviceConfig, FenceDeviceKind, IpmiConfig, IpmiPrivilege,
    DEFAULT_CIPHER_SUITE, DEFAULT_DEVICE_MONITOR_INTERVAL, DEFAULT_FENCE_TIMEOUT,
    DEFAULT_IPMI_PORT, DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT, MAX_DEVICE_NAME_LEN,
    MAX_LEVELS,
};
pub use fence_pdu::{
    IfMibConfig, UnfencePolicy, DEFAULT_MODBUS_BAUD, DEFAULT_MODBUS_PORT, DEFAULT_MODBUS_UNIT,
    DEFAULT_OFF_TIME, DEFAULT_PDU_REQUEST_TIMEOUT, DEFAULT_SNMP_PORT, DEFAULT_SNMP_RETRIES,
    MAX_OUTLETS_PER_NODE,
};
pub use http::HttpConfig;
pub use replicate::{
    ReplicateConfig, DEFAULT_REPLICATE_INTERVAL, DEFAULT_REPLICATE_PORT, MAX_REPLICATE_INTERVAL,
    MIN_REPLICATE_INTERVAL,
};
pub use resource::{
    FsckWord, PerNode, RejoinWord, ResourceConfig, ResourceKind, DEFAULT_ACTION_TIMEOUT,
    DEFAULT_MONITOR_INTERVAL, DEFAULT_MONITOR_TIMEOUT, DEFAULT_OCF_ROOT, DEFAULT_PG_PORT,
    MAX_RESOURCES, MAX_RESOURCE_NAME_LEN,
};

mod alert;
mod bridge;
mod convert;
mod error;
mod failover;
mod fence;
mod fence_pdu;
mod http;
mod locate;
mod raw;
mod replicate;
mod resource;
mod watchdog;

pub use watchdog::{
    WatchdogConfig, WatchdogSelector, DEFAULT_PROGRESS_TIMEOUT, DEFAULT_REALTIME_PRIORITY,
    DEFAULT_WATCHDOG_TIMEOUT, FEEDS_PER_TIMEOUT_DEFAULT, MAX_PROGRESS_TIMEOUT,
    MAX_WATCHDOG_TIMEOUT, MIN_FEEDS_PER_TIMEOUT, MIN_FEED_INTERVAL, MIN_PROGRESS_INTERVALS,
};

/// Reads and checks the configuration file at `path`.
///
/// An unreadable file gives a single error at line 0, column 0.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(path, &e))?;
    parse(path, &text)
}

/// Reads and checks the configuration file at `path` without reading its key file: for
/// simulating the cluster it describes on a machine that does not hold the key. The key in
/// the result is empty; such a configuration must never run an agent.
pub fn load_for_simulation(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(path, &e))?;
    let raw: raw::RawConfig =
        toml::from_str(&text).map_err(|e| ConfigErrors::from_toml(path, &text, &e))?;
    convert::convert_with(path, &text, raw, false)
}

/// Checks the configuration `text`, as if read from `path`.
///
/// `path` names the file in errors and is the base for relative paths in it. The key file is
/// still read from disk, since checking it is part of checking the configuration.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| ConfigErrors::from_toml(path, text, &e))?;
    convert::convert(path, text, raw)
}

/// A validated cluster configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from.
    pub path: PathBuf,
    /// Cluster-wide identity and secret.
    pub cluster: Cluster,
    /// Heartbeat timing.
    pub timing: Timing,
    /// Every configured node, sorted by id.
    pub nodes: Vec<Node>,
    /// Every heartbeat link, indexed by [`LinkId`] (the link's position in the file).
    pub links: Vec<Link>,
    /// Fence devices and each node's fencing levels.
    pub fencing: FenceConfig,
    /// The failover budget and the witnesses.
    pub failover: FailoverConfig,
    /// The resource group, in start order.
    pub resources: Vec<ResourceConfig>,
    /// Director configuration replication, if `[replicate]` is present.
    pub replicate: Option<ReplicateConfig>,
    /// The metrics endpoint and status page, if `[http]` is present.
    pub http: Option<HttpConfig>,
    /// The decision journal (`[journal]`, defaults when absent).
    pub journal: JournalConfig,
    /// Alert recipients (`[[alert]]`), in file order.
    pub alerts: Vec<AlertConfig>,
}

/// Cluster identity.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Human name of the cluster.
    pub name: String,
    /// 32-bit cluster id carried in every frame (explicit, or CRC-32 of the name).
    pub id: u32,
    /// Path of the key file (absolute, or resolved against the config file's directory).
    pub key_file: PathBuf,
    /// The shared HMAC key read from `key_file`.
    pub key: ClusterKey,
}

/// The shared cluster key. `Debug` never prints the bytes.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// Wraps key material.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw key bytes, for the HMAC only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey(<redacted {} bytes>)", self.0.len())
    }
}

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often each link sends a heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a link (and, when all links are silent, a peer) is declared down.
    pub deadtime: Duration,
}

/// Index of a link in [`Config::links`]; carried in frames so a frame is only valid on the
/// link it was sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u8);

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id (1..=proto::MAX_NODES).
    pub id: NodeId,
    /// Node name (unique).
    pub name: String,
    /// Path of this node's control socket.
    pub control_socket: PathBuf,
    /// Directory for what this node must remember across restarts (its incarnation counter).
    pub state_dir: PathBuf,
    /// This node's end of each link it takes part in, sorted by link id.
    pub links: Vec<NodeLink>,
    /// The node's hardware watchdog, if it has one.
    pub watchdog: Option<WatchdogConfig>,
}

/// A node's end of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    /// The link.
    pub link: LinkId,
    /// Where this node attaches to it.
    pub endpoint: Endpoint,
}

/// A node's attachment to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A serial port (the node's end of a null-modem cable).
    Serial {
        /// Device path, e.g. `/dev/ttyS1` or a udev symlink.
        device: PathBuf,
    },
    /// A UDP socket.
    Udp {
        /// Address this node binds and peers send to.
        address: SocketAddr,
        /// Network interface to bind to (SO_BINDTODEVICE), e.g. a crossover NIC.
        interface: Option<String>,
    },
}

/// A heartbeat link shared by two or more nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Position in the file.
    pub id: LinkId,
    /// Unique name, used in logs ("serial cable to node b down").
    pub name: String,
    /// Transport and its parameters.
    pub kind: LinkKind,
}

/// Transport of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// Serial null-modem cable between exactly two nodes, 8N1, no flow control.
    Serial {
        /// Line speed in baud.
        baud: u32,
    },
    /// UDP datagrams: unicast to every peer, or to a multicast group.
    Udp {
        /// Multicast group to send to and join instead of unicasting to each peer.
        multicast: Option<IpAddr>,
    },
}

impl Config {
    /// The node with id `id`, if configured.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id.get() == id.get())
    }

    /// The node named `name`, if configured.
    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node this agent runs as: the one named `name` if given, else the one whose name is
    /// the host name, or failing that its first label (`alpha` for `alpha.example.org`), since
    /// hosts are usually named after their node and the fully qualified form varies by setup.
    pub fn local_node(&self, name: Option<&str>) -> Result<&Node, LocalNodeError> {
        if let Some(name) = name {
            return self
                .node_by_name(name)
                .ok_or_else(|| LocalNodeError::UnknownName {
                    name: name.to_owned(),
                    configured: self.node_names(),
                });
        }
        let hostname = nix::unistd::gethostname()
            .map_err(|source| LocalNodeError::Hostname { source })?
            .into_string()
            .map_err(|hostname| LocalNodeError::HostnameNotUtf8 { hostname })?;
        let short = hostname.split('.').next().unwrap_or(&hostname);
        self.node_by_name(&hostname)
            .or_else(|| self.node_by_name(short))
            .ok_or_else(|| LocalNodeError::UnknownHostname {
                hostname: hostname.clone(),
                configured: self.node_names(),
            })
    }

    /// The link with id `id`.
    ///
    /// # Panics
    ///
    /// If `id` is not one of this configuration's link ids. Ids read from its nodes and links
    /// always are, since loading numbers links by their position in `links`.
    pub fn link(&self, id: LinkId) -> &Link {
        &self.links[usize::from(id.0)]
    }

    /// Every node but `local`, in id order.
    pub fn peers(&self, local: NodeId) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.iter().filter(move |n| n.id.get() != local.get())
    }

    fn node_names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why [`Config::local_node`] found no node.
#[derive(Debug, thiserror::Error)]
pub enum LocalNodeError {
    /// The name given explicitly is not a configured node.
    #[error("node {name} is not configured: configured nodes are {configured}")]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The configured node names, comma-separated.
        configured: String,
    },
    /// No node is named after this host.
    #[error(
        "host name {hostname} matches no configured node: configured nodes are {configured}; \
         name the local node explicitly"
    )]
    UnknownHostname {
        /// This host's name.
        hostname: String,
        /// The configured node names, comma-separated.
        configured: String,
    },
    /// The host name could not be read.
    #[error("cannot read the host name: {source}")]
    Hostname {
        /// The failed gethostname(2).
        source: nix::Error,
    },
    /// The host name is not UTF-8, so it cannot equal a node name.
    #[error("host name {hostname:?} is not UTF-8: name the local node explicitly")]
    HostnameNotUtf8 {
        /// The raw host name.
        hostname: std::ffi::OsString,
    },
}

/// How often each link sends a heartbeat unless `timing.heartbeat_interval` says otherwise.
/// Ten frames a second gives the default deadtime ten chances to hear a peer, and a 56-byte
/// frame every 100 ms uses about 5% of a 115200-baud serial line.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Silence after which a peer is declared dead unless `timing.deadtime` says otherwise. Ten
/// heartbeat intervals ride out a burst of lost frames or a stalled scheduler, while a failover
/// still starts within about a second.
pub const DEFAULT_DEADTIME: Duration = Duration::from_secs(1);

/// Shortest heartbeat interval. Below 10 ms, timer slack and scheduling delay on a loaded host
/// are a large part of the interval, and a 9600-baud line cannot carry the frames.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// Longest heartbeat interval. Beyond 10 s the deadtime (at least three intervals) is so long
/// that a failover would come too late to matter.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Deadtime must cover at least this many heartbeat intervals, so that losing one or two frames
/// in a row never declares a live peer dead.
pub const MIN_DEADTIME_INTERVALS: u32 = 3;

/// Longest deadtime. A peer dead for a minute without anyone noticing is an outage that this
/// agent exists to prevent, so a longer value is taken as a typo.
pub const MAX_DEADTIME: Duration = Duration::from_secs(60);

/// Serial line speed unless `baud` says otherwise: the fastest rate that every 16550-style UART
/// and USB adapter supports, and more than the heartbeats need.
pub const DEFAULT_BAUD: u32 = 115_200;

/// The rates accepted for `baud`: the standard ones that termios can set on every serial driver.
pub const STANDARD_BAUD_RATES: [u32; 11] = [
    1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
];

/// Control socket path unless a node's `control_socket` says otherwise: under the systemd
/// `RuntimeDirectory=watchkeeper`, which only root and the agent can enter.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/watchkeeper/control.sock";

/// State directory unless a node's `state_dir` says otherwise: the systemd
/// `StateDirectory=watchkeeper`, which survives reboots as the incarnation counter must.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/watchkeeper";

/// Fewest nodes in a cluster: one node alone has no peer to watch or to fail over to.
pub const MIN_NODES: usize = 2;

/// Most nodes in a cluster. Node ids run up to [`proto::MAX_NODES`] so that a replaced host can
/// take a fresh id without renumbering the others, but every node sends heartbeats to every peer
/// on every link, so traffic grows with the square of the count; 16 keeps it small.
pub const MAX_NODES_PER_CLUSTER: usize = 16;

/// Most links: the wire format's limit, since the link id travels in every frame.
pub const MAX_LINKS: usize = proto::MAX_LINKS;

/// Shortest cluster key in bytes. HMAC-SHA256 keys shorter than its 32-byte output weaken it
/// (RFC 2104, section 3); `watchkeeper keygen` writes 64 hex characters, which is more.
pub const MIN_KEY_LEN: usize = 32;

/// Longest cluster name; it only labels logs and status output.
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// Longest node name. Node names are matched against host names, whose labels are at most 63
/// characters, and appear in every log line, so they are kept short.
pub const MAX_NODE_NAME_LEN: usize = 32;

/// Longest link name; it appears in every log line about the link.
pub const MAX_LINK_NAME_LEN: usize = 32;

/// Longest network interface name: the kernel's `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const TEXT: &str = r#"
[cluster]
name = "bacula"
key_file = "cluster.key"

[[link]]
name = "serial0"
kind = "serial"

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 3
name = "gamma"
links.lan0 = { address = "192.168.7.3:5405" }

[[node]]
id = 1
name = "alpha"
links.serial0 = { device = "/dev/ttyS1" }
links.lan0 = { address = "192.168.7.1:5405" }

[[node]]
id = 2
name = "beta"
links.serial0 = { device = "/dev/ttyS1" }
links.lan0 = { address = "192.168.7.2:5405" }
"#;

    /// Parses [`TEXT`] next to a fresh key file; the directory must outlive the key read only.
    fn config() -> Result<Config, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, [b'k'; 40]).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        parse(&dir.path().join("wk.toml"), TEXT).map_err(|e| e.to_string())
    }

    fn id(n: u8) -> Result<NodeId, String> {
        NodeId::new(n).ok_or_else(|| format!("bad test id {n}"))
    }

    #[test]
    fn nodes_are_found_by_id_and_name() -> Result<(), String> {
        let config = config()?;
        let ids: Vec<u8> = config.nodes.iter().map(|n| n.id.get()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(config.node(id(2)?).map(|n| n.name.as_str()), Some("beta"));
        assert!(config.node(id(4)?).is_none());
        assert_eq!(config.node_by_name("gamma").map(|n| n.id.get()), Some(3));
        assert!(config.node_by_name("delta").is_none());
        Ok(())
    }

    #[test]
    fn peers_are_everyone_else_in_id_order() -> Result<(), String> {
        let config = config()?;
        let peers: Vec<&str> = config.peers(id(2)?).map(|n| n.name.as_str()).collect();
        assert_eq!(peers, ["alpha", "gamma"]);
        Ok(())
    }

    #[test]
    fn links_are_indexed_by_id() -> Result<(), String> {
        let config = config()?;
        for node in &config.nodes {
            for node_link in &node.links {
                assert_eq!(config.link(node_link.link).id, node_link.link);
            }
        }
        assert_eq!(config.link(LinkId(1)).name, "lan0");
        Ok(())
    }

    #[test]
    fn the_local_node_is_named_or_reported_with_the_choices() -> Result<(), String> {
        let config = config()?;
        let alpha = config.local_node(Some("alpha")).map(|n| n.id.get());
        assert_eq!(alpha.map_err(|e| e.to_string()), Ok(1));
        let error = config.local_node(Some("delta")).map(|n| n.id.get());
        let expected = "node delta is not configured: configured nodes are alpha, beta, gamma";
        assert_eq!(error.map_err(|e| e.to_string()), Err(expected.to_owned()));
        // This host is not named after a node (unless it happens to be), so the error must list
        // the configured names for the administrator to choose from.
        if let Err(error) = config.local_node(None) {
            assert!(
                error
                    .to_string()
                    .contains("configured nodes are alpha, beta, gamma"),
                "{error}"
            );
        }
        Ok(())
    }
}
