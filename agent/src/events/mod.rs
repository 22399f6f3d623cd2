//! What the agent decided and who must hear about it: the decision journal and the alerts.
//!
//! The engine's decisions are only useful after the fact if someone can read why they were
//! taken, so every decision (an input that made the engine do more than send heartbeats and
//! feed its watchdog) becomes one JSON line in a local journal: wall time, node, epoch, the
//! input that caused it, what the engine concluded and the actions it asked for. `watchkeeper
//! history` reads it back. Failovers, fence attempts, fence device health changes, watchdog
//! resets, link changes and split-brain suspicions also go to the configured `[[alert]]`
//! recipients: hooks, an SMTP relay, webhooks.
//!
//! # Contract
//!
//! The main loop never waits here. [`Reporter`] puts records in bounded queues with
//! `try_send`: the journal has one writer thread, each alert recipient its own task, and a
//! full queue drops the record, counts it and logs it. A recipient that hangs is abandoned at
//! its timeout (a hook is killed and reaped) and delays only its own later alerts.

pub mod deliver;
pub mod describe;
pub mod history;
pub mod journal;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{AlertConfig, Config, Node};

pub use journal::{Entry, JournalError, JournalWriter};

/// One part of a journal line: what it is (`kind`), a sentence (`text`), and any fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Machine-readable kind, e.g. `peer_down`, `fence`, `start`.
    pub kind: String,
    /// The sentence `history` prints.
    pub text: String,
    /// Further fields (target, level, epoch, ...), an object or null.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub fields: Value,
}

impl Part {
    /// A part without fields.
    pub fn new(kind: &str, text: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            text: text.into(),
            fields: Value::Null,
        }
    }

    /// This part with `fields`.
    pub fn with(mut self, fields: Value) -> Self {
        self.fields = fields;
        self
    }
}

/// An alert as recipients get it (JSON on a hook's stdin, a webhook's body, a mail's body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// One of [`crate::config::ALERT_EVENT_KINDS`].
    pub kind: String,
    /// Wall time, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Wall time in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Cluster name.
    pub cluster: String,
    /// The node that raised it.
    pub node: String,
    /// Per-agent-run counter, so a recipient can tell a lost alert from a reordered one.
    pub sequence: u64,
    /// The node or device it is about, if any.
    pub target: Option<String>,
    /// Ownership epoch at the time.
    pub epoch: u64,
    /// `off`, `failed`, `timed_out`, `up`, `down`, `healthy`, `failing`, ... when it applies.
    pub outcome: Option<String>,
    /// How long the thing reported took, when it applies (a fence attempt).
    pub duration_ms: Option<u64>,
    /// One sentence for people.
    pub message: String,
    /// Further fields, an object or null.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// What the runtime says about an alert; [`Reporter::alert`] stamps time, node and sequence.
#[derive(Debug, Clone, Default)]
pub struct AlertBody {
    /// Kind, see [`Alert::kind`].
    pub kind: &'static str,
    /// See [`Alert::target`].
    pub target: Option<String>,
    /// See [`Alert::outcome`].
    pub outcome: Option<String>,
    /// See [`Alert::duration_ms`].
    pub duration_ms: Option<u64>,
    /// See [`Alert::message`].
    pub message: String,
    /// See [`Alert::details`].
    pub details: Value,
}

/// What the reporter did so far, for status and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Alerts raised (before any recipient's filter).
    pub alerts_raised: AtomicU64,
    /// Journal lines dropped because the writer's queue was full or gone.
    pub journal_dropped: AtomicU64,
    /// Alerts dropped because a recipient's queue was full or gone.
    pub alerts_dropped: AtomicU64,
    /// Journal lines written.
    pub journal_written: AtomicU64,
    /// Alerts delivered.
    pub alerts_delivered: AtomicU64,
    /// Alert deliveries that failed or timed out.
    pub alerts_failed: AtomicU64,
}

