//! `hwtests run --rig FILE SCENARIO`: builds the rig a description file names on this machine
//! (network namespaces, or QEMU guests with `--backend qemu`; for `backend = "real"`, reaches
//! the real hosts it names) and runs a fault scenario against it, printing each step and
//! exiting non-zero when an invariant breaks, with status 3 when the rig cannot inject a fault
//! the scenario needs. `hwtests bench --rig FILE SCENARIO --runs N` repeats a failover
//! scenario (`kill-holder`, `freeze-holder`) and prints p50/p99 of the fence and of the whole
//! group started, from the BMC's power log and the resources' own journal. `hwtests list`
//! names the scenarios.
//!
//! `cargo build -p agent --bin watchkeeper && cargo run -p hwtests --bin hwtests -- run --rig hwtests/rigs/pair.toml chaos --faults 200`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hwtests::rig::desc::{Backend, RigDesc};
use hwtests::rig::emulated::Emulated;
use hwtests::rig::real::Real;
use hwtests::rig::scenario::{Runner, Timing, SCENARIOS};
use hwtests::rig::Rig;
use hwtests::util::percentile;

const USAGE: &str = "usage: hwtests run --rig FILE [--backend netns|qemu] SCENARIO [--seed N] [--faults N] | hwtests bench --rig FILE [--backend netns|qemu] SCENARIO [--runs N] | hwtests list";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let bench = match args.next().as_deref() {
        Some("list") => {
            for s in SCENARIOS {
                println!("{s}");
            }
            println!(
                "--backend qemu: {}",
                hwtests::qemu::scenario::SCENARIOS.join(", ")
            );
            return Ok(());
        }
        Some("run") => false,
        Some("bench") => true,
        _ => bail!("{USAGE}"),
    };
    let mut rig: Option<PathBuf> = None;
    let mut scenario: Option<String> = None;
    let mut seed: Option<u64> = None;
    let mut faults = 200usize;
    let mut runs = 20usize;
    let mut qemu = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rig" => rig = Some(args.next().context("--rig FILE")?.into()),
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--faults" => faults = args.next().context("--faults N")?.parse()?,
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--backend" => match args.next().as_deref() {
                Some("qemu") => qemu = true,
                Some("netns") => qemu = false,
                other => bail!("--backend netns|qemu, not {other:?}"),
            },
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(s.to_owned()),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let rig = rig.context(USAGE)?;
    let scenario = scenario.context(USAGE)?;
    if qemu {
        let desc = RigDesc::load(&rig)?;
        return Ok(hwtests::qemu::scenario::cli(
            desc,
            &scenario,
            bench.then_some(runs),
        )?);
    }
    if !SCENARIOS.contains(&scenario.as_str()) {
        bail!(
            "unknown scenario {scenario:?}; known: {}",
            SCENARIOS.join(", ")
        );
    }
    let desc = RigDesc::load(&rig)?;
    let job = Job {
        scenario,
        bench,
        seed,
        faults,
        runs,
    };
    match desc.backend {
        Backend::Emulated => {
            let built = Emulated::build(desc)?;
            println!(
                "rig {:?} built in {}",
                built.desc.name,
                built.dir().display()
            );
            drive(built, &job)
        }
        Backend::Real => {
            let name = desc.name.clone();
            let real = Real::connect(desc)?;
            println!("rig {name:?}: every host answers, every power status reads");
            drive(real, &job)
        }
    }
}

struct Job {
    scenario: String,
    bench: bool,
    seed: Option<u64>,
    faults: usize,
    runs: usize,
}

/// Runs the job on a rig, whichever backend; exits with status 3 when the rig cannot inject
/// a fault the scenario needs.
fn drive<R: Rig + std::fmt::Debug>(rig: R, job: &Job) -> Result<()> {
    for (fault, why) in rig.unavailable() {
        println!("note: fault {fault} is not available on this rig: {why}");
    }
    if job.scenario != "chaos" {
        let declined = hwtests::rig::scenario::faults_of(&job.scenario, rig.desc())
            .into_iter()
            .find_map(|f| {
                rig.unavailable()
                    .into_iter()
                    .find(|(m, _)| *m == f)
                    .map(|(m, why)| format!("{m}: {why}"))
            });
        if let Some(why) = declined {
            println!("{}: declined: it needs fault {why}", job.scenario);
            std::process::exit(3);
        }
    }
    let mut runner = Runner::start(rig)?;
    let scenario = job.scenario.as_str();
    if job.bench {
        if !matches!(scenario, "kill-holder" | "freeze-holder") {
            bail!("bench times kill-holder or freeze-holder");
        }
        for _ in 0..job.runs {
            runner.run(scenario)?;
        }
        print_timings(scenario, job.runs, &runner.timings);
        return Ok(());
    }
    if scenario == "chaos" {
        let seed = job.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        runner.chaos(seed, job.faults)?;
    } else {
        runner.run(scenario)?;
    }
    println!("{scenario}: passed");
    Ok(())
}

fn print_timings(scenario: &str, runs: usize, timings: &[Timing]) {
    let pct = |v: Vec<f64>| -> (u64, u64, u64) {
        // Whole milliseconds: the clocks behind them are no finer than that in practice.
        let mut ms: Vec<u64> = v
            .iter()
            .map(|x| Duration::from_secs_f64(x.max(0.0) / 1000.0).as_millis())
            .map(|m| u64::try_from(m).unwrap_or(u64::MAX))
            .collect();
        ms.sort_unstable();
        (
            percentile(&ms, 50),
            percentile(&ms, 99),
            percentile(&ms, 100),
        )
    };
    println!(
        "\n{scenario}: {} of {runs} runs timed (BMC power log, resource journal)",
        timings.len()
    );
    println!("| from the fault to | p50 ms | p99 ms | max ms |\n|---|---|---|---|");
    let (a, b, c) = pct(timings.iter().map(|t| t.fenced_ms).collect());
    println!("| the BMC switches the lost holder off | {a} | {b} | {c} |");
    let (a, b, c) = pct(timings.iter().map(|t| t.group_ms).collect());
    println!("| the whole group started on the survivor | {a} | {b} | {c} |");
}
