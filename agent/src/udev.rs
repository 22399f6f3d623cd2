//! `watchkeeper udev-rule DEVICE NAME`: a udev rule for a plugged-in serial adapter, read from
//! its sysfs attributes; and a syntax check for udev rules files.
//!
//! A heartbeat cable or an RS-485 fence adapter must keep its name across reboots and replugs,
//! or the configuration's `device = "/dev/ttyUSB1"` one day points at the other cable. udev
//! gives stable names, but writing a rule by hand means finding the right attributes among a
//! dozen parents, and getting one subtly wrong (attributes of two parents in one rule never
//! match) fails silently. So the generator walks sysfs the way udev does and prints one line
//! that identifies the adapter and tags it with `ENV{WATCHKEEPER_NAME}`; the shipped
//! `62-watchkeeper.rules` turns every tag into `/dev/watchkeeper/NAME` with the agent's group
//! and mode, and keeps ModemManager away. Identity is per site, policy is shipped, once.
//!
//! How an adapter is identified, most stable first:
//! - a USB adapter with a serial number: vendor, product and serial (plus the interface number
//!   on multi-port chips such as the FT4232H, whose ports share one serial);
//! - a USB adapter without one: vendor, product and the USB port it is plugged into (moving it
//!   to another port loses the name, which the rule's comment says);
//! - an on-board UART: its device path, which only changes with the hardware.
//!
//! The syntax check ([`check_rules`]) knows the keys and operators udev accepts and that every
//! `GOTO` has its `LABEL`; tests run it on the shipped rules, and `udevadm verify` as well where
//! the installed udev has it.

use std::fs;
use std::path::{Path, PathBuf};

