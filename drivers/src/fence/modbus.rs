//! Switched PDUs over Modbus (TCP, or RTU on a serial line): one outlet per coil or holding
//! register, switched off and read back until the PDU reports it off.
//!
//! Many rack PDUs and most DIN-rail relay modules speak Modbus and nothing else, and they are the
//! last fencing level that still works when a node's BMC is dead: cutting its outlets. Modbus
//! has no notion of a node, so the configuration maps each node to every outlet that feeds it (a
//! node with two power supplies has two, possibly on two PDUs behind one gateway, hence a unit
//! id per outlet). This driver keeps the [`FenceDevice`] contract as follows:
//!
//! - **Confirmation.** `off` writes every outlet of the node (FC5 for a coil, FC6 for a
//!   register), then reads every outlet back (FC1, FC3) every `poll_interval` until all read
//!   off. The write's echo is never taken as proof: a PDU with a welded relay acknowledges and
//!   keeps reading on, which is [`FenceErrorKind::Unconfirmed`] naming the outlets still on.
//!   `status` is off only when every outlet reads off: a node with one live supply is powered.
//!   `reboot` is a confirmed off, `off_time` of darkness, then a confirmed on.
//! - **Time.** tokio-modbus has no timeouts of its own, so every connect and every request runs
//!   under the smaller of `request_timeout` and what is left before the deadline; silence is
//!   [`FenceErrorKind::Timeout`]. A unit id nobody answers to on an RS-485 bus looks exactly
//!   like that.
//! - **Connection.** One connection per device, opened on first use and kept across calls (PDUs
//!   serve few TCP clients and a serial port has one owner). Any transport failure, timeout or
//!   garbled answer drops it, since late or stray bytes could otherwise be read as the answer
//!   to the next request. A request on a connection kept from an earlier call that fails at the
//!   transport is retried once on a fresh connection: the PDU may have restarted meanwhile, and
//!   every request this driver sends is idempotent.
//! - **Exceptions.** Modbus exception responses become errors naming the exception and the
//!   outlet: an illegal data address is a misconfigured outlet ([`FenceErrorKind::TargetUnknown`]),
//!   device busy and illegal function are [`FenceErrorKind::Refused`], and the gateway exceptions
//!   (10, 11: the unit behind a TCP gateway did not answer) are [`FenceErrorKind::Unreachable`].
//! - **Answers are checked, never trusted.** Responses are matched to requests by tokio-modbus
//!   and their contents by this module: a register holding neither the `on` nor the `off` value
//!   is refused with the value, not guessed. The typed readers of tokio-modbus assert on the
//!   answer's shape in debug builds, so this driver sends raw requests and checks the answer
//!   itself: wire input never panics.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::client::{rtu, tcp, Client as _, Context};
use tokio_modbus::slave::SlaveContext as _;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_serial::{
    DataBits, FlowControl, Parity, SerialPort as _, SerialPortBuilderExt as _, SerialStream,
    StopBits,
};

use super::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};

/// How the PDU is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusTransport {
    /// Modbus TCP (port 502 by default).
    Tcp {
        /// PDU address and port.
        address: SocketAddr,
    },
    /// Modbus RTU on a serial port (RS-485 adapters are the usual wiring), 8N1.
    Rtu {
        /// Serial device, e.g. `/dev/watchkeeper/rs485-0`.
        path: PathBuf,
        /// Line speed.
        baud: u32,
    },
}

/// How one outlet is switched and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutletControl {
    /// A coil: 1 = powered, 0 = off (write FC5, read FC1).
    Coil {
        /// Coil address (0-based protocol address).
        address: u16,
    },
    /// A holding register holding `on` or `off` (write FC6, read FC3).
    Register {
        /// Register address (0-based protocol address).
        address: u16,
        /// The value that means powered.
        on: u16,
        /// The value that means off.
        off: u16,
    },
}

/// One outlet: the unit (slave) id that answers for it and how it is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlet {
    /// Modbus unit id (1–247; 255 or 0 for some TCP gateways).
    pub unit: u8,
    /// Coil or register.
    pub control: OutletControl,
}

/// One Modbus PDU and the outlets of every node it powers.
#[derive(Debug, Clone)]
pub struct ModbusParams {
    /// TCP or RTU.
    pub transport: ModbusTransport,
    /// Per node name, every outlet that feeds it (a node with two power supplies has two):
    /// all must read off before `off` succeeds.
    pub outlets: BTreeMap<String, Vec<Outlet>>,
    /// Upper bound on one request (and on connecting); tokio-modbus has none of its own.
    pub request_timeout: Duration,
    /// Pause between reads while waiting for outlets to show the requested state.
    pub poll_interval: Duration,
    /// How long `reboot` keeps the outlets off before switching them on again.
    pub off_time: Duration,
}

