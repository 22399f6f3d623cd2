//! Director configuration replication in the running agent: which side of
//! [`crate::replicate`] this node plays, following the engine.
//!
//! - While the engine holds the group ([`Engine::holds_resources`](crate::engine::Engine)),
//!   the node serves its `source` tree on its own replication address.
//! - While it does not, and a live peer announces itself holder in its heartbeats, one task
//!   pulls from that peer's address every `interval` (one sync at a time: the task runs them in
//!   sequence, and the replica's lock refuses a second one anyway), then makes the target the
//!   symlink to the copy ([`adopt_target`], which moves a former holder's real directory
//!   aside).
//! - Anything else (no holder heard, or this node releasing) runs neither.
//!
//! The main loop calls [`Replication::update`] once per turn; it only starts or stops tasks
//! when the answer changes, so it costs nothing in between.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::{NodeId, Role};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::liveness::Liveness;
use crate::replicate::{
    adopt_target, serve_sender, sync_once, Endpoint, ReplicaConfig, ReplicateCounters,
    TargetAdoption,
};

/// This node's part in replication.
pub(crate) struct Replication {
    bind: SocketAddr,
    source: PathBuf,
    target: PathBuf,
    state_dir: PathBuf,
    interval: Duration,
    /// Replication address of every other node that can hold the group.
    peers: Vec<(NodeId, String, SocketAddr)>,
    endpoint: Endpoint,
    counters: Arc<ReplicateCounters>,
    serving: Option<Task>,
    pulling: Option<(NodeId, Task)>,
    /// After a failed bind, when to try again.
    bind_retry: Option<tokio::time::Instant>,
}

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    async fn finish(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_GRACE, self.handle).await.is_err() {
            tracing::warn!(
                event = "replica_task_slow",
                "replication task did not stop in time"
            );
        }
    }
}

impl Replication {
    /// The replication of node `local`, if `[replicate]` is configured and the node can hold
    /// the group.
    pub(crate) fn new(config: &Config, local: NodeId) -> Option<Self> {
        let rc = config.replicate.as_ref()?;
        let me = config.node(local)?;
        let bind = rc.address_for(&me.name)?;
        let source = rc.source_for(&me.name)?.to_owned();
        let target = rc.target_for(&me.name)?.to_owned();
        let peers: Vec<(NodeId, String, SocketAddr)> = config
            .peers(local)
            .filter_map(|n| Some((n.id, n.name.clone(), rc.address_for(&n.name)?)))
            .collect();
        let mut endpoint =
            Endpoint::new(config.cluster.id, local.get(), config.cluster.key.clone());
        endpoint.peers = Some(peers.iter().map(|(id, _, _)| id.get()).collect());
        Some(Self {
            bind,
            source,
            target,
            state_dir: me.state_dir.clone(),
            interval: rc.interval,
            peers,
            endpoint,
            counters: Arc::new(ReplicateCounters::default()),
            serving: None,
            pulling: None,
            bind_retry: None,
        })
    }

    /// Starts or stops serving and pulling for the current state: `holds` is the engine's
    /// [`holds_resources`](crate::engine::Engine::holds_resources), `liveness` tells which
    /// live peer announces itself holder.
    pub(crate) fn update(&mut self, holds: bool, liveness: &Liveness) {
        if holds {
            if let Some((_, t)) = self.pulling.take() {
                // A sync that is still writing must not outlive the decision to hold: abort it
                // (its staging directory is removed by the next sync's cleanup).
                t.handle.abort();
                let _ = t.stop.send(true);
            }
            self.serve();
            return;
        }
        if let Some(t) = self.serving.take() {
            tracing::info!(event = "replica_serve_stopped", address = %self.bind, "no longer holding: stopped serving the Director configuration");
            let _ = t.stop.send(true);
        }
        self.bind_retry = None;
        let holder = liveness
            .peers()
            .iter()
            .find(|p| p.alive && p.last_heartbeat.is_some_and(|h| h.role == Role::Holder))
            .map(|p| p.id);
        match (holder, &self.pulling) {
            (Some(h), Some((from, _))) if *from == h => {}
            (Some(h), _) => {
                if let Some((_, t)) = self.pulling.take() {
                    let _ = t.stop.send(true);
                }
                self.pull(h);
            }
            (None, Some(_)) => {
                if let Some((from, t)) = self.pulling.take() {
                    tracing::info!(
                        event = "replica_pull_stopped",
                        holder = from.get(),
                        "no holder heard: stopped pulling the Director configuration"
                    );
                    let _ = t.stop.send(true);
                }
            }
            (None, None) => {}
        }
    }

