//! The rig description: which hosts a test cluster has, how they are cabled, how each is
//! fenced and which resources the group holds, in a TOML file that names things the way a
//! wiring diagram would, so that the same scenarios can be pointed at another rig.
//!
//! ```toml
//! name = "pair"
//!
//! [timing]
//! heartbeat_interval = "100ms"
//! deadtime = "600ms"
//! fence_delay = "300ms"
//!
//! [[host]]
//! name = "alpha"
//! fence = ["ipmi"]          # fencing levels, first tried first: "ipmi", "redfish" (BMCs),
//!                           # "modbus", "snmp" (switched PDUs), each kind at most once
//!
//! [[host]]
//! name = "beta"
//! fence = ["ipmi"]
//!
//! [[cable]]                 # a serial heartbeat cable
//! between = ["alpha", "beta"]
//!
//! [ethernet]                # the UDP heartbeat network; every host is on it unless listed
//! hosts = ["alpha", "beta"]
//!
//! [[resource]]              # the group, in start order
//! name = "catalog"
//! kind = "pgsql"            # marker | vip | pgsql | ocf
//!
//! [[resource]]              # an OCF agent from resource-agents (see `rig::ocf`)
//! name = "storage"
//! kind = "ocf"
//! agent = "Filesystem"      # Dummy | IPaddr2 (with `address`) | Filesystem
//!
//! [qemu]                    # optional, for `--backend qemu` only
//! watchdog_timeout = "2s"   # each guest's i6300esb, whole seconds
//! pdu = true                # a Modbus PDU as every host's last fencing level
//! ```
//!
//! Errors name the file and, for syntax and type errors, the line (from the TOML parser); for
//! a wrong value, the key path (`host[2].fence[0]`) and what is expected.
//!
//! # Real hardware
//!
//! `backend = "real"` describes machines that already run watchkeeper (installed, configured,
//! cabled, fenced; the description's timing and fencing are then documentation, the hosts'
//! own configuration rules). Each host says how the harness reaches it and its power, and each
//! resource how to see it running:
//!
//! ```toml
//! backend = "real"
//!
//! [[host]]
//! name = "alpha"
//! fence = ["ipmi"]
//! # The harness appends one argument, a shell command line, and runs it on the host.
//! run = ["ssh", "-o", "BatchMode=yes", "root@alpha-mgmt"]
//! # Run on the harness's machine: the host's power (the status must print "on" or "off").
//! power_status = ["ipmitool", "-I", "lanplus", "-H", "alpha-bmc", "-U", "admin", "-f", "/root/bmc-alpha", "chassis", "power", "status"]
//! power_on = ["ipmitool", "-I", "lanplus", "-H", "alpha-bmc", "-U", "admin", "-f", "/root/bmc-alpha", "chassis", "power", "on"]
//! power_off = ["ipmitool", "-I", "lanplus", "-H", "alpha-bmc", "-U", "admin", "-f", "/root/bmc-alpha", "chassis", "power", "off"]
//! address = "10.0.0.11"        # its heartbeat LAN address: partitions drop what comes from it
//! lan_interface = "eno1"       # loss and delay (tc netem) go here
//! bmc_address = "10.0.1.11"    # the other hosts lose their way to it in `bmc-down`
//! # Shell lines on the host, with these defaults:
//! # watchkeeper = "watchkeeper"  (the program; `--node NAME` is added to each command)
//! # agent_config = "/etc/watchkeeper/watchkeeper.toml"  (given as --config when set)
//! # agent_start = "systemctl start watchkeeper"
//! # agent_pid = "systemctl show -p MainPID --value watchkeeper"
//! # agent_log = "journalctl -u watchkeeper -o cat --no-pager"  (the agent runs with --log-json)
//!
//! [[cable]]
//! between = ["alpha", "beta"]
//! cut = ["usbrelay", "CABLE_1=1"]   # optional, on the harness: without them no scenario
//! mend = ["usbrelay", "CABLE_1=0"]  # that pulls the cable runs
//!
//! [[resource]]
//! name = "bacula-dir"
//! kind = "marker"
//! check = "systemctl is-active --quiet bacula-dir"   # shell line on the host, 0 = running
//!
//! [[resource]]
//! name = "catalog"
//! kind = "pgsql"
//! psql = "runuser -u postgres -- psql -X -A -t -q -d postgres"   # the default
//! ```
//!
//! A fault the description gives no means for is declined by name before a scenario starts
//! (see `rig::real`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A rig description could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DescError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a wrong type (the message names line and column).
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but cannot be built.
    #[error("{}: {key}: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The key path, e.g. `cable[0].between`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// How a host is fenced at one level (see `rig::fence` for the simulators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceKind {
    /// A BMC over IPMI v2.0 (RMCP+): `ipmi_sim` on the emulated rig.
    Ipmi,
    /// A BMC over Redfish (HTTP): sushy-tools' emulator on the emulated rig.
    Redfish,
    /// A switched PDU over Modbus TCP, the host on one outlet: pymodbus on the emulated rig.
    Modbus,
    /// A switched PDU over SNMP, the host on one outlet: net-snmp's `snmpd` on the emulated
    /// rig.
    Snmp,
}

