//! The resource group (`[[resource]]`, in start order): what a node starts when it takes over
//! and stops, in reverse, when it hands over.
//!
//! For Bacula the order is storage mounts, then the Catalog (PostgreSQL promote), the virtual
//! IPs, the Storage Daemon and the Director: everything a daemon uses is there before it starts
//! and outlives it when it stops, because Bacula does not reconnect a dropped connection. The
//! file order is the start order, so the configuration reads like the runbook.
//!
//! A few values differ per node (the peer a Catalog standby streams from, an interface name):
//! they may be written as one value or as a table by node name, and every node must then have
//! one. Timeouts left out are filled in by the agent when it builds the executors (an OCF
//! agent's own meta-data advertises them), so they stay `None` here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::raw::{RawDuration, RawNode};

/// Most resources in the group.
pub const MAX_RESOURCES: usize = 32;
/// Longest resource name; it appears in every log line about the resource.
pub const MAX_RESOURCE_NAME_LEN: usize = 32;
/// OCF's standard root.
pub const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";
/// Start and stop timeout unless configured (or advertised by an OCF agent): Pacemaker's
/// default operation timeout.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Monitor timeout unless configured.
pub const DEFAULT_MONITOR_TIMEOUT: Duration = Duration::from_secs(20);
/// Monitor interval unless configured: a failed Director is noticed within this.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// PostgreSQL's standard port.
pub const DEFAULT_PG_PORT: u16 = 5432;

/// One resource of the group.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// Unique name.
    pub name: String,
    /// Executor and its parameters.
    pub kind: ResourceKind,
    /// Start deadline; `None`: the agent's advertised timeout, else [`DEFAULT_ACTION_TIMEOUT`].
    pub start_timeout: Option<Duration>,
    /// Stop deadline; same defaults.
    pub stop_timeout: Option<Duration>,
    /// Monitor deadline; same defaults with [`DEFAULT_MONITOR_TIMEOUT`].
    pub monitor_timeout: Option<Duration>,
    /// Pause between monitors of a running resource.
    pub monitor_interval: Duration,
}

/// A value that may differ per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerNode<T> {
    /// The same on every node.
    All(T),
    /// By node name; every node has one.
    ByNode(BTreeMap<String, T>),
}

impl<T> PerNode<T> {
    /// The value for node `name`.
    pub fn for_node(&self, name: &str) -> Option<&T> {
        match self {
            Self::All(v) => Some(v),
            Self::ByNode(m) => m.get(name),
        }
    }
}

/// How a resource is run.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceKind {
    /// An OCF resource agent.
    Ocf {
        /// The agent's path (from `agent = "heartbeat:Dummy"` or an absolute path).
        agent: PathBuf,
        /// `OCF_ROOT`.
        ocf_root: PathBuf,
        /// `OCF_RESKEY_<name>` values.
        params: BTreeMap<String, String>,
    },
    /// Start, stop and status commands (argv; status exits 0 running, 3 or 7 stopped).
    Script {
        /// Start command.
        start: Vec<String>,
        /// Stop command.
        stop: Vec<String>,
        /// Status command.
        status: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
    },
    /// A systemd unit.
    Systemd {
        /// Unit name, e.g. `bacula-dir.service`.
        unit: String,
    },
    /// A filesystem mount.
    Mount {
        /// Block device (or `LABEL=`-free path; symlinks such as /dev/disk/by-uuid/… are fine).
        device: PathBuf,
        /// Where to mount it.
        mountpoint: PathBuf,
        /// Filesystem type.
        fstype: String,
        /// Mount options.
        options: Vec<String>,
        /// Whether to check it first.
        fsck: FsckWord,
    },
    /// A virtual IP address, announced by gratuitous ARP / unsolicited neighbour advertisement.
    Vip {
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix: u8,
        /// Interface, possibly per node.
        interface: PerNode<String>,
    },
    /// The PostgreSQL Catalog: promote on takeover, rejoin as standby afterwards.
    Pgsql {
        /// Directory of pg_ctl, pg_rewind, psql, ...
        bindir: PathBuf,
        /// Data directory (one path, or one per node).
        datadir: PerNode<PathBuf>,
        /// Port (one, or one per node).
        port: PerNode<u16>,
        /// Host or socket directory for local connections.
        host: String,
        /// OS user that runs the server (e.g. postgres).
        user: Option<String>,
        /// Database role for the checks.
        superuser: String,
        /// libpq password file.
        password_file: Option<PathBuf>,
        /// How this node streams from the primary when it is the standby, per node.
        primary_conninfo: Option<PerNode<String>>,
        /// What happens when a former primary comes back.
        rejoin: RejoinWord,
    },
}

