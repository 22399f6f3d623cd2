//! A resource run by three commands (start, stop, status) as a [`Resource`]: LSB init scripts,
//! `bconsole` wrappers, site scripts with no OCF agent.
//!
//! Scripts keep less of a contract than OCF agents, so this executor adds it:
//!
//! - **Status.** Exit 0 is running; 3 (LSB "not running") and 7 (OCF "not running") are
//!   stopped; anything else (LSB 1 "dead, pid file exists", 4 "unknown", …) is
//!   [`ResourceErrorKind::Failed`].
//! - **Idempotency.** `start` runs `status` first and does nothing when the resource runs;
//!   `stop` likewise when it is stopped. Many scripts fail when asked to start twice.
//! - **Confirmation.** After the start (stop) command succeeds, `status` must say running
//!   (stopped), otherwise the action failed.
//! - **Deadline.** Commands run in their own process group with a clean environment (`PATH`
//!   plus the configured variables); at the deadline the group is killed (`SIGTERM`, a short
//!   grace, `SIGKILL`) and the call returns [`ResourceErrorKind::Timeout`].
//!
//! Start and stop exit codes are read as LSB's, which are OCF's (1 generic, 2 arguments,
//! 3 unimplemented, 4 permission, 5 not installed, 6 not configured, 7 not running).

use std::collections::BTreeMap;
use std::ffi::OsString;

use tokio::time::Instant;

use super::process::{self, Finished, RunError, Spec};
use super::{Resource, ResourceError, ResourceErrorKind, ResourceFuture, ResourceState};

/// The commands of one scripted resource; each is an argument vector (no shell involved unless
/// the vector calls one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptParams {
    /// Starts the resource, e.g. `["/etc/init.d/bacula-sd", "start"]`.
    pub start: Vec<String>,
    /// Stops it.
    pub stop: Vec<String>,
    /// Reports it: 0 running, 3 or 7 stopped, anything else failed.
    pub status: Vec<String>,
    /// The commands' whole environment besides `PATH` (which this may override).
    pub env: BTreeMap<String, String>,
}

/// A resource run by scripts; see the module docs.
#[derive(Debug)]
pub struct ScriptResource {
    name: String,
    params: ScriptParams,
}

