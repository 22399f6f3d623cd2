//! `watchkeeper simulate`: scenarios replayed with a timeline and a verdict, or a randomised
//! search for a broken rule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::exhaustive::{run_exhaustive, Shape};
use super::random::{random_schedule, run_random};
use super::scenario::Scenario;

/// Runs the subcommand; returns the exit code (0 all passed, 1 a failure, 78 a bad file).
pub fn cli(
    scenarios: &[PathBuf],
    random: Option<u64>,
    seed: u64,
    replay: bool,
    exhaustive: Option<usize>,
    explore: Option<(usize, usize)>,
    quiet: bool,
) -> u8 {
    if let Some((k, steps)) = explore {
        for shape in [Shape::TwoNodes, Shape::TwoNodesWitness, Shape::ThreeNodes] {
            let t = Instant::now();
            let out = super::explore::explore(shape, k, steps, EXPLORE_STEP);
            println!(
                "{shape:?}: breadth-first, up to {k} faults, {steps} steps of {} ms: {} distinct states (widest step {}), failover reachable: {}, {:.1} s",
                EXPLORE_STEP.as_millis(),
                out.states,
                out.widest,
                out.failover_reachable,
                t.elapsed().as_secs_f64()
            );
            if let Some(v) = out.violation {
                println!("{v}");
                return 1;
            }
            if !out.failover_reachable {
                println!("no explored state reached a failover: the exploration proves nothing");
                return 1;
            }
        }
        println!("no rule broken");
        return 0;
    }
    if let Some(k) = exhaustive {
        for shape in [Shape::TwoNodes, Shape::TwoNodesWitness, Shape::ThreeNodes] {
            let t = Instant::now();
            let out = run_exhaustive(shape, k);
            println!(
                "{shape:?}: every schedule of up to {k} faults: {} schedules, {} distinct states, {} with a failover, {:.1} s",
                out.schedules,
                out.states,
                out.failovers,
                t.elapsed().as_secs_f64()
            );
            if let Some(v) = out.violation {
                println!("{v}");
                return 1;
            }
        }
        println!("no rule broken");
        return 0;
    }
    if replay {
        let (mut sim, horizon) = random_schedule(seed);
        sim.trace_frames = true;
        let result = sim.run_until(horizon);
        for l in sim.trace() {
            println!("{l}");
        }
        return match result {
            Ok(()) => {
                println!("seed {seed}: every rule held");
                0
            }
            Err(v) => {
                println!("{v}");
                1
            }
        };
    }
    if let Some(count) = random {
        let t = Instant::now();
        let out = run_random(seed, count);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{} random schedules (seeds {seed}..{}) in {secs:.1} s ({:.0} schedules/s), {} takeovers, rules 1-5 checked after every event",
            out.schedules,
            seed.saturating_add(out.schedules),
            out.schedules as f64 / secs.max(1e-9),
            out.takeovers
        );
        return match out.violation {
            None => {
                println!("no rule broken");
                0
            }
            Some(v) => {
                println!("{v}");
                println!(
                    "replay with: watchkeeper simulate --replay --seed {}",
                    v.seed
                );
                1
            }
        };
    }
    if scenarios.is_empty() {
        eprintln!("watchkeeper simulate: give scenario files, or --random N, or --replay --seed S");
        return 64;
    }
    let mut failed = 0usize;
    for path in scenarios {
        let sc = match Scenario::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return 78;
            }
        };
        let report = sc.run();
        if !quiet {
            println!("== {} ({})", sc.name, path.display());
            for l in &report.timeline {
                println!("{l}");
            }
        }
        let holder = report.holder.as_deref().unwrap_or("none");
        if report.failures.is_empty() {
            println!(
                "PASS {}: holder at the end {holder}, {} takeovers, every rule held",
                sc.name, report.takeovers
            );
        } else {
            failed += 1;
            println!("FAIL {}:", sc.name);
            for f in &report.failures {
                println!("  {f}");
            }
        }
    }
    println!("{} passed, {failed} failed", scenarios.len() - failed);
    u8::from(failed > 0)
}

/// One step of `--explore`: shorter than the deadtime, so faults can land between a peer's
/// death and its detection.
const EXPLORE_STEP: Duration = Duration::from_millis(250);
