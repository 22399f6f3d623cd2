//! A baseboard management controller that exists only inside the demo, spoken to over real
//! IPMI v2.0 LAN (RMCP+) on 127.0.0.1.
//!
//! A real two-node cluster fences first through each host's BMC and falls back to a PDU. The
//! demo shows that order with devices the agents reach over their real protocols, so the
//! survivor's IPMI driver (and `ipmitool -I lanplus`) must log in to something that checks
//! what a BMC checks: the RAKP key exchange against the user's password, the session's
//! integrity codes, encrypted payloads, sequence numbers, privilege. The wire formats and the
//! cryptography are the agent's own (`drivers::fence::ipmi::codec` and `crypto`), used here
//! from the other side; the session bookkeeping of a BMC is this module's.
//!
//! # Contract
//!
//! - One UDP socket per BMC on a free port of 127.0.0.1; one user (name and password given),
//!   privilege up to administrator. Cipher suites 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128)
//!   and 17 (the SHA-256 forms); any other proposal is refused with status 0x11 (no cipher
//!   suite match). `ipmitool -C 3` and `-C 17` both log in.
//! - Served: Get Channel Authentication Capabilities (before and inside a session), Open
//!   Session, RAKP 1–4, Set Session Privilege Level, Get Device ID, Get Chassis Status, Chassis
//!   Control (power down, up, cycle, hard reset) and Close Session. Any other command is
//!   completion code 0xc1 (invalid command).
//! - An unknown user fails RAKP 2 with status 0x0d (unauthorized name). A wrong password is
//!   found as on a real BMC: the client sees that RAKP 2's code does not verify with its
//!   password; a client that sends RAKP 3 anyway gets RAKP 4 with status 0x0f (invalid integrity
//!   check value). Either way the session is dropped.
//! - Inside a session every packet must carry a valid integrity code and an encrypted payload
//!   and a fresh sequence number (the agent's replay window); anything else is dropped without
//!   an answer, as a BMC does. Chassis Control needs operator privilege or more (0xd4).
//! - Every Chassis Control is reported, with the instant it was served, on a bounded channel;
//!   the demo kills (off) or starts (on) the agent behind the BMC. Cycle and reset are served
//!   only while the chassis is on (0xd5 otherwise).
//! - [`Bmc::set_answering`] makes it drop every datagram, as a BMC whose network is down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drivers::fence::ipmi::codec::{self, cmd, payload, Algorithms, Packet, Reader, V20Header};
use drivers::fence::ipmi::crypto::{self, CipherSuite, RakpInputs};
use drivers::fence::ipmi::session::ReplayWindow;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What can go wrong setting up a BMC.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BmcError {
    /// The UDP socket could not be set up.
    #[error("simulated BMC: cannot listen on {address}: {source}")]
    Listen {
        /// Address asked for.
        address: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A Chassis Control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChassisAction {
    /// Power down.
    Off,
    /// Power up.
    On,
    /// Power cycle: off, then on.
    Cycle,
    /// Hard reset.
    Reset,
}

impl ChassisAction {
    /// The words `ipmitool chassis power` uses for it.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Self::Off => "power off",
            Self::On => "power on",
            Self::Cycle => "power cycle",
            Self::Reset => "hard reset",
        }
    }
}

/// One Chassis Control, as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChassisEvent {
    /// Which BMC (the demo's index of it).
    pub(crate) bmc: usize,
    /// The command.
    pub(crate) action: ChassisAction,
    /// Whether the chassis power state changed (a cycle or reset always counts).
    pub(crate) changed: bool,
    /// When it was served.
    pub(crate) at: Instant,
}

/// The running simulator; dropping it stops serving.
#[derive(Debug)]
pub(crate) struct Bmc {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Bmc {
    /// Serves one BMC with a powered chassis on a free port of 127.0.0.1 for user
    /// `username`/`password`, reporting Chassis Control on `events` as BMC number `index`.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn start(
        index: usize,
        username: &str,
        password: &str,
        events: mpsc::Sender<ChassisEvent>,
    ) -> Result<Self, BmcError> {
        let listen = |source| BmcError::Listen {
            address: LISTEN.to_owned(),
            source,
        };
        let socket = std::net::UdpSocket::bind(LISTEN).map_err(listen)?;
        Self::start_on(socket, index, username, password, events)
    }

    /// As [`Bmc::start`], on a socket already bound (in the demo's switch namespace).
    pub(crate) fn start_on(
        socket: std::net::UdpSocket,
        index: usize,
        username: &str,
        password: &str,
        events: mpsc::Sender<ChassisEvent>,
    ) -> Result<Self, BmcError> {
        let address = socket
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let listen = |source| BmcError::Listen {
            address: address.clone(),
            source,
        };
        socket.set_nonblocking(true).map_err(&listen)?;
        let socket = UdpSocket::from_std(socket).map_err(&listen)?;
        let address = socket.local_addr().map_err(&listen)?;
        let shared = Arc::new(Shared {
            answering: AtomicBool::new(true),
            state: Mutex::new(State::new(index, username, password, events)),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let (n, peer) = match socket.recv_from(&mut buf).await {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::debug!(error = %e, "simulated BMC: receive failed");
                        // Not a busy loop on a socket that keeps failing.
                        tokio::time::sleep(RECV_BACKOFF).await;
                        continue;
                    }
                };
                if !serving.answering.load(Ordering::Relaxed) {
                    continue;
                }
                let reply = match serving.state.lock() {
                    Ok(mut state) => state.handle(&buf[..n], Instant::now()),
                    Err(_) => return,
                };
                if let Some(reply) = reply {
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        tracing::debug!(error = %e, "simulated BMC: send failed");
                    }
                }
            }
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// Where it listens.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether the chassis is powered.
    pub(crate) fn powered(&self) -> bool {
        self.shared.state.lock().is_ok_and(|s| s.power_on)
    }

