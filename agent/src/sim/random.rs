//! Randomised search: many clusters, each with a random schedule of faults, every rule checked
//! after every event. A failing seed replays exactly.

use std::time::Duration;

use super::check::Violation;
use super::world::{DeviceMode, Fault, Sim, SimSpec};
use crate::engine::{Command, EngineConfig};

/// Totals of a randomised run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RandomOutcome {
    /// Schedules run.
    pub schedules: u64,
    /// Simulated events... (takeovers seen, to show the runs did exercise failover).
    pub takeovers: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

/// The cluster and faults of schedule `seed`.
pub fn random_schedule(seed: u64) -> (Sim, Duration) {
    let mut r = Rng(seed.wrapping_mul(0xA24B_AED4_963E_E407) | 1);
    let shape = r.below(3);
    let (names, witnesses): (Vec<&str>, usize) = match shape {
        0 => (vec!["a", "b"], 0),
        1 => (vec!["a", "b", "w"], 1),
        _ => (vec!["a", "b", "c"], 0),
    };
    let ms = Duration::from_millis;
    let base = EngineConfig {
        me: super::world::node_id(0),
        nodes: Vec::new(),
        heartbeat_interval: ms(100),
        deadtime: ms(500),
        startup_timeout: ms(2000),
        fence_delay: ms(1500),
        fence_level_timeout: ms(1000),
        fence_retry: ms(500),
        fence_retry_max: ms(4000),
        watchdog_margin: ms(300),
        stall_timeout: ms(400),
        election_timeout: ms(1000),
        resources: vec![
            "mount".into(),
            "catalog".into(),
            "ip".into(),
            "director".into(),
        ],
        restart_limit: 1,
        failure_timeout: None,
    };
    let levels = 1 + r.index(2);
    let confirm = r.below(2) == 0;
    // Half the schedules forget resource failures after a while: a node a failed start made
    // ineligible comes back as a candidate.
    let base = EngineConfig {
        failure_timeout: (r.below(2) == 0).then(|| ms(3000)),
        ..base
    };
    let spec = SimSpec {
        names: names.iter().map(|s| (*s).to_owned()).collect(),
        witnesses,
        base,
        levels,
        confirm_level0: confirm,
        watchdog: Some(ms(1000 + 500 * r.below(3))),
        latency: (ms(1), ms(1 + r.below(40))),
        loss_per_mille: u32::try_from(r.below(3) * 20).unwrap_or(0),
        fence_time: ms(50 + r.below(400)),
        reboot_after_fence: if r.below(2) == 0 {
            Some(ms(3000))
        } else {
            None
        },
        resource_time: ms(20 + r.below(100)),
        persist_time: ms(1 + r.below(5)),
        seed,
    };
    let n = spec.names.len();
    let mut sim = Sim::new(spec);
    let horizon = ms(20_000);
    let faults = 2 + r.below(6);
    for _ in 0..faults {
        let at = ms(2_000 + r.below(14_000));
        let node = r.index(n);
        let other = (node + 1 + r.index(n - 1)) % n;
        let f = match r.below(12) {
            0 | 1 => Fault::Crash(node),
            2 => Fault::PowerOn(node),
            3 | 4 => Fault::Freeze(node, ms(200 + r.below(3000))),
            5 => Fault::Cut {
                from: node,
                to: other,
            },
            6 => {
                // A full partition of `node` from everyone.
                for j in (0..n).filter(|&j| j != node) {
                    sim.schedule(at, Fault::Cut { from: node, to: j });
                    sim.schedule(at, Fault::Cut { from: j, to: node });
                }
                Fault::HealAll
            }
            7 => Fault::HealAll,
            8 => {
                let level = r.index(levels);
                Fault::Device {
                    target: node,
                    level,
                    mode: match r.below(3) {
                        0 => DeviceMode::Fails,
                        1 => DeviceMode::Hangs,
                        // A lying device only where an independent confirmation can catch it.
                        _ if confirm && level == 0 => DeviceMode::Lies,
                        _ => DeviceMode::Fails,
                    },
                }
            }
            9 => Fault::FailStart(node, r.index(4)),
            10 => Fault::Command(node, Command::Switchover(super::world::node_id(other))),
            _ => Fault::FailStop(node, r.index(4)),
        };
        let at = if matches!(f, Fault::HealAll) && r.below(2) == 0 {
            at + ms(r.below(4000))
        } else {
            at
        };
        sim.schedule(at, f);
    }
    (sim, horizon)
}

/// Runs `count` schedules starting at `first_seed`; stops at the first violation.
pub fn run_random(first_seed: u64, count: u64) -> RandomOutcome {
    let mut out = RandomOutcome::default();
    for seed in first_seed..first_seed.saturating_add(count) {
        let (mut sim, horizon) = random_schedule(seed);
        out.schedules += 1;
        if let Err(v) = sim.run_until(horizon) {
            out.violation = Some(v);
            return out;
        }
        out.takeovers += u64::from(sim.takeovers());
    }
    out
}

struct Rng(u64);

impl Rng {
    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(u64::try_from(n).unwrap_or(u64::MAX))).unwrap_or(0)
    }

    fn below(&mut self, n: u64) -> u64 {
        crate::engine::xorshift(&mut self.0) % n.max(1)
    }
}
