//! Running one external program for a resource executor (OCF agent, start/stop script) under
//! the [`Resource`](super::Resource) deadline rules.
//!
//! The program runs in its own process group with a clean environment, stdin from `/dev/null`
//! and both output streams captured (only their tails are kept, so a chatty program cannot grow
//! memory). Agents start helpers (`ip`, `mount`, `pg_ctl`, a `sleep`) that would outlive a
//! killed shell, so the deadline is enforced on the whole group: `SIGTERM` a short grace before
//! the deadline, `SIGKILL` at it. The group leader is reaped only after the `SIGKILL`, so its
//! PID, which is the group id, cannot have been reused by then.
//!
//! A program that exits normally keeps its group: a start script may leave its daemon in it on
//! purpose. Such a daemon may also keep the output pipes open; the reader then stops after
//! [`DRAIN`] and the pipes are closed, so daemons must not write to an inherited stdout/stderr
//! (the same rule Pacemaker imposes).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;
use tokio::time::Instant;

/// One program to run.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// `argv[0]`, looked up in the child's `PATH` when it has no slash.
    pub(super) program: OsString,
    /// The remaining arguments.
    pub(super) args: Vec<OsString>,
    /// The complete environment of the child (nothing is inherited).
    pub(super) env: Vec<(OsString, OsString)>,
    /// Most bytes of stdout kept (the tail).
    pub(super) stdout_limit: usize,
}

/// A run that ended (by itself, or killed at the deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finished {
    /// Exit code; `None` when a signal ended it.
    pub(super) code: Option<i32>,
    /// The signal that ended it, if one did.
    pub(super) signal: Option<i32>,
    /// Tail of its stdout.
    pub(super) stdout: Captured,
    /// Tail of its stderr (at most [`OUTPUT_TAIL`] bytes).
    pub(super) stderr: Captured,
    /// From spawn to exit.
    pub(super) elapsed: Duration,
}

/// The kept tail of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Captured {
    /// The last bytes, lossily decoded.
    pub(super) text: String,
    /// Bytes read in all; more than `text` holds when the head was dropped.
    pub(super) total: usize,
    /// Whether the head was dropped.
    pub(super) truncated: bool,
}

/// Why a run produced no exit status.
#[derive(Debug)]
pub(super) enum RunError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// Waiting for it failed (should not happen for our own child).
    Wait(std::io::Error),
    /// It did not finish by the deadline; its process group was killed. What it wrote before.
    Timeout {
        /// Its output until it was killed.
        stdout: Captured,
        /// Its error output until it was killed.
        stderr: Captured,
    },
}

