//! Carrying out the engine's actions with the real drivers.
//!
//! The engine decides; this module does what it says and reports back: heartbeats go out on
//! every link, a fencing level runs all its devices at once and counts only if every one
//! confirms the target off, resource actions run with their deadlines, the ownership record is
//! on disk before the engine hears `Persisted`, and the watchdog is fed only when the engine
//! asks. Anything slow runs in its own task and answers through a bounded channel as an
//! [`Input`], so the main loop never waits on a device.
//!
//! A device or resource is used by one task at a time (a `tokio::sync::Mutex` each); no lock
//! is ever held by the main loop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use drivers::fence::FenceDevice;
use drivers::resource::{Resource, ResourceError, ResourceState};
use proto::NodeId;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use crate::config::{Config, ResourceConfig};
use crate::engine::{Action, Durable, FenceOutcome, Input, ResourceOutcome};
use crate::fence::ledger::{self, Entry};

/// A fence device shared by the tasks that use it.
pub(crate) type SharedDevice = Arc<Mutex<Box<dyn FenceDevice>>>;

/// One resource of the group and what is known about it.
pub(crate) struct Slot {
    /// Name and timeouts.
    pub(crate) config: ResourceConfig,
    /// The executor; `None` when it could not be built (every action then fails with why).
    pub(crate) executor: Option<Arc<Mutex<Box<dyn Resource>>>>,
    /// Why it could not be built.
    pub(crate) build_error: Option<String>,
    /// Start, stop and monitor deadlines after defaults.
    pub(crate) timeouts: Timeouts,
    /// Whether the engine has it started (monitors run only then).
    pub(crate) running: Arc<AtomicBool>,
    /// What happened last, for `watchkeeper resources`.
    pub(crate) last: Arc<StdMutex<SlotReport>>,
    /// When the next monitor is due.
    pub(crate) next_monitor: Option<Instant>,
    /// The holder and epoch the local copy last followed successfully, and when the last
    /// attempt was (resources with a standby role only).
    pub(crate) followed: Arc<StdMutex<FollowState>>,
}

/// Progress of a standby-role resource following the holder.
#[derive(Debug, Clone, Default)]
pub(crate) struct FollowState {
    /// (holder, epoch) last followed successfully.
    pub(crate) done: Option<(NodeId, u64)>,
    /// Last attempt, successful or not.
    pub(crate) last_attempt: Option<Instant>,
    /// An attempt is running.
    pub(crate) running: bool,
    /// The resource has no standby role: never ask again.
    pub(crate) unsupported: bool,
    /// Failed attempts in a row (the pause before the next one grows with them).
    pub(crate) failures: u32,
    /// The executor's follow interrupt ([`Resource::follow_interrupt`]), once known.
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
}

/// Pause before following the holder again after a first failed attempt; it doubles with each
/// further failure, up to [`FOLLOW_RETRY_MAX`]. A follow that failed because it raced the
/// holder's own start (its primary not yet promoted) succeeds on the next try, seconds later,
/// so the standby is protected again quickly; one that keeps failing (a wrong password, a
/// copy that cannot fit) is not retried in a tight loop.
const FOLLOW_RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest pause between two attempts to follow the holder.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(60);
/// Bound on one attempt (a re-clone copies the whole Catalog).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(3600);

/// Deadlines of one resource's actions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) start: Duration,
    pub(crate) stop: Duration,
    pub(crate) monitor: Duration,
}

/// The last action and monitor of a resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotReport {
    /// `starting`, `running`, `stopping`, `stopped`, `start failed`, `stop failed`.
    pub(crate) state: String,
    /// Last action and how long it took.
    pub(crate) last_action: Option<(String, Duration, Instant)>,
    /// Last monitor: when and its outcome in words.
    pub(crate) last_monitor: Option<(Instant, String)>,
    /// Last error, if any.
    pub(crate) last_error: Option<String>,
}

