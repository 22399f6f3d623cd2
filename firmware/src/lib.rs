//! The watchkeeper bridge: an external hardware watchdog and a Modbus RTU relay fence on a small
//! board wired to one host.
//!
//! Some hosts have no on-board watchdog, or one nobody trusts (a driver that never resets, a
//! BMC that resets only itself). The bridge gives such a host an independent one: its agent
//! sends authenticated heartbeat frames ([`proto`], the same frames, MAC and serial framing the
//! cluster uses) over a UART, and when they stop, the bridge pulses the host's reset line or
//! opens the relay on its power supply line for a while, then closes it again. The same board
//! answers Modbus RTU on a second serial port (RS-485 usually), so the host's peer fences it
//! with the agent's ordinary Modbus driver: coils are the relays, input registers report state,
//! the last trigger reason and counters (see [`modbus`] and [`registers`]).
//!
//! The crate is `no_std`, never allocates, and is generic over embedded-hal 1.0 output pins and
//! embedded-io UARTs, so it runs on any board with a HAL. It is built in two layers:
//!
//! - [`Bridge`] is the sans-IO core: bytes and the time in milliseconds go in, relay and LED
//!   levels and Modbus replies come out. Every decision lives here, and host tests drive it
//!   with a fake clock.
//! - [`Board`] is the thin loop that moves bytes between the UARTs and the core and writes the
//!   pins when their levels change. The `watchkeeper-bridge` binary (crate `bridge`) runs the
//!   same `Board` on Linux with GPIO character-device lines and serial ports, and
//!   `examples/cortex_m4f.rs` on a Cortex-M4F.
//!
//! Safety rests on three choices. The bridge arms only on an explicit arm frame
//! ([`proto::Flags::WATCHDOG_ARM`]), never on ordinary heartbeats, so a host is never reset by a
//! bridge its agent did not ask for. Only authenticated, fresh frames from the configured host
//! count (MAC, cluster id, sender, replay window), so noise or a recorded frame cannot keep a
//! hung host alive. And a peer's fence wins over the watchdog: while the peer holds the host off
//! through Modbus, the watchdog never closes the relay behind its back.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod board;
pub mod bridge;
pub mod config;
pub mod led;
pub mod modbus;
pub mod registers;

pub use board::{Board, BoardError, Watchdog};
pub use bridge::{Bridge, Counters, Event, Outputs, State, TriggerReason};
pub use config::{Config, ConfigError, TriggerAction};
pub use led::Pattern;
