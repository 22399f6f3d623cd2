//! A node's hardware watchdog: `watchdog = { ... }` (or `[node.watchdog]`) in a `[[node]]`.
//!
//! The watchdog is what resets a host that must not go on, so its numbers are checked against
//! each other here, once, with the reasons spelled out: a timeout the kernel cannot express, a
//! feed interval that leaves no room for one late feed, or a progress bound shorter than the
//! heartbeat loop's own period would each either reset healthy hosts or never reset a hung
//! one. What only the device can tell (its maximum timeout, the value it really takes) is
//! checked when the agent opens it.
//!
//! The table is optional, so that a node without a watchdog still runs; the agent then warns
//! at every start that nothing will reset the host if it hangs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::raw::{RawDuration, RawNode};
use super::{Cluster, Node, Timing};

/// A node's watchdog, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Which device.
    pub device: WatchdogSelector,
    /// The timeout to set: the host resets this long after the last feed.
    pub timeout: Duration,
    /// How often the feeder feeds while all is well.
    pub feed_interval: Duration,
    /// The feeder starves the watchdog when the agent's main loop has made no progress for
    /// this long.
    pub progress_timeout: Duration,
    /// SCHED_FIFO priority of the feeder thread, 1 to 99.
    pub realtime_priority: u8,
}

/// How the watchdog device is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogSelector {
    /// A device path, e.g. `/dev/watchdog0` or a udev symlink.
    Path(PathBuf),
    /// The driver's identity as `/sys/class/watchdog/*/identity` shows it, e.g.
    /// `iTCO_wdt`; stable when device numbers are not.
    Identity(String),
    /// An external watchdog bridge on a serial port (see `config::bridge`).
    Bridge(super::BridgeTarget),
}

impl std::fmt::Display for WatchdogSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Identity(i) => write!(f, "identity {i:?}"),
            Self::Bridge(b) => write!(f, "bridge {}", b.device.display()),
        }
    }
}

/// `watchdog = { ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a watchdog table such as { device = \"/dev/watchdog0\", timeout = \"10s\" }"
)]
pub(super) struct RawWatchdog {
    device: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    bridge: Option<Spanned<String>>,
    baud: Option<Spanned<u32>>,
    timeout: Option<Spanned<RawDuration>>,
    feed_interval: Option<Spanned<RawDuration>>,
    progress_timeout: Option<Spanned<RawDuration>>,
    realtime_priority: Option<Spanned<i64>>,
}

