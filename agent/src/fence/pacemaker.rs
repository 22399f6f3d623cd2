//! `fence_watchkeeper`: watchkeeper's native fence drivers behind the fence-agents interface,
//! so a Pacemaker cluster can use them by swapping the agent's name.
//!
//! The interface is the one ClusterLabs' `fencing.py` implements, kept option for option where
//! a cluster configuration could notice: options on the command line (`--ip=…`, `-o off`) or,
//! with no arguments, as `key=value` lines on stdin (long names, `-` or `_`, plus the legacy
//! `ipaddr`, `login`, `passwd`, `port`); actions on, off, reboot (the default), status,
//! monitor, list, list-status, metadata, validate-all; exit codes 0 success or on, 2 off,
//! 1 failure. An unknown option on the command line is a parse error (exit 1), on stdin a
//! warning, as in fencing.py.
//!
//! `--type` (stdin `type=`) picks the driver, and each type takes the option names of the agent
//! it replaces:
//!
//! | type | replaces | device |
//! |---|---|---|
//! | `ipmi` (default) | `fence_ipmilan` | a BMC over IPMI v2.0 (RMCP+) |
//! | `redfish` | `fence_redfish` | a BMC over Redfish (HTTPS) |
//! | `apc-snmp` | `fence_apc_snmp` | a switched PDU over SNMP v2c/v3 (APC, Raritan, Eaton by sysObjectID) |
//! | `ifmib` | `fence_ifmib` | switch ports over SNMP IF-MIB (fabric fencing: no reboot) |
//! | `modbus` | (none) | a Modbus TCP or RTU PDU, plug N = coil N-1, or a `--map` file |
//!
//! Options belong to a set of types, and the short letters are resolved for the type given:
//! `-P` is `--lanplus` for ipmi but `--snmp-priv-passwd` for the SNMP types, `-C` is
//! `--cipher` for ipmi but `--separator` for the outlet types, as in the agents replaced. So
//! the command line is scanned for `--type` first, then parsed with that type's letters.
//!
//! Unlike the agents it replaces, off and on are confirmed by polling the power (outlet, port)
//! state, so no fixed `--power-wait` sleep is needed; an explicit `--power-wait` is still
//! honoured. Deliberately refused, with a message naming the alternative: SNMP v1, MD5, DES and
//! noAuthNoPriv (fencing must be authenticated, and these offer no real authentication or
//! privacy), and a MasterSwitch Plus `switch:plug` other than switch 1.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use drivers::fence::ipmi::{IpmiDevice, IpmiParams, Privilege};
use drivers::fence::modbus::{
    plug_outlet, ModbusDevice, ModbusParams, ModbusTransport, Outlet, OutletControl,
};
use drivers::fence::redfish::{RedfishAuth, RedfishDevice, RedfishParams, TlsTrust};
use drivers::fence::snmp::ifmib::{IfMibDevice, IfMibParams, PortRef};
use drivers::fence::snmp::pdu::{self, OutletRef, PduProfile, SnmpPduDevice, SnmpPduParams};
use drivers::fence::snmp::{
    AuthProtocol, Oid, PrivProtocol, SnmpParams, SnmpSecurity, SnmpSession, SnmpValue,
};
use drivers::fence::{FenceDevice, FenceError, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use tokio::time::Instant;

/// Runs the agent with `args` (without the program name), reading stdin when `args` is empty;
/// returns the exit code.
pub fn main(args: &[String]) -> u8 {
    let parsed = if args.is_empty() {
        let stdin = std::io::stdin();
        let lines: Vec<String> = stdin
            .lock()
            .lines()
            .take(MAX_STDIN_LINES)
            .map_while(Result::ok)
            .collect();
        Ok(parse_stdin(&lines))
    } else {
        parse_args(args)
    };
    let options = match parsed {
        Ok(o) => o,
        Err(message) => return fail_usage(&message),
    };
    run(options)
}

/// Parsed options: long option name (without `--`) to value (`"1"` for flags).
pub type Options = BTreeMap<String, String>;

/// Parses a command line the way fencing.py's getopt does (`--opt=value`, `--opt value`,
/// `-o value`, `-ovalue`, bundled flags); errors are fencing.py's parse errors.
///
/// Short letters mean what they mean for the type given with `--type` (ipmi when absent), so
/// the type is found first. A value that merely looks like `--type=…` (a password, say) could
/// mislead that scan; the options as parsed then name another type, and the line is parsed
/// again for that one.
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let first = match type_in_args(args) {
        Some(name) => Kind::parse(name).ok_or_else(|| invalid_type(name))?,
        None => Kind::Ipmi,
    };
    let mut first_error = None;
    for kind in std::iter::once(first).chain(Kind::ALL.into_iter().filter(|k| *k != first)) {
        match parse_args_as(args, kind) {
            Ok(options) => {
                let given = options
                    .get("type")
                    .map_or(Some(Kind::Ipmi), |t| Kind::parse(t));
                if given == Some(kind) {
                    return Ok(options);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| "Parse error: --type is ambiguous on this command line".to_owned()))
}

/// Parses stdin lines (`key=value`, `#` comments); unknown keys are warned about and ignored.
pub fn parse_stdin(lines: &[String]) -> Options {
    let mut options = Options::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let dashed = name.trim().replace('_', "-");
        let long = match dashed.as_str() {
            "ipaddr" => "ip",
            "login" => "username",
            "passwd" => "password",
            "passwd-script" => "password-script",
            "port" => "plug",
            other => other,
        };
        if long == "nodename" {
            continue;
        }
        let Some(spec) = OPTIONS.iter().find(|o| o.long == long) else {
            eprintln!("WARNING: Parse error: Ignoring unknown option '{line}'");
            continue;
        };
        if spec.takes_value {
            options.insert(spec.long.to_owned(), value.to_owned());
        } else {
            match value.to_ascii_lowercase().as_str() {
                "1" | "yes" | "on" | "true" | "" => {
                    options.insert(spec.long.to_owned(), "1".to_owned());
                }
                "0" | "no" | "off" | "false" => {}
                _ => eprintln!(
                    "WARNING: Parse error: Ignoring option '{name}' because it does not have value"
                ),
            }
        }
    }
    options
}

/// The metadata XML (`-o metadata`), valid against fence-agents' `metadata.rng`.
pub fn metadata() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" ?>\n<resource-agent name=\"fence_watchkeeper\" \
         shortdesc=\"Fence agent for IPMI, Redfish, SNMP PDUs, IF-MIB switches and Modbus PDUs \
         (watchkeeper's native drivers)\" >\n\
         <longdesc>fence_watchkeeper switches a node off and on through its BMC, its PDU \
         outlets or its switch ports. type=ipmi (the default) uses IPMI v2.0 (RMCP+) with the \
         options of fence_ipmilan; type=redfish uses Redfish with the options of fence_redfish; \
         type=apc-snmp switches PDU outlets over SNMP v2c or v3 (APC MasterSwitch and rPDU, \
         Raritan PX, Eaton ePDU, chosen by sysObjectID) with the options of fence_apc_snmp; \
         type=ifmib disables switch ports (IF-MIB ifAdminStatus, fabric fencing: on unfences, \
         no reboot) with the options of fence_ifmib; type=modbus switches the coils or \
         registers of a Modbus TCP or RTU PDU. Off and on are confirmed by reading the state \
         back, so no fixed power_wait is needed. SNMP v1, MD5, DES and noAuthNoPriv are \
         refused.</longdesc>\n\
         <vendor-url>https://example.invalid/watchkeeper</vendor-url>\n<parameters>\n",
    );
    for o in OPTIONS.iter().filter(|o| !o.hidden) {
        let getopt = match (o.short, o.takes_value) {
            (Some(s), true) => format!("-{s}, --{}=[{}]", o.long, o.value_name),
            (Some(s), false) => format!("-{s}, --{}", o.long),
            (None, true) => format!("--{}=[{}]", o.long, o.value_name),
            (None, false) => format!("--{}", o.long),
        };
        let default = o
            .default
            .map_or_else(String::new, |d| format!(" default=\"{}\"", escape(d)));
        let name = o.long.replace('-', "_");
        xml.push_str(&format!(
            "\t<parameter name=\"{name}\" unique=\"0\" required=\"{}\">\n\t\t<getopt mixed=\"{}\" />\n",
            u8::from(o.required),
            escape(&getopt)
        ));
        if o.choices.is_empty() {
            xml.push_str(&format!(
                "\t\t<content type=\"{}\"{default} />\n",
                o.content
            ));
        } else {
            xml.push_str(&format!("\t\t<content type=\"select\"{default} >\n"));
            for c in o.choices {
                xml.push_str(&format!("\t\t\t<option value=\"{c}\" />\n"));
            }
            xml.push_str("\t\t</content>\n");
        }
        xml.push_str(&format!(
            "\t\t<shortdesc lang=\"en\">{}</shortdesc>\n\t</parameter>\n",
            escape(&o.described())
        ));
    }
    xml.push_str("</parameters>\n<actions>\n\t<action name=\"on\" automatic=\"0\"/>\n");
    for a in [
        "off",
        "reboot",
        "status",
        "list",
        "list-status",
        "monitor",
        "metadata",
        "validate-all",
    ] {
        xml.push_str(&format!("\t<action name=\"{a}\" />\n"));
    }
    xml.push_str("</actions>\n</resource-agent>\n");
    xml
}