impl ResourceKind {
    /// The type as the file spells it.
    pub fn type_word(&self) -> &'static str {
        match self {
            Self::Ocf { .. } => "ocf",
            Self::Script { .. } => "script",
            Self::Systemd { .. } => "systemd",
            Self::Mount { .. } => "mount",
            Self::Vip { .. } => "vip",
            Self::Pgsql { .. } => "pgsql",
        }
    }
}

/// `fsck = "never" | "preen" | "force"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckWord {
    /// Mount without checking.
    Never,
    /// `fsck -p` first; refuse to mount on errors it cannot fix.
    Preen,
    /// A full check every time.
    Force,
}

/// `rejoin = "rewind" | "reclone" | "manual"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinWord {
    /// pg_rewind against the new primary, then start as its standby.
    Rewind,
    /// Move the old data directory aside and pg_basebackup from the new primary.
    Reclone,
    /// Leave it stopped and say what to run.
    Manual,
}

/// `[[resource]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[resource]] table with name and type"
)]
pub(super) struct RawResource {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    start_timeout: Option<Spanned<RawDuration>>,
    stop_timeout: Option<Spanned<RawDuration>>,
    monitor_timeout: Option<Spanned<RawDuration>>,
    monitor_interval: Option<Spanned<RawDuration>>,
    agent: Option<Spanned<String>>,
    ocf_root: Option<Spanned<String>>,
    params: Option<BTreeMap<String, Spanned<String>>>,
    start: Option<Spanned<Vec<String>>>,
    stop: Option<Spanned<Vec<String>>>,
    status: Option<Spanned<Vec<String>>>,
    env: Option<BTreeMap<String, Spanned<String>>>,
    unit: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
    mountpoint: Option<Spanned<String>>,
    fstype: Option<Spanned<String>>,
    options: Option<Spanned<Vec<String>>>,
    fsck: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    interface: Option<Spanned<toml::Value>>,
    bindir: Option<Spanned<String>>,
    datadir: Option<Spanned<toml::Value>>,
    port: Option<Spanned<toml::Value>>,
    host: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    superuser: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    primary_conninfo: Option<Spanned<toml::Value>>,
    rejoin: Option<Spanned<String>>,
}

/// A type-specific key: its name, the types it applies to, and where it is written if it is.
type OwnedKey<'a> = (&'a str, &'a [&'a str], Option<std::ops::Range<usize>>);

const TYPES: &str = "\"ocf\", \"script\", \"systemd\", \"mount\", \"vip\" or \"pgsql\"";

