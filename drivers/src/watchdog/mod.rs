//! Hardware watchdog: the timer that resets the host when the agent stops feeding it.
//!
//! Self-fencing rests on this module. A host that must not go on (it lost quorum while holding
//! the resources, or its agent hung) is reset by hardware that needs no cooperation from the
//! kernel's scheduler, the disk or the agent: the agent only has to stop feeding. So the driver
//! keeps three promises:
//!
//! - It never disarms the timer except through [`Watchdog::disarm`], which a caller uses only on
//!   a clean, planned stop while holding nothing. Dropping a [`WatchdogDevice`], a crash, or a
//!   `SIGKILL` closes the descriptor without the magic close, and the kernel keeps the timer
//!   running.
//! - It reports what the hardware really does: the timeout is set and read back
//!   (`WDIOC_SETTIMEOUT`, then `WDIOC_GETTIMEOUT`), and callers plan with the value read back.
//! - It reports whether the last reboot came from the watchdog (`WDIOC_GETBOOTSTATUS`).
//!
//! Devices are found through `/sys/class/watchdog` ([`discover`]) without opening them, since
//! opening a watchdog arms it. Any other character device or FIFO can stand in for a watchdog:
//! without `WDIOC_GETSUPPORT` the driver feeds by writing one byte, which is how tests watch the
//! feeds of a real agent process on a machine without `/dev/watchdog`.
//!
//! The [`Watchdog`] trait is what the agent's feeder drives; [`FakeWatchdog`] is its
//! in-process double with error injection.

mod bridge;
mod device;
mod double;
mod sysfs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use bridge::{BridgeParams, BridgeWatchdog};
pub use device::{DeviceKind, WatchdogDevice};
pub use double::{FakeEvent, FakeWatchdog};
pub use sysfs::{discover, discover_in, find_by_identity, DeviceInfo};

/// What the agent's feeder needs from a watchdog.
///
/// Contract: [`keepalive`](Watchdog::keepalive) restarts the timer and never blocks for long
/// (a full FIFO is an error, not a wait); [`disarm`](Watchdog::disarm) stops the timer for good
/// and is called only on a clean, planned stop; dropping an implementation never disarms it.
pub trait Watchdog: Send {
    /// Restarts the timer.
    fn keepalive(&mut self) -> Result<(), WatchdogError>;

    /// Stops the timer (`WDIOS_DISABLECARD` and the magic close `V`), consuming the device.
    fn disarm(self: Box<Self>) -> Result<(), WatchdogError>;

    /// The device path (or a name for doubles), for logs.
    fn name(&self) -> String;

    /// Counters shared with status reports.
    fn counters(&self) -> &WatchdogCounters;
}

/// Errors of the watchdog driver.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error("cannot open watchdog {device}: {source}")]
    Open {
        /// Device path.
        device: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The path is a FIFO that nobody reads, so nothing would observe the feeds.
    #[error("watchdog {device} is a FIFO without a reader: start the reader first")]
    NoReader {
        /// Device path.
        device: PathBuf,
    },
    /// An ioctl the device should support failed.
    #[error("watchdog {device}: {op} failed: {source}")]
    Ioctl {
        /// Device path.
        device: PathBuf,
        /// Which request, e.g. `WDIOC_KEEPALIVE`.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
    /// A keepalive or magic-close write failed.
    #[error("watchdog {device}: write failed: {source}")]
    Write {
        /// Device path.
        device: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The timeout asked for is not a whole number of seconds from 1 to `i32::MAX`, which is
    /// all the kernel's watchdog API can express.
    #[error("watchdog {device}: timeout {requested:?} is not a whole number of seconds >= 1")]
    TimeoutInvalid {
        /// Device path.
        device: PathBuf,
        /// What was asked for.
        requested: Duration,
    },
    /// The device cannot change its timeout (no `WDIOF_SETTIMEOUT`).
    #[error(
        "watchdog {device} ({identity}) cannot set its timeout; its fixed timeout is {current}"
    )]
    TimeoutFixed {
        /// Device path.
        device: PathBuf,
        /// The driver's identity string.
        identity: String,
        /// The device's timeout, as `WDIOC_GETTIMEOUT` reports it (or "unknown").
        current: String,
    },
    /// The timeout is outside the device's range.
    #[error(
        "watchdog {device} ({identity}): timeout {requested_s}s is out of range: the device takes \
         {min_s}s to {max_s}s"
    )]
    TimeoutOutOfRange {
        /// Device path.
        device: PathBuf,
        /// The driver's identity string.
        identity: String,
        /// What was asked for, in seconds.
        requested_s: u64,
        /// The device's shortest timeout, in seconds.
        min_s: u64,
        /// The device's longest timeout, in seconds.
        max_s: u64,
    },
    /// No watchdog in `/sys/class/watchdog` has the identity asked for.
    #[error("no watchdog has identity {identity:?}; present: {present}")]
    NotFound {
        /// The identity asked for.
        identity: String,
        /// What was found, for the operator.
        present: String,
    },
    /// Two watchdogs have the identity asked for, so it names neither.
    #[error("identity {identity:?} matches {first} and {second}: name the device by path")]
    Ambiguous {
        /// The identity asked for.
        identity: String,
        /// One match.
        first: PathBuf,
        /// Another match.
        second: PathBuf,
    },
    /// An error injected into a [`FakeWatchdog`].
    #[error("injected failure of {device}: {what}")]
    Injected {
        /// The double's name.
        device: String,
        /// Which operation failed.
        what: &'static str,
    },
}

