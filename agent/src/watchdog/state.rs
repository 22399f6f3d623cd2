//! What the watchdog leaves in the state directory for the next start: an "armed" record while
//! the device is armed, and the "last words" when the feeder starves it.
//!
//! After a reboot these tell the agent (and the operator reading its log) what happened: a
//! record of an armed device from an earlier boot means the host went down while its watchdog
//! was armed and not disarmed cleanly; last words say why the agent chose to stop feeding.
//! Each file is written to a temporary name, fsynced, renamed into place and the directory
//! fsynced, so a reset right after the write finds either the whole record or none.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why the feeder starved the watchdog, as recorded at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastWords {
    /// The reason given.
    pub reason: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The kernel's boot id at that moment.
    pub boot_id: Option<String>,
    /// The device that was starved.
    pub device: String,
    /// The agent's process id.
    pub pid: u32,
}

impl LastWords {
    /// Last words with `reason` for `device`, stamped now.
    pub fn now(reason: &str, device: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            at_unix_ms: unix_ms(),
            boot_id: boot_id(),
            device: device.to_owned(),
            pid: std::process::id(),
        }
    }
}

/// The record of an armed watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    /// The device.
    pub device: String,
    /// Its timeout in seconds.
    pub timeout_s: u64,
    /// The kernel's boot id when it was armed.
    pub boot_id: Option<String>,
    /// Wall-clock time of arming, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The agent's process id.
    pub pid: u32,
}

impl Armed {
    /// A record for `device` armed now with `timeout_s`.
    pub fn now(device: &str, timeout_s: u64) -> Self {
        Self {
            device: device.to_owned(),
            timeout_s,
            boot_id: boot_id(),
            at_unix_ms: unix_ms(),
            pid: std::process::id(),
        }
    }
}

/// What the previous run left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviousRun {
    /// The device was armed and never disarmed cleanly.
    pub armed: Option<Armed>,
    /// The feeder starved the device, and said why.
    pub last_words: Option<LastWords>,
}

/// Writes the last words durably.
pub fn write_last_words(dir: &Path, words: &LastWords) -> io::Result<()> {
    write_durably(dir, LAST_WORDS_FILE, words)
}

/// Records that the device is armed, durably.
pub fn write_armed(dir: &Path, armed: &Armed) -> io::Result<()> {
    write_durably(dir, ARMED_FILE, armed)
}

/// Removes the armed record after a clean disarm.
pub fn clear_armed(dir: &Path) -> io::Result<()> {
    remove_durably(dir, ARMED_FILE)
}

/// Reads what the previous run left and removes it, so each record is reported once.
/// Unreadable records are reported as errors after being removed.
pub fn take_previous(dir: &Path) -> io::Result<PreviousRun> {
    let armed = take(dir, ARMED_FILE)?;
    let last_words = take(dir, LAST_WORDS_FILE)?;
    Ok(PreviousRun { armed, last_words })
}

/// The kernel's id of the current boot; it changes at every boot, so a record with another id
/// was written before a reboot.
pub fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn take<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    remove_durably(dir, name)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a valid record: {e}", path.display()),
        )
    })
}

fn write_durably<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn remove_durably(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The last words' file name in the state directory.
pub const LAST_WORDS_FILE: &str = "watchdog.last-words";

/// The armed record's file name in the state directory.
pub const ARMED_FILE: &str = "watchdog.armed";

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_once() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(take_previous(dir.path())?, PreviousRun::default());
        let armed = Armed::now("/dev/watchdog0", 10);
        write_armed(dir.path(), &armed)?;
        let words = LastWords::now("lost quorum", "/dev/watchdog0");
        write_last_words(dir.path(), &words)?;
        assert_eq!(
            take_previous(dir.path())?,
            PreviousRun {
                armed: Some(armed.clone()),
                last_words: Some(words)
            }
        );
        assert_eq!(take_previous(dir.path())?, PreviousRun::default());
        write_armed(dir.path(), &armed)?;
        clear_armed(dir.path())?;
        assert_eq!(take_previous(dir.path())?, PreviousRun::default());
        Ok(())
    }

    #[test]
    fn a_corrupt_record_is_an_error_and_is_removed() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(LAST_WORDS_FILE), "{not json")?;
        let err = take_previous(dir.path()).expect_err("corrupt");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!dir.path().join(LAST_WORDS_FILE).exists());
        Ok(())
    }
}
