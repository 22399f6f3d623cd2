//! The receive path every link shares: authenticate, check the sender and link, reject
//! replays, count every drop by reason, and deliver what is left.

use std::time::Instant;

use proto::{DecodeError, Heartbeat, Key, ReplayGuard};
use tokio::sync::mpsc::error::TrySendError;

use super::counters::bump;
use super::{LinkCommon, LinkEvent};

/// Receive-side state of one link.
#[derive(Debug)]
pub(crate) struct Receiver {
    replay: ReplayGuard,
}

impl Receiver {
    pub(crate) fn new() -> Self {
        Self {
            replay: ReplayGuard::new(),
        }
    }

    /// Handles the bytes of one frame (a datagram, or a CRC-checked serial frame).
    pub(crate) fn frame(&mut self, common: &LinkCommon, bytes: &[u8]) {
        let c = &common.counters;
        let hb = match Heartbeat::decode(bytes, &Key::new(&common.key), common.cluster_id) {
            Ok(hb) => hb,
            Err(e) => {
                match e {
                    DecodeError::Auth => bump(&c.auth_failures),
                    DecodeError::Cluster { .. } => bump(&c.foreign_cluster),
                    DecodeError::Length { .. }
                    | DecodeError::Magic
                    | DecodeError::Version { .. }
                    | DecodeError::Field { .. } => bump(&c.malformed),
                }
                tracing::debug!(link = %common.name, error = %e, "frame dropped");
                return;
            }
        };
        if hb.sender == common.local {
            bump(&c.own_frames);
            return;
        }
        if hb.link != common.link || !common.peers.contains(&hb.sender) {
            bump(&c.misrouted);
            tracing::debug!(
                link = %common.name,
                sender = hb.sender.get(),
                frame_link = hb.link,
                "frame dropped: not a peer on this link"
            );
            return;
        }
        if let Err(e) = self
            .replay
            .accept(hb.sender, hb.link, hb.incarnation, hb.sequence)
        {
            bump(&c.replays);
            tracing::debug!(link = %common.name, sender = hb.sender.get(), error = %e, "replay dropped");
            return;
        }
        bump(&c.frames_in);
        let ev = LinkEvent::Frame {
            link: common.link,
            heartbeat: hb,
            at: Instant::now(),
        };
        match common.events.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => bump(&c.queue_full),
            // The agent is shutting down; nothing to deliver to.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}
