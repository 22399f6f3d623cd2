//! The node's hardware watchdog in the agent: arming it at start, feeding it from a real-time
//! thread, reporting what the previous run left behind, disarming it on a clean stop, and
//! telling systemd how the agent is doing.
//!
//! This is how a host that must not go on gets reset even when the agent, the scheduler or
//! the disk are stuck (DESIGN.md, rule 3). The [`Feeder`] is the mechanism; [`NodeWatchdog`] is
//! the runtime's view of it: it opens the configured device, reads back the timeout the
//! hardware took, reports whether the last reboot was the watchdog's doing together with the
//! previous run's last words, and starts the feeder. The decision engine drives the feeder
//! through [`NodeWatchdog::feeder`] (`feed`, `starve`); until it does, the runtime feeds while
//! its loop runs and disarms on a planned stop, since the node holds nothing yet.
//!
//! A node without a configured watchdog still runs, with a warning at every start: nothing
//! would then reset the host if it hung while holding resources.

mod bridge;
pub mod cli;
mod feeder;
pub mod state;
mod systemd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use drivers::watchdog::{self as wd, DeviceKind, Flags, Watchdog, WatchdogDevice, WatchdogError};

use crate::config::{Node, WatchdogConfig, WatchdogSelector};

pub use feeder::{
    set_realtime_priority, FeedGapSnapshot, FeedGaps, Feeder, FeederError, FeederParams,
    FeederStats, Progress, SetupReport,
};
pub use systemd::Systemd;

