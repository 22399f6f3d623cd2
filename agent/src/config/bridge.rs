//! `watchdog = { bridge = "/dev/watchkeeper/bridge-alpha" }`: a node whose watchdog is an
//! external watchdog bridge (the `firmware` crate on a microcontroller, or
//! `watchkeeper-bridge` on a Linux board) on a serial port.
//!
//! The bridge checks the agent's frames with the cluster key and cluster id, so the target
//! carries both from `[cluster]`; its own timeout is set on the bridge, and `timeout` here must
//! say the same, since the feed interval is checked against it. A bridge replaces the device:
//! naming both a device and a bridge is refused, because only one of them would be fed on the
//! engine's word.

use std::path::PathBuf;

use toml::Spanned;

use super::convert::Converter;
use super::{Cluster, ClusterKey, WatchdogSelector, STANDARD_BAUD_RATES};

/// Where the bridge is and what it authenticates with.
#[derive(Debug, Clone)]
pub struct BridgeTarget {
    /// The serial port wired to the bridge's host port.
    pub device: PathBuf,
    /// Line speed.
    pub baud: u32,
    /// The cluster id the bridge expects.
    pub cluster_id: u32,
    /// The cluster key.
    pub key: ClusterKey,
}

impl PartialEq for BridgeTarget {
    fn eq(&self, other: &Self) -> bool {
        self.device == other.device
            && self.baud == other.baud
            && self.cluster_id == other.cluster_id
            && self.key.expose() == other.key.expose()
    }
}

impl Eq for BridgeTarget {}

impl Converter<'_> {
    /// Checks a watchdog table's `bridge` (and `baud`); `other_device` tells whether the table
    /// also names a device or an identity.
    pub(super) fn watchdog_bridge(
        &mut self,
        bridge: &Spanned<String>,
        other_device: bool,
        baud: Option<&Spanned<u32>>,
        key: &str,
        cluster: Option<&Cluster>,
    ) -> Option<WatchdogSelector> {
        let mut ok = true;
        if other_device {
            let message = "give either bridge or device/identity, not both: only one of them \
                           would be fed on the engine's word"
                .to_owned();
            self.error(bridge.span(), format!("{key}.bridge"), message);
            ok = false;
        }
        let device = PathBuf::from(bridge.get_ref());
        if !device.is_absolute() {
            let message = format!(
                "bridge {:?} is not an absolute path: expected the serial port wired to the \
                 bridge, e.g. \"/dev/watchkeeper/bridge-alpha\"",
                bridge.get_ref()
            );
            self.error(bridge.span(), format!("{key}.bridge"), message);
            ok = false;
        }
        let rate = baud.map_or(DEFAULT_BRIDGE_BAUD, |b| *b.get_ref());
        if !STANDARD_BAUD_RATES.contains(&rate) {
            let rates = STANDARD_BAUD_RATES.map(|r| r.to_string()).join(", ");
            let message = format!("baud {rate} is not a standard rate: expected one of {rates}");
            let span = baud.map_or(0..0, Spanned::span);
            self.error(span, format!("{key}.baud"), message);
            ok = false;
        }
        // Without a valid [cluster] its own error is already reported.
        let cluster = cluster?;
        ok.then(|| {
            WatchdogSelector::Bridge(BridgeTarget {
                device,
                baud: rate,
                cluster_id: cluster.id,
                key: cluster.key.clone(),
            })
        })
    }

    /// Refuses `baud` in a watchdog table without a bridge.
    pub(super) fn watchdog_baud_without_bridge(&mut self, baud: &Spanned<u32>, key: &str) {
        let message = "baud applies only to a bridge (watchdog = { bridge = \"...\", baud = ... })"
            .to_owned();
        self.error(baud.span(), format!("{key}.baud"), message);
    }
}

/// The bridge's host port speed unless `baud` says otherwise: the heartbeat links' default, so
/// a bridge on a spare heartbeat-style cable needs no setting; a 70-byte frame takes 6 ms.
pub const DEFAULT_BRIDGE_BAUD: u32 = 115_200;
