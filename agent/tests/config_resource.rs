//! `[[resource]]`: the resource group in start order. Every broken entry is reported with the
//! exact file, line, column, key and sentence, and a good file gives the expected typed values.
//!
//! As in `config_fence.rs`, each case edits one good file, so it shows only what is broken.

mod common;

use std::path::Path;
use std::time::Duration;

use agent::config::{self, FsckWord, PerNode, RejoinWord, ResourceKind};

/// The good file: Bacula's order. Its line numbers matter: the expected messages quote them.
const BASE: &str = r#"[cluster]
name = "bacula"
key_file = "cluster.key"

[failover]
restart_limit = 2

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 1
name = "alpha"
links.lan0 = { address = "192.168.7.1:5405" }

[[node]]
id = 2
name = "beta"
links.lan0 = { address = "192.168.7.2:5405" }

[[resource]]
name = "storage"
type = "mount"
device = "/dev/disk/by-label/bacula"
mountpoint = "/srv/bacula"
fstype = "ext4"
options = ["noatime"]
stop_timeout = "2m"

[[resource]]
name = "catalog"
type = "pgsql"
bindir = "/usr/lib/postgresql/15/bin"
datadir = "/var/lib/postgresql/15/main"
user = "postgres"
primary_conninfo = { alpha = "host=192.168.7.2 user=replicator", beta = "host=192.168.7.1 user=replicator" }

[[resource]]
name = "vip"
type = "vip"
address = "10.20.0.10/24"
interface = { alpha = "eth0", beta = "eno1" }

[[resource]]
name = "sd"
type = "ocf"
agent = "heartbeat:Dummy"
params = { state = "/run/wk-sd.state" }
monitor_interval = "5s"

[[resource]]
name = "director"
type = "systemd"
unit = "bacula-dir.service"
"#;

const CASES: &[common::Case] = &[
    common::Case {
        name: "unknown_type",
        edits: &[("type = \"systemd\"", "type = \"lsb\"")],
        expected: "{file}:54:8: resource[4].type: resource type \"lsb\" is not known: expected \"ocf\", \"script\", \"systemd\", \"mount\", \"vip\" or \"pgsql\"",
    },
    common::Case {
        name: "foreign_key",
        edits: &[("unit = \"bacula-dir.service\"", "unit = \"bacula-dir.service\"\nmountpoint = \"/x\"")],
        expected: "{file}:56:14: resource[4].mountpoint: mountpoint does not apply to systemd resources: remove it",
    },
    common::Case {
        name: "duplicate_name",
        edits: &[("name = \"director\"", "name = \"sd\"")],
        expected: "{file}:53:8: resource[4].name: resource name sd is already used on line 46: resource names must be unique",
    },
    common::Case {
        name: "relative_mountpoint",
        edits: &[("mountpoint = \"/srv/bacula\"", "mountpoint = \"srv/bacula\"")],
        expected: "{file}:26:14: resource[0].mountpoint: mountpoint \"srv/bacula\" is not an absolute path: expected e.g. \"/srv/bacula\"",
    },
    common::Case {
        name: "root_mountpoint",
        edits: &[("mountpoint = \"/srv/bacula\"", "mountpoint = \"/\"")],
        expected: "{file}:26:14: resource[0].mountpoint: mountpoint \"/\" is the root filesystem: it cannot move between nodes",
    },
    common::Case {
        name: "bad_fsck",
        edits: &[("options = [\"noatime\"]", "options = [\"noatime\"]\nfsck = \"sometimes\"")],
        expected: "{file}:29:8: resource[0].fsck: fsck \"sometimes\" is not known: expected \"preen\" (default: fsck -p, refuse to mount what it cannot fix), \"force\" or \"never\"",
    },
    common::Case {
        name: "zero_timeout",
        edits: &[("stop_timeout = \"2m\"", "stop_timeout = \"0s\"")],
        expected: "{file}:29:16: resource[0].stop_timeout: stop_timeout is 0ms: expected more than zero",
    },
    common::Case {
        name: "conninfo_missing_a_node",
        edits: &[(", beta = \"host=192.168.7.1 user=replicator\"", "")],
        expected: "{file}:37:20: resource[1].primary_conninfo: primary_conninfo is given per node but not for beta: every node needs one",
    },
    common::Case {
        name: "rewind_without_conninfo",
        edits: &[("primary_conninfo = { alpha = \"host=192.168.7.2 user=replicator\", beta = \"host=192.168.7.1 user=replicator\" }\n", "")],
        expected: "{file}:32:8: resource[1].primary_conninfo: a former primary is rewound or recloned from the new one: set primary_conninfo (per node: how it reaches its peer), or rejoin = \"manual\"",
    },
    common::Case {
        name: "bad_rejoin",
        edits: &[("user = \"postgres\"", "user = \"postgres\"\nrejoin = \"promote\"")],
        expected: "{file}:37:10: resource[1].rejoin: rejoin \"promote\" is not known: expected \"rewind\" (pg_rewind), \"reclone\" (pg_basebackup) or \"manual\"",
    },
    common::Case {
        name: "bad_vip",
        edits: &[("address = \"10.20.0.10/24\"", "address = \"10.20.0.10\"")],
        expected: "{file}:42:11: resource[2].address: address \"10.20.0.10\" is not an IP address with a prefix length: expected e.g. \"10.20.0.10/24\" or \"fd00::10/64\"",
    },
    common::Case {
        name: "interface_for_unknown_node",
        edits: &[("beta = \"eno1\"", "gamma = \"eno1\"")],
        expected: "{file}:43:13: resource[2].interface.gamma: node gamma is not defined; defined nodes: alpha, beta\n\
                   {file}:43:13: resource[2].interface: interface is given per node but not for beta: every node needs one",
    },
    common::Case {
        name: "bad_agent",
        edits: &[("agent = \"heartbeat:Dummy\"", "agent = \"Dummy\"")],
        expected: "{file}:48:9: resource[3].agent: agent \"Dummy\" is neither provider:type (e.g. \"heartbeat:Dummy\") nor an absolute path",
    },
    common::Case {
        name: "bad_param_name",
        edits: &[("params = { state = ", "params = { \"st-ate\" = ")],
        expected: "{file}:49:23: resource[3].params.st-ate: parameter name \"st-ate\" cannot be an environment variable (OCF_RESKEY_st-ate): use letters, digits and '_'",
    },
    common::Case {
        name: "script_relative_program",
        edits: &[("type = \"systemd\"\nunit = \"bacula-dir.service\"", "type = \"script\"\nstart = [\"bacula-ctl\", \"start\"]\nstop = [\"/usr/sbin/bacula-ctl\", \"stop\"]\nstatus = [\"/usr/sbin/bacula-ctl\", \"status\"]")],
        expected: "{file}:55:9: resource[4].start: start must start with the program's absolute path, e.g. [\"/usr/local/sbin/bacula-ctl\", \"start\"]",
    },
    common::Case {
        name: "pgsql_relative_datadir_for_one_node",
        edits: &[("datadir = \"/var/lib/postgresql/15/main\"", "datadir = { alpha = \"/srv/pg\", beta = \"srv/pg\" }")],
        expected: "{file}:35:11: resource[1].datadir.beta: datadir \"srv/pg\" is not an absolute path: expected e.g. \"/var/lib/postgresql/15/main\"",
    },
    common::Case {
        name: "pgsql_port_missing_for_a_node",
        edits: &[("user = \"postgres\"", "user = \"postgres\"\nport = { alpha = 5432 }")],
        expected: "{file}:37:8: resource[1].port: port is given per node but not for beta: every node needs one",
    },
    common::Case {
        name: "pgsql_port_out_of_range_for_a_node",
        edits: &[("user = \"postgres\"", "user = \"postgres\"\nport = { alpha = 5432, beta = 0 }")],
        expected: "{file}:37:8: resource[1].port.beta: port for node beta is not a TCP port (1 to 65535)",
    },
    common::Case {
        name: "restart_limit_out_of_range",
        edits: &[("restart_limit = 2", "restart_limit = 50")],
        expected: "{file}:6:17: failover.restart_limit: restart_limit 50 is out of range: expected 0 (hand over at the first monitor failure) to 10",
    },
];

