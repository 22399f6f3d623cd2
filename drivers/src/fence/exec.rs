//! Any existing fence agent (`fence_ipmilan`, `fence_apc_snmp`, …) as a [`FenceDevice`].
//!
//! ClusterLabs' fence-agents cover a hundred devices that watchkeeper has no native driver for.
//! They share one interface: options as `key=value` lines on stdin (with `action=`), and the
//! exit code as the answer (status: 0 on, 2 off; anything else failed, with a message on
//! stderr). This driver speaks that interface and holds agents to the [`FenceDevice`] contract,
//! which they do not keep by themselves:
//!
//! - **Deadline.** The agent runs in its own process group; at the deadline the whole group is
//!   killed (`SIGKILL`), since agents start helpers (`ipmitool`, `snmpset`) that would outlive
//!   the agent, and the call returns [`FenceErrorKind::Timeout`].
//! - **Confirmation.** After `off` (and `on`) the driver runs `action=status` itself until the
//!   agent reports the requested state, rather than trusting the agent's own exit code.
//! - **Secrets.** The password goes to the agent on stdin, never on its command line (where
//!   `ps` would show it) and never into a log.
//! - **Targets.** The device fences the nodes listed in its `plugs` map; a node's plug (outlet,
//!   port, VM name) is passed as `plug=`, and a device that fences a single machine needs none.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use tokio::time::Instant;

use super::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};
use crate::secret::Secret;

/// How to run one fence agent.
#[derive(Debug, Clone)]
pub struct ExecParams {
    /// The agent executable.
    pub agent: PathBuf,
    /// Options passed on stdin as `key=value` lines, in this order (not `action`, `plug` or
    /// `password`, which the driver adds).
    pub options: Vec<(String, String)>,
    /// Passed as `password=` on stdin.
    pub password: Option<Secret>,
    /// The nodes this device fences, each with its plug (`None`: the device switches that one
    /// machine and takes no plug).
    pub plugs: BTreeMap<String, Option<String>>,
    /// Pause between two status runs while waiting for the requested state.
    pub poll_interval: Duration,
}

/// A fence agent run per operation; see the module docs.
#[derive(Debug)]
pub struct ExecDevice {
    name: String,
    params: ExecParams,
}

/// What one run of an agent produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRun {
    /// Exit code; `None` when a signal ended the agent.
    pub code: Option<i32>,
    /// Its standard output (at most [`MAX_OUTPUT`] bytes).
    pub stdout: String,
    /// Its standard error (at most [`MAX_OUTPUT`] bytes).
    pub stderr: String,
}

