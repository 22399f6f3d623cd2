//! Wire formats of IPMI over LAN, as pure functions over byte buffers.
//!
//! Nothing here opens a socket, reads a clock or draws a random number, so every encoder and
//! decoder can be unit-tested, property-tested and fuzzed on its own. Decoders take untrusted
//! bytes from the network and must never panic: every read goes through [`Reader`], which
//! returns [`DecodeError`] on short input, and each decoder rejects bytes it does not expect.
//!
//! Layout (IPMI v2.0 rev 1.1, section 13):
//!
//! ```text
//! RMCP header   06 00 ff 07
//! IPMI 1.5      auth type 00 | seq u32 | session id u32 | length u8 | message
//! IPMI 2.0      auth type 06 | payload type u8 | session id u32 | seq u32 | length u16 | payload
//!               [ integrity pad ff.. | pad length | next header 07 | auth code ]
//! message       rsAddr | netFn/LUN | chk1 | rqAddr | rqSeq/LUN | cmd | data.. | chk2
//! ```
//!
//! All multi-byte integers of the session layer and RMCP+ payloads are little-endian.

use thiserror::Error;

/// The four bytes in front of every IPMI-over-LAN datagram: RMCP version 1.0, reserved,
/// sequence 0xff (no RMCP-level acknowledgement wanted), message class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];

/// Payload types of the IPMI 2.0 session header (low six bits of the payload type byte).
pub mod payload {
    /// An IPMI request or response message.
    pub const IPMI: u8 = 0x00;
    /// RMCP+ Open Session Request.
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    /// RAKP Message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP Message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP Message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP Message 4.
    pub const RAKP4: u8 = 0x15;
}

/// Network functions and commands this driver uses.
pub mod cmd {
    /// Chassis network function (requests; responses are this plus one).
    pub const NETFN_CHASSIS: u8 = 0x00;
    /// Application network function (requests; responses are this plus one).
    pub const NETFN_APP: u8 = 0x06;
    /// Get Chassis Status (chassis).
    pub const GET_CHASSIS_STATUS: u8 = 0x01;
    /// Chassis Control (chassis).
    pub const CHASSIS_CONTROL: u8 = 0x02;
    /// Get Channel Authentication Capabilities (application).
    pub const GET_CHANNEL_AUTH_CAPABILITIES: u8 = 0x38;
    /// Set Session Privilege Level (application).
    pub const SET_SESSION_PRIVILEGE: u8 = 0x3b;
    /// Close Session (application).
    pub const CLOSE_SESSION: u8 = 0x3c;
}

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The datagram ended before a field it must contain.
    #[error("truncated {what}: needed {need} more bytes, {have} left")]
    Short {
        /// The field being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// Bytes after the end of what the lengths describe.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Not an RMCP datagram of class IPMI.
    #[error("not an RMCP IPMI datagram")]
    NotRmcpIpmi,
    /// A session authentication type this driver does not speak (only none and RMCP+).
    #[error("unsupported authentication type {0:#04x}")]
    AuthType(u8),
    /// An IPMI 1.5 packet that claims a session or authentication; the driver only uses the
    /// unauthenticated form before RMCP+ session setup.
    #[error("unexpected IPMI 1.5 session packet")]
    V15Session,
    /// An OEM payload type, which carries fields this driver does not decode.
    #[error("unsupported payload type {0:#04x}")]
    PayloadType(u8),
    /// A header or message checksum did not add up.
    #[error("bad {0} checksum")]
    Checksum(&'static str),
    /// The session trailer's next-header byte or pad length is wrong.
    #[error("malformed session trailer")]
    Trailer,
    /// The confidentiality padding after decryption is wrong.
    #[error("bad confidentiality padding")]
    Padding,
    /// A ciphertext whose length is not a positive multiple of the block size after the IV.
    #[error("bad ciphertext length {0}")]
    CipherLength(usize),
    /// A message or field shorter than its minimum.
    #[error("{what} too short ({len} bytes)")]
    TooShort {
        /// The message.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("bad {0}")]
    Field(&'static str),
}

/// A cursor over untrusted bytes: every read is checked, nothing indexes directly.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Short {
                what,
                need: n,
                have: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Fails if anything is left.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// An IPMI response message (the body of an IPMI payload from the BMC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Network function of the response (the request's plus one).
    pub netfn: u8,
    /// Command it answers.
    pub cmd: u8,
    /// The requester's sequence number echoed back (six bits).
    pub rq_seq: u8,
    /// Completion code; zero is success.
    pub completion: u8,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

/// Encodes an IPMI request message from the remote console to the BMC.
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[BMC_SLAVE_ADDR, (netfn & 0x3f) << 2]);
    out.push(checksum(&out[start..]));
    let body = out.len();
    out.extend_from_slice(&[REMOTE_SOFTWARE_ID, (rq_seq & 0x3f) << 2, cmd]);
    out.extend_from_slice(data);
    out.push(checksum(&out[body..]));
}

/// Decodes an IPMI response message addressed to the remote console.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    // rqAddr, netFn, chk1, rsAddr, rqSeq, cmd, completion code, chk2.
    if bytes.len() < RESPONSE_MIN_LEN {
        return Err(DecodeError::TooShort {
            what: "IPMI response",
            len: bytes.len(),
        });
    }
    let (header, body) = bytes.split_at(3);
    if checksum(header) != 0 {
        return Err(DecodeError::Checksum("header"));
    }
    if checksum(body) != 0 {
        return Err(DecodeError::Checksum("message"));
    }
    let mut r = Reader::new(bytes);
    if r.u8("rqAddr")? != REMOTE_SOFTWARE_ID {
        return Err(DecodeError::Field("requester address"));
    }
    let netfn = r.u8("netFn")? >> 2;
    r.u8("checksum")?;
    if r.u8("rsAddr")? != BMC_SLAVE_ADDR {
        return Err(DecodeError::Field("responder address"));
    }
    let rq_seq = r.u8("rqSeq")? >> 2;
    let cmd = r.u8("command")?;
    let completion = r.u8("completion code")?;
    let rest = r.rest();
    // The length check above guarantees the trailing checksum byte.
    let data = rest[..rest.len() - 1].to_vec();
    Ok(Response {
        netfn,
        cmd,
        rq_seq,
        completion,
        data,
    })
}

