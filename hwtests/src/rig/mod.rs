//! The test rig: a description of a cluster's hosts, cables, fence devices and resources
//! ([`desc::RigDesc`], a TOML file), built on this machine by [`emulated::Emulated`], and the
//! scenarios that inject faults into it and check the engine's rules from outside the agents
//! ([`scenario::Runner`]). `hwtests run --rig FILE SCENARIO` is the command-line entry point.

pub mod desc;
pub mod emulated;
pub mod relay;
pub mod scenario;
