//! The RMCP+ session as a sans-IO state machine: the handshake (Open Session, RAKP 1–4) and
//! the established session (sequence numbers, integrity, confidentiality, replay window).
//!
//! Each step turns received bytes into the next bytes to send, or into an error; randomness
//! comes in through [`RandomSource`]. The transport only moves datagrams and keeps time, so the
//! whole protocol runs in unit tests and fuzzers without a socket. Received bytes that are not
//! the awaited answer (stale retransmits, other sessions, garbage) are `Ok(None)`: the caller
//! drops them and keeps waiting. Only an answer that is ours and says no is an error.

use thiserror::Error;

use super::codec::{self, payload, DecodeError, Packet, Response, V20Header};
use super::crypto::{self, CipherSuite, RakpInputs};

/// Where the driver's random numbers come from (session ids, RAKP random numbers, AES IVs).
pub trait RandomSource {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // The kernel's getrandom only fails before the pool is seeded at early boot, long
        // before the agent runs; a predictable IV would be worse than stopping.
        getrandom::fill(buf).expect("the operating system's random source failed");
    }
}

/// Why the handshake failed on an answer that was ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The BMC refused Open Session with an RMCP+ status code.
    #[error("open session refused: {}", status_text(*.0))]
    OpenRefused(u8),
    /// The BMC picked algorithms other than the ones proposed.
    #[error("BMC chose other algorithms than cipher suite {0}")]
    AlgorithmMismatch(u8),
    /// The BMC refused RAKP 1 or RAKP 3 with an RMCP+ status code.
    #[error("RAKP refused: {}", status_text(*.0))]
    RakpRefused(u8),
    /// RAKP 2's auth code does not match our password: the password is wrong (or the BMC is
    /// not who it claims).
    #[error("RAKP 2 auth code mismatch: wrong password")]
    BadPassword,
    /// RAKP 4's check value does not match the session key.
    #[error("RAKP 4 integrity check value mismatch")]
    BadRakp4,
}

impl HandshakeError {
    /// Whether the BMC refused the credentials (as opposed to the session parameters).
    pub fn is_auth(&self) -> bool {
        match self {
            Self::BadPassword | Self::BadRakp4 => true,
            Self::RakpRefused(s) | Self::OpenRefused(s) => AUTH_STATUS_CODES.contains(s),
            Self::AlgorithmMismatch(_) => false,
        }
    }
}

/// RMCP+ session setup from the remote console side.
#[derive(Debug)]
pub struct Handshake {
    suite: CipherSuite,
    role: u8,
    privilege: u8,
    username: Vec<u8>,
    kuid: Vec<u8>,
    console_session_id: u32,
    console_random: [u8; 16],
    bmc_session_id: u32,
    bmc_random: [u8; 16],
    bmc_guid: [u8; 16],
}