/// The driver behind the agent, chosen with `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ipmi,
    Redfish,
    ApcSnmp,
    IfMib,
    Modbus,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Ipmi,
        Kind::Redfish,
        Kind::ApcSnmp,
        Kind::IfMib,
        Kind::Modbus,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Ipmi => "ipmi",
            Kind::Redfish => "redfish",
            Kind::ApcSnmp => "apc-snmp",
            Kind::IfMib => "ifmib",
            Kind::Modbus => "modbus",
        }
    }

    /// `apc-snmp`, `APC_SNMP` and `apc_snmp` alike: stdin turns `_` into `-` only in keys,
    /// and a cluster configuration may spell the value either way.
    fn parse(text: &str) -> Option<Kind> {
        let text = text.trim().to_ascii_lowercase().replace('_', "-");
        Kind::ALL.into_iter().find(|k| k.name() == text)
    }

    const fn bit(self) -> u8 {
        match self {
            Kind::Ipmi => 1,
            Kind::Redfish => 2,
            Kind::ApcSnmp => 4,
            Kind::IfMib => 8,
            Kind::Modbus => 16,
        }
    }

    /// fence_ifmib is a fabric fence: off is its default action and reboot is not offered.
    fn default_action(self) -> &'static str {
        match self {
            Kind::IfMib => "off",
            _ => "reboot",
        }
    }

    fn accepts(self, action: &str) -> bool {
        ACTIONS.contains(&action) && !(self == Kind::IfMib && action == "reboot")
    }
}

/// The set of types an option belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

impl Types {
    const IPMI: Types = Types(Kind::Ipmi.bit());
    const REDFISH: Types = Types(Kind::Redfish.bit());
    const APC_SNMP: Types = Types(Kind::ApcSnmp.bit());
    const IFMIB: Types = Types(Kind::IfMib.bit());
    const MODBUS: Types = Types(Kind::Modbus.bit());
    /// The BMC types, which need a user and a password.
    const BMC: Types = Types::IPMI.with(Types::REDFISH);
    /// The SNMP types.
    const SNMP: Types = Types::APC_SNMP.with(Types::IFMIB);
    /// The types whose `--plug` names outlets or ports.
    const OUTLETS: Types = Types::SNMP.with(Types::MODBUS);
    const ALL: Types = Types::BMC.with(Types::OUTLETS);

    const fn with(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// `type ipmi`, `types apc-snmp, ifmib`; `None` for every type.
    fn describe(self) -> Option<String> {
        if self == Types::ALL {
            return None;
        }
        let names: Vec<&str> = Kind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .map(Kind::name)
            .collect();
        Some(format!(
            "type{} {}",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ))
    }
}

/// One option: long name, short letter, whether it takes a value, which types accept it.
#[derive(Debug)]
struct OptSpec {
    long: &'static str,
    short: Option<char>,
    takes_value: bool,
    types: Types,
    required: bool,
    content: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    choices: &'static [&'static str],
    help: &'static str,
    hidden: bool,
}

impl OptSpec {
    /// The help text, with the types it is limited to.
    fn described(&self) -> String {
        match self.types.describe() {
            Some(types) => format!("{} [{types}]", self.help),
            None => self.help.to_owned(),
        }
    }
}

const fn opt(
    long: &'static str,
    short: Option<char>,
    takes_value: bool,
    types: Types,
    help: &'static str,
) -> OptSpec {
    OptSpec {
        long,
        short,
        takes_value,
        types,
        required: false,
        content: if takes_value { "string" } else { "boolean" },
        value_name: "value",
        default: None,
        choices: &[],
        help,
        hidden: false,
    }
}

/// Every option of every type. Long names are unique; a short letter is unique within each
/// type (a test checks both), as fencing.py requires of one agent.
const OPTIONS: &[OptSpec] = &[
    OptSpec {
        choices: &["ipmi", "redfish", "apc-snmp", "ifmib", "modbus"],
        default: Some("ipmi"),
        content: "select",
        ..opt(
            "type",
            None,
            true,
            Types::ALL,
            "Driver: ipmi (replaces fence_ipmilan), redfish (fence_redfish), apc-snmp \
             (fence_apc_snmp), ifmib (fence_ifmib) or modbus",
        )
    },
    OptSpec {
        default: Some("reboot"),
        value_name: "action",
        ..opt(
            "action",
            Some('o'),
            true,
            Types::ALL,
            "Fencing action (default off for ifmib, which has no reboot)",
        )
    },
    OptSpec {
        value_name: "ip",
        ..opt(
            "ip",
            Some('a'),
            true,
            Types::ALL,
            "IP address or hostname of fencing device (required, except for modbus over \
             --serial-port)",
        )
    },
    OptSpec {
        content: "integer",
        value_name: "port",
        ..opt(
            "ipport",
            Some('u'),
            true,
            Types::ALL,
            "TCP/UDP port to use for connection with device (623 for ipmi, 443 for redfish, \
             161 for apc-snmp and ifmib, 502 for modbus)",
        )
    },
    OptSpec {
        value_name: "name",
        ..opt(
            "username",
            Some('l'),
            true,
            Types::BMC.with(Types::SNMP),
            "Login name (SNMP v3 user)",
        )
    },
    OptSpec {
        value_name: "password",
        ..opt(
            "password",
            Some('p'),
            true,
            Types::BMC.with(Types::SNMP),
            "Login password or passphrase (SNMP v3 authentication passphrase)",
        )
    },
    OptSpec {
        value_name: "script",
        ..opt(
            "password-script",
            Some('S'),
            true,
            Types::BMC.with(Types::SNMP),
            "Script to run to retrieve password",
        )
    },
    OptSpec {
        value_name: "id",
        ..opt(
            "plug",
            Some('n'),
            true,
            Types::ALL,
            "Outlet number or name (apc-snmp), port ifIndex, ifName or ifAlias (ifmib), plug \
             number or --map name (modbus); several joined by --plug-separator; ignored by \
             ipmi and redfish, which fence the machine the device belongs to",
        )
    },
    opt(
        "lanplus",
        Some('P'),
        false,
        Types::IPMI,
        "Use Lanplus (IPMI v2.0); always on, IPMI 1.5 is not used",
    ),
    OptSpec {
        content: "string",
        value_name: "cipher",
        default: Some("3"),
        ..opt(
            "cipher",
            Some('C'),
            true,
            Types::IPMI,
            "Ciphersuite to use (3 or 17)",
        )
    },
    OptSpec {
        content: "select",
        choices: &["administrator", "operator", "user", "callback"],
        default: Some("administrator"),
        ..opt(
            "privlvl",
            Some('L'),
            true,
            Types::IPMI,
            "Privilege level on IPMI device",
        )
    },
    OptSpec {
        content: "select",
        choices: &["onoff", "cycle"],
        default: Some("onoff"),
        ..opt(
            "method",
            Some('m'),
            true,
            Types::IPMI,
            "Method to fence (reboot is always off, confirmed off, on)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "auth",
            Some('A'),
            true,
            Types::IPMI,
            "IPMI Lan Auth type (ignored: RMCP+ authenticates with RAKP)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "hexadecimal-kg",
            None,
            true,
            Types::IPMI,
            "Hexadecimal-encoded Kg key (not supported)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "ipmitool-path",
            None,
            true,
            Types::IPMI,
            "Ignored: no ipmitool is run",
        )
    },
    OptSpec {
        value_name: "uri",
        ..opt(
            "systems-uri",
            None,
            true,
            Types::REDFISH,
            "Redfish Systems resource URI, i.e. /redfish/v1/Systems/System.Embedded.1",
        )
    },
    OptSpec {
        value_name: "uri",
        default: Some("/redfish/v1"),
        ..opt(
            "redfish-uri",
            None,
            true,
            Types::REDFISH,
            "Base or starting Redfish URI",
        )
    },
    opt(
        "ssl",
        Some('z'),
        false,
        Types::REDFISH,
        "Use SSL connection with verifying certificate",
    ),
    opt(
        "ssl-secure",
        None,
        false,
        Types::REDFISH,
        "Use SSL connection with verifying certificate (CA bundle from REQUESTS_CA_BUNDLE if set)",
    ),
    opt(
        "ssl-insecure",
        None,
        false,
        Types::REDFISH,
        "Use SSL connection without verifying certificate",
    ),
    OptSpec {
        value_name: "community",
        ..opt(
            "community",
            Some('c'),
            true,
            Types::SNMP,
            "Set the community string (default private for apc-snmp, as fence_apc_snmp; none \
             for ifmib)",
        )
    },
    OptSpec {
        content: "select",
        choices: &["2c", "3"],
        default: Some("2c"),
        value_name: "version",
        ..opt(
            "snmp-version",
            Some('d'),
            true,
            Types::SNMP,
            "Specifies SNMP version to use (v1 is refused: it has no authentication)",
        )
    },
    OptSpec {
        content: "select",
        choices: &["SHA", "SHA256"],
        default: Some("SHA"),
        value_name: "prot",
        ..opt(
            "snmp-auth-prot",
            Some('b'),
            true,
            Types::SNMP,
            "Set authentication protocol (MD5 is refused)",
        )
    },
    OptSpec {
        content: "select",
        choices: &["authNoPriv", "authPriv"],
        value_name: "level",
        ..opt(
            "snmp-sec-level",
            Some('E'),
            true,
            Types::SNMP,
            "Set security level (default authPriv when a privacy password is given, else \
             authNoPriv; noAuthNoPriv is refused)",
        )
    },
    OptSpec {
        content: "select",
        choices: &["AES"],
        default: Some("AES"),
        value_name: "prot",
        ..opt(
            "snmp-priv-prot",
            Some('B'),
            true,
            Types::SNMP,
            "Set privacy protocol (AES-128; DES is refused)",
        )
    },
    OptSpec {
        value_name: "pass",
        ..opt(
            "snmp-priv-passwd",
            Some('P'),
            true,
            Types::SNMP,
            "Set privacy protocol password",
        )
    },
    OptSpec {
        value_name: "script",
        ..opt(
            "snmp-priv-passwd-script",
            Some('R'),
            true,
            Types::SNMP,
            "Script to run to retrieve privacy password",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "snmpget-path",
            None,
            true,
            Types::SNMP,
            "Ignored: no snmpget is run",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "snmpset-path",
            None,
            true,
            Types::SNMP,
            "Ignored: no snmpset is run",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "snmpwalk-path",
            None,
            true,
            Types::SNMP,
            "Ignored: no snmpwalk is run",
        )
    },
    OptSpec {
        value_name: "path",
        ..opt(
            "serial-port",
            None,
            true,
            Types::MODBUS,
            "Serial device of a Modbus RTU PDU (instead of --ip for Modbus TCP)",
        )
    },
    OptSpec {
        content: "integer",
        default: Some("9600"),
        value_name: "baud",
        ..opt(
            "baud",
            None,
            true,
            Types::MODBUS,
            "Line speed of --serial-port (8N1)",
        )
    },
    OptSpec {
        content: "integer",
        default: Some("1"),
        value_name: "unit",
        ..opt(
            "unit-id",
            None,
            true,
            Types::MODBUS,
            "Modbus unit (slave) id of the PDU; default for the outlets of --map",
        )
    },
    OptSpec {
        value_name: "file",
        ..opt(
            "map",
            None,
            true,
            Types::MODBUS,
            "TOML file naming the outlets of each plug: [plugs] db1 = [{ coil = 0 }, \
             { register = 10, on = 1, off = 0, unit = 2 }]; without it plug N is coil N-1",
        )
    },
    OptSpec {
        default: Some(","),
        value_name: "char",
        ..opt(
            "separator",
            Some('C'),
            true,
            Types::OUTLETS,
            "Separator for CSV created by 'list' operation",
        )
    },
    OptSpec {
        default: Some(","),
        value_name: "char",
        ..opt(
            "plug-separator",
            None,
            true,
            Types::OUTLETS,
            "Separator for plug parameter when specifying more than 1 plug",
        )
    },
    opt("verbose", Some('v'), false, Types::ALL, "Verbose mode"),
    OptSpec {
        hidden: true,
        ..opt(
            "debug-file",
            Some('D'),
            true,
            Types::ALL,
            "Write debug information to given file",
        )
    },
    opt(
        "quiet",
        Some('q'),
        false,
        Types::ALL,
        "Disable logging to stderr",
    ),
    opt(
        "version",
        Some('V'),
        false,
        Types::ALL,
        "Display version information and exit",
    ),
    opt(
        "help",
        Some('h'),
        false,
        Types::ALL,
        "Display help and exit",
    ),
    OptSpec {
        content: "second",
        default: Some("0"),
        value_name: "seconds",
        ..opt(
            "delay",
            None,
            true,
            Types::ALL,
            "Wait X seconds before fencing is started",
        )
    },
    OptSpec {
        content: "second",
        default: Some("5"),
        value_name: "seconds",
        ..opt(
            "login-timeout",
            None,
            true,
            Types::ALL,
            "Wait X seconds for cmd prompt after login",
        )
    },
    OptSpec {
        content: "second",
        default: Some("20"),
        value_name: "seconds",
        ..opt(
            "power-timeout",
            None,
            true,
            Types::ALL,
            "Test X seconds for status change after ON/OFF",
        )
    },
    OptSpec {
        content: "second",
        default: Some("0"),
        value_name: "seconds",
        ..opt(
            "power-wait",
            None,
            true,
            Types::ALL,
            "Wait X seconds after issuing ON/OFF (not needed: the state is confirmed; for \
             outlets it is also the time off in a reboot, 5 s unless given)",
        )
    },
    OptSpec {
        content: "second",
        default: Some("3"),
        value_name: "seconds",
        ..opt(
            "shell-timeout",
            None,
            true,
            Types::ALL,
            "Wait X seconds for cmd prompt after issuing command",
        )
    },
    OptSpec {
        content: "integer",
        default: Some("1"),
        value_name: "attempts",
        ..opt(
            "retry-on",
            None,
            true,
            Types::ALL,
            "Count of attempts to retry power on",
        )
    },
];

