//! Scripted scenarios for `watchkeeper simulate`: a cluster, timed faults, and the outcome
//! expected, in one TOML file. The simulator replays it and prints a timeline of what each node
//! saw, decided and did, then a verdict: the rules held and the expectations were met, or not.
//!
//! ```toml
//! name = "holder loses power"
//! nodes = ["alpha", "beta"]
//! duration = "20s"
//! [[fault]]
//! at = "5s"
//! crash = "alpha"
//! [expect]
//! holder = "beta"
//! evidence = "FenceConfirmed"
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::world::{node_id, DeviceMode, Fault, Sim, SimSpec};
use crate::config::parse_duration;
use crate::engine::{Command, EngineConfig};

/// Errors reading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Node names, witnesses last.
    pub names: Vec<String>,
    sim: SimSpec,
    faults: Vec<(Duration, Fault)>,
    duration: Duration,
    expect: Expect,
}

/// The result of running a scenario.
#[derive(Debug, Clone)]
pub struct Report {
    /// Timeline lines, node indices replaced by names.
    pub timeline: Vec<String>,
    /// Problems: a broken rule or an unmet expectation. Empty means the scenario passed.
    pub failures: Vec<String>,
    /// Who held the group at the end.
    pub holder: Option<String>,
    /// Takeovers seen.
    pub takeovers: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    witnesses: Vec<String>,
    /// A cluster configuration file (relative to the scenario) that gives the nodes, the
    /// witnesses, the timing, the failover budget, the watchdogs and the number of fencing
    /// levels; `[cluster]` then only adds what the file cannot say (device and resource
    /// times, latency).
    config: Option<String>,
    duration: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default, rename = "fault")]
    faults: Vec<RawFault>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    heartbeat_interval: Option<String>,
    deadtime: Option<String>,
    startup_timeout: Option<String>,
    fence_delay: Option<String>,
    fence_time: Option<String>,
    levels: Option<usize>,
    confirm_with: Option<bool>,
    watchdog: Option<String>,
    no_watchdog: Option<bool>,
    reboot_after_fence: Option<String>,
    latency: Option<String>,
    resources: Option<Vec<String>>,
    resource_time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    crash: Option<String>,
    power_on: Option<String>,
    freeze: Option<String>,
    #[serde(rename = "for")]
    duration: Option<String>,
    cut: Option<[String; 2]>,
    heal: Option<[String; 2]>,
    partition: Option<String>,
    heal_all: Option<bool>,
    device: Option<RawDevice>,
    fail_start: Option<(String, usize)>,
    fail_stop: Option<(String, usize)>,
    switchover: Option<[String; 2]>,
    standby: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    target: String,
    level: usize,
    mode: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    holder: Option<String>,
    takeovers: Option<u32>,
    max_takeovers: Option<u32>,
    min_takeovers: Option<u32>,
    evidence: Option<String>,
    alert: Option<String>,
    no_takeover_after: Option<String>,
    max_fences: Option<usize>,
    min_fences: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Expect {
    holder: Option<String>,
    takeovers: Option<u32>,
    max_takeovers: Option<u32>,
    min_takeovers: Option<u32>,
    evidence: Option<String>,
    alert: Option<String>,
    no_takeover_after: Option<Duration>,
    max_fences: Option<usize>,
    min_fences: Option<usize>,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    /// Parses scenario text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, ScenarioError> {
        let bad = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let _ = raw.description;
        let dur =
            |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ScenarioError> {
                match v {
                    None => Ok(default),
                    Some(s) => parse_duration(s).ok_or_else(|| {
                        bad(format!(
                            "{key}: {s:?} is not a duration such as \"500ms\" or \"2s\""
                        ))
                    }),
                }
            };
        let cluster = match &raw.config {
            None => None,
            Some(c) => {
                let file = Path::new(path).parent().unwrap_or(Path::new(".")).join(c);
                Some(
                    crate::config::load_for_simulation(&file)
                        .map_err(|e| bad(format!("config {c}: {e}")))?,
                )
            }
        };
        let (mut names, witness_names) = match &cluster {
            None => (raw.nodes.clone(), raw.witnesses.clone()),
            Some(cfg) => {
                let w = &cfg.failover.witnesses;
                (
                    cfg.nodes
                        .iter()
                        .filter(|n| !w.contains(&n.name))
                        .map(|n| n.name.clone())
                        .collect(),
                    w.clone(),
                )
            }
        };
        let witness_count = witness_names.len();
        names.extend(witness_names);
        if names.len() < 2 || names.len() > proto::MAX_NODES {
            return Err(bad(format!(
                "a scenario needs 2 to {} nodes",
                proto::MAX_NODES
            )));
        }
        let index = |name: &str| -> Result<usize, ScenarioError> {
            names.iter().position(|n| n == name).ok_or_else(|| {
                bad(format!(
                    "unknown node {name:?}; nodes: {}",
                    names.join(", ")
                ))
            })
        };
        let c = &raw.cluster;
        let ms = Duration::from_millis;
        let base = EngineConfig {
            me: node_id(0),
            nodes: Vec::new(),
            heartbeat_interval: dur("heartbeat_interval", &c.heartbeat_interval, ms(100))?,
            deadtime: dur("deadtime", &c.deadtime, ms(500))?,
            startup_timeout: dur("startup_timeout", &c.startup_timeout, ms(3000))?,
            fence_delay: dur("fence_delay", &c.fence_delay, ms(2000))?,
            fence_level_timeout: ms(2000),
            fence_retry: ms(1000),
            fence_retry_max: ms(8000),
            watchdog_margin: ms(500),
            stall_timeout: ms(1000),
            election_timeout: ms(1000),
            resources: c.resources.clone().unwrap_or_else(|| {
                [
                    "storage-mount",
                    "catalog",
                    "virtual-ip",
                    "bacula-sd",
                    "bacula-dir",
                ]
                .map(String::from)
                .to_vec()
            }),
            restart_limit: 1,
            failure_timeout: None,
        };
        let mut base = base;
        let mut from_file = None;
        if let Some(cfg) = &cluster {
            let e = cfg.engine_config(cfg.nodes[0].id, base.resources.clone());
            let levels = e.nodes.iter().map(|n| n.fencing.len()).max().unwrap_or(0);
            let voters: Vec<_> = e.nodes.iter().filter(|n| !n.witness).collect();
            let watchdog = voters
                .iter()
                .map(|n| n.watchdog_timeout)
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().min());
            base = EngineConfig {
                resources: base.resources,
                restart_limit: base.restart_limit,
                failure_timeout: base.failure_timeout,
                ..e
            };
            from_file = Some((levels, watchdog));
        }
        let latency = dur("latency", &c.latency, ms(2))?;
        let sim =
            SimSpec {
                names: names.clone(),
                witnesses: witness_count,
                base,
                levels: from_file.map_or(c.levels.unwrap_or(1), |f| f.0),
                confirm_level0: c.confirm_with.unwrap_or(false),
                watchdog: match from_file {
                    Some((_, wd)) => wd,
                    None if c.no_watchdog.unwrap_or(false) => None,
                    None => Some(dur("watchdog", &c.watchdog, ms(5000))?),
                },
                latency: (latency / 2, latency),
                loss_per_mille: 0,
                fence_time: dur("fence_time", &c.fence_time, ms(200))?,
                reboot_after_fence: match &c.reboot_after_fence {
                    None => None,
                    Some(s) => Some(parse_duration(s).ok_or_else(|| {
                        bad(format!("reboot_after_fence: {s:?} is not a duration"))
                    })?),
                },
                resource_time: dur("resource_time", &c.resource_time, ms(50))?,
                persist_time: ms(2),
                seed: raw.seed,
            };
        let mut faults = Vec::new();
        for (k, f) in raw.faults.iter().enumerate() {
            let at = dur(
                &format!("fault[{k}].at"),
                &Some(f.at.clone()),
                Duration::ZERO,
            )?;
            let mut push = |fault: Fault| faults.push((at, fault));
            if let Some(n) = &f.crash {
                push(Fault::Crash(index(n)?));
            }
            if let Some(n) = &f.power_on {
                push(Fault::PowerOn(index(n)?));
            }
            if let Some(n) = &f.freeze {
                let d = dur(&format!("fault[{k}].for"), &f.duration, ms(10_000))?;
                push(Fault::Freeze(index(n)?, d));
            }
            if let Some([a, b]) = &f.cut {
                push(Fault::Cut {
                    from: index(a)?,
                    to: index(b)?,
                });
            }
            if let Some([a, b]) = &f.heal {
                push(Fault::Heal {
                    from: index(a)?,
                    to: index(b)?,
                });
            }
            if let Some(n) = &f.partition {
                let i = index(n)?;
                for j in (0..names.len()).filter(|&j| j != i) {
                    push(Fault::Cut { from: i, to: j });
                    push(Fault::Cut { from: j, to: i });
                }
            }
            if f.heal_all == Some(true) {
                push(Fault::HealAll);
            }
            if let Some(d) = &f.device {
                let mode = match d.mode.as_str() {
                    "works" => DeviceMode::Works,
                    "fails" => DeviceMode::Fails,
                    "hangs" => DeviceMode::Hangs,
                    "lies" => DeviceMode::Lies,
                    other => {
                        return Err(bad(format!(
                            "fault[{k}].device.mode: {other:?} is not works, fails, hangs or lies"
                        )))
                    }
                };
                push(Fault::Device {
                    target: index(&d.target)?,
                    level: d.level,
                    mode,
                });
            }
            if let Some((n, r)) = &f.fail_start {
                push(Fault::FailStart(index(n)?, *r));
            }
            if let Some((n, r)) = &f.fail_stop {
                push(Fault::FailStop(index(n)?, *r));
            }
            if let Some([from, to]) = &f.switchover {
                push(Fault::Command(
                    index(from)?,
                    Command::Switchover(node_id(index(to)?)),
                ));
            }
            if let Some(n) = &f.standby {
                push(Fault::Command(index(n)?, Command::Standby));
            }
        }
        let e = &raw.expect;
        let expect = Expect {
            holder: e.holder.clone(),
            takeovers: e.takeovers,
            max_takeovers: e.max_takeovers,
            min_takeovers: e.min_takeovers,
            evidence: e.evidence.clone(),
            alert: e.alert.clone(),
            max_fences: e.max_fences,
            min_fences: e.min_fences,
            no_takeover_after: match &e.no_takeover_after {
                None => None,
                Some(s) => Some(parse_duration(s).ok_or_else(|| {
                    bad(format!("expect.no_takeover_after: {s:?} is not a duration"))
                })?),
            },
        };
        let duration = dur("duration", &Some(raw.duration.clone()), Duration::ZERO)?;
        Ok(Self {
            name: raw.name,
            names,
            sim,
            faults,
            duration,
            expect,
        })
    }

    /// Runs the scenario.
    pub fn run(&self) -> Report {
        let mut sim = Sim::new(self.sim.clone());
        for (at, f) in &self.faults {
            sim.schedule(*at, f.clone());
        }
        let result = sim.run_until(self.duration);
        let rename = |line: String| {
            let mut out = line;
            for (i, n) in self.names.iter().enumerate().rev() {
                out = out
                    .replace(&format!("n{i} "), &format!("{n} "))
                    .replace(&format!("NodeId({})", i + 1), n);
            }
            out
        };
        let timeline: Vec<String> = sim.trace().iter().map(|t| sim.render(t)).collect();
        let mut failures = Vec::new();
        if let Err(v) = &result {
            failures.push(format!(
                "rule {} broken: {}",
                v.rule,
                rename(v.message.clone())
            ));
        }
        let holder = sim
            .holder()
            .filter(|&i| sim.runs_all(i))
            .map(|i| self.names[i].clone());
        let e = &self.expect;
        if let Some(h) = &e.holder {
            let got = holder.clone().unwrap_or_else(|| "none".into());
            if &got != h {
                failures.push(format!(
                    "expected {h} to hold the group at the end, {got} does"
                ));
            }
        }
        let takeovers = sim.takeovers();
        if e.takeovers.is_some_and(|t| t != takeovers) {
            failures.push(format!(
                "expected {} takeovers, saw {takeovers}",
                e.takeovers.unwrap_or(0)
            ));
        }
        if e.max_takeovers.is_some_and(|t| takeovers > t) {
            failures.push(format!(
                "expected at most {} takeovers, saw {takeovers}",
                e.max_takeovers.unwrap_or(0)
            ));
        }
        if e.min_takeovers.is_some_and(|t| takeovers < t) {
            failures.push(format!(
                "expected at least {} takeovers, saw {takeovers}",
                e.min_takeovers.unwrap_or(0)
            ));
        }
        if let Some(ev) = &e.evidence {
            let last = timeline
                .iter()
                .rev()
                .find(|l| l.contains("TakeoverAllowed"));
            if !last.is_some_and(|l| l.contains(&format!("TakeoverAllowed({ev}"))) {
                failures.push(format!(
                    "expected the last takeover on {ev} evidence, saw {last:?}"
                ));
            }
        }
        if let Some(a) = &e.alert {
            if !timeline
                .iter()
                .any(|l| l.contains("ALERT") && l.contains(a.as_str()))
            {
                failures.push(format!("expected an alert {a}"));
            }
        }
        let fences = timeline
            .iter()
            .filter(|l| l.contains("FenceConfirmed {"))
            .count();
        if e.max_fences.is_some_and(|m| fences > m) {
            failures.push(format!(
                "expected at most {} confirmed fences, saw {fences}",
                e.max_fences.unwrap_or(0)
            ));
        }
        if e.min_fences.is_some_and(|m| fences < m) {
            failures.push(format!(
                "expected at least {} confirmed fences, saw {fences}",
                e.min_fences.unwrap_or(0)
            ));
        }
        if let Some(t) = e.no_takeover_after {
            let late: Vec<&String> = timeline
                .iter()
                .filter(|l| l.contains("TakeoverAllowed"))
                .filter(|l| {
                    l.trim_start()
                        .split('s')
                        .next()
                        .and_then(|x| x.parse::<f64>().ok())
                        .is_some_and(|x| x > t.as_secs_f64())
                })
                .collect();
            if !late.is_empty() {
                failures.push(format!(
                    "expected no takeover after {t:?}, saw {}",
                    late.len()
                ));
            }
        }
        Report {
            timeline,
            failures,
            holder,
            takeovers,
        }
    }
}