impl Handshake {
    /// Starts a handshake for `username`/`password` at `privilege` (IPMI privilege number).
    pub fn new(
        suite: CipherSuite,
        privilege: u8,
        username: &[u8],
        password: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Self {
        let mut console_session_id = 0u32;
        // Zero means "no session"; the loop ends at the first nonzero draw, and a source that
        // returned zero forever is given a fixed id after a few tries rather than a hang.
        for _ in 0..RANDOM_RETRIES {
            let mut b = [0u8; 4];
            rng.fill(&mut b);
            console_session_id = u32::from_le_bytes(b);
            if console_session_id != 0 {
                break;
            }
        }
        if console_session_id == 0 {
            console_session_id = FALLBACK_SESSION_ID;
        }
        let mut console_random = [0u8; 16];
        rng.fill(&mut console_random);
        Self {
            suite,
            // Name-only lookup: the BMC finds the user by name and grants at most its privilege,
            // which is what ipmitool and freeipmi send by default.
            role: (privilege & 0x0f) | NAME_ONLY_LOOKUP,
            privilege: privilege & 0x0f,
            username: username.to_vec(),
            kuid: password.to_vec(),
            console_session_id,
            console_random,
            bmc_session_id: 0,
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
        }
    }

    /// Our session id (the id the BMC addresses its packets to).
    pub fn console_session_id(&self) -> u32 {
        self.console_session_id
    }

    /// Open Session Request datagram with message tag `tag`.
    pub fn open_session_request(&self, tag: u8) -> Vec<u8> {
        let body = codec::encode_open_session_request(
            tag,
            self.privilege,
            self.console_session_id,
            self.suite.algorithms(),
        );
        unauthenticated(payload::OPEN_SESSION_REQUEST, &body)
    }

    /// Takes an Open Session Response to the request tagged `tag`.
    pub fn on_open_session_response(
        &mut self,
        bytes: &[u8],
        tag: u8,
    ) -> Result<Option<()>, HandshakeError> {
        let Some(body) = pre_session_payload(bytes, payload::OPEN_SESSION_RESPONSE) else {
            return Ok(None);
        };
        let Ok(resp) = codec::decode_open_session_response(body) else {
            return Ok(None);
        };
        if resp.tag != tag {
            return Ok(None);
        }
        if resp.status != 0 {
            return Err(HandshakeError::OpenRefused(resp.status));
        }
        if resp.console_session_id != self.console_session_id || resp.bmc_session_id == 0 {
            return Ok(None);
        }
        if resp.algorithms != self.suite.algorithms() {
            return Err(HandshakeError::AlgorithmMismatch(self.suite.id));
        }
        self.bmc_session_id = resp.bmc_session_id;
        Ok(Some(()))
    }

    /// RAKP 1 datagram with message tag `tag`.
    pub fn rakp1(&self, tag: u8) -> Result<Vec<u8>, DecodeError> {
        let body = codec::encode_rakp1(
            tag,
            self.bmc_session_id,
            &self.console_random,
            self.role,
            &self.username,
        )?;
        Ok(unauthenticated(payload::RAKP1, &body))
    }

    /// Takes RAKP 2 in answer to RAKP 1 tagged `tag`, and checks the BMC knows our password.
    pub fn on_rakp2(&mut self, bytes: &[u8], tag: u8) -> Result<Option<()>, HandshakeError> {
        let Some(body) = pre_session_payload(bytes, payload::RAKP2) else {
            return Ok(None);
        };
        let Ok(msg) = codec::decode_rakp2(body, self.suite.rakp_code_len()) else {
            return Ok(None);
        };
        if msg.tag != tag {
            return Ok(None);
        }
        if msg.status != 0 {
            return Err(HandshakeError::RakpRefused(msg.status));
        }
        if msg.console_session_id != self.console_session_id {
            return Ok(None);
        }
        self.bmc_random = msg.bmc_random;
        self.bmc_guid = msg.bmc_guid;
        let expected = crypto::rakp2_code(self.suite.hash, &self.kuid, &self.inputs());
        if !crypto::codes_equal(&expected, &msg.auth_code) {
            return Err(HandshakeError::BadPassword);
        }
        Ok(Some(()))
    }

    /// RAKP 3 datagram with message tag `tag`, proving we know the password.
    pub fn rakp3(&self, tag: u8) -> Vec<u8> {
        let code = crypto::rakp3_code(self.suite.hash, &self.kuid, &self.inputs());
        let body = codec::encode_rakp3(tag, 0, self.bmc_session_id, &code);
        unauthenticated(payload::RAKP3, &body)
    }

    /// A RAKP 3 that tells the BMC we reject its RAKP 2, so it frees the half-open session.
    pub fn rakp3_reject(&self, tag: u8) -> Vec<u8> {
        let body = codec::encode_rakp3(tag, STATUS_INVALID_INTEGRITY, self.bmc_session_id, &[]);
        unauthenticated(payload::RAKP3, &body)
    }

    /// Takes RAKP 4 in answer to RAKP 3 tagged `tag`; on success the session is established.
    pub fn on_rakp4(&self, bytes: &[u8], tag: u8) -> Result<Option<Session>, HandshakeError> {
        let Some(body) = pre_session_payload(bytes, payload::RAKP4) else {
            return Ok(None);
        };
        let Ok(msg) = codec::decode_rakp4(body, self.suite.icv_len()) else {
            return Ok(None);
        };
        if msg.tag != tag {
            return Ok(None);
        }
        if msg.status != 0 {
            return Err(HandshakeError::RakpRefused(msg.status));
        }
        if msg.console_session_id != self.console_session_id {
            return Ok(None);
        }
        let inputs = self.inputs();
        // No BMC key (KG) is configured, so the password keys the SIK too.
        let sik = crypto::sik(self.suite.hash, &self.kuid, &inputs);
        let expected = crypto::rakp4_icv(&self.suite, &sik, &inputs);
        if !crypto::codes_equal(&expected, &msg.icv) {
            return Err(HandshakeError::BadRakp4);
        }
        let k1 = crypto::additional_key(self.suite.hash, &sik, 1);
        let k2 = crypto::additional_key(self.suite.hash, &sik, 2);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        Ok(Some(Session {
            suite: self.suite,
            console_session_id: self.console_session_id,
            bmc_session_id: self.bmc_session_id,
            k1,
            aes_key,
            out_seq: 0,
            window: ReplayWindow::default(),
            rq_seq: 0,
        }))
    }

    fn inputs(&self) -> RakpInputs<'_> {
        RakpInputs {
            console_session_id: self.console_session_id,
            bmc_session_id: self.bmc_session_id,
            console_random: self.console_random,
            bmc_random: self.bmc_random,
            bmc_guid: self.bmc_guid,
            role: self.role,
            username: &self.username,
        }
    }
}

