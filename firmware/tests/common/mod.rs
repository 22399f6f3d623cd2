//! Shared pieces of the firmware's host tests: a key, settings with short times, and a host
//! that encodes heartbeat frames the way the agent does.
#![allow(dead_code, unreachable_pub)]

use firmware::{Bridge, Config, TriggerAction};
use proto::serial::MAX_ENCODED_LEN;
use proto::{Flags, Heartbeat, Key, NodeId, Role, View};

pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
pub const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";
pub const CLUSTER: u32 = 0x5742;
pub const HOST: u8 = 2;
pub const TIMEOUT_MS: u64 = 1_000;
pub const GRACE_MS: u64 = 3_000;
pub const TRIGGER_MS: u64 = 500;
pub const UNIT: u8 = 1;

pub fn config() -> Config<'static> {
    Config {
        unit: UNIT,
        timeout_ms: 1_000,
        grace_ms: 3_000,
        trigger_ms: 500,
        action: TriggerAction::PowerCycle,
        triggers_max: 2,
        modbus_silence_ms: 4,
        ..Config::new(Key::new(KEY), CLUSTER, node(HOST))
    }
}

pub fn bridge() -> Bridge<'static> {
    Bridge::new(config()).expect("valid settings")
}

pub fn node(id: u8) -> NodeId {
    NodeId::new(id).expect("valid node id")
}

/// The host's side of the cable: numbers its frames as the agent does.
pub struct Host {
    pub sender: u8,
    pub incarnation: u32,
    pub sequence: u64,
    pub key: &'static [u8],
    pub cluster: u32,
}

impl Host {
    pub fn new() -> Self {
        Self {
            sender: HOST,
            incarnation: 7,
            sequence: 0,
            key: KEY,
            cluster: CLUSTER,
        }
    }

    pub fn heartbeat(&mut self) -> Vec<u8> {
        self.wire(0)
    }

    pub fn arm(&mut self) -> Vec<u8> {
        self.wire(Flags::WATCHDOG_ARM)
    }

    pub fn disarm(&mut self) -> Vec<u8> {
        self.wire(Flags::WATCHDOG_DISARM)
    }

    /// One serial-framed frame with `flags`, the next sequence number.
    pub fn wire(&mut self, flags: u16) -> Vec<u8> {
        self.sequence += 1;
        self.encode(flags, self.sequence)
    }

    /// A frame with an explicit sequence number (for replays).
    pub fn encode(&self, flags: u16, sequence: u64) -> Vec<u8> {
        let hb = Heartbeat {
            cluster_id: self.cluster,
            sender: node(self.sender),
            link: 0,
            role: Role::Standby,
            flags: Flags(flags),
            holder: None,
            prior: None,
            incarnation: self.incarnation,
            sequence,
            epoch: 0,
            view: View(0),
            seen_epoch: 0,
        };
        let mut frame = [0u8; proto::FRAME_LEN];
        hb.encode(&Key::new(self.key), &mut frame);
        let mut wire = [0u8; MAX_ENCODED_LEN];
        let n = proto::serial::encode(&frame, &mut wire);
        wire[..n].to_vec()
    }
}

pub fn send(bridge: &mut Bridge<'_>, now_ms: u64, bytes: &[u8]) {
    for &b in bytes {
        bridge.host_byte(now_ms, b);
    }
}

/// A Modbus request with its CRC.
pub fn request(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.extend_from_slice(&firmware::modbus::crc16(bytes).to_le_bytes());
    v
}

/// Sends a Modbus request and returns the answer, if any.
pub fn modbus(bridge: &mut Bridge<'_>, now_ms: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    for &b in bytes {
        bridge.modbus_byte(now_ms, b);
    }
    bridge.poll_reply().map(|adu| adu.to_vec())
}

pub fn events(bridge: &mut Bridge<'_>) -> Vec<firmware::Event> {
    std::iter::from_fn(|| bridge.poll_event())
        .take(64)
        .collect()
}
