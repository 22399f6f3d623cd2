//! The heartbeat frame: fixed layout, little-endian, authenticated.
//!
//! Layout (offsets in bytes):
//!
//! | off | len | field                                             |
//! |-----|-----|---------------------------------------------------|
//! |   0 |   4 | magic `WKHB`                                      |
//! |   4 |   1 | version ([`VERSION`])                             |
//! |   5 |   1 | role ([`Role`])                                   |
//! |   6 |   2 | flags ([`Flags`])                                 |
//! |   8 |   4 | cluster id                                        |
//! |  12 |   1 | sender node id (1..=[`MAX_NODES`])                |
//! |  13 |   1 | holder node id as the sender sees it (0 = none)   |
//! |  14 |   1 | link id the frame was sent on (0..[`MAX_LINKS`])  |
//! |  15 |   1 | in a vote: the voter's previous candidate (0 = none) |
//! |  16 |   4 | incarnation (boot count of the sender)            |
//! |  20 |   8 | sequence (per sender and link, starts at 1)       |
//! |  28 |   8 | ownership epoch                                   |
//! |  36 |   4 | membership view (bit `n-1` = node `n` seen alive) |
//! |  40 |   8 | highest epoch the sender has seen anywhere        |
//! |  48 |  16 | HMAC-SHA256(key, bytes 0..48), first 16 bytes     |
//!
//! The link id is authenticated so that a frame captured on one link cannot be replayed on
//! another: each link has its own sequence space and its own replay window.
//!
//! Decoding checks length, magic and version, then the MAC (in constant time), and only then
//! interprets the fields, so unauthenticated bytes never reach the field parsers' error paths
//! in a way a forger could use to probe them.

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{MAX_LINKS, MAX_NODES};

