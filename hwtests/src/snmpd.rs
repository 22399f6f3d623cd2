//! net-snmp's `snmpd` as a switched PDU and an Ethernet / SAN switch, for the SNMP fencing
//! tests.
//!
//! The SNMP drivers must be proven against a real, independent SNMP agent: its BER encoder,
//! its USM (v3 keys, time windows, SHA-256), its VACM (a read-only community refused a SET),
//! its error statuses. [`Snmpd::start`] writes an `snmpd.conf` into a fresh temporary
//! directory and runs `snmpd` in the foreground on a free UDP port of 127.0.0.1. The tables
//! a fence driver touches are served by `snmp_passpersist.py` (next to this file, standard
//! library only) through `pass_persist`:
//!
//! - one PDU of the chosen [`PduModel`] (PowerNet-MIB MasterSwitch or rPDU, Raritan PDU2-MIB,
//!   EATON-EPDU-MIB), with the matching `sysObjectID` so drivers can detect the model;
//! - IF-MIB `ifNumber`, `ifTable` and `ifXTable` (`ifName` `portN`, `ifAlias` `hostN-hba`):
//!   `snmpd` runs with `-I -ifTable,ifXTable,interfaces,ifNumber` so that the fake ports, not
//!   the machine's interfaces, own those tables.
//!
//! Outlet and port state live in one JSON file that the test reads and writes
//! ([`Snmpd::outlet_on`], [`Snmpd::set_port_admin`], ...), under a lock shared with the
//! backends. Every SET the backends received is in [`Snmpd::sets`].
//!
//! # Contract
//!
//! - Listens on 127.0.0.1 only. `MIBS=:`, `MIBDIRS=/nonexistent` and `SNMP_PERSISTENT_DIR` in
//!   the temporary directory, with `-C` (no system configuration), so no state outside that
//!   directory is read or written.
//! - [`Snmpd::start`] returns once the agent and every backend answer; every wait is bounded.
//! - Dropping an [`Snmpd`] stops `snmpd` by PID (`SIGTERM`, then `SIGKILL`), reaps it, and
//!   waits (bounded) for its `pass_persist` backends to exit, killing stragglers by PID.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Which PDU the agent plays: decides the `sysObjectID` and the outlet tables served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PduModel {
    /// APC MasterSwitch (PowerNet-MIB `sPDUOutletControlTable`, `.1.3.6.1.4.1.318.1.1.4.4.2.1`:
    /// `.3.N` sPDUOutletCtl reads 1 on / 2 off, takes 1 on, 2 off, 3 reboot; `.4.N` name).
    /// `sysObjectID` masterSwitchV2 `.1.3.6.1.4.1.318.1.3.4.2`, which fence_apc_snmp does not
    /// list and so drives with these MasterSwitch OIDs.
    #[default]
    ApcMasterSwitch,
    /// APC rack PDU (PowerNet-MIB `rPDUOutletControlTable` `.1.3.6.1.4.1.318.1.1.12.3.3.1.1`:
    /// `.4.N` command 1 on, 2 off, 3 reboot, `.2.N` name; `rPDUOutletStatusTable`
    /// `.1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.N` reads 1 on / 2 off). `sysObjectID`
    /// masterSwitchrPDU `.1.3.6.1.4.1.318.1.3.4.5`, fence_apc_snmp's "APC rPDU".
    ApcRpdu,
    /// Raritan PX2/PX3 (PDU2-MIB, pduId 1): `switchingOperation`
    /// `.1.3.6.1.4.1.13742.6.4.1.2.1.2.1.N` takes off(0), on(1), cycle(2);
    /// `outletSwitchingState` `.3.1.N` reads on(7) / off(8); `outletName`
    /// `.1.3.6.1.4.1.13742.6.3.5.3.1.3.1.N`. `sysObjectID` pdu2 `.1.3.6.1.4.1.13742.6`.
    RaritanPx,
    /// Eaton ePDU (EATON-EPDU-MIB, strappingIndex 0): `outletControlStatus`
    /// `.1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.N` reads off(0) / on(1); `outletControlOffCmd` `.3.0.N`
    /// and `outletControlOnCmd` `.4.0.N` take a delay (0 = now); `outletControlRebootCmd`
    /// `.5.0.N`; `outletName` `.1.3.6.1.4.1.534.6.6.7.6.1.1.3.0.N`. `sysObjectID` eatonEpdu
    /// `.1.3.6.1.4.1.534.6.6.7`.
    EatonEpdu,
}

