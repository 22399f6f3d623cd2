//! The service address as a [`Resource`]: an IPv4 or IPv6 address added to an interface over
//! rtnetlink, then announced so that neighbours stop sending to the node that had it before.
//!
//! Clients reach the director and storage daemons through this address; after a takeover their
//! ARP and neighbour caches still point at the old node's MAC for minutes unless told
//! otherwise. So start does three things and stop one:
//!
//! - **Add** the address (`RTM_NEWADDR`) on a route netlink socket. IPv6 addresses are added
//!   with `IFA_F_NODAD`: duplicate address detection would keep the address tentative (unusable)
//!   for a second or more, and the cluster, not DAD, guarantees the address is unique.
//! - **Announce** it: IPv4 as gratuitous ARP (requests and replies for the address, from the
//!   interface's MAC, broadcast through an `AF_PACKET` socket), IPv6 as unsolicited neighbour
//!   advertisements (ICMPv6 type 136, override flag, to ff02::1 with hop limit 255, through a
//!   raw ICMPv6 socket bound to the interface). A failed announcement is logged and counted but
//!   does not fail the start: the address is up, and neighbours relearn it on their next miss.
//!   The first round goes out before start returns; the repeats (for a lost packet) follow in
//!   the background, as IPaddr2's `arp_bg`, so the group's next resource does not wait for
//!   them. A stop ends them before it removes the address: a node must never claim an address
//!   it has given up.
//! - **Remove** it (`RTM_DELADDR`); an address already absent is stopped.
//!
//! Monitor reads the addresses back (`RTM_GETADDR`): present on an interface that is up with
//! carrier is running, absent is stopped, anything else (down, no carrier, wrong prefix,
//! tentative or DAD-failed) is [`ResourceErrorKind::Failed`].
//!
//! Netlink needs no crate: the three messages are fixed layouts from `linux/rtnetlink.h`,
//! written and read here with bounds checks, and the socket is a non-blocking fd under tokio so
//! every exchange ends by the deadline. No such interface is
//! [`ResourceErrorKind::NotConfigured`]; `EPERM` (no `CAP_NET_ADMIN`) is
//! [`ResourceErrorKind::Permission`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, LinkAddr, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    SockaddrLike as _,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::{Resource, ResourceError, ResourceErrorKind, ResourceState};

/// Which address on which interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipParams {
    /// The service address.
    pub address: IpAddr,
    /// Its prefix length (at most 32 for IPv4, 128 for IPv6).
    pub prefix: u8,
    /// The interface to add it to, `eth0`.
    pub interface: String,
    /// IPv4 only: the label `ip addr` shows, which must start with the interface name
    /// (`eth0:bacula`).
    pub label: Option<String>,
}

/// Counters of one address, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct VipMetrics {
    /// Addresses added.
    pub adds: AtomicU64,
    /// Addresses removed.
    pub removes: AtomicU64,
    /// Announcement packets sent (ARP or neighbour advertisements).
    pub announcements: AtomicU64,
    /// Announcement packets that could not be sent.
    pub announce_errors: AtomicU64,
    /// Actions that returned an error.
    pub errors: AtomicU64,
}

/// A service address; see the module docs.
#[derive(Debug)]
pub struct VipResource {
    name: String,
    params: VipParams,
    metrics: Arc<VipMetrics>,
    /// Bumped by every stop: background announcements of an earlier start end when it moves.
    generation: Arc<AtomicU64>,
}

/// What the kernel says about the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    index: u32,
    flags: u32,
    /// `ARPHRD_*`.
    kind: u16,
    mac: Option<[u8; 6]>,
}

/// One address as `RTM_GETADDR` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AddrEntry {
    index: u32,
    prefix: u8,
    flags: u32,
    address: IpAddr,
}

