//! `[[fence_device]]` and per-node `fencing` levels: every broken entry is reported with the
//! exact file, line, column, key and sentence, and a good file gives the expected typed values.
//!
//! As in `config_errors.rs`, each case edits one good file, so it shows only what is broken.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use agent::config::{self, FenceDeviceKind, IpmiPrivilege};
use drivers::fence::redfish::{RedfishAuth, TlsTrust};

/// The good file. Its line numbers matter: the expected messages quote them.
const BASE: &str = concat!(
    cluster_header!(),
    r#"[[node]]
id = 1
name = "alpha"
links.lan0 = { address = "192.168.7.1:5405" }
fencing = [["rf-alpha"]]

[[node]]
id = 2
name = "beta"
links.lan0 = { address = "192.168.7.2:5405" }
fencing = [["ipmi-beta"], ["pdu-1", "pdu-2"]]

[[fence_device]]
name = "ipmi-beta"
type = "ipmi"
target = "beta"
address = "10.0.0.12"
username = "admin"
password_file = "ipmi.pass"
cipher_suite = 17
privilege = "operator"
timeout = "20s"

[[fence_device]]
name = "rf-alpha"
type = "redfish"
target = "alpha"
url = "https://10.0.0.11"
system = "System.Embedded.1"
username = "root"
password = "calvin"
auth = "session"
fingerprint = "sha256:ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"

[[fence_device]]
name = "pdu-1"
type = "exec"
agent = "/usr/sbin/fence_apc_snmp"
plugs = { alpha = "1", beta = "2" }
options = { ip = "10.0.0.50", community = "private" }

[[fence_device]]
name = "pdu-2"
type = "exec"
agent = "/usr/sbin/fence_apc_snmp"
plugs = { beta = "2" }
options = { ip = "10.0.0.51" }
"#
);

const CASES: &[common::Case] = &[
    common::Case {
        name: "unknown_device_in_level",
        edits: &[("[\"pdu-1\", \"pdu-2\"]", "[\"pdu-1\", \"pdu-3\"]")],
        expected: "{file}:19:37: node[1].fencing[1][1]: fence device pdu-3 is not defined; defined fence devices: ipmi-beta, rf-alpha, pdu-1, pdu-2",
    },
    common::Case {
        name: "device_does_not_fence_node",
        edits: &[("fencing = [[\"rf-alpha\"]]", "fencing = [[\"pdu-2\"]]")],
        expected: "{file}:13:13: node[0].fencing[0][0]: fence device pdu-2 does not fence node alpha: it fences beta; add alpha to its target or plugs",
    },
    common::Case {
        name: "empty_level",
        edits: &[("fencing = [[\"rf-alpha\"]]", "fencing = [[]]")],
        expected: "{file}:13:12: node[0].fencing[0]: fencing level is empty: expected the names of the devices that must all succeed",
    },
    common::Case {
        name: "unknown_type",
        edits: &[("type = \"ipmi\"", "type = \"ilo\"")],
        expected: "{file}:23:8: fence_device[0].type: unknown variant `ilo`, expected one of `ipmi`, `redfish`, `exec`, `modbus`, `snmp-pdu`, `ifmib`",
    },
    common::Case {
        name: "unknown_target_node",
        edits: &[("target = \"beta\"", "target = \"gamma\"")],
        expected: "{file}:19:13: node[1].fencing[0][0]: fence device ipmi-beta does not fence node beta: it fences gamma; add beta to its target or plugs\n\
                   {file}:24:10: fence_device[0].target: node gamma is not defined; defined nodes: alpha, beta",
    },
    common::Case {
        name: "password_file_world_readable",
        edits: &[],
        expected: "{file}:27:17: fence_device[0].password_file: secret file {dir}/ipmi.pass has mode 0644: it must not be accessible by group or others (chmod 600 {dir}/ipmi.pass)",
    },
    common::Case {
        name: "password_and_password_file",
        edits: &[("password_file = \"ipmi.pass\"", "password_file = \"ipmi.pass\"\npassword = \"x\"")],
        expected: "{file}:27:17: fence_device[0].password_file: password and password_file are both set: keep one",
    },
    common::Case {
        name: "weak_cipher_suite",
        edits: &[("cipher_suite = 17", "cipher_suite = 1")],
        expected: "{file}:28:16: fence_device[0].cipher_suite: cipher_suite 1 has no integrity protection: use 3 or 17, or set danger_allow_no_integrity = true for a lab BMC",
    },
    common::Case {
        name: "bad_address",
        edits: &[("address = \"10.0.0.12\"", "address = \"bmc-beta\"")],
        expected: "{file}:25:11: fence_device[0].address: address \"bmc-beta\" is not an IP address with an optional port: expected e.g. \"10.0.0.12:623\"",
    },
    common::Case {
        name: "foreign_key",
        edits: &[("privilege = \"operator\"", "privilege = \"operator\"\nurl = \"https://x\"")],
        expected: "{file}:30:7: fence_device[0].url: url does not apply to ipmi fence devices: remove it",
    },
    common::Case {
        name: "insecure_and_fingerprint",
        edits: &[("auth = \"session\"", "auth = \"session\"\ninsecure = true")],
        expected: "{file}:41:12: fence_device[1].insecure: ca_file, fingerprint and insecure = true are alternatives: keep one",
    },
    common::Case {
        name: "bad_fingerprint",
        edits: &[("sha256:ABAB", "sha256:XXAB")],
        expected: "{file}:41:15: fence_device[1].fingerprint: fingerprint is not a SHA-256 fingerprint: expected 64 hex digits, optionally colon-separated as `openssl x509 -noout -fingerprint -sha256` prints them",
    },
    common::Case {
        name: "bad_url",
        edits: &[("url = \"https://10.0.0.11\"", "url = \"10.0.0.11\"")],
        expected: "{file}:36:7: fence_device[1].url: url \"10.0.0.11\" is not an http(s) URL: expected e.g. \"https://10.0.0.12\"",
    },
    common::Case {
        name: "duplicate_device_name",
        edits: &[("name = \"pdu-2\"", "name = \"pdu-1\"")],
        expected: "{file}:19:37: node[1].fencing[1][1]: fence device pdu-2 is not defined; defined fence devices: ipmi-beta, rf-alpha, pdu-1, pdu-1\n\
                   {file}:51:8: fence_device[3].name: fence device name pdu-1 is already used on line 44: device names must be unique",
    },
    common::Case {
        name: "exec_password_in_options",
        edits: &[("community = \"private\"", "password = \"private\"")],
        expected: "{file}:48:42: fence_device[2].options.password: options.password is set by watchkeeper itself (use password_file for passwords, plugs for plugs): remove it",
    },
    common::Case {
        name: "missing_target",
        edits: &[("target = \"alpha\"\n", "")],
        expected: "{file}:13:13: node[0].fencing[0][0]: fence device rf-alpha does not fence node alpha: it fences no node; add alpha to its target or plugs\n\
                   {file}:33:8: fence_device[1].target: fence device needs `target`, the node it fences, e.g. target = \"beta\"",
    },
    common::Case {
        name: "zero_timeout",
        edits: &[("timeout = \"20s\"", "timeout = \"0s\"")],
        expected: "{file}:30:11: fence_device[0].timeout: timeout is 0ms: expected more than zero",
    },
];

