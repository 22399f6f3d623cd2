//! A node's `watchdog` table: good values become the typed configuration, and every bad value
//! or inconsistent timing is reported with file, line, column, key and the reason.

use std::path::PathBuf;
use std::time::Duration;

use agent::config::{self, WatchdogConfig, WatchdogSelector};

mod common;

fn parse(watchdog: &str) -> Result<config::Config, String> {
    common::parse_watchdog(&common::watchdog_base(None), watchdog)
}

fn alpha_watchdog(watchdog: &str) -> Result<Option<WatchdogConfig>, String> {
    let config = parse(watchdog)?;
    Ok(config
        .node_by_name("alpha")
        .and_then(|n| n.watchdog.clone()))
}

#[test]
fn a_full_table_is_taken_as_written() {
    let got = alpha_watchdog(
        r#"watchdog = { device = "/dev/watchdog0", timeout = "20s", feed_interval = "500ms", progress_timeout = "3s", realtime_priority = 70 }"#,
    );
    assert_eq!(
        got,
        Ok(Some(WatchdogConfig {
            device: WatchdogSelector::Path(PathBuf::from("/dev/watchdog0")),
            timeout: Duration::from_secs(20),
            feed_interval: Duration::from_millis(500),
            progress_timeout: Duration::from_secs(3),
            realtime_priority: 70,
        }))
    );
}

#[test]
fn defaults_follow_the_timeout_and_identity_names_a_device() {
    let got = alpha_watchdog(r#"watchdog = { identity = "iTCO_wdt", timeout = "30s" }"#);
    assert_eq!(
        got,
        Ok(Some(WatchdogConfig {
            device: WatchdogSelector::Identity("iTCO_wdt".to_owned()),
            timeout: Duration::from_secs(30),
            feed_interval: Duration::from_secs(3),
            progress_timeout: config::DEFAULT_PROGRESS_TIMEOUT,
            realtime_priority: config::DEFAULT_REALTIME_PRIORITY,
        }))
    );
    let got = alpha_watchdog(r#"watchdog = { device = "/dev/watchdog" }"#);
    assert_eq!(
        got.map(|w| w.map(|w| (w.timeout, w.feed_interval))),
        Ok(Some((
            config::DEFAULT_WATCHDOG_TIMEOUT,
            Duration::from_secs(1)
        )))
    );
}

#[test]
fn a_node_without_watchdog_is_valid() {
    assert_eq!(alpha_watchdog(""), Ok(None));
}

#[test]
fn bad_values_are_reported_with_position_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = "0s" }"#,
            "{file}:14:51: node[0].watchdog.timeout: timeout 0s would never let the \
             watchdog fire (the kernel reads 0 as \"no change\"): expected a whole number of \
             seconds, e.g. \"10s\"",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = "2.5s" }"#,
            "{file}:14:51: node[0].watchdog.timeout: timeout 2.5s is not a whole number \
             of seconds: the kernel's watchdog API counts whole seconds; expected e.g. \"2s\"",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = "10m" }"#,
            "{file}:14:51: node[0].watchdog.timeout: timeout 10m is longer than 5m: a \
             hung host would hold its resources that long before its hardware resets it",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = 10 }"#,
            "{file}:14:51: node[0].watchdog.timeout: timeout 10 has no unit: expected a \
             string such as \"10ms\" or \"10s\"",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = "10s", feed_interval = "10s" }"#,
            "{file}:14:74: node[0].watchdog.feed_interval: feed_interval 10s is more than \
             1/2 of the timeout (10s): one late feed would reset a healthy host; expected at \
             most 5s",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timeout = "10s", feed_interval = "20s" }"#,
            "{file}:14:74: node[0].watchdog.feed_interval: feed_interval 20s is more than \
             1/2 of the timeout (10s): one late feed would reset a healthy host; expected at \
             most 5s",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", feed_interval = "0s" }"#,
            "{file}:14:57: node[0].watchdog.feed_interval: feed_interval 0ms is shorter \
             than 10ms: scheduling delay alone would be a large part of it",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", progress_timeout = "200ms" }"#,
            "{file}:14:60: node[0].watchdog.progress_timeout: progress_timeout 200ms is \
             shorter than 3 heartbeat intervals (300ms): the main loop runs once per interval, \
             so a healthy agent would starve its watchdog",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", progress_timeout = "2m" }"#,
            "{file}:14:60: node[0].watchdog.progress_timeout: progress_timeout 2m is \
             longer than 1m: a stuck agent would keep feeding the watchdog that long",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", realtime_priority = 0 }"#,
            "{file}:14:61: node[0].watchdog.realtime_priority: realtime_priority 0 is out \
             of range: expected a SCHED_FIFO priority from 1 to 99",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", realtime_priority = 100 }"#,
            "{file}:14:61: node[0].watchdog.realtime_priority: realtime_priority 100 is \
             out of range: expected a SCHED_FIFO priority from 1 to 99",
        ),
        (
            r#"watchdog = { device = "watchdog0" }"#,
            "{file}:14:23: node[0].watchdog.device: device \"watchdog0\" is not an \
             absolute path: expected e.g. \"/dev/watchdog0\"",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", identity = "iTCO_wdt" }"#,
            "{file}:14:23: node[0].watchdog.device: give either device or identity, not \
             both: they could name two different watchdogs",
        ),
        (
            r#"watchdog = { timeout = "10s" }"#,
            "{file}:15:8: node[0].watchdog: node alpha's watchdog names no device: \
             expected device = \"/dev/watchdog0\" or identity = \"iTCO_wdt\" (see `watchkeeper \
             watchdog list`)",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", timout = "10s" }"#,
            "{file}:14:41: node[0].watchdog.timout: unknown field `timout`, expected one \
             of `device`, `identity`, `bridge`, `baud`, `timeout`, `feed_interval`, \
             `progress_timeout`, `realtime_priority`",
        ),
    ];
    for (watchdog, expected) in cases {
        assert_eq!(
            parse(watchdog).err().as_deref(),
            Some(*expected),
            "{watchdog}"
        );
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let errors = parse(r#"watchdog = { device = "dev", timeout = "0s", realtime_priority = 0 }"#)
        .err()
        .unwrap_or_default();
    assert_eq!(errors.lines().count(), 3, "{errors}");
}