    /// Whether it answers at all (false: its network is down, every datagram is dropped).
    pub(crate) fn set_answering(&self, answering: bool) {
        self.shared.answering.store(answering, Ordering::Relaxed);
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the serving task and the demo share.
#[derive(Debug)]
struct Shared {
    answering: AtomicBool,
    state: Mutex<State>,
}

/// A session from Open Session on.
#[derive(Debug)]
struct Session {
    console_id: u32,
    suite: CipherSuite,
    max_privilege: u8,
    created: Instant,
    stage: Stage,
}

/// How far a session got.
#[derive(Debug)]
enum Stage {
    /// Open Session answered; RAKP 1 expected.
    Opened,
    /// RAKP 2 sent; RAKP 3 expected.
    Challenged {
        console_random: [u8; 16],
        bmc_random: [u8; 16],
        role: u8,
    },
    /// RAKP 4 sent: the session carries IPMI messages.
    Active(Box<Keys>),
}

/// The keys and counters of an active session.
#[derive(Debug)]
struct Keys {
    k1: Vec<u8>,
    aes: [u8; 16],
    out_seq: u32,
    window: ReplayWindow,
    privilege: u8,
}

/// The BMC's state: its chassis and its sessions.
#[derive(Debug)]
struct State {
    index: usize,
    username: Vec<u8>,
    password: Vec<u8>,
    guid: [u8; 16],
    power_on: bool,
    sessions: HashMap<u32, Session>,
    events: mpsc::Sender<ChassisEvent>,
}

/// An IPMI request message as the BMC receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    netfn: u8,
    rs_lun: u8,
    rq_addr: u8,
    rq_seq: u8,
    rq_lun: u8,
    cmd: u8,
    data: Vec<u8>,
}

impl State {
    fn new(
        index: usize,
        username: &str,
        password: &str,
        events: mpsc::Sender<ChassisEvent>,
    ) -> Self {
        let mut guid = [0u8; 16];
        random(&mut guid);
        Self {
            index,
            username: username.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
            guid,
            power_on: true,
            sessions: HashMap::new(),
            events,
        }
    }

    /// Serves one datagram; the answer, if one is due.
    fn handle(&mut self, bytes: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        // The auth code length depends on the session; the unauthenticated forms come first.
        match codec::decode_packet(bytes, 0) {
            Ok(Packet::V15 { message }) => {
                let request = decode_request(message).ok()?;
                let (completion, data) = self.pre_session_command(&request);
                let reply = encode_response(&request, completion, &data);
                return codec::encode_v15_unauthenticated(&reply).ok();
            }
            Ok(Packet::V20 {
                header, payload, ..
            }) if !header.authenticated && header.session_id == 0 => {
                return match header.payload_type {
                    payload::OPEN_SESSION_REQUEST => self.open_session(payload, now),
                    payload::RAKP1 => self.rakp1(payload),
                    payload::RAKP3 => self.rakp3(payload),
                    _ => None,
                };
            }
            _ => {}
        }
        self.in_session(bytes)
    }