/// An established RMCP+ session.
#[derive(Debug)]
pub struct Session {
    suite: CipherSuite,
    console_session_id: u32,
    bmc_session_id: u32,
    k1: Vec<u8>,
    aes_key: [u8; 16],
    out_seq: u32,
    window: ReplayWindow,
    rq_seq: u8,
}

/// Why an authenticated response was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SessionDecodeError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Not a packet of this session (other session id, payload type or protection level).
    #[error("not for this session")]
    NotOurs,
    /// The auth code does not verify: forged or corrupted.
    #[error("integrity check failed")]
    Integrity,
    /// A sequence number already seen or outside the window: a replay or a late duplicate.
    #[error("sequence number {0} replayed or out of window")]
    Replay(u32),
}

impl Session {
    /// The BMC's session id (what Close Session names).
    pub fn bmc_session_id(&self) -> u32 {
        self.bmc_session_id
    }

    /// A fresh requester sequence number for a new request; retransmissions of one request
    /// keep its number so the BMC and we can match duplicates.
    pub fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.rq_seq
    }

    /// Encodes one transmission of a request. Every transmission, retransmissions included,
    /// takes the next session sequence number, as the spec requires of authenticated sessions.
    pub fn encode_request(
        &mut self,
        netfn: u8,
        cmd: u8,
        rq_seq: u8,
        data: &[u8],
        rng: &mut dyn RandomSource,
    ) -> Result<Vec<u8>, DecodeError> {
        // Zero is reserved for unauthenticated traffic, so the counter skips it on wrap.
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        let mut message = Vec::with_capacity(8 + data.len());
        codec::encode_request(netfn, cmd, rq_seq, data, &mut message);
        let body = if self.suite.confidentiality {
            let mut iv = [0u8; 16];
            rng.fill(&mut iv);
            crypto::encrypt_payload(&self.aes_key, &iv, &message)
        } else {
            message
        };
        let header = V20Header {
            payload_type: payload::IPMI,
            encrypted: self.suite.confidentiality,
            authenticated: self.suite.integrity,
            session_id: self.bmc_session_id,
            seq: self.out_seq,
        };
        let suite = self.suite;
        let k1 = &self.k1;
        let auth = move |covered: &[u8]| crypto::packet_auth_code(&suite, k1, covered);
        codec::encode_v20(
            header,
            &body,
            if suite.integrity { Some(&auth) } else { None },
        )
    }

    /// Decodes a datagram from the BMC into the IPMI response it carries: session id,
    /// protection level, auth code and sequence window are all checked before the payload is
    /// trusted.
    pub fn decode_response(&mut self, bytes: &[u8]) -> Result<Response, SessionDecodeError> {
        let packet = codec::decode_packet(bytes, self.suite.packet_auth_code_len())?;
        let Packet::V20 {
            header,
            payload: body,
            integrity_data,
            auth_code,
        } = packet
        else {
            return Err(SessionDecodeError::NotOurs);
        };
        if header.session_id != self.console_session_id
            || header.payload_type != payload::IPMI
            || header.authenticated != self.suite.integrity
            || header.encrypted != self.suite.confidentiality
        {
            return Err(SessionDecodeError::NotOurs);
        }
        if self.suite.integrity {
            let expected = crypto::packet_auth_code(&self.suite, &self.k1, integrity_data);
            if !crypto::codes_equal(&expected, auth_code) {
                return Err(SessionDecodeError::Integrity);
            }
        }
        // Only after the auth code verified may the sequence number move the window, or a
        // forger could push it forward and make the real answers look like replays.
        let message = if self.suite.confidentiality {
            crypto::decrypt_payload(&self.aes_key, body)?
        } else {
            body.to_vec()
        };
        let response = codec::decode_response(&message)?;
        if !self.window.accept(header.seq) {
            return Err(SessionDecodeError::Replay(header.seq));
        }
        Ok(response)
    }
}

