//! Unfencing: enabling a fabric-fenced node's switch ports again, and `watchkeeper unfence`.
//!
//! A fabric fence (IF-MIB port disable) isolates a node without powering it off, so the node
//! comes back by itself and must be let back onto its storage. Doing that while the cluster
//! still considers the node dead would undo the fence that made the takeover safe, so every
//! path here checks first that the node is heard again: the agent does it when the engine
//! reports the node rejoined (`unfence = "auto"`), and `watchkeeper unfence` asks the local
//! agent over its control socket and refuses otherwise, unless the operator forces it after
//! checking by other means. Every attempt, refused or run, lands in the fence ledger.
//!
//! Exit codes of the command: 0 every port enabled and confirmed; 1 a device failed; 69 the
//! local agent cannot be asked; 75 refused because the node is still considered dead; 78
//! configuration error or no such node or device.

use std::path::Path;
use std::time::{Duration, Instant};

use drivers::fence::FenceError;
use serde::Serialize;

use super::ledger::{self, Entry};
use crate::cli::{EXIT_CONFIG, EXIT_UNAVAILABLE};
use crate::config::{self, Config, FenceDeviceKind};
use crate::runtime::Status;

/// Exit code when the node is still considered dead (sysexits EX_TEMPFAIL: try again once it
/// has rejoined).
pub const EXIT_STILL_DEAD: u8 = 75;

/// How long the command waits for the local agent's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The devices that hold a fabric fence on `node`: every IF-MIB device that serves it.
pub fn fabric_devices<'c>(config: &'c Config, node: &str) -> Vec<&'c config::FenceDeviceConfig> {
    config
        .fencing
        .devices
        .iter()
        .filter(|d| matches!(d.kind, FenceDeviceKind::IfMib(_)))
        .filter(|d| d.targets.iter().any(|t| t == node))
        .collect()
}

/// Whether the local agent's view allows unfencing `node`: `Ok` with the evidence in words, or
/// `Err` with why not.
pub fn rejoined(status: &Status, node: &str) -> Result<String, String> {
    if status.node == node {
        // The node itself: it has rejoined once it hears a peer again.
        return match status.peers.iter().find(|p| p.alive) {
            Some(p) => Ok(format!("{node} hears {} again", p.name)),
            None => Err(format!(
                "{node} hears no peer: it has not rejoined the cluster, so its ports stay disabled"
            )),
        };
    }
    let Some(peer) = status.peers.iter().find(|p| p.name == node) else {
        return Err(format!(
            "the agent on {} does not know node {node}",
            status.node
        ));
    };
    if peer.alive {
        Ok(format!(
            "{} hears {node} again (last frame {} ms ago)",
            status.node,
            peer.last_seen_ms_ago.unwrap_or(0)
        ))
    } else {
        Err(format!(
            "{node} is still considered dead by {} ({}): enabling its ports would let a machine \
             that may still be running reach the storage again",
            status.node,
            peer.last_seen_ms_ago.map_or_else(
                || "never heard".to_owned(),
                |ms| format!("last heard {:.1} s ago", ms as f64 / 1000.0)
            )
        ))
    }
}

/// The devices with `unfence = "auto"` whose last confirmed operation on `node`, as the ledger
/// tells, left its ports disabled.
pub fn auto_pending<'c>(
    config: &'c Config,
    ledger: &ledger::Ledger,
    node: &str,
) -> Vec<&'c config::FenceDeviceConfig> {
    let auto: Vec<&str> = fabric_devices(config, node)
        .into_iter()
        .filter(|d| {
            matches!(&d.kind, FenceDeviceKind::IfMib(i) if i.unfence == config::UnfencePolicy::Auto)
        })
        .map(|d| d.name.as_str())
        .collect();
    let fenced: Vec<&str> = ledger
        .outstanding(&auto)
        .into_iter()
        .filter(|e| e.target == node)
        .map(|e| e.device.as_str())
        .collect();
    config
        .fencing
        .devices
        .iter()
        .filter(|d| fenced.contains(&d.name.as_str()))
        .collect()
}

