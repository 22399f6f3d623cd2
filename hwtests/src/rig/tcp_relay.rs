//! A TCP relay: the management switch's path to a TCP fence device (a Redfish BMC, a Modbus TCP
//! PDU) that the harness can cut, as [`super::relay::UdpRelay`] is for UDP devices.
//!
//! The simulators listen on 127.0.0.1 of the machine's own namespace; the hosts reach them
//! through the rig's switch namespace. A [`TcpRelay`] listens on a front address (in the switch
//! namespace when the rig has one), and for each client connection opens one to the target and
//! copies bytes both ways.
//!
//! A cut is a dead switch port, not a refusal: a connection open when the cut comes, or
//! opened while it lasts, gets no byte through in either direction and no reset either, so the
//! client sees what it sees when a device drops off the network: its request times out. When
//! the cut is mended those stalled connections are closed (their streams lost bytes and cannot
//! go on), and new ones are relayed again.
//!
//! One thread accepts, one thread per connection copies; every wait is bounded by a short
//! poll, and the relay stops and joins them all when dropped.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How often the threads look at the stop and cut flags when nothing arrives.
const POLL_MS: u16 = 10;
/// How long a new connection's dial to the target may take (the target is on loopback).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections open at once at most; beyond it new ones are closed at once (a switch's
/// connection table is not infinite either, and a leak shows as a test failure).
const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    cut: AtomicBool,
    /// Incremented by every cut: a connection born before the latest cut never carries again.
    cuts: AtomicU64,
    accepted: AtomicU64,
}

/// A running relay; see the module docs.
#[derive(Debug)]
pub struct TcpRelay {
    front: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens on `front` (port 0 picks one) and relays to `target`.
    pub fn start(front: SocketAddr, target: SocketAddr) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(front)?, target)
    }

    /// Relays connections accepted on a listener the caller bound (e.g. in another network
    /// namespace: a socket stays in the namespace it was created in). Connections to the
    /// target are opened from this process's own namespace.
    pub fn from_listener(listener: TcpListener, target: SocketAddr) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let front = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("tcp-relay {front}->{target}"))
            .spawn(move || accept_loop(&listener, target, &worker))?;
        Ok(Self {
            front,
            target,
            shared,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// Where connections go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Cuts (`true`) or mends the path; see the module docs.
    pub fn set_cut(&self, cut: bool) {
        if cut {
            self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.cut.store(cut, Ordering::SeqCst);
    }

    /// Whether the path is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        conns.retain(|c| !c.is_finished());
        let ready = poll(
            &mut [PollFd::new(listener.as_fd(), PollFlags::POLLIN)],
            PollTimeout::from(POLL_MS),
        );
        if !matches!(ready, Ok(n) if n > 0) {
            continue;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if conns.len() >= MAX_CONNECTIONS {
            continue;
        }
        let worker = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("tcp-relay conn".into())
            .spawn(move || carry(client, target, &worker));
        if let Ok(handle) = spawned {
            conns.push(handle);
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Copies one connection both ways until either side closes, the relay stops, or a cut that
/// stalled it is mended.
fn carry(mut client: TcpStream, target: SocketAddr, shared: &Shared) {
    let born = shared.cuts.load(Ordering::SeqCst);
    let live = |s: &Shared| !s.cut.load(Ordering::SeqCst) && s.cuts.load(Ordering::SeqCst) == born;
    // A connection made through a cut path never reaches the target.
    let mut server = if live(shared) {
        match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(s) => Some(s),
            // The device is down: the client's connection fails as it would through a switch
            // whose device refuses.
            Err(_) => return,
        }
    } else {
        None
    };
    for s in std::iter::once(&client).chain(server.as_ref()) {
        let _ = s.set_nodelay(true);
    }
    let mut buf = vec![0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        let carrying = live(shared);
        if !carrying && !shared.cut.load(Ordering::SeqCst) {
            // Mended after a cut that stalled this connection: it cannot resume.
            return;
        }
        let (client_in, server_in) = {
            let mut fds = vec![PollFd::new(client.as_fd(), PollFlags::POLLIN)];
            if let Some(s) = &server {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if poll(&mut fds, PollTimeout::from(POLL_MS)).is_err() {
                continue;
            }
            let readable = |fd: &PollFd| {
                fd.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            (readable(&fds[0]), fds.get(1).is_some_and(readable))
        };
        if client_in {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if carrying {
                let Some(s) = server.as_mut() else { return };
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
        if server_in {
            let Some(s) = server.as_mut() else { return };
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if carrying && client.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn lo() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    /// An echo server answering every connection until the test ends.
    fn echo() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind(lo()).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            // Three connections at most in these tests; each ends when its client closes.
            for _ in 0..3 {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, t)
    }

    fn ask(s: &mut TcpStream, what: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(what)?;
        let mut buf = vec![0u8; what.len()];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn relays_and_a_cut_stalls_then_closes_the_connection() {
        let (target, _server) = echo();
        let relay = TcpRelay::start(lo(), target).expect("relay");
        let mut a = TcpStream::connect(relay.front()).expect("connect");
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert_eq!(ask(&mut a, b"ping").expect("echo"), b"ping");
        relay.set_cut(true);
        assert!(relay.is_cut());
        // Stalled, not reset: the read times out.
        let e = ask(&mut a, b"lost").expect_err("a cut path carried bytes");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        // A connection made during the cut is accepted and stalls too.
        let mut b = TcpStream::connect(relay.front()).expect("connect");
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(ask(&mut b, b"also").is_err(), "a cut path carried bytes");
        relay.set_cut(false);
        // Mended: the stalled connections are closed, a new one is relayed.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 16];
        loop {
            match a.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => panic!("a stalled connection delivered after the mend"),
                Err(_) => assert!(Instant::now() < deadline, "not closed after the mend"),
            }
        }
        let mut c = TcpStream::connect(relay.front()).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(ask(&mut c, b"again").expect("echo"), b"again");
        assert_eq!(relay.accepted(), 3);
    }
}
