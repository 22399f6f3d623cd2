//! The file as written: serde structs that mirror the TOML layout one to one.
//!
//! These types only decide shape (which keys exist, which are tables, strings or integers);
//! every question of meaning is left to `convert`, which sees all values at once and can report
//! every problem instead of stopping at the first, as serde does. That is why most leaves are
//! loose (`i64` ids, `String` addresses, [`RawDuration`]) and wrapped in [`Spanned`]: a value
//! that is well-formed TOML but wrong is a semantic error with its own sentence and position.
//!
//! Tables themselves are never `Spanned`: TOML lets a table be written implicitly through
//! dotted keys (`links.lan0.address = ...`), and such a table has no span, so asking for one
//! would refuse a valid file.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a watchkeeper configuration file")]
pub(super) struct RawConfig {
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) timing: RawTiming,
    #[serde(default)]
    pub(super) link: Vec<RawLink>,
    #[serde(default)]
    pub(super) node: Vec<RawNode>,
    /// STONITH devices; see `fence`.
    #[serde(default)]
    pub(super) fence_device: Vec<super::fence::RawFenceDevice>,
    /// The failover budget; see `failover`.
    #[serde(default)]
    pub(super) failover: super::failover::RawFailover,
    /// The resource group, in start order; see `resource`.
    #[serde(default)]
    pub(super) resource: Vec<super::resource::RawResource>,
    /// Director configuration replication; see `replicate`.
    pub(super) replicate: Option<super::replicate::RawReplicate>,
    /// The metrics endpoint and status page; see `http`.
    pub(super) http: Option<super::http::RawHttp>,
    /// The decision journal; see `alert`.
    #[serde(default)]
    pub(super) journal: super::alert::RawJournal,
    /// Alert recipients; see `alert`.
    #[serde(default)]
    pub(super) alert: Vec<super::alert::RawAlert>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [cluster] table with name and key_file"
)]
pub(super) struct RawCluster {
    pub(super) name: Spanned<String>,
    pub(super) key_file: Spanned<String>,
    pub(super) id: Option<Spanned<u32>>,
}

/// `[timing]`; the whole table is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [timing] table")]
pub(super) struct RawTiming {
    pub(super) heartbeat_interval: Option<Spanned<RawDuration>>,
    pub(super) deadtime: Option<Spanned<RawDuration>>,
}

/// One `[[link]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[link]] table with name and kind")]
pub(super) struct RawLink {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<RawLinkKind>,
    pub(super) baud: Option<Spanned<u32>>,
    pub(super) multicast: Option<Spanned<String>>,
}

/// `kind = "serial" | "udp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "a link kind, \"serial\" or \"udp\""
)]
pub(super) enum RawLinkKind {
    Serial,
    Udp,
}

/// One `[[node]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[node]] table with id and name")]
pub(super) struct RawNode {
    pub(super) id: Spanned<i64>,
    pub(super) name: Spanned<String>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    /// Keyed by link name; the key's span locates errors about the whole attachment.
    #[serde(default)]
    pub(super) links: BTreeMap<Spanned<String>, RawEndpoint>,
    /// The node's hardware watchdog; see `watchdog`.
    pub(super) watchdog: Option<super::watchdog::RawWatchdog>,
    /// Ordered fencing levels for this node; see `fence`.
    pub(super) fencing: Option<super::fence::RawFencing>,
    /// The node only votes (a quorum witness); see `failover`.
    pub(super) witness: Option<Spanned<bool>>,
    /// Where this node serves the Director's configuration when it holds; see `replicate`.
    pub(super) replicate: Option<Spanned<String>>,
}

/// A node's `links.<name> = { ... }`. All keys are optional here because which ones are
/// required depends on the kind of the link named by the key, which only `convert` knows.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { device = \"/dev/ttyS1\" } or { address = \"192.168.7.1:5405\" }"
)]
pub(super) struct RawEndpoint {
    pub(super) device: Option<Spanned<String>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) interface: Option<Spanned<String>>,
}

/// A duration as written. Numbers are accepted here only so that `convert` can refuse them with
/// a hint to add a unit, which is a better message than serde's "expected a string".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawDuration {
    /// A string, to be parsed as a humane duration such as `"100ms"`.
    Text(String),
    /// A bare integer or float; its spelling is read back from the source through the span.
    Number,
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawDurationVisitor)
    }
}

struct RawDurationVisitor;

impl Visitor<'_> for RawDurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"100ms\", \"1.5s\" or \"2m\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration::Text(v.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawDuration, E> {
        Ok(RawDuration::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawDuration, E> {
        Ok(RawDuration::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawDuration, E> {
        Ok(RawDuration::Number)
    }
}
