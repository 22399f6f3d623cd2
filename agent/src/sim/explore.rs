//! A breadth-first explorer of the cluster's state graph, on the real engines.
//!
//! The world advances in steps of simulated time. Before each step, every state branches into
//! "no fault" and one state per fault of the alphabet (while the fault budget lasts); each
//! branch then runs for one step, with every rule checked after every event. States that are
//! identical in everything that determines their future (every engine, every node's truth,
//! links, devices, the random state, pending events) are merged, so each distinct reachable
//! state is explored once. The explorer reports how many it found, that none breaks a rule,
//! and that a failover is reachable.

use std::collections::HashSet;
use std::time::Duration;

use super::check::Violation;
use super::exhaustive::{alphabet_for, spec_for, Shape};
use super::world::{Fault, Sim};

/// What an exploration covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExploreOutcome {
    /// Distinct states explored (summed over the steps).
    pub states: u64,
    /// The widest step.
    pub widest: u64,
    /// Whether some explored state took the group over after the initial election.
    pub failover_reachable: bool,
    /// The first violation, with the faults that led to it.
    pub violation: Option<Violation>,
}

/// Explores `shape` for `steps` steps of `step` each, with up to `max_faults` faults.
pub fn explore(shape: Shape, max_faults: usize, steps: usize, step: Duration) -> ExploreOutcome {
    let alphabet: Vec<Fault> = alphabet_for(shape);
    let mut first = Sim::new(spec_for(shape));
    first.trace_off = true;
    // Let the cluster form before faults start.
    if let Err(v) = first.run_until(WARMUP) {
        return ExploreOutcome {
            violation: Some(v),
            ..ExploreOutcome::default()
        };
    }
    let mut out = ExploreOutcome::default();
    let mut layer: Vec<(Sim, Vec<(Duration, Fault)>)> = vec![(first, Vec::new())];
    for _ in 0..steps {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut next = Vec::new();
        for (sim, path) in &layer {
            let mut choices: Vec<Option<&Fault>> = vec![None];
            if path.len() < max_faults {
                choices.extend(alphabet.iter().map(Some));
            }
            for choice in choices {
                let mut s = sim.clone();
                let mut p = path.clone();
                let start = s.now();
                if let Some(f) = choice {
                    s.schedule(start, f.clone());
                    p.push((start, f.clone()));
                }
                if let Err(mut v) = s.run_until(start + step) {
                    v.message = format!("{} (faults {p:?})", v.message);
                    out.violation = Some(v);
                    return out;
                }
                if seen.insert(s.fingerprint()) {
                    out.failover_reachable |= s.takeovers() > 1;
                    next.push((s, p));
                }
                if next.len() >= MAX_LAYER {
                    break;
                }
            }
        }
        out.states += u64::try_from(next.len()).unwrap_or(u64::MAX);
        out.widest = out
            .widest
            .max(u64::try_from(next.len()).unwrap_or(u64::MAX));
        layer = next;
    }
    out
}

/// Simulated time before the first fault: startup and the first election.
const WARMUP: Duration = Duration::from_millis(1000);
/// A bound on one step's states, against a runaway: far above what the shapes reach.
const MAX_LAYER: usize = 2_000_000;
