//! The fence ledger: every fence, power and unfence operation this node ran, with time, reason,
//! who asked and what the device answered, one JSON object per line in the node's state
//! directory (`fence-ledger.jsonl`).
//!
//! A fabric fence leaves a node's switch ports disabled until someone enables them again, and
//! both mistakes are costly: a port left disabled keeps a healthy node off its storage, a port
//! re-enabled while the node is still considered dead lets a possibly-alive machine write to
//! shared disks. The ledger is what `watchkeeper unfence --list` reads to show which ports are
//! still disabled by whom and why, and what an administrator reads afterwards to explain it.
//!
//! Entries are appended with `O_APPEND` and flushed to disk (`fsync`) before the operation is
//! reported, so a crash right after a fence cannot lose its record. A line that does not parse
//! (a torn write after power loss) is skipped and counted, never fatal.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::events::rfc3339;

/// File name inside the node's state directory.
pub const LEDGER_FILE: &str = "fence-ledger.jsonl";

/// The ledger of the node whose state directory is `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEDGER_FILE)
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Wall-clock time the operation finished, Unix milliseconds.
    pub time_ms: u64,
    /// The same, as RFC 3339 UTC, for people.
    pub time: String,
    /// Fence device name.
    pub device: String,
    /// Its type (`ipmi`, `ifmib`, ...).
    pub r#type: String,
    /// Node acted on.
    pub target: String,
    /// `off`, `on`, `reboot` or `unfence`.
    pub action: String,
    /// Why, in words (the operator's `--reason`, or the engine's decision).
    pub reason: String,
    /// Who asked: `operator` or `agent`.
    pub by: String,
    /// Whether the device confirmed the requested state.
    pub ok: bool,
    /// The state the device reported at the end, when known.
    pub state: Option<String>,
    /// How long the operation took, in milliseconds.
    pub ms: f64,
    /// The failure, if any.
    pub error: Option<String>,
}

impl Entry {
    /// An entry stamped with the current time.
    pub fn now(device: &str, r#type: &str, target: &str, action: &str, reason: &str) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            time_ms,
            time: rfc3339(time_ms),
            device: device.to_owned(),
            r#type: r#type.to_owned(),
            target: target.to_owned(),
            action: action.to_owned(),
            reason: reason.to_owned(),
            by: "operator".to_owned(),
            ok: false,
            state: None,
            ms: 0.0,
            error: None,
        }
    }
}

/// Appends `entry` and flushes it to disk. The file is created mode 0640.
pub fn append(path: &Path, entry: &Entry) -> io::Result<()> {
    let mut line = serde_json::to_string(entry).map_err(io::Error::other)?;
    line.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// What [`read`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// Entries in file order.
    pub entries: Vec<Entry>,
    /// Lines that did not parse (torn writes), skipped.
    pub skipped: usize,
}

/// Reads the whole ledger; a missing file is an empty ledger.
pub fn read(path: &Path) -> io::Result<Ledger> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(e),
    };
    let mut ledger = Ledger::default();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => ledger.entries.push(e),
            Err(_) => ledger.skipped += 1,
        }
    }
    Ok(ledger)
}

impl Ledger {
    /// Fabric fences still in force: for every (device, target) of the `fabric` devices, the
    /// last confirmed operation, if it left the target off. Sorted by device, then target.
    pub fn outstanding(&self, fabric: &[&str]) -> Vec<&Entry> {
        let mut last: BTreeMap<(&str, &str), &Entry> = BTreeMap::new();
        for e in self.entries.iter().filter(|e| e.ok) {
            if fabric.contains(&e.device.as_str()) {
                last.insert((e.device.as_str(), e.target.as_str()), e);
            }
        }
        last.into_values()
            .filter(|e| e.state.as_deref() == Some("off"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_900_000_000), "2026-11-28T21:06:40.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    fn entry(device: &str, target: &str, action: &str, ok: bool, state: &str) -> Entry {
        let mut e = Entry::now(device, "ifmib", target, action, "test");
        e.ok = ok;
        e.state = Some(state.to_owned());
        e
    }

    #[test]
    fn appended_entries_read_back_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path(dir.path());
        assert_eq!(read(&path).expect("missing file"), Ledger::default());
        let a = entry("san-a", "beta", "off", true, "off");
        append(&path, &a).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"time_ms\": 17, \"dev"))
            .expect("torn write");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"\n"))
            .expect("newline");
        let b = entry("san-a", "beta", "unfence", true, "on");
        append(&path, &b).expect("append");
        let ledger = read(&path).expect("read");
        assert_eq!(ledger.entries, vec![a, b]);
        assert_eq!(ledger.skipped, 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn outstanding_fences_are_the_last_confirmed_off_of_fabric_devices() {
        let ledger = Ledger {
            entries: vec![
                entry("san-a", "beta", "off", true, "off"),
                entry("san-b", "beta", "off", true, "off"),
                entry("san-b", "beta", "unfence", true, "on"),
                // A failed unfence leaves the port disabled.
                entry("san-a", "beta", "unfence", false, "off"),
                entry("san-a", "alpha", "off", true, "off"),
                entry("ipmi-b", "beta", "off", true, "off"),
            ],
            skipped: 0,
        };
        let out: Vec<(&str, &str)> = ledger
            .outstanding(&["san-a", "san-b"])
            .into_iter()
            .map(|e| (e.device.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(out, vec![("san-a", "alpha"), ("san-a", "beta")]);
    }
}
