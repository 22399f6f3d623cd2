//! A switched PDU speaking Modbus TCP or RTU, served by pymodbus as a child process, for the
//! Modbus fence driver's tests.
//!
//! The driver must be proven against a Modbus stack other than the one it is built on.
//! `modbus_pdu.py` (next to this file, written into each run directory) puts pymodbus's TCP and
//! serial servers in front of a small outlet model; see its docstring for the data model:
//! outlet `n` (0-based) of each served unit is coil `n` (1 = on) and holding register
//! [`REGISTER_BASE`]` + n` ([`REGISTER_ON`] / [`REGISTER_OFF`]); other addresses answer
//! exception 2; unit ids that are not served get no answer at all, as on an RS-485 bus.
//!
//! The outlet states and the faults (stuck outlets, busy, delay) live in a JSON file that the
//! server reads before every request and rewrites after every write. The setters here change
//! it by atomic rename; call them between driver calls, not during one, or a write the server
//! makes at the same moment may undo them.
//!
//! # Contract
//!
//! - TCP listens on 127.0.0.1 only, on a port that was free a moment before; RTU opens the given
//!   serial path (one end of a [`crate::cable::PtyCable`]) 8N1.
//! - Dropping a [`ModbusPdu`] stops the process by PID (`SIGTERM`, then `SIGKILL`) and reaps
//!   it. Every wait is bounded.
//! - A missing test virtualenv (`scripts/deps-fence.sh`) is a panic: tests fail, never skip.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sushy::{free_tcp_port, stop_child, venv_python};

/// How to run the PDU.
#[derive(Debug, Clone)]
pub struct ModbusPduOptions {
    /// Outlets per unit; all are on at start.
    pub outlets: u16,
    /// Unit ids served, each with its own outlets; requests to others are not answered.
    pub units: Vec<u8>,
    /// Line speed for RTU.
    pub baud: u32,
}

impl Default for ModbusPduOptions {
    fn default() -> Self {
        Self {
            outlets: 8,
            units: vec![1],
            baud: 19_200,
        }
    }
}

/// Where the PDU listens.
#[derive(Debug, Clone)]
enum Listen {
    Tcp(u16),
    Serial(PathBuf),
}

/// A running pymodbus PDU; see the module docs.
#[derive(Debug)]
pub struct ModbusPdu {
    child: Option<Child>,
    listen: Listen,
    options: ModbusPduOptions,
    dir: tempfile::TempDir,
}

impl ModbusPdu {
    /// Starts a Modbus TCP PDU on a free port of 127.0.0.1 and waits until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// If the test virtualenv is missing (install with `scripts/deps-fence.sh`) or the server
    /// does not come up within [`START_TIMEOUT`].
    pub fn start_tcp(options: &ModbusPduOptions) -> ModbusPdu {
        let port = free_tcp_port().unwrap_or_else(|e| panic!("no free TCP port: {e}"));
        Self::start(options, Listen::Tcp(port))
    }

    /// Starts a Modbus RTU PDU on the serial device `serial_path` (e.g. one end of a
    /// [`crate::cable::PtyCable`]) and waits until it has opened it.
    ///
    /// # Panics
    ///
    /// As [`ModbusPdu::start_tcp`], and if the port cannot be opened.
    pub fn start_rtu(options: &ModbusPduOptions, serial_path: &Path) -> ModbusPdu {
        Self::start(options, Listen::Serial(serial_path.to_owned()))
    }

    fn start(options: &ModbusPduOptions, listen: Listen) -> ModbusPdu {
        let dir = crate::util::unique_tempdir("wk-modbus-")
            .unwrap_or_else(|e| panic!("temporary directory: {e}"));
        fs::write(dir.path().join("modbus_pdu.py"), SERVER_PY)
            .unwrap_or_else(|e| panic!("writing modbus_pdu.py: {e}"));
        let mut pdu = ModbusPdu {
            child: None,
            listen,
            options: options.clone(),
            dir,
        };
        pdu.spawn();
        pdu
    }

    /// Stops the server (as [`Drop`] does) and starts it again on the same port or serial
    /// path, with every outlet on and no faults.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server: `SIGTERM` by PID, `SIGKILL` after a grace period, then reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// The TCP address, `127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// For an RTU server.
    pub fn address(&self) -> SocketAddr {
        match &self.listen {
            Listen::Tcp(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
            Listen::Serial(path) => panic!("the PDU serves RTU on {}", path.display()),
        }
    }

    /// Whether outlet `n` (coil `n`, 0-based) of the first served unit is on.
    pub fn outlet(&self, n: u16) -> bool {
        self.unit_outlet(self.first_unit(), n)
    }

    /// Whether outlet `n` of `unit` is on (stored value 1).
    pub fn unit_outlet(&self, unit: u8, n: u16) -> bool {
        self.value(unit, n) == 1
    }

    /// The stored value of outlet `n` of `unit`: 1 on, 0 off, or whatever else a register
    /// write or [`ModbusPdu::set_value`] put there.
    pub fn value(&self, unit: u8, n: u16) -> u64 {
        let state = self.state();
        state["outlets"][unit.to_string()][usize::from(n)]
            .as_u64()
            .unwrap_or_else(|| panic!("no outlet {n} on unit {unit}: {state}"))
    }

    /// Switches outlet `n` of `unit` behind the driver's back.
    pub fn set_outlet(&self, unit: u8, n: u16, on: bool) {
        self.set_value(unit, n, u64::from(on));
    }

    /// Stores `value` for outlet `n` of `unit`: register reads answer it as it is (2 for 0),
    /// so a value other than 0 and 1 makes a register that means neither on nor off.
    pub fn set_value(&self, unit: u8, n: u16, value: u64) {
        self.update(|state| {
            state["outlets"][unit.to_string()][usize::from(n)] = Value::from(value);
        });
    }

    /// Makes writes to outlet `n` of `unit` be acknowledged without effect (`true`), or work
    /// again (`false`).
    pub fn set_stuck(&self, unit: u8, n: u16, stuck: bool) {
        let key = format!("{unit}:{n}");
        self.update(|state| {
            let mut list: Vec<Value> = state["stuck"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.as_str() != Some(key.as_str()))
                .collect();
            if stuck {
                list.push(Value::from(key.clone()));
            }
            state["stuck"] = Value::from(list);
        });
    }

    /// Makes every request answer exception 6, server device busy (`true`), or not.
    pub fn set_busy(&self, busy: bool) {
        self.update(|state| state["busy"] = Value::from(busy));
    }

    /// Delays every answer by `delay` (more than the client's timeout: a PDU that never
    /// answers).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.update(|state| state["delay_ms"] = Value::from(ms));
    }

