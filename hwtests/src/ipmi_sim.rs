//! OpenIPMI's `ipmi_sim` as a BMC for the IPMI driver's tests: a real, independent RMCP+
//! implementation on 127.0.0.1 whose chassis power lives in a file.
//!
//! [`IpmiSim::start`] writes everything `ipmi_sim` needs into a fresh temporary directory (a
//! `lan.conf`, a one-BMC emulator command file and the `chassis_control` hook script that
//! reads and writes the power file), starts it on a free UDP port, waits until it answers, and
//! stops it by PID on drop. Nothing here depends on files outside the repository: the install
//! of `ipmi_sim` itself is `scripts/deps-ipmi.sh`.
//!
//! `ipmi_sim` quirks this harness works around: persisted users in its state directory would
//! override `lan.conf` (each instance gets an empty one); it never answers Get Channel Cipher
//! Suites before a session and implements suites 0–3 only, so clients pin the suite.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How the simulated chassis reacts to power commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerBehaviour {
    /// Power follows the commands.
    Normal,
    /// Power-off commands are acknowledged but ignored: the host stays on (a stuck relay, a
    /// lying BMC), which a fence driver must report as unconfirmed.
    IgnoreOff,
}

/// Settings of one simulated BMC.
#[derive(Debug, Clone)]
pub struct IpmiSimConfig {
    /// Administrator user name.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Power state at start (true = on).
    pub power_on: bool,
    /// Power command handling.
    pub behaviour: PowerBehaviour,
}

impl Default for IpmiSimConfig {
    fn default() -> Self {
        Self {
            username: DEFAULT_USER.into(),
            password: DEFAULT_PASSWORD.into(),
            power_on: true,
            behaviour: PowerBehaviour::Normal,
        }
    }
}

/// A `[[fence_device]]` block of the agent's configuration for an IPMI BMC that a simulator
/// started with the default user answers at `address`: device `name`, fencing node `target`,
/// `timeout` per call (as the configuration writes it, e.g. `"5s"`).
pub fn fence_device_toml(name: &str, target: &str, address: SocketAddr, timeout: &str) -> String {
    format!(
        "\n[[fence_device]]\nname = \"{name}\"\ntype = \"ipmi\"\ntarget = \"{target}\"\n\
         address = \"{address}\"\nusername = \"{DEFAULT_USER}\"\npassword = \"{DEFAULT_PASSWORD}\"\n\
         cipher_suite = 3\ntimeout = \"{timeout}\"\npoll_interval = \"50ms\"\n"
    )
}

/// A running `ipmi_sim`, stopped on drop.
#[derive(Debug)]
pub struct IpmiSim {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Operator-level user present in every instance, for privilege tests.
pub const OPERATOR_USER: &str = "oper";
/// Its password.
pub const OPERATOR_PASSWORD: &str = "operpass";

impl IpmiSim {
    /// Starts a simulator with `config` on a free port of 127.0.0.1.
    ///
    /// # Panics
    ///
    /// If `ipmi_sim` is not installed (run `scripts/deps-ipmi.sh`), or does not answer within
    /// [`START_TIMEOUT`]. Tests must fail, not skip, when their peer is missing.
    pub fn start(config: &IpmiSimConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = crate::free_udp_port();
        let power = dir.path().join("power");
        std::fs::write(&power, if config.power_on { "1\n" } else { "0\n" }).expect("power file");
        let hook = dir.path().join("chassis-control.sh");
        std::fs::write(&hook, hook_script(config.behaviour)).expect("hook script");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let emu = dir.path().join("bmc.emu");
        std::fs::write(&emu, EMU_FILE).expect("emu file");
        let lan = dir.path().join("lan.conf");
        std::fs::write(&lan, lan_conf(port, &hook, &power, config)).expect("lan.conf");
        let mut sim = Self {
            child: None,
            port,
            dir,
        };
        sim.spawn();
        sim
    }

