//! Any OCF resource agent (`IPaddr2`, `Filesystem`, `pgsql`, …) as a [`Resource`].
//!
//! resource-agents ships tested agents for every resource a Bacula host takes over; running them
//! saves re-implementing address, mount and database handling. The interface: the agent is
//! called with the action as its only argument and takes its whole configuration from the
//! environment (`OCF_ROOT`, `OCF_RESOURCE_INSTANCE`, one `OCF_RESKEY_<name>` per parameter); its
//! exit code is the answer (0 success/running, 7 not running, 1–6 errors) and its stderr says
//! why (`ERROR: …` and `ocf-exit-reason:…` lines). This executor holds agents to the
//! [`Resource`] contract, which they only promise:
//!
//! - **Deadline.** The agent runs in its own process group with a clean environment and
//!   `OCF_RESKEY_CRM_meta_timeout` set to the time left; at the deadline the whole group is
//!   killed (`SIGTERM`, a short grace, `SIGKILL`) and the call returns
//!   [`ResourceErrorKind::Timeout`].
//! - **Confirmation.** A `start` that returns 0 is followed by a `monitor`; only "running"
//!   makes it `Ok`. A `stop` returning 7 (not running, which OCF forbids for a stop) counts
//!   only when a `monitor` confirms the resource stopped.
//! - **Truthful errors.** Exit codes map to [`ResourceErrorKind`]s; the message carries the
//!   agent's exit reason and the tail of its output. The promoted states (8, 9) are failures:
//!   watchkeeper runs no promotable resources, so a promoted instance is not what it started.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::process::{self, Captured, RunError, Spec};
use super::{Resource, ResourceError, ResourceErrorKind, ResourceFuture, ResourceState};

/// How to run one OCF agent for one resource instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcfParams {
    /// The agent executable, e.g. `/usr/lib/ocf/resource.d/heartbeat/Dummy`; its file name is
    /// `OCF_RESOURCE_TYPE` and its directory's name `OCF_RESOURCE_PROVIDER`.
    pub agent: PathBuf,
    /// `OCF_ROOT`, normally `/usr/lib/ocf`; agents source their shell functions from it.
    pub ocf_root: PathBuf,
    /// `OCF_RESOURCE_INSTANCE`: the instance name agents use in state files and logs.
    pub instance: String,
    /// The agent's parameters, each passed as `OCF_RESKEY_<name>=<value>`.
    pub params: BTreeMap<String, String>,
    /// A command the agent runs under, e.g. `["ip", "netns", "exec", "test1"]` or
    /// `["nsenter", "-t", "1234", "-n"]`; for tests and containers, empty in production. It
    /// must exec the agent in its own process (so the deadline kill reaches it) and keep the
    /// environment.
    pub prefix: Vec<String>,
}

/// An OCF agent run per action; see the module docs.
#[derive(Debug)]
pub struct OcfResource {
    name: String,
    params: OcfParams,
    resource_type: String,
    provider: String,
}

/// What one run of an agent produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcfRun {
    /// Exit code; `None` when a signal ended the agent.
    pub code: Option<i32>,
    /// The signal that ended the agent, if one did.
    pub signal: Option<i32>,
    /// Tail of its standard output (all of it for `meta-data`).
    pub stdout: String,
    /// Tail of its standard error (at most 4 KiB).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// An agent's self-description, from its `meta-data` action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OcfMetadata {
    /// `<resource-agent name=…>`.
    pub name: String,
    /// `<version>`, the agent's own version.
    pub version: Option<String>,
    /// `<shortdesc>` (English where several languages are given).
    pub shortdesc: Option<String>,
    /// `<parameters>`, in document order.
    pub parameters: Vec<OcfParameter>,
    /// `<actions>`, in document order; an action may appear more than once (per role).
    pub actions: Vec<OcfAction>,
}

/// One `<parameter>` of an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OcfParameter {
    /// Name, passed as `OCF_RESKEY_<name>`.
    pub name: String,
    /// `required="1"`: the agent refuses to run without it.
    pub required: bool,
    /// `unique="1"`: no two instances may share a value.
    pub unique: bool,
    /// `<content type=…>`: `string`, `integer`, `boolean`, ….
    pub content_type: Option<String>,
    /// `<content default=…>`.
    pub default: Option<String>,
    /// `<shortdesc>`.
    pub shortdesc: Option<String>,
}

/// One `<action>` of an agent, with its advised timings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OcfAction {
    /// `start`, `stop`, `monitor`, `meta-data`, …
    pub name: String,
    /// Advised minimum timeout.
    pub timeout: Option<Duration>,
    /// Advised interval (for `monitor`).
    pub interval: Option<Duration>,
    /// `depth`, the monitor's thoroughness level.
    pub depth: Option<u32>,
    /// `role` (`Promoted`, `Unpromoted`, or the older `Master`/`Slave`) this entry is for.
    pub role: Option<String>,
}

/// Why an agent's meta-data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not well-formed XML (as far as this small parser reads it).
    #[error("invalid XML at byte {offset}: {reason}")]
    Xml {
        /// Byte offset in the document.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// The root element is not `<resource-agent>`.
    #[error("root element is <{0}>, not <resource-agent>")]
    NotResourceAgent(String),
    /// An element lacks an attribute it must have.
    #[error("<{element}> without the {attribute} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An action's `timeout`, `interval` or `depth` is not a value this parser knows.
    #[error("action {action}: {attribute}=\"{value}\" is not a valid value")]
    BadValue {
        /// The action.
        action: String,
        /// The attribute.
        attribute: &'static str,
        /// Its text.
        value: String,
    },
}

