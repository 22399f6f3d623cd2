//! A UDP relay: one leg of an emulated Ethernet path that the harness can cut, make lossy,
//! delay or corrupt, as a cheap switch or a flaky NIC would.
//!
//! The kernel gives namespaces real carriers (a veth can be set down) and nftables gives real
//! one-way drops, but on this machine there is no `netem` queueing discipline, so random loss
//! with a fixed delay, and corruption, need a user-space hop. A [`UdpRelay`] is that hop: it
//! listens on a front address, sends what it hears to a fixed target from its own back socket,
//! and sends what the target answers to the last client heard (so it also carries a client's
//! request/response traffic to a BMC, as a management switch would).
//!
//! Faults are applied per direction (towards the target, back towards the client). Every packet
//! is counted as forwarded or dropped. One thread per relay, stopped and joined on drop; every
//! wait in it is bounded by a short poll timeout.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the relay thread looks at its stop flag and its delay queue when idle.
const POLL: Duration = Duration::from_millis(5);
/// Packets taken from a socket per turn of the relay loop.
const DRAIN: usize = 256;
/// Packets held for delay at most; beyond it they are dropped (a full switch buffer).
const QUEUE_LIMIT: usize = 4096;

/// The direction of a packet through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From a client (what arrives on the front address) to the target.
    ToTarget,
    /// From the target back to the last client heard.
    ToClient,
}