/// Parses `args` with the short letters and long names of `kind`.
fn parse_args_as(args: &[String], kind: Kind) -> Result<Options, String> {
    let mut options = Options::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let Some(spec) = OPTIONS
                .iter()
                .find(|o| o.long == name && o.types.contains(kind))
            else {
                return Err(format!("Parse error: option --{name} not recognized"));
            };
            let value = if spec.takes_value {
                match inline {
                    Some(v) => v,
                    None => {
                        let Some(v) = args.get(i) else {
                            return Err(format!("Parse error: option --{name} requires argument"));
                        };
                        i += 1;
                        v.clone()
                    }
                }
            } else if inline.is_some() {
                return Err(format!(
                    "Parse error: option --{name} must not have an argument"
                ));
            } else {
                "1".to_owned()
            };
            options.insert(spec.long.to_owned(), value);
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let chars: Vec<char> = shorts.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(spec) = OPTIONS
                    .iter()
                    .find(|o| o.short == Some(c) && o.types.contains(kind))
                else {
                    return Err(format!("Parse error: option -{c} not recognized"));
                };
                if spec.takes_value {
                    let rest: String = chars[j..].iter().collect();
                    let value = if !rest.is_empty() {
                        rest
                    } else {
                        let Some(v) = args.get(i) else {
                            return Err(format!("Parse error: option -{c} requires argument"));
                        };
                        i += 1;
                        v.clone()
                    };
                    options.insert(spec.long.to_owned(), value);
                    break;
                }
                options.insert(spec.long.to_owned(), "1".to_owned());
            }
        } else {
            eprintln!("WARNING: Unused arguments on command line: ['{arg}']");
        }
    }
    Ok(options)
}

/// The first `--type` value on the command line, before anything is parsed.
fn type_in_args(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--type" {
            return it.next().map(String::as_str);
        }
        if let Some(value) = arg.strip_prefix("--type=") {
            return Some(value);
        }
    }
    None
}

fn invalid_type(name: &str) -> String {
    let names: Vec<String> = Kind::ALL
        .into_iter()
        .map(|k| format!("'{}'", k.name()))
        .collect();
    format!(
        "Failed: You have to enter a valid choice for --type from the valid values: [{}] (not {name})",
        names.join(", ")
    )
}