/// Runs `spec` and returns how it ended, killing its process group by `deadline`.
pub(super) async fn run(spec: &Spec, deadline: Instant) -> Result<Finished, RunError> {
    let started = Instant::now();
    if started >= deadline {
        // Nothing to start: a program spawned now would be killed at once.
        return Err(RunError::Timeout {
            stdout: Captured::default(),
            stderr: Captured::default(),
        });
    }
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    // Declared after `child`, so dropped before it: a caller abandoning the run kills the whole
    // group while the leader is still unreaped.
    let mut guard = GroupGuard(group);
    let mut out = Tail::new(spec.stdout_limit);
    let mut err = Tail::new(OUTPUT_TAIL);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let term_at = term_time(started, deadline);

    let ended = {
        let reading = async {
            tokio::join!(read_into(stdout, &mut out), read_into(stderr, &mut err));
        };
        tokio::pin!(reading);
        let mut read_done = false;
        let exited = loop {
            tokio::select! {
                () = &mut reading, if !read_done => read_done = true,
                status = child.wait() => break Some(status),
                () = tokio::time::sleep_until(term_at) => break None,
            }
        };
        match exited {
            Some(status) => {
                guard.0 = None;
                if !read_done {
                    let _ = tokio::time::timeout(DRAIN, &mut reading).await;
                }
                Some(status)
            }
            None => {
                if let Some(group) = group {
                    // The leader is not reaped yet, so the group id is still ours.
                    let _ = killpg(group, Signal::SIGTERM);
                    // Bounded by `deadline`: each round sleeps POLL or ends the reading.
                    while Instant::now() < deadline && !leader_exited(group) {
                        tokio::select! {
                            () = &mut reading, if !read_done => read_done = true,
                            () = tokio::time::sleep(POLL.min(deadline - Instant::now())) => {}
                        }
                    }
                    // Whatever the leader did, its helpers may still run: kill them all.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                guard.0 = None;
                let _ = child.wait().await;
                if !read_done {
                    let _ = tokio::time::timeout(DRAIN, &mut reading).await;
                }
                None
            }
        }
    };
    match ended {
        Some(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt as _;
            Ok(Finished {
                code: status.code(),
                signal: status.signal(),
                stdout: out.finish(),
                stderr: err.finish(),
                elapsed: started.elapsed(),
            })
        }
        Some(Err(e)) => Err(RunError::Wait(e)),
        None => Err(RunError::Timeout {
            stdout: out.finish(),
            stderr: err.finish(),
        }),
    }
}

/// The text of a run's output for an error message: stderr, then stdout, trimmed, each at
/// most [`OUTPUT_TAIL`] bytes (the tail).
pub(super) fn output_text(stdout: &Captured, stderr: &Captured) -> String {
    let mut parts = Vec::new();
    for captured in [stderr, stdout] {
        let text = tail_str(captured.text.trim(), OUTPUT_TAIL);
        if !text.is_empty() {
            if captured.truncated || text.len() < captured.text.trim().len() {
                parts.push(format!("…{text}"));
            } else {
                parts.push(text.to_owned());
            }
        }
    }
    parts.join("\n")
}

/// Most bytes of stderr kept, and of any output put into an error message: the agents' own
/// `ERROR:` lines come last, and 4 KiB holds dozens of them.
pub(super) const OUTPUT_TAIL: usize = 4 * 1024;

/// Time given to a program between `SIGTERM` and `SIGKILL`: enough for a shell to pass the
/// signal on and exit, short enough that the caller's deadline still holds.
const TERM_GRACE: Duration = Duration::from_millis(250);

/// How long the pipes are read after the program ended, in case a child it left behind holds
/// them open.
const DRAIN: Duration = Duration::from_millis(100);

/// How often the group leader is checked for having exited during the grace.
const POLL: Duration = Duration::from_millis(10);

/// When to send `SIGTERM`: [`TERM_GRACE`] before the deadline, but never using more than a
/// quarter of the whole allowance on the grace.
fn term_time(started: Instant, deadline: Instant) -> Instant {
    let allowance = deadline.saturating_duration_since(started);
    deadline - TERM_GRACE.min(allowance / 4)
}

/// Whether the unreaped leader has exited (is a zombie), read from `/proc` without reaping it.
fn leader_exited(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

/// Kills the process group when a run is abandoned (its future dropped) before it ended.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// The last `limit` bytes of a stream.
struct Tail {
    limit: usize,
    bytes: Vec<u8>,
    total: usize,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len();
        self.bytes.extend_from_slice(chunk);
        // Trimmed at twice the limit so that a stream of small chunks costs amortised O(1).
        if self.bytes.len() > self.limit.saturating_mul(2) {
            let cut = self.bytes.len() - self.limit;
            self.bytes.drain(..cut);
        }
    }

    fn finish(mut self) -> Captured {
        if self.bytes.len() > self.limit {
            let cut = self.bytes.len() - self.limit;
            self.bytes.drain(..cut);
        }
        Captured {
            text: String::from_utf8_lossy(&self.bytes).into_owned(),
            total: self.total,
            truncated: self.total > self.bytes.len(),
        }
    }
}

async fn read_into<R: AsyncRead + Unpin>(reader: Option<R>, tail: &mut Tail) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = [0u8; 4096];
    // Ends at EOF; a program that never closes its output is bounded by the caller's deadline
    // or by DRAIN.
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

/// The last at most `limit` bytes of `text`, starting on a character boundary.
fn tail_str(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit: usize) -> Spec {
        Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            stdout_limit: limit,
        }
    }

    #[tokio::test]
    async fn exit_code_and_output_tails_are_reported() {
        let spec = sh(
            "echo out; i=0; while [ $i -lt 2000 ]; do echo ERROR: line $i >&2; i=$((i+1)); done; exit 3",
            1024,
        );
        let run = run(&spec, Instant::now() + Duration::from_secs(10)).await;
        let run = run.expect("sh runs");
        assert_eq!(run.code, Some(3));
        assert_eq!(run.stdout.text, "out\n");
        assert!(run.stderr.truncated);
        assert!(run.stderr.text.len() <= OUTPUT_TAIL);
        assert!(run.stderr.text.ends_with("ERROR: line 1999\n"));
        let text = output_text(&run.stdout, &run.stderr);
        assert!(
            text.starts_with('…') && text.contains("line 1999\nout"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_environment_is_clean() {
        let spec = sh("env", 64 * 1024);
        let run = run(&spec, Instant::now() + Duration::from_secs(10))
            .await
            .expect("sh runs");
        let mut names: Vec<&str> = run
            .stdout
            .text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_")
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["PATH"]);
    }

    #[tokio::test]
    async fn the_whole_group_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("sleep.pid");
        let script = format!(
            "trap '' TERM; sleep 1000 & echo $! > {}; wait",
            pidfile.display()
        );
        let started = Instant::now();
        let result = run(&sh(&script, 1024), started + Duration::from_millis(600)).await;
        assert!(
            matches!(result, Err(RunError::Timeout { .. })),
            "{result:?}"
        );
        let elapsed = started.elapsed();
        // Not the 1000 s sleep: the deadline, plus slack for a loaded machine's late timer.
        assert!(elapsed < Duration::from_millis(1100), "{elapsed:?}");
        let pid = std::fs::read_to_string(&pidfile).expect("pid file");
        let pid: i32 = pid.trim().parse().expect("pid");
        // SIGKILL was sent to the group; the process ends when it is next scheduled, which on
        // a loaded machine may be a moment after the signal.
        let killed = Instant::now();
        while !leader_exited(Pid::from_raw(pid)) && killed.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            leader_exited(Pid::from_raw(pid)),
            "sleep {pid} survived the deadline"
        );
    }

    #[test]
    fn the_grace_never_takes_more_than_a_quarter() {
        let now = Instant::now();
        assert_eq!(
            term_time(now, now + Duration::from_secs(10)),
            now + Duration::from_secs(10) - TERM_GRACE
        );
        assert_eq!(
            term_time(now, now + Duration::from_millis(100)),
            now + Duration::from_millis(75)
        );
        assert_eq!(term_time(now, now), now);
    }
}
