//! Watchdog feed-gap benchmark: how regularly the agent's feeder feeds, with and without its
//! real-time priority, on an idle machine and under `stress-ng` CPU + I/O + memory load.
//!
//! The feeder (the agent's own, with memory locked and its stack pre-faulted) feeds a FIFO
//! through the watchdog driver's write fallback. An observer thread at SCHED_FIFO priority 99,
//! above the feeder, reads the FIFO and stamps each byte as it arrives, so what is measured is
//! the time between feeds as a device would see them. Run as root (real-time priorities).
//!
//! ```text
//! bench-watchdog [--interval-ms 10] [--seconds 20]
//! ```
//!
//! Prints one table row per case: p50, p99, p99.9 and max of the gap between feeds, and how
//! many gaps exceeded the interval by more than 20 ms (the target is p99.9 within that).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::watchdog::{set_realtime_priority, Feeder, FeederParams};
use anyhow::{bail, Context, Result};
use drivers::watchdog::WatchdogDevice;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| -> Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .context(format!("{name} needs a value"))?
                .parse()
                .context(format!("{name} takes an integer")),
            None => Ok(default),
        }
    };
    let interval = Duration::from_millis(value("--interval-ms", 10)?);
    let seconds = value("--seconds", 20)?;
    if interval.is_zero() || seconds == 0 {
        bail!("--interval-ms and --seconds must be positive");
    }
    println!(
        "feed interval {} ms, {seconds} s per case, {} CPUs; gaps in ms",
        interval.as_millis(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| load | feeder priority | feeds | p50 | p99 | p99.9 | max | gaps > interval + 20 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for load in [false, true] {
        for realtime in [false, true] {
            let gaps = run_case(interval, Duration::from_secs(seconds), realtime, load)?;
            let q = |per_mille: usize| quantile(&gaps, per_mille);
            let late = gaps
                .iter()
                .filter(|&&g| g > interval + Duration::from_millis(20))
                .count();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {late} |",
                if load { "stress-ng cpu+io+vm" } else { "idle" },
                if realtime { "SCHED_FIFO 50" } else { "normal" },
                gaps.len() + 1,
                ms(q(500)),
                ms(q(990)),
                ms(q(999)),
                ms(gaps.iter().max().copied().unwrap_or_default()),
            );
        }
    }
    Ok(())
}

/// Feeds for `length` and returns the gaps between consecutive feeds as observed.
fn run_case(
    interval: Duration,
    length: Duration,
    realtime: bool,
    load: bool,
) -> Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("watchdog");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let reader = open_reader(&fifo)?;
    let observer = std::thread::spawn(move || observe(reader));
    let mut stress = if load { Some(stress(length)?) } else { None };
    if stress.is_some() {
        // Let the load ramp up before measuring.
        std::thread::sleep(Duration::from_secs(2));
    }
    let device = WatchdogDevice::open(&fifo)?;
    let params = FeederParams {
        interval,
        // The benchmark measures timing, not progress; its main thread only sleeps.
        progress_timeout: length * 2,
        realtime_priority: realtime.then_some(FEEDER_PRIORITY),
        state_dir: None,
    };
    let (feeder, report) = Feeder::start(Box::new(device), params)?;
    if realtime {
        if let Err(e) = &report.realtime {
            bail!("cannot set SCHED_FIFO (run as root): {e}");
        }
    }
    let progress = feeder.progress();
    let end = Instant::now() + length;
    while Instant::now() < end {
        progress.bump();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Dropping closes the FIFO, which ends the observer.
    drop(feeder);
    let arrivals = observer
        .join()
        .map_err(|_| anyhow::anyhow!("observer panicked"))??;
    if let Some(child) = stress.as_mut() {
        stop(child);
    }
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    Ok(gaps)
}

/// Opens the FIFO for reading without waiting for a writer, then makes reads block.
fn open_reader(fifo: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(file)
}

/// Reads feed bytes at top priority until the writer closes, stamping each read.
fn observe(mut reader: File) -> Result<Vec<Instant>> {
    set_realtime_priority(OBSERVER_PRIORITY).context("observer SCHED_FIFO (run as root)")?;
    let mut arrivals = Vec::with_capacity(1 << 16);
    let mut buf = [0u8; 64];
    let mut writer_seen = false;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            if writer_seen {
                return Ok(arrivals);
            }
            // No writer yet: the feeder has not opened the FIFO.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        writer_seen = true;
        let now = Instant::now();
        arrivals.extend(std::iter::repeat_n(now, n));
    }
}

fn stress(length: Duration) -> Result<Child> {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    Command::new("stress-ng")
        .args(["--cpu", &cpus.to_string(), "--io", &cpus.to_string()])
        .args(["--vm", &cpus.to_string(), "--vm-bytes", "256M"])
        .args([
            "--timeout",
            &format!("{}s", length.as_secs() + 10),
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("stress-ng (apt-get install stress-ng, or bash scripts/deps-qemu.sh)")
}

/// Stops stress-ng by its PID (it stops its workers on SIGTERM) and reaps it.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The value at `per_mille` thousandths of the sorted samples (nearest rank).
fn quantile(sorted: &[Duration], per_mille: usize) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    sorted[(last * per_mille + 500) / 1000]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The agent's default real-time priority for the feeder.
const FEEDER_PRIORITY: u8 = agent::config::DEFAULT_REALTIME_PRIORITY;

/// The observer runs above the feeder so that it sees each feed as soon as it is written.
const OBSERVER_PRIORITY: u8 = 99;
