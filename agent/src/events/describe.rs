//! Turning the engine's inputs, events and actions into journal parts and alerts, with the
//! names from the configuration (nodes, links, devices, resources) instead of ids and indexes.
//!
//! This is the only place that decides which engine events are alerts and of which kind, so
//! the runtime stays a loop and the wording stays in one file.

use serde_json::json;

use super::{AlertBody, Part};
use crate::config::Config;
use crate::engine::{Action, Event, Evidence, FenceOutcome, Input, ResourceOutcome};
use proto::NodeId;

/// Names from one configuration.
pub struct Namer<'a> {
    config: &'a Config,
}

impl<'a> Namer<'a> {
    /// Names from `config`.
    pub fn new(config: &'a Config) -> Self {
        Self { config }
    }

    /// A node's name.
    pub fn node(&self, id: NodeId) -> String {
        self.config
            .node(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    }

    /// A link's name and kind, e.g. `lan0 (udp)`.
    pub fn link(&self, id: u8) -> String {
        match self.config.links.get(usize::from(id)) {
            Some(l) => format!(
                "{} ({})",
                l.name,
                match l.kind {
                    crate::config::LinkKind::Serial { .. } => "serial",
                    crate::config::LinkKind::Udp { .. } => "udp",
                }
            ),
            None => format!("link {id}"),
        }
    }

    /// A resource's name.
    pub fn resource(&self, index: usize) -> String {
        self.config
            .resources
            .get(index)
            .map_or_else(|| format!("resource {index}"), |r| r.name.clone())
    }

    /// The devices of fencing level `level` (0-based) of `target`, as `name (type)`.
    pub fn level_devices(&self, target: NodeId, level: usize) -> Vec<String> {
        let name = self.node(target);
        self.config
            .fencing
            .levels
            .get(&name)
            .and_then(|l| l.get(level))
            .map(|devices| {
                devices
                    .iter()
                    .map(|d| match self.config.fencing.device(d) {
                        Some(c) => format!("{d} ({})", c.kind.type_word()),
                        None => d.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The input that caused a decision. `fence_ms`: how long the fencing level of a
    /// `FenceResult` took, as the runtime measured it.
    pub fn input(&self, input: &Input, fence_ms: Option<u64>) -> Part {
        match input {
            Input::Tick => Part::new("tick", "time passed"),
            Input::Heartbeat(hb) => Part::new(
                "heartbeat",
                format!(
                    "heartbeat from {} ({:?}, epoch {}{})",
                    self.node(hb.sender),
                    hb.role,
                    hb.epoch,
                    hb.holder
                        .map_or(String::new(), |h| format!(", holder {}", self.node(h)))
                ),
            )
            .with(json!({ "from": self.node(hb.sender), "epoch": hb.epoch, "role": format!("{:?}", hb.role) })),
            Input::Link { link, up } => Part::new(
                "link",
                format!(
                    "link {} transport {}",
                    self.link(*link),
                    if *up { "up" } else { "down" }
                ),
            )
            .with(json!({ "link": self.link(*link), "up": up })),
            Input::FenceResult {
                target,
                level,
                outcome,
            } => {
                let took = fence_ms.map_or(String::new(), |ms| format!(" in {ms} ms"));
                let via = self.level_devices(*target, *level).join(", ");
                let text = match outcome {
                    FenceOutcome::Off => format!(
                        "fenced {} via {via} level {} (off confirmed{took})",
                        self.node(*target),
                        level + 1
                    ),
                    FenceOutcome::Failed(why) => format!(
                        "fencing {} via {via} level {} failed{took}: {why}",
                        self.node(*target),
                        level + 1
                    ),
                    FenceOutcome::TimedOut => format!(
                        "fencing {} via {via} level {} timed out{took}",
                        self.node(*target),
                        level + 1
                    ),
                };
                Part::new("fence_result", text).with(json!({
                    "target": self.node(*target),
                    "level": level + 1,
                    "outcome": fence_word(outcome),
                    "ms": fence_ms,
                }))
            }
            Input::VerifyResult { target, level, off } => Part::new(
                "verify_result",
                format!(
                    "confirmation of {} level {}: {}",
                    self.node(*target),
                    level + 1,
                    if *off { "off" } else { "NOT off" }
                ),
            ),
            Input::ResourceResult { index, outcome } => Part::new(
                "resource_result",
                format!(
                    "{} {}",
                    self.resource(*index),
                    match outcome {
                        ResourceOutcome::Started => "started",
                        ResourceOutcome::Stopped => "stopped",
                        ResourceOutcome::StartFailed => "failed to start",
                        ResourceOutcome::StopFailed => "failed to stop",
                    }
                ),
            )
            .with(json!({ "resource": self.resource(*index), "outcome": format!("{outcome:?}") })),
            Input::MonitorFailed { index } => Part::new(
                "monitor_failed",
                format!("monitor of {} failed", self.resource(*index)),
            ),
            Input::Persisted(d) => Part::new(
                "persisted",
                match d.voted {
                    Some((e, c)) if e > d.epoch => {
                        format!("vote for {} at epoch {e} on disk", self.node(c))
                    }
                    _ => format!("epoch {} on disk", d.epoch),
                },
            ),
            Input::Command(c) => Part::new("command", format!("operator: {c:?}")),
        }
    }

    /// An engine event.
    pub fn event(&self, e: &Event) -> Part {
        let n = |id: &NodeId| self.node(*id);
        match e {
            Event::PeerUp(p) => Part::new("peer_up", format!("{} alive", n(p))),
            Event::PeerDown(p) => Part::new("peer_down", format!("declared {} dead", n(p)))
                .with(json!({ "peer": n(p) })),
            Event::LinkUp(l) => Part::new("link_up", format!("link {} up", self.link(*l))),
            Event::LinkDown(l) => Part::new("link_down", format!("link {} down", self.link(*l))),
            Event::QuorumGained => Part::new("quorum_gained", "quorum gained"),
            Event::QuorumLost => Part::new("quorum_lost", "quorum lost"),
            Event::StartupComplete => Part::new("startup_complete", "startup complete"),
            Event::Candidate { epoch } => {
                Part::new("candidate", format!("stood for epoch {epoch}"))
            }
            Event::Voted { candidate, epoch } => Part::new(
                "voted",
                format!("voted for {} at epoch {epoch}", n(candidate)),
            ),
            Event::Elected { epoch } => Part::new("elected", format!("elected at epoch {epoch}")),
            Event::ElectionFailed { epoch } => Part::new(
                "election_failed",
                format!("election for epoch {epoch} failed"),
            ),
            Event::FenceStarted { target, level } => Part::new(
                "fence_started",
                format!(
                    "fencing {} with level {} ({})",
                    n(target),
                    level + 1,
                    self.level_devices(*target, *level).join(", ")
                ),
            )
            .with(json!({ "target": n(target), "level": level + 1 })),
            Event::FenceConfirmed { target, level } => Part::new(
                "fence_confirmed",
                format!("{} confirmed fenced by level {}", n(target), level + 1),
            )
            .with(json!({ "target": n(target), "level": level + 1 })),
            Event::FenceFailed {
                target,
                level,
                reason,
            } => Part::new(
                "fence_failed",
                format!("level {} did not fence {}: {reason}", level + 1, n(target)),
            ),
            Event::AllFencingFailed { target } => Part::new(
                "all_fencing_failed",
                format!("every fencing level of {} failed", n(target)),
            ),
            Event::TakeoverAllowed(ev) => {
                let previous = match ev {
                    Evidence::FenceConfirmed { target, .. }
                    | Evidence::SelfFenceElapsed { target } => Some(n(target)),
                    Evidence::HandoverAcked { from, .. } => Some(n(from)),
                    Evidence::NotHolding { node } => Some(n(node)),
                    Evidence::NoPriorHolder => None,
                };
                Part::new(
                    "takeover_allowed",
                    format!("takeover allowed: {}", self.evidence(ev)),
                )
                .with(json!({ "previous": previous }))
            }
            Event::Holding { epoch } => {
                Part::new("holding", format!("took over the group at epoch {epoch}"))
                    .with(json!({ "epoch": epoch }))
            }
            Event::ResourceFailed { index } => Part::new(
                "resource_failed",
                format!("{} failed: the group stops here", self.resource(*index)),
            ),
            Event::FailuresExpired => Part::new(
                "failures_expired",
                "resource failures older than the failure timeout forgotten: eligible again",
            ),
            Event::Released { epoch } => {
                Part::new("released", format!("released the group at epoch {epoch}"))
            }
            Event::SelfFence { reason } => {
                Part::new("self_fence", format!("self-fencing: {reason}"))
            }
            Event::StaleHolder { node, epoch } => Part::new(
                "stale_holder",
                format!(
                    "{} claims to hold the group at stale epoch {epoch}: split brain suspected",
                    n(node)
                ),
            ),
        }
    }

    /// Why a takeover was allowed, in words.
    pub fn evidence(&self, ev: &Evidence) -> String {
        match ev {
            Evidence::FenceConfirmed {
                target,
                level,
                verified,
            } => format!(
                "{} fenced by level {}{}",
                self.node(*target),
                level + 1,
                if *verified {
                    ", independently confirmed"
                } else {
                    ""
                }
            ),
            Evidence::SelfFenceElapsed { target } => format!(
                "{} lost quorum long enough ago for its watchdog to have reset it",
                self.node(*target)
            ),
            Evidence::HandoverAcked { from, epoch } => {
                format!(
                    "{} handed the group over at epoch {epoch}",
                    self.node(*from)
                )
            }
            Evidence::NotHolding { node } => {
                format!("{} is up and holds nothing", self.node(*node))
            }
            Evidence::NoPriorHolder => "no node held the group before".to_owned(),
        }
    }

    /// An action worth a journal line; `None` for the routine ones (heartbeats, feeds) and for
    /// alerts and logs, which are events.
    pub fn action(&self, a: &Action) -> Option<Part> {
        Some(match a {
            Action::SendHeartbeat(_) | Action::FeedWatchdog | Action::Alert(_) | Action::Log(_) => {
                return None
            }
            Action::Fence { target, level } => Part::new(
                "fence",
                format!(
                    "fence {} level {} via {}",
                    self.node(*target),
                    level + 1,
                    self.level_devices(*target, *level).join(", ")
                ),
            )
            .with(json!({ "target": self.node(*target), "level": level + 1 })),
            Action::VerifyOff { target, level } => Part::new(
                "verify_off",
                format!("confirm {} off (level {})", self.node(*target), level + 1),
            ),
            Action::Unfence { target } => {
                Part::new("unfence", format!("unfence {}", self.node(*target)))
            }
            Action::StartResource { index } => {
                Part::new("start", format!("start {}", self.resource(*index)))
            }
            Action::StopResource { index } => {
                Part::new("stop", format!("stop {}", self.resource(*index)))
            }
            Action::StarveWatchdog { reason } => {
                Part::new("starve_watchdog", format!("starve the watchdog: {reason}"))
            }
            Action::Persist(d) => Part::new(
                "persist",
                match d.voted {
                    Some((e, c)) if e > d.epoch => format!(
                        "persist epoch {} and the vote for {} at epoch {e}",
                        d.epoch,
                        self.node(c)
                    ),
                    _ => format!("persist epoch {}", d.epoch),
                },
            ),
        })
    }

    /// The alert an engine event raises, if any. `evidence`: the evidence of the takeover
    /// under way (from the `TakeoverAllowed` before a `Holding`).
    pub fn alert_for(&self, e: &Event, evidence: Option<&Evidence>) -> Option<AlertBody> {
        let n = |id: &NodeId| self.node(*id);
        Some(match e {
            Event::Holding { epoch } => {
                let (kind, target) = match evidence {
                    Some(Evidence::HandoverAcked { from, .. }) => ("switchover", Some(n(from))),
                    Some(Evidence::NoPriorHolder) | None => ("holding", None),
                    Some(
                        Evidence::FenceConfirmed { target, .. }
                        | Evidence::SelfFenceElapsed { target },
                    ) => ("failover", Some(n(target))),
                    Some(Evidence::NotHolding { node }) => ("failover", Some(n(node))),
                };
                AlertBody {
                    kind,
                    target,
                    outcome: Some("holding".to_owned()),
                    message: format!(
                        "took over the group at epoch {epoch}: {}",
                        evidence.map_or_else(|| "-".to_owned(), |ev| self.evidence(ev))
                    ),
                    details: json!({ "epoch": epoch }),
                    ..AlertBody::default()
                }
            }
            Event::AllFencingFailed { target } => AlertBody {
                kind: "fence",
                target: Some(n(target)),
                outcome: Some("all_failed".to_owned()),
                message: format!(
                    "every fencing level of {} failed: no takeover until one succeeds",
                    n(target)
                ),
                ..AlertBody::default()
            },
            Event::StaleHolder { node, epoch } => AlertBody {
                kind: "split_brain",
                target: Some(n(node)),
                outcome: Some("stale_holder".to_owned()),
                message: format!(
                    "{} claims to hold the group at stale epoch {epoch}: split brain suspected",
                    n(node)
                ),
                details: json!({ "claimed_epoch": epoch }),
                ..AlertBody::default()
            },
            Event::SelfFence { reason } => AlertBody {
                kind: "self_fence",
                outcome: Some("self_fence".to_owned()),
                message: format!("self-fencing: {reason}"),
                ..AlertBody::default()
            },
            Event::ResourceFailed { index } => AlertBody {
                kind: "resource_failed",
                target: Some(self.resource(*index)),
                outcome: Some("failed".to_owned()),
                message: format!("{} failed on this node", self.resource(*index)),
                ..AlertBody::default()
            },
            _ => return None,
        })
    }
}

/// `off`, `failed` or `timed_out`.
pub fn fence_word(o: &FenceOutcome) -> &'static str {
    match o {
        FenceOutcome::Off => "off",
        FenceOutcome::Failed(_) => "failed",
        FenceOutcome::TimedOut => "timed_out",
    }
}