/// Encodes an unauthenticated IPMI 1.5 datagram (session id and sequence zero) around an IPMI
/// message; only Get Channel Authentication Capabilities travels this way.
pub fn encode_v15_unauthenticated(message: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let len = u8::try_from(message.len()).map_err(|_| DecodeError::Field("message length"))?;
    let mut out = Vec::with_capacity(RMCP_HEADER.len() + 10 + message.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(len);
    out.extend_from_slice(message);
    Ok(out)
}

/// A session-layer header of IPMI 2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V20Header {
    /// Payload type (six bits).
    pub payload_type: u8,
    /// The payload is encrypted.
    pub encrypted: bool,
    /// The packet carries an integrity trailer.
    pub authenticated: bool,
    /// Session id of the receiver's side.
    pub session_id: u32,
    /// Session sequence number.
    pub seq: u32,
}

/// A decoded datagram before any key is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An unauthenticated IPMI 1.5 packet and its IPMI message.
    V15 {
        /// The IPMI message.
        message: &'a [u8],
    },
    /// An IPMI 2.0 (RMCP+) packet.
    V20 {
        /// Its session header.
        header: V20Header,
        /// The payload as sent (still encrypted if the header says so).
        payload: &'a [u8],
        /// The bytes the auth code covers: auth type through next header (empty when the
        /// packet is not authenticated).
        integrity_data: &'a [u8],
        /// The auth code (empty when the packet is not authenticated).
        auth_code: &'a [u8],
    },
}

