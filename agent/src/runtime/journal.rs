//! The main loop's side of the decision journal: remembering which input the engine was last
//! handed, so that the actions drained after it are journaled with their cause, and turning
//! fence results, takeovers and liveness changes into alerts.
//!
//! Nothing here waits: lines and alerts go to [`Reporter`], which only queues them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use proto::NodeId;

use super::ms;
use super::status::LinkInfo;
use crate::config::Config;
use crate::engine::{Action, Engine, Event, Evidence, Input};
use crate::events::describe::{fence_word, Namer};
use crate::events::{AlertBody, Part, Reporter};
use crate::liveness::{Liveness, Transition};

/// What the journal needs to remember between loop turns.
#[derive(Default)]
pub(super) struct JournalState {
    /// The input last handed to the engine, until its actions are journaled.
    pub(super) cause: Option<Input>,
    /// When each fencing level under way started, to report its duration.
    fence_started: BTreeMap<(NodeId, usize), Instant>,
    /// The evidence of the takeover under way, for the failover alert.
    evidence: Option<Evidence>,
    /// (peer, link) pairs and peers reported down, so that only a recovery raises an alert
    /// about coming up (not every link's first frame after start).
    down_links: BTreeSet<(NodeId, u8)>,
    down_peers: BTreeSet<NodeId>,
    /// The last split-brain alert, by (node, epoch): a stale holder's every frame is an event
    /// until it is fenced, but one alert per claim (repeated after a while) is the news.
    last_split_brain: Option<((NodeId, u64), Instant)>,
}

impl JournalState {
    /// Hands `input` to the engine and remembers it as the cause of what follows.
    pub(super) fn handle(&mut self, engine: &mut Engine, input: Input) {
        self.cause = Some(input.clone());
        engine.handle(Instant::now(), input);
    }

    /// Journals the decision behind `actions` (drained from the engine after the last input)
    /// and raises the alerts it calls for. Routine turns (heartbeats and feeds only) leave no
    /// line.
    pub(super) fn record(
        &mut self,
        config: &Config,
        reporter: &Reporter,
        engine: &Engine,
        liveness: &Liveness,
        actions: &[Action],
    ) {
        let cause = self.cause.take();
        let namer = Namer::new(config);
        let epoch = epoch_of(engine);
        reporter.set_epoch(epoch);
        let mut fence_ms = None;
        if let Some(Input::FenceResult {
            target,
            level,
            outcome,
        }) = &cause
        {
            fence_ms = self
                .fence_started
                .remove(&(*target, *level))
                .map(|t| ms(t.elapsed()));
            let part = namer.input(cause.as_ref().unwrap_or(&Input::Tick), fence_ms);
            reporter.alert(AlertBody {
                kind: "fence",
                target: Some(namer.node(*target)),
                outcome: Some(fence_word(outcome).to_owned()),
                duration_ms: fence_ms,
                message: part.text,
                details: serde_json::json!({
                    "level": level + 1,
                    "devices": namer.level_devices(*target, *level),
                }),
            });
        }
        let mut events: Vec<&Event> = Vec::new();
        let mut parts = Vec::new();
        for a in actions {
            match a {
                Action::Log(e) | Action::Alert(e) => {
                    if !events.contains(&e) {
                        events.push(e);
                    }
                }
                Action::Fence { target, level } => {
                    self.fence_started.insert((*target, *level), Instant::now());
                    parts.extend(namer.action(a));
                }
                other => parts.extend(namer.action(other)),
            }
        }
        // Results of what the engine asked for and operator commands are always part of the
        // story (the last resource started, a confirmation); ticks, frames and link changes
        // only when they led somewhere.
        let answer = matches!(
            cause,
            Some(
                Input::FenceResult { .. }
                    | Input::VerifyResult { .. }
                    | Input::ResourceResult { .. }
                    | Input::MonitorFailed { .. }
                    | Input::Persisted(_)
                    | Input::Command(_)
            )
        );
        if events.is_empty() && parts.is_empty() && !answer {
            return;
        }
        let mut event_parts = Vec::new();
        for e in &events {
            let mut part = namer.event(e);
            match e {
                Event::PeerDown(p) => {
                    if let Some(s) = silence(&namer, liveness, *p) {
                        part.text = format!("{} ({s})", part.text);
                    }
                }
                Event::TakeoverAllowed(ev) => self.evidence = Some(ev.clone()),
                _ => {}
            }
            event_parts.push(part);
            if let Event::StaleHolder { node, epoch } = e {
                let key = (*node, *epoch);
                let repeat = self
                    .last_split_brain
                    .is_some_and(|(k, at)| k == key && at.elapsed() < SPLIT_BRAIN_REPEAT);
                if repeat {
                    continue;
                }
                self.last_split_brain = Some((key, Instant::now()));
            }
            if let Some(alert) = namer.alert_for(e, self.evidence.as_ref()) {
                reporter.alert(alert);
            }
            if matches!(e, Event::Holding { .. }) {
                self.evidence = None;
            }
        }
        let cause = match &cause {
            Some(i) => namer.input(i, fence_ms),
            None => Part::new("start", "agent start"),
        };
        reporter.journal(epoch, cause, event_parts, parts);
    }

