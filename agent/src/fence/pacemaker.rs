//! `fence_watchkeeper`: watchkeeper's native IPMI and Redfish drivers behind the fence-agents
//! interface, so a Pacemaker cluster can use them by swapping the agent's name.
//!
//! The interface is the one ClusterLabs' `fencing.py` implements, kept option for option where
//! a cluster configuration could notice: options on the command line (`--ip=…`, `-o off`) or,
//! with no arguments, as `key=value` lines on stdin (long names, `-` or `_`, plus the legacy
//! `ipaddr`, `login`, `passwd`, `port`); actions on, off, reboot (the default), status,
//! monitor, list, list-status, metadata, validate-all; exit codes 0 success or on, 2 off,
//! 1 failure. `--type=ipmi|redfish` (stdin `type=`) picks the driver, and each type takes the
//! option names of the agent it replaces (`fence_ipmilan`, `fence_redfish`). An unknown
//! option on the command line is a parse error (exit 1), on stdin a warning, as in fencing.py.
//!
//! Unlike the agents it replaces, off and on are confirmed by polling the power state, so no
//! fixed `--power-wait` sleep is needed; an explicit `--power-wait` is still honoured.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use drivers::fence::ipmi::{IpmiDevice, IpmiParams, Privilege};
use drivers::fence::redfish::{RedfishAuth, RedfishDevice, RedfishParams, TlsTrust};
use drivers::fence::{FenceDevice, FenceError, PowerState};
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
pub fn parse_args(args: &[String]) -> Result<Options, String> {
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
            let Some(spec) = OPTIONS.iter().find(|o| o.long == name) else {
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
                let Some(spec) = OPTIONS.iter().find(|o| o.short == Some(c)) else {
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
         shortdesc=\"Fence agent for IPMI over LAN and Redfish (watchkeeper's native drivers)\" >\n\
         <longdesc>fence_watchkeeper switches a node off and on through its BMC, using IPMI v2.0 \
         (RMCP+, type=ipmi, the options of fence_ipmilan) or Redfish (type=redfish, the options \
         of fence_redfish). Off and on are confirmed by reading the power state back, so no \
         fixed power_wait is needed.</longdesc>\n\
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
            escape(o.help)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Types {
    All,
    Ipmi,
    Redfish,
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

const OPTIONS: &[OptSpec] = &[
    OptSpec {
        choices: &["ipmi", "redfish"],
        default: Some("ipmi"),
        content: "select",
        ..opt(
            "type",
            None,
            true,
            Types::All,
            "Driver: ipmi (replaces fence_ipmilan) or redfish (replaces fence_redfish)",
        )
    },
    OptSpec {
        default: Some("reboot"),
        value_name: "action",
        ..opt("action", Some('o'), true, Types::All, "Fencing action")
    },
    OptSpec {
        required: true,
        value_name: "ip",
        ..opt(
            "ip",
            Some('a'),
            true,
            Types::All,
            "IP address or hostname of fencing device",
        )
    },
    OptSpec {
        content: "integer",
        value_name: "port",
        ..opt(
            "ipport",
            Some('u'),
            true,
            Types::All,
            "TCP/UDP port to use for connection with device (623 for ipmi, 443 for redfish)",
        )
    },
    OptSpec {
        value_name: "name",
        ..opt("username", Some('l'), true, Types::All, "Login name")
    },
    OptSpec {
        value_name: "password",
        ..opt(
            "password",
            Some('p'),
            true,
            Types::All,
            "Login password or passphrase",
        )
    },
    OptSpec {
        value_name: "script",
        ..opt(
            "password-script",
            Some('S'),
            true,
            Types::All,
            "Script to run to retrieve password",
        )
    },
    OptSpec {
        value_name: "id",
        ..opt(
            "plug",
            Some('n'),
            true,
            Types::All,
            "Ignored: this agent fences the machine the device belongs to",
        )
    },
    opt(
        "lanplus",
        Some('P'),
        false,
        Types::Ipmi,
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
            Types::Ipmi,
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
            Types::Ipmi,
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
            Types::Ipmi,
            "Method to fence (reboot is always off, confirmed off, on)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "auth",
            Some('A'),
            true,
            Types::Ipmi,
            "IPMI Lan Auth type (ignored: RMCP+ authenticates with RAKP)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "hexadecimal-kg",
            None,
            true,
            Types::Ipmi,
            "Hexadecimal-encoded Kg key (not supported)",
        )
    },
    OptSpec {
        hidden: true,
        ..opt(
            "ipmitool-path",
            None,
            true,
            Types::Ipmi,
            "Ignored: no ipmitool is run",
        )
    },
    OptSpec {
        value_name: "uri",
        ..opt(
            "systems-uri",
            None,
            true,
            Types::Redfish,
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
            Types::Redfish,
            "Base or starting Redfish URI",
        )
    },
    opt(
        "ssl",
        Some('z'),
        false,
        Types::Redfish,
        "Use SSL connection with verifying certificate",
    ),
    opt(
        "ssl-secure",
        None,
        false,
        Types::Redfish,
        "Use SSL connection with verifying certificate (CA bundle from REQUESTS_CA_BUNDLE if set)",
    ),
    opt(
        "ssl-insecure",
        None,
        false,
        Types::Redfish,
        "Use SSL connection without verifying certificate",
    ),
    opt("verbose", Some('v'), false, Types::All, "Verbose mode"),
    OptSpec {
        hidden: true,
        ..opt(
            "debug-file",
            Some('D'),
            true,
            Types::All,
            "Write debug information to given file",
        )
    },
    opt(
        "quiet",
        Some('q'),
        false,
        Types::All,
        "Disable logging to stderr",
    ),
    opt(
        "version",
        Some('V'),
        false,
        Types::All,
        "Display version information and exit",
    ),
    opt(
        "help",
        Some('h'),
        false,
        Types::All,
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
            Types::All,
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
            Types::All,
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
            Types::All,
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
            Types::All,
            "Wait X seconds after issuing ON/OFF (not needed: the state is confirmed)",
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
            Types::All,
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
            Types::All,
            "Count of attempts to retry power on",
        )
    },
];

fn run(options: Options) -> u8 {
    if options.contains_key("help") {
        print!("{}", usage());
        return 0;
    }
    if options.contains_key("version") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let action = options
        .get("action")
        .map_or("reboot", String::as_str)
        .to_ascii_lowercase();
    let action = if action == "meta-data" {
        "metadata".to_owned()
    } else {
        action
    };
    if action == "metadata" {
        print!("{}", metadata());
        return 0;
    }
    let kind = match options.get("type").map(|t| t.to_ascii_lowercase()).as_deref() {
        None | Some("ipmi") => Types::Ipmi,
        Some("redfish") => Types::Redfish,
        Some(other) => return fail_usage(&format!("Failed: You have to enter a valid choice for --type from the valid values: ['ipmi', 'redfish'] (not {other})")),
    };
    for name in options.keys() {
        if let Some(spec) = OPTIONS.iter().find(|o| o.long == name) {
            if spec.types != Types::All && spec.types != kind {
                return fail_usage(&format!("Parse error: option --{name} not recognized"));
            }
        }
    }
    if !ACTIONS.contains(&action.as_str()) {
        return fail_usage(&format!("Failed: Unrecognised action '{action}'"));
    }
    let device = match Device::from_options(&options, kind) {
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
    driver: Box<dyn FenceDevice>,
    redfish: Option<RedfishDevice>,
    delay: Duration,
    power_wait: Option<Duration>,
    timeout: Duration,
}

impl Device {
    fn from_options(options: &Options, kind: Types) -> Result<Device, String> {
        let seconds = |name: &str, default: u64| -> Result<u64, String> {
            options.get(name).map_or(Ok(default), |v| {
                v.trim().parse::<u64>().map_err(|_| {
                    format!("Failed: The value you have entered for --{name} is not a valid time in seconds")
                })
            })
        };
        let delay = Duration::from_secs(seconds("delay", 0)?);
        let power_wait = options
            .get("power-wait")
            .map(|_| seconds("power-wait", 0))
            .transpose()?
            .map(Duration::from_secs);
        let timeout =
            Duration::from_secs(seconds("power-timeout", 20)? + seconds("login-timeout", 5)?);
        let Some(ip) = options.get("ip").filter(|ip| !ip.is_empty()) else {
            return Err("Failed: You have to enter fence address".to_owned());
        };
        let password = match (options.get("password"), options.get("password-script")) {
            (Some(p), _) => Some(Secret::new(p.clone())),
            (None, Some(script)) => Some(password_from_script(script)?),
            (None, None) => None,
        };
        let username = options.get("username").cloned();
        let port = options
            .get("ipport")
            .map(|p| {
                p.trim().parse::<u16>().map_err(|_| {
                    "Failed: The value you have entered for --ipport is not a valid integer"
                        .to_owned()
                })
            })
            .transpose()?;
        match kind {
            Types::Ipmi | Types::All => {
                let Some(username) = username else {
                    return Err("Failed: You have to set login name".to_owned());
                };
                let Some(password) = password else {
                    return Err("Failed: You have to enter password or password script".to_owned());
                };
                let address = resolve(ip, port.unwrap_or(IPMI_PORT))?;
                let mut params = IpmiParams::new(address, username, password);
                if let Some(c) = options.get("cipher") {
                    params.cipher_suite = c.trim().parse().map_err(|_| {
                        format!("Failed: cipher {c:?} is not a cipher suite number")
                    })?;
                }
                params.privilege = match options.get("privlvl").map(|p| p.to_ascii_lowercase()).as_deref() {
                    None | Some("administrator") => Privilege::Administrator,
                    Some("operator") => Privilege::Operator,
                    Some(other) => {
                        return Err(format!("Failed: privilege level {other} cannot control power: use operator or administrator"))
                    }
                };
                params.poll_interval = POLL_INTERVAL;
                let driver = IpmiDevice::new("fence_watchkeeper", TARGET, params)
                    .map_err(|e| format!("Failed: {}", e.message))?;
                Ok(Device {
                    driver: Box::new(driver),
                    redfish: None,
                    delay,
                    power_wait,
                    timeout,
                })
            }
            Types::Redfish => {
                if username.is_none() {
                    return Err("Failed: You have to set login name".to_owned());
                }
                if password.is_none() {
                    return Err("Failed: You have to enter password or password script".to_owned());
                }
                let host = if ip.contains(':') && !ip.starts_with('[') {
                    format!("[{ip}]")
                } else {
                    ip.clone()
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
                let driver = RedfishDevice::new("fence_watchkeeper", TARGET, params.clone())
                    .map_err(|e| format!("Failed: {}", e.message))?;
                let lister = RedfishDevice::new("fence_watchkeeper", TARGET, params)
                    .map_err(|e| format!("Failed: {}", e.message))?;
                Ok(Device {
                    driver: Box::new(driver),
                    redfish: Some(lister),
                    delay,
                    power_wait,
                    timeout,
                })
            }
        }
    }
}

async fn act(mut device: Device, action: &str) -> u8 {
    if matches!(action, "off" | "reboot") && !device.delay.is_zero() {
        tokio::time::sleep(device.delay).await;
    }
    let deadline = Instant::now() + device.timeout;
    let driver = &mut device.driver;
    let result: Result<u8, FenceError> = async {
        match action {
            "status" => {
                let state = driver.status(TARGET, deadline).await?;
                println!("Status: {}", upper(state));
                Ok(if state == PowerState::Off { 2 } else { 0 })
            }
            "monitor" => driver.monitor(deadline).await.map(|()| 0),
            "list" | "list-status" => match device.redfish.as_mut() {
                Some(rf) => {
                    for s in rf.systems(deadline).await? {
                        println!("{s},{s}");
                    }
                    Ok(0)
                }
                None => {
                    println!("NOTICE: List option is not working on this device yet");
                    Ok(0)
                }
            },
            "on" | "off" => {
                let want = if action == "on" {
                    PowerState::On
                } else {
                    PowerState::Off
                };
                // The Redfish driver reads the state before it resets and reports a target
                // already there as confirmed by that one read; the IPMI driver is asked first.
                if device.redfish.is_none() {
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
                if device.redfish.is_some() && c.polls == 1 {
                    println!("Success: Already {}", upper(c.state));
                    return Ok(0);
                }
                if let Some(wait) = device.power_wait {
                    tokio::time::sleep(wait).await;
                }
                println!("Success: Powered {}", upper(c.state));
                Ok(0)
            }
            _ => {
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
            o.long, o.help
        ));
    }
    s
}

fn error_line(message: &str) {
    eprintln!("ERROR: {message}");
}

fn fail_usage(message: &str) -> u8 {
    error_line(message);
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
/// device belongs to.
const TARGET: &str = "target";
const IPMI_PORT: u16 = 623;
const HTTPS_PORT: u16 = 443;
/// Same pace as the agent's default: see `config::DEFAULT_POLL_INTERVAL`.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One Redfish request; fence_redfish's own default is 5 s as well (`--shell-timeout` aside).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pacemaker sends a dozen lines; the bound keeps a runaway writer from filling memory.
const MAX_STDIN_LINES: usize = 1000;

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
}
