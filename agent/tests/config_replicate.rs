//! `[replicate]` and the nodes' `replicate` addresses: every broken entry is reported with the
//! exact file, line, column, key and sentence, and a good file gives the expected typed values.
//!
//! As in `config_resource.rs`, each case edits one good file, so it shows only what is broken.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::config::{self, PerNode, DEFAULT_REPLICATE_INTERVAL, DEFAULT_REPLICATE_PORT};

/// The good file: two nodes that can hold and a witness. Its line numbers matter: the expected
/// messages quote them.
const BASE: &str = concat!(
    cluster_header!(),
    r#"[[node]]
id = 1
name = "alpha"
replicate = "192.168.7.1"
links.lan0 = { address = "192.168.7.1:5405" }

[[node]]
id = 2
name = "beta"
replicate = "192.168.8.2:7000"
links.lan0 = { address = "192.168.7.2:5405" }

[[node]]
id = 3
name = "gamma"
witness = true
links.lan0 = { address = "192.168.7.3:5405" }

[replicate]
source = "/opt/bacula/etc"
interval = "10s"
"#
);

const CASES: &[common::Case] = &[
    common::Case {
        name: "missing_source",
        edits: &[("source = \"/opt/bacula/etc\"\n", "")],
        expected: "{file}:27:1: replicate.source: [replicate] needs `source`, the Director's configuration directory on the holder, e.g. source = \"/opt/bacula/etc\"",
    },
    common::Case {
        name: "relative_source",
        edits: &[("source = \"/opt/bacula/etc\"", "source = \"opt/bacula/etc\"")],
        expected: "{file}:28:10: replicate.source: source \"opt/bacula/etc\" is not an absolute path: expected a directory such as \"/opt/bacula/etc\"",
    },
    common::Case {
        name: "root_target",
        edits: &[("interval = \"10s\"", "interval = \"10s\"\ntarget = \"/\"")],
        expected: "{file}:30:10: replicate.target: target \"/\" is the root directory: expected a directory such as \"/opt/bacula/etc\"",
    },
    common::Case {
        name: "per_node_source_missing_a_node",
        edits: &[("source = \"/opt/bacula/etc\"", "source = { alpha = \"/opt/bacula/etc\" }")],
        expected: "{file}:28:10: replicate.source: source is given per node but not for beta: every node needs one",
    },
    common::Case {
        name: "per_node_target_relative",
        edits: &[("interval = \"10s\"", "interval = \"10s\"\ntarget = { alpha = \"/opt/bacula/etc\", beta = \"etc\" }")],
        expected: "{file}:30:10: replicate.target.beta: target \"etc\" is not an absolute path: expected a directory such as \"/opt/bacula/etc\"",
    },
    common::Case {
        name: "source_wrong_type",
        edits: &[("source = \"/opt/bacula/etc\"", "source = 5")],
        expected: "{file}:28:10: replicate.source: source 5 is neither a string nor a table by node name: expected e.g. \"/opt/bacula/etc\"",
    },
    common::Case {
        name: "interval_out_of_range",
        edits: &[("interval = \"10s\"", "interval = \"10ms\"")],
        expected: "{file}:29:12: replicate.interval: interval 10ms is out of range: expected 100ms to 60m",
    },
    common::Case {
        name: "interval_without_unit",
        edits: &[("interval = \"10s\"", "interval = 10")],
        expected: "{file}:29:12: replicate.interval: interval 10 has no unit: expected a string such as \"10ms\" or \"10s\"",
    },
    common::Case {
        name: "port_out_of_range",
        edits: &[("interval = \"10s\"", "interval = \"10s\"\nport = 70000")],
        expected: "{file}:30:8: replicate.port: port 70000 is out of range: expected 1 to 65535",
    },
    common::Case {
        name: "unknown_key",
        edits: &[("interval = \"10s\"", "interval = \"10s\"\ncompress = true")],
        expected: "{file}:30:1: replicate.compress: unknown field `compress`, expected one of `source`, `target`, `interval`, `port`",
    },
    common::Case {
        name: "node_without_address",
        edits: &[("replicate = \"192.168.8.2:7000\"\n", "")],
        expected: "{file}:17:8: node[1].replicate: node beta has no replicate address: with [replicate], every node that can hold the group needs one, e.g. replicate = \"192.168.7.1\"",
    },
    common::Case {
        name: "bad_address",
        edits: &[("replicate = \"192.168.7.1\"", "replicate = \"alpha.lan\"")],
        expected: "{file}:12:13: node[0].replicate: replicate \"alpha.lan\" is not an IP address with or without a port: expected e.g. \"192.168.7.1\" or \"192.168.7.1:5406\"",
    },
    common::Case {
        name: "unspecified_address",
        edits: &[("replicate = \"192.168.7.1\"", "replicate = \"0.0.0.0\"")],
        expected: "{file}:12:13: node[0].replicate: replicate 0.0.0.0:5406 is not a unicast address: expected node alpha's own IP address, which its peers connect to",
    },
    common::Case {
        name: "port_zero",
        edits: &[("replicate = \"192.168.8.2:7000\"", "replicate = \"192.168.8.2:0\"")],
        expected: "{file}:18:13: node[1].replicate: replicate 192.168.8.2:0 has port 0: expected the fixed port peers connect to",
    },
    common::Case {
        name: "duplicate_address",
        edits: &[
            ("replicate = \"192.168.8.2:7000\"", "replicate = \"192.168.7.1:7000\""),
            ("interval = \"10s\"", "interval = \"10s\"\nport = 7000"),
        ],
        expected: "{file}:18:13: node[1].replicate: replicate 192.168.7.1:7000 is already used by node alpha: expected one address per node",
    },
    common::Case {
        name: "witness_with_address",
        edits: &[("witness = true", "witness = true\nreplicate = \"192.168.7.3\"")],
        expected: "{file}:25:13: node[2].replicate: node gamma is a witness and never holds the group, so it serves no configuration: remove replicate",
    },
    common::Case {
        name: "address_without_table",
        edits: &[("[replicate]\nsource = \"/opt/bacula/etc\"\ninterval = \"10s\"\n", "")],
        expected: "{file}:12:13: node[0].replicate: replicate is set but there is no [replicate] table: add one with `source`, or remove this key\n\
                   {file}:18:13: node[1].replicate: replicate is set but there is no [replicate] table: add one with `source`, or remove this key",
    },
];