    /// Journals a liveness change and raises the link or peer alert it calls for.
    pub(super) fn transition(
        &mut self,
        config: &Config,
        reporter: &Reporter,
        engine: &Engine,
        links: &[LinkInfo],
        t: &Transition,
    ) {
        let namer = Namer::new(config);
        let link_name = |id: u8| {
            links
                .iter()
                .find(|l| l.id == id)
                .map_or_else(|| namer.link(id), |l| format!("{} ({})", l.name, l.kind))
        };
        let (part, alert) = match *t {
            Transition::LinkUp { peer, link } => {
                let text = format!("{} link to {} up", link_name(link), namer.node(peer));
                let recovered = self.down_links.remove(&(peer, link));
                (
                    Part::new("link_up", text.clone()),
                    recovered.then(|| AlertBody {
                        kind: "link",
                        target: Some(namer.node(peer)),
                        outcome: Some("up".to_owned()),
                        message: text,
                        details: serde_json::json!({ "link": link_name(link) }),
                        ..AlertBody::default()
                    }),
                )
            }
            Transition::LinkDown {
                peer,
                link,
                silent_for,
            } => {
                let text = format!(
                    "{} link to {} down: no valid frame for {} ms",
                    link_name(link),
                    namer.node(peer),
                    ms(silent_for)
                );
                self.down_links.insert((peer, link));
                (
                    Part::new("link_down", text.clone()),
                    Some(AlertBody {
                        kind: "link",
                        target: Some(namer.node(peer)),
                        outcome: Some("down".to_owned()),
                        duration_ms: Some(ms(silent_for)),
                        message: text,
                        details: serde_json::json!({ "link": link_name(link) }),
                    }),
                )
            }
            Transition::PeerUp { peer } => {
                let text = format!("{} heard", namer.node(peer));
                let recovered = self.down_peers.remove(&peer);
                (
                    Part::new("peer_up", text.clone()),
                    recovered.then(|| AlertBody {
                        kind: "peer",
                        target: Some(namer.node(peer)),
                        outcome: Some("up".to_owned()),
                        message: text,
                        ..AlertBody::default()
                    }),
                )
            }
            Transition::PeerDown { peer, silent_for } => {
                let text = format!(
                    "{} silent on every link for {} ms",
                    namer.node(peer),
                    ms(silent_for)
                );
                self.down_peers.insert(peer);
                (
                    Part::new("peer_down", text.clone()),
                    Some(AlertBody {
                        kind: "peer",
                        target: Some(namer.node(peer)),
                        outcome: Some("down".to_owned()),
                        duration_ms: Some(ms(silent_for)),
                        message: text,
                        ..AlertBody::default()
                    }),
                )
            }
            Transition::PeerRestarted {
                peer,
                previous,
                current,
            } => (
                Part::new(
                    "peer_restarted",
                    format!(
                        "{} restarted (incarnation {previous} -> {current})",
                        namer.node(peer)
                    ),
                ),
                None,
            ),
        };
        reporter.journal(epoch_of(engine), part, Vec::new(), Vec::new());
        if let Some(a) = alert {
            reporter.alert(a);
        }
    }
}

/// The epoch a journal line carries: the engine's own, or a newer holder's it knows of.
fn epoch_of(engine: &Engine) -> u64 {
    engine
        .durable()
        .epoch
        .max(engine.known_holder().map_or(0, |h| h.1))
}

