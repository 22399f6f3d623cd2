//! `[replicate]`: the standby keeps a copy of the holder's Director configuration tree (see
//! `crate::replicate` for the protocol and the on-disk contract), and `replicate` on each
//! `[[node]]`: where that node serves the tree while it holds the group.
//!
//! ```toml
//! [replicate]
//! source = "/opt/bacula/etc"     # or { alpha = "/opt/bacula/etc", beta = "/etc/bacula" }
//! target = "/opt/bacula/etc"     # optional; defaults to source
//! interval = "30s"               # optional
//! port = 5406                    # optional; used by node addresses written without a port
//!
//! [[node]]
//! name = "alpha"
//! replicate = "192.168.7.1"      # or "192.168.7.1:5406"
//! ```
//!
//! # Why an explicit address per node
//!
//! The replication address is written on each node rather than derived from a heartbeat link:
//! a node may have only serial links, a UDP heartbeat link is often a crossover cable that is
//! the wrong path (or too slow) for bulk data, and two nodes on one host (tests, labs) share an
//! IP address and need different ports. The holder listens on its own address; a standby
//! connects to the holder's. Every node that can hold the group (every non-witness node) needs
//! one as soon as `[replicate]` is present; a witness never holds and must not have one.
//!
//! `source` and `target` are one path for every node, or a table by node name (like the
//! per-node values of `[[resource]]`), so that two nodes with different layouts, or two agents
//! on one machine, each use their own directory. `target` defaults to `source`: on a standby
//! the Director is stopped, and its configuration path becomes the symlink to the copy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::raw::{RawDuration, RawNode};
use super::PerNode;

/// Director configuration replication, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateConfig {
    /// The Director's configuration directory on the holder, per node (every non-witness node
    /// has one).
    pub source: PerNode<PathBuf>,
    /// Where a standby exposes its copy (a symlink to it), per node; defaults to `source`.
    pub target: PerNode<PathBuf>,
    /// Pause between two syncs of a standby.
    pub interval: Duration,
    /// Port of node addresses written without one.
    pub port: u16,
    /// Where each non-witness node serves the tree while it holds, by node name.
    pub addresses: BTreeMap<String, SocketAddr>,
}

impl ReplicateConfig {
    /// Node `name`'s source directory.
    pub fn source_for(&self, name: &str) -> Option<&Path> {
        self.source.for_node(name).map(PathBuf::as_path)
    }

    /// Node `name`'s target path.
    pub fn target_for(&self, name: &str) -> Option<&Path> {
        self.target.for_node(name).map(PathBuf::as_path)
    }

    /// Node `name`'s replication address.
    pub fn address_for(&self, name: &str) -> Option<SocketAddr> {
        self.addresses.get(name).copied()
    }
}

/// `[replicate]` as written; the whole table is optional (absent: no replication).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [replicate] table")]
pub(super) struct RawReplicate {
    source: Option<Spanned<toml::Value>>,
    target: Option<Spanned<toml::Value>>,
    interval: Option<Spanned<RawDuration>>,
    port: Option<Spanned<i64>>,
}

