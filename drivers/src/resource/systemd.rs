//! A systemd unit (`bacula-dir.service`, `bacula-sd.service`) as a [`Resource`], driven through
//! `systemctl`.
//!
//! Hosts that boot with systemd manage the Bacula daemons as units; starting them any other way
//! would fight systemd's own supervision. `systemctl` is the stable interface to it (the D-Bus
//! API would need a bus client for three calls), and it keeps the [`Resource`] contract once
//! held to it here:
//!
//! - **Deadline.** `systemctl start` and `stop` block until systemd finished the job, so they
//!   run with the caller's deadline; at the deadline `systemctl` is killed with its process
//!   group and the call returns [`ResourceErrorKind::Timeout`]. Killing `systemctl` does not
//!   cancel the job inside systemd: the message says so, and the group's next `stop` (itself a
//!   job that replaces the pending one) is what ends it.
//! - **Confirmation.** After `start` and `stop` the unit's state is read back with
//!   `systemctl is-active`; `systemctl`'s exit code alone is not trusted.
//! - **Truthful failures.** A unit that failed is reported with systemd's own account of it
//!   (`Result=`, `ExecMainStatus=`, ...), read with `systemctl show` as `key=value` lines:
//!   `--value` prints values in systemd's internal order, not the requested one, so the keys
//!   are kept.
//! - **No systemd.** Where PID 1 is not systemd, `systemctl` answers "System has not been
//!   booted with systemd as init system"; that is [`ResourceErrorKind::NotInstalled`], since
//!   the unit cannot run on this node whatever its configuration.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use tokio::time::Instant;

use super::{Resource, ResourceError, ResourceErrorKind, ResourceState};

/// Which unit, and which `systemctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdParams {
    /// The unit's full name, `bacula-dir.service`.
    pub unit: String,
    /// The `systemctl` executable; [`DEFAULT_SYSTEMCTL`] unless a test puts a fake there.
    pub systemctl: PathBuf,
}

impl SystemdParams {
    /// `unit` through [`DEFAULT_SYSTEMCTL`].
    pub fn new(unit: impl Into<String>) -> Self {
        Self {
            unit: unit.into(),
            systemctl: PathBuf::from(DEFAULT_SYSTEMCTL),
        }
    }
}

/// Counters of one unit, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct SystemdMetrics {
    /// `systemctl` runs.
    pub runs: AtomicU64,
    /// Actions that returned an error.
    pub errors: AtomicU64,
    /// `systemctl` runs killed at a deadline.
    pub timeouts: AtomicU64,
}

/// A systemd unit; see the module docs.
#[derive(Debug)]
pub struct SystemdResource {
    name: String,
    params: SystemdParams,
    metrics: Arc<SystemdMetrics>,
}

/// What one `systemctl` run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Exit code; `None` when a signal ended it.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The unit's state as `systemctl is-active` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Other,
}

impl SystemdResource {
    /// A resource named `name` for the unit in `params`.
    ///
    /// Fails with [`ResourceErrorKind::Args`] when the unit name is empty, starts with `-` (it
    /// would be read as an option) or contains whitespace or a NUL byte.
    pub fn new(name: impl Into<String>, params: SystemdParams) -> Result<Self, ResourceError> {
        let name = name.into();
        let unit = &params.unit;
        if unit.is_empty()
            || unit.starts_with('-')
            || unit.chars().any(|c| c.is_whitespace() || c == '\0')
        {
            return Err(ResourceError::new(
                ResourceErrorKind::Args,
                name,
                "new",
                format!("{unit:?} is not a systemd unit name"),
            ));
        }
        Ok(Self {
            name,
            params,
            metrics: Arc::default(),
        })
    }

    /// This unit's counters.
    pub fn metrics(&self) -> Arc<SystemdMetrics> {
        Arc::clone(&self.metrics)
    }