impl OcfResource {
    /// A resource named `name` run by the agent in `params`.
    ///
    /// Fails with [`ResourceErrorKind::NotInstalled`] when the agent is not an executable file
    /// or `ocf_root` is not a directory, and with [`ResourceErrorKind::Args`] when the
    /// instance or a parameter name cannot be passed in the environment.
    pub fn new(name: impl Into<String>, params: OcfParams) -> Result<Self, ResourceError> {
        use std::os::unix::fs::PermissionsExt as _;
        let name = name.into();
        let refuse = |kind, message: String| ResourceError::new(kind, &name, "configure", message);
        let executable = std::fs::metadata(&params.agent)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(refuse(
                ResourceErrorKind::NotInstalled,
                format!("agent {} is not an executable file", params.agent.display()),
            ));
        }
        if !params.ocf_root.is_dir() {
            return Err(refuse(
                ResourceErrorKind::NotInstalled,
                format!("OCF root {} is not a directory", params.ocf_root.display()),
            ));
        }
        if params.instance.is_empty() || params.instance.contains('\0') {
            return Err(refuse(
                ResourceErrorKind::Args,
                format!(
                    "instance name {:?} is empty or holds a NUL",
                    params.instance
                ),
            ));
        }
        for (key, value) in &params.params {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(refuse(
                    ResourceErrorKind::Args,
                    format!(
                        "parameter name {key:?} is not made of letters, digits and underscores"
                    ),
                ));
            }
            if value.contains('\0') {
                return Err(refuse(
                    ResourceErrorKind::Args,
                    format!("parameter {key} holds a NUL"),
                ));
            }
        }
        if params.prefix.first().is_some_and(String::is_empty) {
            return Err(refuse(
                ResourceErrorKind::Args,
                "prefix starts with an empty program name".to_owned(),
            ));
        }
        let resource_type = file_name(params.agent.file_name());
        let provider = file_name(params.agent.parent().and_then(|p| p.file_name()));
        Ok(Self {
            name,
            params,
            resource_type,
            provider,
        })
    }

    /// Runs the agent once with `action` and returns what it did, killing its process group
    /// by `deadline`. Exit codes are not interpreted; a timeout or a failed spawn is an error.
    pub async fn run(&self, action: &str, deadline: Instant) -> Result<OcfRun, ResourceError> {
        self.run_capped(action, process::OUTPUT_TAIL, deadline)
            .await
    }

    /// Reads and parses the agent's `meta-data`.
    pub async fn meta_data(&self, deadline: Instant) -> Result<OcfMetadata, ResourceError> {
        let run = self.run_capped("meta-data", METADATA_MAX, deadline).await?;
        if run.code != Some(0) {
            return Err(self.failed("meta-data", &run));
        }
        if run.stdout.len() >= METADATA_MAX {
            return Err(self.error(
                ResourceErrorKind::Failed,
                "meta-data",
                format!("meta-data is larger than {METADATA_MAX} bytes"),
            ));
        }
        parse_metadata(&run.stdout).map_err(|e| {
            self.error(
                ResourceErrorKind::Failed,
                "meta-data",
                format!("cannot read the agent's meta-data: {e}"),
            )
        })
    }

    /// Runs `validate-all`: `Ok` when the agent accepts its parameters on this node.
    pub async fn validate(&self, deadline: Instant) -> Result<(), ResourceError> {
        let run = self.run("validate-all", deadline).await?;
        if run.code == Some(0) {
            Ok(())
        } else {
            Err(self.failed("validate-all", &run))
        }
    }

    /// The agent's parameters as given.
    pub fn params(&self) -> &OcfParams {
        &self.params
    }

    async fn run_capped(
        &self,
        action: &str,
        stdout_limit: usize,
        deadline: Instant,
    ) -> Result<OcfRun, ResourceError> {
        let spec = self.spec(action, stdout_limit, deadline);
        match process::run(&spec, deadline).await {
            Ok(done) => {
                tracing::debug!(resource = %self.name, action, code = ?done.code,
                    elapsed_ms = done.elapsed.as_millis(), "OCF agent finished");
                Ok(OcfRun {
                    code: done.code,
                    signal: done.signal,
                    stdout: done.stdout.text,
                    stderr: done.stderr.text,
                    elapsed: done.elapsed,
                })
            }
            Err(RunError::Spawn(e)) => Err(self.logged(self.error(
                ResourceErrorKind::Spawn,
                action,
                format!("cannot run {}: {e}", spec.program.to_string_lossy()),
            ))),
            Err(RunError::Wait(e)) => Err(self.logged(self.error(
                ResourceErrorKind::Spawn,
                action,
                format!("cannot wait for {}: {e}", self.params.agent.display()),
            ))),
            Err(RunError::Timeout { stdout, stderr }) => {
                Err(self.logged(self.timed_out(action, &stdout, &stderr)))
            }
        }
    }

    fn spec(&self, action: &str, stdout_limit: usize, deadline: Instant) -> Spec {
        let left_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), AGENT_PATH.into()),
            ("OCF_ROOT".into(), self.params.ocf_root.clone().into()),
            ("OCF_RA_VERSION_MAJOR".into(), "1".into()),
            ("OCF_RA_VERSION_MINOR".into(), "1".into()),
            (
                "OCF_RESOURCE_INSTANCE".into(),
                self.params.instance.clone().into(),
            ),
            (
                "OCF_RESOURCE_TYPE".into(),
                self.resource_type.clone().into(),
            ),
            ("OCF_RESOURCE_PROVIDER".into(), self.provider.clone().into()),
        ];
        env.extend(
            self.params
                .params
                .iter()
                .map(|(k, v)| (format!("OCF_RESKEY_{k}").into(), v.into())),
        );
        // Last, so a parameter of the same name cannot hide the real time left.
        env.push((
            "OCF_RESKEY_CRM_meta_timeout".into(),
            left_ms.to_string().into(),
        ));
        let mut argv: Vec<OsString> = self.params.prefix.iter().map(OsString::from).collect();
        argv.push(self.params.agent.clone().into());
        argv.push(action.into());
        let program = argv.remove(0);
        Spec {
            program,
            args: argv,
            env,
            stdout_limit,
        }
    }

    async fn monitor_state(&self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        let run = self.run("monitor", deadline).await?;
        match run.code {
            Some(OCF_SUCCESS) => Ok(ResourceState::Running),
            Some(OCF_NOT_RUNNING) => Ok(ResourceState::Stopped),
            _ => Err(self.failed("monitor", &run)),
        }
    }

    async fn start_checked(&self, deadline: Instant) -> Result<(), ResourceError> {
        let run = self.run("start", deadline).await?;
        if run.code != Some(OCF_SUCCESS) {
            return Err(self.failed("start", &run));
        }
        match self.monitor_state(deadline).await {
            Ok(ResourceState::Running) => {
                tracing::info!(resource = %self.name, elapsed_ms = run.elapsed.as_millis(),
                    "OCF resource started");
                Ok(())
            }
            Ok(ResourceState::Stopped) => Err(self.logged(self.error(
                ResourceErrorKind::Failed,
                "start",
                format!(
                    "started but monitor reports not running (start returned 0{})",
                    with_output(&run.stdout, &run.stderr)
                ),
            ))),
            Err(e) => Err(self.logged(ResourceError {
                action: "start".to_owned(),
                message: format!(
                    "start returned 0 but the monitor after it failed: {}",
                    e.message
                ),
                ..e
            })),
        }
    }

    async fn stop_checked(&self, deadline: Instant) -> Result<(), ResourceError> {
        let run = self.run("stop", deadline).await?;
        match run.code {
            Some(OCF_SUCCESS) => {
                tracing::info!(resource = %self.name, elapsed_ms = run.elapsed.as_millis(),
                    "OCF resource stopped");
                Ok(())
            }
            // OCF requires 0 from stopping a stopped resource; 7 says the same thing, but only
            // a monitor that agrees makes it a confirmed stop.
            Some(OCF_NOT_RUNNING) => match self.monitor_state(deadline).await {
                Ok(ResourceState::Stopped) => {
                    tracing::warn!(resource = %self.name,
                        "OCF agent returned 7 from stop (OCF wants 0); monitor confirms stopped");
                    Ok(())
                }
                Ok(ResourceState::Running) => Err(self.logged(self.error(
                    ResourceErrorKind::Failed,
                    "stop",
                    format!(
                        "stop returned 7 (not running) but monitor reports running{}",
                        with_output(&run.stdout, &run.stderr)
                    ),
                ))),
                Err(e) => Err(self.logged(ResourceError {
                    action: "stop".to_owned(),
                    message: format!(
                        "stop returned 7 (not running) and the monitor after it failed: {}",
                        e.message
                    ),
                    ..e
                })),
            },
            _ => Err(self.failed("stop", &run)),
        }
    }

    fn failed(&self, action: &str, run: &OcfRun) -> ResourceError {
        let (kind, what) = match (run.code, run.signal) {
            (Some(code), _) => exit_meaning(code),
            (None, signal) => (
                ResourceErrorKind::Failed,
                format!("killed by signal {}", signal.unwrap_or(0)),
            ),
        };
        let head = match run.code {
            Some(code) => format!("{action} returned {code} ({what})"),
            None => format!("{action} was {what}"),
        };
        let reason = exit_reason(&run.stderr)
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        self.logged(self.error(
            kind,
            action,
            format!("{head}{reason}{}", with_output(&run.stdout, &run.stderr)),
        ))
    }

    fn timed_out(&self, action: &str, stdout: &Captured, stderr: &Captured) -> ResourceError {
        let output = process::output_text(stdout, stderr);
        let output = if output.is_empty() {
            String::new()
        } else {
            format!("; output:\n{output}")
        };
        self.error(
            ResourceErrorKind::Timeout,
            action,
            format!(
                "{} {action} did not finish before the deadline; its process group was killed{output}",
                self.params.agent.display()
            ),
        )
    }

    fn error(&self, kind: ResourceErrorKind, action: &str, message: String) -> ResourceError {
        ResourceError::new(kind, &self.name, action, message)
    }

    fn logged(&self, e: ResourceError) -> ResourceError {
        tracing::warn!(resource = %self.name, action = %e.action, kind = ?e.kind,
            message = %e.message, "OCF action failed");
        e
    }
}

