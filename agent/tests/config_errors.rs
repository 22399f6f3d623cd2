//! Every broken configuration file is reported with the exact line, column, key and sentence an
//! administrator sees, and a good file turns into the expected typed values.
//!
//! The table holds edits to one good file rather than whole files, so each row shows only what
//! is broken; the line and column in each expected message refer to the edited file.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::config::{self, Endpoint, LinkId, LinkKind};
use tempfile::TempDir;

/// The good file every case edits. Its line numbers matter: the expected messages quote them.
const BASE: &str = r#"[cluster]
name = "bacula"
key_file = "cluster.key"

[timing]
heartbeat_interval = "100ms"
deadtime = "1s"

[[link]]
name = "serial0"
kind = "serial"
baud = 115200

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 1
name = "alpha"
control_socket = "alpha.sock"
links.serial0 = { device = "/dev/ttyS1" }
links.lan0 = { address = "192.168.7.1:5405", interface = "eth1" }

[[node]]
id = 2
name = "beta"
links.serial0 = { device = "/dev/ttyS1" }
links.lan0 = { address = "192.168.7.2:5405" }
"#;

const BETA_SERIAL: &str = "name = \"beta\"\nlinks.serial0 = { device = \"/dev/ttyS1\" }";
const BETA_LAN: &str = "links.lan0 = { address = \"192.168.7.2:5405\" }";