impl ScriptResource {
    /// A resource named `name` run by the commands in `params`.
    ///
    /// Fails with [`ResourceErrorKind::Args`] when a command is empty or a variable cannot be
    /// passed, and with [`ResourceErrorKind::NotInstalled`] when a command given by path is not
    /// an executable file (one given by name is looked up in `PATH` when it runs).
    pub fn new(name: impl Into<String>, params: ScriptParams) -> Result<Self, ResourceError> {
        use std::os::unix::fs::PermissionsExt as _;
        let name = name.into();
        let refuse = |kind, message: String| ResourceError::new(kind, &name, "configure", message);
        for (which, argv) in [
            ("start", &params.start),
            ("stop", &params.stop),
            ("status", &params.status),
        ] {
            let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
                return Err(refuse(
                    ResourceErrorKind::Args,
                    format!("the {which} command is empty"),
                ));
            };
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(refuse(
                    ResourceErrorKind::Args,
                    format!("the {which} command holds a NUL"),
                ));
            }
            if program.contains('/') {
                let executable = std::fs::metadata(program)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                if !executable {
                    return Err(refuse(
                        ResourceErrorKind::NotInstalled,
                        format!("{which} command {program} is not an executable file"),
                    ));
                }
            }
        }
        for (key, value) in &params.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(refuse(
                    ResourceErrorKind::Args,
                    format!("environment variable {key:?} cannot be passed"),
                ));
            }
        }
        Ok(Self { name, params })
    }

    async fn run(
        &self,
        action: &'static str,
        deadline: Instant,
    ) -> Result<Finished, ResourceError> {
        let argv = match action {
            "start" => &self.params.start,
            "stop" => &self.params.stop,
            _ => &self.params.status,
        };
        let mut env: BTreeMap<&str, &str> = BTreeMap::from([("PATH", SCRIPT_PATH)]);
        env.extend(
            self.params
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let spec = Spec {
            program: argv.first().map(OsString::from).unwrap_or_default(),
            args: argv.iter().skip(1).map(OsString::from).collect(),
            env: env
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            stdout_limit: process::OUTPUT_TAIL,
        };
        match process::run(&spec, deadline).await {
            Ok(done) => {
                tracing::debug!(resource = %self.name, action, code = ?done.code,
                    elapsed_ms = done.elapsed.as_millis(), "resource script finished");
                Ok(done)
            }
            Err(RunError::Spawn(e)) => Err(self.logged(ResourceError::new(
                ResourceErrorKind::Spawn,
                &self.name,
                action,
                format!("cannot run {}: {e}", argv.join(" ")),
            ))),
            Err(RunError::Wait(e)) => Err(self.logged(ResourceError::new(
                ResourceErrorKind::Spawn,
                &self.name,
                action,
                format!("cannot wait for {}: {e}", argv.join(" ")),
            ))),
            Err(RunError::Timeout { stdout, stderr }) => {
                let output = process::output_text(&stdout, &stderr);
                let output = if output.is_empty() {
                    String::new()
                } else {
                    format!("; output:\n{output}")
                };
                Err(self.logged(ResourceError::new(
                    ResourceErrorKind::Timeout,
                    &self.name,
                    action,
                    format!(
                        "{} did not finish before the deadline; its process group was killed{output}",
                        argv.join(" ")
                    ),
                )))
            }
        }
    }

    async fn status(&self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        let run = self.run("status", deadline).await?;
        match run.code {
            Some(0) => Ok(ResourceState::Running),
            Some(LSB_STATUS_STOPPED | OCF_NOT_RUNNING) => Ok(ResourceState::Stopped),
            _ => Err(self.failed("status", ResourceErrorKind::Failed, &run)),
        }
    }

    /// Runs `action` (start or stop) unless `status` already reports `want`, then requires
    /// `status` to report `want`.
    async fn reach(
        &self,
        action: &'static str,
        want: ResourceState,
        deadline: Instant,
    ) -> Result<(), ResourceError> {
        match self.status(deadline).await {
            Ok(state) if state == want => return Ok(()),
            Ok(_) => {}
            // A failed resource is started (or stopped) all the same: the script may clean up a
            // stale pid file, and the status afterwards decides.
            Err(e) if e.kind == ResourceErrorKind::Failed => {}
            Err(e) => {
                return Err(ResourceError {
                    action: action.to_owned(),
                    message: format!("status before {action} failed: {}", e.message),
                    ..e
                })
            }
        }
        let run = self.run(action, deadline).await?;
        if run.code != Some(0) {
            let kind = run.code.map_or(ResourceErrorKind::Failed, lsb_kind);
            return Err(self.failed(action, kind, &run));
        }
        match self.status(deadline).await {
            Ok(state) if state == want => {
                tracing::info!(resource = %self.name, action,
                    elapsed_ms = run.elapsed.as_millis(), "resource script done");
                Ok(())
            }
            Ok(state) => {
                let found = match state {
                    ResourceState::Running => "running",
                    ResourceState::Stopped => "not running",
                };
                let done = if action == "start" {
                    "started"
                } else {
                    "stopped"
                };
                Err(self.logged(ResourceError::new(
                    ResourceErrorKind::Failed,
                    &self.name,
                    action,
                    format!(
                        "{done} but status reports {found} ({action} exited 0{})",
                        output_suffix(&run)
                    ),
                )))
            }
            Err(e) => Err(self.logged(ResourceError {
                action: action.to_owned(),
                message: format!(
                    "{action} exited 0 but the status after it failed: {}",
                    e.message
                ),
                ..e
            })),
        }
    }

    fn failed(&self, action: &str, kind: ResourceErrorKind, run: &Finished) -> ResourceError {
        let head = match (run.code, run.signal) {
            (Some(code), _) => format!("{action} exited {code}"),
            (None, signal) => format!("{action} was killed by signal {}", signal.unwrap_or(0)),
        };
        self.logged(ResourceError::new(
            kind,
            &self.name,
            action,
            format!("{head}{}", output_suffix(run)),
        ))
    }

    fn logged(&self, e: ResourceError) -> ResourceError {
        tracing::warn!(resource = %self.name, action = %e.action, kind = ?e.kind,
            message = %e.message, "resource script failed");
        e
    }
}

