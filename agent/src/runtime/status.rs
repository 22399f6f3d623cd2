//! The status report served on the control socket: what this node sees of every peer over
//! every link, and each link's counters. Serialised as JSON for `watchkeeper status --json`
//! and for scripts; the human view is rendered from the same structure.

use std::sync::Arc;
use std::time::Instant;

use drivers::link::{CounterSnapshot, LinkCounters};
use proto::NodeId;
use serde::{Deserialize, Serialize};

use super::ms;
use crate::config::Config;
use crate::liveness::Liveness;

/// A status report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Cluster name.
    pub cluster: String,
    /// This node's name.
    pub node: String,
    /// This node's id.
    pub node_id: u8,
    /// This run's incarnation.
    pub incarnation: u32,
    /// Time since the agent started.
    pub uptime_ms: u64,
    /// Configured heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Configured deadtime.
    pub deadtime_ms: u64,
    /// Every peer.
    pub peers: Vec<PeerStatus>,
    /// Every link of this node.
    pub links: Vec<LinkStatus>,
    /// Age of this node's copy of the Director configuration (time since its last successful
    /// sync), or none if it never synced. Absent in reports of older agents.
    #[serde(default)]
    pub replica_age_ms: Option<u64>,
    /// This node's part in the cluster as its engine sees it. Absent in reports of older agents.
    #[serde(default)]
    pub engine: Option<EngineView>,
    /// Every fence device and its last background check. Absent in reports of older agents.
    #[serde(default)]
    pub fence_devices: Vec<FenceDeviceStatus>,
}

/// The engine's view: role, ownership epoch, holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EngineView {
    /// `Starting`, `Standby`, `Candidate`, `Holder`, `Releasing`, `SelfFencing`, `Witness`.
    pub role: String,
    /// Highest ownership epoch this node knows.
    pub epoch: u64,
    /// The holder it knows of, by name.
    pub holder: Option<String>,
    /// Whether this node holds the group.
    pub holds: bool,
    /// Whether it has quorum.
    pub quorate: bool,
}

/// A fence device as the last background check found it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FenceDeviceStatus {
    /// Name.
    pub name: String,
    /// Type (`ipmi`, `modbus`, ...).
    pub r#type: String,
    /// The nodes it fences.
    pub targets: Vec<String>,
    /// Whether the last check passed; `None` before the first.
    pub healthy: Option<bool>,
    /// Time since the last check.
    pub last_check_ms_ago: Option<u64>,
    /// How long the last check took.
    pub last_check_ms: Option<u64>,
    /// Why the last check failed.
    pub error: Option<String>,
}

/// One peer as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u8,
    /// Whether any link delivers its frames.
    pub alive: bool,
    /// Time since its last valid frame on any link.
    pub last_seen_ms_ago: Option<u64>,
    /// Its incarnation, from its last frame.
    pub incarnation: Option<u32>,
    /// Its announced role, from its last frame.
    pub role: Option<String>,
    /// Each link shared with it.
    pub links: Vec<PeerLinkStatus>,
}

/// One link to one peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerLinkStatus {
    /// Link name.
    pub link: String,
    /// Whether its frames arrive on this link.
    pub up: bool,
    /// Time since its last valid frame on this link.
    pub last_seen_ms_ago: Option<u64>,
    /// Valid frames from it on this link.
    pub frames_in: u64,
}

/// One link of this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkStatus {
    /// Name.
    pub name: String,
    /// `serial` or `udp`.
    pub kind: String,
    /// Device path or bound address.
    pub endpoint: String,
    /// Whether the transport is open.
    pub transport_up: bool,
    /// Counters.
    pub frames_in: u64,
    #[allow(missing_docs)]
    pub frames_out: u64,
    #[allow(missing_docs)]
    pub crc_errors: u64,
    #[allow(missing_docs)]
    pub resyncs: u64,
    #[allow(missing_docs)]
    pub auth_failures: u64,
    #[allow(missing_docs)]
    pub replays: u64,
    #[allow(missing_docs)]
    pub malformed: u64,
    #[allow(missing_docs)]
    pub foreign_cluster: u64,
    #[allow(missing_docs)]
    pub misrouted: u64,
    #[allow(missing_docs)]
    pub send_errors: u64,
    #[allow(missing_docs)]
    pub opens: u64,
    #[allow(missing_docs)]
    pub queue_full: u64,
}

/// What the runtime keeps about each open link.
pub(crate) struct LinkInfo {
    pub(crate) id: u8,
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
    pub(crate) transport_up: bool,
    pub(crate) counters: Arc<LinkCounters>,
}

pub(crate) fn build(
    config: &Config,
    local: NodeId,
    incarnation: u32,
    started: Instant,
    liveness: &Liveness,
    links: &[LinkInfo],
) -> Status {
    let now = Instant::now();
    let ago = |t: Option<Instant>| t.map(|t| ms(now.saturating_duration_since(t)));
    let link_name = |id: u8| {
        links
            .iter()
            .find(|l| l.id == id)
            .map_or_else(|| id.to_string(), |l| l.name.clone())
    };
    let peers = liveness
        .peers()
        .iter()
        .map(|p| PeerStatus {
            name: config
                .node(p.id)
                .map_or_else(|| p.id.to_string(), |n| n.name.clone()),
            id: p.id.get(),
            alive: p.alive,
            last_seen_ms_ago: ago(p.last_seen()),
            incarnation: p.last_heartbeat.map(|h| h.incarnation),
            role: p.last_heartbeat.map(|h| h.role.as_str().to_owned()),
            links: p
                .links
                .iter()
                .map(|l| PeerLinkStatus {
                    link: link_name(l.link),
                    up: l.up,
                    last_seen_ms_ago: ago(l.last_seen),
                    frames_in: l.frames,
                })
                .collect(),
        })
        .collect();
    let links = links
        .iter()
        .map(|l| {
            let c: CounterSnapshot = l.counters.snapshot();
            LinkStatus {
                name: l.name.clone(),
                kind: l.kind.to_owned(),
                endpoint: l.detail.clone(),
                transport_up: l.transport_up,
                frames_in: c.frames_in,
                frames_out: c.frames_out,
                crc_errors: c.crc_errors,
                resyncs: c.resyncs,
                auth_failures: c.auth_failures,
                replays: c.replays,
                malformed: c.malformed,
                foreign_cluster: c.foreign_cluster,
                misrouted: c.misrouted,
                send_errors: c.send_errors,
                opens: c.opens,
                queue_full: c.queue_full,
            }
        })
        .collect();
    Status {
        cluster: config.cluster.name.clone(),
        node: config
            .node(local)
            .map_or_else(String::new, |n| n.name.clone()),
        node_id: local.get(),
        incarnation,
        uptime_ms: ms(now.saturating_duration_since(started)),
        heartbeat_interval_ms: ms(config.timing.heartbeat_interval),
        deadtime_ms: ms(config.timing.deadtime),
        peers,
        links,
        engine: None,
        fence_devices: Vec::new(),
        replica_age_ms: config
            .node(local)
            .and_then(|n| crate::replicate::replica_age(&n.state_dir))
            .map(ms),
    }
}
