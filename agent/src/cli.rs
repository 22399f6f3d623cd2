//! The command-line front end: argument parsing and the handlers behind each subcommand.
//!
//! Handlers return a process exit code; `main` only sets up logging and calls them. Exit codes
//! follow sysexits: 78 (EX_CONFIG) for configuration errors, 69 (EX_UNAVAILABLE) when the agent
//! cannot be reached or a device it needs is unavailable, 1 for anything else.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::runtime::{self, Resources, Status};

/// Exit code for configuration errors (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when a needed service or device is unavailable (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// watchkeeper: a lean high-availability agent for bare-metal Bacula hosts.
#[derive(Debug, Parser)]
#[command(name = "watchkeeper", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: exchange heartbeats on every link and track peers.
    Run {
        /// Cluster configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Log one JSON object per line instead of human-readable text.
        #[arg(long)]
        log_json: bool,
    },
    /// Show what the running agent sees: peers, links, counters.
    Status {
        /// Cluster configuration file (to find the control socket).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Control socket path (overrides the configuration).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and exit: 0 if valid, 78 with every error listed if not.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Run one operation on a configured fence device and show how long each step took.
    Fence {
        /// Fence device name from the configuration.
        device: String,
        /// What to do.
        #[arg(value_enum)]
        action: crate::fence::cli::FenceAction,
        /// Node to act on (default: the device's only target).
        #[arg(long)]
        target: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Why, for the fence ledger (`off`, `on` and `reboot` are recorded there).
        #[arg(long, default_value = "operator command")]
        reason: String,
        /// This machine's node name, whose state directory holds the ledger (default: the host
        /// name; off a cluster node nothing is recorded).
        #[arg(long)]
        node: Option<String>,
        /// Cluster configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Explain what the agent decided and why, from its decision journal: who was declared
    /// dead, fenced with which device and how fast, who took over at which epoch.
    History {
        /// Cluster configuration file (to find the journal).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Whose journal to read (default: this host's node).
        #[arg(long)]
        node: Option<String>,
        /// Only decisions since then: 2026-11-29T01:00:00 (UTC), a date, or a duration ago such
        /// as 30m, 2h or 7d.
        #[arg(long)]
        since: Option<String>,
        /// Print the journal's JSON lines as stored.
        #[arg(long)]
        json: bool,
    },
    /// Show the resource group on this node: each resource's state, last action and monitor.
    Resources {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Cluster configuration file (to find the control socket).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Planned handover: the holder stops the group in reverse order, then NODE starts it.
    /// Run it on the holder.
    Switchover {
        /// The node to hand over to (default: the peer, in a two-node cluster).
        target: Option<String>,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Cluster configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Forget the resource failures that made this node ineligible to hold the group.
    Cleanup {
        /// The resource whose failure was fixed (all are forgotten: the group moves as one).
        resource: Option<String>,
        /// This node's name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Cluster configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Enable a fabric-fenced node's switch ports again, once the local agent hears it; or list
    /// the fabric fences in force.
    Unfence {
        /// Node whose ports to enable.
        #[arg(required_unless_present = "list")]
        target: Option<String>,
        /// Only this ifmib device (default: every ifmib device of the node).
        #[arg(long)]
        device: Option<String>,
        /// Why, for the fence ledger.
        #[arg(long, default_value = "operator command")]
        reason: String,
        /// Enable the ports even though the local agent does not hear the node (or cannot be
        /// asked): only after checking by other means that the node is healthy.
        #[arg(long)]
        force: bool,
        /// List the fabric fences in force, from the ledger.
        #[arg(long, conflicts_with_all = ["target", "force", "device"])]
        list: bool,
        /// This machine's node name (default: the host name).
        #[arg(long)]
        node: Option<String>,
        /// Cluster configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Replay failure scenarios in the deterministic simulator and print what each node would
    /// see, decide and do; or search random fault schedules for a broken rule.
    Simulate {
        /// Scenario files (TOML) to replay.
        scenarios: Vec<PathBuf>,
        /// Instead, run this many random schedules, checking every rule after every event.
        #[arg(long, conflicts_with = "scenarios")]
        random: Option<u64>,
        /// First seed of the random schedules (or the one seed to replay with --replay).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replay random schedule `--seed` and print its whole trace.
        #[arg(long, conflicts_with_all = ["scenarios", "random"])]
        replay: bool,
        /// Instead, run every schedule of up to this many faults from a fixed alphabet and
        /// time grid, for two nodes, two nodes and a witness, and three nodes.
        #[arg(long, conflicts_with_all = ["scenarios", "random", "replay"])]
        exhaustive: Option<usize>,
        /// Instead, explore the state graph breadth-first with up to this many faults, merging
        /// identical states, for the same three cluster shapes.
        #[arg(long, conflicts_with_all = ["scenarios", "random", "replay", "exhaustive"])]
        explore: Option<usize>,
        /// Steps of 250 ms that --explore runs after the cluster has formed.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Print only verdicts, not timelines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Create a new random cluster key file (mode 0600). Copy it to every node.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Try watchkeeper on this machine: two agents (and a witness), a serial cable, a
    /// simulated Modbus PDU and a resource group, then a failover to watch. No root needed;
    /// everything it starts is stopped when it ends.
    Demo {
        /// Add a third agent, gamma, that only votes (a quorum witness).
        #[arg(long)]
        witness: bool,
        /// Run the failover at once without waiting for Enter, print a summary and exit
        /// (the default when stdin is not a terminal).
        #[arg(long)]
        script: bool,
        /// Keep the temporary directory (configuration, logs, state) at the end.
        #[arg(long)]
        keep: bool,
        /// Keep every node on 127.0.0.1 even as root (as root each node otherwise gets a
        /// network namespace of its own).
        #[arg(long)]
        loopback: bool,
        /// Make the holder's BMC stop answering before the kill, so fencing falls back to the
        /// PDU (the second fencing level).
        #[arg(long)]
        bmc_down: bool,
    },
    /// The hardware watchdog: list devices, or test that it resets this host.
    Watchdog {
        /// What to do with it.
        #[command(subcommand)]
        command: crate::watchdog::cli::WatchdogCommand,
    },
    /// Print a udev rule that names a plugged-in serial adapter /dev/watchkeeper/NAME, from
    /// its sysfs attributes (see udev/README.md).
    UdevRule {
        /// The adapter's device, e.g. /dev/ttyUSB0.
        device: PathBuf,
        /// The name to give it under /dev/watchkeeper/.
        name: String,
        /// The sysfs tree to read.
        #[arg(long, default_value = "/sys")]
        sysfs: PathBuf,
    },
    /// Write the man pages (watchkeeper and its subcommands, section 1; fence_watchkeeper,
    /// section 8) into DIR, for packaging.
    #[command(hide = true)]
    GenerateMan {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Write the bash, zsh and fish completions into DIR, for packaging.
    #[command(hide = true)]
    GenerateCompletions {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// Runs the parsed command; returns the process exit code.
pub fn main(cli: Cli) -> u8 {
    match cli.command {
        Command::Run {
            config,
            node,
            log_json,
        } => run(&config, node.as_deref(), log_json),
        Command::Status {
            config,
            node,
            socket,
            json,
        } => status(&config, node.as_deref(), socket, json),
        Command::CheckConfig { file } => check_config(&file),
        Command::Keygen { file, force } => keygen(&file, force),
        Command::Simulate {
            scenarios,
            random,
            seed,
            replay,
            exhaustive,
            explore,
            steps,
            quiet,
        } => crate::sim::cli(
            &scenarios,
            random,
            seed,
            replay,
            exhaustive,
            explore.map(|k| (k, steps)),
            quiet,
        ),
        Command::Fence {
            device,
            action,
            target,
            json,
            reason,
            node,
            config,
        } => crate::fence::cli::run(
            &config,
            &device,
            action,
            target.as_deref(),
            json,
            &reason,
            node.as_deref(),
        ),
        Command::Unfence {
            target,
            device,
            reason,
            force,
            list,
            node,
            config,
        } => crate::fence::unfence::run(&crate::fence::unfence::UnfenceArgs {
            config: &config,
            target: target.as_deref(),
            device: device.as_deref(),
            node: node.as_deref(),
            reason: &reason,
            force,
            list,
        }),
        Command::Watchdog { command } => crate::watchdog::cli::main(command),
        Command::GenerateMan { dir } => crate::packaging::generate_man(&dir),
        Command::GenerateCompletions { dir } => crate::packaging::generate_completions(&dir),
        Command::UdevRule {
            device,
            name,
            sysfs,
        } => match crate::udev::rule_for(&device, &name, &sysfs) {
            Ok(rule) => {
                print!("{rule}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Command::Demo {
            witness,
            script,
            keep,
            loopback,
            bmc_down,
        } => crate::demo::run(crate::demo::DemoArgs {
            witness,
            script,
            keep,
            loopback,
            bmc_down,
        }),
        Command::Resources { json, node, config } => resources(&config, node.as_deref(), json),
        Command::History {
            config,
            node,
            since,
            json,
        } => history(&config, node.as_deref(), since.as_deref(), json),
        Command::Switchover {
            target,
            node,
            config,
        } => ask(
            &config,
            node.as_deref(),
            &crate::control::Request::Switchover { node: target },
        ),
        Command::Cleanup {
            resource,
            node,
            config,
        } => {
            if let Some(r) = &resource {
                match load(&config) {
                    Ok(c) if c.resources.iter().any(|x| &x.name == r) => {}
                    Ok(_) => {
                        eprintln!("{}: no resource {r}", config.display());
                        return EXIT_CONFIG;
                    }
                    Err(code) => return code,
                }
            }
            ask(&config, node.as_deref(), &crate::control::Request::Cleanup)
        }
    }
}

/// Sets up logging: human text, or JSON lines with event fields at the top level; under
/// systemd (`JOURNAL_STREAM` set and journald reachable) native journald records whose fields
/// carry a `WATCHKEEPER_` prefix (`WATCHKEEPER_EVENT=decision`, `WATCHKEEPER_EPOCH=7`), so
/// `journalctl WATCHKEEPER_EVENT=alert` finds every alert.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            let layer = layer
                .with_field_prefix(Some("WATCHKEEPER".to_owned()))
                .with_syslog_identifier("watchkeeper".to_owned());
            // Fails only when a subscriber is already set (tests), which then stays.
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
    }
}

fn load(file: &Path) -> Result<Config, u8> {
    config::load(file).map_err(|errors| {
        eprintln!("{errors}");
        EXIT_CONFIG
    })
}

fn run(file: &Path, node: Option<&str>, log_json: bool) -> u8 {
    init_logging(log_json);
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let local = match config.local_node(node) {
        Ok(n) => n.id,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return EXIT_CONFIG;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrived after the watchdog is armed but before they
        // were installed would kill the agent without the clean disarm, and reset the host.
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let resources = match Resources::open(config, local) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "start_failed", error = %e, "cannot start");
                eprintln!("watchkeeper: {e}");
                return EXIT_UNAVAILABLE;
            }
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal(signals).await;
            stop_tx.send_replace(true);
        });
        runtime::run(resources, stop).await;
        0
    })
}

async fn wait_for_signal(
    signals: (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    let (Ok(mut term), Ok(mut int)) = signals else {
        // Without signal handlers the agent can only be killed, which is safe but unclean.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The control socket of this machine's node.
fn control_socket(file: &Path, node: Option<&str>) -> Result<PathBuf, u8> {
    let config = load(file)?;
    match config.local_node(node) {
        Ok(n) => Ok(n.control_socket.clone()),
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Err(EXIT_CONFIG)
        }
    }
}

/// Sends an operator command to the running agent and prints its answer.
fn ask(file: &Path, node: Option<&str>, request: &crate::control::Request) -> u8 {
    let socket = match control_socket(file, node) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::control::query(&socket, request, STATUS_TIMEOUT)) {
        Ok(answer) => {
            println!("{}", answer["message"].as_str().unwrap_or("ok"));
            0
        }
        Err(crate::control::ControlError::Protocol { message, .. }) => {
            eprintln!("refused: {message}");
            1
        }
        Err(e) => {
            eprintln!("cannot reach the agent: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

fn history(file: &Path, node: Option<&str>, since: Option<&str>, json: bool) -> u8 {
    // The journal's place is all that is needed: the cluster key need not be readable.
    let config = match config::load_for_simulation(file) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    let me = match config.local_node(node) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return EXIT_CONFIG;
        }
    };
    let since_ms = match since {
        None => None,
        Some(s) => match crate::events::history::parse_since(s, crate::events::now_wall().0) {
            Ok(ms) => Some(ms),
            Err(e) => {
                eprintln!("watchkeeper history: {e}");
                return 2;
            }
        },
    };
    crate::events::history::print(
        &config,
        me,
        &crate::events::history::HistoryArgs { since_ms, json },
    )
}

fn resources(file: &Path, node: Option<&str>, json: bool) -> u8 {
    let socket = match control_socket(file, node) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let answer = match rt.block_on(crate::control::query(
        &socket,
        &crate::control::Request::Resources,
        STATUS_TIMEOUT,
    )) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot reach the agent: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    if json {
        println!("{answer}");
        return 0;
    }
    println!(
        "node {} ({}, epoch {}): {}",
        answer["node"].as_str().unwrap_or("?"),
        answer["role"].as_str().unwrap_or("?"),
        answer["epoch"],
        if answer["holds"] == serde_json::Value::Bool(true) {
            "holds the group"
        } else {
            "does not hold the group"
        }
    );
    for r in answer["resources"].as_array().into_iter().flatten() {
        let monitor = match &r["last_monitor"] {
            serde_json::Value::Null => "never monitored".to_owned(),
            m => format!(
                "monitor {} {:.1} s ago",
                m["result"].as_str().unwrap_or("?"),
                m["ms_ago"].as_u64().unwrap_or(0) as f64 / 1000.0
            ),
        };
        let action = match &r["last_action"] {
            serde_json::Value::Null => String::new(),
            a => format!(
                ", last {} took {} ms",
                a["action"].as_str().unwrap_or("?"),
                a["ms"]
            ),
        };
        println!(
            "  {:<12} {:<8} {:<12} {monitor}{action}",
            r["name"].as_str().unwrap_or("?"),
            r["type"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
        );
        if let Some(e) = r["last_error"].as_str().or(r["unbuildable"].as_str()) {
            println!("  {:<12} error: {e}", "");
        }
    }
    0
}

fn status(file: &Path, node: Option<&str>, socket: Option<PathBuf>, json: bool) -> u8 {
    let socket = match socket {
        Some(s) => s,
        None => {
            let config = match load(file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match config.local_node(node) {
                Ok(n) => n.control_socket.clone(),
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return EXIT_CONFIG;
                }
            }
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::control::query_status(&socket, STATUS_TIMEOUT)) {
        Ok(st) => {
            let out = if json {
                serde_json::to_string_pretty(&st).map(|mut s| {
                    s.push('\n');
                    s
                })
            } else {
                Ok(render(&st))
            };
            match out {
                Ok(text) => {
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    0
                }
                Err(e) => {
                    eprintln!("cannot render status: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("watchkeeper status: {e} (is the agent running?)");
            EXIT_UNAVAILABLE
        }
    }
}

/// Renders a status report for people.
pub fn render(st: &Status) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let ago = |v: Option<u64>| v.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago"));
    let _ = writeln!(
        s,
        "cluster {}  node {} ({})  incarnation {}  up {:.1} s  interval {} ms  deadtime {} ms",
        st.cluster,
        st.node,
        st.node_id,
        st.incarnation,
        Duration::from_millis(st.uptime_ms).as_secs_f64(),
        st.heartbeat_interval_ms,
        st.deadtime_ms
    );
    if let Some(e) = &st.engine {
        let _ = writeln!(
            s,
            "role {}  epoch {}  holder {}  {}  {}",
            e.role,
            e.epoch,
            e.holder.as_deref().unwrap_or("none"),
            if e.holds {
                "HOLDS the group"
            } else {
                "does not hold the group"
            },
            if e.quorate { "quorate" } else { "NO QUORUM" }
        );
    }
    for p in &st.peers {
        let _ = writeln!(
            s,
            "peer {} ({}): {}  last seen {}  role {}  incarnation {}",
            p.name,
            p.id,
            if p.alive { "ALIVE" } else { "DEAD" },
            ago(p.last_seen_ms_ago),
            p.role.as_deref().unwrap_or("-"),
            p.incarnation
                .map_or_else(|| "-".to_owned(), |i| i.to_string()),
        );
        for l in &p.links {
            let _ = writeln!(
                s,
                "  {:<12} {:<4}  last frame {:<14} frames {}",
                l.link,
                if l.up { "up" } else { "down" },
                ago(l.last_seen_ms_ago),
                l.frames_in
            );
        }
    }
    if !st.fence_devices.is_empty() {
        let _ = writeln!(s, "fence devices:");
    }
    for d in &st.fence_devices {
        let health = match d.healthy {
            Some(true) => "healthy".to_owned(),
            Some(false) => format!("FAILING: {}", d.error.as_deref().unwrap_or("?")),
            None => "not checked yet".to_owned(),
        };
        let _ = writeln!(
            s,
            "  {:<12} {:<8} fences {:<14} {}  checked {}",
            d.name,
            d.r#type,
            d.targets.join(","),
            health,
            ago(d.last_check_ms_ago)
        );
    }
    let _ = match st.replica_age_ms {
        Some(ms) => writeln!(s, "Director config copy: {} s old", ms / 1000),
        None => writeln!(s, "Director config copy: no copy"),
    };
    let _ = writeln!(s, "links:");
    for l in &st.links {
        let _ = writeln!(
            s,
            "  {:<12} {:<6} {:<24} transport {:<4}  in {} out {}  crc {} resync {} auth {} replay {} malformed {} misrouted {} foreign {} send-err {}",
            l.name,
            l.kind,
            l.endpoint,
            if l.transport_up { "up" } else { "down" },
            l.frames_in,
            l.frames_out,
            l.crc_errors,
            l.resyncs,
            l.auth_failures,
            l.replays,
            l.malformed,
            l.misrouted,
            l.foreign_cluster,
            l.send_errors
        );
    }
    s
}

fn check_config(file: &Path) -> u8 {
    match load(file) {
        Ok(c) => {
            println!(
                "{}: ok: cluster {} (id {}), {} nodes, {} links, heartbeat every {} ms, deadtime {} ms",
                file.display(),
                c.cluster.name,
                c.cluster.id,
                c.nodes.len(),
                c.links.len(),
                c.timing.heartbeat_interval.as_millis(),
                c.timing.deadtime.as_millis()
            );
            let budget = c.failover_budget();
            let total: Duration = budget.iter().map(|(_, d)| *d).sum();
            let parts: Vec<String> = budget
                .iter()
                .map(|(what, d)| format!("{what} {} ms", d.as_millis()))
                .collect();
            println!(
                "worst case before a takeover may start: {} ms ({})",
                total.as_millis(),
                parts.join(", ")
            );
            0
        }
        Err(code) => code,
    }
}

/// The single-threaded tokio runtime the commands run on, or the exit code after saying why
/// there is none.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            1
        })
}

fn keygen(file: &Path, force: bool) -> u8 {
    let mut key = [0u8; KEY_BYTES];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut key)
    }) {
        eprintln!("cannot read /dev/urandom: {e}");
        return 1;
    }
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let written = opts.open(file).and_then(|mut f| {
        // An existing file keeps its mode when truncated; make sure it is private.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(f, "{hex}")?;
        f.sync_all()
    });
    match written {
        Ok(()) => {
            println!(
                "wrote a new {}-bit cluster key to {} (mode 0600); copy it to every node",
                KEY_BYTES * 8,
                file.display()
            );
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "{} exists; pass --force to replace it (every node must then get the new key)",
                file.display()
            );
            1
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", file.display());
            1
        }
    }
}

/// Default configuration path, as installed by the package.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/watchkeeper/watchkeeper.toml";
/// `status` gives up after this long: a healthy agent answers in microseconds, and a stuck
/// one must not hang an operator's shell or a monitoring script.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Key size: 256 bits, the HMAC-SHA256 block-size-safe strength.
const KEY_BYTES: usize = 32;
