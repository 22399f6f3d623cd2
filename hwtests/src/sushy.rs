//! sushy-tools' Redfish emulator as a child process, for the Redfish fencing tests.
//!
//! The Redfish driver must be proven against a real Redfish service, not against our own idea
//! of one. sushy-tools' fake driver serves the DMTF schema for a set of systems whose power state
//! persists in sqlite, with no libvirt. [`Sushy::start`] writes its configuration (systems,
//! htpasswd with bcrypt hashes, a self-signed certificate made with `openssl` for HTTPS) into a
//! fresh directory, starts `python sushy_emulator.py` from the virtualenv that
//! `scripts/deps-fence.sh` creates, and waits until the port accepts connections.
//!
//! `sushy_emulator.py` (next to this file) adds three things upstream lacks: a fixed power
//! delay (upstream applies a reset after a random 1–11 s), Redfish sessions, and power kept in
//! a file that a test rig can wire to a host (see its doc).
//!
//! # Contract
//!
//! - Listens on 127.0.0.1 only, on a port that was free a moment before.
//! - Dropping a [`Sushy`] stops the process by PID (`SIGTERM`, then `SIGKILL`) and reaps it.
//! - Every wait is bounded.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct SushyOptions {
    /// Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 and localhost.
    pub https: bool,
    /// Basic-auth (and session) credentials; `None` serves without authentication.
    pub credentials: Option<(String, String)>,
    /// How many systems to serve: `/redfish/v1/Systems/<uuid N>`, named `nodeN`, all On.
    pub systems: usize,
    /// Seconds before a reset shows in PowerState; a huge value makes a BMC that never obeys.
    pub power_delay_s: u64,
    /// Offer Redfish sessions (which upstream sushy-tools lacks) besides basic auth.
    pub sessions: bool,
    /// Keep each system's power in a file of this directory (named by its UUID), switched at
    /// once, so that the test rig can wire it to a host (see `sushy_emulator.py`,
    /// `WK_POWER_DIR`); `power_delay_s` then does not apply.
    pub power_dir: Option<PathBuf>,
    /// Once a reset was accepted, answer this many more GETs, then nothing (a BMC that dies
    /// in the middle of a fence); `None` answers forever.
    pub silent_after_reset_gets: Option<u32>,
}

impl Default for SushyOptions {
    fn default() -> Self {
        Self {
            https: false,
            credentials: Some(("admin".to_owned(), "secret".to_owned())),
            systems: 1,
            power_delay_s: 0,
            sessions: true,
            power_dir: None,
            silent_after_reset_gets: None,
        }
    }
}

/// A running emulator; see the module docs.
#[derive(Debug)]
pub struct Sushy {
    child: Child,
    port: u16,
    https: bool,
    dir: tempfile::TempDir,
}

