//! `watchkeeper watchdog list` and `watchkeeper watchdog test`.
//!
//! `list` reads sysfs only, because opening a watchdog arms it. `test` proves on a real host
//! that its watchdog resets it: it arms the device with a short timeout through the same feeder
//! the agent uses, feeds a few times, then starves it with last words, exactly as a self-fence
//! would. It refuses to run without an explicit confirmation flag.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;
use drivers::watchdog::{self as wd, Watchdog as _, WatchdogDevice};

use super::{resolve, state, Feeder, FeederParams};
use crate::config::{self, DEFAULT_REALTIME_PRIORITY, MIN_FEED_INTERVAL};

/// `watchkeeper watchdog ...`.
#[derive(Debug, Subcommand)]
pub enum WatchdogCommand {
    /// List this host's watchdogs (from sysfs; nothing is opened or armed).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Arm the watchdog with a short timeout, feed it briefly, then stop feeding: the host
    /// must reset. The agent must not be running (it holds the device).
    Test {
        /// Required: this resets the host.
        #[arg(long = "i-understand-this-resets-the-host")]
        confirmed: bool,
        /// Configuration file naming the node's watchdog and state directory.
        #[arg(long, short, default_value = crate::cli::DEFAULT_CONFIG)]
        config: PathBuf,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Test this device instead of the configured one.
        #[arg(long)]
        device: Option<PathBuf>,
        /// Where to leave the last words (default: the node's state directory).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Timeout to arm with, in whole seconds.
        #[arg(long, default_value_t = TEST_TIMEOUT_S)]
        timeout_s: u64,
    },
}

/// Runs a watchdog subcommand; returns the exit code.
pub fn main(command: WatchdogCommand) -> u8 {
    match command {
        WatchdogCommand::List { json } => list(json),
        WatchdogCommand::Test {
            confirmed,
            config,
            node,
            device,
            state_dir,
            timeout_s,
        } => {
            if !confirmed {
                eprintln!(
                    "watchkeeper watchdog test arms the watchdog and stops feeding it, which \
                     RESETS THIS HOST within {timeout_s} s. Stop the agent first, then run it \
                     again with --i-understand-this-resets-the-host"
                );
                return EXIT_USAGE;
            }
            let target = match Target::choose(&config, node.as_deref(), device, state_dir) {
                Ok(t) => t,
                Err(code) => return code,
            };
            test(&target, Duration::from_secs(timeout_s))
        }
    }
}

fn list(json: bool) -> u8 {
    let devices = wd::discover();
    if json {
        let list: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device": d.device.display().to_string(),
                    "identity": d.identity,
                    "state": d.state,
                    "timeout_s": d.timeout.map(|t| t.as_secs()),
                    "time_left_s": d.time_left.map(|t| t.as_secs()),
                    "min_timeout_s": d.min_timeout.map(|t| t.as_secs()),
                    "max_timeout_s": d.max_timeout.map(|t| t.as_secs()),
                    "boot_status": d.boot_status.map(|f| f.names()),
                    "watchdog_caused_last_reboot": d.boot_status.map(|f| f.has(wd::Flags::CARDRESET)),
                    "nowayout": d.nowayout,
                    "softdog": d.is_softdog(),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_owned());
        println!("{text}");
        return 0;
    }
    if devices.is_empty() {
        println!(
            "no watchdog found (no /sys/class/watchdog entries, no /dev/watchdog): load the \
             driver for this board's timer (e.g. iTCO_wdt, sp5100_tco, ipmi_watchdog)"
        );
        return EXIT_UNAVAILABLE;
    }
    let secs =
        |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{}s", d.as_secs()));
    for d in &devices {
        println!(
            "{}  identity {:?}  state {}  timeout {}  time left {}  range {}..{}  boot status {}  nowayout {}",
            d.device.display(),
            d.identity.as_deref().unwrap_or("?"),
            d.state.as_deref().unwrap_or("?"),
            secs(d.timeout),
            secs(d.time_left),
            secs(d.min_timeout),
            secs(d.max_timeout),
            d.boot_status.map_or_else(|| "?".to_owned(), |f| f.to_string()),
            d.nowayout.map_or("?", |n| if n { "yes" } else { "no" }),
        );
        if d.boot_status.is_some_and(|f| f.has(wd::Flags::CARDRESET)) {
            println!("  the last reboot was caused by this watchdog");
        }
        if d.is_softdog() {
            println!(
                "  WEAKER: softdog is a kernel timer, not hardware: a hung kernel may never fire \
                 it; prefer a hardware watchdog"
            );
        }
        if d.identity.is_none() {
            println!("  legacy driver without sysfs: nothing more is known without arming it");
        }
    }
    0
}

/// What `test` works on.
struct Target {
    device: PathBuf,
    state_dir: Option<PathBuf>,
    priority: u8,
}