/// Frame magic: "WKHB" (watchkeeper heartbeat).
pub const MAGIC: [u8; 4] = *b"WKHB";
/// Wire format version. A receiver drops frames of any other version.
pub const VERSION: u8 = 1;
/// Length of the truncated MAC. 128 bits keep forgery out of reach while fitting a frame in
/// one 64-byte serial burst.
pub const MAC_LEN: usize = 16;
/// Length of the authenticated header.
pub const HEADER_LEN: usize = 48;
/// Length of a whole frame on the wire.
pub const FRAME_LEN: usize = HEADER_LEN + MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A node id: 1..=[`MAX_NODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u8);

impl NodeId {
    /// Returns the id if it is in 1..=[`MAX_NODES`].
    pub const fn new(id: u8) -> Option<Self> {
        if id >= 1 && (id as usize) <= MAX_NODES {
            Some(Self(id))
        } else {
            None
        }
    }

    /// The numeric id.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Zero-based index, for tables sized [`MAX_NODES`].
    pub const fn index(self) -> usize {
        self.0 as usize - 1
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the sender is doing, as it announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Booting: has not yet seen or fenced its peers, holds nothing.
    Starting = 0,
    /// Member that does not hold the resource group.
    Standby = 1,
    /// Holds (or is starting) the resource group.
    Holder = 2,
    /// Stopping the resource group to hand it over.
    Releasing = 3,
    /// Votes for quorum, never holds resources.
    Witness = 4,
    /// Lost quorum or was told to stop: stopping everything and starving its watchdog.
    SelfFencing = 5,
    /// Asking for votes to take the resource group over at `epoch`.
    Candidate = 6,
}

impl Role {
    /// Parses the wire value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Starting,
            1 => Self::Standby,
            2 => Self::Holder,
            3 => Self::Releasing,
            4 => Self::Witness,
            5 => Self::SelfFencing,
            6 => Self::Candidate,
            _ => return None,
        })
    }

    /// Lower-case name for logs and status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Standby => "standby",
            Self::Holder => "holder",
            Self::Releasing => "releasing",
            Self::Witness => "witness",
            Self::SelfFencing => "self-fencing",
            Self::Candidate => "candidate",
        }
    }
}

/// Frame flags. Unknown bits are carried through unchanged so that newer senders can add
/// advisory bits without breaking older receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// The sender has quorum as it counts it.
    pub const QUORATE: u16 = 1 << 0;
    /// The sender is in operator standby and will not take over.
    pub const STANDBY_MODE: u16 = 1 << 1;
    /// The sender has released the resource group at `epoch` (clean handover).
    pub const RELEASED: u16 = 1 << 2;
    /// `holder` and `epoch` carry the sender's vote: it grants `holder` the group at `epoch`.
    pub const VOTE: u16 = 1 << 3;
    /// Sent to a watchdog bridge (firmware): start watching this sender's heartbeats. A bridge
    /// never arms on ordinary heartbeats, so a host whose agent does not ask for it is never
    /// reset by a bridge it does not know about.
    pub const WATCHDOG_ARM: u16 = 1 << 4;
    /// Sent to a watchdog bridge on a clean, planned stop: stop watching (the magic close).
    pub const WATCHDOG_DISARM: u16 = 1 << 5;

    /// Bits 8..14 of a vote carry the holder the voter last knew of (0 = none), so that the
    /// candidate learns of every holder its electorate knows and must fence or outwait it.
    const KNOWN_HOLDER_SHIFT: u16 = 8;
    const KNOWN_HOLDER_MASK: u16 = 0x3F << Self::KNOWN_HOLDER_SHIFT;

    /// Whether `bit` is set.
    pub const fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// The flags with the voter's known holder set (see [`Flags::known_holder`]).
    pub fn with_known_holder(self, holder: Option<NodeId>) -> Self {
        let id = u16::from(holder.map_or(0, NodeId::get));
        Self((self.0 & !Self::KNOWN_HOLDER_MASK) | (id << Self::KNOWN_HOLDER_SHIFT))
    }

    /// In a vote: the holder the voter last knew of.
    pub fn known_holder(self) -> Option<NodeId> {
        let id = (self.0 & Self::KNOWN_HOLDER_MASK) >> Self::KNOWN_HOLDER_SHIFT;
        u8::try_from(id).ok().and_then(NodeId::new)
    }
}

/// Membership view: the set of node ids the sender currently sees alive (itself included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct View(pub u32);

impl View {
    /// Adds `node` to the view.
    pub fn insert(&mut self, node: NodeId) {
        self.0 |= 1 << node.index();
    }

    /// Whether `node` is in the view.
    pub const fn contains(self, node: NodeId) -> bool {
        self.0 & (1 << node.index()) != 0
    }

    /// Number of nodes in the view.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether the view is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The cluster key, borrowed. `Debug` never shows the bytes.
#[derive(Clone, Copy)]
pub struct Key<'a>(&'a [u8]);

impl<'a> Key<'a> {
    /// Wraps key material (any length; the agent requires at least 32 bytes).
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    fn mac(&self, header: &[u8]) -> [u8; MAC_LEN] {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = match HmacSha256::new_from_slice(self.0) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(header);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

impl fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<redacted {} bytes>)", self.0.len())
    }
}

/// A decoded, authenticated heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// Cluster the sender belongs to.
    pub cluster_id: u32,
    /// Sending node.
    pub sender: NodeId,
    /// Link the frame was sent on.
    pub link: u8,
    /// The sender's role.
    pub role: Role,
    /// Advisory flags.
    pub flags: Flags,
    /// Which node the sender believes holds the resource group.
    pub holder: Option<NodeId>,
    /// In a vote: the candidate the voter voted for before this one, which may hold the group
    /// by now and must be accounted for by the new candidate.
    pub prior: Option<NodeId>,
    /// Boot count of the sender; grows on every start of its agent.
    pub incarnation: u32,
    /// Per (sender, link) sequence number; starts at 1 and only grows within an incarnation.
    pub sequence: u64,
    /// Ownership epoch the sender knows.
    pub epoch: u64,
    /// Nodes the sender sees alive.
    pub view: View,
    /// The highest epoch the sender has seen in any frame or on its disk: a node that has seen
    /// epoch `n` will not take the group over at any lower epoch.
    pub seen_epoch: u64,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not exactly [`FRAME_LEN`] bytes.
    Length {
        /// Bytes received.
        got: usize,
    },
    /// Does not start with [`MAGIC`].
    Magic,
    /// A wire version this build does not speak.
    Version {
        /// Version received.
        got: u8,
    },
    /// The MAC does not match: wrong key, forged or corrupted frame.
    Auth,
    /// Authenticated, but for another cluster (two clusters sharing a key and a network).
    Cluster {
        /// Cluster id received.
        got: u32,
    },
    /// Authenticated, but a field holds a value this build rejects.
    Field {
        /// Which field.
        field: &'static str,
        /// Its value, widened.
        value: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { got } => write!(f, "frame is {got} bytes, expected {FRAME_LEN}"),
            Self::Magic => f.write_str("bad magic"),
            Self::Version { got } => write!(f, "unsupported version {got}, expected {VERSION}"),
            Self::Auth => f.write_str("authentication failed (wrong key or forged frame)"),
            Self::Cluster { got } => write!(f, "frame for cluster id {got}"),
            Self::Field { field, value } => write!(f, "invalid {field} {value}"),
        }
    }
}

impl Heartbeat {
    /// Encodes and authenticates the frame into `out`.
    ///
    /// Nothing here can fail: every field of a `Heartbeat` is valid by construction.
    pub fn encode(&self, key: &Key<'_>, out: &mut [u8; FRAME_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.role as u8;
        out[6..8].copy_from_slice(&self.flags.0.to_le_bytes());
        out[8..12].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[12] = self.sender.get();
        out[13] = self.holder.map_or(0, NodeId::get);
        out[14] = self.link;
        out[15] = self.prior.map_or(0, NodeId::get);
        out[16..20].copy_from_slice(&self.incarnation.to_le_bytes());
        out[20..28].copy_from_slice(&self.sequence.to_le_bytes());
        out[28..36].copy_from_slice(&self.epoch.to_le_bytes());
        out[36..40].copy_from_slice(&self.view.0.to_le_bytes());
        out[40..48].copy_from_slice(&self.seen_epoch.to_le_bytes());
        let mac = key.mac(&out[..HEADER_LEN]);
        out[HEADER_LEN..].copy_from_slice(&mac);
    }

    /// Decodes and authenticates a frame for cluster `cluster_id`.
    pub fn decode(bytes: &[u8], key: &Key<'_>, cluster_id: u32) -> Result<Self, DecodeError> {
        let frame: &[u8; FRAME_LEN] = bytes
            .try_into()
            .map_err(|_| DecodeError::Length { got: bytes.len() })?;
        if frame[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if frame[4] != VERSION {
            return Err(DecodeError::Version { got: frame[4] });
        }
        let expected = key.mac(&frame[..HEADER_LEN]);
        if !bool::from(expected.ct_eq(&frame[HEADER_LEN..])) {
            return Err(DecodeError::Auth);
        }
        let h = Header(frame);
        let got_cluster = h.u32_at(8);
        if got_cluster != cluster_id {
            return Err(DecodeError::Cluster { got: got_cluster });
        }
        let role = Role::from_u8(frame[5]).ok_or(field("role", frame[5]))?;
        let sender = NodeId::new(frame[12]).ok_or(field("sender", frame[12]))?;
        let holder = match frame[13] {
            0 => None,
            n => Some(NodeId::new(n).ok_or(field("holder", n))?),
        };
        let link = frame[14];
        if usize::from(link) >= MAX_LINKS {
            return Err(field("link", link));
        }
        let prior = match frame[15] {
            0 => None,
            n => Some(NodeId::new(n).ok_or(field("prior", n))?),
        };
        let sequence = h.u64_at(20);
        if sequence == 0 {
            return Err(DecodeError::Field {
                field: "sequence",
                value: 0,
            });
        }
        let view = View(h.u32_at(36));
        if MAX_NODES < 32 && view.0 >> MAX_NODES != 0 {
            return Err(DecodeError::Field {
                field: "view",
                value: u64::from(view.0),
            });
        }
        Ok(Self {
            cluster_id: got_cluster,
            sender,
            link,
            role,
            flags: Flags(h.u16_at(6)),
            holder,
            prior,
            incarnation: h.u32_at(16),
            sequence,
            epoch: h.u64_at(28),
            view,
            seen_epoch: h.u64_at(40),
        })
    }
}

fn field(field: &'static str, value: u8) -> DecodeError {
    DecodeError::Field {
        field,
        value: u64::from(value),
    }
}

/// Fixed-offset little-endian reads from a frame whose length is already checked, so the
/// slices below are always in bounds.
struct Header<'a>(&'a [u8; FRAME_LEN]);

impl Header<'_> {
    fn u16_at(&self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        b.copy_from_slice(&self.0[off..off + 2]);
        u16::from_le_bytes(b)
    }

    fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(b)
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(b)
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-key-size MACs; HMAC takes any key length.
    panic!("HMAC-SHA256 rejected a key; HMAC accepts keys of every length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    pub(crate) fn sample() -> Heartbeat {
        let mut view = View::default();
        view.insert(NodeId::new(1).unwrap());
        view.insert(NodeId::new(2).unwrap());
        Heartbeat {
            cluster_id: 0xdead_beef,
            sender: NodeId::new(2).unwrap(),
            link: 1,
            role: Role::Holder,
            flags: Flags(Flags::QUORATE),
            holder: NodeId::new(2),
            prior: None,
            incarnation: 7,
            sequence: 42,
            epoch: 9,
            view,
            seen_epoch: 11,
        }
    }

    #[test]
    fn roundtrip() {
        let hb = sample();
        let mut buf = [0u8; FRAME_LEN];
        hb.encode(&Key::new(KEY), &mut buf);
        assert_eq!(&buf[0..4], b"WKHB");
        assert_eq!(Heartbeat::decode(&buf, &Key::new(KEY), 0xdead_beef), Ok(hb));
    }

    #[test]
    fn wrong_key_is_auth_error() {
        let mut buf = [0u8; FRAME_LEN];
        sample().encode(&Key::new(KEY), &mut buf);
        let other = b"0123456789abcdef0123456789abcdeX";
        assert_eq!(
            Heartbeat::decode(&buf, &Key::new(other), 0xdead_beef),
            Err(DecodeError::Auth)
        );
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let mut buf = [0u8; FRAME_LEN];
        sample().encode(&Key::new(KEY), &mut buf);
        for i in 0..FRAME_LEN * 8 {
            let mut b = buf;
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                Heartbeat::decode(&b, &Key::new(KEY), 0xdead_beef).is_err(),
                "bit {i}"
            );
        }
    }

    #[test]
    fn other_cluster_and_lengths() {
        let mut buf = [0u8; FRAME_LEN];
        sample().encode(&Key::new(KEY), &mut buf);
        assert_eq!(
            Heartbeat::decode(&buf, &Key::new(KEY), 1),
            Err(DecodeError::Cluster { got: 0xdead_beef })
        );
        assert_eq!(
            Heartbeat::decode(&buf[..FRAME_LEN - 1], &Key::new(KEY), 0xdead_beef),
            Err(DecodeError::Length { got: FRAME_LEN - 1 })
        );
        assert_eq!(
            Heartbeat::decode(&[], &Key::new(KEY), 0),
            Err(DecodeError::Length { got: 0 })
        );
    }

    #[test]
    fn authenticated_but_invalid_fields_are_rejected() {
        let key = Key::new(KEY);
        let reseal = |patch: &dyn Fn(&mut [u8; FRAME_LEN])| {
            let mut buf = [0u8; FRAME_LEN];
            sample().encode(&key, &mut buf);
            patch(&mut buf);
            let mac = key.mac(&buf[..HEADER_LEN]);
            buf[HEADER_LEN..].copy_from_slice(&mac);
            Heartbeat::decode(&buf, &key, 0xdead_beef)
        };
        assert_eq!(
            reseal(&|b| b[5] = 9),
            Err(DecodeError::Field {
                field: "role",
                value: 9
            })
        );
        assert_eq!(
            reseal(&|b| b[12] = 0),
            Err(DecodeError::Field {
                field: "sender",
                value: 0
            })
        );
        assert_eq!(
            reseal(&|b| b[12] = 33),
            Err(DecodeError::Field {
                field: "sender",
                value: 33
            })
        );
        assert_eq!(
            reseal(&|b| b[13] = 40),
            Err(DecodeError::Field {
                field: "holder",
                value: 40
            })
        );
        assert_eq!(
            reseal(&|b| b[14] = 8),
            Err(DecodeError::Field {
                field: "link",
                value: 8
            })
        );
        assert_eq!(
            reseal(&|b| b[15] = 33),
            Err(DecodeError::Field {
                field: "prior",
                value: 33
            })
        );
        assert_eq!(
            reseal(&|b| b[20..28].copy_from_slice(&[0; 8])),
            Err(DecodeError::Field {
                field: "sequence",
                value: 0
            })
        );
        assert_eq!(reseal(&|b| b[4] = 2), Err(DecodeError::Version { got: 2 }));
        assert_eq!(reseal(&|b| b[0] = b'X'), Err(DecodeError::Magic));
    }

    #[test]
    fn known_holder_bits() {
        let f = Flags(Flags::VOTE | Flags::RELEASED).with_known_holder(NodeId::new(32));
        assert_eq!(f.known_holder(), NodeId::new(32));
        assert!(f.has(Flags::VOTE) && f.has(Flags::RELEASED));
        assert_eq!(f.with_known_holder(None).known_holder(), None);
    }

    #[test]
    fn node_id_bounds() {
        assert!(NodeId::new(0).is_none());
        assert_eq!(NodeId::new(1).map(NodeId::index), Some(0));
        assert_eq!(NodeId::new(32).map(NodeId::get), Some(32));
        assert!(NodeId::new(33).is_none());
    }
}
