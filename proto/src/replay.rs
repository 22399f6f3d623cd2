//! Replay protection for authenticated frames.
//!
//! A valid frame recorded off a cable or a network can be sent again by anyone with access to
//! that path; its MAC still verifies. Each sender therefore numbers its frames per link, and a
//! receiver keeps, per (sender, link), the highest sequence number seen and a bitmap of the
//! [`WINDOW`] numbers below it, as IPsec does: a number seen before, or older than the window,
//! is rejected. UDP may reorder frames slightly, which the window tolerates.
//!
//! Sequence numbers restart when the sender's agent restarts, so they are scoped by the
//! sender's incarnation (its boot count, persisted on the sender before use). A higher
//! incarnation means the sender restarted and clears its windows; a lower one is a replay from
//! a previous life and is rejected.
//!
//! Call [`ReplayGuard::accept`] only after the frame's MAC verified, so that forged frames can
//! never move a window.

use crate::frame::NodeId;
use crate::{MAX_LINKS, MAX_NODES};

/// How many sequence numbers below the highest one are still accepted once each.
pub const WINDOW: u64 = 64;

/// Why a frame was rejected as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The sequence number was already accepted in this incarnation.
    Duplicate {
        /// Sequence received.
        sequence: u64,
    },
    /// The sequence number is older than the window.
    TooOld {
        /// Sequence received.
        sequence: u64,
        /// Highest accepted so far.
        highest: u64,
    },
    /// The frame comes from an earlier incarnation of the sender.
    StaleIncarnation {
        /// Incarnation received.
        got: u32,
        /// Current incarnation of the sender.
        current: u32,
    },
    /// The link id is out of range.
    Link {
        /// Link received.
        link: u8,
    },
}

impl core::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Duplicate { sequence } => write!(f, "sequence {sequence} already seen"),
            Self::TooOld { sequence, highest } => {
                write!(
                    f,
                    "sequence {sequence} is older than the window below {highest}"
                )
            }
            Self::StaleIncarnation { got, current } => {
                write!(f, "incarnation {got} is older than the current {current}")
            }
            Self::Link { link } => write!(f, "link id {link} out of range"),
        }
    }
}

/// What an accepted frame meant for the sender's incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Same incarnation as before.
    Fresh,
    /// First frame ever seen from this sender.
    FirstContact,
    /// The sender restarted: its incarnation grew from `previous`.
    Restarted {
        /// The incarnation seen before.
        previous: u32,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    highest: u64,
    /// Bit `i` set: sequence `highest - i` was accepted. Bit 0 is `highest` itself.
    seen: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sender {
    incarnation: Option<u32>,
    links: [Window; MAX_LINKS],
}

/// Replay windows for every (sender, link) pair. Fixed size, no allocation.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    senders: [Sender; MAX_NODES],
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayGuard {
    /// A guard that has seen nothing.
    pub fn new() -> Self {
        Self {
            senders: [Sender::default(); MAX_NODES],
        }
    }

    /// The current incarnation of `sender`, if any frame from it was accepted.
    pub fn incarnation(&self, sender: NodeId) -> Option<u32> {
        self.senders[sender.index()].incarnation
    }

    /// Checks an authenticated frame's (incarnation, sequence) on `link` and records it.
    pub fn accept(
        &mut self,
        sender: NodeId,
        link: u8,
        incarnation: u32,
        sequence: u64,
    ) -> Result<Accepted, ReplayError> {
        let li = usize::from(link);
        if li >= MAX_LINKS {
            return Err(ReplayError::Link { link });
        }
        let s = &mut self.senders[sender.index()];
        let outcome = match s.incarnation {
            None => Accepted::FirstContact,
            Some(cur) if incarnation < cur => {
                return Err(ReplayError::StaleIncarnation {
                    got: incarnation,
                    current: cur,
                })
            }
            Some(cur) if incarnation > cur => Accepted::Restarted { previous: cur },
            Some(_) => Accepted::Fresh,
        };
        if outcome != Accepted::Fresh {
            s.incarnation = Some(incarnation);
            s.links = [Window::default(); MAX_LINKS];
        }
        s.links[li].accept(sequence)?;
        Ok(outcome)
    }
}

impl Window {
    fn accept(&mut self, sequence: u64) -> Result<(), ReplayError> {
        if self.seen == 0 {
            // Nothing seen on this link in this incarnation yet.
            self.highest = sequence;
            self.seen = 1;
            return Ok(());
        }
        if sequence > self.highest {
            let shift = sequence - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = sequence;
            return Ok(());
        }
        let age = self.highest - sequence;
        if age >= WINDOW {
            return Err(ReplayError::TooOld {
                sequence,
                highest: self.highest,
            });
        }
        let bit = 1u64 << age;
        if self.seen & bit != 0 {
            return Err(ReplayError::Duplicate { sequence });
        }
        self.seen |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u8) -> NodeId {
        NodeId::new(id).unwrap()
    }

    #[test]
    fn in_order_then_duplicate() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.accept(n(1), 0, 5, 1), Ok(Accepted::FirstContact));
        assert_eq!(g.accept(n(1), 0, 5, 2), Ok(Accepted::Fresh));
        assert_eq!(
            g.accept(n(1), 0, 5, 2),
            Err(ReplayError::Duplicate { sequence: 2 })
        );
        assert_eq!(
            g.accept(n(1), 0, 5, 1),
            Err(ReplayError::Duplicate { sequence: 1 })
        );
    }

    #[test]
    fn reorder_within_window_accepted_once() {
        let mut g = ReplayGuard::new();
        g.accept(n(1), 0, 1, 10).unwrap();
        g.accept(n(1), 0, 1, 12).unwrap();
        assert_eq!(g.accept(n(1), 0, 1, 11), Ok(Accepted::Fresh));
        assert_eq!(
            g.accept(n(1), 0, 1, 11),
            Err(ReplayError::Duplicate { sequence: 11 })
        );
        g.accept(n(1), 0, 1, 12 + WINDOW).unwrap();
        assert_eq!(
            g.accept(n(1), 0, 1, 12),
            Err(ReplayError::TooOld {
                sequence: 12,
                highest: 12 + WINDOW
            })
        );
        assert_eq!(g.accept(n(1), 0, 1, 13), Ok(Accepted::Fresh));
    }

    #[test]
    fn links_are_independent_but_share_incarnation() {
        let mut g = ReplayGuard::new();
        g.accept(n(2), 0, 3, 7).unwrap();
        assert_eq!(g.accept(n(2), 1, 3, 7), Ok(Accepted::Fresh));
        assert_eq!(
            g.accept(n(2), 1, 2, 100),
            Err(ReplayError::StaleIncarnation { got: 2, current: 3 })
        );
        assert_eq!(
            g.accept(n(2), 1, 4, 1),
            Ok(Accepted::Restarted { previous: 3 })
        );
        // The restart cleared link 0 as well: sequence 1 is new there.
        assert_eq!(g.accept(n(2), 0, 4, 1), Ok(Accepted::Fresh));
        assert_eq!(g.incarnation(n(2)), Some(4));
        assert_eq!(g.accept(n(2), 8, 4, 1), Err(ReplayError::Link { link: 8 }));
    }

    #[test]
    fn senders_are_independent() {
        let mut g = ReplayGuard::new();
        g.accept(n(1), 0, 1, 5).unwrap();
        assert_eq!(g.accept(n(32), 0, 1, 5), Ok(Accepted::FirstContact));
    }
}
