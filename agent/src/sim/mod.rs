//! Deterministic simulator of whole clusters over the real [`Engine`].
//!
//! Every node runs the same engine the agent runs; the simulator plays everything around it in
//! simulated time: links with latency, loss and (one-way) partitions, power (crash, fence,
//! reboot), frozen processes (no inputs, no outputs, then a wake with stale state), hardware
//! watchdogs that reset a host that is not fed, fence devices that work, fail, hang or lie,
//! resources that fail to start or stop, and the disk that persists each node's durable state.
//!
//! After every event it checks DESIGN.md's rules against the ground truth (which host really
//! runs resources, which is really powered), not against what the engines believe. A
//! violation carries the seed and the trace, and the same seed replays the same trace.

mod check;
mod cli;
mod exhaustive;
mod explore;
mod random;
mod scenario;
mod world;

pub use check::Violation;
pub use cli::cli;
pub use exhaustive::{run_exhaustive, ExhaustiveOutcome, Shape};
pub use explore::{explore, ExploreOutcome};
pub use random::{random_schedule, run_random, RandomOutcome};
pub use scenario::{Report, Scenario, ScenarioError};
pub use world::{node_id, DeviceMode, Fault, NodeTruth, Sim, SimSpec, TraceLine};