impl PduModel {
    /// The `sysObjectID` the agent reports for this model.
    pub fn sys_object_id(self) -> &'static str {
        match self {
            Self::ApcMasterSwitch => ".1.3.6.1.4.1.318.1.3.4.2",
            Self::ApcRpdu => ".1.3.6.1.4.1.318.1.3.4.5",
            Self::RaritanPx => ".1.3.6.1.4.1.13742.6",
            Self::EatonEpdu => ".1.3.6.1.4.1.534.6.6.7",
        }
    }

    /// The enterprise subtree the PDU backend serves.
    fn subtree(self) -> &'static str {
        match self {
            Self::ApcMasterSwitch | Self::ApcRpdu => ".1.3.6.1.4.1.318",
            Self::RaritanPx => ".1.3.6.1.4.1.13742",
            Self::EatonEpdu => ".1.3.6.1.4.1.534",
        }
    }

    /// The backend's name for the model.
    fn backend_name(self) -> &'static str {
        match self {
            Self::ApcMasterSwitch => "apc-masterswitch",
            Self::ApcRpdu => "apc-rpdu",
            Self::RaritanPx => "raritan-px",
            Self::EatonEpdu => "eaton-epdu",
        }
    }

    /// The status OID of outlet 1, used to start the backend before the first test request.
    fn probe_oid(self) -> &'static [u32] {
        match self {
            Self::ApcMasterSwitch => &[1, 3, 6, 1, 4, 1, 318, 1, 1, 4, 4, 2, 1, 3, 1],
            Self::ApcRpdu => &[1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 4, 1],
            Self::RaritanPx => &[1, 3, 6, 1, 4, 1, 13742, 6, 4, 1, 2, 1, 3, 1, 1],
            Self::EatonEpdu => &[1, 3, 6, 1, 4, 1, 534, 6, 6, 7, 6, 6, 1, 2, 0, 1],
        }
    }
}

/// What the agent serves.
#[derive(Debug, Clone)]
pub struct SnmpdOptions {
    /// PDU outlets 1..=outlets, all on at start, named `Outlet N`; 0 serves no PDU.
    pub outlets: usize,
    /// Switch ports 1..=ports, all admin up at start; 0 serves no IF-MIB.
    pub ports: usize,
    /// Which PDU.
    pub model: PduModel,
    /// Outlets that acknowledge every SET and never change (a welded relay).
    pub stuck_outlets: Vec<u32>,
    /// Ports that acknowledge every SET and never change.
    pub stuck_ports: Vec<u32>,
    /// How long a rebooted outlet stays off; 0 turns it on again at once.
    pub reboot_secs: u64,
    /// After a SET, a backend answers this many single-OID reads (one per varbind of a GET,
    /// and one before each further SET: snmpd reads a varbind before it writes it), then
    /// stops answering, and with it the whole agent: a switch or PDU that dies while
    /// the driver confirms. `None` answers forever.
    pub silent_after_set_gets: Option<u32>,
}

impl Default for SnmpdOptions {
    fn default() -> Self {
        Self {
            outlets: 8,
            ports: 8,
            model: PduModel::ApcMasterSwitch,
            stuck_outlets: Vec::new(),
            stuck_ports: Vec::new(),
            reboot_secs: 0,
            silent_after_set_gets: None,
        }
    }
}

