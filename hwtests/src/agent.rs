//! A `watchkeeper` agent running as a real child process, observed through its JSON logs.
//!
//! Hardware-in-the-loop scenarios must exercise the shipped binary, signals and all: a node that
//! is frozen (`SIGSTOP`) or killed is exactly the failure the agent exists to survive, and only a
//! separate process can be frozen or killed without freezing the test. [`AgentProcess`] starts
//! one, sends it signals by PID, and reads what it logged.
//!
//! # Contract
//!
//! - Signals go to the child's PID only, never to a name or a group. The child is not reaped
//!   until it has exited and [`AgentProcess`] has seen that, so its PID cannot be reused while a
//!   signal might still be sent to it; after the exit is seen, signalling is an error.
//! - Dropping an [`AgentProcess`] stops the child (`SIGTERM`, then `SIGKILL` after
//!   [`STOP_GRACE`]) and reaps it, also when a test panics. A harness killed outright cannot run
//!   `Drop`; its children are orphaned and must be found by the CI's process cleanup.
//! - The agent's stdout, where it writes one JSON object per line, goes to the log file given to
//!   [`AgentProcess::spawn`], and stderr goes beside it with `.stderr` appended. Lines that are
//!   not JSON objects (a panic message, partial lines) are skipped, not errors.
//! - Every wait polls with a bound on time; none blocks indefinitely.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A running (or exited, not yet dropped) agent process; see the module docs.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pid: Pid,
    exit: Option<ExitStatus>,
    log_path: PathBuf,
    stderr_path: PathBuf,
}

impl AgentProcess {
    /// Starts `bin` with `args`, stdin closed, stdout to `log_path` and stderr to
    /// `log_path` + `.stderr` (both truncated).
    pub fn spawn(bin: &Path, args: &[&OsStr], log_path: &Path) -> io::Result<AgentProcess> {
        let stderr_path = stderr_path_for(log_path);
        let stdout = File::create(log_path)?;
        let stderr = File::create(&stderr_path)?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", bin.display())))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "child PID does not fit pid_t")
        })?);
        Ok(AgentProcess {
            child,
            pid,
            exit: None,
            log_path: log_path.to_owned(),
            stderr_path,
        })
    }

    /// The child's process ID.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The file the agent's stdout (its JSON log) goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The file the agent's stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Sends `signal` to the child by PID. Fails once the child's exit has been seen, since
    /// the PID may then belong to another process.
    pub fn kill(&self, signal: Signal) -> io::Result<()> {
        if let Some(status) = self.exit {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("agent {} already exited ({status})", self.pid),
            ));
        }
        // Not yet reaped, so the PID is still ours even if the child is a zombie.
        kill(self.pid, signal).map_err(io::Error::from)
    }

    /// Freezes the agent, as a hung node: its timers, links and watchdog petting all stop.
    pub fn sigstop(&self) -> io::Result<()> {
        self.kill(Signal::SIGSTOP)
    }

    /// Thaws an agent frozen by [`AgentProcess::sigstop`].
    pub fn sigcont(&self) -> io::Result<()> {
        self.kill(Signal::SIGCONT)
    }

    /// Stops the agent: `SIGTERM` (and `SIGCONT`, so a frozen agent can act on it), up to
    /// [`STOP_GRACE`] to exit, then `SIGKILL`; reaps it and returns its status.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_exit()? {
            return Ok(status);
        }
        self.kill(Signal::SIGTERM)?;
        self.kill(Signal::SIGCONT)?;
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            return Ok(status);
        }
        self.kill(Signal::SIGKILL)?;
        self.wait_exit(KILL_REAP_TIMEOUT).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "agent {} survived SIGKILL for {KILL_REAP_TIMEOUT:?}",
                    self.pid
                ),
            )
        })
    }

    /// Waits up to `timeout` for the agent to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_exit() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(_) => return None,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            thread::sleep(left.min(EXIT_POLL_INTERVAL));
        }
    }

    /// Whether the agent has not exited (a frozen agent is running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// The exit status, if the exit has been seen.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Every JSON object the agent has logged so far, in order.
    pub fn logs(&self) -> Vec<Value> {
        read_log_lines(&self.log_path)
    }

    /// Waits up to `timeout` for a log line matching `pred` and returns the first one, searching
    /// from the start of the log. Gives up early once the agent has exited and its whole log has
    /// been searched.
    pub fn wait_for_log(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut tail = LogTail::new(&self.log_path);
        loop {
            let exited = !self.is_running();
            // Read after checking the exit, so the last read sees everything the agent wrote.
            if let Some(found) = tail.next_lines().into_iter().find(|v| pred(v)) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if exited || left.is_zero() {
                return None;
            }
            thread::sleep(left.min(LOG_POLL_INTERVAL));
        }
    }

    /// Everything the agent wrote to stderr so far (lossy UTF-8), for failure messages.
    pub fn stderr_text(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("could not stop agent {}: {e}", self.pid);
        }
    }
}

