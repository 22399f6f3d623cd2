//! The bridge's decision core, sans IO: bytes and the time go in, pin levels and Modbus answers
//! come out.
//!
//! # Contract
//!
//! The caller (a [`Board`](crate::Board) loop, or a test) passes the time in milliseconds from
//! a monotonic clock with every call, feeds every byte received from the host's UART to
//! [`Bridge::host_byte`] and every byte from the Modbus line to [`Bridge::modbus_byte`], calls
//! [`Bridge::tick`] at least at [`Bridge::next_deadline`], sends whatever
//! [`Bridge::poll_reply`] returns on the Modbus line, and drives the pins to
//! [`Bridge::outputs`]. Every call first runs the timers up to its `now`, so an event that
//! arrives exactly at a deadline finds the deadline already passed: a heartbeat is in time only
//! if it arrives strictly before `last + timeout`.
//!
//! # States
//!
//! ```text
//!            arm frame                 timeout, no heartbeat
//! Disarmed ───────────▶ Armed ─────────────────────────────▶ Triggered
//!    ▲  ◀─── disarm ───   ▲  ◀── heartbeat ── Grace ◀── pulse over ──┘
//!    │                    └────── heartbeat ────┘  │ grace over: Triggered again,
//!    └──────────── triggers_max reached ◀──────────┘ or give up after triggers_max
//!
//! any state ── coil write cuts power / asserts reset ──▶ Fenced ── lifted ──▶ Grace or Disarmed
//! ```
//!
//! A peer's fence wins over the watchdog: while Fenced, nothing the watchdog decides moves a
//! relay, and a running power cycle is cut short into the fence (the relay simply stays open).

use heapless::Deque;
use proto::serial::{Deframer, FramingError};
use proto::{DecodeError, Flags, Heartbeat, ReplayGuard};

use crate::config::{Config, ConfigError, TriggerAction};
use crate::led::Pattern;
use crate::modbus::{self, Adu, Exception, Parsed, Reply, Request, RtuReceiver};
use crate::registers as reg;

/// Where the watchdog stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not watching: no arm frame yet, disarmed by the host, or given up.
    Disarmed,
    /// Armed; the host was just powered up and has until `until_ms` to send a heartbeat.
    Grace {
        /// End of the grace period.
        until_ms: u64,
    },
    /// Watching: the host must send a heartbeat before `deadline_ms`.
    Armed {
        /// When the watchdog fires.
        deadline_ms: u64,
    },
    /// Firing: power is cut (or reset asserted) until `until_ms`.
    Triggered {
        /// When the relay closes again.
        until_ms: u64,
    },
    /// A peer fenced the host through Modbus; the watchdog waits for the fence to be lifted.
    Fenced {
        /// Whether to watch again (after a grace period) when it is.
        armed: bool,
    },
}

impl State {
    /// The value of [`reg::REG_STATE`].
    pub fn code(self) -> u16 {
        match self {
            Self::Disarmed => 0,
            Self::Grace { .. } => 1,
            Self::Armed { .. } => 2,
            Self::Triggered { .. } => 3,
            Self::Fenced { .. } => 4,
        }
    }
}

/// Why the watchdog fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerReason {
    /// Armed, and no heartbeat arrived within the timeout.
    HeartbeatTimeout = 1,
    /// After a power-up, no heartbeat arrived within the grace period.
    BootTimeout = 2,
}

/// Why a frame from the host's UART did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Serial framing: CRC, COBS, length or overrun.
    Framing(FramingError),
    /// The MAC did not verify.
    Auth,
    /// Authenticated, but a field, the magic, the version or the cluster id is wrong.
    Invalid(DecodeError),
    /// Authenticated, but sent by another node than the host.
    Sender(u8),
    /// A replayed or outdated frame.
    Replay(proto::ReplayError),
    /// Both arm and disarm were asked.
    Command,
}

/// Something a log should say; drained with [`Bridge::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An arm frame started the watchdog.
    Armed,
    /// The first heartbeat after a power-up ended the grace period.
    HostUp,
    /// A disarm frame stopped the watchdog.
    Disarmed,
    /// The watchdog fired.
    Triggered {
        /// Why.
        reason: TriggerReason,
        /// Consecutive triggers so far, this one included.
        attempt: u8,
    },
    /// The power cycle or reset pulse ended; the grace period starts.
    Released,
    /// `triggers_max` power cycles brought no heartbeat: the bridge disarmed.
    GaveUp,
    /// A peer cut the power or asserted reset through Modbus.
    Fenced,
    /// The peer lifted its fence.
    Unfenced {
        /// Whether the watchdog watches again (after the grace period).
        armed: bool,
    },
    /// A frame from the host's UART was refused.
    Refused(Refusal),
}

