//! The emulated rig's fence devices: the third-party simulators that hold the hosts' power,
//! and the management network that reaches them.
//!
//! A host's `fence = [...]` levels each get a device of their own, started here:
//!
//! - `ipmi`: OpenIPMI's `ipmi_sim` (RMCP+ over UDP); the host's power is its chassis power
//!   file; lying, its hook acknowledges an off and ignores it.
//! - `redfish`: sushy-tools' emulator (HTTP); the power is the system's power file
//!   (`WK_POWER_DIR`, see `sushy_emulator.py`); lying, the emulator ignores a ForceOff.
//! - `modbus`: a pymodbus PDU (Modbus TCP); the host is on coil `node id - 1`; lying, the
//!   outlet is stuck.
//! - `snmp`: net-snmp's `snmpd` playing an APC MasterSwitch (v2c over UDP); the host is on
//!   outlet `node id`; lying, the outlet is stuck.
//!
//! A PDU here is the host's own: each host hangs on its own PDU, on the outlet numbered by its
//! node id (so the agents' outlet maps are not all "outlet 1"). Sharing one PDU between hosts
//! would only make a dead PDU take both hosts' fencing with it, which no scenario wants.
//!
//! **Power model.** A host has power while every device fencing it says on; any one of them
//! switching off cuts it (the rig's power watcher then ends every process of the host), and a
//! reboot switches them all on. A witness has no device and always has power.
//!
//! **Management path.** Every host reaches every device through the rig's switch namespace, as
//! it would through a management switch: one relay leg per (host, device), a
//! [`UdpRelay`] for IPMI and SNMP, a [`TcpRelay`] for Redfish and Modbus. Cutting a device
//! cuts its legs from every host: it drops off the management network, its requests time out.
//!
//! Every simulator runs on 127.0.0.1 of the machine's own namespace and is stopped by PID when
//! its [`FenceDevice`] is dropped.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::desc::{FenceKind, RigDesc};
use super::relay::UdpRelay;
use super::tcp_relay::TcpRelay;
use crate::ipmi_sim::{IpmiSim, IpmiSimConfig};
use crate::modbus_pdu::{ModbusPdu, ModbusPduOptions};
use crate::netns::in_netns;
use crate::snmpd::{PduModel, Snmpd, SnmpdOptions, V2C_RW_COMMUNITY};
use crate::sushy::{system_uuid, Sushy, SushyOptions};

/// One fence device of one host, at one level; see the module docs.
#[derive(Debug)]
pub struct FenceDevice {
    kind: FenceKind,
    /// The fenced host's name.
    host: String,
    /// Its level (0 = first tried).
    level: usize,
    sim: Sim,
}

#[derive(Debug)]
enum Sim {
    Ipmi(IpmiSim),
    Redfish {
        sushy: Sushy,
        /// The system's power file (`1` on, `0` off).
        power: PathBuf,
    },
    Modbus {
        pdu: ModbusPdu,
        /// The host's outlet: coil index.
        coil: u16,
        /// What the PDU's off hook appends: `<unix time> power=0`.
        off_log: PathBuf,
    },
    Snmp {
        snmpd: Snmpd,
        /// The host's outlet number.
        outlet: u32,
    },
}

/// Where the power watcher reads a device's power without touching the device: cheap, and
/// never panicking on a half-written or missing file (that reads as "unknown").
#[derive(Debug, Clone)]
pub enum PowerProbe {
    /// A file holding `1` (on) or `0` (off).
    File(PathBuf),
    /// Coil `coil` of unit `unit` in the Modbus PDU's JSON state.
    Modbus {
        /// The state file.
        state: PathBuf,
        /// The unit id.
        unit: u8,
        /// The coil.
        coil: u16,
    },
    /// Outlet `outlet` in the SNMP PDU's JSON state.
    Snmp {
        /// The state file.
        state: PathBuf,
        /// The outlet number.
        outlet: u32,
    },
}

