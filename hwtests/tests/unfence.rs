//! Fabric fencing and unfencing end to end: real `watchkeeper` processes, net-snmp's snmpd
//! playing the SAN switch, and the fence ledger in the node's state directory.
//!
//! What must hold: a port disabled by a fence is never enabled while the cluster still
//! considers the node dead (the command refuses, the agent waits), it is enabled once the node
//! is heard again (by the agent with `unfence = "auto"`, by `watchkeeper unfence` with
//! `"manual"`), and every step is in the ledger.

use std::fs;
use std::io::Write as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hwtests::agent::watchkeeper_bin;
use hwtests::pair::{Net, Pair, PairSpec};
use hwtests::snmpd::{Snmpd, SnmpdOptions, V2C_RW_COMMUNITY};
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(600);
/// Beta's two switch ports (multipath): by ifIndex and by ifName.
const PORTS: [u32; 2] = [3, 4];

fn pair_with_switch(snmpd: &Snmpd, unfence: &str) -> Pair {
    let pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))
    .expect("pair");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&pair.config)
        .expect("config");
    write!(
        file,
        "\n[[fence_device]]\nname = \"san\"\ntype = \"ifmib\"\naddress = \"{}\"\n\
         community = \"{V2C_RW_COMMUNITY}\"\nports = {{ beta = [{}, \"port{}\"] }}\n\
         unfence = \"{unfence}\"\ntimeout = \"2s\"\nmonitor_interval = \"300ms\"\n",
        snmpd.address(),
        PORTS[0],
        PORTS[1]
    )
    .expect("append device");
    for name in ["alpha-state", "beta-state"] {
        fs::create_dir_all(pair.dir().join(name)).expect("state dir");
    }
    pair
}

