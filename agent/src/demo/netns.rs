//! The demo's hosts as network namespaces, when it runs as root.
//!
//! Agents that share the machine's loopback are one host pretending to be two: a heartbeat to
//! 127.0.0.1 cannot be lost on a cable, and every agent could reach every port. As root the
//! demo gives each node a network namespace of its own, plugged into a bridge in a "switch"
//! namespace, as hosts are plugged into a switch, and serves the simulated fence devices from
//! the switch's own address there: the agents then reach each other and their fence devices
//! only through their own network interface, as on a rack. Nothing touches the machine's own
//! network: every address lives inside namespaces the demo made, and they are deleted when it
//! ends (the [`Drop`] of [`DemoNet`]).
//!
//! Layout: bridge `br0` in `wkd<tag>-sw` with 10.89.0.254/24; node `i` in `wkd<tag>-<name>`
//! with `eth0` 10.89.0.`i+1`/24, a veth pair into the bridge.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// What went wrong making the namespaces.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// `ip` could not be run.
    #[error("cannot run `ip {args}`: {source}")]
    Run {
        /// Its arguments.
        args: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `ip` refused.
    #[error("`ip {args}` failed: {stderr}")]
    Refused {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// A socket could not be opened inside the switch namespace.
    #[error("cannot open a socket in namespace {ns}: {source}")]
    Socket {
        /// The namespace.
        ns: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The namespaces of one demo run; dropping it deletes them.
#[derive(Debug)]
pub(crate) struct DemoNet {
    switch: String,
    nodes: Vec<String>,
}

/// The switch's address, where the fence devices answer.
pub(crate) const SWITCH_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 254);

impl DemoNet {
    /// Makes the switch and one namespace per node of `names`, `tag` making the names unique
    /// to this run.
    pub(crate) fn create(tag: &str, names: &[&str]) -> Result<Self, NetError> {
        let switch = format!("wkd{tag}-sw");
        let mut net = Self {
            switch: switch.clone(),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        let sw = ["-n", switch.as_str()];
        ip(&[&sw[..], &["link", "set", "lo", "up"]].concat())?;
        ip(&[&sw[..], &["link", "add", "br0", "type", "bridge"]].concat())?;
        let cidr = format!("{SWITCH_ADDRESS}/24");
        ip(&[&sw[..], &["addr", "add", &cidr, "dev", "br0"]].concat())?;
        ip(&[&sw[..], &["link", "set", "br0", "up"]].concat())?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("wkd{tag}-{name}");
            ip(&["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            let cidr = format!("{}/24", Self::node_address(i));
            let n = ["-n", ns.as_str()];
            ip(&[&n[..], &["addr", "add", &cidr, "dev", "eth0"]].concat())?;
            ip(&[&n[..], &["link", "set", "eth0", "up"]].concat())?;
            ip(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
            ip(&[&sw[..], &["link", "set", &port, "master", "br0", "up"]].concat())?;
        }
        Ok(net)
    }

    /// Node `i`'s address on the demo's network.
    pub(crate) fn node_address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, 0, u8::try_from(i + 1).unwrap_or(250))
    }

    /// Node `i`'s namespace name.
    pub(crate) fn node_ns(&self, i: usize) -> Option<&str> {
        self.nodes.get(i).map(String::as_str)
    }

    /// The file that enters node `i`'s namespace (for `nsenter --net=`).
    pub(crate) fn node_ns_path(&self, i: usize) -> Option<PathBuf> {
        self.node_ns(i)
            .map(|ns| PathBuf::from(format!("/run/netns/{ns}")))
    }

    /// Every namespace, the switch last.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .chain(std::iter::once(&self.switch))
            .map(String::as_str)
            .collect()
    }

    /// The file that enters the switch's namespace.
    pub(crate) fn switch_path(&self) -> String {
        format!("/run/netns/{}", self.switch)
    }

    /// Runs `f` on a thread of its own inside the switch's namespace, so that the sockets it
    /// opens are served from there.
    pub(crate) fn in_switch<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T, NetError> {
        in_ns(&self.switch_path(), f).map_err(|source| NetError::Socket {
            ns: self.switch.clone(),
            source,
        })
    }
}

/// Runs `f` on a thread of its own inside the network namespace that `path` enters; only the
/// network namespace changes.
pub(crate) fn in_ns<T: Send>(
    path: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<T> {
                let file = std::fs::File::open(path)?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
    })
}

impl Drop for DemoNet {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Whether the demo can make namespaces: root, and `ip` there.
pub(crate) fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetError::Run {
            args: joined.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Refused {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