impl Resource for OcfResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, deadline: Instant) -> ResourceFuture<'_, ()> {
        Box::pin(async move { self.start_checked(deadline).await })
    }

    fn stop(&mut self, deadline: Instant) -> ResourceFuture<'_, ()> {
        Box::pin(async move { self.stop_checked(deadline).await })
    }

    fn monitor(&mut self, deadline: Instant) -> ResourceFuture<'_, ResourceState> {
        Box::pin(async move { self.monitor_state(deadline).await })
    }
}

/// The advised timeout of `action` in `meta`: the entry without a role, else the first one.
pub fn action_timeout(meta: &OcfMetadata, action: &str) -> Option<Duration> {
    let mut entries = meta.actions.iter().filter(|a| a.name == action);
    let first = entries.clone().next()?;
    entries.find(|a| a.role.is_none()).unwrap_or(first).timeout
}

/// Parses an agent's `meta-data` XML.
pub fn parse_metadata(xml: &str) -> Result<OcfMetadata, MetadataError> {
    let root = xml::parse(xml)?;
    if root.name != "resource-agent" {
        return Err(MetadataError::NotResourceAgent(root.name));
    }
    let name = root
        .attr("name")
        .ok_or(MetadataError::MissingAttribute {
            element: "resource-agent",
            attribute: "name",
        })?
        .to_owned();
    let version = root
        .child("version")
        .map(|v| v.text().trim().to_owned())
        .filter(|v| !v.is_empty());
    let mut parameters = Vec::new();
    for p in root
        .child("parameters")
        .into_iter()
        .flat_map(|ps| ps.children_named("parameter"))
    {
        let content = p.child("content");
        parameters.push(OcfParameter {
            name: p
                .attr("name")
                .ok_or(MetadataError::MissingAttribute {
                    element: "parameter",
                    attribute: "name",
                })?
                .to_owned(),
            required: p.attr("required").is_some_and(truthy),
            unique: p.attr("unique").is_some_and(truthy),
            content_type: content.and_then(|c| c.attr("type")).map(str::to_owned),
            default: content.and_then(|c| c.attr("default")).map(str::to_owned),
            shortdesc: description(p, "shortdesc"),
        });
    }
    let mut actions = Vec::new();
    for a in root
        .child("actions")
        .into_iter()
        .flat_map(|acts| acts.children_named("action"))
    {
        let name = a
            .attr("name")
            .ok_or(MetadataError::MissingAttribute {
                element: "action",
                attribute: "name",
            })?
            .to_owned();
        let bad = |attribute: &'static str, value: &str| MetadataError::BadValue {
            action: name.clone(),
            attribute,
            value: value.to_owned(),
        };
        let duration = |attribute: &'static str| {
            a.attr(attribute)
                .map(|v| parse_duration(v).ok_or_else(|| bad(attribute, v)))
                .transpose()
        };
        let timeout = duration("timeout")?;
        let interval = duration("interval")?;
        let depth = a
            .attr("depth")
            .map(|v| v.trim().parse::<u32>().map_err(|_| bad("depth", v)))
            .transpose()?;
        actions.push(OcfAction {
            timeout,
            interval,
            depth,
            role: a.attr("role").map(str::to_owned),
            name,
        });
    }
    Ok(OcfMetadata {
        name,
        version,
        shortdesc: description(&root, "shortdesc"),
        parameters,
        actions,
    })
}

