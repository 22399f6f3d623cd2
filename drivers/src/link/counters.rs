//! Per-link counters, written by the link task and read by the status reporter without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one link. Every dropped frame is counted under exactly one reason.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Valid frames received (authenticated, fresh, from a peer on this link).
    pub frames_in: AtomicU64,
    /// Frames written to the transport.
    pub frames_out: AtomicU64,
    /// Serial: blocks between delimiters that failed COBS, length or CRC (line noise,
    /// truncated frames).
    pub crc_errors: AtomicU64,
    /// Serial: runs of bytes longer than any frame without a delimiter, discarded up to the
    /// next delimiter.
    pub resyncs: AtomicU64,
    /// Frames whose MAC did not verify (wrong key, forgery, or corruption the CRC missed).
    pub auth_failures: AtomicU64,
    /// Authenticated frames repeating an old sequence or incarnation.
    pub replays: AtomicU64,
    /// Wrong length, magic or version, or an authenticated frame with invalid fields.
    pub malformed: AtomicU64,
    /// Authenticated frames of another cluster id.
    pub foreign_cluster: AtomicU64,
    /// Authenticated frames sent on another link, or from a node that is not a peer on this
    /// link.
    pub misrouted: AtomicU64,
    /// This node's own frames looped back (multicast).
    pub own_frames: AtomicU64,
    /// Failed writes.
    pub send_errors: AtomicU64,
    /// Times the transport was (re)opened.
    pub opens: AtomicU64,
    /// Valid frames dropped because the agent's queue was full.
    pub queue_full: AtomicU64,
}

/// A copy of [`LinkCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Same fields as LinkCounters.
pub struct CounterSnapshot {
    pub frames_in: u64,
    pub frames_out: u64,
    pub crc_errors: u64,
    pub resyncs: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub malformed: u64,
    pub foreign_cluster: u64,
    pub misrouted: u64,
    pub own_frames: u64,
    pub send_errors: u64,
    pub opens: u64,
    pub queue_full: u64,
}

impl LinkCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            frames_in: r(&self.frames_in),
            frames_out: r(&self.frames_out),
            crc_errors: r(&self.crc_errors),
            resyncs: r(&self.resyncs),
            auth_failures: r(&self.auth_failures),
            replays: r(&self.replays),
            malformed: r(&self.malformed),
            foreign_cluster: r(&self.foreign_cluster),
            misrouted: r(&self.misrouted),
            own_frames: r(&self.own_frames),
            send_errors: r(&self.send_errors),
            opens: r(&self.opens),
            queue_full: r(&self.queue_full),
        }
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
