//! OCF resource agents from Debian's resource-agents as the rig's resources (`kind = "ocf"`):
//! `Dummy`, `IPaddr2` and `Filesystem`, run by the agents' own OCF executor, so that the
//! never-two-holders rule is judged on the things a Bacula pair really moves — an address on a
//! NIC and a filesystem on a block device — and not only on stand-in scripts.
//!
//! ```toml
//! [[resource]]
//! name = "storage"
//! kind = "ocf"
//! agent = "Filesystem"        # the rig makes an ext4 image on a loop device
//!
//! [[resource]]
//! name = "service-ip"
//! kind = "ocf"
//! agent = "IPaddr2"
//! address = "10.79.0.101/24"  # on each host's hb0
//!
//! [[resource]]
//! name = "token"
//! kind = "ocf"
//! agent = "Dummy"
//! ```
//!
//! # One kernel, two hosts
//!
//! The emulated hosts are network namespaces of one machine: they share its kernel, its mount
//! table and its files. What makes each resource a host's own:
//!
//! - **Filesystem.** One loop device, one mount point per host (`<rig>/<host>-<resource>`,
//!   given to the agent as `directory` with `{node}`): a mount is alpha's when it is on
//!   alpha's mount point, so "who mounted it" is read from the mount table. fsck is off
//!   (`run_fsck = "no"`): the superblock a fenced host had mounted lives on until nothing
//!   holds it (a copy of the mount table in another program's mount namespace holds it too),
//!   and fsck would find the device busy; on real hosts the power-off ends it.
//! - **IPaddr2.** The address on `hb0` in the host's network namespace, where its agent (and
//!   so the resource agent it runs) lives.
//! - **Dummy.** Its state file, in the host's own run directory (`state` with `{node}`).
//! - **The resource agents' run directory** (`HA_RSCTMP`: IPaddr2's ARP sender PID files,
//!   lock files) is the host's own too, like `/run` on a machine: each host runs the agents
//!   through a small wrapper of its own that sets it.
//!
//! A power-off (the BMC switching the host off, seen by the rig's power watcher) and a reboot
//! clear what a power cycle clears: the mount is detached lazily (a dead machine's page cache
//! is gone at once; the superblock lives on while a peer's mount shares it), the address is
//! dropped, the run directory emptied.
//!
//! # The journal
//!
//! The wrapper stamps every start and stop in the rig's resource journal with the same line
//! format as the marker script (`<time> <host> start|stop <resource>`): a start before the
//! resource agent acts (from then on the resource may run there), a stop once it has stopped
//! it (and a start that failed and left nothing running is closed by a stop). Replayed with
//! the BMCs' power logs and the rig's reboots, no two hosts may ever run the group at once.
//! The wrapper changes nothing else: the resource agent gets the executor's environment and
//! arguments, and its exit code is the answer.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::desc::{Resource, ResourceKind, RigDesc};
use crate::util::run_bounded;

/// Where resource-agents installs its agents (provider `heartbeat`).
pub const HEARTBEAT: &str = "/usr/lib/ocf/resource.d/heartbeat";
/// Size of the Filesystem's ext4 image.
const IMAGE_BYTES: u64 = 32 << 20;
/// Longest an image, loop device or mount command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The file the scenarios write on the group's filesystems before a fault.
pub const STORAGE_FILE: &str = "rig-writes";

/// Which resource agent, with what the rig needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcfAgent {
    /// `Dummy`: a state file, nothing else.
    Dummy,
    /// `IPaddr2`: a virtual IP on the host's LAN interface.
    IPaddr2 {
        /// Address with prefix, e.g. `10.79.0.101/24`.
        address: String,
    },
    /// `Filesystem`: a block device mounted on a directory.
    Filesystem {
        /// On a real rig, where the hosts mount it (`{node}` is a host's name): the default
        /// `check` is `mountpoint -q` on it, and the scenarios write a file there. The emulated
        /// rig picks its own per host.
        directory: Option<String>,
    },
}

