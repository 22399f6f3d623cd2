//! Opening a node's watchdog when it is an external bridge (`watchdog = { bridge = ... }`).
//!
//! The feeder, the progress bound, the starving and the last words are the same as for
//! `/dev/watchdog`: the bridge is one more [`Watchdog`](drivers::watchdog::Watchdog) behind the
//! same [`Feeder`]. What differs is opening: the bridge arms on an authenticated arm frame
//! rather than on `open`, it has no boot status to read (the armed record in the state
//! directory still tells a reset from a clean stop), and its frames need an incarnation that
//! grows with every run. That incarnation is a counter of its own in `state_dir/bridge/`,
//! persisted like the agent's, so the bridge's replay window accepts each new run and refuses
//! a recorded frame of an old one.

use drivers::watchdog::{BridgeParams, BridgeWatchdog};

use super::{state, FeederParams, NodeWatchdog, Systemd, WatchdogSetupError};
use crate::config::{BridgeTarget, Node, WatchdogConfig};
use crate::watchdog::Feeder;

/// Arms the bridge and starts feeding it.
pub(super) fn open(
    node: &Node,
    config: &WatchdogConfig,
    target: &BridgeTarget,
    systemd: Systemd,
) -> Result<NodeWatchdog, WatchdogSetupError> {
    let counter_dir = node.state_dir.join(INCARNATION_DIR);
    let incarnation =
        crate::runtime::next_incarnation(&counter_dir).map_err(|e| WatchdogSetupError::State {
            dir: counter_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let previous = state::take_previous(&node.state_dir).unwrap_or_default();
    if previous.armed.is_some() || previous.last_words.is_some() {
        let words = previous
            .last_words
            .as_ref()
            .map_or("-", |w| w.reason.as_str());
        tracing::error!(
            event = "watchdog_previous_run",
            device = %target.device.display(),
            armed_before = previous.armed.is_some(),
            last_words = words,
            "the previous run left the bridge armed (a bridge reset, a crash or a power loss); \
             its last words: {words}"
        );
    }
    let name = format!("bridge {}", target.device.display());
    state::write_armed(
        &node.state_dir,
        &state::Armed::now(&name, config.timeout.as_secs()),
    )
    .map_err(|source| WatchdogSetupError::State {
        dir: node.state_dir.clone(),
        source,
    })?;
    let bridge = BridgeWatchdog::open(BridgeParams {
        device: target.device.clone(),
        baud: target.baud,
        key: target.key.expose().to_vec(),
        cluster_id: target.cluster_id,
        node: node.id,
        incarnation,
    })?;
    let params = FeederParams {
        interval: config.feed_interval,
        progress_timeout: config.progress_timeout,
        realtime_priority: Some(config.realtime_priority),
        state_dir: Some(node.state_dir.clone()),
    };
    let (feeder, report) = Feeder::start(Box::new(bridge), params)?;
    if let Err(e) = &report.realtime {
        tracing::warn!(event = "watchdog_degraded", what = "realtime", error = %e, "feeder runs without SCHED_FIFO priority: feeds may be late under load ({e})");
    }
    tracing::info!(
        event = "watchdog_armed",
        device = %name,
        timeout_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
        feed_interval_ms = u64::try_from(config.feed_interval.as_millis()).unwrap_or(u64::MAX),
        incarnation,
        "watchdog {name} armed: an arm frame sent, fed every {:?} while the main loop \
         progresses; the bridge's own timeout must be {:?}",
        config.feed_interval,
        config.timeout
    );
    let progress = feeder.progress();
    Ok(NodeWatchdog {
        feeder: Some(feeder),
        progress: Some(progress),
        state_dir: node.state_dir.clone(),
        systemd,
        reported_errors: 0,
        previous_reset: None,
    })
}

/// Where the bridge's own incarnation counter lives, under the node's state directory.
const INCARNATION_DIR: &str = "bridge";
