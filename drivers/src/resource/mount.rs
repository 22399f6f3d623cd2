//! The backup filesystem as a [`Resource`]: a block device mounted at a mountpoint with
//! mount(2) and unmounted with umount2(2).
//!
//! Bacula's volumes live on storage that moves with the service; mounting it on two nodes at
//! once destroys it, so this executor is strict where `mount(8)` is lenient:
//!
//! - **Ours or nobody's.** A mount is ours when it sits at the mountpoint and comes from the
//!   configured device, compared by major:minor (symlinks such as `/dev/disk/by-uuid/…`
//!   resolved) or by the canonical source path. Anything else at the mountpoint is
//!   [`ResourceErrorKind::Failed`]: start does not mount over it, stop does not unmount it.
//! - **Never lazy.** Stop is a plain umount2(2), never `MNT_DETACH`: a detached mount lets the
//!   storage move to the other node while a process here still writes to it. A busy mount is
//!   [`ResourceErrorKind::Failed`] naming the processes that hold it (their cwd, root or open
//!   files under the mountpoint, found in `/proc`, bounded).
//! - **Checked before use.** With [`FsckPolicy::Preen`] or [`FsckPolicy::Force`], `fsck -p`
//!   runs first, under the deadline; errors it could not fix (exit code 4 or more) stop the
//!   mount, because a damaged filesystem mounted read-write gets worse.
//! - **Alive, not just listed.** Monitor also asks the filesystem for a statvfs(2) within the
//!   deadline: a hung SAN path or NFS server leaves the mount listed while every access blocks,
//!   and that is a failure. The probe runs on a blocking thread; a probe still stuck from an
//!   earlier call makes the next call fail at once rather than pile up threads.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Resource, ResourceError, ResourceErrorKind, ResourceState};

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountParams {
    /// The block device (a symlink such as `/dev/disk/by-uuid/…` is fine).
    pub device: PathBuf,
    /// Where to mount it: an absolute path to an existing directory.
    pub mountpoint: PathBuf,
    /// The filesystem type, `ext4`, `xfs`.
    pub fstype: String,
    /// Mount options as in fstab (`noatime`, `nodev`, `errors=remount-ro`); flags become
    /// mount(2) flags, the rest goes to the filesystem as data.
    pub options: Vec<String>,
    /// Whether to check the filesystem before mounting it.
    pub fsck: FsckPolicy,
}

/// When to run `fsck` before mounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsckPolicy {
    /// Never: the filesystem has its own journal replay (or the check takes too long).
    Never,
    /// `fsck -p`: replay and fix what is safe to fix unattended, and refuse to mount when
    /// errors remain (exit code 4 or more). A filesystem marked clean is not checked.
    #[default]
    Preen,
    /// `fsck -f -p`: as `Preen`, but checked in full even when marked clean.
    Force,
}

/// Counters of one mount, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct MountMetrics {
    /// mount(2) calls made.
    pub mounts: AtomicU64,
    /// umount2(2) calls made.
    pub unmounts: AtomicU64,
    /// `fsck` runs.
    pub fscks: AtomicU64,
    /// Actions that returned an error.
    pub errors: AtomicU64,
}

/// A mounted filesystem; see the module docs.
#[derive(Debug)]
pub struct MountResource {
    name: String,
    params: MountParams,
    flags: MsFlags,
    data: String,
    /// A blocking call (statvfs, mount, umount) that did not return by its deadline.
    stuck: Option<(&'static str, JoinHandle<()>)>,
    metrics: Arc<MountMetrics>,
}

/// How the configured device is recognised in `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceId {
    /// The block device's number, when it is one.
    rdev: Option<u64>,
    /// The device path with symlinks resolved (or as given when it does not resolve).
    path: PathBuf,
}

/// One line of `/proc/self/mountinfo`, the fields this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    major: u64,
    minor: u64,
    mountpoint: PathBuf,
    options: String,
    fstype: String,
    source: String,
}

