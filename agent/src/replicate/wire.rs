//! The replication channel: an authenticated, encrypted, strictly ordered message stream over
//! one TCP connection, and the messages carried on it.
//!
//! # Why it looks like this
//!
//! The Director's configuration holds its console, catalog and storage passwords, so the copy
//! must not be readable on the wire, and the standby must never install bytes that did not
//! come from a node holding the cluster key. The workspace carries HMAC-SHA256 and AES but no
//! AEAD crate, so each message is encrypt-then-MAC: AES-256-CTR under a per-session encryption
//! key, then a 16-byte truncated HMAC-SHA256 over the direction, counter, length and
//! ciphertext under a separate per-session MAC key. The MAC is checked (in constant time)
//! before a single byte is decrypted or parsed.
//!
//! # Handshake
//!
//! Each side sends a fixed 48-byte [`Hello`] (magic, version, role, cluster id, node id and a
//! fresh 32-byte random nonce). Both then derive
//! `session = HMAC(cluster key, "wk-replicate" || version || cluster id || client id ||
//! server id || client nonce || server nonce)` and from it the encryption and MAC keys. Fresh
//! nonces from both ends make every session's keys new, so a message recorded in one session
//! fails the MAC in any other. The first framed message in each direction confirms the key: a
//! MAC failure there is reported as [`WireError::KeyMismatch`] (wrong cluster key), later ones
//! as [`WireError::BadMac`] (forgery or corruption).
//!
//! # Framing
//!
//! `u32 length | u64 counter | ciphertext (length bytes) | MAC (16 bytes)`, little-endian.
//! Counters start at 1 and must grow by exactly one per message and direction, which rejects
//! replays, reordering and deletions alike. The length is checked against the limit before
//! anything is allocated. Any error closes the channel: after a failure nothing that follows
//! on the stream can be trusted.

use std::time::Duration;

use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Length of the truncated message MAC.
pub const MAC_LEN: usize = 16;
/// Length of the frame header (length and counter).
pub const FRAME_HEADER_LEN: usize = 12;
/// Length of a [`Hello`] on the wire.
pub const HELLO_LEN: usize = 48;
/// Handshake magic: "WKRP" (watchkeeper replication).
pub const MAGIC: [u8; 4] = *b"WKRP";
/// Protocol version; a peer speaking any other is refused.
pub const VERSION: u8 = 1;

/// Errors of the channel and of message decoding.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not answer in time.
    #[error("no data from the peer for {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection between two messages.
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed the connection before it authenticated itself: it refused this node's
    /// key, or it is busy.
    #[error("peer closed the connection before authenticating (same cluster key on both nodes?)")]
    ClosedUnauthenticated,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// A message announced more bytes than the limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// The peer's hello is not a watchkeeper replication hello of this cluster and version.
    #[error("handshake refused: {0}")]
    Handshake(&'static str),
    /// The first message failed authentication: the peer does not hold this cluster key.
    #[error("peer does not hold the cluster key (first message failed authentication)")]
    KeyMismatch,
    /// A message failed authentication: forged or corrupted.
    #[error("message {counter} failed authentication")]
    BadMac {
        /// Counter the message claimed.
        counter: u64,
    },
    /// An authentic message arrived out of order: a replay or a deletion.
    #[error("message counter {got} where {expected} was due (replay or deletion)")]
    Replay {
        /// Counter received.
        got: u64,
        /// Counter expected.
        expected: u64,
    },
    /// An authentic message does not decode, or is not the one the protocol expects now.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected: the standby, which receives the tree.
    Client,
    /// The side that accepted: the holder, which sends its tree.
    Server,
}

/// Who this end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Cluster id; a peer of another cluster is refused.
    pub cluster_id: u32,
    /// This node's id.
    pub node_id: u8,
}

