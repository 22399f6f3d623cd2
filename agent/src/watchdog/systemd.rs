//! systemd notifications: `READY=1` once the agent runs, `STATUS=` for `systemctl status`,
//! `WATCHDOG=1` from the main loop when the unit sets `WatchdogSec=`, and `STOPPING=1`.
//!
//! systemd's watchdog complements the hardware one: it restarts an agent whose main loop hangs
//! (the restarted agent reopens the device and feeds it again within the hardware timeout),
//! while the hardware watchdog resets the host when nothing else can act. The ping comes from
//! the main loop, not the feeder thread, so that it proves the loop is alive. Outside systemd
//! every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The agent's side of the systemd notification protocol.
#[derive(Debug)]
pub struct Systemd {
    /// Half of `WatchdogSec`, as systemd recommends, if the unit sets it.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Self {
        Self {
            ping_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: None,
        }
    }

    /// Whether systemd expects `WATCHDOG=1` pings.
    pub fn watchdog_enabled(&self) -> bool {
        self.ping_every.is_some()
    }

    /// `READY=1` with a status line.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.tick();
    }

    /// Sends `WATCHDOG=1` if half of `WatchdogSec` passed since the last one.
    pub fn tick(&mut self) {
        let Some(every) = self.ping_every else {
            return;
        };
        let now = Instant::now();
        if self
            .last_ping
            .is_none_or(|at| now.duration_since(at) >= every)
        {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Some(now);
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}
