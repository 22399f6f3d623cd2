//! `watchkeeper fence DEVICE ACTION`: one fence operation on a configured device, by hand.
//!
//! Operators use it to prove a fence path before it is needed and to switch a node by hand in
//! an emergency, with exactly the settings the agent would use. It prints the device's answer
//! and the time each step took (reading the configuration, building the driver, each power
//! operation), as text or as one JSON object. A reboot runs as off then on, so both halves are
//! confirmed and timed on their own.
//!
//! Exit codes: 0 done, 78 configuration error or unknown device/target, 69 device unreachable
//! or timed out, 1 any other failure (refused, unconfirmed, bad credentials).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use drivers::fence::{FenceError, FenceErrorKind, PowerState};
use serde::Serialize;

use crate::cli::{EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::config;

/// What to do with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FenceAction {
    /// Switch the target off and confirm it is off.
    Off,
    /// Switch the target on and confirm it is on.
    On,
    /// Off, confirmed, then on, confirmed.
    Reboot,
    /// Read the target's power state.
    Status,
    /// Check reachability, credentials and target without changing anything.
    Monitor,
}

/// The report `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct FenceReport {
    /// Device name.
    pub device: String,
    /// Device type (`ipmi`, `redfish`, `exec`, `modbus`, `snmp-pdu`, `ifmib`).
    pub r#type: String,
    /// Node acted on.
    pub target: String,
    /// Action asked for.
    pub action: String,
    /// Whether every step succeeded.
    pub ok: bool,
    /// Final power state (`on` / `off`), when known.
    pub state: Option<String>,
    /// Each step with its duration.
    pub steps: Vec<Step>,
    /// Total time in milliseconds.
    pub total_ms: f64,
    /// The failure, if any.
    pub error: Option<ErrorReport>,
}

/// One timed step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What was done.
    pub step: String,
    /// How long it took, in milliseconds.
    pub ms: f64,
    /// Power-state reads the device needed (operations that confirm a state).
    pub polls: Option<u32>,
    /// The step's outcome in words.
    pub result: String,
}

/// A failure.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// The driver's kind of failure.
    pub kind: String,
    /// Its message.
    pub message: String,
}