impl Way {
    fn index(self) -> usize {
        match self {
            Way::ToTarget => 0,
            Way::ToClient => 1,
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    cut: [AtomicBool; 2],
    /// Loss in per-mille.
    loss: [AtomicU32; 2],
    delay_us: [AtomicU64; 2],
    corrupt: [AtomicBool; 2],
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    stop: AtomicBool,
}

/// A running relay; see the module docs.
#[derive(Debug)]
pub struct UdpRelay {
    front: SocketAddr,
    back_port: u16,
    target: SocketAddr,
    faults: Arc<Faults>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// Binds `front` (port 0 picks one) and a back socket on `back_bind` (port 0), and starts
    /// relaying to `target`.
    pub fn start(front: SocketAddr, back_bind: SocketAddr, target: SocketAddr) -> io::Result<Self> {
        Self::from_sockets(UdpSocket::bind(front)?, UdpSocket::bind(back_bind)?, target)
    }

    /// Relays between sockets the caller bound (e.g. in another network namespace: a socket
    /// stays in the namespace it was created in).
    pub fn from_sockets(
        front_socket: UdpSocket,
        back_socket: UdpSocket,
        target: SocketAddr,
    ) -> io::Result<Self> {
        back_socket.connect(target)?;
        front_socket.set_read_timeout(Some(POLL))?;
        back_socket.set_nonblocking(true)?;
        let front = front_socket.local_addr()?;
        let back_port = back_socket.local_addr()?.port();
        let faults = Arc::new(Faults::default());
        let shared = Arc::clone(&faults);
        let seed = u64::from(front.port()) << 16 | u64::from(target.port());
        let thread = std::thread::Builder::new()
            .name(format!("udp-relay {front}->{target}"))
            .spawn(move || run(&front_socket, &back_socket, &shared, seed))?;
        Ok(Self {
            front,
            back_port,
            target,
            faults,
            thread: Some(thread),
        })
    }

    /// The address clients send to.
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// The port packets towards the target come from (what a firewall at the target sees).
    pub fn back_port(&self) -> u16 {
        self.back_port
    }

    /// Where packets go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Drops (`true`) or passes every packet travelling `way`.
    pub fn set_cut(&self, way: Way, cut: bool) {
        self.faults.cut[way.index()].store(cut, Ordering::SeqCst);
    }

    /// Drops each packet travelling `way` with probability `percent` / 100.
    pub fn set_loss(&self, way: Way, percent: u32) {
        self.faults.loss[way.index()].store(percent.min(100) * 10, Ordering::SeqCst);
    }

    /// Holds each packet travelling `way` for `delay`.
    pub fn set_delay(&self, way: Way, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.faults.delay_us[way.index()].store(us, Ordering::SeqCst);
    }

    /// Flips one bit in every packet travelling `way`.
    pub fn set_corrupt(&self, way: Way, corrupt: bool) {
        self.faults.corrupt[way.index()].store(corrupt, Ordering::SeqCst);
    }

    /// Clears every fault in both directions.
    pub fn heal(&self) {
        for way in [Way::ToTarget, Way::ToClient] {
            self.set_cut(way, false);
            self.set_loss(way, 0);
            self.set_delay(way, Duration::ZERO);
            self.set_corrupt(way, false);
        }
    }

    /// Packets forwarded travelling `way` so far.
    pub fn forwarded(&self, way: Way) -> u64 {
        self.faults.forwarded[way.index()].load(Ordering::SeqCst)
    }

    /// Packets dropped travelling `way` so far (cut, loss, full queue, send error).
    pub fn dropped(&self, way: Way) -> u64 {
        self.faults.dropped[way.index()].load(Ordering::SeqCst)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.faults.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Held {
    due: Instant,
    way: Way,
    bytes: Vec<u8>,
}

fn run(front: &UdpSocket, back: &UdpSocket, faults: &Faults, seed: u64) {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut client: Option<SocketAddr> = None;
    let mut queue: VecDeque<Held> = VecDeque::new();
    let mut buf = [0u8; 65_536];
    while !faults.stop.load(Ordering::SeqCst) {
        // Front: blocks up to POLL, which paces the loop.
        let mut arrived: Vec<(Way, Vec<u8>)> = Vec::new();
        if let Ok((n, from)) = front.recv_from(&mut buf) {
            client = Some(from);
            arrived.push((Way::ToTarget, buf[..n].to_vec()));
            // Then whatever else is queued (bounded per turn), without waiting.
            if front.set_nonblocking(true).is_ok() {
                for _ in 0..DRAIN {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        break;
                    };
                    client = Some(from);
                    arrived.push((Way::ToTarget, buf[..n].to_vec()));
                }
                let _ = front.set_nonblocking(false);
            }
        }
        // Back: whatever the target sent meanwhile (bounded per turn).
        for _ in 0..DRAIN {
            match back.recv(&mut buf) {
                Ok(n) => arrived.push((Way::ToClient, buf[..n].to_vec())),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        for (way, mut bytes) in arrived {
            let i = way.index();
            let loss = u64::from(faults.loss[i].load(Ordering::SeqCst));
            if faults.cut[i].load(Ordering::SeqCst) || (loss > 0 && next() % 1000 < loss) {
                faults.dropped[i].fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if faults.corrupt[i].load(Ordering::SeqCst) && !bytes.is_empty() {
                let len = bytes.len() as u64;
                let at = usize::try_from(next() % len).unwrap_or(0);
                bytes[at] ^= 1 << (next() % 8);
            }
            if queue.len() >= QUEUE_LIMIT {
                faults.dropped[i].fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let delay = Duration::from_micros(faults.delay_us[i].load(Ordering::SeqCst));
            queue.push_back(Held {
                due: now + delay,
                way,
                bytes,
            });
        }
        // Deliver what is due; the queue is in arrival order and delays change rarely, so a
        // packet behind a later-due one waits for it, as in a FIFO switch buffer.
        let now = Instant::now();
        while queue.front().is_some_and(|h| h.due <= now) {
            let Some(h) = queue.pop_front() else { break };
            let i = h.way.index();
            let sent = match h.way {
                Way::ToTarget => back.send(&h.bytes).is_ok(),
                Way::ToClient => client.is_some_and(|c| front.send_to(&h.bytes, c).is_ok()),
            };
            let counter = if sent {
                &faults.forwarded[i]
            } else {
                &faults.dropped[i]
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn lo() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn pair() -> (UdpSocket, UdpSocket, UdpRelay) {
        let client = UdpSocket::bind(lo()).expect("client");
        let server = UdpSocket::bind(lo()).expect("server");
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
        }
        let relay = UdpRelay::start(lo(), lo(), server.local_addr().expect("addr")).expect("relay");
        (client, server, relay)
    }

    #[test]
    fn forwards_both_ways_and_counts() {
        let (client, server, relay) = pair();
        let mut buf = [0u8; 64];
        client.send_to(b"ping", relay.front()).expect("send");
        let (n, from) = server.recv_from(&mut buf).expect("server hears");
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).expect("reply");
        let n = client.recv(&mut buf).expect("client hears");
        assert_eq!(&buf[..n], b"pong");
        // The relay counts right after its send returns, which may be after the client woke.
        let deadline = Instant::now() + Duration::from_secs(2);
        while relay.forwarded(Way::ToClient) < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(relay.forwarded(Way::ToTarget), 1);
        assert_eq!(relay.forwarded(Way::ToClient), 1);
    }

    #[test]
    fn a_cut_drops_one_way_only() {
        let (client, server, relay) = pair();
        let mut buf = [0u8; 64];
        relay.set_cut(Way::ToTarget, true);
        client.send_to(b"lost", relay.front()).expect("send");
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(server.recv_from(&mut buf).is_err(), "a cut leg delivered");
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(relay.dropped(Way::ToTarget), 1);
        relay.heal();
        client.send_to(b"found", relay.front()).expect("send");
        let (n, _) = server.recv_from(&mut buf).expect("healed leg delivers");
        assert_eq!(&buf[..n], b"found");
    }

    #[test]
    fn delay_holds_packets_and_corruption_flips_a_bit() {
        let (client, server, relay) = pair();
        let mut buf = [0u8; 64];
        relay.set_delay(Way::ToTarget, Duration::from_millis(150));
        let sent = Instant::now();
        client.send_to(b"late", relay.front()).expect("send");
        let (n, _) = server.recv_from(&mut buf).expect("delivered");
        assert_eq!(&buf[..n], b"late");
        assert!(
            sent.elapsed() >= Duration::from_millis(150),
            "{:?}",
            sent.elapsed()
        );
        relay.heal();
        relay.set_corrupt(Way::ToTarget, true);
        client.send_to(b"clean", relay.front()).expect("send");
        let (n, _) = server.recv_from(&mut buf).expect("delivered");
        assert_eq!(n, 5);
        assert_ne!(&buf[..n], b"clean");
        let flipped: u32 = buf[..n]
            .iter()
            .zip(b"clean")
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1);
    }

    #[test]
    fn loss_drops_about_the_share_asked() {
        let (client, server, relay) = pair();
        relay.set_loss(Way::ToTarget, 50);
        let mut buf = [0u8; 64];
        // Paced, so that the kernel's socket buffer never overflows before the relay reads.
        for i in 0..400 {
            client.send_to(b"x", relay.front()).expect("send");
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while relay.forwarded(Way::ToTarget) + relay.dropped(Way::ToTarget) < 400 {
            assert!(Instant::now() < deadline, "relay did not see 400 packets");
            std::thread::sleep(Duration::from_millis(10));
        }
        let dropped = relay.dropped(Way::ToTarget);
        assert!((120..=280).contains(&dropped), "dropped {dropped} of 400");
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut got = 0u64;
        while server.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, relay.forwarded(Way::ToTarget));
    }
}
