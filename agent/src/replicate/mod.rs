//! Director configuration replication: the standby keeps a complete, verified copy of the
//! holder's Director configuration tree (for example `/opt/bacula/etc`), so that after a
//! takeover the Director starts with the configuration the old holder last had.
//!
//! # Contract
//!
//! - The standby pulls: [`sync_once`] connects to the holder's [`serve_sender`], both prove
//!   they hold the cluster key, and the holder's tree arrives encrypted and authenticated
//!   ([`wire`]). Pulling keeps the decision of when a copy is good with the side that uses
//!   it, lets the standby follow whichever node holds, and needs no listener on the standby.
//! - The holder sends a manifest (path, mode, owner, size, SHA-256 per directory and regular
//!   file); the standby asks only for files whose hash differs or that it lacks, stages the
//!   new generation, checks every hash, fsyncs every file and directory, and only then
//!   switches `current` by one `rename(2)` ([`tree`]). A sync interrupted at any point leaves
//!   the previous generation in use; a half-copied tree is never used.
//! - The configured target (e.g. `/opt/bacula/etc`) becomes a symlink to
//!   `<state_dir>/replica/current` on the first successful sync. [`sync_once`] refuses an
//!   existing real directory there with an error telling the administrator to move it.
//! - The running agent instead calls [`sync_once`] without a target and then [`adopt_target`],
//!   which applies the role-reversal rule below. Nothing is ever deleted.
//!
//! # Role reversal
//!
//! After a failover the old holder becomes a standby, and its target is a real directory: its
//! own live configuration from when it held the group. The rule: **a node that does not hold
//! the group, and has just installed a complete, verified copy from a peer that announces
//! itself holder, renames a real directory at its target to
//! `<target>.before-watchkeeper-<unix seconds>` and puts the symlink in its place**, logging
//! both paths at error level so the administrator sees it. Why this is safe:
//!
//! - the move happens only after a generation is complete, so the symlink never points at
//!   nothing, and a holder that cannot be reached leaves the directory where it is;
//! - on a standby the Director is stopped, so nothing reads or writes the directory meanwhile;
//! - the directory is renamed within its parent (same filesystem, one `rename(2)`), never
//!   copied or deleted, and the name never replaces an existing entry; an edit made there
//!   while the peer held is still in it for the administrator to compare and carry over;
//! - a symlink pointing anywhere else, or a file, is still refused: only a plain directory is
//!   the known case of a former holder.
//!
//! Should the node take the group over again at the same moment, the symlink points at the
//! last holder's configuration, which is exactly what a takeover wants to start with.
//!
//! On the holder, `source` may itself be that symlink (the node took over after being a
//! standby): [`serve_sender`] follows the root symlink and walks the generation it points at;
//! only links inside the tree are refused. Edits on the new holder change that generation in
//! place, and the next sync of its standby carries them over.
//! - A forged, replayed, truncated or oversized message closes the connection, is counted in
//!   [`ReplicateCounters`] by reason, and never touches the tree.
//! - Every size is bounded ([`Limits`]); every read and write has a timeout.
//!
//! [`replica_age`] reports how old the standby's copy is, for `watchkeeper status`.
//!
//! Filesystem work runs in `spawn_blocking`: the agent's runtime is single-threaded and its
//! heartbeats must not wait behind an fsync.

pub mod tree;
pub mod wire;

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ClusterKey;
pub use tree::{
    adopt_target, last_sync, replica_age, replica_dir, LastSync, TargetAdoption, TreeError,
};
use wire::{Channel, EntryKind, Message, Role};
pub use wire::{Identity, WireError};

/// Bounds on what one sync may carry. The defaults fit a Director configuration with room to
/// spare; a tree beyond them is refused rather than half replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest regular file.
    pub max_file_size: u64,
    /// Most entries (directories and files).
    pub max_files: usize,
    /// Most bytes in all files together.
    pub max_total_bytes: u64,
    /// Longest relative path, in bytes.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_files: DEFAULT_MAX_FILES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_path_len: DEFAULT_MAX_PATH_LEN,
        }
    }
}

