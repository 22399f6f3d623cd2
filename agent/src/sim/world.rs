//! The simulated world: nodes, network, devices, time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use proto::{Flags, Heartbeat, NodeId};

use super::check::{Checker, Violation};
use crate::engine::{
    Action, Durable, Engine, EngineConfig, Event, FenceOutcome, Input, Level, NodeSpec,
    ResourceOutcome,
};

/// How a fence device behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceMode {
    /// Switches the target off and says so.
    Works,
    /// Answers with an error.
    Fails,
    /// Never answers.
    Hangs,
    /// Says "off" but leaves the target on.
    Lies,
}

/// A fault, applied at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Power loss: the node stops at once, with everything it runs.
    Crash(usize),
    /// Power back: the node boots.
    PowerOn(usize),
    /// The node's processes stop (SIGSTOP) for this long, then continue.
    Freeze(usize, Duration),
    /// No frame from `from` reaches `to`.
    Cut {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
    /// Frames from `from` reach `to` again.
    Heal {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
    /// Heal every link.
    HealAll,
    /// Set how fencing level `level` of node `target` behaves.
    Device {
        /// Node the device fences.
        target: usize,
        /// Level.
        level: usize,
        /// Behaviour.
        mode: DeviceMode,
    },
    /// The next start of resource `index` on `node` fails.
    FailStart(usize, usize),
    /// The next stop of resource `index` on `node` fails.
    FailStop(usize, usize),
    /// Operator command on a node.
    Command(usize, crate::engine::Command),
}

/// Parameters of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Node names; the last `witnesses` are witnesses.
    pub names: Vec<String>,
    /// How many of the nodes are witnesses.
    pub witnesses: usize,
    /// Engine timing and group, shared by all nodes (`me` and `nodes` are filled in).
    pub base: EngineConfig,
    /// Fencing levels per node (same shape for every node).
    pub levels: usize,
    /// Whether level 0 has an independent confirmation device.
    pub confirm_level0: bool,
    /// Watchdog timeout of every non-witness node (None: no watchdog).
    pub watchdog: Option<Duration>,
    /// Network latency range.
    pub latency: (Duration, Duration),
    /// Probability (per mille) that a frame is lost.
    pub loss_per_mille: u32,
    /// How long a fence level takes.
    pub fence_time: Duration,
    /// After a confirmed-off fence, power the target back on after this (None: stays off).
    pub reboot_after_fence: Option<Duration>,
    /// How long a resource start or stop takes.
    pub resource_time: Duration,
    /// How long a persist takes.
    pub persist_time: Duration,
    /// Random seed.
    pub seed: u64,
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Simulated time since start.
    pub at: Duration,
    /// Node index, or None for the world.
    pub node: Option<usize>,
    /// What happened.
    pub what: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = self
            .node
            .map_or_else(|| "world".to_owned(), |n| format!("n{n}"));
        write!(
            f,
            "{:>9.3}s {:<6} {}",
            self.at.as_secs_f64(),
            node,
            self.what
        )
    }
}

/// The truth about one node, for checks and verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTruth {
    /// Name.
    pub name: String,
    /// Powered on.
    pub powered: bool,
    /// Processes stopped.
    pub frozen: bool,
    /// Which resources really run.
    pub running: Vec<bool>,
    /// What is on its disk.
    pub disk: Durable,
    /// Boots so far.
    pub boots: u32,
}

