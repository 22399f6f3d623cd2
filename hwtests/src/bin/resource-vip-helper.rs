//! Test helper for `tests/resource_vip.rs`, run inside a network namespace with
//! `ip netns exec`, so the test process itself never changes namespace.
//!
//! - `resource-vip-helper vip ACTION ADDRESS PREFIX INTERFACE`: runs one `VipResource` action
//!   (`start`, `stop`, `monitor`) with a 10 s deadline and prints `ok`, `running`, `stopped`
//!   or `error KIND MESSAGE` on one line.
//! - `resource-vip-helper capture`: prints `ready`, then one line per gratuitous ARP
//!   (`arp op=1 sha=.. spa=.. tpa=..`) and per ICMPv6 neighbour advertisement (`na src=..
//!   dst=.. hlim=.. override=.. target=.. tll=..`) seen on any interface of the namespace,
//!   until its stdin closes or 30 s pass.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use drivers::resource::vip::{VipParams, VipResource};
use drivers::resource::{Resource as _, ResourceState};
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use nix::sys::time::TimeVal;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("vip") => vip(&args[1..]),
        Some("capture") => capture(),
        _ => bail!("usage: resource-vip-helper vip ACTION ADDRESS PREFIX INTERFACE | capture"),
    }
}

fn vip(args: &[String]) -> anyhow::Result<()> {
    let [action, address, prefix, interface] = args else {
        bail!("vip needs ACTION ADDRESS PREFIX INTERFACE");
    };
    let params = VipParams {
        address: address.parse().context("address")?,
        prefix: prefix.parse().context("prefix")?,
        interface: interface.clone(),
        label: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let line = runtime.block_on(async {
        let mut vip = match VipResource::new("vip", params) {
            Ok(vip) => vip,
            Err(e) => return format!("error {:?} {}", e.kind, e.message),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let result = match action.as_str() {
            // The repeated announcements go on after start returns: this process stays for
            // them, as the agent would.
            "start" => match vip.start(deadline).await {
                Ok(()) => {
                    tokio::time::sleep(drivers::resource::vip::ANNOUNCE_SPAN).await;
                    Ok("ok".to_owned())
                }
                Err(e) => Err(e),
            },
            "stop" => vip.stop(deadline).await.map(|()| "ok".to_owned()),
            _ => vip.monitor(deadline).await.map(|state| match state {
                ResourceState::Running => "running".to_owned(),
                ResourceState::Stopped => "stopped".to_owned(),
            }),
        };
        result.unwrap_or_else(|e| format!("error {:?} {}", e.kind, e.message))
    });
    println!("{line}");
    Ok(())
}

fn capture() -> anyhow::Result<()> {
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .context("AF_PACKET socket")?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
    let done = Arc::new(AtomicBool::new(false));
    let stdin_done = Arc::clone(&done);
    std::thread::spawn(move || {
        // Blocks until the test closes our stdin.
        for _ in std::io::stdin().lock().lines() {}
        stdin_done.store(true, Ordering::Relaxed);
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
        let n = match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("recv: {e}"),
        };
        if let Some(line) = buf.get(..n).and_then(describe) {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// One line for an ARP frame or an ICMPv6 neighbour advertisement; `None` for anything else.
fn describe(frame: &[u8]) -> Option<String> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        0x0806 => {
            let arp = frame.get(14..42)?;
            let op = u16::from_be_bytes([arp[6], arp[7]]);
            Some(format!(
                "arp op={op} sha={} spa={} tpa={}",
                mac(&arp[8..14]),
                ip4(&arp[14..18])?,
                ip4(&arp[24..28])?
            ))
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            let next = ip[6];
            let hlim = ip[7];
            let src = ip6(&ip[8..24])?;
            let dst = ip6(&ip[24..40])?;
            let icmp = frame.get(54..)?;
            if next != 58 || *icmp.first()? != 136 {
                return None;
            }
            let target = ip6(icmp.get(8..24)?)?;
            let tll = icmp
                .get(24..32)
                .filter(|o| o[0] == 2 && o[1] == 1)
                .map_or_else(|| "none".to_owned(), |o| mac(&o[2..8]));
            Some(format!(
                "na src={src} dst={dst} hlim={hlim} override={} target={target} tll={tll}",
                u8::from(icmp.get(4)? & 0x20 != 0)
            ))
        }
        _ => None,
    }
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip4(bytes: &[u8]) -> Option<IpAddr> {
    <[u8; 4]>::try_from(bytes)
        .ok()
        .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
}

fn ip6(bytes: &[u8]) -> Option<IpAddr> {
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}
