//! The watchkeeper wire protocol, shared by the agent and the watchdog bridge firmware.
//!
//! A heartbeat is one fixed-size, little-endian [`Heartbeat`] frame authenticated with a
//! truncated HMAC-SHA256 under the cluster key. UDP carries one frame per datagram; serial
//! cables carry frames through [`serial`] framing (COBS with a zero delimiter and a CRC-32), so
//! that line noise and half-received frames are dropped and the next frame decodes cleanly.
//! [`replay::ReplayGuard`] rejects repeated and old sequence numbers per (sender, link) and
//! accepts a new incarnation of a sender only if it is higher than the last one seen.
//!
//! The crate is `no_std`, never allocates, and no decoder panics on any input: every function
//! that reads wire bytes returns a typed error instead, and the fuzz target in `fuzz/` and the
//! property tests hold it to that.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod frame;
pub mod replay;
pub mod serial;

pub use frame::{DecodeError, Flags, Heartbeat, Key, NodeId, Role, View, FRAME_LEN, MAC_LEN};
pub use replay::{Accepted, ReplayError, ReplayGuard};

/// Highest node id; node ids run from 1 to `MAX_NODES` so that a membership view fits a `u32`.
pub const MAX_NODES: usize = 32;

/// Highest number of heartbeat links a cluster may configure; link ids run from 0 to
/// `MAX_LINKS - 1`. Eight is more independent paths than any real host has cables and NICs for.
pub const MAX_LINKS: usize = 8;
