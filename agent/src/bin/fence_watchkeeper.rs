//! `fence_watchkeeper`: a fence agent for Pacemaker (fence-agents CLI and stdin protocol) over
//! watchkeeper's native IPMI, Redfish, SNMP PDU, IF-MIB and Modbus drivers; see
//! `agent::fence::pacemaker`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(agent::fence::pacemaker::main(&args))
}