fn run(options: Options) -> u8 {
    if options.contains_key("help") {
        print!("{}", usage());
        return 0;
    }
    if options.contains_key("version") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let kind = match options.get("type").map(|t| (t, Kind::parse(t))) {
        None => Some(Kind::Ipmi),
        Some((_, Some(kind))) => Some(kind),
        Some((_, None)) => None,
    };
    let action = options
        .get("action")
        .map_or(kind.unwrap_or(Kind::Ipmi).default_action(), String::as_str)
        .to_ascii_lowercase();
    let action = match action.as_str() {
        "meta-data" => "metadata".to_owned(),
        // fence_ifmib's (fabric fencing) names for off and on.
        "disable" if kind == Some(Kind::IfMib) => "off".to_owned(),
        "enable" if kind == Some(Kind::IfMib) => "on".to_owned(),
        _ => action,
    };
    if action == "metadata" {
        print!("{}", metadata());
        return 0;
    }
    let Some(kind) = kind else {
        let name = options.get("type").map_or("", String::as_str);
        return fail_usage(&invalid_type(name));
    };
    for name in options.keys() {
        if let Some(spec) = OPTIONS.iter().find(|o| o.long == name) {
            if !spec.types.contains(kind) {
                return fail_usage(&format!("Parse error: option --{name} not recognized"));
            }
        }
    }
    if !kind.accepts(&action) {
        return fail_usage(&format!("Failed: Unrecognised action '{action}'"));
    }
    let device = match Device::from_options(&options, kind, &action) {
        Ok(d) => d,
        Err(message) if action == "validate-all" => {
            error_line(&message);
            return fail_usage("validate-all failed");
        }
        Err(message) => return fail_usage(&message),
    };
    if action == "validate-all" {
        return 0;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error_line(&format!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    rt.block_on(act(device, &action))
}

const ACTIONS: &[&str] = &[
    "on",
    "off",
    "reboot",
    "status",
    "monitor",
    "list",
    "list-status",
    "validate-all",
];

/// A built driver and the timing options that go with it.
struct Device {
    /// `None` only for an outlet type given no plug, which may still list and monitor.
    driver: Option<Box<dyn FenceDevice>>,
    lister: Lister,
    /// The Redfish driver reads the state before it resets and reports a target already there
    /// as confirmed by that one read; the others are asked first.
    reads_before_reset: bool,
    delay: Duration,
    power_wait: Option<Duration>,
    timeout: Duration,
}

/// What `list` and `list-status` walk, and what `monitor` probes when there is no plug.
enum Lister {
    /// fence-agents' NOTICE line.
    None,
    Redfish(Box<RedfishDevice>),
    /// Outlet names by the PDU's sysObjectID (as fence_apc_snmp), states by the driver.
    ApcSnmp {
        params: SnmpParams,
        separator: String,
    },
    /// ifName (ifDescr where there is no ifXTable), ifAlias, ifAdminStatus.
    IfMib {
        params: SnmpParams,
        separator: String,
    },
    /// The plugs of `--map`, each a node of the device.
    Modbus {
        params: ModbusParams,
        separator: String,
    },
}

impl Device {
    fn from_options(options: &Options, kind: Kind, action: &str) -> Result<Device, String> {
        let delay = Duration::from_secs(seconds(options, "delay", 0)?);
        let power_wait = options
            .get("power-wait")
            .map(|_| seconds(options, "power-wait", 0))
            .transpose()?
            .map(Duration::from_secs);
        let timeout = Duration::from_secs(
            seconds(options, "power-timeout", 20)? + seconds(options, "login-timeout", 5)?,
        );
        let port = options
            .get("ipport")
            .map(|p| {
                p.trim().parse::<u16>().map_err(|_| {
                    "Failed: The value you have entered for --ipport is not a valid integer"
                        .to_owned()
                })
            })
            .transpose()?;
        let timing = |driver: Option<Box<dyn FenceDevice>>, lister: Lister| Device {
            driver,
            lister,
            reads_before_reset: kind == Kind::Redfish,
            delay,
            power_wait,
            timeout,
        };
        // A plug is needed to act on, not to list or to check the device, as in fencing.py.
        let plug_optional = matches!(action, "list" | "list-status" | "monitor");
        let off_time = power_wait.unwrap_or(PDU_OFF_TIME);
        match kind {
            Kind::Ipmi => {
                let driver = ipmi_device(options, port)?;
                Ok(timing(Some(Box::new(driver)), Lister::None))
            }
            Kind::Redfish => {
                let (driver, lister) = redfish_devices(options, port)?;
                Ok(timing(
                    Some(Box::new(driver)),
                    Lister::Redfish(Box::new(lister)),
                ))
            }
            Kind::ApcSnmp | Kind::IfMib => {
                let params = snmp_params(options, kind, port)?;
                let separator = separator(options);
                let plugs = plugs(options, plug_optional)?;
                let driver: Option<Box<dyn FenceDevice>> = match (&plugs, kind) {
                    (None, _) => None,
                    (Some(plugs), Kind::ApcSnmp) => {
                        Some(Box::new(apc_device(params.clone(), plugs, off_time)?))
                    }
                    (Some(plugs), _) => Some(Box::new(ifmib_device(params.clone(), plugs)?)),
                };
                let lister = if kind == Kind::ApcSnmp {
                    Lister::ApcSnmp { params, separator }
                } else {
                    Lister::IfMib { params, separator }
                };
                Ok(timing(driver, lister))
            }
            Kind::Modbus => {
                let plugs = plugs(options, plug_optional)?;
                let (driver, lister) = modbus_devices(options, port, plugs, off_time)?;
                Ok(timing(Some(Box::new(driver)), lister))
            }
        }
    }
}

fn seconds(options: &Options, name: &str, default: u64) -> Result<u64, String> {
    options.get(name).map_or(Ok(default), |v| {
        v.trim().parse::<u64>().map_err(|_| {
            format!(
                "Failed: The value you have entered for --{name} is not a valid time in seconds"
            )
        })
    })
}

fn ip(options: &Options) -> Result<&str, String> {
    options
        .get("ip")
        .map(|ip| ip.trim())
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| "Failed: You have to enter fence address".to_owned())
}

/// `--password` or the output of `--password-script` (or the SNMP privacy pair).
fn secret(options: &Options, name: &str, script: &str) -> Result<Option<Secret>, String> {
    match (options.get(name), options.get(script)) {
        (Some(p), _) => Ok(Some(Secret::new(p.clone()))),
        (None, Some(script)) => password_from_script(script).map(Some),
        (None, None) => Ok(None),
    }
}

fn ipmi_device(options: &Options, port: Option<u16>) -> Result<IpmiDevice, String> {
    let ip = ip(options)?;
    let Some(username) = options.get("username").cloned() else {
        return Err("Failed: You have to set login name".to_owned());
    };
    let Some(password) = secret(options, "password", "password-script")? else {
        return Err("Failed: You have to enter password or password script".to_owned());
    };
    let address = resolve(ip, port.unwrap_or(IPMI_PORT))?;
    let mut params = IpmiParams::new(address, username, password);
    if let Some(c) = options.get("cipher") {
        params.cipher_suite = c
            .trim()
            .parse()
            .map_err(|_| format!("Failed: cipher {c:?} is not a cipher suite number"))?;
    }
    params.privilege = match options
        .get("privlvl")
        .map(|p| p.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("administrator") => Privilege::Administrator,
        Some("operator") => Privilege::Operator,
        Some(other) => {
            return Err(format!(
            "Failed: privilege level {other} cannot control power: use operator or administrator"
        ))
        }
    };
    params.poll_interval = POLL_INTERVAL;
    IpmiDevice::new(AGENT, TARGET, params).map_err(|e| format!("Failed: {}", e.message))
}

/// The driver, and a second one to list the systems with.
fn redfish_devices(
    options: &Options,
    port: Option<u16>,
) -> Result<(RedfishDevice, RedfishDevice), String> {
    let ip = ip(options)?;
    let username = options.get("username").cloned();
    if username.is_none() {
        return Err("Failed: You have to set login name".to_owned());
    }
    let password = secret(options, "password", "password-script")?;
    if password.is_none() {
        return Err("Failed: You have to enter password or password script".to_owned());
    }
    let host = if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let tls = if options.contains_key("ssl-insecure") {
        TlsTrust::DangerInsecure
    } else {
        match std::env::var_os("REQUESTS_CA_BUNDLE") {
            Some(bundle) => TlsTrust::CaFile(bundle.into()),
            None => TlsTrust::System,
        }
    };
    let params = RedfishParams {
        url: format!("https://{host}:{}", port.unwrap_or(HTTPS_PORT)),
        system: options.get("systems-uri").cloned(),
        username,
        password,
        auth: RedfishAuth::Basic,
        tls,
        request_timeout: REQUEST_TIMEOUT,
        poll_interval: POLL_INTERVAL,
    };
    let driver = RedfishDevice::new(AGENT, TARGET, params.clone())
        .map_err(|e| format!("Failed: {}", e.message))?;
    let lister =
        RedfishDevice::new(AGENT, TARGET, params).map_err(|e| format!("Failed: {}", e.message))?;
    Ok((driver, lister))
}

/// Address, version and credentials as fence_apc_snmp and fence_ifmib take them.
///
/// Version 2c unless `--snmp-version` says 3 (fence_apc_snmp's default, v1, is refused: its
/// community travels in clear and anyone who sees it may switch outlets). The community
/// defaults to `private` for apc-snmp only, as in those agents. For v3 the security level
/// defaults to authPriv when a privacy password is given, else authNoPriv, as fencing_snmp
/// infers it.
fn snmp_params(options: &Options, kind: Kind, port: Option<u16>) -> Result<SnmpParams, String> {
    let address = resolve(ip(options)?, port.unwrap_or(SNMP_PORT))?;
    let choice = |name: &str, value: &str, valid: &[&str]| {
        let valid: Vec<String> = valid.iter().map(|v| format!("'{v}'")).collect();
        format!(
            "Failed: You have to enter a valid choice for --{name} from the valid values: [{}] (not {value})",
            valid.join(", ")
        )
    };
    let version = options
        .get("snmp-version")
        .map_or("2c", |v| v.trim())
        .to_ascii_lowercase();
    let security = match version.as_str() {
        "2c" | "2" => {
            let community = match (options.get("community"), kind) {
                (Some(c), _) => c.clone(),
                (None, Kind::ApcSnmp) => APC_COMMUNITY.to_owned(),
                (None, _) => {
                    return Err(
                        "Failed: SNMP v2c needs a community: give -c/--community (fence_ifmib \
                         has no default either)"
                            .to_owned(),
                    )
                }
            };
            SnmpSecurity::V2c {
                community: Secret::new(community),
            }
        }
        "1" => {
            return Err(
                "Failed: SNMP version 1 is not supported: it carries no authentication. Use \
                 --snmp-version=2c (the same community works on almost every agent) or \
                 --snmp-version=3"
                    .to_owned(),
            )
        }
        "3" => {
            let Some(username) = options.get("username").filter(|u| !u.is_empty()).cloned() else {
                return Err("Failed: SNMP v3 needs a user: give -l/--username".to_owned());
            };
            let auth = match options
                .get("snmp-auth-prot")
                .map(|p| p.trim().to_ascii_uppercase())
                .as_deref()
            {
                None | Some("SHA" | "SHA1" | "SHA-1") => AuthProtocol::Sha1,
                Some("SHA256" | "SHA-256") => AuthProtocol::Sha256,
                Some("MD5") => {
                    return Err(
                        "Failed: --snmp-auth-prot=MD5 is not supported (HMAC-MD5 is broken): \
                         use SHA or SHA256"
                            .to_owned(),
                    )
                }
                Some(other) => return Err(choice("snmp-auth-prot", other, &["SHA", "SHA256"])),
            };
            let privacy_password = secret(options, "snmp-priv-passwd", "snmp-priv-passwd-script")?;
            let with_privacy = match options
                .get("snmp-sec-level")
                .map(|l| l.trim().to_ascii_lowercase())
                .as_deref()
            {
                None => privacy_password.is_some(),
                Some("authpriv") => true,
                Some("authnopriv") => false,
                Some("noauthnopriv") => {
                    return Err(
                        "Failed: --snmp-sec-level=noAuthNoPriv is not supported: a fence must \
                         authenticate. Use authNoPriv or authPriv"
                            .to_owned(),
                    )
                }
                Some(other) => {
                    return Err(choice("snmp-sec-level", other, &["authNoPriv", "authPriv"]))
                }
            };
            let Some(auth_password) = secret(options, "password", "password-script")? else {
                return Err(
                    "Failed: SNMP v3 needs the authentication passphrase: give -p/--password \
                     or -S/--password-script"
                        .to_owned(),
                );
            };
            let privacy = if with_privacy {
                let protocol = match options
                    .get("snmp-priv-prot")
                    .map(|p| p.trim().to_ascii_uppercase())
                    .as_deref()
                {
                    None | Some("AES" | "AES128" | "AES-128") => PrivProtocol::Aes128,
                    Some("DES") => {
                        return Err(
                            "Failed: --snmp-priv-prot=DES is not supported (56-bit DES is \
                             broken): use AES"
                                .to_owned(),
                        )
                    }
                    Some(other) => return Err(choice("snmp-priv-prot", other, &["AES"])),
                };
                let Some(password) = privacy_password else {
                    return Err("Failed: authPriv needs the privacy passphrase: give \
                         -P/--snmp-priv-passwd or -R/--snmp-priv-passwd-script"
                        .to_owned());
                };
                Some((protocol, password))
            } else {
                None
            };
            SnmpSecurity::V3 {
                username,
                auth,
                auth_password,
                privacy,
            }
        }
        other => return Err(choice("snmp-version", other, &["2c", "3"])),
    };
    Ok(SnmpParams {
        address,
        security,
        request_timeout: PDU_REQUEST_TIMEOUT,
        retries: SNMP_RETRIES,
    })
}

/// The plugs of `--plug`, split at `--plug-separator` as fencing.py does; `None` when absent
/// and `optional`.
fn plugs(options: &Options, optional: bool) -> Result<Option<Vec<String>>, String> {
    let Some(plug) = options.get("plug").filter(|p| !p.trim().is_empty()) else {
        if optional {
            return Ok(None);
        }
        return Err("Failed: You have to enter plug number or machine identification".to_owned());
    };
    let separator = options
        .get("plug-separator")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(",");
    let plugs: Vec<String> = plug
        .split(separator)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if plugs.is_empty() || plugs.len() > MAX_PLUGS {
        return Err(format!(
            "Failed: --plug names {} plugs: expected 1 to {MAX_PLUGS}",
            plugs.len()
        ));
    }
    Ok(Some(plugs))
}

fn separator(options: &Options) -> String {
    options
        .get("separator")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| ",".to_owned())
}

