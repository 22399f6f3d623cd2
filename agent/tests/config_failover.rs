//! `[failover]` and witnesses: the budget's values are checked against each other with exact
//! messages, and the engine's configuration is derived from the file.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agent::config;

const BASE: &str = two_node_header!();

fn parse(extra: &str, nodes_extra: &str) -> Result<config::Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789abcdef\n").expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path = dir.path().join("w.toml");
    let text = format!("{BASE}{nodes_extra}\n{extra}");
    config::parse(&path, &text)
        .map_err(|e| e.to_string().replace(&path.display().to_string(), "{file}"))
}

#[test]
fn defaults_and_engine_config() {
    let c = parse("", "").expect("valid");
    assert_eq!(c.failover.fence_delay, config::DEFAULT_FENCE_DELAY);
    assert_eq!(c.failover.startup_timeout, config::DEFAULT_STARTUP_TIMEOUT);
    let me = c.node_by_name("alpha").map(|n| n.id).expect("alpha");
    let e = c.engine_config(me, vec!["director".into()]);
    assert_eq!(e.nodes.len(), 2);
    assert_eq!(e.deadtime, Duration::from_secs(1));
    assert_eq!(e.fence_level_timeout, config::DEFAULT_FENCE_LEVEL_TIMEOUT);
    assert!(e.nodes.iter().all(|n| !n.witness && n.fencing.is_empty()));
    assert_eq!(
        e.failure_timeout, None,
        "failures count until cleanup unless told"
    );
    let budget = c.failover_budget();
    assert_eq!(budget[0], ("detect", Duration::from_millis(1100)));
    assert_eq!(budget[1], ("fence delay", config::DEFAULT_FENCE_DELAY));
}

#[test]
fn a_witness_is_a_voter_that_never_holds() {
    let witness = "\n[[node]]\nid = 3\nname = \"sd-host\"\nwitness = true\nlinks.lan0 = { address = \"192.168.7.3:5405\" }\n";
    let c = parse("[failover]\nfence_delay = \"0ms\"\n", witness)
        .expect("a witness makes a zero delay fine");
    let me = c.node_by_name("alpha").map(|n| n.id).expect("alpha");
    let e = c.engine_config(me, Vec::new());
    let w: Vec<&str> = e
        .nodes
        .iter()
        .filter(|n| n.witness)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(w, ["sd-host"]);
    assert_eq!(c.failover_budget()[1].1, Duration::ZERO);
}

#[test]
fn inconsistent_budgets_are_refused_with_the_reason() {
    let cases = [
        (
            "[failover]\nstall_timeout = \"150ms\"\n",
            "{file}:20:17: failover.stall_timeout: stall_timeout 150ms is shorter than 2 heartbeat intervals (200ms): one late tick would look like a stalled engine",
        ),
        (
            "[failover]\nelection_timeout = \"200ms\"\n",
            "{file}:20:20: failover.election_timeout: election_timeout 200ms is shorter than 3 heartbeat intervals (300ms): votes could not arrive in time",
        ),
        (
            "[failover]\nstartup_timeout = \"500ms\"\n",
            "{file}:20:19: failover.startup_timeout: startup_timeout 500ms is shorter than the deadtime (1s): a booting node would fence peers it simply has not heard yet",
        ),
        (
            "[failover]\nfence_delay = \"0ms\"\n",
            "{file}:20:15: failover.fence_delay: fence_delay is 0 in a two-node cluster without a witness: in a heartbeat-only partition both nodes would fence each other at once",
        ),
        (
            "[failover]\nfence_timeout = \"50ms\"\n",
            "{file}:20:17: failover.fence_timeout: fence_timeout 50ms is too short: no device confirms a power-off that fast (at least 100ms)",
        ),
        (
            "[failover]\nfence_delay = 5\n",
            "{file}:20:15: failover.fence_delay: fence_delay 5 has no unit: expected a string such as \"5ms\" or \"5s\"",
        ),
        (
            "[failover]\nfailure_timeout = \"500ms\"\n",
            "{file}:20:19: failover.failure_timeout: failure_timeout 500ms is too short: expected at least 1s, or leave it out so that only `watchkeeper cleanup` forgets failures",
        ),
        (
            "[failover]\nfence_dealy = \"1s\"\n",
            "{file}:20:1: failover.fence_dealy: unknown field `fence_dealy`, expected one of `startup_timeout`, `fence_delay`, `fence_timeout`, `fence_retry`, `election_timeout`, `stall_timeout`, `watchdog_margin`, `restart_limit`, `failure_timeout`",
        ),
    ];
    for (extra, expected) in cases {
        let got = parse(extra, "").expect_err(extra);
        assert_eq!(got.trim_end(), expected, "for {extra:?}");
    }
}

#[test]
fn the_margin_must_cover_a_stalled_nodes_last_feeds() {
    let wd = "watchdog = { device = \"/dev/watchdog0\", timeout = \"10s\", progress_timeout = \"4s\" }\n";
    let text = BASE.replacen("name = \"alpha\"\n", &format!("name = \"alpha\"\n{wd}"), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789abcdef\n").expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path = dir.path().join("w.toml");
    // Derived when not given: progress bound + interval + slack.
    let c = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.failover.watchdog_margin, Duration::from_millis(4600));
    // Refused when given too short.
    let short = format!("{text}\n[failover]\nwatchdog_margin = \"2s\"\n");
    let e = config::parse(&path, &short)
        .expect_err("margin shorter than the progress bound")
        .to_string();
    assert!(
        e.contains("failover.watchdog_margin: watchdog_margin 2s is shorter than node alpha's watchdog progress_timeout plus one heartbeat interval (4.1s)"),
        "{e}"
    );
}

#[test]
fn a_failure_timeout_reaches_the_engine() {
    let c = parse("[failover]\nfailure_timeout = \"15m\"\n", "").expect("valid");
    assert_eq!(c.failover.failure_timeout, Some(Duration::from_secs(900)));
    let me = c.node_by_name("beta").map(|n| n.id).expect("beta");
    let e = c.engine_config(me, vec!["director".into()]);
    assert_eq!(e.failure_timeout, Some(Duration::from_secs(900)));
}