    /// Stops both tasks, letting a sync under way finish within [`STOP_GRACE`].
    pub(crate) async fn shutdown(mut self) {
        if let Some(t) = self.serving.take() {
            t.finish().await;
        }
        if let Some((_, t)) = self.pulling.take() {
            t.finish().await;
        }
    }

    fn serve(&mut self) {
        if self.serving.is_some() {
            return;
        }
        let now = tokio::time::Instant::now();
        if self.bind_retry.is_some_and(|at| now < at) {
            return;
        }
        let listener = std::net::TcpListener::bind(self.bind)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(event = "replica_bind_failed", address = %self.bind, error = %e, "cannot serve the Director configuration on {}: {e}; retrying", self.bind);
                self.bind_retry = Some(now + BIND_RETRY);
                return;
            }
        };
        self.bind_retry = None;
        tracing::info!(event = "replica_serving", address = %self.bind, source = %self.source.display(), "holding: serving the Director configuration");
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(serve_sender(
            listener,
            self.source.clone(),
            self.endpoint.clone(),
            self.counters.clone(),
            stop_rx,
        ));
        self.serving = Some(Task { stop, handle });
    }

    fn pull(&mut self, holder: NodeId) {
        let Some((_, name, addr)) = self.peers.iter().find(|(id, _, _)| *id == holder).cloned()
        else {
            return;
        };
        tracing::info!(event = "replica_pulling", holder = %name, address = %addr, interval_ms = super::ms(self.interval), "following holder {name}: pulling the Director configuration");
        let (stop, mut stop_rx) = watch::channel(false);
        let replica = ReplicaConfig {
            state_dir: self.state_dir.clone(),
            // The target is adopted after each sync, by the rule of `adopt_target`.
            target: None,
        };
        let target = self.target.clone();
        let (endpoint, counters, interval) =
            (self.endpoint.clone(), self.counters.clone(), self.interval);
        let handle = tokio::spawn(async move {
            loop {
                if *stop_rx.borrow() {
                    break;
                }
                // sync_once logs replica_synced or replica_sync_failed itself.
                if sync_once(addr, &replica, &endpoint, &counters)
                    .await
                    .is_ok()
                    && !*stop_rx.borrow()
                {
                    adopt(&replica.state_dir, &target).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    r = stop_rx.changed() => if r.is_err() || *stop_rx.borrow() { break },
                }
            }
        });
        self.pulling = Some((holder, Task { stop, handle }));
    }
}

async fn adopt(state_dir: &std::path::Path, target: &std::path::Path) {
    let (s, t) = (state_dir.to_owned(), target.to_owned());
    match tokio::task::spawn_blocking(move || adopt_target(&s, &t)).await {
        Ok(Ok(TargetAdoption::AlreadyLinked)) => {}
        Ok(Ok(TargetAdoption::Linked)) => {
            tracing::info!(event = "replica_target_linked", target = %target.display(), "{} now links to the Director configuration copy", target.display());
        }
        Ok(Ok(TargetAdoption::MovedAside { aside })) => {
            tracing::error!(
                event = "replica_target_moved_aside",
                target = %target.display(),
                aside = %aside.display(),
                "{} was a real directory (this node's configuration from when it held the group): \
                 moved to {} (not deleted); {} now links to the copy of the holder's configuration. \
                 Compare the two and carry over any edit you still need on the holder",
                target.display(),
                aside.display(),
                target.display()
            );
        }
        Ok(Err(e)) => {
            tracing::error!(event = "replica_target_refused", target = %target.display(), error = %e, "the Director configuration copy is not exposed: {e}");
        }
        Err(e) => {
            tracing::error!(event = "replica_target_refused", target = %target.display(), error = %e, "adopting the target failed: {e}");
        }
    }
}

/// A failed bind (address not yet configured on an interface, port still held) is retried
/// this often: soon enough for a standby to catch up quickly, rare enough not to flood the log.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// How long a stopping task gets: one sync of a normal tree, not the full I/O timeout.
const STOP_GRACE: Duration = Duration::from_secs(5);
