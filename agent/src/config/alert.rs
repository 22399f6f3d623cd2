//! `[journal]`: where the decision journal goes and how it rotates; `[[alert]]`: who hears
//! about failovers, fences, broken fence devices, watchdog resets, links and split-brain
//! suspicions.
//!
//! ```toml
//! [journal]
//! path = "/var/lib/watchkeeper/{node}/journal.jsonl"  # optional; default <state_dir>/journal.jsonl
//! max_size = "10MiB"                                  # optional; rotate beyond this
//! keep = 5                                            # optional; rotated files kept
//!
//! [[alert]]
//! name = "ops"
//! kind = "hook"                        # hook | smtp | webhook
//! command = ["/usr/local/bin/wk-alert", "--page"]
//! timeout = "10s"                      # optional
//! events = ["failover", "fence"]       # optional; default every kind
//!
//! [[alert]]
//! name = "mail"
//! kind = "smtp"
//! relay = "mail.example.org:25"        # plain SMTP to the site's relay
//! from = "watchkeeper@example.org"
//! to = ["backup-admins@example.org"]
//!
//! [[alert]]
//! name = "chat"
//! kind = "webhook"
//! url = "https://hooks.example.org/wk"  # the alert's JSON is POSTed
//! ca_file = "/etc/watchkeeper/hooks-ca.pem"  # optional; default the system trust store
//! ```
//!
//! # Why these shapes
//!
//! A hook is an argument vector, never a shell line: the event reaches it as JSON on stdin and
//! as `WATCHKEEPER_EVENT_*` variables (Pacemaker's alert agents get `CRM_alert_*` the same way),
//! so nothing from an event is ever parsed by a shell. SMTP goes to a configured relay without
//! authentication or TLS, as backup hosts usually reach an internal smarthost; the relay does
//! the rest. A journal path may hold `{node}` so that one file serves every node of a cluster
//! whose agents share a host (labs, tests).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::raw::RawDuration;

/// The decision journal's place and rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Explicit path (may contain `{node}`); `None`: `journal.jsonl` in the state directory.
    pub path: Option<PathBuf>,
    /// The current file is rotated once a line would take it beyond this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`journal.jsonl.1` .. `journal.jsonl.<keep>`).
    pub keep: u32,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_size: DEFAULT_JOURNAL_MAX_SIZE,
            keep: DEFAULT_JOURNAL_KEEP,
        }
    }
}

impl JournalConfig {
    /// The journal of node `name` whose state directory is `state_dir`.
    pub fn path_for(&self, name: &str, state_dir: &std::path::Path) -> PathBuf {
        match &self.path {
            Some(p) => PathBuf::from(p.to_string_lossy().replace("{node}", name)),
            None => state_dir.join(JOURNAL_FILE),
        }
    }
}

/// One `[[alert]]` recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// Its name, in logs.
    pub name: String,
    /// How the alert is delivered.
    pub kind: AlertKind,
    /// One delivery is abandoned (a hook killed) after this.
    pub timeout: Duration,
    /// Event kinds sent to it (a subset of [`ALERT_EVENT_KINDS`]); empty: every kind.
    pub events: Vec<String>,
}

impl AlertConfig {
    /// Whether events of `kind` go to this recipient.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }
}

/// How an alert is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertKind {
    /// Run a program with the event as JSON on stdin and in `WATCHKEEPER_EVENT_*` variables.
    Hook {
        /// Program and arguments; the program is an absolute path.
        command: Vec<String>,
    },
    /// Send a mail through an SMTP relay.
    Smtp {
        /// Relay host name or address.
        host: String,
        /// Relay port.
        port: u16,
        /// Sender address.
        from: String,
        /// Recipients.
        to: Vec<String>,
    },
    /// POST the event's JSON to a URL.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// CA certificates to check an HTTPS server against instead of the system's.
        ca_file: Option<PathBuf>,
    },
}

impl AlertKind {
    /// The word used in the configuration.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Hook { .. } => "hook",
            Self::Smtp { .. } => "smtp",
            Self::Webhook { .. } => "webhook",
        }
    }
}