impl Converter<'_> {
    /// Checks every node's watchdog table and fills in `nodes` (which `nodes()` built from the
    /// same `raw` list, matched by name) when the whole configuration is otherwise valid.
    pub(super) fn node_watchdogs(
        &mut self,
        raw: &[RawNode],
        timing: Option<&Timing>,
        cluster: Option<&Cluster>,
        nodes: Option<Vec<Node>>,
    ) -> Option<Vec<Node>> {
        let mut checked = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (i, node) in raw.iter().enumerate() {
            let Some(table) = &node.watchdog else {
                continue;
            };
            let key = format!("node[{i}].watchdog");
            match self.watchdog(table, node, &key, timing, cluster) {
                Some(config) => checked.push((node.name.get_ref().as_str(), config)),
                None => ok = false,
            }
        }
        let mut nodes = nodes?;
        if !ok {
            return None;
        }
        for (name, config) in checked {
            if let Some(node) = nodes.iter_mut().find(|n| n.name == name) {
                node.watchdog = Some(config);
            }
        }
        Some(nodes)
    }

    fn watchdog(
        &mut self,
        raw: &RawWatchdog,
        node: &RawNode,
        key: &str,
        timing: Option<&Timing>,
        cluster: Option<&Cluster>,
    ) -> Option<WatchdogConfig> {
        let device = match &raw.bridge {
            Some(bridge) => {
                let other = raw.device.is_some() || raw.identity.is_some();
                self.watchdog_bridge(bridge, other, raw.baud.as_ref(), key, cluster)
            }
            None => {
                if let Some(baud) = &raw.baud {
                    self.watchdog_baud_without_bridge(baud, key);
                }
                self.watchdog_device(raw, node, key)
            }
        };
        let timeout = self.watchdog_timeout(raw, key);
        let feed_interval = self.feed_interval(raw, key, timeout);
        let progress_timeout = self.progress_timeout(raw, key, timing);
        let realtime_priority = self.realtime_priority(raw, key);
        Some(WatchdogConfig {
            device: device?,
            timeout: timeout?,
            feed_interval: feed_interval?,
            progress_timeout: progress_timeout?,
            realtime_priority: realtime_priority?,
        })
    }

    fn watchdog_device(
        &mut self,
        raw: &RawWatchdog,
        node: &RawNode,
        key: &str,
    ) -> Option<WatchdogSelector> {
        match (&raw.device, &raw.identity) {
            (Some(device), Some(_)) => {
                let message = "give either device or identity, not both: they could name two \
                               different watchdogs"
                    .to_owned();
                self.error(device.span(), format!("{key}.device"), message);
                None
            }
            (None, None) => {
                let message = format!(
                    "node {}'s watchdog names no device: expected device = \"/dev/watchdog0\" \
                     or identity = \"iTCO_wdt\" (see `watchkeeper watchdog list`)",
                    node.name.get_ref()
                );
                self.error(node.name.span(), key.to_owned(), message);
                None
            }
            (Some(device), None) => {
                let path = PathBuf::from(device.get_ref());
                if path.is_absolute() {
                    return Some(WatchdogSelector::Path(path));
                }
                let message = format!(
                    "device {:?} is not an absolute path: expected e.g. \"/dev/watchdog0\"",
                    device.get_ref()
                );
                self.error(device.span(), format!("{key}.device"), message);
                None
            }
            (None, Some(identity)) => {
                let text = identity.get_ref().trim();
                if !text.is_empty() {
                    return Some(WatchdogSelector::Identity(text.to_owned()));
                }
                let message = "identity is empty: expected the driver's identity as \
                               `watchkeeper watchdog list` shows it, e.g. \"iTCO_wdt\""
                    .to_owned();
                self.error(identity.span(), format!("{key}.identity"), message);
                None
            }
        }
    }

    fn watchdog_timeout(&mut self, raw: &RawWatchdog, key: &str) -> Option<Duration> {
        let key = format!("{key}.timeout");
        let Some(value) = &raw.timeout else {
            return Some(DEFAULT_WATCHDOG_TIMEOUT);
        };
        let timeout = self.duration(value, &key)?;
        let message = if timeout.is_zero() {
            "timeout 0s would never let the watchdog fire (the kernel reads 0 as \"no \
             change\"): expected a whole number of seconds, e.g. \"10s\""
                .to_owned()
        } else if timeout.subsec_nanos() != 0 {
            format!(
                "timeout {} is not a whole number of seconds: the kernel's watchdog API counts \
                 whole seconds; expected e.g. \"{}s\"",
                humane(timeout),
                timeout.as_secs().max(1)
            )
        } else if timeout > MAX_WATCHDOG_TIMEOUT {
            format!(
                "timeout {} is longer than {}: a hung host would hold its resources that long \
                 before its hardware resets it",
                humane(timeout),
                humane(MAX_WATCHDOG_TIMEOUT)
            )
        } else {
            return Some(timeout);
        };
        self.error(value.span(), key, message);
        None
    }

    fn feed_interval(
        &mut self,
        raw: &RawWatchdog,
        key: &str,
        timeout: Option<Duration>,
    ) -> Option<Duration> {
        let key = format!("{key}.feed_interval");
        let (interval, span, shown) = match &raw.feed_interval {
            None => {
                // The default follows the timeout, so only a timeout written too short can
                // make it wrong; the error then belongs on the timeout.
                let timeout = timeout?;
                let interval = (timeout / FEEDS_PER_TIMEOUT_DEFAULT).max(MIN_FEED_INTERVAL);
                let span = raw.timeout.as_ref().map_or(0..0, Spanned::span);
                (
                    interval,
                    span,
                    format!("{} (the default)", humane(interval)),
                )
            }
            Some(value) => {
                let interval = self.duration(value, &key)?;
                (interval, value.span(), humane(interval))
            }
        };
        if interval < MIN_FEED_INTERVAL {
            let message = format!(
                "feed_interval {shown} is shorter than {}: scheduling delay alone would be a \
                 large part of it",
                humane(MIN_FEED_INTERVAL)
            );
            self.error(span, key, message);
            return None;
        }
        let timeout = timeout?;
        if interval * MIN_FEEDS_PER_TIMEOUT > timeout {
            let message = format!(
                "feed_interval {shown} is more than 1/{MIN_FEEDS_PER_TIMEOUT} of the timeout \
                 ({}): one late feed would reset a healthy host; expected at most {}",
                humane(timeout),
                humane(timeout / MIN_FEEDS_PER_TIMEOUT)
            );
            self.error(span, key, message);
            return None;
        }
        Some(interval)
    }

    fn progress_timeout(
        &mut self,
        raw: &RawWatchdog,
        key: &str,
        timing: Option<&Timing>,
    ) -> Option<Duration> {
        let key = format!("{key}.progress_timeout");
        let (bound, span, shown) = match &raw.progress_timeout {
            None => (
                DEFAULT_PROGRESS_TIMEOUT,
                0..0,
                format!("{} (the default)", humane(DEFAULT_PROGRESS_TIMEOUT)),
            ),
            Some(value) => {
                let bound = self.duration(value, &key)?;
                (bound, value.span(), humane(bound))
            }
        };
        if bound > MAX_PROGRESS_TIMEOUT {
            let message = format!(
                "progress_timeout {shown} is longer than {}: a stuck agent would keep feeding \
                 the watchdog that long",
                humane(MAX_PROGRESS_TIMEOUT)
            );
            self.error(span, key, message);
            return None;
        }
        // The main loop runs at least once per heartbeat interval; a bound of a few intervals
        // tells a stuck loop from a busy one.
        let minimum = timing?.heartbeat_interval * MIN_PROGRESS_INTERVALS;
        if bound < minimum {
            let message = format!(
                "progress_timeout {shown} is shorter than {MIN_PROGRESS_INTERVALS} heartbeat \
                 intervals ({}): the main loop runs once per interval, so a healthy agent \
                 would starve its watchdog",
                humane(minimum)
            );
            let span = if span.is_empty() {
                raw.timeout.as_ref().map_or(0..0, Spanned::span)
            } else {
                span
            };
            self.error(span, key, message);
            return None;
        }
        Some(bound)
    }

    fn realtime_priority(&mut self, raw: &RawWatchdog, key: &str) -> Option<u8> {
        let Some(value) = &raw.realtime_priority else {
            return Some(DEFAULT_REALTIME_PRIORITY);
        };
        let priority = *value.get_ref();
        match u8::try_from(priority) {
            Ok(p @ 1..=99) => Some(p),
            _ => {
                let message = format!(
                    "realtime_priority {priority} is out of range: expected a SCHED_FIFO \
                     priority from 1 to 99"
                );
                self.error(value.span(), format!("{key}.realtime_priority"), message);
                None
            }
        }
    }
}

