//! The rules of DESIGN.md, checked against the simulated ground truth after every event.

use proto::{Heartbeat, Role};

use super::world::Sim;
use crate::engine::Durable;

/// A broken rule, with what is needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule of DESIGN.md (1-5).
    pub rule: u8,
    /// What happened.
    pub message: String,
    /// The seed that replays it.
    pub seed: u64,
    /// The trace up to the violation.
    pub trace: Vec<String>,
}

impl Violation {
    pub(super) fn new(rule: u8, message: String) -> Self {
        Self {
            rule,
            message,
            seed: 0,
            trace: Vec::new(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rule {} broken (seed {}): {}",
            self.rule, self.seed, self.message
        )?;
        let skip = self.trace.len().saturating_sub(TRACE_TAIL);
        if skip > 0 {
            writeln!(
                f,
                "... {skip} earlier trace lines (replay the seed for all of them)"
            )?;
        }
        for l in &self.trace[skip..] {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Checker {}

impl Checker {
    /// Rules checked on the state after each event.
    pub(super) fn check(&self, sim: &Sim) -> Option<Violation> {
        // Rule 1: at most one node runs resources.
        let holders: Vec<usize> = (0..sim.nodes.len())
            .filter(|&i| sim.nodes[i].truth.holds())
            .collect();
        if holders.len() > 1 {
            return Some(Violation::new(
                1,
                format!("{} nodes run resources at once: {holders:?}", holders.len()),
            ));
        }
        // Rule 3: a holder never goes on without quorum (beyond two-node clusters, where the
        // fence race replaces quorum).
        if sim.nodes.len() > 2 {
            for (i, n) in sim.nodes.iter().enumerate() {
                if let Some(e) = n.engine.as_ref() {
                    if e.holder_epoch().is_some()
                        && !e.quorate()
                        && n.truth.powered
                        && !n.truth.frozen
                    {
                        return Some(Violation::new(3, format!("n{i} holds without quorum")));
                    }
                }
            }
        }
        None
    }

    /// Rule 5: what a node announces about epochs is on its disk already.
    pub(super) fn on_send(
        &mut self,
        i: usize,
        hb: &Heartbeat,
        disk: &Durable,
        v: &mut Option<Violation>,
    ) {
        let claims = matches!(hb.role, Role::Holder | Role::Candidate | Role::Releasing)
            || Sim::frame_flags_vote(hb);
        if !claims {
            return;
        }
        let on_disk = disk.epoch.max(disk.voted.map_or(0, |x| x.0));
        if hb.epoch > on_disk {
            *v = Some(Violation::new(
                5,
                format!(
                    "n{i} announced epoch {} as {:?} with only {on_disk} on disk",
                    hb.epoch, hb.role
                ),
            ));
        }
    }

    /// Rule 5: the persisted epoch and vote never go back.
    pub(super) fn on_persist(
        &mut self,
        i: usize,
        old: &Durable,
        new: &Durable,
        v: &mut Option<Violation>,
    ) {
        let vote = |d: &Durable| d.voted.map_or(0, |x| x.0);
        if new.epoch < old.epoch || vote(new) < vote(old) {
            *v = Some(Violation::new(
                5,
                format!("n{i} persisted {new:?} over {old:?}"),
            ));
        }
    }
}

/// Trace lines printed with a violation.
const TRACE_TAIL: usize = 80;
