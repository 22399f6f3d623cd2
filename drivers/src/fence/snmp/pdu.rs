//! Switched PDUs over SNMP: APC (MasterSwitch and rPDU), Raritan PX, Eaton ePDU and custom
//! OIDs, with the profile detected by sysObjectID unless configured.

use std::collections::BTreeMap;
use std::time::Duration;

use super::SnmpParams;

/// Which OIDs and values switch an outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduProfile {
    /// Chosen from the agent's sysObjectID on first use.
    Auto,
    /// APC MasterSwitch (PowerNet-MIB sPDUOutletCtl).
    ApcMasterSwitch,
    /// APC rack PDU (PowerNet-MIB rPDUOutletControl / rPDUOutletStatus).
    ApcRpdu,
    /// Raritan PX (PDU2-MIB outletSwitchingState / switchingOperation).
    RaritanPx,
    /// Eaton ePDU (EATON-EPDU-MIB outletControlStatus / outletControlOffCmd, OnCmd).
    EatonEpdu,
    /// Explicit OIDs and values.
    Custom(CustomProfile),
}

/// A PDU the built-in profiles do not know: the outlet number is appended to both OIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomProfile {
    /// Control column, e.g. `1.3.6.1.4.1.318.1.1.4.4.2.1.3` (outlet N is `.N`).
    pub control_oid: String,
    /// Status column (may equal the control column).
    pub status_oid: String,
    /// Value written to switch on.
    pub on: i64,
    /// Value written to switch off.
    pub off: i64,
    /// Value the status column reads when on.
    pub status_on: i64,
    /// Value the status column reads when off.
    pub status_off: i64,
}

/// An outlet by number or by the name the PDU gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutletRef {
    /// Outlet number (the index in the PDU's outlet table).
    Number(u32),
    /// Outlet name as the PDU reports it (looked up once).
    Name(String),
}

/// One SNMP PDU and the outlets of every node it powers.
#[derive(Debug, Clone)]
pub struct SnmpPduParams {
    /// Agent, version, credentials.
    pub snmp: SnmpParams,
    /// Which OIDs to use.
    pub profile: PduProfile,
    /// Per node name, every outlet that feeds it: all must read off before `off` succeeds.
    pub outlets: BTreeMap<String, Vec<OutletRef>>,
    /// Pause between reads while waiting for outlets to show the requested state.
    pub poll_interval: Duration,
    /// How long `reboot` keeps the outlets off before switching them on again.
    pub off_time: Duration,
}
