//! The engine's vocabulary: its configuration, what it is told ([`Input`]), what it asks for
//! ([`Action`]) and what it reports ([`Event`]). All plain data, so the runtime, the simulator
//! and the model checker exchange the same values.

use std::time::Duration;

use proto::{Heartbeat, NodeId};

/// Static description of the cluster, as one node's engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineConfig {
    /// This node.
    pub me: NodeId,
    /// Every node, this one included.
    pub nodes: Vec<NodeSpec>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is declared dead.
    pub deadtime: Duration,
    /// How long a booting node waits to see its peers before fencing the missing ones.
    pub startup_timeout: Duration,
    /// Two nodes without a witness: how long the node that does not hold waits before fencing
    /// its peer, so that in a heartbeat-only partition the healthy holder fences first.
    pub fence_delay: Duration,
    /// Upper bound on one fencing level; a level that has not answered by then failed.
    pub fence_level_timeout: Duration,
    /// Pause before trying every level again after all failed; doubles up to
    /// `fence_retry_max`.
    pub fence_retry: Duration,
    /// Longest pause between fencing rounds.
    pub fence_retry_max: Duration,
    /// Added to a peer's watchdog timeout when waiting for it to have reset itself, for
    /// scheduling and clock-rate differences.
    pub watchdog_margin: Duration,
    /// A gap between two calls of `handle` longer than this means the engine was stalled
    /// (frozen process, stuck host): a holder then self-fences rather than trust its state.
    pub stall_timeout: Duration,
    /// A candidate that has not gathered a majority within this gives up and retries later.
    pub election_timeout: Duration,
    /// The resource group, in start order.
    pub resources: Vec<String>,
    /// Local restarts of a resource whose monitor failed before the group is handed over.
    pub restart_limit: u32,
    /// How long after its last resource failure a node forgets its failures: its restart
    /// counts start again from zero and, if the failures had made it ineligible, it may hold
    /// the group again. `None`: only `cleanup` forgets them.
    pub failure_timeout: Option<Duration>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    /// Its id.
    pub id: NodeId,
    /// Its name, for logs.
    pub name: String,
    /// A witness votes but never holds resources.
    pub witness: bool,
    /// Its hardware watchdog timeout, if it has one: only then can its peers rely on it having
    /// reset itself after losing quorum.
    pub watchdog_timeout: Option<Duration>,
    /// Fencing levels for this node, tried in order.
    pub fencing: Vec<Level>,
}

/// One fencing level.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Level {
    /// Devices that must all confirm the target off.
    pub devices: Vec<String>,
    /// Independent devices that must also read the target off before the fence counts (a
    /// PDU outlet after a BMC, a SAN port after a PDU).
    pub confirm_with: Vec<String>,
}

/// What the engine is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; nothing else happened.
    Tick,
    /// An authenticated, fresh heartbeat from a peer.
    Heartbeat(Heartbeat),
    /// A link's transport opened or failed (a serial port unplugged, a socket error). Peer
    /// liveness still comes from frames alone; this is recorded for the decision log.
    Link {
        /// Link id.
        link: u8,
        /// Whether the transport is up.
        up: bool,
    },
    /// A fencing level finished.
    FenceResult {
        /// Node fenced.
        target: NodeId,
        /// Level index.
        level: usize,
        /// Outcome.
        outcome: FenceOutcome,
    },
    /// The independent confirmation of a level finished.
    VerifyResult {
        /// Node fenced.
        target: NodeId,
        /// Level index.
        level: usize,
        /// Whether every `confirm_with` device read the target off.
        off: bool,
    },
    /// A resource action finished.
    ResourceResult {
        /// Resource index in the group.
        index: usize,
        /// Outcome.
        outcome: ResourceOutcome,
    },
    /// A periodic monitor of a started resource failed.
    MonitorFailed {
        /// Resource index.
        index: usize,
    },
    /// A `Persist` action reached the disk (fsync + rename done).
    Persisted(Durable),
    /// An operator command.
    Command(Command),
}

/// Outcome of a fencing level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceOutcome {
    /// Every device of the level reported the target off.
    Off,
    /// A device failed (with its message).
    Failed(String),
    /// The level did not finish within its deadline.
    TimedOut,
}

/// Outcome of a resource action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceOutcome {
    /// Started and running.
    Started,
    /// Stopped.
    Stopped,
    /// Start failed.
    StartFailed,
    /// Stop failed or timed out: the resource may still run.
    StopFailed,
}

/// Operator commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Never hold the group on this node; hand it over if holding.
    Standby,
    /// Undo `Standby`.
    Unstandby,
    /// Hand the group over to this node (holder only).
    Switchover(NodeId),
    /// Fence this node now.
    Fence(NodeId),
    /// Forget resource failures that made this node ineligible.
    Clear,
}

/// State that must survive a reboot, persisted before it is announced (rule 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Durable {
    /// Highest ownership epoch this node held or took part in.
    pub epoch: u64,
    /// Holder at `epoch`, as this node last knew it.
    pub holder: Option<NodeId>,
    /// Highest epoch this node voted in, and for whom.
    pub voted: Option<(u64, NodeId)>,
    /// The vote before that one, if it went to another node: that node may hold the group by
    /// now, so this node's later votes name it.
    pub prior: Option<(u64, NodeId)>,
}