impl PowerProbe {
    /// Whether the device powers its host, if it can be read now.
    pub fn read(&self) -> Option<bool> {
        match self {
            PowerProbe::File(path) => {
                let text = fs::read_to_string(path).ok()?;
                match text.trim() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }
            }
            PowerProbe::Modbus { state, unit, coil } => {
                let v: Value = serde_json::from_str(&fs::read_to_string(state).ok()?).ok()?;
                v["outlets"][unit.to_string()][usize::from(*coil)]
                    .as_u64()
                    .map(|x| x == 1)
            }
            PowerProbe::Snmp { state, outlet } => {
                let v: Value = serde_json::from_str(&fs::read_to_string(state).ok()?).ok()?;
                let key = outlet.to_string();
                // A reboot whose off time is over is on again, as the backend applies it on
                // its next access.
                if let Some(until) = v["reboot_until"].get(&key).and_then(Value::as_f64) {
                    if unix_now() >= until {
                        return Some(true);
                    }
                }
                v["outlets"][&key].as_bool()
            }
        }
    }
}

impl FenceDevice {
    /// Starts the simulator of `kind` for host `host` (index `index`, node id `index + 1`) at
    /// `level`, its working files under `dir`.
    pub fn start(
        kind: FenceKind,
        index: usize,
        host: &str,
        level: usize,
        dir: &Path,
    ) -> io::Result<Self> {
        let outlet = u32::try_from(index + 1).map_err(io::Error::other)?;
        let sim = match kind {
            FenceKind::Ipmi => Sim::Ipmi(IpmiSim::start(&IpmiSimConfig::default())),
            FenceKind::Redfish => {
                let power_dir = dir.join(format!("redfish{level}-{host}"));
                fs::create_dir_all(&power_dir)?;
                let power = power_dir.join(system_uuid(1));
                fs::write(&power, "1\n")?;
                let sushy = Sushy::start(&SushyOptions {
                    power_dir: Some(power_dir),
                    ..SushyOptions::default()
                })?;
                Sim::Redfish { sushy, power }
            }
            FenceKind::Modbus => {
                let coil = u16::try_from(index).map_err(io::Error::other)?;
                let pdu = ModbusPdu::start_tcp(&ModbusPduOptions {
                    outlets: PDU_OUTLETS,
                    ..ModbusPduOptions::default()
                });
                let off_log = dir.join(format!("modbus{level}-{host}.power.log"));
                let hook = dir.join(format!("modbus{level}-{host}.off.sh"));
                fs::write(
                    &hook,
                    format!(
                        "#!/bin/sh\n# Outlet {outlet} of this PDU feeds {host}: log when it goes off.\n\
                         [ \"$2\" = {coil} ] && echo \"$(date +%s.%N) power=0\" >> '{}'\nexit 0\n",
                        off_log.display()
                    ),
                )?;
                pdu.set_off_hook(&hook);
                Sim::Modbus { pdu, coil, off_log }
            }
            FenceKind::Snmp => {
                let snmpd = Snmpd::start(&SnmpdOptions {
                    outlets: usize::from(PDU_OUTLETS),
                    ports: 0,
                    model: PduModel::ApcMasterSwitch,
                    ..SnmpdOptions::default()
                });
                Sim::Snmp { snmpd, outlet }
            }
        };
        Ok(Self {
            kind,
            host: host.to_owned(),
            level,
            sim,
        })
    }

    /// Its kind.
    pub fn kind(&self) -> FenceKind {
        self.kind
    }

    /// Its name in the agents' configuration: `<kind><level>-<host>`.
    pub fn name(&self) -> String {
        format!("{}{}-{}", self.kind.word(), self.level, self.host)
    }

    /// The simulator's own address (127.0.0.1 of this machine's namespace).
    pub fn address(&self) -> SocketAddr {
        match &self.sim {
            Sim::Ipmi(b) => b.address(),
            Sim::Redfish { sushy, .. } => SocketAddr::from((Ipv4Addr::LOCALHOST, sushy.port())),
            Sim::Modbus { pdu, .. } => pdu.address(),
            Sim::Snmp { snmpd, .. } => snmpd.address(),
        }
    }

    /// Whether its protocol runs over TCP (Redfish, Modbus TCP) rather than UDP.
    pub fn tcp(&self) -> bool {
        matches!(self.sim, Sim::Redfish { .. } | Sim::Modbus { .. })
    }

