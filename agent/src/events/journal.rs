//! The decision journal on disk: one JSON object per line, rotated by size.
//!
//! `journal.jsonl` is the current file; when a line would take it beyond `max_size`, it
//! becomes `journal.jsonl.1`, the former `.1` becomes `.2`, and so on up to `keep`, the oldest
//! being removed. Lines are written whole with one `write` each and the file is opened for
//! appending, so a crash leaves at most a partial last line, which the reader skips. The
//! writer does not fsync: the journal explains decisions, it does not make them safe (the
//! ownership record does), and a sync per line would slow the disk the agent shares with the
//! Catalog.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Counters, Part};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Wall time, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Wall time in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The node that decided.
    pub node: String,
    /// Its ownership epoch after the decision.
    pub epoch: u64,
    /// The input that caused the decision.
    pub cause: Part,
    /// What the engine concluded.
    #[serde(default)]
    pub events: Vec<Part>,
    /// What it asked for.
    #[serde(default)]
    pub actions: Vec<Part>,
}

/// Errors opening, writing or reading the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal's directory could not be created or the file opened.
    #[error("journal {path}: cannot open: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be written.
    #[error("journal {path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be rotated.
    #[error("journal {path}: cannot rotate: {source}")]
    Rotate {
        /// The file being renamed.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be encoded (never happens with the types above).
    #[error("journal: cannot encode a line: {0}")]
    Encode(#[from] serde_json::Error),
    /// A journal file could not be read.
    #[error("journal {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Appends lines to the current file and rotates it.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl JournalWriter {
    /// Opens (creating it and its directory) the journal at `path` for appending.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })?;
        }
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_size,
            keep,
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line, rotating first if it would not fit.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max_size {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// `journal.jsonl.(keep-1)` -> `.keep`, ..., `journal.jsonl` -> `.1`, then a new file.
    fn rotate(&mut self) -> Result<(), JournalError> {
        for i in (1..self.keep).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1)).map_err(|source| {
                    JournalError::Rotate {
                        path: from.clone(),
                        source,
                    }
                })?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1)).map_err(|source| {
            JournalError::Rotate {
                path: self.path.clone(),
                source,
            }
        })?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The writer thread: writes each entry in turn until every sender is gone.
pub(super) fn run(mut writer: JournalWriter, mut rx: mpsc::Receiver<Entry>, counters: &Counters) {
    let mut failing = false;
    while let Some(entry) = rx.blocking_recv() {
        match writer.append(&entry) {
            Ok(()) => {
                counters.journal_written.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::warn!(event = "journal_recovered", journal = %writer.path().display(), "journal writable again");
                    failing = false;
                }
            }
            Err(e) => {
                counters.journal_dropped.fetch_add(1, Ordering::Relaxed);
                // Reported once per failing spell, not once per line.
                if !failing {
                    tracing::error!(event = "journal_write_failed", error = %e, "{e}: decisions are only logged until it is writable");
                    failing = true;
                }
            }
        }
    }
}

/// Every entry of the journal at `path` and its rotated files, oldest first. Lines that are
/// not journal entries (a torn last line after a crash) are skipped and counted.
pub fn read(path: &Path, keep: u32) -> Result<(Vec<Entry>, usize), JournalError> {
    let mut files: Vec<PathBuf> = (1..=keep.max(MAX_READ_KEEP))
        .rev()
        .map(|i| numbered(path, i))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_owned());
    let mut entries = Vec::new();
    let mut skipped = 0;
    for f in files {
        let file = match File::open(&f) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f == path => continue,
            Err(source) => return Err(JournalError::Read { path: f, source }),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|source| JournalError::Read {
                path: f.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(e) => entries.push(e),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((entries, skipped))
}

/// `path` with `.n` appended.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| JournalError::Open {
            path: path.to_owned(),
            source,
        })
}

/// `history` also reads rotated files beyond the configured `keep` (left by an earlier,
/// larger setting) up to this many.
const MAX_READ_KEEP: u32 = crate::config::MAX_JOURNAL_KEEP;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            time: super::super::rfc3339(n),
            unix_ms: n,
            node: "beta".to_owned(),
            epoch: n,
            cause: Part::new("tick", format!("decision {n}")),
            events: vec![],
            actions: vec![Part::new("start", "start storage")],
        }
    }

    fn line_len() -> u64 {
        let mut l = serde_json::to_vec(&entry(1000)).expect("encode");
        l.push(b'\n');
        l.len() as u64
    }

    #[test]
    fn rotation_keeps_n_files_of_at_most_max_size_and_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("journal.jsonl");
        // Three lines per file (every entry below encodes to the same length).
        let max = line_len() * 3;
        let mut w = JournalWriter::open(&path, max, 2).expect("open");
        for n in 1000..1011 {
            w.append(&entry(n)).expect("append");
        }
        // 11 lines: current holds 2, .1 and .2 hold 3 each, 3 oldest were rotated away.
        let count = |p: &Path| std::fs::read_to_string(p).expect("read").lines().count();
        assert_eq!(count(&path), 2);
        assert_eq!(count(&numbered(&path, 1)), 3);
        assert_eq!(count(&numbered(&path, 2)), 3);
        assert!(!numbered(&path, 3).exists());
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            let len = std::fs::metadata(&p).expect("stat").len();
            assert!(len <= max, "{} is {len} bytes, over {max}", p.display());
        }
        let (entries, skipped) = read(&path, 2).expect("read");
        assert_eq!(skipped, 0);
        let epochs: Vec<u64> = entries.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, (1003..1011).collect::<Vec<_>>());
    }

    #[test]
    fn a_reopened_journal_appends_and_counts_its_existing_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let max = line_len() * 2;
        {
            let mut w = JournalWriter::open(&path, max, 3).expect("open");
            w.append(&entry(1000)).expect("append");
        }
        let mut w = JournalWriter::open(&path, max, 3).expect("reopen");
        w.append(&entry(1001)).expect("append");
        w.append(&entry(1002)).expect("append");
        assert!(numbered(&path, 1).exists(), "the third line must rotate");
        let (entries, _) = read(&path, 3).expect("read");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].epoch, 1002);
    }

    #[test]
    fn a_line_larger_than_max_size_still_gets_written_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let mut w = JournalWriter::open(&path, 10, 1).expect("open");
        w.append(&entry(1000)).expect("append");
        w.append(&entry(1001)).expect("append");
        let (entries, _) = read(&path, 1).expect("read");
        assert_eq!(
            entries.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            [1000, 1001]
        );
    }

    #[test]
    fn torn_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let mut text = serde_json::to_string(&entry(1000)).expect("encode");
        text.push_str("\n{\"time\":\"2026-");
        std::fs::write(&path, text).expect("write");
        let (entries, skipped) = read(&path, 5).expect("read");
        assert_eq!(entries.len(), 1);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn an_unwritable_place_is_an_open_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").expect("write");
        let path = blocker.join("journal.jsonl");
        let e = JournalWriter::open(&path, 4096, 1).expect_err("a file is not a directory");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