impl fmt::Display for Outlet {
    /// `coil 3 on unit 1`, `register 102 on unit 2`: how errors and logs name an outlet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.control {
            OutletControl::Coil { address } => write!(f, "coil {address} on unit {}", self.unit),
            OutletControl::Register { address, .. } => {
                write!(f, "register {address} on unit {}", self.unit)
            }
        }
    }
}

/// The outlet of plug number `plug` (1-based, as printed on the PDU) under the convention used
/// when no outlet map is configured (`fence_watchkeeper --type=modbus --plug=N`): plug N is coil
/// N-1 on unit [`PLUG_UNIT`].
///
/// `None` for plug 0 or a plug beyond the 65536 coils Modbus can address.
pub fn plug_outlet(plug: u32) -> Option<Outlet> {
    let address = u16::try_from(plug.checked_sub(1)?).ok()?;
    Some(Outlet {
        unit: PLUG_UNIT,
        control: OutletControl::Coil { address },
    })
}

/// What went wrong talking to a PDU; [`ModbusError::kind`] maps it for the engine.
#[derive(Debug, Error)]
pub enum ModbusError {
    /// The parameters are unusable (refused before anything is sent).
    #[error("bad parameters: {0}")]
    Params(String),
    /// The device was asked about a node it has no outlets for.
    #[error("node {target:?} has no outlets on this PDU (it powers {known})")]
    TargetUnknown {
        /// Node asked for.
        target: String,
        /// The configured nodes, comma-separated.
        known: String,
    },
    /// The PDU could not be connected to (refused, no route, serial port missing).
    #[error("cannot reach the PDU at {endpoint}: {source}")]
    Connect {
        /// TCP address or serial port.
        endpoint: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while a request was under way.
    #[error("connection to the PDU at {endpoint} failed during {request}: {source}")]
    Transport {
        /// TCP address or serial port.
        endpoint: String,
        /// What was being done.
        request: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the time allowed.
    #[error("no answer from the PDU within {waited:?} ({request}, {endpoint})")]
    Timeout {
        /// TCP address or serial port.
        endpoint: String,
        /// What was being done.
        request: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The operation's deadline passed before a step could start.
    #[error("the deadline passed before {stage}")]
    Deadline {
        /// The step that could not start.
        stage: String,
    },
    /// The PDU answered with a Modbus exception.
    #[error("{}", exception_message(.outlet, *.function, *.code))]
    Exception {
        /// The outlet the request was about.
        outlet: Outlet,
        /// Function code of the request.
        function: u8,
        /// Exception code of the answer.
        code: u8,
    },
    /// The answer does not fit the request (wrong function, header or length).
    #[error("unusable answer from the PDU at {endpoint} to {request}: {detail}")]
    Protocol {
        /// TCP address or serial port.
        endpoint: String,
        /// The request.
        request: String,
        /// What was wrong.
        detail: String,
    },
    /// A register outlet holds a value that means neither on nor off.
    #[error("{outlet} reads {value}, which is neither on ({on}) nor off ({off})")]
    UnknownValue {
        /// The outlet.
        outlet: Outlet,
        /// The value read.
        value: u16,
        /// The configured on value.
        on: u16,
        /// The configured off value.
        off: u16,
    },
    /// The outlets were written but some kept reading the other state until the deadline.
    #[error(
        "switched {} but {} still read{} {} after {polls} reads",
        state_word(*.wanted), list(.pending), if .pending.len() == 1 { "s" } else { "" },
        state_word(opposite(*.wanted))
    )]
    Unconfirmed {
        /// The state asked for.
        wanted: PowerState,
        /// Outlets still in the other state at the last read.
        pending: Vec<Outlet>,
        /// Read rounds made.
        polls: u32,
    },
}

impl ModbusError {
    /// The shared kind of this failure.
    pub fn kind(&self) -> FenceErrorKind {
        match self {
            Self::Params(_) | Self::Protocol { .. } | Self::UnknownValue { .. } => {
                FenceErrorKind::Refused
            }
            Self::TargetUnknown { .. } => FenceErrorKind::TargetUnknown,
            Self::Connect { .. } | Self::Transport { .. } => FenceErrorKind::Unreachable,
            Self::Timeout { .. } | Self::Deadline { .. } => FenceErrorKind::Timeout,
            Self::Exception { code, .. } => exception_kind(*code),
            Self::Unconfirmed { .. } => FenceErrorKind::Unconfirmed,
        }
    }
}

/// Counters of one device, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct ModbusMetrics {
    /// Connections opened (the first, and one after every dropped connection).
    pub connects: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Exception responses received.
    pub exceptions: AtomicU64,
    /// Operations that failed.
    pub errors: AtomicU64,
}