    /// Drops sessions that never finished the handshake, and the oldest when too many.
    fn expire(&mut self, now: Instant) {
        self.sessions.retain(|_, s| {
            matches!(s.stage, Stage::Active(_))
                || now.saturating_duration_since(s.created) < HANDSHAKE_LIFETIME
        });
        while self.sessions.len() >= MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(&id, _)| id);
            match oldest {
                Some(id) => self.sessions.remove(&id),
                None => break,
            };
        }
    }

    /// Commands allowed without a session: only Get Channel Authentication Capabilities.
    fn pre_session_command(&self, r: &Request) -> (u8, Vec<u8>) {
        if (r.netfn, r.cmd) == (cmd::NETFN_APP, cmd::GET_CHANNEL_AUTH_CAPABILITIES) {
            (CC_OK, channel_auth_capabilities())
        } else {
            (CC_INVALID_COMMAND, Vec::new())
        }
    }

    fn open_session(&mut self, bytes: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("message tag").ok()?;
        let asked = r.u8("max privilege").ok()? & 0x0f;
        r.take(2, "reserved").ok()?;
        let console_id = r.u32_le("console session id").ok()?;
        let mut algs = [0u8; 3];
        for (kind, slot) in algs.iter_mut().enumerate() {
            let rec = r.array::<8>("algorithm payload").ok()?;
            if usize::from(rec[0]) != kind {
                return reject_open(tag, console_id, STATUS_ILLEGAL_PARAMETER);
            }
            *slot = rec[4] & 0x3f;
        }
        let proposed = Algorithms {
            auth: algs[0],
            integrity: algs[1],
            confidentiality: algs[2],
        };
        let Some(suite) = SUITES
            .iter()
            .filter_map(|&id| CipherSuite::from_id(id))
            .find(|s| s.algorithms() == proposed)
        else {
            return reject_open(tag, console_id, STATUS_NO_CIPHER_SUITE_MATCH);
        };
        if asked > PRIV_ADMINISTRATOR {
            return reject_open(tag, console_id, STATUS_INVALID_ROLE);
        }
        // Zero asks for the highest the user may have.
        let max_privilege = if asked == 0 {
            PRIV_ADMINISTRATOR
        } else {
            asked
        };
        let bmc_id = self.new_session_id();
        self.sessions.insert(
            bmc_id,
            Session {
                console_id,
                suite,
                max_privilege,
                created: now,
                stage: Stage::Opened,
            },
        );
        let mut out = vec![tag, 0, max_privilege, 0];
        out.extend_from_slice(&console_id.to_le_bytes());
        out.extend_from_slice(&bmc_id.to_le_bytes());
        for (kind, alg) in [
            (0u8, proposed.auth),
            (1, proposed.integrity),
            (2, proposed.confidentiality),
        ] {
            out.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
        }
        unauthenticated(payload::OPEN_SESSION_RESPONSE, &out)
    }

    fn rakp1(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("message tag").ok()?;
        r.take(3, "reserved").ok()?;
        let bmc_id = r.u32_le("managed system session id").ok()?;
        let console_random = r.array::<16>("console random").ok()?;
        let role = r.u8("role").ok()?;
        r.take(2, "reserved").ok()?;
        let ulen = usize::from(r.u8("username length").ok()?);
        let username = r.take(ulen, "username").ok()?.to_vec();
        r.finish().ok()?;
        let Some(session) = self.sessions.get_mut(&bmc_id) else {
            return rakp_reject(payload::RAKP2, tag, STATUS_INVALID_SESSION_ID, 0);
        };
        let console_id = session.console_id;
        let fail = |status| rakp_reject(payload::RAKP2, tag, status, console_id);
        if !matches!(session.stage, Stage::Opened) {
            self.sessions.remove(&bmc_id);
            return fail(STATUS_INVALID_SESSION_ID);
        }
        if username != self.username {
            self.sessions.remove(&bmc_id);
            return fail(STATUS_UNAUTHORIZED_NAME);
        }
        let privilege = role & 0x0f;
        if privilege == 0 || privilege > session.max_privilege {
            self.sessions.remove(&bmc_id);
            return fail(STATUS_UNAUTHORIZED_ROLE);
        }
        let mut bmc_random = [0u8; 16];
        random(&mut bmc_random);
        let inputs = RakpInputs {
            console_session_id: console_id,
            bmc_session_id: bmc_id,
            console_random,
            bmc_random,
            bmc_guid: self.guid,
            role,
            username: &self.username,
        };
        let code = crypto::rakp2_code(session.suite.hash, &self.password, &inputs);
        session.stage = Stage::Challenged {
            console_random,
            bmc_random,
            role,
        };
        let mut out = vec![tag, 0, 0, 0];
        out.extend_from_slice(&console_id.to_le_bytes());
        out.extend_from_slice(&bmc_random);
        out.extend_from_slice(&self.guid);
        out.extend_from_slice(&code);
        unauthenticated(payload::RAKP2, &out)
    }

    fn rakp3(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader::new(bytes);
        let tag = r.u8("message tag").ok()?;
        let status = r.u8("status code").ok()?;
        r.take(2, "reserved").ok()?;
        let bmc_id = r.u32_le("managed system session id").ok()?;
        let code = r.rest();
        if status != 0 {
            // The console gave up (it could not verify RAKP 2): nothing to answer.
            self.sessions.remove(&bmc_id);
            return None;
        }
        let Some(session) = self.sessions.get_mut(&bmc_id) else {
            return rakp_reject(payload::RAKP4, tag, STATUS_INVALID_SESSION_ID, 0);
        };
        let console_id = session.console_id;
        let Stage::Challenged {
            console_random,
            bmc_random,
            role,
        } = session.stage
        else {
            self.sessions.remove(&bmc_id);
            return rakp_reject(payload::RAKP4, tag, STATUS_INVALID_SESSION_ID, console_id);
        };
        let inputs = RakpInputs {
            console_session_id: console_id,
            bmc_session_id: bmc_id,
            console_random,
            bmc_random,
            bmc_guid: self.guid,
            role,
            username: &self.username,
        };
        let suite = session.suite;
        let expected = crypto::rakp3_code(suite.hash, &self.password, &inputs);
        if !crypto::codes_equal(&expected, code) {
            self.sessions.remove(&bmc_id);
            return rakp_reject(payload::RAKP4, tag, STATUS_INVALID_ICV, console_id);
        }
        let sik = crypto::sik(suite.hash, &self.password, &inputs);
        let icv = crypto::rakp4_icv(&suite, &sik, &inputs);
        let k1 = crypto::additional_key(suite.hash, &sik, 1);
        let k2 = crypto::additional_key(suite.hash, &sik, 2);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(k2.get(..16)?);
        session.stage = Stage::Active(Box::new(Keys {
            k1,
            aes,
            out_seq: 0,
            window: ReplayWindow::default(),
            // A session starts at user level until Set Session Privilege Level raises it.
            privilege: PRIV_USER.min(role & 0x0f),
        }));
        let mut out = vec![tag, 0, 0, 0];
        out.extend_from_slice(&console_id.to_le_bytes());
        out.extend_from_slice(&icv);
        unauthenticated(payload::RAKP4, &out)
    }

    /// An authenticated, encrypted IPMI message of an active session.
    fn in_session(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        // Peek at the session id to learn the auth code length.
        let id_bytes = bytes.get(6..10)?;
        let bmc_id = u32::from_le_bytes(id_bytes.try_into().ok()?);
        let session = self.sessions.get_mut(&bmc_id)?;
        let Stage::Active(keys) = &mut session.stage else {
            return None;
        };
        let suite = session.suite;
        let Ok(Packet::V20 {
            header,
            payload: body,
            integrity_data,
            auth_code,
        }) = codec::decode_packet(bytes, suite.packet_auth_code_len())
        else {
            return None;
        };
        if header.payload_type != payload::IPMI
            || header.session_id != bmc_id
            || header.authenticated != suite.integrity
            || header.encrypted != suite.confidentiality
        {
            return None;
        }
        if suite.integrity {
            let expected = crypto::packet_auth_code(&suite, &keys.k1, integrity_data);
            if !crypto::codes_equal(&expected, auth_code) {
                return None;
            }
        }
        if !keys.window.accept(header.seq) {
            return None;
        }
        let message = if suite.confidentiality {
            crypto::decrypt_payload(&keys.aes, body).ok()?
        } else {
            body.to_vec()
        };
        let request = decode_request(&message).ok()?;
        let console_id = session.console_id;
        let max_privilege = session.max_privilege;
        let (completion, data, close) = match (request.netfn, request.cmd) {
            (cmd::NETFN_APP, cmd::GET_CHANNEL_AUTH_CAPABILITIES) => {
                (CC_OK, channel_auth_capabilities(), false)
            }
            (cmd::NETFN_APP, cmd::SET_SESSION_PRIVILEGE) => {
                let (cc, data) = set_privilege(keys, max_privilege, &request.data);
                (cc, data, false)
            }
            (cmd::NETFN_APP, cmd::CLOSE_SESSION) => {
                let asked = request.data.get(..4).and_then(|b| b.try_into().ok());
                match asked.map(u32::from_le_bytes) {
                    Some(id) if id == bmc_id => (CC_OK, Vec::new(), true),
                    Some(_) => (CC_INVALID_SESSION, Vec::new(), false),
                    None => (CC_INVALID_LENGTH, Vec::new(), false),
                }
            }
            (cmd::NETFN_APP, GET_DEVICE_ID) => (CC_OK, DEVICE_ID.to_vec(), false),
            (cmd::NETFN_CHASSIS, cmd::GET_CHASSIS_STATUS) => {
                (CC_OK, vec![u8::from(self.power_on), 0, 0], false)
            }
            (cmd::NETFN_CHASSIS, cmd::CHASSIS_CONTROL) => {
                let privilege = keys.privilege;
                let cc = self.chassis_control(privilege, &request.data);
                (cc, Vec::new(), false)
            }
            _ => (CC_INVALID_COMMAND, Vec::new(), false),
        };
        // Borrow again: chassis_control needed the whole state.
        let session = self.sessions.get_mut(&bmc_id)?;
        let Stage::Active(keys) = &mut session.stage else {
            return None;
        };
        let reply = encode_response(&request, completion, &data);
        keys.out_seq = keys.out_seq.wrapping_add(1).max(1);
        let payload = if suite.confidentiality {
            let mut iv = [0u8; 16];
            random(&mut iv);
            crypto::encrypt_payload(&keys.aes, &iv, &reply)
        } else {
            reply
        };
        let header = V20Header {
            payload_type: payload::IPMI,
            encrypted: suite.confidentiality,
            authenticated: suite.integrity,
            session_id: console_id,
            seq: keys.out_seq,
        };
        let k1 = keys.k1.clone();
        let auth = move |covered: &[u8]| crypto::packet_auth_code(&suite, &k1, covered);
        let out = codec::encode_v20(
            header,
            &payload,
            suite.integrity.then_some(&auth as codec::AuthCodeFn<'_>),
        )
        .ok();
        if close {
            self.sessions.remove(&bmc_id);
        }
        out
    }

    /// Chassis Control: changes the power and reports it; the completion code.
    fn chassis_control(&mut self, privilege: u8, data: &[u8]) -> u8 {
        if privilege < PRIV_OPERATOR {
            return CC_INSUFFICIENT_PRIVILEGE;
        }
        let [control] = data else {
            return CC_INVALID_LENGTH;
        };
        let action = match control & 0x0f {
            0 => ChassisAction::Off,
            1 => ChassisAction::On,
            2 => ChassisAction::Cycle,
            3 => ChassisAction::Reset,
            _ => return CC_INVALID_DATA,
        };
        let changed = match action {
            ChassisAction::Off | ChassisAction::On => {
                let on = action == ChassisAction::On;
                let changed = self.power_on != on;
                self.power_on = on;
                changed
            }
            ChassisAction::Cycle | ChassisAction::Reset if !self.power_on => {
                return CC_NOT_IN_THIS_STATE;
            }
            ChassisAction::Cycle | ChassisAction::Reset => true,
        };
        let event = ChassisEvent {
            bmc: self.index,
            action,
            changed,
            at: Instant::now(),
        };
        if self.events.try_send(event).is_err() {
            tracing::warn!(
                bmc = self.index,
                "simulated BMC: the demo is not taking power events"
            );
        }
        CC_OK
    }

    /// A fresh, non-zero session id not in use: random, or (if the OS gives no random bytes)
    /// the next free number, since at most [`MAX_SESSIONS`] are in use.
    fn new_session_id(&self) -> u32 {
        let free = |id: u32| id != 0 && !self.sessions.contains_key(&id);
        for _ in 0..ID_DRAWS {
            let mut b = [0u8; 4];
            random(&mut b);
            let id = u32::from_le_bytes(b);
            if free(id) {
                return id;
            }
        }
        (1..=u32::MAX).find(|&id| free(id)).unwrap_or(1)
    }
}