/// Finds the built `watchkeeper` binary.
///
/// `WATCHKEEPER_BIN` wins if set. Otherwise the binary is looked up in the same
/// `target/<profile>/` directory as the running test executable (`CARGO_BIN_EXE_watchkeeper`
/// exists only for tests of the `agent` package itself). Cargo does not build other packages'
/// binaries for this crate's tests, so the test script runs `cargo build -p agent` first, with
/// the same profile as the tests.
pub fn watchkeeper_bin() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{BIN_ENV}={} is not a file", bin.display()),
            ))
        };
    }
    let exe = std::env::current_exe()?;
    let profile_dir = profile_dir_of(&exe).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot find target/<profile>/ above {}", exe.display()),
        )
    })?;
    let bin = profile_dir.join(BIN_NAME);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not found: build it first with `cargo build -p agent` (same profile as the \
                 tests), or set {BIN_ENV}",
                bin.display()
            ),
        ))
    }
}

/// Parses an RFC 3339 timestamp as the agent logs it, e.g. `2026-11-28T17:00:14.123456Z`.
///
/// Accepts `Z` or a numeric offset (`+02:00`), fractional seconds of any length (digits past
/// nanoseconds are truncated) and `T`/`t`/space as separator. Returns `None` for anything else,
/// including impossible dates. A leap second (`:60`) reads as the next minute's first second.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = &bytes[19..];
    let mut nanos: u32 = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for i in 0..9 {
            let digit = fraction.get(i).filter(|_| i < len).map_or(0, |b| b - b'0');
            nanos = nanos * 10 + u32::from(digit);
        }
        rest = &fraction[len..];
    }
    let offset_s: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let offset_hours = digits(rest, 1, 2)?;
            let offset_minutes = digits(rest, 4, 2)?;
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let magnitude = offset_hours * 3600 + offset_minutes * 60;
            if *sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let unix_s = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let whole = Duration::from_secs(unix_s.unsigned_abs());
    if unix_s >= 0 {
        UNIX_EPOCH
            .checked_add(whole)?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    } else {
        UNIX_EPOCH
            .checked_sub(whole)?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// The parsed `timestamp` field of an agent log line.
pub fn log_timestamp(line: &Value) -> Option<SystemTime> {
    line.get("timestamp")?.as_str().and_then(parse_timestamp)
}

/// A string field of an agent log line: among the event's `fields`, or at the top level.
pub fn log_field<'a>(line: &'a Value, key: &str) -> Option<&'a str> {
    line.get("fields")
        .and_then(|f| f.get(key))
        .or_else(|| line.get(key))
        .and_then(Value::as_str)
}

/// Reads the JSON objects of a log file written one per line; other lines are skipped.
pub fn read_log_lines(path: &Path) -> Vec<Value> {
    LogTail::new(path).next_lines()
}

/// Memory and CPU use of a running process, from `/proc/PID/status` and `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Peak resident set size (`VmHWM`), KiB.
    pub vm_hwm_kib: u64,
    /// Resident set size now (`VmRSS`), KiB.
    pub vm_rss_kib: u64,
    /// CPU time used so far by all its threads, user plus system.
    pub cpu: Duration,
}