    /// The agent's `[[fence_device]]` block for this device, reached at `address`.
    pub fn agent_toml(&self, address: SocketAddr) -> String {
        let (name, host) = (self.name(), &self.host);
        let mut s = format!("\n[[fence_device]]\nname = \"{name}\"\n");
        match &self.sim {
            Sim::Ipmi(_) => {
                return crate::ipmi_sim::fence_device_toml(&name, host, address, DEVICE_TIMEOUT);
            }
            Sim::Redfish { .. } => {
                let _ = write!(
                    s,
                    "type = \"redfish\"\ntarget = \"{host}\"\nurl = \"http://{address}\"\n\
                     system = \"{}\"\nusername = \"admin\"\npassword = \"secret\"\n\
                     request_timeout = \"{REQUEST_TIMEOUT}\"\n",
                    system_uuid(1)
                );
            }
            Sim::Modbus { coil, .. } => {
                let _ = write!(
                    s,
                    "type = \"modbus\"\naddress = \"{address}\"\nunit = 1\n\
                     outlets = {{ {host} = [{{ coil = {coil} }}] }}\n\
                     request_timeout = \"{REQUEST_TIMEOUT}\"\n"
                );
            }
            Sim::Snmp { outlet, .. } => {
                let _ = write!(
                    s,
                    "type = \"snmp-pdu\"\naddress = \"{address}\"\nprofile = \"apc\"\n\
                     community = \"{V2C_RW_COMMUNITY}\"\noutlets = {{ {host} = [{outlet}] }}\n\
                     request_timeout = \"{REQUEST_TIMEOUT}\"\nretries = 1\n"
                );
            }
        }
        let _ = write!(
            s,
            "timeout = \"{DEVICE_TIMEOUT}\"\npoll_interval = \"{POLL_INTERVAL}\"\n"
        );
        s
    }

    /// Where the power watcher reads this device's power.
    pub fn probe(&self) -> PowerProbe {
        match &self.sim {
            Sim::Ipmi(b) => PowerProbe::File(b.power_file()),
            Sim::Redfish { power, .. } => PowerProbe::File(power.clone()),
            Sim::Modbus { pdu, coil, .. } => PowerProbe::Modbus {
                state: pdu.state_file(),
                unit: 1,
                coil: *coil,
            },
            Sim::Snmp { snmpd, outlet } => PowerProbe::Snmp {
                state: snmpd.dir().join("state.json"),
                outlet: *outlet,
            },
        }
    }

    /// Whether this device powers its host now (unreadable counts as on: a host is dark only
    /// when a device says so).
    pub fn powered(&self) -> bool {
        self.probe().read().unwrap_or(true)
    }

    /// Switches the host's power on behind the agents' backs (a power cycle's second half).
    pub fn set_power_on(&self) -> io::Result<()> {
        match &self.sim {
            Sim::Ipmi(b) => b.set_power_on(true),
            Sim::Redfish { power, .. } => {
                let tmp = power.with_extension("rig");
                fs::write(&tmp, "1\n")?;
                fs::rename(&tmp, power)?;
            }
            Sim::Modbus { pdu, coil, .. } => pdu.set_outlet(1, *coil, true),
            Sim::Snmp { snmpd, outlet } => snmpd.set_outlet(*outlet, true),
        }
        Ok(())
    }

