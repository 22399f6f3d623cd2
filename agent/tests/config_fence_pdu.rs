//! Modbus PDUs, SNMP PDUs and IF-MIB switch ports in `[[fence_device]]`: every broken entry is
//! reported with the exact file, line, column, key and sentence, and a good file gives the
//! expected typed values.
//!
//! As in `config_fence.rs`, each case edits one good file, so it shows only what is broken.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use agent::config::{self, FenceDeviceKind, UnfencePolicy};
use drivers::fence::modbus::{ModbusTransport, Outlet, OutletControl};
use drivers::fence::snmp::ifmib::PortRef;
use drivers::fence::snmp::pdu::{OutletRef, PduProfile};
use drivers::fence::snmp::{AuthProtocol, PrivProtocol, SnmpSecurity};

/// The good file. Its line numbers matter: the expected messages quote them.
const BASE: &str = concat!(
    cluster_header!(),
    r#"[[node]]
id = 1
name = "alpha"
links.lan0 = { address = "192.168.7.1:5405" }
fencing = [["pdu-tcp"], ["san"]]

[[node]]
id = 2
name = "beta"
links.lan0 = { address = "192.168.7.2:5405" }
fencing = [["apc"], ["pdu-rtu", "san"]]

[[fence_device]]
name = "pdu-tcp"
type = "modbus"
address = "10.0.0.40"
unit = 3
off_time = "2s"
outlets = { alpha = [{ coil = 0 }, { register = 100, on = 1, off = 2, unit = 4 }] }

[[fence_device]]
name = "pdu-rtu"
type = "modbus"
serial = "/dev/watchkeeper/rs485-0"
baud = 19200
outlets = { beta = [{ coil = 7 }] }

[[fence_device]]
name = "apc"
type = "snmp-pdu"
address = "10.0.0.41"
profile = "apc-rpdu"
username = "fenceuser"
password_file = "auth.pass"
auth_protocol = "sha256"
privacy_password = "privpass123"
outlets = { beta = [3, "beta-psu2"] }

[[fence_device]]
name = "san"
type = "ifmib"
address = "10.0.0.42:1161"
community_file = "community"
ports = { alpha = [5, "fc1/5"], beta = ["fc1/6"] }
unfence = "manual"
retries = 4
"#
);

