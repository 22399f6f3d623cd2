//! The decision core: a pure state machine that decides who holds the resource group, when to
//! fence, when to take over and when to self-fence.
//!
//! # Caller's duty
//!
//! The engine does no I/O and reads no clock. Its caller passes the current time with every
//! call to [`Engine::handle`], then drains [`Engine::poll_action`] until it returns `None`,
//! executes those actions, feeds their results back as [`Input`]s, and calls
//! `handle(now, Input::Tick)` no later than [`Engine::next_deadline`]. The runtime, the
//! simulator and the model checker all drive it this way, so every decision can be replayed
//! from its inputs.
//!
//! # How it keeps the rules
//!
//! 1. *One holder.* A node holds only at an epoch for which a majority of votes was cast for it
//!    ([`Event::Elected`]); a voter votes at most once per epoch, persisting the vote before
//!    announcing it. In a two-node cluster without a witness, a confirmed fence of the peer
//!    stands in for the peer's vote.
//! 2. *Evidence before takeover.* Being elected is not enough: the previous holder must be
//!    fenced and confirmed off, or be past its self-fence deadline, or have released the group,
//!    or be up and announcing that it holds nothing. Only [`evidence`](Self::takeover_evidence)
//!    builds the [`Evidence`] value that becoming holder takes.
//! 3. *Self-fencing.* A holder counts as support only peers that see it and have not voted for
//!    a newer epoch; losing the majority, seeing a newer holder, or finding itself stalled makes
//!    it stop its resources at once and starve its watchdog.
//! 4. *Startup.* A booting node neither votes nor stands until it has seen every peer or fenced
//!    the missing ones (with quorum, or in a two-node cluster).
//! 5. *Epochs.* Every epoch this node announces (as holder, candidate or voter) was persisted
//!    first: announcements wait for [`Input::Persisted`].

mod types;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::{Flags, Heartbeat, NodeId, Role, View};

use crate::liveness::{Liveness, Transition};

pub use types::{
    Action, Command, Durable, EngineConfig, Event, Evidence, FenceOutcome, Input, Level, NodeSpec,
    ResourceOutcome,
};

/// One node's decision engine; see the module docs for the caller's duty.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    incarnation: u32,
    last_handle: Option<Instant>,
    durable: Durable,
    persisting: VecDeque<(Durable, After)>,
    phase: Phase,
    startup_done: bool,
    liveness: Liveness,
    peers: Vec<Peer>,
    claim: Option<Claim>,
    max_epoch: u64,
    fence_jobs: Vec<FenceJob>,
    res: Resources,
    standby_mode: bool,
    failed: bool,
    /// When a resource last failed here (start, or monitor), while that failure still counts.
    last_failure: Option<Instant>,
    quorate: bool,
    next_heartbeat: Instant,
    startup_deadline: Instant,
    actions: VecDeque<Action>,
    rng: u64,
}

/// What this node is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Starting,
    Standby { retry_at: Option<Instant> },
    Candidate(Candidacy),
    Holder { epoch: u64 },
    Releasing { epoch: u64, to: Option<NodeId> },
    SelfFenced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidacy {
    epoch: u64,
    since: Instant,
    announced: bool,
    elected_at: Option<Instant>,
    evidence_pending: bool,
}

/// What to do once a `Persist` is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    AnnounceVote,
    AnnounceCandidate,
    BecomeHolder(Evidence),
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    id: NodeId,
    last: Option<Heartbeat>,
    seen_since_boot: bool,
    /// Confirmed fenced since it was last seen alive.
    fenced: Option<FenceMark>,
    alive: bool,
    dead_since: Option<Instant>,
}

/// The newest holder claim this node knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    node: NodeId,
    epoch: u64,
    released: bool,
    successor: Option<NodeId>,
}

/// A confirmed fence: evidence about the node as it was then, and only until something shows
/// it up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FenceMark {
    level: usize,
    verified: bool,
    at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FenceJob {
    target: NodeId,
    level: usize,
    round: u32,
    state: FenceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FenceState {
    Waiting { until: Instant },
    InFlight { deadline: Instant },
    Verifying { deadline: Instant },
}

/// The resource group: resources `[0, started)` run; at most one action is in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resources {
    count: usize,
    started: usize,
    target: usize,
    in_flight: Option<(usize, bool)>,
    /// After a local restart brought `target` down, bring it back up to this.
    restart_to: usize,
    restarts: Vec<u32>,
}

impl Engine {
    /// A freshly booted engine. `durable` is what the node persisted before (default for a new
    /// node), `incarnation` this boot's number, `seed` the randomness (election backoff).
    pub fn new(
        cfg: EngineConfig,
        durable: Durable,
        incarnation: u32,
        seed: u64,
        now: Instant,
    ) -> Self {
        let me = cfg.me;
        let peers: Vec<Peer> = cfg
            .nodes
            .iter()
            .filter(|n| n.id != me)
            .map(|n| Peer {
                id: n.id,
                last: None,
                seen_since_boot: false,
                fenced: None,
                alive: false,
                dead_since: Some(now),
            })
            .collect();
        // The engine tracks liveness per peer, not per link: every frame counts on link 0.
        let liveness = Liveness::new(cfg.deadtime, peers.iter().map(|p| (p.id, vec![0u8])));
        let claim = durable.holder.map(|node| Claim {
            node,
            epoch: durable.epoch,
            released: false,
            successor: None,
        });
        let count = cfg.resources.len();
        let max_epoch = durable.epoch.max(durable.voted.map_or(0, |v| v.0));
        let startup_deadline = now + cfg.startup_timeout;
        Self {
            incarnation,
            last_handle: None,
            durable,
            persisting: VecDeque::new(),
            phase: Phase::Starting,
            startup_done: false,
            liveness,
            peers,
            claim,
            max_epoch,
            fence_jobs: Vec::new(),
            res: Resources {
                count,
                started: 0,
                target: 0,
                in_flight: None,
                restart_to: 0,
                restarts: vec![0; count],
            },
            standby_mode: false,
            failed: false,
            last_failure: None,
            quorate: false,
            next_heartbeat: now,
            startup_deadline,
            actions: VecDeque::new(),
            rng: seed | 1,
            cfg,
        }
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if let Some(last) = self.last_handle {
            let gap = now.saturating_duration_since(last);
            if gap > self.cfg.stall_timeout && self.holds_or_acquires() {
                self.self_fence(format!("engine stalled for {} ms", gap.as_millis()));
            }
        }
        self.last_handle = Some(now);
        match input {
            Input::Tick => {}
            Input::Heartbeat(hb) => self.on_heartbeat(now, hb),
            Input::Link { link, up } => self.log(if up {
                Event::LinkUp(link)
            } else {
                Event::LinkDown(link)
            }),
            Input::FenceResult {
                target,
                level,
                outcome,
            } => self.on_fence_result(now, target, level, outcome),
            Input::VerifyResult { target, level, off } => {
                self.on_verify_result(now, target, level, off)
            }
            Input::ResourceResult { index, outcome } => {
                self.on_resource_result(now, index, outcome)
            }
            Input::MonitorFailed { index } => self.on_monitor_failed(now, index),
            Input::Persisted(d) => self.on_persisted(now, d),
            Input::Command(c) => self.on_command(now, c),
        }
        self.step(now);
    }