/// A running `snmpd`; see the module docs.
#[derive(Debug)]
pub struct Snmpd {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Read-write v1/v2c community.
pub const V2C_RW_COMMUNITY: &str = "private";
/// Read-only v1/v2c community: its SETs are refused (noAccess).
pub const V2C_RO_COMMUNITY: &str = "public";
/// v3 user with SHA (HMAC-SHA-96) authentication and AES-128 privacy, read-write.
pub const V3_USER: &str = "fenceuser";
/// v3 user with SHA-256 (usmHMAC192SHA256AuthProtocol) authentication and AES-128 privacy,
/// read-write.
pub const V3_USER_SHA256: &str = "fenceuser256";
/// Authentication passphrase of both v3 users.
pub const V3_AUTH_PASSWORD: &str = "authpass123";
/// Privacy passphrase of both v3 users.
pub const V3_PRIV_PASSWORD: &str = "privpass123";

impl Snmpd {
    /// Starts an agent serving `options` on a free UDP port of 127.0.0.1 and waits until it
    /// and its backends answer.
    ///
    /// # Panics
    ///
    /// If `snmpd` or `python3` is missing (install with scripts/deps-fence.sh), or the agent
    /// does not answer within [`START_TIMEOUT`]. Tests must fail, not skip, when their peer
    /// is missing.
    pub fn start(options: &SnmpdOptions) -> Snmpd {
        let snmpd = find_program(SNMPD_CANDIDATES).unwrap_or_else(|| {
            panic!("snmpd is not installed: install with scripts/deps-fence.sh")
        });
        let python = find_program(PYTHON_CANDIDATES).unwrap_or_else(|| {
            panic!("python3 is not installed: install with scripts/deps-fence.sh")
        });
        let dir = crate::util::unique_tempdir("wk-snmpd-").expect("temporary directory");
        let port = crate::free_udp_port();
        let state = dir.path().join("state.json");
        write_json(&state, &initial_state(options));
        let script = dir.path().join("snmp_passpersist.py");
        fs::write(&script, BACKEND_PY).expect("backend script");
        let persist = dir.path().join("persist");
        fs::create_dir(&persist).expect("persistent directory");
        let conf = dir.path().join("snmpd.conf");
        fs::write(&conf, config(port, options, &python, &script, &state)).expect("snmpd.conf");
        let log_path = dir.path().join("snmpd.log");
        let out = fs::File::create(dir.path().join("snmpd.out")).expect("output file");
        let child = Command::new(&snmpd)
            .arg("-f")
            .arg("-C")
            .arg("-c")
            .arg(&conf)
            .arg("-Lf")
            .arg(&log_path)
            .arg("-I")
            .arg("-ifTable,ifXTable,interfaces,ifNumber")
            .env("MIBS", ":")
            .env("MIBDIRS", "/nonexistent")
            .env("SNMP_PERSISTENT_DIR", &persist)
            .env_remove("SNMPCONFPATH")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install with scripts/deps-fence.sh",
                    snmpd.display()
                )
            });
        let mut agent = Snmpd {
            child: Some(child),
            port,
            dir,
        };
        agent.wait_ready(options);
        agent
    }

    /// The agent's address, 127.0.0.1:port.
    pub fn address(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The agent's UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether outlet `n` is powered (a finished reboot counts as on).
    ///
    /// # Panics
    ///
    /// If the state file cannot be read, or has no outlet `n`.
    pub fn outlet_on(&self, n: u32) -> bool {
        let state = self.read_state();
        let key = n.to_string();
        if let Some(until) = state["reboot_until"].get(&key).and_then(Value::as_f64) {
            if unix_now() >= until {
                return true;
            }
        }
        state["outlets"][&key]
            .as_bool()
            .unwrap_or_else(|| panic!("the PDU has no outlet {n}"))
    }

    /// Switches outlet `n` behind the agent's back (someone at the PDU's front panel), also
    /// when the outlet is stuck.
    pub fn set_outlet(&self, n: u32, on: bool) {
        self.update_state(|state| {
            state["outlets"][n.to_string()] = Value::Bool(on);
            if let Some(until) = state["reboot_until"].as_object_mut() {
                until.remove(&n.to_string());
            }
        });
    }

    /// Makes outlet `n` acknowledge every SET without changing (`true`: a welded relay, a PDU
    /// that lies), or obey again.
    pub fn set_outlet_stuck(&self, n: u32, stuck: bool) {
        self.update_state(|state| {
            let mut list: Vec<Value> = state["stuck_outlets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.as_u64() != Some(u64::from(n)))
                .collect();
            if stuck {
                list.push(Value::from(n));
            }
            state["stuck_outlets"] = Value::from(list);
        });
    }

    /// Every outlet command the PDU received, oldest first, with its time:
    /// `<unix time> outlet=N on|off|reboot`, `-ignored` appended for a stuck outlet.
    pub fn switches(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("state.json.switches"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Whether port `n`'s ifAdminStatus is up.
    ///
    /// # Panics
    ///
    /// If the state file cannot be read, or has no port `n`.
    pub fn port_admin_up(&self, n: u32) -> bool {
        self.read_state()["ports"][n.to_string()]
            .as_bool()
            .unwrap_or_else(|| panic!("the switch has no port {n}"))
    }

    /// Sets port `n`'s ifAdminStatus (and so ifOperStatus) behind the agent's back, also when
    /// the port is stuck.
    pub fn set_port_admin(&self, n: u32, up: bool) {
        self.update_state(|state| state["ports"][n.to_string()] = Value::Bool(up));
    }

    /// Every SET the backends received, oldest first, one per line as
    /// `<oid> <type> <value> <result>`, e.g. `.1.3.6.1.2.1.2.2.1.7.3 integer 2 DONE` or
    /// `.1.3.6.1.2.1.2.2.1.8.3 integer 2 not-writable`. SETs that `snmpd` refused itself
    /// (read-only community, bad v3 keys) never reach the backends and are not listed.
    pub fn sets(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("state.json.sets"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// `snmpd`'s log and output, for failure messages.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default();
        log.push_str(&fs::read_to_string(self.dir.path().join("snmpd.out")).unwrap_or_default());
        log
    }

    /// The working directory (configuration, state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PIDs of the live `pass_persist` backends of this agent (found by the working
    /// directory in their command line).
    pub fn backend_pids(&self) -> Vec<u32> {
        backend_pids(self.dir.path())
    }

    /// The agent's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the agent: SIGTERM by PID, SIGKILL after [`STOP_GRACE`], reaps it, then waits up
    /// to [`STOP_GRACE`] for its backends (which exit when their pipe closes) and kills the
    /// ones left by PID.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            thread::sleep(STOP_POLL);
        }
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let left = backend_pids(self.dir.path());
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for pid in left {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                return;
            }
            thread::sleep(STOP_POLL);
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    fn read_state(&self) -> Value {
        let _lock = lock_state(&self.state_path());
        read_json(&self.state_path())
    }

    fn update_state(&self, change: impl FnOnce(&mut Value)) {
        let _lock = lock_state(&self.state_path());
        let mut state = read_json(&self.state_path());
        change(&mut state);
        write_json(&self.state_path(), &state);
    }

    /// Sends one v2c GET for an OID in every served subtree until the agent answers, which
    /// also starts every backend (snmpd starts a `pass_persist` program on first use).
    fn wait_ready(&mut self, options: &SnmpdOptions) {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("UDP socket");
        socket
            .set_read_timeout(Some(READY_POLL))
            .expect("read timeout");
        let mut oids: Vec<&[u32]> = vec![SYS_NAME];
        if options.ports > 0 {
            oids.push(IF_NUMBER);
            oids.push(IF_NAME_1);
        }
        if options.outlets > 0 {
            oids.push(options.model.probe_oid());
        }
        let probe = v2c_get(V2C_RO_COMMUNITY, &oids);
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        while start.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("snmpd exited at start ({status}); log:\n{}", self.log());
                }
            }
            // A send error (nothing bound yet) only means "not yet"; the loop is bounded.
            let _ = socket.send_to(&probe, self.address());
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if n > 0 => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ICMP port unreachable before snmpd binds: back off a little.
                Err(_) => thread::sleep(READY_POLL),
            }
        }
        panic!(
            "snmpd did not answer within {START_TIMEOUT:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn initial_state(options: &SnmpdOptions) -> Value {
    let outlets: BTreeMap<String, bool> = (1..=options.outlets)
        .map(|n| (n.to_string(), true))
        .collect();
    let ports: BTreeMap<String, bool> =
        (1..=options.ports).map(|n| (n.to_string(), true)).collect();
    json!({
        "outlets": outlets,
        "outlet_names": {},
        "reboot_until": {},
        "ports": ports,
        "aliases": {},
        "stuck_outlets": options.stuck_outlets,
        "stuck_ports": options.stuck_ports,
        "reboot_secs": options.reboot_secs,
        "silent_after_set_gets": options.silent_after_set_gets,
    })
}

fn config(port: u16, options: &SnmpdOptions, python: &Path, script: &Path, state: &Path) -> String {
    let backend = format!(
        "{} {} {}",
        python.display(),
        script.display(),
        state.display()
    );
    let mut conf = format!(
        "# Generated by hwtests::snmpd.
agentaddress udp:127.0.0.1:{port}
rocommunity {V2C_RO_COMMUNITY} 127.0.0.1
rwcommunity {V2C_RW_COMMUNITY} 127.0.0.1
createUser {V3_USER} SHA \"{V3_AUTH_PASSWORD}\" AES \"{V3_PRIV_PASSWORD}\"
createUser {V3_USER_SHA256} SHA-256 \"{V3_AUTH_PASSWORD}\" AES \"{V3_PRIV_PASSWORD}\"
rwuser {V3_USER} priv
rwuser {V3_USER_SHA256} priv
dontLogTCPWrappersConnects yes
sysName wk-snmpd-{port}
sysDescr watchkeeper test agent: {model:?} PDU ({outlets} outlets), switch ({ports} ports)
sysObjectID {sys_object_id}
",
        model = options.model,
        outlets = options.outlets,
        ports = options.ports,
        sys_object_id = options.model.sys_object_id(),
    );
    if options.outlets > 0 {
        conf.push_str(&format!(
            "pass_persist {} {backend} pdu {}\n",
            options.model.subtree(),
            options.model.backend_name()
        ));
    }
    if options.ports > 0 {
        conf.push_str(&format!("pass_persist .1.3.6.1.2.1.2 {backend} ifmib\n"));
        conf.push_str(&format!("pass_persist .1.3.6.1.2.1.31 {backend} ifx\n"));
    }
    conf
}

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            let name = candidates.first()?.rsplit('/').next()?.to_owned();
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(&name))
                    .find(|p| p.is_file())
            })
        })
}