/// The inbound sliding window of sequence numbers (IPMI v2.0 section 6.12.13): a number is
/// accepted once, if it is at most [`WINDOW`] ahead of the highest seen or less than
/// [`WINDOW`] behind it. The first authenticated packet sets the start, since the BMC chooses
/// its own first number.
#[derive(Debug, Default, Clone)]
pub struct ReplayWindow {
    highest: Option<u32>,
    /// Bit `i` set: `highest - i` was seen.
    seen: u32,
}

impl ReplayWindow {
    /// Whether `seq` is fresh; records it if so.
    pub fn accept(&mut self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return true;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead != 0 && ahead <= WINDOW {
            self.seen = self.seen.checked_shl(ahead).unwrap_or(0) | 1;
            self.highest = Some(seq);
            return true;
        }
        let behind = highest.wrapping_sub(seq);
        if behind >= WINDOW {
            return false;
        }
        let bit = 1u32 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

/// Width of the inbound window in sequence numbers.
pub const WINDOW: u32 = 32;

/// Extracts the payload of an unauthenticated pre-session packet of type `want`.
fn pre_session_payload(bytes: &[u8], want: u8) -> Option<&[u8]> {
    match codec::decode_packet(bytes, 0) {
        Ok(Packet::V20 {
            header, payload, ..
        }) if header.payload_type == want
            && !header.authenticated
            && !header.encrypted
            && header.session_id == 0 =>
        {
            Some(payload)
        }
        _ => None,
    }
}

/// An unauthenticated IPMI 2.0 packet outside a session.
fn unauthenticated(payload_type: u8, body: &[u8]) -> Vec<u8> {
    let header = V20Header {
        payload_type,
        encrypted: false,
        authenticated: false,
        session_id: 0,
        seq: 0,
    };
    // Handshake payloads are under 100 bytes, far below the u16 length limit.
    codec::encode_v20(header, body, None).unwrap_or_default()
}

/// Text of an RMCP+ status code (IPMI v2.0 table 13-15).
pub fn status_text(code: u8) -> String {
    let text = match code {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status",
    };
    format!("{text} (status {code:#04x})")
}

/// RMCP+ status codes that mean "these credentials are not accepted".
const AUTH_STATUS_CODES: [u8; 5] = [0x09, 0x0a, 0x0c, 0x0d, 0x0f];
/// RAKP 3 status telling the BMC its RAKP 2 failed our check.
const STATUS_INVALID_INTEGRITY: u8 = 0x0f;
/// RAKP 1 role bit 4: look the user up by name only.
const NAME_ONLY_LOOKUP: u8 = 0x10;
/// Draws before giving up on a nonzero session id from a broken random source.
const RANDOM_RETRIES: usize = 4;
/// Session id used if the random source kept returning zero (any nonzero value is valid).
const FALLBACK_SESSION_ID: u32 = 0x5741_4b31;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_once_and_in_range() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(100));
        assert!(!w.accept(100));
        assert!(w.accept(102));
        assert!(w.accept(101));
        assert!(!w.accept(101));
        assert!(w.accept(134));
        assert!(!w.accept(102));
        assert!(w.accept(103));
        assert!(!w.accept(200));
        assert!(!w.accept(0));
    }
}