impl WatchdogError {
    /// The device path or name the error concerns.
    pub fn device(&self) -> String {
        match self {
            Self::Open { device, .. }
            | Self::NoReader { device }
            | Self::Ioctl { device, .. }
            | Self::Write { device, .. }
            | Self::TimeoutInvalid { device, .. }
            | Self::TimeoutFixed { device, .. }
            | Self::TimeoutOutOfRange { device, .. } => device.display().to_string(),
            Self::NotFound { identity, .. } | Self::Ambiguous { identity, .. } => {
                format!("identity {identity:?}")
            }
            Self::Injected { device, .. } => device.clone(),
        }
    }
}

/// Counters of one watchdog, written by the feeder and read by status reports without locks.
#[derive(Debug, Default)]
pub struct WatchdogCounters {
    /// Keepalives that succeeded.
    pub keepalives: AtomicU64,
    /// Keepalives that failed (each is also logged).
    pub keepalive_errors: AtomicU64,
    /// Keepalives done by a write because the device has no `WDIOC_KEEPALIVE`.
    pub write_keepalives: AtomicU64,
}

impl WatchdogCounters {
    /// Successful keepalives so far.
    pub fn keepalives(&self) -> u64 {
        self.keepalives.load(Ordering::Relaxed)
    }

    /// Failed keepalives so far.
    pub fn keepalive_errors(&self) -> u64 {
        self.keepalive_errors.load(Ordering::Relaxed)
    }
}

/// The `WDIOF_*` bits of a watchdog's options or boot status (`linux/watchdog.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// The card was reset by the watchdog (in a boot status: the last reboot was its doing).
    pub const CARDRESET: u32 = 0x0020;
    /// The timeout can be set.
    pub const SETTIMEOUT: u32 = 0x0080;
    /// Closing stops the timer only after the magic character `V`.
    pub const MAGICCLOSE: u32 = 0x0100;
    /// `WDIOC_KEEPALIVE` is supported.
    pub const KEEPALIVEPING: u32 = 0x8000;

    /// Whether every bit of `bit` is set.
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }

    /// The names of the set bits, e.g. `["CARDRESET"]`; unknown bits as hex.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.0;
        for (bit, name) in FLAG_NAMES {
            if self.0 & bit != 0 {
                names.push((*name).to_owned());
                rest &= !bit;
            }
        }
        if rest != 0 {
            names.push(format!("{rest:#x}"));
        }
        names
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}

/// Names of the `WDIOF_*` bits, from `linux/watchdog.h`.
const FLAG_NAMES: &[(u32, &str)] = &[
    (0x0001, "OVERHEAT"),
    (0x0002, "FANFAULT"),
    (0x0004, "EXTERN1"),
    (0x0008, "EXTERN2"),
    (0x0010, "POWERUNDER"),
    (Flags::CARDRESET, "CARDRESET"),
    (0x0040, "POWEROVER"),
    (Flags::SETTIMEOUT, "SETTIMEOUT"),
    (Flags::MAGICCLOSE, "MAGICCLOSE"),
    (0x0200, "PRETIMEOUT"),
    (0x0400, "ALARMONLY"),
    (Flags::KEEPALIVEPING, "KEEPALIVEPING"),
];

/// The identity the kernel's software watchdog reports. It runs on the same kernel timers that
/// a hung kernel may no longer serve, so it is weaker than a hardware timer.
pub const SOFTDOG_IDENTITY: &str = "Software Watchdog";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_by_name() {
        assert_eq!(Flags(0).to_string(), "none");
        assert_eq!(
            Flags(0x8180).to_string(),
            "SETTIMEOUT|MAGICCLOSE|KEEPALIVEPING"
        );
        assert_eq!(Flags(0x20 | 0x1_0000).to_string(), "CARDRESET|0x10000");
        assert!(Flags(0x8180).has(Flags::MAGICCLOSE));
        assert!(!Flags(0x8180).has(Flags::CARDRESET));
    }
}