/// Decodes the RMCP and session layers of a datagram; `auth_code_len` is the length of the
/// integrity trailer's auth code for authenticated IPMI 2.0 packets (it depends on the
/// session's integrity algorithm, which the bytes do not say).
pub fn decode_packet(bytes: &[u8], auth_code_len: usize) -> Result<Packet<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.array::<4>("RMCP header")? != RMCP_HEADER {
        return Err(DecodeError::NotRmcpIpmi);
    }
    let session_start = bytes.len() - r.remaining();
    match r.u8("auth type")? {
        AUTH_TYPE_NONE => {
            let seq = r.u32_le("session sequence")?;
            let session_id = r.u32_le("session id")?;
            if seq != 0 || session_id != 0 {
                return Err(DecodeError::V15Session);
            }
            let len = usize::from(r.u8("message length")?);
            let message = r.take(len, "IPMI 1.5 message")?;
            // Some BMCs append the legacy one-byte pad of IPMI 1.5; anything more is garbage.
            match r.rest() {
                [] | [0] => Ok(Packet::V15 { message }),
                rest => Err(DecodeError::Trailing(rest.len())),
            }
        }
        AUTH_TYPE_RMCP_PLUS => {
            let ptype = r.u8("payload type")?;
            let header = V20Header {
                payload_type: ptype & 0x3f,
                encrypted: ptype & PAYLOAD_ENCRYPTED != 0,
                authenticated: ptype & PAYLOAD_AUTHENTICATED != 0,
                session_id: r.u32_le("session id")?,
                seq: r.u32_le("session sequence")?,
            };
            if header.payload_type == PAYLOAD_TYPE_OEM {
                return Err(DecodeError::PayloadType(ptype));
            }
            let len = usize::from(r.u16_le("payload length")?);
            let payload = r.take(len, "payload")?;
            if !header.authenticated {
                r.finish()?;
                return Ok(Packet::V20 {
                    header,
                    payload,
                    integrity_data: &[],
                    auth_code: &[],
                });
            }
            let trailer = r.rest();
            // Trailer: pad (0xff, 0..=3 bytes), pad length, next header, auth code.
            let fixed = 2 + auth_code_len;
            if trailer.len() < fixed || trailer.len() - fixed > MAX_INTEGRITY_PAD {
                return Err(DecodeError::Trailer);
            }
            let pad_len = trailer.len() - fixed;
            let (pad, tail) = trailer.split_at(pad_len);
            let mut t = Reader::new(tail);
            if usize::from(t.u8("pad length")?) != pad_len
                || t.u8("next header")? != NEXT_HEADER
                || pad.iter().any(|&b| b != INTEGRITY_PAD_BYTE)
            {
                return Err(DecodeError::Trailer);
            }
            let auth_code = t.rest();
            let covered_end = bytes.len() - auth_code.len();
            let integrity_data = &bytes[session_start..covered_end];
            if !integrity_data.len().is_multiple_of(4) {
                return Err(DecodeError::Trailer);
            }
            Ok(Packet::V20 {
                header,
                payload,
                integrity_data,
                auth_code,
            })
        }
        other => Err(DecodeError::AuthType(other)),
    }
}

/// Computes the (truncated) auth code over the bytes a session trailer covers.
pub type AuthCodeFn<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// Encodes an IPMI 2.0 datagram. `trailer` is `None` for unauthenticated packets; otherwise it
/// computes the auth code over the covered bytes and returns it (already truncated).
pub fn encode_v20(
    header: V20Header,
    payload: &[u8],
    trailer: Option<AuthCodeFn<'_>>,
) -> Result<Vec<u8>, DecodeError> {
    let len = u16::try_from(payload.len()).map_err(|_| DecodeError::Field("payload length"))?;
    let mut out = Vec::with_capacity(RMCP_HEADER.len() + 12 + payload.len() + 40);
    out.extend_from_slice(&RMCP_HEADER);
    let session_start = out.len();
    let mut ptype = header.payload_type & 0x3f;
    if header.encrypted {
        ptype |= PAYLOAD_ENCRYPTED;
    }
    if trailer.is_some() {
        ptype |= PAYLOAD_AUTHENTICATED;
    }
    out.extend_from_slice(&[AUTH_TYPE_RMCP_PLUS, ptype]);
    out.extend_from_slice(&header.session_id.to_le_bytes());
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    if let Some(auth) = trailer {
        // Pad so that auth type through next header is a whole number of 32-bit words.
        let unpadded = out.len() - session_start + 2;
        let pad = (4 - unpadded % 4) % 4;
        out.extend(std::iter::repeat_n(INTEGRITY_PAD_BYTE, pad));
        // `pad` is below 4 by construction.
        out.push(u8::try_from(pad).map_err(|_| DecodeError::Trailer)?);
        out.push(NEXT_HEADER);
        let code = auth(&out[session_start..]);
        out.extend_from_slice(&code);
    }
    Ok(out)
}

/// The two's-complement checksum IPMI messages carry: the byte that makes the sum zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, &b| acc.wrapping_add(b))
        .wrapping_neg()
}

