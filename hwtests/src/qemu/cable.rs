//! A serial null-modem cable between two guests: each guest's 16550 UART is a QEMU socket
//! chardev in server mode (`-chardev socket,server=on,wait=off`), and this relay connects to
//! both and copies bytes both ways.
//!
//! Why a relay rather than one guest connecting to the other: either guest can be powered off
//! or rebooted (a new qemu process, a new socket) at any time, and the cable must survive that
//! as a real cable does. The relay reconnects to whichever end went away. Cutting the cable
//! drops both connections: QEMU then discards what the guest writes, and the guest sees pure
//! silence with no error, as on a 3-wire null modem without modem-control lines.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A running relay between two Unix sockets; stopped when dropped.
#[derive(Debug)]
pub struct SocketCable {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    bytes: AtomicU64,
}

impl SocketCable {
    /// Starts relaying between the sockets at `a` and `b` (which may not exist yet).
    pub fn start(a: &Path, b: &Path) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let ends = [a.to_path_buf(), b.to_path_buf()];
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("serial-cable".into())
            .spawn(move || relay(&ends, &s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Cuts (`true`) or reconnects (`false`) the cable.
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::SeqCst);
    }

    /// Bytes carried so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for SocketCable {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The relay loop: (re)connects both ends while not cut, then copies whatever either side sends
/// until one end closes or the cable is cut. Each pass waits at most [`TICK`], so `stop` and
/// `cut` take effect within that.
fn relay(ends: &[PathBuf; 2], shared: &Shared) {
    let mut conns: Option<[UnixStream; 2]> = None;
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.cut.load(Ordering::SeqCst) {
            conns = None;
            std::thread::sleep(TICK);
            continue;
        }
        let Some(pair) = conns.as_mut() else {
            conns = connect(ends);
            if conns.is_none() {
                std::thread::sleep(RECONNECT);
            }
            continue;
        };
        let ready = {
            let mut fds = [
                PollFd::new(pair[0].as_fd(), PollFlags::POLLIN),
                PollFd::new(pair[1].as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(TICK_MS)) {
                Ok(0) => continue,
                Ok(_) => [0, 1].map(|i| fds[i].revents().is_some_and(|r| !r.is_empty())),
                Err(_) => [false, false],
            }
        };
        let mut broken = false;
        for from in 0..2 {
            if !ready[from] {
                continue;
            }
            let n = pair[from].read(&mut buf).unwrap_or(0);
            if n == 0 {
                broken = true;
                break;
            }
            if pair[1 - from].write_all(&buf[..n]).is_err() {
                broken = true;
                break;
            }
            shared
                .bytes
                .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
        }
        if broken {
            // One guest went away (powered off, rebooted into a new process): drop both so the
            // other side sees silence, not half a cable, then reconnect.
            conns = None;
        }
    }
}

fn connect(ends: &[PathBuf; 2]) -> Option<[UnixStream; 2]> {
    let a = UnixStream::connect(&ends[0]).ok()?;
    let b = UnixStream::connect(&ends[1]).ok()?;
    Some([a, b])
}

/// Longest wait of one relay pass.
const TICK: Duration = Duration::from_millis(20);
/// The same, for `poll`.
const TICK_MS: u16 = 20;
/// Retry interval while an end is missing (a guest off or booting).
const RECONNECT: Duration = Duration::from_millis(50);
