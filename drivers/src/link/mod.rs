//! Heartbeat links: the transports that carry authenticated heartbeat frames between nodes.
//!
//! Two kinds exist, as in the field: a serial null-modem cable ([`serial`]) and UDP over a
//! dedicated or shared Ethernet segment ([`udp`]). Each link runs as its own task that owns its
//! transport, stamps outgoing frames with the link id and a per-link sequence number,
//! authenticates and replay-checks incoming frames, and hands only valid frames to the agent.
//! Everything it drops is counted by reason in [`LinkCounters`], so that an operator can tell a
//! loose cable (CRC errors), a wrong key (authentication failures) and an attack (replays)
//! apart.
//!
//! Links decide nothing about liveness: they report frames and whether their transport is open;
//! the agent's liveness tracker decides when a link or a peer is down.

pub mod serial;
pub mod udp;

mod counters;
mod rx;

use std::sync::Arc;
use std::time::Instant;

use proto::{Heartbeat, NodeId};
use tokio::sync::{mpsc, watch};

pub use counters::{CounterSnapshot, LinkCounters};

/// Everything a link task reports to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An authenticated, fresh frame from a configured peer.
    Frame {
        /// Link it arrived on.
        link: u8,
        /// The frame.
        heartbeat: Heartbeat,
        /// When the link task received it.
        at: Instant,
    },
    /// The transport opened (serial port opened, socket bound).
    TransportUp {
        /// Which link.
        link: u8,
    },
    /// The transport failed and is being reopened with backoff.
    TransportDown {
        /// Which link.
        link: u8,
        /// What failed, for the log.
        reason: String,
    },
}

/// Parameters every link shares.
#[derive(Clone)]
pub struct LinkCommon {
    /// This link's id (carried in frames).
    pub link: u8,
    /// Human name for logs.
    pub name: String,
    /// This node.
    pub local: NodeId,
    /// Peers that may send on this link; frames from any other sender are dropped.
    pub peers: Vec<NodeId>,
    /// Cluster id expected in frames.
    pub cluster_id: u32,
    /// Cluster HMAC key.
    pub key: Arc<[u8]>,
    /// Where valid frames and transport events go.
    pub events: mpsc::Sender<LinkEvent>,
    /// Counters shared with the status reporter.
    pub counters: Arc<LinkCounters>,
}

impl std::fmt::Debug for LinkCommon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCommon")
            .field("link", &self.link)
            .field("name", &self.name)
            .field("local", &self.local)
            .field("peers", &self.peers)
            .field("cluster_id", &self.cluster_id)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The sending side of a link, held by the agent.
///
/// The agent publishes the heartbeat it wants announced, numbered with its own sequence (one
/// counter per sender for all links, so that a receiver can order what reaches it over
/// different paths); the link task stamps it with the link id and sends it at once. Publishing replaces any frame not yet
/// sent, so a slow transport never builds a queue of stale heartbeats.
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: watch::Sender<Option<Heartbeat>>,
}

impl LinkSender {
    /// Creates the sender and the receiver a link task takes.
    pub fn new() -> (Self, watch::Receiver<Option<Heartbeat>>) {
        let (tx, rx) = watch::channel(None);
        (Self { tx }, rx)
    }

    /// Asks the link to send `heartbeat` now (the link fills in its link id).
    pub fn send(&self, heartbeat: Heartbeat) {
        self.tx.send_replace(Some(heartbeat));
    }
}

/// Encodes `template` as sent on `link`.
fn stamp(template: &Heartbeat, link: u8, key: &[u8]) -> [u8; proto::FRAME_LEN] {
    let mut hb = *template;
    hb.link = link;
    let mut out = [0u8; proto::FRAME_LEN];
    hb.encode(&proto::Key::new(key), &mut out);
    out
}
