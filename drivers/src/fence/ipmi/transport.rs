//! The UDP side of the driver: one connected socket, request/answer exchanges with
//! retransmission and exponential backoff, all bounded by the caller's deadline.
//!
//! IPMI over LAN has no transport-level reliability: the console retransmits until it sees the
//! answer. The exchange leaves framing and matching to the sans-IO code through two closures,
//! `build(attempt)` for the bytes of each transmission and `accept(bytes, attempt)` to judge
//! each datagram, so retransmission rules (new session sequence number, same requester
//! sequence number) stay with the protocol.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How an exchange ended without an answer.
#[derive(Debug)]
pub(super) enum ExchangeError<E> {
    /// The deadline passed; `answered` says whether the BMC had answered anything on this
    /// socket before (a BMC that stopped answering, versus one never heard from).
    Deadline { answered: bool },
    /// `accept` judged an answer fatal.
    Fatal(E),
    /// The socket failed in a way retransmitting cannot fix.
    Io(io::Error),
}

/// Counts that tell an operator how the link behaves.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct TransportStats {
    /// Datagrams sent again after no answer.
    pub(super) retransmits: u64,
    /// Datagrams received and dropped (garbage, stale, not ours).
    pub(super) dropped: u64,
}

/// A connected UDP socket to one BMC.
#[derive(Debug)]
pub(super) struct Transport {
    socket: UdpSocket,
    retransmit_initial: Duration,
    answered: bool,
    pub(super) stats: TransportStats,
}

impl Transport {
    /// Binds an ephemeral port of the same family as `address` and connects it, so the kernel
    /// drops datagrams from anyone but the BMC.
    pub(super) async fn connect(
        address: SocketAddr,
        retransmit_initial: Duration,
    ) -> io::Result<Self> {
        let local: SocketAddr = if address.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(address).await?;
        Ok(Self {
            socket,
            retransmit_initial,
            answered: false,
            stats: TransportStats::default(),
        })
    }

    /// Sends `build(attempt)` and waits for a datagram that `accept` takes, retransmitting with
    /// doubling intervals until the deadline.
    pub(super) async fn exchange<T, E>(
        &mut self,
        deadline: Instant,
        mut build: impl FnMut(u32) -> Vec<u8>,
        mut accept: impl FnMut(&[u8], u32) -> Result<Option<T>, E>,
    ) -> Result<T, ExchangeError<E>> {
        let mut interval = self.retransmit_initial;
        let mut buf = [0u8; RECV_BUFFER_BYTES];
        for attempt in 0..MAX_ATTEMPTS {
            if Instant::now() >= deadline {
                break;
            }
            if attempt > 0 {
                self.stats.retransmits += 1;
            }
            let bytes = build(attempt);
            match self.socket.send(&bytes).await {
                Ok(_) => {}
                // A previous datagram's ICMP port unreachable surfaces here on a connected
                // socket. A BMC restarting its LAN stack refuses for a moment, so keep trying
                // until the deadline instead of failing at once.
                Err(e) if transient(&e) => {}
                Err(e) => return Err(ExchangeError::Io(e)),
            }
            let wait_until = (Instant::now() + interval).min(deadline);
            interval = (interval * 2).min(RETRANSMIT_MAX);
            // Bounded so a flood of junk cannot keep us from retransmitting or timing out.
            for _ in 0..MAX_DATAGRAMS_PER_ATTEMPT {
                let received =
                    tokio::time::timeout_at(wait_until, self.socket.recv(&mut buf)).await;
                let len = match received {
                    Err(_elapsed) => break,
                    Ok(Ok(len)) => len,
                    Ok(Err(e)) if transient(&e) => {
                        // Refused: nothing listens (yet). Wait out this attempt's interval
                        // rather than spinning on the error.
                        tokio::time::sleep_until(wait_until).await;
                        break;
                    }
                    Ok(Err(e)) => return Err(ExchangeError::Io(e)),
                };
                self.answered = true;
                match accept(&buf[..len], attempt) {
                    Ok(Some(value)) => return Ok(value),
                    Ok(None) => self.stats.dropped += 1,
                    Err(e) => return Err(ExchangeError::Fatal(e)),
                }
            }
        }
        Err(ExchangeError::Deadline {
            answered: self.answered,
        })
    }

    /// Sends one datagram without waiting for an answer (best-effort cleanup messages).
    pub(super) async fn send_only(&mut self, bytes: &[u8]) {
        if let Err(e) = self.socket.send(bytes).await {
            tracing::debug!(error = %e, "IPMI best-effort send failed");
        }
    }
}

/// Errors a datagram socket reports for an earlier datagram's ICMP error: retrying may help.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Largest interval between retransmissions: BMCs answer in milliseconds when they answer at
/// all, so waiting longer than this only wastes the deadline when a datagram was lost.
const RETRANSMIT_MAX: Duration = Duration::from_secs(2);
/// Upper bound on transmissions of one request; with the initial interval at its smallest
/// sensible value the deadline ends the exchange long before this does.
const MAX_ATTEMPTS: u32 = 64;
/// Datagrams read per attempt before retransmitting anyway.
const MAX_DATAGRAMS_PER_ATTEMPT: usize = 64;
/// IPMI LAN datagrams are at most a few hundred bytes; anything longer is truncated and
/// rejected by the decoders.
const RECV_BUFFER_BYTES: usize = 1024;