    /// The holder this node knows of and its epoch, unless it released the group.
    pub fn known_holder(&self) -> Option<(NodeId, u64)> {
        self.claim
            .filter(|c| !c.released)
            .map(|c| (c.node, c.epoch))
    }

    /// The next action to execute, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the engine next needs `handle(now, Input::Tick)`.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase == Phase::SelfFenced {
            return None;
        }
        let mut d = Some(self.next_heartbeat);
        // Anything at or before the last call was handled by it; only what lies ahead counts,
        // so a condition that waits for an input never turns into a busy loop of ticks.
        let handled = self.last_handle;
        let mut min = |t: Option<Instant>| {
            if let Some(t) = t.filter(|&t| handled.is_none_or(|h| t > h)) {
                d = Some(d.map_or(t, |x: Instant| x.min(t)));
            }
        };
        min(self.liveness.next_deadline());
        min(self.failures_expire_at());
        if !self.startup_done {
            min(Some(self.startup_deadline));
        }
        for j in &self.fence_jobs {
            min(Some(match j.state {
                FenceState::Waiting { until } => until,
                FenceState::InFlight { deadline } | FenceState::Verifying { deadline } => deadline,
            }));
        }
        match &self.phase {
            Phase::Standby { retry_at } => min(*retry_at),
            Phase::Candidate(c) => match c.elected_at {
                None => min(Some(c.since + self.cfg.election_timeout)),
                Some(e) => {
                    for t in self.takeover_targets(c.epoch) {
                        if let Some(wd) = self.spec(t).and_then(|s| s.watchdog_timeout) {
                            min(Some(
                                e + self.cfg.deadtime
                                    + self.cfg.heartbeat_interval
                                    + wd
                                    + self.cfg.watchdog_margin,
                            ));
                        }
                    }
                }
            },
            _ => {}
        }
        // Two-node fence delays are counted from a peer's death.
        if self.two_node() {
            for p in &self.peers {
                min(p.dead_since.map(|ds| ds + self.cfg.fence_delay));
            }
        }
        d
    }

    /// Whether this node holds (or is starting or stopping) any resource.
    pub fn holds_resources(&self) -> bool {
        self.res.started > 0 || self.res.in_flight.is_some_and(|(_, start)| start)
    }

    /// The epoch this node holds at, if it is the holder.
    pub fn holder_epoch(&self) -> Option<u64> {
        match self.phase {
            Phase::Holder { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// The role this node announces.
    pub fn role(&self) -> Role {
        self.announced_role()
    }

    /// What this node has on disk.
    pub fn durable(&self) -> Durable {
        self.durable
    }

    /// Whether this node counts itself quorate.
    pub fn quorate(&self) -> bool {
        self.quorate
    }

    /// Whether this node has seen (since boot) or fenced `peer`.
    pub fn seen_or_fenced(&self, peer: NodeId) -> bool {
        self.peers
            .iter()
            .any(|p| p.id == peer && (p.seen_since_boot || p.fenced.is_some()))
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    // ---- inputs ----

    fn on_heartbeat(&mut self, now: Instant, hb: Heartbeat) {
        let Some(pi) = self.peers.iter().position(|p| p.id == hb.sender) else {
            return;
        };
        let mut frame = hb;
        frame.link = 0;
        self.liveness.frame(now, &frame);
        self.drain_liveness(now);
        let p = &mut self.peers[pi];
        // The same state arrives over several links, and UDP may reorder: only a frame newer
        // than the last one (by incarnation, then the sender's sequence) says anything new.
        if p.last
            .is_some_and(|l| (hb.incarnation, hb.sequence) <= (l.incarnation, l.sequence))
        {
            return;
        }
        p.last = Some(hb);
        p.seen_since_boot = true;
        self.max_epoch = self.max_epoch.max(hb.epoch).max(hb.seen_epoch);
        // A fenced node that another peer sees alive, once that peer's view can no longer be
        // lagging behind the fence, is up again: the old fence says nothing about it now.
        let grace = self.cfg.deadtime + self.cfg.heartbeat_interval;
        for q in self.peers.iter_mut() {
            if q.id != hb.sender
                && hb.view.contains(q.id)
                && q.fenced.is_some_and(|m| now > m.at + grace)
            {
                q.fenced = None;
            }
        }
        match hb.role {
            Role::Holder => self.learn_claim(Claim {
                node: hb.sender,
                epoch: hb.epoch,
                released: false,
                successor: None,
            }),
            Role::Releasing | Role::Candidate => {}
            _ if hb.flags.has(Flags::RELEASED) => {
                if let Some(c) = self.claim {
                    if c.node == hb.sender && hb.epoch >= c.epoch {
                        self.claim = Some(Claim {
                            node: c.node,
                            epoch: hb.epoch,
                            released: true,
                            successor: hb.holder,
                        });
                    }
                }
            }
            _ if !hb.flags.has(Flags::VOTE) => {
                if let Some(holder) = hb.holder {
                    self.learn_claim(Claim {
                        node: holder,
                        epoch: hb.epoch,
                        released: false,
                        successor: None,
                    });
                }
            }
            _ => {}
        }
        // Another node holding while we hold or acquire: the newer epoch wins.
        if hb.role == Role::Holder {
            let mine = match &self.phase {
                Phase::Holder { epoch } => Some(*epoch),
                Phase::Releasing { epoch, .. } => Some(*epoch),
                _ => None,
            };
            if let Some(mine) = mine {
                if hb.epoch > mine || (hb.epoch == mine && hb.sender < self.cfg.me) {
                    self.self_fence(format!(
                        "node {} holds at epoch {} (ours {mine})",
                        hb.sender, hb.epoch
                    ));
                } else {
                    self.log(Event::StaleHolder {
                        node: hb.sender,
                        epoch: hb.epoch,
                    });
                    self.alert(Event::StaleHolder {
                        node: hb.sender,
                        epoch: hb.epoch,
                    });
                    self.start_fence(now, hb.sender, Duration::ZERO);
                }
            }
        }
    }

    fn learn_claim(&mut self, c: Claim) {
        if self.claim.is_none_or(|old| c.epoch > old.epoch) {
            self.claim = Some(c);
        }
    }

    fn drain_liveness(&mut self, now: Instant) {
        while let Some(t) = self.liveness.poll_transition() {
            match t {
                Transition::PeerUp { peer } => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.id == peer) {
                        p.alive = true;
                        p.dead_since = None;
                        p.seen_since_boot = true;
                        if p.fenced.take().is_some() {
                            self.actions.push_back(Action::Unfence { target: peer });
                        }
                    }
                    // A node that is back needs no more fencing rounds (one in flight finishes).
                    self.fence_jobs.retain(|j| {
                        j.target != peer || !matches!(j.state, FenceState::Waiting { .. })
                    });
                    self.log(Event::PeerUp(peer));
                }
                Transition::PeerDown { peer, .. } => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.id == peer) {
                        p.alive = false;
                        p.dead_since = Some(now);
                    }
                    self.log(Event::PeerDown(peer));
                }
                Transition::LinkUp { .. }
                | Transition::LinkDown { .. }
                | Transition::PeerRestarted { .. } => {}
            }
        }
    }

    fn on_fence_result(
        &mut self,
        now: Instant,
        target: NodeId,
        level: usize,
        outcome: FenceOutcome,
    ) {
        let Some(ji) = self.fence_job(target, level) else {
            return;
        };
        if !matches!(self.fence_jobs[ji].state, FenceState::InFlight { .. }) {
            return;
        }
        match outcome {
            FenceOutcome::Off => {
                let verify = self
                    .spec(target)
                    .and_then(|s| s.fencing.get(level))
                    .is_some_and(|l| !l.confirm_with.is_empty());
                if verify {
                    self.fence_jobs[ji].state = FenceState::Verifying {
                        deadline: now + self.cfg.fence_level_timeout,
                    };
                    self.actions.push_back(Action::VerifyOff { target, level });
                } else {
                    self.fence_confirmed(ji, false);
                }
            }
            FenceOutcome::Failed(reason) => self.fence_level_failed(now, ji, reason),
            FenceOutcome::TimedOut => self.fence_level_failed(now, ji, "timed out".into()),
        }
    }

    fn on_verify_result(&mut self, now: Instant, target: NodeId, level: usize, off: bool) {
        let Some(ji) = self.fence_job(target, level) else {
            return;
        };
        if !matches!(self.fence_jobs[ji].state, FenceState::Verifying { .. }) {
            return;
        }
        if off {
            self.fence_confirmed(ji, true);
        } else {
            self.fence_level_failed(
                now,
                ji,
                "independent confirmation reads the target on".into(),
            );
        }
    }

    fn fence_job(&self, target: NodeId, level: usize) -> Option<usize> {
        self.fence_jobs
            .iter()
            .position(|j| j.target == target && j.level == level)
    }

    fn fence_confirmed(&mut self, ji: usize, verified: bool) {
        let job = self.fence_jobs.remove(ji);
        let at = self.last_handle.unwrap_or_else(Instant::now);
        if let Some(p) = self.peers.iter_mut().find(|p| p.id == job.target) {
            p.fenced = Some(FenceMark {
                level: job.level,
                verified,
                at,
            });
            p.alive = false;
        }
        self.log(Event::FenceConfirmed {
            target: job.target,
            level: job.level,
        });
    }

    fn fence_level_failed(&mut self, now: Instant, ji: usize, reason: String) {
        let (target, level) = (self.fence_jobs[ji].target, self.fence_jobs[ji].level);
        self.log(Event::FenceFailed {
            target,
            level,
            reason,
        });
        let levels = self.spec(target).map_or(0, |s| s.fencing.len());
        if level + 1 < levels {
            self.fence_jobs[ji].level = level + 1;
            self.fence_jobs[ji].state = FenceState::Waiting { until: now };
        } else {
            self.alert(Event::AllFencingFailed { target });
            let round = self.fence_jobs[ji].round + 1;
            let backoff = self.backoff(self.cfg.fence_retry, self.cfg.fence_retry_max, round);
            self.fence_jobs[ji].round = round;
            self.fence_jobs[ji].level = 0;
            self.fence_jobs[ji].state = FenceState::Waiting {
                until: now + backoff,
            };
        }
    }

    fn on_resource_result(&mut self, now: Instant, index: usize, outcome: ResourceOutcome) {
        if self.phase == Phase::SelfFenced {
            if outcome == ResourceOutcome::Stopped && index + 1 == self.res.started {
                self.res.started = index;
            }
            return;
        }
        if self.res.in_flight.map(|(i, _)| i) != Some(index) {
            return;
        }
        self.res.in_flight = None;
        match outcome {
            ResourceOutcome::Started => self.res.started = index + 1,
            ResourceOutcome::Stopped => self.res.started = index,
            ResourceOutcome::StartFailed => {
                // A resource that failed to start may have half-started: it is stopped along
                // with the rest, and this node stops being a candidate for the group.
                self.res.started = index + 1;
                self.failed = true;
                self.last_failure = Some(now);
                self.alert(Event::ResourceFailed { index });
                if let Phase::Holder { epoch } = self.phase {
                    self.phase = Phase::Releasing { epoch, to: None };
                }
                self.res.target = 0;
            }
            ResourceOutcome::StopFailed => {
                self.self_fence(format!("resource {} did not stop", self.res_name(index)));
            }
        }
    }

    fn on_monitor_failed(&mut self, now: Instant, index: usize) {
        let Phase::Holder { epoch } = self.phase else {
            return;
        };
        if index >= self.res.started {
            return;
        }
        self.last_failure = Some(now);
        if self.res.restarts[index] < self.cfg.restart_limit {
            self.res.restarts[index] += 1;
            // Restart the failed resource and everything started after it.
            self.res.target = index;
            self.res.restart_to = self.res.count;
        } else {
            self.failed = true;
            self.alert(Event::ResourceFailed { index });
            self.phase = Phase::Releasing { epoch, to: None };
            self.res.target = 0;
        }
    }

    fn on_persisted(&mut self, now: Instant, d: Durable) {
        let Some((want, after)) = self.persisting.front().cloned() else {
            return;
        };
        if want != d {
            return;
        }
        self.persisting.pop_front();
        self.durable = d;
        match after {
            After::AnnounceVote | After::AnnounceCandidate => {
                if let Phase::Candidate(c) = &mut self.phase {
                    if Some((c.epoch, self.cfg.me)) == d.voted {
                        c.announced = true;
                    }
                }
                self.announce_frame();
            }
            After::BecomeHolder(ev) => {
                if let Phase::Candidate(c) = &self.phase {
                    // A newer epoch seen while persisting means another election may win it.
                    if c.epoch == d.epoch && self.max_epoch <= c.epoch && self.eligible_self() {
                        let epoch = c.epoch;
                        self.log(Event::TakeoverAllowed(ev));
                        self.phase = Phase::Holder { epoch };
                        self.claim = Some(Claim {
                            node: self.cfg.me,
                            epoch,
                            released: false,
                            successor: None,
                        });
                        self.res.target = self.res.count;
                        self.res.restarts.iter_mut().for_each(|r| *r = 0);
                        self.log(Event::Holding { epoch });
                        self.announce_frame();
                    }
                }
            }
            After::Released => {
                if let Phase::Releasing { epoch, to } = self.phase {
                    self.claim = Some(Claim {
                        node: self.cfg.me,
                        epoch,
                        released: true,
                        successor: to,
                    });
                    self.log(Event::Released { epoch });
                    self.phase = Phase::Standby {
                        retry_at: Some(now + self.cfg.election_timeout),
                    };
                    self.announce_frame();
                }
            }
        }
    }

    fn on_command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Standby => {
                self.standby_mode = true;
                self.release(None);
            }
            Command::Unstandby => self.standby_mode = false,
            Command::Switchover(to) => {
                if to != self.cfg.me {
                    self.release(Some(to));
                }
            }
            Command::Fence(target) => {
                if target != self.cfg.me {
                    self.start_fence(now, target, Duration::ZERO);
                }
            }
            Command::Clear => self.forget_failures(),
        }
        self.announce_frame();
    }

    /// Forgets resource failures: `cleanup`, or the failure timeout.
    fn forget_failures(&mut self) {
        self.failed = false;
        self.last_failure = None;
        self.res.restarts.iter_mut().for_each(|r| *r = 0);
    }

    /// When the last failure stops counting, if one counts and failures expire.
    fn failures_expire_at(&self) -> Option<Instant> {
        Some(self.last_failure? + self.cfg.failure_timeout?)
    }

    fn release(&mut self, to: Option<NodeId>) {
        match self.phase.clone() {
            Phase::Holder { epoch } => {
                self.phase = Phase::Releasing { epoch, to };
                self.res.target = 0;
            }
            Phase::Candidate(_) => self.phase = Phase::Standby { retry_at: None },
            _ => {}
        }
    }

    // ---- the step after every input ----

    fn step(&mut self, now: Instant) {
        self.liveness.tick(now);
        self.drain_liveness(now);
        if self.phase == Phase::SelfFenced {
            return;
        }
        if self.failures_expire_at().is_some_and(|t| now >= t) {
            self.forget_failures();
            self.log(Event::FailuresExpired);
        }
        self.update_quorum();
        self.run_fence_jobs(now);
        self.phase_step(now);
        if self.phase == Phase::SelfFenced {
            // Never feed again; the host is going down.
            return;
        }
        self.reconcile_resources();
        if now >= self.next_heartbeat {
            self.actions.push_back(Action::FeedWatchdog);
            self.announce_frame();
            self.next_heartbeat = now + self.cfg.heartbeat_interval;
        }
    }

    fn phase_step(&mut self, now: Instant) {
        match self.phase.clone() {
            Phase::Starting => self.startup_step(now),
            Phase::Standby { retry_at } => {
                self.vote_step();
                if retry_at.is_none_or(|t| now >= t) && self.should_stand(now) {
                    self.stand(now);
                }
            }
            Phase::Candidate(c) => self.candidate_step(now, c),
            Phase::Holder { epoch } => self.holder_step(now, epoch),
            Phase::Releasing { epoch, .. } => {
                if self.res.started == 0
                    && self.res.in_flight.is_none()
                    && self.persisting.is_empty()
                {
                    let d = Durable {
                        epoch,
                        holder: None,
                        ..self.durable
                    };
                    self.persist(d, After::Released);
                }
            }
            Phase::SelfFenced => {}
        }
    }

    fn startup_step(&mut self, now: Instant) {
        let missing: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|p| !p.seen_since_boot && p.fenced.is_none())
            .filter(|p| !self.is_witness(p.id))
            .map(|p| p.id)
            .collect();
        if missing.is_empty() || (self.me_witness() && now >= self.startup_deadline) {
            self.startup_done = true;
            self.log(Event::StartupComplete);
            self.phase = Phase::Standby { retry_at: None };
            return;
        }
        if now >= self.startup_deadline && !self.me_witness() && (self.two_node() || self.quorate) {
            for id in missing {
                if !self.fence_jobs.iter().any(|j| j.target == id) {
                    self.start_fence(now, id, Duration::ZERO);
                }
            }
        }
    }

    /// Whether this node should ask for votes now.
    fn should_stand(&self, now: Instant) -> bool {
        if !self.eligible_self() || !self.persisting.is_empty() {
            return false;
        }
        if !self.takeover_needed() {
            return false;
        }
        // A vote given to a candidate that is still running is not withdrawn by standing.
        if let Some((e, c)) = self.durable.voted {
            if c != self.cfg.me
                && self.peer(c).is_some_and(|p| {
                    p.alive
                        && p.last
                            .is_some_and(|l| l.role == Role::Candidate && l.epoch == e)
                })
            {
                return false;
            }
        }
        if self.successor() != Some(self.cfg.me) {
            return false;
        }
        if self.two_node() {
            // Fence-race delay: the node that does not hold waits before fencing its peer.
            if let Some(p) = self.peers.first() {
                if !p.alive && p.fenced.is_none() {
                    let delay = self.my_fence_delay();
                    return p.dead_since.is_some_and(|d| now >= d + delay);
                }
            }
            true
        } else {
            self.quorate
        }
    }

    fn stand(&mut self, now: Instant) {
        let epoch = self
            .max_epoch
            .max(self.durable.epoch)
            .max(self.durable.voted.map_or(0, |v| v.0))
            + 1;
        self.max_epoch = epoch;
        self.phase = Phase::Candidate(Candidacy {
            epoch,
            since: now,
            announced: false,
            elected_at: None,
            evidence_pending: false,
        });
        self.log(Event::Candidate { epoch });
        let d = self.durable.voting(epoch, self.cfg.me);
        self.persist(d, After::AnnounceCandidate);
        // Two nodes: the dead peer is fenced before the election can count it.
        if self.two_node() {
            if let Some(p) = self.peers.first() {
                if !p.alive && p.fenced.is_none() {
                    let id = p.id;
                    self.start_fence(now, id, Duration::ZERO);
                }
            }
        }
    }

    fn candidate_step(&mut self, now: Instant, mut c: Candidacy) {
        // Someone newer, or the holder is back: stand down.
        let newer = self.max_epoch > c.epoch
            || self.peers.iter().any(|p| {
                p.alive
                    && p.last.is_some_and(|l| {
                        l.role == Role::Candidate && l.epoch == c.epoch && p.id < self.cfg.me
                    })
            });
        let holder_back = self.claim.is_some_and(|cl| {
            !cl.released
                && cl.node != self.cfg.me
                && self.alive(cl.node)
                && self.peer_role(cl.node) == Some(Role::Holder)
        });
        if newer
            || holder_back
            || !self.eligible_self()
            || (!self.two_node() && !self.quorate && c.elected_at.is_none())
        {
            self.phase = Phase::Standby {
                retry_at: Some(now + self.retry_backoff()),
            };
            return;
        }
        if c.elected_at.is_none() {
            if self.votes_for(c.epoch) * 2 > self.total_votes() && c.announced {
                c.elected_at = Some(now);
                self.log(Event::Elected { epoch: c.epoch });
            } else if now >= c.since + self.cfg.election_timeout {
                self.log(Event::ElectionFailed { epoch: c.epoch });
                self.phase = Phase::Standby {
                    retry_at: Some(now + self.retry_backoff()),
                };
                return;
            }
        }
        if c.elected_at.is_some() && !c.evidence_pending {
            // Every holder the electorate knows of and that is not seen up must be fenced.
            for t in self.takeover_targets(c.epoch) {
                if self.peer(t).is_some_and(|p| !p.alive && p.fenced.is_none()) {
                    self.start_fence(now, t, Duration::ZERO);
                }
            }
            if let Some(ev) = self.takeover_evidence(now, &c) {
                c.evidence_pending = true;
                let d = Durable {
                    epoch: c.epoch,
                    holder: Some(self.cfg.me),
                    ..self.durable
                };
                self.phase = Phase::Candidate(c);
                self.persist(d, After::BecomeHolder(ev));
                return;
            }
        }
        self.phase = Phase::Candidate(c);
    }

    /// Every node that may still hold the group as far as this candidate's electorate knows:
    /// its own claim and the holders its voters reported, unless released.
    fn takeover_targets(&self, epoch: u64) -> Vec<NodeId> {
        let me = self.cfg.me;
        let mut out = Vec::new();
        let mut add = |n: Option<NodeId>| {
            if let Some(n) = n.filter(|&n| n != me && !out.contains(&n)) {
                out.push(n);
            }
        };
        add(self.claim.filter(|c| !c.released).map(|c| c.node));
        add(self.durable.prior.map(|v| v.1));
        for p in self.peers.iter().filter(|p| p.alive) {
            let Some(l) = p.last else { continue };
            if l.flags.has(Flags::VOTE) && l.holder == Some(me) && l.epoch == epoch {
                if !l.flags.has(Flags::RELEASED) {
                    add(l.flags.known_holder());
                }
                add(l.prior);
            }
        }
        out
    }

    /// Builds the evidence of rule 2, or says there is none yet. This is the only place that
    /// constructs an [`Evidence`]: every possible previous holder must be fenced, past its
    /// self-fence deadline, or up and holding nothing.
    fn takeover_evidence(&self, now: Instant, c: &Candidacy) -> Option<Evidence> {
        if self.holds_resources() {
            return None;
        }
        let targets = self.takeover_targets(c.epoch);
        let mut first = None;
        for t in targets {
            let p = self.peer(t)?;
            let ev = if let Some(m) = p.fenced {
                Evidence::FenceConfirmed {
                    target: t,
                    level: m.level,
                    verified: m.verified,
                }
            } else if p.alive {
                // A candidate may still win its election: only a node that announces it is
                // not contending counts as not holding.
                // It must also have seen our epoch, after which it can no longer win an older
                // election.
                match p.last {
                    Some(l)
                        if matches!(l.role, Role::Standby | Role::Starting | Role::Witness)
                            && l.seen_epoch >= c.epoch =>
                    {
                        match self.claim {
                            Some(cl) if cl.released && cl.node == t => Evidence::HandoverAcked {
                                from: t,
                                epoch: cl.epoch,
                            },
                            _ => Evidence::NotHolding { node: t },
                        }
                    }
                    _ => return None,
                }
            } else {
                // Quorum is meaningless with two nodes: there only a fence counts.
                let wd = self
                    .spec(t)
                    .and_then(|s| s.watchdog_timeout)
                    .filter(|_| !self.two_node())?;
                let elected = c.elected_at?;
                let deadline = elected
                    + self.cfg.deadtime
                    + self.cfg.heartbeat_interval
                    + wd
                    + self.cfg.watchdog_margin;
                if now < deadline {
                    return None;
                }
                Evidence::SelfFenceElapsed { target: t }
            };
            first.get_or_insert(ev);
        }
        Some(first.unwrap_or(match self.claim {
            Some(cl) if cl.released => Evidence::HandoverAcked {
                from: cl.node,
                epoch: cl.epoch,
            },
            Some(cl) if cl.node == self.cfg.me => Evidence::NotHolding { node: cl.node },
            _ => Evidence::NoPriorHolder,
        }))
    }

    fn holder_step(&mut self, now: Instant, epoch: u64) {
        if !self.two_node() && !self.quorate {
            self.self_fence(format!("lost quorum while holding epoch {epoch}"));
            return;
        }
        if self.two_node() {
            // Win the fence race: a holder fences a dead peer at once.
            if let Some(p) = self.peers.first() {
                if !p.alive
                    && p.fenced.is_none()
                    && p.seen_since_boot
                    && !self.fence_jobs.iter().any(|j| j.target == p.id)
                {
                    let id = p.id;
                    self.start_fence(now, id, Duration::ZERO);
                }
            }
        }
    }

    fn vote_step(&mut self) {
        if !self.startup_done || !self.persisting.is_empty() {
            return;
        }
        let voted = self.durable.voted.map_or(0, |v| v.0);
        let held = self.claim.map_or(0, |c| c.epoch).max(self.durable.epoch);
        let cand = self
            .peers
            .iter()
            .filter(|p| p.alive)
            .filter_map(|p| {
                p.last
                    .filter(|l| l.role == Role::Candidate)
                    .map(|l| (p.id, l.epoch))
            })
            .filter(|&(_, e)| e > voted && e > held)
            .min_by_key(|&(id, e)| (std::cmp::Reverse(e), id));
        let Some((cand, epoch)) = cand else { return };
        if !self.holder_gone_for(cand) {
            return;
        }
        self.log(Event::Voted {
            candidate: cand,
            epoch,
        });
        let d = self.durable.voting(epoch, cand);
        self.persist(d, After::AnnounceVote);
    }

    /// Whether, as far as this node sees, nobody but `cand` holds the group.
    fn holder_gone_for(&self, cand: NodeId) -> bool {
        let Some(c) = self.claim else { return true };
        if c.released || c.node == cand {
            return true;
        }
        if c.node == self.cfg.me {
            return !self.holds_resources();
        }
        !(self.alive(c.node)
            && matches!(self.peer_role(c.node), Some(Role::Holder | Role::Releasing)))
    }

    fn run_fence_jobs(&mut self, now: Instant) {
        for i in 0..self.fence_jobs.len() {
            let j = self.fence_jobs[i].clone();
            match j.state {
                FenceState::Waiting { until } if now >= until => {
                    let levels = self.spec(j.target).map_or(0, |s| s.fencing.len());
                    if levels == 0 {
                        self.fence_jobs[i].state = FenceState::Waiting {
                            until: now + self.cfg.fence_retry_max,
                        };
                        self.alert(Event::AllFencingFailed { target: j.target });
                        continue;
                    }
                    self.fence_jobs[i].state = FenceState::InFlight {
                        deadline: now + self.cfg.fence_level_timeout,
                    };
                    self.actions.push_back(Action::Fence {
                        target: j.target,
                        level: j.level,
                    });
                    self.log(Event::FenceStarted {
                        target: j.target,
                        level: j.level,
                    });
                }
                FenceState::InFlight { deadline } | FenceState::Verifying { deadline }
                    if now >= deadline =>
                {
                    self.fence_level_failed(now, i, "no result within the level timeout".into());
                }
                _ => {}
            }
        }
    }

    fn reconcile_resources(&mut self) {
        if self.res.in_flight.is_some() || self.phase == Phase::SelfFenced {
            return;
        }
        let r = &mut self.res;
        if r.started > r.target {
            let i = r.started - 1;
            r.in_flight = Some((i, false));
            self.actions.push_back(Action::StopResource { index: i });
        } else if r.started < r.target {
            if !matches!(self.phase, Phase::Holder { .. }) {
                r.target = r.started;
                return;
            }
            let i = r.started;
            r.in_flight = Some((i, true));
            self.actions.push_back(Action::StartResource { index: i });
        } else if r.restart_to > r.target {
            r.target = r.restart_to;
            r.restart_to = 0;
            self.reconcile_resources();
        }
    }

    // ---- helpers ----

    fn self_fence(&mut self, reason: String) {
        if self.phase == Phase::SelfFenced {
            return;
        }
        self.phase = Phase::SelfFenced;
        self.log(Event::SelfFence {
            reason: reason.clone(),
        });
        self.alert(Event::SelfFence {
            reason: reason.clone(),
        });
        // Stop everything at once, in reverse, without waiting: the host is going down.
        for i in (0..self
            .res
            .started
            .max(self.res.in_flight.map_or(0, |(i, _)| i + 1)))
            .rev()
        {
            self.actions.push_back(Action::StopResource { index: i });
        }
        self.res.target = 0;
        self.actions.push_back(Action::StarveWatchdog { reason });
        self.announce_frame();
    }

    fn persist(&mut self, d: Durable, after: After) {
        self.persisting.push_back((d, after));
        self.actions.push_back(Action::Persist(d));
    }

    fn start_fence(&mut self, now: Instant, target: NodeId, delay: Duration) {
        if self.me_witness() || self.fence_jobs.iter().any(|j| j.target == target) {
            return;
        }
        self.fence_jobs.push(FenceJob {
            target,
            level: 0,
            round: 0,
            state: FenceState::Waiting { until: now + delay },
        });
        self.run_fence_jobs(now);
    }

    fn update_quorum(&mut self) {
        let q = if self.two_node() {
            true
        } else {
            let mut votes = 1u32;
            let holding = self.holder_epoch().or(match self.phase {
                Phase::Releasing { epoch, .. } => Some(epoch),
                _ => None,
            });
            for p in &self.peers {
                if p.alive && self.supports(p, holding) {
                    votes += 1;
                }
            }
            votes * 2 > self.total_votes()
        };
        if q != self.quorate {
            self.quorate = q;
            self.log(if q {
                Event::QuorumGained
            } else {
                Event::QuorumLost
            });
        }
    }

    /// Whether peer `p` counts toward this node's quorum: it sees us, and, while we hold at
    /// `holding`, it has not moved on to a newer epoch.
    fn supports(&self, p: &Peer, holding: Option<u64>) -> bool {
        let Some(l) = p.last else { return false };
        if !l.view.contains(self.cfg.me) {
            return false;
        }
        match holding {
            Some(e) => l.epoch <= e,
            None => true,
        }
    }

    fn votes_for(&self, epoch: u64) -> u32 {
        let me = self.cfg.me;
        let mut v = u32::from(self.durable.voted == Some((epoch, me)));
        for p in &self.peers {
            let voted = p.alive
                && p.last.is_some_and(|l| {
                    l.flags.has(Flags::VOTE) && l.holder == Some(me) && l.epoch == epoch
                });
            let fenced_stands_in = self.two_node() && !p.alive && p.fenced.is_some();
            if voted || fenced_stands_in {
                v += 1;
            }
        }
        v
    }

    fn total_votes(&self) -> u32 {
        u32::try_from(self.cfg.nodes.len()).unwrap_or(u32::MAX)
    }

    fn two_node(&self) -> bool {
        self.cfg.nodes.len() == 2
    }

    fn takeover_needed(&self) -> bool {
        match self.claim {
            None => true,
            Some(c) if c.released => true,
            Some(c) if c.node == self.cfg.me => true,
            Some(c) => {
                !(self.alive(c.node)
                    && matches!(self.peer_role(c.node), Some(Role::Holder | Role::Releasing)))
            }
        }
    }

    /// The node that should take over: the released holder's choice if it is eligible,
    /// otherwise the lowest eligible id among the nodes alive in this node's view.
    fn successor(&self) -> Option<NodeId> {
        if let Some(Claim {
            released: true,
            successor: Some(s),
            ..
        }) = self.claim
        {
            if s == self.cfg.me && self.eligible_self() {
                return Some(s);
            }
            if self
                .peer(s)
                .is_some_and(|p| p.alive && self.peer_eligible(p))
            {
                return Some(s);
            }
        }
        let mut best = self.eligible_self().then_some(self.cfg.me);
        for p in &self.peers {
            if p.alive && self.peer_eligible(p) && best.is_none_or(|b| p.id < b) {
                best = Some(p.id);
            }
        }
        best
    }

    fn eligible_self(&self) -> bool {
        self.startup_done && !self.me_witness() && !self.standby_mode && !self.failed
    }

    fn peer_eligible(&self, p: &Peer) -> bool {
        !self.is_witness(p.id)
            && p.last.is_some_and(|l| {
                !l.flags.has(Flags::STANDBY_MODE)
                    && matches!(l.role, Role::Standby | Role::Candidate)
            })
    }

    fn holds_or_acquires(&self) -> bool {
        matches!(
            self.phase,
            Phase::Holder { .. } | Phase::Releasing { .. } | Phase::Candidate(_)
        ) || self.holds_resources()
    }

    fn my_fence_delay(&self) -> Duration {
        // The holder fences at once; with no holder, the lower id does.
        let holder = self.claim.filter(|c| !c.released).map(|c| c.node);
        let i_hold = holder == Some(self.cfg.me) && self.holds_resources();
        let peer_holds = holder.is_some_and(|h| h != self.cfg.me);
        let lower = self.peers.first().is_some_and(|p| self.cfg.me < p.id);
        if i_hold || (!peer_holds && lower) {
            Duration::ZERO
        } else {
            self.cfg.fence_delay
        }
    }

    fn announce_frame(&mut self) {
        let hb = self.heartbeat();
        // Replace an unsent heartbeat rather than queue two.
        if let Some(Action::SendHeartbeat(old)) = self
            .actions
            .iter_mut()
            .rev()
            .find(|a| matches!(a, Action::SendHeartbeat(_)))
        {
            *old = hb;
            return;
        }
        self.actions.push_back(Action::SendHeartbeat(hb));
    }

    /// The heartbeat this node announces now.
    pub fn heartbeat(&self) -> Heartbeat {
        let mut view = View::default();
        view.insert(self.cfg.me);
        for p in self.peers.iter().filter(|p| p.alive) {
            view.insert(p.id);
        }
        let mut flags = 0u16;
        if self.quorate {
            flags |= Flags::QUORATE;
        }
        if self.standby_mode || self.failed {
            flags |= Flags::STANDBY_MODE;
        }
        let role = self.announced_role();
        let mut prior = None;
        let (holder, epoch) = match &self.phase {
            Phase::Holder { epoch } | Phase::Releasing { epoch, .. } => (Some(self.cfg.me), *epoch),
            Phase::Candidate(c) if c.announced => (Some(self.cfg.me), c.epoch),
            _ => {
                // A live vote is announced until its candidate holds or gives up.
                let vote = self.durable.voted.filter(|&(e, cand)| {
                    cand != self.cfg.me
                        && self.peer(cand).is_some_and(|p| {
                            p.alive
                                && p.last
                                    .is_some_and(|l| l.role == Role::Candidate && l.epoch == e)
                        })
                });
                if let Some((e, cand)) = vote {
                    flags |= Flags::VOTE;
                    prior = self.durable.prior.map(|v| v.1).filter(|&p| p != cand);
                    let known = self.claim.map(|c| c.node).filter(|&n| n != cand);
                    flags = Flags(flags).with_known_holder(known).0;
                    if self.claim.is_some_and(|c| c.released) {
                        flags |= Flags::RELEASED;
                    }
                    (Some(cand), e)
                } else {
                    match self.claim {
                        Some(c) if c.released => {
                            flags |= Flags::RELEASED;
                            (c.successor, c.epoch)
                        }
                        Some(c) => (Some(c.node), c.epoch),
                        None => (None, self.max_epoch),
                    }
                }
            }
        };
        Heartbeat {
            cluster_id: 0,
            sender: self.cfg.me,
            link: 0,
            role,
            flags: Flags(flags),
            holder,
            prior,
            incarnation: self.incarnation,
            sequence: 0,
            epoch,
            view,
            seen_epoch: self.max_epoch,
        }
    }

    fn announced_role(&self) -> Role {
        match &self.phase {
            Phase::Starting => Role::Starting,
            Phase::Standby { .. } if self.me_witness() => Role::Witness,
            Phase::Standby { .. } => Role::Standby,
            Phase::Candidate(c) if c.announced => Role::Candidate,
            Phase::Candidate(_) => Role::Standby,
            Phase::Holder { .. } => Role::Holder,
            Phase::Releasing { .. } => Role::Releasing,
            Phase::SelfFenced => Role::SelfFencing,
        }
    }

    fn log(&mut self, e: Event) {
        self.actions.push_back(Action::Log(e));
    }

    fn alert(&mut self, e: Event) {
        self.actions.push_back(Action::Alert(e));
    }

    fn spec(&self, id: NodeId) -> Option<&NodeSpec> {
        self.cfg.nodes.iter().find(|n| n.id == id)
    }

    fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    fn peer_role(&self, id: NodeId) -> Option<Role> {
        self.peer(id).and_then(|p| p.last.map(|l| l.role))
    }

    fn alive(&self, id: NodeId) -> bool {
        self.peer(id).is_some_and(|p| p.alive)
    }

    fn is_witness(&self, id: NodeId) -> bool {
        self.spec(id).is_some_and(|s| s.witness)
    }

    fn me_witness(&self) -> bool {
        self.is_witness(self.cfg.me)
    }

    fn res_name(&self, i: usize) -> String {
        self.cfg
            .resources
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    }

    fn backoff(&mut self, base: Duration, max: Duration, round: u32) -> Duration {
        let exp = base.saturating_mul(1u32 << round.min(16)).min(max);
        // Up to a quarter of jitter, so that retries of several nodes do not stay in step.
        let jitter = exp / 4;
        let r = self.random();
        let span = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX).max(1);
        exp - jitter + Duration::from_nanos(r % span)
    }

    fn retry_backoff(&mut self) -> Duration {
        let base = self.cfg.election_timeout;
        let r = self.random() % 1000;
        base / 2 + base * u32::try_from(r).unwrap_or(0) / 1000
    }

    fn random(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }
}

