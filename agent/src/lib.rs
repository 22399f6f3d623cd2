//! watchkeeper's agent: configuration, the runtime that drives heartbeat links and tracks
//! peer liveness, the control socket, and the command-line front end.
//!
//! The binary `watchkeeper` (in `main.rs`) is a thin shell over this library so that tests can
//! call the same code paths with loopback sockets and pty pairs.

pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod engine;
pub mod events;
pub mod fence;
pub mod group;
pub mod liveness;
pub mod metrics;
pub mod packaging;
pub mod recent;
pub mod replicate;
pub mod runtime;
pub mod sim;
pub mod udev;
pub mod watchdog;
