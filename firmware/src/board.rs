//! The board loop: moves bytes between the UARTs and the [`Bridge`], writes answers back, and
//! drives the pins when their levels change.
//!
//! It is generic over embedded-hal 1.0 [`OutputPin`]s and embedded-io UARTs, so the same code
//! runs on a microcontroller HAL and on Linux (GPIO character-device lines and serial ports,
//! in the `watchkeeper-bridge` binary). A Modbus answer leaves only after the pins are driven,
//! so a write's echo or a coil read back never runs ahead of the relay. It never blocks on
//! input: it reads only what [`ReadReady`] says is there, at most [`READS_PER_STEP`] chunks per
//! UART per step, so a flood on one line cannot starve the timers. Pins are written only when
//! a level changes, which keeps relays from chattering and keeps mock transactions readable.
//!
//! A UART or pin error does not stop the step: the timers still run and the other pins are
//! still driven (a broken Modbus line must not keep the watchdog from firing); the first error
//! is returned for the caller to log and count.
//!
//! embedded-hal 1.0 has no watchdog trait, so [`Watchdog`] is the one-method trait a board
//! implements for its own independent watchdog (the MCU's IWDG, say), fed once per step: a hung
//! bridge firmware restarts instead of leaving the host unwatched.

use embedded_hal::digital::{self, OutputPin};
use embedded_io::{Read, ReadReady, Write};

use crate::bridge::{Bridge, Event, Outputs};

/// The board's own watchdog, fed once per [`Board::step`].
pub trait Watchdog {
    /// Restarts the board watchdog's timer.
    fn feed(&mut self);
}

/// For boards without a watchdog of their own (or whose supervisor restarts the process, as
/// systemd does for the Linux binary).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatchdog;

impl Watchdog for NoWatchdog {
    fn feed(&mut self) {}
}

/// The three output pins.
#[derive(Debug)]
pub struct Pins<P, R, L> {
    /// High energises the power relay, opening the host's supply line (wire the relay's
    /// normally-closed contact, so a dead bridge leaves the host powered).
    pub power: P,
    /// High asserts the host's reset line.
    pub reset: R,
    /// High lights the status LED.
    pub led: L,
}

/// A step's first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// Reading the host's UART failed.
    #[error("host UART read failed: {0:?}")]
    HostUart(embedded_io::ErrorKind),
    /// Reading or writing the Modbus UART failed.
    #[error("Modbus UART failed: {0:?}")]
    BusUart(embedded_io::ErrorKind),
    /// Driving a pin failed.
    #[error("{pin} pin failed: {kind:?}")]
    Pin {
        /// Which pin.
        pin: &'static str,
        /// What the HAL said.
        kind: digital::ErrorKind,
    },
}

/// A bridge wired to its pins and UARTs.
#[derive(Debug)]
pub struct Board<'k, P, R, L, H, M, W> {
    bridge: Bridge<'k>,
    pins: Pins<P, R, L>,
    host: H,
    bus: M,
    watchdog: W,
    driven: Option<Outputs>,
}