/// Why a netlink exchange failed.
#[derive(Debug)]
enum NlError {
    /// The kernel refused with this errno.
    Kernel(Errno),
    /// The socket failed.
    Io(io::Error),
    /// The deadline passed.
    Timeout,
    /// The kernel's answer did not parse.
    Malformed(&'static str),
}

impl VipResource {
    /// A resource named `name` for the address in `params`.
    ///
    /// Fails with [`ResourceErrorKind::Args`] when the prefix is too long for the family, the
    /// interface name is empty or too long, or a label is given for IPv6 or does not start with
    /// the interface name.
    pub fn new(name: impl Into<String>, params: VipParams) -> Result<Self, ResourceError> {
        let name = name.into();
        let bad =
            |message: String| ResourceError::new(ResourceErrorKind::Args, &name, "new", message);
        let max = if params.address.is_ipv4() { 32 } else { 128 };
        if params.prefix > max {
            return Err(bad(format!(
                "prefix /{} is longer than {max} bits for {}",
                params.prefix, params.address
            )));
        }
        if params.interface.is_empty()
            || params.interface.len() >= IFNAMSIZ
            || params.interface.contains(['/', '\0', ' '])
        {
            return Err(bad(format!(
                "{:?} is not an interface name",
                params.interface
            )));
        }
        if let Some(label) = &params.label {
            if params.address.is_ipv6() {
                return Err(bad("a label applies to IPv4 addresses only".to_owned()));
            }
            if label.len() >= IFNAMSIZ
                || !label.starts_with(&params.interface)
                || label.contains('\0')
            {
                return Err(bad(format!(
                    "label {label:?} must start with {:?} and be shorter than {IFNAMSIZ} bytes",
                    params.interface
                )));
            }
        }
        Ok(Self {
            name,
            params,
            metrics: Arc::default(),
            generation: Arc::default(),
        })
    }

    /// This address's counters.
    pub fn metrics(&self) -> Arc<VipMetrics> {
        Arc::clone(&self.metrics)
    }

    async fn do_start(&self, deadline: Instant) -> Result<(), ResourceError> {
        let mut nl = self.netlink("start")?;
        let link = self.link(&mut nl, "start", deadline).await?;
        self.check_link("start", &link)?;
        if let Some(entry) = self.find(&mut nl, &link, "start", deadline).await? {
            tracing::debug!(resource = %self.name, "start: address already present");
            return self.check_entry("start", &entry);
        }
        let request = self.addr_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, link.index);
        match nl.ack(request, deadline).await {
            Ok(()) => {
                self.metrics.adds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(resource = %self.name, address = %self.params.address,
                    prefix = self.params.prefix, interface = %self.params.interface,
                    "address added");
            }
            // Added by someone else between the look and the add: the check below decides.
            Err(NlError::Kernel(Errno::EEXIST)) => {}
            Err(e) => return Err(self.nl_error("start", "adding the address", e)),
        }
        match self.find(&mut nl, &link, "start", deadline).await? {
            Some(entry) => self.check_entry("start", &entry)?,
            None => {
                return Err(self.error(
                    ResourceErrorKind::Failed,
                    "start",
                    format!(
                        "the kernel acknowledged {} but does not list it on {}",
                        self.address_text(),
                        self.params.interface
                    ),
                ))
            }
        }
        self.announce(&link, deadline).await;
        Ok(())
    }

