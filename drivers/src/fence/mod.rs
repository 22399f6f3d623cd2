//! STONITH drivers: the devices that switch a node off so that another may take over.
//!
//! Every driver implements [`FenceDevice`]. The contract, which the engine's safety rests on:
//!
//! - Every call has a deadline and returns by it: a device that does not answer in time is
//!   [`FenceErrorKind::Timeout`], never a hang.
//! - `off` returns `Ok` only once the device itself reports the target off, by reading the
//!   power state (or outlet state, or port state) back — never on the strength of the command's
//!   own reply. A device that acknowledges "off" and keeps reporting "on" until the deadline is
//!   [`FenceErrorKind::Unconfirmed`], also when the deadline (or the device going silent) cuts
//!   a later read-back short: the last answer read is the one reported.
//! - Errors carry a [`FenceErrorKind`] so the engine can choose between retrying and moving to
//!   the next fencing level without knowing the driver.
//! - No policy: a driver never decides whether to fence, it does what it is told and reports the
//!   truth.

pub mod double;
pub mod exec;
pub mod ipmi;
pub mod modbus;
pub mod redfish;
pub mod snmp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

/// Power state of a target as a device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Powered (or outlet on, or port enabled).
    On,
    /// Unpowered (or outlet off, or port disabled).
    Off,
}

/// A confirmed state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// The state the device reported at the end.
    pub state: PowerState,
    /// How many state reads it took to see it.
    pub polls: u32,
    /// Time from the call to the confirming read.
    pub elapsed: Duration,
}

/// What kind of failure, for the engine's choice between retry and next level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceErrorKind {
    /// The device did not answer at all (no route, no listener, silence).
    Unreachable,
    /// The device refused the credentials.
    Auth,
    /// The deadline passed before the operation completed.
    Timeout,
    /// The device answered with an error or refused the operation.
    Refused,
    /// The command was accepted but the device never reported the requested state.
    Unconfirmed,
    /// The device does not know the target (wrong system id, outlet, port).
    TargetUnknown,
}

/// A failed fence operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fence device {device}: {message}")]
pub struct FenceError {
    /// Kind of failure.
    pub kind: FenceErrorKind,
    /// Device name from the configuration.
    pub device: String,
    /// What happened, with the device's own message where it gave one.
    pub message: String,
}

impl FenceError {
    /// Builds an error.
    pub fn new(
        kind: FenceErrorKind,
        device: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            device: device.into(),
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> FenceErrorKind {
        self.kind
    }
}

/// The future every fence operation returns.
pub type FenceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FenceError>> + Send + 'a>>;

/// A STONITH device bound to the targets it can switch; see the module docs for the contract.
///
/// `target` is a node name from the configuration; a device asked about a node it does not
/// serve answers [`FenceErrorKind::TargetUnknown`].
pub trait FenceDevice: Send {
    /// The device's name in the configuration.
    fn name(&self) -> &str;

    /// Switches `target` off and returns once the device reports it off.
    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed>;

    /// Switches `target` on and returns once the device reports it on.
    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed>;

    /// Off, confirmed off, then on, confirmed on.
    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed>;

    /// Reads the target's power state.
    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState>;

    /// Checks the device is reachable, accepts the credentials and knows every target it is
    /// configured for, without changing anything.
    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()>;
}