/// "no frame for 612 ms on lan0 (udp), serial0 (serial)" for a peer declared dead.
fn silence(namer: &Namer<'_>, liveness: &Liveness, peer: NodeId) -> Option<String> {
    let p = liveness.peers().iter().find(|p| p.id == peer)?;
    let now = Instant::now();
    let last = p.last_seen()?;
    let links: Vec<String> = p.links.iter().map(|l| namer.link(l.link)).collect();
    Some(format!(
        "no frame for {} ms on {}",
        ms(now.saturating_duration_since(last)),
        links.join(", ")
    ))
}

/// A stale holder claiming the same epoch is alerted again after this: often enough that a
/// claim that persists (its fencing keeps failing) is not forgotten, rarely enough that its
/// heartbeats do not flood the recipients.
const SPLIT_BRAIN_REPEAT: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Durable;
    use std::sync::atomic::Ordering;

    /// Node 1's view of a two-node cluster: its config, engine, liveness and a reporter
    /// whose counters the tests read.
    struct Fixture {
        c: Config,
        peer: NodeId,
        engine: Engine,
        liveness: Liveness,
        reporter: Reporter,
    }

    impl Fixture {
        fn new() -> Self {
            let c = config();
            let (me, peer) = (NodeId::new(1).expect("id"), NodeId::new(2).expect("id"));
            let engine = Engine::new(
                c.engine_config(me, Vec::new()),
                Durable::default(),
                1,
                7,
                Instant::now(),
            );
            let liveness = Liveness::new(c.timing.deadtime, [(peer, vec![0])]);
            Self {
                c,
                peer,
                engine,
                liveness,
                reporter: Reporter::disabled("a"),
            }
        }
    }

    fn config() -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wk.toml");
        std::fs::write(
            &path,
            "[cluster]\nname = \"t\"\nkey_file = \"k\"\n[[link]]\nname = \"l\"\nkind = \"udp\"\n\
             [[node]]\nid = 1\nname = \"a\"\nlinks.l = { address = \"127.0.0.1:1\" }\n\
             [[node]]\nid = 2\nname = \"b\"\nlinks.l = { address = \"127.0.0.1:2\" }\n",
        )
        .expect("config");
        crate::config::load_for_simulation(&path).expect("config")
    }

    #[test]
    fn a_stale_holder_is_alerted_once_per_claim_not_per_heartbeat() {
        let Fixture {
            c,
            peer,
            engine,
            liveness,
            reporter,
        } = Fixture::new();
        let raised = || reporter.counters().alerts_raised.load(Ordering::Relaxed);
        let mut j = JournalState::default();
        let stale = |epoch| {
            let e = Event::StaleHolder { node: peer, epoch };
            [Action::Log(e.clone()), Action::Alert(e)]
        };
        for _ in 0..5 {
            j.record(&c, &reporter, &engine, &liveness, &stale(3));
        }
        assert_eq!(raised(), 1, "one alert for five frames of the same claim");
        j.record(&c, &reporter, &engine, &liveness, &stale(4));
        assert_eq!(raised(), 2, "a new claim is news");
    }

    #[test]
    fn a_fence_result_raises_one_fence_alert_and_only_recoveries_raise_up_alerts() {
        let Fixture {
            c,
            peer,
            engine,
            liveness,
            reporter,
        } = Fixture::new();
        let raised = || reporter.counters().alerts_raised.load(Ordering::Relaxed);
        let mut j = JournalState::default();
        j.record(
            &c,
            &reporter,
            &engine,
            &liveness,
            &[Action::Fence {
                target: peer,
                level: 0,
            }],
        );
        assert_eq!(raised(), 0);
        j.cause = Some(Input::FenceResult {
            target: peer,
            level: 0,
            outcome: crate::engine::FenceOutcome::Off,
        });
        j.record(&c, &reporter, &engine, &liveness, &[]);
        assert_eq!(raised(), 1, "the fence result");
        assert!(j.fence_started.is_empty(), "its start time was used");
        // A link's first frame after start is no news; its return after a loss is.
        let up = Transition::LinkUp { peer, link: 0 };
        j.transition(&c, &reporter, &engine, &[], &up);
        assert_eq!(raised(), 1);
        let down = Transition::LinkDown {
            peer,
            link: 0,
            silent_for: std::time::Duration::from_millis(600),
        };
        j.transition(&c, &reporter, &engine, &[], &down);
        j.transition(&c, &reporter, &engine, &[], &up);
        assert_eq!(raised(), 3, "down, then up again");
    }
}