impl FenceKind {
    /// Every kind, as the description spells it.
    pub const ALL: [FenceKind; 4] = [
        FenceKind::Ipmi,
        FenceKind::Redfish,
        FenceKind::Modbus,
        FenceKind::Snmp,
    ];

    /// As the description spells it.
    pub fn word(self) -> &'static str {
        match self {
            FenceKind::Ipmi => "ipmi",
            FenceKind::Redfish => "redfish",
            FenceKind::Modbus => "modbus",
            FenceKind::Snmp => "snmp",
        }
    }
}

/// A resource of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceKind {
    /// A script that records where it runs: the stand-in for a daemon.
    Marker,
    /// A virtual IP address on the host's LAN interface (needs network namespaces).
    Vip {
        /// Address with prefix, e.g. `10.79.0.100/24`.
        address: String,
    },
    /// The Catalog: a PostgreSQL primary on the holder, a streaming standby on the other host.
    Pgsql,
    /// An OCF resource agent from resource-agents (`kind = "ocf"`, see `rig::ocf`).
    Ocf(super::ocf::OcfAgent),
}

/// One host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Node name.
    pub name: String,
    /// A witness votes but holds nothing and is never fenced.
    pub witness: bool,
    /// Fencing levels.
    pub fence: Vec<FenceKind>,
    /// How to reach and drive it, on a real rig.
    pub real: Option<RealHost>,
}

/// How the harness reaches and drives a real host; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealHost {
    /// Command prefix that runs a shell command line (appended as one argument) on the host.
    pub run: Vec<String>,
    /// Harness-side command printing the host's power state ("on" or "off").
    pub power_status: Vec<String>,
    /// Harness-side command switching the power on.
    pub power_on: Vec<String>,
    /// Harness-side command switching the power off.
    pub power_off: Vec<String>,
    /// The agent's program on the host.
    pub watchkeeper: String,
    /// The agent's configuration file on the host, when not the default.
    pub agent_config: Option<String>,
    /// Shell line starting the agent.
    pub agent_start: String,
    /// Shell line printing the agent's PID (empty or 0 when it does not run).
    pub agent_pid: String,
    /// Shell line printing the agent's JSON log.
    pub agent_log: String,
    /// The host's heartbeat LAN address.
    pub address: Option<String>,
    /// The host's heartbeat LAN interface.
    pub lan_interface: Option<String>,
    /// The host's BMC address (`ip` or `ip:port`).
    pub bmc_address: Option<String>,
}

/// One resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Resource name.
    pub name: String,
    /// What it is.
    pub kind: ResourceKind,
    /// On a real rig: a shell line on a host that succeeds where the resource runs (defaults
    /// for a vip and the Catalog).
    pub check: Option<String>,
    /// On a real rig, for the Catalog: the `psql` command line on a host (unaligned,
    /// tuples-only output); SQL is added with `-c`.
    pub psql: Option<String>,
}

/// A serial cable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cable {
    /// The two hosts, as indexes.
    pub ends: [usize; 2],
    /// On a real rig: harness-side commands that pull and replug it, if the rig can.
    pub cut: Option<Vec<String>>,
    /// See `cut`.
    pub mend: Option<Vec<String>>,
}

/// Which machines the rig is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Built on this machine (`rig::emulated`).
    Emulated,
    /// Real hosts, reached by command (`rig::real`).
    Real,
}

/// A parsed, checked rig description.
#[derive(Debug, Clone)]
pub struct RigDesc {
    /// The rig's name.
    pub name: String,
    /// Which machines it is.
    pub backend: Backend,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Deadtime.
    pub deadtime: Duration,
    /// The holder's head start in a fence race.
    pub fence_delay: Duration,
    /// Hosts, in node-id order (id = index + 1).
    pub hosts: Vec<Host>,
    /// Serial cables, as host indexes.
    pub cables: Vec<[usize; 2]>,
    /// The cables with their real-rig commands, in the same order.
    pub cable_info: Vec<Cable>,
    /// Hosts on the UDP heartbeat network (empty: no such link).
    pub ethernet: Vec<usize>,
    /// The group, in start order.
    pub resources: Vec<Resource>,
    /// Settings only the QEMU backend reads.
    pub qemu: QemuOptions,
}