/// The agent's own unfence, run when `node` is heard again (it has rejoined): enables its
/// ports on every `unfence = "auto"` device that the ledger says still isolates it, and
/// records each attempt. Nothing happens for nodes without such a fence in force.
pub async fn auto_unfence(config: &Config, ledger_path: &Path, node: &str) -> Vec<UnfenceResult> {
    let ledger = match ledger::read(ledger_path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(ledger = %ledger_path.display(), error = %e, "cannot read the fence ledger: {node}'s ports are left as they are");
            return Vec::new();
        }
    };
    let devices = auto_pending(config, &ledger, node);
    if devices.is_empty() {
        return Vec::new();
    }
    let reason = format!("{node} rejoined: its heartbeats arrive again");
    let results = unfence(&devices, node, &reason, "agent", Some(ledger_path)).await;
    for r in &results {
        match &r.error {
            None => {
                tracing::info!(event = "unfence", peer = %node, device = %r.device, ms = r.ms, "ports of {node} on {} enabled again", r.device)
            }
            Some(e) => {
                tracing::error!(event = "unfence_failed", peer = %node, device = %r.device, error = %e, "cannot enable the ports of {node} on {}: {e}", r.device)
            }
        }
    }
    results
}

/// One device's unfence.
#[derive(Debug, Clone, Serialize)]
pub struct UnfenceResult {
    /// Device name.
    pub device: String,
    /// Whether the ports were enabled and read back enabled.
    pub ok: bool,
    /// Time taken, in milliseconds.
    pub ms: f64,
    /// The failure, if any.
    pub error: Option<String>,
}

/// Enables `node`'s ports on every device in `devices`, records each attempt in the ledger at
/// `ledger_path` (when given), and returns what happened. The caller has checked that the node
/// rejoined.
pub async fn unfence(
    devices: &[&config::FenceDeviceConfig],
    node: &str,
    reason: &str,
    by: &str,
    ledger_path: Option<&Path>,
) -> Vec<UnfenceResult> {
    let mut results = Vec::new();
    for dev in devices {
        let started = Instant::now();
        let outcome: Result<(), FenceError> = async {
            let mut driver = super::build_device(dev)?;
            let deadline = tokio::time::Instant::now() + dev.timeout;
            driver.on(node, deadline).await.map(|_| ())
        }
        .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut entry = Entry::now(&dev.name, dev.kind.type_word(), node, "unfence", reason);
        entry.by = by.to_owned();
        entry.ok = outcome.is_ok();
        entry.state = outcome.is_ok().then(|| "on".to_owned());
        entry.ms = ms;
        entry.error = outcome.as_ref().err().map(ToString::to_string);
        if let Some(path) = ledger_path {
            if let Err(e) = ledger::append(path, &entry) {
                tracing::error!(ledger = %path.display(), error = %e, "cannot record the unfence in the fence ledger");
            }
        }
        results.push(UnfenceResult {
            device: dev.name.clone(),
            ok: outcome.is_ok(),
            ms,
            error: entry.error,
        });
    }
    results
}

/// Options of `watchkeeper unfence`.
#[derive(Debug, Clone)]
pub struct UnfenceArgs<'a> {
    /// Configuration file.
    pub config: &'a Path,
    /// Node whose ports to enable; `None` with `list`.
    pub target: Option<&'a str>,
    /// Only this device.
    pub device: Option<&'a str>,
    /// This machine's node name (default: host name), for the control socket and ledger.
    pub node: Option<&'a str>,
    /// Why, for the ledger.
    pub reason: &'a str,
    /// Skip the liveness check.
    pub force: bool,
    /// List the fabric fences in force instead.
    pub list: bool,
}

