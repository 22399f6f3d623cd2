//! The bridge's settings, checked once when the [`Bridge`](crate::Bridge) is built.
//!
//! A board has no file system and no operator at its console, so a setting that would reset a
//! healthy host (a timeout shorter than the agent's feed interval can honour) or never reset a
//! hung one (a zero pulse) is refused at construction, before any pin moves. Every default is a
//! named constant with its reason.

use proto::{Key, NodeId};

/// What the bridge does to the host when heartbeats stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerAction {
    /// Open the relay on the host's power supply line for the trigger time, then close it:
    /// works on any host, including one whose reset line a hung BMC ignores.
    PowerCycle,
    /// Hold the host's reset line asserted for the trigger time, then release it: gentler on
    /// disks and power supplies, but needs a reset header.
    Reset,
}

/// The bridge's settings.
#[derive(Debug, Clone, Copy)]
pub struct Config<'k> {
    /// The key the host's agent authenticates its frames with.
    pub key: Key<'k>,
    /// The cluster id in the host's frames.
    pub cluster_id: u32,
    /// The node id of the host this bridge watches; frames from any other sender are refused.
    pub host: NodeId,
    /// The Modbus unit id this bridge answers to (1–247).
    pub unit: u8,
    /// Heartbeat timeout: the host is reset this long after its last accepted frame.
    pub timeout_ms: u32,
    /// After the bridge closes the relay again (or a peer's fence is lifted), how long the host
    /// may take to boot before its heartbeats are expected.
    pub grace_ms: u32,
    /// How long the power stays off (or reset stays asserted) when the watchdog fires.
    pub trigger_ms: u32,
    /// Power cycle or reset.
    pub action: TriggerAction,
    /// Consecutive triggers without an accepted heartbeat in between after which the bridge
    /// gives up and disarms, rather than power-cycling a dead host for ever.
    pub triggers_max: u8,
    /// Silence on the Modbus line that ends a request of unknown length (Modbus RTU's 3.5
    /// character times, rounded up for the board's timer).
    pub modbus_silence_ms: u32,
}

impl<'k> Config<'k> {
    /// Settings with the defaults below for everything but the identities.
    pub fn new(key: Key<'k>, cluster_id: u32, host: NodeId) -> Self {
        Self {
            key,
            cluster_id,
            host,
            unit: DEFAULT_UNIT,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            grace_ms: DEFAULT_GRACE_MS,
            trigger_ms: DEFAULT_TRIGGER_MS,
            action: TriggerAction::PowerCycle,
            triggers_max: DEFAULT_TRIGGERS_MAX,
            modbus_silence_ms: DEFAULT_MODBUS_SILENCE_MS,
        }
    }

    /// Checks the settings against each other.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(UNIT_MIN..=UNIT_MAX).contains(&self.unit) {
            return Err(ConfigError::Unit { unit: self.unit });
        }
        if self.timeout_ms < TIMEOUT_MS_MIN {
            return Err(ConfigError::TimeoutTooShort {
                timeout_ms: self.timeout_ms,
            });
        }
        if self.trigger_ms == 0 {
            return Err(ConfigError::Zero { what: "trigger_ms" });
        }
        if self.triggers_max == 0 {
            return Err(ConfigError::Zero {
                what: "triggers_max",
            });
        }
        if self.modbus_silence_ms == 0 {
            return Err(ConfigError::Zero {
                what: "modbus_silence_ms",
            });
        }
        Ok(())
    }
}

/// Why settings were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The Modbus unit id is broadcast (0) or reserved (248–255).
    #[error("Modbus unit id {unit} is not 1-247 (0 is broadcast, 248-255 are reserved)")]
    Unit {
        /// The unit id given.
        unit: u8,
    },
    /// The heartbeat timeout is shorter than [`TIMEOUT_MS_MIN`].
    #[error("heartbeat timeout {timeout_ms} ms is shorter than {TIMEOUT_MS_MIN} ms")]
    TimeoutTooShort {
        /// The timeout given.
        timeout_ms: u32,
    },
    /// A duration or count that must be above zero is zero.
    #[error("{what} must be above zero")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
}

/// The factory default unit id of nearly every Modbus relay board, and the unit the agent's
/// `fence_watchkeeper --type=modbus --plug=N` convention uses.
pub const DEFAULT_UNIT: u8 = 1;
/// Ten seconds: the agent's default watchdog timeout, so one setting means the same on both.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// Three minutes: a server's firmware, RAID controller and operating system boot in one to
/// three minutes; a host that needs longer should have this raised, not the timeout.
pub const DEFAULT_GRACE_MS: u32 = 180_000;
/// Five seconds of darkness: long enough for an ATX supply's capacitors to drain so the host
/// really loses power, short enough not to matter.
pub const DEFAULT_TRIGGER_MS: u32 = 5_000;
/// Three attempts: a host that does not come back after three power cycles has a fault that
/// more cycles will not fix, and each cycle stresses its supply and disks.
pub const DEFAULT_TRIGGERS_MAX: u8 = 3;
/// Four milliseconds: 3.5 characters at 9600 baud (the slowest speed RS-485 fence devices use)
/// is 3.6 ms; faster lines use the spec's fixed 1.75 ms, which this covers too.
pub const DEFAULT_MODBUS_SILENCE_MS: u32 = 4;
/// One second: the agent feeds at least twice per timeout, and a serial frame takes a few
/// milliseconds; below a second, a busy host's scheduler jitter alone could fire the bridge.
pub const TIMEOUT_MS_MIN: u32 = 1_000;
/// Lowest Modbus unit id a device may answer to (0 is broadcast).
pub const UNIT_MIN: u8 = 1;
/// Highest Modbus unit id (248–255 are reserved).
pub const UNIT_MAX: u8 = 247;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config<'static> {
        Config::new(Key::new(b"k"), 7, NodeId::new(1).expect("node 1"))
    }

    #[test]
    fn defaults_pass_and_each_bad_setting_is_named() {
        assert_eq!(config().check(), Ok(()));
        let unit0 = Config {
            unit: 0,
            ..config()
        };
        assert_eq!(unit0.check(), Err(ConfigError::Unit { unit: 0 }));
        let unit248 = Config {
            unit: 248,
            ..config()
        };
        assert_eq!(unit248.check(), Err(ConfigError::Unit { unit: 248 }));
        let short = Config {
            timeout_ms: TIMEOUT_MS_MIN - 1,
            ..config()
        };
        assert_eq!(
            short.check(),
            Err(ConfigError::TimeoutTooShort { timeout_ms: 999 })
        );
        let edge = Config {
            timeout_ms: TIMEOUT_MS_MIN,
            ..config()
        };
        assert_eq!(edge.check(), Ok(()));
        let pulse = Config {
            trigger_ms: 0,
            ..config()
        };
        assert_eq!(pulse.check(), Err(ConfigError::Zero { what: "trigger_ms" }));
        let tries = Config {
            triggers_max: 0,
            ..config()
        };
        assert!(tries.check().is_err());
        let silence = Config {
            modbus_silence_ms: 0,
            ..config()
        };
        assert!(silence.check().is_err());
    }
}
