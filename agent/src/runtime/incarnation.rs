//! The incarnation: a number that grows every time the agent starts on this node.
//!
//! Peers scope sequence numbers by it, so it must never repeat: it is written to the state
//! directory (temporary file, fsync, rename, fsync of the directory) before the first frame is
//! sent. It is also never lower than the wall-clock seconds, so a node whose state directory
//! was lost (disk replaced) still comes back with a number its peers accept, as long as its
//! clock is sane; and a clock set back cannot make it repeat, because the stored value wins.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors reading or persisting the incarnation.
#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    /// The local node is not in the configuration.
    #[error("the local node is not in the configuration")]
    UnknownNode,
    /// The state directory or file could not be used.
    #[error("state file {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file holds something that is not a number.
    #[error("state file {path} is corrupt: {content:?} is not an incarnation number; move it away to start over")]
    Corrupt {
        /// Path.
        path: PathBuf,
        /// What it holds (first bytes).
        content: String,
    },
    /// The counter cannot grow any more.
    #[error("incarnation counter in {path} is exhausted")]
    Exhausted {
        /// Path.
        path: PathBuf,
    },
}

/// Reads the last incarnation from `state_dir`, persists the next one and returns it.
pub fn next_incarnation(state_dir: &Path) -> Result<u32, IncarnationError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IncarnationError::Io { path, source }
    };
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let path = state_dir.join(FILE);
    let previous = match fs::read_to_string(&path) {
        Ok(s) => Some(
            s.trim()
                .parse::<u32>()
                .map_err(|_| IncarnationError::Corrupt {
                    path: path.clone(),
                    content: s.chars().take(32).collect(),
                })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .unwrap_or(0);
    let next = match previous {
        Some(p) => p
            .checked_add(1)
            .ok_or(IncarnationError::Exhausted { path: path.clone() })?,
        None => 1,
    }
    .max(clock);
    super::durable::write_atomic(state_dir, FILE, format!("{next}\n").as_bytes())
        .map_err(io(&path))?;
    Ok(next)
}

const FILE: &str = "incarnation";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_every_call_and_survives_clock_going_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = next_incarnation(dir.path()).expect("first");
        let b = next_incarnation(dir.path()).expect("second");
        assert!(b > a);
        // A stored value far in the future (clock was ahead, then set back) still grows.
        fs::write(dir.path().join(FILE), "4000000000\n").expect("write");
        assert_eq!(next_incarnation(dir.path()).expect("third"), 4_000_000_001);
    }

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE), "banana").expect("write");
        let e = next_incarnation(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("is corrupt"), "{e}");
    }
}
