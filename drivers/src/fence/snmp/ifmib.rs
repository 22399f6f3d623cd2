//! Fabric fencing: disabling a node's switch ports (IF-MIB ifAdminStatus) over SNMP, and
//! re-enabling them (unfencing) once the node is healthy again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::SnmpParams;

/// A switch port by ifIndex, or by ifName / ifAlias (looked up once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// ifIndex.
    Index(u32),
    /// ifName or, failing that, ifAlias.
    Name(String),
}

/// One switch and the ports of every node it isolates.
#[derive(Debug, Clone)]
pub struct IfMibParams {
    /// Agent, version, credentials.
    pub snmp: SnmpParams,
    /// Per node name, every port that connects it (all multipath ports): all must read
    /// down before `off` succeeds.
    pub ports: BTreeMap<String, Vec<PortRef>>,
    /// Pause between reads while waiting for ports to show the requested state.
    pub poll_interval: Duration,
    /// Also require ifOperStatus down (where the switch reports it) before `off` succeeds.
    pub check_oper_status: bool,
}