/// Parses a Pacemaker-style duration: a whole number with an optional unit (`us`/`usec`,
/// `ms`/`msec`, `s`/`sec` — the default —, `m`/`min`, `h`/`hr`), e.g. `20s`, `20`, `2m`,
/// `1min`, `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let seconds = |factor: u64| number.checked_mul(factor).map(Duration::from_secs);
    match unit.as_str() {
        "" | "s" | "sec" | "secs" => Some(Duration::from_secs(number)),
        "ms" | "msec" | "msecs" => Some(Duration::from_millis(number)),
        "us" | "usec" | "usecs" => Some(Duration::from_micros(number)),
        "m" | "min" | "mins" => seconds(60),
        "h" | "hr" | "hrs" => seconds(3600),
        _ => None,
    }
}

/// Search path for agents: the system directories only, so nothing from the agent's caller
/// (a user's `~/bin`) can stand in for `ip`, `mount` or `pg_ctl`.
const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Most bytes of `meta-data` read; the largest shipped agents write about 30 KB.
const METADATA_MAX: usize = 1024 * 1024;

/// OCF_SUCCESS: done, or running.
const OCF_SUCCESS: i32 = 0;
/// OCF_NOT_RUNNING: cleanly stopped.
const OCF_NOT_RUNNING: i32 = 7;