struct Case {
    name: &'static str,
    /// `(from, to)` replacements; each `from` must occur exactly once in the file so far.
    edits: &'static [(&'static str, &'static str)],
    /// The whole report; `{file}` is the config file, `{dir}` its directory.
    expected: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "syntax_error",
        edits: &[("name = \"bacula\"", "name = \"bacula")],
        expected: "{file}:2:15: cluster: invalid basic string",
    },
    Case {
        name: "unknown_key",
        edits: &[(
            "name = \"bacula\"\n",
            "name = \"bacula\"\ncolour = \"blue\"\n",
        )],
        expected: "{file}:3:1: cluster.colour: unknown field `colour`, expected one of `name`, \
                   `key_file`, `id`",
    },
    Case {
        name: "unknown_table",
        edits: &[("[timing]", "[timings]")],
        expected: "{file}:5:2: timings: unknown field `timings`, expected one of `cluster`, \
                   `timing`, `link`, `node`, `fence_device`, `failover`, `resource`, `replicate`, \
                   `http`, `journal`, `alert`",
    },
    Case {
        name: "unknown_endpoint_key",
        edits: &[(
            "links.serial0 = { device = \"/dev/ttyS1\" }\n\
             links.lan0 = { address = \"192.168.7.1",
            "links.serial0 = { device = \"/dev/ttyS1\", speed = 9600 }\n\
             links.lan0 = { address = \"192.168.7.1",
        )],
        expected: "{file}:22:42: node[0].links.serial0.speed: unknown field `speed`, expected one \
                   of `device`, `address`, `interface`",
    },
    Case {
        name: "wrong_type",
        edits: &[("id = 1\n", "id = \"one\"\n")],
        expected: "{file}:19:6: node[0].id: invalid type: string \"one\", expected i64",
    },
    Case {
        name: "endpoint_not_a_table",
        edits: &[(BETA_LAN, "links.lan0 = \"192.168.7.2:5405\"")],
        expected: "{file}:29:14: node[1].links.lan0: invalid type: string \"192.168.7.2:5405\", \
                   expected a table such as { device = \"/dev/ttyS1\" } or \
                   { address = \"192.168.7.1:5405\" }",
    },
    Case {
        name: "missing_cluster_name",
        edits: &[("name = \"bacula\"\n", "")],
        expected: "{file}:1:1: cluster.name: missing field `name`",
    },
    Case {
        name: "missing_cluster",
        edits: &[(
            "[cluster]\nname = \"bacula\"\nkey_file = \"cluster.key\"\n",
            "",
        )],
        expected: "{file}:1:1: cluster: missing field `cluster`",
    },
    Case {
        name: "empty_control_socket",
        edits: &[("control_socket = \"alpha.sock\"", "control_socket = \"\"")],
        expected: "{file}:21:18: node[0].control_socket: control_socket is empty: expected a \
                   path, or no control_socket for the default /run/watchkeeper/control.sock",
    },
    Case {
        name: "bad_cluster_name",
        edits: &[("name = \"bacula\"", "name = \"bacula prod\"")],
        expected: "{file}:2:8: cluster.name: cluster name \"bacula prod\" contains ' ': expected \
                   only A-Z, a-z, 0-9, '.', '_' and '-'",
    },
    Case {
        name: "bad_duration",
        edits: &[("deadtime = \"1s\"", "deadtime = \"1 sec\"")],
        expected: "{file}:7:12: timing.deadtime: deadtime \"1 sec\" is not a duration: expected a \
                   number and a unit (ms, s or m), e.g. \"100ms\", \"1.5s\" or \"2m\"",
    },
    Case {
        name: "duration_without_unit",
        edits: &[("heartbeat_interval = \"100ms\"", "heartbeat_interval = 100")],
        expected: "{file}:6:22: timing.heartbeat_interval: heartbeat_interval 100 has no unit: \
                   expected a string such as \"100ms\" or \"100s\"",
    },
    Case {
        name: "heartbeat_too_fast",
        edits: &[("\"100ms\"", "\"5ms\"")],
        expected: "{file}:6:22: timing.heartbeat_interval: heartbeat_interval 5ms is out of \
                   range: expected 10ms to 10s",
    },
    Case {
        name: "deadtime_under_three_intervals",
        edits: &[("deadtime = \"1s\"", "deadtime = \"250ms\"")],
        expected: "{file}:7:12: timing.deadtime: deadtime 250ms is shorter than 3 heartbeat \
                   intervals (300ms): a single lost frame would declare a peer dead",
    },
    Case {
        name: "default_deadtime_under_three_intervals",
        edits: &[("\"100ms\"", "\"500ms\""), ("deadtime = \"1s\"\n", "")],
        expected: "{file}:6:22: timing.deadtime: deadtime 1s (the default) is shorter than 3 \
                   heartbeat intervals (1.5s): a single lost frame would declare a peer dead",
    },
    Case {
        name: "deadtime_too_long",
        edits: &[("deadtime = \"1s\"", "deadtime = \"2m\"")],
        expected: "{file}:7:12: timing.deadtime: deadtime 2m is longer than 1m: a dead peer \
                   would go unnoticed for too long",
    },
    Case {
        name: "duplicate_node_id",
        edits: &[("id = 2", "id = 1")],
        expected: "{file}:26:6: node[1].id: node id 1 is already used by node alpha on line 19: \
                   node ids must be unique",
    },
    Case {
        name: "node_id_zero",
        edits: &[("id = 1\n", "id = 0\n")],
        expected: "{file}:19:6: node[0].id: node id 0 is out of range: expected 1 to 32",
    },
    Case {
        name: "node_id_33",
        edits: &[("id = 2", "id = 33")],
        expected: "{file}:26:6: node[1].id: node id 33 is out of range: expected 1 to 32",
    },
    Case {
        name: "duplicate_node_name",
        edits: &[("name = \"beta\"", "name = \"alpha\"")],
        expected: "{file}:27:8: node[1].name: node name alpha is already used on line 20: node \
                   names must be unique",
    },
    Case {
        name: "one_node_only",
        edits: &[(
            "\n[[node]]\nid = 2\nname = \"beta\"\nlinks.serial0 = { device = \"/dev/ttyS1\" }\n\
             links.lan0 = { address = \"192.168.7.2:5405\" }\n",
            "",
        )],
        expected: "{file}:10:8: link[0]: serial link serial0 is attached to 1 node (alpha): a \
                   serial cable joins exactly two nodes\n\
                   {file}:15:8: link[1]: udp link lan0 is attached to 1 node (alpha): expected at \
                   least two nodes\n\
                   {file}:20:8: node: only one node is defined: expected 2 to 16 nodes, since a \
                   single node has no peer to watch or fail over to",
    },
    Case {
        name: "node_on_no_link",
        edits: &[(
            "name = \"beta\"\nlinks.serial0 = { device = \"/dev/ttyS1\" }\n\
             links.lan0 = { address = \"192.168.7.2:5405\" }\n",
            "name = \"beta\"\n",
        )],
        expected: "{file}:10:8: link[0]: serial link serial0 is attached to 1 node (alpha): a \
                   serial cable joins exactly two nodes\n\
                   {file}:15:8: link[1]: udp link lan0 is attached to 1 node (alpha): expected at \
                   least two nodes\n\
                   {file}:27:8: node[1].links: node beta is attached to no link: expected at \
                   least one entry under links, one per link it is on (defined links: serial0, \
                   lan0)",
    },
    Case {
        name: "unknown_link",
        edits: &[(
            "links.lan0 = { address = \"192.168.7.1",
            "links.lan9 = { address = \"192.168.7.1",
        )],
        expected: "{file}:15:8: link[1]: udp link lan0 is attached to 1 node (beta): expected at \
                   least two nodes\n\
                   {file}:23:7: node[0].links.lan9: node alpha names link lan9, which is not \
                   defined; defined links: serial0, lan0",
    },
    Case {
        name: "serial_link_on_three_nodes",
        edits: &[(
            BETA_LAN,
            "links.lan0 = { address = \"192.168.7.2:5405\" }\n\n[[node]]\nid = 3\n\
             name = \"gamma\"\nlinks.serial0 = { device = \"/dev/ttyS2\" }\n\
             links.lan0 = { address = \"192.168.7.3:5405\" }",
        )],
        expected: "{file}:10:8: link[0]: serial link serial0 is attached to 3 nodes (alpha, beta, \
                   gamma): a serial cable joins exactly two nodes",
    },
    Case {
        name: "udp_endpoint_without_address",
        edits: &[(BETA_LAN, "links.lan0 = { interface = \"eth1\" }")],
        expected: "{file}:29:7: node[1].links.lan0: udp link lan0 needs `address`, the IP address \
                   and port of node beta, e.g. { address = \"192.168.7.1:5405\" }",
    },
    Case {
        name: "serial_endpoint_with_address",
        edits: &[(
            BETA_SERIAL,
            "name = \"beta\"\n\
             links.serial0 = { device = \"/dev/ttyS1\", address = \"192.168.7.2:5405\" }",
        )],
        expected: "{file}:28:52: node[1].links.serial0.address: serial link serial0 takes only \
                   `device`; `address` belongs to udp links",
    },
    Case {
        name: "serial_endpoint_without_device",
        edits: &[(BETA_SERIAL, "name = \"beta\"\nlinks.serial0 = {}")],
        expected: "{file}:28:7: node[1].links.serial0: serial link serial0 needs `device`, the \
                   serial port of node beta, e.g. { device = \"/dev/ttyS1\" }",
    },
    Case {
        name: "bad_baud",
        edits: &[("baud = 115200", "baud = 115201")],
        expected: "{file}:12:8: link[0].baud: baud 115201 is not a standard rate: expected one of \
                   1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600",
    },
    Case {
        name: "baud_on_udp",
        edits: &[("kind = \"udp\"\n", "kind = \"udp\"\nbaud = 9600\n")],
        expected: "{file}:17:8: link[1].baud: baud applies only to serial links, and link lan0 is \
                   udp: remove it",
    },
    Case {
        name: "unknown_link_kind",
        edits: &[("kind = \"udp\"", "kind = \"tcp\"")],
        expected: "{file}:16:8: link[1].kind: unknown variant `tcp`, expected `serial` or `udp`",
    },
    Case {
        name: "multicast_not_multicast",
        edits: &[(
            "kind = \"udp\"\n",
            "kind = \"udp\"\nmulticast = \"192.168.7.255\"\n",
        )],
        expected: "{file}:17:13: link[1].multicast: multicast 192.168.7.255 is not a multicast \
                   address: expected an address in 224.0.0.0/4 (IPv4) or ff00::/8 (IPv6), such \
                   as 239.192.7.1",
    },
    Case {
        name: "multicast_family_mismatch",
        edits: &[(
            "kind = \"udp\"\n",
            "kind = \"udp\"\nmulticast = \"ff15::7\"\n",
        )],
        expected: "{file}:17:13: link[1].multicast: multicast group ff15::7 is IPv6, but the \
                   addresses on link lan0 are IPv4: expected a group of the same family",
    },
    Case {
        name: "mixed_address_families",
        edits: &[(BETA_LAN, "links.lan0 = { address = \"[fd00::2]:5405\" }")],
        expected: "{file}:29:26: node[1].links.lan0.address: address [fd00::2]:5405 is IPv6, but \
                   link lan0's first address 192.168.7.1:5405 (node alpha) is IPv4: expected one \
                   address family per link",
    },
    Case {
        name: "duplicate_address",
        edits: &[("192.168.7.2:5405", "192.168.7.1:5405")],
        expected: "{file}:29:26: node[1].links.lan0.address: address 192.168.7.1:5405 is already \
                   used on link lan0 by node alpha: expected one address per node",
    },
    Case {
        name: "address_port_zero",
        edits: &[("192.168.7.2:5405", "192.168.7.2:0")],
        expected: "{file}:29:26: node[1].links.lan0.address: address 192.168.7.2:0 has port 0: \
                   expected the fixed port that peers send to",
    },
    Case {
        name: "address_without_port",
        edits: &[("192.168.7.2:5405", "192.168.7.2")],
        expected: "{file}:29:26: node[1].links.lan0.address: address \"192.168.7.2\" is not an IP \
                   address and port: expected e.g. \"192.168.7.1:5405\" or \"[fd00::1]:5405\"",
    },
    Case {
        name: "key_file_missing",
        edits: &[("cluster.key", "missing.key")],
        expected: "{file}:3:12: cluster.key_file: key file {dir}/missing.key does not exist: \
                   create one with `watchkeeper keygen {dir}/missing.key`",
    },
    Case {
        name: "key_file_mode_0644",
        edits: &[("cluster.key", "open.key")],
        expected: "{file}:3:12: cluster.key_file: key file {dir}/open.key has mode 0644: it must \
                   not be accessible by group or others (chmod 600 {dir}/open.key)",
    },
    Case {
        name: "key_file_too_short",
        edits: &[("cluster.key", "short.key")],
        expected: "{file}:3:12: cluster.key_file: key file {dir}/short.key holds 10 bytes: a \
                   cluster key must be at least 32 bytes (`watchkeeper keygen {dir}/short.key` \
                   writes 64 hex characters)",
    },
    Case {
        name: "key_file_is_a_directory",
        edits: &[("cluster.key", "keys")],
        expected: "{file}:3:12: cluster.key_file: key file {dir}/keys is not a regular file: \
                   expected the file written by `watchkeeper keygen {dir}/keys`",
    },
    Case {
        name: "all_errors_at_once",
        edits: &[
            ("deadtime = \"1s\"", "deadtime = \"250ms\""),
            ("baud = 115200", "baud = 1234"),
            ("id = 2", "id = 0"),
        ],
        expected: "{file}:7:12: timing.deadtime: deadtime 250ms is shorter than 3 heartbeat \
                   intervals (300ms): a single lost frame would declare a peer dead\n\
                   {file}:12:8: link[0].baud: baud 1234 is not a standard rate: expected one of \
                   1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600\n\
                   {file}:26:6: node[1].id: node id 0 is out of range: expected 1 to 32",
    },
];

