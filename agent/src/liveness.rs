//! Peer and link liveness, decided from valid frames and the passage of time only.
//!
//! This is sans-IO in the same way as the engine: the caller passes `now` with every call,
//! drains [`Liveness::poll_transition`] after each one, and wakes up at
//! [`Liveness::next_deadline`]. Nothing here reads a clock, so the rules are tested by jumping
//! simulated time, and the runtime and the tests cannot disagree about them.
//!
//! The rules: a link to a peer is up while a valid frame from that peer arrived on it within
//! the deadtime; a peer is alive while any of its links is up. Each link's state is reported on
//! its own, so "serial cable to beta down" is visible long before beta itself is in doubt.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::{Heartbeat, NodeId};

/// A change of liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Frames from `peer` arrive on `link` (again).
    LinkUp {
        /// The peer.
        peer: NodeId,
        /// The link.
        link: u8,
    },
    /// No valid frame from `peer` on `link` for the deadtime.
    LinkDown {
        /// The peer.
        peer: NodeId,
        /// The link.
        link: u8,
        /// Time since the last valid frame on this link.
        silent_for: Duration,
    },
    /// `peer` is alive: a first link came up.
    PeerUp {
        /// The peer.
        peer: NodeId,
    },
    /// Every link to `peer` is down.
    PeerDown {
        /// The peer.
        peer: NodeId,
        /// Time since the last valid frame on any link.
        silent_for: Duration,
    },
    /// `peer` announced a higher incarnation: its agent restarted.
    PeerRestarted {
        /// The peer.
        peer: NodeId,
        /// Incarnation seen before.
        previous: u32,
        /// Incarnation now.
        current: u32,
    },
}

/// State of one link to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLiveness {
    /// Link id.
    pub link: u8,
    /// Whether frames arrive within the deadtime.
    pub up: bool,
    /// When the last valid frame arrived.
    pub last_seen: Option<Instant>,
    /// Valid frames from this peer on this link.
    pub frames: u64,
}

/// State of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLiveness {
    /// The peer.
    pub id: NodeId,
    /// Whether any link is up.
    pub alive: bool,
    /// Its links, in the order given at construction.
    pub links: Vec<LinkLiveness>,
    /// The last frame received from it on any link.
    pub last_heartbeat: Option<Heartbeat>,
}

impl PeerLiveness {
    /// When the last valid frame arrived on any link.
    pub fn last_seen(&self) -> Option<Instant> {
        self.links.iter().filter_map(|l| l.last_seen).max()
    }
}

/// Liveness of every peer over every link.
#[derive(Debug, Clone)]
pub struct Liveness {
    deadtime: Duration,
    peers: Vec<PeerLiveness>,
    transitions: VecDeque<Transition>,
}

impl Liveness {
    /// Tracks `peers`, each with the links it shares with this node. All start down.
    pub fn new(deadtime: Duration, peers: impl IntoIterator<Item = (NodeId, Vec<u8>)>) -> Self {
        let peers = peers
            .into_iter()
            .map(|(id, links)| PeerLiveness {
                id,
                alive: false,
                links: links
                    .into_iter()
                    .map(|link| LinkLiveness {
                        link,
                        up: false,
                        last_seen: None,
                        frames: 0,
                    })
                    .collect(),
                last_heartbeat: None,
            })
            .collect();
        Self {
            deadtime,
            peers,
            transitions: VecDeque::new(),
        }
    }

