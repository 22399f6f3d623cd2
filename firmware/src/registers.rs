//! The bridge's Modbus tables: what a peer (or an operator with any Modbus tool) can switch and
//! read.
//!
//! Coils are the relays, with the meaning the agent's Modbus fence driver expects of an outlet:
//! 1 = the host is powered (or, for the reset coil, held in reset), read back from the levels
//! the bridge drives, so a read confirms what the relay really does, including a power cycle
//! the watchdog started. Input registers are read-only: state, why the watchdog last fired,
//! and counters that saturate at 65535 rather than wrap, so a large number never reads small.
//! Nothing here can arm or disarm the watchdog: Modbus carries no authentication, and the arm
//! frame does.

/// Coil 0: the host's power. 1 = the relay lets power through; writing 0 fences the host.
pub const COIL_POWER: u16 = 0;
/// Coil 1: the host's reset line. 1 = held in reset (fenced as well); 0 = released.
pub const COIL_RESET: u16 = 1;
/// Number of coils.
pub const COIL_COUNT: u16 = 2;

/// The [`State`](crate::State) as a number: 0 disarmed, 1 grace, 2 armed, 3 triggered,
/// 4 fenced.
pub const REG_STATE: u16 = 0;
/// Why the watchdog last fired: 0 never, 1 heartbeat timeout, 2 the host did not come back
/// within the grace period (see [`TriggerReason`](crate::TriggerReason)).
pub const REG_LAST_TRIGGER: u16 = 1;
/// Times the watchdog fired.
pub const REG_TRIGGERS: u16 = 2;
/// Coil writes that changed a relay.
pub const REG_FENCE_WRITES: u16 = 3;
/// Heartbeat frames accepted from the host.
pub const REG_HEARTBEATS: u16 = 4;
/// Serial frames from the host dropped by framing (CRC, COBS, length, overrun).
pub const REG_BAD_CRC: u16 = 5;
/// Frames from the host whose MAC did not verify (wrong key, or forged).
pub const REG_BAD_MAC: u16 = 6;
/// Authenticated frames refused: another sender or cluster, a replay, an invalid field or
/// command.
pub const REG_REJECTED: u16 = 7;
/// Modbus requests dropped for a bad CRC or an overrun.
pub const REG_MODBUS_GARBLED: u16 = 8;
/// Modbus exception answers sent.
pub const REG_MODBUS_EXCEPTIONS: u16 = 9;
/// Whole seconds since the last accepted heartbeat; 65535 if none yet.
pub const REG_SECONDS_SINCE_HEARTBEAT: u16 = 10;
/// Whole seconds until the watchdog fires if nothing arrives; 65535 when it is not counting.
pub const REG_SECONDS_TO_TRIGGER: u16 = 11;
/// Number of input registers.
pub const REGISTER_COUNT: u16 = 12;

/// The value of a counter or duration register that has run out of room (or means "never").
pub const SATURATED: u16 = u16::MAX;