/// One Modbus PDU (or gateway) and the outlets of every node it powers; see the module docs.
pub struct ModbusDevice {
    name: String,
    params: ModbusParams,
    /// `127.0.0.1:502` or `/dev/ttyUSB0 at 19200 baud`, for messages.
    endpoint: String,
    /// The open connection; `None` until first use and after any failure that may have left
    /// it out of step.
    conn: Option<Context>,
    metrics: Arc<ModbusMetrics>,
}

impl fmt::Debug for ModbusDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModbusDevice")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl ModbusDevice {
    /// A device named `name` that switches the outlets in `params`. Nothing is sent until the
    /// first operation.
    ///
    /// Fails with [`FenceErrorKind::Refused`] when no node is configured, a node has no outlet
    /// (its `off` would succeed without switching anything), a register outlet's `on` and `off`
    /// values are equal, the baud rate is 0, an RTU outlet uses unit 0 (broadcast, which is
    /// never answered) or a unit above 247, or a timeout or interval is zero.
    pub fn new(name: impl Into<String>, params: ModbusParams) -> Result<Self, FenceError> {
        let name = name.into();
        if let Err(e) = validate(&params) {
            tracing::warn!(device = %name, error = %e, "modbus device refused");
            return Err(FenceError::new(e.kind(), name, e.to_string()));
        }
        let endpoint = match &params.transport {
            ModbusTransport::Tcp { address } => address.to_string(),
            ModbusTransport::Rtu { path, baud } => format!("{} at {baud} baud", path.display()),
        };
        Ok(Self {
            name,
            params,
            endpoint,
            conn: None,
            metrics: Arc::default(),
        })
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<ModbusMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The nodes this device powers.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.params.outlets.keys().map(String::as_str)
    }

    async fn operation(
        &mut self,
        op: Op,
        target: &str,
        deadline: Instant,
    ) -> Result<Outcome, FenceError> {
        let started = Instant::now();
        let result = self.run(op, target, started, deadline).await;
        match &result {
            Ok(outcome) => tracing::info!(
                device = %self.name, target, op = op.label(), state = ?outcome.state,
                polls = outcome.polls, elapsed_ms = started.elapsed().as_millis(),
                "modbus operation done"
            ),
            Err(e) => tracing::warn!(
                device = %self.name, target, op = op.label(), kind = ?e.kind(), error = %e,
                "modbus operation failed"
            ),
        }
        result.map_err(|e| {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            FenceError::new(e.kind(), &self.name, e.to_string())
        })
    }

    async fn run(
        &mut self,
        op: Op,
        target: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<Outcome, ModbusError> {
        let outlets = match op {
            // Monitoring reads every outlet of every node, so that a misconfigured one shows
            // before the day it is needed.
            Op::Monitor => {
                let all: Vec<Outlet> = self.params.outlets.values().flatten().copied().collect();
                by_unit(&all)
            }
            Op::Status | Op::Set(_) | Op::Reboot => self.outlets_of(target)?,
        };
        match op {
            Op::Status | Op::Monitor => {
                let states = self.read_all(&outlets, deadline).await?;
                Ok(Outcome {
                    state: aggregate(&states),
                    polls: 1,
                    started,
                })
            }
            Op::Set(want) => {
                let polls = self.switch(&outlets, want, deadline).await?;
                Ok(Outcome {
                    state: want,
                    polls,
                    started,
                })
            }
            Op::Reboot => {
                let off = self.switch(&outlets, PowerState::Off, deadline).await?;
                let on_at = Instant::now() + self.params.off_time;
                if on_at >= deadline {
                    return Err(ModbusError::Deadline {
                        stage: format!(
                            "switching on again: the outlets are confirmed off but must stay \
                             off for {:?}",
                            self.params.off_time
                        ),
                    });
                }
                tokio::time::sleep_until(on_at).await;
                let on = self.switch(&outlets, PowerState::On, deadline).await?;
                Ok(Outcome {
                    state: PowerState::On,
                    polls: off + on,
                    started,
                })
            }
        }
    }

    /// Writes every outlet towards `want`, then reads them all back until all show it; returns
    /// the number of read rounds.
    async fn switch(
        &mut self,
        outlets: &[Outlet],
        want: PowerState,
        deadline: Instant,
    ) -> Result<u32, ModbusError> {
        for outlet in outlets {
            self.write(outlet, want, deadline).await?;
        }
        // Bounded by the deadline: each round either returns or sleeps a nonzero interval.
        let mut polls = 0u32;
        // The outlets still pending at the last answered read-back, once there is one.
        let mut last_pending: Option<Vec<Outlet>> = None;
        loop {
            let states = match self.read_all(outlets, deadline).await {
                Ok(states) => states,
                // The writes were accepted and an earlier read-back was answered: the deadline
                // cutting a later read leaves that answer the last word.
                Err(e) if e.kind() == FenceErrorKind::Timeout => match last_pending {
                    Some(pending) => {
                        return Err(ModbusError::Unconfirmed {
                            wanted: want,
                            pending,
                            polls,
                        })
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            };
            polls = polls.saturating_add(1);
            let pending = pending(outlets, &states, want);
            if pending.is_empty() {
                return Ok(polls);
            }
            let next = Instant::now() + self.params.poll_interval;
            if next >= deadline {
                return Err(ModbusError::Unconfirmed {
                    wanted: want,
                    pending,
                    polls,
                });
            }
            last_pending = Some(pending);
            tokio::time::sleep_until(next).await;
        }
    }

    async fn write(
        &mut self,
        outlet: &Outlet,
        want: PowerState,
        deadline: Instant,
    ) -> Result<(), ModbusError> {
        let on = want == PowerState::On;
        let request = match outlet.control {
            OutletControl::Coil { address } => Request::WriteSingleCoil(address, on),
            OutletControl::Register {
                address,
                on: on_value,
                off: off_value,
            } => Request::WriteSingleRegister(address, if on { on_value } else { off_value }),
        };
        match self.call(outlet, request, deadline).await? {
            // The echo is not checked: what counts is the state read back afterwards.
            Response::WriteSingleCoil(..) | Response::WriteSingleRegister(..) => Ok(()),
            other => Err(self.protocol(outlet, "write", format!("answered {other:?}"))),
        }
    }

    async fn read_all(
        &mut self,
        outlets: &[Outlet],
        deadline: Instant,
    ) -> Result<Vec<PowerState>, ModbusError> {
        let mut states = Vec::with_capacity(outlets.len());
        for outlet in outlets {
            states.push(self.read(outlet, deadline).await?);
        }
        Ok(states)
    }

    async fn read(
        &mut self,
        outlet: &Outlet,
        deadline: Instant,
    ) -> Result<PowerState, ModbusError> {
        match outlet.control {
            OutletControl::Coil { address } => {
                match self
                    .call(outlet, Request::ReadCoils(address, 1), deadline)
                    .await?
                {
                    Response::ReadCoils(bits) => match bits.first() {
                        Some(true) => Ok(PowerState::On),
                        Some(false) => Ok(PowerState::Off),
                        None => Err(self.protocol(outlet, "read", "no coil value".to_owned())),
                    },
                    other => Err(self.protocol(outlet, "read", format!("answered {other:?}"))),
                }
            }
            OutletControl::Register { address, .. } => {
                match self
                    .call(outlet, Request::ReadHoldingRegisters(address, 1), deadline)
                    .await?
                {
                    Response::ReadHoldingRegisters(words) => match words.first() {
                        Some(&value) => register_state(*outlet, value),
                        None => Err(self.protocol(outlet, "read", "no register value".to_owned())),
                    },
                    other => Err(self.protocol(outlet, "read", format!("answered {other:?}"))),
                }
            }
        }
    }

    /// Sends one request for `outlet` on the kept connection (opening one if needed) and
    /// returns the answer, or the exception as an error.
    async fn call(
        &mut self,
        outlet: &Outlet,
        request: Request<'static>,
        deadline: Instant,
    ) -> Result<Response, ModbusError> {
        let function = request.function_code().value();
        let reused = self.conn.is_some();
        self.connect(deadline).await?;
        let answer = match self.exchange(outlet, request.clone(), deadline).await {
            Err(ModbusError::Transport { .. }) if reused => {
                tracing::info!(
                    device = %self.name, endpoint = %self.endpoint,
                    "kept connection failed, reconnecting once"
                );
                self.connect(deadline).await?;
                self.exchange(outlet, request, deadline).await?
            }
            other => other?,
        };
        answer.map_err(|code| {
            self.metrics.exceptions.fetch_add(1, Ordering::Relaxed);
            ModbusError::Exception {
                outlet: *outlet,
                function,
                code: u8::from(code),
            }
        })
    }

    async fn exchange(
        &mut self,
        outlet: &Outlet,
        request: Request<'static>,
        deadline: Instant,
    ) -> Result<Result<Response, ExceptionCode>, ModbusError> {
        let what = describe_request(outlet, &request);
        let timeout = self.budget(deadline, &what)?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(ModbusError::Deadline {
                stage: format!("{what}: no connection"),
            });
        };
        conn.set_slave(Slave(outlet.unit));
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(timeout, conn.call(request)).await;
        let error = match result {
            Ok(Ok(answer)) => return Ok(answer),
            Err(_) => ModbusError::Timeout {
                endpoint: self.endpoint.clone(),
                request: what,
                waited: timeout,
            },
            Ok(Err(tokio_modbus::Error::Transport(source))) => ModbusError::Transport {
                endpoint: self.endpoint.clone(),
                request: what,
                source,
            },
            Ok(Err(tokio_modbus::Error::Protocol(e))) => ModbusError::Protocol {
                endpoint: self.endpoint.clone(),
                request: what,
                detail: e.to_string(),
            },
        };
        // Whatever the PDU sends late would be read as the answer to the next request.
        self.conn = None;
        Err(error)
    }

    async fn connect(&mut self, deadline: Instant) -> Result<(), ModbusError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let stage = format!("connecting to {}", self.endpoint);
        let timeout = self.budget(deadline, &stage)?;
        let context = match &self.params.transport {
            ModbusTransport::Tcp { address } => {
                let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(source)) => {
                        return Err(ModbusError::Connect {
                            endpoint: self.endpoint.clone(),
                            source,
                        })
                    }
                    Err(_) => {
                        return Err(ModbusError::Timeout {
                            endpoint: self.endpoint.clone(),
                            request: stage,
                            waited: timeout,
                        })
                    }
                };
                // Requests are single small frames that wait for their answer: Nagle only
                // delays them.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(device = %self.name, error = %e, "TCP_NODELAY not set");
                }
                tcp::attach_slave(stream, Slave(PLUG_UNIT))
            }
            ModbusTransport::Rtu { path, baud } => {
                let port = open_serial(path, *baud).map_err(|source| ModbusError::Connect {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
                rtu::attach_slave(port, Slave(PLUG_UNIT))
            }
        };
        self.metrics.connects.fetch_add(1, Ordering::Relaxed);
        self.conn = Some(context);
        Ok(())
    }

    /// The time one step may take: the request timeout, cut to what is left of the deadline.
    fn budget(&self, deadline: Instant, stage: &str) -> Result<Duration, ModbusError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ModbusError::Deadline {
                stage: stage.to_owned(),
            });
        }
        Ok((deadline - now).min(self.params.request_timeout))
    }

    fn outlets_of(&self, target: &str) -> Result<Vec<Outlet>, ModbusError> {
        match self.params.outlets.get(target) {
            Some(outlets) => Ok(by_unit(outlets)),
            None => Err(ModbusError::TargetUnknown {
                target: target.to_owned(),
                known: self.nodes().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// A garbled answer: the connection is dropped, as after a timeout.
    fn protocol(&mut self, outlet: &Outlet, request: &str, detail: String) -> ModbusError {
        self.conn = None;
        ModbusError::Protocol {
            endpoint: self.endpoint.clone(),
            request: format!("{request} {outlet}"),
            detail,
        }
    }
}

impl FenceDevice for ModbusDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let outcome = self
                .operation(Op::Set(PowerState::Off), target, deadline)
                .await?;
            Ok(outcome.confirmed())
        })
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let outcome = self
                .operation(Op::Set(PowerState::On), target, deadline)
                .await?;
            Ok(outcome.confirmed())
        })
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let outcome = self.operation(Op::Reboot, target, deadline).await?;
            Ok(outcome.confirmed())
        })
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(async move {
            let outcome = self.operation(Op::Status, target, deadline).await?;
            Ok(outcome.state)
        })
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move {
            self.operation(Op::Monitor, "", deadline).await?;
            Ok(())
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Status,
    Set(PowerState),
    Reboot,
    Monitor,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::Set(PowerState::Off) => "off",
            Op::Set(PowerState::On) => "on",
            Op::Reboot => "reboot",
            Op::Monitor => "monitor",
        }
    }
}