/// Timeout unless `timeout` says otherwise. Ten seconds rides out a few late feeds on a loaded
/// host, while a hung host still gives up its resources well within a minute; it is also
/// within every common hardware timer's range (the iTCO's is 613 s, many BMCs' 255 s).
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest timeout. A host that hangs keeps its resources (and blocks failover) until the
/// watchdog fires; beyond five minutes that is an outage, so a longer value is taken as a typo.
pub const MAX_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(300);

/// The default feed interval is the timeout divided by this: ten feeds per timeout, so nine in
/// a row can be late or lost before a healthy host is reset.
pub const FEEDS_PER_TIMEOUT_DEFAULT: u32 = 10;

/// A feed interval must fit at least this many times in the timeout, so that one late feed
/// never resets a healthy host.
pub const MIN_FEEDS_PER_TIMEOUT: u32 = 2;

/// Shortest feed interval: below 10 ms, timer slack and scheduling delay on a loaded host are
/// a large part of the interval.
pub const MIN_FEED_INTERVAL: Duration = Duration::from_millis(10);

/// Progress bound unless `progress_timeout` says otherwise: twenty default heartbeat intervals,
/// long enough that a busy loop is never taken for a stuck one, short against the default
/// deadtime's consequences (a stuck agent that keeps feeding would look alive to its
/// watchdog while its peers already see it dead).
pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest progress bound: a stuck agent keeps feeding the watchdog for this long at most.
pub const MAX_PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// The progress bound must cover at least this many heartbeat intervals (the main loop's
/// slowest regular period).
pub const MIN_PROGRESS_INTERVALS: u32 = 3;

/// SCHED_FIFO priority unless `realtime_priority` says otherwise. Any real-time priority runs
/// ahead of every ordinary process, which is what keeps feeds on time under load; 50 is where
/// the kernel runs its threaded interrupt handlers, so the feeder does not preempt the device
/// interrupts that the host needs to make progress, and stays ahead of most real-time
/// applications.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 50;