/// The handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Sender's role.
    pub role: Role,
    /// Sender's identity.
    pub identity: Identity,
    /// Fresh random nonce.
    pub nonce: [u8; 32],
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = match self.role {
            Role::Client => 1,
            Role::Server => 2,
        };
        b[8..12].copy_from_slice(&self.identity.cluster_id.to_le_bytes());
        b[12] = self.identity.node_id;
        b[16..48].copy_from_slice(&self.nonce);
        b
    }

    /// Decodes a hello.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Self, WireError> {
        if b[0..4] != MAGIC {
            return Err(WireError::Handshake("not a watchkeeper replication peer"));
        }
        if b[4] != VERSION {
            return Err(WireError::Handshake("unsupported protocol version"));
        }
        let role = match b[5] {
            1 => Role::Client,
            2 => Role::Server,
            _ => return Err(WireError::Handshake("unknown role")),
        };
        let mut cid = [0u8; 4];
        cid.copy_from_slice(&b[8..12]);
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&b[16..48]);
        Ok(Self {
            role,
            identity: Identity {
                cluster_id: u32::from_le_bytes(cid),
                node_id: b[12],
            },
            nonce,
        })
    }
}

/// An open, authenticated channel.
pub struct Channel {
    stream: TcpStream,
    tx: Half,
    rx: Half,
    confirmed: bool,
    max_message_len: usize,
    timeout: Duration,
    peer: Identity,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("tx_counter", &self.tx.counter)
            .field("rx_counter", &self.rx.counter)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Runs the handshake on `stream` as `role`, with the cluster key `key`.
    ///
    /// `timeout` bounds every single read and write, here and on the returned channel.
    /// `max_message_len` bounds every message received.
    pub async fn handshake(
        mut stream: TcpStream,
        role: Role,
        me: Identity,
        key: &[u8],
        max_message_len: usize,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|_| WireError::Io(std::io::Error::other("random source failed")))?;
        let mine = Hello {
            role,
            identity: me,
            nonce,
        };
        let mut buf = [0u8; HELLO_LEN];
        // The client speaks first so that a server never answers a port scan with its nonce.
        if role == Role::Client {
            write_all(&mut stream, &mine.encode(), timeout).await?;
            read_exact(&mut stream, &mut buf, timeout, true)
                .await
                .map_err(|e| match e {
                    WireError::Closed => WireError::ClosedUnauthenticated,
                    e => e,
                })?;
        } else {
            read_exact(&mut stream, &mut buf, timeout, true).await?;
        }
        let theirs = Hello::decode(&buf)?;
        if theirs.role == role {
            return Err(WireError::Handshake("peer has the same role"));
        }
        if theirs.identity.cluster_id != me.cluster_id {
            return Err(WireError::Handshake("peer belongs to another cluster"));
        }
        if theirs.identity.node_id == me.node_id {
            return Err(WireError::Handshake("peer claims this node's id"));
        }
        if role == Role::Server {
            write_all(&mut stream, &mine.encode(), timeout).await?;
        }
        let (client, server) = match role {
            Role::Client => (mine, theirs),
            Role::Server => (theirs, mine),
        };
        let session = {
            let mut m = hmac(key);
            m.update(b"wk-replicate");
            m.update(&[VERSION]);
            m.update(&me.cluster_id.to_le_bytes());
            m.update(&[client.identity.node_id, server.identity.node_id]);
            m.update(&client.nonce);
            m.update(&server.nonce);
            m.finalize().into_bytes()
        };
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut m = hmac(&session);
            m.update(label);
            let mut out = [0u8; 32];
            out.copy_from_slice(&m.finalize().into_bytes());
            out
        };
        let enc = derive(b"enc");
        let mac = derive(b"mac");
        let (tx_dir, rx_dir) = match role {
            Role::Client => (DIR_CLIENT_TO_SERVER, DIR_SERVER_TO_CLIENT),
            Role::Server => (DIR_SERVER_TO_CLIENT, DIR_CLIENT_TO_SERVER),
        };
        Ok(Self {
            stream,
            tx: Half::new(&enc, mac, tx_dir),
            rx: Half::new(&enc, mac, rx_dir),
            confirmed: false,
            max_message_len,
            timeout,
            peer: theirs.identity,
        })
    }

    /// The peer's identity from its hello (authenticated once a message has been received).
    pub fn peer(&self) -> Identity {
        self.peer
    }

    /// Sends one message.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| (l as usize) <= MAX_WIRE_MESSAGE_LEN)
            .ok_or(WireError::Oversized {
                len: payload.len() as u64,
                max: MAX_WIRE_MESSAGE_LEN,
            })?;
        self.tx.counter += 1;
        let counter = self.tx.counter;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len() + MAC_LEN);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&counter.to_le_bytes());
        frame.extend_from_slice(payload);
        self.tx.keystream(counter, &mut frame[FRAME_HEADER_LEN..]);
        let tag = self.tx.tag(counter, len, &frame[FRAME_HEADER_LEN..]);
        frame.extend_from_slice(&tag);
        write_all(&mut self.stream, &frame, self.timeout).await
    }

    /// Receives one message. Any error leaves the channel unusable.
    pub async fn recv(&mut self) -> Result<Vec<u8>, WireError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match read_exact(&mut self.stream, &mut header, self.timeout, true).await {
            Ok(()) => {}
            Err(WireError::Closed) if !self.confirmed => {
                return Err(WireError::ClosedUnauthenticated)
            }
            Err(e) => return Err(e),
        }
        let mut l = [0u8; 4];
        l.copy_from_slice(&header[0..4]);
        let len = u32::from_le_bytes(l);
        let mut c = [0u8; 8];
        c.copy_from_slice(&header[4..12]);
        let counter = u64::from_le_bytes(c);
        let n = len as usize;
        if n > self.max_message_len {
            return Err(WireError::Oversized {
                len: u64::from(len),
                max: self.max_message_len,
            });
        }
        let mut body = vec![0u8; n + MAC_LEN];
        read_exact(&mut self.stream, &mut body, self.timeout, false).await?;
        let expected = self.rx.tag(counter, len, &body[..n]);
        if !bool::from(expected.ct_eq(&body[n..])) {
            return Err(if self.confirmed {
                WireError::BadMac { counter }
            } else {
                WireError::KeyMismatch
            });
        }
        self.confirmed = true;
        let due = self.rx.counter + 1;
        if counter != due {
            return Err(WireError::Replay {
                got: counter,
                expected: due,
            });
        }
        self.rx.counter = counter;
        body.truncate(n);
        self.rx.keystream(counter, &mut body);
        Ok(body)
    }

    /// Flushes and closes the sending side, so the peer sees a clean end of stream.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// Keys and counter of one direction.