/// Set Session Privilege Level: zero reads the current level.
fn set_privilege(keys: &mut Keys, max: u8, data: &[u8]) -> (u8, Vec<u8>) {
    let Some(&asked) = data.first() else {
        return (CC_INVALID_LENGTH, Vec::new());
    };
    let asked = asked & 0x0f;
    if asked == 0 {
        return (CC_OK, vec![keys.privilege]);
    }
    if asked > PRIV_ADMINISTRATOR || asked == 1 {
        return (CC_INVALID_DATA, Vec::new());
    }
    if asked > max {
        return (CC_PRIVILEGE_EXCEEDS_LIMIT, Vec::new());
    }
    keys.privilege = asked;
    (CC_OK, vec![asked])
}

/// Get Channel Authentication Capabilities response data: channel 1, RMCP+ only, per-user
/// login, no OEM data.
fn channel_auth_capabilities() -> Vec<u8> {
    vec![LAN_CHANNEL, 0x80, 0x04, 0x02, 0, 0, 0, 0]
}

/// Decodes an IPMI request message addressed to the BMC.
fn decode_request(bytes: &[u8]) -> Result<Request, codec::DecodeError> {
    if bytes.len() < REQUEST_MIN_LEN {
        return Err(codec::DecodeError::TooShort {
            what: "IPMI request",
            len: bytes.len(),
        });
    }
    let (header, body) = bytes.split_at(3);
    if codec::checksum(header) != 0 {
        return Err(codec::DecodeError::Checksum("header"));
    }
    if codec::checksum(body) != 0 {
        return Err(codec::DecodeError::Checksum("message"));
    }
    let mut r = Reader::new(bytes);
    if r.u8("rsAddr")? != BMC_SLAVE_ADDR {
        return Err(codec::DecodeError::Field("responder address"));
    }
    let netfn_lun = r.u8("netFn")?;
    r.u8("checksum")?;
    let rq_addr = r.u8("rqAddr")?;
    let seq_lun = r.u8("rqSeq")?;
    let command = r.u8("command")?;
    let rest = r.rest();
    // The length check above guarantees the trailing checksum byte.
    let data = rest[..rest.len() - 1].to_vec();
    Ok(Request {
        netfn: netfn_lun >> 2,
        rs_lun: netfn_lun & 0x03,
        rq_addr,
        rq_seq: seq_lun >> 2,
        rq_lun: seq_lun & 0x03,
        cmd: command,
        data,
    })
}

