//! Native IPMI v2.0 over LAN (RMCP+) fencing, without ipmitool.
//!
//! Why native: a fence agent that forks ipmitool spends most of its time starting processes and
//! sleeping a fixed `power_wait`; the agent needs a confirmed "off" as soon as the BMC reports
//! it, with every step bounded by one deadline and errors it can classify.
//!
//! What every operation does: open an RMCP+ session (Get Channel Authentication Capabilities,
//! Open Session, RAKP 1–4, Set Session Privilege Level), do its work, and close the session,
//! also when the work failed. `off` and `on` send Chassis Control and then poll Get Chassis
//! Status until the BMC reports the wanted state: the command's own reply is never taken as
//! proof. `reboot` is a confirmed off followed by a confirmed on, not a power cycle, so the
//! caller knows the node really was down.
//!
//! Layers: [`codec`] (wire formats) and [`crypto`] (RAKP, keys, integrity, AES) are pure
//! functions; [`session`] is the sans-IO state machine; `transport` moves datagrams with
//! retransmission; this module maps all of it onto [`FenceDevice`].
//!
//! Security: only suites with RAKP authentication are implemented. Suite 0 is refused always,
//! suites without integrity (1, 15) only pass with `danger_allow_no_integrity`, since without
//! integrity anyone on the path could forge a "power is off" answer.

pub mod codec;
pub mod crypto;
pub mod session;
mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use super::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};
use crate::secret::Secret;
use codec::cmd;
use crypto::CipherSuite;
use session::{Handshake, HandshakeError, OsRandom, RandomSource, Session};
use transport::{ExchangeError, Transport};

/// Everything needed to reach and log in to one BMC.
#[derive(Debug, Clone)]
pub struct IpmiParams {
    /// The BMC's LAN address (port 623 unless configured otherwise).
    pub address: SocketAddr,
    /// IPMI username (at most 16 bytes).
    pub username: String,
    /// IPMI password (at most 20 bytes).
    pub password: Secret,
    /// Cipher suite id: 3 (SHA-1, AES) or 17 (SHA-256, AES); also 2 and 16 (integrity without
    /// encryption), and 1 and 15 only with `danger_allow_no_integrity`.
    pub cipher_suite: u8,
    /// Session privilege to request; power control needs at least operator.
    pub privilege: Privilege,
    /// Accept a suite without packet integrity (lab use only: answers could be forged).
    pub danger_allow_no_integrity: bool,
    /// First retransmission interval; doubled after each unanswered try.
    pub retransmit_initial: Duration,
    /// Interval between power-state reads while confirming off or on.
    pub poll_interval: Duration,
}