impl ExecDevice {
    /// A device named `name` running the agent in `params`.
    ///
    /// Fails with [`FenceErrorKind::Refused`] when the agent is not an executable file or no
    /// node is mapped.
    pub fn new(name: impl Into<String>, params: ExecParams) -> Result<Self, FenceError> {
        use std::os::unix::fs::PermissionsExt as _;
        let name = name.into();
        let executable = std::fs::metadata(&params.agent)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(FenceError::new(
                FenceErrorKind::Refused,
                name,
                format!("agent {} is not an executable file", params.agent.display()),
            ));
        }
        if params.plugs.is_empty() {
            return Err(FenceError::new(
                FenceErrorKind::Refused,
                name,
                "no node is mapped to this device".to_owned(),
            ));
        }
        Ok(Self { name, params })
    }

    /// Runs the agent once with `action` (and `plug` when given) and returns what it did,
    /// killing its process group at `deadline`.
    pub async fn run_agent(
        &self,
        action: &str,
        plug: Option<&str>,
        deadline: Instant,
    ) -> Result<AgentRun, FenceError> {
        let mut input = format!("action={action}\n");
        if let Some(plug) = plug {
            input.push_str(&format!("plug={plug}\n"));
        }
        for (key, value) in &self.params.options {
            input.push_str(&format!("{key}={value}\n"));
        }
        if let Some(password) = &self.params.password {
            input.push_str(&format!("password={}\n", password.expose()));
        }
        let mut child = Command::new(&self.params.agent)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Python agents print a DeprecationWarning per run that would bury their message.
            .env("PYTHONWARNINGS", "ignore")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.error(
                    FenceErrorKind::Refused,
                    format!("cannot start {}: {e}", self.params.agent.display()),
                )
            })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let io = async move {
            if let Some(mut stdin) = stdin {
                // An agent that exits without reading is not an error here; its exit code says.
                let _ = stdin.write_all(input.as_bytes()).await;
                drop(stdin);
            }
            tokio::join!(read_capped(stdout), read_capped(stderr))
        };
        let finished = tokio::time::timeout_at(deadline, async {
            let (out, status) = tokio::join!(io, child.wait());
            (out, status)
        })
        .await;
        match finished {
            Ok(((stdout, stderr), Ok(status))) => Ok(AgentRun {
                code: status.code(),
                stdout,
                stderr,
            }),
            Ok((_, Err(e))) => Err(self.error(
                FenceErrorKind::Refused,
                format!("cannot wait for {}: {e}", self.params.agent.display()),
            )),
            Err(_) => {
                if let Some(group) = group {
                    // The group id is the agent's PID, still ours: it is reaped only below.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                tracing::warn!(device = %self.name, action, "fence agent killed at the deadline");
                Err(self.error(
                    FenceErrorKind::Timeout,
                    format!(
                        "{} {action} did not finish before the deadline; its process group was \
                         killed",
                        self.params.agent.display()
                    ),
                ))
            }
        }
    }

    fn plug(&self, target: &str) -> Result<Option<&str>, FenceError> {
        match self.params.plugs.get(target) {
            Some(plug) => Ok(plug.as_deref()),
            None => Err(self.error(
                FenceErrorKind::TargetUnknown,
                format!(
                    "does not fence node {target}; it fences {}",
                    self.params
                        .plugs
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    async fn status_of(
        &self,
        plug: Option<&str>,
        deadline: Instant,
    ) -> Result<PowerState, FenceError> {
        let run = self.run_agent("status", plug, deadline).await?;
        match run.code {
            Some(0) => Ok(PowerState::On),
            Some(2) => Ok(PowerState::Off),
            _ => Err(self.failed("status", &run)),
        }
    }

    async fn set(
        &self,
        target: &str,
        want: PowerState,
        started: Instant,
        deadline: Instant,
    ) -> Result<Confirmed, FenceError> {
        let plug = self.plug(target)?;
        let action = match want {
            PowerState::Off => "off",
            PowerState::On => "on",
        };
        let run = self.run_agent(action, plug, deadline).await?;
        if run.code != Some(0) {
            return Err(self.failed(action, &run));
        }
        let mut polls = 0;
        let mut pause = FIRST_POLL.min(self.params.poll_interval);
        // Bounded by the deadline: each round runs the agent (itself bounded) or sleeps; the
        // pause doubles from a short first one up to the configured interval.
        loop {
            let state = match self.status_of(plug, deadline).await {
                Ok(state) => state,
                // The agent already read the other state back; the deadline cutting a later,
                // slow read leaves that the last word: the fence is unconfirmed, not silent.
                Err(e) if e.kind == FenceErrorKind::Timeout && polls > 0 => {
                    return Err(self.error(
                        FenceErrorKind::Unconfirmed,
                        format!("{action} succeeded but status still reported the other state after {polls} reads when the deadline passed"),
                    ))
                }
                Err(e) => return Err(e),
            };
            polls += 1;
            if state == want {
                tracing::info!(device = %self.name, target, action, polls,
                    elapsed_ms = started.elapsed().as_millis(), "fence agent confirmed");
                return Ok(Confirmed {
                    state,
                    polls,
                    elapsed: started.elapsed(),
                });
            }
            let next = Instant::now() + pause;
            pause = (pause * 2).min(self.params.poll_interval);
            if next >= deadline {
                return Err(self.error(
                    FenceErrorKind::Unconfirmed,
                    format!("{action} succeeded but status still reports the other state after {polls} reads"),
                ));
            }
            tokio::time::sleep_until(next).await;
        }
    }

    fn failed(&self, action: &str, run: &AgentRun) -> FenceError {
        let message = last_message(&run.stderr)
            .or_else(|| last_message(&run.stdout))
            .unwrap_or_else(|| "no message".to_owned());
        let code = run
            .code
            .map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"));
        let kind = classify(&message);
        tracing::warn!(device = %self.name, action, ?kind, %message, "fence agent failed");
        self.error(kind, format!("{action} failed with {code}: {message}"))
    }

    fn error(&self, kind: FenceErrorKind, message: String) -> FenceError {
        FenceError::new(kind, &self.name, message)
    }
}

impl FenceDevice for ExecDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            self.set(target, PowerState::Off, Instant::now(), deadline)
                .await
        })
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            self.set(target, PowerState::On, Instant::now(), deadline)
                .await
        })
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            let started = Instant::now();
            let off = self.set(target, PowerState::Off, started, deadline).await?;
            let on = self.set(target, PowerState::On, started, deadline).await?;
            Ok(Confirmed {
                polls: off.polls + on.polls,
                ..on
            })
        })
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(async move {
            let plug = self.plug(target)?;
            self.status_of(plug, deadline).await
        })
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move {
            let run = self.run_agent("monitor", None, deadline).await?;
            if run.code == Some(0) {
                Ok(())
            } else {
                Err(self.failed("monitor", &run))
            }
        })
    }
}