#[test]
fn every_broken_file_is_reported_exactly() {
    assert!(CASES.len() >= 20);
    let dir = key_dir();
    let mut failures = Vec::new();
    for case in CASES {
        let text = edited(case);
        let file = dir.path().join(format!("{}.toml", case.name));
        fs::write(&file, &text).expect("write config");
        let got = match config::load(&file) {
            Ok(_) => "(no error)".to_owned(),
            Err(errors) => errors.to_string(),
        };
        let expected = case
            .expected
            .replace("{file}", &file.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        if got != expected {
            failures.push(format!(
                "{}:\n  expected: {expected}\n  got:      {got}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_unedited_file_is_valid() {
    let dir = key_dir();
    let file = dir.path().join("watchkeeper.toml");
    let config = config::parse(&file, BASE).map_err(|e| e.to_string());
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn an_unreadable_file_is_one_error_without_position() {
    let dir = key_dir();
    let file = dir.path().join("absent.toml");
    let errors = config::load(&file).err().map(|e| e.to_string());
    let expected = format!(
        "{}:0:0: -: cannot read the configuration file: No such file or directory (os error 2)",
        file.display()
    );
    assert_eq!(errors, Some(expected));
}

#[test]
fn a_good_file_gets_typed_values_and_defaults() {
    let dir = key_dir();
    // Nodes out of id order and node links out of link order, to see both sorted; no
    // [timing], baud or control_socket, to see the defaults.
    let text = r#"
[cluster]
name = "bacula"
key_file = "cluster.key"

[[link]]
name = "serial0"
kind = "serial"

[[link]]
name = "lan0"
kind = "udp"
multicast = "239.192.7.1"

[[node]]
id = 2
name = "beta"
links.lan0 = { address = "192.168.7.2:5405" }
links.serial0 = { device = "/dev/ttyS1" }

[[node]]
id = 1
name = "alpha"
control_socket = "run/alpha.sock"
state_dir = "alpha-state"
links.serial0 = { device = "/dev/ttyUSB0" }
links.lan0 = { address = "192.168.7.1:5405", interface = "eth1" }
"#;
    let file = dir.path().join("good.toml");
    let config = match config::parse(&file, text) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };

    assert_eq!(config.path, file);
    assert_eq!(config.cluster.name, "bacula");
    // zlib.crc32(b"bacula")
    assert_eq!(config.cluster.id, 0xD8F8_D63C);
    assert_eq!(config.cluster.key_file, dir.path().join("cluster.key"));
    assert_eq!(config.cluster.key.expose(), KEY_HEX.as_bytes());
    assert_eq!(config.timing.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.timing.deadtime, Duration::from_secs(1));
    assert_eq!(
        config.timing.heartbeat_interval,
        config::DEFAULT_HEARTBEAT_INTERVAL
    );
    assert_eq!(config.timing.deadtime, config::DEFAULT_DEADTIME);

    assert_eq!(config.links.len(), 2);
    assert_eq!(config.links[0].id, LinkId(0));
    assert_eq!(config.links[0].name, "serial0");
    assert_eq!(config.links[0].kind, LinkKind::Serial { baud: 115_200 });
    assert_eq!(config.links[1].id, LinkId(1));
    assert_eq!(config.links[1].name, "lan0");
    let group = "239.192.7.1".parse().ok();
    assert_eq!(config.links[1].kind, LinkKind::Udp { multicast: group });

    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = &config.nodes[0];
    assert_eq!(alpha.id.get(), 1);
    assert_eq!(alpha.control_socket, dir.path().join("run/alpha.sock"));
    assert_eq!(alpha.state_dir, dir.path().join("alpha-state"));
    assert_eq!(alpha.links.len(), 2);
    assert_eq!(alpha.links[0].link, LinkId(0));
    assert_eq!(
        alpha.links[0].endpoint,
        Endpoint::Serial {
            device: PathBuf::from("/dev/ttyUSB0")
        }
    );
    assert_eq!(alpha.links[1].link, LinkId(1));
    assert_eq!(
        alpha.links[1].endpoint,
        Endpoint::Udp {
            address: addr("192.168.7.1:5405"),
            interface: Some("eth1".to_owned()),
        }
    );
    let beta = &config.nodes[1];
    assert_eq!(beta.id.get(), 2);
    assert_eq!(
        beta.control_socket,
        Path::new(config::DEFAULT_CONTROL_SOCKET)
    );
    assert_eq!(beta.state_dir, Path::new("/var/lib/watchkeeper"));
    let beta_links: Vec<LinkId> = beta.links.iter().map(|l| l.link).collect();
    assert_eq!(beta_links, [LinkId(0), LinkId(1)]);
    assert_eq!(
        beta.links[1].endpoint,
        Endpoint::Udp {
            address: addr("192.168.7.2:5405"),
            interface: None,
        }
    );

    // The key never reaches logs through Debug.
    assert!(!format!("{config:?}").contains(KEY_HEX));
}

#[test]
fn an_explicit_cluster_id_and_timing_win_over_defaults() {
    let dir = key_dir();
    let text = BASE
        .replace(
            "key_file = \"cluster.key\"",
            "key_file = \"cluster.key\"\nid = 1234",
        )
        .replace("\"100ms\"", "\"0.5s\"")
        .replace("deadtime = \"1s\"", "deadtime = \"2s\"");
    let config = config::parse(&dir.path().join("w.toml"), &text).map_err(|e| e.to_string());
    let config = config
        .as_ref()
        .map(|c| (c.cluster.id, c.timing.heartbeat_interval, c.timing.deadtime));
    assert_eq!(
        config,
        Ok((1234, Duration::from_millis(500), Duration::from_secs(2)))
    );
}

/// The key `watchkeeper keygen` would write (without its newline).
const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A directory with the key files the cases refer to.
fn key_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, content: &str, mode: u32| {
        let path = dir.path().join(name);
        fs::write(&path, content).expect("write key");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod key");
    };
    write("cluster.key", &format!("{KEY_HEX}\n"), 0o600);
    write("open.key", &format!("{KEY_HEX}\n"), 0o644);
    write("short.key", "0123456789\n", 0o600);
    fs::create_dir(dir.path().join("keys")).expect("mkdir");
    dir
}

fn edited(case: &Case) -> String {
    let mut text = BASE.to_owned();
    for (from, to) in case.edits {
        let count = text.matches(from).count();
        assert_eq!(count, 1, "{}: {from:?} occurs {count} times", case.name);
        text = text.replacen(from, to, 1);
    }
    text
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}
