//! `hwtests run --rig FILE SCENARIO`: builds the rig a description file names on this machine
//! and runs a fault scenario against it, printing each step and exiting non-zero when an
//! invariant breaks. `hwtests list` names the scenarios.
//!
//! `cargo build -p agent --bin watchkeeper && cargo run -p hwtests --bin hwtests -- run --rig hwtests/rigs/pair.toml chaos --faults 200`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hwtests::rig::desc::RigDesc;
use hwtests::rig::emulated::Emulated;
use hwtests::rig::scenario::{Runner, SCENARIOS};

const USAGE: &str = "usage: hwtests run --rig FILE SCENARIO [--seed N] [--faults N] | hwtests list";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("list") => {
            for s in SCENARIOS {
                println!("{s}");
            }
            return Ok(());
        }
        Some("run") => {}
        _ => bail!("{USAGE}"),
    }
    let mut rig: Option<PathBuf> = None;
    let mut scenario: Option<String> = None;
    let mut seed: Option<u64> = None;
    let mut faults = 200usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rig" => rig = Some(args.next().context("--rig FILE")?.into()),
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--faults" => faults = args.next().context("--faults N")?.parse()?,
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(s.to_owned()),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let rig = rig.context(USAGE)?;
    let scenario = scenario.context(USAGE)?;
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