/// Runs `watchkeeper fence`; returns the exit code.
pub fn run(
    config_path: &Path,
    device: &str,
    action: FenceAction,
    target: Option<&str>,
    json: bool,
    reason: &str,
    node: Option<&str>,
) -> u8 {
    init_logging();
    let started = Instant::now();
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    let load_ms = ms(started.elapsed());
    let Some(dev) = config.fencing.device(device) else {
        let names: Vec<&str> = config
            .fencing
            .devices
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        eprintln!(
            "{}: no fence device {device}; configured: {}",
            config_path.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
        return EXIT_CONFIG;
    };
    let target = match (target, dev.targets.as_slice()) {
        (Some(t), _) => t.to_owned(),
        (None, [only]) => only.clone(),
        (None, all) => {
            eprintln!(
                "fence device {device} fences {}: name one with --target",
                all.join(", ")
            );
            return EXIT_CONFIG;
        }
    };
    let mut report = FenceReport {
        device: dev.name.clone(),
        r#type: super::type_word(dev).to_owned(),
        target: target.clone(),
        action: format!("{action:?}").to_lowercase(),
        ok: false,
        state: None,
        steps: vec![Step {
            step: "load config".to_owned(),
            ms: load_ms,
            polls: None,
            result: "ok".to_owned(),
        }],
        total_ms: 0.0,
        error: None,
    };
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let step_started = Instant::now();
    let built = rt.block_on(async { super::build_device(dev) });
    let outcome = match built {
        Err(e) => {
            report.steps.push(Step {
                step: "build driver".to_owned(),
                ms: ms(step_started.elapsed()),
                polls: None,
                result: "failed".to_owned(),
            });
            Err(e)
        }
        Ok(mut driver) => {
            report.steps.push(Step {
                step: "build driver".to_owned(),
                ms: ms(step_started.elapsed()),
                polls: None,
                result: "ok".to_owned(),
            });
            let timeout = dev.timeout;
            rt.block_on(async {
                let deadline = || tokio::time::Instant::now() + timeout;
                let mut steps = Vec::new();
                let result = match action {
                    FenceAction::Status => {
                        let t = Instant::now();
                        let r = driver.status(&target, deadline()).await;
                        steps.push(step("status", t, None, r.as_ref().map(|s| state_word(*s))));
                        r.map(Some)
                    }
                    FenceAction::Monitor => {
                        let t = Instant::now();
                        let r = driver.monitor(deadline()).await;
                        steps.push(step("monitor", t, None, r.as_ref().map(|()| "ok")));
                        r.map(|()| None)
                    }
                    FenceAction::Off | FenceAction::On | FenceAction::Reboot => {
                        let mut last = Ok(None);
                        let halves: &[PowerState] = match action {
                            FenceAction::Off => &[PowerState::Off],
                            FenceAction::On => &[PowerState::On],
                            _ => &[PowerState::Off, PowerState::On],
                        };
                        for &want in halves {
                            let t = Instant::now();
                            let r = match want {
                                PowerState::Off => driver.off(&target, deadline()).await,
                                PowerState::On => driver.on(&target, deadline()).await,
                            };
                            let name = if want == PowerState::Off { "off" } else { "on" };
                            let polls = r.as_ref().ok().map(|c| c.polls);
                            steps.push(step(
                                name,
                                t,
                                polls,
                                r.as_ref().map(|c| state_word(c.state)),
                            ));
                            match r {
                                Ok(c) => last = Ok(Some(c.state)),
                                Err(e) => {
                                    last = Err(e);
                                    break;
                                }
                            }
                        }
                        last
                    }
                };
                report.steps.extend(steps);
                result
            })
        }
    };
    report.total_ms = ms(started.elapsed());
    let code = match outcome {
        Ok(state) => {
            report.ok = true;
            report.state = state.map(|s| state_word(s).to_owned());
            0
        }
        Err(e) => {
            let code = exit_code(&e);
            report.error = Some(ErrorReport {
                kind: format!("{:?}", e.kind),
                message: e.to_string(),
            });
            code
        }
    };
    if matches!(
        action,
        FenceAction::Off | FenceAction::On | FenceAction::Reboot
    ) {
        record(&config, node, &report, reason);
    }
    print_report(&report, json);
    code
}

/// Appends a state-changing operation to the fence ledger of this machine's node, if this
/// machine is one.
fn record(config: &config::Config, node: Option<&str>, report: &FenceReport, reason: &str) {
    let Ok(local) = config.local_node(node) else {
        tracing::warn!("this machine is not a node of the cluster (--node): the operation is not recorded in a fence ledger");
        return;
    };
    let path = super::ledger::path(&local.state_dir);
    let mut entry = super::ledger::Entry::now(
        &report.device,
        &report.r#type,
        &report.target,
        &report.action,
        reason,
    );
    entry.ok = report.error.is_none();
    entry.state.clone_from(&report.state);
    entry.ms = report.total_ms;
    entry.error = report.error.as_ref().map(|e| e.message.clone());
    if let Err(e) = super::ledger::append(&path, &entry) {
        tracing::warn!(ledger = %path.display(), error = %e, "cannot record the operation in the fence ledger");
    }
}

fn print_report(report: &FenceReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot render the report: {e}"),
        }
        return;
    }
    let outcome = match (&report.error, &report.state) {
        (Some(e), _) => format!("FAILED ({}): {}", e.kind, e.message),
        (None, Some(state)) => format!("ok, {state}"),
        (None, None) => "ok".to_owned(),
    };
    println!(
        "{} {} on {} ({}): {outcome}",
        report.action, report.target, report.device, report.r#type
    );
    for s in &report.steps {
        let polls = s.polls.map_or_else(String::new, |p| {
            format!(" ({p} {})", if p == 1 { "read" } else { "reads" })
        });
        println!("  {:<12} {:>9.1} ms  {}{polls}", s.step, s.ms, s.result);
    }
    println!("  {:<12} {:>9.1} ms", "total", report.total_ms);
}

fn step(
    name: &str,
    started: Instant,
    polls: Option<u32>,
    result: Result<&str, &FenceError>,
) -> Step {
    Step {
        step: name.to_owned(),
        ms: ms(started.elapsed()),
        polls,
        result: match result {
            Ok(r) => r.to_owned(),
            Err(e) => format!("failed: {:?}", e.kind),
        },
    }
}

fn exit_code(e: &FenceError) -> u8 {
    match e.kind {
        FenceErrorKind::Unreachable | FenceErrorKind::Timeout => EXIT_UNAVAILABLE,
        FenceErrorKind::TargetUnknown => EXIT_CONFIG,
        _ => 1,
    }
}

fn state_word(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "on",
        PowerState::Off => "off",
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Driver warnings go to stderr so that `--json` output stays one clean object.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
