//! The one conversion from [`RawConfig`] to [`Config`].
//!
//! Everything the rest of the agent relies on is decided here and nowhere else: ranges, uniqueness,
//! cross-references between nodes and links, the key file's permissions. Each check records an
//! error and carries on with what it can still check, so that one run reports every problem in
//! the file; a typed value is only built when no error at all was found.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{self, ConfigError, ConfigErrors};
use super::raw::{
    RawCluster, RawConfig, RawDuration, RawEndpoint, RawLink, RawLinkKind, RawNode, RawTiming,
};
use super::{
    Cluster, ClusterKey, Config, Endpoint, Link, LinkId, LinkKind, Node, NodeId, NodeLink, Timing,
    DEFAULT_BAUD, DEFAULT_CONTROL_SOCKET, DEFAULT_DEADTIME, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_STATE_DIR, MAX_CLUSTER_NAME_LEN, MAX_DEADTIME, MAX_HEARTBEAT_INTERVAL,
    MAX_INTERFACE_NAME_LEN, MAX_LINKS, MAX_LINK_NAME_LEN, MAX_NODES, MAX_NODES_PER_CLUSTER,
    MAX_NODE_NAME_LEN, MIN_DEADTIME_INTERVALS, MIN_HEARTBEAT_INTERVAL, MIN_KEY_LEN, MIN_NODES,
    STANDARD_BAUD_RATES,
};

/// Checks `raw` (parsed from `text`, read from `file`) and builds the typed configuration.
pub(super) fn convert(file: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigErrors> {
    convert_with(file, text, raw, true)
}

/// [`convert`], optionally without reading the key file (for simulating a cluster from its
/// file on a machine that does not hold the key).
pub(super) fn convert_with(
    file: &Path,
    text: &str,
    raw: RawConfig,
    read_key: bool,
) -> Result<Config, ConfigErrors> {
    let mut cx = Converter::new(file, text);
    cx.read_key = read_key;
    let cluster = cx.cluster(&raw.cluster);
    let timing = cx.timing(&raw.timing);
    let links = cx.links(&raw.link);
    let nodes = cx.nodes(&raw.node, &links);
    let nodes = cx.node_watchdogs(&raw.node, timing.as_ref(), cluster.as_ref(), nodes);
    let fencing_raw: Vec<_> = raw.node.iter().map(|n| n.fencing.as_ref()).collect();
    let fencing = cx.fencing(&raw.fence_device, &raw.node, &fencing_raw);
    let failover = cx.failover(&raw.failover, &raw.node, timing.as_ref(), nodes.as_deref());
    let resources = cx.resources(&raw.resource, &raw.node);
    let replicate = cx.replicate(raw.replicate.as_ref(), &raw.node);
    let http = cx.http(raw.http.as_ref(), &raw.node);
    let journal = cx.journal(&raw.journal);
    let alerts = cx.alerts(&raw.alert);
    if !cx.errors.is_empty() {
        return Err(ConfigErrors::new(cx.errors));
    }
    // No error was recorded, so every check passed and every part was built.
    match (
        cluster,
        timing,
        links.into_iter().map(|l| l.typed).collect(),
        nodes,
        fencing,
        failover,
        resources,
        replicate,
        http,
        journal,
        alerts,
    ) {
        (
            Some(cluster),
            Some(timing),
            Some(links),
            Some(nodes),
            Some(fencing),
            Some(failover),
            Some(resources),
            Some(replicate),
            Some(http),
            Some(journal),
            Some(alerts),
        ) => Ok(Config {
            path: file.to_path_buf(),
            cluster,
            timing,
            nodes,
            links,
            fencing,
            failover,
            resources,
            replicate,
            http,
            journal,
            alerts,
        }),
        _ => Err(ConfigErrors::new(vec![error::at(
            file,
            text,
            0..0,
            error::NO_KEY.to_owned(),
            "internal error: a check failed without saying why".to_owned(),
        )])),
    }
}

/// Parses a humane duration: a decimal number and a unit, `ms`, `s` or `m`, e.g. `"100ms"`,
/// `"1.5s"`, `"2m"`. Exact to the nanosecond (no floating point).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit_ns: u128 = match unit.trim_start() {
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let has_point = number.contains('.');
    if whole.is_empty() || (has_point && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    // More digits than this cannot change a nanosecond count and could overflow the scale.
    if fraction.len() > 18 {
        return None;
    }
    let mut nanos = whole.parse::<u128>().ok()?.checked_mul(unit_ns)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        let part = fraction.parse::<u128>().ok()?.checked_mul(unit_ns)? / scale;
        nanos = nanos.checked_add(part)?;
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

/// Formats a duration the way the file spells them, so messages quote what users write.
pub(super) fn humane(d: Duration) -> String {
    let whole_ms = u64::try_from(d.as_millis())
        .ok()
        .filter(|&ms| Duration::from_millis(ms) == d);
    let Some(ms) = whole_ms else {
        return format!("{d:?}");
    };
    match (ms, ms % 60_000, ms % 1000) {
        (0..=999, _, _) => format!("{ms}ms"),
        (_, 0, _) => format!("{}m", ms / 60_000),
        (_, _, 0) => format!("{}s", ms / 1000),
        (_, _, fraction) => {
            let fraction = format!("{fraction:03}");
            format!("{}.{}s", ms / 1000, fraction.trim_end_matches('0'))
        }
    }
}

/// CRC-32/ISO-HDLC (the zlib and Ethernet CRC), bit by bit: it runs once per start on a
/// short name, so a table would only add code.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub(super) struct Converter<'a> {
    file: &'a Path,
    text: &'a str,
    /// Directory that relative paths in the file resolve against.
    base: PathBuf,
    errors: Vec<ConfigError>,
    /// Whether the key file is read and checked.
    read_key: bool,
}

/// A `[[link]]` as far as it checked out. Invalid links are kept so that nodes attached to them
/// are still checked and not also reported as naming an undefined link.
struct LinkDef<'r> {
    raw: &'r RawLink,
    /// `None` past [`MAX_LINKS`].
    id: Option<LinkId>,
    /// `None` if anything about the link itself is wrong.
    typed: Option<Link>,
}