    /// Records a valid frame that arrived at `now`. Frames from unknown peers or on links the
    /// peer does not share are ignored (the link driver already drops them).
    pub fn frame(&mut self, now: Instant, hb: &Heartbeat) {
        self.expire(now);
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == hb.sender) else {
            return;
        };
        let Some(link) = peer.links.iter_mut().find(|l| l.link == hb.link) else {
            return;
        };
        if let Some(prev) = peer.last_heartbeat {
            if hb.incarnation > prev.incarnation {
                self.transitions.push_back(Transition::PeerRestarted {
                    peer: peer.id,
                    previous: prev.incarnation,
                    current: hb.incarnation,
                });
            }
        }
        link.last_seen = Some(now);
        link.frames += 1;
        if !link.up {
            link.up = true;
            self.transitions.push_back(Transition::LinkUp {
                peer: peer.id,
                link: hb.link,
            });
        }
        if !peer.alive {
            peer.alive = true;
            self.transitions
                .push_back(Transition::PeerUp { peer: peer.id });
        }
        // Keep the newest incarnation's frame: a stale copy on a slower link must not roll
        // back what we know.
        if peer
            .last_heartbeat
            .is_none_or(|p| hb.incarnation >= p.incarnation)
        {
            peer.last_heartbeat = Some(*hb);
        }
    }

    /// Declares down whatever has been silent for the deadtime at `now`.
    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
    }

    /// The next change of state, if any.
    pub fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    /// The earliest instant at which a link may go down.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flat_map(|p| p.links.iter())
            .filter(|l| l.up)
            .filter_map(|l| l.last_seen)
            .min()
            .map(|t| t + self.deadtime)
    }

    /// Every peer's state.
    pub fn peers(&self) -> &[PeerLiveness] {
        &self.peers
    }

    /// Whether `id` is alive.
    pub fn alive(&self, id: NodeId) -> bool {
        self.peers.iter().any(|p| p.id == id && p.alive)
    }

    fn expire(&mut self, now: Instant) {
        for peer in &mut self.peers {
            for link in &mut peer.links {
                let Some(seen) = link.last_seen else { continue };
                if link.up && now.saturating_duration_since(seen) >= self.deadtime {
                    link.up = false;
                    self.transitions.push_back(Transition::LinkDown {
                        peer: peer.id,
                        link: link.link,
                        silent_for: now - seen,
                    });
                }
            }
            if peer.alive && !peer.links.iter().any(|l| l.up) {
                peer.alive = false;
                let silent_for = peer.last_seen().map_or(Duration::ZERO, |s| now - s);
                self.transitions.push_back(Transition::PeerDown {
                    peer: peer.id,
                    silent_for,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Flags, Role, View};

    const DEAD: Duration = Duration::from_millis(1000);

    fn n(id: u8) -> NodeId {
        NodeId::new(id).expect("valid test id")
    }

    fn hb(sender: u8, link: u8, incarnation: u32) -> Heartbeat {
        Heartbeat {
            cluster_id: 1,
            sender: n(sender),
            link,
            role: Role::Standby,
            flags: Flags::default(),
            holder: None,
            prior: None,
            incarnation,
            sequence: 1,
            epoch: 0,
            view: View::default(),
            seen_epoch: 0,
        }
    }

    fn drain(l: &mut Liveness) -> Vec<Transition> {
        std::iter::from_fn(|| l.poll_transition()).collect()
    }

    #[test]
    fn first_frame_brings_link_and_peer_up() {
        let t0 = Instant::now();
        let mut l = Liveness::new(DEAD, [(n(2), vec![0, 1])]);
        assert_eq!(l.next_deadline(), None);
        l.frame(t0, &hb(2, 0, 1));
        assert_eq!(
            drain(&mut l),
            [
                Transition::LinkUp {
                    peer: n(2),
                    link: 0
                },
                Transition::PeerUp { peer: n(2) }
            ]
        );
        assert_eq!(l.next_deadline(), Some(t0 + DEAD));
        assert!(l.alive(n(2)));
    }

    #[test]
    fn one_link_down_keeps_peer_alive_then_all_down_kills_it() {
        let t0 = Instant::now();
        let mut l = Liveness::new(DEAD, [(n(2), vec![0, 1])]);
        l.frame(t0, &hb(2, 0, 1));
        l.frame(t0, &hb(2, 1, 1));
        drain(&mut l);
        // Link 1 keeps delivering every 100 ms; link 0 falls silent.
        let mut t = t0;
        for _ in 0..15 {
            t += Duration::from_millis(100);
            l.frame(t, &hb(2, 1, 1));
        }
        assert_eq!(
            drain(&mut l),
            [Transition::LinkDown {
                peer: n(2),
                link: 0,
                silent_for: DEAD
            }]
        );
        assert!(l.alive(n(2)));
        // Now link 1 falls silent too: exactly at its deadline the peer is dead.
        let deadline = l.next_deadline().expect("link 1 is up");
        assert_eq!(deadline, t + DEAD);
        l.tick(deadline - Duration::from_millis(1));
        assert!(drain(&mut l).is_empty());
        l.tick(deadline);
        assert_eq!(
            drain(&mut l),
            [
                Transition::LinkDown {
                    peer: n(2),
                    link: 1,
                    silent_for: DEAD
                },
                Transition::PeerDown {
                    peer: n(2),
                    silent_for: DEAD
                },
            ]
        );
        assert_eq!(l.next_deadline(), None);
        // It comes back.
        l.frame(deadline + DEAD, &hb(2, 0, 1));
        assert_eq!(
            drain(&mut l),
            [
                Transition::LinkUp {
                    peer: n(2),
                    link: 0
                },
                Transition::PeerUp { peer: n(2) }
            ]
        );
    }

    #[test]
    fn restart_is_reported_and_unknown_senders_ignored() {
        let t0 = Instant::now();
        let mut l = Liveness::new(DEAD, [(n(2), vec![0]), (n(3), vec![0])]);
        l.frame(t0, &hb(2, 0, 4));
        l.frame(t0, &hb(9, 0, 1));
        l.frame(t0, &hb(3, 5, 1));
        drain(&mut l);
        l.frame(t0 + Duration::from_millis(10), &hb(2, 0, 5));
        assert_eq!(
            drain(&mut l),
            [Transition::PeerRestarted {
                peer: n(2),
                previous: 4,
                current: 5
            }]
        );
        assert!(!l.alive(n(3)));
    }
}