/// Event kinds an alert can be about; `events = [...]` picks among them.
pub const ALERT_EVENT_KINDS: &[&str] = &[
    "failover",
    "switchover",
    "holding",
    "fence",
    "fence_device",
    "watchdog_reboot",
    "link",
    "peer",
    "split_brain",
    "self_fence",
    "resource_failed",
];

/// `[journal]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [journal] table")]
pub(super) struct RawJournal {
    path: Option<Spanned<String>>,
    max_size: Option<Spanned<toml::Value>>,
    keep: Option<Spanned<i64>>,
}

/// One `[[alert]]` as written; which keys are required depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an [[alert]] table with name and kind"
)]
pub(super) struct RawAlert {
    name: Spanned<String>,
    kind: Spanned<String>,
    timeout: Option<Spanned<RawDuration>>,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    command: Option<Spanned<Vec<String>>>,
    relay: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<Vec<Spanned<String>>>>,
    url: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

impl Converter<'_> {
    /// Checks `[journal]`.
    pub(super) fn journal(&mut self, raw: &RawJournal) -> Option<JournalConfig> {
        let mut ok = true;
        let path = match &raw.path {
            None => None,
            Some(p) if p.get_ref().is_empty() => {
                self.error(
                    p.span(),
                    "journal.path",
                    "path is empty: expected a file path, or no path for journal.jsonl in the \
                     node's state directory"
                        .to_owned(),
                );
                ok = false;
                None
            }
            Some(p) => self.path_or(Some(p), "", "journal.path"),
        };
        let max_size = match &raw.max_size {
            None => Some(DEFAULT_JOURNAL_MAX_SIZE),
            Some(v) => {
                let parsed = match v.get_ref() {
                    toml::Value::Integer(n) => u64::try_from(*n).ok(),
                    toml::Value::String(s) => parse_size(s),
                    _ => None,
                };
                match parsed {
                    Some(n) if (MIN_JOURNAL_MAX_SIZE..=MAX_JOURNAL_MAX_SIZE).contains(&n) => {
                        Some(n)
                    }
                    Some(n) => {
                        self.error(
                            v.span(),
                            "journal.max_size",
                            format!(
                                "max_size {n} bytes is out of range: expected {} to {}",
                                size_words(MIN_JOURNAL_MAX_SIZE),
                                size_words(MAX_JOURNAL_MAX_SIZE)
                            ),
                        );
                        None
                    }
                    None => {
                        self.error(
                            v.span(),
                            "journal.max_size",
                            format!(
                                "max_size {} is not a size: expected bytes or a number with \
                                 KiB, MiB or GiB, e.g. \"10MiB\"",
                                v.get_ref()
                            ),
                        );
                        None
                    }
                }
            }
        };
        let keep = match &raw.keep {
            None => Some(DEFAULT_JOURNAL_KEEP),
            Some(k) => match u32::try_from(*k.get_ref()) {
                Ok(n) if (1..=MAX_JOURNAL_KEEP).contains(&n) => Some(n),
                _ => {
                    self.error(
                        k.span(),
                        "journal.keep",
                        format!(
                            "keep {} is out of range: expected 1 to {MAX_JOURNAL_KEEP} rotated files",
                            k.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if !ok {
            return None;
        }
        Some(JournalConfig {
            path,
            max_size: max_size?,
            keep: keep?,
        })
    }

    /// Checks every `[[alert]]`.
    pub(super) fn alerts(&mut self, raw: &[RawAlert]) -> Option<Vec<AlertConfig>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, a) in raw.iter().enumerate() {
            let key = format!("alert[{i}]");
            if !self.name(
                &a.name,
                &format!("{key}.name"),
                "alert name",
                MAX_ALERT_NAME_LEN,
            ) {
                ok = false;
            }
            if let Some(j) = raw[..i]
                .iter()
                .position(|b| b.name.get_ref() == a.name.get_ref())
            {
                self.error(
                    a.name.span(),
                    format!("{key}.name"),
                    format!(
                        "alert name {:?} is already used by alert[{j}]: names must be unique",
                        a.name.get_ref()
                    ),
                );
                ok = false;
            }
            match self.alert(a, &key) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn alert(&mut self, a: &RawAlert, key: &str) -> Option<AlertConfig> {
        let kind_word = a.kind.get_ref().as_str();
        let allowed: &[&str] = match kind_word {
            "hook" => &["command"],
            "smtp" => &["relay", "from", "to"],
            "webhook" => &["url", "ca_file"],
            other => {
                self.error(
                    a.kind.span(),
                    format!("{key}.kind"),
                    format!("kind {other:?} is not an alert kind: expected \"hook\", \"smtp\" or \"webhook\""),
                );
                return None;
            }
        };
        let mut ok = true;
        let present = [
            ("command", a.command.as_ref().map(Spanned::span)),
            ("relay", a.relay.as_ref().map(Spanned::span)),
            ("from", a.from.as_ref().map(Spanned::span)),
            ("to", a.to.as_ref().map(Spanned::span)),
            ("url", a.url.as_ref().map(Spanned::span)),
            ("ca_file", a.ca_file.as_ref().map(Spanned::span)),
        ];
        for (field, span) in present {
            if let (Some(span), false) = (span, allowed.contains(&field)) {
                self.error(
                    span,
                    format!("{key}.{field}"),
                    format!(
                        "{field} does not apply to a {kind_word} alert: expected only {}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let timeout = match &a.timeout {
            None => Some(DEFAULT_ALERT_TIMEOUT),
            Some(t) => {
                let k = format!("{key}.timeout");
                self.duration(t, &k).filter(|d| {
                    let in_range = (MIN_ALERT_TIMEOUT..=MAX_ALERT_TIMEOUT).contains(d);
                    if !in_range {
                        self.error(
                            t.span(),
                            k.clone(),
                            format!(
                                "timeout {} is out of range: expected {} to {}",
                                humane(*d),
                                humane(MIN_ALERT_TIMEOUT),
                                humane(MAX_ALERT_TIMEOUT)
                            ),
                        );
                    }
                    in_range
                })
            }
        };
        let mut events = Vec::new();
        if let Some(list) = &a.events {
            if list.get_ref().is_empty() {
                self.error(
                    list.span(),
                    format!("{key}.events"),
                    "events is empty: leave it out for every kind, or name some".to_owned(),
                );
                ok = false;
            }
            for e in list.get_ref() {
                if ALERT_EVENT_KINDS.contains(&e.get_ref().as_str()) {
                    events.push(e.get_ref().clone());
                } else {
                    self.error(
                        e.span(),
                        format!("{key}.events"),
                        format!(
                            "{:?} is not an event kind: expected some of {}",
                            e.get_ref(),
                            ALERT_EVENT_KINDS.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        let missing = |cx: &mut Self, field: &str, example: &str| {
            cx.error(
                a.kind.span(),
                format!("{key}.{field}"),
                format!("a {kind_word} alert needs `{field}`, e.g. {field} = {example}"),
            );
        };
        let kind = match kind_word {
            "hook" => match &a.command {
                None => {
                    missing(self, "command", "[\"/usr/local/bin/wk-alert\"]");
                    None
                }
                Some(c) => match c.get_ref().first() {
                    Some(p) if p.starts_with('/') => Some(AlertKind::Hook {
                        command: c.get_ref().clone(),
                    }),
                    Some(p) => {
                        self.error(
                            c.span(),
                            format!("{key}.command"),
                            format!("command program {p:?} is not an absolute path: the agent runs it without a shell or PATH search"),
                        );
                        None
                    }
                    None => {
                        self.error(
                            c.span(),
                            format!("{key}.command"),
                            "command is empty: expected the program and its arguments".to_owned(),
                        );
                        None
                    }
                },
            },
            "smtp" => {
                let relay = match &a.relay {
                    None => {
                        missing(self, "relay", "\"mail.example.org:25\"");
                        None
                    }
                    Some(r) => match split_host_port(r.get_ref()) {
                        Some(hp) => Some(hp),
                        None => {
                            self.error(
                                r.span(),
                                format!("{key}.relay"),
                                format!(
                                    "relay {:?} is not host:port: expected e.g. \"mail.example.org:25\"",
                                    r.get_ref()
                                ),
                            );
                            None
                        }
                    },
                };
                let from = match &a.from {
                    None => {
                        missing(self, "from", "\"watchkeeper@example.org\"");
                        None
                    }
                    Some(f) => self.mailbox(f, &format!("{key}.from")),
                };
                let to = match &a.to {
                    None => {
                        missing(self, "to", "[\"ops@example.org\"]");
                        None
                    }
                    Some(list) if list.get_ref().is_empty() => {
                        self.error(
                            list.span(),
                            format!("{key}.to"),
                            "to is empty: expected at least one recipient".to_owned(),
                        );
                        None
                    }
                    Some(list) => {
                        let all: Vec<Option<String>> = list
                            .get_ref()
                            .iter()
                            .map(|t| self.mailbox(t, &format!("{key}.to")))
                            .collect();
                        all.into_iter().collect::<Option<Vec<_>>>()
                    }
                };
                match (relay, from, to) {
                    (Some((host, port)), Some(from), Some(to)) => Some(AlertKind::Smtp {
                        host,
                        port,
                        from,
                        to,
                    }),
                    _ => None,
                }
            }
            _ => {
                let url = match &a.url {
                    None => {
                        missing(self, "url", "\"https://hooks.example.org/wk\"");
                        None
                    }
                    Some(u) => {
                        let text = u.get_ref();
                        let rest = text
                            .strip_prefix("http://")
                            .or_else(|| text.strip_prefix("https://"));
                        if rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
                            Some(text.clone())
                        } else {
                            self.error(
                                u.span(),
                                format!("{key}.url"),
                                format!(
                                    "url {text:?} is not an http:// or https:// URL with a host"
                                ),
                            );
                            None
                        }
                    }
                };
                let ca_file = match &a.ca_file {
                    None => Some(None),
                    Some(f) => self
                        .path_or(Some(f), "", &format!("{key}.ca_file"))
                        .map(Some),
                };
                match (url, ca_file) {
                    (Some(url), Some(ca_file)) => Some(AlertKind::Webhook { url, ca_file }),
                    _ => None,
                }
            }
        };
        if !ok {
            return None;
        }
        Some(AlertConfig {
            name: a.name.get_ref().clone(),
            kind: kind?,
            timeout: timeout?,
            events,
        })
    }

    fn mailbox(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let text = raw.get_ref();
        let valid = text.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && !d.is_empty()
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>')
        });
        if valid {
            Some(text.clone())
        } else {
            self.error(
                raw.span(),
                key,
                format!("{text:?} is not a mail address: expected e.g. \"ops@example.org\""),
            );
            None
        }
    }
}

/// Parses `"10MiB"`, `"512KiB"`, `"1GiB"` or `"4096"` (bytes).
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn size_words(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// `host:port` or `[v6]:port`.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// 10 MiB holds tens of thousands of decisions: months of a quiet cluster, and still the whole
/// story of a bad day; with [`DEFAULT_JOURNAL_KEEP`] the journal never takes more than 60 MiB.
pub const DEFAULT_JOURNAL_MAX_SIZE: u64 = 10 << 20;
/// Five rotated files keep the history of several failovers behind the current file.
pub const DEFAULT_JOURNAL_KEEP: u32 = 5;
/// Below 4 KiB a single line with a long input summary might not fit in one file.
pub const MIN_JOURNAL_MAX_SIZE: u64 = 4 << 10;
/// Beyond 1 GiB a state directory (often on the root file system) is at risk.
pub const MAX_JOURNAL_MAX_SIZE: u64 = 1 << 30;
/// More rotated files than this is better served by shipping the journal elsewhere.
pub const MAX_JOURNAL_KEEP: u32 = 100;
/// Ten seconds lets a hook page someone or a relay accept a mail, while a hung recipient
/// holds up only its own later alerts, never the agent.
pub const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than this and a loaded host kills hooks that did nothing wrong.
pub const MIN_ALERT_TIMEOUT: Duration = Duration::from_millis(100);
/// Longer than this and alerts about the next failure queue behind a stuck recipient.
pub const MAX_ALERT_TIMEOUT: Duration = Duration::from_secs(300);
/// Alert names appear in logs; the same bound as device names.
pub const MAX_ALERT_NAME_LEN: usize = 32;
