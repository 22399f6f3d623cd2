//! `watchkeeper-bridge`: the watchdog and relay bridge firmware on a small Linux board.
//!
//! A Raspberry Pi with a relay hat (or any board with GPIO lines and two serial ports) can be
//! a host's external watchdog and its peer's fence device, running exactly the logic of the
//! microcontroller firmware: the `firmware` crate's `Board` loop over GPIO character-device
//! lines and serial ports. The host's agent feeds it heartbeat frames on one port, the peer
//! speaks Modbus RTU to it on the other (see firmware/README.md for the wiring).
//!
//! `--gpio-sim DIR` replaces the GPIO chip with one file per line, which is how the end-to-end
//! tests watch the relay of the real binary.
//!
//! Every event (armed, triggered, fenced, a refused frame, …) is one JSON object per line on
//! stdout, with the milliseconds since start. The process runs until it is signalled; the
//! kernel then releases the GPIO lines, and the relay falls back to its normally-closed
//! contact, which keeps the host powered.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use firmware::board::{NoWatchdog, Pins};
use firmware::bridge::Refusal;
use firmware::config as defaults;
use firmware::{Board, Bridge, Config, Event, TriggerAction};
use nix::poll::{poll, PollTimeout};
use proto::{Key, NodeId};

use bridge::gpio::OutPin;
use bridge::tty::Tty;

