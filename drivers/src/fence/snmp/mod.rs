//! SNMP fencing: switched PDUs (`pdu`) and fabric fencing by switch port (`ifmib`), over one
//! SNMP v2c / v3 session layer with the deadlines, retries and error mapping snmp2 lacks.

pub mod ifmib;
pub mod pdu;
mod session;
mod wire;

pub use session::{Oid, SessionStats, SnmpSession, SnmpValue};

use std::net::SocketAddr;
use std::time::Duration;

use crate::secret::Secret;

/// How to reach and authenticate to one SNMP agent.
#[derive(Debug, Clone)]
pub struct SnmpParams {
    /// Agent address (UDP, port 161 by default).
    pub address: SocketAddr,
    /// Version and credentials.
    pub security: SnmpSecurity,
    /// Wait for one answer before resending the request.
    pub request_timeout: Duration,
    /// Resends after the first request (the operation's deadline bounds them all).
    pub retries: u32,
}

/// SNMP version and credentials.
#[derive(Debug, Clone)]
pub enum SnmpSecurity {
    /// v2c with a community string (read-write for fencing).
    V2c {
        /// The community.
        community: Secret,
    },
    /// v3 user-based security: authNoPriv or authPriv (noAuthNoPriv is not offered).
    V3 {
        /// USM user name.
        username: String,
        /// Authentication protocol.
        auth: AuthProtocol,
        /// Authentication passphrase.
        auth_password: Secret,
        /// Privacy protocol and passphrase; `None` is authNoPriv.
        privacy: Option<(PrivProtocol, Secret)>,
    },
}

/// USM authentication protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    /// HMAC-SHA-96.
    Sha1,
    /// HMAC-SHA-256 (usmHMAC192SHA256AuthProtocol).
    Sha256,
}

/// USM privacy protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    /// CFB128-AES-128.
    Aes128,
}