const CASES: &[common::Case] = &[
    common::Case {
        name: "modbus_tcp_and_rtu",
        edits: &[("address = \"10.0.0.40\"", "address = \"10.0.0.40\"\nserial = \"/dev/ttyS1\"")],
        expected: "{file}:25:10: fence_device[0].serial: address (Modbus TCP) and serial (Modbus RTU) are both set: keep one",
    },
    common::Case {
        name: "modbus_no_transport",
        edits: &[("serial = \"/dev/watchkeeper/rs485-0\"\nbaud = 19200\n", "")],
        expected: "{file}:30:8: fence_device[1].address: modbus fence device needs `address` for Modbus TCP (e.g. address = \"10.0.0.40:502\") or `serial` for Modbus RTU (e.g. serial = \"/dev/watchkeeper/rs485-0\")",
    },
    common::Case {
        name: "modbus_bad_outlet",
        edits: &[("{ coil = 7 }", "{ coil = 7, on = 1 }")],
        expected: "{file}:34:21: fence_device[1].outlets.beta[0]: outlet { coil = 7, on = 1 } is not a Modbus outlet: expected { coil = N } or { register = N, on = V, off = V }, optionally with unit = U (addresses and values 0 to 65535)",
    },
    common::Case {
        name: "modbus_same_on_off",
        edits: &[("on = 1, off = 2", "on = 1, off = 1")],
        expected: "{file}:27:36: fence_device[0].outlets.alpha[1]: on and off are the same value: the outlet's state could not be told apart",
    },
    common::Case {
        name: "modbus_bad_unit",
        edits: &[("unit = 3", "unit = 300")],
        expected: "{file}:25:8: fence_device[0].unit: unit 300 is not a Modbus unit id: expected 1 to 247 (0 or 255 for some TCP gateways)",
    },
    common::Case {
        name: "modbus_baud_without_serial",
        edits: &[("unit = 3", "unit = 3\nbaud = 9600")],
        expected: "{file}:26:8: fence_device[0].baud: baud applies to Modbus RTU only: set serial, or remove baud",
    },
    common::Case {
        name: "modbus_target_key",
        edits: &[("unit = 3", "unit = 3\ntarget = \"alpha\"")],
        expected: "{file}:26:10: fence_device[0].target: target does not apply to modbus fence devices: the nodes it fences are the keys of `outlets`",
    },
    common::Case {
        name: "modbus_no_outlets",
        edits: &[("outlets = { beta = [{ coil = 7 }] }\n", "")],
        expected: "{file}:19:22: node[1].fencing[1][0]: fence device pdu-rtu does not fence node beta: it fences no node; add beta to its target or plugs\n\
                   {file}:30:8: fence_device[1].outlets: modbus fence device needs `outlets`, the nodes it fences and theirs, e.g. outlets = { beta = [{ coil = 2 }] }",
    },
    common::Case {
        name: "outlet_for_unknown_node",
        edits: &[("outlets = { beta = [{ coil = 7 }] }", "outlets = { beta = [{ coil = 7 }], gamma = [{ coil = 8 }] }")],
        expected: "{file}:34:36: fence_device[1].outlets.gamma: node gamma is not defined; defined nodes: alpha, beta",
    },
    common::Case {
        name: "snmp_v2c_and_v3",
        edits: &[("profile = \"apc-rpdu\"", "profile = \"apc-rpdu\"\ncommunity = \"private\"")],
        expected: "{file}:42:12: fence_device[2].username: community (SNMP v2c) and username (SNMP v3) are both set: keep one",
    },
    common::Case {
        name: "snmp_md5",
        edits: &[("auth_protocol = \"sha256\"", "auth_protocol = \"md5\"")],
        expected: "{file}:43:17: fence_device[2].auth_protocol: auth_protocol \"md5\" is not supported: expected \"sha\" or \"sha256\" (MD5 is not offered)",
    },
    common::Case {
        name: "snmp_no_privacy_password",
        edits: &[("privacy_password = \"privpass123\"\n", "")],
        expected: "{file}:41:12: fence_device[2].privacy_password: SNMP v3 with privacy needs `privacy_password` or `privacy_password_file`; set privacy = \"none\" for authNoPriv",
    },
    common::Case {
        name: "snmp_v3_key_with_community",
        edits: &[("community_file = \"community\"", "community_file = \"community\"\nauth_protocol = \"sha\"")],
        expected: "{file}:52:17: fence_device[3].auth_protocol: auth_protocol applies to SNMP v3 only (with username): remove it",
    },
    common::Case {
        name: "snmp_no_credentials",
        edits: &[("community_file = \"community\"\n", "")],
        expected: "{file}:48:8: fence_device[3].community: ifmib fence device needs `community` or `community_file` (SNMP v2c), or `username` with `password` and `privacy_password` (SNMP v3)",
    },
    common::Case {
        name: "snmp_unknown_profile",
        edits: &[("profile = \"apc-rpdu\"", "profile = \"servertech\"")],
        expected: "{file}:40:11: fence_device[2].profile: profile \"servertech\" is not known: expected \"auto\" (by sysObjectID), \"apc\", \"apc-rpdu\", \"raritan\", \"eaton\" or \"custom\"",
    },
    common::Case {
        name: "custom_profile_needs_oid",
        edits: &[("profile = \"apc-rpdu\"", "profile = \"custom\"\non_value = 1\noff_value = 2")],
        expected: "{file}:37:8: fence_device[2].control_oid: snmp-pdu fence device needs `control_oid`, e.g. control_oid = \"1.3.6.1.4.1.318.1.1.4.4.2.1.3\"",
    },
    common::Case {
        name: "custom_oid_without_custom_profile",
        edits: &[("profile = \"apc-rpdu\"", "profile = \"apc-rpdu\"\ncontrol_oid = \"1.3.6.1\"")],
        expected: "{file}:41:15: fence_device[2].control_oid: control_oid applies to profile = \"custom\" only: remove it",
    },
    common::Case {
        name: "bad_outlet_number",
        edits: &[("outlets = { beta = [3, \"beta-psu2\"] }", "outlets = { beta = [0] }")],
        expected: "{file}:45:21: fence_device[2].outlets.beta[0]: outlet 0 is not an outlet: expected its number (1, 2, ...) or its name as the PDU reports it (\"Outlet 5\")",
    },
    common::Case {
        name: "duplicate_port",
        edits: &[("[5, \"fc1/5\"]", "[5, 5]")],
        expected: "{file}:52:23: fence_device[3].ports.alpha[1]: this port is listed twice for the node",
    },
    common::Case {
        name: "empty_port_list",
        edits: &[("beta = [\"fc1/6\"]", "beta = []")],
        expected: "{file}:52:40: fence_device[3].ports.beta: 0 ports listed: expected 1 to 8, every port that feeds or connects the node",
    },
    common::Case {
        name: "bad_unfence",
        edits: &[("unfence = \"manual\"", "unfence = \"never\"")],
        expected: "{file}:53:11: fence_device[3].unfence: unfence \"never\" is not known: expected \"auto\" (enable the ports once the node has rejoined) or \"manual\" (by `watchkeeper unfence`)",
    },
    common::Case {
        name: "ports_on_a_pdu",
        edits: &[("profile = \"apc-rpdu\"", "profile = \"apc-rpdu\"\nports = { beta = [1] }")],
        expected: "{file}:41:11: fence_device[2].ports: ports does not apply to snmp-pdu fence devices: remove it",
    },
    common::Case {
        name: "bad_retries",
        edits: &[("retries = 4", "retries = 40")],
        expected: "{file}:54:11: fence_device[3].retries: retries 40 is out of range: expected 0 to 10",
    },
];