/// Most bytes kept of an agent's stdout or stderr; the rest is read and dropped so the agent
/// never blocks on a full pipe.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Pause before the second status run; doubled up to `poll_interval` after each.
const FIRST_POLL: Duration = Duration::from_millis(50);

/// Maps a fence agent's message to a kind. fencing.py's fixed messages are matched; anything
/// else is a refusal with the agent's words.
fn classify(message: &str) -> FenceErrorKind {
    let m = message.to_ascii_lowercase();
    if m.contains("timed out waiting to power") {
        FenceErrorKind::Unconfirmed
    } else if m.contains("login")
        || m.contains("password")
        || m.contains("unauthorized")
        || m.contains("401")
    {
        FenceErrorKind::Auth
    } else if m.contains("timed out") || m.contains("timeout") {
        FenceErrorKind::Timeout
    } else if m.contains("connection refused")
        || m.contains("no route")
        || m.contains("connection lost")
    {
        FenceErrorKind::Unreachable
    } else {
        FenceErrorKind::Refused
    }
}

/// The last non-empty line, without fencing.py's timestamp and level prefix.
fn last_message(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.contains("Please use '-h' for usage"))?;
    let line = line
        .split_once(" ERROR: ")
        .map_or(line, |(_, rest)| rest)
        .trim_start_matches("ERROR:root:");
    Some(line.trim().to_owned())
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(reader: Option<R>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    // Ends at EOF; a chatty agent is bounded by the caller's deadline.
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

    #[test]
    fn messages_lose_fencing_py_prefixes_and_map_to_kinds() {
        let stderr = "2026-11-28 17:22:58,201 ERROR: Failed: Timed out waiting to power OFF\n\n\
                      2026-11-28 17:22:58,201 ERROR: Please use '-h' for usage\n";
        let m = last_message(stderr).unwrap_or_default();
        assert_eq!(m, "Failed: Timed out waiting to power OFF");
        assert_eq!(classify(&m), FenceErrorKind::Unconfirmed);
        assert_eq!(
            classify("Unable to connect/login to fencing device"),
            FenceErrorKind::Auth
        );
        assert_eq!(classify("Connection timed out"), FenceErrorKind::Timeout);
        assert_eq!(
            classify("Failed: Unable to obtain correct plug status"),
            FenceErrorKind::Refused
        );
    }
}