struct Half {
    cipher: aes::Aes256,
    mac_key: [u8; 32],
    dir: u8,
    counter: u64,
}

impl Half {
    fn new(enc: &[u8; 32], mac_key: [u8; 32], dir: u8) -> Self {
        Self {
            cipher: aes::Aes256::new(enc.into()),
            mac_key,
            dir,
            counter: 0,
        }
    }

    fn tag(&self, counter: u64, len: u32, ciphertext: &[u8]) -> [u8; MAC_LEN] {
        let mut m = hmac(&self.mac_key);
        m.update(&[self.dir]);
        m.update(&counter.to_le_bytes());
        m.update(&len.to_le_bytes());
        m.update(ciphertext);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// XORs the CTR keystream for message `counter` into `data`. The counter block is
    /// `direction || message counter || 0 0 0 || block index`, unique per session key since
    /// message counters never repeat in a direction and a message has far fewer than 2^32
    /// blocks.
    fn keystream(&self, counter: u64, data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(16).enumerate() {
            let mut block = [0u8; 16];
            block[0] = self.dir;
            block[1..9].copy_from_slice(&counter.to_be_bytes());
            // A message is at most MAX_WIRE_MESSAGE_LEN bytes, so the block index fits u32.
            block[12..16].copy_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            let mut ga = aes::Block::from(block);
            self.cipher.encrypt_block(&mut ga);
            for (d, k) in chunk.iter_mut().zip(ga.iter()) {
                *d ^= k;
            }
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this never fails; the fallback keeps it panic-free.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

async fn write_all(s: &mut TcpStream, b: &[u8], timeout: Duration) -> Result<(), WireError> {
    match tokio::time::timeout(timeout, s.write_all(b)).await {
        Ok(r) => r.map_err(WireError::Io),
        Err(_) => Err(WireError::Timeout(timeout)),
    }
}

/// Reads exactly `buf.len()` bytes. An end of stream before the first byte is
/// [`WireError::Closed`] if `at_boundary`, else (and after the first byte) `Truncated`.
async fn read_exact(
    s: &mut TcpStream,
    buf: &mut [u8],
    timeout: Duration,
    at_boundary: bool,
) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        let n = match tokio::time::timeout(timeout, s.read(&mut buf[got..])).await {
            Ok(r) => r?,
            Err(_) => return Err(WireError::Timeout(timeout)),
        };
        if n == 0 {
            return Err(if got == 0 && at_boundary {
                WireError::Closed
            } else {
                WireError::Truncated
            });
        }
        got += n;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Kind of a manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// SHA-256 of the contents.
        sha256: [u8; 32],
    },
}

/// One directory or regular file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the tree root, components joined by `/`, raw bytes.
    pub path: Vec<u8>,
    /// Permission bits (`mode & 0o777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Directory or file.
    pub kind: EntryKind,
}

/// The sender's description of its tree: the root's attributes and every entry, sorted by
/// path bytes so that a parent always precedes its children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Root directory's permission bits.
    pub root_mode: u32,
    /// Root directory's owner.
    pub root_uid: u32,
    /// Root directory's group.
    pub root_gid: u32,
    /// Entries.
    pub entries: Vec<Entry>,
}

