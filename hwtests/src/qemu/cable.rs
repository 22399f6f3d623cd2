//! A serial null-modem cable between two guests: each guest's 16550 UART is a QEMU socket
//! chardev in server mode (`-chardev socket,server=on,wait=off`), and this relay connects to
//! both and copies bytes both ways.
//!
//! Why a relay rather than one guest connecting to the other: either guest can be powered off
//! or rebooted (a new qemu process, a new socket) at any time, and the cable must survive that
//! as a real cable does. The relay reconnects to whichever end went away. Cutting the cable
//! drops both connections: QEMU then discards what the guest writes, and the guest sees pure
//! silence with no error, as on a 3-wire null modem without modem-control lines.
//!
//! Two more faults, as a bad cable gives them: line noise ([`SocketCable::set_noise`] flips one
//! bit in every n-th byte) and latency ([`SocketCable::set_delay`] holds every chunk for a
//! while before delivering it, in order).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Flip a bit in every n-th byte (0: clean).
    noise_every: AtomicU32,
    /// Delivery delay in milliseconds.
    delay_ms: AtomicU64,
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

    /// Line noise: one bit flipped in every `every`-th byte carried (0 for a clean line).
    pub fn set_noise(&self, every: u32) {
        self.shared.noise_every.store(every, Ordering::SeqCst);
    }

    /// Latency: every chunk is delivered `delay` after it was read (zero for none).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
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
/// (noised and delayed as set) until one end closes or the cable is cut. Each pass waits at
/// most [`TICK`], so `stop`, `cut` and due deliveries take effect within that.
fn relay(ends: &[PathBuf; 2], shared: &Shared) {
    let mut conns: Option<[UnixStream; 2]> = None;
    let mut buf = [0u8; 4096];
    // Chunks in flight: when due, which end they go to, the bytes. Bounded by MAX_IN_FLIGHT.
    let mut in_flight: VecDeque<(Instant, usize, Vec<u8>)> = VecDeque::new();
    let mut carried: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.cut.load(Ordering::SeqCst) {
            conns = None;
            in_flight.clear();
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
        let mut broken = false;
        while in_flight
            .front()
            .is_some_and(|(due, _, _)| *due <= Instant::now())
        {
            if let Some((_, to, bytes)) = in_flight.pop_front() {
                if pair[to].write_all(&bytes).is_err() {
                    broken = true;
                }
            }
        }
        let ready = {
            let mut fds = [
                PollFd::new(pair[0].as_fd(), PollFlags::POLLIN),
                PollFd::new(pair[1].as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(TICK_MS)) {
                Ok(0) => [false, false],
                Ok(_) => [0, 1].map(|i| fds[i].revents().is_some_and(|r| !r.is_empty())),
                Err(_) => [false, false],
            }
        };
        for from in 0..2 {
            if broken || !ready[from] {
                continue;
            }
            let n = pair[from].read(&mut buf).unwrap_or(0);
            if n == 0 {
                broken = true;
                continue;
            }
            let mut chunk = buf[..n].to_vec();
            let every = u64::from(shared.noise_every.load(Ordering::Relaxed));
            for (k, byte) in chunk.iter_mut().enumerate() {
                let index = carried + u64::try_from(k).unwrap_or(0);
                if every > 0 && index % every == every - 1 {
                    *byte ^= 1 << (index % 8);
                }
            }
            carried += u64::try_from(n).unwrap_or(0);
            shared
                .bytes
                .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            let delay = Duration::from_millis(shared.delay_ms.load(Ordering::Relaxed));
            if delay.is_zero() && in_flight.is_empty() {
                if pair[1 - from].write_all(&chunk).is_err() {
                    broken = true;
                }
            } else if in_flight.len() < MAX_IN_FLIGHT {
                in_flight.push_back((Instant::now() + delay, 1 - from, chunk));
            }
        }
        if broken {
            // One guest went away (powered off, rebooted into a new process): drop both so the
            // other side sees silence, not half a cable, then reconnect.
            conns = None;
            in_flight.clear();
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
/// Chunks held by a delay; beyond this a slow line drops them, as an overrun UART would.
const MAX_IN_FLIGHT: usize = 4096;
/// Retry interval while an end is missing (a guest off or booting).
const RECONNECT: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Two listening ends, as two qemu chardev servers; the relay connects to both.
    fn ends(dir: &Path) -> (SocketCable, UnixStream, UnixStream) {
        let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
        let (la, lb) = (
            UnixListener::bind(&a).expect("bind a"),
            UnixListener::bind(&b).expect("bind b"),
        );
        let cable = SocketCable::start(&a, &b).expect("relay");
        let (sa, _) = la.accept().expect("accept a");
        let (sb, _) = lb.accept().expect("accept b");
        for s in [&sa, &sb] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
        }
        (cable, sa, sb)
    }

    fn read_some(s: &mut UnixStream) -> Vec<u8> {
        let mut buf = [0u8; 64];
        s.read(&mut buf)
            .map(|n| buf[..n].to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn bytes_cross_both_ways_with_noise_and_delay_and_stop_when_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cable, mut a, mut b) = ends(dir.path());
        a.write_all(b"ping").expect("write");
        assert_eq!(read_some(&mut b), b"ping");
        b.write_all(b"pong").expect("write");
        assert_eq!(read_some(&mut a), b"pong");
        assert_eq!(cable.bytes(), 8);

        // Bytes 8..15 of the stream: the 14th (index 13) gets bit 13 % 8 = 5 flipped.
        cable.set_noise(7);
        a.write_all(b"abcdefg").expect("write");
        let got = read_some(&mut b);
        assert_eq!(got.len(), 7);
        assert_eq!(got[5], b'f' ^ (1 << 5), "{got:?}");
        assert_eq!(&got[..5], b"abcde");
        cable.set_noise(0);

        cable.set_delay(Duration::from_millis(150));
        let sent = Instant::now();
        a.write_all(b"late").expect("write");
        assert_eq!(read_some(&mut b), b"late");
        assert!(sent.elapsed() >= Duration::from_millis(150));
        cable.set_delay(Duration::ZERO);

        cable.set_cut(true);
        std::thread::sleep(TICK * 3);
        // Cut: the relay dropped both connections, so each end reads end-of-file (not a
        // timeout).
        let mut buf = [0u8; 8];
        assert!(matches!(b.read(&mut buf), Ok(0)));
        assert!(matches!(a.read(&mut buf), Ok(0)));
    }
}
