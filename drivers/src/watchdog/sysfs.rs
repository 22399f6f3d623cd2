//! Finding watchdogs without arming them.
//!
//! Opening `/dev/watchdogN` starts its timer, so listing devices, choosing one by identity and
//! checking a timeout against the device's range all read `/sys/class/watchdog` instead. Legacy
//! drivers that do not register with the watchdog core (such as ib700wdt) have no entry there;
//! they appear as a bare `/dev/watchdog` with nothing known about them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Flags, WatchdogError, SOFTDOG_IDENTITY};

/// What sysfs tells about one watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// The device node, e.g. `/dev/watchdog0`.
    pub device: PathBuf,
    /// The driver's identity, e.g. `i6300ESB timer`; `None` for a legacy device.
    pub identity: Option<String>,
    /// `active` or `inactive`.
    pub state: Option<String>,
    /// The current timeout.
    pub timeout: Option<Duration>,
    /// Time left before a reset (only while active, and only where the driver can tell).
    pub time_left: Option<Duration>,
    /// The shortest timeout the device takes.
    pub min_timeout: Option<Duration>,
    /// The longest timeout the device takes.
    pub max_timeout: Option<Duration>,
    /// Why the last reboot happened, as the device saw it.
    pub boot_status: Option<Flags>,
    /// Whether the driver refuses to stop once started (`nowayout`).
    pub nowayout: Option<bool>,
}

impl DeviceInfo {
    /// Whether this is the kernel's software watchdog, which a hung kernel cannot be relied on
    /// to fire.
    pub fn is_softdog(&self) -> bool {
        self.identity.as_deref() == Some(SOFTDOG_IDENTITY)
    }
}

/// Every watchdog of this host, from `/sys/class/watchdog` and `/dev`.
pub fn discover() -> Vec<DeviceInfo> {
    discover_in(Path::new(SYSFS_CLASS), Path::new("/dev"))
}

/// Every watchdog under a sysfs class directory `class` with device nodes in `dev`; tests point
/// both at fixtures.
pub fn discover_in(class: &Path, dev: &Path) -> Vec<DeviceInfo> {
    let mut found: Vec<DeviceInfo> = std::fs::read_dir(class)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .take(MAX_DEVICES)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    Some(read_entry(&e.path(), dev.join(&name)))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|a| natural(&a.device));
    if found.is_empty() {
        let legacy = dev.join("watchdog");
        if legacy.exists() {
            found.push(DeviceInfo {
                device: legacy,
                ..DeviceInfo::default()
            });
        }
    }
    found
}

/// The device node of the one watchdog whose identity is `identity`.
pub fn find_by_identity(identity: &str, devices: &[DeviceInfo]) -> Result<PathBuf, WatchdogError> {
    let mut matches = devices
        .iter()
        .filter(|d| d.identity.as_deref() == Some(identity));
    let first = matches.next().ok_or_else(|| WatchdogError::NotFound {
        identity: identity.to_owned(),
        present: describe(devices),
    })?;
    if let Some(second) = matches.next() {
        return Err(WatchdogError::Ambiguous {
            identity: identity.to_owned(),
            first: first.device.clone(),
            second: second.device.clone(),
        });
    }
    Ok(first.device.clone())
}

/// The sysfs entry of the device at `path` (`/dev/watchdog` is the first one's alias).
pub(super) fn info_for(path: &Path) -> Option<DeviceInfo> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let name = real.file_name()?.to_str()?;
    let name = if name == "watchdog" {
        "watchdog0"
    } else {
        name
    };
    let entry = Path::new(SYSFS_CLASS).join(name);
    entry
        .is_dir()
        .then(|| read_entry(&entry, Path::new("/dev").join(name)))
}