/// One node's claim to be on a link, gathered to check the link as a whole.
struct Attachment<'r> {
    node_name: &'r str,
    address: Option<UdpAddress>,
}

/// The address of a UDP endpoint that parsed, with the span and key of its value.
type UdpAddress = (SocketAddr, Range<usize>, String);

impl<'a> Converter<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        // Resolve against an absolute directory so that paths stay valid if the agent later
        // changes its working directory.
        let base = std::path::absolute(file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .or_else(|| file.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Self {
            file,
            text,
            base,
            errors: Vec::new(),
            read_key: true,
        }
    }

    pub(super) fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: String) {
        let error = error::at(self.file, self.text, span, key.into(), message);
        self.errors.push(error);
    }

    /// The text being converted.
    pub(super) fn source_text(&self) -> &str {
        self.text
    }

    pub(super) fn line_of(&self, span: &Range<usize>) -> usize {
        error::line_column(self.text, span.start).0
    }

    fn cluster(&mut self, raw: &RawCluster) -> Option<Cluster> {
        let name_ok = self.name(
            &raw.name,
            "cluster.name",
            "cluster name",
            MAX_CLUSTER_NAME_LEN,
        );
        let key = self.key_file(&raw.key_file);
        let name = raw.name.get_ref();
        let id = raw
            .id
            .as_ref()
            .map_or_else(|| crc32(name.as_bytes()), |id| *id.get_ref());
        let (key_file, key) = key?;
        name_ok.then(|| Cluster {
            name: name.clone(),
            id,
            key_file,
            key,
        })
    }

    fn key_file(&mut self, raw: &Spanned<String>) -> Option<(PathBuf, ClusterKey)> {
        const KEY: &str = "cluster.key_file";
        let span = raw.span();
        if raw.get_ref().is_empty() {
            self.error(
                span,
                KEY,
                "key_file is empty: expected the path of the file written by `watchkeeper keygen`"
                    .to_owned(),
            );
            return None;
        }
        let path = self.base.join(raw.get_ref());
        if !self.read_key {
            return Some((path, ClusterKey::new(Vec::new())));
        }
        let shown = path.display();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let message = format!(
                    "key file {shown} does not exist: create one with `watchkeeper keygen {shown}`"
                );
                self.error(span, KEY, message);
                return None;
            }
            Err(e) => {
                self.error(span, KEY, format!("cannot inspect key file {shown}: {e}"));
                return None;
            }
        };
        if !meta.is_file() {
            let message = format!(
                "key file {shown} is not a regular file: expected the file written by \
                 `watchkeeper keygen {shown}`"
            );
            self.error(span, KEY, message);
            return None;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let message = format!(
                "key file {shown} has mode {mode:04o}: it must not be accessible by group or \
                 others (chmod 600 {shown})"
            );
            self.error(span, KEY, message);
            return None;
        }
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(span, KEY, format!("cannot read key file {shown}: {e}"));
                return None;
            }
        };
        // `watchkeeper keygen` and editors end the file with a newline that is not key material.
        let len = bytes.trim_ascii_end().len();
        bytes.truncate(len);
        if bytes.len() < MIN_KEY_LEN {
            let message = format!(
                "key file {shown} holds {} bytes: a cluster key must be at least {MIN_KEY_LEN} \
                 bytes (`watchkeeper keygen {shown}` writes 64 hex characters)",
                bytes.len()
            );
            self.error(span, KEY, message);
            return None;
        }
        Some((path, ClusterKey::new(bytes)))
    }

    fn timing(&mut self, raw: &RawTiming) -> Option<Timing> {
        const INTERVAL: &str = "timing.heartbeat_interval";
        const DEADTIME: &str = "timing.deadtime";
        let interval = match &raw.heartbeat_interval {
            None => Some(DEFAULT_HEARTBEAT_INTERVAL),
            Some(value) => self.duration(value, INTERVAL),
        };
        let interval = interval.filter(|&interval| {
            let ok = (MIN_HEARTBEAT_INTERVAL..=MAX_HEARTBEAT_INTERVAL).contains(&interval);
            if !ok {
                let message = format!(
                    "heartbeat_interval {} is out of range: expected {} to {}",
                    humane(interval),
                    humane(MIN_HEARTBEAT_INTERVAL),
                    humane(MAX_HEARTBEAT_INTERVAL),
                );
                let span = raw.heartbeat_interval.as_ref().map_or(0..0, Spanned::span);
                self.error(span, INTERVAL, message);
            }
            ok
        });
        let deadtime = match &raw.deadtime {
            None => Some(DEFAULT_DEADTIME),
            Some(value) => self.duration(value, DEADTIME),
        };
        let deadtime_span = raw
            .deadtime
            .as_ref()
            .or(raw.heartbeat_interval.as_ref())
            .map_or(0..0, Spanned::span);
        let deadtime_shown = match raw.deadtime {
            Some(_) => deadtime.map(humane),
            None => deadtime.map(|d| format!("{} (the default)", humane(d))),
        };
        let deadtime = deadtime.filter(|&deadtime| {
            if deadtime > MAX_DEADTIME {
                let message = format!(
                    "deadtime {} is longer than {}: a dead peer would go unnoticed for too long",
                    deadtime_shown.clone().unwrap_or_default(),
                    humane(MAX_DEADTIME),
                );
                self.error(deadtime_span.clone(), DEADTIME, message);
                return false;
            }
            let Some(interval) = interval else {
                return true;
            };
            let minimum = interval * MIN_DEADTIME_INTERVALS;
            if deadtime < minimum {
                let message = format!(
                    "deadtime {} is shorter than {MIN_DEADTIME_INTERVALS} heartbeat intervals \
                     ({}): a single lost frame would declare a peer dead",
                    deadtime_shown.clone().unwrap_or_default(),
                    humane(minimum),
                );
                self.error(deadtime_span.clone(), DEADTIME, message);
                return false;
            }
            true
        });
        Some(Timing {
            heartbeat_interval: interval?,
            deadtime: deadtime?,
        })
    }

    pub(super) fn duration(&mut self, raw: &Spanned<RawDuration>, key: &str) -> Option<Duration> {
        let field = key.rsplit('.').next().unwrap_or(key);
        let span = raw.span();
        match raw.get_ref() {
            RawDuration::Number => {
                let number = self.text.get(span.clone()).unwrap_or("").trim().to_owned();
                let message = format!(
                    "{field} {number} has no unit: expected a string such as \"{number}ms\" or \
                     \"{number}s\""
                );
                self.error(span, key, message);
                None
            }
            RawDuration::Text(text) => {
                let duration = parse_duration(text);
                if duration.is_none() {
                    let message = format!(
                        "{field} {text:?} is not a duration: expected a number and a unit (ms, s \
                         or m), e.g. \"100ms\", \"1.5s\" or \"2m\""
                    );
                    self.error(span, key, message);
                }
                duration
            }
        }
    }

    fn links<'r>(&mut self, raw: &'r [RawLink]) -> Vec<LinkDef<'r>> {
        if raw.is_empty() {
            let message = format!("no [[link]] is defined: expected 1 to {MAX_LINKS} links");
            self.error(0..0, "link", message);
        }
        if let Some(extra) = raw.get(MAX_LINKS) {
            let message = format!(
                "{} links are defined: expected at most {MAX_LINKS}",
                raw.len()
            );
            self.error(extra.name.span(), format!("link[{MAX_LINKS}]"), message);
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut defs = Vec::with_capacity(raw.len());
        for (i, link) in raw.iter().enumerate() {
            let key = format!("link[{i}]");
            let name = link.name.get_ref();
            let mut ok = self.name(
                &link.name,
                &format!("{key}.name"),
                "link name",
                MAX_LINK_NAME_LEN,
            );
            if let Some(&first) = seen.get(name.as_str()) {
                let line = self.line_of(&raw[first].name.span());
                let message = format!(
                    "link name {name} is already used by link[{first}] on line {line}: link \
                     names must be unique"
                );
                self.error(link.name.span(), format!("{key}.name"), message);
                ok = false;
            } else {
                seen.insert(name, i);
            }
            let kind = self.link_kind(link, &key);
            let id = (i < MAX_LINKS)
                .then(|| u8::try_from(i).ok().map(LinkId))
                .flatten();
            let typed = match (ok, kind, id) {
                (true, Some(kind), Some(id)) => Some(Link {
                    id,
                    name: name.clone(),
                    kind,
                }),
                _ => None,
            };
            defs.push(LinkDef {
                raw: link,
                id,
                typed,
            });
        }
        defs
    }

    fn link_kind(&mut self, link: &RawLink, key: &str) -> Option<LinkKind> {
        let name = link.name.get_ref();
        match link.kind.get_ref() {
            RawLinkKind::Serial => {
                let mut ok = true;
                if let Some(multicast) = &link.multicast {
                    let message = format!(
                        "multicast applies only to udp links, and link {name} is serial: remove it"
                    );
                    self.error(multicast.span(), format!("{key}.multicast"), message);
                    ok = false;
                }
                let baud = link.baud.as_ref().map_or(DEFAULT_BAUD, |b| *b.get_ref());
                if !STANDARD_BAUD_RATES.contains(&baud) {
                    let rates = STANDARD_BAUD_RATES.map(|r| r.to_string()).join(", ");
                    let message =
                        format!("baud {baud} is not a standard rate: expected one of {rates}");
                    let span = link.baud.as_ref().map_or(0..0, Spanned::span);
                    self.error(span, format!("{key}.baud"), message);
                    ok = false;
                }
                ok.then_some(LinkKind::Serial { baud })
            }
            RawLinkKind::Udp => {
                let mut ok = true;
                if let Some(baud) = &link.baud {
                    let message = format!(
                        "baud applies only to serial links, and link {name} is udp: remove it"
                    );
                    self.error(baud.span(), format!("{key}.baud"), message);
                    ok = false;
                }
                let multicast = match &link.multicast {
                    None => None,
                    Some(raw) => {
                        let group = self.multicast(raw, &format!("{key}.multicast"));
                        ok &= group.is_some();
                        group
                    }
                };
                ok.then_some(LinkKind::Udp { multicast })
            }
        }
    }

    fn multicast(&mut self, raw: &Spanned<String>, key: &str) -> Option<IpAddr> {
        let text = raw.get_ref();
        let message = match text.parse::<IpAddr>() {
            Ok(group) if group.is_multicast() => return Some(group),
            Ok(group) => format!(
                "multicast {group} is not a multicast address: expected an address in \
                 224.0.0.0/4 (IPv4) or ff00::/8 (IPv6), such as 239.192.7.1"
            ),
            Err(_) => format!(
                "multicast {text:?} is not an IP address: expected a multicast group such as \
                 \"239.192.7.1\" or \"ff15::7\""
            ),
        };
        self.error(raw.span(), key, message);
        None
    }

    fn nodes(&mut self, raw: &[RawNode], links: &[LinkDef<'_>]) -> Option<Vec<Node>> {
        match raw.len() {
            0 => {
                let message = format!(
                    "no [[node]] is defined: expected {MIN_NODES} to {MAX_NODES_PER_CLUSTER} nodes"
                );
                self.error(0..0, "node", message);
            }
            1 => {
                let message = format!(
                    "only one node is defined: expected {MIN_NODES} to {MAX_NODES_PER_CLUSTER} \
                     nodes, since a single node has no peer to watch or fail over to"
                );
                self.error(raw[0].name.span(), "node", message);
            }
            n if n > MAX_NODES_PER_CLUSTER => {
                let message =
                    format!("{n} nodes are defined: expected at most {MAX_NODES_PER_CLUSTER}");
                let span = raw[MAX_NODES_PER_CLUSTER].name.span();
                self.error(span, format!("node[{MAX_NODES_PER_CLUSTER}]"), message);
            }
            _ => {}
        }

        let link_index: HashMap<&str, usize> = links
            .iter()
            .enumerate()
            .rev() // so that the first of duplicate names wins
            .map(|(i, l)| (l.raw.name.get_ref().as_str(), i))
            .collect();
        let mut attached: Vec<Vec<Attachment<'_>>> = links.iter().map(|_| Vec::new()).collect();
        let mut ids: HashMap<i64, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut nodes = Vec::with_capacity(raw.len());
        let mut all_ok = true;

        for (i, node) in raw.iter().enumerate() {
            let key = format!("node[{i}]");
            let name = node.name.get_ref().as_str();
            let mut ok = true;

            let raw_id = *node.id.get_ref();
            let id = u8::try_from(raw_id).ok().and_then(NodeId::new);
            if id.is_none() {
                let message =
                    format!("node id {raw_id} is out of range: expected 1 to {MAX_NODES}");
                self.error(node.id.span(), format!("{key}.id"), message);
                ok = false;
            } else if let Some(&first) = ids.get(&raw_id) {
                let line = self.line_of(&raw[first].id.span());
                let other = raw[first].name.get_ref();
                let message = format!(
                    "node id {raw_id} is already used by node {other} on line {line}: node ids \
                     must be unique"
                );
                self.error(node.id.span(), format!("{key}.id"), message);
                ok = false;
            } else {
                ids.insert(raw_id, i);
            }

            ok &= self.name(
                &node.name,
                &format!("{key}.name"),
                "node name",
                MAX_NODE_NAME_LEN,
            );
            if let Some(&first) = names.get(name) {
                let line = self.line_of(&raw[first].name.span());
                let message = format!(
                    "node name {name} is already used on line {line}: node names must be unique"
                );
                self.error(node.name.span(), format!("{key}.name"), message);
                ok = false;
            } else {
                names.insert(name, i);
            }

            let control_socket = self.path_or(
                node.control_socket.as_ref(),
                DEFAULT_CONTROL_SOCKET,
                &format!("{key}.control_socket"),
            );
            let state_dir = self.path_or(
                node.state_dir.as_ref(),
                DEFAULT_STATE_DIR,
                &format!("{key}.state_dir"),
            );

            if node.links.is_empty() {
                let defined = defined_links(links);
                let message = format!(
                    "node {name} is attached to no link: expected at least one entry under \
                     links, one per link it is on (defined links: {defined})"
                );
                self.error(node.name.span(), format!("{key}.links"), message);
                ok = false;
            }
            let mut node_links = Vec::with_capacity(node.links.len());
            for (link_name, endpoint) in &node.links {
                let link_key = format!("{key}.links.{}", link_name.get_ref());
                let Some(&l) = link_index.get(link_name.get_ref().as_str()) else {
                    let message = format!(
                        "node {name} names link {}, which is not defined; defined links: {}",
                        link_name.get_ref(),
                        defined_links(links),
                    );
                    self.error(link_name.span(), link_key, message);
                    ok = false;
                    continue;
                };
                let def = &links[l];
                let (endpoint, address) =
                    self.endpoint(def.raw, name, link_name, endpoint, &link_key);
                attached[l].push(Attachment {
                    node_name: name,
                    address,
                });
                match (endpoint, def.id) {
                    (Some(endpoint), Some(link)) => node_links.push(NodeLink { link, endpoint }),
                    _ => ok = false,
                }
            }
            node_links.sort_by_key(|l| l.link);

            match (ok, id, control_socket, state_dir) {
                (true, Some(id), Some(control_socket), Some(state_dir)) => nodes.push(Node {
                    id,
                    name: name.to_owned(),
                    control_socket,
                    state_dir,
                    links: node_links,
                    watchdog: None,
                }),
                _ => all_ok = false,
            }
        }

        for (def, attachments) in links.iter().zip(&attached) {
            self.link_attachments(def, attachments);
        }

        nodes.sort_by_key(|n| n.id.get());
        all_ok.then_some(nodes)
    }

    /// Checks one `links.<name> = { ... }` of node `node` against the link it names. Returns the
    /// endpoint if valid, and separately a UDP address that parsed, for the per-link checks.
    fn endpoint(
        &mut self,
        link: &RawLink,
        node: &str,
        link_name: &Spanned<String>,
        raw: &RawEndpoint,
        key: &str,
    ) -> (Option<Endpoint>, Option<UdpAddress>) {
        let name = link_name.get_ref();
        match link.kind.get_ref() {
            RawLinkKind::Serial => {
                let mut ok = true;
                for (field, value) in [("address", &raw.address), ("interface", &raw.interface)] {
                    if let Some(value) = value {
                        let message = format!(
                            "serial link {name} takes only `device`; `{field}` belongs to udp links"
                        );
                        self.error(value.span(), format!("{key}.{field}"), message);
                        ok = false;
                    }
                }
                let Some(device) = &raw.device else {
                    let message = format!(
                        "serial link {name} needs `device`, the serial port of node {node}, e.g. \
                         {{ device = \"/dev/ttyS1\" }}"
                    );
                    self.error(link_name.span(), key, message);
                    return (None, None);
                };
                let path = PathBuf::from(device.get_ref());
                if !path.is_absolute() {
                    let message = format!(
                        "device {:?} is not an absolute path: expected the serial port's device \
                         path, e.g. \"/dev/ttyS1\"",
                        device.get_ref()
                    );
                    self.error(device.span(), format!("{key}.device"), message);
                    ok = false;
                }
                (ok.then_some(Endpoint::Serial { device: path }), None)
            }
            RawLinkKind::Udp => {
                let mut ok = true;
                if let Some(device) = &raw.device {
                    let message = format!(
                        "udp link {name} takes `address` and `interface`; `device` belongs to \
                         serial links"
                    );
                    self.error(device.span(), format!("{key}.device"), message);
                    ok = false;
                }
                let interface = raw.interface.as_ref().and_then(|interface| {
                    let text = interface.get_ref();
                    if valid_interface_name(text) {
                        return Some(text.clone());
                    }
                    let message = format!(
                        "interface {text:?} is not a valid interface name: expected 1 to \
                         {MAX_INTERFACE_NAME_LEN} characters without '/', ':' or whitespace, \
                         e.g. \"eth1\""
                    );
                    self.error(interface.span(), format!("{key}.interface"), message);
                    ok = false;
                    None
                });
                let Some(address) = &raw.address else {
                    let message = format!(
                        "udp link {name} needs `address`, the IP address and port of node \
                         {node}, e.g. {{ address = \"192.168.7.1:5405\" }}"
                    );
                    self.error(link_name.span(), key, message);
                    return (None, None);
                };
                let address_key = format!("{key}.address");
                let text = address.get_ref();
                let Ok(parsed) = text.parse::<SocketAddr>() else {
                    let message = format!(
                        "address {text:?} is not an IP address and port: expected e.g. \
                         \"192.168.7.1:5405\" or \"[fd00::1]:5405\""
                    );
                    self.error(address.span(), address_key, message);
                    return (None, None);
                };
                if parsed.port() == 0 {
                    let message = format!(
                        "address {parsed} has port 0: expected the fixed port that peers send to"
                    );
                    self.error(address.span(), address_key.clone(), message);
                    ok = false;
                }
                if parsed.ip().is_unspecified() || parsed.ip().is_multicast() {
                    let message = format!(
                        "address {parsed} is not a unicast address: expected node {node}'s own \
                         IP address, which peers send to (a multicast group goes in the link's \
                         `multicast`)"
                    );
                    self.error(address.span(), address_key.clone(), message);
                    ok = false;
                }
                let endpoint = ok.then_some(Endpoint::Udp {
                    address: parsed,
                    interface,
                });
                (endpoint, Some((parsed, address.span(), address_key)))
            }
        }
    }

    /// Checks a link against every node attached to it.
    fn link_attachments(&mut self, def: &LinkDef<'_>, attachments: &[Attachment<'_>]) {
        let link = def.raw;
        let name = link.name.get_ref();
        let Some(index) = def.id.map(|id| id.0) else {
            return;
        };
        let key = format!("link[{index}]");
        let count = attachments.len();
        let listed = match count {
            0 => "no node".to_owned(),
            _ => {
                let names: Vec<&str> = attachments.iter().map(|a| a.node_name).collect();
                let noun = if count == 1 { "node" } else { "nodes" };
                format!("{count} {noun} ({})", names.join(", "))
            }
        };
        match link.kind.get_ref() {
            RawLinkKind::Serial if count != 2 => {
                let message = format!(
                    "serial link {name} is attached to {listed}: a serial cable joins exactly \
                     two nodes"
                );
                self.error(link.name.span(), key.clone(), message);
            }
            RawLinkKind::Udp if count < 2 => {
                let message =
                    format!("udp link {name} is attached to {listed}: expected at least two nodes");
                self.error(link.name.span(), key.clone(), message);
            }
            _ => {}
        }
        if *link.kind.get_ref() != RawLinkKind::Udp {
            return;
        }

        let mut first: Option<(SocketAddr, &str)> = None;
        let mut seen: HashMap<SocketAddr, &str> = HashMap::new();
        for attachment in attachments {
            let Some((address, span, address_key)) = &attachment.address else {
                continue;
            };
            match first {
                None => first = Some((*address, attachment.node_name)),
                Some((reference, owner)) if reference.is_ipv4() != address.is_ipv4() => {
                    let message = format!(
                        "address {address} is {}, but link {name}'s first address {reference} \
                         (node {owner}) is {}: expected one address family per link",
                        family(address.ip()),
                        family(reference.ip()),
                    );
                    self.error(span.clone(), address_key.clone(), message);
                }
                Some(_) => {}
            }
            if let Some(owner) = seen.get(address) {
                let message = format!(
                    "address {address} is already used on link {name} by node {owner}: expected \
                     one address per node"
                );
                self.error(span.clone(), address_key.clone(), message);
            } else {
                seen.insert(*address, attachment.node_name);
            }
        }

        let group = match &def.typed {
            Some(Link {
                kind: LinkKind::Udp {
                    multicast: Some(group),
                },
                ..
            }) => *group,
            _ => return,
        };
        if let (Some((reference, _)), Some(raw)) = (first, &link.multicast) {
            if reference.is_ipv4() != group.is_ipv4() {
                let message = format!(
                    "multicast group {group} is {}, but the addresses on link {name} are {}: \
                     expected a group of the same family",
                    family(group),
                    family(reference.ip()),
                );
                self.error(raw.span(), format!("{key}.multicast"), message);
            }
        }
    }

    /// A path key that may be left out for `default`; relative paths resolve against the
    /// directory of the configuration file.
    pub(super) fn path_or(
        &mut self,
        raw: Option<&Spanned<String>>,
        default: &str,
        key: &str,
    ) -> Option<PathBuf> {
        let Some(raw) = raw else {
            return Some(PathBuf::from(default));
        };
        if raw.get_ref().is_empty() {
            let field = key.rsplit('.').next().unwrap_or(key);
            let message = format!(
                "{field} is empty: expected a path, or no {field} for the default {default}"
            );
            self.error(raw.span(), key, message);
            return None;
        }
        Some(self.base.join(raw.get_ref()))
    }

    /// Checks a cluster, link or node name; `what` starts the message.
    pub(super) fn name(
        &mut self,
        name: &Spanned<String>,
        key: &str,
        what: &str,
        max: usize,
    ) -> bool {
        let text = name.get_ref();
        let message = if text.is_empty() {
            format!(
                "{what} is empty: expected 1 to {max} characters from A-Z, a-z, 0-9, '.', '_' \
                 and '-'"
            )
        } else if let Some(c) = text.chars().find(|&c| !valid_name_char(c)) {
            format!("{what} {text:?} contains {c:?}: expected only A-Z, a-z, 0-9, '.', '_' and '-'")
        } else if text.len() > max {
            format!(
                "{what} {text:?} is {} characters long: expected at most {max}",
                text.len()
            )
        } else {
            return true;
        };
        self.error(name.span(), key, message);
        false
    }
}