impl Converter<'_> {
    /// Checks `[replicate]` and the nodes' `replicate` addresses. `Some(None)`: no replication
    /// and nothing wrong; `None`: an error was recorded.
    pub(super) fn replicate(
        &mut self,
        raw: Option<&RawReplicate>,
        nodes: &[RawNode],
    ) -> Option<Option<ReplicateConfig>> {
        let is_witness = |n: &RawNode| n.witness.as_ref().is_some_and(|w| *w.get_ref());
        let Some(raw) = raw else {
            let mut ok = true;
            for (i, n) in nodes.iter().enumerate() {
                if let Some(a) = &n.replicate {
                    self.error(
                        a.span(),
                        format!("node[{i}].replicate"),
                        "replicate is set but there is no [replicate] table: add one with \
                         `source`, or remove this key"
                            .to_owned(),
                    );
                    ok = false;
                }
            }
            return ok.then_some(None);
        };
        let holders: Vec<&str> = nodes
            .iter()
            .filter(|n| !is_witness(n))
            .map(|n| n.name.get_ref().as_str())
            .collect();
        let mut ok = true;

        let port = match &raw.port {
            None => Some(DEFAULT_REPLICATE_PORT),
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    self.error(
                        p.span(),
                        "replicate.port",
                        format!("port {} is out of range: expected 1 to 65535", p.get_ref()),
                    );
                    None
                }
            },
        };

        let interval = match &raw.interval {
            None => Some(DEFAULT_REPLICATE_INTERVAL),
            Some(v) => self.duration(v, "replicate.interval").filter(|&d| {
                let in_range = (MIN_REPLICATE_INTERVAL..=MAX_REPLICATE_INTERVAL).contains(&d);
                if !in_range {
                    self.error(
                        v.span(),
                        "replicate.interval",
                        format!(
                            "interval {} is out of range: expected {} to {}",
                            humane(d),
                            humane(MIN_REPLICATE_INTERVAL),
                            humane(MAX_REPLICATE_INTERVAL)
                        ),
                    );
                }
                in_range
            }),
        };

        let source = match &raw.source {
            Some(v) => self.replicate_path(v, "replicate.source", &holders),
            None => {
                let span = self.table_header("replicate");
                self.error(
                    span,
                    "replicate.source",
                    "[replicate] needs `source`, the Director's configuration directory on the \
                     holder, e.g. source = \"/opt/bacula/etc\""
                        .to_owned(),
                );
                None
            }
        };
        let target = match &raw.target {
            Some(v) => self.replicate_path(v, "replicate.target", &holders),
            None => source.clone(),
        };

        let mut addresses = BTreeMap::new();
        let mut seen: BTreeMap<SocketAddr, &str> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let name = n.name.get_ref().as_str();
            let key = format!("node[{i}].replicate");
            let Some(a) = &n.replicate else {
                if !is_witness(n) {
                    self.error(
                        n.name.span(),
                        key,
                        format!(
                            "node {name} has no replicate address: with [replicate], every node \
                             that can hold the group needs one, e.g. replicate = \"192.168.7.1\""
                        ),
                    );
                    ok = false;
                }
                continue;
            };
            if is_witness(n) {
                self.error(
                    a.span(),
                    key,
                    format!(
                        "node {name} is a witness and never holds the group, so it serves no \
                         configuration: remove replicate"
                    ),
                );
                ok = false;
                continue;
            }
            let Some(port) = port else { continue };
            let text = a.get_ref();
            let parsed = text
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, port).into()));
            let Some(addr) = parsed else {
                self.error(
                    a.span(),
                    key,
                    format!(
                        "replicate {text:?} is not an IP address with or without a port: \
                         expected e.g. \"192.168.7.1\" or \"192.168.7.1:{DEFAULT_REPLICATE_PORT}\""
                    ),
                );
                ok = false;
                continue;
            };
            if addr.port() == 0 {
                self.error(
                    a.span(),
                    key,
                    format!(
                        "replicate {addr} has port 0: expected the fixed port peers connect to"
                    ),
                );
                ok = false;
                continue;
            }
            if addr.ip().is_unspecified() || addr.ip().is_multicast() {
                self.error(
                    a.span(),
                    key,
                    format!(
                        "replicate {addr} is not a unicast address: expected node {name}'s own IP \
                         address, which its peers connect to"
                    ),
                );
                ok = false;
                continue;
            }
            if let Some(owner) = seen.get(&addr) {
                self.error(
                    a.span(),
                    key,
                    format!("replicate {addr} is already used by node {owner}: expected one address per node"),
                );
                ok = false;
                continue;
            }
            seen.insert(addr, name);
            addresses.insert(name.to_owned(), addr);
        }

        if !ok {
            return None;
        }
        Some(Some(ReplicateConfig {
            source: source?,
            target: target?,
            interval: interval?,
            port: port?,
            addresses,
        }))
    }

    /// One absolute directory path, or a table of them by node name naming every node in
    /// `nodes`.
    fn replicate_path(
        &mut self,
        v: &Spanned<toml::Value>,
        key: &str,
        nodes: &[&str],
    ) -> Option<PerNode<PathBuf>> {
        let field = key.rsplit('.').next().unwrap_or(key).to_owned();
        let per = self.per_node(v, key, nodes, "\"/opt/bacula/etc\"")?;
        let bad = |cx: &mut Self, node: Option<&str>, path: &str| -> bool {
            let shown_key = node.map_or_else(|| key.to_owned(), |n| format!("{key}.{n}"));
            let p = Path::new(path);
            let why = if !p.is_absolute() {
                "is not an absolute path"
            } else if p.parent().is_none() {
                "is the root directory"
            } else {
                return false;
            };
            cx.error(
                v.span(),
                shown_key,
                format!("{field} {path:?} {why}: expected a directory such as \"/opt/bacula/etc\""),
            );
            true
        };
        match per {
            PerNode::All(s) => (!bad(self, None, &s)).then(|| PerNode::All(PathBuf::from(s))),
            PerNode::ByNode(m) => {
                let mut ok = true;
                let mut out = BTreeMap::new();
                for (node, s) in m {
                    ok &= !bad(self, Some(&node), &s);
                    out.insert(node, PathBuf::from(s));
                }
                ok.then_some(PerNode::ByNode(out))
            }
        }
    }

    /// The span of the `[name]` header, for errors about a key missing from that table.
    pub(super) fn table_header(&self, name: &str) -> std::ops::Range<usize> {
        let header = format!("[{name}]");
        self.source_text()
            .lines()
            .scan(0usize, |offset, line| {
                let start = *offset;
                *offset += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| line.trim_start().starts_with(&header))
            .map_or(0..0, |(start, line)| {
                let at = start + (line.len() - line.trim_start().len());
                at..at + header.len()
            })
    }
}

/// A standby pulls this often unless configured: the Director's configuration changes by hand,
/// a few times a day at most, and a copy half a minute old loses nothing at a takeover that
/// the administrator does not already know about. One sync of an unchanged tree is a manifest
/// exchange (hashing a few hundred small files), negligible at this rate.
pub const DEFAULT_REPLICATE_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest interval: below this a sync of a large tree could still be running when the next
/// is due, and the holder would hash its whole tree continuously.
pub const MIN_REPLICATE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval: a copy more than an hour old is likely to miss an edit made the same day.
pub const MAX_REPLICATE_INTERVAL: Duration = Duration::from_secs(3600);
/// Port of replication addresses written without one: next to the heartbeat default (5405).
pub const DEFAULT_REPLICATE_PORT: u16 = 5406;
