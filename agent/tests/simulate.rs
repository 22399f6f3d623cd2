//! The simulator and the engine together: shipped scenarios reach their expected outcomes,
//! random fault schedules break no rule, runs are deterministic, and the checker does catch a
//! broken rule when the world is made to break one.

use std::path::{Path, PathBuf};

use agent::sim::{random_schedule, run_random, Scenario};

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_scenario_reaches_its_expected_outcome() {
    let all = scenarios();
    assert!(all.len() >= 12, "scenarios missing: {all:?}");
    for path in all {
        let sc = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let report = sc.run();
        assert!(
            report.failures.is_empty(),
            "{}: {:?}\n{}",
            path.display(),
            report.failures,
            report.timeline.join("\n")
        );
    }
}

#[test]
fn an_unmet_expectation_fails_the_scenario() {
    let text = r#"
name = "wrong expectation"
nodes = ["alpha", "beta"]
duration = "10s"
[[fault]]
at = "3s"
crash = "alpha"
[expect]
holder = "alpha"
"#;
    let report = Scenario::parse("inline", text).expect("valid").run();
    assert_eq!(report.holder.as_deref(), Some("beta"));
    assert_eq!(
        report.failures,
        ["expected alpha to hold the group at the end, beta does"]
    );
}

#[test]
fn a_lying_fence_device_without_confirmation_is_caught_by_the_checker() {
    // The device reports alpha off and leaves it on, with alpha only frozen for long enough
    // to be declared dead: beta takes over on false evidence while alpha still runs resources.
    let text = r#"
name = "lying device"
nodes = ["alpha", "beta"]
duration = "12s"
[cluster]
watchdog = "30s"
[[fault]]
at = "1s"
device = { target = "alpha", level = 0, mode = "lies" }
[[fault]]
at = "4s"
cut = ["alpha", "beta"]
"#;
    let report = Scenario::parse("inline", text).expect("valid").run();
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.starts_with("rule 2 broken") || f.starts_with("rule 1 broken")),
        "{:?}\n{}",
        report.failures,
        report.timeline.join("\n")
    );
}

#[test]
fn the_same_independent_confirmation_catches_the_lie() {
    let text = r#"
name = "lying device, confirmed by a second one"
nodes = ["alpha", "beta"]
duration = "12s"
[cluster]
watchdog = "30s"
confirm_with = true
[[fault]]
at = "1s"
device = { target = "alpha", level = 0, mode = "lies" }
[[fault]]
at = "4s"
cut = ["alpha", "beta"]
[expect]
holder = "alpha"
takeovers = 1
"#;
    let report = Scenario::parse("inline", text).expect("valid").run();
    assert!(
        report.failures.is_empty(),
        "{:?}\n{}",
        report.failures,
        report.timeline.join("\n")
    );
}

#[test]
fn random_schedules_break_no_rule() {
    // CI runs 10,000 in release through `watchkeeper simulate --random`; this keeps the debug
    // build honest too.
    let out = run_random(1_000_000, 300);
    if let Some(v) = out.violation {
        panic!("{v}");
    }
    assert_eq!(out.schedules, 300);
    assert!(
        out.takeovers > 300,
        "schedules exercised too few takeovers: {}",
        out.takeovers
    );
}

#[test]
fn one_seed_gives_one_trace() {
    for seed in [7, 4242, 99_999] {
        let run = || {
            let (mut sim, horizon) = random_schedule(seed);
            let r = sim.run_until(horizon).map_err(|v| v.message);
            (
                r,
                sim.trace()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b, "seed {seed} is not deterministic");
        assert!(a.1.len() > 10, "seed {seed} traced almost nothing");
    }
}

#[test]
fn every_single_fault_schedule_is_safe_and_failover_is_reachable() {
    use agent::sim::{run_exhaustive, Shape};
    // The counts are pinned: a change in them means the engine's behaviour changed, which
    // must be a conscious decision (update them after reading the new traces).
    for (shape, schedules, states) in [
        (Shape::TwoNodes, 52, 43),
        (Shape::TwoNodesWitness, 52, 47),
        (Shape::ThreeNodes, 76, 53),
    ] {
        let out = run_exhaustive(shape, 1);
        if let Some(v) = out.violation {
            panic!("{shape:?}: {v}");
        }
        assert_eq!(
            (out.schedules, out.states),
            (schedules, states),
            "{shape:?}"
        );
        assert!(
            out.failovers > 0,
            "{shape:?}: no schedule reached a failover"
        );
    }
}

#[test]
fn breadth_first_exploration_with_one_fault_is_safe_and_reaches_failover() {
    use agent::sim::{explore, Shape};
    // Pinned like the exhaustive counts: a change means the engine's behaviour changed.
    for (shape, states) in [
        (Shape::TwoNodes, 554u64),
        (Shape::TwoNodesWitness, 551),
        (Shape::ThreeNodes, 796),
    ] {
        let out = explore(shape, 1, 10, std::time::Duration::from_millis(250));
        if let Some(v) = out.violation {
            panic!("{shape:?}: {v}");
        }
        assert!(out.failover_reachable, "{shape:?}");
        assert_eq!(out.states, states, "{shape:?}");
    }
}
