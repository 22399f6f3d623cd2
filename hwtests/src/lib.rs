//! Hardware-in-the-loop harness for watchkeeper: the pieces that let tests run the real agent
//! binary against emulated hardware on one machine.
//!
//! Unit tests with simulated time (in `agent`'s engine) prove the decision logic; they cannot
//! prove that the shipped binary opens ttys, survives a USB adapter vanishing, answers on its
//! control socket, or fails over when a peer process is frozen. This crate provides what such
//! tests need:
//!
//! - [`cable::PtyCable`]: a serial null-modem cable made of two pty pairs, with faults (cut,
//!   one-way cut, noise, delay, unplug/replug).
//! - [`agent::AgentProcess`]: a `watchkeeper` child process, signalled by PID, stopped on drop,
//!   observed through its JSON logs.
//! - [`status`]: queries to the agent's Unix control socket.
//! - [`fifo::FifoWatchdog`]: a FIFO standing in for `/dev/watchdog`, timestamping every feed.
//! - [`qemu`]: QEMU guests with a real kernel watchdog (i6300esb) that really resets them.
//! - [`snmpd::Snmpd`]: net-snmp's agent playing a switched PDU (APC, Raritan, Eaton) and an
//!   IF-MIB switch, for the SNMP fencing tests.
//! - [`modbus_pdu::ModbusPdu`]: a pymodbus switched PDU over Modbus TCP or RTU, for the Modbus
//!   fencing tests.
//! - [`sushy::Sushy`]: sushy-tools' Redfish emulator over HTTP or HTTPS, for the fencing tests.
//! - [`pg::PgCluster`]: a throw-away PostgreSQL primary and streaming hot standby, crashed and
//!   stopped by PID, for the Catalog executor tests.
//! - [`bacula::BaculaCluster`]: Debian's Bacula 9.6 (Director, Storage Daemon, File Daemon,
//!   bconsole) with a PostgreSQL Catalog, a loop-device storage filesystem and a virtual IP
//!   under two agents, for the Bacula end-to-end tests and the Bacula failover benchmark.
//! - [`hyperfine::Hyperfine`]: whole-process timings (median, min, max) of fence agents under
//!   hyperfine, for the fencing benchmarks.
//! - [`rig`]: a cluster described in a TOML file, built with namespaces, relays, BMCs and a
//!   Catalog, and the fault scenarios and chaos runs that check the engine's rules on it.
//! - [`free_udp_port`] and friends: loopback-only UDP ports for heartbeat links.
//!
//! Everything here stays on the machine: network traffic goes to loopback only, processes are
//! only those this crate started, and every wait is bounded in time.

pub mod agent;
pub mod bacula;
pub mod cable;
pub mod fifo;
pub mod hyperfine;
pub mod ipmi_sim;
pub mod modbus_pdu;
pub mod netns;
pub mod pair;
pub mod pg;
pub mod qemu;
pub mod rig;
pub mod snmpd;
pub mod status;
pub mod sushy;
pub mod util;

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process can take it before the agent
/// binds it; collisions are rare because the kernel hands out ephemeral ports in turn.
///
/// # Panics
///
/// If no UDP socket can be bound on 127.0.0.1, which means the machine cannot run these tests.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a UDP socket on 127.0.0.1: {e}"))
}

/// A UDP port on `[::1]` that was free a moment ago; same caveat as [`free_udp_port`].
///
/// # Panics
///
/// If no UDP socket can be bound on `[::1]`; check [`ipv6_loopback_available`] first to skip
/// IPv6 tests on machines without it.
pub fn free_udp_port_v6() -> u16 {
    UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a UDP socket on [::1]: {e}"))
}

/// Whether a UDP socket can be bound on `[::1]` (IPv6 may be disabled in containers and CI).
pub fn ipv6_loopback_available() -> bool {
    UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let port = free_udp_port();
        assert_ne!(port, 0);
        assert!(UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
        if ipv6_loopback_available() {
            let port = free_udp_port_v6();
            assert_ne!(port, 0);
            assert!(UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).is_ok());
        }
    }
}