impl IpmiParams {
    /// Parameters with the driver's defaults for everything but address and credentials.
    pub fn new(address: SocketAddr, username: impl Into<String>, password: Secret) -> Self {
        Self {
            address,
            username: username.into(),
            password,
            cipher_suite: DEFAULT_CIPHER_SUITE,
            privilege: Privilege::Administrator,
            danger_allow_no_integrity: false,
            retransmit_initial: DEFAULT_RETRANSMIT_INITIAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// The session privilege level to request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// Operator: enough for chassis power control.
    Operator,
    /// Administrator.
    Administrator,
}

impl Privilege {
    /// The IPMI privilege level number.
    pub fn level(self) -> u8 {
        match self {
            Self::Operator => 3,
            Self::Administrator => 4,
        }
    }
}

/// What went wrong talking to a BMC; [`IpmiError::kind`] maps it for the engine.
#[derive(Debug, Error)]
pub enum IpmiError {
    /// The parameters are unusable (refused before any packet is sent).
    #[error("bad parameters: {0}")]
    Params(String),
    /// Nothing came back from the address before the deadline.
    #[error("no answer from {address} before the deadline ({stage})")]
    Unreachable {
        /// BMC address.
        address: SocketAddr,
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The BMC had answered before but stopped answering.
    #[error("{address} stopped answering before the deadline ({stage})")]
    Timeout {
        /// BMC address.
        address: SocketAddr,
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The BMC does not speak IPMI 2.0 on this channel.
    #[error("{address} does not support IPMI v2.0 (RMCP+)")]
    NoIpmi20 {
        /// BMC address.
        address: SocketAddr,
    },
    /// Session setup failed on the BMC's answer.
    #[error("session setup with {address}: {source}")]
    Handshake {
        /// BMC address.
        address: SocketAddr,
        /// What the handshake found.
        #[source]
        source: HandshakeError,
    },
    /// A command completed with a nonzero completion code.
    #[error("{address}: {command} failed with completion code {code:#04x}")]
    Completion {
        /// BMC address.
        address: SocketAddr,
        /// Which command.
        command: &'static str,
        /// IPMI completion code.
        code: u8,
    },
    /// A command's answer was malformed.
    #[error("{address}: malformed {command} response: {source}")]
    Malformed {
        /// BMC address.
        address: SocketAddr,
        /// Which command.
        command: &'static str,
        /// Decoder's finding.
        #[source]
        source: codec::DecodeError,
    },
    /// The BMC accepted the power command but kept reporting the other state.
    #[error(
        "{address}: asked for power {wanted:?}, BMC still reports {seen:?} after {polls} reads"
    )]
    Unconfirmed {
        /// BMC address.
        address: SocketAddr,
        /// State asked for.
        wanted: PowerState,
        /// State last reported.
        seen: PowerState,
        /// Reads made.
        polls: u32,
    },
    /// The device was asked about a node it is not bound to.
    #[error("target {target:?} is not served by this device (it fences {bound:?})")]
    TargetUnknown {
        /// Target asked for.
        target: String,
        /// The bound target.
        bound: String,
    },
    /// Local socket failure.
    #[error("socket for {address}: {source}")]
    Io {
        /// BMC address.
        address: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl IpmiError {
    /// The shared kind of this failure.
    pub fn kind(&self) -> FenceErrorKind {
        match self {
            Self::Params(_) | Self::NoIpmi20 { .. } | Self::Completion { .. } => {
                FenceErrorKind::Refused
            }
            Self::Malformed { .. } => FenceErrorKind::Refused,
            Self::Unreachable { .. } | Self::Io { .. } => FenceErrorKind::Unreachable,
            Self::Timeout { .. } => FenceErrorKind::Timeout,
            Self::Handshake { source, .. } if source.is_auth() => FenceErrorKind::Auth,
            Self::Handshake { .. } => FenceErrorKind::Refused,
            Self::Unconfirmed { .. } => FenceErrorKind::Unconfirmed,
            Self::TargetUnknown { .. } => FenceErrorKind::TargetUnknown,
        }
    }
}

/// Counters of one device, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct IpmiMetrics {
    /// Sessions established.
    pub sessions: AtomicU64,
    /// Operations that failed.
    pub errors: AtomicU64,
    /// Datagrams retransmitted.
    pub retransmits: AtomicU64,
    /// Datagrams received and dropped (malformed, stale, failed integrity, not ours).
    pub dropped: AtomicU64,
}

/// A BMC reached over IPMI v2.0 LAN, bound to the one node it powers.
pub struct IpmiDevice {
    name: String,
    target: String,
    params: IpmiParams,
    suite: CipherSuite,
    metrics: Arc<IpmiMetrics>,
    rng: Box<dyn RandomSource + Send>,
}

impl std::fmt::Debug for IpmiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiDevice")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl IpmiDevice {
    /// A device named `name` that fences `target` through the BMC in `params`.
    ///
    /// Refuses cipher suite 0, unknown suites, suites without integrity unless
    /// `danger_allow_no_integrity`, over-long credentials and zero intervals.
    pub fn new(
        name: impl Into<String>,
        target: impl Into<String>,
        params: IpmiParams,
    ) -> Result<Self, FenceError> {
        let name = name.into();
        let refuse = |msg: String| FenceError::new(FenceErrorKind::Refused, name.clone(), msg);
        let suite = match CipherSuite::from_id(params.cipher_suite) {
            Some(s) => s,
            None if params.cipher_suite == 0 => {
                return Err(refuse(
                    "cipher suite 0 has no authentication and is never allowed".into(),
                ))
            }
            None => {
                return Err(refuse(format!(
                    "cipher suite {} is not supported (use 3 or 17)",
                    params.cipher_suite
                )))
            }
        };
        if !suite.integrity && !params.danger_allow_no_integrity {
            return Err(refuse(format!(
                "cipher suite {} has no integrity protection; refused unless \
                 danger_allow_no_integrity is set",
                suite.id
            )));
        }
        if params.username.len() > codec::MAX_USERNAME_LEN {
            return Err(refuse(format!(
                "username is {} bytes, IPMI allows {}",
                params.username.len(),
                codec::MAX_USERNAME_LEN
            )));
        }
        if params.password.expose().len() > MAX_PASSWORD_LEN {
            return Err(refuse(format!(
                "password is longer than {MAX_PASSWORD_LEN} bytes"
            )));
        }
        if params.retransmit_initial.is_zero() || params.poll_interval.is_zero() {
            return Err(refuse(
                "retransmit_initial and poll_interval must be above zero".into(),
            ));
        }
        Ok(Self {
            name,
            target: target.into(),
            params,
            suite,
            metrics: Arc::default(),
            rng: Box::new(OsRandom),
        })
    }

    /// Sends one Chassis Control command in its own session and returns once the BMC accepted
    /// it, without confirming any power state: for operators and tests that want a power cycle
    /// or hard reset. Fencing goes through [`FenceDevice`], which confirms.
    pub async fn chassis_control(
        &mut self,
        target: &str,
        control: ChassisControl,
        deadline: Instant,
    ) -> Result<(), FenceError> {
        let r = match self.check_target(target) {
            Ok(()) => self.chassis_control_inner(control, deadline).await,
            Err(e) => Err(e),
        };
        r.map_err(|e| self.fail("chassis control", e))
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<IpmiMetrics> {
        Arc::clone(&self.metrics)
    }

    fn check_target(&self, target: &str) -> Result<(), IpmiError> {
        if target == self.target {
            Ok(())
        } else {
            Err(IpmiError::TargetUnknown {
                target: target.to_owned(),
                bound: self.target.clone(),
            })
        }
    }

    /// Turns a driver error into the shared error, logging and counting it.
    fn fail(&self, op: &'static str, e: IpmiError) -> FenceError {
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        let kind = e.kind();
        tracing::warn!(device = %self.name, op, ?kind, error = %e, "IPMI operation failed");
        FenceError::new(kind, self.name.clone(), e.to_string())
    }

    async fn set_power(
        &mut self,
        want: PowerState,
        deadline: Instant,
    ) -> Result<Confirmed, IpmiError> {
        let start = Instant::now();
        let mut s = self.open(deadline).await?;
        let result = s.set_power_confirmed(want, start, deadline).await;
        s.close(deadline).await;
        self.absorb(&s);
        result
    }

    async fn reboot_inner(&mut self, deadline: Instant) -> Result<Confirmed, IpmiError> {
        let start = Instant::now();
        let mut s = self.open(deadline).await?;
        let result = match s
            .set_power_confirmed(PowerState::Off, start, deadline)
            .await
        {
            Ok(off) => s
                .set_power_confirmed(PowerState::On, start, deadline)
                .await
                .map(|on| Confirmed {
                    polls: off.polls + on.polls,
                    ..on
                }),
            Err(e) => Err(e),
        };
        s.close(deadline).await;
        self.absorb(&s);
        result
    }

    async fn chassis_control_inner(
        &mut self,
        control: ChassisControl,
        deadline: Instant,
    ) -> Result<(), IpmiError> {
        let mut s = self.open(deadline).await?;
        let result = s.control(control, deadline).await;
        s.close(deadline).await;
        self.absorb(&s);
        result
    }

    async fn status_inner(&mut self, deadline: Instant) -> Result<PowerState, IpmiError> {
        let mut s = self.open(deadline).await?;
        let result = s.power_state(deadline).await;
        s.close(deadline).await;
        self.absorb(&s);
        result
    }

    /// Opens a session: capabilities, Open Session, RAKP 1–4, privilege.
    async fn open(&mut self, deadline: Instant) -> Result<Active, IpmiError> {
        let address = self.params.address;
        let mut transport = Transport::connect(address, self.params.retransmit_initial)
            .await
            .map_err(|source| IpmiError::Io { address, source })?;
        let privilege = self.params.privilege.level();

        // Get Channel Authentication Capabilities in the IPMI 1.5 format: the one message every
        // BMC answers before a session, so it also proves the address is a BMC.
        let mut message = Vec::new();
        codec::encode_request(
            cmd::NETFN_APP,
            cmd::GET_CHANNEL_AUTH_CAPABILITIES,
            0,
            &codec::channel_auth_capabilities_request(privilege),
            &mut message,
        );
        let request =
            codec::encode_v15_unauthenticated(&message).map_err(|source| IpmiError::Malformed {
                address,
                command: "capabilities",
                source,
            })?;
        let caps = transport
            .exchange(
                deadline,
                |_| request.clone(),
                |bytes, _| Ok::<_, IpmiError>(decode_capabilities(bytes, address)),
            )
            .await
            .map_err(|e| exchange_error(e, address, "channel authentication capabilities"))??;
        if !caps.ipmi20 {
            return Err(IpmiError::NoIpmi20 { address });
        }

        let hs = Mutex::new(Handshake::new(
            self.suite,
            privilege,
            self.params.username.as_bytes(),
            self.params.password.expose().as_bytes(),
            self.rng.as_mut(),
        ));
        // Each transmission carries its own message tag, and only the answer to the latest is
        // taken: after RAKP 1 the BMC keeps only the random number of the last one it saw.
        let tag = |attempt: u32| u8::try_from(attempt & 0x3f).unwrap_or(0);
        let hs_err = |source| IpmiError::Handshake { address, source };

        transport
            .exchange(
                deadline,
                |a| lock(&hs).open_session_request(tag(a)),
                |b, a| Ok(settle(lock(&hs).on_open_session_response(b, tag(a)))),
            )
            .await
            .map_err(|e| exchange_error(e, address, "open session response"))?
            .map_err(hs_err)?;

        // Encoding RAKP 1 fails only on a username length that `new` already refused; checking
        // once here keeps the retransmissions below infallible.
        lock(&hs).rakp1(0).map_err(|source| IpmiError::Malformed {
            address,
            command: "RAKP 1",
            source,
        })?;
        let rakp2 = transport
            .exchange(
                deadline,
                |a| lock(&hs).rakp1(tag(a)).unwrap_or_default(),
                |b, a| Ok(settle(lock(&hs).on_rakp2(b, tag(a)))),
            )
            .await
            .map_err(|e| exchange_error(e, address, "RAKP 2"))?;
        if let Err(e) = rakp2 {
            if e == HandshakeError::BadPassword {
                // Tell the BMC at once so it frees the half-open session slot.
                let reject = lock(&hs).rakp3_reject(0);
                transport.send_only(&reject).await;
            }
            return Err(hs_err(e));
        }

        let session = transport
            .exchange(
                deadline,
                |a| lock(&hs).rakp3(tag(a)),
                |b, a| Ok(settle(lock(&hs).on_rakp4(b, tag(a)))),
            )
            .await
            .map_err(|e| exchange_error(e, address, "RAKP 4"))?
            .map_err(hs_err)?;
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(device = %self.name, %address, suite = self.suite.id, "IPMI session open");

        let mut active = Active {
            transport,
            session,
            address,
            rng: OsRandom,
            poll_interval: self.params.poll_interval,
            retransmit_initial: self.params.retransmit_initial,
            polls: 0,
        };
        // IPMI 2.0 sessions may start below the negotiated maximum; ask for it explicitly so
        // Chassis Control is allowed.
        if let Err(e) = active
            .command(
                deadline,
                cmd::NETFN_APP,
                cmd::SET_SESSION_PRIVILEGE,
                &[privilege],
                "set session privilege",
            )
            .await
        {
            active.close(deadline).await;
            self.absorb(&active);
            return Err(e);
        }
        Ok(active)
    }

    /// Adds a finished session's transport counters to the device's.
    fn absorb(&self, s: &Active) {
        let stats = s.transport.stats;
        self.metrics
            .retransmits
            .fetch_add(stats.retransmits, Ordering::Relaxed);
        self.metrics
            .dropped
            .fetch_add(stats.dropped, Ordering::Relaxed);
    }
}

impl FenceDevice for IpmiDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let r = match self.check_target(target) {
                Ok(()) => self.set_power(PowerState::Off, deadline).await,
                Err(e) => Err(e),
            };
            r.map_err(|e| self.fail("off", e))
        })
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let r = match self.check_target(target) {
                Ok(()) => self.set_power(PowerState::On, deadline).await,
                Err(e) => Err(e),
            };
            r.map_err(|e| self.fail("on", e))
        })
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let r = match self.check_target(target) {
                Ok(()) => self.reboot_inner(deadline).await,
                Err(e) => Err(e),
            };
            r.map_err(|e| self.fail("reboot", e))
        })
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(async move {
            let r = match self.check_target(target) {
                Ok(()) => self.status_inner(deadline).await,
                Err(e) => Err(e),
            };
            r.map_err(|e| self.fail("status", e))
        })
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move {
            // A session proves reachability and credentials; a chassis status read proves the
            // BMC answers the command fencing depends on.
            self.status_inner(deadline)
                .await
                .map(|_| ())
                .map_err(|e| self.fail("monitor", e))
        })
    }
}