impl NodeTruth {
    /// Whether any resource runs on this node.
    pub fn holds(&self) -> bool {
        self.powered && self.running.iter().any(|&r| r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        boot: u32,
        frame: HeartbeatOrd,
    },
    Result {
        node: usize,
        boot: u32,
        input: InputOrd,
    },
    Tick {
        node: usize,
        boot: u32,
    },
    Watchdog {
        node: usize,
        boot: u32,
        feed: u64,
    },
    Fault(FaultOrd),
    PowerOff {
        node: usize,
    },
    ResourceStop {
        node: usize,
        boot: u32,
        index: usize,
    },
    Thaw {
        node: usize,
    },
}

/// Wrappers giving total orders to payloads that do not need one semantically; the queue
/// orders by (time, sequence) first, so these only make the derive work.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeartbeatOrd(Heartbeat);
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputOrd(Input);
#[derive(Debug, Clone, PartialEq, Eq)]
struct FaultOrd(Fault);

macro_rules! seq_only_ord {
    ($t:ty) => {
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, _: &Self) -> std::cmp::Ordering {
                std::cmp::Ordering::Equal
            }
        }
    };
}
seq_only_ord!(HeartbeatOrd);
seq_only_ord!(InputOrd);
seq_only_ord!(FaultOrd);

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) truth: NodeTruth,
    pub(super) engine: Option<Engine>,
    pub(super) witness: bool,
    boot: u32,
    tick_at: Option<Duration>,
    feeds: u64,
    pub(super) starved: bool,
    deferred: Vec<Input>,
    fail_start: Vec<bool>,
    fail_stop: Vec<bool>,
    /// Peers whose frames reached this node since its boot, and peers it saw fenced.
    pub(super) seen: Vec<bool>,
    pub(super) fenced: Vec<bool>,
    booted_at: Duration,
    last_off: Option<Duration>,
    seq_out: u64,
    /// Per target: when this node last sent a fence command, and whether the target was off.
    fence_cmd: Vec<Option<(Duration, bool)>>,
}

/// A simulated cluster.
#[derive(Debug, Clone)]
pub struct Sim {
    spec: SimSpec,
    base: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    pub(super) nodes: Vec<Node>,
    cut: Vec<Vec<bool>>,
    devices: Vec<Vec<DeviceMode>>,
    rng: u64,
    trace: Vec<TraceLine>,
    checker: Checker,
    violation: Option<Violation>,
    pub(super) takeovers: u32,
    /// Also trace every heartbeat sent (for replaying one seed by hand).
    pub trace_frames: bool,
    /// Keep no trace at all (the explorer holds many worlds at once).
    pub trace_off: bool,
    inputs: u64,
}

impl Sim {
    /// Builds the cluster, all nodes powered on and booting at time zero.
    pub fn new(spec: SimSpec) -> Self {
        let n = spec.names.len();
        let base = Instant::now();
        let mut sim = Self {
            base,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            cut: vec![vec![false; n]; n],
            devices: vec![vec![DeviceMode::Works; spec.levels.max(1)]; n],
            rng: spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            trace: Vec::new(),
            checker: Checker::default(),
            violation: None,
            takeovers: 0,
            trace_frames: false,
            trace_off: false,
            inputs: 0,
            spec,
        };
        for i in 0..n {
            let witness = i >= n - sim.spec.witnesses;
            let count = sim.spec.base.resources.len();
            sim.nodes.push(Node {
                truth: NodeTruth {
                    name: sim.spec.names[i].clone(),
                    powered: true,
                    frozen: false,
                    running: vec![false; count],
                    disk: Durable::default(),
                    boots: 0,
                },
                engine: None,
                witness,
                boot: 0,
                tick_at: None,
                feeds: 0,
                starved: false,
                deferred: Vec::new(),
                fail_start: vec![false; count],
                fail_stop: vec![false; count],
                seen: vec![false; n],
                fenced: vec![false; n],
                booted_at: Duration::ZERO,
                last_off: None,
                seq_out: 0,
                fence_cmd: vec![None; n],
            });
        }
        for i in 0..n {
            sim.boot(i);
        }
        sim
    }

    /// Schedules a fault at `at` (simulated time since start).
    pub fn schedule(&mut self, at: Duration, fault: Fault) {
        self.push(at, Ev::Fault(FaultOrd(fault)));
    }

    /// Runs until `until`, or until a rule is broken.
    pub fn run_until(&mut self, until: Duration) -> Result<(), Violation> {
        self.run_until_visiting(until, &mut |_| {})
    }