/// Carries out actions; owns the tasks it spawned.
pub(crate) struct Driver {
    pub(crate) config: Arc<Config>,
    pub(crate) local: NodeId,
    pub(crate) state_dir: PathBuf,
    pub(crate) results: mpsc::Sender<Input>,
    pub(crate) devices: BTreeMap<String, SharedDevice>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) tasks: JoinSet<()>,
    /// Resource actions in flight (start/stop): a clean stop waits for them.
    pub(crate) resource_actions: Arc<std::sync::atomic::AtomicUsize>,
    /// What the background checks found about each fence device.
    pub(crate) health: BTreeMap<String, Arc<StdMutex<DeviceHealth>>>,
    /// The ownership record writer's queue, started with the first record.
    pub(crate) persist_tx: Option<mpsc::Sender<Durable>>,
    /// Histograms of fencing durations (`[http]`'s `/metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// The engine's recent events, for the status page.
    pub(crate) recent: Arc<crate::recent::RecentEvents>,
    /// Where fence device health changes are reported as alerts.
    pub(crate) reporter: crate::events::Reporter,
}

/// Ownership records waiting to be written: the engine has at most a few in flight.
const PERSIST_QUEUE: usize = 16;
/// First pause before writing a record again after a failure; it doubles up to the maximum.
const PERSIST_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between attempts: a freed disk is used within this.
const PERSIST_RETRY_MAX: Duration = Duration::from_secs(1);
/// A record that keeps failing is reported again this often.
const PERSIST_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The pause before the next follow after `failures` failed attempts in a row.
fn follow_pause(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    FOLLOW_RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(FOLLOW_RETRY_MAX)
}

/// Writes each record in turn, retrying a failed write until it succeeds, then tells the
/// engine; ends when the driver drops its sender or the engine's input is closed.
async fn persist_worker(
    dir: PathBuf,
    mut rx: mpsc::Receiver<Durable>,
    results: mpsc::Sender<Input>,
) {
    while let Some(durable) = rx.recv().await {
        let began = Instant::now();
        let mut pause = PERSIST_RETRY_FIRST;
        let mut reported: Option<Instant> = None;
        loop {
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || super::durable::save(&d, &durable)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    if reported.is_none_or(|t| t.elapsed() >= PERSIST_REPORT_EVERY) {
                        tracing::error!(event = "persist_failed", epoch = durable.epoch, error = %e,
                            "cannot persist epoch {}: {e}; nothing is announced or taken over until it is written (retrying)", durable.epoch);
                        reported = Some(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::error!(event = "persist_failed", error = %e, "persist task failed (retrying)");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PERSIST_RETRY_MAX);
        }
        if reported.is_some() {
            tracing::warn!(
                event = "persist_recovered",
                epoch = durable.epoch,
                "epoch {} persisted after {} ms of failed writes",
                durable.epoch,
                began.elapsed().as_millis()
            );
        }
        if results.send(Input::Persisted(durable)).await.is_err() {
            return;
        }
    }
}

/// The last background check of a fence device.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceHealth {
    /// `Some(true)` healthy, `Some(false)` failing, `None` not checked yet.
    pub(crate) healthy: Option<bool>,
    /// When it was last checked.
    pub(crate) checked: Option<Instant>,
    /// How long the check took.
    pub(crate) took: Option<Duration>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// When the next check is due.
    pub(crate) next: Option<Instant>,
}