impl MountResource {
    /// A resource named `name` mounting what `params` says.
    ///
    /// Fails with [`ResourceErrorKind::Args`] when a path is relative, the filesystem type is
    /// empty or an option is empty or carries a comma.
    pub fn new(name: impl Into<String>, params: MountParams) -> Result<Self, ResourceError> {
        let name = name.into();
        let bad =
            |message: String| ResourceError::new(ResourceErrorKind::Args, &name, "new", message);
        if !params.device.is_absolute() {
            return Err(bad(format!(
                "device {} is not an absolute path",
                params.device.display()
            )));
        }
        if !params.mountpoint.is_absolute()
            || params
                .mountpoint
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(bad(format!(
                "mountpoint {} is not a normalized absolute path",
                params.mountpoint.display()
            )));
        }
        if params.fstype.is_empty()
            || params
                .fstype
                .contains(|c: char| c == ',' || c.is_whitespace())
        {
            return Err(bad(format!("{:?} is not a filesystem type", params.fstype)));
        }
        if let Some(o) = params
            .options
            .iter()
            .find(|o| o.is_empty() || o.contains(','))
        {
            return Err(bad(format!(
                "mount option {o:?} is empty or holds a comma; give one option per entry"
            )));
        }
        let (flags, data) = split_options(&params.options);
        let mut params = params;
        params.mountpoint = canonical_parent(&params.mountpoint);
        Ok(Self {
            name,
            params,
            flags,
            data,
            stuck: None,
            metrics: Arc::default(),
        })
    }

    /// This mount's counters.
    pub fn metrics(&self) -> Arc<MountMetrics> {
        Arc::clone(&self.metrics)
    }

    async fn do_start(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        let device = self.device_id("start")?;
        match self.top_mount("start")? {
            Some(entry) if is_ours(&entry, &device) => {
                tracing::debug!(resource = %self.name, "start: already mounted");
                return self.check_alive("start", &entry, deadline).await;
            }
            Some(entry) => return Err(self.foreign("start", &entry, "mount over it")),
            None => {}
        }
        if !self.params.mountpoint.is_dir() {
            return Err(self.error(
                ResourceErrorKind::NotInstalled,
                "start",
                format!(
                    "mountpoint {} is not a directory on this node",
                    self.params.mountpoint.display()
                ),
            ));
        }
        if self.params.fsck != FsckPolicy::Never {
            if let Some(elsewhere) = read_mountinfo()
                .map_err(|e| self.mountinfo_error("start", &e))?
                .into_iter()
                .find(|e| is_ours(e, &device))
            {
                return Err(self.error(
                    ResourceErrorKind::Failed,
                    "start",
                    format!(
                        "{} is already mounted at {}; refusing to check or mount it again",
                        self.params.device.display(),
                        elsewhere.mountpoint.display()
                    ),
                ));
            }
            self.fsck(deadline).await?;
        }
        self.mount(deadline).await?;
        match self.top_mount("start")? {
            Some(entry) if is_ours(&entry, &device) => {
                self.check_alive("start", &entry, deadline).await
            }
            Some(entry) => Err(self.foreign("start", &entry, "use it")),
            None => Err(self.error(
                ResourceErrorKind::Failed,
                "start",
                format!(
                    "mount(2) succeeded but {} is not listed in /proc/self/mountinfo",
                    self.params.mountpoint.display()
                ),
            )),
        }
    }

    async fn do_stop(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        let device = self.device_id("stop")?;
        // The same device mounted twice on the same spot is unmounted twice; the bound keeps a
        // mountpoint that never empties from looping.
        for _ in 0..MAX_STACKED {
            match self.top_mount("stop")? {
                None => return Ok(()),
                Some(entry) if is_ours(&entry, &device) => self.unmount(deadline).await?,
                Some(entry) => return Err(self.foreign("stop", &entry, "unmount it")),
            }
        }
        match self.top_mount("stop")? {
            None => Ok(()),
            Some(entry) => Err(self.error(
                ResourceErrorKind::Failed,
                "stop",
                format!(
                    "{} is still mounted from {} after {MAX_STACKED} unmounts",
                    entry.mountpoint.display(),
                    entry.source
                ),
            )),
        }
    }

    async fn do_monitor(&mut self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        let device = self.device_id("monitor")?;
        match self.top_mount("monitor")? {
            None => Ok(ResourceState::Stopped),
            Some(entry) if is_ours(&entry, &device) => {
                self.check_alive("monitor", &entry, deadline).await?;
                Ok(ResourceState::Running)
            }
            Some(entry) => Err(self.foreign("monitor", &entry, "report it as ours")),
        }
    }

    /// The mount is writable when it should be and answers statvfs(2) by the deadline.
    async fn check_alive(
        &mut self,
        action: &'static str,
        entry: &MountEntry,
        deadline: Instant,
    ) -> Result<(), ResourceError> {
        let wants_ro = self.flags.contains(MsFlags::MS_RDONLY);
        if !wants_ro && entry.options.split(',').any(|o| o == "ro") {
            return Err(self.error(
                ResourceErrorKind::Failed,
                action,
                format!(
                    "{} is mounted read-only though configured read-write (remounted after \
                     filesystem errors?)",
                    self.params.mountpoint.display()
                ),
            ));
        }
        let mountpoint = self.params.mountpoint.clone();
        let answered = self
            .blocking(action, deadline, move || {
                nix::sys::statvfs::statvfs(&mountpoint).map(|_| ())
            })
            .await;
        match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => Err(self.error(
                ResourceErrorKind::Failed,
                action,
                format!(
                    "statvfs on {} failed: {errno}",
                    self.params.mountpoint.display()
                ),
            )),
            Err(e) if e.kind == ResourceErrorKind::Timeout => Err(self.error(
                ResourceErrorKind::Failed,
                action,
                format!(
                    "{} did not answer statvfs before the deadline: the storage is hung",
                    self.params.mountpoint.display()
                ),
            )),
            Err(e) => Err(e),
        }
    }

    async fn mount(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        self.metrics.mounts.fetch_add(1, Ordering::Relaxed);
        let device = self.params.device.clone();
        let mountpoint = self.params.mountpoint.clone();
        let fstype = self.params.fstype.clone();
        let flags = self.flags;
        let data = self.data.clone();
        let done = self
            .blocking("start", deadline, move || {
                let data = (!data.is_empty()).then_some(data.as_str());
                nix::mount::mount(
                    Some(device.as_path()),
                    mountpoint.as_path(),
                    Some(fstype.as_str()),
                    flags,
                    data,
                )
            })
            .await?;
        tracing::info!(resource = %self.name, device = %self.params.device.display(),
            mountpoint = %self.params.mountpoint.display(), ok = done.is_ok(), "mount(2)");
        done.map_err(|errno| {
            let kind = match errno {
                Errno::EPERM | Errno::EACCES => ResourceErrorKind::Permission,
                Errno::ENODEV => ResourceErrorKind::NotInstalled,
                Errno::ENOENT | Errno::ENOTBLK | Errno::ENXIO => ResourceErrorKind::NotInstalled,
                _ => ResourceErrorKind::Failed,
            };
            let hint = match errno {
                Errno::ENODEV => " (filesystem type not supported by this kernel)",
                Errno::EINVAL => " (bad superblock or unknown mount option)",
                Errno::EROFS => " (device is read-only; configure the ro option)",
                Errno::EBUSY => " (device in use or mountpoint busy)",
                _ => "",
            };
            self.error(
                kind,
                "start",
                format!(
                    "mount {} on {} as {}{}: {errno}{hint}",
                    self.params.device.display(),
                    self.params.mountpoint.display(),
                    self.params.fstype,
                    if self.data.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", self.data)
                    }
                ),
            )
        })
    }

    async fn unmount(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        self.metrics.unmounts.fetch_add(1, Ordering::Relaxed);
        let mountpoint = self.params.mountpoint.clone();
        // Never MNT_DETACH (see the module docs); MNT_FORCE would abort writes in flight.
        let done = self
            .blocking("stop", deadline, move || {
                nix::mount::umount2(mountpoint.as_path(), MntFlags::empty())
            })
            .await?;
        tracing::info!(resource = %self.name, mountpoint = %self.params.mountpoint.display(),
            ok = done.is_ok(), "umount2(2)");
        match done {
            Ok(()) => Ok(()),
            // Gone between the look and the call: the next look says so.
            Err(Errno::EINVAL) => Ok(()),
            Err(Errno::EBUSY) => {
                let mountpoint = self.params.mountpoint.clone();
                let holders = self
                    .blocking("stop", deadline, move || holders(&mountpoint))
                    .await?;
                Err(self.error(
                    ResourceErrorKind::Failed,
                    "stop",
                    format!(
                        "{} is busy, not unmounted: {}",
                        self.params.mountpoint.display(),
                        describe_holders(&holders)
                    ),
                ))
            }
            Err(errno @ (Errno::EPERM | Errno::EACCES)) => Err(self.error(
                ResourceErrorKind::Permission,
                "stop",
                format!("umount {}: {errno}", self.params.mountpoint.display()),
            )),
            Err(errno) => Err(self.error(
                ResourceErrorKind::Failed,
                "stop",
                format!("umount {}: {errno}", self.params.mountpoint.display()),
            )),
        }
    }

    /// Runs `fsck` per policy; exit codes 0 to 3 are a usable filesystem (3 = 1 | 2).
    async fn fsck(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        self.metrics.fscks.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(FSCK_PROGRAM);
        cmd.arg("-t").arg(&self.params.fstype).arg("-p");
        if self.params.fsck == FsckPolicy::Force {
            cmd.arg("-f");
        }
        cmd.arg(&self.params.device)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ResourceErrorKind::NotInstalled
            } else {
                ResourceErrorKind::Spawn
            };
            self.error(kind, "start", format!("cannot run {FSCK_PROGRAM}: {e}"))
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout_at(deadline, async {
            tokio::join!(read_capped(stdout), read_capped(stderr), child.wait())
        })
        .await;
        let (stdout, stderr, status) = match finished {
            Ok(done) => done,
            Err(_) => {
                if let Some(group) = group {
                    // The group id is fsck's PID, still ours: it is reaped only below.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                return Err(self.error(
                    ResourceErrorKind::Timeout,
                    "start",
                    format!(
                        "fsck of {} did not finish before the deadline and was killed; not \
                         mounted",
                        self.params.device.display()
                    ),
                ));
            }
        };
        let status = status.map_err(|e| {
            self.error(
                ResourceErrorKind::Spawn,
                "start",
                format!("cannot wait for fsck: {e}"),
            )
        })?;
        let code = status.code();
        tracing::info!(resource = %self.name, device = %self.params.device.display(), ?code,
            "fsck");
        match code {
            Some(c) if c < FSCK_UNCORRECTED => Ok(()),
            _ => {
                let said = last_line(&stderr)
                    .or_else(|| last_line(&stdout))
                    .unwrap_or("no message");
                let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"));
                Err(self.error(
                    ResourceErrorKind::Failed,
                    "start",
                    format!(
                        "fsck of {} ended with {code} (errors left uncorrected or check \
                         failed); not mounted: {said}",
                        self.params.device.display()
                    ),
                ))
            }
        }
    }

    /// Runs `f` on a blocking thread until `deadline`. A call left stuck past its deadline is
    /// remembered; while it is, further blocking calls fail at once.
    async fn blocking<T: Send + 'static>(
        &mut self,
        action: &'static str,
        deadline: Instant,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ResourceError> {
        if let Some((what, handle)) = &self.stuck {
            if !handle.is_finished() {
                return Err(self.error(
                    ResourceErrorKind::Timeout,
                    action,
                    format!(
                        "an earlier {what} on {} is still blocked in the kernel",
                        self.params.mountpoint.display()
                    ),
                ));
            }
            self.stuck = None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::task::spawn_blocking(move || {
            let _ = tx.send(f());
        });
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(self.error(
                ResourceErrorKind::Spawn,
                action,
                "the blocking call panicked".to_owned(),
            )),
            Err(_) => {
                self.stuck = Some((action, handle));
                Err(self.error(
                    ResourceErrorKind::Timeout,
                    action,
                    format!(
                        "{action} on {} did not return before the deadline",
                        self.params.mountpoint.display()
                    ),
                ))
            }
        }
    }

    fn device_id(&self, action: &str) -> Result<DeviceId, ResourceError> {
        let path = std::fs::canonicalize(&self.params.device)
            .unwrap_or_else(|_| self.params.device.clone());
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_block_device() => Ok(DeviceId {
                rdev: Some(m.rdev()),
                path,
            }),
            Ok(_) => Ok(DeviceId { rdev: None, path }),
            // A missing device cannot be mounted, but a mount of it may remain to be found
            // (a SAN path that vanished under a mounted filesystem): stop and monitor go on.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && action != "start" => {
                Ok(DeviceId { rdev: None, path })
            }
            Err(e) => Err(self.error(
                ResourceErrorKind::NotInstalled,
                action,
                format!("device {}: {e}", self.params.device.display()),
            )),
        }
    }

    /// The mount on top at the mountpoint, the one a path lookup and umount(2) reach.
    fn top_mount(&self, action: &str) -> Result<Option<MountEntry>, ResourceError> {
        let entries = read_mountinfo().map_err(|e| self.mountinfo_error(action, &e))?;
        Ok(entries
            .into_iter()
            .rfind(|e| e.mountpoint == self.params.mountpoint))
    }

    fn foreign(&self, action: &str, entry: &MountEntry, refused: &str) -> ResourceError {
        self.error(
            ResourceErrorKind::Failed,
            action,
            format!(
                "{} has {} ({}, {}:{}) mounted, not {}; refusing to {refused}",
                self.params.mountpoint.display(),
                entry.source,
                entry.fstype,
                entry.major,
                entry.minor,
                self.params.device.display()
            ),
        )
    }

    fn mountinfo_error(&self, action: &str, e: &std::io::Error) -> ResourceError {
        self.error(
            ResourceErrorKind::Failed,
            action,
            format!("cannot read {MOUNTINFO}: {e}"),
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
                message = %e.message, "mount action failed");
        }
        result
    }
}