impl Resource for ScriptResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, deadline: Instant) -> ResourceFuture<'_, ()> {
        Box::pin(async move { self.reach("start", ResourceState::Running, deadline).await })
    }

    fn stop(&mut self, deadline: Instant) -> ResourceFuture<'_, ()> {
        Box::pin(async move { self.reach("stop", ResourceState::Stopped, deadline).await })
    }

    fn monitor(&mut self, deadline: Instant) -> ResourceFuture<'_, ResourceState> {
        Box::pin(async move { self.status(deadline).await })
    }
}

/// Search path unless the configuration sets `PATH`: the system directories only.
const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// LSB `status`: program is not running.
const LSB_STATUS_STOPPED: i32 = 3;
/// OCF `monitor`: not running (accepted from status scripts too).
const OCF_NOT_RUNNING: i32 = 7;

/// The kind of a start or stop exit code (LSB's codes, which OCF adopted).
fn lsb_kind(code: i32) -> ResourceErrorKind {
    use ResourceErrorKind as K;
    match code {
        2 => K::Args,
        3 => K::Unimplemented,
        4 => K::Permission,
        5 => K::NotInstalled,
        6 => K::NotConfigured,
        7 => K::NotRunning,
        _ => K::Failed,
    }
}

fn output_suffix(run: &Finished) -> String {
    let output = process::output_text(&run.stdout, &run.stderr);
    if output.is_empty() {
        String::new()
    } else {
        format!("; output:\n{output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_stop_codes_map_like_lsb() {
        use ResourceErrorKind as K;
        let kinds: Vec<K> = (1..=8).map(lsb_kind).collect();
        assert_eq!(
            kinds,
            [
                K::Failed,
                K::Args,
                K::Unimplemented,
                K::Permission,
                K::NotInstalled,
                K::NotConfigured,
                K::NotRunning,
                K::Failed
            ]
        );
    }

    #[test]
    fn empty_or_missing_commands_are_refused() {
        let ok = ScriptParams {
            start: vec!["true".into()],
            stop: vec!["true".into()],
            status: vec!["true".into()],
            env: BTreeMap::new(),
        };
        assert!(ScriptResource::new("s", ok.clone()).is_ok());
        let e = ScriptResource::new(
            "s",
            ScriptParams {
                stop: Vec::new(),
                ..ok.clone()
            },
        )
        .expect_err("empty stop");
        assert_eq!(e.kind, ResourceErrorKind::Args);
        let e = ScriptResource::new(
            "s",
            ScriptParams {
                status: vec!["/nonexistent/status".into()],
                ..ok.clone()
            },
        )
        .expect_err("missing status");
        assert_eq!(e.kind, ResourceErrorKind::NotInstalled);
        let e = ScriptResource::new(
            "s",
            ScriptParams {
                env: BTreeMap::from([("A=B".to_owned(), "c".to_owned())]),
                ..ok
            },
        )
        .expect_err("bad variable");
        assert_eq!(e.kind, ResourceErrorKind::Args);
    }

    #[tokio::test]
    async fn status_codes_map_to_states() {
        for (code, want) in [
            (0, Ok(ResourceState::Running)),
            (3, Ok(ResourceState::Stopped)),
            (7, Ok(ResourceState::Stopped)),
            (1, Err(ResourceErrorKind::Failed)),
            (4, Err(ResourceErrorKind::Failed)),
        ] {
            let sh = |c: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.to_owned()];
            let r = ScriptResource::new(
                "s",
                ScriptParams {
                    start: sh("exit 0"),
                    stop: sh("exit 0"),
                    status: sh(&format!("echo status {code} >&2; exit {code}")),
                    env: BTreeMap::new(),
                },
            )
            .expect("valid");
            let got = r
                .status(Instant::now() + std::time::Duration::from_secs(10))
                .await;
            match (&got, want) {
                (Ok(state), Ok(w)) => assert_eq!(*state, w),
                (Err(e), Err(k)) => {
                    assert_eq!(e.kind, k);
                    assert!(e.message.contains(&format!("status {code}")), "{e}");
                }
                _ => panic!("code {code}: {got:?}"),
            }
        }
    }
}