fn apc_device(
    snmp: SnmpParams,
    plugs: &[String],
    off_time: Duration,
) -> Result<SnmpPduDevice, String> {
    let outlets = plugs
        .iter()
        .map(|p| outlet_ref(p))
        .collect::<Result<Vec<_>, _>>()?;
    let params = SnmpPduParams {
        snmp,
        profile: PduProfile::Auto,
        outlets: BTreeMap::from([(TARGET.to_owned(), outlets)]),
        poll_interval: POLL_INTERVAL,
        off_time,
    };
    SnmpPduDevice::new(AGENT, params).map_err(|e| format!("Failed: {}", e.message))
}

/// An outlet number or name. fence_apc_snmp's `switch:plug` (MasterSwitch Plus chains) is
/// taken for switch 1 only, which every other APC model reduces it to; on another switch
/// the plug number would name an outlet of switch 1, the wrong machine.
fn outlet_ref(plug: &str) -> Result<OutletRef, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(OutletRef::Number)
            .ok_or_else(|| format!("Failed: outlet {s} is not an outlet number"))
    };
    if let Some((switch, outlet)) = plug.split_once(':') {
        if digits(switch) && digits(outlet) {
            if switch.trim_start_matches('0') != "1" {
                return Err(format!(
                    "Failed: plug {plug}: switch {switch} of a MasterSwitch Plus chain is not \
                     supported, only switch 1"
                ));
            }
            return number(outlet);
        }
    }
    if digits(plug) {
        number(plug)
    } else {
        Ok(OutletRef::Name(plug.to_owned()))
    }
}

fn ifmib_device(snmp: SnmpParams, plugs: &[String]) -> Result<IfMibDevice, String> {
    let ports = plugs
        .iter()
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u32>()
                    .map(PortRef::Index)
                    .map_err(|_| format!("Failed: port {p} is not an ifIndex"))
            } else {
                Ok(PortRef::Name(p.clone()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let params = IfMibParams {
        snmp,
        ports: BTreeMap::from([(TARGET.to_owned(), ports)]),
        poll_interval: POLL_INTERVAL,
        check_oper_status: true,
    };
    IfMibDevice::new(AGENT, params).map_err(|e| format!("Failed: {}", e.message))
}

/// The driver for the plugs given and, with `--map`, a lister over every plug of the map.
///
/// Without a plug (list, monitor) the driver switches the whole map, or plug 1 without one:
/// it is only used to check the PDU answers.
fn modbus_devices(
    options: &Options,
    port: Option<u16>,
    plugs: Option<Vec<String>>,
    off_time: Duration,
) -> Result<(ModbusDevice, Lister), String> {
    let transport = match (options.get("serial-port"), options.get("ip")) {
        (Some(_), Some(_)) => {
            return Err(
                "Failed: give --ip (Modbus TCP) or --serial-port (Modbus RTU), not both".to_owned(),
            )
        }
        (Some(path), None) => {
            if port.is_some() {
                return Err("Failed: --ipport is for Modbus TCP (--ip), not --serial-port".into());
            }
            let baud = match options.get("baud") {
                None => MODBUS_BAUD,
                Some(b) => b.trim().parse::<u32>().map_err(|_| {
                    "Failed: The value you have entered for --baud is not a valid integer"
                        .to_owned()
                })?,
            };
            ModbusTransport::Rtu {
                path: PathBuf::from(path),
                baud,
            }
        }
        (None, Some(_)) => {
            if options.contains_key("baud") {
                return Err("Failed: --baud is for Modbus RTU (--serial-port), not --ip".into());
            }
            ModbusTransport::Tcp {
                address: resolve(ip(options)?, port.unwrap_or(MODBUS_PORT))?,
            }
        }
        (None, None) => {
            return Err(
                "Failed: You have to enter fence address (--ip for Modbus TCP) or --serial-port \
                 (Modbus RTU)"
                    .to_owned(),
            )
        }
    };
    let unit = match options.get("unit-id") {
        None => MODBUS_UNIT,
        Some(u) => u.trim().parse::<u8>().map_err(|_| {
            format!("Failed: --unit-id {u} is not a Modbus unit id (1 to 247, 0 or 255 for some gateways)")
        })?,
    };
    let map = options
        .get("map")
        .map(|path| load_map(path, unit))
        .transpose()?;
    let outlets: Vec<Outlet> = match (&plugs, &map) {
        (Some(plugs), Some(map)) => {
            let mut outlets = Vec::new();
            for plug in plugs {
                let Some(found) = map.plugs.get(plug) else {
                    let known: Vec<&str> = map.plugs.keys().map(String::as_str).collect();
                    return Err(format!(
                        "Failed: plug {plug:?} is not in {}: it maps {}",
                        map.path,
                        known.join(", ")
                    ));
                };
                outlets.extend(found.iter().copied());
            }
            outlets
        }
        (Some(plugs), None) => plugs
            .iter()
            .map(|p| {
                p.parse::<u32>()
                    .ok()
                    .and_then(plug_outlet)
                    .map(|o| Outlet { unit, ..o })
                    .ok_or_else(|| {
                        format!(
                            "Failed: plug {p:?} is not an outlet number (1 to 65536, coil N-1): \
                             name outlets with --map"
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        (None, Some(map)) => map.plugs.values().flatten().copied().collect(),
        (None, None) => plug_outlet(1)
            .map(|o| Outlet { unit, ..o })
            .into_iter()
            .collect(),
    };
    if outlets.len() > MAX_OUTLETS {
        return Err(format!(
            "Failed: {} outlets named: at most {MAX_OUTLETS}",
            outlets.len()
        ));
    }
    let params = ModbusParams {
        transport,
        outlets: BTreeMap::from([(TARGET.to_owned(), outlets)]),
        request_timeout: PDU_REQUEST_TIMEOUT,
        poll_interval: POLL_INTERVAL,
        off_time,
    };
    let lister = match map {
        Some(map) => Lister::Modbus {
            params: ModbusParams {
                outlets: map.plugs,
                ..params.clone()
            },
            separator: separator(options),
        },
        None => Lister::None,
    };
    let driver = ModbusDevice::new(AGENT, params).map_err(|e| format!("Failed: {}", e.message))?;
    Ok((driver, lister))
}

/// A `--map` file: plug name (or number) to the outlets that feed it.
#[derive(Debug)]
struct PlugMap {
    path: String,
    plugs: BTreeMap<String, Vec<Outlet>>,
}

/// The file as written: `[plugs]`, each an outlet table or a list of them.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugMap {
    plugs: BTreeMap<String, toml::Spanned<toml::Value>>,
}

/// Reads and checks a `--map` file, collecting every mistake with its line, column and key.
fn load_map(path: &str, default_unit: u8) -> Result<PlugMap, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MAP_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("Failed: cannot read the plug map {path}: {e}"))?;
    let raw: RawPlugMap = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| position(&text, s.start))
            .unwrap_or_default();
        format!("Failed: {path}{at}: {}", e.message().trim_end())
    })?;
    let mut errors = Vec::new();
    if raw.plugs.is_empty() {
        errors.push(format!(
            "Failed: {path}: [plugs] is empty: name at least one plug"
        ));
    }
    if raw.plugs.len() > MAX_MAP_PLUGS {
        errors.push(format!(
            "Failed: {path}: {} plugs: at most {MAX_MAP_PLUGS}",
            raw.plugs.len()
        ));
    }
    let mut plugs = BTreeMap::new();
    for (name, value) in &raw.plugs {
        let at = position(&text, value.span().start);
        let entries: Vec<&toml::Value> = match value.get_ref() {
            toml::Value::Array(list) => list.iter().collect(),
            table @ toml::Value::Table(_) => vec![table],
            other => {
                errors.push(format!(
                    "Failed: {path}{at}: plugs.{name}: {other} is not an outlet: {OUTLET_SHAPE}"
                ));
                continue;
            }
        };
        if entries.is_empty() || entries.len() > MAX_OUTLETS {
            errors.push(format!(
                "Failed: {path}{at}: plugs.{name}: {} outlets: expected 1 to {MAX_OUTLETS}",
                entries.len()
            ));
            continue;
        }
        let mut outlets = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            match map_outlet(entry, default_unit) {
                Ok(outlet) => outlets.push(outlet),
                Err(message) => {
                    errors.push(format!("Failed: {path}{at}: plugs.{name}[{i}]: {message}"));
                }
            }
        }
        plugs.insert(name.clone(), outlets);
    }
    if errors.is_empty() {
        Ok(PlugMap {
            path: path.to_owned(),
            plugs,
        })
    } else {
        Err(errors.join("\n"))
    }
}