/// The kind and OCF name of an agent's exit code (for any action; 0 and 7 are successes only
/// where the caller says so).
fn exit_meaning(code: i32) -> (ResourceErrorKind, String) {
    use ResourceErrorKind as K;
    let (kind, name) = match code {
        0 => (K::Failed, "OCF_SUCCESS, unexpected here"),
        1 => (K::Failed, "OCF_ERR_GENERIC"),
        2 => (K::Args, "OCF_ERR_ARGS"),
        3 => (K::Unimplemented, "OCF_ERR_UNIMPLEMENTED"),
        4 => (K::Permission, "OCF_ERR_PERM"),
        5 => (K::NotInstalled, "OCF_ERR_INSTALLED"),
        6 => (K::NotConfigured, "OCF_ERR_CONFIGURED"),
        7 => (K::NotRunning, "OCF_NOT_RUNNING"),
        8 => (
            K::Failed,
            "OCF_RUNNING_PROMOTED: running in the promoted role, which watchkeeper does not \
             manage",
        ),
        9 => (
            K::Failed,
            "OCF_FAILED_PROMOTED: failed in the promoted role, which watchkeeper does not manage",
        ),
        _ => (K::Failed, "not an OCF exit code"),
    };
    (kind, name.to_owned())
}

/// The agent's last `ocf-exit-reason:` line (written by `ocf_exit_reason`), if any.
fn exit_reason(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("ocf-exit-reason:"))
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// `"; output:\n…"` with the run's output tail, or nothing when it wrote nothing.
fn with_output(stdout: &str, stderr: &str) -> String {
    let captured = |text: &str| Captured {
        text: text.to_owned(),
        total: text.len(),
        truncated: false,
    };
    let output = process::output_text(&captured(stdout), &captured(stderr));
    if output.is_empty() {
        String::new()
    } else {
        format!("; output:\n{output}")
    }
}