    /// Makes the device acknowledge power-off without acting (`true`), or obey again.
    pub fn set_ignore_off(&self, ignore: bool) -> io::Result<()> {
        match &self.sim {
            Sim::Ipmi(b) => b.set_ignore_off(ignore),
            Sim::Redfish { power, .. } => {
                let mut flag = power.clone().into_os_string();
                flag.push(".ignore-off");
                if ignore {
                    fs::write(&flag, "1\n")?;
                } else if let Err(e) = fs::remove_file(&flag) {
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(e);
                    }
                }
            }
            Sim::Modbus { pdu, coil, .. } => pdu.set_stuck(1, *coil, ignore),
            Sim::Snmp { snmpd, outlet } => snmpd.set_outlet_stuck(*outlet, ignore),
        }
        Ok(())
    }

    /// When this device switched its host off (Unix seconds), from the device's own log.
    pub fn off_times(&self) -> Vec<f64> {
        let lines = match &self.sim {
            Sim::Ipmi(b) => b.power_log(),
            Sim::Redfish { power, .. } => {
                let mut log = power.clone().into_os_string();
                log.push(".log");
                read_lines(Path::new(&log))
            }
            Sim::Modbus { off_log, .. } => read_lines(off_log),
            Sim::Snmp { snmpd, outlet } => {
                let mine = format!("outlet={outlet}");
                snmpd
                    .switches()
                    .into_iter()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        match f.as_slice() {
                            [t, o, "off" | "reboot"] if *o == mine => Some(format!("{t} power=0")),
                            _ => None,
                        }
                    })
                    .collect()
            }
        };
        lines
            .iter()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                match (f.next().and_then(|t| t.parse::<f64>().ok()), f.next()) {
                    (Some(t), Some("power=0")) => Some(t),
                    _ => None,
                }
            })
            .collect()
    }

    /// Power-off commands this device acknowledged without switching the host off while it
    /// lied: from its own log (for the Modbus PDU, which logs every write, off writes that did
    /// not switch a powered outlet off).
    pub fn ignored_offs(&self) -> usize {
        match &self.sim {
            Sim::Ipmi(b) => b
                .power_log()
                .iter()
                .filter(|l| l.ends_with("power=0-ignored"))
                .count(),
            Sim::Redfish { power, .. } => {
                let mut log = power.clone().into_os_string();
                log.push(".log");
                read_lines(Path::new(&log))
                    .iter()
                    .filter(|l| l.ends_with("power=0-ignored"))
                    .count()
            }
            Sim::Modbus { pdu, coil, .. } => {
                let off = format!("addr={coil} value=0");
                let writes = pdu.writes().iter().filter(|l| l.ends_with(&off)).count();
                writes.saturating_sub(self.off_times().len())
            }
            Sim::Snmp { snmpd, outlet } => {
                let mine = format!("outlet={outlet}");
                snmpd
                    .switches()
                    .iter()
                    .filter(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        matches!(f.as_slice(), [_, o, "off-ignored" | "reboot-ignored"] if *o == mine)
                    })
                    .count()
            }
        }
    }

    /// Shell functions `status_<level>` (prints `on` or `off`, fails when the device does not
    /// answer), `on_<level>` and `off_<level>` that drive this device from the harness's
    /// machine with the usual tools, as a site's power script would: `ipmitool`, `curl`
    /// against the Redfish API, `snmpget`/`snmpset` on the PDU's outlet column, and a few
    /// lines of pymodbus (`python`, the test virtualenv's) for the Modbus PDU.
    pub fn shell_functions(&self, python: &Path) -> String {
        let l = self.level;
        let a = self.address();
        let (status, on, off) = match &self.sim {
            Sim::Ipmi(_) => {
                let ipmi = format!(
                    "ipmitool -I lanplus -C 3 -H {} -p {} -U {} -P {} chassis power",
                    a.ip(),
                    a.port(),
                    crate::ipmi_sim::DEFAULT_USER,
                    crate::ipmi_sim::DEFAULT_PASSWORD
                );
                (
                    format!(
                        "out=$({ipmi} status) || return 1\n  \
                         case \"$out\" in *\\ on) echo on ;; *\\ off) echo off ;; *) return 1 ;; esac"
                    ),
                    format!("{ipmi} on >/dev/null"),
                    format!("{ipmi} off >/dev/null"),
                )
            }
            Sim::Redfish { .. } => {
                let system = format!("http://{a}/redfish/v1/Systems/{}", system_uuid(1));
                let curl = "curl -sS -f -m 2 -u admin:secret";
                let reset = |t: &str| {
                    format!(
                        "{curl} -H 'Content-Type: application/json' -d '{{\"ResetType\": \"{t}\"}}' \
                         {system}/Actions/ComputerSystem.Reset >/dev/null"
                    )
                };
                (
                    format!(
                        "out=$({curl} {system}) || return 1\n  \
                         case \"$(echo \"$out\" | tr -d ' ')\" in \
                         *'\"PowerState\":\"On\"'*) echo on ;; \
                         *'\"PowerState\":\"Off\"'*) echo off ;; *) return 1 ;; esac"
                    ),
                    reset("On"),
                    reset("ForceOff"),
                )
            }
            Sim::Modbus { coil, .. } => {
                // Python source between single quotes, one statement a line from column 0.
                let py = |body: &str| {
                    format!(
                        "{} -c '\nimport sys\nfrom pymodbus.client import ModbusTcpClient\n\
                         c = ModbusTcpClient(\"{}\", port={}, timeout=1)\n\
                         if not c.connect(): sys.exit(1)\n{body}\n' 2>/dev/null",
                        python.display(),
                        a.ip(),
                        a.port(),
                    )
                };
                (
                    py(&format!(
                        "r = c.read_coils({coil}, count=1, device_id=1)\n\
                         sys.exit(1) if r.isError() else print(\"on\" if r.bits[0] else \"off\")"
                    )),
                    py(&format!(
                        "sys.exit(1 if c.write_coil({coil}, True, device_id=1).isError() else 0)"
                    )),
                    py(&format!(
                        "sys.exit(1 if c.write_coil({coil}, False, device_id=1).isError() else 0)"
                    )),
                )
            }
            Sim::Snmp { outlet, .. } => {
                let oid = format!(".1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}");
                let opts = format!("-v2c -c {V2C_RW_COMMUNITY} -r 1 -t 1 -m ''");
                (
                    format!(
                        "out=$(snmpget {opts} -Oqv udp:{a} {oid}) || return 1\n  \
                         case \"$out\" in 1) echo on ;; 2) echo off ;; *) return 1 ;; esac"
                    ),
                    format!("snmpset {opts} udp:{a} {oid} i 1 >/dev/null"),
                    format!("snmpset {opts} udp:{a} {oid} i 2 >/dev/null"),
                )
            }
        };
        format!(
            "# {name}: {kind} at {a}\nstatus_{l}() {{\n  {status}\n}}\non_{l}() {{\n  {on}\n}}\n\
             off_{l}() {{\n  {off}\n}}\n",
            name = self.name(),
            kind = self.kind.word(),
        )
    }

    /// The BMC, for an IPMI device.
    pub fn ipmi(&self) -> Option<&IpmiSim> {
        match &self.sim {
            Sim::Ipmi(b) => Some(b),
            _ => None,
        }
    }
}

