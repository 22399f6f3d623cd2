//! The fence devices that switch outlets and ports rather than whole machines: Modbus PDUs
//! (`type = "modbus"`), SNMP PDUs (`type = "snmp-pdu"`) and switch ports over IF-MIB
//! (`type = "ifmib"`).
//!
//! These devices serve many nodes at once, so the nodes they fence are the keys of a map
//! (`outlets = { beta = [...] }`, `ports = { beta = [...] }`) rather than one `target`, and a
//! node fed by two power supplies or connected by two paths names every outlet or port: the
//! driver only reports it off when all of them read off. Mistakes in these maps would fence the
//! wrong machine, so every entry is checked here with its own line and key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use drivers::fence::modbus::{ModbusParams, ModbusTransport, Outlet, OutletControl};
use drivers::fence::snmp::ifmib::{IfMibParams, PortRef};
use drivers::fence::snmp::pdu::{CustomProfile, OutletRef, PduProfile, SnmpPduParams};
use drivers::fence::snmp::{AuthProtocol, PrivProtocol, SnmpParams, SnmpSecurity};
use drivers::secret::Secret;
use toml::Spanned;

use super::convert::Converter;
use super::fence::RawFenceDevice;

/// Modbus TCP's standard port.
pub const DEFAULT_MODBUS_PORT: u16 = 502;
/// RTU line speed unless `baud` says otherwise: the factory setting of most RS-485 PDUs.
pub const DEFAULT_MODBUS_BAUD: u32 = 9600;
/// Unit id unless `unit` (per device or per outlet) says otherwise.
pub const DEFAULT_MODBUS_UNIT: u8 = 1;
/// SNMP's standard port.
pub const DEFAULT_SNMP_PORT: u16 = 161;
/// One Modbus or SNMP request unless `request_timeout` says otherwise: a PDU on the management
/// LAN answers in milliseconds, so one second is generous, and the retries cover a lost datagram.
pub const DEFAULT_PDU_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// SNMP resends unless `retries` says otherwise.
pub const DEFAULT_SNMP_RETRIES: u32 = 2;
/// How long `reboot` keeps outlets off unless `off_time` says otherwise: long enough for a
/// power supply's capacitors to drain so the machine really loses power.
pub const DEFAULT_OFF_TIME: Duration = Duration::from_secs(5);
/// Most outlets or ports one node may name (two or four power supplies, multipath ports).
pub const MAX_OUTLETS_PER_NODE: usize = 8;

/// An IF-MIB device with its unfencing policy.
#[derive(Debug, Clone)]
pub struct IfMibConfig {
    /// The driver's parameters.
    pub params: IfMibParams,
    /// When the node's ports are enabled again.
    pub unfence: UnfencePolicy,
}

/// When a fabric-fenced node's ports are re-enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnfencePolicy {
    /// As soon as the node has rejoined the cluster healthy (its heartbeats arrive again).
    Auto,
    /// Only by `watchkeeper unfence NODE`, which still refuses while the node is considered dead.
    Manual,
}

