//! The watchdog and relay bridge end to end: the real `watchkeeper-bridge` binary on two pty
//! cables with simulated GPIO lines, fed by the agent's real watchdog feeder through the
//! bridge backend, and fenced by the agent's real Modbus RTU driver.
//!
//! The last test runs the real `watchkeeper run` process with `watchdog = { bridge = ... }`:
//! its arm frame, its feeds on the engine's word, its disarm on a clean stop, and the relay
//! opening when the agent is frozen.
//!
//! Each test starts its own processes and stops them by PID (through `AgentProcess`, which also
//! stops them if the test panics); every wait is bounded in time.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use agent::watchdog::{Feeder, FeederParams};
use drivers::fence::modbus::{ModbusDevice, ModbusParams, ModbusTransport, Outlet, OutletControl};
use drivers::fence::{FenceDevice as _, PowerState};
use drivers::watchdog::{BridgeParams, BridgeWatchdog};
use hwtests::agent::AgentProcess;
use hwtests::cable::{Direction, PtyCable};
use proto::NodeId;
use serde_json::Value;

const KEY: &[u8] = b"6b0e3c1f9a2d4e5b8c7f0a1d2e3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";
const CLUSTER_ID: u32 = 77;
const HOST_NODE: u8 = 1;
const TIMEOUT: Duration = Duration::from_millis(1500);
const TRIGGER: Duration = Duration::from_millis(1000);
const FEED_INTERVAL: Duration = Duration::from_millis(200);
/// How late a trigger may be on a loaded 2-core machine running other process tests.
const SLACK: Duration = Duration::from_millis(400);
const SLACK_MS: u64 = 400;

/// A bridge process with its cables and simulated lines.
struct Rig {
    dir: tempfile::TempDir,
    host_cable: PtyCable,
    bus_cable: PtyCable,
    bridge: AgentProcess,
    timeout: Duration,
}

impl Rig {
    fn start(prefix: &str) -> Rig {
        Rig::with_timeout(prefix, TIMEOUT)
    }