/// One management path: from a host to a device.
#[derive(Debug)]
enum Relay {
    Udp(UdpRelay),
    Tcp(TcpRelay),
}

impl Relay {
    fn front(&self) -> SocketAddr {
        match self {
            Relay::Udp(r) => r.front(),
            Relay::Tcp(r) => r.front(),
        }
    }

    fn set_cut(&self, cut: bool) {
        match self {
            Relay::Udp(r) => {
                r.set_cut(super::relay::Way::ToTarget, cut);
                r.set_cut(super::relay::Way::ToClient, cut);
            }
            Relay::Tcp(r) => r.set_cut(cut),
        }
    }
}

#[derive(Debug)]
struct Leg {
    from: usize,
    host: usize,
    level: usize,
    relay: Relay,
}

/// Where the management legs listen: in the rig's switch namespace, on the switch's address
/// towards each host, or on loopback without namespaces.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The switch namespace.
    pub netns: String,
    /// Per host, the switch's address on that host's management link.
    pub towards: Vec<Ipv4Addr>,
}

/// Every fence device of a rig and the management legs to them; see the module docs. The
/// default has none (a rig not built yet).
#[derive(Debug, Default)]
pub struct FencePlant {
    /// Per host, its devices in level order (none for a witness).
    devices: Vec<Vec<FenceDevice>>,
    legs: Vec<Leg>,
}

impl FencePlant {
    /// Starts every host's devices and a management leg from every host to each of them.
    pub fn build(desc: &RigDesc, dir: &Path, switch: Option<&Switch>) -> io::Result<Self> {
        let mut devices = Vec::new();
        for (i, h) in desc.hosts.iter().enumerate() {
            let mut mine = Vec::new();
            for (level, &kind) in h.fence.iter().enumerate() {
                mine.push(FenceDevice::start(kind, i, &h.name, level, dir)?);
            }
            devices.push(mine);
        }
        let mut legs = Vec::new();
        let mut k: u16 = 0;
        for (host, mine) in devices.iter().enumerate() {
            for (level, d) in mine.iter().enumerate() {
                k += 1;
                for from in 0..desc.hosts.len() {
                    let relay = leg(d, switch, from, MANAGEMENT_PORT_BASE + k)?;
                    legs.push(Leg {
                        from,
                        host,
                        level,
                        relay,
                    });
                }
            }
        }
        Ok(Self { devices, legs })
    }