/// What an operation ends with, before it is shaped into the trait's return type.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    state: PowerState,
    polls: u32,
    started: Instant,
}

impl Outcome {
    fn confirmed(self) -> Confirmed {
        Confirmed {
            state: self.state,
            polls: self.polls,
            elapsed: self.started.elapsed(),
        }
    }
}

fn validate(params: &ModbusParams) -> Result<(), ModbusError> {
    let refuse = |m: String| Err(ModbusError::Params(m));
    if params.outlets.is_empty() {
        return refuse("no node has an outlet on this PDU".to_owned());
    }
    if params.request_timeout.is_zero() || params.poll_interval.is_zero() {
        return refuse("request_timeout and poll_interval must be above zero".to_owned());
    }
    let rtu = match params.transport {
        ModbusTransport::Rtu { baud: 0, .. } => {
            return refuse("baud must be above zero".to_owned())
        }
        ModbusTransport::Rtu { .. } => true,
        ModbusTransport::Tcp { .. } => false,
    };
    for (node, outlets) in &params.outlets {
        if outlets.is_empty() {
            return refuse(format!(
                "node {node:?} has no outlets: its off would switch nothing"
            ));
        }
        for outlet in outlets {
            if rtu && !(RTU_UNIT_MIN..=RTU_UNIT_MAX).contains(&outlet.unit) {
                return refuse(format!(
                    "node {node:?}: {outlet}: RTU unit ids are {RTU_UNIT_MIN}-{RTU_UNIT_MAX} \
                     (0 is broadcast, which no device answers)"
                ));
            }
            if let OutletControl::Register { on, off, .. } = outlet.control {
                if on == off {
                    return refuse(format!("node {node:?}: {outlet}: on and off are both {on}"));
                }
            }
        }
    }
    Ok(())
}