impl OcfAgent {
    /// The agent's name in resource-agents.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dummy => "Dummy",
            Self::IPaddr2 { .. } => "IPaddr2",
            Self::Filesystem { .. } => "Filesystem",
        }
    }
}

/// Checks an `ocf` resource's keys: the agent, its address (IPaddr2), its directory
/// (Filesystem, real rigs only). On error: the key (`agent`, `address`, `directory`) and what
/// is expected.
pub fn parse(
    agent: Option<&str>,
    address: Option<&str>,
    directory: Option<&str>,
    real: bool,
) -> Result<OcfAgent, (&'static str, String)> {
    let kind = match agent {
        Some("Dummy") => OcfAgent::Dummy,
        Some("IPaddr2") => {
            let Some(a) = address else {
                return Err((
                    "address",
                    "an IPaddr2 resource needs `address`, e.g. \"10.79.0.101/24\"".into(),
                ));
            };
            let ok = a.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
            });
            if !ok {
                return Err((
                    "address",
                    format!("{a:?} is not an address with a prefix, e.g. \"10.79.0.101/24\""),
                ));
            }
            OcfAgent::IPaddr2 {
                address: a.to_owned(),
            }
        }
        Some("Filesystem") => {
            if let Some(d) = directory {
                if !real {
                    return Err((
                        "directory",
                        "is for backend = \"real\": the emulated rig gives each host a mount \
                         point of its own"
                            .into(),
                    ));
                }
                if !d.starts_with('/') {
                    return Err((
                        "directory",
                        format!("{d:?} is not an absolute path, e.g. \"/srv/bacula\""),
                    ));
                }
            }
            OcfAgent::Filesystem {
                directory: directory.map(str::to_owned),
            }
        }
        Some(other) => {
            return Err((
                "agent",
                format!(
                "unknown OCF agent {other:?}: expected \"Dummy\", \"IPaddr2\" or \"Filesystem\" \
                     (resource-agents' heartbeat provider)"
            ),
            ))
        }
        None => {
            return Err((
                "agent",
                "an ocf resource needs `agent`: \"Dummy\", \"IPaddr2\" or \"Filesystem\"".into(),
            ))
        }
    };
    if address.is_some() && !matches!(kind, OcfAgent::IPaddr2 { .. }) {
        return Err(("address", "only an IPaddr2 resource has an address".into()));
    }
    if directory.is_some() && !matches!(kind, OcfAgent::Filesystem { .. }) {
        return Err((
            "directory",
            "only a Filesystem resource has a directory".into(),
        ));
    }
    Ok(kind)
}

/// On a real rig, the default `check` of an OCF resource named `name` (a shell line on the
/// host, 0 where it runs; `{node}` stands for the host's name), or `None` where the
/// description must give one.
pub fn real_check(name: &str, agent: &OcfAgent) -> Option<String> {
    let q = super::real::quote;
    match agent {
        // The agent's own monitor, with its default state file (under /run/resource-agents).
        OcfAgent::Dummy => Some(format!(
            "OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE={} {HEARTBEAT}/Dummy monitor >/dev/null 2>&1",
            q(name)
        )),
        OcfAgent::IPaddr2 { address } => Some(format!(
            "ip -o addr show | grep -qF {}",
            q(&format!(" {address} "))
        )),
        OcfAgent::Filesystem { directory } => directory
            .as_ref()
            .map(|d| format!("mountpoint -q {}", q(d))),
    }
}

/// Why the emulated rig cannot build `desc`'s OCF resources here, if it cannot.
pub fn unavailable(desc: &RigDesc, root: bool) -> Option<String> {
    let agents: Vec<&OcfAgent> = agents(desc).map(|(_, a)| a).collect();
    if agents.is_empty() {
        return None;
    }
    for a in &agents {
        if !Path::new(HEARTBEAT).join(a.name()).exists() {
            return Some(format!(
                "rig {:?} has an OCF {} resource: {HEARTBEAT}/{} is missing (run `bash scripts/deps-resource.sh`)",
                desc.name,
                a.name(),
                a.name()
            ));
        }
    }
    if !root
        && agents
            .iter()
            .any(|a| matches!(a, OcfAgent::Filesystem { .. }))
    {
        return Some(format!(
            "rig {:?} has an OCF Filesystem, which needs a loop device and mount: run as root",
            desc.name
        ));
    }
    None
}