    async fn do_stop(&self, deadline: Instant) -> Result<(), ResourceError> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut nl = self.netlink("stop")?;
        let link = match self.link(&mut nl, "stop", deadline).await {
            Ok(link) => link,
            // No interface, no address on it.
            Err(e) if e.kind == ResourceErrorKind::NotConfigured => {
                tracing::warn!(resource = %self.name, interface = %self.params.interface,
                    "stop: no such interface; the address is not there");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(entry) = self.find(&mut nl, &link, "stop", deadline).await? else {
            return Ok(());
        };
        if entry.prefix != self.params.prefix {
            return Err(self.error(
                ResourceErrorKind::Failed,
                "stop",
                format!(
                    "{} is on {} as /{}, not the configured /{}; refusing to remove an address \
                     configured by someone else",
                    self.params.address, self.params.interface, entry.prefix, self.params.prefix
                ),
            ));
        }
        let request = self.addr_request(RTM_DELADDR, 0, link.index);
        match nl.ack(request, deadline).await {
            Ok(()) => {
                self.metrics.removes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(resource = %self.name, address = %self.params.address,
                    interface = %self.params.interface, "address removed");
            }
            Err(NlError::Kernel(Errno::EADDRNOTAVAIL | Errno::ENOENT | Errno::ENODEV)) => {}
            Err(e) => return Err(self.nl_error("stop", "removing the address", e)),
        }
        match self.find(&mut nl, &link, "stop", deadline).await? {
            None => Ok(()),
            Some(_) => Err(self.error(
                ResourceErrorKind::Failed,
                "stop",
                format!(
                    "{} is still on {} after the kernel acknowledged its removal",
                    self.address_text(),
                    self.params.interface
                ),
            )),
        }
    }

    async fn do_monitor(&self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        let mut nl = self.netlink("monitor")?;
        let link = self.link(&mut nl, "monitor", deadline).await?;
        let Some(entry) = self.find(&mut nl, &link, "monitor", deadline).await? else {
            return Ok(ResourceState::Stopped);
        };
        self.check_entry("monitor", &entry)?;
        self.check_link("monitor", &link)?;
        Ok(ResourceState::Running)
    }

    fn check_link(&self, action: &str, link: &Link) -> Result<(), ResourceError> {
        let problem = if link.flags & IFF_UP == 0 {
            "is down"
        } else if link.flags & IFF_LOWER_UP == 0 {
            "has no carrier"
        } else {
            return Ok(());
        };
        Err(self.error(
            ResourceErrorKind::Failed,
            action,
            format!("interface {} {problem}", self.params.interface),
        ))
    }

    fn check_entry(&self, action: &str, entry: &AddrEntry) -> Result<(), ResourceError> {
        let problem = if entry.prefix != self.params.prefix {
            format!(
                "has prefix /{}, configured /{}",
                entry.prefix, self.params.prefix
            )
        } else if entry.flags & IFA_F_DADFAILED != 0 {
            "failed duplicate address detection: another host uses it".to_owned()
        } else if entry.flags & IFA_F_TENTATIVE != 0 {
            "is tentative (duplicate address detection running)".to_owned()
        } else {
            return Ok(());
        };
        Err(self.error(
            ResourceErrorKind::Failed,
            action,
            format!(
                "{} on {} {problem}",
                self.params.address, self.params.interface
            ),
        ))
    }

    /// Sends the first round of announcements now and the other [`ANNOUNCE_ROUNDS`] in the
    /// background, [`ANNOUNCE_INTERVAL`] apart, until a stop.
    async fn announce(&self, link: &Link, _deadline: Instant) {
        let Some(mac) = link.mac.filter(|_| link.kind == ARPHRD_ETHER) else {
            tracing::debug!(resource = %self.name, kind = link.kind,
                "not an Ethernet interface; nothing to announce");
            return;
        };
        let round = Announce {
            name: self.name.clone(),
            interface: self.params.interface.clone(),
            index: link.index,
            mac,
            address: self.params.address,
            metrics: Arc::clone(&self.metrics),
        };
        if !round.send() {
            return;
        }
        let generation = Arc::clone(&self.generation);
        let now = generation.load(Ordering::SeqCst);
        let repeats = async move {
            for _ in 1..ANNOUNCE_ROUNDS {
                tokio::time::sleep(ANNOUNCE_INTERVAL).await;
                if generation.load(Ordering::SeqCst) != now || !round.send() {
                    return;
                }
            }
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(repeats);
        }
    }

    fn netlink(&self, action: &str) -> Result<Netlink, ResourceError> {
        Netlink::open().map_err(|e| self.nl_error(action, "opening a route netlink socket", e))
    }

    async fn link(
        &self,
        nl: &mut Netlink,
        action: &str,
        deadline: Instant,
    ) -> Result<Link, ResourceError> {
        let index = match nix::net::if_::if_nametoindex(self.params.interface.as_str()) {
            Ok(index) => index,
            Err(Errno::ENODEV | Errno::ENXIO) => {
                return Err(self.error(
                    ResourceErrorKind::NotConfigured,
                    action,
                    format!("no interface {} on this node", self.params.interface),
                ))
            }
            Err(errno) => {
                return Err(self.error(
                    ResourceErrorKind::Failed,
                    action,
                    format!(
                        "cannot look up interface {}: {errno}",
                        self.params.interface
                    ),
                ))
            }
        };
        let request = link_request(index);
        let messages = nl
            .exchange(request, false, deadline)
            .await
            .map_err(|e| match e {
                NlError::Kernel(Errno::ENODEV) => self.error(
                    ResourceErrorKind::NotConfigured,
                    action,
                    format!("no interface {} on this node", self.params.interface),
                ),
                e => self.nl_error(action, "reading the interface", e),
            })?;
        messages
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .find_map(|(_, body)| parse_link(body))
            .filter(|link| link.index == index)
            .ok_or_else(|| {
                self.nl_error(
                    action,
                    "reading the interface",
                    NlError::Malformed("no RTM_NEWLINK for the interface"),
                )
            })
    }

    /// Our address on the interface, as the kernel lists it.
    async fn find(
        &self,
        nl: &mut Netlink,
        link: &Link,
        action: &str,
        deadline: Instant,
    ) -> Result<Option<AddrEntry>, ResourceError> {
        let family = if self.params.address.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        };
        let messages = nl
            .exchange(addr_dump_request(family), true, deadline)
            .await
            .map_err(|e| self.nl_error(action, "listing addresses", e))?;
        Ok(messages
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWADDR)
            .filter_map(|(_, body)| parse_addr(body))
            .find(|e| e.index == link.index && e.address == self.params.address))
    }

    fn addr_request(&self, kind: u16, flags: u16, index: u32) -> Vec<u8> {
        let p = &self.params;
        let mut body = Vec::with_capacity(64);
        let (family, ifa_flags, scope) = match p.address {
            IpAddr::V4(a) => (
                AF_INET,
                0u8,
                if a.is_loopback() { RT_SCOPE_HOST } else { 0 },
            ),
            IpAddr::V6(a) => (
                AF_INET6,
                IFA_F_NODAD_U8,
                if a.is_unicast_link_local() {
                    RT_SCOPE_LINK
                } else if a.is_loopback() {
                    RT_SCOPE_HOST
                } else {
                    0
                },
            ),
        };
        body.extend_from_slice(&[family, p.prefix, ifa_flags, scope]);
        body.extend_from_slice(&index.to_ne_bytes());
        match p.address {
            IpAddr::V4(a) => {
                push_attr(&mut body, IFA_LOCAL, &a.octets());
                push_attr(&mut body, IFA_ADDRESS, &a.octets());
                if kind == RTM_NEWADDR {
                    if p.prefix < 31 {
                        let host_bits = u32::MAX.checked_shr(u32::from(p.prefix)).unwrap_or(0);
                        let broadcast = Ipv4Addr::from(u32::from(a) | host_bits);
                        push_attr(&mut body, IFA_BROADCAST, &broadcast.octets());
                    }
                    if let Some(label) = &p.label {
                        let mut bytes = label.as_bytes().to_vec();
                        bytes.push(0);
                        push_attr(&mut body, IFA_LABEL, &bytes);
                    }
                }
            }
            IpAddr::V6(a) => {
                push_attr(&mut body, IFA_ADDRESS, &a.octets());
                if kind == RTM_NEWADDR {
                    push_attr(&mut body, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
                }
            }
        }
        message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, &body)
    }

    fn address_text(&self) -> String {
        format!("{}/{}", self.params.address, self.params.prefix)
    }

    fn nl_error(&self, action: &str, doing: &str, e: NlError) -> ResourceError {
        let (kind, what) = match e {
            NlError::Kernel(errno @ (Errno::EPERM | Errno::EACCES)) => (
                ResourceErrorKind::Permission,
                format!("{errno} (needs CAP_NET_ADMIN)"),
            ),
            NlError::Kernel(errno @ Errno::ENODEV) => (
                ResourceErrorKind::NotConfigured,
                format!("{errno}: no interface {}", self.params.interface),
            ),
            NlError::Kernel(errno) => (ResourceErrorKind::Failed, errno.to_string()),
            NlError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                (ResourceErrorKind::Permission, e.to_string())
            }
            NlError::Io(e) => (ResourceErrorKind::Failed, e.to_string()),
            NlError::Timeout => (
                ResourceErrorKind::Timeout,
                "no answer from the kernel before the deadline".to_owned(),
            ),
            NlError::Malformed(what) => (
                ResourceErrorKind::Failed,
                format!("malformed netlink answer: {what}"),
            ),
        };
        self.error(
            kind,
            action,
            format!(
                "{doing} ({} on {}): {what}",
                self.address_text(),
                self.params.interface
            ),
        )
    }

    fn error(&self, kind: ResourceErrorKind, action: &str, message: String) -> ResourceError {
        ResourceError::new(kind, &self.name, action, message)
    }

    fn logged<T>(
        &self,
        action: &str,
        result: Result<T, ResourceError>,
    ) -> Result<T, ResourceError> {
        if let Err(e) = &result {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %self.name, action, kind = ?e.kind,
                message = %e.message, "address action failed");
        }
        result
    }
}