fn write_case(dir: &Path, text: &str) -> std::path::PathBuf {
    common::write_key(dir);
    common::write_config(dir, text)
}

#[test]
fn broken_replication_is_reported_exactly() {
    common::check(BASE, CASES, |dir, text, case| {
        let _ = case;
        common::write_key(dir);
        common::write_config(dir, text)
    });
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn defaults_fill_in_and_addresses_take_the_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = BASE.replace("interval = \"10s\"\n", "");
    let c = config::load(&write_case(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    let r = c.replicate.expect("[replicate]");
    assert_eq!(r.interval, DEFAULT_REPLICATE_INTERVAL);
    assert_eq!(r.port, DEFAULT_REPLICATE_PORT);
    assert_eq!(r.source, PerNode::All(PathBuf::from("/opt/bacula/etc")));
    assert_eq!(r.target, r.source, "target defaults to source");
    assert_eq!(r.address_for("alpha"), Some(addr("192.168.7.1:5406")));
    assert_eq!(r.address_for("beta"), Some(addr("192.168.8.2:7000")));
    assert_eq!(r.address_for("gamma"), None, "a witness serves nothing");
}

#[test]
fn per_node_paths_and_explicit_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = BASE.replace(
        "source = \"/opt/bacula/etc\"\ninterval = \"10s\"\n",
        "source = { alpha = \"/opt/bacula/etc\", beta = \"/etc/bacula\" }\n\
         target = \"/srv/bacula-etc\"\ninterval = \"300ms\"\nport = 6000\n",
    );
    let c = config::load(&write_case(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    let r = c.replicate.expect("[replicate]");
    assert_eq!(r.interval, Duration::from_millis(300));
    assert_eq!(r.port, 6000);
    assert_eq!(r.source_for("alpha"), Some(Path::new("/opt/bacula/etc")));
    assert_eq!(r.source_for("beta"), Some(Path::new("/etc/bacula")));
    assert_eq!(r.target_for("beta"), Some(Path::new("/srv/bacula-etc")));
    assert_eq!(r.address_for("alpha"), Some(addr("192.168.7.1:6000")));
    assert_eq!(r.address_for("beta"), Some(addr("192.168.8.2:7000")));
}

#[test]
fn absent_table_means_no_replication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = BASE
        .replace(
            "[replicate]\nsource = \"/opt/bacula/etc\"\ninterval = \"10s\"\n",
            "",
        )
        .replace("replicate = \"192.168.7.1\"\n", "")
        .replace("replicate = \"192.168.8.2:7000\"\n", "");
    let c = config::load(&write_case(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.replicate.is_none());
}
