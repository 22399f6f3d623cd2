//! In-process timing of the native IPMI driver against `ipmi_sim`: what the agent itself
//! spends to get a confirmed off, a confirmed on, a status read and a reboot (no process
//! start-up, unlike the fence-agent comparison).
//!
//! `cargo run --release -p hwtests --bin bench-ipmi -- --runs 20 [--suite 3] [--poll-ms 20]`
//! Prints the median, minimum and maximum of each operation over the runs. Each off and on is
//! a real transition: the simulator's power is put in the opposite state before every run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drivers::fence::ipmi::{IpmiDevice, IpmiParams};
use drivers::fence::{FenceDevice, PowerState};
use drivers::secret::Secret;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig, DEFAULT_PASSWORD, DEFAULT_USER};
use tokio::time::Instant;

/// Runs per operation unless `--runs` says otherwise: enough for a stable median.
const DEFAULT_RUNS: usize = 20;
/// Deadline of each operation; ipmi_sim answers in about a millisecond.
const DEADLINE: Duration = Duration::from_secs(10);
/// Node name the device is bound to.
const TARGET: &str = "bench-node";

fn main() -> Result<()> {
    let mut runs = DEFAULT_RUNS;
    let mut suite = drivers::fence::ipmi::DEFAULT_CIPHER_SUITE;
    let mut poll = drivers::fence::ipmi::DEFAULT_POLL_INTERVAL;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--suite" => suite = args.next().context("--suite ID")?.parse()?,
            "--poll-ms" => {
                poll = Duration::from_millis(args.next().context("--poll-ms MS")?.parse()?)
            }
            other => bail!("unknown argument {other}; options: --runs N --suite ID --poll-ms MS"),
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(runs, suite, poll))
}

async fn bench(runs: usize, suite: u8, poll: Duration) -> Result<()> {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut params = IpmiParams::new(sim.address(), DEFAULT_USER, Secret::new(DEFAULT_PASSWORD));
    params.cipher_suite = suite;
    params.poll_interval = poll;
    let mut dev = IpmiDevice::new("bench-bmc", TARGET, params).map_err(anyhow::Error::msg)?;
    println!(
        "native IPMI driver vs ipmi_sim at {}, cipher suite {suite}, poll interval {poll:?}, {runs} runs",
        sim.address()
    );
    let mut table: Vec<(&str, Vec<Duration>, u32)> = Vec::new();
    for op in ["off", "on", "status", "reboot"] {
        let mut times = Vec::with_capacity(runs);
        let mut polls = 0;
        for _ in 0..runs {
            sim.set_power_on(op != "on");
            let start = Instant::now();
            let deadline = start + DEADLINE;
            let fail = |e| anyhow::anyhow!("{op}: {e}");
            match op {
                "off" => polls += dev.off(TARGET, deadline).await.map_err(fail)?.polls,
                "on" => polls += dev.on(TARGET, deadline).await.map_err(fail)?.polls,
                "reboot" => polls += dev.reboot(TARGET, deadline).await.map_err(fail)?.polls,
                _ => {
                    let s = dev.status(TARGET, deadline).await.map_err(fail)?;
                    polls += 1;
                    if s != PowerState::On {
                        bail!("status read {s:?}, simulator holds on");
                    }
                }
            }
            times.push(start.elapsed());
        }
        times.sort();
        table.push((op, times, polls));
    }
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12}",
        "op", "median ms", "min ms", "max ms", "polls/run"
    );
    for (op, times, polls) in &table {
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{op:<8} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
            ms(&times[times.len() / 2]),
            ms(&times[0]),
            ms(&times[times.len() - 1]),
            f64::from(*polls) / f64::from(u32::try_from(runs).unwrap_or(u32::MAX)),
        );
    }
    let m = dev.metrics();
    println!(
        "sessions {}, retransmits {}, dropped datagrams {}, errors {}",
        m.sessions.load(Ordering::Relaxed),
        m.retransmits.load(Ordering::Relaxed),
        m.dropped.load(Ordering::Relaxed),
        m.errors.load(Ordering::Relaxed)
    );
    Ok(())
}
