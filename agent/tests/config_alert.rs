//! `[journal]` and `[[alert]]`: every broken entry is reported with the exact file, line,
//! column, key and sentence, and a good file gives the expected typed values.
//!
//! As in `config_replicate.rs`, each case edits one good file, so it shows only what is broken.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use agent::config::{self, AlertKind, DEFAULT_ALERT_TIMEOUT, DEFAULT_JOURNAL_KEEP};

/// The good file. Its line numbers matter: the expected messages quote them.
const BASE: &str = concat!(
    two_node_header!(),
    r#"
[journal]
path = "/var/log/wk/{node}.jsonl"
max_size = "2MiB"
keep = 3

[[alert]]
name = "ops"
kind = "hook"
command = ["/usr/local/bin/wk-alert", "--page"]
timeout = "5s"
events = ["failover", "fence"]

[[alert]]
name = "mail"
kind = "smtp"
relay = "mail.example.org:25"
from = "wk@example.org"
to = ["ops@example.org", "backup@example.org"]

[[alert]]
name = "chat"
kind = "webhook"
url = "https://hooks.example.org/wk"
"#
);

const CASES: &[common::Case] = &[
    common::Case {
        name: "max_size_without_unit_word",
        edits: &[("max_size = \"2MiB\"", "max_size = \"2 megs\"")],
        expected: "{file}:21:12: journal.max_size: max_size \"2 megs\" is not a size: expected bytes or a number with KiB, MiB or GiB, e.g. \"10MiB\"",
    },
    common::Case {
        name: "max_size_too_small",
        edits: &[("max_size = \"2MiB\"", "max_size = 100")],
        expected: "{file}:21:12: journal.max_size: max_size 100 bytes is out of range: expected 4KiB to 1GiB",
    },
    common::Case {
        name: "keep_zero",
        edits: &[("keep = 3", "keep = 0")],
        expected: "{file}:22:8: journal.keep: keep 0 is out of range: expected 1 to 100 rotated files",
    },
    common::Case {
        name: "empty_path",
        edits: &[("path = \"/var/log/wk/{node}.jsonl\"", "path = \"\"")],
        expected: "{file}:20:8: journal.path: path is empty: expected a file path, or no path for journal.jsonl in the node's state directory",
    },
    common::Case {
        name: "unknown_journal_key",
        edits: &[("keep = 3", "keep = 3\nrotate = true")],
        expected: "{file}:23:1: journal.rotate: unknown field `rotate`, expected one of `path`, `max_size`, `keep`",
    },
    common::Case {
        name: "unknown_kind",
        edits: &[("kind = \"hook\"", "kind = \"pager\"")],
        expected: "{file}:26:8: alert[0].kind: kind \"pager\" is not an alert kind: expected \"hook\", \"smtp\" or \"webhook\"",
    },
    common::Case {
        name: "relative_hook",
        edits: &[("[\"/usr/local/bin/wk-alert\", \"--page\"]", "[\"wk-alert\"]")],
        expected: "{file}:27:11: alert[0].command: command program \"wk-alert\" is not an absolute path: the agent runs it without a shell or PATH search",
    },
    common::Case {
        name: "hook_without_command",
        edits: &[("command = [\"/usr/local/bin/wk-alert\", \"--page\"]\n", "")],
        expected: "{file}:26:8: alert[0].command: a hook alert needs `command`, e.g. command = [\"/usr/local/bin/wk-alert\"]",
    },
    common::Case {
        name: "timeout_too_long",
        edits: &[("timeout = \"5s\"", "timeout = \"10m\"")],
        expected: "{file}:28:11: alert[0].timeout: timeout 10m is out of range: expected 100ms to 5m",
    },
    common::Case {
        name: "timeout_without_unit",
        edits: &[("timeout = \"5s\"", "timeout = 5")],
        expected: "{file}:28:11: alert[0].timeout: timeout 5 has no unit: expected a string such as \"5ms\" or \"5s\"",
    },
    common::Case {
        name: "unknown_event",
        edits: &[("[\"failover\", \"fence\"]", "[\"failover\", \"reboot\"]")],
        expected: "{file}:29:23: alert[0].events: \"reboot\" is not an event kind: expected some of failover, switchover, holding, fence, fence_device, watchdog_reboot, link, peer, split_brain, self_fence, resource_failed",
    },
    common::Case {
        name: "key_of_another_kind",
        edits: &[("timeout = \"5s\"", "timeout = \"5s\"\nurl = \"http://x\"")],
        expected: "{file}:29:7: alert[0].url: url does not apply to a hook alert: expected only command",
    },
    common::Case {
        name: "relay_without_port",
        edits: &[("relay = \"mail.example.org:25\"", "relay = \"mail.example.org\"")],
        expected: "{file}:34:9: alert[1].relay: relay \"mail.example.org\" is not host:port: expected e.g. \"mail.example.org:25\"",
    },
    common::Case {
        name: "bad_recipient",
        edits: &[("\"backup@example.org\"", "\"backup\"")],
        expected: "{file}:36:26: alert[1].to: \"backup\" is not a mail address: expected e.g. \"ops@example.org\"",
    },
    common::Case {
        name: "smtp_without_from",
        edits: &[("from = \"wk@example.org\"\n", "")],
        expected: "{file}:33:8: alert[1].from: a smtp alert needs `from`, e.g. from = \"watchkeeper@example.org\"",
    },
    common::Case {
        name: "webhook_not_http",
        edits: &[("url = \"https://hooks.example.org/wk\"", "url = \"ftp://hooks.example.org/wk\"")],
        expected: "{file}:41:7: alert[2].url: url \"ftp://hooks.example.org/wk\" is not an http:// or https:// URL with a host",
    },
    common::Case {
        name: "duplicate_name",
        edits: &[("name = \"chat\"", "name = \"ops\"")],
        expected: "{file}:39:8: alert[2].name: alert name \"ops\" is already used by alert[0]: names must be unique",
    },
    common::Case {
        name: "two_errors_in_one_pass",
        edits: &[
            ("keep = 3", "keep = 1000"),
            ("url = \"https://hooks.example.org/wk\"", "url = \"https://\""),
        ],
        expected: "{file}:22:8: journal.keep: keep 1000 is out of range: expected 1 to 100 rotated files\n\
                   {file}:41:7: alert[2].url: url \"https://\" is not an http:// or https:// URL with a host",
    },
];

