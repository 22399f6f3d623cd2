//! An external watchdog bridge (the `firmware` crate on a microcontroller, or
//! `watchkeeper-bridge` on a Linux board) as a [`Watchdog`]: the agent's feeder drives it
//! exactly as it drives `/dev/watchdog`.
//!
//! # Why a watchdog backend, not a heartbeat link
//!
//! The bridge could have listened to an ordinary `[links]` serial entry, since it only needs
//! authenticated frames from its host. But the engine keeps heartbeats flowing while it
//! self-fences (its peers must hear the `self-fencing` role), so a bridge fed by the link would
//! keep a host alive that the engine has told to die; and a link that never hears a peer would
//! read as a broken heartbeat path. The watchdog feeder is the one place that stops on the
//! engine's word, on a stalled main loop, and never restarts: so the bridge is fed from there,
//! with one authenticated frame per feed.
//!
//! # Frames
//!
//! Every frame is a [`proto::Heartbeat`] under the bridge's key, numbered per incarnation like
//! any heartbeat, so the bridge's replay window refuses a recorded frame. Opening sends a frame
//! with [`Flags::WATCHDOG_ARM`] (the bridge never arms on anything else), each keepalive a
//! plain frame, and [`Watchdog::disarm`] a frame with [`Flags::WATCHDOG_DISARM`], the magic
//! close. Role, holder and epochs carry nothing the bridge reads. The incarnation must grow
//! with every open (the agent's persisted incarnation does), or the bridge refuses the new
//! frames as replays and fires.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::serial::MAX_ENCODED_LEN;
use proto::{Flags, Heartbeat, Key, NodeId, Role, View};
use tokio_serial::{DataBits, FlowControl, Parity, StopBits};

use super::{Watchdog, WatchdogCounters, WatchdogError};

/// Where the bridge is and how to authenticate to it.
#[derive(Clone)]
pub struct BridgeParams {
    /// The serial port wired to the bridge's host UART.
    pub device: PathBuf,
    /// Line speed.
    pub baud: u32,
    /// The key the bridge checks frames with.
    pub key: Vec<u8>,
    /// Cluster id the bridge expects.
    pub cluster_id: u32,
    /// This node's id (the bridge's configured host).
    pub node: NodeId,
    /// This run's incarnation; must be higher than any earlier run's.
    pub incarnation: u32,
}

impl fmt::Debug for BridgeParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeParams")
            .field("device", &self.device)
            .field("baud", &self.baud)
            .field("key", &format_args!("<redacted {} bytes>", self.key.len()))
            .field("cluster_id", &self.cluster_id)
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

/// An armed bridge; see the module docs.
pub struct BridgeWatchdog {
    params: BridgeParams,
    port: Box<dyn tokio_serial::SerialPort>,
    sequence: u64,
    counters: WatchdogCounters,
}

impl fmt::Debug for BridgeWatchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeWatchdog")
            .field("params", &self.params)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl BridgeWatchdog {
    /// Opens and locks the port (8N1, no flow control) and sends the arm frame.
    pub fn open(params: BridgeParams) -> Result<Self, WatchdogError> {
        let open_err = |e: tokio_serial::Error| WatchdogError::Open {
            device: params.device.clone(),
            source: std::io::Error::from(e),
        };
        let mut port = tokio_serial::new(params.device.to_string_lossy(), params.baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .timeout(WRITE_TIMEOUT)
            .open_native()
            .map_err(open_err)?;
        // A second agent on the same bridge would feed a host that is not its own.
        port.set_exclusive(true).map_err(open_err)?;
        let mut bridge = Self {
            params,
            port: Box::new(port),
            sequence: 0,
            counters: WatchdogCounters::default(),
        };
        bridge.send(Flags::WATCHDOG_ARM)?;
        Ok(bridge)
    }

    /// Frames sent so far (the last sequence number).
    pub fn frames_sent(&self) -> u64 {
        self.sequence
    }

    fn send(&mut self, flags: u16) -> Result<(), WatchdogError> {
        self.sequence += 1;
        let hb = Heartbeat {
            cluster_id: self.params.cluster_id,
            sender: self.params.node,
            link: 0,
            role: Role::Standby,
            flags: Flags(flags),
            holder: None,
            prior: None,
            incarnation: self.params.incarnation,
            sequence: self.sequence,
            epoch: 0,
            view: View::default(),
            seen_epoch: 0,
        };
        let mut frame = [0u8; proto::FRAME_LEN];
        hb.encode(&Key::new(&self.params.key), &mut frame);
        let mut wire = [0u8; MAX_ENCODED_LEN];
        let n = proto::serial::encode(&frame, &mut wire);
        self.port
            .write_all(&wire[..n])
            .and_then(|()| self.port.flush())
            .map_err(|source| WatchdogError::Write {
                device: self.params.device.clone(),
                source,
            })
    }
}

impl Watchdog for BridgeWatchdog {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let result = self.send(0);
        let counter = match &result {
            Ok(()) => &self.counters.keepalives,
            Err(_) => &self.counters.keepalive_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn disarm(mut self: Box<Self>) -> Result<(), WatchdogError> {
        self.send(Flags::WATCHDOG_DISARM)
    }

    fn name(&self) -> String {
        format!("bridge {}", self.params.device.display())
    }

    fn counters(&self) -> &WatchdogCounters {
        &self.counters
    }
}

/// Longest a frame may wait for the line: a frame is 70 bytes, 6 ms at 115200 baud and 73 ms
/// at 9600; a line that takes longer is not draining at all, and the feeder must not block.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    use proto::serial::Deframer;
    use std::io::Read as _;
    use std::os::fd::AsFd;

    #[test]
    fn arm_keepalive_and_disarm_frames_authenticate_in_sequence() {
        let pty = openpty(None, None).expect("openpty");
        let mut t = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        cfmakeraw(&mut t);
        tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &t).expect("raw");
        let path = nix::unistd::ttyname(pty.slave.as_fd()).expect("ttyname");
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let node = NodeId::new(3).expect("node 3");
        let params = BridgeParams {
            device: path,
            baud: 115_200,
            key: key.clone(),
            cluster_id: 9,
            node,
            incarnation: 41,
        };
        assert!(
            !format!("{params:?}").contains("0123"),
            "the key is redacted"
        );
        let mut wd = Box::new(BridgeWatchdog::open(params).expect("open"));
        wd.keepalive().expect("keepalive");
        wd.keepalive().expect("keepalive");
        assert_eq!(wd.counters().keepalives(), 2);
        assert_eq!(wd.frames_sent(), 3);
        wd.disarm().expect("disarm");

        let mut master = std::fs::File::from(pty.master);
        let mut deframer = Deframer::new();
        let mut frames = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..20 {
            let n = master.read(&mut buf).expect("read");
            for &b in &buf[..n] {
                if let Some(frame) = deframer.push(b) {
                    frames.push(frame.expect("framing"));
                }
            }
            if frames.len() == 4 {
                break;
            }
        }
        let decoded: Vec<_> = frames
            .iter()
            .map(|f| Heartbeat::decode(f, &Key::new(&key), 9).expect("authentic"))
            .collect();
        let flags: Vec<u16> = decoded.iter().map(|h| h.flags.0).collect();
        assert_eq!(flags, [Flags::WATCHDOG_ARM, 0, 0, Flags::WATCHDOG_DISARM]);
        let sequences: Vec<u64> = decoded.iter().map(|h| h.sequence).collect();
        assert_eq!(sequences, [1, 2, 3, 4]);
        assert!(decoded
            .iter()
            .all(|h| h.sender == node && h.incarnation == 41));
    }
}