/// Opens a serial port 8N1 without flow control, as RS-485 Modbus adapters are wired.
fn open_serial(path: &std::path::Path, baud: u32) -> std::io::Result<SerialStream> {
    let mut port = tokio_serial::new(path.to_string_lossy(), baud)
        .data_bits(DataBits::Eight)
        .parity(Parity::None)
        .stop_bits(StopBits::One)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(std::io::Error::from)?;
    // Two masters on one bus would garble each other's frames.
    port.set_exclusive(true).map_err(std::io::Error::from)?;
    // Bytes from before this open are answers to somebody else's requests.
    port.clear(tokio_serial::ClearBuffer::Input)
        .map_err(std::io::Error::from)?;
    Ok(port)
}

/// The outlets in request order: grouped by unit (a gateway switches between units at a cost),
/// in configuration order within a unit.
fn by_unit(outlets: &[Outlet]) -> Vec<Outlet> {
    let mut sorted = outlets.to_vec();
    sorted.sort_by_key(|o| o.unit);
    sorted
}

/// A node is off only when every outlet feeding it is off: one live supply keeps it running.
fn aggregate(states: &[PowerState]) -> PowerState {
    if !states.is_empty() && states.iter().all(|&s| s == PowerState::Off) {
        PowerState::Off
    } else {
        PowerState::On
    }
}