impl Durable {
    /// This state after voting for `candidate` at `epoch`.
    pub fn voting(self, epoch: u64, candidate: NodeId) -> Self {
        let prior = match self.voted {
            Some(v) if v.1 != candidate => Some(v),
            _ => self.prior,
        };
        Self {
            voted: Some((epoch, candidate)),
            prior,
            ..self
        }
    }
}

/// What the engine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this heartbeat on every link (links stamp link id and sequence).
    SendHeartbeat(Heartbeat),
    /// Run fencing level `level` against `target`; answer with `Input::FenceResult`.
    Fence {
        /// Node to fence.
        target: NodeId,
        /// Level index.
        level: usize,
    },
    /// Read the target's state through the level's `confirm_with` devices; answer with
    /// `Input::VerifyResult`.
    VerifyOff {
        /// Node fenced.
        target: NodeId,
        /// Level index.
        level: usize,
    },
    /// Undo fencing (re-enable a port, power on) now that `target` rejoined.
    Unfence {
        /// Node.
        target: NodeId,
    },
    /// Start resource `index`; answer with `Input::ResourceResult`.
    StartResource {
        /// Index in the group.
        index: usize,
    },
    /// Stop resource `index`; answer with `Input::ResourceResult`.
    StopResource {
        /// Index in the group.
        index: usize,
    },
    /// Feed the hardware watchdog (the engine is healthy and wants the host to go on).
    FeedWatchdog,
    /// Stop feeding the hardware watchdog for good; the host will be reset.
    StarveWatchdog {
        /// Why, for the last words.
        reason: String,
    },
    /// Write this state durably; answer with `Input::Persisted`.
    Persist(Durable),
    /// Something an operator must hear about.
    Alert(Event),
    /// A decision, for the journal.
    Log(Event),
}

/// Why a takeover was allowed: the evidence of rule 2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// The previous holder was switched off and a device read it off.
    FenceConfirmed {
        /// The previous holder.
        target: NodeId,
        /// The level that did it.
        level: usize,
        /// Whether independent devices confirmed it too.
        verified: bool,
    },
    /// The previous holder lost quorum long enough ago that its watchdog has reset it.
    SelfFenceElapsed {
        /// The previous holder.
        target: NodeId,
    },
    /// The previous holder released the group cleanly at this epoch.
    HandoverAcked {
        /// The previous holder.
        from: NodeId,
        /// The epoch it released.
        epoch: u64,
    },
    /// The previous holder is up and announces that it holds nothing (it rebooted).
    NotHolding {
        /// The previous holder.
        node: NodeId,
    },
    /// No node in the quorum knows of any holder.
    NoPriorHolder,
}

/// A reportable event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// A peer is alive.
    PeerUp(NodeId),
    /// A peer fell silent on every link.
    PeerDown(NodeId),
    /// A link's transport came up.
    LinkUp(u8),
    /// A link's transport failed.
    LinkDown(u8),
    /// This node gained quorum.
    QuorumGained,
    /// This node lost quorum.
    QuorumLost,
    /// Startup finished: every peer was seen or fenced, or the startup timeout passed.
    StartupComplete,
    /// Asking for votes.
    Candidate {
        /// Proposed epoch.
        epoch: u64,
    },
    /// Voted for a candidate.
    Voted {
        /// The candidate.
        candidate: NodeId,
        /// Its epoch.
        epoch: u64,
    },
    /// A majority voted for this node.
    Elected {
        /// Epoch.
        epoch: u64,
    },
    /// The election did not reach a majority in time.
    ElectionFailed {
        /// Epoch.
        epoch: u64,
    },
    /// Fencing a node with a level.
    FenceStarted {
        /// Target.
        target: NodeId,
        /// Level.
        level: usize,
    },
    /// A level fenced the node and every confirmation agreed.
    FenceConfirmed {
        /// Target.
        target: NodeId,
        /// Level.
        level: usize,
    },
    /// A level failed.
    FenceFailed {
        /// Target.
        target: NodeId,
        /// Level.
        level: usize,
        /// Why.
        reason: String,
    },
    /// Every level failed; no takeover on the strength of fencing this node.
    AllFencingFailed {
        /// Target.
        target: NodeId,
    },
    /// Takeover allowed, and on what evidence.
    TakeoverAllowed(Evidence),
    /// This node holds the group at this epoch.
    Holding {
        /// Epoch.
        epoch: u64,
    },
    /// A resource start failed; the group is stopped and this node is no longer eligible.
    ResourceFailed {
        /// Resource index.
        index: usize,
    },
    /// The last resource failure is older than the failure timeout: restart counts are reset
    /// and the node is eligible again.
    FailuresExpired,
    /// This node handed the group over cleanly.
    Released {
        /// Epoch.
        epoch: u64,
    },
    /// This node stops everything and starves its watchdog.
    SelfFence {
        /// Why.
        reason: String,
    },
    /// Another node claims to hold at an older epoch than ours.
    StaleHolder {
        /// The node.
        node: NodeId,
        /// Its epoch.
        epoch: u64,
    },
}
