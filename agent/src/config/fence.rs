//! Fence devices (`[[fence_device]]`) and each node's ordered fencing levels
//! (`fencing = [["ipmi-b"], ["pdu-1", "pdu-2"]]` in a `[[node]]`).
//!
//! Fencing is what makes a takeover safe, so a mistake here must stop the agent at start rather
//! than surface during a failover: every level must name defined devices, every device in a
//! node's level must be one that fences that node, credentials must be complete and password
//! files private (mode 0600), and options that weaken safety (`insecure`, integrity-less IPMI)
//! must be spelled out. The result is plain data; `crate::fence` turns it into drivers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drivers::fence::exec::ExecParams;
use drivers::fence::modbus::ModbusParams;
use drivers::fence::redfish::{parse_fingerprint, RedfishAuth, RedfishParams, TlsTrust};
use drivers::fence::snmp::pdu::SnmpPduParams;
use drivers::secret::Secret;
use serde::Deserialize;
use toml::Spanned;

use super::convert::{humane, Converter};
use super::fence_pdu::IfMibConfig;
use super::raw::{RawDuration, RawNode};

/// Every fence device and every node's fencing levels, validated.
#[derive(Debug, Clone, Default)]
pub struct FenceConfig {
    /// The devices, in file order.
    pub devices: Vec<FenceDeviceConfig>,
    /// Per node name, its levels in the order they are tried; a level is the names of devices
    /// that must all succeed. Nodes without `fencing` are absent.
    pub levels: BTreeMap<String, Vec<Vec<String>>>,
}

impl FenceConfig {
    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&FenceDeviceConfig> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// One `[[fence_device]]`.
#[derive(Debug, Clone)]
pub struct FenceDeviceConfig {
    /// Unique name.
    pub name: String,
    /// The nodes it fences.
    pub targets: Vec<String>,
    /// Deadline of one operation (off, on, status, …) unless the caller gives one.
    pub timeout: Duration,
    /// How often the running agent checks the device (reachable, credentials accepted, targets
    /// known), so a broken fence path is reported before it is needed.
    pub monitor_interval: Duration,
    /// Driver and its parameters.
    pub kind: FenceDeviceKind,
}

/// Driver-specific settings.
#[derive(Debug, Clone)]
pub enum FenceDeviceKind {
    /// Native IPMI v2.0 (RMCP+).
    Ipmi(IpmiConfig),
    /// Native Redfish.
    Redfish(RedfishParams),
    /// Any fence-agents program.
    Exec(ExecParams),
    /// A switched PDU over Modbus TCP or RTU.
    Modbus(ModbusParams),
    /// A switched PDU over SNMP.
    SnmpPdu(SnmpPduParams),
    /// Switch ports disabled over SNMP (IF-MIB): fabric fencing, undone by unfencing.
    IfMib(IfMibConfig),
}

impl FenceDeviceKind {
    /// The type as the configuration file spells it.
    pub fn type_word(&self) -> &'static str {
        match self {
            Self::Ipmi(_) => "ipmi",
            Self::Redfish(_) => "redfish",
            Self::Exec(_) => "exec",
            Self::Modbus(_) => "modbus",
            Self::SnmpPdu(_) => "snmp-pdu",
            Self::IfMib(_) => "ifmib",
        }
    }
}

/// IPMI settings as configured (turned into the driver's parameters by `crate::fence`).
#[derive(Debug, Clone)]
pub struct IpmiConfig {
    /// BMC address and UDP port.
    pub address: SocketAddr,
    /// BMC user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// RMCP+ cipher suite: 3 or 17 (2 and 16 sign without encrypting; 1 and 15 only with
    /// `danger_allow_no_integrity`).
    pub cipher_suite: u8,
    /// Requested privilege level.
    pub privilege: IpmiPrivilege,
    /// Allows cipher suites without integrity protection (lab BMCs only).
    pub danger_allow_no_integrity: bool,
    /// Pause between power-state reads while confirming.
    pub poll_interval: Duration,
}

/// IPMI session privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpmiPrivilege {
    /// Enough for chassis control.
    Operator,
    /// Full.
    Administrator,
}