    /// Once a write was taken, answers `reads` more reads and then nothing at all (a PDU that
    /// dies in the middle of a fence); `None` answers forever.
    pub fn set_silent_after_write_reads(&self, reads: Option<u32>) {
        self.update(|state| state["silent_after_write_reads"] = Value::from(reads));
    }

    /// Runs `script` (with `sh`, arguments: unit, outlet index) whenever a write switches a
    /// powered outlet off, before the write is answered: wires outlets to machines' power, so
    /// that an acknowledged off means the machine is really off. The script is the harness's
    /// own.
    pub fn set_off_hook(&self, script: &Path) {
        let path = script.display().to_string();
        self.update(|state| state["off_hook"] = Value::from(path));
    }

    /// Every write the server accepted, oldest first: `unit=U fc=F addr=A value=V`.
    pub fn writes(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("writes.log"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The server's own output, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pdu.log")).unwrap_or_default()
    }

    /// The JSON state file the server keeps (see the module docs): for readers that must not
    /// panic, such as a power watcher, which parse it themselves.
    pub fn state_file(&self) -> PathBuf {
        self.state_path()
    }

    fn first_unit(&self) -> u8 {
        self.options.units.first().copied().unwrap_or(1)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    fn state(&self) -> Value {
        let text = fs::read_to_string(self.state_path())
            .unwrap_or_else(|e| panic!("reading the PDU state: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("PDU state {text:?}: {e}"))
    }

    fn update(&self, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        change(&mut state);
        let tmp = self.dir.path().join("state.json.test");
        fs::write(&tmp, state.to_string()).unwrap_or_else(|e| panic!("writing PDU state: {e}"));
        fs::rename(&tmp, self.state_path()).unwrap_or_else(|e| panic!("renaming PDU state: {e}"));
    }

    fn spawn(&mut self) {
        let python = venv_python().unwrap_or_else(|e| {
            panic!("the pymodbus virtualenv is missing ({e}); install with scripts/deps-fence.sh")
        });
        let dir = self.dir.path();
        let ready = dir.join("ready");
        let _ = fs::remove_file(&ready);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pdu.log"))
            .unwrap_or_else(|e| panic!("PDU log file: {e}"));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("PDU log file: {e}"));
        let units: Vec<String> = self.options.units.iter().map(u8::to_string).collect();
        let mut command = Command::new(&python);
        command
            .arg(dir.join("modbus_pdu.py"))
            .arg("--state")
            .arg(self.state_path())
            .arg("--log")
            .arg(dir.join("writes.log"))
            .arg("--ready")
            .arg(&ready)
            .arg("--outlets")
            .arg(self.options.outlets.to_string())
            .arg("--units")
            .arg(units.join(","));
        match &self.listen {
            Listen::Tcp(port) => command.arg("--tcp").arg(port.to_string()),
            Listen::Serial(path) => command
                .arg("--serial")
                .arg(path)
                .arg("--baud")
                .arg(self.options.baud.to_string()),
        };
        let child = command
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install with scripts/deps-fence.sh",
                    python.display()
                )
            });
        self.child = Some(child);
        self.wait_ready(&ready);
    }

    /// Waits for the ready file (and, for TCP, a connection) while checking the child lives.
    fn wait_ready(&mut self, ready: &Path) {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "modbus_pdu.py exited at start ({status}); log:\n{}",
                        self.log()
                    );
                }
            }
            let listening = match &self.listen {
                Listen::Tcp(port) => {
                    ready.exists() && TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).is_ok()
                }
                Listen::Serial(_) => ready.exists(),
            };
            if listening {
                return;
            }
            thread::sleep(READY_POLL);
        }
        self.stop();
        panic!(
            "modbus_pdu.py not ready within {START_TIMEOUT:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for ModbusPdu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// First holding register of the outlets: register `REGISTER_BASE + n` is outlet `n`.
pub const REGISTER_BASE: u16 = 100;
/// Register value of a powered outlet.
pub const REGISTER_ON: u16 = 1;
/// Register value of an unpowered outlet.
pub const REGISTER_OFF: u16 = 2;
/// pymodbus starts in about half a second; a loaded CI machine gets twenty times that.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between readiness checks.
const READY_POLL: Duration = Duration::from_millis(20);
/// The server script, written into each run directory.
const SERVER_PY: &str = include_str!("modbus_pdu.py");