impl Resource for VipResource {
    fn name(&self) -> &str {
        &self.name
    }

    super::logged_actions!();
}

/// A route netlink socket, non-blocking under tokio.
struct Netlink {
    fd: AsyncFd<OwnedFd>,
}

impl Netlink {
    fn open() -> Result<Self, NlError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(NlError::Kernel)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NlError::Kernel)?;
        // SAFETY: the OwnedFd is open, owned by the AsyncFd from here on, and its as_raw_fd
        // returns the same descriptor for as long as it lives.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| NlError::Io(e.into()))?;
        Ok(Self { fd })
    }

    /// Sends a request expecting only an acknowledgement.
    async fn ack(&mut self, request: Vec<u8>, deadline: Instant) -> Result<(), NlError> {
        self.exchange(request, false, deadline).await.map(drop)
    }

    /// Sends `request` and collects the answers to it as `(type, body)` until the
    /// acknowledgement (or, for a dump, `NLMSG_DONE`). A kernel error is returned as such.
    async fn exchange(
        &mut self,
        mut request: Vec<u8>,
        dump: bool,
        deadline: Instant,
    ) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        tokio::time::timeout_at(deadline, async {
            self.send(&request).await?;
            let mut answers = Vec::new();
            let mut buf = vec![0u8; RECV_BUFFER];
            // Bounded by the deadline; the kernel ends every answer with DONE or an ack.
            loop {
                let n = self.recv(&mut buf).await?;
                let mut rest = buf.get(..n).ok_or(NlError::Malformed("length"))?;
                while !rest.is_empty() {
                    let (kind, flags, msg_seq, body, tail) = split_message(rest)?;
                    rest = tail;
                    if msg_seq != seq {
                        continue;
                    }
                    match kind {
                        NLMSG_ERROR => {
                            let code = body
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .map(i32::from_ne_bytes)
                                .ok_or(NlError::Malformed("short NLMSG_ERROR"))?;
                            return if code == 0 {
                                Ok(answers)
                            } else {
                                Err(NlError::Kernel(Errno::from_raw(-code)))
                            };
                        }
                        NLMSG_DONE => return Ok(answers),
                        _ => {
                            answers.push((kind, body.to_vec()));
                            if !dump && flags & NLM_F_MULTI == 0 && !request_wants_ack(&request) {
                                return Ok(answers);
                            }
                        }
                    }
                }
            }
        })
        .await
        .map_err(|_| NlError::Timeout)?
    }

    async fn send(&self, request: &[u8]) -> Result<(), NlError> {
        loop {
            let mut guard = self.fd.writable().await.map_err(NlError::Io)?;
            let kernel = NetlinkAddr::new(0, 0);
            match guard.try_io(|fd| {
                socket::sendto(
                    fd.get_ref().as_raw_fd(),
                    request,
                    &kernel,
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(io_to_nl(e)),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, NlError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(NlError::Io)?;
            match guard.try_io(|fd| {
                socket::recv(fd.get_ref().as_raw_fd(), buf, MsgFlags::empty())
                    .map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => return Err(io_to_nl(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.fd.get_ref().as_raw_fd())
            .finish()
    }
}

/// One round of announcements of an address, owned so it can outlive the start that sent the
/// first.
struct Announce {
    name: String,
    interface: String,
    index: u32,
    mac: [u8; 6],
    address: IpAddr,
    metrics: Arc<VipMetrics>,
}

impl Announce {
    /// Sends one round; false (logged and counted) if it could not.
    fn send(&self) -> bool {
        let sent = match self.address {
            IpAddr::V4(address) => send_garp(self.index, self.mac, address),
            IpAddr::V6(address) => {
                send_unsolicited_na(&self.interface, self.index, self.mac, address)
            }
        };
        match sent {
            Ok(packets) => {
                self.metrics
                    .announcements
                    .fetch_add(packets, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.metrics.announce_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(resource = %self.name, address = %self.address,
                    interface = %self.interface, error = %e,
                    "cannot announce the address; neighbours keep stale entries until they \
                     expire");
                false
            }
        }
    }
}

/// How long the background announcements of a start go on.
pub const ANNOUNCE_SPAN: Duration = Duration::from_millis(200);

// The span is the pause between rounds times the repeats.
const _: () = assert!(
    ANNOUNCE_SPAN.as_millis() == ANNOUNCE_INTERVAL.as_millis() * (ANNOUNCE_ROUNDS as u128 - 1)
);

/// Rounds of announcements; each round is two ARP packets (request, reply) or one NA.
/// Three, as arping -U -c 3 and Pacemaker's IPaddr2 default: one lost packet is not enough to
/// leave a neighbour stale.
const ANNOUNCE_ROUNDS: usize = 3;

/// Pause between rounds: long enough that a switch busy with the takeover burst drops at most
/// one.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(100);

/// Receive buffer for netlink answers: the kernel sends at most one page-sized batch of dump
/// messages per read, well under this.
const RECV_BUFFER: usize = 64 * 1024;

const IFNAMSIZ: usize = 16;

// linux/netlink.h and linux/rtnetlink.h.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const IFA_F_NODAD_U8: u8 = 0x02;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
const IFLA_ADDRESS: u16 = 1;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const ARPHRD_ETHER: u16 = 1;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_HOST: u8 = 254;
// The address families as the one byte netlink carries them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_P_ARP: u16 = 0x0806;

static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);

fn io_to_nl(e: io::Error) -> NlError {
    match e.raw_os_error() {
        Some(code) => NlError::Kernel(Errno::from_raw(code)),
        None => NlError::Io(e),
    }
}

fn request_wants_ack(request: &[u8]) -> bool {
    request
        .get(6..8)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .is_some_and(|flags| flags & NLM_F_ACK != 0)
}

/// A netlink message with `body`; the sequence number is set when it is sent.
fn message(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut out = Vec::with_capacity(align4(len));
    // Requests are built here from fixed parts far below 4 GiB.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out.resize(align4(len), 0);
    out
}

fn push_attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    // Attributes here are addresses and labels, a few bytes long.
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(align4(out.len()), 0);
}

fn link_request(index: u32) -> Vec<u8> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut body = vec![0u8; 16];
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    message(RTM_GETLINK, NLM_F_REQUEST, &body)
}

fn addr_dump_request(family: u8) -> Vec<u8> {
    // struct ifaddrmsg with only the family set: every address of that family.
    let body = [family, 0, 0, 0, 0, 0, 0, 0];
    message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &body)
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink message split off a buffer: `(type, flags, seq, body, rest of the buffer)`.
type Split<'a> = (u16, u16, u32, &'a [u8], &'a [u8]);

/// Splits the first netlink message off `buf`.
fn split_message(buf: &[u8]) -> Result<Split<'_>, NlError> {
    let header = buf
        .get(..NLMSG_HDRLEN)
        .ok_or(NlError::Malformed("short header"))?;
    let len = usize::try_from(u32::from_ne_bytes([
        header[0], header[1], header[2], header[3],
    ]))
    .map_err(|_| NlError::Malformed("length"))?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let flags = u16::from_ne_bytes([header[6], header[7]]);
    let seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
    if len < NLMSG_HDRLEN || len > buf.len() {
        return Err(NlError::Malformed("message length"));
    }
    let body = &buf[NLMSG_HDRLEN..len];
    let rest = buf.get(align4(len)..).unwrap_or(&[]);
    Ok((kind, flags, seq, body, rest))
}

/// The attributes after a fixed header of `skip` bytes, as `(type, data)`; stops at the first
/// malformed one.
fn attrs(body: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = body.get(skip..).unwrap_or(&[]);
    while let Some(head) = rest.get(..4) {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        let Some(data) = rest.get(4..len.max(4)).filter(|_| len >= 4) else {
            break;
        };
        out.push((kind, data));
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let head = body.get(..16)?;
    let kind = u16::from_ne_bytes([head[2], head[3]]);
    let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let flags = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]);
    let mac = attrs(body, 16)
        .into_iter()
        .find(|(k, _)| *k == IFLA_ADDRESS)
        .and_then(|(_, d)| <[u8; 6]>::try_from(d).ok());
    Some(Link {
        index,
        flags,
        kind,
        mac,
    })
}

fn parse_addr(body: &[u8]) -> Option<AddrEntry> {
    let head = body.get(..8)?;
    let family = head[0];
    let prefix = head[1];
    let mut flags = u32::from(head[2]);
    let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let mut local = None;
    let mut address = None;
    for (kind, data) in attrs(body, 8) {
        let ip = match family {
            AF_INET => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            AF_INET6 => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_FLAGS => {
                if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                    flags = u32::from_ne_bytes(bytes);
                }
            }
            _ => {}
        }
    }
    Some(AddrEntry {
        index,
        prefix,
        flags,
        address: local.or(address)?,
    })
}

/// One gratuitous ARP request and one reply for `address`, broadcast on interface `index`.
fn send_garp(index: u32, mac: [u8; 6], address: Ipv4Addr) -> io::Result<u64> {
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let ll = libc::sockaddr_ll {
        sll_family: libc::c_ushort::try_from(libc::AF_PACKET)
            .map_err(|_| io::Error::other("AF_PACKET"))?,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: i32::try_from(index).map_err(|_| io::Error::other("interface index"))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::other("sockaddr_ll size"))?;
    // SAFETY: `ll` is a fully initialised sockaddr_ll on the stack and `len` is its exact
    // size; from_raw only reads that many bytes from the pointer.
    let to =
        unsafe { LinkAddr::from_raw(std::ptr::from_ref(&ll).cast::<libc::sockaddr>(), Some(len)) }
            .ok_or_else(|| io::Error::other("sockaddr_ll rejected"))?;
    debug_assert_eq!(to.len(), len);
    let mut sent = 0;
    for op in [ARP_REQUEST, ARP_REPLY] {
        let frame = garp_frame(op, mac, address);
        socket::sendto(fd.as_raw_fd(), &frame, &to, MsgFlags::empty())?;
        sent += 1;
    }
    Ok(sent)
}

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An Ethernet broadcast frame carrying a gratuitous ARP `op` for `address` from `mac`: sender
/// and target protocol address are both `address`, as RFC 5227 section 3 describes.
fn garp_frame(op: u16, mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_MIN_FRAME);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(if op == ARP_REPLY { &[0xff; 6] } else { &[0; 6] });
    f.extend_from_slice(&address.octets());
    f.resize(ETH_MIN_FRAME, 0);
    f
}

