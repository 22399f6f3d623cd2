//! `watchdog = { bridge = ... }`: a node whose watchdog is an external bridge gets the cluster's
//! id and key for it, and every misuse is reported with position, key and reason.

use std::path::PathBuf;
use std::time::Duration;

use agent::config::{self, BridgeTarget, ClusterKey, WatchdogSelector};

use common::HEX_KEY as KEY;

mod common;

fn parse(watchdog: &str) -> Result<config::Config, String> {
    common::parse_watchdog(&common::watchdog_base(Some(4242)), watchdog)
}

#[test]
fn a_bridge_carries_the_cluster_id_and_key() {
    let config =
        parse(r#"watchdog = { bridge = "/dev/watchkeeper/bridge-alpha", timeout = "4s" }"#)
            .expect("valid");
    let wd = config
        .node_by_name("alpha")
        .and_then(|n| n.watchdog.clone())
        .expect("a watchdog");
    assert_eq!(
        wd.device,
        WatchdogSelector::Bridge(BridgeTarget {
            device: PathBuf::from("/dev/watchkeeper/bridge-alpha"),
            baud: config::DEFAULT_BRIDGE_BAUD,
            cluster_id: 4242,
            key: ClusterKey::new(KEY.as_bytes().to_vec()),
        })
    );
    assert_eq!(wd.timeout, Duration::from_secs(4));
    assert_eq!(wd.feed_interval, Duration::from_millis(400));
    assert_eq!(
        wd.device.to_string(),
        "bridge /dev/watchkeeper/bridge-alpha"
    );
    assert!(!format!("{wd:?}").contains(KEY), "the key is redacted");
    let slow = parse(r#"watchdog = { bridge = "/dev/ttyS1", baud = 9600 }"#).expect("valid");
    let wd = slow.node_by_name("alpha").and_then(|n| n.watchdog.clone());
    assert!(matches!(
        wd.map(|w| w.device),
        Some(WatchdogSelector::Bridge(BridgeTarget { baud: 9600, .. }))
    ));
}

#[test]
fn misuses_are_reported_with_position_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            r#"watchdog = { bridge = "/dev/ttyS1", device = "/dev/watchdog0" }"#,
            "{file}:15:23: node[0].watchdog.bridge: give either bridge or device/identity, not \
             both: only one of them would be fed on the engine's word",
        ),
        (
            r#"watchdog = { bridge = "ttyS1" }"#,
            "{file}:15:23: node[0].watchdog.bridge: bridge \"ttyS1\" is not an absolute path: \
             expected the serial port wired to the bridge, e.g. \
             \"/dev/watchkeeper/bridge-alpha\"",
        ),
        (
            r#"watchdog = { bridge = "/dev/ttyS1", baud = 1000 }"#,
            "{file}:15:44: node[0].watchdog.baud: baud 1000 is not a standard rate: expected \
             one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600",
        ),
        (
            r#"watchdog = { device = "/dev/watchdog0", baud = 9600 }"#,
            "{file}:15:48: node[0].watchdog.baud: baud applies only to a bridge (watchdog = { \
             bridge = \"...\", baud = ... })",
        ),
    ];
    for (watchdog, expected) in cases {
        let got = parse(watchdog).expect_err(watchdog);
        assert!(
            got.contains(expected),
            "for {watchdog}:\n  got: {got}\n  want: {expected}"
        );
    }
}