fn read_entry(entry: &Path, device: PathBuf) -> DeviceInfo {
    let text = |attr: &str| {
        std::fs::read_to_string(entry.join(attr))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let seconds = |attr: &str| {
        text(attr)
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
    };
    DeviceInfo {
        device,
        identity: text("identity"),
        state: text("state"),
        timeout: seconds("timeout"),
        time_left: seconds("timeleft"),
        min_timeout: seconds("min_timeout"),
        max_timeout: seconds("max_timeout"),
        boot_status: text("bootstatus").and_then(|s| parse_flags(&s)).map(Flags),
        nowayout: text("nowayout").map(|s| s == "1"),
    }
}

/// sysfs prints the boot status in decimal; accept hex too.
fn parse_flags(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Sort key so that watchdog10 follows watchdog9.
fn natural(path: &Path) -> (String, u64) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    (
        name[..name.len() - digits.len()].to_owned(),
        digits.parse().unwrap_or(0),
    )
}

fn describe(devices: &[DeviceInfo]) -> String {
    if devices.is_empty() {
        return "none".to_owned();
    }
    devices
        .iter()
        .map(|d| {
            format!(
                "{} ({})",
                d.device.display(),
                d.identity.as_deref().unwrap_or("no identity")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the watchdog core registers its devices.
const SYSFS_CLASS: &str = "/sys/class/watchdog";

/// Directory entries read at most; a host has a handful of watchdogs.
const MAX_DEVICES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(class: &Path, name: &str, attrs: &[(&str, &str)]) {
        let entry = class.join(name);
        std::fs::create_dir_all(&entry).expect("mkdir");
        for (attr, value) in attrs {
            std::fs::write(entry.join(attr), format!("{value}\n")).expect("write attr");
        }
    }

    #[test]
    fn devices_are_read_from_sysfs_in_natural_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let class = dir.path().join("class");
        fixture(
            &class,
            "watchdog10",
            &[("identity", "Software Watchdog"), ("timeout", "60")],
        );
        fixture(
            &class,
            "watchdog9",
            &[
                ("identity", "i6300ESB timer"),
                ("state", "inactive"),
                ("timeout", "30"),
                ("min_timeout", "1"),
                ("max_timeout", "2046"),
                ("bootstatus", "32"),
                ("nowayout", "0"),
            ],
        );
        let devices = discover_in(&class, Path::new("/dev"));
        let names: Vec<_> = devices.iter().map(|d| d.device.clone()).collect();
        assert_eq!(
            names,
            [
                PathBuf::from("/dev/watchdog9"),
                PathBuf::from("/dev/watchdog10")
            ]
        );
        let esb = &devices[0];
        assert_eq!(esb.identity.as_deref(), Some("i6300ESB timer"));
        assert_eq!(esb.timeout, Some(Duration::from_secs(30)));
        assert_eq!(esb.max_timeout, Some(Duration::from_secs(2046)));
        assert_eq!(esb.boot_status, Some(Flags(Flags::CARDRESET)));
        assert_eq!(esb.nowayout, Some(false));
        assert!(!esb.is_softdog());
        assert!(devices[1].is_softdog());

        assert_eq!(
            find_by_identity("i6300ESB timer", &devices).ok(),
            Some(PathBuf::from("/dev/watchdog9"))
        );
        let err = find_by_identity("iTCO_wdt", &devices).expect_err("absent");
        assert_eq!(
            err.to_string(),
            "no watchdog has identity \"iTCO_wdt\"; present: /dev/watchdog9 (i6300ESB timer), \
             /dev/watchdog10 (Software Watchdog)"
        );
    }

    #[test]
    fn two_devices_with_one_identity_are_ambiguous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let class = dir.path().join("class");
        for name in ["watchdog0", "watchdog1"] {
            fixture(&class, name, &[("identity", "Software Watchdog")]);
        }
        let devices = discover_in(&class, Path::new("/dev"));
        let err = find_by_identity("Software Watchdog", &devices).expect_err("ambiguous");
        assert!(matches!(err, WatchdogError::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn a_legacy_device_without_sysfs_is_still_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::write(dev.join("watchdog"), "").expect("touch");
        let devices = discover_in(&dir.path().join("no-class"), &dev);
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].device, dev.join("watchdog"));
        assert_eq!(devices[0].identity, None);
        assert!(discover_in(&dir.path().join("none"), &dir.path().join("none")).is_empty());
    }
}