impl Target {
    fn choose(
        config_file: &Path,
        node: Option<&str>,
        device: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, u8> {
        if let Some(device) = device {
            return Ok(Self {
                device,
                state_dir,
                priority: DEFAULT_REALTIME_PRIORITY,
            });
        }
        let config = config::load(config_file).map_err(|errors| {
            eprintln!("{errors}");
            crate::cli::EXIT_CONFIG
        })?;
        let node = config.local_node(node).map_err(|e| {
            eprintln!("{}: {e}", config_file.display());
            crate::cli::EXIT_CONFIG
        })?;
        let Some(wdc) = &node.watchdog else {
            eprintln!(
                "{}: node {} has no watchdog configured; name one with --device",
                config_file.display(),
                node.name
            );
            return Err(crate::cli::EXIT_CONFIG);
        };
        let device = resolve(&wdc.device).map_err(|e| {
            eprintln!("{e}");
            EXIT_UNAVAILABLE
        })?;
        Ok(Self {
            device,
            state_dir: state_dir.or_else(|| Some(node.state_dir.clone())),
            priority: wdc.realtime_priority,
        })
    }
}

fn test(target: &Target, timeout: Duration) -> u8 {
    let shown = target.device.display().to_string();
    let mut device = match WatchdogDevice::open(&target.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let boot = device
        .boot_status()
        .ok()
        .flatten()
        .map_or_else(|| "unknown".to_owned(), |f| f.to_string());
    let taken = match device.set_timeout(timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            if let Err(e) = Box::new(device).disarm() {
                eprintln!("and disarming failed: {e}");
            }
            return EXIT_UNAVAILABLE;
        }
    };
    if let Some(dir) = &target.state_dir {
        if let Err(e) = state::write_armed(dir, &state::Armed::now(&shown, taken.as_secs())) {
            eprintln!("cannot write to {}: {e}", dir.display());
            if let Err(e) = Box::new(device).disarm() {
                eprintln!("and disarming failed: {e}");
            }
            return 1;
        }
    }
    let kernel = device.identity().map(str::to_owned);
    say(&format!(
        "watchdog test: {shown} ({}) armed with timeout {} s (boot status {boot})",
        kernel
            .as_deref()
            .unwrap_or("not a kernel watchdog: nothing will reset this host"),
        taken.as_secs()
    ));
    let interval = (taken / FEEDS_PER_TIMEOUT).max(MIN_FEED_INTERVAL);
    let params = FeederParams {
        interval,
        progress_timeout: taken,
        realtime_priority: Some(target.priority),
        state_dir: target.state_dir.clone(),
    };
    let (feeder, _) = match Feeder::start(Box::new(device), params) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let progress = feeder.progress();
    for _ in 0..FEEDS_BEFORE_STOP {
        progress.bump();
        std::thread::sleep(interval);
    }
    let fed = feeder.stats().feeds;
    feeder.starve(format!(
        "watchdog test: the operator ran `watchkeeper watchdog test`, which stopped feeding on \
         purpose after {fed} feeds"
    ));
    let stopped = Instant::now();
    say(&format!(
        "watchdog test: fed {fed} times every {} ms, then stopped feeding; the host should reset \
         within {} s",
        interval.as_millis(),
        taken.as_secs()
    ));
    let give_up = taken * 2 + GRACE;
    while stopped.elapsed() < give_up {
        std::thread::sleep(Duration::from_secs(1));
        let left = wd::discover()
            .into_iter()
            .find(|d| d.device == target.device)
            .and_then(|d| d.time_left)
            .map_or_else(|| "?".to_owned(), |t| format!("{} s", t.as_secs()));
        say(&format!(
            "watchdog test: {} s since the last feed, time left {left}",
            stopped.elapsed().as_secs()
        ));
    }
    say(&format!(
        "watchdog test FAILED: the host is still running {} s after the last feed: {shown} does \
         not reset this host",
        stopped.elapsed().as_secs()
    ));
    1
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Default test timeout: short, so the test is quick, and within every watchdog's range.
const TEST_TIMEOUT_S: u64 = 5;

/// Feeds per timeout during the test, as the agent's default.
const FEEDS_PER_TIMEOUT: u32 = config::FEEDS_PER_TIMEOUT_DEFAULT;

/// Feeds before stopping: enough to show the device takes them.
const FEEDS_BEFORE_STOP: u32 = 3;

/// Extra time to wait beyond twice the timeout before declaring the test failed.
const GRACE: Duration = Duration::from_secs(2);

/// sysexits EX_USAGE: the confirmation flag is missing.
const EXIT_USAGE: u8 = 64;

const EXIT_UNAVAILABLE: u8 = crate::cli::EXIT_UNAVAILABLE;