/// xorshift64*: a small, seeded, reproducible generator, shared by the engine and the
/// simulator so that a seed replays exactly. `state` must not be zero.
pub fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::new(n).expect("test ids are valid")
    }

    fn cfg(me: u8, nodes: u8) -> EngineConfig {
        let ms = Duration::from_millis;
        EngineConfig {
            me: id(me),
            nodes: (1..=nodes)
                .map(|n| NodeSpec {
                    id: id(n),
                    name: format!("n{n}"),
                    witness: false,
                    watchdog_timeout: Some(ms(2000)),
                    fencing: vec![Level {
                        devices: vec!["bmc".into()],
                        confirm_with: vec![],
                    }],
                })
                .collect(),
            heartbeat_interval: ms(100),
            deadtime: ms(500),
            startup_timeout: ms(1000),
            fence_delay: ms(1000),
            fence_level_timeout: ms(1000),
            fence_retry: ms(500),
            fence_retry_max: ms(4000),
            watchdog_margin: ms(300),
            stall_timeout: ms(400),
            election_timeout: ms(1000),
            resources: vec!["mount".into(), "catalog".into(), "director".into()],
            restart_limit: 1,
            failure_timeout: None,
        }
    }

    fn frame(sender: u8, seq: u64, role: Role, epoch: u64, view: &[u8]) -> Heartbeat {
        let mut v = View::default();
        for &n in view {
            v.insert(id(n));
        }
        Heartbeat {
            cluster_id: 0,
            sender: id(sender),
            link: 0,
            role,
            flags: Flags::default(),
            holder: (role == Role::Holder).then(|| id(sender)),
            prior: None,
            incarnation: 1,
            sequence: seq,
            epoch,
            view: v,
            seen_epoch: epoch,
        }
    }

    fn drain(e: &mut Engine) -> Vec<Action> {
        std::iter::from_fn(|| e.poll_action()).collect()
    }

    /// Drives node 1 of a three-node cluster to holding epoch 1 with peers 2 and 3 voting.
    fn holder_of_three(t0: Instant) -> (Engine, Instant, u64) {
        let mut e = Engine::new(cfg(1, 3), Durable::default(), 1, 7, t0);
        let mut now = t0;
        let mut seq = 0;
        let mut actions = Vec::new();
        for _ in 0..40 {
            now += Duration::from_millis(50);
            seq += 1;
            let role_of_peer = Role::Standby;
            for p in [2, 3] {
                let mut f = frame(p, seq, role_of_peer, 0, &[1, 2, 3]);
                if e.role() == Role::Candidate {
                    f.flags = Flags(Flags::VOTE);
                    f.holder = Some(id(1));
                    f.epoch = 1;
                }
                e.handle(now, Input::Heartbeat(f));
            }
            actions.extend(drain(&mut e));
            for a in std::mem::take(&mut actions) {
                match a {
                    Action::Persist(d) => e.handle(now, Input::Persisted(d)),
                    Action::StartResource { index } => e.handle(
                        now,
                        Input::ResourceResult {
                            index,
                            outcome: ResourceOutcome::Started,
                        },
                    ),
                    _ => {}
                }
                actions.extend(drain(&mut e));
            }
        }
        assert_eq!(e.holder_epoch(), Some(1), "node 1 should hold epoch 1");
        assert!(e.holds_resources());
        (e, now, seq)
    }

    #[test]
    fn an_epoch_is_persisted_before_it_is_announced() {
        let t0 = Instant::now();
        let mut e = Engine::new(cfg(1, 3), Durable::default(), 1, 7, t0);
        let mut now = t0;
        for seq in 1..=3 {
            now += Duration::from_millis(50);
            for p in [2, 3] {
                e.handle(
                    now,
                    Input::Heartbeat(frame(p, seq, Role::Standby, 0, &[1, 2, 3])),
                );
            }
        }
        let actions = drain(&mut e);
        let persist = actions
            .iter()
            .position(|a| matches!(a, Action::Persist(d) if d.voted == Some((1, id(1)))));
        let persist = persist.expect("standing for epoch 1 persists the own vote first");
        let early = actions
            .iter()
            .any(|a| matches!(a, Action::SendHeartbeat(h) if h.role == Role::Candidate));
        assert!(
            !early,
            "announced candidacy before the vote was on disk: {actions:?}"
        );
        let Action::Persist(d) = actions[persist] else {
            unreachable!("matched above")
        };
        e.handle(now, Input::Persisted(d));
        let after = drain(&mut e);
        assert!(after.iter().any(
            |a| matches!(a, Action::SendHeartbeat(h) if h.role == Role::Candidate && h.epoch == 1)
        ));
    }

    #[test]
    fn a_holder_that_loses_quorum_stops_in_reverse_and_starves_for_good() {
        let t0 = Instant::now();
        let (mut e, mut now, _) = holder_of_three(t0);
        // Both peers fall silent: after the deadtime the holder is alone. Ticks come on time, so
        // this is quorum loss, not a stall.
        let mut actions = Vec::new();
        for _ in 0..7 {
            now += Duration::from_millis(100);
            e.handle(now, Input::Tick);
            actions.extend(drain(&mut e));
        }
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::StarveWatchdog { reason } if reason.contains("lost quorum"))
            ),
            "{actions:?}"
        );
        let stops: Vec<usize> = actions
            .iter()
            .filter_map(|a| {
                if let Action::StopResource { index } = a {
                    Some(*index)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(stops, [2, 1, 0], "{actions:?}");
        let starve = actions
            .iter()
            .position(|a| matches!(a, Action::StarveWatchdog { .. }));
        assert!(starve.is_some(), "{actions:?}");
        assert_eq!(e.role(), Role::SelfFencing);
        for k in 1..20u64 {
            e.handle(now + Duration::from_millis(100 * k), Input::Tick);
            assert!(
                !drain(&mut e)
                    .iter()
                    .any(|a| matches!(a, Action::FeedWatchdog)),
                "fed after starving"
            );
        }
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_stall_longer_than_the_bound_makes_a_holder_self_fence() {
        let t0 = Instant::now();
        let (mut e, now, seq) = holder_of_three(t0);
        let later = now + Duration::from_millis(450);
        for p in [2, 3] {
            e.handle(
                later,
                Input::Heartbeat(frame(p, seq + 1, Role::Standby, 1, &[1, 2, 3])),
            );
        }
        let actions = drain(&mut e);
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::StarveWatchdog { reason } if reason.contains("stalled"))
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn a_booting_node_does_not_vote_before_it_has_seen_everyone() {
        let t0 = Instant::now();
        let mut e = Engine::new(cfg(3, 3), Durable::default(), 1, 7, t0);
        // Only node 1 is visible, and it asks for votes.
        for seq in 1..=5u64 {
            let now = t0 + Duration::from_millis(100 * seq);
            let mut f = frame(1, seq, Role::Candidate, 1, &[1, 3]);
            f.holder = Some(id(1));
            e.handle(now, Input::Heartbeat(f));
            let actions = drain(&mut e);
            assert!(
                !actions.iter().any(|a| matches!(a, Action::Persist(_))),
                "voted while starting: {actions:?}"
            );
        }
        assert_eq!(e.role(), Role::Starting);
    }

    #[test]
    fn link_transport_changes_are_logged_and_change_nothing_else() {
        let t0 = Instant::now();
        let (mut e, now, _) = holder_of_three(t0);
        e.handle(now, Input::Link { link: 1, up: false });
        let actions = drain(&mut e);
        assert!(
            actions.contains(&Action::Log(Event::LinkDown(1))),
            "{actions:?}"
        );
        assert_eq!(e.holder_epoch(), Some(1));
    }

    /// Answers every resource action as done, until the engine asks for nothing more; returns
    /// all it asked for.
    fn run_resources(e: &mut Engine, now: Instant) -> Vec<Action> {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let actions = drain(e);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                let outcome = match a {
                    Action::StartResource { index } => Some((index, ResourceOutcome::Started)),
                    Action::StopResource { index } => Some((index, ResourceOutcome::Stopped)),
                    _ => None,
                };
                if let Some((index, outcome)) = outcome {
                    e.handle(now, Input::ResourceResult { index, outcome });
                }
                seen.push(a);
            }
        }
        seen
    }

    #[test]
    fn failures_are_forgotten_only_after_the_failure_timeout() {
        let t0 = Instant::now();
        let (mut e, mut now, mut seq) = holder_of_three(t0);
        let timeout = Duration::from_secs(2);
        e.cfg.failure_timeout = Some(timeout);
        // The Director's monitor fails: a local restart, counted.
        e.handle(now, Input::MonitorFailed { index: 2 });
        run_resources(&mut e, now);
        assert_eq!(e.res.restarts[2], 1);
        assert!(e.eligible_self());
        assert_eq!(e.failures_expire_at(), Some(now + timeout));
        // It fails again past the restart limit: the group is handed over, this node is out.
        now += Duration::from_millis(200);
        let last = now;
        e.handle(now, Input::MonitorFailed { index: 2 });
        run_resources(&mut e, now);
        assert!(
            !e.eligible_self(),
            "past the restart limit the node is ineligible"
        );
        assert!(!e.holds_resources(), "the group was stopped here");
        // The timeout runs from the last failure, and the engine asks to be woken for it.
        let expiry = last + timeout;
        assert_eq!(e.failures_expire_at(), Some(expiry));
        assert!(e.next_deadline().is_some_and(|d| d <= expiry));
        // Time passes with the peers alive; the node stays out until the timeout.
        let mut expired_at = None;
        for _ in 0..40 {
            now += Duration::from_millis(100);
            seq += 1;
            for p in [2, 3] {
                let f = frame(p, seq, Role::Standby, 1, &[1, 2, 3]);
                e.handle(now, Input::Heartbeat(f));
            }
            e.handle(now, Input::Tick);
            let forgot = run_resources(&mut e, now)
                .iter()
                .any(|a| matches!(a, Action::Log(Event::FailuresExpired)));
            if forgot {
                expired_at = Some(now);
                break;
            }
            assert!(e.failed, "forgotten {:?} before the timeout", expiry - now);
        }
        let at = expired_at.expect("forgotten once the timeout passed");
        assert!(at >= expiry && at < expiry + Duration::from_millis(100));
        assert!(
            !e.failed,
            "eligible again once the last failure is old enough"
        );
        assert_eq!(e.res.restarts, vec![0; 3], "restart counts start again");
        assert_eq!(e.failures_expire_at(), None);
    }

    #[test]
    fn without_a_failure_timeout_only_cleanup_forgets() {
        let t0 = Instant::now();
        let (mut e, now, _) = holder_of_three(t0);
        e.handle(now, Input::MonitorFailed { index: 0 });
        run_resources(&mut e, now);
        e.handle(now, Input::MonitorFailed { index: 0 });
        run_resources(&mut e, now);
        assert!(e.failed);
        assert_eq!(e.failures_expire_at(), None, "nothing expires");
        e.handle(now + Duration::from_secs(86_400), Input::Tick);
        assert!(e.failed, "a day later it is still out");
        e.handle(
            now + Duration::from_secs(86_400),
            Input::Command(Command::Clear),
        );
        assert!(!e.failed && e.res.restarts.iter().all(|&r| r == 0));
    }

    #[test]
    fn every_deadline_lies_ahead() {
        let t0 = Instant::now();
        let (mut e, mut now, _) = holder_of_three(t0);
        for _ in 0..50 {
            let d = e
                .next_deadline()
                .expect("a holder always has a heartbeat due");
            assert!(d > now, "deadline {d:?} not after {now:?}");
            now = d;
            e.handle(now, Input::Tick);
            drain(&mut e);
            if e.role() == Role::SelfFencing {
                break;
            }
        }
    }
}