/// One `{ coil = N }` or `{ register = N, on = V, off = V }`, with an optional `unit`.
fn map_outlet(entry: &toml::Value, default_unit: u8) -> Result<Outlet, String> {
    let Some(table) = entry.as_table() else {
        return Err(format!("{entry} is not an outlet: {OUTLET_SHAPE}"));
    };
    if let Some(key) = table
        .keys()
        .find(|k| !matches!(k.as_str(), "coil" | "register" | "on" | "off" | "unit"))
    {
        return Err(format!("unknown key {key}: {OUTLET_SHAPE}"));
    }
    let number = |key: &str, max: i64| -> Result<Option<i64>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if (0..=max).contains(n) => Ok(Some(*n)),
            Some(other) => Err(format!("{key} = {other} is not an integer from 0 to {max}")),
        }
    };
    let u16_of = |v: i64| u16::try_from(v).map_err(|_| format!("{v} is out of range"));
    let unit = match number("unit", i64::from(u8::MAX))? {
        Some(u) => u8::try_from(u).map_err(|_| format!("unit {u} is out of range"))?,
        None => default_unit,
    };
    let max = i64::from(u16::MAX);
    let (on, off) = (number("on", max)?, number("off", max)?);
    let control = match (number("coil", max)?, number("register", max)?) {
        (Some(coil), None) => {
            if on.is_some() || off.is_some() {
                return Err(format!(
                    "a coil is 1 when on and 0 when off: on and off are for registers; \
                     {OUTLET_SHAPE}"
                ));
            }
            OutletControl::Coil {
                address: u16_of(coil)?,
            }
        }
        (None, Some(register)) => {
            let (Some(on), Some(off)) = (on, off) else {
                return Err(format!(
                    "a register needs its on and off values; {OUTLET_SHAPE}"
                ));
            };
            if on == off {
                return Err(
                    "on and off are the same value: the outlet's state could not be told apart"
                        .to_owned(),
                );
            }
            OutletControl::Register {
                address: u16_of(register)?,
                on: u16_of(on)?,
                off: u16_of(off)?,
            }
        }
        (Some(_), Some(_)) => return Err(format!("both coil and register: {OUTLET_SHAPE}")),
        (None, None) => return Err(format!("neither coil nor register: {OUTLET_SHAPE}")),
    };
    Ok(Outlet { unit, control })
}

/// `:line:column` (1-based) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    format!(":{line}:{column}")
}

async fn act(mut device: Device, action: &str) -> u8 {
    if matches!(action, "off" | "reboot") && !device.delay.is_zero() {
        tokio::time::sleep(device.delay).await;
    }
    let deadline = Instant::now() + device.timeout;
    let result: Result<u8, FenceError> = async {
        match (action, device.driver.as_mut()) {
            ("list" | "list-status", _) => {
                list(&mut device.lister, action == "list-status", deadline).await
            }
            ("monitor", None) => probe(&device.lister, deadline).await.map(|()| 0),
            (_, None) => Err(FenceError::new(
                FenceErrorKind::TargetUnknown,
                AGENT,
                "You have to enter plug number or machine identification",
            )),
            ("status", Some(driver)) => {
                let state = driver.status(TARGET, deadline).await?;
                println!("Status: {}", upper(state));
                Ok(if state == PowerState::Off { 2 } else { 0 })
            }
            ("monitor", Some(driver)) => driver.monitor(deadline).await.map(|()| 0),
            ("on" | "off", Some(driver)) => {
                let want = if action == "on" {
                    PowerState::On
                } else {
                    PowerState::Off
                };
                if !device.reads_before_reset {
                    let before = driver.status(TARGET, deadline).await?;
                    if before == want {
                        println!("Success: Already {}", upper(want));
                        return Ok(0);
                    }
                }
                let c = if want == PowerState::On {
                    driver.on(TARGET, deadline).await?
                } else {
                    driver.off(TARGET, deadline).await?
                };
                if device.reads_before_reset && c.polls == 1 {
                    println!("Success: Already {}", upper(c.state));
                    return Ok(0);
                }
                if let Some(wait) = device.power_wait {
                    tokio::time::sleep(wait).await;
                }
                println!("Success: Powered {}", upper(c.state));
                Ok(0)
            }
            (_, Some(driver)) => {
                if let Some(wait) = device.power_wait {
                    driver.off(TARGET, deadline).await?;
                    tokio::time::sleep(wait).await;
                    driver.on(TARGET, deadline).await?;
                } else {
                    driver.reboot(TARGET, deadline).await?;
                }
                println!("Success: Rebooted");
                Ok(0)
            }
        }
    }
    .await;
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            error_line(&format!("Failed: {} ({:?})", e.message, e.kind));
            1
        }
    }
}

/// `list` and `list-status`: one `id,alias[,status]` line per outlet, port, plug or system.
async fn list(lister: &mut Lister, with_status: bool, deadline: Instant) -> Result<u8, FenceError> {
    match lister {
        Lister::None => println!("NOTICE: List option is not working on this device yet"),
        Lister::Redfish(rf) => {
            for s in rf.systems(deadline).await? {
                println!("{s},{s}");
            }
        }
        Lister::ApcSnmp { params, separator } => {
            let mut session = SnmpSession::connect(AGENT, params, deadline).await?;
            let model = session.sys_object_id(deadline).await?;
            let column = outlet_name_column(&model)?;
            let rows = session.walk(&column, deadline, MAX_LIST_ROWS).await?;
            let outlets: Vec<(u32, String)> = rows
                .into_iter()
                .filter_map(|(oid, value)| Some((oid.last()?, text(&value))))
                .collect();
            let mut states = BTreeMap::new();
            if with_status && !outlets.is_empty() {
                let nodes = outlets
                    .iter()
                    .map(|(n, _)| (n.to_string(), vec![OutletRef::Number(*n)]))
                    .collect();
                let mut pdu = SnmpPduDevice::new(
                    AGENT,
                    SnmpPduParams {
                        snmp: params.clone(),
                        profile: PduProfile::Auto,
                        outlets: nodes,
                        poll_interval: POLL_INTERVAL,
                        off_time: PDU_OFF_TIME,
                    },
                )?;
                for (n, _) in &outlets {
                    let state = pdu.status(&n.to_string(), deadline).await;
                    states.insert(*n, state.ok());
                }
            }
            for (n, name) in &outlets {
                print_row(&n.to_string(), name, separator, with_status, states.get(n));
            }
        }
        Lister::IfMib { params, separator } => {
            let mut session = SnmpSession::connect(AGENT, params, deadline).await?;
            let mut names = session
                .walk(&constant_oid(IF_NAME)?, deadline, MAX_LIST_ROWS)
                .await?;
            if names.is_empty() {
                names = session
                    .walk(&constant_oid(IF_DESCR)?, deadline, MAX_LIST_ROWS)
                    .await?;
            }
            let aliases = by_index(
                session
                    .walk(&constant_oid(IF_ALIAS)?, deadline, MAX_LIST_ROWS)
                    .await
                    .unwrap_or_default(),
            );
            let admin = if with_status {
                by_index(
                    session
                        .walk(&constant_oid(IF_ADMIN_STATUS)?, deadline, MAX_LIST_ROWS)
                        .await?,
                )
            } else {
                BTreeMap::new()
            };
            for (index, name) in by_index(names) {
                let alias = aliases.get(&index).map(text).unwrap_or_default();
                let state = admin.get(&index).map(|v| match v.as_int() {
                    Some(1) => Some(PowerState::On),
                    Some(2) => Some(PowerState::Off),
                    _ => None,
                });
                print_row(&text(&name), &alias, separator, with_status, state.as_ref());
            }
        }
        Lister::Modbus { params, separator } => {
            let mut pdu = if with_status {
                Some(ModbusDevice::new(AGENT, params.clone())?)
            } else {
                None
            };
            for (plug, outlets) in &params.outlets {
                let described: Vec<String> = outlets.iter().map(Outlet::to_string).collect();
                let state = match pdu.as_mut() {
                    Some(pdu) => Some(pdu.status(plug, deadline).await.ok()),
                    None => None,
                };
                print_row(
                    plug,
                    &described.join(" + "),
                    separator,
                    with_status,
                    state.as_ref(),
                );
            }
        }
    }
    Ok(0)
}

