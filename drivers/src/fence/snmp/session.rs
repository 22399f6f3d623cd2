//! One SNMP agent over UDP: requests with a per-request timeout, resends and an overall deadline,
//! v3 engine discovery and clock tracking, and the mapping of every SNMP failure to a
//! [`FenceErrorKind`].
//!
//! # Design
//!
//! - **Own socket, snmp2's codec.** The socket is connected to the agent, so ICMP port
//!   unreachable surfaces as `ECONNREFUSED` and datagrams from elsewhere never arrive. A request
//!   keeps its request id across resends (as net-snmp does), so an answer to the first copy that
//!   arrives while the second is pending is still accepted; anything with another id is a stale or
//!   foreign datagram and is dropped and counted.
//! - **Silence is the common failure.** net-snmp answers a wrong community, and a v3 request it
//!   cannot decrypt (wrong privacy password), with nothing at all. Silence until the deadline is
//!   therefore reported with the likely causes spelled out, rather than as a bare timeout.
//! - **v3.** `connect` discovers the agent's engine id, boots and time (RFC 3414 §4), then keys
//!   are localized once. The engine time sent with each request is the last one learnt plus the
//!   local time since, so an idle session stays inside the 150 s window. A notInTimeWindow or
//!   unknownEngineID report resynchronizes once and the request is repeated with a fresh id; a
//!   wrong-digest, unknown-user, decryption or security-level report is
//!   [`FenceErrorKind::Auth`] with the counter's meaning in the message.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use snmp2::snmp;
use snmp2::v3;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::wire::{self, OutValue, RequestPdu, UsmHeader};
use super::{AuthProtocol, PrivProtocol, SnmpParams, SnmpSecurity};
use crate::fence::{FenceError, FenceErrorKind};
use crate::secret::Secret;

/// An OBJECT IDENTIFIER, owned: at least two arcs, the first pair valid for BER.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(Vec<u32>);

impl Oid {
    /// Parses dotted text, with or without a leading dot (`1.3.6.1.2.1.1.2.0`,
    /// `.1.3.6.1.2.1.1.2.0`); `None` unless every arc is a number and the OID is encodable.
    pub fn parse(text: &str) -> Option<Oid> {
        let text = text.trim();
        let text = text.strip_prefix('.').unwrap_or(text);
        let arcs = text
            .split('.')
            .map(|arc| {
                if arc.is_empty() || !arc.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    arc.parse::<u32>().ok()
                }
            })
            .collect::<Option<Vec<u32>>>()?;
        Self::from_arcs(&arcs)
    }

    /// An OID from its arcs; `None` when BER cannot encode it (fewer than two arcs, first arc
    /// above 2, second arc 40 or more under arc 0 or 1, more than 128 arcs).
    pub fn from_arcs(arcs: &[u32]) -> Option<Oid> {
        match arcs {
            [first, second, ..]
                if arcs.len() <= MAX_ARCS && (*first < 2 && *second < 40 || *first == 2) =>
            {
                Some(Oid(arcs.to_vec()))
            }
            _ => None,
        }
    }

    /// This OID with one more arc, e.g. the column OID with an outlet index.
    pub fn child(&self, n: u32) -> Oid {
        let mut arcs = self.0.clone();
        arcs.push(n);
        Oid(arcs)
    }

    /// Whether `prefix` is this OID or one of its ancestors.
    pub fn starts_with(&self, prefix: &Oid) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The last arc (a table row's index).
    pub fn last(&self) -> Option<u32> {
        self.0.last().copied()
    }

    /// The arcs.
    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// From snmp2's borrowed OID; `None` for arcs above `u32::MAX` or an unencodable OID.
    pub(super) fn from_snmp2(oid: &snmp2::Oid<'_>) -> Option<Oid> {
        let arcs = oid
            .iter()?
            .map(|arc| u32::try_from(arc).ok())
            .collect::<Option<Vec<u32>>>()?;
        Self::from_arcs(&arcs)
    }

    /// `0.0` (zeroDotZero), standing for a REPORT that named no counter.
    pub(super) fn empty_report() -> Oid {
        Oid(vec![0, 0])
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for arc in &self.0 {
            write!(f, ".{arc}")?;
        }
        Ok(())
    }
}

/// A varbind's value, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnmpValue {
    /// INTEGER, and the unsigned types that fit: Counter32, Gauge32/Unsigned32, TimeTicks.
    Int(i64),
    /// OCTET STRING.
    Str(Vec<u8>),
    /// OBJECT IDENTIFIER.
    Oid(Oid),
    /// Anything else (NULL, IpAddress, Counter64, Opaque), as text for messages.
    Other(String),
}