/// Get Channel Authentication Capabilities, as far as this driver needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAuthCapabilities {
    /// The channel the BMC answered for.
    pub channel: u8,
    /// The BMC reports IPMI 2.0 (RMCP+) support on this channel.
    pub ipmi20: bool,
}

/// Request data of Get Channel Authentication Capabilities: ask for the IPMI 2.0 extended
/// data on the channel we are talking to, at `privilege`.
pub fn channel_auth_capabilities_request(privilege: u8) -> [u8; 2] {
    [
        GET_EXTENDED_CAPABILITIES | CURRENT_CHANNEL,
        privilege & 0x0f,
    ]
}

/// Decodes the response data (after the completion code) of Get Channel Authentication
/// Capabilities.
pub fn decode_channel_auth_capabilities(
    data: &[u8],
) -> Result<ChannelAuthCapabilities, DecodeError> {
    let mut r = Reader::new(data);
    let channel = r.u8("channel")? & 0x0f;
    let auth_types = r.u8("auth type support")?;
    let _status = r.u8("auth status")?;
    let extended = r.u8("extended capabilities")?;
    let _oem = r.take(4, "OEM id and data")?;
    r.finish()?;
    Ok(ChannelAuthCapabilities {
        channel,
        ipmi20: auth_types & AUTH_TYPES_V20_EXTENDED != 0 && extended & EXTENDED_IPMI20 != 0,
    })
}

/// The algorithms of one cipher suite as the Open Session messages carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms {
    /// Authentication algorithm number.
    pub auth: u8,
    /// Integrity algorithm number.
    pub integrity: u8,
    /// Confidentiality algorithm number.
    pub confidentiality: u8,
}

/// Encodes an RMCP+ Open Session Request payload.
pub fn encode_open_session_request(
    tag: u8,
    max_privilege: u8,
    console_session_id: u32,
    algorithms: Algorithms,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&[tag, max_privilege & 0x0f, 0, 0]);
    out.extend_from_slice(&console_session_id.to_le_bytes());
    for (kind, alg) in [
        (0u8, algorithms.auth),
        (1, algorithms.integrity),
        (2, algorithms.confidentiality),
    ] {
        out.extend_from_slice(&[kind, 0, 0, ALGORITHM_RECORD_LEN, alg & 0x3f, 0, 0, 0]);
    }
    out
}

/// RMCP+ Open Session Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionResponse {
    /// Message tag echoed from the request.
    pub tag: u8,
    /// RMCP+ status code; zero is success, and then the other fields are filled.
    pub status: u8,
    /// The session's maximum privilege.
    pub max_privilege: u8,
    /// Our session id, echoed.
    pub console_session_id: u32,
    /// The BMC's session id.
    pub bmc_session_id: u32,
    /// Algorithms the BMC chose.
    pub algorithms: Algorithms,
}

/// Decodes an Open Session Response payload. A failed one may stop after the console session
/// id; its other fields are then zero.
pub fn decode_open_session_response(bytes: &[u8]) -> Result<OpenSessionResponse, DecodeError> {
    let mut r = Reader::new(bytes);
    let tag = r.u8("message tag")?;
    let status = r.u8("status code")?;
    let none = Algorithms {
        auth: 0,
        integrity: 0,
        confidentiality: 0,
    };
    if status != 0 {
        return Ok(OpenSessionResponse {
            tag,
            status,
            max_privilege: 0,
            console_session_id: 0,
            bmc_session_id: 0,
            algorithms: none,
        });
    }
    let max_privilege = r.u8("max privilege")? & 0x0f;
    r.u8("reserved")?;
    let console_session_id = r.u32_le("console session id")?;
    let bmc_session_id = r.u32_le("managed system session id")?;
    let mut algs = [0u8; 3];
    for (kind, slot) in algs.iter_mut().enumerate() {
        let rec = r.array::<8>("algorithm payload")?;
        if usize::from(rec[0]) != kind || rec[3] != ALGORITHM_RECORD_LEN {
            return Err(DecodeError::Field("algorithm payload"));
        }
        *slot = rec[4] & 0x3f;
    }
    r.finish()?;
    Ok(OpenSessionResponse {
        tag,
        status,
        max_privilege,
        console_session_id,
        bmc_session_id,
        algorithms: Algorithms {
            auth: algs[0],
            integrity: algs[1],
            confidentiality: algs[2],
        },
    })
}