/// Shortest Ethernet frame without its checksum; shorter ones are padded.
const ETH_MIN_FRAME: usize = 60;

/// One unsolicited neighbour advertisement for `address` to all nodes, from `address` itself.
fn send_unsolicited_na(
    interface: &str,
    index: u32,
    mac: [u8; 6],
    address: Ipv6Addr,
) -> io::Result<u64> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    // RFC 4861 section 7.1.2: a receiver drops an advertisement whose hop limit is not 255.
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(index)?;
    socket.set_multicast_loop_v6(false)?;
    let scope = if address.is_unicast_link_local() {
        index
    } else {
        0
    };
    socket.bind(&SockAddr::from(SocketAddrV6::new(address, 0, 0, scope)))?;
    let all_nodes = SocketAddrV6::new(ALL_NODES, 0, 0, index);
    // The kernel computes the ICMPv6 checksum on raw ICMPv6 sockets (RFC 3542 section 3.1).
    socket.send_to(&na_packet(mac, address), &SockAddr::from(all_nodes))?;
    Ok(1)
}

/// ff02::1, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// ICMPv6 neighbour advertisement (RFC 4861 section 4.4) for `address` with the override flag
/// and the target link-layer address option; the checksum is left to the kernel.
fn na_packet(mac: [u8; 6], address: Ipv6Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&[ICMPV6_NEIGHBOR_ADVERT, 0, 0, 0]);
    p.extend_from_slice(&[NA_FLAG_OVERRIDE, 0, 0, 0]);
    p.extend_from_slice(&address.octets());
    p.extend_from_slice(&[ND_OPT_TARGET_LL, 1]);
    p.extend_from_slice(&mac);
    p
}