/// Operation deadline unless `timeout` says otherwise: IPMI and Redfish BMCs confirm a power
/// change in seconds; 30 s covers a slow BMC while keeping a dead one from stalling failover.
pub const DEFAULT_FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Power-state polling unless `poll_interval` says otherwise: fast enough that a confirmed off
/// costs little beyond the BMC's own delay, slow enough not to load a BMC's small CPU.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Single Redfish request bound unless `request_timeout` says otherwise; a BMC's web server
/// answers in well under a second when healthy.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// IPMI's standard port (RMCP, UDP 623), used when `address` has no port.
pub const DEFAULT_IPMI_PORT: u16 = 623;
/// Cipher suite 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128): the one every RMCP+ BMC implements.
pub const DEFAULT_CIPHER_SUITE: u8 = 3;
/// Background check of every device unless `monitor_interval` says otherwise: a BMC or PDU
/// that broke is reported within a minute, and checking is light enough for a BMC's small CPU.
pub const DEFAULT_DEVICE_MONITOR_INTERVAL: Duration = Duration::from_secs(60);
/// Longest device name; it appears in every log line about the device.
pub const MAX_DEVICE_NAME_LEN: usize = 32;
/// At most this many levels per node: each is tried in turn, so more only delays giving up.
pub const MAX_LEVELS: usize = 8;

/// `[[fence_device]]` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[fence_device]] table with name and type"
)]
pub(super) struct RawFenceDevice {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) kind: Spanned<RawFenceType>,
    pub(super) target: Option<Spanned<String>>,
    pub(super) plugs: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) poll_interval: Option<Spanned<RawDuration>>,
    pub(super) monitor_interval: Option<Spanned<RawDuration>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) cipher_suite: Option<Spanned<i64>>,
    pub(super) privilege: Option<Spanned<String>>,
    pub(super) danger_allow_no_integrity: Option<Spanned<bool>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) system: Option<Spanned<String>>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) fingerprint: Option<Spanned<String>>,
    pub(super) insecure: Option<Spanned<bool>>,
    pub(super) request_timeout: Option<Spanned<RawDuration>>,
    pub(super) agent: Option<Spanned<String>>,
    pub(super) options: Option<BTreeMap<String, Spanned<String>>>,
    pub(super) serial: Option<Spanned<String>>,
    pub(super) baud: Option<Spanned<i64>>,
    pub(super) unit: Option<Spanned<i64>>,
    pub(super) outlets: Option<RawTargetMap>,
    pub(super) off_time: Option<Spanned<RawDuration>>,
    pub(super) community: Option<Spanned<String>>,
    pub(super) community_file: Option<Spanned<String>>,
    pub(super) auth_protocol: Option<Spanned<String>>,
    pub(super) privacy: Option<Spanned<String>>,
    pub(super) privacy_password: Option<Spanned<String>>,
    pub(super) privacy_password_file: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) control_oid: Option<Spanned<String>>,
    pub(super) status_oid: Option<Spanned<String>>,
    pub(super) on_value: Option<Spanned<i64>>,
    pub(super) off_value: Option<Spanned<i64>>,
    pub(super) status_on: Option<Spanned<i64>>,
    pub(super) status_off: Option<Spanned<i64>>,
    pub(super) ports: Option<RawTargetMap>,
    pub(super) check_oper_status: Option<Spanned<bool>>,
    pub(super) unfence: Option<Spanned<String>>,
}

/// `outlets = { beta = [...] }` / `ports = { beta = [...] }`: per node, its outlets or ports.
pub(super) type RawTargetMap = BTreeMap<Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>>;

/// `type = "ipmi" | "redfish" | "exec" | "modbus" | "snmp-pdu" | "ifmib"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a fence device type: ipmi, redfish, exec, modbus, snmp-pdu or ifmib")]
pub(super) enum RawFenceType {
    #[serde(rename = "ipmi")]
    Ipmi,
    #[serde(rename = "redfish")]
    Redfish,
    #[serde(rename = "exec")]
    Exec,
    #[serde(rename = "modbus")]
    Modbus,
    #[serde(rename = "snmp-pdu")]
    SnmpPdu,
    #[serde(rename = "ifmib")]
    IfMib,
}

impl RawFenceType {
    /// As the file spells it.
    pub(super) fn word(self) -> &'static str {
        match self {
            Self::Ipmi => "ipmi",
            Self::Redfish => "redfish",
            Self::Exec => "exec",
            Self::Modbus => "modbus",
            Self::SnmpPdu => "snmp-pdu",
            Self::IfMib => "ifmib",
        }
    }

    /// Types whose nodes are the keys of an outlet or port map rather than `target`.
    fn mapped(self) -> bool {
        matches!(self, Self::Modbus | Self::SnmpPdu | Self::IfMib)
    }
}