/// Reads `pid`'s [`ProcStats`]; `None` once the process is gone (or reaped) or has no memory
/// figures (a zombie).
pub fn proc_stats(pid: Pid) -> Option<ProcStats> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let vm_hwm_kib = kib("VmHWM:")?;
    let vm_rss_kib = kib("VmRSS:")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are counted after the last
    // ')'. The first one there is field 3 (state); utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(ProcStats {
        vm_hwm_kib,
        vm_rss_kib,
        cpu: Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / hz)),
    })
}

/// Incremental reader of a growing JSON-lines file: each call returns the complete lines added
/// since the last one, so polling does not re-parse the whole log.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_owned(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn next_lines(&mut self) -> Vec<Value> {
        let mut fresh = Vec::new();
        if let Ok(mut file) = File::open(&self.path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = file.take(LOG_READ_BYTES_MAX).read_to_end(&mut fresh);
            }
        }
        self.offset += u64::try_from(fresh.len()).unwrap_or(u64::MAX);
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        complete
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }
}

fn stderr_path_for(log_path: &Path) -> PathBuf {
    let mut name = OsString::from(log_path.as_os_str());
    name.push(".stderr");
    PathBuf::from(name)
}

/// The `target/<profile>/` directory holding `exe`: test and example executables live one level
/// down, in `deps/` or `examples/`; binaries live in it directly.
fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    let parent = exe.parent()?;
    match parent.file_name().and_then(OsStr::to_str) {
        Some("deps" | "examples") => parent.parent().map(Path::to_path_buf),
        _ => Some(parent.to_path_buf()),
    }
}

