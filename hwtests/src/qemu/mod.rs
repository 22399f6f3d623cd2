//! QEMU guests as machines under test: a Debian kernel, a busybox initramfs with the agent
//! built for musl, and emulated hardware (an i6300esb watchdog, a virtio disk) that behaves like
//! the real thing, observed from the host through the serial console and QMP events.
//!
//! Only a guest has a real kernel watchdog driver that really resets a machine: these hosts
//! have no `/dev/watchdog` and cannot load modules. Under software emulation a guest boots in
//! about 4.5 s from the uncompressed kernel, and the i6300esb fires within milliseconds of its
//! timeout, so end-to-end self-fencing tests take seconds, not minutes.
//!
//! `scripts/deps-qemu.sh` installs QEMU, busybox and the guest kernel into [`Rig::cache_dir`];
//! [`Rig::locate`] finds them. [`Guest`] runs one qemu process: every console line and QMP event
//! is stamped with the host's monotonic clock as it arrives, and the process is killed by PID
//! when the guest is dropped. Nothing here touches the host's network.
//!
//! On top of single guests, [`rig::QemuRig`] builds a whole rig description as guests joined by
//! serial cables ([`cable::SocketCable`]), Ethernet segments and BMCs, and
//! [`scenario::QemuRunner`] runs the failure scenarios on it (`hwtests run --backend qemu`).
//!
//! Guests run under software emulation (TCG): the machines these tests run on have no usable
//! KVM. `WK_QEMU_ACCEL=kvm` switches to `-accel kvm -cpu host` on a host that really has it.

pub mod arp;
pub mod cable;
pub mod cpio;
mod qmp;
pub mod rig;
pub mod scenario;

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use qmp::QmpEvent;

/// Where the guest kernel and tools are.
#[derive(Debug, Clone)]
pub struct Rig {
    /// Uncompressed kernel image (PVH entry).
    pub vmlinux: PathBuf,
    /// The unpacked kernel package (for modules).
    pub kroot: PathBuf,
    /// Kernel version, the name of its modules directory.
    pub kernel_version: String,
    /// Static busybox for the guest.
    pub busybox: PathBuf,
}

impl Rig {
    /// The cache directory `scripts/deps-qemu.sh` fills: `$WK_QEMU_CACHE`, or
    /// `/var/tmp/watchkeeper-qemu`.
    pub fn cache_dir() -> PathBuf {
        std::env::var_os(CACHE_ENV).map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
    }

    /// Finds everything a guest needs, or says what is missing.
    pub fn locate() -> Result<Self, String> {
        let cache = Self::cache_dir();
        let missing = |what: &str| {
            format!(
                "{what} is missing: run `bash scripts/deps-qemu.sh` (cache {})",
                cache.display()
            )
        };
        if which(QEMU).is_none() {
            return Err(missing(QEMU));
        }
        let busybox = PathBuf::from(BUSYBOX);
        if !busybox.is_file() {
            return Err(missing("busybox-static"));
        }
        let vmlinux = cache.join("vmlinux");
        let kroot = cache.join("kroot");
        let kernel_version = fs::read_dir(kroot.join("lib/modules"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .and_then(|e| e.file_name().into_string().ok());
        match (vmlinux.is_file(), kernel_version) {
            (true, Some(kernel_version)) => Ok(Self {
                vmlinux,
                kroot,
                kernel_version,
                busybox,
            }),
            _ => Err(missing("the guest kernel")),
        }
    }

    /// The module files to load, in order, for `modules` and their dependencies, as the host's
    /// `modprobe` resolves them against the guest kernel (built-in ones are skipped).
    pub fn module_files(&self, modules: &[&str]) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = Vec::new();
        for m in modules {
            let out = Command::new("modprobe")
                .arg("-d")
                .arg(&self.kroot)
                .args(["-S", &self.kernel_version, "--show-depends", m])
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "modprobe --show-depends {m}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(path) = line.strip_prefix("insmod ") {
                    let path = PathBuf::from(path.trim());
                    if !files.contains(&path) {
                        files.push(path);
                    }
                }
            }
        }
        Ok(files)
    }

    /// A base initramfs: busybox, `/dev/console`, the module files under `/lib/modules` with
    /// their load order in `/lib/modules/order`, and an `/init` that loads them, mounts
    /// `/dev/vda` (ext4) on `/state` if present, prints `WK-GUEST boot` and runs `/scenario.sh`.
    /// Add files to the returned archive before finishing it.
    pub fn initramfs(&self, modules: &[&str]) -> io::Result<cpio::Cpio> {
        let mut c = cpio::Cpio::new();
        for d in [
            "bin",
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "state",
            "lib",
            "lib/modules",
        ] {
            c.dir(d);
        }
        c.char_device("dev/console", 0o600, 5, 1);
        c.file("bin/busybox", 0o755, &fs::read(&self.busybox)?);
        let mut order = String::new();
        for f in self.module_files(modules)? {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| io::Error::other("module without a name"))?
                .to_owned();
            c.file(&format!("lib/modules/{name}"), 0o644, &fs::read(&f)?);
            order.push_str(&name);
            order.push('\n');
        }
        c.file("lib/modules/order", 0o644, order.as_bytes());
        c.file("init", 0o755, INIT.as_bytes());
        Ok(c)
    }
}

