//! The harness of the configuration tests: each case edits one good file, loads it, and
//! compares the whole error report with the expected text, so a test shows only what is broken
//! and any change of wording or position is noticed.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The opening of every good file: the cluster and one UDP link, `lan0` (lines 1 to 7, then a
/// blank line 8).
#[allow(unused_macros)]
macro_rules! cluster_header {
    () => {
        r#"[cluster]
name = "bacula"
key_file = "cluster.key"

[[link]]
name = "lan0"
kind = "udp"

"#
    };
}

/// The opening of a good two-node file (lines 1 to 17), for the files whose cases edit what
/// follows it; the expected messages' line numbers count on from its 18th line.
#[allow(unused_macros)]
macro_rules! two_node_header {
    () => {
        concat!(
            cluster_header!(),
            r#"[[node]]
id = 1
name = "alpha"
links.lan0 = { address = "192.168.7.1:5405" }

[[node]]
id = 2
name = "beta"
links.lan0 = { address = "192.168.7.2:5405" }
"#
        )
    };
}

/// One broken variant of a good file.
pub(crate) struct Case {
    /// Name, for the failure report.
    pub(crate) name: &'static str,
    /// `(from, to)` replacements, each of which must match the good file exactly once.
    pub(crate) edits: &'static [(&'static str, &'static str)],
    /// The whole report; `{file}` is the config file, `{dir}` its directory.
    pub(crate) expected: &'static str,
}

/// Writes a 40-byte cluster key of mode 0600 into `dir`.
pub(crate) fn write_key(dir: &Path) {
    write_secret(dir, "cluster.key", &"k".repeat(40));
}

/// Writes a secret file of mode 0600 into `dir`.
pub(crate) fn write_secret(dir: &Path, name: &str, value: &str) {
    let path = dir.join(name);
    fs::write(&path, value).expect("secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod secret");
}

/// Writes `text` as `wk.toml` into `dir`.
pub(crate) fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("wk.toml");
    fs::write(&file, text).expect("config");
    file
}

/// `base` with `case`'s edits applied.
pub(crate) fn edited(base: &str, case: &Case) -> String {
    let mut text = base.to_owned();
    for (from, to) in case.edits {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{}: edit {from:?} must match once",
            case.name
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// Runs every case: `setup` prepares a fresh directory (key, secrets) and writes the edited
/// text, returning the config file. Panics with every mismatch at once.
pub(crate) fn check(base: &str, cases: &[Case], setup: impl Fn(&Path, &str, &Case) -> PathBuf) {
    let mut failures = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = setup(dir.path(), &edited(base, case), case);
        let expected = case
            .expected
            .replace("{file}", &file.display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let got = match agent::config::load(&file) {
            Ok(_) => "loaded without error".to_owned(),
            Err(e) => e.to_string(),
        };
        if got != expected {
            failures.push(format!(
                "{}:\n  expected: {expected}\n  got:      {got}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A good two-node file whose first node's line `WATCHDOG` (line 14, or 15 with a cluster id)
/// the watchdog tests replace with each case.
pub(crate) fn watchdog_base(cluster_id: Option<u32>) -> String {
    let id = cluster_id
        .map(|id| format!("id = {id}\n"))
        .unwrap_or_default();
    format!(
        r#"[cluster]
name = "bacula"
{id}key_file = "cluster.key"

[timing]
heartbeat_interval = "100ms"

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 1
WATCHDOG
name = "alpha"
links.lan0 = {{ address = "192.168.7.1:5405" }}

[[node]]
id = 2
name = "beta"
links.lan0 = {{ address = "192.168.7.2:5405" }}
"#
    )
}

/// The hexadecimal cluster key the watchdog tests write.
pub(crate) const HEX_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Parses `base` with `WATCHDOG` replaced by `watchdog`, in a fresh directory with the key;
/// errors with the file's path as `{file}`.
pub(crate) fn parse_watchdog(base: &str, watchdog: &str) -> Result<agent::config::Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    write_secret(dir.path(), "cluster.key", &format!("{HEX_KEY}\n"));
    let file = dir.path().join("wk.toml");
    agent::config::parse(&file, &base.replace("WATCHDOG", watchdog))
        .map_err(|e| e.to_string().replace(&file.display().to_string(), "{file}"))
}