/// Encodes RAKP Message 1.
pub fn encode_rakp1(
    tag: u8,
    bmc_session_id: u32,
    console_random: &[u8; 16],
    role: u8,
    username: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let ulen = u8::try_from(username.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_USERNAME_LEN)
        .ok_or(DecodeError::Field("username length"))?;
    let mut out = Vec::with_capacity(28 + username.len());
    out.extend_from_slice(&[tag, 0, 0, 0]);
    out.extend_from_slice(&bmc_session_id.to_le_bytes());
    out.extend_from_slice(console_random);
    out.extend_from_slice(&[role, 0, 0, ulen]);
    out.extend_from_slice(username);
    Ok(out)
}

/// RAKP Message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    /// Message tag echoed from RAKP 1.
    pub tag: u8,
    /// RMCP+ status code; zero is success, and then the other fields are filled.
    pub status: u8,
    /// Our session id, echoed.
    pub console_session_id: u32,
    /// The BMC's random number.
    pub bmc_random: [u8; 16],
    /// The BMC's GUID.
    pub bmc_guid: [u8; 16],
    /// The key exchange authentication code (length set by the authentication algorithm).
    pub auth_code: Vec<u8>,
}

/// Decodes RAKP Message 2; `auth_code_len` is the HMAC length of the suite's authentication
/// algorithm.
pub fn decode_rakp2(bytes: &[u8], auth_code_len: usize) -> Result<Rakp2, DecodeError> {
    let mut r = Reader::new(bytes);
    let tag = r.u8("message tag")?;
    let status = r.u8("status code")?;
    if status != 0 {
        return Ok(Rakp2 {
            tag,
            status,
            console_session_id: 0,
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            auth_code: Vec::new(),
        });
    }
    r.take(2, "reserved")?;
    let console_session_id = r.u32_le("console session id")?;
    let bmc_random = r.array("managed system random number")?;
    let bmc_guid = r.array("managed system GUID")?;
    let auth_code = r.take(auth_code_len, "key exchange auth code")?.to_vec();
    r.finish()?;
    Ok(Rakp2 {
        tag,
        status,
        console_session_id,
        bmc_random,
        bmc_guid,
        auth_code,
    })
}

/// Encodes RAKP Message 3.
pub fn encode_rakp3(tag: u8, status: u8, bmc_session_id: u32, auth_code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + auth_code.len());
    out.extend_from_slice(&[tag, status, 0, 0]);
    out.extend_from_slice(&bmc_session_id.to_le_bytes());
    out.extend_from_slice(auth_code);
    out
}

/// RAKP Message 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    /// Message tag echoed from RAKP 3.
    pub tag: u8,
    /// RMCP+ status code; zero is success.
    pub status: u8,
    /// Our session id, echoed.
    pub console_session_id: u32,
    /// The integrity check value (length set by the authentication algorithm).
    pub icv: Vec<u8>,
}

/// Decodes RAKP Message 4; `icv_len` is set by the suite's authentication algorithm.
pub fn decode_rakp4(bytes: &[u8], icv_len: usize) -> Result<Rakp4, DecodeError> {
    let mut r = Reader::new(bytes);
    let tag = r.u8("message tag")?;
    let status = r.u8("status code")?;
    if status != 0 {
        return Ok(Rakp4 {
            tag,
            status,
            console_session_id: 0,
            icv: Vec::new(),
        });
    }
    r.take(2, "reserved")?;
    let console_session_id = r.u32_le("console session id")?;
    let icv = r.take(icv_len, "integrity check value")?.to_vec();
    r.finish()?;
    Ok(Rakp4 {
        tag,
        status,
        console_session_id,
        icv,
    })
}

/// The chassis power state from Get Chassis Status response data.
pub fn decode_chassis_power_on(data: &[u8]) -> Result<bool, DecodeError> {
    // Current power state, last power event, misc chassis state, optional front panel byte.
    if !(3..=4).contains(&data.len()) {
        return Err(DecodeError::TooShort {
            what: "chassis status",
            len: data.len(),
        });
    }
    Ok(data[0] & POWER_IS_ON != 0)
}