impl Sushy {
    /// Starts the emulator and waits until it accepts connections.
    pub fn start(options: &SushyOptions) -> io::Result<Sushy> {
        let python = venv_python()?;
        let dir = crate::util::unique_tempdir("wk-sushy-")?;
        let port = free_tcp_port()?;
        let script = dir.path().join("sushy_emulator.py");
        fs::write(&script, EMULATOR_PY)?;
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n",
            dir.path().join("state").display()
        );
        if options.https {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run_checked(
                Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "3650",
                        "-subj",
                        "/CN=localhost",
                        "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        // As BMCs make them: a leaf certificate signed by itself, which a client can
                        // also load as its own trust anchor.
                        "-addext",
                        "basicConstraints=critical,CA:FALSE",
                        "-keyout",
                    ])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
            )?;
            conf.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = &options.credentials {
            let htpasswd = dir.path().join("htpasswd");
            let out = run_checked(Command::new(&python).args([
                "-c",
                "import bcrypt,sys; print(sys.argv[1]+':'+bcrypt.hashpw(sys.argv[2].encode(), \
                 bcrypt.gensalt(rounds=4)).decode())",
                user,
                password,
            ]))?;
            fs::write(&htpasswd, out)?;
            conf.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                htpasswd.display()
            ));
        }
        conf.push_str("SUSHY_EMULATOR_FAKE_SYSTEMS = [\n");
        for n in 1..=options.systems {
            conf.push_str(&format!(
                "  {{'uuid': '{}', 'name': 'node{n}', 'power_state': 'On', \
                 'nics': [{{'mac': '52:54:00:00:00:{n:02x}', 'ip': '127.0.0.{}'}}]}},\n",
                system_uuid(n),
                10 + n
            ));
        }
        conf.push_str("]\n");
        let conf_path = dir.path().join("emulator.conf");
        fs::write(&conf_path, conf)?;
        let log = fs::File::create(dir.path().join("sushy.log"))?;
        let mut command = Command::new(&python);
        if options.sessions {
            command.env("WK_SESSIONS_LOG", dir.path().join("sessions.log"));
        }
        if let Some(power_dir) = &options.power_dir {
            command.env("WK_POWER_DIR", power_dir);
        }
        if let Some(gets) = options.silent_after_reset_gets {
            command.env("WK_SILENT_AFTER_RESET_GETS", gets.to_string());
        }
        let child = command
            .arg(&script)
            .arg("--config")
            .arg(&conf_path)
            .env("WK_POWER_DELAY_S", options.power_delay_s.to_string())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut sushy = Sushy {
            child,
            port,
            https: options.https,
            dir,
        };
        sushy.wait_listening()?;
        Ok(sushy)
    }

    /// The emulator's base URL, `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The self-signed certificate (PEM) when serving HTTPS.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// SHA-256 fingerprint of the certificate, as `openssl x509 -fingerprint -sha256` prints it
    /// (`AB:CD:...`).
    pub fn cert_sha256(&self) -> io::Result<String> {
        let out = run_checked(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(self.cert_path()),
        )?;
        out.trim()
            .rsplit('=')
            .next()
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("unexpected openssl output {out:?}")))
    }

    /// What the session service logged: one `create N` or `delete N` line per event.
    pub fn session_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sessions.log")).unwrap_or_default()
    }

    /// The emulator's own output, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sushy.log")).unwrap_or_default()
    }

    /// The working directory (configuration, certificate, state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sushy-emulator exited with {status}: {}",
                    self.log()
                )));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "sushy-emulator not listening after {START_TIMEOUT:?}: {}",
                self.log()
            ),
        ))
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The UUID (= Redfish system Id) of system `n` (1-based).
pub fn system_uuid(n: usize) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}

/// The Python of the test virtualenv made by `scripts/deps-fence.sh`:
/// `$WATCHKEEPER_TEST_VENV`, else `/opt/watchkeeper-test-venv` for root, else
/// `~/.cache/watchkeeper-test-venv`.
pub fn venv_python() -> io::Result<PathBuf> {
    let venv = match std::env::var_os("WATCHKEEPER_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None if nix::unistd::Uid::effective().is_root() => {
            PathBuf::from("/opt/watchkeeper-test-venv")
        }
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/watchkeeper-test-venv"),
    };
    let python = venv.join("bin/python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is missing: run scripts/deps-fence.sh to install the Redfish emulator",
                python.display()
            ),
        ))
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (released before returning).
pub fn free_tcp_port() -> io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()
        .map(|a| a.port())
}

/// Stops a child by PID: `SIGTERM`, up to [`STOP_GRACE`], then `SIGKILL`; always reaps it.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_checked(command: &mut Command) -> io::Result<String> {
    let out = command.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{command:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The emulator wrapper, written into each run directory.
const EMULATOR_PY: &str = include_str!("sushy_emulator.py");
/// sushy starts in about 0.3 s; a loaded CI machine gets thirty times that.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Flask exits at once on SIGTERM; this only bounds a wedged process.
const STOP_GRACE: Duration = Duration::from_secs(5);