/// The outlets whose state is not yet `want`.
fn pending(outlets: &[Outlet], states: &[PowerState], want: PowerState) -> Vec<Outlet> {
    outlets
        .iter()
        .zip(states)
        .filter(|&(_, &state)| state != want)
        .map(|(outlet, _)| *outlet)
        .collect()
}

fn register_state(outlet: Outlet, value: u16) -> Result<PowerState, ModbusError> {
    match outlet.control {
        OutletControl::Register { on, .. } if value == on => Ok(PowerState::On),
        OutletControl::Register { off, .. } if value == off => Ok(PowerState::Off),
        OutletControl::Register { on, off, .. } => Err(ModbusError::UnknownValue {
            outlet,
            value,
            on,
            off,
        }),
        OutletControl::Coil { .. } => Ok(if value == 0 {
            PowerState::Off
        } else {
            PowerState::On
        }),
    }
}

fn describe_request(outlet: &Outlet, request: &Request<'_>) -> String {
    match request {
        Request::WriteSingleCoil(_, value) => format!("writing {} to {outlet}", u8::from(*value)),
        Request::WriteSingleRegister(_, value) => format!("writing {value} to {outlet}"),
        Request::ReadCoils(..) | Request::ReadHoldingRegisters(..) => format!("reading {outlet}"),
        other => format!("{other:?} for {outlet}"),
    }
}

fn exception_kind(code: u8) -> FenceErrorKind {
    match ExceptionCode::new(code) {
        ExceptionCode::IllegalDataAddress => FenceErrorKind::TargetUnknown,
        ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice => {
            FenceErrorKind::Unreachable
        }
        _ => FenceErrorKind::Refused,
    }
}