/// The levels the pins must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// The power relay is energised, which opens the host's supply line.
    pub power_cut: bool,
    /// The reset line is asserted.
    pub reset_asserted: bool,
    /// The status LED is lit.
    pub led: bool,
}

/// What the bridge counted; each also readable as an input register.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames accepted from the host.
    pub heartbeats: u32,
    /// Serial frames dropped by framing.
    pub bad_crc: u32,
    /// Frames whose MAC did not verify.
    pub bad_mac: u32,
    /// Authenticated frames refused.
    pub rejected: u32,
    /// Times the watchdog fired.
    pub triggers: u32,
    /// Coil writes that changed a relay.
    pub fence_writes: u32,
    /// Modbus requests executed or refused with an exception.
    pub modbus_requests: u32,
    /// Modbus frames dropped (CRC, overrun).
    pub modbus_garbled: u32,
    /// Modbus exceptions answered.
    pub modbus_exceptions: u32,
    /// Events dropped because nobody drained them.
    pub events_dropped: u32,
}

/// The bridge's decision core; see the module docs for the caller's duties.
#[derive(Debug)]
pub struct Bridge<'k> {
    config: Config<'k>,
    state: State,
    replay: ReplayGuard,
    deframer: Deframer,
    rtu: RtuReceiver,
    /// Coil 0 as the peer set it.
    power_on: bool,
    /// Coil 1 as the peer set it.
    reset_on: bool,
    last_heartbeat_ms: Option<u64>,
    last_bad_ms: Option<u64>,
    /// Triggers since the last accepted heartbeat.
    attempts: u8,
    last_reason: Option<TriggerReason>,
    counters: Counters,
    events: Deque<Event, EVENTS_MAX>,
    reply: Option<Adu>,
    now_ms: u64,
}

impl<'k> Bridge<'k> {
    /// A bridge that has just powered up: disarmed, power through, reset released.
    pub fn new(config: Config<'k>) -> Result<Self, ConfigError> {
        config.check()?;
        Ok(Self {
            rtu: RtuReceiver::new(config.modbus_silence_ms),
            config,
            state: State::Disarmed,
            replay: ReplayGuard::new(),
            deframer: Deframer::new(),
            power_on: true,
            reset_on: false,
            last_heartbeat_ms: None,
            last_bad_ms: None,
            attempts: 0,
            last_reason: None,
            counters: Counters::default(),
            events: Deque::new(),
            reply: None,
            now_ms: 0,
        })
    }

    /// The watchdog's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// When the last frame from the host was accepted, if one was.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }

