//! `hwtests run --rig FILE SCENARIO`: builds the rig a description file names on this machine
//! and runs a fault scenario against it, printing each step and exiting non-zero when an
//! invariant breaks. `hwtests bench --rig FILE SCENARIO --runs N` repeats a failover scenario
//! (`kill-holder`, `freeze-holder`) and prints p50/p99 of the fence and of the whole group
//! started, from the BMC's power log and the resources' own journal. `hwtests list` names the
//! scenarios.
//!
//! `cargo build -p agent --bin watchkeeper && cargo run -p hwtests --bin hwtests -- run --rig hwtests/rigs/pair.toml chaos --faults 200`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hwtests::rig::desc::RigDesc;
use hwtests::rig::emulated::Emulated;
use hwtests::rig::scenario::{Runner, Timing, SCENARIOS};
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
    let built = Emulated::build(desc)?;
    for (fault, why) in &built.limits.missing {
        println!("note: {fault} is not available here: {why}");
    }
    println!(
        "rig {:?} built in {}",
        built.desc.name,
        built.dir().display()
    );
    let mut runner = Runner::start(built)?;
    if bench {
        if !matches!(scenario.as_str(), "kill-holder" | "freeze-holder") {
            bail!("bench times kill-holder or freeze-holder");
        }
        for _ in 0..runs {
            runner.run(&scenario)?;
        }
        print_timings(&scenario, runs, &runner.timings);
        return Ok(());
    }
    if scenario == "chaos" {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
        runner.chaos(seed, faults)?;
    } else {
        runner.run(&scenario)?;
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