/// A message of the replication protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client to server, first: asks for the manifest (and confirms the session key).
    Request,
    /// Server to client: the tree.
    Manifest(Manifest),
    /// Client to server: indices into the manifest of the files whose contents it needs,
    /// strictly increasing.
    Need(Vec<u32>),
    /// Server to client: the contents of one needed file, in the order of the `Need`.
    File {
        /// Index into the manifest.
        index: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// Client to server: the tree is installed as this generation.
    Ack {
        /// Generation now current.
        generation: u64,
    },
    /// Either way: the sender of this gives up, and says why.
    Abort(String),
}

const T_REQUEST: u8 = 1;
const T_MANIFEST: u8 = 2;
const T_NEED: u8 = 3;
const T_FILE: u8 = 4;
const T_ACK: u8 = 5;
const T_ABORT: u8 = 6;
const K_DIR: u8 = 1;
const K_FILE: u8 = 2;

impl Message {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Self::Request => b.push(T_REQUEST),
            Self::Manifest(m) => {
                b.push(T_MANIFEST);
                b.extend_from_slice(&m.root_mode.to_le_bytes());
                b.extend_from_slice(&m.root_uid.to_le_bytes());
                b.extend_from_slice(&m.root_gid.to_le_bytes());
                put_len32(&mut b, m.entries.len());
                for e in &m.entries {
                    b.push(match e.kind {
                        EntryKind::Dir => K_DIR,
                        EntryKind::File { .. } => K_FILE,
                    });
                    let plen = u16::try_from(e.path.len()).unwrap_or(u16::MAX);
                    b.extend_from_slice(&plen.to_le_bytes());
                    b.extend_from_slice(&e.path[..usize::from(plen)]);
                    b.extend_from_slice(&e.mode.to_le_bytes());
                    b.extend_from_slice(&e.uid.to_le_bytes());
                    b.extend_from_slice(&e.gid.to_le_bytes());
                    if let EntryKind::File { size, sha256 } = &e.kind {
                        b.extend_from_slice(&size.to_le_bytes());
                        b.extend_from_slice(sha256);
                    }
                }
            }
            Self::Need(v) => {
                b.push(T_NEED);
                put_len32(&mut b, v.len());
                for i in v {
                    b.extend_from_slice(&i.to_le_bytes());
                }
            }
            Self::File { index, data } => {
                b.reserve(5 + data.len());
                b.push(T_FILE);
                b.extend_from_slice(&index.to_le_bytes());
                b.extend_from_slice(data);
            }
            Self::Ack { generation } => {
                b.push(T_ACK);
                b.extend_from_slice(&generation.to_le_bytes());
            }
            Self::Abort(reason) => {
                b.push(T_ABORT);
                let r = reason.as_bytes();
                b.extend_from_slice(&r[..r.len().min(MAX_ABORT_LEN)]);
            }
        }
        b
    }

    /// Decodes a message. Shape only: paths and limits are checked by the tree code, which
    /// knows the limits.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(b);
        let m = match r.u8()? {
            T_REQUEST => Self::Request,
            T_MANIFEST => {
                let root_mode = r.u32()?;
                let root_uid = r.u32()?;
                let root_gid = r.u32()?;
                let n = r.u32()? as usize;
                // Each entry takes at least 16 bytes, so a count beyond that is a lie; this
                // bounds the allocation by the message length.
                if n > r.0.len() / MIN_ENTRY_LEN {
                    return Err(WireError::Malformed("manifest count exceeds its length"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let kind = r.u8()?;
                    let plen = usize::from(r.u16()?);
                    let path = r.take(plen)?.to_vec();
                    let mode = r.u32()?;
                    let uid = r.u32()?;
                    let gid = r.u32()?;
                    let kind = match kind {
                        K_DIR => EntryKind::Dir,
                        K_FILE => {
                            let size = r.u64()?;
                            let mut sha256 = [0u8; 32];
                            sha256.copy_from_slice(r.take(32)?);
                            EntryKind::File { size, sha256 }
                        }
                        _ => return Err(WireError::Malformed("unknown entry kind")),
                    };
                    entries.push(Entry {
                        path,
                        mode,
                        uid,
                        gid,
                        kind,
                    });
                }
                Self::Manifest(Manifest {
                    root_mode,
                    root_uid,
                    root_gid,
                    entries,
                })
            }
            T_NEED => {
                let n = r.u32()? as usize;
                if n > r.0.len() / 4 {
                    return Err(WireError::Malformed("need count exceeds its length"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.u32()?);
                }
                Self::Need(v)
            }
            T_FILE => {
                let index = r.u32()?;
                let data = r.take(r.0.len())?.to_vec();
                Self::File { index, data }
            }
            T_ACK => Self::Ack {
                generation: r.u64()?,
            },
            T_ABORT => {
                let rest = r.take(r.0.len())?;
                if rest.len() > MAX_ABORT_LEN {
                    return Err(WireError::Malformed("abort reason too long"));
                }
                Self::Abort(String::from_utf8_lossy(rest).into_owned())
            }
            _ => return Err(WireError::Malformed("unknown message type")),
        };
        if !r.0.is_empty() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(m)
    }
}

fn put_len32(b: &mut Vec<u8>, n: usize) {
    b.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// A cursor over wire bytes that fails on short input instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("message too short"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// Direction byte of client-to-server messages, in the MAC and the CTR block.
const DIR_CLIENT_TO_SERVER: u8 = 0x01;
/// Direction byte of server-to-client messages.
const DIR_SERVER_TO_CLIENT: u8 = 0x02;
/// Smallest encoded manifest entry (kind, path length, mode, uid, gid).
const MIN_ENTRY_LEN: usize = 15;
/// Longest abort reason carried; enough for a path and a sentence.
const MAX_ABORT_LEN: usize = 1024;
/// Hard ceiling on any message this code sends, whatever the configured limits: a file of the
/// largest allowed size plus its header, rounded up.
pub const MAX_WIRE_MESSAGE_LEN: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Message::Manifest(Manifest {
            root_mode: 0o750,
            root_uid: 0,
            root_gid: 4,
            entries: vec![
                Entry {
                    path: b"conf.d".to_vec(),
                    mode: 0o755,
                    uid: 1,
                    gid: 2,
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: b"conf.d/a.conf".to_vec(),
                    mode: 0o640,
                    uid: 1,
                    gid: 2,
                    kind: EntryKind::File {
                        size: 3,
                        sha256: [7; 32],
                    },
                },
            ],
        });
        for msg in [
            m,
            Message::Request,
            Message::Need(vec![1, 5]),
            Message::File {
                index: 3,
                data: b"abc".to_vec(),
            },
            Message::Ack { generation: 9 },
            Message::Abort("no".to_owned()),
        ] {
            assert_eq!(Message::decode(&msg.encode()).ok(), Some(msg));
        }
    }

    #[test]
    fn short_and_trailing_input_rejected() {
        let enc = Message::Need(vec![1, 2, 3]).encode();
        for cut in 0..enc.len() {
            assert!(Message::decode(&enc[..cut]).is_err());
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(Message::decode(&long).is_err());
        // A huge count in a short message does not allocate.
        let mut lie = vec![T_MANIFEST];
        lie.extend_from_slice(&[0; 12]);
        lie.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode(&lie).is_err());
    }
}
