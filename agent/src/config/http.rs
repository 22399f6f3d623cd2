//! `[http]`: the agent's read-only HTTP listener, serving the Prometheus endpoint (`/metrics`)
//! and, when asked for, the HTML status page (`/`).
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:9632"   # or { alpha = "192.168.7.1:9632", beta = "192.168.7.2:9632" }
//! status_page = true          # optional; default false
//! ```
//!
//! Off when the table is absent: an HA agent opens no port nobody asked for. The address is
//! written explicitly (no default port, no wildcard implied) because whoever scrapes it decides
//! which network may see the cluster's state; like `[replicate]` sources, it is one value for
//! every node or a table by node name, so that two agents on one machine (tests, labs) each get
//! their own port. The page is a separate switch because it shows more than numbers (node
//! names, device names, recent decisions) and some sites want only the scrape.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::convert::Converter;
use super::raw::RawNode;
use super::PerNode;

/// The HTTP listener, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where each node listens.
    pub listen: PerNode<SocketAddr>,
    /// Whether `/` serves the HTML status page (otherwise only `/metrics` is served).
    pub status_page: bool,
}

impl HttpConfig {
    /// Node `name`'s listening address.
    pub fn listen_for(&self, name: &str) -> Option<SocketAddr> {
        self.listen.for_node(name).copied()
    }
}

/// `[http]` as written; the whole table is optional (absent: no listener).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [http] table with listen")]
pub(super) struct RawHttp {
    listen: Option<Spanned<toml::Value>>,
    status_page: Option<Spanned<bool>>,
}

impl Converter<'_> {
    /// Checks `[http]`. `Some(None)`: no listener and nothing wrong; `None`: an error was
    /// recorded.
    pub(super) fn http(
        &mut self,
        raw: Option<&RawHttp>,
        nodes: &[RawNode],
    ) -> Option<Option<HttpConfig>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let names: Vec<&str> = nodes.iter().map(|n| n.name.get_ref().as_str()).collect();
        let Some(v) = &raw.listen else {
            let span = self.table_header("http");
            self.error(
                span,
                "http.listen",
                format!(
                    "[http] needs `listen`, the address the metrics endpoint is served on, e.g. \
                     listen = \"127.0.0.1:{EXAMPLE_PORT}\""
                ),
            );
            return None;
        };
        let example = format!("\"127.0.0.1:{EXAMPLE_PORT}\"");
        let per = self.per_node(v, "http.listen", &names, &example)?;
        let mut ok = true;
        let mut check = |cx: &mut Self, node: Option<&str>, text: &str| -> Option<SocketAddr> {
            let key = node.map_or_else(|| "http.listen".to_owned(), |n| format!("http.listen.{n}"));
            let problem = match text.parse::<SocketAddr>() {
                Err(_) => format!(
                    "listen {text:?} is not an IP address with a port: expected e.g. {example}"
                ),
                Ok(a) if a.port() == 0 => format!(
                    "listen {a} has port 0: expected the fixed port the scraper connects to"
                ),
                Ok(a) if a.ip().is_multicast() => {
                    format!("listen {a} is a multicast address: expected one of this host's")
                }
                Ok(a) => return Some(a),
            };
            cx.error(v.span(), key, problem);
            ok = false;
            None
        };
        let listen = match per {
            PerNode::All(text) => check(self, None, &text).map(PerNode::All),
            PerNode::ByNode(map) => {
                let mut out = std::collections::BTreeMap::new();
                for (node, text) in map {
                    if let Some(a) = check(self, Some(&node), &text) {
                        out.insert(node, a);
                    }
                }
                Some(PerNode::ByNode(out))
            }
        };
        if !ok {
            return None;
        }
        Some(Some(HttpConfig {
            listen: listen?,
            status_page: raw.status_page.as_ref().is_some_and(|s| *s.get_ref()),
        }))
    }
}

/// The port examples in messages suggest: unassigned by IANA and not used by a common
/// exporter, next to nothing the agent itself uses (heartbeats 5405, replication 5406).
const EXAMPLE_PORT: u16 = 9632;