    fn with_timeout(prefix: &str, timeout: Duration) -> Rig {
        let dir = hwtests::util::unique_tempdir(prefix).expect("tempdir");
        let host_cable = PtyCable::new(dir.path(), "bridge-host", "agent-wd").expect("cable");
        let bus_cable = PtyCable::new(dir.path(), "bridge-bus", "peer-rs485").expect("cable");
        let key_file = dir.path().join("bridge.key");
        fs::write(&key_file, [KEY, b"\n"].concat()).expect("key");
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let bin = hwtests::util::workspace_bin("watchkeeper-bridge", "WATCHKEEPER_BRIDGE_BIN");
        let gpio = dir.path().join("gpio");
        let args: Vec<String> = vec![
            "--host-serial".into(),
            host_cable.a_path().display().to_string(),
            "--bus-serial".into(),
            bus_cable.a_path().display().to_string(),
            "--key-file".into(),
            key_file.display().to_string(),
            "--cluster-id".into(),
            CLUSTER_ID.to_string(),
            "--host-node".into(),
            HOST_NODE.to_string(),
            "--timeout-ms".into(),
            timeout.as_millis().to_string(),
            "--trigger-ms".into(),
            TRIGGER.as_millis().to_string(),
            "--grace-ms".into(),
            "60000".into(),
            "--gpio-sim".into(),
            gpio.display().to_string(),
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let mut bridge =
            AgentProcess::spawn(&bin, &args, &dir.path().join("bridge.log")).expect("spawn");
        let started = bridge.wait_for_log(|v| v["event"] == "started", Duration::from_secs(10));
        assert!(
            started.is_some(),
            "the bridge did not start: {}",
            bridge.stderr_text()
        );
        Rig {
            dir,
            host_cable,
            bus_cable,
            bridge,
            timeout,
        }
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("bridge.key")
    }

    fn line(&self, name: &str) -> bool {
        let path = self.dir.path().join("gpio").join(name);
        match fs::read_to_string(&path) {
            Ok(level) => level.trim() == "1",
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    /// The power relay is energised: the host's supply is cut.
    fn power_cut(&self) -> bool {
        self.line("power")
    }

    /// Polls the power line every 2 ms until it reads `cut`, for at most `limit`.
    fn wait_power(&self, cut: bool, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.power_cut() == cut {
                return Some(start.elapsed());
            }
            thread::sleep(Duration::from_millis(2));
        }
        None
    }

    fn feeder(&self, key: &[u8], incarnation: u32) -> Feeder {
        let wd = BridgeWatchdog::open(BridgeParams {
            device: self.host_cable.b_path().to_owned(),
            baud: 115_200,
            key: key.to_vec(),
            cluster_id: CLUSTER_ID,
            node: NodeId::new(HOST_NODE).expect("node"),
            incarnation,
        })
        .expect("open the bridge backend");
        let params = FeederParams {
            interval: FEED_INTERVAL,
            progress_timeout: Duration::from_secs(30),
            realtime_priority: None,
            state_dir: None,
        };
        let (feeder, _) = Feeder::start(Box::new(wd), params).expect("feeder");
        feeder.feed().expect("feed");
        feeder
    }

    fn peer(&self) -> ModbusDevice {
        let outlets = [(
            "host".to_owned(),
            vec![Outlet {
                unit: 1,
                control: OutletControl::Coil { address: 0 },
            }],
        )]
        .into_iter()
        .collect();
        ModbusDevice::new(
            "bridge",
            ModbusParams {
                transport: ModbusTransport::Rtu {
                    path: self.bus_cable.b_path().to_owned(),
                    baud: 9600,
                },
                outlets,
                request_timeout: Duration::from_millis(500),
                poll_interval: Duration::from_millis(20),
                off_time: Duration::from_millis(100),
            },
        )
        .expect("modbus device")
    }

    fn events(&self) -> Vec<Value> {
        self.bridge.logs()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|v| v["event"] == event).count()
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn deadline(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

/// Keeps the feeder's progress fresh and checks the relay stays closed for `span`.
fn stays_quiet(rig: &Rig, feeder: &Feeder, span: Duration) {
    let progress = feeder.progress();
    let start = Instant::now();
    for _ in 0..10_000 {
        if start.elapsed() >= span {
            return;
        }
        progress.bump();
        assert!(
            !rig.power_cut(),
            "the relay opened after {:?} of feeding: {:?}",
            start.elapsed(),
            rig.events()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn heartbeats_keep_the_bridge_quiet_the_peer_fences_through_it_and_silence_trips_the_relay() {
    let rig = Rig::start("wk-bridge-");
    assert!(!rig.power_cut() && !rig.line("reset"));
    let mut peer = rig.peer();
    let runtime = rt();
    assert_eq!(
        runtime.block_on(peer.status("host", deadline(3000))),
        Ok(PowerState::On)
    );

    // The agent's feeder arms the bridge and feeds it; more than twice the timeout passes.
    let feeder = rig.feeder(KEY, 1);
    stays_quiet(&rig, &feeder, TIMEOUT * 2 + Duration::from_millis(500));
    assert_eq!(rig.count("armed"), 1, "{:?}", rig.events());
    assert_eq!(rig.count("refused"), 0, "{:?}", rig.events());

    // Line noise on the heartbeat cable is dropped; the feeds keep it quiet.
    rig.host_cable
        .inject(Direction::BtoA, &[0x13, 0x37, 0x00, 0xFF, 0x42, 0x00])
        .expect("inject");
    stays_quiet(&rig, &feeder, Duration::from_millis(600));
    assert!(rig.count("refused") >= 1, "the noise was seen and refused");

    // The peer fences through the bridge with its ordinary Modbus driver, and unfences.
    let off = runtime
        .block_on(peer.off("host", deadline(3000)))
        .expect("off");
    assert_eq!(off.state, PowerState::Off);
    assert!(rig.power_cut(), "the relay is open once off is confirmed");
    // While fenced, feeds or not, the relay stays open.
    thread::sleep(TIMEOUT);
    feeder.progress().bump();
    assert!(rig.power_cut());
    runtime
        .block_on(peer.on("host", deadline(3000)))
        .expect("on");
    assert!(!rig.power_cut());
    assert_eq!(rig.count("fenced"), 1);
    assert_eq!(rig.count("unfenced"), 1);
    // Back in grace, the next feed brings it to armed again.
    stays_quiet(&rig, &feeder, Duration::from_millis(500));
    assert_eq!(rig.count("host_up"), 1, "{:?}", rig.events());

    // The engine stops feeding: the relay opens within the timeout, not before.
    let starved_at = Instant::now();
    feeder.starve("test: stop feeding");
    let latency = rig
        .wait_power(true, TIMEOUT + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("the relay never opened: {:?}", rig.events()));
    eprintln!(
        "trigger latency after the last feed request: {latency:?} (timeout {TIMEOUT:?}, feed \
         interval {FEED_INTERVAL:?})"
    );
    assert!(
        latency + FEED_INTERVAL + Duration::from_millis(50) >= TIMEOUT,
        "fired {latency:?} after starving, before the timeout could have passed"
    );
    assert!(
        latency <= TIMEOUT + SLACK,
        "fired {latency:?} after starving"
    );
    // The peer sees the power cycle as power off.
    assert_eq!(
        runtime.block_on(peer.status("host", deadline(3000))),
        Ok(PowerState::Off)
    );
    // And the relay closes again after the trigger time.
    let reclosed = rig
        .wait_power(false, TRIGGER + Duration::from_secs(1))
        .expect("the relay closes again");
    eprintln!("relay reclosed {reclosed:?} after it was seen open (trigger time {TRIGGER:?})");
    let triggered: Vec<_> = rig
        .events()
        .into_iter()
        .filter(|v| v["event"] == "triggered")
        .collect();
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    assert_eq!(triggered[0]["reason"], "heartbeat_timeout");
    // The bridge fires when the host has been silent for the timeout, never before; after it
    // only by scheduling delay (a few milliseconds on an idle machine).
    let silent_ms = triggered[0]["silent_ms"].as_u64().expect("silent_ms");
    eprintln!("the bridge fired after {silent_ms} ms of silence (timeout {TIMEOUT:?})");
    let timeout_ms = u64::try_from(TIMEOUT.as_millis()).expect("small");
    assert!(
        (timeout_ms..timeout_ms + SLACK_MS).contains(&silent_ms),
        "fired after {silent_ms} ms of silence"
    );
    let power_log = fs::read_to_string(rig.path().join("gpio/power.log")).expect("log");
    let mut levels: Vec<&str> = power_log
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    // The initial level is written twice: when the line is set up and at the first step.
    levels.dedup();
    assert_eq!(
        levels,
        ["0", "1", "0", "1", "0"],
        "fence off/on, trigger, reclose"
    );
    assert!(starved_at.elapsed() < Duration::from_secs(10));
    drop(feeder);
    let mut rig = rig;
    rig.bridge.stop().expect("stop the bridge");
}

#[test]
fn a_host_with_the_wrong_key_never_arms_the_bridge() {
    let rig = Rig::start("wk-bridge-key-");
    let wrong = b"0000000000000000000000000000000000000000000000000000000000000000";
    let feeder = rig.feeder(wrong, 1);
    let progress = feeder.progress();
    let start = Instant::now();
    while start.elapsed() < TIMEOUT * 2 {
        progress.bump();
        thread::sleep(Duration::from_millis(50));
    }
    feeder.starve("test: stop");
    thread::sleep(TIMEOUT);
    assert!(!rig.power_cut(), "never armed, never fires");
    assert_eq!(rig.count("armed"), 0);
    let refused: Vec<_> = rig
        .events()
        .into_iter()
        .filter(|v| v["event"] == "refused")
        .collect();
    assert!(refused.len() >= 5, "{refused:?}");
    assert!(refused.iter().all(|v| v["why"] == "authentication failed"));
    drop(feeder);
    let mut rig = rig;
    rig.bridge.stop().expect("stop the bridge");
}

/// The agent process: `watchkeeper run` for node alpha of a two-node cluster whose peer never
/// starts, with the bridge as its watchdog and the bridge's key file as the cluster key.
fn agent_config(rig: &Rig) -> PathBuf {
    let ports = [hwtests::free_udp_port(), hwtests::free_udp_port()];
    let toml = format!(
        "[cluster]\nname = \"bridgetest\"\nid = {CLUSTER_ID}\nkey_file = \"{}\"\n\n\
         [timing]\nheartbeat_interval = \"50ms\"\ndeadtime = \"500ms\"\n\n\
         [[link]]\nname = \"lan0\"\nkind = \"udp\"\n\n\
         [[node]]\nid = {HOST_NODE}\nname = \"alpha\"\ncontrol_socket = \"alpha.sock\"\n\
         state_dir = \"alpha-state\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n\
         watchdog = {{ bridge = \"{}\", timeout = \"{}s\", feed_interval = \"100ms\", \
         progress_timeout = \"1s\" }}\n\n\
         [[node]]\nid = 2\nname = \"beta\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n",
        rig.key_file().display(),
        ports[0],
        rig.host_cable.b_path().display(),
        rig.timeout.as_secs(),
        ports[1]
    );
    let path = rig.path().join("watchkeeper.toml");
    fs::write(&path, toml).expect("config");
    path
}

fn start_agent(rig: &Rig, config: &std::path::Path, log: &str) -> AgentProcess {
    let bin = hwtests::agent::watchkeeper_bin().expect("watchkeeper binary");
    let args = [
        "run",
        "--log-json",
        "--node",
        "alpha",
        "--config",
        &config.display().to_string(),
    ]
    .map(String::from);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut agent = AgentProcess::spawn(&bin, &args, &rig.path().join(log)).expect("spawn agent");
    let armed = agent.wait_for_log(|v| v["event"] == "watchdog_armed", Duration::from_secs(10));
    assert!(
        armed.is_some(),
        "the agent did not arm the bridge:\n{}\n{}",
        fs::read_to_string(agent.log_path()).unwrap_or_default(),
        agent.stderr_text()
    );
    agent
}

/// Waits up to `limit` for the bridge to log `event` `n` times.
fn wait_count(rig: &Rig, event: &str, n: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if rig.count(event) >= n {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn the_agent_process_arms_feeds_and_disarms_the_bridge_and_a_frozen_agent_trips_it() {
    let timeout = Duration::from_secs(2);
    let rig = Rig::with_timeout("wk-bridge-agent-", timeout);
    let config = agent_config(&rig);

    // Armed by the agent's first run, kept quiet by its feeds for twice the timeout.
    let mut agent = start_agent(&rig, &config, "alpha-1.log");
    assert!(
        wait_count(&rig, "armed", 1, Duration::from_secs(5)),
        "{:?}",
        rig.events()
    );
    let start = Instant::now();
    while start.elapsed() < timeout * 2 {
        assert!(
            !rig.power_cut(),
            "the relay opened under a running agent: {:?}",
            rig.events()
        );
        thread::sleep(Duration::from_millis(20));
    }

    // A clean stop sends the disarm frame: no trigger afterwards.
    let status = agent.stop().expect("stop the agent");
    assert!(status.success(), "agent exit {status}");
    assert!(
        wait_count(&rig, "disarmed", 1, Duration::from_secs(5)),
        "{:?}",
        rig.events()
    );
    thread::sleep(timeout + Duration::from_millis(500));
    assert!(
        !rig.power_cut(),
        "a disarmed bridge fired: {:?}",
        rig.events()
    );

    // The next run arms again (its incarnation grew, so its frames are not replays) ...
    let mut agent = start_agent(&rig, &config, "alpha-2.log");
    assert!(
        wait_count(&rig, "armed", 2, Duration::from_secs(5)),
        "{:?}",
        rig.events()
    );
    thread::sleep(Duration::from_millis(500));
    assert!(!rig.power_cut());
    // ... and when it hangs, the relay opens within the timeout.
    let frozen_at = Instant::now();
    agent.sigstop().expect("SIGSTOP");
    let latency = rig
        .wait_power(true, timeout + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("the relay never opened: {:?}", rig.events()));
    eprintln!("relay opened {latency:?} after the agent froze (timeout {timeout:?})");
    assert!(latency <= timeout + SLACK, "{latency:?}");
    assert!(
        latency + Duration::from_millis(150) >= timeout,
        "{latency:?}"
    );
    assert!(frozen_at.elapsed() < Duration::from_secs(10));
    let refused = rig.count("refused");
    assert_eq!(
        refused,
        0,
        "every frame of both runs was accepted: {:?}",
        rig.events()
    );
    agent
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL");
    agent.stop().expect("reap the agent");
    let mut rig = rig;
    rig.bridge.stop().expect("stop the bridge");
}
