//! Operational visibility over HTTP: a Prometheus endpoint and a read-only HTML status page,
//! both off unless `[http]` is configured.
//!
//! # Design
//!
//! The HTTP task must never slow the engine down. So two kinds of figures are kept apart:
//!
//! - **Distributions** (how long detection and fencing took, gaps between watchdog feeds) are
//!   recorded where the event happens, into [`Metrics`] (shared histograms) or, for the
//!   watchdog, into the feeder thread's own lock-free buckets
//!   ([`crate::watchdog::FeedGaps`]). The scrape only reads them.
//! - **State** (epoch, holder, links, peers, devices, resources) is taken per request as a
//!   [`Snapshot`]: the HTTP task asks the main loop for the same status report the control
//!   socket serves, over its bounded queue and with a timeout ([`server`]). A stalled loop
//!   answers 503; it is never waited on for longer than that.
//!
//! [`encode`] turns a snapshot and the histograms into the OpenMetrics text format with the
//! `prometheus-client` encoder; the page ([`page`]) renders the same snapshot. Every name is
//! listed in `docs/operations.md`.

pub mod page;
pub mod server;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::recent::RecentEvent;
use crate::runtime::Status;
use crate::watchdog::FeedGaps;

/// Labels of one series: `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The histograms the runtime records into as things happen. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics {
    detection: HistogramFamily,
    fence: HistogramFamily,
    fence_device: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            detection: Family::new_with_constructor(detection_histogram),
            fence: Family::new_with_constructor(fence_histogram),
            fence_device: Family::new_with_constructor(fence_histogram),
        }
    }
}

impl Metrics {
    /// A peer was declared dead after `silent_for` without a valid frame on any link: the
    /// failure detection time.
    pub fn peer_detected_dead(&self, peer: &str, silent_for: std::time::Duration) {
        self.detection
            .get_or_create(&labels(&[("peer", peer)]))
            .observe(silent_for.as_secs_f64());
    }

    /// A fencing level against `peer` finished after `took`, confirmed off or not.
    pub fn fence_level_done(&self, peer: &str, level: usize, off: bool, took: std::time::Duration) {
        let level = (level + 1).to_string();
        let outcome = if off { "off" } else { "failed" };
        self.fence
            .get_or_create(&labels(&[
                ("peer", peer),
                ("level", &level),
                ("outcome", outcome),
            ]))
            .observe(took.as_secs_f64());
    }

    /// One device of a fencing level answered after `took`.
    pub fn fence_device_done(&self, device: &str, off: bool, took: std::time::Duration) {
        let outcome = if off { "off" } else { "failed" };
        self.fence_device
            .get_or_create(&labels(&[("device", device), ("outcome", outcome)]))
            .observe(took.as_secs_f64());
    }
}

/// What one request sees of the agent: the control socket's status report, the resource
/// group and the recent events.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status report (peers, links, engine view, fence devices).
    pub status: Status,
    /// Each resource of the group, in start order.
    pub resources: Vec<ResourceView>,
    /// Recent engine events, newest first.
    pub events: Vec<RecentEvent>,
}

/// One resource as the runtime last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    /// Name.
    pub name: String,
    /// Executor type (`ocf`, `systemd`, ...).
    pub kind: String,
    /// `running`, `stopped`, `starting`, `start failed`, ...; empty before its first action.
    pub state: String,
    /// Last error, if any.
    pub last_error: Option<String>,
}