/// Runs `watchkeeper unfence`; returns the exit code.
pub fn run(args: &UnfenceArgs<'_>) -> u8 {
    let config = match config::load(args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    let local = match config.local_node(args.node) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return EXIT_CONFIG;
        }
    };
    let ledger_path = ledger::path(&local.state_dir);
    if args.list {
        return list(&config, &ledger_path);
    }
    let Some(target) = args.target else {
        eprintln!("name the node to unfence, or use --list");
        return EXIT_CONFIG;
    };
    if config.node_by_name(target).is_none() {
        eprintln!("{}: no node {target}", args.config.display());
        return EXIT_CONFIG;
    }
    let mut devices = fabric_devices(&config, target);
    if let Some(only) = args.device {
        devices.retain(|d| d.name == only);
        if devices.is_empty() {
            eprintln!(
                "{}: {only} is not an ifmib fence device of node {target}",
                args.config.display()
            );
            return EXIT_CONFIG;
        }
    }
    if devices.is_empty() {
        eprintln!(
            "{}: node {target} has no ifmib fence device: nothing to unfence (power fences end \
             when the node is switched on)",
            args.config.display()
        );
        return EXIT_CONFIG;
    }
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let reason = if args.force {
        let asked = rt.block_on(crate::control::query_status(
            &local.control_socket,
            STATUS_TIMEOUT,
        ));
        let view = match &asked {
            Ok(st) => match rejoined(st, target) {
                Ok(why) => why,
                Err(why) => why,
            },
            Err(e) => format!("the local agent could not be asked: {e}"),
        };
        format!("{} (forced; {view})", args.reason)
    } else {
        match rt.block_on(crate::control::query_status(
            &local.control_socket,
            STATUS_TIMEOUT,
        )) {
            Err(e) => {
                eprintln!(
                    "cannot ask the local agent whether {target} has rejoined ({}: {e}); start \
                     the agent, or check {target} by other means and use --force",
                    local.control_socket.display()
                );
                return EXIT_UNAVAILABLE;
            }
            Ok(st) => match rejoined(&st, target) {
                Ok(why) => format!("{} ({why})", args.reason),
                Err(why) => {
                    eprintln!("refused: {why}; use --force only if you know it is safe");
                    let mut entry = Entry::now(
                        &devices
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        "ifmib",
                        target,
                        "unfence",
                        &format!("{} (refused: {why})", args.reason),
                    );
                    entry.error = Some("refused: node still considered dead".to_owned());
                    if let Err(e) = ledger::append(&ledger_path, &entry) {
                        eprintln!(
                            "cannot record the refusal in {}: {e}",
                            ledger_path.display()
                        );
                    }
                    return EXIT_STILL_DEAD;
                }
            },
        }
    };
    let results = rt.block_on(unfence(
        &devices,
        target,
        &reason,
        "operator",
        Some(&ledger_path),
    ));
    let mut code = 0;
    for r in &results {
        match &r.error {
            None => println!(
                "unfence {target} on {}: ok, ports enabled ({:.1} ms)",
                r.device, r.ms
            ),
            Some(e) => {
                println!(
                    "unfence {target} on {}: FAILED: {e} ({:.1} ms)",
                    r.device, r.ms
                );
                code = 1;
            }
        }
    }
    println!("recorded in {}", ledger_path.display());
    code
}

fn list(config: &Config, ledger_path: &Path) -> u8 {
    let ledger = match ledger::read(ledger_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot read {}: {e}", ledger_path.display());
            return 1;
        }
    };
    let fabric: Vec<&str> = config
        .fencing
        .devices
        .iter()
        .filter(|d| matches!(d.kind, FenceDeviceKind::IfMib(_)))
        .map(|d| d.name.as_str())
        .collect();
    let outstanding = ledger.outstanding(&fabric);
    if outstanding.is_empty() {
        println!(
            "no fabric fence in force (ledger {})",
            ledger_path.display()
        );
    }
    for e in outstanding {
        println!(
            "{} ports of {} disabled since {} by {}: {}",
            e.device, e.target, e.time, e.by, e.reason
        );
    }
    if ledger.skipped > 0 {
        println!("({} unreadable ledger lines skipped)", ledger.skipped);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PeerStatus;

    fn status(me: &str, peers: &[(&str, bool)]) -> Status {
        Status {
            cluster: "c".to_owned(),
            node: me.to_owned(),
            node_id: 1,
            incarnation: 1,
            uptime_ms: 0,
            heartbeat_interval_ms: 100,
            deadtime_ms: 1000,
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, (name, alive))| PeerStatus {
                    name: (*name).to_owned(),
                    id: u8::try_from(i + 2).unwrap_or(0),
                    alive: *alive,
                    last_seen_ms_ago: alive.then_some(40),
                    incarnation: None,
                    role: None,
                    links: Vec::new(),
                })
                .collect(),
            links: Vec::new(),
            replica_age_ms: None,
            engine: None,
            fence_devices: Vec::new(),
        }
    }

    #[test]
    fn a_dead_node_is_never_unfenced() {
        let st = status("alpha", &[("beta", false)]);
        let why = rejoined(&st, "beta").expect_err("dead node");
        assert!(why.contains("still considered dead"), "{why}");
        assert!(why.contains("never heard"), "{why}");
        assert!(rejoined(&st, "gamma").is_err());
    }

    #[test]
    fn a_heard_node_may_be_unfenced() {
        let st = status("alpha", &[("beta", true)]);
        let why = rejoined(&st, "beta").expect("alive");
        assert!(why.contains("alpha hears beta again"), "{why}");
    }

    #[test]
    fn a_node_unfences_itself_only_once_it_hears_a_peer() {
        assert!(rejoined(&status("beta", &[("alpha", false)]), "beta").is_err());
        assert!(rejoined(&status("beta", &[("alpha", true)]), "beta").is_ok());
    }
}