/// Encodes the response to `request`.
fn encode_response(request: &Request, completion: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![request.rq_addr, ((request.netfn | 1) << 2) | request.rq_lun];
    out.push(codec::checksum(&out));
    let body = out.len();
    out.extend_from_slice(&[
        BMC_SLAVE_ADDR,
        (request.rq_seq << 2) | request.rs_lun,
        request.cmd,
        completion,
    ]);
    out.extend_from_slice(data);
    out.push(codec::checksum(&out[body..]));
    out
}

/// A pre-session RMCP+ message.
fn unauthenticated(payload_type: u8, body: &[u8]) -> Option<Vec<u8>> {
    let header = V20Header {
        payload_type,
        encrypted: false,
        authenticated: false,
        session_id: 0,
        seq: 0,
    };
    codec::encode_v20(header, body, None).ok()
}

/// An Open Session Response carrying only an error status.
fn reject_open(tag: u8, console_id: u32, status: u8) -> Option<Vec<u8>> {
    let mut out = vec![tag, status, 0, 0];
    out.extend_from_slice(&console_id.to_le_bytes());
    unauthenticated(payload::OPEN_SESSION_RESPONSE, &out)
}

/// A RAKP 2 or 4 carrying only an error status.
fn rakp_reject(payload_type: u8, tag: u8, status: u8, console_id: u32) -> Option<Vec<u8>> {
    let mut out = vec![tag, status, 0, 0];
    out.extend_from_slice(&console_id.to_le_bytes());
    unauthenticated(payload_type, &out)
}

/// Random bytes from the OS; the BMC's nonces, ids and IVs. A failing OS generator leaves
/// zeros, which only weakens a loopback demo and is logged.
fn random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        tracing::warn!(error = %e, "simulated BMC: no random bytes");
    }
}

/// Loopback only, any free port: the demo's traffic never leaves the machine.
const LISTEN: &str = "127.0.0.1:0";
/// Largest datagram served; IPMI LAN messages are far smaller.
const MAX_DATAGRAM: usize = 1024;
/// Sessions at once; the oldest goes first when a new one opens.
const MAX_SESSIONS: usize = 16;
/// A handshake not finished within this is dropped.
const HANDSHAKE_LIFETIME: Duration = Duration::from_secs(10);
/// Random draws for a session id before counting up instead.
const ID_DRAWS: usize = 8;
/// Pause after a failed receive.
const RECV_BACKOFF: Duration = Duration::from_millis(10);
/// Cipher suites served.
const SUITES: [u8; 2] = [3, 17];
/// The BMC's IPMB address.
const BMC_SLAVE_ADDR: u8 = 0x20;
/// The LAN channel number.
const LAN_CHANNEL: u8 = 0x01;
/// Shortest request: six header bytes and the checksum.
const REQUEST_MIN_LEN: usize = 7;
/// Get Device ID (application).
const GET_DEVICE_ID: u8 = 0x01;
/// Get Device ID data: device 0x20, revision 1, firmware 1.00 (available), IPMI 2.0, chassis
/// and IPMB event receiver support, no manufacturer (0), product 0x0001.
const DEVICE_ID: [u8; 11] = [
    0x20,
    0x01,
    0x01,
    0x00,
    0x02,
    0x80 | 0x04,
    0,
    0,
    0,
    0x01,
    0x00,
];
/// Privilege levels.
const PRIV_USER: u8 = 2;
const PRIV_OPERATOR: u8 = 3;
const PRIV_ADMINISTRATOR: u8 = 4;
/// Completion codes.
const CC_OK: u8 = 0x00;
const CC_PRIVILEGE_EXCEEDS_LIMIT: u8 = 0x81;
const CC_INVALID_SESSION: u8 = 0x87;
const CC_INVALID_COMMAND: u8 = 0xc1;
const CC_INVALID_LENGTH: u8 = 0xc7;
const CC_INVALID_DATA: u8 = 0xcc;
const CC_INSUFFICIENT_PRIVILEGE: u8 = 0xd4;
const CC_NOT_IN_THIS_STATE: u8 = 0xd5;
/// RMCP+ status codes.
const STATUS_INVALID_SESSION_ID: u8 = 0x02;
const STATUS_INVALID_ROLE: u8 = 0x09;
const STATUS_UNAUTHORIZED_ROLE: u8 = 0x0a;
const STATUS_UNAUTHORIZED_NAME: u8 = 0x0d;
const STATUS_INVALID_ICV: u8 = 0x0f;
const STATUS_NO_CIPHER_SUITE_MATCH: u8 = 0x11;
const STATUS_ILLEGAL_PARAMETER: u8 = 0x12;