impl UnfencePolicy {
    /// As the file spells it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

impl Converter<'_> {
    pub(super) fn modbus(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        poll_interval: Option<Duration>,
    ) -> Option<super::FenceDeviceKind> {
        let transport = match (&raw.address, &raw.serial) {
            (Some(_), Some(serial)) => {
                self.error(
                    serial.span(),
                    format!("{key}.serial"),
                    "address (Modbus TCP) and serial (Modbus RTU) are both set: keep one"
                        .to_owned(),
                );
                None
            }
            (None, None) => {
                self.error(
                    raw.name.span(),
                    format!("{key}.address"),
                    "modbus fence device needs `address` for Modbus TCP (e.g. address = \
                     \"10.0.0.40:502\") or `serial` for Modbus RTU (e.g. serial = \
                     \"/dev/watchkeeper/rs485-0\")"
                        .to_owned(),
                );
                None
            }
            (Some(address), None) => self
                .socket_address(address, &format!("{key}.address"), DEFAULT_MODBUS_PORT)
                .map(|address| ModbusTransport::Tcp { address }),
            (None, Some(serial)) => {
                let path = self.path_or(Some(serial), "", &format!("{key}.serial"));
                let baud = self.baud(raw, key);
                match (path, baud) {
                    (Some(path), Some(baud)) => Some(ModbusTransport::Rtu { path, baud }),
                    _ => None,
                }
            }
        };
        if raw.baud.is_some() && raw.serial.is_none() {
            let span = raw.baud.as_ref().map_or(0..0, Spanned::span);
            self.error(
                span,
                format!("{key}.baud"),
                "baud applies to Modbus RTU only: set serial, or remove baud".to_owned(),
            );
        }
        let unit = match &raw.unit {
            None => Some(DEFAULT_MODBUS_UNIT),
            Some(u) => self.unit_id(*u.get_ref(), u.span(), &format!("{key}.unit")),
        };
        let mut outlets = BTreeMap::new();
        let mut ok = true;
        for (node, list) in raw.outlets.iter().flatten() {
            let node_key = format!("{key}.outlets.{}", node.get_ref());
            ok &= self.list_length(list, &node_key, "outlet");
            let mut parsed = Vec::new();
            for (i, entry) in list.get_ref().iter().enumerate() {
                let entry_key = format!("{node_key}[{i}]");
                match self.modbus_outlet(entry, &entry_key, unit.unwrap_or(DEFAULT_MODBUS_UNIT)) {
                    Some(o) if parsed.contains(&o) => {
                        self.error(
                            entry.span(),
                            entry_key,
                            "this outlet is listed twice for the node".to_owned(),
                        );
                        ok = false;
                    }
                    Some(o) => parsed.push(o),
                    None => ok = false,
                }
            }
            outlets.insert(node.get_ref().clone(), parsed);
        }
        let request_timeout = self.duration_or(
            raw.request_timeout.as_ref(),
            &format!("{key}.request_timeout"),
            DEFAULT_PDU_REQUEST_TIMEOUT,
        );
        let off_time = self.duration_or(
            raw.off_time.as_ref(),
            &format!("{key}.off_time"),
            DEFAULT_OFF_TIME,
        );
        unit?;
        if !ok {
            return None;
        }
        Some(super::FenceDeviceKind::Modbus(ModbusParams {
            transport: transport?,
            outlets,
            request_timeout: request_timeout?,
            poll_interval: poll_interval?,
            off_time: off_time?,
        }))
    }

