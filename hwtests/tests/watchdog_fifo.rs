//! The real `watchkeeper run` process feeding a FIFO that stands in for `/dev/watchdog`: feeds
//! arrive at the configured interval; they stop at once when the agent is frozen (SIGSTOP) or
//! killed (SIGKILL), and neither writes the magic close; a clean stop (SIGTERM) writes it; the
//! next start reports what the previous run left. Also `watchkeeper watchdog test` against the
//! FIFO: it refuses without its confirmation flag, and with it feeds, stops feeding and leaves
//! its last words.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hwtests::agent::{watchkeeper_bin, AgentProcess};
use hwtests::fifo::FifoWatchdog;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(10);

/// A directory with a key, a FIFO watchdog and a configuration whose node alpha feeds it.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    fifo: FifoWatchdog,
}

impl Setup {
    fn new() -> Self {
        let dir = hwtests::util::unique_tempdir("wkwd").expect("tempdir");
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let fifo = FifoWatchdog::new(&dir.path().join("watchdog")).expect("fifo");
        let ports = [hwtests::free_udp_port(), hwtests::free_udp_port()];
        let mut toml = String::new();
        let _ = write!(
            toml,
            "[cluster]\nname = \"wdtest\"\nkey_file = \"cluster.key\"\n\n\
             [timing]\nheartbeat_interval = \"50ms\"\ndeadtime = \"500ms\"\n\n\
             [[link]]\nname = \"lan0\"\nkind = \"udp\"\n\n\
             [[node]]\nid = 1\nname = \"alpha\"\ncontrol_socket = \"alpha.sock\"\n\
             state_dir = \"alpha-state\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n\
             watchdog = {{ device = \"{}\", timeout = \"2s\", feed_interval = \"{}ms\", \
             progress_timeout = \"1s\" }}\n\n\
             [[node]]\nid = 2\nname = \"beta\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n",
            ports[0],
            fifo.path().display(),
            INTERVAL.as_millis(),
            ports[1]
        );
        let config = dir.path().join("watchkeeper.toml");
        std::fs::write(&config, toml).expect("config");
        Self { dir, config, fifo }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("alpha-state")
    }

    fn start(&self, log: &str) -> AgentProcess {
        let bin = watchkeeper_bin().expect("watchkeeper binary");
        let args = [
            "run",
            "--log-json",
            "--node",
            "alpha",
            "--config",
            &self.config.display().to_string(),
        ]
        .map(String::from);
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let mut agent =
            AgentProcess::spawn(&bin, &args, &self.dir.path().join(log)).expect("spawn agent");
        wait_event(&mut agent, "watchdog_armed");
        agent
    }
}

fn wait_event(agent: &mut AgentProcess, event: &str) -> Value {
    agent
        .wait_for_log(|v| v["event"] == event, WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no {event} within {WAIT:?}; log:\n{}\nstderr:\n{}",
                std::fs::read_to_string(agent.log_path()).unwrap_or_default(),
                agent.stderr_text()
            )
        })
}

fn gaps(feeds: &[Instant]) -> Vec<Duration> {
    feeds.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn feeds_arrive_at_the_interval_and_a_clean_stop_writes_the_magic_close() {
    let s = Setup::new();
    let mut agent = s.start("alpha.log");
    assert!(s.fifo.wait_feeds(21, WAIT), "fewer than 21 feeds");
    let feeds = s.fifo.feeds();
    let gaps = gaps(&feeds[1..21]);
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap_or(1);
    let max = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        mean >= INTERVAL - Duration::from_millis(5) && mean <= INTERVAL + Duration::from_millis(10),
        "mean gap {mean:?} for interval {INTERVAL:?}"
    );
    assert!(
        max < INTERVAL * 2,
        "a gap of {max:?} for interval {INTERVAL:?}"
    );
    assert!(!s.fifo.magic_closed(), "magic close while running");
    assert!(s.state_dir().join("watchdog.armed").exists());

    let status = agent.stop().expect("stop");
    assert!(status.success(), "agent exit {status}");
    wait_event(&mut agent, "watchdog_disarmed");
    assert!(
        s.fifo.wait_magic_close(WAIT),
        "no magic close after a clean stop"
    );
    let events = s.fifo.events();
    assert!(
        matches!(
            events
                .iter()
                .rev()
                .find(|e| matches!(e, hwtests::fifo::FifoEvent::Byte(..))),
            Some(hwtests::fifo::FifoEvent::Byte(_, b'V'))
        ),
        "the last byte written is not the magic close: {:?}",
        events.iter().rev().take(3).collect::<Vec<_>>()
    );
    assert!(
        !s.state_dir().join("watchdog.armed").exists(),
        "armed record left after a clean disarm"
    );
}

#[test]
fn a_frozen_agent_stops_feeding_at_once() {
    let s = Setup::new();
    let agent = s.start("alpha.log");
    assert!(s.fifo.wait_feeds(5, WAIT));
    agent.sigstop().expect("sigstop");
    let frozen = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // A feed already written when the signal landed may still be read a moment later (the
    // reader's time stamp, on a loaded machine): one, within an interval. An agent that kept
    // feeding would have written about fifteen.
    let late: Vec<Duration> = s
        .fifo
        .feeds()
        .into_iter()
        .filter(|&t| t > frozen)
        .map(|t| t - frozen)
        .collect();
    assert!(
        late.len() <= 1 && late.iter().all(|&d| d < INTERVAL),
        "fed while frozen: {late:?} after SIGSTOP"
    );
    assert!(!s.fifo.magic_closed());
    assert_eq!(
        s.fifo.closed_at(),
        None,
        "a frozen agent keeps the device open"
    );
}