#[cfg(test)]
mod tests {
    use super::*;
    use drivers::fence::ipmi::session::{Handshake, HandshakeError, OsRandom, Session};

    const USER: &str = "admin";
    const PASSWORD: &str = "s3cret";

    fn bmc() -> (State, mpsc::Receiver<ChassisEvent>) {
        let (tx, rx) = mpsc::channel(8);
        (State::new(0, USER, PASSWORD, tx), rx)
    }

    /// Runs the console's side of the handshake against `bmc`; the session or the error.
    fn login(
        bmc: &mut State,
        suite: u8,
        user: &str,
        password: &str,
    ) -> Result<Session, HandshakeError> {
        let suite = CipherSuite::from_id(suite).expect("suite");
        let mut h = Handshake::new(
            suite,
            PRIV_ADMINISTRATOR,
            user.as_bytes(),
            password.as_bytes(),
            &mut OsRandom,
        );
        let now = Instant::now();
        let caps = {
            let mut m = Vec::new();
            codec::encode_request(
                cmd::NETFN_APP,
                cmd::GET_CHANNEL_AUTH_CAPABILITIES,
                1,
                &codec::channel_auth_capabilities_request(4),
                &mut m,
            );
            codec::encode_v15_unauthenticated(&m).expect("encode")
        };
        let reply = bmc.handle(&caps, now).expect("capabilities answered");
        let Ok(Packet::V15 { message }) = codec::decode_packet(&reply, 0) else {
            panic!("not an IPMI 1.5 answer: {reply:02x?}");
        };
        let r = codec::decode_response(message).expect("response");
        assert_eq!((r.completion, r.rq_seq), (0, 1));
        assert!(
            codec::decode_channel_auth_capabilities(&r.data)
                .expect("caps")
                .ipmi20
        );
        let reply = bmc
            .handle(&h.open_session_request(1), now)
            .expect("open session answered");
        h.on_open_session_response(&reply, 1)?
            .expect("open session matched");
        let reply = bmc
            .handle(&h.rakp1(2).expect("rakp1"), now)
            .expect("RAKP 2");
        if let Err(e) = h.on_rakp2(&reply, 2) {
            // A console that does not trust RAKP 2 still tells the BMC, which answers nothing.
            assert_eq!(bmc.handle(&h.rakp3_reject(3), now), None);
            return Err(e);
        }
        let reply = bmc.handle(&h.rakp3(3), now).expect("RAKP 4");
        Ok(h.on_rakp4(&reply, 3)?.expect("RAKP 4 matched"))
    }

    /// One request in the session; the response's completion code and data.
    fn call(
        bmc: &mut State,
        s: &mut Session,
        netfn: u8,
        command: u8,
        data: &[u8],
    ) -> Option<(u8, Vec<u8>)> {
        let seq = s.next_rq_seq();
        let bytes = s
            .encode_request(netfn, command, seq, data, &mut OsRandom)
            .expect("encode");
        let reply = bmc.handle(&bytes, Instant::now())?;
        let r = s.decode_response(&reply).expect("a valid response");
        assert_eq!((r.netfn, r.cmd, r.rq_seq), (netfn + 1, command, seq));
        Some((r.completion, r.data))
    }