/// A running qemu guest; killed by PID when dropped.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    ctl_path: PathBuf,
    started: Instant,
    console: Arc<Mutex<Vec<(Instant, String)>>>,
    events: Arc<Mutex<Vec<QmpEvent>>>,
    readers: Vec<JoinHandle<()>>,
    console_log: PathBuf,
}

impl Guest {
    /// Starts qemu with `rig`'s kernel, `initrd`, and `extra` arguments; the console goes to
    /// `dir/console.log` (host-timestamped) and QMP lives at `dir/qmp.sock`.
    pub fn start(rig: &Rig, initrd: &Path, dir: &Path, extra: &[&str]) -> io::Result<Self> {
        Self::start_with(rig, initrd, dir, "", extra)
    }

    /// As [`Guest::start`], with `cmdline` appended to the kernel command line (the guest's
    /// `/init` reads its parameters from `/proc/cmdline`). A second QMP monitor at
    /// `dir/ctl.sock` takes commands ([`Guest::qmp`]) while the first one records events, and
    /// the guest's console reads what [`Guest::send_line`] writes.
    pub fn start_with(
        rig: &Rig,
        initrd: &Path,
        dir: &Path,
        cmdline: &str,
        extra: &[&str],
    ) -> io::Result<Self> {
        let qmp_path = dir.join("qmp.sock");
        let ctl_path = dir.join("ctl.sock");
        let console_log = dir.join("console.log");
        let accel: &[&str] = match std::env::var(ACCEL_ENV).as_deref() {
            Ok("kvm") => &["-accel", "kvm", "-cpu", "host"],
            _ => &["-accel", "tcg"],
        };
        let mut child = Command::new(QEMU)
            .args(accel)
            .args(["-machine", "pc", "-m", "128M", "-smp", "1"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(&rig.vmlinux)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 loglevel=4 {cmdline}"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=wkctl,path={},server=on,wait=off",
                ctl_path.display()
            ))
            .args(["-mon", "chardev=wkctl,mode=control"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("qemu.stderr"))?)
            .spawn()?;
        let console = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let console = console.clone();
            let mut log = fs::File::create(&console_log)?;
            let t0 = Instant::now();
            readers.push(std::thread::spawn(move || {
                use std::io::Write as _;
                let mut reader = BufReader::new(stdout);
                let mut raw = Vec::new();
                // Ends at EOF, when qemu exits or is killed.
                while reader.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
                    let now = Instant::now();
                    let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                    let _ = writeln!(log, "{:>9.3} {line}", (now - t0).as_secs_f64());
                    if let Ok(mut c) = console.lock() {
                        c.push((now, line));
                    }
                    raw.clear();
                }
            }));
        }
        match qmp::listen(&qmp_path, events.clone(), QMP_CONNECT_TIMEOUT) {
            Ok(reader) => readers.push(reader),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            console,
            events,
            readers,
            console_log,
            ctl_path,
            started: Instant::now(),
        })
    }

    /// The qemu process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When qemu was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether the qemu process has exited (it is reaped here if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one QMP command on the control monitor and returns its `return` member; a QMP
    /// error is an `Err` carrying its description.
    pub fn qmp(&self, execute: &str, arguments: Value) -> io::Result<Value> {
        qmp::command(&self.ctl_path, execute, arguments, QMP_COMMAND_TIMEOUT)
    }

    /// Writes `line` and a newline to the guest's console input.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        use std::io::Write as _;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("the console input is closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// The console log file (host seconds since start, then the line).
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// Every console line so far.
    pub fn console(&self) -> Vec<(Instant, String)> {
        self.console.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every QMP event so far.
    pub fn events(&self) -> Vec<QmpEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for the first console line after `after` that contains `text`.
    pub fn wait_line(
        &self,
        text: &str,
        after: Instant,
        timeout: Duration,
    ) -> Option<(Instant, String)> {
        self.wait(timeout, || {
            self.console()
                .into_iter()
                .find(|(at, line)| *at >= after && line.contains(text))
        })
    }

    /// Waits up to `timeout` for the first JSON log line after `after` whose `event` field is
    /// `event` (the agent logs JSON straight to the console).
    pub fn wait_log(
        &self,
        event: &str,
        after: Instant,
        timeout: Duration,
    ) -> Option<(Instant, Value)> {
        self.wait(timeout, || {
            self.console().into_iter().find_map(|(at, line)| {
                let v = json_in(&line)?;
                (at >= after && v["event"] == event).then_some((at, v))
            })
        })
    }

    /// Waits up to `timeout` for the first QMP event named `name` after `after`.
    pub fn wait_event(&self, name: &str, after: Instant, timeout: Duration) -> Option<QmpEvent> {
        self.wait(timeout, || {
            self.events()
                .into_iter()
                .find(|e| e.at >= after && e.name == name)
        })
    }

    /// QMP events named `name` between `from` and `to`.
    pub fn events_between(&self, name: &str, from: Instant, to: Instant) -> Vec<QmpEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.name == name && e.at >= from && e.at <= to)
            .collect()
    }

    fn wait<T>(&self, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = probe() {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(WAIT_POLL);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "guest console ({}):\n{}\nQMP events: {:?}",
                self.console_log.display(),
                fs::read_to_string(&self.console_log).unwrap_or_default(),
                self.events()
            );
        }
        // By PID: the child is ours and not yet reaped, so the PID cannot have been reused.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The JSON object in a console line, if any (kernel messages can precede it on the line).