/// `monitor` without a plug: the device answers and takes the credentials.
async fn probe(lister: &Lister, deadline: Instant) -> Result<(), FenceError> {
    match lister {
        Lister::ApcSnmp { params, .. } | Lister::IfMib { params, .. } => {
            let mut session = SnmpSession::connect(AGENT, params, deadline).await?;
            session.sys_object_id(deadline).await.map(|_| ())
        }
        Lister::Modbus { params, .. } => {
            ModbusDevice::new(AGENT, params.clone())?
                .monitor(deadline)
                .await
        }
        // Unreachable: these types always have a driver. Refusing keeps the exit code honest.
        Lister::None | Lister::Redfish(_) => Err(FenceError::new(
            FenceErrorKind::Refused,
            AGENT,
            "nothing to monitor",
        )),
    }
}

fn print_row(
    id: &str,
    alias: &str,
    separator: &str,
    with_status: bool,
    state: Option<&Option<PowerState>>,
) {
    if with_status {
        let state = state.copied().flatten().map_or("UNKNOWN", upper);
        println!("{id}{separator}{alias}{separator}{state}");
    } else {
        println!("{id}{separator}{alias}");
    }
}

/// Rows of a table column keyed by their last arc (ifIndex, outlet number).
fn by_index(rows: Vec<(Oid, SnmpValue)>) -> BTreeMap<u32, SnmpValue> {
    rows.into_iter()
        .filter_map(|(oid, value)| Some((oid.last()?, value)))
        .collect()
}

fn text(value: &SnmpValue) -> String {
    value.as_text().unwrap_or_else(|| value.to_string())
}

/// The outlet-name column for the model the agent reports, as the driver detects it (the
/// driver resolves `--plug` names there but does not list them). A model the driver refuses (a
/// MasterSwitch Plus, an unknown agent) is listed from the MasterSwitch column, which every other
/// APC agent serves (fence_apc_snmp's fallback).
fn outlet_name_column(model: &Oid) -> Result<Oid, FenceError> {
    let profile = pdu::detect_profile(model).unwrap_or(PduProfile::ApcMasterSwitch);
    pdu::name_column(&profile).ok_or_else(|| {
        FenceError::new(
            FenceErrorKind::Refused,
            AGENT,
            format!("{profile:?} has no outlet-name column"),
        )
    })
}

fn constant_oid(arcs: &[u32]) -> Result<Oid, FenceError> {
    Oid::from_arcs(arcs).ok_or_else(|| {
        FenceError::new(
            FenceErrorKind::Refused,
            AGENT,
            format!("{arcs:?} is not an OID"),
        )
    })
}

fn upper(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "ON",
        PowerState::Off => "OFF",
    }
}

fn resolve(ip: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = ip.parse::<IpAddr>() {
        return Ok(SocketAddr::new(addr, port));
    }
    (ip, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("Failed: cannot resolve {ip}"))
}

fn password_from_script(script: &str) -> Result<Secret, String> {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("Failed: cannot run the password script: {e}"))?;
    Ok(Secret::new(
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
    ))
}

fn usage() -> String {
    let mut s = String::from("Usage:\n\tfence_watchkeeper [options]\nOptions:\n");
    for o in OPTIONS.iter().filter(|o| !o.hidden) {
        let short = o
            .short
            .map_or_else(|| "    ".to_owned(), |c| format!("-{c}, "));
        let value = if o.takes_value {
            format!("=[{}]", o.value_name)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "   {short}--{}{value}\n\t\t\t\t{}\n",
            o.long,
            o.described()
        ));
    }
    s
}

fn error_line(message: &str) {
    eprintln!("ERROR: {message}");
}

