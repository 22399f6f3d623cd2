//! A throw-away PostgreSQL primary with a streaming hot standby, for the Catalog executor tests
//! (`drivers::resource::pgsql`).
//!
//! Promotion, `pg_rewind` and `pg_basebackup` must be proven against the real server, not an
//! idea of it. [`PgCluster::start`] builds, under a fresh `/tmp/wk-pg-*` directory owned by the
//! `postgres` user (PostgreSQL refuses to run as root):
//!
//! - node [`Node::A`], the primary: `initdb --data-checksums` (so `pg_rewind` works without
//!   `wal_log_hints`), `wal_level=replica`, `hot_standby=on`, `fsync=off` for speed, listening
//!   on 127.0.0.1 and a Unix socket in the cluster's `sock` directory; a `replicator` role with
//!   `REPLICATION`, a password, a `pg_hba.conf` line for 127.0.0.1, the function grants
//!   `pg_rewind` needs from a non-superuser source, and `pg_checkpoint` (PostgreSQL 15's
//!   `pg_rewind` needs a checkpoint on a freshly promoted source);
//! - node [`Node::B`], a hot standby copied with `pg_basebackup -R`, streaming from A through
//!   the Unix socket ([`PgCluster::conninfo_to`]), so that replication works wherever each
//!   server's network namespace is.
//!
//! Both share the configuration files (a clone copies them); the port is node-specific and is
//! passed on the command line (`pg_ctl -o "-p N"`), as the executor does. Passwords are in a
//! libpq password file ([`PgCluster::password_file`]) readable by `postgres` only.
//!
//! # Contract
//!
//! - Only 127.0.0.1 and Unix sockets; only processes this fixture or the executor started in
//!   its directory, found by the PID in `postmaster.pid` and checked by their working
//!   directory.
//! - Every wait is bounded ([`START_TIMEOUT`], [`STOP_TIMEOUT`], [`SQL_TIMEOUT`]).
//! - Dropping a [`PgCluster`] stops, by PID, every postmaster running in any data directory
//!   under its root (including moved-aside ones) and its children, then removes the root.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::run_bounded;
use drivers::resource::pgsql::{PgsqlParams, RejoinPolicy};
use nix::sys::prctl;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chown, Pid, User};

/// One of the two nodes; roles swap during a test, names do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The first primary.
    A,
    /// The first standby.
    B,
}

impl Node {
    /// The other node.
    pub fn peer(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }
}

/// A running primary and standby; see the module docs.
#[derive(Debug)]
pub struct PgCluster {
    root: tempfile::TempDir,
    bindir: PathBuf,
    port_a: u16,
    port_b: u16,
}

/// Password of the `postgres` superuser.
pub const SUPERUSER_PASSWORD: &str = "wk-super-pw";
/// Role the standby streams (and rewinds, and clones) as.
pub const REPLICATION_USER: &str = "replicator";
/// Its password.
pub const REPLICATION_PASSWORD: &str = "wk-repl-pw";
/// OS user the servers run as.
pub const PG_OS_USER: &str = "postgres";
/// Longest wait for a server start, a base backup or an `initdb`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a server to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one `psql` run.
pub const SQL_TIMEOUT: Duration = Duration::from_secs(15);