/// Errors arming the node's watchdog at start.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogSetupError {
    /// The device could not be found, opened or configured.
    #[error("watchdog: {0}")]
    Device(#[from] WatchdogError),
    /// The device took a timeout too short for the configured feed interval.
    #[error(
        "watchdog {device}: the device took timeout {taken:?} for the {asked:?} asked, which \
         leaves less than two feed intervals ({interval:?}): fix timeout or feed_interval"
    )]
    TimeoutTooShort {
        /// Device path.
        device: String,
        /// What the configuration asked for.
        asked: Duration,
        /// What the device took.
        taken: Duration,
        /// The feed interval.
        interval: Duration,
    },
    /// The armed record could not be written to the state directory.
    #[error("watchdog: cannot write to the state directory {dir}: {source}")]
    State {
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The feeder could not start.
    #[error(transparent)]
    Feeder(#[from] FeederError),
}

/// The runtime's handle on the node's watchdog (or its absence) and on systemd.
#[derive(Debug)]
pub struct NodeWatchdog {
    feeder: Option<Feeder>,
    progress: Option<Progress>,
    state_dir: PathBuf,
    systemd: Systemd,
    reported_errors: u64,
    /// Why the previous boot ended in a watchdog reset, if it did (for the alert).
    previous_reset: Option<String>,
}

impl NodeWatchdog {
    /// Arms `node`'s watchdog and starts feeding it; logs what the previous run left. Without a
    /// configured watchdog, logs a warning and returns a handle that only talks to systemd.
    pub fn open(node: &Node) -> Result<Self, WatchdogSetupError> {
        let systemd = Systemd::from_env();
        let Some(config) = &node.watchdog else {
            tracing::warn!(
                event = "watchdog_absent",
                node = %node.name,
                "node {} has no watchdog configured: if this host hangs while holding \
                 resources, nothing will reset it; configure watchdog = {{ device = ... }} \
                 under its [[node]]",
                node.name
            );
            return Ok(Self {
                feeder: None,
                progress: None,
                state_dir: node.state_dir.clone(),
                systemd,
                reported_errors: 0,
                previous_reset: None,
            });
        };
        if let WatchdogSelector::Bridge(target) = &config.device {
            return bridge::open(node, config, target, systemd);
        }
        let path = resolve(&config.device)?;
        let mut device = WatchdogDevice::open(&path)?;
        // Read only once the device is open, so that a failed start leaves the records for
        // the next one.
        let previous_reset = report_previous(&device, state::take_previous(&node.state_dir));
        let armed = match arm(&mut device, config, &node.state_dir) {
            Ok(armed) => armed,
            Err(e) => {
                // Nothing is held yet, so a clean disarm is right: a failed start must not
                // reset the host.
                if let Err(d) = Box::new(device).disarm() {
                    tracing::error!(event = "watchdog_disarm_failed", error = %d, "cannot disarm the watchdog after a failed start");
                }
                return Err(e);
            }
        };
        let identity = device.identity().map(str::to_owned);
        // Not every driver can tell (WDIOC_GETTIMELEFT); the log says "-" then.
        let time_left = match device.time_left() {
            Ok(Some(left)) => format!("{} ms", ms(left)),
            Ok(None) | Err(_) => "-".to_owned(),
        };
        let params = FeederParams {
            interval: config.feed_interval,
            progress_timeout: config.progress_timeout,
            realtime_priority: Some(config.realtime_priority),
            state_dir: Some(node.state_dir.clone()),
        };
        let (feeder, report) = Feeder::start(Box::new(device), params)?;
        if let Err(e) = &report.realtime {
            tracing::warn!(event = "watchdog_degraded", what = "realtime", error = %e, "feeder runs without SCHED_FIFO priority {}: feeds may be late under load ({e})", config.realtime_priority);
        }
        if let Err(e) = &report.memory_locked {
            tracing::warn!(event = "watchdog_degraded", what = "mlockall", error = %e, "memory not locked: feeds may wait on paging ({e})");
        }
        tracing::info!(
            event = "watchdog_armed",
            device = %path.display(),
            identity = identity.as_deref().unwrap_or("-"),
            timeout_ms = ms(armed),
            %time_left,
            feed_interval_ms = ms(config.feed_interval),
            progress_timeout_ms = ms(config.progress_timeout),
            realtime_priority = config.realtime_priority,
            realtime = report.realtime.is_ok(),
            memory_locked = report.memory_locked.is_ok(),
            "watchdog {} armed: timeout {} ms, fed every {} ms while the main loop progresses \
             (bound {} ms)",
            path.display(),
            ms(armed),
            ms(config.feed_interval),
            ms(config.progress_timeout)
        );
        let progress = feeder.progress();
        Ok(Self {
            feeder: Some(feeder),
            progress: Some(progress),
            state_dir: node.state_dir.clone(),
            systemd,
            reported_errors: 0,
            previous_reset,
        })
    }

    /// The feeder, for the engine's feed and starve actions; `None` without a watchdog.
    pub fn feeder(&self) -> Option<&Feeder> {
        self.feeder.as_ref()
    }

    /// Tells systemd the agent is up.
    pub fn ready(&mut self, status: &str) {
        self.systemd.ready(status);
    }

    /// Why the previous boot ended in a watchdog reset, when it did.
    pub fn previous_reset(&self) -> Option<&str> {
        self.previous_reset.as_deref()
    }

    /// The engine's word that the host may go on: proves progress to the feeder, which keeps
    /// feeding the hardware watchdog only while this keeps coming.
    pub fn progress(&mut self) {
        if let Some(progress) = &self.progress {
            progress.bump();
        }
    }

    /// Called once per main-loop iteration: pings systemd's watchdog when due, and logs
    /// keepalive failures the feeder thread counted.
    ///
    /// It does not feed the hardware watchdog (that is [`Self::progress`]): after a self-fence
    /// the loop goes on and keeps systemd content, so systemd does not restart the agent, whose
    /// next run would feed the device again and undo the reset the peer is waiting for.
    pub fn tick(&mut self) {
        self.systemd.tick();
        if let Some(feeder) = &self.feeder {
            let stats = feeder.stats();
            if stats.errors > self.reported_errors {
                let error = feeder.take_error().unwrap_or_default();
                tracing::error!(
                    event = "watchdog_keepalive_failed",
                    device = feeder.device(),
                    failures = stats.errors,
                    %error,
                    "watchdog keepalive failed ({} failures so far): {error}",
                    stats.errors
                );
                self.reported_errors = stats.errors;
            }
        }
    }

    /// Ends the watchdog's part in this run. On a `planned` stop (the node holds nothing) the
    /// device is disarmed with the magic close; otherwise the feeder starves it with `reason`
    /// and the host is reset at the timeout.
    pub fn stop(mut self, planned: bool, reason: &str) {
        self.systemd.stopping();
        let Some(feeder) = self.feeder.take() else {
            return;
        };
        if !planned {
            tracing::error!(event = "watchdog_starving", device = feeder.device(), %reason, "starving the watchdog: {reason}");
            feeder.starve(reason);
            // Keep the thread (and the open device) until the process ends.
            std::mem::forget(feeder);
            return;
        }
        let device = feeder.device().to_owned();
        match feeder.disarm_clean() {
            Ok(()) => {
                if let Err(e) = state::clear_armed(&self.state_dir) {
                    tracing::warn!(error = %e, "cannot clear the armed record");
                }
                tracing::info!(event = "watchdog_disarmed", device = %device, "watchdog {device} disarmed (magic close)");
            }
            Err(e) => {
                tracing::error!(event = "watchdog_disarm_failed", device = %device, error = %e, "watchdog {device} not disarmed: {e}");
            }
        }
    }
}

/// The device path behind a selector.
pub fn resolve(selector: &WatchdogSelector) -> Result<PathBuf, WatchdogError> {
    match selector {
        WatchdogSelector::Path(path) => Ok(path.clone()),
        WatchdogSelector::Identity(identity) => wd::find_by_identity(identity, &wd::discover()),
        // A bridge is a serial port that `bridge::open` arms with a frame; opened as a
        // watchdog device it would be fed bytes it ignores.
        WatchdogSelector::Bridge(target) => Err(WatchdogError::Open {
            device: target.device.clone(),
            source: std::io::Error::other(
                "this is a watchdog bridge, not a watchdog device: to test it, freeze the                  running agent (kill -STOP) and watch the bridge fire",
            ),
        }),
    }
}

/// Sets the timeout, checks what the device took against the feed interval, and writes the
/// armed record. Returns the timeout the device runs with.
fn arm(
    device: &mut WatchdogDevice,
    config: &WatchdogConfig,
    state_dir: &Path,
) -> Result<Duration, WatchdogSetupError> {
    let name = device.path().display().to_string();
    let taken = device.set_timeout(config.timeout)?;
    if taken != config.timeout {
        tracing::warn!(event = "watchdog_timeout_adjusted", device = %name, asked_ms = ms(config.timeout), taken_ms = ms(taken), "watchdog {name} took timeout {} ms for the {} ms asked", ms(taken), ms(config.timeout));
    }
    if taken < config.feed_interval * crate::config::MIN_FEEDS_PER_TIMEOUT {
        return Err(WatchdogSetupError::TimeoutTooShort {
            device: name,
            asked: config.timeout,
            taken,
            interval: config.feed_interval,
        });
    }
    if *device.kind() == DeviceKind::Plain {
        tracing::warn!(event = "watchdog_not_kernel", device = %name, "{name} is not a kernel watchdog (no WDIOC_GETSUPPORT): feeding it by write, but nothing will reset this host");
    }
    if device.identity() == Some(wd::SOFTDOG_IDENTITY) {
        tracing::warn!(event = "watchdog_softdog", device = %name, "{name} is the kernel's software watchdog: a hung kernel may never fire it; use a hardware watchdog");
    }
    state::write_armed(state_dir, &state::Armed::now(&name, taken.as_secs())).map_err(
        |source| WatchdogSetupError::State {
            dir: state_dir.to_owned(),
            source,
        },
    )?;
    Ok(taken)
}

/// Logs whether the previous boot ended in a watchdog reset, and the previous run's last words;
/// returns that sentence when it was a watchdog reset.
fn report_previous(
    device: &WatchdogDevice,
    previous: std::io::Result<state::PreviousRun>,
) -> Option<String> {
    let name = device.path().display().to_string();
    let boot_status = device.boot_status().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the watchdog's boot status");
        None
    });
    let previous = previous.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read what the previous run left in the state directory");
        state::PreviousRun::default()
    });
    let card_reset = boot_status.is_some_and(|f| f.has(Flags::CARDRESET));
    let current_boot = state::boot_id();
    let armed_in_earlier_boot = previous
        .armed
        .as_ref()
        .is_some_and(|a| a.boot_id.is_some() && a.boot_id != current_boot);
    let watchdog_reset = card_reset || armed_in_earlier_boot;
    let cause = match (card_reset, armed_in_earlier_boot, &previous.armed) {
        (true, _, _) => "the watchdog reset the host (device boot status CARDRESET)",
        (false, true, _) => {
            "the host rebooted while the watchdog was armed and not disarmed: a watchdog reset \
             (or a power loss or crash)"
        }
        (false, false, Some(_)) => {
            "the previous agent ended without disarming the watchdog, and the host was not reset"
        }
        (false, false, None) => {
            "no watchdog reset: the previous run disarmed cleanly or never armed"
        }
    };
    let words = previous.last_words.as_ref();
    let last_words = words.map_or("-", |w| w.reason.as_str());
    let say = if watchdog_reset || previous.armed.is_some() || words.is_some() {
        match words {
            Some(w) => format!("{cause}; its last words: {}", w.reason),
            None if previous.armed.is_some() => format!(
                "{cause}; no last words: the agent was killed or the host hung before it could \
                 say why"
            ),
            None => cause.to_owned(),
        }
    } else {
        cause.to_owned()
    };
    let level_error = watchdog_reset || previous.armed.is_some();
    macro_rules! previous_event {
        ($level:ident) => {
            tracing::$level!(
                event = "watchdog_previous_run",
                device = %name,
                watchdog_reset,
                boot_status = %boot_status.map_or_else(|| "unknown".to_owned(), |f| f.to_string()),
                armed_before = previous.armed.is_some(),
                last_words,
                last_words_at_unix_ms = words.map_or(0, |w| w.at_unix_ms),
                "{say}"
            )
        };
    }
    if level_error {
        previous_event!(error);
    } else {
        previous_event!(info);
    }
    watchdog_reset.then_some(say)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