    async fn do_start(&self, deadline: Instant) -> Result<(), ResourceError> {
        let run = self.systemctl("start", &["start"], deadline).await?;
        if run.code != Some(0) {
            return Err(self.failed_run("start", &run, deadline).await);
        }
        match self.active_state("start", deadline).await? {
            ActiveState::Active | ActiveState::Reloading => Ok(()),
            _ => Err(self.unit_failure("start", deadline).await),
        }
    }

    async fn do_stop(&self, deadline: Instant) -> Result<(), ResourceError> {
        let run = self.systemctl("stop", &["stop"], deadline).await?;
        if run.code != Some(0) {
            let error = self.failed_run("stop", &run, deadline).await;
            // A unit systemd does not know is not running: stopping it is done.
            if error.kind == ResourceErrorKind::NotInstalled && !unreachable(&run) {
                tracing::warn!(resource = %self.name, unit = %self.params.unit,
                    "stop: systemd does not know the unit; it is not running");
                return Ok(());
            }
            return Err(error);
        }
        match self.active_state("stop", deadline).await? {
            // A unit whose main process failed on the way down is stopped all the same.
            ActiveState::Inactive | ActiveState::Failed => Ok(()),
            _ => Err(self.unit_failure("stop", deadline).await),
        }
    }

    async fn do_monitor(&self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        match self.active_state("monitor", deadline).await? {
            ActiveState::Active | ActiveState::Reloading => Ok(ResourceState::Running),
            ActiveState::Inactive => {
                let props = self.properties("monitor", deadline).await?;
                if prop(&props, "LoadState") == Some("not-found") {
                    Err(self.error(
                        ResourceErrorKind::NotInstalled,
                        "monitor",
                        format!("unit {} not found", self.params.unit),
                    ))
                } else {
                    Ok(ResourceState::Stopped)
                }
            }
            _ => Err(self.unit_failure("monitor", deadline).await),
        }
    }

    /// `systemctl is-active`, whose exit code is 0 only for active; the state word says more.
    async fn active_state(
        &self,
        action: &str,
        deadline: Instant,
    ) -> Result<ActiveState, ResourceError> {
        let run = self.systemctl(action, &["is-active"], deadline).await?;
        let word = run.stdout.lines().map(str::trim).find(|l| !l.is_empty());
        if unreachable(&run) {
            return Err(self.run_error(action, &run));
        }
        match word {
            Some(word) => Ok(parse_active_state(word)),
            None => Err(self.failed_run(action, &run, deadline).await),
        }
    }

    /// `systemctl show` of the properties that explain a failure, as `(key, value)` pairs.
    async fn properties(
        &self,
        action: &str,
        deadline: Instant,
    ) -> Result<Vec<(String, String)>, ResourceError> {
        let run = self
            .systemctl(action, &["show", &format!("--property={SHOWN}")], deadline)
            .await?;
        if run.code != Some(0) {
            return Err(self.run_error(action, &run));
        }
        Ok(parse_properties(&run.stdout))
    }

    /// The error for a unit found in a state it should not be in, with systemd's reasons.
    async fn unit_failure(&self, action: &str, deadline: Instant) -> ResourceError {
        match self.properties(action, deadline).await {
            Ok(props) => self.error(
                if prop(&props, "LoadState") == Some("not-found") {
                    ResourceErrorKind::NotInstalled
                } else {
                    ResourceErrorKind::Failed
                },
                action,
                describe_failure(&self.params.unit, &props),
            ),
            Err(e) => e,
        }
    }

    /// The error for a `systemctl` run that exited non-zero: its own words, and the unit's
    /// state when systemd is there to ask.
    async fn failed_run(&self, action: &str, run: &Run, deadline: Instant) -> ResourceError {
        let error = self.run_error(action, run);
        if error.kind != ResourceErrorKind::Failed {
            return error;
        }
        match self.properties(action, deadline).await {
            Ok(props) => self.error(
                ResourceErrorKind::Failed,
                action,
                format!(
                    "{}; systemctl: {}",
                    describe_failure(&self.params.unit, &props),
                    first_message(run)
                ),
            ),
            Err(_) => error,
        }
    }