impl Limits {
    /// Largest message these limits allow: a whole file plus its header, or the largest
    /// manifest, whichever is bigger.
    pub fn max_message_len(&self) -> usize {
        let file = usize::try_from(self.max_file_size)
            .unwrap_or(usize::MAX)
            .saturating_add(MESSAGE_HEADROOM);
        let manifest = self
            .max_files
            .saturating_mul(self.max_path_len.saturating_add(MAX_ENTRY_OVERHEAD))
            .saturating_add(MESSAGE_HEADROOM);
        file.max(manifest).min(wire::MAX_WIRE_MESSAGE_LEN)
    }
}

/// What both ends need to know about themselves.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Cluster id (`config.cluster.id`).
    pub cluster_id: u32,
    /// This node's id.
    pub node_id: u8,
    /// The cluster key (`config.cluster.key`).
    pub key: ClusterKey,
    /// Size bounds.
    pub limits: Limits,
    /// Bound on every single read or write on the connection.
    pub io_timeout: Duration,
    /// Node ids this endpoint replicates with: a peer that proves the cluster key but claims
    /// another id is refused after the handshake. `None` accepts any id but this node's own
    /// (for tests); the agent always sets the configured nodes that can hold the group.
    pub peers: Option<Vec<u8>>,
}

impl Endpoint {
    /// An endpoint with the default limits and timeout.
    pub fn new(cluster_id: u32, node_id: u8, key: ClusterKey) -> Self {
        Self {
            cluster_id,
            node_id,
            key,
            limits: Limits::default(),
            io_timeout: DEFAULT_IO_TIMEOUT,
            peers: None,
        }
    }

    /// Checks the authenticated peer's node id against [`Endpoint::peers`].
    fn admit(&self, peer: SocketAddr, node_id: u8) -> Result<(), ReplicateError> {
        match &self.peers {
            Some(ids) if !ids.contains(&node_id) => {
                Err(ReplicateError::UnknownNode { peer, node_id })
            }
            _ => Ok(()),
        }
    }

    fn identity(&self) -> Identity {
        Identity {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
        }
    }
}

/// Where the standby keeps its copy.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The node's state directory; the copy lives in `<state_dir>/replica`.
    pub state_dir: PathBuf,
    /// Path that must be a symlink to the copy (e.g. `/opt/bacula/etc`), if any.
    pub target: Option<PathBuf>,
}

/// What one successful [`sync_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Regular files in the holder's tree.
    pub files_total: u64,
    /// Files whose contents were transferred.
    pub files_sent: u64,
    /// Bytes of file contents transferred.
    pub bytes_sent: u64,
    /// Generation `current` points at now.
    pub generation: u64,
    /// Whether a new generation was installed (false: the copy was already identical).
    pub changed: bool,
    /// SHA-256 of the manifest, hex.
    pub manifest_sha256: String,
    /// Wall time of the whole sync.
    pub elapsed: Duration,
}

/// What one session of the holder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The standby's node id.
    pub peer_node: u8,
    /// Files sent.
    pub files_sent: u64,
    /// Bytes of contents sent.
    pub bytes_sent: u64,
    /// Generation the standby acknowledged.
    pub generation: u64,
}

