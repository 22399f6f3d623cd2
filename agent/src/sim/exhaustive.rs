//! Bounded exhaustive checking: every schedule of up to `max_faults` faults drawn from a fixed
//! alphabet (crash, power back, short and long freezes, one-way and two-way link cuts, heals,
//! failing and hanging fence devices, switchover) at every time of a fixed grid, for a given
//! cluster shape, each run on the real engines with every rule checked after every event.
//!
//! Where the random search samples a huge space, this covers a small one completely: for the
//! shapes checked (two nodes, two nodes and a witness, three nodes) no combination of two faults
//! on the grid can break rules 1-5. It also counts the distinct abstract states reached (each
//! node's power, freeze, role, epoch, vote, quorum and running resources, and the cut links),
//! and confirms that takeover after a fault is reachable at all (a checker that never sees a
//! takeover proves nothing).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::check::Violation;
use super::world::{node_id, DeviceMode, Fault, Sim, SimSpec};
use crate::engine::{Command, EngineConfig};

/// A cluster shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Two nodes, no witness.
    TwoNodes,
    /// Two nodes and a witness.
    TwoNodesWitness,
    /// Three nodes.
    ThreeNodes,
}

/// What an exhaustive run covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExhaustiveOutcome {
    /// Schedules run.
    pub schedules: u64,
    /// Distinct abstract states reached across all schedules.
    pub states: u64,
    /// Schedules in which a node took over after the initial election.
    pub failovers: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

/// Runs every schedule of up to `max_faults` faults for `shape`.
pub fn run_exhaustive(shape: Shape, max_faults: usize) -> ExhaustiveOutcome {
    let n = match shape {
        Shape::TwoNodes => 2,
        Shape::TwoNodesWitness | Shape::ThreeNodes => 3,
    };
    let alphabet = alphabet(shape, n);
    let mut out = ExhaustiveOutcome::default();
    let mut states: HashSet<u64> = HashSet::new();
    let mut schedule: Vec<(Duration, Fault)> = Vec::new();
    enumerate(
        shape,
        &alphabet,
        max_faults,
        &mut schedule,
        &mut out,
        &mut states,
    );
    out.states = u64::try_from(states.len()).unwrap_or(u64::MAX);
    out
}

fn enumerate(
    shape: Shape,
    alphabet: &[(Duration, Fault)],
    left: usize,
    schedule: &mut Vec<(Duration, Fault)>,
    out: &mut ExhaustiveOutcome,
    states: &mut HashSet<u64>,
) {
    if out.violation.is_some() {
        return;
    }
    run_one(shape, schedule, out, states);
    if left == 0 {
        return;
    }
    // Faults in time order (ties in alphabet order), so no schedule is run twice.
    let start = schedule
        .last()
        .and_then(|last| alphabet.iter().position(|a| a == last))
        .map_or(0, |i| i + 1);
    for a in &alphabet[start..] {
        schedule.push(a.clone());
        enumerate(shape, alphabet, left - 1, schedule, out, states);
        schedule.pop();
        if out.violation.is_some() {
            return;
        }
    }
}

fn run_one(
    shape: Shape,
    schedule: &[(Duration, Fault)],
    out: &mut ExhaustiveOutcome,
    states: &mut HashSet<u64>,
) {
    let mut sim = Sim::new(spec(shape));
    for (at, f) in schedule {
        sim.schedule(*at, f.clone());
    }
    out.schedules += 1;
    let result = sim.run_until_visiting(HORIZON, &mut |s: &Sim| {
        states.insert(fingerprint(s));
    });
    if let Err(mut v) = result {
        v.message = format!("{} (schedule {schedule:?})", v.message);
        out.violation = Some(v);
        return;
    }
    if sim.takeovers() > 1 {
        out.failovers += 1;
    }
}

fn fingerprint(s: &Sim) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.abstract_state().hash(&mut h);
    h.finish()
}

/// The cluster the exhaustive checks run for `shape`.
pub(super) fn spec_for(shape: Shape) -> SimSpec {
    spec(shape)
}

/// The faults the exhaustive checks draw from for `shape`.
pub(super) fn alphabet_for(shape: Shape) -> Vec<Fault> {
    let n = match shape {
        Shape::TwoNodes => 2,
        Shape::TwoNodesWitness | Shape::ThreeNodes => 3,
    };
    faults(shape, n)
}

fn spec(shape: Shape) -> SimSpec {
    let ms = Duration::from_millis;
    let (names, witnesses) = match shape {
        Shape::TwoNodes => (vec!["a", "b"], 0),
        Shape::TwoNodesWitness => (vec!["a", "b", "w"], 1),
        Shape::ThreeNodes => (vec!["a", "b", "c"], 0),
    };
    SimSpec {
        names: names.into_iter().map(String::from).collect(),
        witnesses,
        base: EngineConfig {
            me: node_id(0),
            nodes: Vec::new(),
            heartbeat_interval: ms(100),
            deadtime: ms(400),
            startup_timeout: ms(1000),
            fence_delay: ms(600),
            fence_level_timeout: ms(500),
            fence_retry: ms(500),
            fence_retry_max: ms(2000),
            watchdog_margin: ms(200),
            stall_timeout: ms(300),
            election_timeout: ms(600),
            resources: vec!["mount".into(), "director".into()],
            restart_limit: 1,
            failure_timeout: None,
        },
        levels: 2,
        confirm_level0: false,
        watchdog: Some(ms(1000)),
        latency: (ms(5), ms(6)),
        loss_per_mille: 0,
        fence_time: ms(100),
        reboot_after_fence: Some(ms(1500)),
        resource_time: ms(20),
        persist_time: ms(2),
        seed: 1,
    }
}

fn alphabet(shape: Shape, n: usize) -> Vec<(Duration, Fault)> {
    let ms = Duration::from_millis;
    let faults = faults(shape, n);
    let mut out = Vec::new();
    for at in [ms(1000), ms(1700), ms(3000)] {
        for f in &faults {
            out.push((at, f.clone()));
        }
    }
    out
}

fn faults(shape: Shape, n: usize) -> Vec<Fault> {
    let ms = Duration::from_millis;
    let voters = if shape == Shape::TwoNodesWitness {
        2
    } else {
        n
    };
    let mut faults = Vec::new();
    for i in 0..voters {
        let j = (i + 1) % n;
        faults.push(Fault::Crash(i));
        faults.push(Fault::PowerOn(i));
        faults.push(Fault::Freeze(i, ms(600)));
        faults.push(Fault::Freeze(i, ms(2500)));
        faults.push(Fault::Cut { from: i, to: j });
        faults.push(Fault::Device {
            target: i,
            level: 0,
            mode: DeviceMode::Fails,
        });
        faults.push(Fault::Device {
            target: i,
            level: 1,
            mode: DeviceMode::Hangs,
        });
        faults.push(Fault::Command(i, Command::Switchover(node_id(j))));
    }
    faults.push(Fault::HealAll);
    faults
}

/// Simulated time each schedule runs for: enough for detection, fencing, reboot and rejoin.
const HORIZON: Duration = Duration::from_millis(7000);