    fn run_error(&self, action: &str, run: &Run) -> ResourceError {
        let message = first_message(run);
        let code = run
            .code
            .map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"));
        let kind = classify(run);
        let message = if unreachable(run) {
            format!(
                "systemd is not running on this node (PID 1 is another init), so {} cannot \
                 run here: systemctl said: {message}",
                self.params.unit
            )
        } else {
            format!("systemctl failed with {code}: {message}")
        };
        self.error(kind, action, message)
    }

    /// Runs `systemctl <args> <unit>`, killing its process group at `deadline`.
    async fn systemctl(
        &self,
        action: &str,
        args: &[&str],
        deadline: Instant,
    ) -> Result<Run, ResourceError> {
        self.metrics.runs.fetch_add(1, Ordering::Relaxed);
        let program = &self.params.systemctl;
        let mut child = Command::new(program)
            .args(["--no-pager", "--no-ask-password"])
            .args(args)
            .arg("--")
            .arg(&self.params.unit)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("SYSTEMD_COLORS", "0")
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    ResourceErrorKind::NotInstalled
                } else {
                    ResourceErrorKind::Spawn
                };
                self.error(
                    kind,
                    action,
                    format!("cannot run {}: {e}", program.display()),
                )
            })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout_at(deadline, async {
            let (out, err, status) =
                tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
            (out, err, status)
        })
        .await;
        match finished {
            Ok((stdout, stderr, Ok(status))) => Ok(Run {
                code: status.code(),
                stdout,
                stderr,
            }),
            Ok((_, _, Err(e))) => Err(self.error(
                ResourceErrorKind::Spawn,
                action,
                format!("cannot wait for {}: {e}", program.display()),
            )),
            Err(_) => {
                if let Some(group) = group {
                    // The group id is systemctl's PID, still ours: it is reaped only below.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(self.error(
                    ResourceErrorKind::Timeout,
                    action,
                    format!(
                        "systemctl {} {} did not finish before the deadline and was killed; a \
                         job it queued may still be running in systemd",
                        args.join(" "),
                        self.params.unit
                    ),
                ))
            }
        }
    }

    fn error(&self, kind: ResourceErrorKind, action: &str, message: String) -> ResourceError {
        ResourceError::new(kind, &self.name, action, message)
    }

    fn logged<T>(
        &self,
        action: &str,
        result: Result<T, ResourceError>,
    ) -> Result<T, ResourceError> {
        if let Err(e) = &result {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %self.name, unit = %self.params.unit, action,
                kind = ?e.kind, message = %e.message, "systemd unit action failed");
        }
        result
    }
}

impl Resource for SystemdResource {
    fn name(&self) -> &str {
        &self.name
    }

    super::logged_actions!();
}

/// Where Debian (and every merged-/usr distribution, through the `/bin` link) installs it.
pub const DEFAULT_SYSTEMCTL: &str = "/bin/systemctl";

/// Most bytes kept of `systemctl`'s stdout or stderr; the rest is read and dropped so it never
/// blocks on a full pipe.
const MAX_OUTPUT: usize = 16 * 1024;

/// The properties that explain a unit's state; `LoadState` tells a missing unit apart.
const SHOWN: &str = "LoadState,ActiveState,SubState,Result,ExecMainStatus,ExecMainCode";

/// Maps a failed `systemctl` run to a kind from its words; exit code 5 is systemctl's "unit not
/// loaded" (`EXIT_NOTINSTALLED` in systemd's LSB codes).
fn classify(run: &Run) -> ResourceErrorKind {
    let m = format!("{}\n{}", run.stderr, run.stdout).to_ascii_lowercase();
    if unreachable(run) {
        ResourceErrorKind::NotInstalled
    } else if m.contains("access denied")
        || m.contains("interactive authentication required")
        || m.contains("permission denied")
    {
        ResourceErrorKind::Permission
    } else if m.contains("not found") || m.contains("not loaded") || run.code == Some(5) {
        ResourceErrorKind::NotInstalled
    } else if m.contains("invalid unit name") || m.contains("unit name") && m.contains("invalid") {
        ResourceErrorKind::NotConfigured
    } else {
        ResourceErrorKind::Failed
    }
}