/// The cheap, cloneable handle the runtime and its tasks report through; never blocks.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    cluster: String,
    journal: Option<mpsc::Sender<Entry>>,
    sinks: Vec<(AlertConfig, mpsc::Sender<Arc<Alert>>)>,
    sequence: AtomicU64,
    epoch: AtomicU64,
    counters: Arc<Counters>,
}

/// The writer thread and delivery tasks, to be awaited at shutdown.
pub struct Workers {
    journal: Option<std::thread::JoinHandle<()>>,
    sinks: tokio::task::JoinSet<()>,
}

impl Reporter {
    /// Starts the journal writer for node `me` and one delivery task per `[[alert]]`. Must be
    /// called inside a tokio runtime. A journal that cannot be opened is logged and left out:
    /// the agent's safety does not depend on its diary.
    pub fn start(config: &Config, me: &Node) -> (Self, Workers) {
        let counters = Arc::new(Counters::default());
        let path = config.journal.path_for(&me.name, &me.state_dir);
        let (journal, journal_thread) = match JournalWriter::open(
            &path,
            config.journal.max_size,
            config.journal.keep,
        ) {
            Ok(writer) => {
                let (tx, rx) = mpsc::channel(JOURNAL_QUEUE);
                let c = counters.clone();
                match std::thread::Builder::new()
                    .name("wk-journal".to_owned())
                    .spawn(move || journal::run(writer, rx, &c))
                {
                    Ok(h) => (Some(tx), Some(h)),
                    Err(e) => {
                        tracing::error!(event = "journal_unavailable", error = %e, "cannot start the journal writer: decisions are only logged");
                        (None, None)
                    }
                }
            }
            Err(e) => {
                tracing::error!(event = "journal_unavailable", journal = %path.display(), error = %e, "{e}: decisions are only logged");
                (None, None)
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut sinks = Vec::new();
        for a in &config.alerts {
            let (tx, rx) = mpsc::channel(ALERT_QUEUE);
            match deliver::Sink::new(a, &me.name) {
                Ok(sink) => {
                    tasks.spawn(deliver::run(sink, rx, counters.clone()));
                    sinks.push((a.clone(), tx));
                }
                Err(e) => {
                    tracing::error!(event = "alert_unavailable", alert = %a.name, error = %e, "alert {} cannot be used: {e}", a.name);
                }
            }
        }
        let reporter = Self {
            inner: Arc::new(Inner {
                node: me.name.clone(),
                cluster: config.cluster.name.clone(),
                journal,
                sinks,
                sequence: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                counters,
            }),
        };
        (
            reporter,
            Workers {
                journal: journal_thread,
                sinks: tasks,
            },
        )
    }

    /// A reporter that records nothing (unit tests of other parts).
    pub fn disabled(node: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                cluster: String::new(),
                journal: None,
                sinks: Vec::new(),
                sequence: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                counters: Arc::default(),
            }),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Remembers the ownership epoch that later alerts from tasks carry.
    pub fn set_epoch(&self, epoch: u64) {
        self.inner.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Appends a line to the journal. A decision (a line with events or actions) is also
    /// logged, which under systemd gives the journald fields `WATCHKEEPER_EVENT=decision`,
    /// `WATCHKEEPER_EPOCH`, `WATCHKEEPER_CAUSE`; observations (links, peers) are logged where
    /// they are made.
    pub fn journal(&self, epoch: u64, cause: Part, events: Vec<Part>, actions: Vec<Part>) {
        self.set_epoch(epoch);
        let (unix_ms, time) = now_wall();
        let entry = Entry {
            time,
            unix_ms,
            node: self.inner.node.clone(),
            epoch,
            cause,
            events,
            actions,
        };
        if !entry.events.is_empty() || !entry.actions.is_empty() {
            tracing::info!(
                event = "decision",
                epoch,
                cause = %entry.cause.kind,
                "{}",
                history::line_text(&entry)
            );
        }
        let Some(tx) = &self.inner.journal else {
            return;
        };
        if let Err(e) = tx.try_send(entry) {
            let n = self
                .inner
                .counters
                .journal_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            tracing::error!(
                event = "journal_dropped",
                dropped = n,
                "journal line dropped ({e}): the writer is behind"
            );
        }
    }

    /// Sends an alert to every recipient that wants its kind.
    pub fn alert(&self, body: AlertBody) {
        let (unix_ms, time) = now_wall();
        self.inner
            .counters
            .alerts_raised
            .fetch_add(1, Ordering::Relaxed);
        let alert = Arc::new(Alert {
            kind: body.kind.to_owned(),
            time,
            unix_ms,
            cluster: self.inner.cluster.clone(),
            node: self.inner.node.clone(),
            sequence: self.inner.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            target: body.target,
            epoch: self.inner.epoch.load(Ordering::Relaxed),
            outcome: body.outcome,
            duration_ms: body.duration_ms,
            message: body.message,
            details: body.details,
        });
        tracing::warn!(
            event = "alert",
            alert = %alert.kind,
            target = alert.target.as_deref().unwrap_or("-"),
            outcome = alert.outcome.as_deref().unwrap_or("-"),
            epoch = alert.epoch,
            "{}",
            alert.message
        );
        for (config, tx) in &self.inner.sinks {
            if !config.wants(&alert.kind) {
                continue;
            }
            if let Err(e) = tx.try_send(alert.clone()) {
                let n = self
                    .inner
                    .counters
                    .alerts_dropped
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                tracing::error!(event = "alert_dropped", alert = %config.name, dropped = n, "alert for {} dropped ({e}): the recipient is behind", config.name);
            }
        }
    }
}

impl Workers {
    /// No workers (a disabled [`Reporter`]).
    pub fn none() -> Self {
        Self {
            journal: None,
            sinks: tokio::task::JoinSet::new(),
        }
    }

    /// Waits, at most `grace`, for queued lines and alerts to be written and delivered. Every
    /// [`Reporter`] clone must be dropped first, or this waits the whole grace.
    pub async fn finish(mut self, grace: Duration) {
        let journal = self.journal.take();
        let all = async move {
            while self.sinks.join_next().await.is_some() {}
            if let Some(h) = journal {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("journal or alert deliveries still running at shutdown: abandoned");
        }
    }
}

/// Now as (milliseconds since the Unix epoch, RFC 3339 UTC with milliseconds).
pub fn now_wall() -> (u64, String) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    (ms, rfc3339(ms))
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(unix_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `unix_ms` in UTC as (year, month, day, hour, minute, second, millisecond).
pub(crate) fn civil(unix_ms: u64) -> (i64, u64, u64, u64, u64, u64, u64) {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u64::try_from(m).unwrap_or(0),
        u64::try_from(d).unwrap_or(0),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms,
    )
}

/// Journal lines waiting for the writer. Decisions come in bursts of a few per failover; 1024
/// absorbs a storm (a flapping link) while the disk is slow, and beyond it dropping (counted,
/// logged) is better than holding the main loop.
const JOURNAL_QUEUE: usize = 1024;
/// Alerts waiting for one recipient. A recipient that is down takes its full timeout per alert;
/// 64 covers a bad hour of a flapping link at the default timeout without unbounded memory.
const ALERT_QUEUE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertKind;

    fn hook_config(dir: &std::path::Path, body: &str, timeout: Duration) -> AlertConfig {
        let path = dir.join("hook.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("hook");
        let mut perms = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
        AlertConfig {
            name: "h".to_owned(),
            kind: AlertKind::Hook {
                command: vec![path.display().to_string(), dir.display().to_string()],
            },
            timeout,
            events: Vec::new(),
        }
    }

    fn alert(kind: &str) -> Alert {
        Alert {
            kind: kind.to_owned(),
            time: rfc3339(0),
            unix_ms: 0,
            cluster: "c".to_owned(),
            node: "beta".to_owned(),
            sequence: 7,
            target: Some("alpha".to_owned()),
            epoch: 3,
            outcome: Some("off".to_owned()),
            duration_ms: Some(310),
            message: "fenced alpha".to_owned(),
            details: Value::Null,
        }
    }

    #[tokio::test]
    async fn a_hook_gets_the_alert_on_stdin_and_in_its_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = hook_config(
            dir.path(),
            "cat > \"$1/in.json\"; env | grep ^WATCHKEEPER_EVENT_ > \"$1/env\"",
            Duration::from_secs(5),
        );
        let sink = deliver::Sink::new(&c, "beta").expect("sink");
        sink.deliver(&alert("fence")).await.expect("delivered");
        let got: Alert = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("in.json")).expect("stdin"),
        )
        .expect("json");
        assert_eq!(got, alert("fence"));
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env");
        for var in [
            "WATCHKEEPER_EVENT_KIND=fence",
            "WATCHKEEPER_EVENT_TARGET=alpha",
            "WATCHKEEPER_EVENT_EPOCH=3",
            "WATCHKEEPER_EVENT_OUTCOME=off",
            "WATCHKEEPER_EVENT_DURATION_MS=310",
            "WATCHKEEPER_EVENT_SEQUENCE=7",
        ] {
            assert!(env.lines().any(|l| l == var), "{var} missing in {env}");
        }
    }