fn write_case(dir: &Path, text: &str) -> std::path::PathBuf {
    common::write_key(dir);
    common::write_config(dir, text)
}

#[test]
fn broken_resources_are_reported_exactly() {
    common::check(BASE, CASES, |dir, text, case| {
        let _ = case;
        common::write_key(dir);
        common::write_config(dir, text)
    });
}

#[test]
fn the_bacula_group_turns_into_typed_values_in_start_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_case(dir.path(), BASE);
    let c = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["storage", "catalog", "vip", "sd", "director"]);
    assert_eq!(c.failover.restart_limit, 2);

    let storage = &c.resources[0];
    assert_eq!(
        storage.kind,
        ResourceKind::Mount {
            device: "/dev/disk/by-label/bacula".into(),
            mountpoint: "/srv/bacula".into(),
            fstype: "ext4".into(),
            options: vec!["noatime".into()],
            fsck: FsckWord::Preen,
        }
    );
    assert_eq!(storage.stop_timeout, Some(Duration::from_secs(120)));
    assert_eq!(storage.start_timeout, None, "filled in by the agent");
    assert_eq!(storage.monitor_interval, config::DEFAULT_MONITOR_INTERVAL);

    let ResourceKind::Pgsql {
        port,
        rejoin,
        primary_conninfo,
        host,
        superuser,
        ..
    } = &c.resources[1].kind
    else {
        panic!("catalog is {:?}", c.resources[1].kind)
    };
    assert_eq!(*port, PerNode::All(config::DEFAULT_PG_PORT));
    assert_eq!(*rejoin, RejoinWord::Rewind);
    assert_eq!(host, "/var/run/postgresql");
    assert_eq!(superuser, "postgres");
    let conninfo = primary_conninfo.as_ref().expect("conninfo");
    assert_eq!(
        conninfo.for_node("beta").map(String::as_str),
        Some("host=192.168.7.1 user=replicator")
    );

    let ResourceKind::Vip {
        address,
        prefix,
        interface,
    } = &c.resources[2].kind
    else {
        panic!("vip is {:?}", c.resources[2].kind)
    };
    assert_eq!(address.to_string(), "10.20.0.10");
    assert_eq!(*prefix, 24);
    assert!(matches!(interface, PerNode::ByNode(_)));
    assert_eq!(
        interface.for_node("alpha").map(String::as_str),
        Some("eth0")
    );

    let ResourceKind::Ocf { agent, params, .. } = &c.resources[3].kind else {
        panic!("sd is {:?}", c.resources[3].kind)
    };
    assert_eq!(agent, Path::new("/usr/lib/ocf/resource.d/heartbeat/Dummy"));
    assert_eq!(
        params.get("state").map(String::as_str),
        Some("/run/wk-sd.state")
    );
    assert_eq!(c.resources[3].monitor_interval, Duration::from_secs(5));

    assert_eq!(
        c.resources[4].kind,
        ResourceKind::Systemd {
            unit: "bacula-dir.service".into()
        }
    );
    let engine = c.engine_config(c.nodes[0].id, c.resource_names());
    assert_eq!(engine.resources, names);
    assert_eq!(engine.restart_limit, 2);
}