/// The decimal number in `bytes[at..at + len]`, all digits, or `None`.
fn digits(bytes: &[u8], at: usize, len: usize) -> Option<i64> {
    let field = bytes.get(at..at + len)?;
    field.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// How long [`AgentProcess::stop`] gives the agent to shut down after `SIGTERM`: enough for it
/// to release resources and log, short enough not to stall a failing test.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the kernel to deliver `SIGKILL` and the child to become reapable.
const KILL_REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit checks happen this often; a finer grain buys nothing at test timescales.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Log checks happen this often; heartbeat intervals in tests are tens of milliseconds.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes read from the log per poll, so a runaway logger cannot exhaust memory in one read.
const LOG_READ_BYTES_MAX: u64 = 64 << 20;

/// The environment variable that overrides where the binary is found.
const BIN_ENV: &str = "WATCHKEEPER_BIN";

/// The agent's binary name, as declared in `agent/Cargo.toml`.
const BIN_NAME: &str = "watchkeeper";

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_s: u64, nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_s) + Duration::from_nanos(nanos)
    }

    #[test]
    fn parses_agent_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        // 2026-11-28T17:00:14Z, cross-checked with `date -u -d @1795885214`.
        assert_eq!(
            parse_timestamp("2026-11-28T17:00:14.123456Z"),
            Some(at(1_795_885_214, 123_456_000))
        );
        assert_eq!(
            parse_timestamp("2000-02-29T23:59:59.5Z"),
            Some(at(951_868_799, 500_000_000))
        );
        assert_eq!(
            parse_timestamp("2026-11-28T17:00:14.123456789987Z"),
            Some(at(1_795_885_214, 123_456_789))
        );
        assert_eq!(
            parse_timestamp("2026-11-28t17:00:14z"),
            Some(at(1_795_885_214, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28T19:00:14+02:00"),
            Some(at(1_795_885_214, 0))
        );
        assert_eq!(
            parse_timestamp("2026-11-28T16:30:14-00:30"),
            Some(at(1_795_885_214, 0))
        );
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59.25Z"),
            UNIX_EPOCH.checked_sub(Duration::from_millis(750))
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T17:00:14",
            "2026-11-28T17:00:14.Z",
            "2026-11-28T17:00:14.12a3Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T17:60:00Z",
            "2026-11-28T17:00:61Z",
            "2026/11/28T17:00:14Z",
            "2026-11-28T17:00:14Zjunk",
            "2026-11-28T17:00:14+0200",
            "2026-11-28T17:00:14+24:00",
            "+026-11-28T17:00:14Z",
            "2026-11-28T17:00:1\u{e9}Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 28), 20_785);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }

    #[test]
    fn profile_dir_is_found_for_tests_examples_and_binaries() {
        let target = Path::new("/w/target/debug");
        assert_eq!(
            profile_dir_of(&target.join("deps/hwtests-0123")),
            Some(target.into())
        );
        assert_eq!(
            profile_dir_of(&target.join("examples/soak")),
            Some(target.into())
        );
        assert_eq!(
            profile_dir_of(&target.join("scenario")),
            Some(target.into())
        );
    }

    /// Runs `script` as the "agent"; scripts end in `exec` so the signalled PID is the process
    /// that lingers, and no grandchild outlives the test.
    fn sh(script: &str, dir: &Path) -> AgentProcess {
        let args = [OsStr::new("-c"), OsStr::new(script)];
        AgentProcess::spawn(Path::new("/bin/sh"), &args, &dir.join("agent.log")).expect("spawn sh")
    }

    #[test]
    fn reads_json_logs_and_skips_other_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = r#"
            echo '{"timestamp":"2026-11-28T17:00:14.123456Z","level":"INFO","message":"up"}'
            echo 'thread main panicked'
            echo '[1,2]'
            echo 'warning' >&2
            sleep 0.2
            echo '{"event":"peer_down","peer":"beta","link":"serial0"}'
            printf '{"partial":'
            exec sleep 30
        "#;
        let mut agent = sh(script, dir.path());
        let down = agent
            .wait_for_log(|v| v["event"] == "peer_down", Duration::from_secs(5))
            .expect("peer_down logged");
        assert_eq!(down["peer"], "beta");
        let logs = agent.logs();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert_eq!(
            log_timestamp(&logs[0]),
            Some(at(1_795_885_214, 123_456_000))
        );
        assert!(agent.stderr_text().contains("warning"));
        assert!(agent
            .wait_for_log(|v| v["event"] == "never", Duration::from_millis(100))
            .is_none());
        assert!(agent.is_running());
        let status = agent.stop().expect("stop");
        assert!(!status.success());
        assert!(!agent.is_running());
        assert!(
            agent.kill(Signal::SIGTERM).is_err(),
            "no signals after reaping"
        );
    }

    #[test]
    fn wait_for_log_returns_early_when_the_agent_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut agent = sh("echo '{\"message\":\"bye\"}'; exit 3", dir.path());
        let started = Instant::now();
        assert!(agent
            .wait_for_log(|v| v["message"] == "never", Duration::from_secs(10))
            .is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            agent
                .wait_exit(Duration::from_secs(5))
                .and_then(|s| s.code()),
            Some(3)
        );
        assert_eq!(agent.logs().len(), 1);
    }

    #[test]
    fn stop_reaches_a_frozen_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut agent = sh("exec sleep 30", dir.path());
        agent.sigstop().expect("sigstop");
        agent.sigcont().expect("sigcont");
        agent.sigstop().expect("sigstop");
        let started = Instant::now();
        agent.stop().expect("stop");
        assert!(
            started.elapsed() < STOP_GRACE,
            "SIGTERM should work without waiting for KILL"
        );
    }

    #[test]
    fn stop_escalates_to_sigkill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut agent = sh(
            "trap '' TERM; echo '{\"ready\":true}'; exec sleep 30",
            dir.path(),
        );
        agent
            .wait_for_log(|v| v["ready"] == true, Duration::from_secs(5))
            .expect("trap installed");
        let status = agent.stop().expect("stop");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn drop_kills_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = sh("exec sleep 30", dir.path());
        let pid = agent.pid();
        drop(agent);
        // Reaped by Drop, so the PID no longer exists (reuse within this instant is negligible).
        assert_eq!(kill(pid, None), Err(nix::errno::Errno::ESRCH));
    }

    #[test]
    fn proc_stats_reads_this_process() {
        let s = proc_stats(nix::unistd::Pid::this()).expect("own /proc entry");
        assert!(s.vm_rss_kib > 0 && s.vm_hwm_kib >= s.vm_rss_kib, "{s:?}");
        assert_eq!(proc_stats(nix::unistd::Pid::from_raw(i32::MAX)), None);
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = AgentProcess::spawn(&dir.path().join("nope"), &[], &dir.path().join("log"))
            .expect_err("no such binary");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"));
    }
}