fn agents(desc: &RigDesc) -> impl Iterator<Item = (&Resource, &OcfAgent)> {
    desc.resources.iter().filter_map(|r| match &r.kind {
        ResourceKind::Ocf(a) => Some((r, a)),
        _ => None,
    })
}

/// The OCF side of an emulated rig: per-host wrappers and run directories, the Filesystem's
/// image and loop device. Unmounts every host's mount point and detaches the device on drop.
#[derive(Debug)]
pub struct OcfRig {
    dir: PathBuf,
    hosts: Vec<String>,
    netns: Option<Vec<String>>,
    /// The loop device holding the Filesystems' ext4 image.
    device: Option<String>,
    /// (resource name, agent) in group order.
    resources: Vec<(String, OcfAgent)>,
}

/// What a power-off of one host clears of its OCF resources (shared with the power watcher).
#[derive(Debug, Clone, Default)]
pub struct Volatile {
    run_dir: PathBuf,
    mounts: Vec<PathBuf>,
    netns: Option<String>,
    addresses: Vec<String>,
}

impl Volatile {
    /// Clears it: mounts lazily detached, addresses dropped, the run directory emptied.
    pub fn clear(&self) {
        for m in &self.mounts {
            if mounted_at(m).is_some() {
                let _ = run_bounded(Command::new("umount").arg("-l").arg(m), COMMAND_TIMEOUT);
            }
        }
        if let Some(ns) = &self.netns {
            for a in &self.addresses {
                let _ = run_bounded(
                    Command::new("ip").args(["-n", ns, "addr", "del", a, "dev", "hb0"]),
                    COMMAND_TIMEOUT,
                );
            }
        }
        if let Ok(entries) = fs::read_dir(&self.run_dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
}

impl OcfRig {
    /// Builds the OCF side of `desc` in the rig directory `dir` (`netns`: each host's
    /// namespace, when the rig has them); `None` when the group has no OCF resource.
    pub fn build(
        desc: &RigDesc,
        dir: &Path,
        netns: Option<Vec<String>>,
    ) -> io::Result<Option<Self>> {
        let resources: Vec<(String, OcfAgent)> = agents(desc)
            .map(|(r, a)| (r.name.clone(), a.clone()))
            .collect();
        if resources.is_empty() {
            return Ok(None);
        }
        let hosts: Vec<String> = desc.hosts.iter().map(|h| h.name.clone()).collect();
        let mut rig = Self {
            dir: dir.to_path_buf(),
            hosts,
            netns,
            device: None,
            resources,
        };
        for h in &rig.hosts {
            fs::create_dir_all(rig.run_dir(h))?;
            let wrappers = rig.wrapper_dir(h);
            fs::create_dir_all(&wrappers)?;
            for (_, a) in &rig.resources {
                let path = wrappers.join(a.name());
                fs::write(&path, rig.wrapper(h, a))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
            for (name, a) in &rig.resources {
                if matches!(a, OcfAgent::Filesystem { .. }) {
                    fs::create_dir_all(rig.mount_point(h, name))?;
                }
            }
        }
        if rig
            .resources
            .iter()
            .any(|(_, a)| matches!(a, OcfAgent::Filesystem { .. }))
        {
            rig.device = Some(make_loop_fs(dir)?);
        }
        Ok(Some(rig))
    }

    /// Host `host`'s run directory (its `/run`: emptied by a power cycle).
    fn run_dir(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}-run"))
    }

    /// Where host `host`'s wrappers live, under a provider directory named `heartbeat` so that
    /// the agent sees the same `OCF_RESOURCE_PROVIDER` as for the real path.
    fn wrapper_dir(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}-ocf")).join("heartbeat")
    }

    /// Host `host`'s mount point for Filesystem resource `name`.
    pub fn mount_point(&self, host: &str, name: &str) -> PathBuf {
        self.dir.join(format!("{host}-{name}"))
    }

    fn wrapper(&self, host: &str, agent: &OcfAgent) -> String {
        let journal = self.dir.join("journal");
        format!(
            r#"#!/bin/sh
# resource-agents' {a} as host {host} runs it: with the host's own run directory (HA_RSCTMP,
# emptied by a power cycle), every start and stop stamped in the rig's journal.
HA_RSCTMP='{run}/resource-agents'
export HA_RSCTMP
mkdir -p "$HA_RSCTMP"
ra='{HEARTBEAT}/{a}'
stamp() {{ echo "$(date +%s.%N) {host} $1 $OCF_RESOURCE_INSTANCE" >> '{journal}'; }}
case "$1" in
  start)
    # From here on the resource may run on this host.
    stamp start
    "$ra" start; rc=$?
    if [ "$rc" -ne 0 ]; then
      "$ra" monitor >/dev/null 2>&1
      [ "$?" -eq 7 ] && stamp stop
    fi
    exit "$rc" ;;
  stop)
    "$ra" stop; rc=$?
    [ "$rc" -eq 0 ] && stamp stop
    exit "$rc" ;;
  *) exec "$ra" "$@" ;;
esac
"#,
            a = agent.name(),
            run = self.run_dir(host).display(),
            journal = journal.display(),
        )
    }

    /// The resource's lines in host `me`'s configuration (after `name`): the host's wrapper,
    /// and the parameters, per node through `{node}` where they differ.
    pub fn config(&self, me: &str, name: &str, agent: &OcfAgent) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "type = \"ocf\"\nagent = \"{}\"\n",
            self.wrapper_dir(me).join(agent.name()).display()
        );
        let d = self.dir.display();
        match agent {
            OcfAgent::Dummy => {
                let _ = writeln!(
                    s,
                    "params = {{ state = \"{d}/{{node}}-run/Dummy-{name}.state\" }}"
                );
            }
            OcfAgent::IPaddr2 { address } => {
                let (ip, len) = address.split_once('/').unwrap_or((address, "32"));
                let _ = writeln!(
                    s,
                    "params = {{ ip = \"{ip}\", cidr_netmask = \"{len}\", nic = \"hb0\" }}"
                );
            }
            OcfAgent::Filesystem { .. } => {
                let _ = writeln!(
                    s,
                    "params = {{ device = \"{dev}\", directory = \"{d}/{{node}}-{name}\", \
                     fstype = \"ext4\", options = \"noatime\", run_fsck = \"no\" }}",
                    dev = self.device.as_deref().unwrap_or("")
                );
            }
        }
        s.push_str("start_timeout = \"20s\"\nstop_timeout = \"20s\"\n");
        s
    }

    /// Whether OCF resource `name` runs on host `i`, seen from the resource itself.
    pub fn running(&self, i: usize, name: &str, agent: &OcfAgent) -> bool {
        let host = &self.hosts[i];
        match agent {
            OcfAgent::Dummy => self.dummy_state(host, name).exists(),
            OcfAgent::IPaddr2 { address } => self.netns.as_ref().is_some_and(|ns| {
                Command::new("ip")
                    .args(["-n", &ns[i], "-o", "addr", "show", "dev", "hb0"])
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains(&format!(" {address} "))
                    })
            }),
            OcfAgent::Filesystem { .. } => {
                let mnt = self.mount_point(host, name);
                self.device.is_some() && mounted_at(&mnt) == self.device
            }
        }
    }

    /// The loop device holding the Filesystems' image, if the group has a Filesystem.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// Host `host`'s state file for Dummy resource `name`.
    pub fn dummy_state(&self, host: &str, name: &str) -> PathBuf {
        self.run_dir(host).join(format!("Dummy-{name}.state"))
    }

    /// What a power-off of host `i` clears.
    pub fn volatile(&self, i: usize) -> Volatile {
        let host = &self.hosts[i];
        Volatile {
            run_dir: self.run_dir(host),
            mounts: self
                .resources
                .iter()
                .filter(|(_, a)| matches!(a, OcfAgent::Filesystem { .. }))
                .map(|(n, _)| self.mount_point(host, n))
                .collect(),
            netns: self.netns.as_ref().map(|ns| ns[i].clone()),
            addresses: self
                .resources
                .iter()
                .filter_map(|(_, a)| match a {
                    OcfAgent::IPaddr2 { address } => Some(address.clone()),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Writes `text` to [`STORAGE_FILE`] on every Filesystem of the group that host `i` has
    /// mounted and flushes it to the device (as a committed write would be); how many.
    pub fn write_storage(&self, i: usize, text: &str) -> Result<usize, String> {
        let mut n = 0;
        for dir in self.mounted_dirs(i) {
            let path = dir.join(STORAGE_FILE);
            let tmp = dir.join(format!("{STORAGE_FILE}.tmp"));
            let write = || -> io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                io::Write::write_all(&mut f, text.as_bytes())?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(&dir)?.sync_all()
            };
            write().map_err(|e| format!("write {}: {e}", path.display()))?;
            n += 1;
        }
        Ok(n)
    }

    /// [`STORAGE_FILE`] on every Filesystem of the group host `i` has mounted (`None` where it
    /// is missing), with the mount point.
    pub fn read_storage(&self, i: usize) -> Vec<(PathBuf, Option<String>)> {
        self.mounted_dirs(i)
            .into_iter()
            .map(|d| {
                let text = fs::read_to_string(d.join(STORAGE_FILE)).ok();
                (d, text)
            })
            .collect()
    }

    /// Host `i`'s Filesystem mount points that have the device mounted.
    fn mounted_dirs(&self, i: usize) -> Vec<PathBuf> {
        self.resources
            .iter()
            .filter(|(n, a)| matches!(a, OcfAgent::Filesystem { .. }) && self.running(i, n, a))
            .map(|(n, _)| self.mount_point(&self.hosts[i], n))
            .collect()
    }

    /// For a real-rig description of this rig: the keys of OCF resource `name` after `kind`,
    /// leaving to the real backend's defaults what they get right (the address on an
    /// interface, `mountpoint -q` on the host's mount point, given with `{node}`).
    pub fn export_keys(&self, name: &str, agent: &OcfAgent) -> String {
        let mut s = format!("agent = {:?}\n", agent.name());
        match agent {
            OcfAgent::Dummy => {
                let check = format!(
                    "test -e {}",
                    super::real::quote(&self.dummy_state("{node}", name).display().to_string())
                );
                let _ = writeln!(s, "check = {check:?}");
            }
            OcfAgent::IPaddr2 { address } => {
                let _ = writeln!(s, "address = {address:?}");
            }
            OcfAgent::Filesystem { .. } => {
                let _ = writeln!(
                    s,
                    "directory = {:?}",
                    self.mount_point("{node}", name).display().to_string()
                );
            }
        }
        s
    }

    /// For a real-rig description of this rig: the boot script's lines that clear what a power
    /// cycle of host `i` clears.
    pub fn boot_lines(&self, i: usize) -> String {
        let q = super::real::quote;
        let v = self.volatile(i);
        let mut s = format!(
            "rm -rf {}/* 2>/dev/null\n",
            q(&v.run_dir.display().to_string())
        );
        for m in &v.mounts {
            let _ = writeln!(s, "umount -l {} 2>/dev/null", q(&m.display().to_string()));
        }
        for a in &v.addresses {
            let _ = writeln!(s, "ip addr del {} dev hb0 2>/dev/null", q(a));
        }
        s
    }
}

impl Drop for OcfRig {
    fn drop(&mut self) {
        let mounts: Vec<PathBuf> = (0..self.hosts.len())
            .flat_map(|i| self.volatile(i).mounts)
            .collect();
        let began = Instant::now();
        while began.elapsed() < COMMAND_TIMEOUT && mounts.iter().any(|m| mounted_at(m).is_some()) {
            for m in &mounts {
                if mounted_at(m).is_some() {
                    let _ = run_bounded(Command::new("umount").arg(m), COMMAND_TIMEOUT);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(dev) = &self.device {
            let _ = run_bounded(Command::new("losetup").args(["-d", dev]), COMMAND_TIMEOUT);
        }
    }
}

/// The source mounted on `dir` in this process's mount table, if any.
fn mounted_at(dir: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let dir = dir.to_str()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split(' ');
        let (src, mnt) = (f.next()?, f.next()?);
        (mnt == dir).then(|| src.to_owned())
    })
}

/// An ext4 image in `dir` on a loop device; the device.
fn make_loop_fs(dir: &Path) -> io::Result<String> {
    let image = dir.join("ocf-storage.img");
    fs::File::create(&image)?.set_len(IMAGE_BYTES)?;
    let out = run_bounded(
        Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image),
        COMMAND_TIMEOUT,
    )
    .map_err(io::Error::other)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 {}: {} (install e2fsprogs)",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let out = run_bounded(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image),
        COMMAND_TIMEOUT,
    )
    .map_err(io::Error::other)?;
    let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !device.starts_with("/dev/") {
        return Err(io::Error::other(format!(
            "losetup --find --show {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_and_their_keys_are_checked() {
        assert_eq!(parse(Some("Dummy"), None, None, false), Ok(OcfAgent::Dummy));
        assert_eq!(
            parse(Some("IPaddr2"), Some("10.79.0.101/24"), None, false),
            Ok(OcfAgent::IPaddr2 {
                address: "10.79.0.101/24".into()
            })
        );
        assert_eq!(
            parse(Some("Filesystem"), None, Some("/srv/bacula"), true),
            Ok(OcfAgent::Filesystem {
                directory: Some("/srv/bacula".into())
            })
        );
        let key = |r: Result<OcfAgent, (&'static str, String)>| r.expect_err("refused").0;
        assert_eq!(key(parse(Some("IPaddr"), None, None, false)), "agent");
        assert_eq!(key(parse(None, None, None, false)), "agent");
        assert_eq!(key(parse(Some("IPaddr2"), None, None, false)), "address");
        assert_eq!(
            key(parse(Some("IPaddr2"), Some("10.79.0.101"), None, false)),
            "address"
        );
        assert_eq!(
            key(parse(Some("Dummy"), Some("10.0.0.1/8"), None, false)),
            "address"
        );
        assert_eq!(
            key(parse(Some("Filesystem"), None, Some("/srv"), false)),
            "directory"
        );
        assert_eq!(
            key(parse(Some("Filesystem"), None, Some("srv"), true)),
            "directory"
        );
        assert_eq!(
            key(parse(Some("Dummy"), None, Some("/srv"), true)),
            "directory"
        );
    }

    #[test]
    fn real_checks_default_to_what_the_agents_change() {
        let fs = OcfAgent::Filesystem {
            directory: Some("/srv/bacula".into()),
        };
        assert_eq!(
            real_check("storage", &fs).as_deref(),
            Some("mountpoint -q /srv/bacula")
        );
        assert_eq!(
            real_check("storage", &OcfAgent::Filesystem { directory: None }),
            None
        );
        let ip = real_check(
            "ip",
            &OcfAgent::IPaddr2 {
                address: "10.0.0.100/24".into(),
            },
        )
        .expect("default");
        assert!(ip.contains(" 10.0.0.100/24 "), "{ip}");
        let dummy = real_check("token", &OcfAgent::Dummy).expect("default");
        assert!(
            dummy.contains("Dummy monitor") && dummy.contains("INSTANCE=token "),
            "{dummy}"
        );
    }
}