/// Whether `systemctl` could not reach systemd at all (no systemd as PID 1, or no bus).
fn unreachable(run: &Run) -> bool {
    let m = run.stderr.to_ascii_lowercase();
    m.contains("not been booted with systemd") || m.contains("failed to connect to bus")
}

fn parse_active_state(word: &str) -> ActiveState {
    match word {
        "active" => ActiveState::Active,
        "reloading" | "refreshing" => ActiveState::Reloading,
        "inactive" | "unknown" => ActiveState::Inactive,
        "failed" => ActiveState::Failed,
        "activating" => ActiveState::Activating,
        "deactivating" => ActiveState::Deactivating,
        _ => ActiveState::Other,
    }
}

fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `bacula-dir.service failed: Result=exit-code, ExecMainStatus=1` and the like.
fn describe_failure(unit: &str, props: &[(String, String)]) -> String {
    if prop(props, "LoadState") == Some("not-found") {
        return format!("unit {unit} not found");
    }
    let state = prop(props, "ActiveState").unwrap_or("unknown");
    let sub = prop(props, "SubState").unwrap_or("unknown");
    let mut parts = Vec::new();
    for key in ["Result", "ExecMainStatus", "ExecMainCode"] {
        if let Some(value) = prop(props, key) {
            // ExecMainCode 0 means "never ran" and status 0 with success says nothing new.
            if !(key == "ExecMainCode" && value == "0") {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    let detail = if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    };
    match state {
        "failed" => format!("{unit} failed{detail}"),
        _ => format!("{unit} is {state} ({sub}){detail}"),
    }
}

/// The first non-empty line of stderr, or of stdout when stderr has none.
fn first_message(run: &Run) -> String {
    [&run.stderr, &run.stdout]
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(reader: Option<R>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    // Ends at EOF; a chatty program is bounded by the caller's deadline.
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: i32, stdout: &str, stderr: &str) -> Run {
        Run {
            code: Some(code),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn failures_map_to_kinds() {
        let not_booted = run(
            1,
            "",
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n\
             Failed to connect to bus: Host is down\n",
        );
        assert!(unreachable(&not_booted));
        assert_eq!(classify(&not_booted), ResourceErrorKind::NotInstalled);
        assert_eq!(
            classify(&run(
                5,
                "",
                "Failed to start nosuch.service: Unit nosuch.service not found.\n"
            )),
            ResourceErrorKind::NotInstalled
        );
        assert_eq!(
            classify(&run(
                4,
                "",
                "Failed to start x.service: Access denied\nSee system logs.\n"
            )),
            ResourceErrorKind::Permission
        );
        assert_eq!(
            classify(&run(
                1,
                "",
                "Job for x.service failed because the control process exited with error code.\n"
            )),
            ResourceErrorKind::Failed
        );
    }

    #[test]
    fn failure_description_names_systemd_reasons() {
        let props = parse_properties(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\n\
             ExecMainStatus=1\nExecMainCode=1\n",
        );
        assert_eq!(
            describe_failure("bacula-dir.service", &props),
            "bacula-dir.service failed: Result=exit-code, ExecMainStatus=1, ExecMainCode=1"
        );
        let props = parse_properties("LoadState=not-found\nActiveState=inactive\n");
        assert_eq!(
            describe_failure("x.service", &props),
            "unit x.service not found"
        );
        assert_eq!(parse_active_state("activating"), ActiveState::Activating);
        assert_eq!(parse_active_state("failed"), ActiveState::Failed);
    }

    #[test]
    fn unit_names_that_are_options_are_refused() {
        for unit in ["", "--all", "a b.service"] {
            let e = SystemdResource::new("r", SystemdParams::new(unit));
            assert!(
                matches!(e, Err(ref e) if e.kind == ResourceErrorKind::Args),
                "{unit:?}"
            );
        }
    }
}
