//! Takeover executors: what a node starts when it takes the resource group over, and stops, in
//! reverse, when it hands it over or must go down.
//!
//! Every executor implements [`Resource`]. The contract the agent's group and the engine rely
//! on:
//!
//! - Every call has a deadline and returns by it: an action that does not finish in time is
//!   [`ResourceErrorKind::Timeout`], and whatever it started (a child process, a request) is
//!   stopped, never left running behind the caller's back.
//! - `start` returns `Ok` only once the resource is running (the executor checks, the way its
//!   monitor would); `stop` returns `Ok` only once it is stopped. Starting a running resource
//!   and stopping a stopped one succeed (idempotent), as OCF requires.
//! - `monitor` tells running from cleanly stopped (`Ok`) and reports anything else as an error
//!   with a kind, so the group can choose between a local restart and a handover.
//! - No policy: an executor never decides to restart, hand over or fence; it does what it is
//!   told and reports the truth. A stop that failed is reported as failed even when the
//!   resource is probably down, because only a confirmed stop lets another node start it.

pub mod mount;
pub mod ocf;
pub mod pgsql;
mod process;
pub mod script;
pub mod systemd;
pub mod vip;

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

/// `start`, `stop` and `monitor` of an executor whose `do_start`, `do_stop` and `do_monitor`
/// do the work and whose `logged(action, result)` counts and logs a failure: the same three
/// bodies for every such executor, written once.
macro_rules! logged_actions {
    () => {
        fn start(&mut self, deadline: Instant) -> $crate::resource::ResourceFuture<'_, ()> {
            Box::pin(async move {
                let result = self.do_start(deadline).await;
                self.logged("start", result)
            })
        }

        fn stop(&mut self, deadline: Instant) -> $crate::resource::ResourceFuture<'_, ()> {
            Box::pin(async move {
                let result = self.do_stop(deadline).await;
                self.logged("stop", result)
            })
        }

        fn monitor(
            &mut self,
            deadline: Instant,
        ) -> $crate::resource::ResourceFuture<'_, $crate::resource::ResourceState> {
            Box::pin(async move {
                let result = self.do_monitor(deadline).await;
                self.logged("monitor", result)
            })
        }
    };
}
pub(crate) use logged_actions;

/// What a monitor found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceState {
    /// Running and healthy.
    Running,
    /// Cleanly stopped.
    Stopped,
}

/// What kind of failure, after the OCF exit codes where one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceErrorKind {
    /// The action did not finish by its deadline (OCF: killed by the timeout).
    Timeout,
    /// Generic failure (OCF_ERR_GENERIC, 1), or a monitor that found the resource failed.
    Failed,
    /// Bad parameters (OCF_ERR_ARGS, 2).
    Args,
    /// The action is not implemented (OCF_ERR_UNIMPLEMENTED, 3).
    Unimplemented,
    /// Not permitted (OCF_ERR_PERM, 4).
    Permission,
    /// Software the resource needs is missing on this node (OCF_ERR_INSTALLED, 5).
    NotInstalled,
    /// The configuration is wrong, on every node (OCF_ERR_CONFIGURED, 6).
    NotConfigured,
    /// Expected running, found stopped (OCF_NOT_RUNNING, 7, where it is an error).
    NotRunning,
    /// The executor itself could not run the action (no such program, spawn failed).
    Spawn,
}

/// A failed resource action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {resource}: {action}: {message}")]
pub struct ResourceError {
    /// Kind of failure.
    pub kind: ResourceErrorKind,
    /// Resource name from the configuration.
    pub resource: String,
    /// `start`, `stop`, `monitor`, ...
    pub action: String,
    /// What happened, with the resource's own words (stderr, unit result) where it gave any.
    pub message: String,
}

impl ResourceError {
    /// Builds an error.
    pub fn new(
        kind: ResourceErrorKind,
        resource: impl Into<String>,
        action: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            resource: resource.into(),
            action: action.into(),
            message: message.into(),
        }
    }
}

/// The future every resource action returns.
pub type ResourceFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ResourceError>> + Send + 'a>>;

/// One resource of the group; see the module docs for the contract.
pub trait Resource: Send {
    /// The resource's name in the configuration.
    fn name(&self) -> &str;

    /// Starts it and returns once it runs.
    fn start(&mut self, deadline: Instant) -> ResourceFuture<'_, ()>;

    /// Stops it and returns once it is stopped.
    fn stop(&mut self, deadline: Instant) -> ResourceFuture<'_, ()>;

    /// Checks it.
    fn monitor(&mut self, deadline: Instant) -> ResourceFuture<'_, ResourceState>;

    /// For a resource with a standby role (the Catalog's streaming replica): on a node that
    /// does not hold the group, make the local copy follow the holder's, and say what was done.
    /// `None` for resources that have no such role (the default).
    fn follow(&mut self, deadline: Instant) -> Option<ResourceFuture<'_, String>> {
        let _ = deadline;
        None
    }

    /// A flag the runtime raises when it needs the resource (to start or stop it) while a
    /// [`Resource::follow`] may be running: the follow then gives up at its next wait (for
    /// streaming, say) instead of holding the resource until its deadline; work that must not
    /// be cut short (a rewind, a copy) finishes first. The runtime lowers it before each
    /// follow. `None` (the default) for resources without a standby role.
    fn follow_interrupt(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}
