//! The real driver: a watchdog character device (or a stand-in) behind one open descriptor.
//!
//! The descriptor is opened non-blocking so that a keepalive can never stall the feeder: on a
//! kernel watchdog writes and ioctls do not block anyway, and on a FIFO a full pipe becomes an
//! error that is counted and logged instead of a wait.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::errno::Errno;

use super::{sysfs, Flags, Watchdog, WatchdogCounters, WatchdogError};

/// What is behind the descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A kernel watchdog: it answered `WDIOC_GETSUPPORT`.
    Kernel {
        /// The driver's identity, e.g. `i6300ESB timer`.
        identity: String,
        /// What the device supports (`WDIOF_*`).
        options: Flags,
        /// The driver's firmware version field.
        firmware_version: u32,
    },
    /// Any other character device or FIFO: fed by writes, with no timer of its own.
    Plain,
}

/// An open watchdog. Dropping it closes the descriptor without the magic close, so a kernel
/// watchdog keeps running: only [`Watchdog::disarm`] stops it.
#[derive(Debug)]
pub struct WatchdogDevice {
    file: File,
    path: PathBuf,
    kind: DeviceKind,
    /// Set once `WDIOC_KEEPALIVE` is found missing, so the ioctl is not retried each feed.
    keepalive_by_write: bool,
    counters: WatchdogCounters,
}

