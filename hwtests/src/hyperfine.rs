//! Whole-process timings under hyperfine, for the fencing benchmarks (`bench-fence`,
//! `bench-fence-pdu`).
//!
//! A fence agent's cost to the cluster is the whole process: interpreter or binary start-up,
//! connection, the power change and its confirmation. hyperfine measures exactly that, runs a
//! `--prepare` command before every timed run (so every timed off or on is a real transition),
//! and reports the median, minimum and maximum, which are what the benchmark tables print: the
//! median because start-up times have a long tail, min and max to show the spread.
//!
//! Every command runs with `-N` (no shell) after one warm-up run and with
//! `PYTHONWARNINGS=ignore`, so the Python agents' warnings cost nothing and print nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Seconds per run of one command: median, fastest and slowest.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median wall-clock time, seconds.
    pub median: f64,
    /// Fastest run, seconds.
    pub min: f64,
    /// Slowest run, seconds.
    pub max: f64,
}

/// What may go wrong running hyperfine or reading its export.
#[derive(Debug, thiserror::Error)]
pub enum HyperfineError {
    /// hyperfine itself could not be started.
    #[error("hyperfine (apt install hyperfine, or scripts/deps-fence.sh): {source}")]
    Spawn {
        /// Why the spawn failed (usually: not installed).
        #[source]
        source: io::Error,
    },
    /// hyperfine exited unsuccessfully, typically because the command or the prepare step did.
    #[error("hyperfine failed for {command}")]
    Failed {
        /// The benchmarked command line.
        command: String,
    },
    /// The JSON export could not be read.
    #[error("reading hyperfine's export {}: {source}", path.display())]
    Read {
        /// The export file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The JSON export does not parse.
    #[error("parsing hyperfine's export {}: {source}", path.display())]
    Parse {
        /// The export file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON export lacks a statistic.
    #[error("hyperfine JSON lacks {field}")]
    Missing {
        /// The missing key of `results[0]`.
        field: &'static str,
    },
}

/// How one benchmark binary runs hyperfine.
#[derive(Debug, Clone)]
pub struct Hyperfine<'a> {
    /// Directory for the JSON exports.
    pub json_dir: &'a Path,
    /// Start of the export's file name, `<prefix>-<pid>.json`; each run overwrites it.
    pub json_prefix: &'a str,
    /// Timed runs per command (after one warm-up).
    pub runs: usize,
    /// Whether hyperfine's own progress output is discarded (the table alone stays on stdout).
    pub quiet: bool,
}

impl Hyperfine<'_> {
    /// Times `command`, running `prepare` before each run, and returns hyperfine's statistics.
    pub fn bench(&self, command: &str, prepare: &str) -> Result<Stats, HyperfineError> {
        let json = self
            .json_dir
            .join(format!("{}-{}.json", self.json_prefix, std::process::id()));
        let mut hyperfine = Command::new("hyperfine");
        hyperfine
            .args([
                "-N",
                "--style",
                "basic",
                "--warmup",
                "1",
                "--runs",
                &self.runs.to_string(),
            ])
            .arg("--prepare")
            .arg(prepare)
            .arg("--export-json")
            .arg(&json)
            .arg(command)
            .env("PYTHONWARNINGS", "ignore");
        if self.quiet {
            hyperfine.stdout(Stdio::null());
        }
        let status = hyperfine
            .status()
            .map_err(|source| HyperfineError::Spawn { source })?;
        if !status.success() {
            return Err(HyperfineError::Failed {
                command: command.to_owned(),
            });
        }
        let bytes = std::fs::read(&json).map_err(|source| HyperfineError::Read {
            path: json.clone(),
            source,
        })?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| HyperfineError::Parse {
                path: json.clone(),
                source,
            })?;
        let r = &doc["results"][0];
        let f = |field: &'static str| r[field].as_f64().ok_or(HyperfineError::Missing { field });
        Ok(Stats {
            median: f("median")?,
            min: f("min")?,
            max: f("max")?,
        })
    }
}