impl Driver {
    fn node_name(&self, id: NodeId) -> String {
        self.config
            .node(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    }

    /// An engine event in words for the status page: its debug form with node ids replaced
    /// by node names (`FenceStarted { target: beta, level: 0 }`).
    fn describe(&self, e: &crate::engine::Event) -> String {
        let mut text = format!("{e:?}");
        for n in &self.config.nodes {
            text = text.replace(&format!("NodeId({})", n.id.get()), &n.name);
        }
        text
    }

    /// Runs a fencing level: every device of the level switches `target` off at once; the
    /// level succeeds only if every one confirms.
    pub(crate) fn fence(&mut self, target: NodeId, level: usize) {
        let name = self.node_name(target);
        let names: Vec<String> = self
            .config
            .fencing
            .levels
            .get(&name)
            .and_then(|l| l.get(level))
            .cloned()
            .unwrap_or_default();
        let level_timeout = self.config.failover.fence_timeout;
        let devices: Vec<(String, Option<SharedDevice>, Duration)> = names
            .iter()
            .map(|d| {
                let timeout = self
                    .config
                    .fencing
                    .device(d)
                    .map_or(level_timeout, |c| c.timeout.min(level_timeout));
                (d.clone(), self.devices.get(d).cloned(), timeout)
            })
            .collect();
        let types: BTreeMap<String, &'static str> = names
            .iter()
            .filter_map(|d| {
                self.config
                    .fencing
                    .device(d)
                    .map(|c| (d.clone(), c.kind.type_word()))
            })
            .collect();
        let ledger_path = ledger::path(&self.state_dir);
        let results = self.results.clone();
        let metrics = self.metrics.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            let mut runs = JoinSet::new();
            for (device, shared, timeout) in devices {
                let target = name.clone();
                runs.spawn(async move {
                    let t = Instant::now();
                    let outcome = match shared {
                        None => Err(format!("fence device {device} could not be built")),
                        Some(shared) => {
                            let deadline = tokio::time::Instant::now() + timeout;
                            let mut dev = shared.lock().await;
                            dev.off(&target, deadline).await.map_err(|e| e.to_string())
                        }
                    };
                    (device, outcome.map(|_| ()), t.elapsed())
                });
            }
            let mut failures = Vec::new();
            let mut n = 0;
            while let Some(joined) = runs.join_next().await {
                n += 1;
                let (device, outcome, took) = match joined {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("a fence task ended abnormally: {e}"));
                        continue;
                    }
                };
                let mut entry = Entry::now(
                    &device,
                    types.get(&device).copied().unwrap_or("?"),
                    &name,
                    "off",
                    &format!("the engine fences {name} (level {})", level + 1),
                );
                entry.by = "agent".to_owned();
                entry.ok = outcome.is_ok();
                entry.state = outcome.is_ok().then(|| "off".to_owned());
                entry.ms = took.as_secs_f64() * 1000.0;
                entry.error = outcome.as_ref().err().cloned();
                metrics.fence_device_done(&device, outcome.is_ok(), took);
                let path = ledger_path.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = ledger::append(&path, &entry) {
                        tracing::error!(ledger = %path.display(), error = %e, "cannot record the fence in the ledger");
                    }
                })
                .await;
                match outcome {
                    Ok(()) => tracing::info!(event = "fence_device_off", peer = %name, device = %device, ms = entry_ms(took), "{device} confirmed {name} off in {} ms", entry_ms(took)),
                    Err(e) => {
                        tracing::error!(event = "fence_device_failed", peer = %name, device = %device, error = %e, "{device} did not fence {name}: {e}");
                        failures.push(format!("{device}: {e}"));
                    }
                }
            }
            let outcome = if n == 0 {
                FenceOutcome::Failed(format!("level {} of {name} has no device", level + 1))
            } else if failures.is_empty() {
                FenceOutcome::Off
            } else {
                FenceOutcome::Failed(failures.join("; "))
            };
            metrics.fence_level_done(&name, level, matches!(outcome, FenceOutcome::Off), started.elapsed());
            tracing::info!(event = "fence_level_done", peer = %name, level = level + 1, ms = entry_ms(started.elapsed()), ok = matches!(outcome, FenceOutcome::Off), "fencing level {} of {name}: {outcome:?}", level + 1);
            let _ = results
                .send(Input::FenceResult {
                    target,
                    level,
                    outcome,
                })
                .await;
        });
    }

    /// Independent confirmation of a level: none is configured yet, so the level's own
    /// read-back stands.
    pub(crate) fn verify_off(&mut self, target: NodeId, level: usize) {
        let results = self.results.clone();
        self.tasks.spawn(async move {
            let _ = results
                .send(Input::VerifyResult {
                    target,
                    level,
                    off: true,
                })
                .await;
        });
    }

    /// The engine's unfence of a node it fenced. The runtime already lifts every fabric fence
    /// the ledger shows (the engine's and the operator's) when the node is heard again, on the
    /// same event, so this only records the decision.
    pub(crate) fn unfence(&mut self, target: NodeId) {
        let name = self.node_name(target);
        tracing::info!(event = "unfence_decided", peer = %name, "{name} rejoined: fabric fences on it are lifted by the rejoin path");
    }

    /// Writes the ownership record, then tells the engine.
    ///
    /// Records are written by one worker, in the order the engine asked for them, because the
    /// engine matches each `Persisted` against the oldest record it is waiting for. A write
    /// that fails (a full or read-only state directory) is retried until it succeeds: the
    /// engine announces, votes and takes over nothing while it waits, which is the safe
    /// stall, and it carries on by itself once the disk has room again.
    pub(crate) fn persist(&mut self, durable: Durable) {
        if self.persist_tx.as_ref().is_none_or(mpsc::Sender::is_closed) {
            let (tx, rx) = mpsc::channel(PERSIST_QUEUE);
            let dir = self.state_dir.clone();
            let results = self.results.clone();
            self.tasks.spawn(persist_worker(dir, rx, results));
            self.persist_tx = Some(tx);
        }
        if let Some(tx) = &self.persist_tx {
            if let Err(e) = tx.try_send(durable) {
                tracing::error!(
                    event = "persist_failed",
                    epoch = durable.epoch,
                    "ownership record queue: {e}"
                );
            }
        }
    }

    /// Starts or stops resource `index` and reports the outcome.
    pub(crate) fn resource_action(&mut self, index: usize, start: bool) {
        let Some(slot) = self.slots.get_mut(index) else {
            tracing::error!(index, "the engine named a resource that is not configured");
            return;
        };
        let name = slot.config.name.clone();
        let executor = slot.executor.clone();
        let build_error = slot.build_error.clone();
        let timeout = if start {
            slot.timeouts.start
        } else {
            slot.timeouts.stop
        };
        let running = slot.running.clone();
        let last = slot.last.clone();
        if !start {
            // No more monitors once a stop is asked for.
            running.store(false, Ordering::SeqCst);
        }
        slot.next_monitor = None;
        if let Ok(mut l) = last.lock() {
            l.state = if start { "starting" } else { "stopping" }.to_owned();
        }
        // A follow in flight gives way at its next wait rather than queue this action behind it.
        if let Ok(f) = slot.followed.lock() {
            if let (true, Some(flag)) = (f.running, &f.interrupt) {
                flag.store(true, Ordering::SeqCst);
                tracing::info!(resource = %slot.config.name, "{word_} asked while following the holder: the follow gives way", word_ = if start { "start" } else { "stop" });
            }
        }
        let results = self.results.clone();
        let in_flight = self.resource_actions.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let word = if start { "start" } else { "stop" };
        self.tasks.spawn(async move {
            let t = Instant::now();
            let outcome: Result<(), String> = match executor {
                None => Err(build_error.unwrap_or_else(|| "no executor".to_owned())),
                Some(exec) => {
                    let deadline = tokio::time::Instant::now() + timeout;
                    let mut r = exec.lock().await;
                    let result: Result<(), ResourceError> = if start {
                        r.start(deadline).await
                    } else {
                        r.stop(deadline).await
                    };
                    result.map_err(|e| e.to_string())
                }
            };
            let took = t.elapsed();
            let ok = outcome.is_ok();
            match &outcome {
                Ok(()) => tracing::info!(event = if start { "resource_started" } else { "resource_stopped" }, resource = %name, ms = entry_ms(took), "{word} {name}: ok in {} ms", entry_ms(took)),
                Err(e) => tracing::error!(event = if start { "resource_start_failed" } else { "resource_stop_failed" }, resource = %name, error = %e, "{word} {name} failed: {e}"),
            }
            if start && ok {
                running.store(true, Ordering::SeqCst);
            }
            if let Ok(mut l) = last.lock() {
                l.state = match (start, ok) {
                    (true, true) => "running",
                    (true, false) => "start failed",
                    (false, true) => "stopped",
                    (false, false) => "stop failed",
                }
                .to_owned();
                l.last_action = Some((word.to_owned(), took, Instant::now()));
                l.last_error = outcome.err();
            }
            let outcome = match (start, ok) {
                (true, true) => ResourceOutcome::Started,
                (true, false) => ResourceOutcome::StartFailed,
                (false, true) => ResourceOutcome::Stopped,
                (false, false) => ResourceOutcome::StopFailed,
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = results.send(Input::ResourceResult { index, outcome }).await;
        });
    }

    /// Runs the monitors that are due; a failure becomes `MonitorFailed`.
    pub(crate) fn monitors(&mut self, now: Instant) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if !slot.running.load(Ordering::SeqCst) {
                slot.next_monitor = None;
                continue;
            }
            let due = *slot
                .next_monitor
                .get_or_insert(now + slot.config.monitor_interval);
            if now < due {
                continue;
            }
            slot.next_monitor = Some(now + slot.config.monitor_interval);
            let Some(exec) = slot.executor.clone() else {
                continue;
            };
            let timeout = slot.timeouts.monitor;
            let running = slot.running.clone();
            let last = slot.last.clone();
            let results = self.results.clone();
            let name = slot.config.name.clone();
            self.tasks.spawn(async move {
                // A start or stop holds the executor: skip this round rather than queue.
                let Ok(mut r) = exec.try_lock() else { return };
                let deadline = tokio::time::Instant::now() + timeout;
                let found = r.monitor(deadline).await;
                drop(r);
                let words = match &found {
                    Ok(ResourceState::Running) => "running".to_owned(),
                    Ok(ResourceState::Stopped) => "not running".to_owned(),
                    Err(e) => e.to_string(),
                };
                if let Ok(mut l) = last.lock() {
                    l.last_monitor = Some((Instant::now(), words.clone()));
                }
                // Only a resource the engine still has started can fail its monitor.
                if !matches!(found, Ok(ResourceState::Running)) && running.load(Ordering::SeqCst)
                {
                    running.store(false, Ordering::SeqCst);
                    if let Ok(mut l) = last.lock() {
                        l.state = "failed".to_owned();
                        l.last_error = Some(words.clone());
                    }
                    tracing::error!(event = "resource_monitor_failed", resource = %name, reason = %words, "monitor of {name}: {words}");
                    let _ = results.send(Input::MonitorFailed { index }).await;
                }
            });
        }
    }

    /// The resource group as `watchkeeper resources` shows it.
    pub(crate) fn resources_report(&self, engine: &crate::engine::Engine) -> serde_json::Value {
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let resources: Vec<serde_json::Value> = self
            .slots
            .iter()
            .map(|s| {
                let last = s.last.lock().map(|l| l.clone()).unwrap_or_default();
                serde_json::json!({
                    "name": s.config.name,
                    "type": s.config.kind.type_word(),
                    "state": last.state,
                    "last_action": last.last_action.as_ref().map(|(a, took, at)| serde_json::json!({
                        "action": a,
                        "ms": ms(*took),
                        "ms_ago": ms(now.saturating_duration_since(*at)),
                    })),
                    "last_monitor": last.last_monitor.as_ref().map(|(at, words)| serde_json::json!({
                        "result": words,
                        "ms_ago": ms(now.saturating_duration_since(*at)),
                    })),
                    "last_error": last.last_error,
                    "timeouts_ms": {
                        "start": ms(s.timeouts.start),
                        "stop": ms(s.timeouts.stop),
                        "monitor": ms(s.timeouts.monitor),
                    },
                    "monitor_interval_ms": ms(s.config.monitor_interval),
                    "unbuildable": s.build_error,
                })
            })
            .collect();
        serde_json::json!({
            "node": self.config.node(self.local).map(|n| n.name.clone()),
            "holds": engine.holds_resources(),
            "epoch": engine.durable().epoch,
            "role": format!("{:?}", engine.role()),
            "resources": resources,
        })
    }

    /// Forgets the failures shown for each resource (after `watchkeeper cleanup`).
    pub(crate) fn clear_failures(&mut self) {
        for s in &self.slots {
            if let Ok(mut l) = s.last.lock() {
                l.last_error = None;
                if l.state.ends_with("failed") {
                    l.state = "stopped".to_owned();
                }
            }
        }
    }

    /// On a node that does not hold the group: makes resources with a standby role (the
    /// Catalog) follow `holder` at `epoch`, once per holder and epoch, retrying a failed
    /// attempt after a pause. Never while this node holds or is acquiring the group.
    pub(crate) fn follow(&mut self, holder: NodeId, epoch: u64, now: Instant) {
        let holder_name = self.node_name(holder);
        for slot in &self.slots {
            let Some(exec) = slot.executor.clone() else {
                continue;
            };
            let followed = slot.followed.clone();
            {
                let Ok(mut f) = followed.lock() else { continue };
                let pause = follow_pause(f.failures);
                if f.unsupported
                    || f.running
                    || f.done == Some((holder, epoch))
                    || f.last_attempt
                        .is_some_and(|t| now.saturating_duration_since(t) < pause)
                {
                    continue;
                }
                if f.interrupt.is_none() {
                    // The executor is free here (no follow runs), so this does not wait.
                    if let Ok(r) = exec.try_lock() {
                        f.interrupt = r.follow_interrupt();
                    }
                }
                if let Some(flag) = &f.interrupt {
                    flag.store(false, Ordering::SeqCst);
                }
                f.running = true;
                f.last_attempt = Some(now);
            }
            let name = slot.config.name.clone();
            let holder_name = holder_name.clone();
            self.tasks.spawn(async move {
                let deadline = tokio::time::Instant::now() + FOLLOW_TIMEOUT;
                let mut r = exec.lock().await;
                let outcome = match r.follow(deadline) {
                    None => None,
                    Some(fut) => Some(fut.await),
                };
                drop(r);
                let Ok(mut f) = followed.lock() else { return };
                f.running = false;
                match outcome {
                    None => f.unsupported = true,
                    Some(Ok(what)) => {
                        f.done = Some((holder, epoch));
                        f.failures = 0;
                        tracing::info!(event = "resource_following", resource = %name, holder = %holder_name, "{name} follows {holder_name}: {what}");
                    }
                    Some(Err(e)) => {
                        f.failures = f.failures.saturating_add(1);
                        let pause = follow_pause(f.failures);
                        tracing::error!(event = "resource_follow_failed", resource = %name, holder = %holder_name, error = %e, "{name} cannot follow {holder_name}: {e}; retrying in {} s", pause.as_secs());
                    }
                }
            });
        }
    }

    /// The earliest due monitor or device check.
    pub(crate) fn next_monitor(&self) -> Option<Instant> {
        let devices = self
            .health
            .values()
            .filter_map(|h| h.lock().ok().and_then(|h| h.next));
        self.slots
            .iter()
            .filter_map(|s| s.next_monitor)
            .chain(devices)
            .min()
    }

    /// Checks every fence device whose interval has passed (reachable, credentials accepted,
    /// targets known), without changing anything; a change of health is logged.
    pub(crate) fn check_devices(&mut self, now: Instant) {
        for d in &self.config.fencing.devices {
            let health = self
                .health
                .entry(d.name.clone())
                .or_insert_with(|| {
                    Arc::new(StdMutex::new(DeviceHealth {
                        // The first check runs at once, so a broken path shows at start.
                        next: Some(now),
                        ..DeviceHealth::default()
                    }))
                })
                .clone();
            {
                let Ok(mut h) = health.lock() else { continue };
                if h.next.is_some_and(|n| now < n) {
                    continue;
                }
                h.next = Some(now + d.monitor_interval);
            }
            let name = d.name.clone();
            let timeout = d.timeout;
            let reporter = self.reporter.clone();
            let Some(shared) = self.devices.get(&d.name).cloned() else {
                if let Ok(mut h) = health.lock() {
                    if h.healthy != Some(false) {
                        tracing::error!(event = "fence_device_health", device = %name, healthy = false, "fence device {name} cannot be built: fencing through it will fail");
                        reporter.alert(device_alert(
                            &name,
                            &d.targets,
                            false,
                            None,
                            "cannot be built: fencing through it will fail".to_owned(),
                        ));
                    }
                    h.healthy = Some(false);
                    h.checked = Some(now);
                    h.error =
                        Some("the driver could not be built (see the start-up log)".to_owned());
                }
                continue;
            };
            let targets = d.targets.clone();
            self.tasks.spawn(async move {
                // A fence in progress holds the device: skip this round rather than wait.
                let Ok(mut dev) = shared.try_lock() else { return };
                let t = Instant::now();
                let result = dev.monitor(tokio::time::Instant::now() + timeout).await;
                drop(dev);
                let took = t.elapsed();
                let Ok(mut h) = health.lock() else { return };
                let was = h.healthy;
                h.healthy = Some(result.is_ok());
                h.checked = Some(Instant::now());
                h.took = Some(took);
                h.error = result.as_ref().err().map(ToString::to_string);
                drop(h);
                match (&result, was) {
                    (Ok(()), Some(true)) => {}
                    (Ok(()), _) => {
                        tracing::info!(event = "fence_device_health", device = %name, healthy = true, ms = entry_ms(took), "fence device {name} healthy ({} ms)", entry_ms(took));
                        // The first good check at start is no news; a recovery is.
                        if was == Some(false) {
                            reporter.alert(device_alert(&name, &targets, true, Some(took), "passes its check again".to_owned()));
                        }
                    }
                    (Err(e), Some(false)) => tracing::debug!(device = %name, error = %e, "fence device still failing"),
                    (Err(e), _) => {
                        tracing::error!(event = "fence_device_health", device = %name, healthy = false, error = %e, "fence device {name} failing its check: {e}; fencing through it would fail");
                        reporter.alert(device_alert(&name, &targets, false, Some(took), format!("failing its check: {e}; fencing through it would fail")));
                    }
                }
            });
        }
    }

    /// The fence devices' health for the status report.
    pub(crate) fn device_report(&self) -> Vec<super::status::FenceDeviceStatus> {
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.config
            .fencing
            .devices
            .iter()
            .map(|d| {
                let h = self
                    .health
                    .get(&d.name)
                    .and_then(|h| h.lock().ok().map(|h| h.clone()))
                    .unwrap_or_default();
                super::status::FenceDeviceStatus {
                    name: d.name.clone(),
                    r#type: d.kind.type_word().to_owned(),
                    targets: d.targets.clone(),
                    healthy: h.healthy,
                    last_check_ms_ago: h.checked.map(|t| ms(now.saturating_duration_since(t))),
                    last_check_ms: h.took.map(ms),
                    error: h.error,
                }
            })
            .collect()
    }

    /// Reaps finished tasks.
    pub(crate) fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Carries out one action that does not need the links or the watchdog.
    pub(crate) fn execute(&mut self, action: Action) {
        match action {
            Action::Fence { target, level } => self.fence(target, level),
            Action::VerifyOff { target, level } => self.verify_off(target, level),
            Action::Unfence { target } => self.unfence(target),
            Action::StartResource { index } => self.resource_action(index, true),
            Action::StopResource { index } => self.resource_action(index, false),
            Action::Persist(d) => self.persist(d),
            // Alerts and decisions are journaled (runtime::journal); the status page keeps the
            // latest.
            Action::Alert(e) => self
                .recent
                .push(crate::recent::Severity::Alert, self.describe(&e)),
            Action::Log(e) => self
                .recent
                .push(crate::recent::Severity::Info, self.describe(&e)),
            // The caller handles these.
            Action::SendHeartbeat(_) | Action::FeedWatchdog | Action::StarveWatchdog { .. } => {}
        }
    }
}