fn fail_usage(message: &str) -> u8 {
    for line in message.lines() {
        error_line(line);
    }
    error_line("Please use '-h' for usage");
    1
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// The name the drivers know the fenced machine by; the agent fences the one machine its
/// device (or its plugs) belongs to.
const TARGET: &str = "target";
/// The device name in the drivers' errors and logs.
const AGENT: &str = "fence_watchkeeper";
const IPMI_PORT: u16 = 623;
const HTTPS_PORT: u16 = 443;
const SNMP_PORT: u16 = 161;
/// Modbus TCP's registered port.
const MODBUS_PORT: u16 = 502;
/// RTU line speed without `--baud`: the factory setting of most RS-485 PDUs and relay modules
/// (and the agent configuration's default).
const MODBUS_BAUD: u32 = 9600;
/// Unit id without `--unit-id`: a PDU on its own port or line answers as unit 1 out of the box.
const MODBUS_UNIT: u8 = drivers::fence::modbus::PLUG_UNIT;
/// fence_apc_snmp's default community; fence_ifmib has none.
const APC_COMMUNITY: &str = "private";
/// Same pace as the agent's default: see `config::DEFAULT_POLL_INTERVAL`. The drivers read back
/// at once after a switch; this is the pace of later reads only.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One Redfish request; fence_redfish's own default is 5 s as well (`--shell-timeout` aside).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One SNMP or Modbus request before it is resent (SNMP) or failed (Modbus): net-snmp's own
/// default, which fence_apc_snmp and fence_ifmib inherit; a PDU on the management LAN answers
/// in milliseconds. The operation's deadline bounds the resends.
const PDU_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// SNMP resends after the first request, as net-snmp's default: a lost datagram costs one
/// `PDU_REQUEST_TIMEOUT`, and silence (a wrong community looks like that) still ends at the
/// deadline.
const SNMP_RETRIES: u32 = 5;
/// How long a reboot keeps outlets off without `--power-wait`: long enough for a power supply's
/// capacitors to drain so the machine really loses power (the agent configuration's default).
const PDU_OFF_TIME: Duration = Duration::from_secs(5);
/// Plugs in one `--plug` (two to four power supplies, multipath ports, with room to spare).
const MAX_PLUGS: usize = 8;
/// Outlets one Modbus plug set may switch; the configuration's bound for one node.
const MAX_OUTLETS: usize = 8;
/// A plug map is a few lines; the bound keeps a wrong path (a disk image) from being read.
const MAX_MAP_BYTES: u64 = 1 << 20;
/// Plugs in one map: more than any PDU chain has outlets.
const MAX_MAP_PLUGS: usize = 4096;
/// Rows one listing walks: larger than any PDU or switch, small enough to bound the walk.
const MAX_LIST_ROWS: usize = 8192;
/// Pacemaker sends a dozen lines; the bound keeps a runaway writer from filling memory.
const MAX_STDIN_LINES: usize = 1000;
const OUTLET_SHAPE: &str =
    "expected { coil = N } or { register = N, on = V, off = V }, optionally with unit = U";

/// IF-MIB ifDescr, for switches without the ifXTable.
const IF_DESCR: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2];
/// IF-MIB ifAdminStatus.
const IF_ADMIN_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 7];
/// IF-MIB ifName, which `--plug` names.
const IF_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
/// IF-MIB ifAlias.
const IF_ALIAS: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_lines_parse_like_getopt() {
        let o = parse_args(&args(&[
            "--ip=10.0.0.1",
            "-l",
            "admin",
            "-padmin2",
            "-o",
            "off",
            "--lanplus",
            "--cipher",
            "3",
        ]));
        let o = o.unwrap_or_default();
        assert_eq!(o.get("ip").map(String::as_str), Some("10.0.0.1"));
        assert_eq!(o.get("username").map(String::as_str), Some("admin"));
        assert_eq!(o.get("password").map(String::as_str), Some("admin2"));
        assert_eq!(o.get("action").map(String::as_str), Some("off"));
        assert_eq!(o.get("lanplus").map(String::as_str), Some("1"));
        assert_eq!(o.get("cipher").map(String::as_str), Some("3"));
        assert_eq!(
            parse_args(&args(&["--foo"])),
            Err("Parse error: option --foo not recognized".to_owned())
        );
        assert_eq!(
            parse_args(&args(&["-Y"])),
            Err("Parse error: option -Y not recognized".to_owned())
        );
        assert_eq!(
            parse_args(&args(&["--ip"])),
            Err("Parse error: option --ip requires argument".to_owned())
        );
    }

    #[test]
    fn stdin_takes_underscores_and_legacy_names() {
        let lines = args(&[
            "# comment",
            "ipaddr=10.0.0.1",
            "login=admin",
            "passwd=\"x y\"",
            "power_timeout=3",
            "lanplus=1",
            "nodename=b",
            "bogus=1",
        ]);
        let o = parse_stdin(&lines);
        assert_eq!(o.get("ip").map(String::as_str), Some("10.0.0.1"));
        assert_eq!(o.get("username").map(String::as_str), Some("admin"));
        assert_eq!(o.get("password").map(String::as_str), Some("x y"));
        assert_eq!(o.get("power-timeout").map(String::as_str), Some("3"));
        assert!(o.contains_key("lanplus"));
        assert!(!o.contains_key("bogus"));
    }

    #[test]
    fn short_letters_follow_the_type() {
        // -P is --lanplus (a flag) for ipmi, --snmp-priv-passwd for the SNMP types; -C is
        // --cipher for ipmi, --separator for the outlet types.
        let o = parse_args(&args(&["-P", "-C", "3", "-a", "h"])).unwrap_or_default();
        assert_eq!(o.get("lanplus").map(String::as_str), Some("1"));
        assert_eq!(o.get("cipher").map(String::as_str), Some("3"));
        for ty in ["--type=apc-snmp", "--type=ifmib"] {
            let o = parse_args(&args(&["-Pprivpw", "-C", ";", ty, "-d3", "-E", "authPriv"]))
                .unwrap_or_default();
            assert_eq!(
                o.get("snmp-priv-passwd").map(String::as_str),
                Some("privpw")
            );
            assert_eq!(o.get("separator").map(String::as_str), Some(";"));
            assert_eq!(o.get("snmp-version").map(String::as_str), Some("3"));
            assert!(!o.contains_key("lanplus"));
        }
        let o =
            parse_args(&args(&["--type", "modbus", "-C", ";", "--unit-id=3"])).unwrap_or_default();
        assert_eq!(o.get("separator").map(String::as_str), Some(";"));
        // Options of another type are unknown, on either side.
        assert_eq!(
            parse_args(&args(&["--type=modbus", "-P", "x"])),
            Err("Parse error: option -P not recognized".to_owned())
        );
        assert_eq!(
            parse_args(&args(&["-c", "private"])),
            Err("Parse error: option -c not recognized".to_owned())
        );
        assert_eq!(
            parse_args(&args(&["--type=ifmib", "--lanplus"])),
            Err("Parse error: option --lanplus not recognized".to_owned())
        );
        // A password that looks like --type does not choose the type.
        let o = parse_args(&args(&[
            "-p",
            "--type=modbus",
            "--type=apc-snmp",
            "-P",
            "x",
        ]))
        .unwrap_or_default();
        assert_eq!(o.get("type").map(String::as_str), Some("apc-snmp"));
        assert_eq!(o.get("password").map(String::as_str), Some("--type=modbus"));
        assert!(parse_args(&args(&["--type=bogus"]))
            .is_err_and(|e| e.contains("valid choice for --type")));
    }

    #[test]
    fn long_names_are_unique_and_short_letters_unique_per_type() {
        for (i, a) in OPTIONS.iter().enumerate() {
            assert!(
                OPTIONS[i + 1..].iter().all(|b| b.long != a.long),
                "--{} twice",
                a.long
            );
        }
        for kind in Kind::ALL {
            let mut seen = BTreeMap::new();
            for o in OPTIONS.iter().filter(|o| o.types.contains(kind)) {
                if let Some(c) = o.short {
                    if let Some(other) = seen.insert(c, o.long) {
                        panic!(
                            "-{c} is both --{other} and --{} for {}",
                            o.long,
                            kind.name()
                        );
                    }
                }
            }
        }
    }

    fn options(a: &[&str]) -> Options {
        parse_args(&args(a)).unwrap_or_default()
    }

    #[test]
    fn snmp_security_is_built_like_fencing_snmp_and_weak_choices_are_refused() {
        let v2c = snmp_params(&options(&["--ip=127.0.0.1"]), Kind::ApcSnmp, None);
        assert!(matches!(
            v2c.map(|p| (p.address.port(), p.security)),
            Ok((161, SnmpSecurity::V2c { .. }))
        ));
        let ifmib = snmp_params(&options(&["--ip=127.0.0.1"]), Kind::IfMib, Some(1161));
        assert!(ifmib.is_err_and(|e| e.contains("community")));
        let v3 = snmp_params(
            &options(&[
                "--ip=127.0.0.1",
                "-d",
                "3",
                "-l",
                "u",
                "-p",
                "authpw",
                "--type=apc-snmp",
                "-P",
                "privpw",
            ]),
            Kind::ApcSnmp,
            None,
        );
        match v3.map(|p| p.security) {
            Ok(SnmpSecurity::V3 {
                username,
                auth,
                privacy,
                ..
            }) => {
                assert_eq!(username, "u");
                assert_eq!(auth, AuthProtocol::Sha1);
                assert!(matches!(privacy, Some((PrivProtocol::Aes128, _))));
            }
            other => panic!("{other:?}"),
        }
        let refused = |extra: &[&str], needle: &str| {
            let mut a = vec!["--type=apc-snmp", "--ip=127.0.0.1", "-l", "u", "-p", "pw"];
            a.extend_from_slice(extra);
            let r = snmp_params(&options(&a), Kind::ApcSnmp, None);
            assert!(
                r.as_ref().is_err_and(|e| e.contains(needle)),
                "{extra:?}: {:?}",
                r.map(|_| ())
            );
        };
        refused(&["-d", "1"], "version 1 is not supported");
        refused(&["-d", "3", "-b", "MD5"], "MD5 is not supported");
        refused(
            &["-d", "3", "-E", "noAuthNoPriv"],
            "noAuthNoPriv is not supported",
        );
        refused(
            &["-d", "3", "-E", "authPriv", "-B", "DES", "-P", "x"],
            "DES is not supported",
        );
        refused(&["-d", "3", "-E", "authPriv"], "privacy passphrase");
        refused(&["-d", "4"], "valid choice for --snmp-version");
    }

    #[test]
    fn apc_plugs_take_numbers_names_and_switch_one() {
        assert_eq!(outlet_ref("3"), Ok(OutletRef::Number(3)));
        assert_eq!(outlet_ref("1:4"), Ok(OutletRef::Number(4)));
        assert_eq!(
            outlet_ref("Outlet 5"),
            Ok(OutletRef::Name("Outlet 5".to_owned()))
        );
        assert!(outlet_ref("2:4").is_err_and(|e| e.contains("switch 2")));
        assert!(outlet_ref("0").is_err());
        let o = options(&["--type=apc-snmp", "-n", "1,2, 3"]);
        assert_eq!(
            plugs(&o, false),
            Ok(Some(vec!["1".to_owned(), "2".to_owned(), "3".to_owned()]))
        );
        assert!(plugs(&options(&["--type=apc-snmp"]), false).is_err());
        assert_eq!(plugs(&options(&["--type=apc-snmp"]), true), Ok(None));
    }

    #[test]
    fn plug_maps_parse_and_every_mistake_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "[plugs]\n3 = { coil = 2 }\n\"db1\" = [{ coil = 0 }, { register = 10, on = 1, off = 0, unit = 2 }]\n",
        )
        .unwrap_or_else(|e| panic!("write: {e}"));
        let map = load_map(&good.to_string_lossy(), 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            map.plugs.get("3"),
            Some(&vec![Outlet {
                unit: 5,
                control: OutletControl::Coil { address: 2 }
            }])
        );
        assert_eq!(
            map.plugs.get("db1"),
            Some(&vec![
                Outlet {
                    unit: 5,
                    control: OutletControl::Coil { address: 0 }
                },
                Outlet {
                    unit: 2,
                    control: OutletControl::Register {
                        address: 10,
                        on: 1,
                        off: 0
                    }
                }
            ])
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[plugs]\na = { coil = 1, on = 1 }\nb = { register = 3, on = 1, off = 1 }\nc = []\nd = { relay = 1 }\ne = { coil = 70000 }\nf = 7\n",
        )
        .unwrap_or_else(|e| panic!("write: {e}"));
        let err = load_map(&bad.to_string_lossy(), 1).map(|_| ()).unwrap_err();
        for needle in [
            "bad.toml:2:5: plugs.a[0]: a coil is 1",
            "bad.toml:3:5: plugs.b[0]: on and off are the same",
            "bad.toml:4:5: plugs.c: 0 outlets",
            "bad.toml:5:5: plugs.d[0]: unknown key relay",
            "bad.toml:6:5: plugs.e[0]: coil = 70000 is not an integer from 0 to 65535",
            "bad.toml:7:5: plugs.f: 7 is not an outlet",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
        let syntax = dir.path().join("syntax.toml");
        std::fs::write(&syntax, "[plugs]\na = { coil = }\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let err = load_map(&syntax.to_string_lossy(), 1)
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("syntax.toml:2:"), "{err}");
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "[plug]\na = { coil = 1 }\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let err = load_map(&unknown.to_string_lossy(), 1)
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("unknown field `plug`"), "{err}");
        assert!(load_map("/nonexistent/map.toml", 1)
            .is_err_and(|e| e.contains("cannot read the plug map")));
    }

    #[test]
    fn ifmib_has_no_reboot_and_defaults_to_off() {
        assert!(!Kind::IfMib.accepts("reboot"));
        assert!(Kind::ApcSnmp.accepts("reboot"));
        assert_eq!(Kind::IfMib.default_action(), "off");
        assert_eq!(Kind::parse("APC_SNMP"), Some(Kind::ApcSnmp));
    }

    #[test]
    fn metadata_lists_every_type_and_its_options() {
        let xml = metadata();
        for name in [
            "community",
            "snmp_version",
            "snmp_priv_passwd",
            "serial_port",
            "unit_id",
            "map",
            "separator",
        ] {
            assert!(
                xml.contains(&format!("<parameter name=\"{name}\"")),
                "{name}"
            );
        }
        assert!(xml.contains("<option value=\"apc-snmp\" />"));
        assert!(xml.contains("[types apc-snmp, ifmib]"));
    }
}