impl WatchdogDevice {
    /// Opens `path`, which arms a kernel watchdog at its current timeout, and asks what it is.
    pub fn open(path: &Path) -> Result<Self, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::ENXIO) {
                    WatchdogError::NoReader {
                        device: path.to_owned(),
                    }
                } else {
                    WatchdogError::Open {
                        device: path.to_owned(),
                        source,
                    }
                }
            })?;
        let mut info = ioctl::WatchdogInfo::default();
        // SAFETY: the descriptor is open for the duration of the call, and `info` is a live
        // `repr(C)` struct of exactly the size WDIOC_GETSUPPORT writes (struct watchdog_info).
        let kind = match unsafe { ioctl::getsupport(file.as_raw_fd(), &mut info) } {
            Ok(_) => DeviceKind::Kernel {
                identity: cstr(&info.identity),
                options: Flags(info.options),
                firmware_version: info.firmware_version,
            },
            Err(e) if not_supported(e) => DeviceKind::Plain,
            Err(source) => {
                return Err(WatchdogError::Ioctl {
                    device: path.to_owned(),
                    op: "WDIOC_GETSUPPORT",
                    source,
                })
            }
        };
        let keepalive_by_write = match &kind {
            DeviceKind::Kernel { options, .. } => !options.has(Flags::KEEPALIVEPING),
            DeviceKind::Plain => true,
        };
        let mut device = Self {
            file,
            path: path.to_owned(),
            kind,
            keepalive_by_write,
            counters: WatchdogCounters::default(),
        };
        if matches!(device.kind, DeviceKind::Kernel { .. }) {
            // The watchdog core keeps "magic close seen" per device, not per descriptor, and
            // clears it only on a write. After a disarm that stopped the device before closing
            // (WDIOS_DISABLECARD, then 'V'), the flag survives into the next open, and that
            // opener's crash would then stop the timer instead of letting it reset the host.
            // One keepalive write clears it; feeds by ioctl never would.
            device.write_byte(KEEPALIVE_BYTE)?;
        }
        Ok(device)
    }

    /// The device path as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the device is.
    pub fn kind(&self) -> &DeviceKind {
        &self.kind
    }

    /// The driver's identity, or `None` for a stand-in.
    pub fn identity(&self) -> Option<&str> {
        match &self.kind {
            DeviceKind::Kernel { identity, .. } => Some(identity),
            DeviceKind::Plain => None,
        }
    }

    /// Sets the timeout and returns the one the hardware really took, which may be rounded to
    /// its granularity; callers must plan with the returned value.
    ///
    /// A stand-in has no timer: the request is checked and returned as is.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<Duration, WatchdogError> {
        let seconds = whole_seconds(timeout).ok_or_else(|| WatchdogError::TimeoutInvalid {
            device: self.path.clone(),
            requested: timeout,
        })?;
        let (identity, options) = match &self.kind {
            DeviceKind::Plain => return Ok(timeout),
            DeviceKind::Kernel {
                identity, options, ..
            } => (identity.clone(), *options),
        };
        if !options.has(Flags::SETTIMEOUT) {
            let current = self.timeout()?;
            if current == Some(timeout) {
                return Ok(timeout);
            }
            return Err(WatchdogError::TimeoutFixed {
                device: self.path.clone(),
                identity,
                current: current.map_or_else(|| "unknown".to_owned(), |d| format!("{d:?}")),
            });
        }
        let range = sysfs::info_for(&self.path).and_then(|i| i.min_timeout.zip(i.max_timeout));
        let out_of_range = |min: Duration, max: Duration| WatchdogError::TimeoutOutOfRange {
            device: self.path.clone(),
            identity: identity.clone(),
            requested_s: timeout.as_secs(),
            min_s: min.as_secs(),
            max_s: max.as_secs(),
        };
        if let Some((min, max)) = range {
            if timeout < min || timeout > max {
                return Err(out_of_range(min, max));
            }
        }
        let mut value = seconds;
        // SAFETY: the descriptor is open, and `value` is a live c_int that WDIOC_SETTIMEOUT
        // reads and overwrites with the timeout the driver applied.
        if let Err(source) = unsafe { ioctl::settimeout(self.file.as_raw_fd(), &mut value) } {
            return Err(match (source, range) {
                (Errno::EINVAL, Some((min, max))) => out_of_range(min, max),
                _ => WatchdogError::Ioctl {
                    device: self.path.clone(),
                    op: "WDIOC_SETTIMEOUT",
                    source,
                },
            });
        }
        // Some drivers round in SETTIMEOUT's reply but not in GETTIMEOUT's, or the reverse; the
        // later read is what the timer is running with.
        let taken = self
            .timeout()?
            .or_else(|| u64::try_from(value).ok().map(Duration::from_secs));
        Ok(taken.unwrap_or(timeout))
    }

    /// The timeout the device runs with (`WDIOC_GETTIMEOUT`); `None` for a stand-in or a
    /// driver that cannot tell.
    pub fn timeout(&self) -> Result<Option<Duration>, WatchdogError> {
        self.read_int(ioctl::gettimeout, "WDIOC_GETTIMEOUT")
            .map(|v| v.and_then(seconds_to_duration))
    }

    /// Time until the device resets the host (`WDIOC_GETTIMELEFT`); `None` where unsupported.
    pub fn time_left(&self) -> Result<Option<Duration>, WatchdogError> {
        self.read_int(ioctl::gettimeleft, "WDIOC_GETTIMELEFT")
            .map(|v| v.and_then(seconds_to_duration))
    }

    /// Why the last reboot happened as far as the device knows (`WDIOC_GETBOOTSTATUS`):
    /// [`Flags::CARDRESET`] means the watchdog reset the host. `None` for a stand-in.
    pub fn boot_status(&self) -> Result<Option<Flags>, WatchdogError> {
        self.read_int(ioctl::getbootstatus, "WDIOC_GETBOOTSTATUS")
            .map(|v| v.map(|v| Flags(u32::from_ne_bytes(v.to_ne_bytes()))))
    }

    fn read_int(
        &self,
        request: ioctl::IntRequest,
        op: &'static str,
    ) -> Result<Option<libc::c_int>, WatchdogError> {
        if self.kind == DeviceKind::Plain {
            return Ok(None);
        }
        let mut value: libc::c_int = 0;
        // SAFETY: the descriptor is open, and every request passed here is one of the
        // watchdog's _IOR(int) requests, which write one c_int into the live `value`.
        match unsafe { request(self.file.as_raw_fd(), &mut value) } {
            Ok(_) => Ok(Some(value)),
            Err(e) if not_supported(e) => Ok(None),
            Err(source) => Err(WatchdogError::Ioctl {
                device: self.path.clone(),
                op,
                source,
            }),
        }
    }

    fn write_byte(&mut self, byte: u8) -> Result<(), WatchdogError> {
        match self.file.write(&[byte]) {
            Ok(1) => Ok(()),
            Ok(_) => Err(WatchdogError::Write {
                device: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::WriteZero, "nothing written"),
            }),
            Err(source) => Err(WatchdogError::Write {
                device: self.path.clone(),
                source,
            }),
        }
    }

    fn keepalive_inner(&mut self) -> Result<(), WatchdogError> {
        if !self.keepalive_by_write {
            let mut dummy: libc::c_int = 0;
            // SAFETY: the descriptor is open; WDIOC_KEEPALIVE takes a pointer to a c_int that
            // it ignores, and `dummy` is live for the call.
            match unsafe { ioctl::keepalive(self.file.as_raw_fd(), &mut dummy) } {
                Ok(_) => return Ok(()),
                Err(e) if not_supported(e) => {
                    // No log here: this runs on the feeder thread, which must never wait on a
                    // log sink. The write_keepalives counter shows the switch.
                    self.keepalive_by_write = true;
                }
                Err(source) => {
                    return Err(WatchdogError::Ioctl {
                        device: self.path.clone(),
                        op: "WDIOC_KEEPALIVE",
                        source,
                    })
                }
            }
        }
        self.write_byte(KEEPALIVE_BYTE)?;
        self.counters
            .write_keepalives
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Watchdog for WatchdogDevice {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let result = self.keepalive_inner();
        let counter = match &result {
            Ok(()) => &self.counters.keepalives,
            Err(_) => &self.counters.keepalive_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn disarm(mut self: Box<Self>) -> Result<(), WatchdogError> {
        if matches!(self.kind, DeviceKind::Kernel { .. }) {
            let mut option: libc::c_int = WDIOS_DISABLECARD;
            // SAFETY: the descriptor is open; WDIOC_SETOPTIONS reads one c_int from the live
            // `option`.
            if let Err(e) = unsafe { ioctl::setoptions(self.file.as_raw_fd(), &mut option) } {
                // Not fatal: the magic close below stops every watchdog-core driver, and a
                // driver without WDIOS_DISABLECARD is common.
                tracing::debug!(device = %self.path.display(), error = %e, "WDIOS_DISABLECARD refused");
            }
        }
        self.write_byte(MAGIC_CLOSE)?;
        self.file
            .sync_all()
            .or_else(|e| match e.raw_os_error() {
                // Character devices and FIFOs cannot be synced; nothing is lost.
                Some(libc::EINVAL | libc::EROFS) => Ok(()),
                _ => Err(e),
            })
            .map_err(|source| WatchdogError::Write {
                device: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn counters(&self) -> &WatchdogCounters {
        &self.counters
    }
}

/// A timeout the kernel can take: whole seconds, 1 to `i32::MAX`.
fn whole_seconds(timeout: Duration) -> Option<libc::c_int> {
    if timeout.subsec_nanos() != 0 || timeout.is_zero() {
        return None;
    }
    libc::c_int::try_from(timeout.as_secs()).ok()
}

fn seconds_to_duration(value: libc::c_int) -> Option<Duration> {
    u64::try_from(value).ok().map(Duration::from_secs)
}

/// The errors a descriptor gives for an ioctl it does not know: a FIFO or ordinary character
/// device says ENOTTY, some drivers EINVAL or EOPNOTSUPP.
fn not_supported(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS
    )
}

/// A NUL-padded C string from a fixed array, lossily decoded.
fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// The watchdog ioctls of `linux/watchdog.h`, declared with nix's macros.
#[allow(unreachable_pub)]
mod ioctl {
    /// `struct watchdog_info`.
    #[repr(C)]
    #[derive(Debug, Default)]
    pub struct WatchdogInfo {
        pub options: u32,
        pub firmware_version: u32,
        pub identity: [u8; 32],
    }

    /// The shape of the `_IOR('W', n, int)` requests.
    pub type IntRequest = unsafe fn(libc::c_int, *mut libc::c_int) -> nix::Result<libc::c_int>;

    const WATCHDOG_IOCTL_BASE: u8 = b'W';
    nix::ioctl_read!(getsupport, WATCHDOG_IOCTL_BASE, 0, WatchdogInfo);
    nix::ioctl_read!(getbootstatus, WATCHDOG_IOCTL_BASE, 2, libc::c_int);
    // The kernel declares SETOPTIONS and KEEPALIVE as _IOR although they only read their
    // argument; the request numbers must match the header, not the direction.
    nix::ioctl_read!(setoptions, WATCHDOG_IOCTL_BASE, 4, libc::c_int);
    nix::ioctl_read!(keepalive, WATCHDOG_IOCTL_BASE, 5, libc::c_int);
    nix::ioctl_readwrite!(settimeout, WATCHDOG_IOCTL_BASE, 6, libc::c_int);
    nix::ioctl_read!(gettimeout, WATCHDOG_IOCTL_BASE, 7, libc::c_int);
    nix::ioctl_read!(gettimeleft, WATCHDOG_IOCTL_BASE, 10, libc::c_int);
}

/// What a keepalive write sends. Any byte but the magic close restarts a kernel watchdog; `k`
/// reads as "keepalive" in a test's capture.
pub(super) const KEEPALIVE_BYTE: u8 = b'k';

/// The magic close: a watchdog-core driver stops its timer on close only after reading it.
pub(super) const MAGIC_CLOSE: u8 = b'V';

/// `WDIOS_DISABLECARD` from `linux/watchdog.h`.
const WDIOS_DISABLECARD: libc::c_int = 0x0001;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_watchdog_h() {
        // The values the kernel headers give on x86_64 (also used by the shared QEMU rig).
        assert_eq!(
            nix::request_code_read!(b'W', 0, std::mem::size_of::<ioctl::WatchdogInfo>()),
            0x8028_5700
        );
        let int = std::mem::size_of::<libc::c_int>();
        assert_eq!(nix::request_code_read!(b'W', 5, int), 0x8004_5705);
        assert_eq!(nix::request_code_readwrite!(b'W', 6, int), 0xC004_5706);
        assert_eq!(nix::request_code_read!(b'W', 7, int), 0x8004_5707);
        assert_eq!(nix::request_code_read!(b'W', 10, int), 0x8004_570A);
    }

    #[test]
    fn timeouts_must_be_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_secs(3)), Some(3));
        assert_eq!(whole_seconds(Duration::ZERO), None);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), None);
        assert_eq!(whole_seconds(Duration::from_secs(1 << 40)), None);
    }

    #[test]
    fn a_plain_character_device_is_fed_by_write() -> Result<(), WatchdogError> {
        let mut dev = WatchdogDevice::open(Path::new("/dev/null"))?;
        assert_eq!(dev.kind(), &DeviceKind::Plain);
        assert_eq!(dev.identity(), None);
        assert_eq!(dev.timeout()?, None);
        assert_eq!(dev.boot_status()?, None);
        assert_eq!(
            dev.set_timeout(Duration::from_secs(5))?,
            Duration::from_secs(5)
        );
        assert!(matches!(
            dev.set_timeout(Duration::from_millis(500)),
            Err(WatchdogError::TimeoutInvalid { .. })
        ));
        dev.keepalive()?;
        dev.keepalive()?;
        assert_eq!(dev.counters().keepalives(), 2);
        assert_eq!(dev.counters.write_keepalives.load(Ordering::Relaxed), 2);
        Box::new(dev).disarm()
    }

    #[test]
    fn a_fifo_without_reader_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("wd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = WatchdogDevice::open(&fifo).expect_err("no reader");
        assert!(matches!(err, WatchdogError::NoReader { .. }), "{err}");
        assert!(err.to_string().contains("without a reader"));
        let err = WatchdogDevice::open(&dir.path().join("missing")).expect_err("missing");
        assert!(matches!(err, WatchdogError::Open { .. }), "{err}");
    }
}