impl ResourceView {
    /// Reads the resources out of the `resources` control answer.
    pub fn from_report(report: &serde_json::Value) -> Vec<Self> {
        let text = |v: &serde_json::Value, k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        report
            .get("resources")
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|r| Self {
                        name: text(r, "name"),
                        kind: text(r, "type"),
                        state: text(r, "state"),
                        last_error: r
                            .get("last_error")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The OpenMetrics text of `snap`, the shared histograms and the feeder's gaps (when this
/// node has a watchdog), ending with `# EOF`.
pub fn encode(
    snap: &Snapshot,
    metrics: &Metrics,
    feed_gaps: Option<&FeedGaps>,
) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix(PREFIX);
    let st = &snap.status;
    let engine = st.engine.as_ref();

    gauges(
        &mut reg,
        "info",
        "Constant 1; the labels name the cluster and this node",
        None,
        [(
            labels(&[
                ("cluster", &st.cluster),
                ("node", &st.node),
                ("incarnation", &st.incarnation.to_string()),
            ]),
            1.0,
        )],
    );
    gauge(
        &mut reg,
        "uptime",
        "Time since the agent started",
        Some(Unit::Seconds),
        ms_to_s(st.uptime_ms),
    );
    if let Some(e) = engine {
        #[allow(clippy::cast_precision_loss)] // Epochs stay far below 2^53.
        let epoch = e.epoch as f64;
        gauge(
            &mut reg,
            "epoch",
            "Highest ownership epoch this node knows",
            None,
            epoch,
        );
        gauges(
            &mut reg,
            "holder",
            "Constant 1 for the node this node knows as holder of the group; absent when none",
            None,
            e.holder
                .iter()
                .map(|h| (labels(&[("node", h)]), 1.0))
                .collect::<Vec<_>>(),
        );
        gauge(
            &mut reg,
            "holds",
            "1 when this node holds the resource group",
            None,
            bool_f(e.holds),
        );
        gauge(
            &mut reg,
            "quorate",
            "1 when this node has quorum",
            None,
            bool_f(e.quorate),
        );
        gauges(
            &mut reg,
            "role",
            "Constant 1 for this node's current role",
            None,
            [(labels(&[("role", &e.role)]), 1.0)],
        );
    }

    gauges(
        &mut reg,
        "peer_up",
        "1 when the peer's frames arrive on at least one link",
        None,
        st.peers
            .iter()
            .map(|p| (labels(&[("peer", &p.name)]), bool_f(p.alive)))
            .collect::<Vec<_>>(),
    );
    gauges(
        &mut reg,
        "peer_link_up",
        "1 when the peer's frames arrive on this link",
        None,
        st.peers
            .iter()
            .flat_map(|p| {
                p.links.iter().map(|l| {
                    (
                        labels(&[("peer", &p.name), ("link", &l.link)]),
                        bool_f(l.up),
                    )
                })
            })
            .collect::<Vec<_>>(),
    );
    gauges(
        &mut reg,
        "peer_link_last_seen_age",
        "Time since the last valid frame from the peer on this link; absent before the first",
        Some(Unit::Seconds),
        st.peers
            .iter()
            .flat_map(|p| {
                p.links.iter().filter_map(|l| {
                    l.last_seen_ms_ago
                        .map(|ms| (labels(&[("peer", &p.name), ("link", &l.link)]), ms_to_s(ms)))
                })
            })
            .collect::<Vec<_>>(),
    );

    gauges(
        &mut reg,
        "link_transport_up",
        "1 when the link's serial port or socket is open",
        None,
        st.links
            .iter()
            .map(|l| {
                (
                    labels(&[("link", &l.name), ("kind", &l.kind)]),
                    bool_f(l.transport_up),
                )
            })
            .collect::<Vec<_>>(),
    );
    counters(
        &mut reg,
        "link_frames_received",
        "Valid frames received on the link",
        st.links
            .iter()
            .map(|l| (labels(&[("link", &l.name)]), l.frames_in))
            .collect::<Vec<_>>(),
    );
    counters(
        &mut reg,
        "link_frames_sent",
        "Frames sent on the link",
        st.links
            .iter()
            .map(|l| (labels(&[("link", &l.name)]), l.frames_out))
            .collect::<Vec<_>>(),
    );
    counters(
        &mut reg,
        "link_frames_dropped",
        "Frames received and dropped, by reason",
        st.links
            .iter()
            .flat_map(|l| {
                [
                    ("crc", l.crc_errors),
                    ("auth", l.auth_failures),
                    ("replay", l.replays),
                    ("malformed", l.malformed),
                    ("foreign_cluster", l.foreign_cluster),
                    ("misrouted", l.misrouted),
                    ("queue_full", l.queue_full),
                ]
                .into_iter()
                .map(|(reason, n)| (labels(&[("link", &l.name), ("reason", reason)]), n))
            })
            .collect::<Vec<_>>(),
    );
    counters(
        &mut reg,
        "link_send_errors",
        "Frames the link failed to send",
        st.links
            .iter()
            .map(|l| (labels(&[("link", &l.name)]), l.send_errors))
            .collect::<Vec<_>>(),
    );
    counters(
        &mut reg,
        "link_resyncs",
        "Times a serial link lost framing and resynchronised",
        st.links
            .iter()
            .map(|l| (labels(&[("link", &l.name)]), l.resyncs))
            .collect::<Vec<_>>(),
    );

    gauges(
        &mut reg,
        "fence_device_healthy",
        "1 when the last background check of the fence device passed, 0 when it failed; absent \
         before the first check",
        None,
        st.fence_devices
            .iter()
            .filter_map(|d| {
                d.healthy.map(|h| {
                    (
                        labels(&[("device", &d.name), ("type", &d.r#type)]),
                        bool_f(h),
                    )
                })
            })
            .collect::<Vec<_>>(),
    );
    gauges(
        &mut reg,
        "fence_device_last_check_age",
        "Time since the last background check of the fence device",
        Some(Unit::Seconds),
        st.fence_devices
            .iter()
            .filter_map(|d| {
                d.last_check_ms_ago
                    .map(|ms| (labels(&[("device", &d.name)]), ms_to_s(ms)))
            })
            .collect::<Vec<_>>(),
    );
    gauges(
        &mut reg,
        "fence_device_check_duration",
        "How long the last background check of the fence device took",
        Some(Unit::Seconds),
        st.fence_devices
            .iter()
            .filter_map(|d| {
                d.last_check_ms
                    .map(|ms| (labels(&[("device", &d.name)]), ms_to_s(ms)))
            })
            .collect::<Vec<_>>(),
    );
    gauges(
        &mut reg,
        "resource_state",
        "Constant 1 for each resource's current state (running, stopped, start failed, ...)",
        None,
        snap.resources
            .iter()
            .map(|r| {
                let state = if r.state.is_empty() {
                    "unknown"
                } else {
                    &r.state
                };
                (labels(&[("resource", &r.name), ("state", state)]), 1.0)
            })
            .collect::<Vec<_>>(),
    );
    if let Some(ms) = st.replica_age_ms {
        gauge(
            &mut reg,
            "replica_age",
            "Time since this node's copy of the Director configuration last synced",
            Some(Unit::Seconds),
            ms_to_s(ms),
        );
    }

    reg.register_with_unit(
        "peer_detection",
        "Failure detection time: from a peer's last valid frame to declaring it dead",
        Unit::Seconds,
        metrics.detection.clone(),
    );
    reg.register_with_unit(
        "fence",
        "Duration of fencing levels, from start until every device answered",
        Unit::Seconds,
        metrics.fence.clone(),
    );
    reg.register_with_unit(
        "fence_device",
        "Duration of each device's part of a fencing level",
        Unit::Seconds,
        metrics.fence_device.clone(),
    );
    if let Some(g) = feed_gaps {
        reg.register_with_unit(
            "watchdog_feed_gap",
            "Time between two successful feeds of the hardware watchdog",
            Unit::Seconds,
            GapMetric(g.clone()),
        );
    }

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Builds a label set from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The feeder's histogram, encoded from its own buckets.
#[derive(Debug)]
struct GapMetric(FeedGaps);

impl EncodeMetric for GapMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        encoder.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &s.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauges(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (l, v) in rows {
        family.get_or_create(&l).set(v);
    }
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, family),
        None => reg.register(name, help, family),
    }
}

fn gauge(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, value: f64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, g),
        None => reg.register(name, help, g),
    }
}

fn counters(
    reg: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        family.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, family);
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[allow(clippy::cast_precision_loss)] // Milliseconds of uptime stay far below 2^53.
fn ms_to_s(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn detection_histogram() -> Histogram {
    Histogram::new(DETECTION_BUCKETS)
}

fn fence_histogram() -> Histogram {
    Histogram::new(FENCE_BUCKETS)
}

/// Every metric name starts with this.
pub const PREFIX: &str = "watchkeeper";
/// Detection-time buckets, seconds: deadtimes run from a few hundred milliseconds (serial at
/// 100 ms heartbeats) to tens of seconds; the detection time is the deadtime plus at most one
/// tick, so the buckets are fine where deadtimes are usually set.
const DETECTION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];
/// Fencing buckets, seconds: a BMC or PDU answers in tens of milliseconds to a few seconds;
/// a server's power-off confirmation can take up to the default level timeout.
const FENCE_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::{EngineView, FenceDeviceStatus, LinkStatus, PeerLinkStatus, PeerStatus};

    pub(super) fn snapshot() -> Snapshot {
        let link = LinkStatus {
            name: "lan0".to_owned(),
            kind: "udp".to_owned(),
            endpoint: "127.0.0.1:5405".to_owned(),
            transport_up: true,
            frames_in: 12,
            frames_out: 15,
            crc_errors: 0,
            resyncs: 0,
            auth_failures: 3,
            replays: 0,
            malformed: 1,
            foreign_cluster: 0,
            misrouted: 0,
            send_errors: 0,
            opens: 1,
            queue_full: 0,
        };
        Snapshot {
            status: Status {
                cluster: "bacula".to_owned(),
                node: "alpha".to_owned(),
                node_id: 1,
                incarnation: 4,
                uptime_ms: 61_500,
                heartbeat_interval_ms: 100,
                deadtime_ms: 1000,
                peers: vec![PeerStatus {
                    name: "beta".to_owned(),
                    id: 2,
                    alive: true,
                    last_seen_ms_ago: Some(40),
                    incarnation: Some(9),
                    role: Some("standby".to_owned()),
                    links: vec![PeerLinkStatus {
                        link: "lan0".to_owned(),
                        up: true,
                        last_seen_ms_ago: Some(40),
                        frames_in: 12,
                    }],
                }],
                links: vec![link],
                replica_age_ms: None,
                engine: Some(EngineView {
                    role: "Holder".to_owned(),
                    epoch: 7,
                    holder: Some("alpha".to_owned()),
                    holds: true,
                    quorate: true,
                }),
                fence_devices: vec![FenceDeviceStatus {
                    name: "pdu".to_owned(),
                    r#type: "modbus".to_owned(),
                    targets: vec!["beta".to_owned()],
                    healthy: Some(true),
                    last_check_ms_ago: Some(2500),
                    last_check_ms: Some(12),
                    error: None,
                }],
            },
            resources: vec![ResourceView {
                name: "catalog".to_owned(),
                kind: "pgsql".to_owned(),
                state: "running".to_owned(),
                last_error: None,
            }],
            events: Vec::new(),
        }
    }

    #[test]
    fn state_and_histograms_are_encoded_with_their_values() {
        let m = Metrics::default();
        m.peer_detected_dead("beta", Duration::from_millis(1100));
        m.fence_level_done("beta", 0, true, Duration::from_millis(300));
        m.fence_device_done("pdu", true, Duration::from_millis(280));
        let text = encode(&snapshot(), &m, None).expect("encode");
        for line in [
            "watchkeeper_info{cluster=\"bacula\",node=\"alpha\",incarnation=\"4\"} 1.0",
            "watchkeeper_epoch 7.0",
            "watchkeeper_holder{node=\"alpha\"} 1.0",
            "watchkeeper_holds 1.0",
            "watchkeeper_uptime_seconds 61.5",
            "watchkeeper_peer_up{peer=\"beta\"} 1.0",
            "watchkeeper_peer_link_last_seen_age_seconds{peer=\"beta\",link=\"lan0\"} 0.04",
            "watchkeeper_link_frames_received_total{link=\"lan0\"} 12",
            "watchkeeper_link_frames_sent_total{link=\"lan0\"} 15",
            "watchkeeper_link_frames_dropped_total{link=\"lan0\",reason=\"auth\"} 3",
            "watchkeeper_link_frames_dropped_total{link=\"lan0\",reason=\"malformed\"} 1",
            "watchkeeper_fence_device_healthy{device=\"pdu\",type=\"modbus\"} 1.0",
            "watchkeeper_fence_device_last_check_age_seconds{device=\"pdu\"} 2.5",
            "watchkeeper_resource_state{resource=\"catalog\",state=\"running\"} 1.0",
            "watchkeeper_peer_detection_seconds_count{peer=\"beta\"} 1",
            "watchkeeper_peer_detection_seconds_bucket{le=\"1.0\",peer=\"beta\"} 0",
            "watchkeeper_peer_detection_seconds_bucket{le=\"1.5\",peer=\"beta\"} 1",
            "watchkeeper_fence_seconds_count{peer=\"beta\",level=\"1\",outcome=\"off\"} 1",
            "watchkeeper_fence_device_seconds_sum{device=\"pdu\",outcome=\"off\"} 0.28",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text.contains("watchdog_feed_gap"),
            "no watchdog, no feed-gap histogram"
        );
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::default();
        m.peer_detected_dead("beta", Duration::from_secs(1));
        let text = encode(&snapshot(), &m, None).expect("encode");
        let mut types = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["#", "TYPE", name, kind] => types.push(((*name).to_owned(), (*kind).to_owned())),
                ["#", "UNIT", name, unit] => {
                    assert_eq!(*unit, "seconds", "{line}");
                    assert!(name.ends_with("_seconds"), "{line}");
                }
                ["#", "HELP", ..] | ["#", "EOF"] => {}
                [sample, _value] => {
                    let name = sample.split('{').next().unwrap_or_default();
                    assert!(name.starts_with("watchkeeper_"), "{line}");
                    assert!(
                        name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                        "{line}"
                    );
                    let family = types
                        .iter()
                        .rev()
                        .find(|(t, _)| name.starts_with(t.as_str()))
                        .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
                    if family.1 == "counter" {
                        assert!(name.ends_with("_total"), "counter sample {line}");
                    }
                    if name.contains("seconds") {
                        assert!(
                            [
                                "_seconds",
                                "_seconds_bucket",
                                "_seconds_sum",
                                "_seconds_count"
                            ]
                            .iter()
                            .any(|s| name.ends_with(s)),
                            "unit not last: {line}"
                        );
                    }
                }
                _ => panic!("unexpected line {line:?}"),
            }
        }
        assert!(types.len() >= 20, "{types:?}");
        assert!(
            types
                .iter()
                .any(|(n, t)| n == "watchkeeper_link_frames_received" && t == "counter"),
            "{types:?}"
        );
    }

    #[test]
    fn resources_are_read_from_the_control_answer() {
        let report = serde_json::json!({
            "resources": [
                { "name": "vip", "type": "ocf", "state": "running", "last_error": null },
                { "name": "sd", "type": "systemd", "state": "start failed", "last_error": "exit 1" },
            ]
        });
        let r = ResourceView::from_report(&report);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].state, "start failed");
        assert_eq!(r[1].last_error.as_deref(), Some("exit 1"));
        assert!(ResourceView::from_report(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn the_page_shows_nodes_holder_and_escapes() {
        let mut snap = snapshot();
        snap.events.push(crate::recent::RecentEvent {
            at: std::time::SystemTime::UNIX_EPOCH,
            severity: crate::recent::Severity::Alert,
            text: "PeerDown(<beta>)".to_owned(),
        });
        let html = page::render(&snap);
        assert!(
            html.contains("<tr class=\"node holder\" data-node=\"alpha\">"),
            "{html}"
        );
        assert!(
            html.contains("<tr class=\"node\" data-node=\"beta\">"),
            "{html}"
        );
        assert!(html.contains("<b id=\"holder\">alpha</b>"), "{html}");
        assert!(html.contains("PeerDown(&lt;beta&gt;)"), "{html}");
        assert!(html.contains("1970-01-01 00:00:00"), "{html}");
        assert!(html.contains("http-equiv=\"refresh\""), "{html}");
        assert!(!html.contains("<script"), "no script on the page");
    }
}