    /// Like [`Sim::run_until`], calling `visit` after every event.
    pub fn run_until_visiting(
        &mut self,
        until: Duration,
        visit: &mut dyn FnMut(&Sim),
    ) -> Result<(), Violation> {
        let mut budget = MAX_EVENTS;
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until || budget == 0 {
                break;
            }
            budget -= 1;
            let Some(Reverse((at, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.event(ev);
            if let Some(v) = self.violation.take() {
                return Err(v);
            }
            if let Some(v) = self.checker.check(self) {
                return Err(self.violation_with_trace(v));
            }
            visit(self);
        }
        self.now = until;
        Ok(())
    }

    /// What distinguishes one state of the cluster from another for the exhaustive checker:
    /// per node power, freeze, role, held epoch, durable state, quorum and running resources,
    /// and the cut links. Times and message contents are left out.
    pub fn abstract_state(&self) -> Vec<u64> {
        let mut v = Vec::new();
        for n in &self.nodes {
            let e = n.engine.as_ref();
            let running = n
                .truth
                .running
                .iter()
                .fold(0u64, |acc, &r| (acc << 1) | u64::from(r));
            v.extend([
                u64::from(n.truth.powered),
                u64::from(n.truth.frozen),
                e.map_or(99, |e| e.role() as u64),
                e.and_then(Engine::holder_epoch).unwrap_or(0),
                n.truth.disk.epoch,
                n.truth.disk.voted.map_or(0, |x| x.0),
                u64::from(e.is_some_and(Engine::quorate)),
                running,
            ]);
        }
        for row in &self.cut {
            v.push(row.iter().fold(0u64, |acc, &c| (acc << 1) | u64::from(c)));
        }
        v
    }

    /// A hash of everything that determines this world's future: every engine, every node's
    /// truth, the links, the devices, the random state and the pending events (by time from
    /// now, not by their sequence numbers). Two worlds with the same fingerprint at the same
    /// simulated time behave the same from then on.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut pending: Vec<String> = self
            .queue
            .iter()
            .map(|Reverse((at, _, ev))| format!("{:?} {ev:?}", at.saturating_sub(self.now)))
            .collect();
        pending.sort();
        format!(
            "{:?}|{:?}|{:?}|{}|{:?}",
            self.nodes, self.cut, self.devices, self.rng, pending
        )
        .hash(&mut h);
        h.finish()
    }

    /// The current simulated time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The trace so far.
    pub fn trace(&self) -> &[TraceLine] {
        &self.trace
    }

    /// One trace line for people: fixed columns, node names instead of ids.
    pub fn render(&self, t: &TraceLine) -> String {
        let node = t
            .node
            .and_then(|i| self.spec.names.get(i))
            .map_or("world", String::as_str);
        let mut what = t.what.clone();
        for (i, name) in self.spec.names.iter().enumerate().rev() {
            what = what
                .replace(&format!("NodeId({})", i + 1), name)
                .replace(&format!("n{i} "), &format!("{name} "));
        }
        format!("{:>9.3}s  {node:<10} {what}", t.at.as_secs_f64())
    }

    /// The truth about every node.
    pub fn truth(&self) -> Vec<NodeTruth> {
        self.nodes.iter().map(|n| n.truth.clone()).collect()
    }

    /// Index of the node holding the group, if exactly one does.
    pub fn holder(&self) -> Option<usize> {
        let h: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].truth.holds())
            .collect();
        (h.len() == 1).then(|| h[0])
    }

    /// Whether node `i` runs every resource of the group.
    pub fn runs_all(&self, i: usize) -> bool {
        let t = &self.nodes[i].truth;
        t.powered && t.running.iter().all(|&r| r)
    }

    /// Inputs given to engines so far.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Number of takeovers (a node starting the group's first resource).
    pub fn takeovers(&self) -> u32 {
        self.takeovers
    }

    /// Alerts raised so far, as trace text.
    pub fn alerts(&self) -> Vec<&TraceLine> {
        self.trace
            .iter()
            .filter(|t| t.what.starts_with("ALERT"))
            .collect()
    }

    /// The spec.
    pub fn spec(&self) -> &SimSpec {
        &self.spec
    }

    pub(super) fn violation_with_trace(&self, mut v: Violation) -> Violation {
        v.seed = self.spec.seed;
        v.trace = self.trace.iter().map(ToString::to_string).collect();
        v
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn log(&mut self, node: Option<usize>, what: String) {
        if !self.trace_off && self.trace.len() < MAX_TRACE {
            self.trace.push(TraceLine {
                at: self.now,
                node,
                what,
            });
        }
    }

    fn engine_config(&self, i: usize) -> EngineConfig {
        let mut cfg = self.spec.base.clone();
        cfg.me = node_id(i);
        cfg.nodes = (0..self.nodes.len().max(self.spec.names.len()))
            .map(|j| {
                let witness = j >= self.spec.names.len() - self.spec.witnesses;
                NodeSpec {
                    id: node_id(j),
                    name: self.spec.names[j].clone(),
                    witness,
                    watchdog_timeout: if witness { None } else { self.spec.watchdog },
                    fencing: (0..self.spec.levels)
                        .map(|l| Level {
                            devices: vec![format!("dev{j}.{l}")],
                            confirm_with: if l == 0 && self.spec.confirm_level0 {
                                vec![format!("confirm{j}")]
                            } else {
                                Vec::new()
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        cfg
    }

    fn boot(&mut self, i: usize) {
        let cfg = self.engine_config(i);
        let n = &mut self.nodes[i];
        n.boot += 1;
        n.truth.boots += 1;
        n.booted_at = self.now;
        n.truth.powered = true;
        n.truth.frozen = false;
        n.truth.running.iter_mut().for_each(|r| *r = false);
        n.starved = false;
        n.deferred.clear();
        n.seen.iter_mut().for_each(|s| *s = false);
        n.fenced.iter_mut().for_each(|s| *s = false);
        let seed = self.spec.seed ^ (u64::from(n.boot) << 32) ^ (i as u64);
        let now = self.base + self.now;
        n.engine = Some(Engine::new(cfg, n.truth.disk, n.boot, seed, now));
        let boot = n.boot;
        self.log(Some(i), format!("boot #{boot}"));
        self.drive(i, Input::Tick);
    }

    fn power_off(&mut self, i: usize, why: &str) {
        let n = &mut self.nodes[i];
        if !n.truth.powered {
            return;
        }
        n.truth.powered = false;
        n.truth.frozen = false;
        n.truth.running.iter_mut().for_each(|r| *r = false);
        n.last_off = Some(self.now);
        n.engine = None;
        n.tick_at = None;
        n.boot += 1; // results of the dead boot are dropped
        self.log(Some(i), format!("power off ({why})"));
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                from,
                boot,
                frame,
            } => {
                if self.nodes[to].boot != boot
                    || !self.nodes[to].truth.powered
                    || self.nodes[to].truth.frozen
                {
                    return;
                }
                self.nodes[to].seen[from] = true;
                self.drive(to, Input::Heartbeat(frame.0));
            }
            Ev::Result { node, boot, input } => {
                if self.nodes[node].boot != boot || !self.nodes[node].truth.powered {
                    return;
                }
                if let Input::Persisted(d) = &input.0 {
                    // The write is durable only once it completes; a power loss before loses it.
                    let old = self.nodes[node].truth.disk;
                    self.checker.on_persist(node, &old, d, &mut self.violation);
                    self.nodes[node].truth.disk = *d;
                }
                if self.nodes[node].truth.frozen {
                    self.nodes[node].deferred.push(input.0);
                    return;
                }
                self.drive(node, input.0);
            }
            Ev::Tick { node, boot } => {
                let n = &self.nodes[node];
                if n.boot != boot
                    || !n.truth.powered
                    || n.truth.frozen
                    || n.tick_at != Some(self.now)
                {
                    return;
                }
                self.drive(node, Input::Tick);
            }
            Ev::Watchdog { node, boot, feed } => {
                let n = &self.nodes[node];
                if n.boot == boot && n.truth.powered && n.feeds == feed {
                    self.log(Some(node), "hardware watchdog expired: reset".into());
                    self.power_off(node, "watchdog reset");
                    self.boot(node);
                }
            }
            Ev::PowerOff { node } => {
                self.power_off(node, "fenced");
                if let Some(d) = self.spec.reboot_after_fence {
                    let at = self.now + d;
                    self.push(at, Ev::Fault(FaultOrd(Fault::PowerOn(node))));
                }
            }
            Ev::ResourceStop { node, boot, index } => {
                if self.nodes[node].boot == boot {
                    self.nodes[node].truth.running[index] = false;
                }
            }
            Ev::Thaw { node } => {
                if !self.nodes[node].truth.frozen || !self.nodes[node].truth.powered {
                    return;
                }
                self.nodes[node].truth.frozen = false;
                self.log(Some(node), "thawed".into());
                let deferred = std::mem::take(&mut self.nodes[node].deferred);
                self.drive(node, Input::Tick);
                for input in deferred {
                    self.drive(node, input);
                }
            }
            Ev::Fault(FaultOrd(f)) => self.fault(f),
        }
    }

    fn fault(&mut self, f: Fault) {
        self.log(None, format!("fault: {f:?}"));
        match f {
            Fault::Crash(i) => self.power_off(i, "crash"),
            Fault::PowerOn(i) => {
                if !self.nodes[i].truth.powered {
                    self.boot(i);
                }
            }
            Fault::Freeze(i, d) => {
                if self.nodes[i].truth.powered && !self.nodes[i].truth.frozen {
                    self.nodes[i].truth.frozen = true;
                    let at = self.now + d;
                    self.push(at, Ev::Thaw { node: i });
                }
            }
            Fault::Cut { from, to } => self.cut[from][to] = true,
            Fault::Heal { from, to } => self.cut[from][to] = false,
            Fault::HealAll => self
                .cut
                .iter_mut()
                .for_each(|r| r.iter_mut().for_each(|c| *c = false)),
            Fault::Device {
                target,
                level,
                mode,
            } => {
                if let Some(d) = self.devices.get_mut(target).and_then(|d| d.get_mut(level)) {
                    *d = mode;
                }
            }
            Fault::FailStart(i, r) => {
                if let Some(x) = self.nodes[i].fail_start.get_mut(r) {
                    *x = true;
                }
            }
            Fault::FailStop(i, r) => {
                if let Some(x) = self.nodes[i].fail_stop.get_mut(r) {
                    *x = true;
                }
            }
            Fault::Command(i, c) => {
                if self.nodes[i].truth.powered && !self.nodes[i].truth.frozen {
                    self.drive(i, Input::Command(c));
                }
            }
        }
    }

    /// Gives `input` to node `i`'s engine and executes what it asks for.
    fn drive(&mut self, i: usize, input: Input) {
        let now = self.base + self.now;
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        self.inputs += 1;
        engine.handle(now, input);
        let mut actions = Vec::new();
        while let Some(a) = engine.poll_action() {
            actions.push(a);
            if actions.len() > MAX_ACTIONS_PER_INPUT {
                break;
            }
        }
        let deadline = engine.next_deadline();
        for a in actions {
            self.execute(i, a);
        }
        if let Some(d) = deadline {
            let at = d.saturating_duration_since(self.base).max(self.now);
            if self.nodes[i].tick_at != Some(at) || at == self.now {
                self.nodes[i].tick_at = Some(at);
                let boot = self.nodes[i].boot;
                self.push(at, Ev::Tick { node: i, boot });
            }
        } else {
            self.nodes[i].tick_at = None;
        }
    }

    fn execute(&mut self, i: usize, a: Action) {
        let boot = self.nodes[i].boot;
        match a {
            Action::SendHeartbeat(mut hb) => {
                self.nodes[i].seq_out += 1;
                hb.sequence = self.nodes[i].seq_out;
                if self.trace_frames {
                    let who = |n: Option<proto::NodeId>| {
                        n.map_or_else(|| "-".to_owned(), |n| format!("n{}", n.index()))
                    };
                    self.log(
                        Some(i),
                        format!(
                            "send {:?} epoch {} holder {} prior {} flags {:#06x} view {:#x}",
                            hb.role,
                            hb.epoch,
                            who(hb.holder),
                            who(hb.prior),
                            hb.flags.0,
                            hb.view.0
                        ),
                    );
                }
                self.checker
                    .on_send(i, &hb, &self.nodes[i].truth.disk, &mut self.violation);
                if self.violation.is_some() {
                    let v = self.violation.take().map(|v| self.violation_with_trace(v));
                    self.violation = v;
                    return;
                }
                for to in 0..self.nodes.len() {
                    if to == i || self.cut[i][to] {
                        continue;
                    }
                    if self.random() % 1000 < u64::from(self.spec.loss_per_mille) {
                        continue;
                    }
                    let (lo, hi) = self.spec.latency;
                    let span = u64::try_from((hi - lo).as_micros()).unwrap_or(0).max(1);
                    let lat = lo + Duration::from_micros(self.random() % span);
                    let to_boot = self.nodes[to].boot;
                    let at = self.now + lat;
                    self.push(
                        at,
                        Ev::Deliver {
                            to,
                            from: i,
                            boot: to_boot,
                            frame: HeartbeatOrd(hb),
                        },
                    );
                }
            }
            Action::Fence { target, level } => {
                let t = index_of(target);
                self.nodes[i].fence_cmd[t] = Some((self.now, !self.nodes[t].truth.powered));
                let mode = self
                    .devices
                    .get(t)
                    .and_then(|d| d.get(level))
                    .copied()
                    .unwrap_or(DeviceMode::Fails);
                self.log(
                    Some(i),
                    format!("fence n{t} level {level}: device {mode:?}"),
                );
                let at = self.now + self.spec.fence_time;
                let outcome = match mode {
                    DeviceMode::Works => {
                        self.push(at, Ev::PowerOff { node: t });
                        Some(FenceOutcome::Off)
                    }
                    DeviceMode::Lies => Some(FenceOutcome::Off),
                    DeviceMode::Fails => Some(FenceOutcome::Failed("device error".into())),
                    DeviceMode::Hangs => None,
                };
                if let Some(outcome) = outcome {
                    // The result lands just after the power-off it reports.
                    let at = at + Duration::from_micros(1);
                    self.push(
                        at,
                        Ev::Result {
                            node: i,
                            boot,
                            input: InputOrd(Input::FenceResult {
                                target,
                                level,
                                outcome,
                            }),
                        },
                    );
                }
            }
            Action::VerifyOff { target, level } => {
                // The confirmation device reads the truth when it answers.
                let t = index_of(target);
                let off = !self.nodes[t].truth.powered;
                let at = self.now + self.spec.fence_time / 2;
                self.push(
                    at,
                    Ev::Result {
                        node: i,
                        boot,
                        input: InputOrd(Input::VerifyResult { target, level, off }),
                    },
                );
            }
            Action::Unfence { target } => {
                self.log(Some(i), format!("unfence n{}", index_of(target)));
            }
            Action::StartResource { index } => {
                self.nodes[i].truth.running[index] = true;
                let failed = std::mem::take(&mut self.nodes[i].fail_start[index]);
                let outcome = if failed {
                    ResourceOutcome::StartFailed
                } else {
                    ResourceOutcome::Started
                };
                let at = self.now + self.spec.resource_time;
                let name = self.resource_name(index);
                self.log(Some(i), format!("start {name}"));
                self.push(
                    at,
                    Ev::Result {
                        node: i,
                        boot,
                        input: InputOrd(Input::ResourceResult { index, outcome }),
                    },
                );
            }
            Action::StopResource { index } => {
                let failed = std::mem::take(&mut self.nodes[i].fail_stop[index]);
                let at = self.now + self.spec.resource_time;
                let name = self.resource_name(index);
                self.log(Some(i), format!("stop {name}"));
                if !failed {
                    self.push(
                        at,
                        Ev::ResourceStop {
                            node: i,
                            boot,
                            index,
                        },
                    );
                }
                let outcome = if failed {
                    ResourceOutcome::StopFailed
                } else {
                    ResourceOutcome::Stopped
                };
                let at = at + Duration::from_micros(1);
                self.push(
                    at,
                    Ev::Result {
                        node: i,
                        boot,
                        input: InputOrd(Input::ResourceResult { index, outcome }),
                    },
                );
            }
            Action::FeedWatchdog => {
                if self.nodes[i].starved {
                    let v = Violation::new(3, format!("n{i} fed its watchdog after starving it"));
                    self.violation = Some(self.violation_with_trace(v));
                    return;
                }
                if self.nodes[i].witness {
                    return;
                }
                if let Some(t) = self.spec.watchdog {
                    self.nodes[i].feeds += 1;
                    let feed = self.nodes[i].feeds;
                    let at = self.now + t;
                    self.push(
                        at,
                        Ev::Watchdog {
                            node: i,
                            boot,
                            feed,
                        },
                    );
                }
            }
            Action::StarveWatchdog { reason } => {
                // The hardware timer keeps running from the last feed; nothing renews it now.
                self.nodes[i].starved = true;
                self.log(Some(i), format!("starve watchdog: {reason}"));
            }
            Action::Persist(d) => {
                let at = self.now + self.spec.persist_time;
                self.push(
                    at,
                    Ev::Result {
                        node: i,
                        boot,
                        input: InputOrd(Input::Persisted(d)),
                    },
                );
            }
            Action::Alert(e) => self.log(Some(i), format!("ALERT {e:?}")),
            Action::Log(e) => {
                if let Event::TakeoverAllowed(ev) = &e {
                    self.check_takeover(i, ev);
                    self.takeovers += 1;
                }
                if let Event::FenceConfirmed { target, .. } = &e {
                    self.nodes[i].fenced[index_of(*target)] = true;
                }
                self.log(Some(i), format!("{e:?}"));
            }
        }
    }

    fn resource_name(&self, index: usize) -> String {
        self.spec
            .base
            .resources
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }

    /// Rules 2 and 4 at the moment node `i` is allowed to take over.
    fn check_takeover(&mut self, i: usize, ev: &crate::engine::Evidence) {
        use crate::engine::Evidence;
        let others: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].truth.holds())
            .collect();
        let v = if !others.is_empty() {
            Some(Violation::new(
                2,
                format!("n{i} takes over on {ev:?} while {others:?} still run resources"),
            ))
        } else if let Evidence::FenceConfirmed { target, .. } = ev {
            // A device may not have lied: the target was off when the taker last fenced it, or
            // went off after.
            let t = index_of(*target);
            let went_off = self.nodes[i].fence_cmd[t].is_some_and(|(at, off_then)| {
                off_then || self.nodes[t].last_off.is_some_and(|off| off >= at)
            });
            (!went_off).then(|| {
                Violation::new(
                    2,
                    format!("n{i} takes over on a fence of n{t}, which never went off"),
                )
            })
        } else {
            None
        };
        let v = v.or_else(|| {
            (0..self.nodes.len())
                .filter(|&j| j != i && !self.nodes[j].witness)
                .find(|&j| !self.nodes[i].seen[j] && !self.nodes[i].fenced[j])
                .map(|j| {
                    Violation::new(
                        4,
                        format!("n{i} takes over without having seen or fenced n{j} since boot"),
                    )
                })
        });
        if let Some(v) = v {
            self.violation = Some(self.violation_with_trace(v));
        }
    }

    fn random(&mut self) -> u64 {
        crate::engine::xorshift(&mut self.rng)
    }

    pub(super) fn frame_flags_vote(hb: &Heartbeat) -> bool {
        hb.flags.has(Flags::VOTE)
    }
}

/// Node id of index `i`.
pub fn node_id(i: usize) -> NodeId {
    u8::try_from(i + 1)
        .ok()
        .and_then(NodeId::new)
        .unwrap_or_else(|| unreachable_node(i))
}

fn index_of(id: NodeId) -> usize {
    id.index()
}

#[cold]
fn unreachable_node(i: usize) -> NodeId {
    // SimSpec construction limits clusters to proto::MAX_NODES.
    panic!("node index {i} is beyond the protocol's node ids")
}

/// Events one run may process: far more than any scenario needs, a bound against runaways.
const MAX_EVENTS: u64 = 5_000_000;
/// Trace lines kept.
const MAX_TRACE: usize = 200_000;
/// Actions one input may produce before the simulator stops reading (a runaway engine).
const MAX_ACTIONS_PER_INPUT: usize = 10_000;