/// The alert about a fence device's health changing.
fn device_alert(
    name: &str,
    targets: &[String],
    healthy: bool,
    took: Option<Duration>,
    what: String,
) -> crate::events::AlertBody {
    crate::events::AlertBody {
        kind: "fence_device",
        target: Some(name.to_owned()),
        outcome: Some(if healthy { "healthy" } else { "failing" }.to_owned()),
        duration_ms: took.map(super::ms),
        message: format!("fence device {name} {what}"),
        details: serde_json::json!({ "fences": targets }),
    }
}

fn entry_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ResourceKind, DEFAULT_MONITOR_INTERVAL};
    use drivers::resource::{ResourceErrorKind, ResourceFuture};
    use std::sync::atomic::AtomicU32;

    /// A resource with a standby role whose `follow` fails as long as `fail` is set.
    struct Follower {
        calls: Arc<AtomicU32>,
        fail: Arc<AtomicBool>,
    }

    impl Resource for Follower {
        fn name(&self) -> &str {
            "catalog"
        }
        fn start(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn stop(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn monitor(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ResourceState> {
            Box::pin(async { Ok(ResourceState::Stopped) })
        }
        fn follow(&mut self, _: tokio::time::Instant) -> Option<ResourceFuture<'_, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            Some(Box::pin(async move {
                if fail {
                    Err(ResourceError::new(
                        ResourceErrorKind::Failed,
                        "catalog",
                        "follow",
                        "primary unreachable",
                    ))
                } else {
                    Ok("rewound".to_owned())
                }
            }))
        }
    }

    fn driver(resource: Box<dyn Resource>) -> Driver {
        let text =
            "[cluster]\nname = \"t\"\nkey_file = \"k\"\n[[link]]\nname = \"l\"\nkind = \"udp\"\n\
                    [[node]]\nid = 1\nname = \"a\"\nlinks.l = { address = \"127.0.0.1:1\" }\n\
                    [[node]]\nid = 2\nname = \"b\"\nlinks.l = { address = \"127.0.0.1:2\" }\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wk.toml");
        std::fs::write(&path, text).expect("config");
        let config = crate::config::load_for_simulation(&path).expect("config");
        let (results, _rx) = mpsc::channel(8);
        Driver {
            config: Arc::new(config),
            local: NodeId::new(1).expect("id"),
            state_dir: std::env::temp_dir(),
            results,
            devices: BTreeMap::new(),
            slots: vec![Slot {
                config: ResourceConfig {
                    name: "catalog".to_owned(),
                    kind: ResourceKind::Systemd {
                        unit: "x".to_owned(),
                    },
                    start_timeout: None,
                    stop_timeout: None,
                    monitor_timeout: None,
                    monitor_interval: DEFAULT_MONITOR_INTERVAL,
                },
                executor: Some(Arc::new(Mutex::new(resource))),
                build_error: None,
                timeouts: Timeouts {
                    start: Duration::from_secs(1),
                    stop: Duration::from_secs(1),
                    monitor: Duration::from_secs(1),
                },
                running: Arc::new(AtomicBool::new(false)),
                last: Arc::default(),
                next_monitor: None,
                followed: Arc::default(),
            }],
            tasks: JoinSet::new(),
            resource_actions: Arc::default(),
            health: BTreeMap::new(),
            persist_tx: None,
            metrics: crate::metrics::Metrics::default(),
            recent: Arc::default(),
            reporter: crate::events::Reporter::disabled("a"),
        }
    }

    async fn settle(d: &mut Driver) {
        while d.tasks.join_next().await.is_some() {}
    }

    #[tokio::test]
    async fn a_standby_follows_each_holder_and_epoch_once_and_retries_failures_after_a_pause() {
        let calls = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(AtomicBool::new(true));
        let mut d = driver(Box::new(Follower {
            calls: calls.clone(),
            fail: fail.clone(),
        }));
        let b = NodeId::new(2).expect("id");
        let t0 = Instant::now();
        d.follow(b, 3, t0);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failed attempt is not repeated before the pause.
        d.follow(b, 3, t0 + Duration::from_secs(1));
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let t1 = t0 + FOLLOW_RETRY_FIRST;
        d.follow(b, 3, t1);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A second failure doubles the pause.
        d.follow(b, 3, t1 + FOLLOW_RETRY_FIRST);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        fail.store(false, Ordering::SeqCst);
        let t2 = t1 + FOLLOW_RETRY_FIRST * 2;
        d.follow(b, 3, t2);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Done for this holder and epoch: not asked again, even after the longest pause.
        d.follow(b, 3, t2 + FOLLOW_RETRY_MAX * 3);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A new epoch (the holder changed hands and came back) asks again at once.
        d.follow(b, 4, t2 + FOLLOW_RETRY_MAX * 3);
        settle(&mut d).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(follow_pause(1), FOLLOW_RETRY_FIRST);
        assert_eq!(follow_pause(40), FOLLOW_RETRY_MAX);
    }

    #[tokio::test]
    async fn resources_without_a_standby_role_are_asked_once() {
        struct Plain;
        impl Resource for Plain {
            fn name(&self) -> &str {
                "plain"
            }
            fn start(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ()> {
                Box::pin(async { Ok(()) })
            }
            fn stop(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ()> {
                Box::pin(async { Ok(()) })
            }
            fn monitor(&mut self, _: tokio::time::Instant) -> ResourceFuture<'_, ResourceState> {
                Box::pin(async { Ok(ResourceState::Stopped) })
            }
        }
        let mut d = driver(Box::new(Plain));
        let b = NodeId::new(2).expect("id");
        d.follow(b, 1, Instant::now());
        settle(&mut d).await;
        let unsupported = d.slots[0]
            .followed
            .lock()
            .map(|f| f.unsupported)
            .unwrap_or(false);
        assert!(unsupported);
    }
}