    /// The settings.
    pub fn config(&self) -> &Config<'k> {
        &self.config
    }

    /// One byte from the host's UART.
    pub fn host_byte(&mut self, now_ms: u64, byte: u8) {
        self.advance(now_ms);
        match self.deframer.push(byte) {
            None => {}
            Some(Ok(frame)) => self.frame(&frame),
            Some(Err(e)) => {
                self.counters.bad_crc = self.counters.bad_crc.saturating_add(1);
                self.bad(Refusal::Framing(e));
            }
        }
    }

    /// One byte from the Modbus line.
    pub fn modbus_byte(&mut self, now_ms: u64, byte: u8) {
        self.advance(now_ms);
        match self.rtu.push(now_ms, byte) {
            Ok(Some(adu)) => self.modbus_frame(&adu),
            Ok(None) => {}
            Err(modbus::Overrun) => {
                self.counters.modbus_garbled = self.counters.modbus_garbled.saturating_add(1);
            }
        }
    }

    /// Runs the timers up to `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
    }

    /// The Modbus answer to send, if a request is waiting for one.
    pub fn poll_reply(&mut self) -> Option<Adu> {
        self.reply.take()
    }

    /// The next event for the log.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next time [`Bridge::tick`] must be called: a timer, the end of a Modbus frame by
    /// silence, or an LED change.
    pub fn next_deadline(&self) -> Option<u64> {
        let timer = match self.state {
            State::Grace { until_ms } | State::Triggered { until_ms } => Some(until_ms),
            State::Armed { deadline_ms } => Some(deadline_ms),
            State::Disarmed | State::Fenced { .. } => None,
        };
        [
            timer,
            self.rtu.deadline(),
            self.pattern().next_change(self.now_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The pin levels as of the last call.
    pub fn outputs(&self) -> Outputs {
        let triggered = matches!(self.state, State::Triggered { .. });
        let action = self.config.action;
        Outputs {
            power_cut: !self.power_on || (triggered && action == TriggerAction::PowerCycle),
            reset_asserted: self.reset_on || (triggered && action == TriggerAction::Reset),
            led: self.pattern().level(self.now_ms),
        }
    }

    /// What the LED shows as of the last call.
    pub fn pattern(&self) -> Pattern {
        match self.state {
            State::Disarmed => Pattern::Disarmed,
            State::Grace { .. } => Pattern::Grace,
            State::Armed { .. } if self.link_bad() => Pattern::LinkBad,
            State::Armed { .. } => Pattern::Armed,
            State::Triggered { .. } => Pattern::Triggered,
            State::Fenced { .. } => Pattern::Fenced,
        }
    }

    /// Input register `address`, or `None` beyond the table.
    pub fn input_register(&self, address: u16) -> Option<u16> {
        let sat = |n: u32| u16::try_from(n).unwrap_or(reg::SATURATED);
        let seconds = |ms: u64| u16::try_from(ms / 1000).unwrap_or(reg::SATURATED);
        let c = &self.counters;
        Some(match address {
            reg::REG_STATE => self.state.code(),
            reg::REG_LAST_TRIGGER => self.last_reason.map_or(0, |r| r as u16),
            reg::REG_TRIGGERS => sat(c.triggers),
            reg::REG_FENCE_WRITES => sat(c.fence_writes),
            reg::REG_HEARTBEATS => sat(c.heartbeats),
            reg::REG_BAD_CRC => sat(c.bad_crc),
            reg::REG_BAD_MAC => sat(c.bad_mac),
            reg::REG_REJECTED => sat(c.rejected),
            reg::REG_MODBUS_GARBLED => sat(c.modbus_garbled),
            reg::REG_MODBUS_EXCEPTIONS => sat(c.modbus_exceptions),
            reg::REG_SECONDS_SINCE_HEARTBEAT => self
                .last_heartbeat_ms
                .map_or(reg::SATURATED, |t| seconds(self.now_ms.saturating_sub(t))),
            reg::REG_SECONDS_TO_TRIGGER => match self.state {
                State::Armed { deadline_ms }
                | State::Grace {
                    until_ms: deadline_ms,
                } => seconds(deadline_ms.saturating_sub(self.now_ms)),
                _ => reg::SATURATED,
            },
            _ => return None,
        })
    }

    /// Coil `address` as the relays are driven, or `None` beyond the table.
    pub fn coil(&self, address: u16) -> Option<bool> {
        let out = self.outputs();
        match address {
            reg::COIL_POWER => Some(!out.power_cut),
            reg::COIL_RESET => Some(out.reset_asserted),
            _ => None,
        }
    }

    fn advance(&mut self, now_ms: u64) {
        // A clock that steps back is held, never followed: timers only move forward.
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        if let Some(adu) = self.rtu.expire(now) {
            self.modbus_frame(&adu);
        }
        match self.state {
            State::Armed { deadline_ms } if now >= deadline_ms => {
                self.trigger(TriggerReason::HeartbeatTimeout);
            }
            State::Grace { until_ms } if now >= until_ms => {
                self.trigger(TriggerReason::BootTimeout);
            }
            State::Triggered { until_ms } if now >= until_ms => {
                self.state = State::Grace {
                    until_ms: now + u64::from(self.config.grace_ms),
                };
                self.event(Event::Released);
            }
            _ => {}
        }
    }

    fn trigger(&mut self, reason: TriggerReason) {
        if self.attempts >= self.config.triggers_max {
            self.state = State::Disarmed;
            self.event(Event::GaveUp);
            return;
        }
        self.attempts += 1;
        self.counters.triggers = self.counters.triggers.saturating_add(1);
        self.last_reason = Some(reason);
        self.state = State::Triggered {
            until_ms: self.now_ms + u64::from(self.config.trigger_ms),
        };
        self.event(Event::Triggered {
            reason,
            attempt: self.attempts,
        });
    }

    fn frame(&mut self, frame: &[u8; proto::FRAME_LEN]) {
        let hb = match Heartbeat::decode(frame, &self.config.key, self.config.cluster_id) {
            Ok(hb) => hb,
            Err(DecodeError::Auth) => {
                self.counters.bad_mac = self.counters.bad_mac.saturating_add(1);
                return self.bad(Refusal::Auth);
            }
            Err(e) => return self.reject(Refusal::Invalid(e)),
        };
        if hb.sender != self.config.host {
            return self.reject(Refusal::Sender(hb.sender.get()));
        }
        let arm = hb.flags.has(Flags::WATCHDOG_ARM);
        let disarm = hb.flags.has(Flags::WATCHDOG_DISARM);
        if arm && disarm {
            return self.reject(Refusal::Command);
        }
        if let Err(e) = self
            .replay
            .accept(hb.sender, hb.link, hb.incarnation, hb.sequence)
        {
            return self.reject(Refusal::Replay(e));
        }
        self.counters.heartbeats = self.counters.heartbeats.saturating_add(1);
        self.last_heartbeat_ms = Some(self.now_ms);
        let deadline_ms = self.now_ms + u64::from(self.config.timeout_ms);
        match self.state {
            // A frame sent before the pulse began is stale news about a host being reset.
            State::Triggered { .. } => {}
            State::Fenced { .. } if arm => self.state = State::Fenced { armed: true },
            State::Fenced { .. } if disarm => self.state = State::Fenced { armed: false },
            State::Fenced { .. } => {}
            State::Disarmed | State::Grace { .. } | State::Armed { .. } if disarm => {
                if self.state != State::Disarmed {
                    self.event(Event::Disarmed);
                }
                self.state = State::Disarmed;
            }
            State::Disarmed if arm => {
                self.attempts = 0;
                self.state = State::Armed { deadline_ms };
                self.event(Event::Armed);
            }
            // An ordinary heartbeat never arms.
            State::Disarmed => {}
            State::Grace { .. } => {
                self.attempts = 0;
                self.state = State::Armed { deadline_ms };
                self.event(Event::HostUp);
            }
            State::Armed { .. } => {
                self.attempts = 0;
                self.state = State::Armed { deadline_ms };
            }
        }
    }

    fn modbus_frame(&mut self, adu: &[u8]) {
        let unit = self.config.unit;
        let (result, broadcast) = match modbus::parse(adu, unit) {
            Parsed::Garbled => {
                self.counters.modbus_garbled = self.counters.modbus_garbled.saturating_add(1);
                return;
            }
            Parsed::NotForUs => return,
            Parsed::Refused {
                function,
                exception,
                broadcast,
            } => (Err((function, exception)), broadcast),
            Parsed::Request { request, broadcast } => (Ok(request), broadcast),
        };
        self.counters.modbus_requests = self.counters.modbus_requests.saturating_add(1);
        let reply = match result {
            Ok(request) => {
                let function = function_of(&request);
                self.execute(request)
                    .map_err(|exception| (function, exception))
            }
            Err(refused) => Err(refused),
        };
        let adu = match reply {
            Ok(adu) => adu,
            Err((function, exception)) => {
                self.counters.modbus_exceptions = self.counters.modbus_exceptions.saturating_add(1);
                Reply::exception(unit, function, exception)
            }
        };
        if !broadcast {
            self.reply = Some(adu);
        }
    }

    fn execute(&mut self, request: Request<'_>) -> Result<Adu, Exception> {
        let unit = self.config.unit;
        match request {
            Request::ReadCoils { start, quantity } => {
                check_range(start, quantity, reg::COIL_COUNT)?;
                let mut reply = Reply::new(unit, modbus::READ_COILS);
                let bytes = quantity.div_ceil(8);
                reply.byte(u8::try_from(bytes).map_err(|_| Exception::IllegalDataValue)?);
                for i in 0..bytes {
                    let mut packed = 0u8;
                    for bit in 0..8u16 {
                        let n = i * 8 + bit;
                        if n < quantity && self.coil(start + n) == Some(true) {
                            packed |= 1 << bit;
                        }
                    }
                    reply.byte(packed);
                }
                Ok(reply.finish())
            }
            Request::ReadInputRegisters { start, quantity } => {
                check_range(start, quantity, reg::REGISTER_COUNT)?;
                let mut reply = Reply::new(unit, modbus::READ_INPUT_REGISTERS);
                reply.byte(u8::try_from(quantity * 2).map_err(|_| Exception::IllegalDataValue)?);
                for address in start..start + quantity {
                    reply.word(self.input_register(address).unwrap_or(0));
                }
                Ok(reply.finish())
            }
            Request::WriteSingleCoil { address, on } => {
                check_range(address, 1, reg::COIL_COUNT)?;
                self.set_coil(address, on);
                let mut reply = Reply::new(unit, modbus::WRITE_SINGLE_COIL);
                reply.word(address);
                reply.word(if on { 0xFF00 } else { 0 });
                Ok(reply.finish())
            }
            Request::WriteMultipleCoils {
                start,
                quantity,
                bits,
            } => {
                check_range(start, quantity, reg::COIL_COUNT)?;
                for i in 0..quantity {
                    let on = bits
                        .get(usize::from(i / 8))
                        .is_some_and(|b| b & (1 << (i % 8)) != 0);
                    self.set_coil(start + i, on);
                }
                let mut reply = Reply::new(unit, modbus::WRITE_MULTIPLE_COILS);
                reply.word(start);
                reply.word(quantity);
                Ok(reply.finish())
            }
        }
    }

    fn set_coil(&mut self, address: u16, on: bool) {
        let was_fenced = self.fenced();
        let slot = match address {
            reg::COIL_POWER => &mut self.power_on,
            reg::COIL_RESET => &mut self.reset_on,
            // Addresses are range-checked before any write.
            _ => return,
        };
        if *slot == on {
            return;
        }
        *slot = on;
        self.counters.fence_writes = self.counters.fence_writes.saturating_add(1);
        match (was_fenced, self.fenced()) {
            (false, true) => {
                let armed = self.state != State::Disarmed;
                self.state = State::Fenced { armed };
                self.event(Event::Fenced);
            }
            (true, false) => {
                let armed = matches!(self.state, State::Fenced { armed: true });
                self.state = if armed {
                    State::Grace {
                        until_ms: self.now_ms + u64::from(self.config.grace_ms),
                    }
                } else {
                    State::Disarmed
                };
                self.event(Event::Unfenced { armed });
            }
            _ => {}
        }
    }

    fn fenced(&self) -> bool {
        !self.power_on || self.reset_on
    }

    fn link_bad(&self) -> bool {
        let now = self.now_ms;
        let recent_bad = self
            .last_bad_ms
            .is_some_and(|t| now.saturating_sub(t) < LINK_BAD_WINDOW_MS);
        let late = self
            .last_heartbeat_ms
            .is_none_or(|t| now.saturating_sub(t) > u64::from(self.config.timeout_ms / 2));
        recent_bad || late
    }

    fn bad(&mut self, why: Refusal) {
        self.last_bad_ms = Some(self.now_ms);
        self.event(Event::Refused(why));
    }

    fn reject(&mut self, why: Refusal) {
        self.counters.rejected = self.counters.rejected.saturating_add(1);
        self.bad(why);
    }

    fn event(&mut self, event: Event) {
        if self.events.is_full() {
            // The oldest is the least useful to a log that fell behind.
            self.events.pop_front();
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
        // Room was made above.
        let _ = self.events.push_back(event);
    }
}

fn function_of(request: &Request<'_>) -> u8 {
    match request {
        Request::ReadCoils { .. } => modbus::READ_COILS,
        Request::ReadInputRegisters { .. } => modbus::READ_INPUT_REGISTERS,
        Request::WriteSingleCoil { .. } => modbus::WRITE_SINGLE_COIL,
        Request::WriteMultipleCoils { .. } => modbus::WRITE_MULTIPLE_COILS,
    }
}

fn check_range(start: u16, quantity: u16, len: u16) -> Result<(), Exception> {
    match start.checked_add(quantity) {
        Some(end) if end <= len => Ok(()),
        _ => Err(Exception::IllegalDataAddress),
    }
}

/// Events kept for the log between two drains; a board without a log drops the oldest.
pub const EVENTS_MAX: usize = 16;
/// A bad frame within the last five seconds shows as "link bad": long enough for an operator to
/// notice a flaky cable, short enough to clear soon after it is fixed.
pub const LINK_BAD_WINDOW_MS: u64 = 5_000;