/// Names end up in log lines, status output, command lines and shell scripts; a small alphabet
/// keeps them unambiguous and safe to paste in all of those.
fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The kernel's own rule (`dev_valid_name`), so a name accepted here is one SO_BINDTODEVICE
/// can take.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn defined_links(links: &[LinkDef<'_>]) -> String {
    if links.is_empty() {
        return "none".to_owned();
    }
    links
        .iter()
        .map(|l| l.raw.name.get_ref().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_exactly() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("100ms"), Some(ms(100)));
        assert_eq!(parse_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_duration("2m"), Some(ms(120_000)));
        assert_eq!(parse_duration("0.25 s"), Some(ms(250)));
        assert_eq!(parse_duration("0.1s"), Some(ms(100)));
        assert_eq!(
            parse_duration("1.0000001ms"),
            Some(Duration::from_nanos(1_000_000))
        );
    }

    #[test]
    fn durations_without_number_or_unit_are_refused() {
        for text in [
            "", "100", "ms", "1.s", ".5s", "1..5s", "1.2.3s", "-1s", "1h", "1 sec", "1e3ms",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999m"),
            None
        );
    }

    #[test]
    fn durations_print_as_written() {
        let ms = Duration::from_millis;
        assert_eq!(humane(ms(250)), "250ms");
        assert_eq!(humane(ms(1000)), "1s");
        assert_eq!(humane(ms(1500)), "1.5s");
        assert_eq!(humane(ms(1250)), "1.25s");
        assert_eq!(humane(ms(120_000)), "2m");
        assert_eq!(humane(ms(90_000)), "90s");
        assert_eq!(humane(Duration::from_micros(1500)), "1.5ms");
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(valid_interface_name("eth1"));
        assert!(valid_interface_name("enp3s0f1.100"));
        for bad in ["", ".", "..", "a/b", "a:1", "a b", "sixteen-chars-xx"] {
            assert!(!valid_interface_name(bad), "{bad:?}");
        }
    }
}
