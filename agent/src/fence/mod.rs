//! Fencing in the agent: turning the configuration's devices into drivers, the `watchkeeper
//! fence` command, and `fence_watchkeeper`, the drop-in fence agent for Pacemaker.
//!
//! The drivers (`drivers::fence`) know devices; this module knows the configuration and the
//! people and programs that call them, and nothing here adds policy: it builds a device, runs
//! the one operation asked for, and reports the driver's answer and how long each step took.

use drivers::fence::exec::ExecDevice;
use drivers::fence::ipmi::{IpmiDevice, IpmiParams, Privilege};
use drivers::fence::modbus::ModbusDevice;
use drivers::fence::redfish::RedfishDevice;
use drivers::fence::snmp::ifmib::IfMibDevice;
use drivers::fence::snmp::pdu::SnmpPduDevice;
use drivers::fence::{FenceDevice, FenceError};

use crate::config::{FenceConfig, FenceDeviceConfig, FenceDeviceKind, IpmiConfig, IpmiPrivilege};

pub mod cli;
pub mod ledger;
pub mod pacemaker;
pub mod unfence;

/// Builds the driver for one configured device.
///
/// IPMI and Redfish devices fence the single node in their `target`; exec devices every node in
/// their plug map; PDUs every node in their outlet map, switches every node in their port map.
pub fn build_device(config: &FenceDeviceConfig) -> Result<Box<dyn FenceDevice>, FenceError> {
    let target = config.targets.first().cloned().unwrap_or_default();
    Ok(match &config.kind {
        FenceDeviceKind::Ipmi(ipmi) => Box::new(IpmiDevice::new(
            config.name.clone(),
            target,
            ipmi_params(ipmi),
        )?),
        FenceDeviceKind::Redfish(params) => Box::new(RedfishDevice::new(
            config.name.clone(),
            target,
            params.clone(),
        )?),
        FenceDeviceKind::Exec(params) => {
            Box::new(ExecDevice::new(config.name.clone(), params.clone())?)
        }
        FenceDeviceKind::Modbus(params) => {
            Box::new(ModbusDevice::new(config.name.clone(), params.clone())?)
        }
        FenceDeviceKind::SnmpPdu(params) => {
            Box::new(SnmpPduDevice::new(config.name.clone(), params.clone())?)
        }
        FenceDeviceKind::IfMib(ifmib) => {
            Box::new(IfMibDevice::new(config.name.clone(), ifmib.params.clone())?)
        }
    })
}

/// Builds every configured device, in file order; stops at the first that cannot be built.
pub fn build_devices(config: &FenceConfig) -> Result<Vec<Box<dyn FenceDevice>>, FenceError> {
    config.devices.iter().map(build_device).collect()
}

/// The IPMI driver's parameters for a configured device.
pub fn ipmi_params(config: &IpmiConfig) -> IpmiParams {
    let mut params = IpmiParams::new(
        config.address,
        config.username.clone(),
        config.password.clone(),
    );
    params.cipher_suite = config.cipher_suite;
    params.privilege = match config.privilege {
        IpmiPrivilege::Operator => Privilege::Operator,
        IpmiPrivilege::Administrator => Privilege::Administrator,
    };
    params.danger_allow_no_integrity = config.danger_allow_no_integrity;
    params.poll_interval = config.poll_interval;
    params
}

/// The configured type of a device, as the config file spells it.
pub fn type_word(config: &FenceDeviceConfig) -> &'static str {
    config.kind.type_word()
}