fn file_name(name: Option<&std::ffi::OsStr>) -> String {
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The `<shortdesc>`/`<longdesc>` child, English where several are given, whitespace collapsed.
fn description(element: &xml::Element, which: &str) -> Option<String> {
    let mut all = element.children_named(which);
    let first = all.clone().next()?;
    let chosen = all
        .find(|d| d.attr("lang").is_some_and(|l| l.starts_with("en")))
        .unwrap_or(first);
    let text = chosen
        .text()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}

/// A small XML reader for agent meta-data: elements, attributes, text, character and the five
/// predefined entity references, CDATA; the prolog, comments, processing instructions and the
/// DOCTYPE are skipped. No namespaces, no external entities (so nothing is ever fetched).
mod xml {
    use super::MetadataError;

    /// An element with its attributes and children.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Element {
        pub(super) name: String,
        pub(super) attrs: Vec<(String, String)>,
        pub(super) children: Vec<Node>,
    }

    /// A child of an element.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Node {
        Element(Element),
        Text(String),
    }

    impl Element {
        pub(super) fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        pub(super) fn children_named<'a>(
            &'a self,
            name: &'a str,
        ) -> impl Iterator<Item = &'a Element> + Clone + 'a {
            self.children.iter().filter_map(move |c| match c {
                Node::Element(e) if e.name == name => Some(e),
                _ => None,
            })
        }

        pub(super) fn child(&self, name: &str) -> Option<&Element> {
            self.children.iter().find_map(|c| match c {
                Node::Element(e) if e.name == name => Some(e),
                _ => None,
            })
        }

        /// The element's own text (not its descendants').
        pub(super) fn text(&self) -> String {
            self.children
                .iter()
                .filter_map(|c| match c {
                    Node::Text(t) => Some(t.as_str()),
                    Node::Element(_) => None,
                })
                .collect()
        }
    }

    /// Parses a whole document and returns its root element.
    pub(super) fn parse(input: &str) -> Result<Element, MetadataError> {
        let mut p = Parser { s: input, pos: 0 };
        p.skip_misc()?;
        if !p.rest().starts_with('<') {
            return Err(p.error("expected the root element"));
        }
        let root = p.element(0)?;
        p.skip_misc()?;
        if p.pos != p.s.len() {
            return Err(p.error("content after the root element"));
        }
        Ok(root)
    }

    /// Deepest nesting accepted; meta-data nests four levels.
    const MAX_DEPTH: usize = 32;

    struct Parser<'a> {
        s: &'a str,
        pos: usize,
    }

    impl<'a> Parser<'a> {
        fn rest(&self) -> &'a str {
            &self.s[self.pos..]
        }

        fn error(&self, reason: &'static str) -> MetadataError {
            MetadataError::Xml {
                offset: self.pos,
                reason,
            }
        }

        fn skip_ws(&mut self) {
            let rest = self.rest();
            self.pos += rest.len() - rest.trim_start().len();
        }

        /// Moves past the next `end`, or fails with `reason`.
        fn skip_past(&mut self, end: &str, reason: &'static str) -> Result<&'a str, MetadataError> {
            let rest = self.rest();
            let at = rest.find(end).ok_or_else(|| self.error(reason))?;
            self.pos += at + end.len();
            Ok(&rest[..at])
        }

        /// Skips whitespace, comments, processing instructions and a DOCTYPE.
        fn skip_misc(&mut self) -> Result<(), MetadataError> {
            loop {
                self.skip_ws();
                let rest = self.rest();
                if rest.starts_with("<?") {
                    self.skip_past("?>", "unterminated processing instruction")?;
                } else if rest.starts_with("<!--") {
                    self.skip_past("-->", "unterminated comment")?;
                } else if rest.starts_with("<!DOCTYPE") {
                    self.skip_doctype()?;
                } else {
                    return Ok(());
                }
            }
        }

        fn skip_doctype(&mut self) -> Result<(), MetadataError> {
            let mut brackets = 0usize;
            let mut quote = None;
            for (i, c) in self.rest().char_indices() {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(c),
                    (None, '[') => brackets += 1,
                    (None, ']') => brackets = brackets.saturating_sub(1),
                    (None, '>') if brackets == 0 => {
                        self.pos += i + 1;
                        return Ok(());
                    }
                    _ => {}
                }
            }
            Err(self.error("unterminated DOCTYPE"))
        }

        fn name(&mut self) -> Result<&'a str, MetadataError> {
            let rest = self.rest();
            let len = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<'))
                .unwrap_or(rest.len());
            if len == 0 {
                return Err(self.error("expected a name"));
            }
            self.pos += len;
            Ok(&rest[..len])
        }

        /// Parses the element starting at `<`.
        fn element(&mut self, depth: usize) -> Result<Element, MetadataError> {
            if depth > MAX_DEPTH {
                return Err(self.error("elements nested too deeply"));
            }
            self.pos += 1;
            let name = self.name()?.to_owned();
            let mut attrs = Vec::new();
            loop {
                self.skip_ws();
                let rest = self.rest();
                if rest.starts_with("/>") {
                    self.pos += 2;
                    return Ok(Element {
                        name,
                        attrs,
                        children: Vec::new(),
                    });
                }
                if rest.starts_with('>') {
                    self.pos += 1;
                    break;
                }
                if rest.is_empty() {
                    return Err(self.error("unterminated start tag"));
                }
                let key = self.name()?.to_owned();
                self.skip_ws();
                if !self.rest().starts_with('=') {
                    return Err(self.error("expected '=' after an attribute name"));
                }
                self.pos += 1;
                self.skip_ws();
                let quote = match self.rest().chars().next() {
                    Some(q @ ('"' | '\'')) => q,
                    _ => return Err(self.error("expected a quoted attribute value")),
                };
                self.pos += 1;
                let start = self.pos;
                let raw = self.skip_past(
                    if quote == '"' { "\"" } else { "'" },
                    "unterminated attribute value",
                )?;
                if raw.contains('<') {
                    self.pos = start;
                    return Err(self.error("'<' in an attribute value"));
                }
                let value = decode(raw).map_err(|reason| MetadataError::Xml {
                    offset: start,
                    reason,
                })?;
                attrs.push((key, value));
            }
            let mut children = Vec::new();
            loop {
                let rest = self.rest();
                if rest.is_empty() {
                    return Err(self.error("unclosed element"));
                }
                if rest.starts_with("</") {
                    self.pos += 2;
                    let end = self.name()?;
                    if end != name {
                        return Err(self.error("end tag does not match the start tag"));
                    }
                    self.skip_ws();
                    if !self.rest().starts_with('>') {
                        return Err(self.error("expected '>' closing the end tag"));
                    }
                    self.pos += 1;
                    return Ok(Element {
                        name,
                        attrs,
                        children,
                    });
                }
                if rest.starts_with("<!--") {
                    self.skip_past("-->", "unterminated comment")?;
                } else if rest.starts_with("<![CDATA[") {
                    self.pos += "<![CDATA[".len();
                    let text = self.skip_past("]]>", "unterminated CDATA section")?;
                    children.push(Node::Text(text.to_owned()));
                } else if rest.starts_with("<?") {
                    self.skip_past("?>", "unterminated processing instruction")?;
                } else if rest.starts_with('<') {
                    children.push(Node::Element(self.element(depth + 1)?));
                } else {
                    let start = self.pos;
                    let len = rest.find('<').unwrap_or(rest.len());
                    self.pos += len;
                    let text = decode(&rest[..len]).map_err(|reason| MetadataError::Xml {
                        offset: start,
                        reason,
                    })?;
                    children.push(Node::Text(text));
                }
            }
        }
    }

    /// Replaces entity and character references.
    fn decode(raw: &str) -> Result<String, &'static str> {
        if !raw.contains('&') {
            return Ok(raw.to_owned());
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let end = rest.find(';').ok_or("unterminated entity reference")?;
            let entity = &rest[..end];
            rest = &rest[end + 1..];
            let c = match entity {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let code = if let Some(hex) = entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = entity.strip_prefix('#') {
                        dec.parse().ok()
                    } else {
                        return Err("unknown entity reference");
                    };
                    code.and_then(char::from_u32)
                        .ok_or("invalid character reference")?
                }
            };
            out.push(c);
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Dummy meta-data` from resource-agents 4.16 (Debian), verbatim.
    const DUMMY_META_DATA: &str = r#"<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="Dummy" version="1.0">
<version>1.0</version>

<longdesc lang="en">
This is a Dummy Resource Agent. It does absolutely nothing except 
keep track of whether its running or not.
Its purpose in life is for testing and to serve as a template for RA writers.

NB: Please pay attention to the timeouts specified in the actions
section below. They should be meaningful for the kind of resource
the agent manages. They should be the minimum advised timeouts,
but they shouldn't/cannot cover _all_ possible resource
instances. So, try to be neither overly generous nor too stingy,
but moderate. The minimum timeouts should never be below 10 seconds.
</longdesc>
<shortdesc lang="en">Example stateless resource agent</shortdesc>

<parameters>
<parameter name="state" unique="1">
<longdesc lang="en">
Location to store the resource state in.
</longdesc>
<shortdesc lang="en">State file</shortdesc>
<content type="string" default="/run/resource-agents/Dummy-RESOURCE_ID.state" />
</parameter>

<parameter name="fake" unique="0">
<longdesc lang="en">
Fake attribute that can be changed to cause a reload
</longdesc>
<shortdesc lang="en">Fake attribute that can be changed to cause a reload</shortdesc>
<content type="string" default="dummy" />
</parameter>

</parameters>

<actions>
<action name="start"        timeout="20s" />
<action name="stop"         timeout="20s" />
<action name="monitor"      timeout="20s" interval="10s" depth="0" />
<action name="reload"       timeout="20s" />
<action name="migrate_to"   timeout="20s" />
<action name="migrate_from" timeout="20s" />
<action name="meta-data"    timeout="5s" />
<action name="validate-all"   timeout="20s" />
</actions>
</resource-agent>
"#;

    #[test]
    fn dummy_meta_data_is_read_completely() {
        let meta = parse_metadata(DUMMY_META_DATA).expect("Dummy meta-data parses");
        assert_eq!(meta.name, "Dummy");
        assert_eq!(meta.version.as_deref(), Some("1.0"));
        assert_eq!(
            meta.shortdesc.as_deref(),
            Some("Example stateless resource agent")
        );
        assert_eq!(
            meta.parameters,
            vec![
                OcfParameter {
                    name: "state".into(),
                    required: false,
                    unique: true,
                    content_type: Some("string".into()),
                    default: Some("/run/resource-agents/Dummy-RESOURCE_ID.state".into()),
                    shortdesc: Some("State file".into()),
                },
                OcfParameter {
                    name: "fake".into(),
                    required: false,
                    unique: false,
                    content_type: Some("string".into()),
                    default: Some("dummy".into()),
                    shortdesc: Some("Fake attribute that can be changed to cause a reload".into()),
                },
            ]
        );
        let names: Vec<&str> = meta.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "start",
                "stop",
                "monitor",
                "reload",
                "migrate_to",
                "migrate_from",
                "meta-data",
                "validate-all"
            ]
        );
        assert_eq!(
            meta.actions[2],
            OcfAction {
                name: "monitor".into(),
                timeout: Some(Duration::from_secs(20)),
                interval: Some(Duration::from_secs(10)),
                depth: Some(0),
                role: None,
            }
        );
        assert_eq!(
            action_timeout(&meta, "start"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            action_timeout(&meta, "meta-data"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(action_timeout(&meta, "promote"), None);
    }

    #[test]
    fn role_entries_do_not_shadow_the_plain_action() {
        let xml = r#"<resource-agent name="x"><actions>
            <action name="monitor" timeout="10s" interval="9s" role="Promoted"/>
            <action name="monitor" timeout="30s" interval="30s"/>
            <action name="promote" timeout="2min" role="Promoted"/>
            </actions></resource-agent>"#;
        let meta = parse_metadata(xml).expect("parses");
        assert_eq!(
            action_timeout(&meta, "monitor"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            action_timeout(&meta, "promote"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(meta.actions[0].role.as_deref(), Some("Promoted"));
    }

    #[test]
    fn durations_follow_pacemaker_units() {
        let cases = [
            ("20s", Some(Duration::from_secs(20))),
            ("20", Some(Duration::from_secs(20))),
            (" 20 ", Some(Duration::from_secs(20))),
            ("2m", Some(Duration::from_secs(120))),
            ("1min", Some(Duration::from_secs(60))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1hr", Some(Duration::from_secs(3600))),
            ("500ms", Some(Duration::from_millis(500))),
            ("250msec", Some(Duration::from_millis(250))),
            ("7us", Some(Duration::from_micros(7))),
            ("30sec", Some(Duration::from_secs(30))),
            ("20S", Some(Duration::from_secs(20))),
            ("", None),
            ("s", None),
            ("-5s", None),
            ("1.5s", None),
            ("20 days", None),
            ("99999999999999999999s", None),
            ("18446744073709551615h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn entities_cdata_comments_and_other_languages_are_handled() {
        let xml = "<?xml version='1.0'?>\n<!-- generated -->\n\
            <!DOCTYPE resource-agent [ <!ENTITY x \"y>\"> ]>\n\
            <resource-agent name='a&amp;b'>\n\
            <shortdesc lang='de'>Beispiel</shortdesc>\n\
            <shortdesc lang='en'>Example &lt;one&gt; &#65;&#x42;</shortdesc>\n\
            <parameters><!-- none yet --><parameter name='p' required='1'>\
            <shortdesc><![CDATA[a <raw> text]]></shortdesc><content type='integer'/>\
            </parameter></parameters>\n\
            </resource-agent>\n<!-- trailer -->\n";
        let meta = parse_metadata(xml).expect("parses");
        assert_eq!(meta.name, "a&b");
        assert_eq!(meta.shortdesc.as_deref(), Some("Example <one> AB"));
        assert!(meta.parameters[0].required);
        assert_eq!(
            meta.parameters[0].shortdesc.as_deref(),
            Some("a <raw> text")
        );
        assert_eq!(meta.parameters[0].content_type.as_deref(), Some("integer"));
        assert_eq!(meta.parameters[0].default, None);
        assert!(meta.actions.is_empty());
    }

    #[test]
    fn malformed_meta_data_is_an_error_not_a_panic() {
        let bad = [
            "",
            "not xml",
            "<resource-agent name='x'>",
            "<resource-agent name='x'></resource>",
            "<resource-agent name='x'/><second/>",
            "<resource-agent name=x/>",
            "<resource-agent name='x' attr/>",
            "<resource-agent name='x'>&nbsp;</resource-agent>",
            "<resource-agent name='x'>&#xD800;</resource-agent>",
            "<resource-agent name='x'><![CDATA[</resource-agent>",
            "<resource-agent name='x'><!-- </resource-agent>",
            "<!DOCTYPE x [ <resource-agent name='x'/>",
            "<resource-agent name='é",
        ];
        for text in bad {
            assert!(
                matches!(parse_metadata(text), Err(MetadataError::Xml { .. })),
                "{text:?}: {:?}",
                parse_metadata(text)
            );
        }
        assert_eq!(
            parse_metadata("<agent/>"),
            Err(MetadataError::NotResourceAgent("agent".into()))
        );
        assert_eq!(
            parse_metadata("<resource-agent/>"),
            Err(MetadataError::MissingAttribute {
                element: "resource-agent",
                attribute: "name"
            })
        );
        assert!(matches!(
            parse_metadata(
                "<resource-agent name='x'><actions><action name='start' timeout='soon'/>\
                 </actions></resource-agent>"
            ),
            Err(MetadataError::BadValue {
                attribute: "timeout",
                ..
            })
        ));
        let deep = format!(
            "<resource-agent name='x'>{}{}</resource-agent>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(matches!(
            parse_metadata(&deep),
            Err(MetadataError::Xml { .. })
        ));
    }

    #[test]
    fn exit_codes_map_to_kinds() {
        use ResourceErrorKind as K;
        let kinds: Vec<K> = (1..=10).map(|c| exit_meaning(c).0).collect();
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
                K::Failed,
                K::Failed,
                K::Failed
            ]
        );
        assert!(exit_meaning(8).1.contains("promoted"));
        assert!(exit_meaning(9).1.contains("promoted"));
        assert_eq!(exit_meaning(5).1, "OCF_ERR_INSTALLED");
    }

    fn resource(dir: &std::path::Path) -> OcfResource {
        use std::os::unix::fs::PermissionsExt as _;
        let agent = dir.join("provider").join("Fake");
        std::fs::create_dir_all(dir.join("provider")).expect("mkdir");
        std::fs::write(&agent, "#!/bin/sh\nexit 0\n").expect("write agent");
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        OcfResource::new(
            "r1",
            OcfParams {
                agent,
                ocf_root: dir.to_owned(),
                instance: "r1".into(),
                params: BTreeMap::new(),
                prefix: Vec::new(),
            },
        )
        .expect("valid")
    }

    fn run_with(code: Option<i32>, stderr: &str) -> OcfRun {
        OcfRun {
            code,
            signal: code.is_none().then_some(9),
            stdout: String::new(),
            stderr: stderr.into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn failures_carry_kind_reason_and_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resource(dir.path());
        assert_eq!(r.resource_type, "Fake");
        assert_eq!(r.provider, "provider");
        let e = r.failed(
            "start",
            &run_with(
                Some(6),
                "Fake(r1)[12]: ERROR: no config\nocf-exit-reason:Please set OCF_RESKEY_x\n",
            ),
        );
        assert_eq!(e.kind, ResourceErrorKind::NotConfigured);
        assert_eq!(e.action, "start");
        assert!(
            e.message
                .starts_with("start returned 6 (OCF_ERR_CONFIGURED): Please set OCF_RESKEY_x"),
            "{}",
            e.message
        );
        assert!(e.message.contains("ERROR: no config"), "{}", e.message);
        let e = r.failed("monitor", &run_with(Some(8), ""));
        assert_eq!(e.kind, ResourceErrorKind::Failed);
        assert!(e.message.contains("promoted"), "{}", e.message);
        let e = r.failed("stop", &run_with(None, ""));
        assert_eq!(e.kind, ResourceErrorKind::Failed);
        assert_eq!(e.message, "stop was killed by signal 9");
    }

    #[test]
    fn bad_configuration_is_refused_up_front() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = resource(dir.path()).params.clone();
        let check = |params: OcfParams, kind| {
            let e = OcfResource::new("r1", params).expect_err("refused");
            assert_eq!(e.kind, kind, "{e}");
        };
        check(
            OcfParams {
                agent: dir.path().join("missing"),
                ..good.clone()
            },
            ResourceErrorKind::NotInstalled,
        );
        check(
            OcfParams {
                instance: String::new(),
                ..good.clone()
            },
            ResourceErrorKind::Args,
        );
        check(
            OcfParams {
                params: BTreeMap::from([("bad-name".to_owned(), "v".to_owned())]),
                ..good.clone()
            },
            ResourceErrorKind::Args,
        );
        check(
            OcfParams {
                ocf_root: dir.path().join("nowhere"),
                ..good
            },
            ResourceErrorKind::NotInstalled,
        );
    }
}
