//! Switched PDUs over Modbus (TCP, or RTU on a serial line): one outlet per coil or holding
//! register, switched off and read back until the PDU reports it off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the PDU is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusTransport {
    /// Modbus TCP (port 502 by default).
    Tcp {
        /// PDU address and port.
        address: SocketAddr,
    },
    /// Modbus RTU on a serial port (RS-485 adapters are the usual wiring), 8N1.
    Rtu {
        /// Serial device, e.g. `/dev/watchkeeper/rs485-0`.
        path: PathBuf,
        /// Line speed.
        baud: u32,
    },
}

/// How one outlet is switched and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutletControl {
    /// A coil: 1 = powered, 0 = off (write FC5, read FC1).
    Coil {
        /// Coil address (0-based protocol address).
        address: u16,
    },
    /// A holding register holding `on` or `off` (write FC6, read FC3).
    Register {
        /// Register address (0-based protocol address).
        address: u16,
        /// The value that means powered.
        on: u16,
        /// The value that means off.
        off: u16,
    },
}

/// One outlet: the unit (slave) id that answers for it and how it is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlet {
    /// Modbus unit id (1–247; 255 or 0 for some TCP gateways).
    pub unit: u8,
    /// Coil or register.
    pub control: OutletControl,
}

/// One Modbus PDU and the outlets of every node it powers.
#[derive(Debug, Clone)]
pub struct ModbusParams {
    /// TCP or RTU.
    pub transport: ModbusTransport,
    /// Per node name, every outlet that feeds it (a node with two power supplies has two):
    /// all must read off before `off` succeeds.
    pub outlets: BTreeMap<String, Vec<Outlet>>,
    /// Upper bound on one request (and on connecting); tokio-modbus has none of its own.
    pub request_timeout: Duration,
    /// Pause between reads while waiting for outlets to show the requested state.
    pub poll_interval: Duration,
    /// How long `reboot` keeps the outlets off before switching them on again.
    pub off_time: Duration,
}
