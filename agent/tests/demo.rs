//! `watchkeeper demo --script`, run as a newcomer would run it: it must fail over, report each
//! step with its time, exit 0, and leave no process and no directory behind.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

#[test]
fn the_scripted_demo_fences_through_the_bmc_reports_and_leaves_nothing_behind() {
    let out = run_demo(&["demo", "--script"]);
    if nix::unistd::geteuid().is_root() {
        // As root each node is a namespace of its own, deleted at the end.
        let tag = namespaces_tag(&out).expect("as root the nodes get network namespaces");
        assert!(
            out.contains("lan0: UDP 10.89.0.1:5405 10.89.0.2:5405"),
            "{out}"
        );
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip");
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.contains(&tag),
            "namespaces {tag}* left behind:\n{list}"
        );
    } else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root: the demo's namespaces must be tested there"
        );
        eprintln!("not root: the demo runs on 127.0.0.1 (its namespaces need root)");
        assert!(out.contains("network    127.0.0.1"), "{out}");
    }
    check_failover(&out);
}

#[test]
fn on_loopback_the_demo_fails_over_as_well() {
    let out = run_demo(&["demo", "--script", "--loopback"]);
    assert!(out.contains("network    127.0.0.1 (--loopback)"), "{out}");
    assert!(namespaces_tag(&out).is_none(), "{out}");
    check_failover(&out);
}

/// The namespace prefix the demo names in its `network` line (`wkd<tag>-`).
fn namespaces_tag(out: &str) -> Option<String> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("network "))?;
    let start = line.find("wkd")?;
    let rest = &line[start..];
    Some(rest[..rest.find('-')? + 1].to_owned())
}

/// What every scripted run must show: each step, a total under 5 s, and a clean stop.
fn check_failover(out: &str) {
    let total_ms = number_after(out, "total failover: ").expect("a total failover time");
    assert!(total_ms < 5000, "failover took {total_ms} ms:\n{out}");
    for line in [
        "detection: ",
        "fencing: alpha's BMC: IPMI chassis power off: ",
        "fence confirmed: beta's fencing level 1 of alpha read the chassis power back off",
        "takeover: ",
        "breakdown: detection ",
        "fenced it through its BMC (IPMI chassis power off), read back off",
        "alpha's BMC: IPMI chassis power on: alpha powered on, booting it",
        "rejoined as Standby",
        "powered on through its BMC",
        "== summary",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    // The PDU, fencing level 2, was never needed.
    assert!(!out.contains("PDU coil 0 written"), "{out}");
    assert_devices_seen_healthy(out);
    assert_group_started(out);
}

#[test]
fn with_the_holders_bmc_down_the_pdu_fences_as_the_second_level() {
    let out = run_demo(&["demo", "--script", "--bmc-down"]);
    let total_ms = number_after(&out, "total failover: ").expect("a total failover time");
    // The BMC's level fails after its 1 s timeout before the PDU's level runs.
    assert!(
        (1000..6000).contains(&total_ms),
        "failover took {total_ms} ms:\n{out}"
    );
    for line in [
        "alpha's BMC stops answering (--bmc-down)",
        "bmc-alpha FAILED on alpha",
        "fence FAILED: beta's fencing level 1 of alpha did not confirm",
        "fencing: PDU coil 0 written 0: alpha powered off",
        "fence confirmed: beta's fencing level 2 of alpha read the outlet back off",
        "fenced it through the PDU (coil 0 off), read back off",
        "powered on through the PDU",
        "rejoined as Standby",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(!out.contains("IPMI chassis power off"), "{out}");
    assert_group_started(&out);
}

/// Every resource of the group was started on the survivor.
fn assert_group_started(out: &str) {
    for resource in ["storage", "catalog", "director"] {
        assert!(
            out.contains(&format!(" started {resource} (")),
            "{resource} not started on the survivor:\n{out}"
        );
    }
    // Every agent stopped by itself on SIGTERM within the demo's grace: the holder stopped
    // its group and left, nothing waited on a task that never ends.
    assert!(
        !out.contains("killed with SIGKILL after the grace"),
        "an agent did not stop on SIGTERM:\n{out}"
    );
}

/// The view showed the agents' background checks of all three devices passing.
fn assert_devices_seen_healthy(out: &str) {
    assert!(
        out.lines().any(|l| l.contains(" view ")
            && l.contains("bmc-alpha (ipmi) ok")
            && l.contains("bmc-beta (ipmi) ok")
            && l.contains("pdu (modbus) ok")),
        "no view line with every fence device healthy:\n{out}"
    );
}

/// Runs the demo with a bounded wait and checks what must hold however it went: every process
/// it started is gone (with its process group), and its directory is removed.
fn run_demo(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchkeeper"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watchkeeper demo");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + DEMO_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let pids = started_pids(&out);
    let Some(status) = status else {
        // Leave nothing behind on this machine either.
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        panic!("the demo did not end within {DEMO_WAIT:?}:\n{out}\n{err}");
    };
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(pids.len() >= 3, "started pids: {pids:?}\n{out}");
    for pid in pids {
        // Each agent leads its own process group: the group must be empty too, so nothing the
        // agent ran (resource agents) outlives it.
        assert_eq!(
            killpg(Pid::from_raw(pid), None),
            Err(Errno::ESRCH),
            "process group {pid} still has processes after the demo ended:\n{out}"
        );
        assert_eq!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH));
    }
    let dir = out
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("directory"))
        .map(|d| PathBuf::from(d.trim()))
        .expect("the demo names its directory");
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(out.contains(&format!("removed {}", dir.display())), "{out}");
    out
}

/// Pids from the demo's `started NODE pid N` lines.
fn started_pids(out: &str) -> Vec<i32> {
    out.lines()
        .filter_map(|l| {
            let rest = &l[l.find("started ")? + "started ".len()..];
            let pid = rest.split_once(" pid ")?.1;
            pid.trim().parse().ok()
        })
        .collect()
}

/// The number right after `prefix` in the output.
fn number_after(out: &str, prefix: &str) -> Option<u64> {
    let rest = &out[out.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The whole demo takes about 10 s: election, failover, rejoin, 2 s of watching, shutdown.
const DEMO_WAIT: Duration = Duration::from_secs(90);
