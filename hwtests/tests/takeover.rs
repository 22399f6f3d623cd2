//! The whole takeover path on real processes: two `watchkeeper run` agents elect a holder, which
//! starts the resource group in order (two script resources and a real OCF Dummy); a planned
//! switchover stops it in reverse here and starts it in order there; a holder killed with
//! SIGKILL is fenced through its BMC (ipmi_sim, IPMI v2.0) before the survivor takes over.
//!
//! What is checked from outside the agents: the order in which resources started and stopped
//! (a journal the resources write), which node's resources exist (their state files), the
//! BMC's power log, and that the two agents never both report holding the group.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hwtests::agent::watchkeeper_bin;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use hwtests::status::{both_held, report_holds};
use nix::sys::signal::Signal;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(600);
const WAIT: Duration = Duration::from_secs(20);

/// A resource the test can watch: a state file per node and resource, and one journal line
/// per real start or stop. A `NODE-NAME.fail` file makes its status fail until it is stopped.
const RESOURCE_SCRIPT: &str = r#"#!/bin/sh
action=$1; name=$2; node=$3; dir=$4
state="$dir/$node-$name.state"
case "$action" in
  start) if [ ! -e "$state" ]; then : > "$state"; echo "$node start $name" >> "$dir/journal"; fi ;;
  stop) rm -f "$dir/$node-$name.fail"
        if [ -e "$state" ]; then rm -f "$state"; echo "$node stop $name" >> "$dir/journal"; fi ;;
  status) [ -e "$dir/$node-$name.fail" ] && exit 1; [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

struct Rig {
    pair: Pair,
    bmcs: [IpmiSim; 2],
}

fn rig() -> Rig {
    rig_with("")
}

/// The rig, with `failover` added to its `[failover]` table.
fn rig_with(failover: &str) -> Rig {
    rig_spec(
        PairSpec::new(false, Some(Net::Loopback4), INTERVAL, DEADTIME),
        failover,
    )
}

/// The rig on links `spec`, with `failover` added to its `[failover]` table.
fn rig_spec(spec: PairSpec, failover: &str) -> Rig {
    let bmcs = [
        IpmiSim::start(&IpmiSimConfig::default()),
        IpmiSim::start(&IpmiSimConfig::default()),
    ];
    let pair = Pair::new(spec).expect("pair");
    let dir = pair.dir().to_path_buf();
    let script = dir.join("res.sh");
    fs::write(&script, RESOURCE_SCRIPT).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut text = hwtests::pair::add_ipmi_fencing(
        &fs::read_to_string(&pair.config).expect("config"),
        &[bmcs[0].address(), bmcs[1].address()],
    );
    text.push_str(&format!(
        "\n[failover]\nfence_delay = \"300ms\"\nstartup_timeout = \"3s\"\n{failover}\n"
    ));
    let d = dir.display();
    for res in ["storage", "catalog"] {
        text.push_str(&format!(
            "\n[[resource]]\nname = \"{res}\"\ntype = \"script\"\n\
             start = [\"{s}\", \"start\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             stop = [\"{s}\", \"stop\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             status = [\"{s}\", \"status\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             monitor_interval = \"1s\"\n",
            s = script.display()
        ));
    }
    text.push_str(&format!(
        "\n[[resource]]\nname = \"director\"\ntype = \"ocf\"\nagent = \"heartbeat:Dummy\"\n\
         params = {{ state = \"{d}/{{node}}-director.dummy\" }}\nmonitor_interval = \"1s\"\n"
    ));
    fs::write(&pair.config, text).expect("config");
    Rig { pair, bmcs }
}

fn watchkeeper(config: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary"))
        .args(args)
        .args(["--node", node, "--config"])
        .arg(config)
        .output()
        .expect("run watchkeeper")
}

/// Node `node`'s resource report, if its agent answers.
fn resources(config: &Path, node: &str) -> Option<Value> {
    let out = watchkeeper(config, node, &["resources", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn holds_all(report: &Value) -> bool {
    report["holds"] == Value::Bool(true)
        && report["resources"]
            .as_array()
            .is_some_and(|r| r.len() == 3 && r.iter().all(|r| r["state"] == "running"))
}

/// Waits until node `who` holds the group with every resource running, checking on every
/// round that the two agents never both hold it. A node that is self-fencing (waiting for its
/// watchdog) or whose BMC reports it powered off does not count: on real hardware it is gone.
/// Returns the time it took.
fn wait_holder(config: &Path, who: usize, alive: [bool; 2]) -> Duration {
    wait_holder_powered(config, who, alive, [true, true])
}

fn wait_holder_powered(
    config: &Path,
    who: usize,
    alive: [bool; 2],
    powered: [bool; 2],
) -> Duration {
    let started = Instant::now();
    loop {
        let reports: Vec<Option<Value>> = (0..2)
            .map(|i| {
                if alive[i] {
                    resources(config, NAMES[i])
                } else {
                    None
                }
            })
            .collect();
        let holding = |i: usize| powered[i] && report_holds(reports[i].as_ref());
        if holding(0) && holding(1) {
            if let Some(again) = both_held(reports[0].as_ref(), || resources(config, NAMES[0])) {
                panic!("two holders: {reports:#?} then {again:#}");
            }
        }
        if reports[who].as_ref().is_some_and(holds_all) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "{} does not hold the group within {WAIT:?}: {reports:#?}",
            NAMES[who]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rig with `failover` added, both agents started and the group held: the rig, its
/// configuration, its directory and the holder.
fn pair_holding(failover: &str) -> (Rig, PathBuf, PathBuf, usize) {
    let mut rig = rig_with(failover);
    let config = rig.pair.config.clone();
    let dir = rig.pair.dir().to_path_buf();
    rig.pair.start(0).expect("start alpha");
    rig.pair.start(1).expect("start beta");
    let first = first_holder(&config);
    (rig, config, dir, first)
}

/// The node that holds the whole group first, waited for at most [`WAIT`].
fn first_holder(config: &Path) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(i) =
            (0..2).find(|&i| resources(config, NAMES[i]).is_some_and(|r| holds_all(&r)))
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no holder within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn journal(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("journal"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_group_moves_in_order_by_switchover_and_after_a_fenced_crash() {
    let mut rig = rig();
    let config = rig.pair.config.clone();
    let dir = rig.pair.dir().to_path_buf();
    rig.pair.start(0).expect("start alpha");
    rig.pair.start(1).expect("start beta");

    // 1. One node is elected and starts the group in order.
    let first = first_holder(&config);
    let other = 1 - first;
    let (h, s) = (NAMES[first], NAMES[other]);
    wait_holder(&config, first, [true, true]);
    assert_eq!(
        journal(&dir),
        [format!("{h} start storage"), format!("{h} start catalog")]
    );
    assert!(
        dir.join(format!("{h}-director.dummy")).exists(),
        "Dummy runs on {h}"
    );
    assert!(!dir.join(format!("{s}-director.dummy")).exists());
    // Both agents agree on the holder, and both checked both BMCs in the background.
    for me in [h, s] {
        let deadline = Instant::now() + WAIT;
        let st = loop {
            let out = watchkeeper(&config, me, &["status", "--json"]);
            let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let checked = st["fence_devices"].as_array().is_some_and(|d| {
                d.len() == 2 && d.iter().all(|d| d["healthy"] == Value::Bool(true))
            });
            if checked {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{me}: fence devices not checked: {st}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(st["engine"]["holder"], h, "{st}");
        assert_eq!(st["engine"]["holds"], Value::Bool(me == h), "{st}");
    }

    // 2. Planned switchover: stopped here in reverse, then started there in order.
    let out = watchkeeper(&config, h, &["switchover"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let took = wait_holder(&config, other, [true, true]);
    eprintln!(
        "switchover {h} -> {s}: group running on {s} after {} ms",
        took.as_millis()
    );
    assert_eq!(
        journal(&dir)[2..],
        [
            format!("{h} stop catalog"),
            format!("{h} stop storage"),
            format!("{s} start storage"),
            format!("{s} start catalog"),
        ]
    );
    assert!(
        !dir.join(format!("{h}-director.dummy")).exists(),
        "Dummy stopped on {h}"
    );
    assert!(
        dir.join(format!("{s}-director.dummy")).exists(),
        "Dummy runs on {s}"
    );
    let out = watchkeeper(&config, h, &["switchover"]);
    assert_eq!(out.status.code(), Some(1), "only the holder hands over");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not hold the group"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 3. The holder crashes: it is fenced through its BMC before the survivor takes over.
    assert!(rig.bmcs[other].power_on());
    let killed = Instant::now();
    rig.pair
        .agent(other)
        .kill(Signal::SIGKILL)
        .expect("kill holder");
    let mut alive = [true, true];
    alive[other] = false;
    wait_holder_powered(&config, first, alive, alive);
    assert!(
        !rig.bmcs[other].power_on(),
        "{s} was powered off by its BMC"
    );
    assert!(
        rig.bmcs[other]
            .power_log()
            .iter()
            .any(|l| l.contains("power=0")),
        "{:?}",
        rig.bmcs[other].power_log()
    );
    assert!(rig.bmcs[first].power_on(), "the survivor was not fenced");
    let tail: Vec<String> = journal(&dir)[6..].to_vec();
    assert_eq!(
        tail,
        [format!("{h} start storage"), format!("{h} start catalog")],
        "the dead node's resources are not stopped by anyone; the survivor starts its own"
    );
    let ledger = fs::read_to_string(dir.join(format!("{h}-state/fence-ledger.jsonl")))
        .expect("the survivor recorded the fence");
    assert!(
        ledger.contains(&format!("\"target\":\"{s}\"")) && ledger.contains("\"by\":\"agent\""),
        "{ledger}"
    );
    eprintln!(
        "failover after SIGKILL of {s}: group running on {h} {} ms after the kill",
        killed.elapsed().as_millis()
    );
}

#[test]
fn a_resource_that_keeps_failing_its_monitor_is_restarted_then_the_group_moves() {
    let (rig, config, dir, first) = pair_holding("restart_limit = 1");
    let (h, s) = (NAMES[first], NAMES[1 - first]);

    // One monitor failure of the first resource: restarted here with what depends on it.
    fs::write(dir.join(format!("{h}-storage.fail")), "").expect("inject");
    let deadline = Instant::now() + WAIT;
    while !journal(&dir).contains(&format!("{h} stop storage")) {
        assert!(Instant::now() < deadline, "no restart: {:?}", journal(&dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The stop cleared the failure (the resource's own rule), so the restart succeeds.
    assert!(!dir.join(format!("{h}-storage.fail")).exists());
    wait_holder(&config, first, [true, true]);
    assert_eq!(
        journal(&dir)[2..],
        [
            format!("{h} stop catalog"),
            format!("{h} stop storage"),
            format!("{h} start storage"),
            format!("{h} start catalog"),
        ],
        "the failed resource and everything after it restart, in order"
    );

    // It fails again: past restart_limit the group moves to the peer.
    fs::write(dir.join(format!("{h}-storage.fail")), "").expect("inject again");
    let took = wait_holder(&config, 1 - first, [true, true]);
    eprintln!(
        "second monitor failure on {h}: group running on {s} after {} ms",
        took.as_millis()
    );
    let report = resources(&config, h).expect("old holder answers");
    assert_eq!(report["holds"], Value::Bool(false), "{report}");
    let out = watchkeeper(&config, h, &["cleanup", "storage"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        rig.bmcs[0].power_on() && rig.bmcs[1].power_on(),
        "a handover fences nobody"
    );
}

#[test]
fn after_the_failure_timeout_a_node_that_failed_may_hold_again() {
    // No local restarts: a monitor failure moves the group at once and makes the node
    // ineligible, until its failure is 2 s old.
    let (rig, config, dir, first) = pair_holding("restart_limit = 0\nfailure_timeout = \"2s\"");
    let (h, s) = (NAMES[first], NAMES[1 - first]);
    fs::write(dir.join(format!("{h}-storage.fail")), "").expect("inject");
    wait_holder(&config, 1 - first, [true, true]);
    let moved = Instant::now();
    // The new holder's storage fails as well: with the old holder's failure forgotten, the
    // group comes back to it (without the timeout nobody would be eligible).
    std::thread::sleep(Duration::from_millis(2500));
    fs::write(dir.join(format!("{s}-storage.fail")), "").expect("inject on the peer");
    let took = wait_holder(&config, first, [true, true]);
    eprintln!(
        "{s}'s storage failed {} ms after the group left {h}: back on {h} after {} ms",
        moved.elapsed().as_millis() - took.as_millis(),
        took.as_millis()
    );
    let log = fs::read_to_string(rig.pair.log(first)).unwrap_or_default();
    assert!(
        log.contains("older than the failure timeout forgotten"),
        "{h} logged that it forgot its failure: {log}"
    );
    assert!(
        rig.bmcs[0].power_on() && rig.bmcs[1].power_on(),
        "handovers fence nobody"
    );
}

#[test]
fn a_heartbeat_partition_leaves_one_holder_and_fences_the_other() {
    // The serial cable is the only heartbeat path; the BMCs sit on another network (loopback),
    // and a power-off through a BMC really ends that node's agent.
    let mut rig = rig_spec(PairSpec::new(true, None, INTERVAL, DEADTIME), "");
    let config = rig.pair.config.clone();
    rig.pair.start(0).expect("start alpha");
    rig.pair.start(1).expect("start beta");
    for i in 0..2 {
        let pid = u32::try_from(rig.pair.agent(i).pid().as_raw()).expect("pid");
        rig.bmcs[i].wire_power_to(pid);
    }
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        if let Some(i) =
            (0..2).find(|&i| resources(&config, NAMES[i]).is_some_and(|r| holds_all(&r)))
        {
            break i;
        }
        assert!(Instant::now() < deadline, "no holder within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let standby = 1 - holder;

    // Cut every heartbeat path: each node now thinks the other is dead.
    let cut = Instant::now();
    rig.pair.cable.as_ref().expect("cable").cut();
    // The holder fences at once; the standby would wait the fence delay and is gone by then.
    let deadline = Instant::now() + WAIT;
    while rig.bmcs[standby].power_on() {
        assert!(Instant::now() < deadline, "the standby was not fenced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let fenced_after = cut.elapsed();
    assert!(
        rig.pair
            .agent(standby)
            .wait_exit(Duration::from_secs(5))
            .is_some(),
        "powering the standby off ends its agent"
    );
    let mut alive = [true, true];
    alive[standby] = false;
    // The holder keeps the group throughout; nobody else ever holds it.
    wait_holder_powered(&config, holder, alive, alive);
    std::thread::sleep(DEADTIME * 2);
    wait_holder_powered(&config, holder, alive, alive);
    assert!(rig.bmcs[holder].power_on(), "the holder was not fenced");
    assert_eq!(
        journal(rig.pair.dir())
            .iter()
            .filter(|l| l.contains("start storage"))
            .count(),
        1,
        "the group was never started a second time: {:?}",
        journal(rig.pair.dir())
    );
    eprintln!(
        "partition: {} kept the group, {} powered off {} ms after the cut",
        NAMES[holder],
        NAMES[standby],
        fenced_after.as_millis()
    );

    // The cable is mended and the fenced node powered on: it rejoins as standby.
    rig.pair.cable.as_ref().expect("cable").restore();
    rig.bmcs[standby].set_power_on(true);
    rig.pair.start(standby).expect("restart");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = resources(&config, NAMES[standby]);
        if r.as_ref()
            .is_some_and(|r| r["holds"] == Value::Bool(false) && r["role"] == "Standby")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not rejoin: {r:?}",
            NAMES[standby]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_holder(&config, holder, [true, true]);
}