/// A type-specific key: its name, the types it applies to, and where it is written if it is.
type OwnedKey<'a> = (&'a str, &'a [RawFenceType], Option<std::ops::Range<usize>>);

/// The span of a map's first key, to point at the map.
fn first_key_span(map: Option<&RawTargetMap>) -> Option<std::ops::Range<usize>> {
    map.and_then(|m| m.keys().next()).map(Spanned::span)
}

/// A node's `fencing` as written: levels of device names.
pub(super) type RawFencing = Spanned<Vec<Spanned<Vec<Spanned<String>>>>>;

impl Converter<'_> {
    /// Checks every device and every node's levels. `None` if anything was wrong.
    pub(super) fn fencing(
        &mut self,
        devices: &[RawFenceDevice],
        nodes: &[RawNode],
        fencing: &[Option<&RawFencing>],
    ) -> Option<FenceConfig> {
        let node_names: Vec<&str> = nodes.iter().map(|n| n.name.get_ref().as_str()).collect();
        let mut ok = true;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut typed = Vec::with_capacity(devices.len());
        // Targets per device name, also for devices with other errors, so levels are still
        // checked against them.
        let mut targets_of: HashMap<&str, Vec<String>> = HashMap::new();
        for (i, raw) in devices.iter().enumerate() {
            let key = format!("fence_device[{i}]");
            let name = raw.name.get_ref().as_str();
            ok &= self.name(
                &raw.name,
                &format!("{key}.name"),
                "fence device name",
                MAX_DEVICE_NAME_LEN,
            );
            if let Some(&first) = seen.get(name) {
                let line = self.line_of(&devices[first].name.span());
                let message = format!(
                    "fence device name {name} is already used on line {line}: device names must \
                     be unique"
                );
                self.error(raw.name.span(), format!("{key}.name"), message);
                ok = false;
            } else {
                seen.insert(name, i);
            }
            let device = self.device(raw, &key, &node_names);
            if let Some(d) = &device {
                targets_of.insert(name, d.targets.clone());
            } else {
                ok = false;
                let mut t: Vec<String> = raw.target.iter().map(|t| t.get_ref().clone()).collect();
                t.extend(raw.plugs.iter().flatten().map(|(n, _)| n.get_ref().clone()));
                for map in [&raw.outlets, &raw.ports] {
                    t.extend(map.iter().flatten().map(|(n, _)| n.get_ref().clone()));
                }
                targets_of.insert(name, t);
            }
            typed.extend(device);
        }

        let mut levels = BTreeMap::new();
        for (i, (node, raw)) in nodes.iter().zip(fencing).enumerate() {
            let Some(raw) = raw else { continue };
            let key = format!("node[{i}].fencing");
            let node_name = node.name.get_ref();
            if raw.get_ref().is_empty() || raw.get_ref().len() > MAX_LEVELS {
                let message = format!(
                    "fencing has {} levels: expected 1 to {MAX_LEVELS}, each a list of device \
                     names, e.g. [[\"ipmi-b\"], [\"pdu-1\", \"pdu-2\"]]",
                    raw.get_ref().len()
                );
                self.error(raw.span(), key, message);
                ok = false;
                continue;
            }
            let mut node_levels = Vec::new();
            for (l, level) in raw.get_ref().iter().enumerate() {
                let level_key = format!("{key}[{l}]");
                if level.get_ref().is_empty() {
                    self.error(
                        level.span(),
                        level_key,
                        "fencing level is empty: expected the names of the devices that must all \
                         succeed"
                            .to_owned(),
                    );
                    ok = false;
                    continue;
                }
                let mut names = Vec::new();
                for (d, device) in level.get_ref().iter().enumerate() {
                    let device_key = format!("{level_key}[{d}]");
                    let dname = device.get_ref();
                    match targets_of.get(dname.as_str()) {
                        None => {
                            let defined: Vec<&str> =
                                devices.iter().map(|d| d.name.get_ref().as_str()).collect();
                            let message = format!(
                                "fence device {dname} is not defined; defined fence devices: {}",
                                if defined.is_empty() {
                                    "none".to_owned()
                                } else {
                                    defined.join(", ")
                                }
                            );
                            self.error(device.span(), device_key, message);
                            ok = false;
                        }
                        Some(targets) if !targets.iter().any(|t| t == node_name) => {
                            let message = format!(
                                "fence device {dname} does not fence node {node_name}: it fences \
                                 {}; add {node_name} to its target or plugs",
                                if targets.is_empty() {
                                    "no node".to_owned()
                                } else {
                                    targets.join(", ")
                                }
                            );
                            self.error(device.span(), device_key, message);
                            ok = false;
                        }
                        Some(_) if names.contains(dname) => {
                            let message =
                                format!("fence device {dname} appears twice in this level");
                            self.error(device.span(), device_key, message);
                            ok = false;
                        }
                        Some(_) => names.push(dname.clone()),
                    }
                }
                node_levels.push(names);
            }
            levels.insert(node_name.clone(), node_levels);
        }
        ok.then_some(FenceConfig {
            devices: typed,
            levels,
        })
    }

    fn device(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        nodes: &[&str],
    ) -> Option<FenceDeviceConfig> {
        let kind = *raw.kind.get_ref();
        let type_word = kind.word();
        let mut ok = true;
        // Keys that belong to other types are refused, so a typo'd type is noticed.
        let options = raw
            .options
            .as_ref()
            .and_then(|o| o.values().next())
            .map(Spanned::span);
        let plugs_span = raw
            .plugs
            .as_ref()
            .and_then(|p| p.keys().next())
            .map(Spanned::span);
        // Every type-specific key with the types it belongs to.
        use RawFenceType::{Exec, IfMib, Ipmi, Modbus, Redfish, SnmpPdu};
        let owned: Vec<OwnedKey<'_>> = vec![
            (
                "target",
                &[Ipmi, Redfish, Exec],
                raw.target.as_ref().map(Spanned::span),
            ),
            (
                "address",
                &[Ipmi, Modbus, SnmpPdu, IfMib],
                raw.address.as_ref().map(Spanned::span),
            ),
            (
                "username",
                &[Ipmi, Redfish, Exec, SnmpPdu, IfMib],
                raw.username.as_ref().map(Spanned::span),
            ),
            (
                "password",
                &[Ipmi, Redfish, Exec, SnmpPdu, IfMib],
                raw.password.as_ref().map(Spanned::span),
            ),
            (
                "password_file",
                &[Ipmi, Redfish, Exec, SnmpPdu, IfMib],
                raw.password_file.as_ref().map(Spanned::span),
            ),
            (
                "cipher_suite",
                &[Ipmi],
                raw.cipher_suite.as_ref().map(Spanned::span),
            ),
            (
                "privilege",
                &[Ipmi],
                raw.privilege.as_ref().map(Spanned::span),
            ),
            (
                "danger_allow_no_integrity",
                &[Ipmi],
                raw.danger_allow_no_integrity.as_ref().map(Spanned::span),
            ),
            ("url", &[Redfish], raw.url.as_ref().map(Spanned::span)),
            ("system", &[Redfish], raw.system.as_ref().map(Spanned::span)),
            ("auth", &[Redfish], raw.auth.as_ref().map(Spanned::span)),
            (
                "ca_file",
                &[Redfish],
                raw.ca_file.as_ref().map(Spanned::span),
            ),
            (
                "fingerprint",
                &[Redfish],
                raw.fingerprint.as_ref().map(Spanned::span),
            ),
            (
                "insecure",
                &[Redfish],
                raw.insecure.as_ref().map(Spanned::span),
            ),
            (
                "request_timeout",
                &[Redfish, Modbus, SnmpPdu, IfMib],
                raw.request_timeout.as_ref().map(Spanned::span),
            ),
            ("agent", &[Exec], raw.agent.as_ref().map(Spanned::span)),
            ("options", &[Exec], options),
            ("plugs", &[Exec], plugs_span),
            ("serial", &[Modbus], raw.serial.as_ref().map(Spanned::span)),
            ("baud", &[Modbus], raw.baud.as_ref().map(Spanned::span)),
            ("unit", &[Modbus], raw.unit.as_ref().map(Spanned::span)),
            (
                "outlets",
                &[Modbus, SnmpPdu],
                first_key_span(raw.outlets.as_ref()),
            ),
            (
                "off_time",
                &[Modbus, SnmpPdu],
                raw.off_time.as_ref().map(Spanned::span),
            ),
            (
                "community",
                &[SnmpPdu, IfMib],
                raw.community.as_ref().map(Spanned::span),
            ),
            (
                "community_file",
                &[SnmpPdu, IfMib],
                raw.community_file.as_ref().map(Spanned::span),
            ),
            (
                "auth_protocol",
                &[SnmpPdu, IfMib],
                raw.auth_protocol.as_ref().map(Spanned::span),
            ),
            (
                "privacy",
                &[SnmpPdu, IfMib],
                raw.privacy.as_ref().map(Spanned::span),
            ),
            (
                "privacy_password",
                &[SnmpPdu, IfMib],
                raw.privacy_password.as_ref().map(Spanned::span),
            ),
            (
                "privacy_password_file",
                &[SnmpPdu, IfMib],
                raw.privacy_password_file.as_ref().map(Spanned::span),
            ),
            (
                "retries",
                &[SnmpPdu, IfMib],
                raw.retries.as_ref().map(Spanned::span),
            ),
            (
                "profile",
                &[SnmpPdu],
                raw.profile.as_ref().map(Spanned::span),
            ),
            (
                "control_oid",
                &[SnmpPdu],
                raw.control_oid.as_ref().map(Spanned::span),
            ),
            (
                "status_oid",
                &[SnmpPdu],
                raw.status_oid.as_ref().map(Spanned::span),
            ),
            (
                "on_value",
                &[SnmpPdu],
                raw.on_value.as_ref().map(Spanned::span),
            ),
            (
                "off_value",
                &[SnmpPdu],
                raw.off_value.as_ref().map(Spanned::span),
            ),
            (
                "status_on",
                &[SnmpPdu],
                raw.status_on.as_ref().map(Spanned::span),
            ),
            (
                "status_off",
                &[SnmpPdu],
                raw.status_off.as_ref().map(Spanned::span),
            ),
            ("ports", &[IfMib], first_key_span(raw.ports.as_ref())),
            (
                "check_oper_status",
                &[IfMib],
                raw.check_oper_status.as_ref().map(Spanned::span),
            ),
            ("unfence", &[IfMib], raw.unfence.as_ref().map(Spanned::span)),
        ];
        let foreign = owned
            .into_iter()
            .filter(|(_, owners, _)| !owners.contains(&kind))
            .map(|(f, _, s)| (f, s));
        for (field, span) in foreign {
            if let Some(span) = span {
                let message = if field == "target" {
                    let map = if kind == IfMib { "ports" } else { "outlets" };
                    format!("target does not apply to {type_word} fence devices: the nodes it fences are the keys of `{map}`")
                } else {
                    format!("{field} does not apply to {type_word} fence devices: remove it")
                };
                self.error(span, format!("{key}.{field}"), message);
                ok = false;
            }
        }

        // Targets: `target` (one node) or, for exec, `plugs` (node -> plug).
        let mut targets = Vec::new();
        let mut plugs = BTreeMap::new();
        if let Some(target) = &raw.target {
            ok &= self.known_node(target, &format!("{key}.target"), nodes);
            targets.push(target.get_ref().clone());
            plugs.insert(target.get_ref().clone(), None);
        }
        if kind == RawFenceType::Exec {
            for (node, plug) in raw.plugs.iter().flatten() {
                ok &= self.known_node(node, &format!("{key}.plugs.{}", node.get_ref()), nodes);
                if !targets.contains(node.get_ref()) {
                    targets.push(node.get_ref().clone());
                }
                plugs.insert(node.get_ref().clone(), Some(plug.get_ref().clone()));
            }
        }
        if kind.mapped() {
            let map = if kind == IfMib {
                &raw.ports
            } else {
                &raw.outlets
            };
            for node in map.iter().flat_map(BTreeMap::keys) {
                let field = if kind == IfMib { "ports" } else { "outlets" };
                ok &= self.known_node(node, &format!("{key}.{field}.{}", node.get_ref()), nodes);
                targets.push(node.get_ref().clone());
            }
        }
        if targets.is_empty() && kind.mapped() {
            let (field, example) = match kind {
                IfMib => ("ports", "ports = { beta = [5, \"fc1/6\"] }"),
                Modbus => ("outlets", "outlets = { beta = [{ coil = 2 }] }"),
                _ => ("outlets", "outlets = { beta = [3, 4] }"),
            };
            self.error(
                raw.name.span(),
                format!("{key}.{field}"),
                format!("{type_word} fence device needs `{field}`, the nodes it fences and theirs, e.g. {example}"),
            );
            ok = false;
        } else if targets.is_empty() {
            let message = match kind {
                RawFenceType::Exec => {
                    "exec fence device needs `target`, the node it fences, or \
                                       `plugs`, e.g. plugs = { alpha = \"1\", beta = \"2\" }"
                }
                _ => "fence device needs `target`, the node it fences, e.g. target = \"beta\"",
            };
            self.error(raw.name.span(), format!("{key}.target"), message.to_owned());
            ok = false;
        }

        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            &format!("{key}.timeout"),
            DEFAULT_FENCE_TIMEOUT,
        );
        let monitor_interval = self.duration_or(
            raw.monitor_interval.as_ref(),
            &format!("{key}.monitor_interval"),
            DEFAULT_DEVICE_MONITOR_INTERVAL,
        );
        let poll_interval = self.duration_or(
            raw.poll_interval.as_ref(),
            &format!("{key}.poll_interval"),
            DEFAULT_POLL_INTERVAL,
        );
        let password = self.password(raw, key);
        if raw.username.is_some() && password.as_ref().is_some_and(Option::is_none) {
            let span = raw.username.as_ref().map_or(0..0, Spanned::span);
            self.error(
                span,
                format!("{key}.username"),
                "username is set but neither password nor password_file is".to_owned(),
            );
            ok = false;
        }

        let typed = match kind {
            RawFenceType::Ipmi => self.ipmi(raw, key, password.clone().flatten(), poll_interval),
            RawFenceType::Redfish => {
                self.redfish(raw, key, password.clone().flatten(), poll_interval)
            }
            RawFenceType::Exec => {
                self.exec(raw, key, password.clone().flatten(), poll_interval, plugs)
            }
            RawFenceType::Modbus => self.modbus(raw, key, poll_interval),
            RawFenceType::SnmpPdu => {
                self.snmp_pdu(raw, key, password.clone().flatten(), poll_interval)
            }
            RawFenceType::IfMib => self.ifmib(raw, key, password.clone().flatten(), poll_interval),
        };
        match (ok, typed, timeout, password, monitor_interval) {
            (true, Some(kind), Some(timeout), Some(_), Some(monitor_interval)) => {
                Some(FenceDeviceConfig {
                    name: raw.name.get_ref().clone(),
                    targets,
                    timeout,
                    monitor_interval,
                    kind,
                })
            }
            _ => None,
        }
    }

    pub(super) fn known_node(&mut self, node: &Spanned<String>, key: &str, nodes: &[&str]) -> bool {
        if nodes.contains(&node.get_ref().as_str()) {
            return true;
        }
        let message = format!(
            "node {} is not defined; defined nodes: {}",
            node.get_ref(),
            nodes.join(", ")
        );
        self.error(node.span(), key, message);
        false
    }

    pub(super) fn duration_or(
        &mut self,
        raw: Option<&Spanned<RawDuration>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(raw) = raw else { return Some(default) };
        let d = self.duration(raw, key)?;
        if d.is_zero() {
            let field = key.rsplit('.').next().unwrap_or(key);
            self.error(
                raw.span(),
                key,
                format!("{field} is {}: expected more than zero", humane(d)),
            );
            return None;
        }
        Some(d)
    }

    /// `Some(None)`: no password configured; `None`: an error was recorded.
    fn password(&mut self, raw: &RawFenceDevice, key: &str) -> Option<Option<Secret>> {
        self.secret(
            raw.password.as_ref(),
            raw.password_file.as_ref(),
            key,
            "password",
        )
    }

    /// A secret given inline as `field` or in a 0600 file as `field_file`. `Some(None)`: neither
    /// is set; `None`: an error was recorded.
    pub(super) fn secret(
        &mut self,
        inline: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        key: &str,
        field: &str,
    ) -> Option<Option<Secret>> {
        match (inline, file) {
            (Some(_), Some(file)) => {
                self.error(
                    file.span(),
                    format!("{key}.{field}_file"),
                    format!("{field} and {field}_file are both set: keep one"),
                );
                None
            }
            (Some(p), None) => Some(Some(Secret::new(p.get_ref().clone()))),
            (None, None) => Some(None),
            (None, Some(file)) => {
                let path = self.path_or(Some(file), "", &format!("{key}.{field}_file"))?;
                match Secret::from_file(&path) {
                    Ok(secret) => Some(Some(secret)),
                    Err(e) => {
                        self.error(file.span(), format!("{key}.{field}_file"), e.to_string());
                        None
                    }
                }
            }
        }
    }

    pub(super) fn required<'r>(
        &mut self,
        raw: &'r RawFenceDevice,
        value: Option<&'r Spanned<String>>,
        key: &str,
        field: &str,
        example: &str,
    ) -> Option<&'r Spanned<String>> {
        if value.is_none() {
            let t = raw.kind.get_ref().word();
            self.error(
                raw.name.span(),
                format!("{key}.{field}"),
                format!("{t} fence device needs `{field}`, e.g. {field} = {example}"),
            );
        }
        value
    }

    fn ipmi(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
        poll_interval: Option<Duration>,
    ) -> Option<FenceDeviceKind> {
        let address = self.required(
            raw,
            raw.address.as_ref(),
            key,
            "address",
            "\"10.0.0.12:623\"",
        );
        let address = address.and_then(|a| {
            let text = a.get_ref();
            let parsed = text
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| text.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, DEFAULT_IPMI_PORT)));
            if parsed.is_none() {
                self.error(
                    a.span(),
                    format!("{key}.address"),
                    format!("address {text:?} is not an IP address with an optional port: expected e.g. \"10.0.0.12:623\""),
                );
            }
            parsed
        });
        let username = self
            .required(raw, raw.username.as_ref(), key, "username", "\"admin\"")
            .map(|u| u.get_ref().clone());
        if password.is_none() && raw.password.is_none() && raw.password_file.is_none() {
            self.error(
                raw.name.span(),
                format!("{key}.password"),
                "ipmi fence device needs `password` or `password_file`".to_owned(),
            );
        }
        let allow = raw
            .danger_allow_no_integrity
            .as_ref()
            .is_some_and(|a| *a.get_ref());
        let suite = match &raw.cipher_suite {
            None => Some(DEFAULT_CIPHER_SUITE),
            Some(s) => {
                let v = *s.get_ref();
                match u8::try_from(v) {
                    Ok(v @ (2 | 3 | 16 | 17)) => Some(v),
                    Ok(v @ (1 | 15)) if allow => Some(v),
                    _ => {
                        let message = if v == 1 || v == 15 {
                            format!(
                                "cipher_suite {v} has no integrity protection: use 3 or 17, or set \
                                 danger_allow_no_integrity = true for a lab BMC"
                            )
                        } else {
                            format!(
                                "cipher_suite {v} is not supported: expected 3 or 17 (or 2, 16)"
                            )
                        };
                        self.error(s.span(), format!("{key}.cipher_suite"), message);
                        None
                    }
                }
            }
        };
        let privilege = match raw.privilege.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "administrator")) => Some(IpmiPrivilege::Administrator),
            Some((_, "operator")) => Some(IpmiPrivilege::Operator),
            Some((p, other)) => {
                self.error(
                    p.span(),
                    format!("{key}.privilege"),
                    format!("privilege {other:?} is not known: expected \"operator\" or \"administrator\""),
                );
                None
            }
        };
        Some(FenceDeviceKind::Ipmi(IpmiConfig {
            address: address?,
            username: username?,
            password: password?,
            cipher_suite: suite?,
            privilege: privilege?,
            danger_allow_no_integrity: allow,
            poll_interval: poll_interval?,
        }))
    }

    fn redfish(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
        poll_interval: Option<Duration>,
    ) -> Option<FenceDeviceKind> {
        let url = self.required(raw, raw.url.as_ref(), key, "url", "\"https://10.0.0.12\"");
        let url = url.and_then(|u| {
            let text = u.get_ref();
            if text.starts_with("https://") || text.starts_with("http://") {
                Some(text.trim_end_matches('/').to_owned())
            } else {
                self.error(
                    u.span(),
                    format!("{key}.url"),
                    format!(
                        "url {text:?} is not an http(s) URL: expected e.g. \"https://10.0.0.12\""
                    ),
                );
                None
            }
        });
        let auth = match raw.auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
            None | Some((_, "basic")) => Some(RedfishAuth::Basic),
            Some((_, "session")) => Some(RedfishAuth::Session),
            Some((a, other)) => {
                self.error(
                    a.span(),
                    format!("{key}.auth"),
                    format!("auth {other:?} is not known: expected \"basic\" or \"session\""),
                );
                None
            }
        };
        let insecure = raw.insecure.as_ref().filter(|i| *i.get_ref());
        let chosen: Vec<(&str, std::ops::Range<usize>)> = [
            ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
            ("fingerprint", raw.fingerprint.as_ref().map(Spanned::span)),
            ("insecure", insecure.map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(f, s)| s.map(|s| (f, s)))
        .collect();
        let tls = if let [_, (field, span), ..] = chosen.as_slice() {
            self.error(
                span.clone(),
                format!("{key}.{field}"),
                "ca_file, fingerprint and insecure = true are alternatives: keep one".to_owned(),
            );
            None
        } else if let Some(file) = &raw.ca_file {
            self.path_or(Some(file), "", &format!("{key}.ca_file"))
                .map(TlsTrust::CaFile)
        } else if let Some(fp) = &raw.fingerprint {
            let pin = parse_fingerprint(fp.get_ref());
            if pin.is_none() {
                self.error(
                    fp.span(),
                    format!("{key}.fingerprint"),
                    "fingerprint is not a SHA-256 fingerprint: expected 64 hex digits, optionally \
                     colon-separated as `openssl x509 -noout -fingerprint -sha256` prints them"
                        .to_owned(),
                );
            }
            pin.map(TlsTrust::Pin)
        } else if insecure.is_some() {
            Some(TlsTrust::DangerInsecure)
        } else {
            Some(TlsTrust::System)
        };
        let request_timeout = self.duration_or(
            raw.request_timeout.as_ref(),
            &format!("{key}.request_timeout"),
            DEFAULT_REQUEST_TIMEOUT,
        );
        Some(FenceDeviceKind::Redfish(RedfishParams {
            url: url?,
            system: raw.system.as_ref().map(|s| s.get_ref().clone()),
            username: raw.username.as_ref().map(|u| u.get_ref().clone()),
            password,
            auth: auth?,
            tls: tls?,
            request_timeout: request_timeout?,
            poll_interval: poll_interval?,
        }))
    }

    fn exec(
        &mut self,
        raw: &RawFenceDevice,
        key: &str,
        password: Option<Secret>,
        poll_interval: Option<Duration>,
        plugs: BTreeMap<String, Option<String>>,
    ) -> Option<FenceDeviceKind> {
        let agent = self.required(
            raw,
            raw.agent.as_ref(),
            key,
            "agent",
            "\"/usr/sbin/fence_apc_snmp\"",
        );
        let agent = agent.and_then(|a| {
            let path = PathBuf::from(a.get_ref());
            if path.is_absolute() {
                Some(path)
            } else {
                self.error(
                    a.span(),
                    format!("{key}.agent"),
                    format!("agent {:?} is not an absolute path: expected e.g. \"/usr/sbin/fence_ipmilan\"", a.get_ref()),
                );
                None
            }
        });
        let mut options = Vec::new();
        let mut ok = true;
        if let Some(user) = &raw.username {
            options.push(("username".to_owned(), user.get_ref().clone()));
        }
        for (name, value) in raw.options.iter().flatten() {
            if matches!(
                name.as_str(),
                "action" | "plug" | "port" | "password" | "passwd"
            ) {
                self.error(
                    value.span(),
                    format!("{key}.options.{name}"),
                    format!("options.{name} is set by watchkeeper itself (use password_file for passwords, plugs for plugs): remove it"),
                );
                ok = false;
            } else if value.get_ref().contains('\n') {
                self.error(
                    value.span(),
                    format!("{key}.options.{name}"),
                    format!("options.{name} contains a line break"),
                );
                ok = false;
            } else {
                options.push((name.clone(), value.get_ref().clone()));
            }
        }
        if !ok {
            return None;
        }
        Some(FenceDeviceKind::Exec(ExecParams {
            agent: agent?,
            options,
            password,
            plugs,
            poll_interval: poll_interval?,
        }))
    }
}
