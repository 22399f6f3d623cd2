//! The failover budget: `[failover]`, and `witness = true` on a node.
//!
//! Every timeout the decision engine uses is set here or derived from the heartbeat timing, and
//! the ones that depend on each other are checked together, with the reason: a margin that does
//! not cover a stalled node's last feeds would let a peer take over while that node still runs;
//! a two-node cluster without a fence delay would have both nodes fence each other in a
//! heartbeat-only partition.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::raw::{RawDuration, RawNode};
use super::{FenceConfig, Node, Timing};
use crate::engine::{EngineConfig, Level, NodeSpec};

/// The failover budget, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// How long a booting node waits to see its peers before fencing the missing ones.
    pub startup_timeout: Duration,
    /// Two nodes without a witness: how long the node that does not hold waits before fencing.
    pub fence_delay: Duration,
    /// Upper bound on one fencing level.
    pub fence_timeout: Duration,
    /// First pause before fencing again after every level failed (doubles up to 16 times).
    pub fence_retry: Duration,
    /// How long a candidate waits for a majority.
    pub election_timeout: Duration,
    /// A gap this long in the engine's own inputs means it was stalled: a holder self-fences.
    pub stall_timeout: Duration,
    /// Added to a silent node's watchdog timeout before it is taken to have reset itself.
    pub watchdog_margin: Duration,
    /// Names of the nodes that only vote.
    pub witnesses: Vec<String>,
    /// Local restarts of a resource whose monitor failed before the group is handed over.
    pub restart_limit: u32,
    /// How long after the last resource failure a node forgets its failures; `None`: until
    /// `watchkeeper cleanup`.
    pub failure_timeout: Option<Duration>,
}

/// `[failover]`; the whole table is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [failover] table")]
pub(super) struct RawFailover {
    startup_timeout: Option<Spanned<RawDuration>>,
    fence_delay: Option<Spanned<RawDuration>>,
    fence_timeout: Option<Spanned<RawDuration>>,
    fence_retry: Option<Spanned<RawDuration>>,
    election_timeout: Option<Spanned<RawDuration>>,
    stall_timeout: Option<Spanned<RawDuration>>,
    watchdog_margin: Option<Spanned<RawDuration>>,
    restart_limit: Option<Spanned<i64>>,
    failure_timeout: Option<Spanned<RawDuration>>,
}