impl Resource for MountResource {
    fn name(&self) -> &str {
        &self.name
    }

    super::logged_actions!();
}

/// A process holding a mount busy, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: i32,
    command: String,
    how: String,
}

/// Util-linux installs it here; with merged /usr, `/sbin` is a link to `/usr/sbin`. An absolute
/// path, because the agent's PATH is whatever its service manager gave it.
const FSCK_PROGRAM: &str = "/sbin/fsck";

/// fsck's "filesystem errors left uncorrected" bit; every code from it up is a refusal.
const FSCK_UNCORRECTED: i32 = 4;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Unmounts tried at one mountpoint in one stop.
const MAX_STACKED: usize = 8;

/// Processes looked at when naming the holders of a busy mount; a host has far fewer.
const MAX_PROCS_SCANNED: usize = 65_536;

/// Open files looked at per process; bacula-sd holds a few dozen.
const MAX_FDS_PER_PROC: usize = 4096;

/// Holders named in an error; the count of the rest follows.
const MAX_HOLDERS_NAMED: usize = 10;

/// Most bytes kept of fsck's stdout or stderr.
const MAX_OUTPUT: usize = 16 * 1024;

/// Splits fstab options into mount(2) flags and the filesystem's data string. Options only
/// mount(8) or fstab readers understand (`defaults`, `auto`, `nofail`, `_netdev`, `x-…`) are
/// dropped.
fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" | "users" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            o if o.starts_with("x-") || o.starts_with("comment=") => {
                (MsFlags::empty(), MsFlags::empty())
            }
            o => {
                data.push(o.to_owned());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// The mountpoint with its parent's symlinks resolved, as mountinfo lists it. Only the parent
/// is resolved: the mountpoint itself may be a hung mount that a lookup would block on.
fn canonical_parent(mountpoint: &Path) -> PathBuf {
    match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(file)) => std::fs::canonicalize(parent)
            .map(|p| p.join(file))
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
        _ => mountpoint.to_path_buf(),
    }
}