fn exception_message(outlet: &Outlet, function: u8, code: u8) -> String {
    let (kind, address) = match outlet.control {
        OutletControl::Coil { address } => ("coil", address),
        OutletControl::Register { address, .. } => ("register", address),
    };
    let unit = outlet.unit;
    match ExceptionCode::new(code) {
        ExceptionCode::IllegalDataAddress => {
            format!("outlet {kind} {address} does not exist on unit {unit} (illegal data address)")
        }
        ExceptionCode::ServerDeviceBusy => format!(
            "unit {unit} answered device busy, try again (exception 6 to function {function} on \
             {kind} {address})"
        ),
        ExceptionCode::IllegalFunction => format!(
            "the PDU does not support function code {function} (unit {unit}, {kind} {address}): \
             configure a coil or register outlet accordingly"
        ),
        ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice => format!(
            "the gateway could not reach unit {unit} (exception {code}: {}) for {kind} {address}",
            ExceptionCode::new(code)
        ),
        other => format!(
            "unit {unit} answered exception {code} ({other}) to function {function} on {kind} \
             {address}"
        ),
    }
}

fn state_word(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "on",
        PowerState::Off => "off",
    }
}

fn opposite(state: PowerState) -> PowerState {
    match state {
        PowerState::On => PowerState::Off,
        PowerState::Off => PowerState::On,
    }
}