/// The watchdog and relay bridge: resets or power-cycles a host whose agent stops sending
/// heartbeats, and lets the host's peer fence it over Modbus RTU.
#[derive(Debug, Parser)]
#[command(name = "watchkeeper-bridge", version)]
struct Cli {
    /// Serial port wired to the watched host (its agent sends heartbeats here).
    #[arg(long, value_name = "PATH")]
    host_serial: PathBuf,
    /// Speed of the host's port.
    #[arg(long, default_value_t = 115_200)]
    host_baud: u32,
    /// Serial port of the Modbus RTU fence bus (RS-485 adapter) the peer talks on.
    #[arg(long, value_name = "PATH")]
    bus_serial: PathBuf,
    /// Speed of the fence bus.
    #[arg(long, default_value_t = 9_600)]
    bus_baud: u32,
    /// The key the host's agent authenticates its frames with (the file `watchkeeper keygen`
    /// writes); mode 0600.
    #[arg(long, value_name = "PATH")]
    key_file: PathBuf,
    /// The cluster id in the host's frames.
    #[arg(long)]
    cluster_id: u32,
    /// The node id of the watched host.
    #[arg(long)]
    host_node: u8,
    /// Modbus unit id to answer to.
    #[arg(long, default_value_t = defaults::DEFAULT_UNIT)]
    unit: u8,
    /// Heartbeat timeout.
    #[arg(long, default_value_t = defaults::DEFAULT_TIMEOUT_MS)]
    timeout_ms: u32,
    /// Time a host gets to boot after its power returns.
    #[arg(long, default_value_t = defaults::DEFAULT_GRACE_MS)]
    grace_ms: u32,
    /// How long power stays off (or reset asserted) when the watchdog fires.
    #[arg(long, default_value_t = defaults::DEFAULT_TRIGGER_MS)]
    trigger_ms: u32,
    /// What the watchdog does.
    #[arg(long, value_enum, default_value_t = Action::PowerCycle)]
    action: Action,
    /// Consecutive power cycles without a heartbeat before the bridge gives up.
    #[arg(long, default_value_t = defaults::DEFAULT_TRIGGERS_MAX)]
    triggers_max: u8,
    /// GPIO character device of the relay, reset and LED lines.
    #[arg(long, value_name = "PATH", required_unless_present = "gpio_sim")]
    gpio_chip: Option<PathBuf>,
    /// Line offset of the power relay.
    #[arg(long, requires = "gpio_chip")]
    power_line: Option<u32>,
    /// Line offset of the reset output.
    #[arg(long, requires = "gpio_chip")]
    reset_line: Option<u32>,
    /// Line offset of the status LED.
    #[arg(long, requires = "gpio_chip")]
    led_line: Option<u32>,
    /// Simulate the GPIO lines as files `power`, `reset` and `led` in this directory.
    #[arg(long, value_name = "DIR", conflicts_with = "gpio_chip")]
    gpio_sim: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    /// Open the power relay for the trigger time.
    PowerCycle,
    /// Assert the reset line for the trigger time.
    Reset,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match start(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watchkeeper-bridge: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Reads the key, checks the settings, opens the lines and ports, and runs; returns only if
/// one of those fails.
fn start(cli: &Cli) -> anyhow::Result<()> {
    let key = read_key(&cli.key_file)?;
    let host = NodeId::new(cli.host_node).with_context(|| {
        format!(
            "--host-node {} is not 1-{}",
            cli.host_node,
            proto::MAX_NODES
        )
    })?;
    let config = Config {
        unit: cli.unit,
        timeout_ms: cli.timeout_ms,
        grace_ms: cli.grace_ms,
        trigger_ms: cli.trigger_ms,
        action: match cli.action {
            Action::PowerCycle => TriggerAction::PowerCycle,
            Action::Reset => TriggerAction::Reset,
        },
        triggers_max: cli.triggers_max,
        ..Config::new(Key::new(&key), cli.cluster_id, host)
    };
    let bridge = Bridge::new(config).context("settings")?;
    let pins = open_pins(cli)?;
    let host_port = Tty::open(&cli.host_serial, cli.host_baud)?;
    let bus_port = Tty::open(&cli.bus_serial, cli.bus_baud)?;
    let board = Board::new(bridge, pins, host_port, bus_port, NoWatchdog);
    run(board, cli)
}

type LinuxBoard<'k> = Board<'k, OutPin, OutPin, OutPin, Tty, Tty, NoWatchdog>;

/// The loop: step the board, log its events, sleep until a port has bytes or the core's next
/// deadline (never longer than [`WAIT_MAX`], so a clock or LED step is never missed badly).
fn run(mut board: LinuxBoard<'_>, cli: &Cli) -> anyhow::Result<()> {
    let start = Instant::now();
    let ms = |at: Instant| u64::try_from(at.duration_since(start).as_millis()).unwrap_or(u64::MAX);
    println!(
        r#"{{"t_ms":0,"event":"started","host_serial":{:?},"bus_serial":{:?},"host_node":{},"unit":{},"timeout_ms":{}}}"#,
        cli.host_serial.display().to_string(),
        cli.bus_serial.display().to_string(),
        cli.host_node,
        cli.unit,
        cli.timeout_ms
    );
    let mut last_error = String::new();
    loop {
        let now = ms(Instant::now());
        let result = board.step(now);
        match result {
            Ok(()) => last_error.clear(),
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    println!(r#"{{"t_ms":{now},"event":"error","error":{text:?}}}"#);
                    last_error = text;
                }
            }
        }
        while let Some(event) = board.poll_event() {
            log_event(now, event, &board);
        }
        let wait = board
            .bridge()
            .next_deadline()
            .map_or(WAIT_MAX, |d| Duration::from_millis(d.saturating_sub(now)))
            .min(WAIT_MAX);
        wait_for_input(&board, wait, result.is_err());
    }
}

/// Waits until a port is readable or `wait` passes. After an error the ports are not polled
/// (a hung-up descriptor is always "ready"), so a broken line costs a sleep, not a spin.
fn wait_for_input(board: &LinuxBoard<'_>, wait: Duration, failed: bool) {
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let (host, bus) = board.ports();
    let mut fds: Vec<_> = [host.poll_fd(), bus.poll_fd()]
        .into_iter()
        .flatten()
        .collect();
    if failed || fds.is_empty() {
        std::thread::sleep(wait);
        return;
    }
    // EINTR or any other failure only shortens this wait.
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

fn log_event(now: u64, event: Event, board: &LinuxBoard<'_>) {
    let state = board.bridge().state().code();
    let line = match event {
        Event::Armed => r#""event":"armed""#.to_owned(),
        Event::HostUp => r#""event":"host_up""#.to_owned(),
        Event::Disarmed => r#""event":"disarmed""#.to_owned(),
        Event::Triggered { reason, attempt } => {
            // How long the host had been silent when the relay moved: the timeout plus the
            // loop's lateness.
            let silent_ms = board
                .bridge()
                .last_heartbeat_ms()
                .map_or(-1, |t| i128::from(now) - i128::from(t));
            format!(
                r#""event":"triggered","reason":"{}","attempt":{attempt},"silent_ms":{silent_ms}"#,
                match reason {
                    firmware::TriggerReason::HeartbeatTimeout => "heartbeat_timeout",
                    firmware::TriggerReason::BootTimeout => "boot_timeout",
                }
            )
        }
        Event::Released => r#""event":"released""#.to_owned(),
        Event::GaveUp => r#""event":"gave_up""#.to_owned(),
        Event::Fenced => r#""event":"fenced""#.to_owned(),
        Event::Unfenced { armed } => format!(r#""event":"unfenced","armed":{armed}"#),
        Event::Refused(why) => {
            let why = match why {
                Refusal::Framing(e) => format!("framing: {e}"),
                Refusal::Auth => "authentication failed".to_owned(),
                Refusal::Invalid(e) => format!("invalid: {e}"),
                Refusal::Sender(n) => format!("sent by node {n}, not the watched host"),
                Refusal::Replay(e) => format!("replay: {e}"),
                Refusal::Command => "both arm and disarm".to_owned(),
            };
            format!(r#""event":"refused","why":{why:?}"#)
        }
    };
    println!(r#"{{"t_ms":{now},{line},"state":{state}}}"#);
}

fn open_pins(cli: &Cli) -> anyhow::Result<Pins<OutPin, OutPin, OutPin>> {
    if let Some(dir) = &cli.gpio_sim {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        return Ok(Pins {
            power: OutPin::sim(dir, "power")?,
            reset: OutPin::sim(dir, "reset")?,
            led: OutPin::sim(dir, "led")?,
        });
    }
    let Some(chip) = &cli.gpio_chip else {
        bail!("give --gpio-chip with --power-line, --reset-line and --led-line, or --gpio-sim");
    };
    let (Some(power), Some(reset), Some(led)) = (cli.power_line, cli.reset_line, cli.led_line)
    else {
        bail!("--gpio-chip needs --power-line, --reset-line and --led-line");
    };
    Ok(Pins {
        power: OutPin::cdev(chip, power, "power relay")?,
        reset: OutPin::cdev(chip, reset, "reset")?,
        led: OutPin::cdev(chip, led, "status LED")?,
    })
}

/// Reads the key as the agent does: the file's bytes without trailing whitespace, refused if
/// group or others can read it or if it is shorter than the agent accepts.
fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("key file {shown}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!("key file {shown} has mode {mode:04o}: it must not be accessible by group or others (chmod 600 {shown})");
    }
    let mut bytes = std::fs::read(path).with_context(|| format!("read key file {shown}"))?;
    let len = bytes.trim_ascii_end().len();
    bytes.truncate(len);
    if bytes.len() < KEY_LEN_MIN {
        bail!(
            "key file {shown} holds {} bytes: a cluster key is at least {KEY_LEN_MIN} bytes",
            bytes.len()
        );
    }
    Ok(bytes)
}

/// Exit code when the bridge cannot start: a setting, the key, a line or a port (sysexits
/// EX_CONFIG, as the agent uses for its configuration errors).
const EXIT_CONFIG: u8 = 78;
/// Longest sleep between two steps.
const WAIT_MAX: Duration = Duration::from_millis(100);
/// The agent's shortest cluster key (`MIN_KEY_LEN` in its configuration).
const KEY_LEN_MIN: usize = 32;
