//! watchkeeper's drivers: the code that talks to cables, sockets and devices, each behind a
//! small trait with a written contract. No policy lives here: the agent's engine decides, the
//! drivers act and report what really happened.

pub mod fence;
pub mod link;
pub mod resource;
pub mod secret;
pub mod watchdog;