fn write_case(dir: &Path, text: &str, pass_mode: u32) -> std::path::PathBuf {
    let key = dir.join("cluster.key");
    fs::write(&key, [b'k'; 40]).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    let pass = dir.join("ipmi.pass");
    fs::write(&pass, "s3cret\n").expect("pass");
    fs::set_permissions(&pass, fs::Permissions::from_mode(pass_mode)).expect("chmod pass");
    let file = dir.join("wk.toml");
    fs::write(&file, text).expect("config");
    file
}

#[test]
fn broken_fencing_is_reported_exactly() {
    common::check(BASE, CASES, |dir, text, case| {
        let mode = if case.name == "password_file_world_readable" {
            0o644
        } else {
            0o600
        };
        write_case(dir, text, mode)
    });
}

#[test]
fn good_fencing_turns_into_typed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_case(dir.path(), BASE, 0o600);
    let config = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let f = &config.fencing;
    assert_eq!(
        f.levels.get("alpha"),
        Some(&vec![vec!["rf-alpha".to_owned()]])
    );
    assert_eq!(
        f.levels.get("beta"),
        Some(&vec![
            vec!["ipmi-beta".to_owned()],
            vec!["pdu-1".to_owned(), "pdu-2".to_owned()]
        ])
    );
    let ipmi = f.device("ipmi-beta").expect("ipmi device");
    assert_eq!(ipmi.targets, ["beta"]);
    assert_eq!(ipmi.timeout, Duration::from_secs(20));
    let FenceDeviceKind::Ipmi(i) = &ipmi.kind else {
        panic!("ipmi")
    };
    assert_eq!(i.address.to_string(), "10.0.0.12:623");
    assert_eq!(i.password.expose(), "s3cret");
    assert_eq!((i.cipher_suite, i.privilege), (17, IpmiPrivilege::Operator));
    assert_eq!(format!("{:?}", i.password), "<redacted>");
    let rf = f.device("rf-alpha").expect("redfish device");
    assert_eq!(rf.timeout, config::DEFAULT_FENCE_TIMEOUT);
    let FenceDeviceKind::Redfish(r) = &rf.kind else {
        panic!("redfish")
    };
    assert_eq!(r.auth, RedfishAuth::Session);
    assert_eq!(r.tls, TlsTrust::Pin([0xAB; 32]));
    assert_eq!(r.system.as_deref(), Some("System.Embedded.1"));
    let pdu = f.device("pdu-1").expect("pdu");
    assert_eq!(pdu.targets, ["alpha", "beta"]);
    let FenceDeviceKind::Exec(e) = &pdu.kind else {
        panic!("exec")
    };
    assert_eq!(e.plugs.get("beta"), Some(&Some("2".to_owned())));
    assert!(e
        .options
        .contains(&("community".to_owned(), "private".to_owned())));
    assert!(
        !format!("{config:?}").contains("calvin"),
        "Debug never prints passwords"
    );
}
