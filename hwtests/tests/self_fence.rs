//! A holder whose resource will not stop must not let anyone else start the group until its
//! host is gone: the engine self-fences (stops feeding the hardware watchdog, which then resets
//! the host), and the peer takes over only once that watchdog's deadline has passed.
//!
//! Real processes: two `watchkeeper run` agents and a witness (alpha has no fence device, so the
//! survivor's evidence is alpha's watchdog deadline, which needs a majority); alpha's watchdog is a FIFO standing in for
//! `/dev/watchdog` (`hwtests::fifo`), so every feed is timestamped; one script resource whose
//! stop fails while a flag file exists. The failing stop is provoked by a planned switchover.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hwtests::agent::{watchkeeper_bin, AgentProcess};
use hwtests::fifo::{FifoEvent, FifoWatchdog};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
/// alpha's watchdog timeout: after its last feed the host would be reset this much later.
const WATCHDOG: Duration = Duration::from_secs(2);

const RESOURCE: &str = r#"#!/bin/sh
action=$1; node=$2; dir=$3
state="$dir/$node.state"
case "$action" in
  start) : > "$state" ;;
  stop) [ -e "$dir/$node.stuck" ] && { echo "ERROR: device busy" >&2; exit 1; }; rm -f "$state" ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    fifo: FifoWatchdog,
}

fn rig() -> Rig {
    let dir = hwtests::util::unique_tempdir("wksf").expect("tempdir");
    let key = dir.path().join("cluster.key");
    fs::write(&key, format!("{}\n", "cd".repeat(32))).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    let script = dir.path().join("res.sh");
    fs::write(&script, RESOURCE).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let fifo = FifoWatchdog::new(&dir.path().join("watchdog")).expect("fifo");
    let ports = [
        hwtests::free_udp_port(),
        hwtests::free_udp_port(),
        hwtests::free_udp_port(),
    ];
    let d = dir.path().display();
    let s = script.display();
    let mut toml = String::new();
    let _ = write!(
        toml,
        "[cluster]\nname = \"sftest\"\nkey_file = \"cluster.key\"\n\n\
         [timing]\nheartbeat_interval = \"100ms\"\ndeadtime = \"600ms\"\n\n\
         [failover]\nfence_delay = \"300ms\"\nstartup_timeout = \"3s\"\n\n\
         [[link]]\nname = \"lan0\"\nkind = \"udp\"\n\n\
         [[node]]\nid = 1\nname = \"alpha\"\ncontrol_socket = \"alpha.sock\"\n\
         state_dir = \"alpha-state\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n\
         watchdog = {{ device = \"{}\", timeout = \"{}ms\", feed_interval = \"100ms\", \
         progress_timeout = \"1s\" }}\n\n\
         [[node]]\nid = 2\nname = \"beta\"\ncontrol_socket = \"beta.sock\"\n\
         state_dir = \"beta-state\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n\n\
         [[node]]\nid = 3\nname = \"gamma\"\nwitness = true\ncontrol_socket = \"gamma.sock\"\n\
         state_dir = \"gamma-state\"\nlinks.lan0 = {{ address = \"127.0.0.1:{}\" }}\n\n\
         [[resource]]\nname = \"director\"\ntype = \"script\"\n\
         start = [\"{s}\", \"start\", \"{{node}}\", \"{d}\"]\n\
         stop = [\"{s}\", \"stop\", \"{{node}}\", \"{d}\"]\n\
         status = [\"{s}\", \"status\", \"{{node}}\", \"{d}\"]\n",
        ports[0],
        fifo.path().display(),
        WATCHDOG.as_millis(),
        ports[1],
        ports[2]
    );
    let config = dir.path().join("watchkeeper.toml");
    fs::write(&config, toml).expect("config");
    Rig { dir, config, fifo }
}

fn start(rig: &Rig, node: &str) -> AgentProcess {
    let bin = watchkeeper_bin().expect("watchkeeper binary");
    let args = ["run", "--log-json", "--node", node, "--config"]
        .into_iter()
        .map(String::from)
        .chain([rig.config.display().to_string()])
        .collect::<Vec<_>>();
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    AgentProcess::spawn(&bin, &args, &rig.dir.path().join(format!("{node}.log")))
        .expect("spawn agent")
}

fn watchkeeper(config: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary"))
        .args(args)
        .args(["--node", node, "--config"])
        .arg(config)
        .output()
        .expect("run watchkeeper")
}

