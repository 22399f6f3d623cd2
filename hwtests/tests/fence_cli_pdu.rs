//! `watchkeeper fence` on configured PDUs: a node fed by two power supplies on two different
//! PDUs (one over Modbus TCP, one over SNMP v3), each device driven from the configuration
//! file against its real simulator, and every state change recorded in the node's fence ledger.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hwtests::agent::watchkeeper_bin;
use hwtests::modbus_pdu::{ModbusPdu, ModbusPduOptions};
use hwtests::snmpd::{Snmpd, SnmpdOptions, V3_AUTH_PASSWORD, V3_PRIV_PASSWORD, V3_USER};
use serde_json::Value;

fn config(dir: &Path, modbus: &ModbusPdu, snmpd: &Snmpd) -> PathBuf {
    let key = dir.join("cluster.key");
    fs::write(&key, [b'k'; 40]).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    for (file, secret) in [
        ("pdu.auth", V3_AUTH_PASSWORD),
        ("pdu.priv", V3_PRIV_PASSWORD),
    ] {
        let path = dir.join(file);
        fs::write(&path, format!("{secret}\n")).expect("secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let text = format!(
        r#"[cluster]
name = "pdu"
key_file = "cluster.key"

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 1
name = "alpha"
state_dir = "alpha-state"
links.lan0 = {{ address = "127.0.0.1:1" }}

[[node]]
id = 2
name = "beta"
links.lan0 = {{ address = "127.0.0.1:2" }}
fencing = [["psu-a", "psu-b"]]

[[fence_device]]
name = "psu-a"
type = "modbus"
address = "{modbus}"
outlets = {{ beta = [{{ coil = 1 }}] }}
off_time = "100ms"
timeout = "5s"

[[fence_device]]
name = "psu-b"
type = "snmp-pdu"
address = "{snmp}"
username = "{V3_USER}"
password_file = "pdu.auth"
privacy_password_file = "pdu.priv"
outlets = {{ beta = [2] }}
off_time = "100ms"
timeout = "5s"
"#,
        modbus = modbus.address(),
        snmp = snmpd.address(),
    );
    let path = dir.join("watchkeeper.toml");
    fs::write(&path, text).expect("config");
    fs::create_dir_all(dir.join("alpha-state")).expect("state dir");
    path
}

fn fence(config: &Path, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary"))
        .arg("fence")
        .args(args)
        .args(["--node", "alpha", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run watchkeeper fence")
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn both_power_supplies_are_switched_through_their_own_pdus_and_recorded() {
    let modbus = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &modbus, &snmpd);

    for (device, kind) in [("psu-a", "modbus"), ("psu-b", "snmp-pdu")] {
        let out = fence(&config, &[device, "off"]);
        let r = report(&out);
        assert_eq!(out.status.code(), Some(0), "{r}");
        assert_eq!(r["type"], kind);
        assert_eq!(
            r["target"], "beta",
            "the device's only node is the default target"
        );
        assert_eq!(r["state"], "off");
    }
    assert!(!modbus.outlet(1), "Modbus coil 1 off");
    assert!(!snmpd.outlet_on(2), "SNMP outlet 2 off");
    assert!(
        modbus.outlet(0) && snmpd.outlet_on(1),
        "other outlets untouched"
    );

    for device in ["psu-a", "psu-b"] {
        let out = fence(&config, &[device, "status"]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(report(&out)["state"], "off");
        let out = fence(&config, &[device, "reboot"]);
        let r = report(&out);
        assert_eq!(out.status.code(), Some(0), "{r}");
        let steps: Vec<&str> = r["steps"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(steps, ["load config", "build driver", "off", "on"], "{r}");
    }
    assert!(
        modbus.outlet(1) && snmpd.outlet_on(2),
        "back on after reboot"
    );

    // Off, off, reboot, reboot: state changes only (status is not recorded).
    let ledger = fs::read_to_string(dir.path().join("alpha-state/fence-ledger.jsonl"))
        .expect("ledger written");
    let entries: Vec<Value> = ledger
        .lines()
        .map(|l| serde_json::from_str(l).expect("ledger line is JSON"))
        .collect();
    let summary: Vec<(String, String, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["device"].as_str().unwrap_or("?").to_owned(),
                e["action"].as_str().unwrap_or("?").to_owned(),
                e["ok"] == Value::Bool(true),
            )
        })
        .collect();
    let expected: Vec<(String, String, bool)> = [
        ("psu-a", "off"),
        ("psu-b", "off"),
        ("psu-a", "reboot"),
        ("psu-b", "reboot"),
    ]
    .iter()
    .map(|(d, a)| ((*d).to_owned(), (*a).to_owned(), true))
    .collect();
    assert_eq!(summary, expected, "{ledger}");
    assert!(entries
        .iter()
        .all(|e| e["reason"] == "operator command" && e["by"] == "operator"));
}

#[test]
fn a_pdu_that_never_answers_is_reported_unreachable_by_the_deadline() {
    let mut modbus = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &modbus, &snmpd);
    modbus.stop();
    let out = fence(&config, &["psu-a", "off"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(69), "{r}");
    assert_eq!(r["error"]["kind"], "Unreachable", "{r}");
    let ledger = fs::read_to_string(dir.path().join("alpha-state/fence-ledger.jsonl"))
        .expect("ledger written");
    assert!(ledger.contains("\"ok\":false"), "{ledger}");
}
