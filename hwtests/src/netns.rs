//! Network namespaces as separate hosts: two joined by a veth pair ([`VethPair`]), a real
//! Ethernet link whose carrier the test can drop, which loopback cannot give; or several on one
//! bridged segment ([`Segment`]), where an address that moves between hosts (a virtual IP) is
//! found by ARP as on a real LAN.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`. Every namespace and link
//! this creates is deleted on drop; names carry the test process's PID and a counter so that
//! parallel tests never collide. Addresses live only inside these namespaces.

use std::fs;
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

/// Hosts on one Ethernet segment: a namespace each, with interface [`Segment::DEV`] at its
/// address, every one plugged by a veth pair into a bridge that lives in a namespace of its own
/// (the switch), which also has an address on the segment ([`Segment::switch_addr`]) for
/// services the test runs there (a management relay, for instance).
#[derive(Debug)]
pub struct Segment {
    /// The switch's namespace.
    pub switch: String,
    /// Each host's namespace, in the order given.
    pub hosts: Vec<String>,
    /// Each host's address.
    pub addr: Vec<Ipv4Addr>,
    /// The switch's own address on the segment.
    pub switch_addr: Ipv4Addr,
}

impl Segment {
    /// Every host's interface name.
    pub const DEV: &'static str = "eth0";

    /// Creates the switch and one host per address (all in one /24 with `switch_addr`), and
    /// brings everything up. `names` (one per address) go into the namespace names, to read
    /// them in `ip netns`.
    pub fn new(names: &[&str], addr: &[Ipv4Addr], switch_addr: Ipv4Addr) -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}s{n}", std::process::id() % 100_000);
        let seg = Self {
            switch: format!("wk{tag}sw"),
            hosts: names.iter().map(|name| format!("wk{tag}{name}")).collect(),
            addr: addr.to_vec(),
            switch_addr,
        };
        // From here on, Drop cleans up whatever part was created.
        ip(&["netns", "add", &seg.switch])?;
        ip(&["-n", &seg.switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &seg.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &seg.switch,
            "addr",
            "add",
            &format!("{switch_addr}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &seg.switch, "link", "set", "br0", "up"])?;
        for (i, (ns, a)) in seg.hosts.iter().zip(&seg.addr).enumerate() {
            let port = format!("p{i}");
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link",
                "add",
                Self::DEV,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &seg.switch,
            ])?;
            ip(&["-n", &seg.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &seg.switch, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                Self::DEV,
            ])?;
            ip(&["-n", ns, "link", "set", Self::DEV, "up"])?;
        }
        Ok(seg)
    }

    /// The command (program first) that runs a program inside host `i`'s network namespace,
    /// as [`VethPair::enter_command`].
    pub fn enter_command(&self, i: usize) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.hosts[i]),
            "--".into(),
        ]
    }

    /// Whether host `i` has `address` on its interface.
    pub fn has_address(&self, i: usize, address: Ipv4Addr) -> bool {
        Command::new("ip")
            .args(["-n", &self.hosts[i], "-o", "addr", "show", "dev", Self::DEV])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {address}/")))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Runs `f` on a thread of its own inside network namespace `ns`, so that the sockets it opens
/// and the programs it starts live there. Only the network namespace changes: `ip netns exec`
/// would also give a program a private copy of the mount table, which keeps every filesystem
/// mounted at that moment busy for as long as the program runs.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<T> {
                let file = fs::File::open(&path)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::other(format!("setns {path}: {e}")))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "thread in namespace {ns} panicked"
                )))
            })
    })
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