fn report(config: &Path, node: &str) -> Value {
    let out = watchkeeper(config, node, &["resources", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_for(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_holder_that_cannot_stop_starves_its_watchdog_and_the_peer_waits_for_it() {
    let rig = rig();
    let config = rig.config.clone();
    // alpha runs as under systemd with WatchdogSec: its main loop pings this socket.
    let notify_path = rig.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    // Read it at once, as systemd does: a full socket (10 datagrams) would block the sender.
    let pings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let stop_reader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (pings, stop) = (pings.clone(), stop_reader.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = notify.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                        if let Ok(mut p) = pings.lock() {
                            p.push(Instant::now());
                        }
                    }
                }
            }
        })
    };
    std::env::set_var("NOTIFY_SOCKET", &notify_path);
    std::env::set_var("WATCHDOG_USEC", "400000");
    let _alpha = start(&rig, "alpha");
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("WATCHDOG_USEC");
    let _beta = start(&rig, "beta");
    // A witness: with no fence device for alpha, beta needs a majority to rely on alpha's
    // watchdog having reset it.
    let _gamma = start(&rig, "gamma");
    let holding = |n: &str| report(&config, n)["resources"][0]["state"] == "running";
    wait_for("a holder", || holding("alpha") || holding("beta"));
    if holding("beta") {
        // With the witness, beta may have been elected before it heard alpha: a handover needs
        // the new holder alive.
        wait_for("beta hears alpha", || {
            let out = watchkeeper(&config, "beta", &["status", "--json"]);
            let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            st["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "alpha" && p["alive"] == true))
        });
        let out = watchkeeper(&config, "beta", &["switchover", "alpha"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        wait_for("alpha holds", || holding("alpha"));
    }
    assert!(rig.fifo.wait_feeds(5, WAIT), "alpha feeds its watchdog");

    // alpha's resource will not stop; a switchover asks it to.
    fs::write(rig.dir.path().join("alpha.stuck"), "").expect("stick");
    let asked = Instant::now();
    let out = watchkeeper(&config, "alpha", &["switchover", "beta"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_for("alpha self-fences", || {
        report(&config, "alpha")["role"] == "SelfFencing"
    });
    let last_feed = rig
        .fifo
        .feeds()
        .last()
        .copied()
        .expect("feeds before the failure");
    // Past the last feed nothing more arrives, and no magic close lets the device off; but
    // the main loop still pings systemd, so systemd does not restart the agent (whose next run
    // would feed the device again and cancel the reset the peer waits for).
    let window = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let recent = pings
        .lock()
        .map(|p| p.iter().filter(|t| **t >= window).count())
        .unwrap_or(0);
    assert!(
        recent >= 1,
        "alpha stopped pinging systemd after self-fencing"
    );
    assert_eq!(
        rig.fifo.feeds().last().copied(),
        Some(last_feed),
        "fed after the failed stop"
    );
    assert!(!rig.fifo.magic_closed(), "the watchdog was disarmed");
    assert!(
        !rig.fifo
            .events()
            .iter()
            .any(|e| matches!(e, FifoEvent::Byte(_, b'V'))),
        "magic close written"
    );
    assert!(
        rig.dir.path().join("alpha.state").exists(),
        "the resource is still running on alpha (its stop failed)"
    );

    // beta must not start the group while alpha's host may still run it: only after alpha's
    // watchdog would have reset it.
    let deadline = Instant::now() + WAIT;
    while !holding("beta") {
        assert!(
            Instant::now() < deadline,
            "beta did not take over within {WAIT:?}; beta's decisions:\n{}",
            fs::read_to_string(rig.dir.path().join("beta.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("decision") || l.contains("alert") || l.contains("peer_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = asked.elapsed();
    let since_feed = last_feed.elapsed();
    eprintln!(
        "stop failed on alpha; beta started the group {} ms after the switchover was asked, {} ms after alpha's last feed",
        took.as_millis(),
        since_feed.as_millis()
    );
    let beta_log = fs::read_to_string(rig.dir.path().join("beta.log")).unwrap_or_default();
    let started_at = beta_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "resource_started")
        .filter_map(|v| hwtests::agent::log_timestamp(&v))
        .next_back()
        .expect("beta started the resource");
    let fed_at = std::time::SystemTime::now() - last_feed.elapsed();
    let gap = started_at.duration_since(fed_at).unwrap_or_default();
    assert!(
        gap >= WATCHDOG,
        "beta started the group {gap:?} after alpha's last feed, before alpha's {WATCHDOG:?} watchdog could have reset it"
    );
    stop_reader.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = reader.join();
}