    /// Host `i`'s devices, first level first.
    pub fn devices(&self, i: usize) -> &[FenceDevice] {
        self.devices.get(i).map_or(&[], Vec::as_slice)
    }

    /// Host `i`'s `fencing = [...]` line for the agents' configuration.
    pub fn levels_toml(&self, i: usize) -> String {
        let levels: Vec<String> = self
            .devices(i)
            .iter()
            .map(|d| format!("[\"{}\"]", d.name()))
            .collect();
        format!("fencing = [{}]\n", levels.join(", "))
    }

    /// Every device's `[[fence_device]]` block as host `me` reaches it.
    pub fn agent_toml(&self, me: usize) -> String {
        let mut s = String::new();
        for l in self.legs.iter().filter(|l| l.from == me) {
            if let Some(d) = self.devices(l.host).get(l.level) {
                s.push_str(&d.agent_toml(l.relay.front()));
            }
        }
        s
    }

    /// Whether host `i` has power: every device fencing it says on.
    pub fn powered(&self, i: usize) -> bool {
        self.devices(i).iter().all(FenceDevice::powered)
    }

    /// The probes of host `i`'s devices, for the power watcher.
    pub fn probes(&self, i: usize) -> Vec<PowerProbe> {
        self.devices(i).iter().map(FenceDevice::probe).collect()
    }

    /// Switches every device of host `i` on.
    pub fn power_on(&self, i: usize) -> io::Result<()> {
        self.devices(i)
            .iter()
            .try_for_each(FenceDevice::set_power_on)
    }

    /// Makes every device of host `i` lie about power-off (or obey again).
    pub fn ignore_off(&self, i: usize, ignore: bool) -> io::Result<()> {
        self.devices(i)
            .iter()
            .try_for_each(|d| d.set_ignore_off(ignore))
    }

    /// Cuts (or mends) the management path to host `i`'s device at `level` from every host.
    pub fn cut(&self, i: usize, level: usize, cut: bool) {
        for l in self.legs.iter().filter(|l| l.host == i && l.level == level) {
            l.relay.set_cut(cut);
        }
    }

    /// Mends every management path and makes every device obey.
    pub fn heal(&self) -> io::Result<()> {
        for l in &self.legs {
            match &l.relay {
                Relay::Udp(r) => r.heal(),
                Relay::Tcp(r) => r.set_cut(false),
            }
        }
        for i in 0..self.devices.len() {
            self.ignore_off(i, false)?;
        }
        Ok(())
    }

    /// When any device switched host `i` off (Unix seconds), sorted.
    pub fn off_times(&self, i: usize) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .devices(i)
            .iter()
            .flat_map(FenceDevice::off_times)
            .collect();
        t.sort_by(f64::total_cmp);
        t
    }

    /// Levels of host `i` whose device switched it off at or after `since` (Unix seconds).
    pub fn levels_off_since(&self, i: usize, since: f64) -> Vec<usize> {
        self.devices(i)
            .iter()
            .enumerate()
            .filter(|(_, d)| d.off_times().iter().any(|&t| t >= since))
            .map(|(l, _)| l)
            .collect()
    }

    /// A power script for host `i` as a real rig's description runs it (`SCRIPT status|on|off`):
    /// `status` prints `off` when any device has the host off, else `on` (and fails when a
    /// device does not answer); `on` switches every device on; `off` switches the first level's
    /// device off. See [`FenceDevice::shell_functions`].
    pub fn power_script(&self, i: usize, host: &str, python: &Path) -> String {
        let devices = self.devices(i);
        let mut s = format!(
            "#!/bin/sh\n# {host}'s power through its fence devices (written by the emulated rig).\n\
             set -u\n"
        );
        for d in devices {
            s.push_str(&d.shell_functions(python));
        }
        s.push_str("case \"${1:-}\" in\nstatus)\n  power=on\n");
        for l in 0..devices.len() {
            let _ = writeln!(s, "  v=$(status_{l}) || exit 1");
            s.push_str("  [ \"$v\" = off ] && power=off\n");
        }
        s.push_str("  echo \"$power\" ;;\non)\n");
        for l in 0..devices.len() {
            let _ = writeln!(s, "  on_{l} || exit 1");
        }
        s.push_str("  ;;\noff)\n  off_0 || exit 1 ;;\n");
        s.push_str("*) echo \"usage: $0 status|on|off\" >&2; exit 2 ;;\nesac\n");
        s
    }

    /// Wires host `i`'s BMCs to kill `pid` when they switch the power off, before they
    /// answer (the other kinds leave that to the rig's power watcher).
    pub fn wire_power_to(&self, i: usize, pid: u32) {
        for b in self.devices(i).iter().filter_map(FenceDevice::ipmi) {
            b.wire_power_to(pid);
        }
    }
}