    fn baud(&mut self, raw: &RawFenceDevice, key: &str) -> Option<u32> {
        let Some(b) = &raw.baud else {
            return Some(DEFAULT_MODBUS_BAUD);
        };
        match u32::try_from(*b.get_ref()) {
            Ok(v) if super::STANDARD_BAUD_RATES.contains(&v) => Some(v),
            _ => {
                let rates: Vec<String> = super::STANDARD_BAUD_RATES
                    .iter()
                    .map(u32::to_string)
                    .collect();
                self.error(
                    b.span(),
                    format!("{key}.baud"),
                    format!(
                        "baud {} is not a standard rate: expected one of {}",
                        b.get_ref(),
                        rates.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn unit_id(&mut self, value: i64, span: std::ops::Range<usize>, key: &str) -> Option<u8> {
        match u8::try_from(value) {
            Ok(v @ (0..=247 | 255)) => Some(v),
            _ => {
                self.error(
                    span,
                    key,
                    format!(
                        "unit {value} is not a Modbus unit id: expected 1 to 247 (0 or 255 for \
                         some TCP gateways)"
                    ),
                );
                None
            }
        }
    }

    fn list_length(
        &mut self,
        list: &Spanned<Vec<Spanned<toml::Value>>>,
        key: &str,
        what: &str,
    ) -> bool {
        let n = list.get_ref().len();
        if n == 0 || n > MAX_OUTLETS_PER_NODE {
            self.error(
                list.span(),
                key,
                format!(
                    "{n} {what}s listed: expected 1 to {MAX_OUTLETS_PER_NODE}, every {what} that \
                     feeds or connects the node"
                ),
            );
            return false;
        }
        true
    }

    fn modbus_outlet(
        &mut self,
        entry: &Spanned<toml::Value>,
        key: &str,
        default_unit: u8,
    ) -> Option<Outlet> {
        const SHAPE: &str = "expected { coil = N } or { register = N, on = V, off = V }, \
                             optionally with unit = U";
        let Some(table) = entry.get_ref().as_table() else {
            self.error(
                entry.span(),
                key,
                format!("outlet {} is not a table: {SHAPE}", entry.get_ref()),
            );
            return None;
        };
        let int = |name: &str| table.get(name).map(|v| v.as_integer());
        if let Some(unknown) = table
            .keys()
            .find(|k| !matches!(k.as_str(), "coil" | "register" | "on" | "off" | "unit"))
        {
            self.error(
                entry.span(),
                key,
                format!("outlet key {unknown} is not known: {SHAPE}"),
            );
            return None;
        }
        let address = |v: Option<Option<i64>>| v.flatten().and_then(|v| u16::try_from(v).ok());
        let unit = match int("unit") {
            None => Some(default_unit),
            Some(Some(u)) => self.unit_id(u, entry.span(), &format!("{key}.unit")),
            Some(None) => {
                self.error(
                    entry.span(),
                    format!("{key}.unit"),
                    "unit is not an integer".to_owned(),
                );
                None
            }
        };
        let control = match (int("coil"), int("register")) {
            (Some(c), None) if int("on").is_none() && int("off").is_none() => {
                address(Some(c)).map(|address| OutletControl::Coil { address })
            }
            (None, Some(r)) => {
                let value =
                    |v: Option<Option<i64>>| v.flatten().and_then(|v| u16::try_from(v).ok());
                match (address(Some(r)), value(int("on")), value(int("off"))) {
                    (Some(address), Some(on), Some(off)) if on != off => {
                        Some(OutletControl::Register { address, on, off })
                    }
                    (Some(_), Some(_), Some(_)) => {
                        self.error(
                            entry.span(),
                            key,
                            "on and off are the same value: the outlet's state could not be told \
                             apart"
                                .to_owned(),
                        );
                        return None;
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if control.is_none() {
            self.error(
                entry.span(),
                key,
                format!(
                    "outlet {} is not a Modbus outlet: {SHAPE} (addresses and values 0 to 65535)",
                    entry.get_ref()
                ),
            );
        }
        Some(Outlet {
            unit: unit?,
            control: control?,
        })
    }

    pub(super) fn snmp_pdu(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
        poll_interval: Option<Duration>,
    ) -> Option<super::FenceDeviceKind> {
        let snmp = self.snmp_params(raw, key, password);
        let profile = self.pdu_profile(raw, key);
        let mut outlets = BTreeMap::new();
        let mut ok = true;
        for (node, list) in raw.outlets.iter().flatten() {
            let node_key = format!("{key}.outlets.{}", node.get_ref());
            ok &= self.list_length(list, &node_key, "outlet");
            let mut parsed = Vec::new();
            for (i, entry) in list.get_ref().iter().enumerate() {
                let entry_key = format!("{node_key}[{i}]");
                let outlet = match entry.get_ref() {
                    toml::Value::Integer(n) => u32::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .map(OutletRef::Number),
                    toml::Value::String(s) if !s.is_empty() => Some(OutletRef::Name(s.clone())),
                    _ => None,
                };
                match outlet {
                    Some(o) if parsed.contains(&o) => {
                        self.error(
                            entry.span(),
                            entry_key,
                            "this outlet is listed twice for the node".to_owned(),
                        );
                        ok = false;
                    }
                    Some(o) => parsed.push(o),
                    None => {
                        self.error(
                            entry.span(),
                            entry_key,
                            format!(
                                "outlet {} is not an outlet: expected its number (1, 2, ...) or \
                                 its name as the PDU reports it (\"Outlet 5\")",
                                entry.get_ref()
                            ),
                        );
                        ok = false;
                    }
                }
            }
            outlets.insert(node.get_ref().clone(), parsed);
        }
        let off_time = self.duration_or(
            raw.off_time.as_ref(),
            &format!("{key}.off_time"),
            DEFAULT_OFF_TIME,
        );
        if !ok {
            return None;
        }
        Some(super::FenceDeviceKind::SnmpPdu(SnmpPduParams {
            snmp: snmp?,
            profile: profile?,
            outlets,
            poll_interval: poll_interval?,
            off_time: off_time?,
        }))
    }

    pub(super) fn ifmib(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
        poll_interval: Option<Duration>,
    ) -> Option<super::FenceDeviceKind> {
        let snmp = self.snmp_params(raw, key, password);
        let mut ports = BTreeMap::new();
        let mut ok = true;
        for (node, list) in raw.ports.iter().flatten() {
            let node_key = format!("{key}.ports.{}", node.get_ref());
            ok &= self.list_length(list, &node_key, "port");
            let mut parsed = Vec::new();
            for (i, entry) in list.get_ref().iter().enumerate() {
                let entry_key = format!("{node_key}[{i}]");
                let port = match entry.get_ref() {
                    toml::Value::Integer(n) => u32::try_from(*n)
                        .ok()
                        .filter(|n| *n > 0)
                        .map(PortRef::Index),
                    toml::Value::String(s) if !s.is_empty() => Some(PortRef::Name(s.clone())),
                    _ => None,
                };
                match port {
                    Some(p) if parsed.contains(&p) => {
                        self.error(
                            entry.span(),
                            entry_key,
                            "this port is listed twice for the node".to_owned(),
                        );
                        ok = false;
                    }
                    Some(p) => parsed.push(p),
                    None => {
                        self.error(
                            entry.span(),
                            entry_key,
                            format!(
                                "port {} is not a switch port: expected its ifIndex (5) or its \
                                 ifName or ifAlias (\"fc1/5\")",
                                entry.get_ref()
                            ),
                        );
                        ok = false;
                    }
                }
            }
            ports.insert(node.get_ref().clone(), parsed);
        }
        let unfence = match raw.unfence.as_ref().map(|u| (u, u.get_ref().as_str())) {
            None | Some((_, "auto")) => Some(UnfencePolicy::Auto),
            Some((_, "manual")) => Some(UnfencePolicy::Manual),
            Some((u, other)) => {
                self.error(
                    u.span(),
                    format!("{key}.unfence"),
                    format!(
                        "unfence {other:?} is not known: expected \"auto\" (enable the ports once \
                         the node has rejoined) or \"manual\" (by `watchkeeper unfence`)"
                    ),
                );
                None
            }
        };
        if !ok {
            return None;
        }
        Some(super::FenceDeviceKind::IfMib(IfMibConfig {
            params: IfMibParams {
                snmp: snmp?,
                ports,
                poll_interval: poll_interval?,
                check_oper_status: raw.check_oper_status.as_ref().is_none_or(|c| *c.get_ref()),
            },
            unfence: unfence?,
        }))
    }

    fn socket_address(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        default_port: u16,
    ) -> Option<SocketAddr> {
        let text = raw.get_ref();
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, default_port))
        });
        if parsed.is_none() {
            self.error(
                raw.span(),
                key,
                format!(
                    "address {text:?} is not an IP address with an optional port: expected e.g. \
                     \"10.0.0.40\" or \"10.0.0.40:{default_port}\""
                ),
            );
        }
        parsed
    }

    /// Address, version and credentials of an SNMP device: `community` (v2c) or `username`
    /// with `password` and usually `privacy_password` (v3).
    fn snmp_params(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
    ) -> Option<SnmpParams> {
        let word = raw.kind.get_ref().word();
        let address = match &raw.address {
            Some(a) => self.socket_address(a, &format!("{key}.address"), DEFAULT_SNMP_PORT),
            None => {
                self.required(raw, None, key, "address", "\"10.0.0.41\"");
                None
            }
        };
        let community = self.secret(
            raw.community.as_ref(),
            raw.community_file.as_ref(),
            key,
            "community",
        );
        let privacy_password = self.secret(
            raw.privacy_password.as_ref(),
            raw.privacy_password_file.as_ref(),
            key,
            "privacy_password",
        );
        let v3_only: [(&str, Option<std::ops::Range<usize>>); 3] = [
            (
                "auth_protocol",
                raw.auth_protocol.as_ref().map(Spanned::span),
            ),
            ("privacy", raw.privacy.as_ref().map(Spanned::span)),
            (
                "privacy_password",
                raw.privacy_password
                    .as_ref()
                    .or(raw.privacy_password_file.as_ref())
                    .map(Spanned::span),
            ),
        ];
        let security = match (community?, &raw.username) {
            (Some(_), Some(user)) => {
                self.error(
                    user.span(),
                    format!("{key}.username"),
                    "community (SNMP v2c) and username (SNMP v3) are both set: keep one".to_owned(),
                );
                None
            }
            (None, None) => {
                self.error(
                    raw.name.span(),
                    format!("{key}.community"),
                    format!(
                        "{word} fence device needs `community` or `community_file` (SNMP v2c), \
                         or `username` with `password` and `privacy_password` (SNMP v3)"
                    ),
                );
                None
            }
            (Some(community), None) => {
                let mut ok = true;
                for (field, span) in v3_only {
                    if let Some(span) = span {
                        self.error(
                            span,
                            format!("{key}.{field}"),
                            format!("{field} applies to SNMP v3 only (with username): remove it"),
                        );
                        ok = false;
                    }
                }
                ok.then_some(SnmpSecurity::V2c { community })
            }
            (None, Some(user)) => {
                let auth = match raw
                    .auth_protocol
                    .as_ref()
                    .map(|a| (a, a.get_ref().as_str()))
                {
                    None | Some((_, "sha" | "SHA" | "sha1" | "SHA1")) => Some(AuthProtocol::Sha1),
                    Some((_, "sha256" | "SHA256" | "sha-256" | "SHA-256")) => {
                        Some(AuthProtocol::Sha256)
                    }
                    Some((a, other)) => {
                        self.error(
                            a.span(),
                            format!("{key}.auth_protocol"),
                            format!(
                                "auth_protocol {other:?} is not supported: expected \"sha\" or \
                                 \"sha256\" (MD5 is not offered)"
                            ),
                        );
                        None
                    }
                };
                let privacy_on = match raw.privacy.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None | Some((_, "aes" | "AES" | "aes128" | "AES128")) => Some(true),
                    Some((_, "none")) => Some(false),
                    Some((p, other)) => {
                        self.error(
                            p.span(),
                            format!("{key}.privacy"),
                            format!(
                                "privacy {other:?} is not supported: expected \"aes\" (AES-128) \
                                 or \"none\" (authNoPriv: the PDU's commands travel in clear)"
                            ),
                        );
                        None
                    }
                };
                if password.is_none() {
                    self.error(
                        user.span(),
                        format!("{key}.password"),
                        "SNMP v3 needs the user's authentication passphrase in `password` or \
                         `password_file`"
                            .to_owned(),
                    );
                }
                let privacy = match (privacy_on, privacy_password.clone().flatten()) {
                    (Some(true), Some(p)) => Some(Some((PrivProtocol::Aes128, p))),
                    (Some(true), None) => {
                        if privacy_password.is_some() {
                            self.error(
                                user.span(),
                                format!("{key}.privacy_password"),
                                "SNMP v3 with privacy needs `privacy_password` or \
                                 `privacy_password_file`; set privacy = \"none\" for authNoPriv"
                                    .to_owned(),
                            );
                        }
                        None
                    }
                    (Some(false), Some(_)) => {
                        let span = v3_only[2].1.clone().unwrap_or(0..0);
                        self.error(
                            span,
                            format!("{key}.privacy_password"),
                            "privacy_password is set but privacy = \"none\": remove one".to_owned(),
                        );
                        None
                    }
                    (Some(false), None) => Some(None),
                    (None, _) => None,
                };
                match (auth, privacy, password) {
                    (Some(auth), Some(privacy), Some(auth_password)) => Some(SnmpSecurity::V3 {
                        username: user.get_ref().clone(),
                        auth,
                        auth_password,
                        privacy,
                    }),
                    _ => None,
                }
            }
        };
        let request_timeout = self.duration_or(
            raw.request_timeout.as_ref(),
            &format!("{key}.request_timeout"),
            DEFAULT_PDU_REQUEST_TIMEOUT,
        );
        let retries = match &raw.retries {
            None => Some(DEFAULT_SNMP_RETRIES),
            Some(r) => match u32::try_from(*r.get_ref()) {
                Ok(v) if v <= 10 => Some(v),
                _ => {
                    self.error(
                        r.span(),
                        format!("{key}.retries"),
                        format!("retries {} is out of range: expected 0 to 10", r.get_ref()),
                    );
                    None
                }
            },
        };
        Some(SnmpParams {
            address: address?,
            security: security?,
            request_timeout: request_timeout?,
            retries: retries?,
        })
    }

    fn pdu_profile(&mut self, raw: &RawFenceDevice, key: &str) -> Option<PduProfile> {
        let custom_fields: [(&str, Option<std::ops::Range<usize>>); 6] = [
            ("control_oid", raw.control_oid.as_ref().map(Spanned::span)),
            ("status_oid", raw.status_oid.as_ref().map(Spanned::span)),
            ("on_value", raw.on_value.as_ref().map(Spanned::span)),
            ("off_value", raw.off_value.as_ref().map(Spanned::span)),
            ("status_on", raw.status_on.as_ref().map(Spanned::span)),
            ("status_off", raw.status_off.as_ref().map(Spanned::span)),
        ];
        let word = raw.profile.as_ref().map(|p| p.get_ref().as_str());
        let profile = match word {
            None | Some("auto") => Some(PduProfile::Auto),
            Some("apc") => Some(PduProfile::ApcMasterSwitch),
            Some("apc-rpdu") => Some(PduProfile::ApcRpdu),
            Some("raritan") => Some(PduProfile::RaritanPx),
            Some("eaton") => Some(PduProfile::EatonEpdu),
            Some("custom") => return self.custom_profile(raw, key),
            Some(other) => {
                let span = raw.profile.as_ref().map_or(0..0, Spanned::span);
                self.error(
                    span,
                    format!("{key}.profile"),
                    format!(
                        "profile {other:?} is not known: expected \"auto\" (by sysObjectID), \
                         \"apc\", \"apc-rpdu\", \"raritan\", \"eaton\" or \"custom\""
                    ),
                );
                None
            }
        };
        for (field, span) in custom_fields {
            if let Some(span) = span {
                self.error(
                    span,
                    format!("{key}.{field}"),
                    format!("{field} applies to profile = \"custom\" only: remove it"),
                );
                return None;
            }
        }
        profile
    }

    fn custom_profile(&mut self, raw: &RawFenceDevice, key: &str) -> Option<PduProfile> {
        let oid = |me: &mut Self, v: Option<&Spanned<String>>, field: &str| {
            let v = me.required(raw, v, key, field, "\"1.3.6.1.4.1.318.1.1.4.4.2.1.3\"")?;
            let text = v.get_ref().trim_start_matches('.');
            let valid = !text.is_empty()
                && text
                    .split('.')
                    .all(|p| !p.is_empty() && p.parse::<u32>().is_ok());
            if valid {
                Some(text.to_owned())
            } else {
                me.error(
                    v.span(),
                    format!("{key}.{field}"),
                    format!(
                        "{field} {:?} is not a numeric OID: expected e.g. \
                         \"1.3.6.1.4.1.318.1.1.4.4.2.1.3\" (the outlet number is appended)",
                        v.get_ref()
                    ),
                );
                None
            }
        };
        let control_oid = oid(self, raw.control_oid.as_ref(), "control_oid");
        let status_oid = match &raw.status_oid {
            None => control_oid.clone(),
            Some(_) => oid(self, raw.status_oid.as_ref(), "status_oid"),
        };
        let int = |me: &mut Self, v: Option<&Spanned<i64>>, field: &str, example: &str| {
            if v.is_none() {
                me.error(
                    raw.name.span(),
                    format!("{key}.{field}"),
                    format!("profile \"custom\" needs `{field}`, e.g. {field} = {example}"),
                );
            }
            v.map(|v| *v.get_ref())
        };
        let on = int(self, raw.on_value.as_ref(), "on_value", "1");
        let off = int(self, raw.off_value.as_ref(), "off_value", "2");
        let status_on = raw.status_on.as_ref().map(|v| *v.get_ref()).or(on);
        let status_off = raw.status_off.as_ref().map(|v| *v.get_ref()).or(off);
        if let (Some(a), Some(b)) = (status_on, status_off) {
            if a == b {
                let span = raw
                    .status_off
                    .as_ref()
                    .or(raw.off_value.as_ref())
                    .map_or(0..0, Spanned::span);
                self.error(
                    span,
                    format!("{key}.status_off"),
                    "the on and off status values are the same: the outlet's state could not be \
                     told apart"
                        .to_owned(),
                );
                return None;
            }
        }
        Some(PduProfile::Custom(CustomProfile {
            control_oid: control_oid?,
            status_oid: status_oid?,
            on: on?,
            off: off?,
            status_on: status_on?,
            status_off: status_off?,
        }))
    }
}