/// The `[qemu]` table.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// Each guest's watchdog timeout (whole seconds: the i6300esb counts in seconds).
    pub watchdog_timeout: Duration,
    /// A Modbus PDU whose outlets feed the guests, as every host's last fencing level.
    pub pdu: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    backend: Option<String>,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    cable: Vec<RawCable>,
    ethernet: Option<RawEthernet>,
    #[serde(default)]
    resource: Vec<RawResource>,
    #[serde(default)]
    qemu: RawQemu,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQemu {
    watchdog_timeout: Option<String>,
    #[serde(default)]
    pdu: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    heartbeat_interval: Option<String>,
    deadtime: Option<String>,
    fence_delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    #[serde(default)]
    witness: bool,
    #[serde(default)]
    fence: Vec<String>,
    run: Option<Vec<String>>,
    power_status: Option<Vec<String>>,
    power_on: Option<Vec<String>>,
    power_off: Option<Vec<String>>,
    watchkeeper: Option<String>,
    agent_config: Option<String>,
    agent_start: Option<String>,
    agent_pid: Option<String>,
    agent_log: Option<String>,
    address: Option<String>,
    lan_interface: Option<String>,
    bmc_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCable {
    between: Vec<String>,
    cut: Option<Vec<String>>,
    mend: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEthernet {
    hosts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    kind: String,
    address: Option<String>,
    agent: Option<String>,
    directory: Option<String>,
    check: Option<String>,
    psql: Option<String>,
}

impl RigDesc {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, DescError> {
        let text = std::fs::read_to_string(path).map_err(|source| DescError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, DescError> {
        let raw: Raw = toml::from_str(text).map_err(|e| DescError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let bad = |key: String, message: String| DescError::Value {
            path: path.to_path_buf(),
            key,
            message,
        };
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| {
                bad(
                    format!("timing.{key}"),
                    format!("{v:?} is not a duration such as \"100ms\" or \"1s\""),
                )
            }),
        };
        let backend = match raw.backend.as_deref() {
            None | Some("emulated") => Backend::Emulated,
            Some("real") => Backend::Real,
            Some(other) => {
                return Err(bad(
                    "backend".into(),
                    format!("{other:?}: expected \"emulated\" (the default) or \"real\""),
                ))
            }
        };
        let real = backend == Backend::Real;
        let interval = duration(
            "heartbeat_interval",
            &raw.timing.heartbeat_interval,
            Duration::from_millis(100),
        )?;
        let deadtime = duration("deadtime", &raw.timing.deadtime, Duration::from_secs(1))?;
        let fence_delay = duration(
            "fence_delay",
            &raw.timing.fence_delay,
            Duration::from_millis(500),
        )?;
        if raw.host.len() < 2 || raw.host.len() > 3 {
            return Err(bad(
                "host".into(),
                format!(
                    "{} hosts: a rig has two hosts, or two and a witness",
                    raw.host.len()
                ),
            ));
        }
        let mut hosts = Vec::new();
        for (i, h) in raw.host.iter().enumerate() {
            if h.name.is_empty()
                || !h
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad(
                    format!("host[{i}].name"),
                    format!("{:?}: use lowercase letters, digits and '-'", h.name),
                ));
            }
            if hosts.iter().any(|o: &Host| o.name == h.name) {
                return Err(bad(
                    format!("host[{i}].name"),
                    format!("{:?} is named twice", h.name),
                ));
            }
            let mut fence = Vec::new();
            for (j, f) in h.fence.iter().enumerate() {
                let Some(kind) = FenceKind::ALL.into_iter().find(|k| k.word() == f) else {
                    return Err(bad(
                        format!("host[{i}].fence[{j}]"),
                        format!(
                            "unknown fence device kind {f:?}: expected \"ipmi\", \"redfish\", \
                             \"modbus\" or \"snmp\""
                        ),
                    ));
                };
                if fence.contains(&kind) {
                    return Err(bad(
                        format!("host[{i}].fence[{j}]"),
                        format!(
                            "{f:?} is listed twice: each level is a device of another kind, \
                             e.g. fence = [\"ipmi\", \"modbus\"]"
                        ),
                    ));
                }
                fence.push(kind);
            }
            if h.witness && !fence.is_empty() {
                return Err(bad(
                    format!("host[{i}].fence"),
                    "a witness holds nothing and is never fenced: remove `fence`".into(),
                ));
            }
            if !h.witness && fence.is_empty() {
                return Err(bad(
                    format!("host[{i}].fence"),
                    "a host that can hold the group needs a fence device, e.g. fence = [\"ipmi\"]"
                        .into(),
                ));
            }
            let host_real = real_host(h, real, &|k, m| bad(format!("host[{i}].{k}"), m))?;
            hosts.push(Host {
                name: h.name.clone(),
                witness: h.witness,
                fence,
                real: host_real,
            });
        }
        if hosts.iter().filter(|h| !h.witness).count() != 2 {
            return Err(bad(
                "host".into(),
                "exactly two hosts hold the group (the third, if any, is `witness = true`)".into(),
            ));
        }
        let index = |key: String, name: &str| {
            hosts
                .iter()
                .position(|h| h.name == name)
                .ok_or_else(|| bad(key, format!("no host is named {name:?}")))
        };
        let mut cables = Vec::new();
        let mut cable_info = Vec::new();
        for (i, c) in raw.cable.iter().enumerate() {
            if !real && (c.cut.is_some() || c.mend.is_some()) {
                return Err(bad(
                    format!("cable[{i}]"),
                    "`cut` and `mend` are for backend = \"real\" (the emulated rig cuts its own cables)"
                        .into(),
                ));
            }
            if c.cut.is_some() != c.mend.is_some() {
                return Err(bad(
                    format!("cable[{i}]"),
                    "give both `cut` and `mend`, or neither".into(),
                ));
            }
            let key = format!("cable[{i}].between");
            let [a, b] = c.between.as_slice() else {
                return Err(bad(key, "a cable joins exactly two hosts".into()));
            };
            let ends = [index(key.clone(), a)?, index(key.clone(), b)?];
            if ends[0] == ends[1] {
                return Err(bad(key, "a cable joins two different hosts".into()));
            }
            cables.push(ends);
            cable_info.push(Cable {
                ends,
                cut: c.cut.clone(),
                mend: c.mend.clone(),
            });
        }
        let ethernet = match &raw.ethernet {
            None => Vec::new(),
            Some(RawEthernet { hosts: None }) => (0..hosts.len()).collect(),
            Some(RawEthernet { hosts: Some(list) }) => list
                .iter()
                .enumerate()
                .map(|(i, n)| index(format!("ethernet.hosts[{i}]"), n))
                .collect::<Result<_, _>>()?,
        };
        for (i, h) in hosts.iter().enumerate() {
            let linked = ethernet.contains(&i) || cables.iter().any(|c| c.contains(&i));
            if !linked {
                return Err(bad(
                    "ethernet.hosts".into(),
                    format!(
                        "host {:?} has no heartbeat link (no cable, not on ethernet)",
                        h.name
                    ),
                ));
            }
        }
        let mut resources = Vec::new();
        for (i, r) in raw.resource.iter().enumerate() {
            if r.kind != "ocf" {
                for (k, given) in [
                    ("agent", r.agent.is_some()),
                    ("directory", r.directory.is_some()),
                ] {
                    if given {
                        return Err(bad(
                            format!("resource[{i}].{k}"),
                            "only an ocf resource has `agent` and `directory`".into(),
                        ));
                    }
                }
            }
            let kind = match (r.kind.as_str(), &r.address) {
                ("ocf", _) => super::ocf::parse(
                    r.agent.as_deref(),
                    r.address.as_deref(),
                    r.directory.as_deref(),
                    real,
                )
                .map(ResourceKind::Ocf)
                .map_err(|(key, message)| bad(format!("resource[{i}].{key}"), message))?,
                ("marker", None) => ResourceKind::Marker,
                ("pgsql", None) => ResourceKind::Pgsql,
                ("vip", Some(a)) => {
                    let ok = a.split_once('/').is_some_and(|(ip, len)| {
                        ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
                    });
                    if !ok {
                        return Err(bad(
                            format!("resource[{i}].address"),
                            format!(
                                "{a:?} is not an address with a prefix, e.g. \"10.79.0.100/24\""
                            ),
                        ));
                    }
                    ResourceKind::Vip { address: a.clone() }
                }
                ("vip", None) => {
                    return Err(bad(
                        format!("resource[{i}].address"),
                        "a vip needs `address`, e.g. \"10.79.0.100/24\"".into(),
                    ))
                }
                ("marker" | "pgsql", Some(_)) => {
                    return Err(bad(
                        format!("resource[{i}].address"),
                        "only a vip (or an ocf IPaddr2) has an address".into(),
                    ))
                }
                (other, _) => {
                    return Err(bad(
                        format!("resource[{i}].kind"),
                        format!(
                            "unknown kind {other:?}: expected \"marker\", \"vip\", \"pgsql\" or \"ocf\""
                        ),
                    ))
                }
            };
            if !real && (r.check.is_some() || r.psql.is_some()) {
                return Err(bad(
                    format!("resource[{i}]"),
                    "`check` and `psql` are for backend = \"real\" (the emulated rig looks itself)"
                        .into(),
                ));
            }
            if real && kind == ResourceKind::Marker && r.check.is_none() {
                return Err(bad(
                    format!("resource[{i}].check"),
                    "on a real rig a marker resource needs `check`, a shell line that succeeds \
                     on the host running it, e.g. \"systemctl is-active --quiet bacula-dir\""
                        .into(),
                ));
            }
            if let (true, ResourceKind::Ocf(agent), None) = (real, &kind, &r.check) {
                if super::ocf::real_check(&r.name, agent).is_none() {
                    return Err(bad(
                        format!("resource[{i}].check"),
                        "on a real rig an OCF Filesystem needs `directory` (checked with \
                         `mountpoint -q`) or `check`, a shell line that succeeds on the host \
                         that has it mounted"
                            .into(),
                    ));
                }
            }
            if r.psql.is_some() && kind != ResourceKind::Pgsql {
                return Err(bad(
                    format!("resource[{i}].psql"),
                    "only the Catalog (pgsql) has `psql`".into(),
                ));
            }
            if resources.iter().any(|o: &Resource| o.name == r.name) {
                return Err(bad(
                    format!("resource[{i}].name"),
                    format!("{:?} is named twice", r.name),
                ));
            }
            resources.push(Resource {
                name: r.name.clone(),
                kind,
                check: r.check.clone(),
                psql: r.psql.clone(),
            });
        }
        if resources.is_empty() {
            return Err(bad(
                "resource".into(),
                "the group is empty: add at least one [[resource]]".into(),
            ));
        }
        if resources
            .iter()
            .filter(|r| r.kind == ResourceKind::Pgsql)
            .count()
            > 1
        {
            return Err(bad("resource".into(), "one Catalog (pgsql) per rig".into()));
        }
        let watchdog_timeout = match &raw.qemu.watchdog_timeout {
            None => DEFAULT_QEMU_WATCHDOG,
            Some(v) => parse_duration(v)
                .filter(|d| d.subsec_nanos() == 0 && (1..=QEMU_WATCHDOG_MAX_S).contains(&d.as_secs()))
                .ok_or_else(|| {
                    bad(
                        "qemu.watchdog_timeout".into(),
                        format!("{v:?}: expected whole seconds from 1s to {QEMU_WATCHDOG_MAX_S}s, e.g. \"2s\""),
                    )
                })?,
        };
        Ok(Self {
            qemu: QemuOptions {
                watchdog_timeout,
                pdu: raw.qemu.pdu,
            },
            name: raw.name,
            backend,
            interval,
            deadtime,
            fence_delay,
            hosts,
            cables,
            cable_info,
            ethernet,
            resources,
        })
    }

    /// Host `i`'s real-rig settings (present on every host of a real rig).
    pub fn real(&self, i: usize) -> Option<&RealHost> {
        self.hosts.get(i).and_then(|h| h.real.as_ref())
    }

    /// Whether the rig needs network namespaces (a virtual IP needs a host of its own).
    pub fn needs_namespaces(&self) -> bool {
        self.resources.iter().any(|r| {
            matches!(
                r.kind,
                ResourceKind::Vip { .. } | ResourceKind::Ocf(super::ocf::OcfAgent::IPaddr2 { .. })
            )
        })
    }

    /// Whether the rig has a Catalog.
    pub fn has_catalog(&self) -> bool {
        self.resources.iter().any(|r| r.kind == ResourceKind::Pgsql)
    }

    /// Indexes of the two hosts that can hold the group.
    pub fn holders(&self) -> [usize; 2] {
        let mut it = (0..self.hosts.len()).filter(|&i| !self.hosts[i].witness);
        [it.next().unwrap_or(0), it.next().unwrap_or(1)]
    }
}

/// A host's real-rig keys, checked: required on a real rig (power commands only for hosts that
/// can be fenced), refused on an emulated one.
fn real_host(
    h: &RawHost,
    real: bool,
    bad: &dyn Fn(&str, String) -> DescError,
) -> Result<Option<RealHost>, DescError> {
    let given: Vec<&str> = [
        ("run", h.run.is_some()),
        ("power_status", h.power_status.is_some()),
        ("power_on", h.power_on.is_some()),
        ("power_off", h.power_off.is_some()),
        ("watchkeeper", h.watchkeeper.is_some()),
        ("agent_config", h.agent_config.is_some()),
        ("agent_start", h.agent_start.is_some()),
        ("agent_pid", h.agent_pid.is_some()),
        ("agent_log", h.agent_log.is_some()),
        ("address", h.address.is_some()),
        ("lan_interface", h.lan_interface.is_some()),
        ("bmc_address", h.bmc_address.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if !real {
        return match given.first() {
            Some(k) => Err(bad(
                k,
                "is for backend = \"real\"; the emulated rig builds its hosts itself".into(),
            )),
            None => Ok(None),
        };
    }
    let command = |key: &str, v: &Option<Vec<String>>, needed: bool| match v {
        Some(c) if c.is_empty() || c[0].is_empty() => {
            Err(bad(key, "an empty command: give the program first".into()))
        }
        Some(c) => Ok(c.clone()),
        None if needed => Err(bad(
            key,
            format!(
                "a real host needs `{key}`{}",
                if key == "run" {
                    ", the command prefix that runs a shell line on it, e.g. [\"ssh\", \"root@alpha\"]"
                } else {
                    ", a command on the harness's machine (its BMC or PDU), e.g. ipmitool ... chassis power status"
                }
            ),
        )),
        None => Ok(Vec::new()),
    };
    let fenced = !h.witness;
    let text = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_owned());
    Ok(Some(RealHost {
        run: command("run", &h.run, true)?,
        power_status: command("power_status", &h.power_status, fenced)?,
        power_on: command("power_on", &h.power_on, fenced)?,
        power_off: command("power_off", &h.power_off, fenced)?,
        watchkeeper: text(&h.watchkeeper, "watchkeeper"),
        agent_config: h.agent_config.clone(),
        agent_start: text(&h.agent_start, "systemctl start watchkeeper"),
        agent_pid: text(
            &h.agent_pid,
            "systemctl show -p MainPID --value watchkeeper",
        ),
        agent_log: text(&h.agent_log, "journalctl -u watchkeeper -o cat --no-pager"),
        address: h.address.clone(),
        lan_interface: h.lan_interface.clone(),
        bmc_address: h.bmc_address.clone(),
    }))
}

/// A guest watchdog timeout below the deadtime, so that a killed holder's reset is seen before
/// its peer's fence switches it off.
const DEFAULT_QEMU_WATCHDOG: Duration = Duration::from_secs(2);
/// The i6300esb's largest timeout.
const QEMU_WATCHDOG_MAX_S: u64 = 2046;

/// `"250ms"`, `"2s"`, `"1m"`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "pair"
[timing]
deadtime = "600ms"
[[host]]
name = "alpha"
fence = ["ipmi"]
[[host]]
name = "beta"
fence = ["ipmi"]
[[host]]
name = "gamma"
witness = true
[[cable]]
between = ["alpha", "beta"]
[ethernet]
[[resource]]
name = "storage"
kind = "marker"
[[resource]]
name = "address"
kind = "vip"
address = "10.79.0.100/24"
"#;

    fn err(text: &str) -> String {
        RigDesc::parse(Path::new("rig.toml"), text)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_good_description_parses() {
        let d = RigDesc::parse(Path::new("rig.toml"), GOOD).expect("parses");
        assert_eq!(d.hosts.len(), 3);
        assert_eq!(d.deadtime, Duration::from_millis(600));
        assert_eq!(d.interval, Duration::from_millis(100));
        assert_eq!(d.cables, vec![[0, 1]]);
        assert_eq!(d.ethernet, vec![0, 1, 2]);
        assert_eq!(d.holders(), [0, 1]);
        assert!(d.needs_namespaces());
        assert!(!d.has_catalog());
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        let e = err(&GOOD.replace(
            "between = [\"alpha\", \"beta\"]",
            "between = [\"alpha\", \"delta\"]",
        ));
        assert_eq!(e, "rig.toml: cable[0].between: no host is named \"delta\"");
        let e = err(&GOOD.replace(
            "fence = [\"ipmi\"]\n[[host]]\nname = \"beta\"",
            "fence = [\"smoke\"]\n[[host]]\nname = \"beta\"",
        ));
        assert!(
            e.starts_with("rig.toml: host[0].fence[0]: unknown fence device kind \"smoke\""),
            "{e}"
        );
        let e = err(&GOOD.replace("deadtime = \"600ms\"", "deadtime = \"soon\""));
        assert!(e.contains("timing.deadtime"), "{e}");
        let e = err(&GOOD.replace("address = \"10.79.0.100/24\"", "address = \"10.79.0.100\""));
        assert!(e.contains("resource[1].address"), "{e}");
        let e = err(&GOOD.replace("kind = \"marker\"", "kind = \"daemon\""));
        assert!(
            e.contains("resource[0].kind: unknown kind \"daemon\""),
            "{e}"
        );
        // Syntax and type errors carry the parser's line.
        let e = err(&GOOD.replace("[ethernet]", "[ethernet\n"));
        assert!(e.starts_with("rig.toml: ") && e.contains("line"), "{e}");
        let e = err(&GOOD.replace("name = \"gamma\"", "name = \"gamma\"\ncolour = \"red\""));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(&GOOD.replace("witness = true", "witness = true\nfence = [\"ipmi\"]"));
        assert!(e.contains("host[2].fence"), "{e}");
        let e = err(&format!("{GOOD}\n[qemu]\nwatchdog_timeout = \"1500ms\"\n"));
        assert!(e.contains("qemu.watchdog_timeout"), "{e}");
    }

    #[test]
    fn every_fence_kind_parses_in_order_and_each_once() {
        let text = GOOD
            .replacen("fence = [\"ipmi\"]", "fence = [\"redfish\", \"modbus\"]", 1)
            .replacen("fence = [\"ipmi\"]", "fence = [\"snmp\", \"ipmi\"]", 1);
        let d = RigDesc::parse(Path::new("rig.toml"), &text).expect("parses");
        assert_eq!(d.hosts[0].fence, [FenceKind::Redfish, FenceKind::Modbus]);
        assert_eq!(d.hosts[1].fence, [FenceKind::Snmp, FenceKind::Ipmi]);
        let words: Vec<&str> = FenceKind::ALL.iter().map(|k| k.word()).collect();
        assert_eq!(words, ["ipmi", "redfish", "modbus", "snmp"]);
        // A kind twice is refused with its key.
        let e = err(&GOOD.replacen(
            "fence = [\"ipmi\"]",
            "fence = [\"modbus\", \"ipmi\", \"modbus\"]",
            1,
        ));
        assert!(
            e.starts_with("rig.toml: host[0].fence[2]: \"modbus\" is listed twice"),
            "{e}"
        );
        // A kind the rig does not know lists those it does.
        let e = err(&GOOD.replacen("fence = [\"ipmi\"]", "fence = [\"ipmi\", \"snmp-pdu\"]", 1));
        assert_eq!(
            e,
            "rig.toml: host[0].fence[1]: unknown fence device kind \"snmp-pdu\": expected \
             \"ipmi\", \"redfish\", \"modbus\" or \"snmp\""
        );
        // A kind that is not a string is a type error with its line.
        let e = err(&GOOD.replacen("fence = [\"ipmi\"]", "fence = [\"ipmi\", 2]", 1));
        assert!(e.contains("line") && e.contains("fence"), "{e}");
    }

    #[test]
    fn ocf_resources_name_their_agent_and_keys() {
        let ocf = GOOD.replace(
            "name = \"storage\"\nkind = \"marker\"",
            "name = \"storage\"\nkind = \"ocf\"\nagent = \"Filesystem\"",
        );
        let d = RigDesc::parse(Path::new("rig.toml"), &ocf).expect("parses");
        assert_eq!(
            d.resources[0].kind,
            ResourceKind::Ocf(super::super::ocf::OcfAgent::Filesystem { directory: None })
        );
        let e = err(&ocf.replace("\"Filesystem\"", "\"Filesytem\""));
        assert!(
            e.starts_with("rig.toml: resource[0].agent: unknown OCF agent \"Filesytem\""),
            "{e}"
        );
        let e = err(&ocf.replace("agent = \"Filesystem\"", "agent = \"IPaddr2\""));
        assert!(
            e.starts_with("rig.toml: resource[0].address: an IPaddr2"),
            "{e}"
        );
        let e = err(&ocf.replace(
            "agent = \"Filesystem\"",
            "agent = \"Filesystem\"\ndirectory = \"/srv\"",
        ));
        assert!(
            e.starts_with("rig.toml: resource[0].directory: is for backend = \"real\""),
            "{e}"
        );
        let e = err(&GOOD.replace("kind = \"marker\"", "kind = \"marker\"\nagent = \"Dummy\""));
        assert!(
            e.starts_with("rig.toml: resource[0].agent: only an ocf"),
            "{e}"
        );
        // An IPaddr2 needs a namespace per host, as a vip does.
        let ip = RigDesc::parse(
            Path::new("rig.toml"),
            &GOOD
                .replace("kind = \"vip\"", "kind = \"ocf\"\nagent = \"IPaddr2\"")
                .replace(
                    "name = \"storage\"\nkind = \"marker\"",
                    "name = \"storage\"\nkind = \"ocf\"\nagent = \"Dummy\"",
                ),
        )
        .expect("parses");
        assert!(ip.needs_namespaces());
    }

    const REAL: &str = r#"
name = "lab"
backend = "real"
[[host]]
name = "alpha"
fence = ["ipmi"]
run = ["ssh", "root@alpha"]
power_status = ["ipmitool", "chassis", "power", "status"]
power_on = ["ipmitool", "chassis", "power", "on"]
power_off = ["ipmitool", "chassis", "power", "off"]
address = "10.0.0.11"
[[host]]
name = "beta"
fence = ["ipmi"]
run = ["ssh", "root@beta"]
power_status = ["ipmitool", "chassis", "power", "status"]
power_on = ["ipmitool", "chassis", "power", "on"]
power_off = ["ipmitool", "chassis", "power", "off"]
[[cable]]
between = ["alpha", "beta"]
[[resource]]
name = "bacula-dir"
kind = "marker"
check = "systemctl is-active --quiet bacula-dir"
[[resource]]
name = "catalog"
kind = "pgsql"
"#;

    #[test]
    fn a_real_rig_takes_defaults_and_names_what_is_missing() {
        let d = RigDesc::parse(Path::new("lab.toml"), REAL).expect("parses");
        assert_eq!(d.backend, Backend::Real);
        let a = d.real(0).expect("real settings");
        assert_eq!(a.run, ["ssh", "root@alpha"]);
        assert_eq!(a.agent_pid, "systemctl show -p MainPID --value watchkeeper");
        assert_eq!(a.address.as_deref(), Some("10.0.0.11"));
        assert_eq!(d.cable_info[0].cut, None);
        let e = RigDesc::parse(
            Path::new("lab.toml"),
            &REAL.replace("run = [\"ssh\", \"root@alpha\"]\n", ""),
        )
        .expect_err("no run")
        .to_string();
        assert!(
            e.starts_with("lab.toml: host[0].run: a real host needs `run`"),
            "{e}"
        );
        let e = RigDesc::parse(
            Path::new("lab.toml"),
            &REAL.replace("check = \"systemctl is-active --quiet bacula-dir\"\n", ""),
        )
        .expect_err("no check")
        .to_string();
        assert!(
            e.starts_with("lab.toml: resource[0].check: on a real rig"),
            "{e}"
        );
        let e = RigDesc::parse(
            Path::new("lab.toml"),
            &REAL.replace("\"real\"", "\"cloud\""),
        )
        .expect_err("backend")
        .to_string();
        assert!(e.starts_with("lab.toml: backend: \"cloud\""), "{e}");
        let e = RigDesc::parse(
            Path::new("lab.toml"),
            &REAL.replace(
                "between = [\"alpha\", \"beta\"]",
                "between = [\"alpha\", \"beta\"]\ncut = [\"relay\", \"1\"]",
            ),
        )
        .expect_err("cut without mend")
        .to_string();
        assert!(e.contains("cable[0]: give both `cut` and `mend`"), "{e}");
        // A real Filesystem is checked on its directory, or by the `check` given.
        let fs = REAL.replace(
            "name = \"catalog\"\nkind = \"pgsql\"",
            "name = \"storage\"\nkind = \"ocf\"\nagent = \"Filesystem\"",
        );
        let e = RigDesc::parse(Path::new("lab.toml"), &fs)
            .expect_err("no directory")
            .to_string();
        assert!(
            e.starts_with("lab.toml: resource[1].check: on a real rig an OCF Filesystem"),
            "{e}"
        );
        RigDesc::parse(
            Path::new("lab.toml"),
            &fs.replace(
                "\"Filesystem\"",
                "\"Filesystem\"\ndirectory = \"/srv/bacula\"",
            ),
        )
        .expect("a directory is enough");
        // Real-rig keys on an emulated rig are refused, not ignored.
        let e = err(&GOOD.replace(
            "name = \"alpha\"\nfence",
            "name = \"alpha\"\nrun = [\"ssh\", \"alpha\"]\nfence",
        ));
        assert!(e.contains("host[0].run: is for backend = \"real\""), "{e}");
    }
}