/// Remote console software id 0x40 in the 8-bit form IPMI messages carry.
const REMOTE_SOFTWARE_ID: u8 = 0x81;
/// The BMC's IPMB address.
const BMC_SLAVE_ADDR: u8 = 0x20;
/// Shortest response message: seven header and completion bytes plus the checksum.
const RESPONSE_MIN_LEN: usize = 8;
/// Session authentication type "none" (IPMI 1.5 format).
const AUTH_TYPE_NONE: u8 = 0x00;
/// Session authentication type of the IPMI 2.0 format.
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// Payload type flag: payload encrypted.
const PAYLOAD_ENCRYPTED: u8 = 0x80;
/// Payload type flag: integrity trailer present.
const PAYLOAD_AUTHENTICATED: u8 = 0x40;
/// OEM explicit payload type, which inserts an IANA number and payload id into the header.
const PAYLOAD_TYPE_OEM: u8 = 0x02;
/// The next-header byte of the session trailer (always 07h).
const NEXT_HEADER: u8 = 0x07;
/// Integrity pad filler.
const INTEGRITY_PAD_BYTE: u8 = 0xff;
/// Pad to a 4-byte boundary needs at most three bytes.
const MAX_INTEGRITY_PAD: usize = 3;
/// Get Channel Authentication Capabilities flag: include IPMI 2.0 extended data.
const GET_EXTENDED_CAPABILITIES: u8 = 0x80;
/// Channel number meaning "this channel".
const CURRENT_CHANNEL: u8 = 0x0e;
/// Auth type support byte: IPMI 2.0 extended capabilities are present.
const AUTH_TYPES_V20_EXTENDED: u8 = 0x80;
/// Extended capabilities byte: the channel supports IPMI 2.0 connections.
const EXTENDED_IPMI20: u8 = 0x02;
/// Payload length field of each algorithm record in Open Session messages.
const ALGORITHM_RECORD_LEN: u8 = 0x08;
/// Usernames are at most 16 bytes in RAKP 1.
pub const MAX_USERNAME_LEN: usize = 16;
/// Get Chassis Status byte 1 bit 0: system power is on.
const POWER_IS_ON: u8 = 0x01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_add_up() {
        let mut m = Vec::new();
        encode_request(cmd::NETFN_CHASSIS, cmd::CHASSIS_CONTROL, 5, &[0], &mut m);
        assert_eq!(m, [0x20, 0x00, 0xe0, 0x81, 0x14, 0x02, 0x00, 0x69]);
        assert_eq!(checksum(&m[..3]), 0);
        assert_eq!(checksum(&m[3..]), 0);
    }

    #[test]
    fn response_round_trip() {
        // A response built by hand: rqAddr 81, netFn 01 (chassis response), rsAddr 20,
        // rqSeq 5, Get Chassis Status, completion 0, data 01 00 00.
        let mut m = vec![0x81, 0x01 << 2];
        m.push(checksum(&m));
        let mut body = vec![0x20, 5 << 2, 0x01, 0x00, 0x01, 0x00, 0x00];
        body.push(checksum(&body));
        m.extend_from_slice(&body);
        let r = decode_response(&m).unwrap();
        assert_eq!((r.netfn, r.cmd, r.rq_seq, r.completion), (1, 1, 5, 0));
        assert!(decode_chassis_power_on(&r.data).unwrap());
        m[4] ^= 1;
        assert_eq!(decode_response(&m), Err(DecodeError::Checksum("message")));
    }

    #[test]
    fn v20_trailer_is_word_aligned_and_decodes() {
        for len in 0..8 {
            let payload = vec![0xabu8; len];
            let header = V20Header {
                payload_type: payload::IPMI,
                encrypted: false,
                authenticated: true,
                session_id: 7,
                seq: 9,
            };
            let auth = |b: &[u8]| vec![u8::try_from(b.len()).unwrap(); 12];
            let bytes = encode_v20(header, &payload, Some(&auth)).unwrap();
            match decode_packet(&bytes, 12).unwrap() {
                Packet::V20 {
                    header: h,
                    payload: p,
                    integrity_data,
                    auth_code,
                } => {
                    assert_eq!(h, header);
                    assert_eq!(p, &payload[..]);
                    assert_eq!(integrity_data.len() % 4, 0);
                    assert_eq!(auth_code, &auth(integrity_data)[..]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn truncations_are_errors() {
        let bytes = encode_v15_unauthenticated(&[1, 2, 3]).unwrap();
        for n in 0..bytes.len() {
            assert!(decode_packet(&bytes[..n], 12).is_err(), "prefix {n}");
        }
        assert!(decode_packet(&bytes, 12).is_ok());
    }
}
