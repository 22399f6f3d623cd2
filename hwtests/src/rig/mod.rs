//! The test rig: a description of a cluster's hosts, cables, fence devices and resources
//! ([`desc::RigDesc`], a TOML file), built on this machine by [`emulated::Emulated`] or found
//! on real hardware by [`real::Real`], and the scenarios that inject faults into it and check
//! the engine's rules from outside the agents ([`scenario::Runner`]). `hwtests run --rig FILE
//! SCENARIO` is the command-line entry point.
//!
//! The scenarios see a rig only through [`Rig`], so that the same checks run on both: what a
//! rig cannot do (a real serial cable cannot be pulled by software unless the rig has a relay
//! for it) it names in [`Rig::unavailable`], and a scenario that needs it is declined by name
//! before it starts.

use std::io;
use std::process::Output;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

pub mod desc;
pub mod emulated;
pub mod fence;
pub mod ocf;
pub mod real;
pub mod relay;
pub mod scenario;
pub mod tcp_relay;

/// Faults a rig may be unable to inject, by the names [`Rig::unavailable`] uses.
pub const FAULTS: [&str; 11] = [
    "serial-cut",
    "serial-noise",
    "lan-cut",
    "lan-degrade",
    "lan-corrupt",
    "bmc-down",
    "bmc-lies",
    "disk-full",
    "clock-jump",
    "start-failure",
    "stop-hang",
];

/// A cluster the scenarios can drive and observe. Hosts are indexes into the description.
pub trait Rig {
    /// The description it was built from.
    fn desc(&self) -> &desc::RigDesc;
    /// Host `i`'s node name.
    fn name(&self, i: usize) -> &str {
        &self.desc().hosts[i].name
    }
    /// Starts host `i`'s agent.
    fn start(&mut self, i: usize) -> io::Result<()>;
    /// Whether host `i`'s agent runs.
    fn agent_running(&mut self, i: usize) -> bool;
    /// Sends `signal` to host `i`'s agent.
    fn signal(&mut self, i: usize, signal: Signal) -> io::Result<()>;
    /// SIGKILLs host `i`'s agent (its power stays on).
    fn kill(&mut self, i: usize) -> io::Result<()> {
        self.signal(i, Signal::SIGKILL)
    }
    /// Whether host `i` has power (a witness always has).
    fn powered(&self, i: usize) -> bool;
    /// Whether host `i` has power, read now (a rig may answer [`Rig::powered`] from a recent
    /// reading).
    fn powered_now(&self, i: usize) -> bool {
        self.powered(i)
    }
    /// Power-cycles host `i` into a fresh boot with its agent running.
    fn reboot(&mut self, i: usize) -> io::Result<()>;
    /// Host `i`'s `watchkeeper resources --json` report.
    fn resources(&self, i: usize) -> Option<Value>;
    /// Runs `watchkeeper ARGS` on host `i`.
    fn cli(&self, i: usize, args: &[&str]) -> io::Result<Output>;
    /// Which resources of the group host `i` runs, seen from the resources themselves.
    fn running(&self, i: usize) -> Vec<String>;
    /// Hosts with power that run any resource of the group.
    fn holders(&self) -> Vec<usize> {
        (0..self.desc().hosts.len())
            .filter(|&i| self.powered(i) && !self.running(i).is_empty())
            .collect()
    }
    /// Whether host `i` has power and runs the whole group.
    fn holds_all(&self, i: usize) -> bool {
        self.powered(i) && self.running(i).len() == self.desc().resources.len()
    }
    /// Runs `sql` on host `i`'s Catalog server; its unaligned, tuples-only answer.
    fn catalog_sql(&self, i: usize, sql: &str) -> Result<String, String>;
    /// Power-offs seen so far (fences and power cycles).
    fn power_offs(&self) -> u32;
    /// When host `i` lost power (Unix seconds), as far as the rig knows.
    fn off_times(&self, i: usize) -> Vec<f64>;
    /// Which of host `i`'s fencing levels (0 = first) switched it off at or after `since`
    /// (Unix seconds), if the rig can tell its devices apart.
    fn levels_off_since(&self, _i: usize, _since: f64) -> Option<Vec<usize>> {
        None
    }
    /// When `resource` started on host `i` (Unix seconds).
    fn start_times(&self, i: usize, resource: &str) -> Vec<f64>;
    /// Checks from the rig's records that no two hosts ever ran the group at once; how many
    /// events were checked.
    fn check_journal(&self) -> Result<usize, String>;
    /// Undoes every link, BMC, disk and clock fault (not power or processes).
    fn heal(&mut self) -> io::Result<()>;
    /// Faults this rig cannot inject (names from [`FAULTS`]), with the reason.
    fn unavailable(&self) -> Vec<(&'static str, String)>;
    /// Cuts (or mends) every serial cable.
    fn cut_serial(&mut self, cut: bool) -> io::Result<()>;
    /// Makes host `to` deaf to host `from` on every heartbeat link.
    fn deafen(&mut self, to: usize, from: usize) -> io::Result<()>;
    /// Loss in percent and delay on every LAN heartbeat path.
    fn degrade_lan(&mut self, loss_percent: u32, delay: Duration) -> io::Result<()>;
    /// Flips a bit in every datagram on every LAN heartbeat path (or stops).
    fn corrupt_lan(&mut self, on: bool) -> io::Result<()>;
    /// One burst of line noise into both ends of every serial cable (`burst` numbers it).
    fn serial_noise(&self, burst: u64) -> io::Result<()>;
    /// Cuts (or mends) every path to host `i`'s BMC: its first fencing level's device.
    fn cut_bmc(&mut self, i: usize, cut: bool) -> io::Result<()>;
    /// Makes host `i`'s fence devices (every level) acknowledge power-off without acting (or
    /// behave again).
    fn bmc_ignores_off(&mut self, i: usize, ignore: bool) -> io::Result<()>;
    /// Fills host `i`'s state directory (or frees it).
    fn fill_disk(&mut self, i: usize, full: bool) -> io::Result<()>;
    /// Makes `resource` fail to start on host `i` (or start again).
    fn refuse_start(&mut self, i: usize, resource: &str, refuse: bool) -> io::Result<()>;
    /// Makes `resource` hang when stopped on host `i` (or stop again).
    fn hang_stop(&mut self, i: usize, resource: &str, hang: bool) -> io::Result<()>;
    /// Steps host `i`'s wall clock by `seconds` from true time (0 puts it right).
    fn set_clock_offset(&mut self, i: usize, seconds: i64) -> io::Result<()>;
    /// Writes `text` to one file on every filesystem of the group that host `i` has mounted,
    /// flushed to the device; how many it wrote (0: the group has no filesystem there, or the
    /// rig cannot reach it).
    fn write_storage(&self, _i: usize, _text: &str) -> Result<usize, String> {
        Ok(0)
    }
    /// That file on every filesystem of the group that host `i` has mounted: where, and its
    /// text (`None` when it is missing).
    fn read_storage(&self, _i: usize) -> Vec<(String, Option<String>)> {
        Vec::new()
    }
}

/// The error a rig returns for a fault it cannot inject.
pub fn unsupported(fault: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{fault}: {why}"))
}