/// Chassis Control commands (IPMI v2.0 table 28-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    /// Power down (hard off, no graceful shutdown).
    PowerDown = 0,
    /// Power up.
    PowerUp = 1,
    /// Power cycle.
    PowerCycle = 2,
    /// Hard reset.
    HardReset = 3,
}

/// An established session with its transport.
struct Active {
    transport: Transport,
    session: Session,
    address: SocketAddr,
    rng: OsRandom,
    poll_interval: Duration,
    retransmit_initial: Duration,
    polls: u32,
}

impl Active {
    /// Sends one request in the session and returns the response data, checking the
    /// completion code.
    async fn command(
        &mut self,
        deadline: Instant,
        netfn: u8,
        command: u8,
        data: &[u8],
        name: &'static str,
    ) -> Result<Vec<u8>, IpmiError> {
        let address = self.address;
        let rq_seq = self.session.next_rq_seq();
        // Encoding fails only for a payload over 64 KiB, which no command here comes near;
        // encoding the first transmission up front surfaces that before anything is sent.
        let first = self
            .session
            .encode_request(netfn, command, rq_seq, data, &mut self.rng)
            .map_err(|source| IpmiError::Malformed {
                address,
                command: name,
                source,
            })?;
        let mut first = Some(first);
        // Both closures use the session, one to encode each transmission (a new session
        // sequence number every time) and one to check answers; they never run at once, so the lock is never contended
        // (a Mutex rather than a RefCell only because the future must be Send).
        let shared = Mutex::new((&mut self.session, &mut self.rng));
        let response = self
            .transport
            .exchange(
                deadline,
                |_| {
                    first.take().unwrap_or_else(|| {
                        let (session, rng) = &mut *lock(&shared);
                        session
                            .encode_request(netfn, command, rq_seq, data, *rng)
                            .unwrap_or_default()
                    })
                },
                |bytes, _| match lock(&shared).0.decode_response(bytes) {
                    Ok(r) if r.rq_seq == rq_seq && r.cmd == command && r.netfn == netfn | 1 => {
                        Ok::<_, IpmiError>(Some(r))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::debug!(%address, error = %e, "IPMI datagram dropped");
                        Ok(None)
                    }
                },
            )
            .await
            .map_err(|e| exchange_error(e, address, name))?;
        if response.completion != 0 {
            return Err(IpmiError::Completion {
                address,
                command: name,
                code: response.completion,
            });
        }
        Ok(response.data)
    }

