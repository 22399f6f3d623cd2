//! `[http]`: the metrics endpoint and status page. Every broken entry is reported with the
//! exact file, line, column, key and sentence; a good file gives the expected typed values;
//! an absent table means no listener.
//!
//! As in `config_replicate.rs`, each case edits one good file, so it shows only what is broken.

#[macro_use]
mod common;

use std::net::SocketAddr;

use agent::config::{self, PerNode};

/// The good file. Its line numbers matter: the expected messages quote them.
const BASE: &str = concat!(
    two_node_header!(),
    r#"
[http]
listen = "127.0.0.1:9632"
status_page = true
"#
);

const CASES: &[common::Case] = &[
    common::Case {
        name: "missing_listen",
        edits: &[("listen = \"127.0.0.1:9632\"\n", "")],
        expected: "{file}:19:1: http.listen: [http] needs `listen`, the address the metrics endpoint is served on, e.g. listen = \"127.0.0.1:9632\"",
    },
    common::Case {
        name: "listen_without_port",
        edits: &[("\"127.0.0.1:9632\"", "\"127.0.0.1\"")],
        expected: "{file}:20:10: http.listen: listen \"127.0.0.1\" is not an IP address with a port: expected e.g. \"127.0.0.1:9632\"",
    },
    common::Case {
        name: "listen_port_zero",
        edits: &[("\"127.0.0.1:9632\"", "\"127.0.0.1:0\"")],
        expected: "{file}:20:10: http.listen: listen 127.0.0.1:0 has port 0: expected the fixed port the scraper connects to",
    },
    common::Case {
        name: "listen_multicast",
        edits: &[("\"127.0.0.1:9632\"", "\"239.1.1.1:9632\"")],
        expected: "{file}:20:10: http.listen: listen 239.1.1.1:9632 is a multicast address: expected one of this host's",
    },
    common::Case {
        name: "listen_wrong_type",
        edits: &[("\"127.0.0.1:9632\"", "9632")],
        expected: "{file}:20:10: http.listen: listen 9632 is neither a string nor a table by node name: expected e.g. \"127.0.0.1:9632\"",
    },
    common::Case {
        name: "per_node_missing_a_node",
        edits: &[("\"127.0.0.1:9632\"", "{ alpha = \"127.0.0.1:9632\" }")],
        expected: "{file}:20:10: http.listen: listen is given per node but not for beta: every node needs one",
    },
    common::Case {
        name: "per_node_bad_address",
        edits: &[("\"127.0.0.1:9632\"", "{ alpha = \"127.0.0.1:9632\", beta = \"localhost:9633\" }")],
        expected: "{file}:20:10: http.listen.beta: listen \"localhost:9633\" is not an IP address with a port: expected e.g. \"127.0.0.1:9632\"",
    },
    common::Case {
        name: "per_node_unknown_node",
        edits: &[("\"127.0.0.1:9632\"", "{ alpha = \"127.0.0.1:9632\", beta = \"127.0.0.1:9633\", gamma = \"127.0.0.1:9634\" }")],
        expected: "{file}:20:10: http.listen.gamma: node gamma is not defined; defined nodes: alpha, beta",
    },
    common::Case {
        name: "status_page_not_a_bool",
        edits: &[("status_page = true", "status_page = \"yes\"")],
        expected: "{file}:21:15: http.status_page: invalid type: string \"yes\", expected a boolean",
    },
    common::Case {
        name: "unknown_key",
        edits: &[("status_page = true", "status_page = true\nport = 9632")],
        expected: "{file}:22:1: http.port: unknown field `port`, expected `listen` or `status_page`",
    },
];

fn write_case(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    common::write_key(dir);
    common::write_config(dir, text)
}

#[test]
fn broken_http_tables_are_reported_exactly() {
    common::check(BASE, CASES, |dir, text, _| write_case(dir, text));
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn one_address_for_every_node_and_the_page_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config::load(&write_case(dir.path(), BASE)).unwrap_or_else(|e| panic!("{e}"));
    let h = c.http.expect("[http]");
    assert!(h.status_page);
    assert_eq!(h.listen, PerNode::All(addr("127.0.0.1:9632")));
    assert_eq!(h.listen_for("beta"), Some(addr("127.0.0.1:9632")));
}

#[test]
fn per_node_addresses_and_the_page_off_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = BASE
        .replace(
            "\"127.0.0.1:9632\"",
            "{ alpha = \"127.0.0.1:9632\", beta = \"[::1]:9633\" }",
        )
        .replace("status_page = true\n", "");
    let c = config::load(&write_case(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    let h = c.http.expect("[http]");
    assert!(!h.status_page, "the page is off unless asked for");
    assert_eq!(h.listen_for("alpha"), Some(addr("127.0.0.1:9632")));
    assert_eq!(h.listen_for("beta"), Some(addr("[::1]:9633")));
}

#[test]
fn absent_table_means_no_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = BASE.replace(
        "[http]\nlisten = \"127.0.0.1:9632\"\nstatus_page = true\n",
        "",
    );
    let c = config::load(&write_case(dir.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.http.is_none());
}