pub fn json_in(line: &str) -> Option<Value> {
    let start = line.find('{')?;
    serde_json::from_str::<Value>(&line[start..])
        .ok()
        .filter(Value::is_object)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// The guest's `/init`: the kernel runs it as PID 1 from the initramfs.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
# Some modules fail harmlessly (crc32c-intel needs SSE4.2, which the emulated CPU lacks).
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m 2>/dev/null; done
ip link set lo up
[ -b /dev/vda ] && mount -t ext4 /dev/vda /state
echo "WK-GUEST boot uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
if [ -x /scenario.sh ]; then /scenario.sh; echo "WK-GUEST scenario-exit rc=$?"; fi
while :; do sleep 3600; done
"#;

/// The QEMU binary.
const QEMU: &str = "qemu-system-x86_64";

/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// The environment variable choosing the accelerator (`kvm`; anything else is TCG).
const ACCEL_ENV: &str = "WK_QEMU_ACCEL";

/// The environment variable naming the cache directory.
const CACHE_ENV: &str = "WK_QEMU_CACHE";

/// The default cache directory (kept across reboots, unlike /tmp on some systems).
const DEFAULT_CACHE: &str = "/var/tmp/watchkeeper-qemu";

/// qemu creates its QMP socket within milliseconds; seconds mean it failed to start.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A QMP command answers in milliseconds unless qemu is wedged.
const QMP_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How often waits re-check the console and events.
const WAIT_POLL: Duration = Duration::from_millis(20);