    async fn power_state(&mut self, deadline: Instant) -> Result<PowerState, IpmiError> {
        let data = self
            .command(
                deadline,
                cmd::NETFN_CHASSIS,
                cmd::GET_CHASSIS_STATUS,
                &[],
                "get chassis status",
            )
            .await?;
        self.polls += 1;
        let on = codec::decode_chassis_power_on(&data).map_err(|source| IpmiError::Malformed {
            address: self.address,
            command: "get chassis status",
            source,
        })?;
        Ok(if on { PowerState::On } else { PowerState::Off })
    }

    async fn control(
        &mut self,
        control: ChassisControl,
        deadline: Instant,
    ) -> Result<(), IpmiError> {
        let data = [control as u8];
        self.command(
            deadline,
            cmd::NETFN_CHASSIS,
            cmd::CHASSIS_CONTROL,
            &data,
            "chassis control",
        )
        .await
        .map(|_| ())
    }

    /// Chassis Control, then reads the power state until it is `want` or the deadline.
    async fn set_power_confirmed(
        &mut self,
        want: PowerState,
        start: Instant,
        deadline: Instant,
    ) -> Result<Confirmed, IpmiError> {
        let control = match want {
            PowerState::Off => ChassisControl::PowerDown,
            PowerState::On => ChassisControl::PowerUp,
        };
        self.control(control, deadline).await?;
        let polls_before = self.polls;
        // The state of the last answered read-back, once there is one.
        let mut last_seen = None;
        // Bounded by the deadline: each round either returns or waits at least poll_interval.
        loop {
            let seen = match (self.power_state(deadline).await, last_seen) {
                (Ok(seen), _) => seen,
                // The command was accepted and an earlier read answered: a read cut by the
                // deadline (a BMC slow or gone at the last moment) leaves that answer the last
                // word, which is unconfirmed, not a BMC that stopped answering.
                (Err(IpmiError::Timeout { .. }), Some(seen)) => {
                    return Err(IpmiError::Unconfirmed {
                        address: self.address,
                        wanted: want,
                        seen,
                        polls: self.polls - polls_before,
                    })
                }
                (Err(e), _) => return Err(e),
            };
            last_seen = Some(seen);
            if seen == want {
                return Ok(Confirmed {
                    state: want,
                    polls: self.polls - polls_before,
                    elapsed: start.elapsed(),
                });
            }
            // Stop while a read could still be answered: hitting the deadline in a read would
            // report a BMC that answers "on" as one that stopped answering.
            let next = Instant::now() + self.poll_interval;
            if next + self.retransmit_initial >= deadline {
                return Err(IpmiError::Unconfirmed {
                    address: self.address,
                    wanted: want,
                    seen,
                    polls: self.polls - polls_before,
                });
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Close Session, best effort: waits for the answer while the deadline allows, or sends it
    /// once when the deadline has passed, so the BMC's session slot is freed either way.
    async fn close(&mut self, deadline: Instant) {
        let id = self.session.bmc_session_id().to_le_bytes();
        let now = Instant::now();
        if now >= deadline {
            let rq_seq = self.session.next_rq_seq();
            if let Ok(p) = self.session.encode_request(
                cmd::NETFN_APP,
                cmd::CLOSE_SESSION,
                rq_seq,
                &id,
                &mut self.rng,
            ) {
                self.transport.send_only(&p).await;
            }
            return;
        }
        let budget = deadline.min(now + CLOSE_BUDGET);
        if let Err(e) = self
            .command(
                budget,
                cmd::NETFN_APP,
                cmd::CLOSE_SESSION,
                &id,
                "close session",
            )
            .await
        {
            tracing::debug!(address = %self.address, error = %e, "IPMI close session unanswered");
        }
    }
}

/// Turns a handshake step's verdict into the exchange's: `None` keeps waiting, and an answer
/// that says no is returned as a value so the exchange stops on it.
fn settle<T>(step: Result<Option<T>, HandshakeError>) -> Option<Result<T, HandshakeError>> {
    match step {
        Ok(Some(v)) => Some(Ok(v)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Locks a value shared by an exchange's two closures; a poisoned lock still holds valid
/// protocol state (nothing panics while holding it), so it is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn decode_capabilities(
    bytes: &[u8],
    address: SocketAddr,
) -> Option<Result<codec::ChannelAuthCapabilities, IpmiError>> {
    let codec::Packet::V15 { message } = codec::decode_packet(bytes, 0).ok()? else {
        return None;
    };
    let r = codec::decode_response(message).ok()?;
    if r.cmd != cmd::GET_CHANNEL_AUTH_CAPABILITIES || r.netfn != cmd::NETFN_APP | 1 {
        return None;
    }
    if r.completion != 0 {
        return Some(Err(IpmiError::Completion {
            address,
            command: "get channel authentication capabilities",
            code: r.completion,
        }));
    }
    Some(
        codec::decode_channel_auth_capabilities(&r.data).map_err(|source| IpmiError::Malformed {
            address,
            command: "get channel authentication capabilities",
            source,
        }),
    )
}

fn exchange_error(
    e: ExchangeError<IpmiError>,
    address: SocketAddr,
    stage: &'static str,
) -> IpmiError {
    match e {
        ExchangeError::Deadline { answered: false } => IpmiError::Unreachable { address, stage },
        ExchangeError::Deadline { answered: true } => IpmiError::Timeout { address, stage },
        ExchangeError::Fatal(e) => e,
        ExchangeError::Io(source) => IpmiError::Io { address, source },
    }
}

/// Suite 3 is what ipmitool and fence_ipmilan default to and what every BMC supports.
pub const DEFAULT_CIPHER_SUITE: u8 = 3;
/// BMCs answer within a few milliseconds on a LAN; 250 ms recovers a lost datagram quickly
/// without flooding a slow BMC (ipmitool waits 1 s, which dominates a lossy fence).
pub const DEFAULT_RETRANSMIT_INITIAL: Duration = Duration::from_millis(250);
/// Power state changes take tens to hundreds of milliseconds on real hardware; polling every
/// 100 ms confirms soon after the change while costing the BMC ten small requests a second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// IPMI v2.0 passwords are at most 20 bytes.
const MAX_PASSWORD_LEN: usize = 20;
/// Longest wait for the Close Session answer: the operation's result is already known, so a
/// silent BMC must not hold it back for long.
const CLOSE_BUDGET: Duration = Duration::from_millis(500);