/// Errors of replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The holder could not be reached.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Holder's address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The channel failed: handshake, authentication, framing, timeout.
    #[error("peer {peer}: {source}")]
    Wire {
        /// Peer address.
        peer: SocketAddr,
        /// Cause.
        #[source]
        source: WireError,
    },
    /// The peer sent an authentic message the protocol does not allow here.
    #[error("peer {peer}: protocol violation: {reason}")]
    Protocol {
        /// Peer address.
        peer: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// The peer holds the cluster key but its node id is not a configured node that can hold
    /// the group.
    #[error("peer {peer}: node id {node_id} is not a configured node that can hold the group")]
    UnknownNode {
        /// Peer address.
        peer: SocketAddr,
        /// The id it claimed.
        node_id: u8,
    },
    /// The peer gave up and said why.
    #[error("peer {peer} aborted: {reason}")]
    PeerAborted {
        /// Peer address.
        peer: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// Reading the source or writing the replica failed, or a path or hash was refused.
    #[error("peer {peer}: {source}")]
    Tree {
        /// Peer address.
        peer: SocketAddr,
        /// Cause.
        #[source]
        source: TreeError,
    },
    /// Checking the target or the replica before connecting failed.
    #[error(transparent)]
    Local(#[from] TreeError),
    /// A blocking filesystem task was lost.
    #[error("filesystem task failed: {0}")]
    Task(String),
}

/// Counters of both roles, by reason. Shared, lock-free; [`ReplicateCounters::snapshot`] reads
/// them for status and tests.
#[derive(Debug, Default)]
pub struct ReplicateCounters {
    /// Syncs completed (receiver) or sessions served to an acknowledgement (sender).
    pub completed: AtomicU64,
    /// Hellos refused (magic, version, cluster, role, node id).
    pub handshake_refused: AtomicU64,
    /// Peers without the cluster key (first message failed authentication).
    pub key_mismatch: AtomicU64,
    /// Later messages that failed authentication: forged or corrupted.
    pub forged: AtomicU64,
    /// Authentic messages out of order: replayed or deleted.
    pub replayed: AtomicU64,
    /// Messages over the size limit.
    pub oversized: AtomicU64,
    /// Connections closed in the middle of a message.
    pub truncated: AtomicU64,
    /// Authentic messages that did not decode or came out of turn.
    pub malformed: AtomicU64,
    /// Manifests refused for a path or a limit.
    pub bad_manifest: AtomicU64,
    /// Files whose contents did not match the manifest.
    pub hash_mismatch: AtomicU64,
    /// Sessions that ended early: clean close mid-protocol, timeout, socket error.
    pub interrupted: AtomicU64,
    /// Sessions the peer aborted.
    pub peer_aborted: AtomicU64,
    /// Local filesystem failures.
    pub local_errors: AtomicU64,
}

/// A plain copy of [`ReplicateCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CounterSnapshot {
    pub completed: u64,
    pub handshake_refused: u64,
    pub key_mismatch: u64,
    pub forged: u64,
    pub replayed: u64,
    pub oversized: u64,
    pub truncated: u64,
    pub malformed: u64,
    pub bad_manifest: u64,
    pub hash_mismatch: u64,
    pub interrupted: u64,
    pub peer_aborted: u64,
    pub local_errors: u64,
}

impl ReplicateCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            completed: r(&self.completed),
            handshake_refused: r(&self.handshake_refused),
            key_mismatch: r(&self.key_mismatch),
            forged: r(&self.forged),
            replayed: r(&self.replayed),
            oversized: r(&self.oversized),
            truncated: r(&self.truncated),
            malformed: r(&self.malformed),
            bad_manifest: r(&self.bad_manifest),
            hash_mismatch: r(&self.hash_mismatch),
            interrupted: r(&self.interrupted),
            peer_aborted: r(&self.peer_aborted),
            local_errors: r(&self.local_errors),
        }
    }

    /// Counts `e` under its reason.
    pub fn count(&self, e: &ReplicateError) {
        let c = match e {
            ReplicateError::Wire { source, .. } => match source {
                WireError::Handshake(_) | WireError::ClosedUnauthenticated => {
                    &self.handshake_refused
                }
                WireError::KeyMismatch => &self.key_mismatch,
                WireError::BadMac { .. } => &self.forged,
                WireError::Replay { .. } => &self.replayed,
                WireError::Oversized { .. } => &self.oversized,
                WireError::Truncated => &self.truncated,
                WireError::Malformed(_) => &self.malformed,
                WireError::Io(_) | WireError::Timeout(_) | WireError::Closed => &self.interrupted,
            },
            ReplicateError::Connect { .. } => &self.interrupted,
            ReplicateError::UnknownNode { .. } => &self.handshake_refused,
            ReplicateError::Protocol { .. } => &self.malformed,
            ReplicateError::PeerAborted { .. } => &self.peer_aborted,
            ReplicateError::Tree { source, .. } | ReplicateError::Local(source) => match source {
                TreeError::BadPath { .. } | TreeError::Limit { .. } => &self.bad_manifest,
                TreeError::HashMismatch { .. } => &self.hash_mismatch,
                _ => &self.local_errors,
            },
            ReplicateError::Task(_) => &self.local_errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The holder's side: accepts standbys on `listener` and serves each the tree at `source`,
/// until `shutdown` turns true. At most [`MAX_SESSIONS`] sessions run at once; further
/// connections are closed at once. Each session is bounded by [`SESSION_TIMEOUT`].
pub async fn serve_sender(
    listener: TcpListener,
    source: PathBuf,
    me: Endpoint,
    counters: Arc<ReplicateCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = Arc::new(me);
    let source = Arc::new(source);
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tracing::warn!(event = "replicate_accept_failed", error = %e, "replication: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if sessions.len() >= MAX_SESSIONS {
                    tracing::warn!(event = "replicate_busy", %peer, "replication: too many sessions, closing");
                    continue;
                }
                let (me, source, counters) = (me.clone(), source.clone(), counters.clone());
                sessions.spawn(async move {
                    let r = tokio::time::timeout(
                        SESSION_TIMEOUT,
                        serve_one(stream, &source, &me, &counters),
                    )
                    .await;
                    match r {
                        Ok(Ok(rep)) => tracing::info!(
                            event = "replicate_served", %peer, node = rep.peer_node,
                            files = rep.files_sent, bytes = rep.bytes_sent,
                            generation = rep.generation, "replication: standby up to date"
                        ),
                        Ok(Err(e)) => tracing::warn!(event = "replicate_serve_failed", %peer, error = %e, "replication session failed"),
                        Err(_) => {
                            counters.interrupted.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(event = "replicate_serve_timeout", %peer, "replication session timed out");
                        }
                    }
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    sessions.shutdown().await;
}

/// Serves one standby on `stream`: handshake, manifest, the files it asks for, its
/// acknowledgement. Errors are counted in `counters`.
pub async fn serve_one(
    stream: TcpStream,
    source: &std::path::Path,
    me: &Endpoint,
    counters: &ReplicateCounters,
) -> Result<SendReport, ReplicateError> {
    let peer = peer_addr(&stream);
    let r = serve_inner(stream, peer, source, me).await;
    match &r {
        Ok(_) => {
            counters.completed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => counters.count(e),
    }
    r
}

/// The standby's side: connects to the holder at `holder`, brings the copy described by
/// `replica` up to date, and records the sync. On any error the previous copy stays current.
/// Errors are counted in `counters`.
pub async fn sync_once(
    holder: SocketAddr,
    replica: &ReplicaConfig,
    me: &Endpoint,
    counters: &ReplicateCounters,
) -> Result<SyncReport, ReplicateError> {
    let r = sync_inner(holder, replica, me).await;
    match &r {
        Ok(rep) => {
            counters.completed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                event = "replica_synced", %holder, generation = rep.generation,
                changed = rep.changed, files = rep.files_sent, bytes = rep.bytes_sent,
                elapsed_ms = crate::runtime::ms(rep.elapsed), "Director configuration copy up to date"
            );
        }
        Err(e) => {
            counters.count(e);
            tracing::warn!(event = "replica_sync_failed", %holder, error = %e, "Director configuration sync failed; previous copy kept");
        }
    }
    r
}

async fn serve_inner(
    stream: TcpStream,
    peer: SocketAddr,
    source: &std::path::Path,
    me: &Endpoint,
) -> Result<SendReport, ReplicateError> {
    let wire_err = |source| ReplicateError::Wire { peer, source };
    let proto = |reason| ReplicateError::Protocol { peer, reason };
    let mut ch = Channel::handshake(
        stream,
        Role::Server,
        me.identity(),
        me.key.expose(),
        me.limits.max_message_len(),
        me.io_timeout,
    )
    .await
    .map_err(wire_err)?;
    me.admit(peer, ch.peer().node_id)?;
    match recv(&mut ch, peer).await? {
        Message::Request => {}
        _ => return Err(proto("expected a request")),
    }
    let limits = me.limits;
    let src = source.to_owned();
    let manifest = match blocking(move || tree::walk(&src, &limits)).await? {
        Ok(m) => m,
        Err(e) => {
            // Tell the standby why, so its error names the holder's problem.
            let _ = ch.send(&Message::Abort(e.to_string()).encode()).await;
            return Err(ReplicateError::Tree { peer, source: e });
        }
    };
    ch.send(&Message::Manifest(manifest.clone()).encode())
        .await
        .map_err(wire_err)?;
    let need = match recv(&mut ch, peer).await? {
        Message::Need(v) => v,
        _ => return Err(proto("expected the list of needed files")),
    };
    // The standby's list must be strictly increasing indices of files; anything else is a bug
    // or an attack, and is not served.
    if need.windows(2).any(|w| w[0] >= w[1])
        || need.iter().any(|&i| {
            !matches!(
                manifest.entries.get(i as usize).map(|e| &e.kind),
                Some(EntryKind::File { .. })
            )
        })
    {
        return Err(proto("needed-file list is not increasing file indices"));
    }
    let mut rep = SendReport {
        peer_node: ch.peer().node_id,
        files_sent: 0,
        bytes_sent: 0,
        generation: 0,
    };
    for &i in &need {
        let Some(e) = manifest.entries.get(i as usize).cloned() else {
            return Err(proto("needed-file list is not increasing file indices"));
        };
        let EntryKind::File { sha256, .. } = e.kind else {
            return Err(proto("needed-file list is not increasing file indices"));
        };
        let full = source.join(std::ffi::OsStr::from_bytes(&e.path));
        let max = me.limits.max_file_size;
        let data = blocking(move || tree::read_file(&full, max)).await?;
        let data = match data {
            Ok(d) if sha2_eq(&d, &sha256) => d,
            Ok(_) => {
                let why = format!(
                    "{} changed during the transfer; retry",
                    String::from_utf8_lossy(&e.path)
                );
                let _ = ch.send(&Message::Abort(why).encode()).await;
                return Err(ReplicateError::Tree {
                    peer,
                    source: TreeError::HashMismatch {
                        path: String::from_utf8_lossy(&e.path).into_owned(),
                    },
                });
            }
            Err(err) => {
                let _ = ch.send(&Message::Abort(err.to_string()).encode()).await;
                return Err(ReplicateError::Tree { peer, source: err });
            }
        };
        rep.files_sent += 1;
        rep.bytes_sent += data.len() as u64;
        ch.send(&Message::File { index: i, data }.encode())
            .await
            .map_err(wire_err)?;
    }
    match recv(&mut ch, peer).await? {
        Message::Ack { generation } => rep.generation = generation,
        _ => return Err(proto("expected an acknowledgement")),
    }
    ch.close().await;
    Ok(rep)
}

async fn sync_inner(
    holder: SocketAddr,
    replica: &ReplicaConfig,
    me: &Endpoint,
) -> Result<SyncReport, ReplicateError> {
    let started = Instant::now();
    let limits = me.limits;
    // Lock, clean leftovers, check the target and read the current copy before connecting, so
    // a refused target costs the holder nothing.
    let state_dir = replica.state_dir.clone();
    let target = replica.target.clone();
    let (rep_dir, local) = blocking(move || -> Result<_, TreeError> {
        let r = tree::Replica::open(&state_dir)?;
        if let Some(t) = &target {
            tree::check_target(t, &r.current_link())?;
        }
        let local = r.current_manifest(&limits);
        Ok((r, local))
    })
    .await??;
    let rep_dir = Arc::new(rep_dir);

    let stream = TcpStream::connect(holder)
        .await
        .map_err(|source| ReplicateError::Connect {
            addr: holder,
            source,
        })?;
    let peer = holder;
    let wire_err = |source| ReplicateError::Wire { peer, source };
    let tree_err = |source| ReplicateError::Tree { peer, source };
    let proto = |reason| ReplicateError::Protocol { peer, reason };
    let mut ch = Channel::handshake(
        stream,
        Role::Client,
        me.identity(),
        me.key.expose(),
        me.limits.max_message_len(),
        me.io_timeout,
    )
    .await
    .map_err(wire_err)?;
    me.admit(peer, ch.peer().node_id)?;
    ch.send(&Message::Request.encode())
        .await
        .map_err(wire_err)?;
    let manifest = match recv(&mut ch, peer).await? {
        Message::Manifest(m) => m,
        _ => return Err(proto("expected a manifest")),
    };
    tree::check_manifest(&manifest, &limits).map_err(tree_err)?;
    let manifest_sha256 = tree::manifest_hash(&manifest);
    let files_total = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count() as u64;
    let total_bytes: u64 = manifest
        .entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size,
            EntryKind::Dir => 0,
        })
        .sum();

    let unchanged = local
        .as_ref()
        .is_some_and(|l| tree::same_tree(&manifest, l, rep_dir.owners()));
    let need = if unchanged {
        Vec::new()
    } else {
        tree::needed(&manifest, local.as_ref())
    };
    ch.send(&Message::Need(need.clone()).encode())
        .await
        .map_err(wire_err)?;

    let (generation, bytes_sent) = if unchanged {
        let g = rep_dir.current().unwrap_or(0);
        (g, 0)
    } else {
        let r = rep_dir.clone();
        let mut staging = blocking(move || r.stage(manifest))
            .await?
            .map_err(tree_err)?;
        let mut bytes = 0u64;
        for &want in &need {
            let (index, data) = match recv(&mut ch, peer).await? {
                Message::File { index, data } => (index, data),
                Message::Abort(reason) => return Err(ReplicateError::PeerAborted { peer, reason }),
                _ => return Err(proto("expected a file")),
            };
            if index != want {
                return Err(proto("file out of the requested order"));
            }
            bytes += data.len() as u64;
            let owners = rep_dir.owners();
            staging = blocking(move || staging.receive(index, &data, owners).map(|()| staging))
                .await?
                .map_err(tree_err)?;
        }
        let r = rep_dir.clone();
        let received = need.clone();
        let g = blocking(move || r.commit(staging, &received))
            .await?
            .map_err(tree_err)?;
        (g, bytes)
    };

    let rec = LastSync {
        unix_ms: unix_ms_now(),
        generation,
        manifest_sha256: manifest_sha256.clone(),
        files: files_total,
        bytes: total_bytes,
    };
    let r = rep_dir.clone();
    let target = replica.target.clone();
    blocking(move || -> Result<(), TreeError> {
        if let Some(t) = &target {
            tree::link_target(t, &r.current_link())?;
        }
        r.record(&rec)
    })
    .await?
    .map_err(tree_err)?;
    // The copy is installed whether or not the holder hears about it.
    let _ = ch.send(&Message::Ack { generation }.encode()).await;
    ch.close().await;
    Ok(SyncReport {
        files_total,
        files_sent: need.len() as u64,
        bytes_sent,
        generation,
        changed: !unchanged,
        manifest_sha256,
        elapsed: started.elapsed(),
    })
}

async fn recv(ch: &mut Channel, peer: SocketAddr) -> Result<Message, ReplicateError> {
    let bytes = ch
        .recv()
        .await
        .map_err(|source| ReplicateError::Wire { peer, source })?;
    match Message::decode(&bytes) {
        Ok(Message::Abort(reason)) => Err(ReplicateError::PeerAborted { peer, reason }),
        Ok(m) => Ok(m),
        Err(source) => Err(ReplicateError::Wire { peer, source }),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReplicateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicateError::Task(e.to_string()))
}

fn sha2_eq(data: &[u8], sha: &[u8; 32]) -> bool {
    use sha2::Digest;
    sha2::Sha256::digest(data).as_slice() == sha
}

fn peer_addr(s: &TcpStream) -> SocketAddr {
    s.peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Largest replicated file: a Director configuration file is kilobytes; 16 MiB leaves room for
/// generated includes while bounding each message's buffer.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;
/// Most entries: large multi-client setups keep one file per client, a few thousand at most.
pub const DEFAULT_MAX_FILES: usize = 10_000;
/// Most bytes in all: a stray backup dump in the tree is refused, not shipped.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 256 << 20;
/// Longest relative path: well beyond any real configuration layout, far below PATH_MAX.
pub const DEFAULT_MAX_PATH_LEN: usize = 1024;
/// Per read or write: a standby on a working link answers in milliseconds; 30 s tolerates a
/// loaded host without holding a dead connection for long.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one whole session on the holder, whatever the peer does.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(300);
/// Concurrent sessions on the holder: one per standby, plus one spare for a reconnect.
pub const MAX_SESSIONS: usize = 4;
/// Pause after a failed accept, so a descriptor shortage does not become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Bytes beyond the payload a message may need (type, index).
const MESSAGE_HEADROOM: usize = 4096;
/// Bytes of a manifest entry beyond its path.
const MAX_ENTRY_OVERHEAD: usize = 64;