impl SnmpValue {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            SnmpValue::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The string, if this is an OCTET STRING, with invalid UTF-8 replaced.
    pub fn as_text(&self) -> Option<String> {
        match self {
            SnmpValue::Str(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

impl fmt::Display for SnmpValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnmpValue::Int(n) => write!(f, "{n}"),
            SnmpValue::Str(bytes) => write!(f, "{:?}", String::from_utf8_lossy(bytes)),
            SnmpValue::Oid(oid) => write!(f, "{oid}"),
            SnmpValue::Other(text) => f.write_str(text),
        }
    }
}

/// Counters of one session, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Requests (each GET, SET, bulk step, discovery), not counting resends.
    pub requests: u64,
    /// Resends after a request timeout.
    pub retransmits: u64,
    /// Datagrams dropped: stale or foreign request id, unparsable, failed authentication.
    pub dropped: u64,
    /// Errors returned.
    pub errors: u64,
}

/// A session with one SNMP agent; see the module docs.
pub struct SnmpSession {
    device: String,
    address: SocketAddr,
    socket: UdpSocket,
    request_timeout: Duration,
    retries: u32,
    security: Security,
    next_id: i32,
    buf: Vec<u8>,
    stats: SessionStats,
}

impl fmt::Debug for SnmpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match &self.security {
            Security::V2c(_) => "v2c",
            Security::V3(_) => "v3",
        };
        f.debug_struct("SnmpSession")
            .field("device", &self.device)
            .field("address", &self.address)
            .field("version", &version)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SnmpSession {
    /// Binds a UDP socket towards the agent in `params`; for v3 also discovers the agent's
    /// engine id and clock, so that the first request is already authenticated.
    ///
    /// Errors name `device`: [`FenceErrorKind::Unreachable`] when no socket can be bound or the
    /// agent's port is closed, [`FenceErrorKind::Timeout`] when the agent stays silent.
    pub async fn connect(
        device: &str,
        params: &SnmpParams,
        deadline: Instant,
    ) -> Result<SnmpSession, FenceError> {
        let local: SocketAddr = match params.address {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let unreachable = |e: io::Error| {
            FenceError::new(
                FenceErrorKind::Unreachable,
                device,
                format!("cannot open a UDP socket towards {}: {e}", params.address),
            )
        };
        let socket = UdpSocket::bind(local).await.map_err(unreachable)?;
        socket.connect(params.address).await.map_err(unreachable)?;
        let security = match &params.security {
            SnmpSecurity::V2c { community } => Security::V2c(community.clone()),
            SnmpSecurity::V3 {
                username,
                auth,
                auth_password,
                privacy,
            } => Security::V3(Box::new(Usm {
                username: username.clone(),
                template: usm_template(username, *auth, auth_password, privacy.as_ref()),
                active: None,
            })),
        };
        let mut session = SnmpSession {
            device: device.to_owned(),
            address: params.address,
            socket,
            request_timeout: params.request_timeout,
            retries: params.retries,
            security,
            next_id: first_request_id(),
            buf: vec![0; RECV_BUFFER_BYTES],
            stats: SessionStats::default(),
        };
        if matches!(session.security, Security::V3(_)) {
            session.discover(deadline).await?;
            if session.engine_boots() == Some(0) {
                // The agent did not tell its clock with the discovery report: one authenticated
                // request draws a notInTimeWindow report that does.
                session.sys_object_id(deadline).await?;
            }
        }
        Ok(session)
    }

    /// Reads `oids` in one GET. A varbind that reads noSuchObject or noSuchInstance is
    /// [`FenceErrorKind::TargetUnknown`] naming the OID.
    pub async fn get(
        &mut self,
        oids: &[Oid],
        deadline: Instant,
    ) -> Result<Vec<(Oid, SnmpValue)>, FenceError> {
        let varbinds: Vec<(Oid, OutValue)> =
            oids.iter().map(|o| (o.clone(), OutValue::Null)).collect();
        let response = self
            .request(snmp::MSG_GET, &varbinds, 0, 0, deadline)
            .await?;
        if response.error_status != snmp::ERRSTATUS_NOERROR {
            return Err(self.status_error(&response, &varbinds, Access::Read));
        }
        if response.varbinds.len() != oids.len()
            || response.varbinds.iter().zip(oids).any(|((a, _), b)| a != b)
        {
            return Err(self.fail(
                FenceErrorKind::Refused,
                format!(
                    "{} answered a GET of {} OIDs with {} other varbinds",
                    self.address,
                    oids.len(),
                    response.varbinds.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(oids.len());
        for (oid, cell) in response.varbinds {
            match cell {
                Cell::Value(value) => out.push((oid, value)),
                Cell::Missing(what) => {
                    return Err(self.fail(
                        FenceErrorKind::TargetUnknown,
                        format!("{oid} does not exist on {} ({what})", self.address),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Writes INTEGER `value` to `oid`. A refusal by the agent is [`FenceErrorKind::Refused`]
    /// (no write access, bad value) or [`FenceErrorKind::TargetUnknown`] (no such object).
    pub async fn set_int(
        &mut self,
        oid: &Oid,
        value: i64,
        deadline: Instant,
    ) -> Result<(), FenceError> {
        let varbinds = [(oid.clone(), OutValue::Int(value))];
        let response = self
            .request(snmp::MSG_SET, &varbinds, 0, 0, deadline)
            .await?;
        if response.error_status != snmp::ERRSTATUS_NOERROR {
            return Err(self.status_error(&response, &varbinds, Access::Write));
        }
        Ok(())
    }

    /// Every row strictly under `prefix`, in order, by GETBULK. More than `max_rows` rows is
    /// [`FenceErrorKind::Refused`] (a bound, not a truncation, so that a lookup never silently
    /// misses a row); an agent whose OIDs do not increase is refused too.
    pub async fn walk(
        &mut self,
        prefix: &Oid,
        deadline: Instant,
        max_rows: usize,
    ) -> Result<Vec<(Oid, SnmpValue)>, FenceError> {
        let mut rows: Vec<(Oid, SnmpValue)> = Vec::new();
        let mut cursor = prefix.clone();
        // Each round either ends the walk or adds at least one row, so max_rows + 1 rounds
        // always suffice.
        for _ in 0..=max_rows {
            let wanted = (max_rows + 1 - rows.len()).min(WALK_BULK_REPETITIONS);
            let varbinds = [(cursor.clone(), OutValue::Null)];
            let response = self
                .request(
                    snmp::MSG_GET_BULK,
                    &varbinds,
                    0,
                    i64::try_from(wanted).unwrap_or(1),
                    deadline,
                )
                .await?;
            if response.error_status != snmp::ERRSTATUS_NOERROR {
                return Err(self.status_error(&response, &varbinds, Access::Read));
            }
            if response.varbinds.is_empty() {
                return Ok(rows);
            }
            for (oid, cell) in response.varbinds {
                let Cell::Value(value) = cell else {
                    return Ok(rows);
                };
                if !oid.starts_with(prefix) || oid.arcs().len() == prefix.arcs().len() {
                    return Ok(rows);
                }
                if oid <= cursor {
                    return Err(self.fail(
                        FenceErrorKind::Refused,
                        format!(
                            "{} walked from {cursor} back to {oid}: its OIDs do not increase",
                            self.address
                        ),
                    ));
                }
                if rows.len() == max_rows {
                    return Err(self.fail(
                        FenceErrorKind::Refused,
                        format!("{prefix} on {} has more than {max_rows} rows", self.address),
                    ));
                }
                cursor = oid.clone();
                rows.push((oid, value));
            }
        }
        Ok(rows)
    }

    /// The agent's sysObjectID.0, which names the vendor and model.
    pub async fn sys_object_id(&mut self, deadline: Instant) -> Result<Oid, FenceError> {
        let oid = Oid(SYS_OBJECT_ID.to_vec());
        let mut values = self.get(std::slice::from_ref(&oid), deadline).await?;
        match values.pop() {
            Some((_, SnmpValue::Oid(id))) => Ok(id),
            other => Err(self.fail(
                FenceErrorKind::Refused,
                format!(
                    "{} answered sysObjectID.0 with {}",
                    self.address,
                    other.map_or("nothing".to_owned(), |(_, v)| v.to_string())
                ),
            )),
        }
    }

    /// The agent's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// This session's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// One request, repeated once with a fresh id after a v3 clock or engine resync.
    async fn request(
        &mut self,
        tag: u8,
        varbinds: &[(Oid, OutValue)],
        field2: i64,
        field3: i64,
        deadline: Instant,
    ) -> Result<Response, FenceError> {
        let mut resynced = false;
        loop {
            let request_id = self.take_id();
            let pdu = RequestPdu {
                tag,
                request_id,
                field2,
                field3,
                varbinds,
            };
            let bytes = self.encode(&pdu)?;
            match self.exchange(&bytes, request_id, deadline).await? {
                Incoming::Response(response) => return Ok(response),
                Incoming::Report(report) => {
                    let kind = ReportKind::of(&report.oid);
                    match kind {
                        ReportKind::NotInTimeWindow if !resynced => {
                            tracing::debug!(device = %self.device, boots = report.boots,
                                time = report.time, "snmp v3 clock resync");
                            if let Security::V3(usm) = &mut self.security {
                                if let Some((_, clock)) = &mut usm.active {
                                    *clock = EngineClock::new(report.boots, report.time);
                                }
                            }
                        }
                        ReportKind::UnknownEngineId if !resynced => {
                            self.discover(deadline).await?;
                        }
                        _ => return Err(self.report_error(kind, &report.oid)),
                    }
                    resynced = true;
                }
            }
        }
    }

    /// Engine-id discovery: an empty, unauthenticated request draws a report that carries the
    /// agent's engine id, boots and time; the keys are localized to that engine id.
    async fn discover(&mut self, deadline: Instant) -> Result<(), FenceError> {
        let request_id = self.take_id();
        let bytes = wire::v3_plain_message(
            &UsmHeader {
                engine_id: &[],
                boots: 0,
                time: 0,
                username: &[],
            },
            &RequestPdu {
                tag: snmp::MSG_GET,
                request_id,
                field2: 0,
                field3: 0,
                varbinds: &[],
            },
        );
        let report = match self.exchange(&bytes, request_id, deadline).await? {
            Incoming::Report(report) if !report.engine_id.is_empty() => report,
            _ => {
                return Err(self.fail(
                    FenceErrorKind::Refused,
                    format!(
                        "{} answered v3 engine discovery without an engine id",
                        self.address
                    ),
                ))
            }
        };
        let Security::V3(usm) = &mut self.security else {
            return Ok(());
        };
        let keyed = usm
            .template
            .clone()
            .with_engine_id(&report.engine_id)
            .map(|s| s.with_engine_boots_and_time(report.boots, report.time));
        match keyed {
            Ok(security) => {
                usm.active = Some((security, EngineClock::new(report.boots, report.time)));
                Ok(())
            }
            Err(e) => Err(self.fail(
                FenceErrorKind::Refused,
                format!("cannot derive the v3 keys: {e}"),
            )),
        }
    }

    /// Sends `bytes` and waits for the answer carrying `request_id`, resending after each
    /// request timeout up to `retries` times, never past `deadline`.
    async fn exchange(
        &mut self,
        bytes: &[u8],
        request_id: i32,
        deadline: Instant,
    ) -> Result<Incoming, FenceError> {
        let started = Instant::now();
        let attempts = u64::from(self.retries) + 1;
        let mut sent = 0u64;
        let mut refused = false;
        self.stats.requests += 1;
        while sent < attempts {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if sent > 0 {
                self.stats.retransmits += 1;
            }
            sent += 1;
            match self.socket.send(bytes).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                Err(e) => {
                    return Err(self.fail(
                        FenceErrorKind::Unreachable,
                        format!("cannot send to {}: {e}", self.address),
                    ))
                }
            }
            let until = (now + self.request_timeout).min(deadline);
            loop {
                let received =
                    tokio::time::timeout_at(until, self.socket.recv(&mut self.buf)).await;
                match received {
                    Err(_elapsed) => break,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                    Ok(Err(e)) => {
                        return Err(self.fail(
                            FenceErrorKind::Unreachable,
                            format!("cannot receive from {}: {e}", self.address),
                        ))
                    }
                    Ok(Ok(n)) => {
                        let datagram = self.buf.get(..n).unwrap_or_default();
                        match decode(&mut self.security, datagram, request_id) {
                            Ok(incoming) => return Ok(incoming),
                            Err(why) => {
                                self.stats.dropped += 1;
                                tracing::debug!(device = %self.device, request_id, why,
                                    "snmp datagram dropped");
                            }
                        }
                    }
                }
            }
        }
        let elapsed_ms = started.elapsed().as_millis();
        if refused {
            Err(self.fail(
                FenceErrorKind::Unreachable,
                format!(
                    "no answer from {}: port unreachable (ICMP), no SNMP agent listens there \
                     ({sent} requests in {elapsed_ms} ms)",
                    self.address
                ),
            ))
        } else {
            Err(self.fail(
                FenceErrorKind::Timeout,
                format!(
                    "no answer from {}: wrong community or v3 credentials, or the agent is \
                     unreachable ({sent} requests in {elapsed_ms} ms)",
                    self.address
                ),
            ))
        }
    }

    fn encode(&mut self, pdu: &RequestPdu<'_>) -> Result<Vec<u8>, FenceError> {
        let usm = match &mut self.security {
            Security::V2c(community) => {
                return Ok(wire::v2c_message(community.expose().as_bytes(), pdu))
            }
            Security::V3(usm) => usm,
        };
        let username = usm.username.clone();
        let Some((security, clock)) = &mut usm.active else {
            return Err(self.fail(
                FenceErrorKind::Refused,
                "v3 request before engine discovery".to_owned(),
            ));
        };
        let time = clock.now();
        *security = security
            .clone()
            .with_engine_boots_and_time(clock.boots, time);
        let encoded = encode_v3(security, username.as_bytes(), clock.boots, time, pdu);
        encoded.map_err(|e| {
            self.fail(
                FenceErrorKind::Refused,
                format!("cannot encode the v3 request: {e}"),
            )
        })
    }

    fn engine_boots(&self) -> Option<i64> {
        match &self.security {
            Security::V3(usm) => usm.active.as_ref().map(|(_, clock)| clock.boots),
            Security::V2c(_) => None,
        }
    }

    fn take_id(&mut self) -> i32 {
        let id = self.next_id;
        self.next_id = id.checked_add(1).unwrap_or(1);
        id
    }

    fn status_error(
        &mut self,
        response: &Response,
        requested: &[(Oid, OutValue)],
        access: Access,
    ) -> FenceError {
        let index = usize::try_from(response.error_index).unwrap_or(0);
        let (oid, value) = index
            .checked_sub(1)
            .and_then(|i| requested.get(i))
            .or(requested.first())
            .map_or(("?".to_owned(), OutValue::Null), |(o, v)| {
                (o.to_string(), *v)
            });
        let status = response.error_status;
        let name = status_name(status);
        let (kind, message) = match status {
            snmp::ERRSTATUS_READONLY
            | snmp::ERRSTATUS_NOACCESS
            | snmp::ERRSTATUS_AUTHORIZATIONERROR
            | snmp::ERRSTATUS_NOTWRITABLE => match access {
                Access::Write => (
                    FenceErrorKind::Refused,
                    format!(
                        "the community or user may not write {oid}: use a read-write \
                         community / rwuser ({name})"
                    ),
                ),
                Access::Read => (
                    FenceErrorKind::Refused,
                    format!("the community or user may not read {oid} ({name})"),
                ),
            },
            snmp::ERRSTATUS_BADVALUE
            | snmp::ERRSTATUS_WRONGTYPE
            | snmp::ERRSTATUS_WRONGLENGTH
            | snmp::ERRSTATUS_WRONGVALUE
            | snmp::ERRSTATUS_INCONSISTENTVALUE => {
                let value = match value {
                    OutValue::Int(n) => n.to_string(),
                    OutValue::Null => "NULL".to_owned(),
                };
                (
                    FenceErrorKind::Refused,
                    format!("{oid} does not accept the value {value} ({name})"),
                )
            }
            snmp::ERRSTATUS_NOSUCHNAME
            | snmp::ERRSTATUS_NOCREATION
            | snmp::ERRSTATUS_INCONSISTENTNAME => (
                FenceErrorKind::TargetUnknown,
                format!("{oid} does not exist on {} ({name})", self.address),
            ),
            _ => (
                FenceErrorKind::Refused,
                format!("{} answered {name} for {oid}", self.address),
            ),
        };
        self.fail(kind, message)
    }

    fn report_error(&mut self, kind: ReportKind, oid: &Oid) -> FenceError {
        let user = match &self.security {
            Security::V3(usm) => usm.username.clone(),
            Security::V2c(_) => String::new(),
        };
        let (kind, message) = match kind {
            ReportKind::UnknownUser => (
                FenceErrorKind::Auth,
                format!("the agent does not know v3 user {user:?} (usmStatsUnknownUserNames)"),
            ),
            ReportKind::WrongDigest => (
                FenceErrorKind::Auth,
                format!(
                    "the agent rejected the authentication of v3 user {user:?}: wrong auth \
                     password or protocol (usmStatsWrongDigests)"
                ),
            ),
            ReportKind::DecryptionError => (
                FenceErrorKind::Auth,
                format!(
                    "the agent could not decrypt the request of v3 user {user:?}: wrong privacy \
                     password or protocol (usmStatsDecryptionErrors)"
                ),
            ),
            ReportKind::UnsupportedSecLevel => (
                FenceErrorKind::Auth,
                format!(
                    "v3 user {user:?} is not configured for this security level (authPriv or \
                     authNoPriv) on the agent (usmStatsUnsupportedSecLevels)"
                ),
            ),
            ReportKind::NotInTimeWindow | ReportKind::UnknownEngineId => (
                FenceErrorKind::Refused,
                format!("the agent still rejects the v3 clock or engine id after a resync ({oid})"),
            ),
            ReportKind::Other => (
                FenceErrorKind::Refused,
                format!("the agent answered with a report {oid}"),
            ),
        };
        self.fail(kind, message)
    }

    /// Builds an error, logging and counting it.
    fn fail(&mut self, kind: FenceErrorKind, message: String) -> FenceError {
        self.stats.errors += 1;
        tracing::debug!(device = %self.device, address = %self.address, ?kind, %message,
            "snmp request failed");
        FenceError::new(kind, &self.device, message)
    }
}

/// Whether a request reads or writes, for the wording of access errors.
#[derive(Debug, Clone, Copy)]
enum Access {
    Read,
    Write,
}

enum Security {
    V2c(Secret),
    V3(Box<Usm>),
}

struct Usm {
    username: String,
    /// The configured credentials, not yet localized to an engine.
    template: v3::Security,
    /// Localized keys and the agent's clock, once discovered.
    active: Option<(v3::Security, EngineClock)>,
}

/// The agent's snmpEngineBoots and snmpEngineTime as last learnt, and when.
#[derive(Debug, Clone, Copy)]
struct EngineClock {
    boots: i64,
    time: i64,
    learnt: Instant,
}

impl EngineClock {
    fn new(boots: i64, time: i64) -> Self {
        Self {
            boots,
            time,
            learnt: Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        let elapsed = i64::try_from(self.learnt.elapsed().as_secs()).unwrap_or(i64::MAX);
        self.time.saturating_add(elapsed).min(i64::from(i32::MAX))
    }
}

/// An answer that carries our request id.
enum Incoming {
    Response(Response),
    Report(Report),
}

struct Response {
    error_status: u32,
    error_index: u32,
    varbinds: Vec<(Oid, Cell)>,
}

struct Report {
    oid: Oid,
    engine_id: Vec<u8>,
    boots: i64,
    time: i64,
}

/// A varbind's value or the reason it has none.
enum Cell {
    Value(SnmpValue),
    /// noSuchObject, noSuchInstance or endOfMibView.
    Missing(&'static str),
}

/// What a v3 REPORT's counter OID means (RFC 3414 usmStats, RFC 3412 snmpUnknown*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportKind {
    UnsupportedSecLevel,
    NotInTimeWindow,
    UnknownUser,
    UnknownEngineId,
    WrongDigest,
    DecryptionError,
    Other,
}

impl ReportKind {
    fn of(oid: &Oid) -> Self {
        match oid.arcs() {
            [1, 3, 6, 1, 6, 3, 15, 1, 1, n, ..] => match n {
                1 => ReportKind::UnsupportedSecLevel,
                2 => ReportKind::NotInTimeWindow,
                3 => ReportKind::UnknownUser,
                4 => ReportKind::UnknownEngineId,
                5 => ReportKind::WrongDigest,
                6 => ReportKind::DecryptionError,
                _ => ReportKind::Other,
            },
            _ => ReportKind::Other,
        }
    }
}

/// Reads a datagram; `Err` says why it is dropped (not ours, unparsable, not authentic).
fn decode(
    security: &mut Security,
    bytes: &[u8],
    request_id: i32,
) -> Result<Incoming, &'static str> {
    match security {
        Security::V2c(community) => {
            let pdu = snmp2::Pdu::from_bytes(bytes).map_err(|_| "unparsable")?;
            if pdu.community != community.expose().as_bytes() {
                return Err("other community");
            }
            if pdu.message_type != snmp2::MessageType::Response {
                return Err("not a response");
            }
            if pdu.req_id != request_id {
                return Err("stale or foreign request id");
            }
            Ok(Incoming::Response(response_of(&pdu)))
        }
        Security::V3(usm) => {
            if !wire::is_v3(bytes) {
                return Err("not a v3 message");
            }
            let envelope = wire::v3_envelope(bytes).ok_or("unparsable v3 header")?;
            if envelope.msg_id != i64::from(request_id) {
                return Err("stale or foreign message id");
            }
            if let Some(oid) = envelope.report {
                return Ok(Incoming::Report(Report {
                    oid,
                    engine_id: envelope.engine_id,
                    boots: envelope.boots,
                    time: envelope.time,
                }));
            }
            let Some((keyed, clock)) = &mut usm.active else {
                return Err("v3 response before discovery");
            };
            let incoming = {
                let pdu = snmp2::Pdu::from_bytes_with_security(bytes, Some(keyed))
                    .map_err(|_| "v3 message fails authentication or decryption")?;
                match pdu.message_type {
                    snmp2::MessageType::Response if pdu.req_id == request_id => {
                        Incoming::Response(response_of(&pdu))
                    }
                    snmp2::MessageType::Report => {
                        let oid = pdu
                            .varbinds
                            .clone()
                            .next()
                            .and_then(|(oid, _)| Oid::from_snmp2(&oid))
                            .unwrap_or_else(Oid::empty_report);
                        Incoming::Report(Report {
                            oid,
                            engine_id: envelope.engine_id,
                            boots: envelope.boots,
                            time: envelope.time,
                        })
                    }
                    _ => return Err("not the response to this request"),
                }
            };
            // Authentic, so its clock can be trusted.
            *clock = EngineClock::new(envelope.boots, envelope.time);
            Ok(incoming)
        }
    }
}

fn response_of(pdu: &snmp2::Pdu<'_>) -> Response {
    let varbinds = pdu
        .varbinds
        .clone()
        .take(MAX_VARBINDS)
        .filter_map(|(oid, value)| Some((Oid::from_snmp2(&oid)?, cell_of(value))))
        .collect();
    Response {
        error_status: pdu.error_status,
        error_index: pdu.error_index,
        varbinds,
    }
}

fn cell_of(value: snmp2::Value<'_>) -> Cell {
    use snmp2::Value as V;
    let value = match value {
        V::Integer(n) => SnmpValue::Int(n),
        V::OctetString(s) => SnmpValue::Str(s.to_vec()),
        V::ObjectIdentifier(oid) => match Oid::from_snmp2(&oid) {
            Some(oid) => SnmpValue::Oid(oid),
            None => SnmpValue::Other(format!("{oid}")),
        },
        V::Counter32(n) | V::Unsigned32(n) | V::Timeticks(n) => SnmpValue::Int(i64::from(n)),
        V::NoSuchObject => return Cell::Missing("noSuchObject"),
        V::NoSuchInstance => return Cell::Missing("noSuchInstance"),
        V::EndOfMibView => return Cell::Missing("endOfMibView"),
        other => SnmpValue::Other(format!("{other:?}")),
    };
    Cell::Value(value)
}

/// snmp2 builds authenticated and encrypted v3 messages only from a parsed v3 [`snmp2::Pdu`], so
/// the request is first written as an unauthenticated message, read back with a key-less copy of
/// the security state, then re-encoded with the real keys.
fn encode_v3(
    security: &v3::Security,
    username: &[u8],
    boots: i64,
    time: i64,
    pdu: &RequestPdu<'_>,
) -> Result<Vec<u8>, snmp2::Error> {
    let plain = wire::v3_plain_message(
        &UsmHeader {
            engine_id: security.engine_id(),
            boots,
            time,
            username,
        },
        pdu,
    );
    let mut keyless = v3::Security::new(username, b"")
        .with_auth(v3::Auth::NoAuthNoPriv)
        .with_engine_id(security.engine_id())?
        .with_engine_boots_and_time(boots, time);
    let parsed = snmp2::Pdu::from_bytes_with_security(&plain, Some(&mut keyless))?;
    parsed.to_bytes_with_security(Some(security))
}

fn usm_template(
    username: &str,
    auth: AuthProtocol,
    auth_password: &Secret,
    privacy: Option<&(PrivProtocol, Secret)>,
) -> v3::Security {
    let level = match privacy {
        Some((PrivProtocol::Aes128, password)) => v3::Auth::AuthPriv {
            cipher: v3::Cipher::Aes128,
            privacy_password: password.expose().as_bytes().to_vec(),
        },
        None => v3::Auth::AuthNoPriv,
    };
    let protocol = match auth {
        AuthProtocol::Sha1 => v3::AuthProtocol::Sha1,
        AuthProtocol::Sha256 => v3::AuthProtocol::Sha256,
    };
    v3::Security::new(username.as_bytes(), auth_password.expose().as_bytes())
        .with_auth_protocol(protocol)
        .with_auth(level)
}

/// A random start, so that a restarted agent process is unlikely to take an old answer for a new
/// request; ids stay positive.
fn first_request_id() -> i32 {
    let random = getrandom::u32().unwrap_or(1) & 0x3fff_ffff;
    i32::try_from(random).unwrap_or(1).max(1)
}

fn status_name(status: u32) -> &'static str {
    match status {
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "an unknown error-status",
    }
}

/// sysObjectID.0.
const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];
/// RFC 3417 allows at most 128 sub-identifiers.
const MAX_ARCS: usize = 128;
/// Rows asked for per GETBULK: a PDU outlet table or a switch's ports in a few round trips, while
/// staying far below any agent's message size.
const WALK_BULK_REPETITIONS: usize = 24;
/// Varbinds read from one response; more than any request of ours asks for.
const MAX_VARBINDS: usize = 256;
/// The largest UDP payload.
const RECV_BUFFER_BYTES: usize = 65_535;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_parse_with_or_without_a_leading_dot() {
        let a = Oid::parse(".1.3.6.1.4.1.318").expect("valid");
        let b = Oid::parse("1.3.6.1.4.1.318").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), ".1.3.6.1.4.1.318");
        assert_eq!(a.last(), Some(318));
        assert_eq!(a.child(4).to_string(), ".1.3.6.1.4.1.318.4");
        assert!(a.child(4).starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!a.starts_with(&a.child(4)));
    }

    #[test]
    fn bad_oids_are_rejected() {
        for text in [
            "",
            ".",
            "1",
            "1..3",
            "1.3.x",
            "1.3.-1",
            "3.1",
            "1.40",
            "1.3.4294967296",
        ] {
            assert_eq!(Oid::parse(text), None, "{text}");
        }
        assert!(Oid::parse("2.999.1").is_some());
        let long = vec!["1"; 129].join(".");
        assert_eq!(Oid::parse(&long), None);
    }

    #[test]
    fn oids_order_like_snmp() {
        let a = Oid::parse("1.3.6.1.2").expect("valid");
        let b = Oid::parse("1.3.6.1.2.1").expect("valid");
        let c = Oid::parse("1.3.6.1.10").expect("valid");
        assert!(a < b && b < c);
    }

    #[test]
    fn oids_round_trip_through_snmp2() {
        let oid = Oid::parse("1.3.6.1.4.1.13742.6.4.1.2.1.2.1.7").expect("valid");
        let ours = snmp2::Oid::from(&oid.arcs().iter().map(|a| u64::from(*a)).collect::<Vec<_>>())
            .expect("snmp2 OID");
        assert_eq!(ours.as_bytes(), wire::oid_content(&oid).as_slice());
        assert_eq!(Oid::from_snmp2(&ours), Some(oid));
    }

    #[test]
    fn report_counters_are_classified() {
        let kind = |s: &str| ReportKind::of(&Oid::parse(s).expect("valid"));
        assert_eq!(kind("1.3.6.1.6.3.15.1.1.5.0"), ReportKind::WrongDigest);
        assert_eq!(kind("1.3.6.1.6.3.15.1.1.3.0"), ReportKind::UnknownUser);
        assert_eq!(kind("1.3.6.1.6.3.15.1.1.2.0"), ReportKind::NotInTimeWindow);
        assert_eq!(kind("1.3.6.1.6.3.15.1.1.4.0"), ReportKind::UnknownEngineId);
        assert_eq!(kind("1.3.6.1.6.3.15.1.1.6.0"), ReportKind::DecryptionError);
        assert_eq!(
            kind("1.3.6.1.6.3.15.1.1.1.0"),
            ReportKind::UnsupportedSecLevel
        );
        assert_eq!(kind("1.3.6.1.6.3.11.2.1.3.0"), ReportKind::Other);
    }

    #[test]
    fn values_convert() {
        assert!(matches!(
            cell_of(snmp2::Value::Integer(2)),
            Cell::Value(SnmpValue::Int(2))
        ));
        assert!(matches!(
            cell_of(snmp2::Value::Timeticks(7)),
            Cell::Value(SnmpValue::Int(7))
        ));
        assert!(matches!(
            cell_of(snmp2::Value::NoSuchInstance),
            Cell::Missing("noSuchInstance")
        ));
        assert_eq!(
            SnmpValue::Str(b"Outlet 1".to_vec()).as_text().as_deref(),
            Some("Outlet 1")
        );
    }

    #[test]
    fn engine_clock_advances_with_local_time() {
        let clock = EngineClock::new(3, 1000);
        assert!(clock.now() >= 1000);
        assert_eq!(clock.boots, 3);
    }
}