impl PgCluster {
    /// Creates and starts A (primary) and B (standby streaming from A).
    ///
    /// # Panics
    ///
    /// If the PostgreSQL binaries are missing ("install with scripts/deps-resource.sh"), the
    /// `postgres` user does not exist, or any step fails or exceeds its bound.
    pub fn start() -> PgCluster {
        let bindir = pg_bindir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin/initdb): \
                 install with scripts/deps-resource.sh"
            )
        });
        let user = User::from_name(PG_OS_USER)
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!("no {PG_OS_USER} user: install with scripts/deps-resource.sh")
            });
        // PostgreSQL takes an unreaped (zombie) postmaster for a live one and refuses to
        // restart; where PID 1 does not reap orphans, the test process must, so it adopts them.
        prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let root = tempfile::Builder::new()
            .prefix("wk-pg-")
            // Kept with the rig's directory, for the servers' logs.
            .disable_cleanup(std::env::var_os("WK_RIG_KEEP").is_some())
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let give = |path: &Path, mode: u32| {
            chown(path, Some(user.uid), Some(user.gid)).expect("chown to postgres");
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        };
        give(root.path(), 0o700);
        let sock = root.path().join("sock");
        fs::create_dir(&sock).expect("socket directory");
        give(&sock, 0o700);
        let pwfile = root.path().join("pwfile");
        fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n")).expect("pwfile");
        give(&pwfile, 0o600);
        let pgpass = root.path().join("pgpass");
        fs::write(
            &pgpass,
            format!(
                "*:*:*:postgres:{SUPERUSER_PASSWORD}\n*:*:*:{REPLICATION_USER}:{REPLICATION_PASSWORD}\n"
            ),
        )
        .expect("pgpass");
        give(&pgpass, 0o600);
        let cluster = PgCluster {
            root,
            bindir,
            port_a: free_tcp_port(),
            port_b: free_tcp_port(),
        };
        let a = cluster.datadir(Node::A);
        cluster.as_postgres(
            "initdb",
            &[
                "-D",
                &a.to_string_lossy(),
                "-U",
                "postgres",
                &format!("--pwfile={}", pwfile.display()),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--data-checksums",
                // Small WAL segments keep four data directories within a few tens of MB.
                "--wal-segsize=1",
            ],
            START_TIMEOUT,
        );
        let mut conf = fs::read_to_string(a.join("postgresql.conf")).expect("postgresql.conf");
        conf.push_str(&format!(
            "\n# watchkeeper test cluster\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 10\n\
             wal_keep_size = '32MB'\nmin_wal_size = '4MB'\nmax_wal_size = '32MB'\nhot_standby = on\nfsync = off\nfull_page_writes = on\n\
             wal_retrieve_retry_interval = '200ms'\nmax_connections = 30\n\
             shared_buffers = '16MB'\nlog_line_prefix = '%m [%p] '\n",
            sock.display()
        ));
        fs::write(a.join("postgresql.conf"), conf).expect("postgresql.conf");
        let hba = fs::read_to_string(a.join("pg_hba.conf")).expect("pg_hba.conf");
        fs::write(
            a.join("pg_hba.conf"),
            format!(
                "host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256\n\
                 host all {REPLICATION_USER} 127.0.0.1/32 scram-sha-256\n{hba}"
            ),
        )
        .expect("pg_hba.conf");
        cluster.start_node(Node::A);
        cluster.sql_ok(
            Node::A,
            &format!(
                "CREATE ROLE {u} WITH REPLICATION LOGIN PASSWORD '{REPLICATION_PASSWORD}'; \
                 GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {u}; \
                 GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {u}; \
                 GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {u}; \
                 GRANT EXECUTE ON FUNCTION \
                 pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {u}; \
                 GRANT pg_checkpoint TO {u};",
                u = REPLICATION_USER
            ),
        );
        let b = cluster.datadir(Node::B);
        cluster.as_postgres(
            "pg_basebackup",
            &[
                "-D",
                &b.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-w",
                "-d",
                &cluster.conninfo_to(Node::A, Node::B),
            ],
            START_TIMEOUT,
        );
        cluster.start_node(Node::B);
        cluster.wait_streaming(Node::B);
        cluster
    }

    /// Where the PostgreSQL programs are.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The cluster's root directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A node's TCP port on 127.0.0.1.
    pub fn port(&self, node: Node) -> u16 {
        match node {
            Node::A => self.port_a,
            Node::B => self.port_b,
        }
    }

    /// A node's data directory.
    pub fn datadir(&self, node: Node) -> PathBuf {
        self.root.path().join(node.dir_name())
    }

    /// The libpq password file with both roles' passwords.
    pub fn password_file(&self) -> PathBuf {
        self.root.path().join("pgpass")
    }

    /// How `follower` connects to `primary` as the replication role (no password inside: the
    /// password file is named). Through the Unix socket, which reaches a server whichever
    /// network namespace it listens in.
    pub fn conninfo_to(&self, primary: Node, follower: Node) -> String {
        format!(
            "host={} port={} user={REPLICATION_USER} dbname=postgres passfile={} \
             application_name=node_{}",
            self.root().join("sock").display(),
            self.port(primary),
            self.password_file().display(),
            follower.dir_name()
        )
    }

    /// Executor parameters for `node`, following its peer when it is a standby.
    pub fn params(&self, node: Node, rejoin: RejoinPolicy) -> PgsqlParams {
        PgsqlParams {
            bindir: self.bindir.clone(),
            datadir: self.datadir(node),
            port: self.port(node),
            host: "127.0.0.1".to_owned(),
            user: Some(PG_OS_USER.to_owned()),
            superuser: "postgres".to_owned(),
            password_file: Some(self.password_file()),
            primary_conninfo: Some(self.conninfo_to(node.peer(), node)),
            rejoin,
        }
    }

    /// Runs `sql` on `node` as the superuser over the Unix socket; the unaligned, tuples-only answer, or
    /// psql's stderr.
    pub fn sql(&self, node: Node, sql: &str) -> Result<String, String> {
        self.sql_in(node, "postgres", sql)
    }

    /// [`PgCluster::sql`] in database `db`.
    pub fn sql_in(&self, node: Node, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
            // The Unix socket directory: it reaches a server whichever network namespace it
            // listens in (an agent inside a namespace may have started it).
            .arg(self.root.path().join("sock"))
            .arg("-p")
            .arg(self.port(node).to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("PGPASSFILE", self.password_file())
            .env("PGCONNECT_TIMEOUT", "5")
            .env("LC_ALL", "C");
        let out = run_bounded(&mut cmd, SQL_TIMEOUT).map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// [`PgCluster::sql`] that must succeed.
    ///
    /// # Panics
    ///
    /// If the statement fails.
    pub fn sql_ok(&self, node: Node, sql: &str) -> String {
        self.sql(node, sql)
            .unwrap_or_else(|e| panic!("{sql} on {node:?} failed: {e}"))
    }

    /// Polls `sql` on `node` until it answers `expected`, for at most `timeout`; the time it
    /// took.
    ///
    /// # Panics
    ///
    /// If the answer does not come in time.
    pub fn wait_for(&self, node: Node, sql: &str, expected: &str, timeout: Duration) -> Duration {
        let began = Instant::now();
        let mut last = Err(String::from("not asked"));
        while began.elapsed() < timeout {
            last = self.sql(node, sql);
            if last.as_deref() == Ok(expected) {
                return began.elapsed();
            }
            thread::sleep(POLL);
        }
        panic!(
            "{sql} on {node:?}: wanted {expected:?} within {timeout:?}, last {last:?}; its log \
             ends:\n{}",
            self.log_tail(node)
        )
    }

    /// The last few kilobytes of `node`'s server log (`<datadir>.log`).
    pub fn log_tail(&self, node: Node) -> String {
        let mut path = self.datadir(node).into_os_string();
        path.push(".log");
        match fs::read(&path) {
            Ok(bytes) => {
                let start = bytes.len().saturating_sub(LOG_TAIL);
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Waits until `node` is in recovery and its WAL receiver streams.
    ///
    /// # Panics
    ///
    /// If it does not within [`START_TIMEOUT`].
    pub fn wait_streaming(&self, node: Node) -> Duration {
        self.wait_for(node, STREAMING_SQL, "true|streaming", START_TIMEOUT)
    }

    /// Whether `node` is in recovery (a standby); `None` when it does not answer.
    pub fn in_recovery(&self, node: Node) -> Option<bool> {
        match self.sql(node, "SELECT pg_is_in_recovery()").as_deref() {
            Ok("t") => Some(true),
            Ok("f") => Some(false),
            _ => None,
        }
    }

    /// The PID of `node`'s running postmaster, if one runs.
    pub fn postmaster_pid(&self, node: Node) -> Option<Pid> {
        live_postmaster(&self.datadir(node))
    }

    /// Starts `node` with `pg_ctl start -w` (standby if `standby.signal` is there).
    ///
    /// # Panics
    ///
    /// If it does not start within [`START_TIMEOUT`].
    pub fn start_node(&self, node: Node) {
        let dir = self.datadir(node);
        let mut log = dir.clone().into_os_string();
        log.push(".log");
        self.as_postgres(
            "pg_ctl",
            &[
                "start",
                "-D",
                &dir.to_string_lossy(),
                "-w",
                "-t",
                &START_TIMEOUT.as_secs().to_string(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &format!("-p {}", self.port(node)),
            ],
            START_TIMEOUT + POLL,
        );
    }

    /// Stops `node` cleanly (`pg_ctl stop -m fast`).
    ///
    /// # Panics
    ///
    /// If it does not stop within [`STOP_TIMEOUT`].
    pub fn stop_node(&self, node: Node) {
        let dir = self.datadir(node);
        self.as_postgres(
            "pg_ctl",
            &[
                "stop",
                "-D",
                &dir.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "-t",
                &STOP_TIMEOUT.as_secs().to_string(),
            ],
            STOP_TIMEOUT + POLL,
        );
    }

    /// Crashes `node`: `SIGKILL` to its postmaster and every child at once, as a power loss
    /// would, then waits (bounded) until they are gone. Returns the postmaster's PID.
    ///
    /// # Panics
    ///
    /// If no postmaster runs there, or the processes survive [`STOP_TIMEOUT`].
    pub fn crash(&self, node: Node) -> Pid {
        let pid = self
            .postmaster_pid(node)
            .unwrap_or_else(|| panic!("{node:?} has no running postmaster to crash"));
        let children = kill_tree(pid, Signal::SIGKILL);
        reap(pid);
        for child in children {
            reap(child);
        }
        assert!(
            wait_gone(pid, STOP_TIMEOUT),
            "{node:?}'s postmaster {pid} survived SIGKILL"
        );
        pid
    }

    /// Sends `signal` to `node`'s postmaster only, by PID; the postmaster's PID.
    ///
    /// # Panics
    ///
    /// If no postmaster runs there.
    pub fn signal(&self, node: Node, signal: Signal) -> Pid {
        let pid = self
            .postmaster_pid(node)
            .unwrap_or_else(|| panic!("{node:?} has no running postmaster"));
        let _ = kill(pid, signal);
        pid
    }

    /// Data directories moved aside by a reclone of `node` (`<datadir>.wk-aside-*`).
    pub fn moved_aside(&self, node: Node) -> Vec<PathBuf> {
        let prefix = format!("{}.wk-aside-", node.dir_name());
        let mut dirs: Vec<PathBuf> = fs::read_dir(self.root.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// Runs a PostgreSQL program as `postgres`; panics with its output when it fails.
    fn as_postgres(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(self.bindir.join(program))
        .args(args)
        .current_dir("/")
        .env("PGPASSFILE", self.password_file())
        .env("LC_ALL", "C");
        let out =
            run_bounded(&mut cmd, timeout).unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = fs::read_dir(self.root.path())
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        let pids: Vec<Pid> = dirs.iter().filter_map(|d| live_postmaster(d)).collect();
        for &pid in &pids {
            // Immediate shutdown: the postmaster stops its children and removes its files.
            let _ = kill(pid, Signal::SIGQUIT);
        }
        for &pid in &pids {
            if !wait_gone(pid, STOP_TIMEOUT / 6) {
                for child in kill_tree(pid, Signal::SIGKILL) {
                    reap(child);
                }
            }
            reap(pid);
        }
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`, or `WK_PG_BINDIR`.
pub fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WK_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
///
/// If no TCP socket can be bound on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a TCP socket on 127.0.0.1: {e}"))
}

/// The live postmaster of `datadir`: the PID in `postmaster.pid`, if that process works in
/// `datadir` (a stale file, a reused PID or a zombie do not count).
pub fn live_postmaster(datadir: &Path) -> Option<Pid> {
    let text = fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let dir = fs::canonicalize(datadir).unwrap_or_else(|_| datadir.to_owned());
    (pid > 0 && cwd == dir).then(|| Pid::from_raw(pid))
}

/// Whether `pid` runs (not a zombie).
pub fn alive(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid` and its direct children (a postmaster's backends and workers);
/// the children.
fn kill_tree(pid: Pid, signal: Signal) -> Vec<Pid> {
    let children = children_of(pid);
    let _ = kill(pid, signal);
    for &child in &children {
        let _ = kill(child, signal);
    }
    children
}

/// Reaps `pid` once it has exited, if this process adopted it (see [`PgCluster::start`]);
/// bounded by [`STOP_TIMEOUT`].
fn reap(pid: Pid) {
    let began = Instant::now();
    while began.elapsed() < STOP_TIMEOUT {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => thread::sleep(Duration::from_millis(5)),
            // Reaped, or not our child (a real init reaps it).
            _ => return,
        }
    }
}

fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// Waits until `pid` no longer runs, for at most `timeout`.
fn wait_gone(pid: Pid, timeout: Duration) -> bool {
    let began = Instant::now();
    while began.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

/// Bytes of a server log quoted when a wait fails.
const LOG_TAIL: usize = 4096;
const POLL: Duration = Duration::from_millis(50);
const STREAMING_SQL: &str = "SELECT pg_is_in_recovery()::text || '|' || \
                             coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')";