impl<'k, P, R, L, H, M, W> Board<'k, P, R, L, H, M, W>
where
    P: OutputPin,
    R: OutputPin,
    L: OutputPin,
    H: Read + ReadReady,
    M: Read + ReadReady + Write,
    W: Watchdog,
{
    /// Wires `bridge` to the pins and UARTs. Nothing is driven until the first step.
    pub fn new(bridge: Bridge<'k>, pins: Pins<P, R, L>, host: H, bus: M, watchdog: W) -> Self {
        Self {
            bridge,
            pins,
            host,
            bus,
            watchdog,
            driven: None,
        }
    }

    /// The core, for status and events.
    pub fn bridge(&self) -> &Bridge<'k> {
        &self.bridge
    }

    /// The next event for the log.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.bridge.poll_event()
    }

    /// The host and bus UARTs, for a loop that waits on them.
    pub fn ports(&self) -> (&H, &M) {
        (&self.host, &self.bus)
    }

    /// Takes the parts back.
    pub fn release(self) -> (Bridge<'k>, Pins<P, R, L>, H, M, W) {
        (self.bridge, self.pins, self.host, self.bus, self.watchdog)
    }

    /// One turn of the loop at `now_ms`: feed the board watchdog, take in what the UARTs
    /// hold, answer Modbus, run the timers, drive the pins that changed.
    pub fn step(&mut self, now_ms: u64) -> Result<(), BoardError> {
        self.watchdog.feed();
        let mut first: Option<BoardError> = None;
        let mut buf = [0u8; CHUNK_LEN];
        for _ in 0..READS_PER_STEP {
            match read_some(&mut self.host, &mut buf) {
                Ok(0) => break,
                Ok(n) => buf[..n]
                    .iter()
                    .for_each(|&b| self.bridge.host_byte(now_ms, b)),
                Err(kind) => {
                    first.get_or_insert(BoardError::HostUart(kind));
                    break;
                }
            }
        }
        for _ in 0..READS_PER_STEP {
            match read_some(&mut self.bus, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        self.bridge.modbus_byte(now_ms, b);
                        if let Err(e) = self.send_reply() {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(kind) => {
                    first.get_or_insert(BoardError::BusUart(kind));
                    break;
                }
            }
        }
        self.bridge.tick(now_ms);
        if let Err(e) = self.send_reply() {
            first.get_or_insert(e);
        }
        if let Err(e) = self.drive() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// Sends the waiting answer, if any, after driving the pins: a peer that reads a coil back
    /// (or takes a write's echo as done) must find the relay already where the answer says.
    fn send_reply(&mut self) -> Result<(), BoardError> {
        let Some(reply) = self.bridge.poll_reply() else {
            return Ok(());
        };
        let driven = self.drive();
        self.bus
            .write_all(&reply)
            .and_then(|()| self.bus.flush())
            .map_err(|e| BoardError::BusUart(kind(&e)))?;
        driven
    }

    fn drive(&mut self) -> Result<(), BoardError> {
        let want = self.bridge.outputs();
        let before = self.driven;
        let changed = |f: fn(&Outputs) -> bool| before.is_none_or(|b| f(&b) != f(&want));
        let mut first = None;
        if changed(|o| o.power_cut) {
            if let Err(e) = set(&mut self.pins.power, want.power_cut, "power") {
                first.get_or_insert(e);
            }
        }
        if changed(|o| o.reset_asserted) {
            if let Err(e) = set(&mut self.pins.reset, want.reset_asserted, "reset") {
                first.get_or_insert(e);
            }
        }
        if changed(|o| o.led) {
            if let Err(e) = set(&mut self.pins.led, want.led, "led") {
                first.get_or_insert(e);
            }
        }
        match first {
            // A pin that failed is tried again at the next step.
            Some(e) => {
                self.driven = None;
                Err(e)
            }
            None => {
                self.driven = Some(want);
                Ok(())
            }
        }
    }
}

fn read_some<U: Read + ReadReady>(
    uart: &mut U,
    buf: &mut [u8],
) -> Result<usize, embedded_io::ErrorKind> {
    if !uart.read_ready().map_err(|e| kind(&e))? {
        return Ok(0);
    }
    uart.read(buf).map_err(|e| kind(&e))
}

fn set<P: OutputPin>(pin: &mut P, high: bool, name: &'static str) -> Result<(), BoardError> {
    let r = if high { pin.set_high() } else { pin.set_low() };
    r.map_err(|e| BoardError::Pin {
        pin: name,
        kind: digital::Error::kind(&e),
    })
}

fn kind<E: embedded_io::Error>(e: &E) -> embedded_io::ErrorKind {
    e.kind()
}

/// Bytes read from a UART at a time.
pub const CHUNK_LEN: usize = 64;
/// Chunks read per UART per step: 16 × 64 bytes is more than a second of 9600 baud, so a
/// board that steps every few milliseconds never falls behind, and a flood cannot hold a step.
pub const READS_PER_STEP: usize = 16;