impl Converter<'_> {
    /// Checks every `[[resource]]`; `None` if anything was wrong.
    pub(super) fn resources(
        &mut self,
        raw: &[RawResource],
        nodes: &[RawNode],
    ) -> Option<Vec<ResourceConfig>> {
        let node_names: Vec<&str> = nodes.iter().map(|n| n.name.get_ref().as_str()).collect();
        let mut ok = true;
        if raw.len() > MAX_RESOURCES {
            self.error(
                raw[MAX_RESOURCES].name.span(),
                format!("resource[{MAX_RESOURCES}]"),
                format!(
                    "{} resources: expected at most {MAX_RESOURCES} in the group",
                    raw.len()
                ),
            );
            ok = false;
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut typed = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("resource[{i}]");
            ok &= self.name(
                &r.name,
                &format!("{key}.name"),
                "resource name",
                MAX_RESOURCE_NAME_LEN,
            );
            let name = r.name.get_ref().as_str();
            if let Some(&first) = seen.get(name) {
                let line = self.line_of(&raw[first].name.span());
                self.error(
                    r.name.span(),
                    format!("{key}.name"),
                    format!("resource name {name} is already used on line {line}: resource names must be unique"),
                );
                ok = false;
            } else {
                seen.insert(name, i);
            }
            match self.resource(r, &key, &node_names) {
                Some(t) => typed.push(t),
                None => ok = false,
            }
        }
        ok.then_some(typed)
    }

    fn resource(&mut self, r: &RawResource, key: &str, nodes: &[&str]) -> Option<ResourceConfig> {
        let word = r.kind.get_ref().as_str();
        let owners: &[OwnedKey<'_>] = &[
            ("agent", &["ocf"], r.agent.as_ref().map(Spanned::span)),
            ("ocf_root", &["ocf"], r.ocf_root.as_ref().map(Spanned::span)),
            (
                "params",
                &["ocf"],
                r.params
                    .as_ref()
                    .and_then(|p| p.values().next())
                    .map(Spanned::span),
            ),
            ("start", &["script"], r.start.as_ref().map(Spanned::span)),
            ("stop", &["script"], r.stop.as_ref().map(Spanned::span)),
            ("status", &["script"], r.status.as_ref().map(Spanned::span)),
            (
                "env",
                &["script"],
                r.env
                    .as_ref()
                    .and_then(|p| p.values().next())
                    .map(Spanned::span),
            ),
            ("unit", &["systemd"], r.unit.as_ref().map(Spanned::span)),
            ("device", &["mount"], r.device.as_ref().map(Spanned::span)),
            (
                "mountpoint",
                &["mount"],
                r.mountpoint.as_ref().map(Spanned::span),
            ),
            ("fstype", &["mount"], r.fstype.as_ref().map(Spanned::span)),
            ("options", &["mount"], r.options.as_ref().map(Spanned::span)),
            ("fsck", &["mount"], r.fsck.as_ref().map(Spanned::span)),
            ("address", &["vip"], r.address.as_ref().map(Spanned::span)),
            (
                "interface",
                &["vip"],
                r.interface.as_ref().map(Spanned::span),
            ),
            ("bindir", &["pgsql"], r.bindir.as_ref().map(Spanned::span)),
            ("datadir", &["pgsql"], r.datadir.as_ref().map(Spanned::span)),
            ("port", &["pgsql"], r.port.as_ref().map(Spanned::span)),
            ("host", &["pgsql"], r.host.as_ref().map(Spanned::span)),
            ("user", &["pgsql"], r.user.as_ref().map(Spanned::span)),
            (
                "superuser",
                &["pgsql"],
                r.superuser.as_ref().map(Spanned::span),
            ),
            (
                "password_file",
                &["pgsql"],
                r.password_file.as_ref().map(Spanned::span),
            ),
            (
                "primary_conninfo",
                &["pgsql"],
                r.primary_conninfo.as_ref().map(Spanned::span),
            ),
            ("rejoin", &["pgsql"], r.rejoin.as_ref().map(Spanned::span)),
        ];
        let known = ["ocf", "script", "systemd", "mount", "vip", "pgsql"];
        if !known.contains(&word) {
            self.error(
                r.kind.span(),
                format!("{key}.type"),
                format!("resource type {word:?} is not known: expected {TYPES}"),
            );
            return None;
        }
        let mut ok = true;
        for (field, types, span) in owners {
            if let Some(span) = span {
                if !types.contains(&word) {
                    self.error(
                        span.clone(),
                        format!("{key}.{field}"),
                        format!("{field} does not apply to {word} resources: remove it"),
                    );
                    ok = false;
                }
            }
        }
        let timeout = |cx: &mut Self, v: &Option<Spanned<RawDuration>>, field: &str| match v {
            None => Some(None),
            Some(d) => cx.positive(d, &format!("{key}.{field}")).map(Some),
        };
        let start_timeout = timeout(self, &r.start_timeout, "start_timeout");
        let stop_timeout = timeout(self, &r.stop_timeout, "stop_timeout");
        let monitor_timeout = timeout(self, &r.monitor_timeout, "monitor_timeout");
        let monitor_interval = match &r.monitor_interval {
            None => Some(DEFAULT_MONITOR_INTERVAL),
            Some(d) => self.positive(d, &format!("{key}.monitor_interval")),
        };
        let kind = match word {
            "ocf" => self.ocf(r, key),
            "script" => self.script(r, key),
            "systemd" => self
                .required_str(r, r.unit.as_ref(), key, "unit", "\"bacula-dir.service\"")
                .map(|unit| ResourceKind::Systemd { unit }),
            "mount" => self.mount(r, key),
            "vip" => self.vip(r, key, nodes),
            _ => self.pgsql(r, key, nodes),
        };
        if !ok {
            return None;
        }
        Some(ResourceConfig {
            name: r.name.get_ref().clone(),
            kind: kind?,
            start_timeout: start_timeout?,
            stop_timeout: stop_timeout?,
            monitor_timeout: monitor_timeout?,
            monitor_interval: monitor_interval?,
        })
    }

    fn positive(&mut self, raw: &Spanned<RawDuration>, key: &str) -> Option<Duration> {
        let d = self.duration(raw, key)?;
        if d.is_zero() {
            let field = key.rsplit('.').next().unwrap_or(key);
            self.error(
                raw.span(),
                key,
                format!("{field} is {}: expected more than zero", humane(d)),
            );
            return None;
        }
        Some(d)
    }

    fn required_str(
        &mut self,
        r: &RawResource,
        value: Option<&Spanned<String>>,
        key: &str,
        field: &str,
        example: &str,
    ) -> Option<String> {
        match value {
            Some(v) if !v.get_ref().is_empty() => Some(v.get_ref().clone()),
            Some(v) => {
                self.error(
                    v.span(),
                    format!("{key}.{field}"),
                    format!("{field} is empty: expected e.g. {field} = {example}"),
                );
                None
            }
            None => {
                self.error(
                    r.name.span(),
                    format!("{key}.{field}"),
                    format!(
                        "{} resource needs `{field}`, e.g. {field} = {example}",
                        r.kind.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Every path of a per-node value must be absolute.
    fn absolute_per_node(
        &mut self,
        v: &Spanned<toml::Value>,
        per: PerNode<String>,
        key: &str,
    ) -> Option<PerNode<PathBuf>> {
        let field = key.rsplit('.').next().unwrap_or(key).to_owned();
        let check = |this: &mut Self, text: String, key: String| {
            let path = PathBuf::from(&text);
            if path.is_absolute() {
                Some(path)
            } else {
                this.error(
                    v.span(),
                    key,
                    format!(
                        "{field} {text:?} is not an absolute path: expected e.g. \"/var/lib/postgresql/15/main\""
                    ),
                );
                None
            }
        };
        match per {
            PerNode::All(text) => check(self, text, key.to_owned()).map(PerNode::All),
            PerNode::ByNode(map) => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (node, text) in map {
                    match check(self, text, format!("{key}.{node}")) {
                        Some(p) => {
                            out.insert(node, p);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(PerNode::ByNode(out))
            }
        }
    }

    /// A TCP port, or a table of ports by node name naming every node.
    fn per_node_port(
        &mut self,
        v: &Spanned<toml::Value>,
        key: &str,
        nodes: &[&str],
    ) -> Option<PerNode<u16>> {
        let port = |value: &toml::Value| {
            value
                .as_integer()
                .and_then(|i| u16::try_from(i).ok())
                .filter(|p| *p > 0)
        };
        let example = format!(
            "5432, or port = {{ {} }}",
            nodes
                .iter()
                .zip(5432..)
                .map(|(n, p)| format!("{n} = {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.per_node_of(
            v,
            key,
            nodes,
            port,
            ("a TCP port (1 to 65535)", "a TCP port (1 to 65535)"),
            &example,
        )
    }

    fn absolute(&mut self, v: &Spanned<String>, key: &str, example: &str) -> Option<PathBuf> {
        let path = PathBuf::from(v.get_ref());
        if path.is_absolute() {
            Some(path)
        } else {
            let field = key.rsplit('.').next().unwrap_or(key);
            self.error(
                v.span(),
                key,
                format!(
                    "{field} {:?} is not an absolute path: expected e.g. {example}",
                    v.get_ref()
                ),
            );
            None
        }
    }

    fn ocf(&mut self, r: &RawResource, key: &str) -> Option<ResourceKind> {
        let ocf_root = match &r.ocf_root {
            None => Some(PathBuf::from(DEFAULT_OCF_ROOT)),
            Some(root) => self.absolute(root, &format!("{key}.ocf_root"), "\"/usr/lib/ocf\""),
        };
        let agent = self.required_str(r, r.agent.as_ref(), key, "agent", "\"heartbeat:Dummy\"");
        let agent = match (agent, &ocf_root, &r.agent) {
            (Some(a), _, _) if a.starts_with('/') => Some(PathBuf::from(a)),
            (Some(a), Some(root), Some(span)) => match a.split_once(':') {
                Some((provider, kind))
                    if !provider.is_empty()
                        && !kind.is_empty()
                        && ![provider, kind]
                            .iter()
                            .any(|p| p.contains('/') || p.contains(':') || *p == "..") =>
                {
                    Some(root.join("resource.d").join(provider).join(kind))
                }
                _ => {
                    self.error(
                        span.span(),
                        format!("{key}.agent"),
                        format!(
                            "agent {a:?} is neither provider:type (e.g. \"heartbeat:Dummy\") nor \
                             an absolute path"
                        ),
                    );
                    None
                }
            },
            _ => None,
        };
        let mut params = BTreeMap::new();
        let mut ok = true;
        for (name, value) in r.params.iter().flatten() {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.error(
                    value.span(),
                    format!("{key}.params.{name}"),
                    format!(
                        "parameter name {name:?} cannot be an environment variable \
                         (OCF_RESKEY_{name}): use letters, digits and '_'"
                    ),
                );
                ok = false;
            } else {
                params.insert(name.clone(), value.get_ref().clone());
            }
        }
        if !ok {
            return None;
        }
        Some(ResourceKind::Ocf {
            agent: agent?,
            ocf_root: ocf_root?,
            params,
        })
    }

    fn script(&mut self, r: &RawResource, key: &str) -> Option<ResourceKind> {
        let argv = |cx: &mut Self, v: &Option<Spanned<Vec<String>>>, field: &str| match v {
            None => {
                cx.error(
                    r.name.span(),
                    format!("{key}.{field}"),
                    format!(
                        "script resource needs `{field}`, the command as a list, e.g. {field} = \
                         [\"/usr/local/sbin/bacula-ctl\", \"{field}\"]"
                    ),
                );
                None
            }
            Some(v) => match v.get_ref().first() {
                Some(program) if program.starts_with('/') => Some(v.get_ref().clone()),
                _ => {
                    cx.error(
                        v.span(),
                        format!("{key}.{field}"),
                        format!(
                            "{field} must start with the program's absolute path, e.g. \
                             [\"/usr/local/sbin/bacula-ctl\", \"{field}\"]"
                        ),
                    );
                    None
                }
            },
        };
        let start = argv(self, &r.start, "start");
        let stop = argv(self, &r.stop, "stop");
        let status = argv(self, &r.status, "status");
        let env = r
            .env
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        Some(ResourceKind::Script {
            start: start?,
            stop: stop?,
            status: status?,
            env,
        })
    }

    fn mount(&mut self, r: &RawResource, key: &str) -> Option<ResourceKind> {
        let device = self
            .required_str(
                r,
                r.device.as_ref(),
                key,
                "device",
                "\"/dev/disk/by-label/bacula\"",
            )
            .and_then(|_| {
                r.device.as_ref().and_then(|d| {
                    self.absolute(d, &format!("{key}.device"), "\"/dev/disk/by-label/bacula\"")
                })
            });
        let mountpoint = self
            .required_str(
                r,
                r.mountpoint.as_ref(),
                key,
                "mountpoint",
                "\"/srv/bacula\"",
            )
            .and_then(|_| {
                r.mountpoint
                    .as_ref()
                    .and_then(|m| self.absolute(m, &format!("{key}.mountpoint"), "\"/srv/bacula\""))
            });
        if mountpoint.as_deref() == Some(std::path::Path::new("/")) {
            let span = r.mountpoint.as_ref().map_or(0..0, Spanned::span);
            self.error(
                span,
                format!("{key}.mountpoint"),
                "mountpoint \"/\" is the root filesystem: it cannot move between nodes".to_owned(),
            );
            return None;
        }
        let fstype = self.required_str(r, r.fstype.as_ref(), key, "fstype", "\"ext4\"");
        let fsck = match r.fsck.as_ref().map(|f| (f, f.get_ref().as_str())) {
            None | Some((_, "preen")) => Some(FsckWord::Preen),
            Some((_, "never")) => Some(FsckWord::Never),
            Some((_, "force")) => Some(FsckWord::Force),
            Some((f, other)) => {
                self.error(
                    f.span(),
                    format!("{key}.fsck"),
                    format!(
                        "fsck {other:?} is not known: expected \"preen\" (default: fsck -p, refuse \
                         to mount what it cannot fix), \"force\" or \"never\""
                    ),
                );
                None
            }
        };
        Some(ResourceKind::Mount {
            device: device?,
            mountpoint: mountpoint?,
            fstype: fstype?,
            options: r
                .options
                .as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default(),
            fsck: fsck?,
        })
    }

    /// A string, or a table of strings by node name naming every node.
    pub(super) fn per_node(
        &mut self,
        v: &Spanned<toml::Value>,
        key: &str,
        nodes: &[&str],
        example: &str,
    ) -> Option<PerNode<String>> {
        let one = |value: &toml::Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        self.per_node_of(
            v,
            key,
            nodes,
            one,
            ("a non-empty string", "a string"),
            example,
        )
    }

    /// One value, or a table of values by node name naming every node. `parse` reads one
    /// value; `what` says what it must be, for one node's value and for the whole key.
    fn per_node_of<T>(
        &mut self,
        v: &Spanned<toml::Value>,
        key: &str,
        nodes: &[&str],
        parse: impl Fn(&toml::Value) -> Option<T>,
        what: (&str, &str),
        example: &str,
    ) -> Option<PerNode<T>> {
        let field = key.rsplit('.').next().unwrap_or(key).to_owned();
        let toml::Value::Table(t) = v.get_ref() else {
            return match parse(v.get_ref()) {
                Some(one) => Some(PerNode::All(one)),
                None => {
                    self.error(
                        v.span(),
                        key,
                        format!(
                            "{field} {} is neither {} nor a table by node name: expected e.g. \
                             {example}",
                            v.get_ref(),
                            what.1
                        ),
                    );
                    None
                }
            };
        };
        let mut map = BTreeMap::new();
        let mut ok = true;
        for (node, value) in t {
            if !nodes.contains(&node.as_str()) {
                self.error(
                    v.span(),
                    format!("{key}.{node}"),
                    format!(
                        "node {node} is not defined; defined nodes: {}",
                        nodes.join(", ")
                    ),
                );
                ok = false;
            }
            match parse(value) {
                Some(one) => {
                    map.insert(node.clone(), one);
                }
                None => {
                    self.error(
                        v.span(),
                        format!("{key}.{node}"),
                        format!("{field} for node {node} is not {}", what.0),
                    );
                    ok = false;
                }
            }
        }
        let missing: Vec<&str> = nodes
            .iter()
            .copied()
            .filter(|n| !t.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            self.error(
                v.span(),
                key,
                format!(
                    "{field} is given per node but not for {}: every node needs one",
                    missing.join(", ")
                ),
            );
            ok = false;
        }
        ok.then_some(PerNode::ByNode(map))
    }

    fn vip(&mut self, r: &RawResource, key: &str, nodes: &[&str]) -> Option<ResourceKind> {
        let address = self.required_str(r, r.address.as_ref(), key, "address", "\"10.20.0.10/24\"");
        let parsed = address.and_then(|text| {
            let (ip, prefix) = text.split_once('/').unwrap_or((text.as_str(), ""));
            let ip: Option<IpAddr> = ip.parse().ok();
            let prefix: Option<u8> = prefix.parse().ok();
            match (ip, prefix) {
                (Some(ip), Some(p)) if p <= if ip.is_ipv4() { 32 } else { 128 } => Some((ip, p)),
                _ => {
                    let span = r.address.as_ref().map_or(0..0, Spanned::span);
                    self.error(
                        span,
                        format!("{key}.address"),
                        format!(
                            "address {text:?} is not an IP address with a prefix length: \
                             expected e.g. \"10.20.0.10/24\" or \"fd00::10/64\""
                        ),
                    );
                    None
                }
            }
        });
        let interface = match &r.interface {
            None => {
                self.error(
                    r.name.span(),
                    format!("{key}.interface"),
                    "vip resource needs `interface`, e.g. interface = \"eth0\" or \
                     interface = { alpha = \"eth0\", beta = \"eno1\" }"
                        .to_owned(),
                );
                None
            }
            Some(i) => self.per_node(
                i,
                &format!("{key}.interface"),
                nodes,
                "interface = \"eth0\"",
            ),
        };
        let (address, prefix) = parsed?;
        Some(ResourceKind::Vip {
            address,
            prefix,
            interface: interface?,
        })
    }

    fn pgsql(&mut self, r: &RawResource, key: &str, nodes: &[&str]) -> Option<ResourceKind> {
        let bindir = self
            .required_str(
                r,
                r.bindir.as_ref(),
                key,
                "bindir",
                "\"/usr/lib/postgresql/15/bin\"",
            )
            .and_then(|_| {
                r.bindir.as_ref().and_then(|b| {
                    self.absolute(
                        b,
                        &format!("{key}.bindir"),
                        "\"/usr/lib/postgresql/15/bin\"",
                    )
                })
            });
        let datadir = match &r.datadir {
            None => {
                self.error(
                    r.name.span(),
                    format!("{key}.datadir"),
                    "pgsql resource needs `datadir`, e.g. datadir = \"/var/lib/postgresql/15/main\""
                        .to_owned(),
                );
                None
            }
            Some(d) => self
                .per_node(
                    d,
                    &format!("{key}.datadir"),
                    nodes,
                    "\"/var/lib/postgresql/15/main\"",
                )
                .and_then(|per| self.absolute_per_node(d, per, &format!("{key}.datadir"))),
        };
        let port = match &r.port {
            None => Some(PerNode::All(DEFAULT_PG_PORT)),
            Some(p) => self.per_node_port(p, &format!("{key}.port"), nodes),
        };
        let password_file = match &r.password_file {
            None => Some(None),
            Some(p) => self
                .absolute(
                    p,
                    &format!("{key}.password_file"),
                    "\"/etc/watchkeeper/pgpass\"",
                )
                .map(Some),
        };
        let primary_conninfo = match &r.primary_conninfo {
            None => Some(None),
            Some(c) => self
                .per_node(
                    c,
                    &format!("{key}.primary_conninfo"),
                    nodes,
                    "primary_conninfo = { alpha = \"host=10.0.0.12 user=replicator\", beta = \"host=10.0.0.11 user=replicator\" }",
                )
                .map(Some),
        };
        let rejoin = match r.rejoin.as_ref().map(|j| (j, j.get_ref().as_str())) {
            None | Some((_, "rewind")) => Some(RejoinWord::Rewind),
            Some((_, "reclone")) => Some(RejoinWord::Reclone),
            Some((_, "manual")) => Some(RejoinWord::Manual),
            Some((j, other)) => {
                self.error(
                    j.span(),
                    format!("{key}.rejoin"),
                    format!(
                        "rejoin {other:?} is not known: expected \"rewind\" (pg_rewind), \
                         \"reclone\" (pg_basebackup) or \"manual\""
                    ),
                );
                None
            }
        };
        if matches!(rejoin, Some(RejoinWord::Rewind | RejoinWord::Reclone))
            && r.primary_conninfo.is_none()
        {
            self.error(
                r.name.span(),
                format!("{key}.primary_conninfo"),
                "a former primary is rewound or recloned from the new one: set \
                 primary_conninfo (per node: how it reaches its peer), or rejoin = \"manual\""
                    .to_owned(),
            );
            return None;
        }
        Some(ResourceKind::Pgsql {
            bindir: bindir?,
            datadir: datadir?,
            port: port?,
            host: r
                .host
                .as_ref()
                .map_or_else(|| "/var/run/postgresql".to_owned(), |h| h.get_ref().clone()),
            user: r.user.as_ref().map(|u| u.get_ref().clone()),
            superuser: r
                .superuser
                .as_ref()
                .map_or_else(|| "postgres".to_owned(), |s| s.get_ref().clone()),
            password_file: password_file?,
            primary_conninfo: primary_conninfo?,
            rejoin: rejoin?,
        })
    }
}