/// Live processes whose command line mentions `dir` and the backend script: only the
/// backends of the agent that owns `dir` (a fresh temporary directory) can match.
fn backend_pids(dir: &Path) -> Vec<u32> {
    let needle = dir.join("snmp_passpersist.py");
    let needle = needle.to_string_lossy();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle.as_ref()) && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat is "pid (comm) S ..."; comm may contain spaces and parentheses, so the
    // state is the first field after the last ')'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}

fn lock_state(state: &Path) -> Flock<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.with_extension("json.lock"))
        .expect("state lock file");
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock the snmpd state: {e}"))
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// Writes through a temporary file and a rename, so readers see the old or the new state.
fn write_json(path: &Path, value: &Value) {
    let tmp = path.with_extension("json.rust-tmp");
    fs::write(&tmp, value.to_string()).expect("state file");
    fs::rename(&tmp, path).expect("state file");
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A v2c GetRequest for `oids` (values NULL), BER-encoded by hand so that readiness does not
/// depend on any SNMP library under test.
fn v2c_get(community: &str, oids: &[&[u32]]) -> Vec<u8> {
    let mut varbinds = Vec::new();
    for oid in oids {
        let mut vb = tlv(0x06, &encode_oid(oid));
        vb.extend_from_slice(&[0x05, 0x00]);
        varbinds.extend(tlv(0x30, &vb));
    }
    let mut pdu = Vec::new();
    pdu.extend(tlv(0x02, &[0x01])); // request-id 1
    pdu.extend(tlv(0x02, &[0x00])); // error-status
    pdu.extend(tlv(0x02, &[0x00])); // error-index
    pdu.extend(tlv(0x30, &varbinds));
    let mut message = Vec::new();
    message.extend(tlv(0x02, &[0x01])); // version: v2c
    message.extend(tlv(0x04, community.as_bytes()));
    message.extend(tlv(0xa0, &pdu));
    tlv(0x30, &message)
}

fn encode_oid(oid: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    let (first, rest) = match oid {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => (0, oid),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut bytes = vec![low7(arc)];
        let mut v = arc >> 7;
        while v > 0 {
            bytes.push(low7(v) | 0x80);
            v >>= 7;
        }
        out.extend(bytes.iter().rev());
    }
    out
}

/// The low seven bits of `v`.
fn low7(v: u32) -> u8 {
    v.to_le_bytes()[0] & 0x7f
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            // At most size_of::<usize>() = 8 length bytes, so the count fits the low bits.
            out.push(0x80 | low7(u32::try_from(bytes.len() - skip).unwrap_or(0)));
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    out.extend_from_slice(content);
    out
}

/// The backend, written into each run directory.
const BACKEND_PY: &str = include_str!("snmp_passpersist.py");
/// Debian's path first; else whatever `snmpd` is on `PATH`.
const SNMPD_CANDIDATES: &[&str] = &["/usr/sbin/snmpd", "/usr/local/sbin/snmpd"];
/// The system Python first (the backend needs only its standard library).
const PYTHON_CANDIDATES: &[&str] = &["/usr/bin/python3", "/usr/local/bin/python3"];
const SYS_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
const IF_NUMBER: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 1, 0];
const IF_NAME_1: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1, 1];
/// snmpd and its Python backends start in about 100 ms; a loaded CI machine gets fifty times
/// that.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait for one readiness answer before resending.
const READY_POLL: Duration = Duration::from_millis(100);
/// Time snmpd gets to exit on SIGTERM, and its backends after it, before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Interval between exit checks while stopping.
const STOP_POLL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_encode_as_ber() {
        assert_eq!(
            encode_oid(&[1, 3, 6, 1, 2, 1, 1, 5, 0]),
            [0x2b, 6, 1, 2, 1, 1, 5, 0]
        );
        assert_eq!(
            encode_oid(&[1, 3, 6, 1, 4, 1, 13742]),
            [0x2b, 6, 1, 4, 1, 0xeb, 0x2e]
        );
    }

    #[test]
    fn probe_is_a_well_formed_get() {
        let probe = v2c_get("public", &[SYS_NAME]);
        assert_eq!(probe[0], 0x30);
        assert_eq!(usize::from(probe[1]), probe.len() - 2);
        assert!(probe.windows(6).any(|w| w == b"public"));
    }
}
