//! Network namespaces as separate hosts, joined by a veth pair: a real Ethernet link whose
//! carrier the test can drop, which loopback cannot give.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`. Every namespace and link
//! this creates is deleted on drop; names carry the test process's PID and a counter so that
//! parallel tests never collide. Addresses live only inside these namespaces.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process can create network namespaces (it runs as root and `ip` exists).
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

/// Two namespaces joined by a veth pair, `10.231.0.1/24` in `a` and `10.231.0.2/24` in `b`.
#[derive(Debug)]
pub struct VethPair {
    /// Namespace names, side A then side B.
    pub ns: [String; 2],
    /// Interface names inside each namespace.
    pub dev: [String; 2],
    /// Addresses of each side.
    pub addr: [Ipv4Addr; 2],
}

impl VethPair {
    /// Creates both namespaces, the veth pair, addresses, and brings everything up.
    pub fn new() -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let pair = Self {
            ns: [format!("wk{tag}a"), format!("wk{tag}b")],
            dev: [format!("wk{tag}a"), format!("wk{tag}b")],
            addr: [Ipv4Addr::new(10, 231, 0, 1), Ipv4Addr::new(10, 231, 0, 2)],
        };
        // From here on, Drop cleans up whatever part was created.
        for ns in &pair.ns {
            ip(&["netns", "add", ns])?;
        }
        ip(&[
            "link",
            "add",
            &pair.dev[0],
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev[1],
        ])?;
        for i in 0..2 {
            ip(&["link", "set", &pair.dev[i], "netns", &pair.ns[i]])?;
            ip(&[
                "-n",
                &pair.ns[i],
                "addr",
                "add",
                &format!("{}/24", pair.addr[i]),
                "dev",
                &pair.dev[i],
            ])?;
            ip(&["-n", &pair.ns[i], "link", "set", "lo", "up"])?;
            ip(&["-n", &pair.ns[i], "link", "set", &pair.dev[i], "up"])?;
        }
        Ok(pair)
    }

    /// Drops or restores the carrier of side `i`'s interface (a pulled cable).
    pub fn set_up(&self, i: usize, up: bool) -> io::Result<()> {
        ip(&[
            "-n",
            &self.ns[i],
            "link",
            "set",
            &self.dev[i],
            if up { "up" } else { "down" },
        ])
    }

    /// The command prefix that runs a program inside side `i`'s namespace; `ip netns exec`
    /// execs the program in place, so the PID a test sees is the program's own.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.ns[i].clone()]
    }

    /// The command (program first) that runs a long-lived program inside side `i`'s network
    /// namespace and nothing else: `nsenter --net`, unlike `ip netns exec`, gives it no private
    /// copy of the machine's mounts, which would keep other tests' filesystems busy while it
    /// runs. It execs in place too.
    pub fn enter_command(&self, i: usize) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.ns[i]),
            "--".into(),
        ]
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the peer.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);