fn is_ours(entry: &MountEntry, device: &DeviceId) -> bool {
    if let Some(rdev) = device.rdev {
        if nix::sys::stat::major(rdev) == entry.major && nix::sys::stat::minor(rdev) == entry.minor
        {
            return true;
        }
    }
    // Filesystems with anonymous device numbers (btrfs) are recognised by their source.
    let source = Path::new(&entry.source);
    source == device.path
        || (source.is_absolute() && std::fs::canonicalize(source).is_ok_and(|s| s == device.path))
}

fn read_mountinfo() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO)?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// Parses one mountinfo line (proc(5)): `id parent major:minor root mountpoint options
/// [optional fields...] - fstype source super-options`. A malformed line is skipped.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let _root = fields.next()?;
    let mountpoint = fields.next()?;
    let options = fields.next()?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let source = after.next()?;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mountpoint: PathBuf::from(OsStr::from_bytes(&unescape(mountpoint))),
        options: options.to_owned(),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space) in mountinfo fields.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Processes whose cwd, root or open files are under `mountpoint`, from `/proc`, bounded by
/// [`MAX_PROCS_SCANNED`] and [`MAX_FDS_PER_PROC`]. Links in `/proc` are read from the kernel's
/// own tables, so this never touches the (perhaps hung) filesystem itself.
fn holders(mountpoint: &Path) -> Vec<Holder> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    let under = |link: &Path| {
        let text = link.as_os_str().as_bytes();
        // A deleted file reads as "<path> (deleted)", still under the mountpoint.
        let text = text.strip_suffix(b" (deleted)").unwrap_or(text);
        Path::new(OsStr::from_bytes(text)).starts_with(mountpoint)
    };
    for entry in procs.take(MAX_PROCS_SCANNED).flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let mut how = Vec::new();
        for what in ["cwd", "root"] {
            if std::fs::read_link(dir.join(what)).is_ok_and(|l| under(&l)) {
                how.push(what.to_owned());
            }
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            for fd in fds.take(MAX_FDS_PER_PROC).flatten() {
                if let Ok(link) = std::fs::read_link(fd.path()) {
                    if under(&link) {
                        how.push(format!(
                            "fd {} ({})",
                            fd.file_name().to_string_lossy(),
                            link.display()
                        ));
                    }
                }
            }
        }
        if !how.is_empty() {
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            found.push(Holder {
                pid,
                command,
                how: how.join(", "),
            });
        }
    }
    found.sort_by_key(|h| h.pid);
    found
}

