//! The ownership record on disk: the highest epoch this node held or took part in, the holder
//! it knew at that epoch, and its last votes.
//!
//! Rule 5 of the engine: the epoch only grows and is on disk before it is announced. So the
//! record is written as a whole to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, before the engine hears `Persisted`; and a record that cannot be read is a
//! reason to refuse to start, never to start over from epoch 0, which would let this node
//! announce an epoch its peers have long passed.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use proto::NodeId;

use crate::engine::Durable;

/// File name in the state directory.
pub const FILE: &str = "ownership";

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The file could not be read or written.
    #[error("ownership record {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a record.
    #[error("ownership record {path} is corrupt at line {line}: {reason}; the agent will not start from epoch 0 (its peers may be further): restore the file or, with every node stopped, remove it on purpose")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Writes `contents` to `dir/name` atomically and durably: temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The record in `state_dir`; a node that never held or voted has none and starts from the
/// default.
pub fn load(state_dir: &Path) -> Result<Durable, DurableError> {
    let path = state_dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Durable::default()),
        Err(source) => return Err(DurableError::Io { path, source }),
    };
    parse(&text).map_err(|(line, reason)| DurableError::Corrupt { path, line, reason })
}

/// Writes the record to `state_dir`.
pub fn save(state_dir: &Path, durable: &Durable) -> Result<(), DurableError> {
    fs::create_dir_all(state_dir).map_err(|source| DurableError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    write_atomic(state_dir, FILE, render(durable).as_bytes()).map_err(|source| DurableError::Io {
        path: state_dir.join(FILE),
        source,
    })
}

fn node(n: Option<NodeId>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.get().to_string())
}

fn pair(p: Option<(u64, NodeId)>) -> String {
    p.map_or_else(|| "-".to_owned(), |(e, n)| format!("{e} {}", n.get()))
}

/// The file's text: one `key value` per line.
pub fn render(d: &Durable) -> String {
    format!(
        "epoch {}\nholder {}\nvoted {}\nprior {}\n",
        d.epoch,
        node(d.holder),
        pair(d.voted),
        pair(d.prior)
    )
}

fn parse(text: &str) -> Result<Durable, (usize, String)> {
    let mut d = Durable::default();
    let mut seen_epoch = false;
    let parse_node = |v: &str, line: usize| -> Result<Option<NodeId>, (usize, String)> {
        if v == "-" {
            return Ok(None);
        }
        v.parse::<u8>()
            .ok()
            .and_then(NodeId::new)
            .map(Some)
            .ok_or((line, format!("{v:?} is not a node id")))
    };
    let parse_pair = |v: &str, line: usize| -> Result<Option<(u64, NodeId)>, (usize, String)> {
        if v == "-" {
            return Ok(None);
        }
        let (e, n) = v
            .split_once(' ')
            .ok_or((line, format!("{v:?} is not \"EPOCH NODE\"")))?;
        let e = e
            .parse::<u64>()
            .map_err(|_| (line, format!("{e:?} is not an epoch")))?;
        let n = parse_node(n, line)?.ok_or((line, "a vote names no node".to_owned()))?;
        Ok(Some((e, n)))
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let (key, value) = raw.split_once(' ').unwrap_or((raw, ""));
        match key {
            "epoch" => {
                d.epoch = value
                    .parse()
                    .map_err(|_| (line, format!("{value:?} is not an epoch")))?;
                seen_epoch = true;
            }
            "holder" => d.holder = parse_node(value, line)?,
            "voted" => d.voted = parse_pair(value, line)?,
            "prior" => d.prior = parse_pair(value, line)?,
            other => return Err((line, format!("unknown key {other:?}"))),
        }
    }
    if !seen_epoch {
        return Err((1, "no epoch line".to_owned()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::new(n).expect("node id")
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("absent"), Durable::default());
        let d = Durable {
            epoch: 42,
            holder: Some(id(2)),
            voted: Some((42, id(2))),
            prior: Some((41, id(1))),
        };
        save(dir.path(), &d).expect("save");
        assert_eq!(load(dir.path()).expect("load"), d);
        assert!(!dir.path().join("ownership.tmp").exists());
    }

    #[test]
    fn a_corrupt_record_refuses_to_start_instead_of_resetting_the_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), "epoch 7\nholder x\n").expect("write");
        let e = load(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("corrupt at line 2"), "{e}");
        fs::write(dir.path().join(FILE), "").expect("write");
        assert!(load(dir.path()).is_err(), "an empty file is torn, not new");
    }
}