    #[test]
    fn a_console_logs_in_and_switches_the_chassis_off_and_on() {
        for suite in SUITES {
            let (mut bmc, mut events) = bmc();
            let mut s = login(&mut bmc, suite, USER, PASSWORD).expect("login");
            // Power control needs operator; a new session is at user level.
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::CHASSIS_CONTROL,
                    &[0]
                ),
                Some((CC_INSUFFICIENT_PRIVILEGE, vec![]))
            );
            assert!(events.try_recv().is_err());
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_APP,
                    cmd::SET_SESSION_PRIVILEGE,
                    &[4]
                ),
                Some((CC_OK, vec![4]))
            );
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::GET_CHASSIS_STATUS,
                    &[]
                ),
                Some((CC_OK, vec![1, 0, 0]))
            );
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::CHASSIS_CONTROL,
                    &[0]
                ),
                Some((CC_OK, vec![]))
            );
            let e = events.try_recv().expect("power off reported");
            assert_eq!((e.bmc, e.action, e.changed), (0, ChassisAction::Off, true));
            let (cc, data) = call(
                &mut bmc,
                &mut s,
                cmd::NETFN_CHASSIS,
                cmd::GET_CHASSIS_STATUS,
                &[],
            )
            .expect("status");
            assert_eq!(cc, CC_OK);
            assert!(!codec::decode_chassis_power_on(&data).expect("status data"));
            // Cycle and reset need a powered chassis.
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::CHASSIS_CONTROL,
                    &[2]
                ),
                Some((CC_NOT_IN_THIS_STATE, vec![]))
            );
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::CHASSIS_CONTROL,
                    &[1]
                ),
                Some((CC_OK, vec![]))
            );
            assert_eq!(
                events.try_recv().map(|e| (e.action, e.changed)).ok(),
                Some((ChassisAction::On, true))
            );
            assert!(bmc.power_on);
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::CHASSIS_CONTROL,
                    &[3]
                ),
                Some((CC_OK, vec![]))
            );
            assert_eq!(
                events.try_recv().map(|e| e.action).ok(),
                Some(ChassisAction::Reset)
            );
            let (cc, id) =
                call(&mut bmc, &mut s, cmd::NETFN_APP, GET_DEVICE_ID, &[]).expect("device id");
            assert_eq!((cc, id.len(), id[4]), (CC_OK, 11, 0x02));
            assert_eq!(
                call(&mut bmc, &mut s, cmd::NETFN_APP, 0x99, &[]),
                Some((CC_INVALID_COMMAND, vec![]))
            );
            let id = s.bmc_session_id().to_le_bytes();
            assert_eq!(
                call(&mut bmc, &mut s, cmd::NETFN_APP, cmd::CLOSE_SESSION, &id),
                Some((CC_OK, vec![]))
            );
            // Closed: the session's packets are no longer answered.
            assert_eq!(
                call(
                    &mut bmc,
                    &mut s,
                    cmd::NETFN_CHASSIS,
                    cmd::GET_CHASSIS_STATUS,
                    &[]
                ),
                None
            );
            assert!(bmc.sessions.is_empty());
        }
    }

    #[test]
    fn a_wrong_password_fails_rakp_and_leaves_no_session() {
        let (mut bmc, _events) = bmc();
        assert_eq!(
            login(&mut bmc, 3, USER, "wrong").err(),
            Some(HandshakeError::BadPassword)
        );
        assert!(bmc.sessions.is_empty());
        // A console that sends RAKP 3 anyway, keyed with its wrong password, gets status 0x0f.
        let suite = CipherSuite::from_id(3).expect("suite");
        let mut h = Handshake::new(
            suite,
            PRIV_ADMINISTRATOR,
            USER.as_bytes(),
            b"wrong",
            &mut OsRandom,
        );
        let now = Instant::now();
        let reply = bmc.handle(&h.open_session_request(1), now).expect("open");
        h.on_open_session_response(&reply, 1)
            .expect("open ok")
            .expect("matched");
        assert!(bmc.handle(&h.rakp1(2).expect("rakp1"), now).is_some());
        let reply = bmc.handle(&h.rakp3(3), now).expect("RAKP 4");
        assert_eq!(
            h.on_rakp4(&reply, 3).err(),
            Some(HandshakeError::RakpRefused(STATUS_INVALID_ICV))
        );
        assert!(bmc.sessions.is_empty());
    }

    #[test]
    fn an_unknown_user_and_an_unknown_suite_are_refused() {
        let (mut bmc, _events) = bmc();
        assert_eq!(
            login(&mut bmc, 3, "nobody", PASSWORD).err(),
            Some(HandshakeError::RakpRefused(STATUS_UNAUTHORIZED_NAME))
        );
        assert_eq!(
            login(&mut bmc, 2, USER, PASSWORD).err(),
            Some(HandshakeError::OpenRefused(STATUS_NO_CIPHER_SUITE_MATCH))
        );
        assert!(bmc.sessions.is_empty());
    }

    #[test]
    fn replayed_forged_and_garbage_packets_are_dropped() {
        let (mut bmc, mut events) = bmc();
        let mut s = login(&mut bmc, 3, USER, PASSWORD).expect("login");
        assert_eq!(
            call(
                &mut bmc,
                &mut s,
                cmd::NETFN_APP,
                cmd::SET_SESSION_PRIVILEGE,
                &[3]
            ),
            Some((CC_OK, vec![3]))
        );
        let seq = s.next_rq_seq();
        let off = s
            .encode_request(
                cmd::NETFN_CHASSIS,
                cmd::CHASSIS_CONTROL,
                seq,
                &[0],
                &mut OsRandom,
            )
            .expect("encode");
        let mut forged = off.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(bmc.handle(&forged, Instant::now()), None);
        assert!(bmc.power_on, "a forged packet must not switch power");
        assert!(bmc.handle(&off, Instant::now()).is_some());
        assert!(events.try_recv().is_ok());
        // The same packet again is a replay: no answer, no second event.
        assert_eq!(bmc.handle(&off, Instant::now()), None);
        assert!(events.try_recv().is_err());
        for n in 0..off.len() {
            assert_eq!(bmc.handle(&off[..n], Instant::now()), None, "prefix {n}");
        }
        // Privilege above the session's maximum is refused.
        assert_eq!(
            call(
                &mut bmc,
                &mut s,
                cmd::NETFN_APP,
                cmd::SET_SESSION_PRIVILEGE,
                &[5]
            ),
            Some((CC_INVALID_DATA, vec![]))
        );
    }

    #[test]
    fn unfinished_handshakes_expire() {
        let (mut bmc, _events) = bmc();
        let suite = CipherSuite::from_id(3).expect("suite");
        let h = Handshake::new(
            suite,
            PRIV_ADMINISTRATOR,
            USER.as_bytes(),
            PASSWORD.as_bytes(),
            &mut OsRandom,
        );
        let now = Instant::now();
        assert!(bmc.handle(&h.open_session_request(1), now).is_some());
        assert_eq!(bmc.sessions.len(), 1);
        bmc.expire(now + HANDSHAKE_LIFETIME);
        assert!(bmc.sessions.is_empty());
        for tag in 0..40 {
            assert!(bmc.handle(&h.open_session_request(tag), now).is_some());
        }
        assert!(bmc.sessions.len() <= MAX_SESSIONS);
    }

    #[tokio::test]
    async fn the_fence_driver_powers_the_chassis_off_and_on_over_udp() {
        use drivers::fence::ipmi::{IpmiDevice, IpmiParams};
        use drivers::fence::{FenceDevice as _, PowerState};
        use drivers::secret::Secret;
        for suite in SUITES {
            let (tx, mut rx) = mpsc::channel(8);
            let bmc = Bmc::start(1, USER, PASSWORD, tx).await.expect("bmc");
            let mut params = IpmiParams::new(bmc.address(), USER, Secret::new(PASSWORD));
            params.poll_interval = Duration::from_millis(20);
            params.cipher_suite = suite;
            let mut device = IpmiDevice::new("bmc-beta", "beta", params).expect("driver");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            assert_eq!(
                device.status("beta", deadline).await.expect("status"),
                PowerState::On,
                "suite {suite}"
            );
            device.off("beta", deadline).await.expect("off");
            assert!(!bmc.powered());
            let e = rx.recv().await.expect("event");
            assert_eq!((e.bmc, e.action), (1, ChassisAction::Off));
            device.on("beta", deadline).await.expect("on");
            assert!(bmc.powered());
            // A BMC that stops answering makes the driver fail within its deadline.
            bmc.set_answering(false);
            let short = tokio::time::Instant::now() + Duration::from_millis(300);
            assert!(device.status("beta", short).await.is_err());
        }
    }

    /// Whether ipmitool is installed; CI must have it.
    fn ipmitool_installed() -> bool {
        if std::process::Command::new("ipmitool")
            .arg("-V")
            .output()
            .is_ok()
        {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ipmitool is missing (scripts/deps-fence.sh installs it)"
        );
        println!("SKIPPED: ipmitool is not installed (scripts/deps-fence.sh installs it)");
        false
    }

    /// Runs `ipmitool -I lanplus` against `bmc` with `args` (`-C SUITE` among them); exit
    /// success, stdout, stderr.
    async fn ipmitool(bmc: &Bmc, password: &str, args: &[&str]) -> (bool, String, String) {
        let port = bmc.address().port().to_string();
        let child = tokio::process::Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                USER,
                "-P",
                password,
            ])
            .args(["-N", "1", "-R", "2"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // A timeout drops the child: it is killed by its pid.
            .kill_on_drop(true)
            .spawn()
            .expect("start ipmitool");
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("ipmitool ends within 20 s")
            .expect("ipmitool output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// With ipmitool as the client at suite 3 and at suite 17 (RAKP-HMAC-SHA256,
    /// HMAC-SHA256-128, AES-CBC-128): the keys this BMC and the agent's driver derive are the
    /// ones ipmitool derives.
    #[tokio::test]
    async fn ipmitool_lanplus_reads_and_switches_the_chassis_and_refuses_a_wrong_password() {
        if !ipmitool_installed() {
            return;
        }
        for suite in ["3", "17"] {
            let (tx, mut rx) = mpsc::channel(8);
            let bmc = Bmc::start(0, USER, PASSWORD, tx).await.expect("bmc");
            let run = |password: &'static str, args: &'static [&'static str]| {
                let mut all = vec!["-C", suite];
                all.extend_from_slice(args);
                let bmc = &bmc;
                async move { ipmitool(bmc, password, &all).await }
            };
            let (ok, out, err) = run(PASSWORD, &["chassis", "power", "status"]).await;
            assert!(
                ok && out.contains("Chassis Power is on"),
                "suite {suite}: {out}{err}"
            );
            let (ok, out, err) = run(PASSWORD, &["chassis", "power", "off"]).await;
            assert!(ok && out.contains("Down/Off"), "{out}{err}");
            let e = rx.recv().await.expect("event");
            assert_eq!((e.action, e.changed), (ChassisAction::Off, true));
            assert!(!bmc.powered());
            let (ok, out, err) = run(PASSWORD, &["chassis", "power", "status"]).await;
            assert!(ok && out.contains("Chassis Power is off"), "{out}{err}");
            let (ok, out, err) = run(PASSWORD, &["chassis", "power", "on"]).await;
            assert!(ok && out.contains("Up/On"), "{out}{err}");
            assert_eq!(rx.recv().await.map(|e| e.action), Some(ChassisAction::On));
            assert!(bmc.powered());
            let cycle: &'static [&'static str] = &["chassis", "power", "cycle"];
            let reset: &'static [&'static str] = &["chassis", "power", "reset"];
            for (args, action) in [(cycle, ChassisAction::Cycle), (reset, ChassisAction::Reset)] {
                let (ok, out, err) = run(PASSWORD, args).await;
                assert!(ok && out.contains("Chassis Power Control"), "{out}{err}");
                assert_eq!(rx.recv().await.map(|e| e.action), Some(action));
            }
            let (ok, out, err) = run(PASSWORD, &["mc", "info"]).await;
            assert!(ok && out.contains("IPMI Version"), "{out}{err}");
            // Every session ipmitool opened it also closed.
            assert!(bmc.shared.state.lock().is_ok_and(|s| s.sessions.is_empty()));
            let (ok, out, err) = run("not-the-password", &["-v", "chassis", "power", "off"]).await;
            assert!(!ok, "a wrong password was accepted: {out}{err}");
            // ipmitool found RAKP 2's code did not verify with its password (not a timeout).
            assert!(
                err.contains("RAKP 2 HMAC is invalid"),
                "suite {suite}: {out}{err}"
            );
            assert!(bmc.powered(), "a refused login switched power off");
            assert!(rx.try_recv().is_err());
        }
    }
}