fn leg(d: &FenceDevice, switch: Option<&Switch>, from: usize, port: u16) -> io::Result<Relay> {
    let target = d.address();
    let front = |s: &Switch| {
        SocketAddr::from((
            s.towards
                .get(from)
                .copied()
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            port,
        ))
    };
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    if d.tcp() {
        let listener = match switch {
            Some(s) => {
                let at = front(s);
                in_netns(&s.netns, move || TcpListener::bind(at))?
            }
            None => TcpListener::bind(lo)?,
        };
        Ok(Relay::Tcp(TcpRelay::from_listener(listener, target)?))
    } else {
        let front_socket = match switch {
            Some(s) => {
                let at = front(s);
                in_netns(&s.netns, move || UdpSocket::bind(at))?
            }
            None => UdpSocket::bind(lo)?,
        };
        let back = UdpSocket::bind(lo)?;
        Ok(Relay::Udp(UdpRelay::from_sockets(
            front_socket,
            back,
            target,
        )?))
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Outlets of each PDU: a small rack PDU; the host's outlet is its node id (at most 3).
const PDU_OUTLETS: u16 = 8;
/// One fence operation's deadline in the agents' configuration: as for the rig's BMCs, long
/// enough for a loaded machine, short enough that a lying device hands over to the next level
/// within a scenario's patience.
const DEVICE_TIMEOUT: &str = "3s";
/// One request to a Redfish or PDU simulator: they answer on loopback in milliseconds.
const REQUEST_TIMEOUT: &str = "500ms";
/// Power-state reads while confirming: as the rig's BMCs.
const POLL_INTERVAL: &str = "50ms";
/// Management legs listen on the switch at this port plus the device's number (from 1).
const MANAGEMENT_PORT_BASE: u16 = 6230;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_each_state_file_and_never_guess() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("power");
        let probe = PowerProbe::File(file.clone());
        assert_eq!(probe.read(), None, "a missing file is unknown");
        fs::write(&file, "0\n").expect("write");
        assert_eq!(probe.read(), Some(false));
        fs::write(&file, "1\n").expect("write");
        assert_eq!(probe.read(), Some(true));
        fs::write(&file, "").expect("write");
        assert_eq!(probe.read(), None, "a torn file is unknown");

        let modbus = dir.path().join("modbus.json");
        fs::write(&modbus, r#"{"outlets": {"1": [1, 0, 1]}}"#).expect("write");
        let at = |coil| PowerProbe::Modbus {
            state: modbus.clone(),
            unit: 1,
            coil,
        };
        assert_eq!(at(0).read(), Some(true));
        assert_eq!(at(1).read(), Some(false));
        assert_eq!(at(7).read(), None);

        let snmp = dir.path().join("snmp.json");
        let far = unix_now() + 3600.0;
        fs::write(
            &snmp,
            format!(
                r#"{{"outlets": {{"1": true, "2": false, "3": false}}, "reboot_until": {{"3": 1.0, "2": {far}}}}}"#
            ),
        )
        .expect("write");
        let outlet = |n| PowerProbe::Snmp {
            state: snmp.clone(),
            outlet: n,
        };
        assert_eq!(outlet(1).read(), Some(true));
        assert_eq!(outlet(2).read(), Some(false), "a reboot still off");
        assert_eq!(
            outlet(3).read(),
            Some(true),
            "a reboot whose off time is over"
        );
        assert_eq!(outlet(9).read(), None);
    }
}