fn describe_holders(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "no process holds it through a cwd, root or open file (a nested mount, swap \
                file, loop device or kernel user?)"
            .to_owned();
    }
    let mut text = holders
        .iter()
        .take(MAX_HOLDERS_NAMED)
        .map(|h| format!("pid {} ({}) {}", h.pid, h.command, h.how))
        .collect::<Vec<_>>()
        .join("; ");
    if holders.len() > MAX_HOLDERS_NAMED {
        text.push_str(&format!(
            "; and {} more processes",
            holders.len() - MAX_HOLDERS_NAMED
        ));
    }
    format!("held by {text}")
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(reader: Option<R>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    // Ends at EOF; a chatty fsck is bounded by the caller's deadline.
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let line = "36 35 7:3 / /srv/back\\040up rw,noatime shared:1 master:2 - ext4 /dev/loop3 \
                    rw,errors=remount-ro";
        let entry = parse_mountinfo_line(line);
        assert_eq!(
            entry,
            Some(MountEntry {
                major: 7,
                minor: 3,
                mountpoint: PathBuf::from("/srv/back up"),
                options: "rw,noatime".to_owned(),
                fstype: "ext4".to_owned(),
                source: "/dev/loop3".to_owned(),
            })
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
        assert_eq!(unescape("a\\134b\\9"), b"a\\b\\9".to_vec());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let options: Vec<String> = [
            "noatime",
            "nodev",
            "errors=remount-ro",
            "defaults",
            "ro",
            "rw",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (flags, data) = split_options(&options);
        assert_eq!(flags, MsFlags::MS_NOATIME | MsFlags::MS_NODEV);
        assert_eq!(data, "errors=remount-ro");
    }

    #[test]
    fn ours_by_number_or_by_source() {
        let entry = parse_mountinfo_line("1 2 7:3 / /m rw - ext4 /dev/loop3 rw");
        let Some(entry) = entry else {
            panic!("line parses");
        };
        let by_number = DeviceId {
            rdev: Some(nix::sys::stat::makedev(7, 3)),
            path: PathBuf::from("/dev/whatever"),
        };
        assert!(is_ours(&entry, &by_number));
        let other = DeviceId {
            rdev: Some(nix::sys::stat::makedev(7, 4)),
            path: PathBuf::from("/dev/loop4"),
        };
        assert!(!is_ours(&entry, &other));
        let by_source = DeviceId {
            rdev: None,
            path: PathBuf::from("/dev/loop3"),
        };
        assert!(is_ours(&entry, &by_source));
    }

    #[test]
    fn bad_params_are_refused() {
        let params = MountParams {
            device: PathBuf::from("dev/sdb1"),
            mountpoint: PathBuf::from("/srv/backup"),
            fstype: "ext4".to_owned(),
            options: Vec::new(),
            fsck: FsckPolicy::Never,
        };
        let refused = |p: MountParams| matches!(MountResource::new("fs", p), Err(e) if e.kind == ResourceErrorKind::Args);
        assert!(refused(params.clone()));
        assert!(refused(MountParams {
            device: PathBuf::from("/dev/sdb1"),
            mountpoint: PathBuf::from("/srv/../backup"),
            ..params.clone()
        }));
        assert!(refused(MountParams {
            device: PathBuf::from("/dev/sdb1"),
            options: vec!["noatime,nodev".to_owned()],
            ..params
        }));
    }
}