const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LL: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn params(address: &str, prefix: u8) -> VipParams {
        VipParams {
            address: address.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            prefix,
            interface: "eth0".to_owned(),
            label: None,
        }
    }

    #[test]
    fn requests_carry_nodad_broadcast_and_label() {
        let mut p = params("192.0.2.10", 24);
        p.label = Some("eth0:vip".to_owned());
        let vip = VipResource::new("vip", p);
        let Ok(vip) = vip else {
            panic!("valid params refused");
        };
        let request = vip.addr_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 7);
        let Ok((kind, flags, _, body, rest)) = split_message(&request) else {
            panic!("request does not parse");
        };
        assert!(rest.is_empty());
        assert_eq!(kind, RTM_NEWADDR);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let parsed = parse_addr(body);
        assert_eq!(
            parsed,
            Some(AddrEntry {
                index: 7,
                prefix: 24,
                flags: 0,
                address: "192.0.2.10"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            })
        );
        let a = attrs(body, 8);
        assert!(a.contains(&(IFA_BROADCAST, &[192, 0, 2, 255][..])));
        assert!(a.contains(&(IFA_LABEL, &b"eth0:vip\0"[..])));

        let Ok(vip6) = VipResource::new("vip6", params("2001:db8::10", 64)) else {
            panic!("valid params refused");
        };
        let request = vip6.addr_request(RTM_NEWADDR, NLM_F_CREATE, 3);
        let Ok((_, _, _, body, _)) = split_message(&request) else {
            panic!("request does not parse");
        };
        let Some(entry) = parse_addr(body) else {
            panic!("body does not parse");
        };
        assert_eq!(entry.flags, IFA_F_NODAD);
        assert_eq!(body[2], IFA_F_NODAD_U8);
    }

    #[test]
    fn bad_params_are_refused() {
        let refused = |p: VipParams| matches!(VipResource::new("vip", p), Err(e) if e.kind == ResourceErrorKind::Args);
        assert!(refused(params("192.0.2.1", 33)));
        assert!(refused(params("2001:db8::1", 129)));
        let mut p = params("2001:db8::1", 64);
        p.label = Some("eth0:x".to_owned());
        assert!(refused(p));
        let mut p = params("192.0.2.1", 24);
        p.label = Some("eth1:x".to_owned());
        assert!(refused(p));
        let mut p = params("192.0.2.1", 24);
        p.interface = "much-too-long-name".to_owned();
        assert!(refused(p));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        assert!(split_message(&[1, 2, 3]).is_err());
        let mut bad = message(RTM_NEWADDR, 0, &[0; 8]);
        bad[0] = 200;
        assert!(split_message(&bad).is_err());
        assert_eq!(parse_addr(&[2, 24]), None);
        // An attribute claiming more bytes than there are ends the list.
        assert!(attrs(&[0, 0, 0, 0, 0xff, 0, 1, 0], 4).is_empty());
    }

    #[test]
    fn announcement_layouts() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = garp_frame(ARP_REQUEST, mac, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(f.len(), ETH_MIN_FRAME);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[28..32], &[192, 0, 2, 10]);
        assert_eq!(&f[38..42], &[192, 0, 2, 10]);
        let na = na_packet(mac, "2001:db8::10".parse().unwrap_or(Ipv6Addr::UNSPECIFIED));
        assert_eq!(na.len(), 32);
        assert_eq!(na[0], 136);
        assert_eq!(na[4] & NA_FLAG_OVERRIDE, NA_FLAG_OVERRIDE);
        assert_eq!(&na[26..32], &mac);
    }
}