#[test]
fn broken_journal_and_alerts_are_reported_exactly() {
    common::check(BASE, CASES, |dir, text, _| {
        common::write_key(dir);
        common::write_config(dir, text)
    });
}

#[test]
fn a_good_file_gets_typed_alerts_and_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_key(dir.path());
    let file = common::write_config(dir.path(), BASE);
    let c = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.journal.max_size, 2 << 20);
    assert_eq!(c.journal.keep, 3);
    let alpha = c.node_by_name("alpha").expect("alpha");
    assert_eq!(
        c.journal.path_for("alpha", &alpha.state_dir),
        PathBuf::from("/var/log/wk/alpha.jsonl")
    );
    assert_eq!(c.alerts.len(), 3);
    assert_eq!(
        c.alerts[0].kind,
        AlertKind::Hook {
            command: vec!["/usr/local/bin/wk-alert".to_owned(), "--page".to_owned()]
        }
    );
    assert_eq!(c.alerts[0].timeout, Duration::from_secs(5));
    assert!(c.alerts[0].wants("fence") && !c.alerts[0].wants("link"));
    assert_eq!(
        c.alerts[1].kind,
        AlertKind::Smtp {
            host: "mail.example.org".to_owned(),
            port: 25,
            from: "wk@example.org".to_owned(),
            to: vec![
                "ops@example.org".to_owned(),
                "backup@example.org".to_owned()
            ],
        }
    );
    assert_eq!(c.alerts[1].timeout, DEFAULT_ALERT_TIMEOUT);
    assert!(c.alerts[1].wants("link"), "no events list: every kind");
    assert_eq!(
        c.alerts[2].kind,
        AlertKind::Webhook {
            url: "https://hooks.example.org/wk".to_owned(),
            ca_file: None
        }
    );
}

#[test]
fn without_the_tables_the_journal_sits_in_the_state_directory_and_nobody_is_alerted() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_key(dir.path());
    let text = BASE.split("[journal]").next().expect("head");
    let file = common::write_config(dir.path(), text);
    let c = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.alerts.is_empty());
    assert_eq!(c.journal.keep, DEFAULT_JOURNAL_KEEP);
    let beta = c.node_by_name("beta").expect("beta");
    assert_eq!(
        c.journal.path_for("beta", &beta.state_dir),
        beta.state_dir.join("journal.jsonl")
    );
}