/// Why no rule could be made.
#[derive(Debug, thiserror::Error)]
pub enum UdevRuleError {
    /// The name is unusable in `/dev/watchkeeper/`.
    #[error("name {name:?}: {why}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The device is not a tty that sysfs knows.
    #[error("{device}: no tty of that name in {class} (is it plugged in? serial adapters are /dev/ttyUSB*, /dev/ttyACM*, /dev/ttyS*)")]
    NotATty {
        /// The device given.
        device: PathBuf,
        /// Where it was looked for.
        class: PathBuf,
    },
    /// sysfs could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The rule text for `device` (a `/dev` path, a symlink to one, or a kernel name such as
/// `ttyUSB0`) named `name`, from the sysfs tree at `sysfs` (`/sys` on a live system).
pub fn rule_for(device: &Path, name: &str, sysfs: &Path) -> Result<String, UdevRuleError> {
    check_name(name)?;
    let kernel = kernel_name(device);
    let class = sysfs.join("class/tty");
    let link = class.join(&kernel);
    let real = fs::canonicalize(&link).map_err(|_| UdevRuleError::NotATty {
        device: device.to_owned(),
        class: class.clone(),
    })?;
    let sys_root = fs::canonicalize(sysfs).map_err(|source| UdevRuleError::Io {
        path: sysfs.to_owned(),
        source,
    })?;
    let devpath = real
        .strip_prefix(&sys_root)
        .map(|p| format!("/{}", p.display()))
        .unwrap_or_else(|_| real.display().to_string());

    let mut interface: Option<String> = None;
    let mut usb: Option<PathBuf> = None;
    for dir in real.ancestors().take(PARENTS_MAX) {
        if !dir.starts_with(&sys_root) || dir == sys_root {
            break;
        }
        if interface.is_none() {
            interface = attr(dir, "bInterfaceNumber");
        }
        if attr(dir, "idVendor").is_some() && attr(dir, "idProduct").is_some() {
            usb = Some(dir.to_owned());
            break;
        }
    }
    let mut out = String::new();
    let Some(usb) = usb else {
        out.push_str(&format!(
            "# /dev/watchkeeper/{name}: on-board UART {kernel}, by device path\n"
        ));
        out.push_str(INSTALL_HINT);
        out.push_str(&format!(
            "SUBSYSTEM==\"tty\", DEVPATH==\"{}\", ENV{{WATCHKEEPER_NAME}}=\"{name}\"\n",
            escape(&devpath)
        ));
        return Ok(out);
    };
    let vendor = attr(&usb, "idVendor").unwrap_or_default();
    let product = attr(&usb, "idProduct").unwrap_or_default();
    let serial = attr(&usb, "serial").filter(|s| !s.is_empty());
    let description = [attr(&usb, "manufacturer"), attr(&usb, "product")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let ports = attr(&usb, "bNumInterfaces")
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(1);
    let usb_kernel = usb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut keys = vec![
        "SUBSYSTEM==\"tty\"".to_owned(),
        format!("ATTRS{{idVendor}}==\"{}\"", escape(&vendor)),
        format!("ATTRS{{idProduct}}==\"{}\"", escape(&product)),
    ];
    let how = match &serial {
        Some(serial) => {
            keys.push(format!("ATTRS{{serial}}==\"{}\"", escape(serial)));
            format!("serial {serial}")
        }
        None => {
            // KERNELS names the same parent as the ATTRS above, so the rule can match.
            keys.push(format!("KERNELS==\"{}\"", escape(&usb_kernel)));
            format!(
                "no serial number: bound to USB port {usb_kernel}; plugged elsewhere it loses \
                 the name"
            )
        }
    };
    if ports > 1 {
        if let Some(num) = &interface {
            // The interface is another parent than the USB device: match it through the
            // property udev's usb_id sets, not a second ATTRS.
            keys.push(format!("ENV{{ID_USB_INTERFACE_NUM}}==\"{}\"", escape(num)));
        }
    }
    keys.push(format!("ENV{{WATCHKEEPER_NAME}}=\"{name}\""));
    let port = match (&interface, ports > 1) {
        (Some(num), true) => format!(", port {num} of {ports}"),
        _ => String::new(),
    };
    let description = if description.is_empty() {
        String::new()
    } else {
        format!("{description} ")
    };
    out.push_str(&format!(
        "# /dev/watchkeeper/{name}: {description}({vendor}:{product}, {how}{port}), now {kernel}\n"
    ));
    out.push_str(INSTALL_HINT);
    out.push_str(&keys.join(", "));
    out.push('\n');
    Ok(out)
}

/// A syntax error in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSyntaxError {
    /// Line number (1-based; the first line of a continued rule).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RuleSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Checks udev rules text: every item is `KEY[{attr}] OP "value"`, the key is one udev knows,
/// the operator fits the key (matches compare, assignments assign), and every `GOTO` has a
/// `LABEL`. Returns every error found.
pub fn check_rules(text: &str) -> Result<(), Vec<RuleSyntaxError>> {
    let mut errors = Vec::new();
    let mut labels = Vec::new();
    let mut gotos = Vec::new();
    for (line_no, rule) in logical_lines(text) {
        let mut err = |message: String| {
            errors.push(RuleSyntaxError {
                line: line_no,
                message,
            })
        };
        let mut rest = rule.trim();
        let mut items = 0;
        while !rest.is_empty() {
            let (item, after) = match parse_item(rest) {
                Ok(parsed) => parsed,
                Err(message) => {
                    err(message);
                    break;
                }
            };
            items += 1;
            let Some(kind) = key_kind(item.key) else {
                err(format!("unknown key {}", item.key));
                break;
            };
            if item.attr.is_some() != kind.has_attr {
                err(if kind.has_attr {
                    format!("{} needs an {{attribute}}", item.key)
                } else {
                    format!("{} takes no {{attribute}}", item.key)
                });
            }
            let is_match = matches!(item.op, "==" | "!=");
            if is_match && !kind.matches || !is_match && !kind.assigns {
                err(format!("{} cannot be used with {}", item.key, item.op));
            }
            if matches!(item.op, "+=" | "-=") && !kind.lists {
                err(format!(
                    "{} is not a list: {} does not apply",
                    item.key, item.op
                ));
            }
            match item.key {
                "LABEL" => labels.push(item.value.to_owned()),
                "GOTO" => gotos.push((line_no, item.value.to_owned())),
                _ => {}
            }
            rest = after.trim_start();
            if rest.is_empty() {
                break;
            }
            match rest.strip_prefix(',') {
                Some(r) => rest = r.trim_start(),
                None => {
                    err(format!("expected ',' before {:?}", first_word(rest)));
                    break;
                }
            }
        }
        if items == 0 && rest.is_empty() {
            err("empty rule".to_owned());
        }
    }
    for (line, label) in gotos {
        if !labels.contains(&label) {
            errors.push(RuleSyntaxError {
                line,
                message: format!("GOTO {label:?} has no LABEL"),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

struct Item<'a> {
    key: &'a str,
    attr: Option<&'a str>,
    op: &'a str,
    value: &'a str,
}

fn parse_item(s: &str) -> Result<(Item<'_>, &str), String> {
    let key_end = s
        .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .unwrap_or(s.len());
    let key = &s[..key_end];
    if key.is_empty() {
        return Err(format!("expected a key at {:?}", first_word(s)));
    }
    let mut rest = &s[key_end..];
    let mut attr = None;
    if let Some(r) = rest.strip_prefix('{') {
        let close = r
            .find('}')
            .ok_or_else(|| format!("{key}{{ is not closed"))?;
        attr = Some(&r[..close]);
        rest = &r[close + 1..];
    }
    let rest = rest.trim_start();
    let op = ["==", "!=", "+=", "-=", ":=", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(|| format!("expected an operator after {key}"))?;
    let rest = rest[op.len()..].trim_start();
    let body = rest
        .strip_prefix('"')
        .ok_or_else(|| format!("the value of {key} must be in double quotes"))?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                return Ok((
                    Item {
                        key,
                        attr,
                        op,
                        value: &body[..i],
                    },
                    &body[i + 1..],
                ))
            }
            _ => escaped = false,
        }
    }
    Err(format!("the value of {key} is not closed"))
}

#[derive(Clone, Copy)]
struct KeyKind {
    has_attr: bool,
    matches: bool,
    assigns: bool,
    lists: bool,
}

fn key_kind(key: &str) -> Option<KeyKind> {
    let k = |has_attr, matches, assigns, lists| {
        Some(KeyKind {
            has_attr,
            matches,
            assigns,
            lists,
        })
    };
    match key {
        "ACTION" | "DEVPATH" | "KERNEL" | "SUBSYSTEM" | "DRIVER" | "KERNELS" | "SUBSYSTEMS"
        | "DRIVERS" | "TAGS" | "TEST" | "PROGRAM" | "RESULT" | "DEVTYPE" => {
            k(false, true, false, false)
        }
        "ATTRS" | "SYSCTL" | "CONST" => k(true, true, false, false),
        "ATTR" | "ENV" => k(true, true, true, false),
        "NAME" | "OWNER" | "GROUP" | "MODE" | "LABEL" | "GOTO" => k(false, false, true, false),
        "SYMLINK" | "TAG" => k(false, true, true, true),
        "RUN" | "IMPORT" => k(true, false, true, true),
        "OPTIONS" | "SECLABEL" => k(false, false, true, true),
        _ => None,
    }
}

/// Joins continued lines (trailing backslash), drops comments and blank lines, and numbers
/// each rule by its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if acc.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    if let Some(rule) = pending {
        out.push(rule);
    }
    out
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or(s)
}

fn check_name(name: &str) -> Result<(), UdevRuleError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.len() > NAME_LEN_MAX {
        Some("longer than 64 characters")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("must not start with '.' or '-'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("use letters, digits, '-', '_' and '.' only (it becomes a file name under /dev/watchkeeper/)")
    } else {
        None
    };
    match why {
        Some(why) => Err(UdevRuleError::Name {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// `ttyUSB0` from `/dev/ttyUSB0`, from a symlink to it, or from `ttyUSB0` itself.
fn kernel_name(device: &Path) -> String {
    let resolved = fs::canonicalize(device).unwrap_or_else(|_| device.to_owned());
    resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Quotes and backslashes would end or escape a udev value early.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// How many parents are searched for the USB device: a tty sits five to eight levels below
/// its USB device; beyond that there is none.
const PARENTS_MAX: usize = 16;
/// Longest name under /dev/watchkeeper/.
const NAME_LEN_MAX: usize = 64;
const INSTALL_HINT: &str = "# Add to /etc/udev/rules.d/61-watchkeeper-local.rules, then run: \
                            udevadm control --reload && udevadm trigger --subsystem-match=tty\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree with an FT232R (serial A10K3XYZ), a CH340 without a serial, port 2 of an
    /// FT4232H and an on-board 16550.
    fn sample_sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let usb = |dev: &str, attrs: &[(&str, &str)], intf: &str, tty: &str| {
            let base = root.join("devices/pci0000:00/0000:00:14.0/usb1").join(dev);
            for (k, v) in attrs {
                fs::create_dir_all(&base).expect("mkdir");
                fs::write(base.join(k), format!("{v}\n")).expect("attr");
            }
            let iface = base.join(format!("{dev}:1.{intf}"));
            let tty_dir = iface.join(tty).join("tty").join(tty);
            fs::create_dir_all(&tty_dir).expect("mkdir");
            fs::write(iface.join("bInterfaceNumber"), format!("0{intf}\n")).expect("attr");
            tty_dir
        };
        let class = root.join("class/tty");
        fs::create_dir_all(&class).expect("mkdir");
        let link = |tty: &str, target: &Path| {
            let rel = Path::new("../..").join(target.strip_prefix(root).expect("under root"));
            symlink(rel, class.join(tty)).expect("symlink");
        };
        let ft232 = usb(
            "1-1",
            &[
                ("idVendor", "0403"),
                ("idProduct", "6001"),
                ("serial", "A10K3XYZ"),
                ("manufacturer", "FTDI"),
                ("product", "FT232R USB UART"),
                ("bNumInterfaces", " 1"),
            ],
            "0",
            "ttyUSB0",
        );
        link("ttyUSB0", &ft232);
        let ch340 = usb(
            "1-2.3",
            &[
                ("idVendor", "1a86"),
                ("idProduct", "7523"),
                ("product", "USB Serial"),
                ("bNumInterfaces", " 1"),
            ],
            "0",
            "ttyUSB1",
        );
        link("ttyUSB1", &ch340);
        let ft4232 = usb(
            "1-4",
            &[
                ("idVendor", "0403"),
                ("idProduct", "6011"),
                ("serial", "FT4XQ\"7"),
                ("bNumInterfaces", " 4"),
            ],
            "2",
            "ttyUSB4",
        );
        link("ttyUSB4", &ft4232);
        let uart = root.join("devices/pnp0/00:05/tty/ttyS1");
        fs::create_dir_all(&uart).expect("mkdir");
        link("ttyS1", &uart);
        dir
    }

    const HINT: &str = INSTALL_HINT;

    #[test]
    fn a_usb_adapter_with_a_serial_is_named_by_vendor_product_and_serial() {
        let sys = sample_sysfs();
        let rule = rule_for(Path::new("/dev/ttyUSB0"), "hb-beta", sys.path()).expect("rule");
        assert_eq!(
            rule,
            format!(
                "# /dev/watchkeeper/hb-beta: FTDI FT232R USB UART (0403:6001, serial A10K3XYZ), \
                 now ttyUSB0\n{HINT}SUBSYSTEM==\"tty\", ATTRS{{idVendor}}==\"0403\", \
                 ATTRS{{idProduct}}==\"6001\", ATTRS{{serial}}==\"A10K3XYZ\", \
                 ENV{{WATCHKEEPER_NAME}}=\"hb-beta\"\n"
            )
        );
        assert_eq!(check_rules(&rule), Ok(()));
    }

    #[test]
    fn an_adapter_without_a_serial_is_bound_to_its_usb_port() {
        let sys = sample_sysfs();
        let rule = rule_for(Path::new("ttyUSB1"), "rs485-pdu", sys.path()).expect("rule");
        assert!(rule.contains("(1a86:7523, no serial number: bound to USB port 1-2.3;"));
        assert!(rule.ends_with(
            "SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"1a86\", ATTRS{idProduct}==\"7523\", \
             KERNELS==\"1-2.3\", ENV{WATCHKEEPER_NAME}=\"rs485-pdu\"\n"
        ));
        assert_eq!(check_rules(&rule), Ok(()));
    }

    #[test]
    fn a_port_of_a_multi_port_chip_adds_its_interface_and_quotes_are_escaped() {
        let sys = sample_sysfs();
        let rule = rule_for(Path::new("ttyUSB4"), "bridge-alpha", sys.path()).expect("rule");
        assert!(rule.contains(", port 02 of 4), now ttyUSB4"), "{rule}");
        assert!(rule.contains(
            "ATTRS{serial}==\"FT4XQ\\\"7\", ENV{ID_USB_INTERFACE_NUM}==\"02\", \
             ENV{WATCHKEEPER_NAME}=\"bridge-alpha\""
        ));
        assert_eq!(check_rules(&rule), Ok(()));
    }

    #[test]
    fn an_on_board_uart_is_named_by_its_device_path() {
        let sys = sample_sysfs();
        let rule = rule_for(Path::new("ttyS1"), "hb-gamma", sys.path()).expect("rule");
        assert!(rule.ends_with(
            "SUBSYSTEM==\"tty\", DEVPATH==\"/devices/pnp0/00:05/tty/ttyS1\", \
             ENV{WATCHKEEPER_NAME}=\"hb-gamma\"\n"
        ));
        assert_eq!(check_rules(&rule), Ok(()));
    }

    #[test]
    fn unknown_devices_and_bad_names_are_refused_with_reasons() {
        let sys = sample_sysfs();
        let e = rule_for(Path::new("/dev/ttyUSB9"), "x", sys.path()).expect_err("absent");
        assert!(e.to_string().contains("no tty of that name"), "{e}");
        for bad in ["", "../x", "a b", ".hidden", "-x", &"n".repeat(65)] {
            let e = rule_for(Path::new("ttyUSB0"), bad, sys.path()).expect_err(bad);
            assert!(matches!(e, UdevRuleError::Name { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn the_checker_finds_each_kind_of_mistake() {
        let bad = "\
KERNEL==\"ttyS*\" GROUP=\"x\"
ATTRS==\"x\"
FOO==\"x\"
GROUP==\"x\"
KERNEL=\"x\"
MODE+=\"0660\"
SUBSYSTEM==tty
SYMLINK+=\"a\", GOTO=\"nowhere\"
ENV{X}==\"1\", \\
  GROUP=\"ok\"
";
        let errors = check_rules(bad).expect_err("all bad");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7, 8], "{errors:?}");
        assert!(errors[0].message.contains("expected ','"));
        assert!(errors[7].message.contains("nowhere"));
        assert_eq!(check_rules("ENV{X}==\"1\", \\\n  GROUP=\"ok\"\n"), Ok(()));
    }

    /// The shipped rules, by our checker, and by `udevadm verify` where the installed udev has
    /// it (systemd 253 and later); without it, the checker alone stands.
    #[test]
    fn the_shipped_rules_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../udev");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("udev/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "rules")
                    || p.to_string_lossy().ends_with(".rules.example")
            })
            .collect();
        files.sort();
        assert!(files.len() >= 2, "{files:?}");
        for file in &files {
            let text = fs::read_to_string(file).expect("read");
            if let Err(errors) = check_rules(&text) {
                panic!("{}: {errors:?}", file.display());
            }
        }
        let verify = std::process::Command::new("udevadm")
            .arg("verify")
            .arg("--help")
            .output();
        match verify {
            Ok(out) if out.status.success() => {
                for file in &files {
                    let out = std::process::Command::new("udevadm")
                        .arg("verify")
                        .arg(file)
                        .output()
                        .expect("udevadm verify");
                    assert!(
                        out.status.success(),
                        "udevadm verify {}: {}",
                        file.display(),
                        String::from_utf8_lossy(&out.stdout)
                    );
                }
            }
            _ => eprintln!("udevadm verify is not available here: checked by our parser only"),
        }
    }
}