#[test]
fn a_killed_agent_stops_feeding_without_magic_close_and_the_next_start_reports_it() {
    let s = Setup::new();
    let mut agent = s.start("alpha.log");
    assert!(s.fifo.wait_feeds(5, WAIT));
    agent
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("sigkill");
    let killed = Instant::now();
    agent.wait_exit(WAIT).expect("killed agent exits");
    std::thread::sleep(Duration::from_millis(500));
    let late = s
        .fifo
        .feeds()
        .into_iter()
        .filter(|&t| t > killed + Duration::from_millis(20));
    assert_eq!(late.count(), 0, "fed after SIGKILL");
    assert!(!s.fifo.magic_closed(), "SIGKILL must not disarm");
    assert!(s.fifo.closed_at().is_some(), "the kernel closed the device");
    assert!(s.state_dir().join("watchdog.armed").exists());

    // The next run reads the armed record: the previous agent ended without disarming, with no
    // last words (it had no chance to say any), on the same boot.
    let mut again = s.start("alpha-2.log");
    let report = wait_event(&mut again, "watchdog_previous_run");
    assert_eq!(report["armed_before"], true, "{report}");
    assert_eq!(report["watchdog_reset"], false, "{report}");
    assert_eq!(report["last_words"], "-", "{report}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("ended without disarming") && m.contains("no last words")),
        "{report}"
    );
    again.stop().expect("stop");
    assert!(
        s.fifo.wait_magic_close(WAIT),
        "no magic close after a clean stop"
    );
}

#[test]
fn watchdog_test_refuses_without_confirmation() {
    let s = Setup::new();
    let bin = watchkeeper_bin().expect("binary");
    let out = Command::new(&bin)
        .args(["watchdog", "test", "--device"])
        .arg(s.fifo.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--i-understand-this-resets-the-host"),
        "{stderr}"
    );
    assert!(s.fifo.feeds().is_empty(), "fed although refused");
}

#[test]
fn watchdog_test_feeds_then_starves_with_last_words() {
    let s = Setup::new();
    let bin = watchkeeper_bin().expect("binary");
    let state = s.dir.path().join("test-state");
    let started = Instant::now();
    let out = Command::new(&bin)
        .args([
            "watchdog",
            "test",
            "--i-understand-this-resets-the-host",
            "--timeout-s",
            "1",
        ])
        .arg("--device")
        .arg(s.fifo.path())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A FIFO resets nothing, so the test must report failure after waiting.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("watchdog test FAILED"), "{stdout}");
    assert!(started.elapsed() >= Duration::from_secs(4), "gave up early");
    // One feed at arming, then one per interval until it stops after three intervals.
    let feeds = s.fifo.feeds().len();
    assert!((3..=4).contains(&feeds), "{feeds} feeds: {stdout}");
    assert!(!s.fifo.magic_closed());
    let words = std::fs::read_to_string(state.join("watchdog.last-words")).expect("last words");
    assert!(words.contains("watchkeeper watchdog test"), "{words}");
}

#[test]
fn a_start_after_a_watchdog_reset_raises_an_alert_and_a_journal_line() {
    let s = Setup::new();
    // What a run that was reset by its watchdog leaves: the armed record of an earlier boot.
    std::fs::create_dir_all(s.state_dir()).expect("state dir");
    let mut armed = agent::watchdog::state::Armed::now(&s.fifo.path().display().to_string(), 2);
    armed.boot_id = Some("00000000-0000-4000-8000-000000000000".to_owned());
    agent::watchdog::state::write_armed(&s.state_dir(), &armed).expect("armed record");
    let out = s.dir.path().join("alert.json");
    let hook = s.dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncat > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\n",
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut toml = std::fs::read_to_string(&s.config).expect("config");
    let _ = write!(
        toml,
        "\n[[alert]]\nname = \"hook\"\nkind = \"hook\"\ncommand = [\"{}\", \"{}\"]\n\
         events = [\"watchdog_reboot\"]\n",
        hook.display(),
        out.display()
    );
    std::fs::write(&s.config, toml).expect("config");

    let mut agent = s.start("alpha.log");
    let deadline = Instant::now() + WAIT;
    while !out.exists() {
        assert!(Instant::now() < deadline, "no watchdog_reboot alert");
        std::thread::sleep(Duration::from_millis(50));
    }
    let alert: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("alert")).expect("json");
    assert_eq!(alert["kind"], "watchdog_reboot", "{alert}");
    assert_eq!(alert["node"], "alpha", "{alert}");
    assert_eq!(alert["outcome"], "reset", "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .is_some_and(|m| m.contains("rebooted while the watchdog was armed")),
        "{alert}"
    );
    let journal = std::fs::read_to_string(s.state_dir().join("journal.jsonl")).expect("journal");
    assert!(
        journal
            .lines()
            .any(|l| l.contains("\"kind\":\"watchdog_reboot\"")),
        "{journal}"
    );
    agent.stop().expect("stop");
}