impl Converter<'_> {
    /// Checks `[failover]` against the timing, the nodes' watchdogs and the fencing levels.
    pub(super) fn failover(
        &mut self,
        raw: &RawFailover,
        raw_nodes: &[RawNode],
        timing: Option<&Timing>,
        nodes: Option<&[Node]>,
    ) -> Option<FailoverConfig> {
        let get =
            |cx: &mut Self, v: &Option<Spanned<RawDuration>>, key: &str, default: Duration| match v
            {
                None => Some((default, None)),
                Some(s) => cx.duration(s, key).map(|d| (d, Some(s.span()))),
            };
        let startup = get(
            self,
            &raw.startup_timeout,
            "failover.startup_timeout",
            DEFAULT_STARTUP_TIMEOUT,
        );
        let delay = get(
            self,
            &raw.fence_delay,
            "failover.fence_delay",
            DEFAULT_FENCE_DELAY,
        );
        let fence_timeout = get(
            self,
            &raw.fence_timeout,
            "failover.fence_timeout",
            DEFAULT_FENCE_LEVEL_TIMEOUT,
        );
        let retry = get(
            self,
            &raw.fence_retry,
            "failover.fence_retry",
            DEFAULT_FENCE_RETRY,
        );
        let election = get(
            self,
            &raw.election_timeout,
            "failover.election_timeout",
            DEFAULT_ELECTION_TIMEOUT,
        );
        let stall = get(
            self,
            &raw.stall_timeout,
            "failover.stall_timeout",
            DEFAULT_STALL_TIMEOUT,
        );
        let margin = get(
            self,
            &raw.watchdog_margin,
            "failover.watchdog_margin",
            DEFAULT_WATCHDOG_MARGIN,
        );
        let restart_limit = match &raw.restart_limit {
            None => Some(DEFAULT_RESTART_LIMIT),
            Some(r) => match u32::try_from(*r.get_ref()) {
                Ok(v) if v <= 10 => Some(v),
                _ => {
                    self.error(
                        r.span(),
                        "failover.restart_limit",
                        format!(
                            "restart_limit {} is out of range: expected 0 (hand over at the first \
                             monitor failure) to 10",
                            r.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        // Outer `None`: an error was reported.
        let failure_timeout = match &raw.failure_timeout {
            None => Some(None),
            Some(s) => match self.duration(s, "failover.failure_timeout") {
                Some(d) if d >= MIN_FAILURE_TIMEOUT => Some(Some(d)),
                Some(d) => {
                    self.error(
                        s.span(),
                        "failover.failure_timeout",
                        format!(
                            "failure_timeout {} is too short: expected at least {}, or leave it \
                             out so that only `watchkeeper cleanup` forgets failures",
                            humane(d),
                            humane(MIN_FAILURE_TIMEOUT)
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        let witnesses: Vec<String> = raw_nodes
            .iter()
            .filter(|n| n.witness.as_ref().is_some_and(|w| *w.get_ref()))
            .map(|n| n.name.get_ref().clone())
            .collect();
        let (
            Some(startup),
            Some(delay),
            Some(fence_timeout),
            Some(retry),
            Some(election),
            Some(stall),
            Some(mut margin),
            Some(t),
        ) = (
            startup,
            delay,
            fence_timeout,
            retry,
            election,
            stall,
            margin,
            timing,
        )
        else {
            return None;
        };
        let mut ok = true;
        let span = |s: Option<std::ops::Range<usize>>| s.unwrap_or(0..0);
        let iv = t.heartbeat_interval;
        if stall.0 < 2 * iv {
            ok = false;
            self.error(
                span(stall.1),
                "failover.stall_timeout",
                format!(
                    "stall_timeout {} is shorter than 2 heartbeat intervals ({}): one late tick would look like a stalled engine",
                    humane(stall.0),
                    humane(2 * iv)
                ),
            );
        }
        if election.0 < 3 * iv {
            ok = false;
            self.error(
                span(election.1),
                "failover.election_timeout",
                format!(
                    "election_timeout {} is shorter than 3 heartbeat intervals ({}): votes could not arrive in time",
                    humane(election.0),
                    humane(3 * iv)
                ),
            );
        }
        if startup.0 < t.deadtime {
            ok = false;
            self.error(
                span(startup.1),
                "failover.startup_timeout",
                format!(
                    "startup_timeout {} is shorter than the deadtime ({}): a booting node would fence peers it simply has not heard yet",
                    humane(startup.0),
                    humane(t.deadtime)
                ),
            );
        }
        if fence_timeout.0 < MIN_FENCE_TIMEOUT {
            ok = false;
            self.error(
                span(fence_timeout.1),
                "failover.fence_timeout",
                format!("fence_timeout {} is too short: no device confirms a power-off that fast (at least {})", humane(fence_timeout.0), humane(MIN_FENCE_TIMEOUT)),
            );
        }
        if let Some(nodes) = nodes {
            let voters = nodes.len();
            if voters == 2 && witnesses.is_empty() && delay.0.is_zero() {
                ok = false;
                self.error(
                    span(delay.1),
                    "failover.fence_delay",
                    "fence_delay is 0 in a two-node cluster without a witness: in a heartbeat-only partition both nodes would fence each other at once".to_owned(),
                );
            }
            // Without an explicit margin, derive one that covers every node.
            let needed_max = nodes
                .iter()
                .filter_map(|n| n.watchdog.as_ref())
                .map(|w| w.progress_timeout + iv)
                .max();
            if margin.1.is_none() {
                if let Some(m) = needed_max {
                    margin.0 = margin.0.max(m + WATCHDOG_MARGIN_SLACK);
                }
            }
            for n in nodes {
                let Some(wd) = &n.watchdog else { continue };
                let needed = wd.progress_timeout + iv;
                if margin.0 < needed {
                    ok = false;
                    self.error(
                        span(margin.1),
                        "failover.watchdog_margin",
                        format!(
                            "watchdog_margin {} is shorter than node {}'s watchdog progress_timeout plus one heartbeat interval ({}): the self-fence deadline would end while a stalled node can still be fed",
                            humane(margin.0),
                            n.name,
                            humane(needed)
                        ),
                    );
                    break;
                }
            }
        }
        ok.then_some(FailoverConfig {
            startup_timeout: startup.0,
            fence_delay: delay.0,
            fence_timeout: fence_timeout.0,
            fence_retry: retry.0,
            election_timeout: election.0,
            stall_timeout: stall.0,
            watchdog_margin: margin.0,
            witnesses,
            restart_limit: restart_limit?,
            failure_timeout: failure_timeout?,
        })
    }
}

impl super::Config {
    /// The decision engine's configuration for node `me`, derived from this file.
    pub fn engine_config(&self, me: proto::NodeId, resources: Vec<String>) -> EngineConfig {
        let f = &self.failover;
        let levels = |name: &str| -> Vec<Level> {
            levels_of(&self.fencing, name)
                .into_iter()
                .map(|devices| Level {
                    devices,
                    confirm_with: Vec::new(),
                })
                .collect()
        };
        EngineConfig {
            me,
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeSpec {
                    id: n.id,
                    name: n.name.clone(),
                    witness: f.witnesses.contains(&n.name),
                    watchdog_timeout: n.watchdog.as_ref().map(|w| w.timeout),
                    fencing: levels(&n.name),
                })
                .collect(),
            heartbeat_interval: self.timing.heartbeat_interval,
            deadtime: self.timing.deadtime,
            startup_timeout: f.startup_timeout,
            fence_delay: f.fence_delay,
            fence_level_timeout: f.fence_timeout,
            fence_retry: f.fence_retry,
            fence_retry_max: f.fence_retry.saturating_mul(FENCE_RETRY_DOUBLINGS),
            watchdog_margin: f.watchdog_margin,
            stall_timeout: f.stall_timeout,
            election_timeout: f.election_timeout,
            resources,
            restart_limit: f.restart_limit,
            failure_timeout: f.failure_timeout,
        }
    }

    /// The resource group's names in start order, as the engine knows them.
    pub fn resource_names(&self) -> Vec<String> {
        self.resources.iter().map(|r| r.name.clone()).collect()
    }

    /// The worst-case failover time of this configuration for the loss of a holder, by stage:
    /// detection, fence delay, fencing (every level timing out but the last), for `check-config`.
    pub fn failover_budget(&self) -> Vec<(&'static str, Duration)> {
        let f = &self.failover;
        let two_node = self.nodes.len() == 2 && f.witnesses.is_empty();
        let levels = self
            .nodes
            .iter()
            .map(|n| levels_of(&self.fencing, &n.name).len())
            .max()
            .unwrap_or(0);
        let levels = u32::try_from(levels).unwrap_or(u32::MAX);
        vec![
            (
                "detect",
                self.timing.deadtime + self.timing.heartbeat_interval,
            ),
            (
                "fence delay",
                if two_node {
                    f.fence_delay
                } else {
                    Duration::ZERO
                },
            ),
            ("fence (all levels)", f.fence_timeout.saturating_mul(levels)),
        ]
    }
}

fn levels_of(fencing: &FenceConfig, node: &str) -> Vec<Vec<String>> {
    fencing.levels.get(node).cloned().unwrap_or_default()
}

/// A booting node waits this long for its peers: hosts that lost power together come back
/// within seconds of each other, and fencing a peer that is merely slower to boot is costly.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Two nodes without a witness: the native IPMI and Redfish drivers confirm a power-off in well
/// under 100 ms, so half a second lets the holder win the race with room to spare while adding
/// little to a real failover. Raise it above the slowest first-level device (a fence agent
/// takes about two seconds).
pub const DEFAULT_FENCE_DELAY: Duration = Duration::from_millis(500);
/// One level gets this long: a BMC that has not confirmed off by then is treated as failed and
/// the next level is tried.
pub const DEFAULT_FENCE_LEVEL_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before trying every level again.
pub const DEFAULT_FENCE_RETRY: Duration = Duration::from_secs(2);
/// A candidate gives up after this long without a majority: several heartbeats' worth.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// A gap in the engine's own inputs this long means the process or host was stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Covers a stalled node's feeder feeding until its progress bound runs out (2 s by
/// default), one heartbeat, and scheduling: a silent node is taken to have reset itself only
/// after its watchdog timeout plus this. Without `watchdog_margin` in the file, the margin is
/// raised to every node's progress bound plus one heartbeat plus [`WATCHDOG_MARGIN_SLACK`].
pub const DEFAULT_WATCHDOG_MARGIN: Duration = Duration::from_secs(3);
/// Scheduling and clock-rate slack added to a derived watchdog margin.
pub const WATCHDOG_MARGIN_SLACK: Duration = Duration::from_millis(500);
/// Below this, no fence device can confirm anything.
pub const MIN_FENCE_TIMEOUT: Duration = Duration::from_millis(100);
/// Pauses between fencing rounds double at most this many times over `fence_retry`.
const FENCE_RETRY_DOUBLINGS: u32 = 16;
/// Local restarts of a failed resource before the group is handed over.
pub const DEFAULT_RESTART_LIMIT: u32 = 1;

/// The shortest `failure_timeout`: a shorter one would forget a failure before the restart it
/// caused had shown whether it helped.
pub const MIN_FAILURE_TIMEOUT: Duration = Duration::from_secs(1);
