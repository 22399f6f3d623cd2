//! Link benchmarks: dead-peer detection latency over a pty cable and over UDP, and the RSS
//! and CPU of an idle agent with two links at 20 Hz.
//!
//! Run with a release build of the agent:
//! `cargo build --release -p agent && cargo run --release -p hwtests --bin bench-links`
//! Options: `--runs N` (detection runs per transport, default 50), `--idle-secs S` (default 20).

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hwtests::agent::log_timestamp;
use hwtests::pair::{Net, Pair, PairSpec};
use hwtests::util::percentile;
use nix::sys::signal::Signal;

const INTERVAL: Duration = Duration::from_millis(50);
const DEADTIME: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let mut runs = 50usize;
    let mut idle_secs = 20u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--idle-secs" => idle_secs = args.next().context("--idle-secs S")?.parse()?,
            other => bail!("unknown argument {other}; options: --runs N --idle-secs S"),
        }
    }
    let bin = hwtests::agent::watchkeeper_bin()?;
    println!(
        "watchkeeper link benchmarks: {} (interval {INTERVAL:?}, deadtime {DEADTIME:?})",
        bin.display()
    );
    for (name, serial, udp) in [
        ("pty cable", true, None),
        ("UDP 127.0.0.1", false, Some(Net::Loopback4)),
    ] {
        let mut lat = detection(serial, udp, runs)?;
        lat.sort();
        println!(
            "dead-peer detection over {name:<14} n={runs:<4} p50 {:>4} ms  p99 {:>4} ms  max {:>4} ms  (target p99 <= {} ms)",
            percentile(&lat, 50),
            percentile(&lat, 99),
            lat.last().copied().unwrap_or(0),
            (DEADTIME + INTERVAL).as_millis()
        );
    }
    idle(idle_secs)?;
    Ok(())
}

/// Kills the peer `runs` times and measures how long the survivor takes to declare it dead.
fn detection(serial: bool, udp: Option<Net>, runs: usize) -> Result<Vec<u64>> {
    let mut p = Pair::new(PairSpec::new(serial, udp, INTERVAL, DEADTIME))?;
    p.start(0)?;
    let mut out = Vec::with_capacity(runs);
    for run in 0..runs {
        p.start(1)?;
        let ups = run + 1;
        wait_count(&mut p, "peer_up", ups)?;
        // Let a few heartbeats flow so the kill lands at a random phase of the interval.
        std::thread::sleep(INTERVAL * 3 + Duration::from_millis((run as u64 * 7) % 50));
        let killed = SystemTime::now();
        p.agent(1).kill(Signal::SIGKILL)?;
        let down = wait_count(&mut p, "peer_down", run + 1)?;
        let at = log_timestamp(&down).context("timestamp")?;
        out.push(u64::try_from(
            at.duration_since(killed).unwrap_or_default().as_millis(),
        )?);
        drop(p.take(1));
    }
    Ok(out)
}

fn wait_count(p: &mut Pair, event: &str, n: usize) -> Result<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let evs: Vec<_> = p
            .agent(0)
            .logs()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect();
        if evs.len() >= n {
            return Ok(evs[n - 1].clone());
        }
        if Instant::now() > deadline {
            bail!("no {event} #{n} within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// RSS and CPU of an idle agent with a serial and a UDP link at 20 Hz.
fn idle(secs: u64) -> Result<()> {
    let mut p = Pair::new(PairSpec::new(
        true,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))?;
    p.start(0)?;
    p.start(1)?;
    wait_count(&mut p, "peer_up", 1)?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = p.agent(0).pid().as_raw();
    let tick = clock_ticks();
    let (c0, t0) = (cpu_ticks(pid)?, Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, t1) = (cpu_ticks(pid)?, Instant::now());
    let cpu = (c1 - c0) as f64 / tick / (t1 - t0).as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "idle agent, 2 links at 20 Hz, {secs} s: CPU {cpu:.2} % of one core (target <= 0.5 %), RSS {:.1} MB, peak RSS {:.1} MB (target <= 10 MB)",
        field("VmRSS:") as f64 / 1024.0,
        field("VmHWM:") as f64 / 1024.0
    );
    Ok(())
}

fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|x| x.1).context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name.
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |v| v as f64)
}