fn watchkeeper(pair: &Pair, args: &[&str]) -> Output {
    let bin = watchkeeper_bin().expect("watchkeeper binary");
    Command::new(bin)
        .args(args)
        .arg("--node")
        .arg("alpha")
        .arg("--config")
        .arg(&pair.config)
        .output()
        .expect("run watchkeeper")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ports_up(snmpd: &Snmpd) -> [bool; 2] {
    PORTS.map(|p| snmpd.port_admin_up(p))
}

fn ledger(pair: &Pair) -> Vec<Value> {
    fs::read_to_string(pair.dir().join("alpha-state/fence-ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn alive(status: &Value, peer: &str) -> bool {
    hwtests::pair::peer(status, peer).is_some_and(|p| p["alive"] == Value::Bool(true))
}

#[test]
fn manual_unfence_is_refused_while_the_node_is_dead_and_runs_once_it_is_heard() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let mut pair = pair_with_switch(&snmpd, "manual");

    let out = watchkeeper(
        &pair,
        &[
            "fence",
            "san",
            "off",
            "--target",
            "beta",
            "--reason",
            "test fence",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ports_up(&snmpd), [false, false], "both paths isolated");

    // No agent to ask: refused, nothing changes.
    let out = watchkeeper(&pair, &["unfence", "beta"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
    assert!(
        text(&out).contains("cannot ask the local agent"),
        "{}",
        text(&out)
    );
    assert_eq!(ports_up(&snmpd), [false, false]);

    // Alpha runs but does not hear beta: refused as still dead, and recorded.
    pair.start(0).expect("start alpha");
    pair.wait_status(0, |s| s["node"] == "alpha", Duration::from_secs(5))
        .expect("alpha answers");
    let out = watchkeeper(&pair, &["unfence", "beta"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        text(&out).contains("still considered dead"),
        "{}",
        text(&out)
    );
    assert_eq!(ports_up(&snmpd), [false, false]);

    let out = watchkeeper(&pair, &["unfence", "--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("san ports of beta disabled since")
            && text(&out).contains("test fence"),
        "{}",
        text(&out)
    );

    // Beta rejoins; with unfence = "manual" the agent leaves the ports alone.
    pair.start(1).expect("start beta");
    pair.wait_status(0, |s| alive(s, "beta"), Duration::from_secs(5))
        .expect("alpha hears beta");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ports_up(&snmpd),
        [false, false],
        "manual: the agent does not unfence"
    );

    let out = watchkeeper(&pair, &["unfence", "beta", "--reason", "checked by hand"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ports_up(&snmpd), [true, true]);
    let out = watchkeeper(&pair, &["unfence", "--list"]);
    assert!(
        text(&out).contains("no fabric fence in force"),
        "{}",
        text(&out)
    );

    let entries = ledger(&pair);
    let actions: Vec<(String, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("?").to_owned(),
                e["ok"] == Value::Bool(true),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("off".to_owned(), true),
            ("unfence".to_owned(), false),
            ("unfence".to_owned(), true)
        ],
        "{entries:#?}"
    );
    let last = entries.last().expect("entry");
    assert_eq!(last["by"], "operator");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("checked by hand") && r.contains("alpha hears beta")),
        "{last}"
    );
}

#[test]
fn automatic_unfence_waits_for_the_node_to_rejoin() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let mut pair = pair_with_switch(&snmpd, "auto");

    let out = watchkeeper(&pair, &["fence", "san", "off", "--target", "beta"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ports_up(&snmpd), [false, false]);

    pair.start(0).expect("start alpha");
    pair.wait_status(0, |s| s["node"] == "alpha", Duration::from_secs(5))
        .expect("alpha answers");
    // Two deadtimes without beta: the ports stay disabled.
    std::thread::sleep(DEADTIME * 2);
    assert_eq!(ports_up(&snmpd), [false, false], "dead node stays isolated");

    let rejoin = Instant::now();
    pair.start(1).expect("start beta");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports_up(&snmpd) != [true, true] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ports_up(&snmpd),
        [true, true],
        "agent unfenced beta after it rejoined; snmpd log:\n{}",
        snmpd.log()
    );
    eprintln!(
        "beta's ports enabled {} ms after beta started",
        rejoin.elapsed().as_millis()
    );
    // The unfence is recorded once the confirming read is in; give it the same bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut entries = ledger(&pair);
    while entries.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        entries = ledger(&pair);
    }
    let last = entries.last().expect("entry");
    assert_eq!(last["action"], "unfence", "{entries:#?}");
    assert_eq!(last["by"], "agent");
    assert_eq!(last["ok"], Value::Bool(true));
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("beta rejoined")),
        "{last}"
    );

    // A node that is up again and not fenced is not touched again: one unfence only.
    pair.agent(1).stop().expect("stop beta");
    pair.wait_status(0, |s| !alive(s, "beta"), Duration::from_secs(5))
        .expect("alpha sees beta dead");
    pair.start(1).expect("restart beta");
    pair.wait_status(0, |s| alive(s, "beta"), Duration::from_secs(5))
        .expect("alpha hears beta again");
    std::thread::sleep(Duration::from_millis(300));
    let unfences = ledger(&pair)
        .iter()
        .filter(|e| e["action"] == "unfence")
        .count();
    assert_eq!(unfences, 1, "{:#?}", ledger(&pair));
}

#[test]
fn a_fence_device_that_stops_answering_shows_as_failing_in_status() {
    let mut snmpd = Snmpd::start(&SnmpdOptions::default());
    let mut pair = pair_with_switch(&snmpd, "manual");
    pair.start(0).expect("start alpha");
    let healthy = |want: bool| {
        move |s: &Value| {
            s["fence_devices"]
                .as_array()
                .and_then(|d| d.first())
                .is_some_and(|d| d["name"] == "san" && d["healthy"] == Value::Bool(want))
        }
    };
    pair.wait_status(0, healthy(true), Duration::from_secs(10))
        .expect("the switch is checked and healthy");
    snmpd.stop();
    let st = pair
        .wait_status(0, healthy(false), Duration::from_secs(10))
        .expect("the silent switch is reported");
    let error = st["fence_devices"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no answer"), "{st}");
    let log = fs::read_to_string(pair.log(0)).unwrap_or_default();
    assert!(
        log.contains("\"event\":\"fence_device_health\"") && log.contains("failing its check"),
        "{log}"
    );
}