fn list(outlets: &[Outlet]) -> String {
    outlets
        .iter()
        .map(Outlet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The unit of [`plug_outlet`]: a PDU answering on its own serial port or TCP port is usually
/// unit 1, the factory default of every PDU we know of. It is also the initial unit of a new
/// connection, which every request overrides anyway.
pub const PLUG_UNIT: u8 = 1;
/// RTU unit ids: 0 is broadcast (never answered), 248–255 are reserved.
const RTU_UNIT_MIN: u8 = 1;
const RTU_UNIT_MAX: u8 = 247;

#[cfg(test)]
mod tests {
    use super::*;

    fn coil(unit: u8, address: u16) -> Outlet {
        Outlet {
            unit,
            control: OutletControl::Coil { address },
        }
    }

    fn register(unit: u8, address: u16) -> Outlet {
        Outlet {
            unit,
            control: OutletControl::Register {
                address,
                on: 1,
                off: 2,
            },
        }
    }

    fn params(outlets: &[(&str, Vec<Outlet>)]) -> ModbusParams {
        ModbusParams {
            transport: ModbusTransport::Tcp {
                address: SocketAddr::from(([127, 0, 0, 1], 1)),
            },
            outlets: outlets
                .iter()
                .map(|(n, o)| ((*n).to_owned(), o.clone()))
                .collect(),
            request_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            off_time: Duration::from_millis(100),
        }
    }

    fn refused(p: ModbusParams) -> String {
        match ModbusDevice::new("pdu", p) {
            Ok(_) => panic!("parameters accepted"),
            Err(e) => {
                assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
                e.message
            }
        }
    }

    #[test]
    fn parameters_are_validated() {
        assert!(ModbusDevice::new("pdu", params(&[("a", vec![coil(1, 0)])])).is_ok());
        assert!(refused(params(&[])).contains("no node"));
        assert!(refused(params(&[("a", vec![coil(1, 0)]), ("b", vec![])])).contains("\"b\""));
        let mut same = register(1, 100);
        same.control = OutletControl::Register {
            address: 100,
            on: 3,
            off: 3,
        };
        assert!(refused(params(&[("a", vec![same])])).contains("both 3"));
        let rtu = |unit, baud| ModbusParams {
            transport: ModbusTransport::Rtu {
                path: "/dev/null".into(),
                baud,
            },
            ..params(&[("a", vec![coil(unit, 0)])])
        };
        assert!(ModbusDevice::new("pdu", rtu(1, 19200)).is_ok());
        assert!(refused(rtu(1, 0)).contains("baud"));
        assert!(refused(rtu(0, 19200)).contains("broadcast"));
        assert!(refused(rtu(248, 19200)).contains("1-247"));
        let zero = ModbusParams {
            poll_interval: Duration::ZERO,
            ..params(&[("a", vec![coil(1, 0)])])
        };
        assert!(refused(zero).contains("above zero"));
    }

    #[test]
    fn a_node_is_off_only_when_every_outlet_is() {
        use PowerState::{Off, On};
        assert_eq!(aggregate(&[Off]), Off);
        assert_eq!(aggregate(&[Off, Off]), Off);
        assert_eq!(aggregate(&[Off, On]), On);
        assert_eq!(aggregate(&[On]), On);
        // Vacuous truth must not fence: no reading is no proof.
        assert_eq!(aggregate(&[]), On);
        let outlets = [coil(1, 0), coil(2, 5)];
        assert_eq!(pending(&outlets, &[Off, On], Off), vec![coil(2, 5)]);
        assert!(pending(&outlets, &[On, On], On).is_empty());
    }

    #[test]
    fn outlets_are_grouped_by_unit_in_configured_order() {
        let mixed = [coil(2, 0), coil(1, 7), coil(2, 1), coil(1, 3)];
        assert_eq!(
            by_unit(&mixed),
            vec![coil(1, 7), coil(1, 3), coil(2, 0), coil(2, 1)]
        );
    }

    #[test]
    fn exceptions_map_to_kinds_and_clear_messages() {
        let e = |outlet, function, code| ModbusError::Exception {
            outlet,
            function,
            code,
        };
        let address = e(coil(1, 12), 5, 2);
        assert_eq!(address.kind(), FenceErrorKind::TargetUnknown);
        assert_eq!(
            address.to_string(),
            "outlet coil 12 does not exist on unit 1 (illegal data address)"
        );
        let busy = e(coil(3, 0), 1, 6);
        assert_eq!(busy.kind(), FenceErrorKind::Refused);
        assert!(
            busy.to_string().contains("device busy, try again"),
            "{busy}"
        );
        let function = e(register(1, 100), 6, 1);
        assert_eq!(function.kind(), FenceErrorKind::Refused);
        assert!(
            function
                .to_string()
                .starts_with("the PDU does not support function code 6"),
            "{function}"
        );
        assert!(function
            .to_string()
            .contains("configure a coil or register outlet"));
        assert_eq!(e(coil(1, 0), 1, 11).kind(), FenceErrorKind::Unreachable);
        let failure = e(coil(1, 0), 1, 4);
        assert_eq!(failure.kind(), FenceErrorKind::Refused);
        assert!(failure.to_string().contains("exception 4"), "{failure}");
    }

    #[test]
    fn register_values_must_mean_on_or_off() {
        let outlet = register(2, 101);
        assert_eq!(register_state(outlet, 1).ok(), Some(PowerState::On));
        assert_eq!(register_state(outlet, 2).ok(), Some(PowerState::Off));
        let e = register_state(outlet, 7).expect_err("7 is refused");
        assert_eq!(e.kind(), FenceErrorKind::Refused);
        assert_eq!(
            e.to_string(),
            "register 101 on unit 2 reads 7, which is neither on (1) nor off (2)"
        );
    }

    #[test]
    fn unconfirmed_names_the_outlets_still_on() {
        let e = ModbusError::Unconfirmed {
            wanted: PowerState::Off,
            pending: vec![coil(1, 3), register(2, 100)],
            polls: 9,
        };
        assert_eq!(e.kind(), FenceErrorKind::Unconfirmed);
        assert_eq!(
            e.to_string(),
            "switched off but coil 3 on unit 1, register 100 on unit 2 still read on after 9 reads"
        );
    }

    #[test]
    fn plugs_count_from_one() {
        assert_eq!(plug_outlet(1), Some(coil(PLUG_UNIT, 0)));
        assert_eq!(plug_outlet(8), Some(coil(PLUG_UNIT, 7)));
        assert_eq!(plug_outlet(65536), Some(coil(PLUG_UNIT, 65535)));
        assert_eq!(plug_outlet(0), None);
        assert_eq!(plug_outlet(65537), None);
    }

    #[tokio::test]
    async fn unknown_targets_and_spent_deadlines_fail_without_sending() {
        let mut device =
            ModbusDevice::new("pdu", params(&[("alpha", vec![coil(1, 0)])])).expect("device");
        let soon = Instant::now() + Duration::from_secs(1);
        let e = device.off("beta", soon).await.expect_err("beta is unknown");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown);
        assert!(e.message.contains("alpha"), "{e}");
        let past = Instant::now() - Duration::from_millis(1);
        let e = device
            .status("alpha", past)
            .await
            .expect_err("deadline spent");
        assert_eq!(e.kind, FenceErrorKind::Timeout);
        assert_eq!(device.metrics().connects.load(Ordering::Relaxed), 0);
        assert_eq!(device.metrics().errors.load(Ordering::Relaxed), 2);
    }
}
