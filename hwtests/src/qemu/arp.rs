//! Who answers for the virtual IP, asked from outside the guests: the host joins the guests'
//! client LAN segment (QEMU's `-netdev socket,mcast=` carries one Ethernet frame per UDP
//! datagram to a multicast group on loopback), broadcasts an ARP request for the address every
//! [`PROBE_INTERVAL`] and records which guests' MACs answer.
//!
//! This is the check a client on the LAN would make, so it does not depend on what the agents
//! or the guests' consoles say. Two different MACs answering one probe is two owners of the
//! address at once. A guest whose NIC has no carrier cannot answer: the samples are a lower
//! bound on the owners, and the console markers remain the check while links are cut.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

/// One probe's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpSample {
    /// When the probe was sent.
    pub at: Instant,
    /// The last octet of every MAC that answered, in order of arrival (the rig's MACs end in
    /// the host's number).
    pub owners: Vec<u8>,
}

/// A running observer for one address; stopped when dropped.
#[derive(Debug)]
pub struct ArpObserver {
    samples: Arc<Mutex<Vec<ArpSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArpObserver {
    /// Joins `group` on loopback and probes for `address` until dropped.
    pub fn start(group: SocketAddrV4, address: Ipv4Addr) -> std::io::Result<Self> {
        let rx = listen(group)?;
        rx.set_read_timeout(Some(READ_TICK))?;
        // Bound to loopback, so multicast leaves through loopback and nowhere else.
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("arp-observer".into())
            .spawn(move || observe(&rx, &tx, group, address, &s, &st))?;
        Ok(Self {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// Every completed probe so far.
    pub fn samples(&self) -> Vec<ArpSample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ArpObserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A socket on the segment's group and port, shared with the qemu processes (SO_REUSEADDR, as
/// QEMU sets it), member of the group on loopback.
fn listen(group: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(group),
    )?;
    let sock = UdpSocket::from(fd);
    sock.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)?;
    Ok(sock)
}

fn observe(
    rx: &UdpSocket,
    tx: &UdpSocket,
    group: SocketAddrV4,
    address: Ipv4Addr,
    samples: &Mutex<Vec<ArpSample>>,
    stop: &AtomicBool,
) {
    let request = arp_request(address, observer_ip(address));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        // A lost probe only loses one sample.
        let _ = tx.send_to(&request, group);
        let mut owners = Vec::new();
        while at.elapsed() < PROBE_INTERVAL {
            let Ok(n) = rx.recv(&mut buf) else { continue };
            if let Some(mac_last) = arp_reply_for(&buf[..n], address) {
                if !owners.contains(&mac_last) {
                    owners.push(mac_last);
                }
            }
        }
        if let Ok(mut s) = samples.lock() {
            if s.len() < MAX_SAMPLES {
                s.push(ArpSample { at, owners });
            }
        }
    }
}

/// The observer's own address: `.254` of the probed address's /24.
fn observer_ip(address: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = address.octets();
    Ipv4Addr::new(a, b, c, 254)
}

/// A broadcast "who has `address`" from the observer's own MAC and address `me`.
fn arp_request(address: Ipv4Addr, me: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&OBSERVER_MAC);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&OBSERVER_MAC);
    f.extend_from_slice(&me.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&address.octets());
    f.resize(60, 0); // minimum frame size without the FCS
    f
}

/// The last octet of the sender MAC of an ARP reply claiming `address`, if `frame` is one.
fn arp_reply_for(frame: &[u8], address: Ipv4Addr) -> Option<u8> {
    let arp = frame.get(14..42)?;
    if frame.get(12..14)? != [0x08, 0x06] || arp.get(6..8)? != [0, 2] {
        return None;
    }
    if arp.get(14..18)? != address.octets() {
        return None;
    }
    arp.get(13).copied()
}

/// One probe, and how long its answers are collected: a guest answers within milliseconds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Receive timeout, so the loop re-checks its clock and `stop`.
const READ_TICK: Duration = Duration::from_millis(20);
/// A bound on the record: over an hour of probes.
const MAX_SAMPLES: usize = 20_000;
/// Locally administered, not one of the guests'.
const OBSERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x79, 0x00, 0xfe];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_recognised_and_a_request_is_not() {
        let vip = Ipv4Addr::new(10, 77, 0, 100);
        let request = arp_request(vip, observer_ip(vip));
        assert_eq!(request.len(), 60);
        assert_eq!(arp_reply_for(&request, vip), None);
        let mut reply = request.clone();
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[22..28].copy_from_slice(&[0x52, 0x54, 0x00, 0x79, 0x00, 0x02]);
        reply[28..32].copy_from_slice(&vip.octets());
        assert_eq!(arp_reply_for(&reply, vip), Some(2));
        assert_eq!(arp_reply_for(&reply, Ipv4Addr::new(10, 77, 0, 101)), None);
        assert_eq!(arp_reply_for(&reply[..30], vip), None);
    }
}