    /// Starts the simulator again after [`IpmiSim::stop`], on the same port with the same
    /// configuration and chassis power (a BMC that was switched off and back on).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the simulator process is running (not stopped by [`IpmiSim::stop`]).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("ipmi_sim.log"))
            .expect("log file");
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start ipmi_sim ({e}): install it with scripts/deps-ipmi.sh")
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// The simulator's address.
    pub fn address(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Reads the chassis power from the hook's state file.
    pub fn power_on(&self) -> bool {
        std::fs::read_to_string(self.power_file())
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
    }

    /// Sets the chassis power behind the BMC's back (a host that powers itself on or off).
    pub fn set_power_on(&self, on: bool) {
        std::fs::write(self.power_file(), if on { "1\n" } else { "0\n" }).expect("power file");
    }

    /// Wires the simulated chassis power to process `pid`: a power-off through the BMC then
    /// kills it with SIGKILL, as cutting a host's power ends everything on it. The harness
    /// started that process and passes its PID; nothing is looked up by name.
    pub fn wire_power_to(&self, pid: u32) {
        let mut path = self.power_file().into_os_string();
        path.push(".pid");
        std::fs::write(path, format!("{pid}\n")).expect("pid file");
    }

    /// Wires the simulated chassis power to a whole node: a power-off through the BMC first
    /// runs `script` (with `sh`), which stops every process of that node by PID and releases
    /// what it held, and only then reads as off, so a fence is confirmed only once the node is
    /// gone. The script is the harness's own; it is run as it is when the power-off arrives.
    pub fn run_at_power_off(&self, script: &Path) {
        let mut path = self.power_file().into_os_string();
        path.push(".off");
        std::fs::write(path, format!("{}\n", script.display())).expect("power-off file");
    }

    /// From now on, acknowledges power-off commands without acting on them (a stuck relay, a
    /// lying BMC), or (`false`) obeys them again: [`PowerBehaviour::IgnoreOff`] switched at
    /// run time.
    pub fn set_ignore_off(&self, ignore: bool) {
        let mut path = self.power_file().into_os_string();
        path.push(".ignore-off");
        if ignore {
            std::fs::write(path, "1\n").expect("ignore-off file");
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Lines the hook logged for every power command received (`<time> power=0`, ...; an
    /// off ignored after [`IpmiSim::set_ignore_off`] is `power=0-ignored`).
    pub fn power_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("power.log"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The simulator's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
    }

    /// The file holding the chassis power (`1` on, `0` off), which the BMC's hook keeps.
    pub fn power_file(&self) -> PathBuf {
        self.dir.path().join("power")
    }

    /// Sends Get Channel Authentication Capabilities until `ipmi_sim` answers.
    fn wait_ready(&mut self) {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("UDP socket");
        socket
            .set_read_timeout(Some(READY_POLL))
            .expect("read timeout");
        let start = Instant::now();
        let mut buf = [0u8; 256];
        while start.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("ipmi_sim exited at start ({status}); log:\n{}", self.log());
                }
            }
            // Errors here (refused before bind) only mean "not yet"; the loop is bounded.
            let _ = socket.send_to(&CAPABILITIES_PROBE, self.address());
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n > 4 {
                    return;
                }
            }
        }
        panic!(
            "ipmi_sim did not answer within {START_TIMEOUT:?}; log:\n{}",
            self.log()
        );
    }

    /// Stops the simulator: SIGTERM by PID, SIGKILL after [`STOP_GRACE`], then reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = i32::try_from(child.id()) else {
            return;
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(STOP_POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `chassis_control` hook. `ipmi_sim` runs `<hook> <power file> get power` and
/// `<hook> <power file> set power 0|1` (plus `reset`, `boot`, `identify`); the answer to `get`
/// is `power:<0|1>` on stdout.
fn hook_script(behaviour: PowerBehaviour) -> String {
    let set_power = match behaviour {
        PowerBehaviour::Normal => {
            r#"if [ "$v" = 0 ] && [ -e "$state.ignore-off" ]; then v=0-ignored; else if [ "$v" = 0 ] && [ -s "$state.off" ]; then sh "$(cat "$state.off")" >> "$state.off.log" 2>&1; fi; echo "$v" > "$state"; if [ "$v" = 0 ] && [ -s "$state.pid" ]; then kill -9 "$(cat "$state.pid")" 2>/dev/null; fi; fi"#
        }
        PowerBehaviour::IgnoreOff => r#"[ "$v" = 0 ] || echo "$v" > "$state""#,
    };
    format!(
        r#"#!/bin/sh
# Generated by hwtests::ipmi_sim: chassis power of a simulated BMC, kept in a file.
state="$1"; op="$2"; shift 2
[ -f "$state" ] || echo 1 > "$state"
case "$op" in
  get)
    for p in "$@"; do
      case "$p" in
        power) echo "power:$(cat "$state")" ;;
        boot) echo "boot:default" ;;
        *) echo "unsupported get $p"; exit 1 ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      p="$1"; v="$2"; shift 2
      case "$p" in
        power) {set_power}; echo "$(date +%s.%N) power=$v" >> "$state.log" ;;
        reset) echo "$(date +%s.%N) reset" >> "$state.log" ;;
        boot) : ;;
        identify) [ $# -gt 0 ] && shift ;;
        *) echo "unsupported set $p"; exit 1 ;;
      esac
    done ;;
  check) exit 1 ;;
  *) echo "unknown op $op"; exit 1 ;;
esac
exit 0
"#
    )
}

fn lan_conf(port: u16, hook: &Path, power: &Path, c: &IpmiSimConfig) -> String {
    format!(
        r#"# Generated by hwtests::ipmi_sim.
name "wk-test-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user md2 md5 straight
    allowed_auths_operator md2 md5 straight
    allowed_auths_admin md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{hook} {power}"
  user 2 true "{user}" "{password}" admin 10 md2 md5 straight
  user 3 true "{OPERATOR_USER}" "{OPERATOR_PASSWORD}" operator 10 md2 md5 straight
"#,
        hook = hook.display(),
        power = power.display(),
        user = c.username,
        password = c.password,
    )
}

/// One BMC at IPMB address 0x20 with no sensors: all the driver talks to is the chassis.
const EMU_FILE: &str = "\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
";

/// An unauthenticated IPMI 1.5 Get Channel Authentication Capabilities request (channel
/// "this", administrator), written out by hand so readiness does not depend on the driver
/// under test.
const CAPABILITIES_PROBE: [u8; 23] = [
    0x06, 0x00, 0xff, 0x07, // RMCP
    0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, // auth none, seq 0, session 0, length 9
    0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5, // message with both checksums
];
/// Default administrator name.
pub const DEFAULT_USER: &str = "admin";
/// Default administrator password.
pub const DEFAULT_PASSWORD: &str = "secret";
/// `ipmi_sim` starts in about 10 ms; five seconds allows for a loaded CI machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between readiness probes.
const READY_POLL: Duration = Duration::from_millis(50);
/// Time `ipmi_sim` gets to exit on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Interval between exit checks while stopping.
const STOP_POLL: Duration = Duration::from_millis(10);