fn write_case(dir: &Path, text: &str) -> std::path::PathBuf {
    let key = dir.join("cluster.key");
    fs::write(&key, [b'k'; 40]).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    for (name, value) in [("auth.pass", "authpass123\n"), ("community", "private\n")] {
        let path = dir.join(name);
        fs::write(&path, value).expect("secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod secret");
    }
    let file = dir.join("wk.toml");
    fs::write(&file, text).expect("config");
    file
}

#[test]
fn broken_pdu_and_switch_devices_are_reported_exactly() {
    common::check(BASE, CASES, |dir, text, case| {
        let _ = case;
        write_case(dir, text)
    });
}

#[test]
fn good_pdu_and_switch_devices_turn_into_typed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_case(dir.path(), BASE);
    let config = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let f = &config.fencing;

    let tcp = f.device("pdu-tcp").expect("pdu-tcp");
    assert_eq!(tcp.targets, ["alpha"]);
    let FenceDeviceKind::Modbus(m) = &tcp.kind else {
        panic!("pdu-tcp is {:?}", tcp.kind)
    };
    assert_eq!(
        m.transport,
        ModbusTransport::Tcp {
            address: "10.0.0.40:502".parse().expect("addr")
        }
    );
    assert_eq!(
        m.outlets.get("alpha"),
        Some(&vec![
            Outlet {
                unit: 3,
                control: OutletControl::Coil { address: 0 }
            },
            Outlet {
                unit: 4,
                control: OutletControl::Register {
                    address: 100,
                    on: 1,
                    off: 2
                }
            },
        ])
    );
    assert_eq!(m.off_time, Duration::from_secs(2));
    assert_eq!(m.request_timeout, config::DEFAULT_PDU_REQUEST_TIMEOUT);

    let rtu = f.device("pdu-rtu").expect("pdu-rtu");
    let FenceDeviceKind::Modbus(m) = &rtu.kind else {
        panic!("pdu-rtu is {:?}", rtu.kind)
    };
    assert_eq!(
        m.transport,
        ModbusTransport::Rtu {
            path: "/dev/watchkeeper/rs485-0".into(),
            baud: 19200
        }
    );
    assert_eq!(m.off_time, config::DEFAULT_OFF_TIME);

    let apc = f.device("apc").expect("apc");
    assert_eq!(apc.targets, ["beta"]);
    let FenceDeviceKind::SnmpPdu(p) = &apc.kind else {
        panic!("apc is {:?}", apc.kind)
    };
    assert_eq!(p.profile, PduProfile::ApcRpdu);
    assert_eq!(
        p.outlets.get("beta"),
        Some(&vec![
            OutletRef::Number(3),
            OutletRef::Name("beta-psu2".to_owned())
        ])
    );
    assert_eq!(p.snmp.address, "10.0.0.41:161".parse().expect("addr"));
    let SnmpSecurity::V3 {
        username,
        auth,
        auth_password,
        privacy,
    } = &p.snmp.security
    else {
        panic!("apc security is {:?}", p.snmp.security)
    };
    assert_eq!(username, "fenceuser");
    assert_eq!(*auth, AuthProtocol::Sha256);
    assert_eq!(auth_password.expose(), "authpass123");
    let (proto, pass) = privacy.as_ref().expect("privacy");
    assert_eq!(*proto, PrivProtocol::Aes128);
    assert_eq!(pass.expose(), "privpass123");
    assert_eq!(p.snmp.retries, config::DEFAULT_SNMP_RETRIES);

    let san = f.device("san").expect("san");
    assert_eq!(san.targets, ["alpha", "beta"]);
    let FenceDeviceKind::IfMib(i) = &san.kind else {
        panic!("san is {:?}", san.kind)
    };
    assert_eq!(i.unfence, UnfencePolicy::Manual);
    assert!(i.params.check_oper_status);
    assert_eq!(
        i.params.ports.get("alpha"),
        Some(&vec![PortRef::Index(5), PortRef::Name("fc1/5".to_owned())])
    );
    assert_eq!(i.params.snmp.retries, 4);
    assert_eq!(
        i.params.snmp.address,
        "10.0.0.42:1161".parse().expect("addr")
    );
    let SnmpSecurity::V2c { community } = &i.params.snmp.security else {
        panic!("san security is {:?}", i.params.snmp.security)
    };
    assert_eq!(community.expose(), "private");
    assert_eq!(
        f.levels.get("beta"),
        Some(&vec![
            vec!["apc".to_owned()],
            vec!["pdu-rtu".to_owned(), "san".to_owned()]
        ])
    );
}
