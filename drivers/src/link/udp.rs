//! UDP heartbeat link: one frame per datagram, unicast to every peer or to a multicast group.
//!
//! The socket can be bound to one interface (`SO_BINDTODEVICE`), so heartbeats meant for a
//! dedicated crossover NIC never leak onto the routed network when that NIC goes down: the
//! link then goes silent and is reported down, which is the truth. IPv4 and IPv6 both work.
//! A multicast group lets any number of nodes share one segment without listing each other;
//! the sockets set `SO_REUSEADDR`/`SO_REUSEPORT` so several agents on one test host can join
//! the same group and port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proto::Heartbeat;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::counters::bump;
use super::rx::Receiver;
use super::serial::sleep_or_shutdown;
use super::{stamp, LinkCommon, LinkEvent};

/// UDP link parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpParams {
    /// Local address and port to bind.
    pub bind: SocketAddr,
    /// Interface to bind to, if any.
    pub interface: Option<String>,
    /// Peers' addresses (unicast destinations); ignored when `multicast` is set.
    pub peers: Vec<SocketAddr>,
    /// Multicast group to send to and join; port is `bind`'s port.
    pub multicast: Option<IpAddr>,
}

/// Errors setting up a UDP link.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// A socket call failed.
    #[error("UDP link on {addr}: {what}: {source}")]
    Socket {
        /// Local address.
        addr: SocketAddr,
        /// Which step.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The named interface does not exist.
    #[error("UDP link on {addr}: no network interface named {interface}")]
    NoInterface {
        /// Local address.
        addr: SocketAddr,
        /// Interface name.
        interface: String,
    },
}

/// A bound UDP socket with its destinations.
#[derive(Debug)]
pub struct UdpPort {
    socket: UdpSocket,
    destinations: Vec<SocketAddr>,
}

impl UdpPort {
    /// Creates and binds the socket (inside a tokio runtime).
    pub fn open(params: &UdpParams) -> Result<Self, UdpError> {
        let addr = params.bind;
        let err = |what: &'static str| move |source| UdpError::Socket { addr, what, source };
        let domain = Domain::for_address(addr);
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
        if addr.is_ipv6() {
            s.set_only_v6(true).map_err(err("IPV6_V6ONLY"))?;
        }
        let ifindex = match &params.interface {
            Some(name) => {
                s.bind_device(Some(name.as_bytes()))
                    .map_err(err("SO_BINDTODEVICE (needs CAP_NET_RAW)"))?;
                Some(if_index(name).ok_or_else(|| UdpError::NoInterface {
                    addr,
                    interface: name.clone(),
                })?)
            }
            None => None,
        };
        let destinations = match params.multicast {
            Some(group) => {
                s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
                s.set_reuse_port(true).map_err(err("SO_REUSEPORT"))?;
                join(&s, group, addr.ip(), ifindex).map_err(err("join multicast group"))?;
                // Bind to the group so only its datagrams arrive on this port.
                s.bind(&SocketAddr::new(group, addr.port()).into())
                    .map_err(err("bind"))?;
                vec![SocketAddr::new(group, addr.port())]
            }
            None => {
                s.bind(&addr.into()).map_err(err("bind"))?;
                params.peers.clone()
            }
        };
        s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
        let socket = UdpSocket::from_std(s.into()).map_err(err("register with reactor"))?;
        Ok(Self {
            socket,
            destinations,
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Runs the link until `shutdown` turns true.
pub async fn run(
    common: LinkCommon,
    port: UdpPort,
    mut outgoing: watch::Receiver<Option<Heartbeat>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rx = Receiver::new();
    bump(&common.counters.opens);
    let _ = common
        .events
        .send(LinkEvent::TransportUp { link: common.link })
        .await;
    // One byte more than a frame, so an oversized datagram is seen as such, not truncated
    // into something that looks like a frame.
    let mut buf = [0u8; proto::FRAME_LEN + 1];
    let mut warned_send = false;
    loop {
        tokio::select! {
            r = port.socket.recv_from(&mut buf) => match r {
                Ok((n, _from)) => rx.frame(&common, &buf[..n]),
                Err(e) => {
                    // ICMP errors from an earlier send surface here on some kernels; they say
                    // nothing about the next datagram. Pause briefly so a persistent error
                    // cannot spin.
                    tracing::debug!(link = %common.name, error = %e, "UDP receive error");
                    if sleep_or_shutdown(RECV_ERROR_PAUSE, &mut shutdown).await {
                        return;
                    }
                }
            },
            changed = outgoing.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(template) = *outgoing.borrow_and_update() else { continue };
                let frame = stamp(&template, common.link, &common.key);
                for dest in &port.destinations {
                    match port.socket.send_to(&frame, dest).await {
                        Ok(_) => {
                            bump(&common.counters.frames_out);
                            warned_send = false;
                        }
                        Err(e) => {
                            bump(&common.counters.send_errors);
                            if !warned_send {
                                tracing::warn!(link = %common.name, %dest, error = %e, "UDP send failed");
                                warned_send = true;
                            }
                        }
                    }
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

fn join(s: &Socket, group: IpAddr, local: IpAddr, ifindex: Option<u32>) -> std::io::Result<()> {
    match group {
        IpAddr::V4(g) => {
            let iface = match local {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            s.join_multicast_v4(&g, &iface)?;
            if !iface.is_unspecified() {
                s.set_multicast_if_v4(&iface)?;
            }
            s.set_multicast_loop_v4(true)?;
            s.set_multicast_ttl_v4(1)
        }
        IpAddr::V6(g) => {
            let idx = ifindex.unwrap_or(0);
            s.join_multicast_v6(&g, idx)?;
            if idx != 0 {
                s.set_multicast_if_v6(idx)?;
            }
            s.set_multicast_loop_v6(true)?;
            s.set_multicast_hops_v6(1)
        }
    }
}

fn if_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Pause after a receive error.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);