    #[tokio::test]
    async fn a_failing_hook_is_an_error_with_its_status_and_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = hook_config(
            dir.path(),
            "echo 'pager down' >&2; exit 3",
            Duration::from_secs(5),
        );
        let sink = deliver::Sink::new(&c, "beta").expect("sink");
        let e = sink.deliver(&alert("fence")).await.expect_err("exit 3");
        let text = e.to_string();
        assert!(
            text.contains("exit status: 3") && text.contains("pager down"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_hanging_hook_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The shell waits for a child: both must go, the child by its process group.
        let c = hook_config(
            dir.path(),
            "sleep 30 & echo $! > \"$1/child\"; echo $$ > \"$1/shell\"; wait",
            Duration::from_millis(300),
        );
        let sink = deliver::Sink::new(&c, "beta").expect("sink");
        let t = std::time::Instant::now();
        let e = sink.deliver(&alert("fence")).await.expect_err("hangs");
        assert!(
            e.to_string().contains("no answer within 300 ms; killed"),
            "{e}"
        );
        eprintln!("hung hook returned after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        for who in ["shell", "child"] {
            let pid = std::fs::read_to_string(dir.path().join(who)).expect("pid");
            let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
            // The shell is reaped by the sink; the orphaned child by init, so allow a moment.
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while proc.exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            assert!(
                !proc.exists() || state.contains(") Z"),
                "{who} still runs: {state}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::load_for_simulation(&{
            let p = dir.path().join("wk.toml");
            std::fs::write(
                &p,
                "[cluster]\nname = \"t\"\nkey_file = \"k\"\n[[link]]\nname = \"l\"\nkind = \"udp\"\n\
                 [[node]]\nid = 1\nname = \"a\"\nlinks.l = { address = \"127.0.0.1:1\" }\n\
                 [[node]]\nid = 2\nname = \"b\"\nlinks.l = { address = \"127.0.0.1:2\" }\n",
            )
            .expect("config");
            p
        })
        .expect("config");
        config.alerts = vec![hook_config(dir.path(), "sleep 30", Duration::from_secs(1))];
        config.journal.path = Some(dir.path().join("journal.jsonl"));
        let node = config.nodes[0].clone();
        let (reporter, workers) = Reporter::start(&config, &node);
        let t = std::time::Instant::now();
        let n = u64::try_from(ALERT_QUEUE).expect("small") + 10;
        for _ in 0..n {
            reporter.alert(AlertBody {
                kind: "link",
                message: "x".to_owned(),
                ..AlertBody::default()
            });
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // One is being delivered (hanging), ALERT_QUEUE wait, the rest are dropped.
        let dropped = reporter.counters().alerts_dropped.load(Ordering::Relaxed);
        assert!((9..=10).contains(&dropped), "{dropped} dropped");
        drop(reporter);
        // Shutdown is bounded even with a queue of hanging deliveries.
        let t = std::time::Instant::now();
        workers.finish(Duration::from_millis(300)).await;
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn wall_times_format_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789 UTC.
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(1_795_917_600_001), "2026-11-29T02:00:00.001Z");
    }
}
