//! The PostgreSQL server that holds the Bacula Catalog, as a [`Resource`]: starting it means
//! *becoming the primary*.
//!
//! Two nodes each keep a copy of the Catalog: the holder runs the primary, the other a
//! streaming hot standby. Taking the group over promotes the local standby; giving it back
//! stops the local server. The old primary, when it returns, must never serve again as a
//! primary: its timeline has forked from the promoted peer's, so it rejoins as a standby
//! ([`PgsqlResource::rejoin_as_standby`]) by `pg_rewind`, by a fresh `pg_basebackup`, or by an
//! operator.
//!
//! Everything goes through PostgreSQL's own programs in `bindir` (`pg_ctl`, `psql`,
//! `pg_controldata`, `pg_rewind`, `pg_basebackup`, `postgres --single`), run as the configured
//! OS user through `setpriv` (PostgreSQL refuses to run as root). `psql` keeps the agent free of
//! a database client library for the handful of queries it needs.
//!
//! # Contract
//!
//! - **Deadline.** Every child runs in its own process group and is killed with it at the
//!   deadline ([`ResourceErrorKind::Timeout`]). `pg_ctl start` daemonizes the postmaster into
//!   its own session, so a start that runs out of time also shuts down (immediate mode, by the
//!   PID in `postmaster.pid`) the server it launched: nothing is left half-running.
//! - **Start = primary.** `start` returns `Ok` only once `pg_is_in_recovery()` is false *and*
//!   a write (`txid_current()`, which a standby refuses) succeeds. A stopped standby data
//!   directory (`standby.signal`) is started as a standby first and then promoted; a stopped
//!   primary data directory is started as it is. Starting a writable primary succeeds at once.
//! - **Monitor.** [`ResourceState::Running`] only for a primary that accepts connections. A
//!   running *standby* is [`ResourceState::Stopped`]: it does not hold the Catalog role, and
//!   the group's answer to it (`start`) is exactly the promotion it needs. A server that does
//!   not accept connections is `Stopped` when there is no `postmaster.pid`, and
//!   [`ResourceErrorKind::Failed`] otherwise (crashed, or stuck starting or stopping).
//! - **Stop.** `pg_ctl stop -m fast`, then `-m immediate` if fast did not finish in its share
//!   of the deadline; the fallback is logged and counted. A server already stopped is `Ok`.
//! - **Never a second primary.** Once the caller has called
//!   [`PgsqlResource::rejoin_as_standby`] (the peer was promoted), `start` refuses to start
//!   this data directory until it has become a standby again. The flag lives in memory: the
//!   agent must call `rejoin_as_standby` before any `start` after learning of the promotion.
//! - **Truthful errors.** Missing server programs are [`ResourceErrorKind::NotInstalled`], a
//!   refused password or `pg_hba.conf` entry [`ResourceErrorKind::Permission`], a data
//!   directory that is not one [`ResourceErrorKind::NotConfigured`]; failures carry the
//!   programs' own words and the tail of the server log. A moved-aside data directory is never
//!   deleted.
//!
//! The server log of starts done here goes to `<datadir>.log`, next to the data directory and
//! not inside it, because `pg_rewind` and `pg_basebackup` replace the directory's contents.
//! The server's port is passed on the command line (`-p`) for the same reason: a cloned or
//! rewound directory carries the peer's configuration files.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;
use tokio::time::Instant;

use super::{Resource, ResourceError, ResourceErrorKind, ResourceFuture, ResourceState};

/// How a returning old primary becomes a standby of the promoted peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejoinPolicy {
    /// `pg_rewind` from the peer (needs data checksums or `wal_log_hints=on`, and
    /// `full_page_writes=on`); falls back to [`RejoinPolicy::Reclone`] when the rewind cannot
    /// be done.
    Rewind,
    /// Move the data directory aside and copy the peer with `pg_basebackup`.
    Reclone,
    /// Stop the server if it runs and report the commands an operator must run.
    Manual,
}

/// Where the Catalog's PostgreSQL lives on this node and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgsqlParams {
    /// Directory of the server programs (`/usr/lib/postgresql/15/bin`).
    pub bindir: PathBuf,
    /// The data directory (absolute), holding `postgresql.conf` or reached by it.
    pub datadir: PathBuf,
    /// The server's port (TCP and Unix socket name); passed to the server when started here.
    pub port: u16,
    /// Where `psql` connects: a Unix socket directory or `127.0.0.1`.
    pub host: String,
    /// OS user the programs run as (through `setpriv`); `None` runs them as the agent's user.
    pub user: Option<String>,
    /// Database role for the checks (superuser, or one allowed `pg_promote`); see
    /// [`DEFAULT_SUPERUSER`].
    pub superuser: String,
    /// libpq password file (`PGPASSFILE`) for the checks, `pg_rewind` and `pg_basebackup`.
    pub password_file: Option<PathBuf>,
    /// How this node streams from the peer when it is the standby; also the source of
    /// `pg_rewind` (a role with `REPLICATION` and the `pg_rewind` function grants) and
    /// `pg_basebackup`. Without it this node cannot rejoin.
    pub primary_conninfo: Option<String>,
    /// What [`PgsqlResource::rejoin_as_standby`] does.
    pub rejoin: RejoinPolicy,
}

/// Counters of one server, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct PgsqlMetrics {
    /// Programs run (`psql`, `pg_ctl`, ...).
    pub runs: AtomicU64,
    /// Actions that returned an error.
    pub errors: AtomicU64,
    /// Programs killed at a deadline.
    pub timeouts: AtomicU64,
    /// Promotions requested.
    pub promotions: AtomicU64,
    /// Stops that needed immediate mode after fast mode did not finish.
    pub immediate_stops: AtomicU64,
    /// Rejoins that completed (the server streams from the peer).
    pub rejoins: AtomicU64,
}

/// The Catalog's PostgreSQL server; see the module docs.
#[derive(Debug)]
pub struct PgsqlResource {
    name: String,
    params: PgsqlParams,
    metrics: Arc<PgsqlMetrics>,
    /// Set when the caller said the peer was promoted; cleared once this node is a standby.
    rejoin_required: bool,
    /// From the promotion request to the first successful write, of the last `start`.
    last_promotion: Option<Duration>,
    /// This server was promoted by the last `start`: its timeline is one the peer may not
    /// have followed yet.
    promoted: bool,
    /// Raised by the runtime when it needs this executor for a start or stop: a rejoin waiting
    /// for streaming gives up, leaving the server as it is.
    interrupt: Arc<std::sync::atomic::AtomicBool>,
}

/// What [`PgsqlResource::rejoin_as_standby`] did, with timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinReport {
    /// The policy configured.
    pub policy: RejoinPolicy,
    /// What happened in the end.
    pub outcome: RejoinOutcome,
    /// How a running server was stopped first, if one ran.
    pub stopped: Option<StopMode>,
    /// Single-user crash recovery, when the server had not shut down cleanly.
    pub crash_recovery: Option<Duration>,
    /// The `pg_rewind` run.
    pub rewind: Option<Duration>,
    /// The `pg_basebackup` run.
    pub clone: Option<Duration>,
    /// From `pg_ctl start` to `pg_stat_wal_receiver` reporting `streaming`.
    pub start_to_streaming: Option<Duration>,
    /// Why a rewind fell back to a reclone.
    pub fallback_reason: Option<String>,
    /// The whole call.
    pub total: Duration,
}

/// The end state of a rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejoinOutcome {
    /// It already streamed from the peer as a standby; nothing was changed.
    AlreadyStandby,
    /// It was a standby that had stopped or crashed: started again as it was; now streaming.
    Restarted,
    /// Rewound with `pg_rewind`; now streaming.
    Rewound,
    /// Copied afresh with `pg_basebackup`; now streaming.
    Recloned {
        /// Where the previous data directory was moved (kept, never deleted).
        old_datadir: PathBuf,
    },
    /// [`RejoinPolicy::Manual`]: the server is stopped and an operator must run `command`.
    ManualRequired {
        /// The commands to run, in order.
        command: String,
    },
}

/// How a server was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// `pg_ctl stop -m fast`: clean shutdown checkpoint.
    Fast,
    /// `pg_ctl stop -m immediate` after fast did not finish: the next start runs crash
    /// recovery.
    Immediate,
}

impl PgsqlResource {
    /// An executor for the server in `params`, named `name` in the configuration.
    ///
    /// Fails with [`ResourceErrorKind::NotInstalled`] when `pg_ctl`, `postgres` or `psql` is
    /// missing from `bindir`, and [`ResourceErrorKind::Args`] for a relative data directory, an
    /// empty host or role, or port 0.
    pub fn new(name: impl Into<String>, params: PgsqlParams) -> Result<Self, ResourceError> {
        let name = name.into();
        let args = |m: String| ResourceError::new(ResourceErrorKind::Args, &name, "new", m);
        if !params.datadir.is_absolute() {
            return Err(args(format!(
                "data directory {} is not an absolute path",
                params.datadir.display()
            )));
        }
        if params.port == 0 {
            return Err(args("port 0".to_owned()));
        }
        if params.host.is_empty() || params.superuser.is_empty() {
            return Err(args("empty host or superuser".to_owned()));
        }
        for program in [PG_CTL, POSTGRES, PSQL] {
            let path = params.bindir.join(program);
            let executable = std::fs::metadata(&path)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if !executable {
                return Err(ResourceError::new(
                    ResourceErrorKind::NotInstalled,
                    &name,
                    "new",
                    format!("{} is missing", path.display()),
                ));
            }
        }
        Ok(Self {
            name,
            params,
            metrics: Arc::default(),
            rejoin_required: false,
            last_promotion: None,
            promoted: false,
            interrupt: Arc::default(),
        })
    }

    /// The counters, shared.
    pub fn metrics(&self) -> Arc<PgsqlMetrics> {
        Arc::clone(&self.metrics)
    }

    /// From the promotion request to the first successful write, of the last `start` that
    /// promoted.
    pub fn last_promotion(&self) -> Option<Duration> {
        self.last_promotion
    }

    /// Whether `start` refuses this data directory until it has rejoined as a standby.
    pub fn rejoin_required(&self) -> bool {
        self.rejoin_required
    }

    /// Makes this node (the old primary, back after the peer was promoted) a streaming standby
    /// of the peer, as [`PgsqlParams::rejoin`] says, and returns once it streams.
    ///
    /// From this call on, `start` refuses to run this data directory as a primary until it is
    /// a standby again. A server running here is stopped first, whatever the policy. Fails with
    /// [`ResourceErrorKind::NotConfigured`] without [`PgsqlParams::primary_conninfo`].
    pub async fn rejoin_as_standby(
        &mut self,
        deadline: Instant,
    ) -> Result<RejoinReport, ResourceError> {
        self.rejoin_required = true;
        let result = self.do_rejoin(deadline).await;
        if let Ok(report) = &result {
            if !matches!(report.outcome, RejoinOutcome::ManualRequired { .. }) {
                self.rejoin_required = false;
                self.metrics.rejoins.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(resource = %self.name, outcome = ?report.outcome,
                total_ms = report.total.as_millis(), "catalog rejoined as standby");
        }
        self.logged("rejoin", result)
    }

    async fn do_rejoin(&mut self, deadline: Instant) -> Result<RejoinReport, ResourceError> {
        const ACTION: &str = "rejoin";
        let began = Instant::now();
        let conninfo = self.params.primary_conninfo.clone().ok_or_else(|| {
            self.error(
                ResourceErrorKind::NotConfigured,
                ACTION,
                "no primary_conninfo: this node cannot follow the peer".to_owned(),
            )
        })?;
        let mut report = RejoinReport {
            policy: self.params.rejoin,
            outcome: RejoinOutcome::AlreadyStandby,
            stopped: None,
            crash_recovery: None,
            rewind: None,
            clone: None,
            start_to_streaming: None,
            fallback_reason: None,
            total: Duration::ZERO,
        };
        if self.standby_signal().exists() && self.live_postmaster().is_some() {
            if let Ok(Ok(Follow::Streaming(_))) = self.follow_state(ACTION, deadline).await {
                report.total = began.elapsed();
                return Ok(report);
            }
        }
        if self.live_postmaster().is_some() {
            report.stopped = Some(self.stop_server(ACTION, deadline).await?);
        } else if self.standby_signal().exists() && self.params.rejoin != RejoinPolicy::Manual {
            // A standby that went down (power cut, crash) never took writes of its own: it
            // has nothing to rewind and only needs to start and catch up. Single-user crash
            // recovery cannot replay a standby, so the rewind path would end in a fresh copy,
            // which for a large Catalog takes hours.
            if let Some(report) = self.restart_standby(&conninfo, deadline, began).await? {
                return Ok(report);
            }
        }
        match self.params.rejoin {
            RejoinPolicy::Manual => {
                report.outcome = RejoinOutcome::ManualRequired {
                    command: self.manual_command(&conninfo),
                };
                report.total = began.elapsed();
                return Ok(report);
            }
            RejoinPolicy::Rewind => match self.rewind(&conninfo, deadline, &mut report).await {
                Ok(()) => report.outcome = RejoinOutcome::Rewound,
                Err(e) if e.kind == ResourceErrorKind::Timeout => return Err(e),
                Err(e) => {
                    tracing::warn!(resource = %self.name, error = %e,
                        "rewind failed; falling back to a fresh copy of the primary");
                    let old_datadir = self
                        .reclone(&conninfo, deadline, &mut report)
                        .await
                        .map_err(|r| ResourceError {
                            message: format!(
                                "{}; after the rewind failed: {}",
                                r.message, e.message
                            ),
                            ..r
                        })?;
                    report.fallback_reason = Some(e.message);
                    report.outcome = RejoinOutcome::Recloned { old_datadir };
                }
            },
            RejoinPolicy::Reclone => {
                let old_datadir = self.reclone(&conninfo, deadline, &mut report).await?;
                report.outcome = RejoinOutcome::Recloned { old_datadir };
            }
        }
        self.write_standby_config(ACTION, &conninfo)?;
        let started = Instant::now();
        self.pg_ctl_start(ACTION, deadline).await?;
        if let Err(e) = self.wait_streaming(&conninfo, deadline).await {
            if self.interrupted() {
                // A standby in recovery is what a start promotes: leave it running.
                return Err(e);
            }
            let stopped = self.kill_postmaster().await;
            return Err(with_cleanup(e, stopped));
        }
        report.start_to_streaming = Some(started.elapsed());
        report.total = began.elapsed();
        Ok(report)
    }

    /// Starts a stopped or crashed standby as it is and waits for it to stream. `None` when it
    /// does not stream within [`STANDBY_RESTART_LIMIT`] (the server is stopped again and the
    /// rejoin policy takes over); an error only for the executor's own failures.
    async fn restart_standby(
        &self,
        conninfo: &str,
        deadline: Instant,
        began: Instant,
    ) -> Result<Option<RejoinReport>, ResourceError> {
        const ACTION: &str = "rejoin";
        let state = self.cluster_state(deadline).await?;
        if !matches!(
            state.as_str(),
            "in archive recovery" | "shut down in recovery"
        ) {
            return Ok(None);
        }
        self.write_standby_config(ACTION, conninfo)?;
        self.remove_stale_pid_file(ACTION)?;
        let started = Instant::now();
        let limit = deadline.min(started + STANDBY_RESTART_LIMIT);
        let streaming = match self.pg_ctl_start(ACTION, limit).await {
            Ok(()) => self.wait_streaming(conninfo, limit).await,
            Err(e) => Err(e),
        };
        match streaming {
            Ok(()) => {
                tracing::info!(resource = %self.name, state = %state,
                    start_to_streaming_ms = started.elapsed().as_millis(),
                    "standby restarted and streaming");
                Ok(Some(RejoinReport {
                    policy: self.params.rejoin,
                    outcome: RejoinOutcome::Restarted,
                    stopped: None,
                    crash_recovery: None,
                    rewind: None,
                    clone: None,
                    start_to_streaming: Some(started.elapsed()),
                    fallback_reason: None,
                    total: began.elapsed(),
                }))
            }
            Err(e) if self.interrupted() => Err(e),
            Err(e) => {
                let _ = self.kill_postmaster().await;
                tracing::warn!(resource = %self.name, error = %e,
                    "the standby did not stream after a restart; rejoining by policy");
                Ok(None)
            }
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    async fn do_start(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        const ACTION: &str = "start";
        if !self.params.datadir.join("PG_VERSION").is_file() {
            return Err(self.error(
                ResourceErrorKind::NotConfigured,
                ACTION,
                format!(
                    "{} is not a PostgreSQL data directory",
                    self.params.datadir.display()
                ),
            ));
        }
        let mut started_here = false;
        let result = self.start_inner(deadline, &mut started_here).await;
        match result {
            Err(e) if started_here => {
                let stopped = self.kill_postmaster().await;
                Err(with_cleanup(e, stopped))
            }
            other => other,
        }
    }

    async fn start_inner(
        &mut self,
        deadline: Instant,
        started_here: &mut bool,
    ) -> Result<(), ResourceError> {
        const ACTION: &str = "start";
        let mut promoted_at: Option<Instant> = None;
        let mut pause = FIRST_POLL;
        let mut last;
        // Bounded by the deadline: every round runs bounded programs or sleeps until it.
        loop {
            match self.role(ACTION, deadline).await? {
                Ok(Role::Primary) => match self.query(ACTION, WRITE_CHECK, deadline).await? {
                    Ok(_) => {
                        if let Some(at) = promoted_at {
                            self.last_promotion = Some(at.elapsed());
                            tracing::info!(resource = %self.name,
                                promote_to_writable_ms = at.elapsed().as_millis(),
                                "catalog promoted and writable");
                        }
                        return Ok(());
                    }
                    Err(SqlError::Auth(m)) => return Err(self.auth_error(ACTION, &m)),
                    Err(e) => last = format!("primary not writable yet: {}", e.message()),
                },
                Ok(Role::Standby) => {
                    if promoted_at.is_none() {
                        self.refuse_diverged(ACTION)?;
                        self.promote(deadline).await?;
                        self.promoted = true;
                        promoted_at = Some(Instant::now());
                    }
                    last = "promotion requested; still in recovery".to_owned();
                }
                Err(SqlError::Auth(m)) => return Err(self.auth_error(ACTION, &m)),
                Err(SqlError::Query(m)) => {
                    return Err(self.error(ResourceErrorKind::Failed, ACTION, m))
                }
                Err(SqlError::Unreachable(m) | SqlError::NotReady(m)) => {
                    if !*started_here && self.live_postmaster().is_none() {
                        self.refuse_diverged(ACTION)?;
                        *started_here = true;
                        self.pg_ctl_start(ACTION, deadline).await?;
                        continue;
                    }
                    last = m;
                }
            }
            let next = Instant::now() + pause;
            pause = (pause * 2).min(MAX_POLL);
            if next >= deadline {
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(self.error(
                    ResourceErrorKind::Timeout,
                    ACTION,
                    format!("not a writable primary by the deadline; last: {last}"),
                ));
            }
            tokio::time::sleep_until(next).await;
        }
    }

    async fn do_stop(&mut self, deadline: Instant) -> Result<(), ResourceError> {
        if self.live_postmaster().is_none() {
            self.promoted = false;
            return Ok(());
        }
        if std::mem::take(&mut self.promoted) {
            self.wait_for_follower(deadline).await;
        }
        self.stop_server("stop", deadline).await.map(|_| ())
    }

    /// Before a primary this node promoted stops, gives the peer a moment to stream from it:
    /// a peer that has not rejoined this timeline can rewind onto it only while it runs, and
    /// once it is stopped the peer has no primary to follow and may not start its own copy
    /// (it diverged), so neither node could take the group. This happens when a takeover is
    /// given up right after the promotion (a later resource would not start). Returns at once
    /// when a standby already streams everything written here and has for two seconds (long
    /// enough for its rejoin, which polls its own receiver, to see it stream); waits at most
    /// [`FOLLOWER_WAIT`] (or half of what is left before the deadline) otherwise, and stops
    /// anyway when none comes: a holder stopping with its peer down pays that wait.
    async fn wait_for_follower(&self, deadline: Instant) {
        const ACTION: &str = "stop";
        let began = Instant::now();
        let left = deadline.saturating_duration_since(began);
        let until = began + FOLLOWER_WAIT.min(left / 2);
        loop {
            match self
                .query(
                    ACTION,
                    FOLLOWER_CHECK,
                    until.max(Instant::now() + FIRST_POLL),
                )
                .await
            {
                Ok(Ok(n)) if n.trim().parse::<u32>().is_ok_and(|n| n > 0) => {
                    if began.elapsed() > MAX_POLL {
                        tracing::info!(resource = %self.name, waited_ms = began.elapsed().as_millis(),
                            "a standby streams this promoted primary's timeline; stopping it");
                    }
                    return;
                }
                // A primary that no longer answers has nothing to wait for.
                Ok(Err(SqlError::Unreachable(_) | SqlError::NotReady(_))) | Err(_) => return,
                Ok(_) => {}
            }
            if Instant::now() + MAX_POLL >= until {
                tracing::warn!(resource = %self.name, waited_ms = began.elapsed().as_millis(),
                    "no standby streamed this promoted primary's timeline; stopping it anyway: \
                     a peer that did not follow it must rejoin it before it takes the Catalog");
                return;
            }
            tokio::time::sleep(MAX_POLL).await;
        }
    }

    async fn do_monitor(&mut self, deadline: Instant) -> Result<ResourceState, ResourceError> {
        const ACTION: &str = "monitor";
        let mut role = self.role(ACTION, deadline).await?;
        // A live postmaster that refused one connection (its connection slots full for a
        // moment, a loaded host) is asked again before the Catalog is called failed: a failed
        // monitor restarts it and everything after it in the group.
        for _ in 1..MONITOR_ATTEMPTS {
            let transient = matches!(role, Err(SqlError::Unreachable(_) | SqlError::NotReady(_)))
                && self.live_postmaster().is_some();
            if !transient || Instant::now() + MONITOR_RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(MONITOR_RETRY_PAUSE).await;
            role = self.role(ACTION, deadline).await?;
        }
        match role {
            Ok(Role::Primary) => Ok(ResourceState::Running),
            // A standby does not hold the Catalog role; see the module docs.
            Ok(Role::Standby) => Ok(ResourceState::Stopped),
            Err(SqlError::Auth(m)) => Err(self.auth_error(ACTION, &m)),
            Err(SqlError::Query(m)) => Err(self.error(ResourceErrorKind::Failed, ACTION, m)),
            Err(SqlError::Unreachable(m) | SqlError::NotReady(m)) => {
                if !self.pid_file().exists() {
                    return Ok(ResourceState::Stopped);
                }
                let process = match self.live_postmaster() {
                    Some(pid) => format!("postmaster {pid} is alive"),
                    None => "no postmaster runs (crashed)".to_owned(),
                };
                Err(self.error(
                    ResourceErrorKind::Failed,
                    ACTION,
                    format!("postmaster.pid present and {process}, but no connection: {m}"),
                ))
            }
        }
    }

    /// Refuses to run a data directory as a primary once the peer was promoted.
    fn refuse_diverged(&self, action: &str) -> Result<(), ResourceError> {
        if self.rejoin_required && !self.standby_signal().exists() {
            return Err(self.error(
                ResourceErrorKind::Failed,
                action,
                "the peer was promoted and this data directory has not rejoined as its standby; \
                 refusing to start it as a second primary"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    async fn promote(&self, deadline: Instant) -> Result<(), ResourceError> {
        self.metrics.promotions.fetch_add(1, Ordering::Relaxed);
        let args = [
            os("promote"),
            os("-D"),
            self.params.datadir.clone().into_os_string(),
            os("-W"),
        ];
        let run = self.run("start", PG_CTL, &args, deadline).await?;
        if run.code == Some(0) || run.stderr.contains("not in standby mode") {
            // "Not in standby mode": the promotion already finished; the poll will see it.
            return Ok(());
        }
        Err(self.error(
            ResourceErrorKind::Failed,
            "start",
            format!("pg_ctl promote failed: {}", run.words()),
        ))
    }

    /// `pg_ctl start -w`, as a standby when `standby.signal` is there; bounded by `deadline`.
    async fn pg_ctl_start(&self, action: &str, deadline: Instant) -> Result<(), ResourceError> {
        self.remove_stale_pid_file(action)?;
        let log = self.log_path();
        self.prepare_log(action, &log)?;
        let args = [
            os("start"),
            os("-D"),
            self.params.datadir.clone().into_os_string(),
            os("-w"),
            os("-t"),
            os(&whole_secs(deadline).to_string()),
            os("-l"),
            log.clone().into_os_string(),
            os("-o"),
            os(&format!("-p {}", self.params.port)),
        ];
        let run = self.run(action, PG_CTL, &args, deadline).await?;
        if run.code == Some(0) {
            return Ok(());
        }
        Err(self.error(
            ResourceErrorKind::Failed,
            action,
            format!(
                "pg_ctl start failed: {}; server log {}: {}",
                run.words(),
                log.display(),
                log_tail(&log)
            ),
        ))
    }

    /// Stops a running server: fast mode in most of the time left, immediate mode after it.
    async fn stop_server(
        &self,
        action: &str,
        deadline: Instant,
    ) -> Result<StopMode, ResourceError> {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let fast_deadline = now + left - (left / 3).min(IMMEDIATE_RESERVE);
        // pg_ctl returns once postmaster.pid is gone, a moment before the process itself.
        let old = self.live_postmaster();
        let fast = self.pg_ctl_stop(action, "fast", fast_deadline).await;
        let fast_words = match fast {
            Ok(()) if self.live_postmaster().is_none() && exited(old, fast_deadline).await => {
                return Ok(StopMode::Fast)
            }
            Ok(()) => "pg_ctl stop -m fast returned but the postmaster still runs".to_owned(),
            Err(e) => e.message,
        };
        tracing::warn!(resource = %self.name, action, reason = %fast_words,
            "fast shutdown did not finish; immediate shutdown");
        self.metrics.immediate_stops.fetch_add(1, Ordering::Relaxed);
        match self.pg_ctl_stop(action, "immediate", deadline).await {
            Ok(()) if self.live_postmaster().is_none() && exited(old, deadline).await => {
                Ok(StopMode::Immediate)
            }
            Ok(()) => Err(self.error(
                ResourceErrorKind::Failed,
                action,
                format!("{fast_words}; after immediate shutdown the postmaster still runs"),
            )),
            Err(e) => Err(self.error(
                e.kind,
                action,
                format!("{fast_words}; then immediate shutdown: {}", e.message),
            )),
        }
    }

    async fn pg_ctl_stop(
        &self,
        action: &str,
        mode: &str,
        deadline: Instant,
    ) -> Result<(), ResourceError> {
        let args = [
            os("stop"),
            os("-D"),
            self.params.datadir.clone().into_os_string(),
            os("-m"),
            os(mode),
            os("-w"),
            os("-t"),
            os(&whole_secs(deadline).to_string()),
        ];
        let run = self.run(action, PG_CTL, &args, deadline).await?;
        if run.code == Some(0) || self.live_postmaster().is_none() {
            return Ok(());
        }
        Err(self.error(
            ResourceErrorKind::Failed,
            action,
            format!("pg_ctl stop -m {mode} failed: {}", run.words()),
        ))
    }

    /// Shuts down, by the PID in `postmaster.pid`, a server this executor launched and must not
    /// leave behind: `SIGQUIT` (immediate shutdown), then `SIGKILL`. Returns whether it is gone.
    ///
    /// Runs past the caller's deadline by at most [`CLEANUP_GRACE`]: leaving the server running
    /// would break the contract worse than returning late.
    async fn kill_postmaster(&self) -> bool {
        let began = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        let mut quit_sent = false;
        loop {
            match self.live_postmaster() {
                Some(pid) => {
                    quiet_since = None;
                    let signal = if quit_sent && began.elapsed() > KILL_AFTER {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGQUIT
                    };
                    if !quit_sent || signal == Signal::SIGKILL {
                        let _ = kill(pid, signal);
                        quit_sent = true;
                    }
                }
                // pg_ctl may have been killed just before its child wrote postmaster.pid: the
                // directory must stay quiet for a moment before it counts as stopped.
                None => {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= PID_FILE_SETTLE {
                        return true;
                    }
                }
            }
            if began.elapsed() >= CLEANUP_GRACE {
                return self.live_postmaster().is_none();
            }
            tokio::time::sleep(CLEANUP_POLL).await;
        }
    }

    /// Crash recovery in single-user mode when the cluster did not shut down cleanly, so that
    /// `pg_rewind` accepts it. Returns the time it took, or `None` when it was clean.
    async fn ensure_clean_shutdown(
        &self,
        deadline: Instant,
    ) -> Result<Option<Duration>, ResourceError> {
        const ACTION: &str = "rejoin";
        let state = self.cluster_state(deadline).await?;
        if is_clean_shutdown(&state) {
            return Ok(None);
        }
        self.remove_stale_pid_file(ACTION)?;
        let began = Instant::now();
        tracing::info!(resource = %self.name, state = %state,
            "not shut down cleanly; crash recovery in single-user mode");
        let args = [
            os("--single"),
            os("-F"),
            os("-D"),
            self.params.datadir.clone().into_os_string(),
            os("template1"),
        ];
        let run = self.run(ACTION, POSTGRES, &args, deadline).await?;
        let after = self.cluster_state(deadline).await?;
        if !is_clean_shutdown(&after) {
            return Err(self.error(
                ResourceErrorKind::Failed,
                ACTION,
                format!(
                    "single-user crash recovery left the cluster \"{after}\" (was \"{state}\"): {}",
                    run.words()
                ),
            ));
        }
        Ok(Some(began.elapsed()))
    }

    async fn rewind(
        &self,
        conninfo: &str,
        deadline: Instant,
        report: &mut RejoinReport,
    ) -> Result<(), ResourceError> {
        const ACTION: &str = "rejoin";
        report.crash_recovery = self.ensure_clean_shutdown(deadline).await?;
        // Before PostgreSQL 16 a promoted server's control file names its new timeline only
        // after its first checkpoint; until then pg_rewind finds no divergence and does nothing.
        match self
            .query_at(ACTION, Some(conninfo), "CHECKPOINT", deadline)
            .await?
        {
            Ok(_) => {}
            Err(SqlError::Auth(m)) => return Err(self.auth_error(ACTION, &m)),
            Err(e) => tracing::warn!(resource = %self.name, error = %e.message(),
                "CHECKPOINT on the rewind source failed (its role needs pg_checkpoint); \
                 pg_rewind may miss a fresh promotion"),
        }
        let began = Instant::now();
        let mut target = OsString::from("--target-pgdata=");
        target.push(&self.params.datadir);
        let args = [
            target,
            os(&format!("--source-server={conninfo}")),
            os("--write-recovery-conf"),
        ];
        let run = self.run(ACTION, PG_REWIND, &args, deadline).await?;
        if run.code != Some(0) {
            let kind = if is_auth_failure(&run.stderr) {
                ResourceErrorKind::Permission
            } else {
                ResourceErrorKind::Failed
            };
            return Err(self.error(kind, ACTION, format!("pg_rewind failed: {}", run.words())));
        }
        report.rewind = Some(began.elapsed());
        tracing::info!(resource = %self.name, rewind_ms = began.elapsed().as_millis(),
            "pg_rewind done");
        Ok(())
    }

    /// Copies the primary into a fresh sibling directory, and only once that succeeded moves
    /// the data directory aside and the copy into its place. Returns where the old directory
    /// went; a failed copy leaves the data directory untouched.
    async fn reclone(
        &self,
        conninfo: &str,
        deadline: Instant,
        report: &mut RejoinReport,
    ) -> Result<PathBuf, ResourceError> {
        const ACTION: &str = "rejoin";
        let datadir = &self.params.datadir;
        let io = |what: &str, path: &Path, e: std::io::Error| {
            self.error(
                ResourceErrorKind::Failed,
                ACTION,
                format!("{what} {}: {e}", path.display()),
            )
        };
        let meta = std::fs::metadata(datadir).map_err(|e| io("cannot read", datadir, e))?;
        let clone = sibling_path(datadir, "wk-clone");
        std::fs::create_dir(&clone).map_err(|e| io("cannot create", &clone, e))?;
        std::os::unix::fs::chown(&clone, Some(meta.uid()), Some(meta.gid()))
            .and_then(|()| std::fs::set_permissions(&clone, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| io("cannot give to the data directory's owner", &clone, e))?;
        let began = Instant::now();
        let args = [
            os("-D"),
            clone.clone().into_os_string(),
            os("-R"),
            os("-X"),
            os("stream"),
            os("-c"),
            os("fast"),
            os("-w"),
            os("-d"),
            os(conninfo),
        ];
        let result = self.run(ACTION, PG_BASEBACKUP, &args, deadline).await;
        let failure = match result {
            Ok(run) if run.code == Some(0) => None,
            Ok(run) => Some(self.error(
                if is_auth_failure(&run.stderr) {
                    ResourceErrorKind::Permission
                } else {
                    ResourceErrorKind::Failed
                },
                ACTION,
                format!("pg_basebackup failed: {}", run.words()),
            )),
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            // The partial copy is ours; the data directory was not touched.
            let removed = std::fs::remove_dir_all(&clone).is_ok();
            return Err(self.error(
                e.kind,
                ACTION,
                format!(
                    "{}; partial copy {} {}; data directory left as it was",
                    e.message,
                    clone.display(),
                    if removed { "removed" } else { "NOT removed" },
                ),
            ));
        }
        report.clone = Some(began.elapsed());
        let aside = sibling_path(datadir, "wk-aside");
        std::fs::rename(datadir, &aside).map_err(|e| io("cannot move aside", datadir, e))?;
        tracing::warn!(resource = %self.name, old = %aside.display(),
            "old data directory moved aside; it is kept for the operator");
        std::fs::rename(&clone, datadir).map_err(|e| {
            io(
                &format!(
                    "old data directory moved to {}; cannot move the copy to",
                    aside.display()
                ),
                datadir,
                e,
            )
        })?;
        Ok(aside)
    }

    /// Writes `standby.signal` and sets `primary_conninfo` in `postgresql.auto.conf` (other
    /// settings kept), both owned by the data directory's owner.
    fn write_standby_config(&self, action: &str, conninfo: &str) -> Result<(), ResourceError> {
        let datadir = &self.params.datadir;
        let fail = |path: &Path, e: std::io::Error| {
            self.error(
                ResourceErrorKind::Failed,
                action,
                format!("cannot write {}: {e}", path.display()),
            )
        };
        let meta = std::fs::metadata(datadir).map_err(|e| fail(datadir, e))?;
        let auto = datadir.join(AUTO_CONF);
        let old = match std::fs::read_to_string(&auto) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(fail(&auto, e)),
        };
        let tmp = datadir.join(format!("{AUTO_CONF}.wk-tmp"));
        let signal = self.standby_signal();
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text)
                .and_then(|()| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                })
                .and_then(|()| std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())))
        };
        write(&tmp, &with_primary_conninfo(&old, conninfo))
            .and_then(|()| std::fs::rename(&tmp, &auto))
            .map_err(|e| fail(&auto, e))?;
        write(&signal, "").map_err(|e| fail(&signal, e))
    }

    /// Waits until the WAL receiver streams *and* the server has replayed the primary's WAL up
    /// to where it was when streaming began: a standby on a forked timeline also reports
    /// `streaming` for a moment between its failed attempts, but never catches up. Where the
    /// primary's WAL ended is taken from the receiver's own record of what the sender reported
    /// (`latest_end_lsn`), so the catch-up is still provable when the primary stops right after.
    async fn wait_streaming(&self, conninfo: &str, deadline: Instant) -> Result<(), ResourceError> {
        const ACTION: &str = "rejoin";
        let mut pause = FIRST_POLL;
        let mut last = String::new();
        let mut target: Option<String> = None;
        let mut primary_gone: Option<Instant> = None;
        // Bounded by the deadline: bounded queries or sleeps until it.
        loop {
            if self.interrupted() {
                return Err(self.error(
                    ResourceErrorKind::Failed,
                    ACTION,
                    "stopped waiting for streaming: this node is taking the group".to_owned(),
                ));
            }
            let state = self.follow_state(ACTION, deadline).await?;
            if let (Ok(Follow::Streaming(end)), None) = (&state, &target) {
                // The primary's end of WAL as its sender reported it to this receiver, or,
                // before the first report, as the primary says.
                target = match end {
                    Some(lsn) => Some(lsn.clone()),
                    None => match self
                        .query_at(ACTION, Some(conninfo), PRIMARY_LSN, deadline)
                        .await?
                    {
                        Ok(lsn) if is_lsn(&lsn) => Some(lsn),
                        Ok(other) => {
                            last = format!("primary's WAL position: {other:?}");
                            None
                        }
                        Err(SqlError::Auth(m)) => return Err(self.auth_error(ACTION, &m)),
                        Err(e) => {
                            last = format!("primary's WAL position: {}", e.message());
                            None
                        }
                    },
                };
            }
            // Checked on this server alone: a primary stopped right after this standby
            // streamed from it (a takeover given up there waits for a follower, then stops)
            // leaves the catch-up provable here.
            if let Some(lsn) = &target {
                let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
                match self.query(ACTION, &sql, deadline).await? {
                    Ok(answer) if answer == "t" => return Ok(()),
                    Ok(_) => last = format!("streamed, not yet replayed up to {lsn}"),
                    Err(e) => last = e.message().to_owned(),
                }
            }
            if !matches!(state, Ok(Follow::Streaming(_))) {
                // A primary that stops answering (stopped by its holder, which then handed the
                // group back here) will not come back as this standby's source: give up now
                // instead of holding the executor until the deadline, so that a start (a
                // promotion) is not queued behind a wait that cannot end well.
                match self
                    .query_at(ACTION, Some(conninfo), "SELECT 1", deadline)
                    .await?
                {
                    Err(SqlError::Unreachable(m) | SqlError::NotReady(m)) => {
                        let since = *primary_gone.get_or_insert_with(Instant::now);
                        if since.elapsed() >= PRIMARY_GONE_LIMIT {
                            return Err(self.error(
                                ResourceErrorKind::Failed,
                                ACTION,
                                format!(
                                    "the primary stopped answering for {} ms while this standby \
                                     waited to stream from it: {m}",
                                    since.elapsed().as_millis()
                                ),
                            ));
                        }
                    }
                    _ => primary_gone = None,
                }
            }
            match state {
                Ok(Follow::Streaming(_)) => {}
                Ok(Follow::Primary) => {
                    return Err(self.error(
                        ResourceErrorKind::Failed,
                        ACTION,
                        "started as a primary although standby.signal was written".to_owned(),
                    ))
                }
                Ok(Follow::Receiver(status)) => {
                    if target.is_none() {
                        last = format!("WAL receiver: {status}");
                    }
                }
                Err(SqlError::Auth(m)) => return Err(self.auth_error(ACTION, &m)),
                Err(e) => last = e.message().to_owned(),
            }
            let next = Instant::now() + pause;
            pause = (pause * 2).min(MAX_POLL);
            if next >= deadline {
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(self.error(
                    ResourceErrorKind::Timeout,
                    ACTION,
                    format!("not streaming from the primary by the deadline; last: {last}"),
                ));
            }
            tokio::time::sleep_until(next).await;
        }
    }

    async fn follow_state(
        &self,
        action: &str,
        deadline: Instant,
    ) -> Result<Result<Follow, SqlError>, ResourceError> {
        let answer = self.query(action, FOLLOW_CHECK, deadline).await?;
        Ok(answer.and_then(|text| parse_follow(&text)))
    }

    async fn role(
        &self,
        action: &str,
        deadline: Instant,
    ) -> Result<Result<Role, SqlError>, ResourceError> {
        let answer = self.query(action, ROLE_CHECK, deadline).await?;
        Ok(answer.and_then(|text| match text.as_str() {
            "f" => Ok(Role::Primary),
            "t" => Ok(Role::Standby),
            _ => Err(SqlError::Query(format!(
                "unexpected pg_is_in_recovery() answer {text:?}"
            ))),
        }))
    }

    /// One statement through `psql`; the outer error is the executor's (deadline, spawn), the
    /// inner one the server's answer.
    async fn query(
        &self,
        action: &str,
        sql: &str,
        deadline: Instant,
    ) -> Result<Result<String, SqlError>, ResourceError> {
        self.query_at(action, None, sql, deadline).await
    }

    /// [`Self::query`] on the local server, or on the one `conninfo` names (the peer).
    async fn query_at(
        &self,
        action: &str,
        conninfo: Option<&str>,
        sql: &str,
        deadline: Instant,
    ) -> Result<Result<String, SqlError>, ResourceError> {
        let mut args = vec![
            os("-X"),
            os("-A"),
            os("-t"),
            os("-q"),
            os("-w"),
            os("-v"),
            os("ON_ERROR_STOP=1"),
        ];
        match conninfo {
            Some(conninfo) => args.extend([os("-d"), os(conninfo)]),
            None => args.extend([
                os("-h"),
                os(&self.params.host),
                os("-p"),
                os(&self.params.port.to_string()),
                os("-U"),
                os(&self.params.superuser),
                os("-d"),
                os(MAINTENANCE_DB),
            ]),
        }
        args.extend([os("-c"), os(sql)]);
        let run = self.run(action, PSQL, &args, deadline).await?;
        if run.code == Some(0) {
            return Ok(Ok(run.stdout.trim().to_owned()));
        }
        Ok(Err(classify_psql(&run)))
    }

    async fn cluster_state(&self, deadline: Instant) -> Result<String, ResourceError> {
        let args = [self.params.datadir.clone().into_os_string()];
        let run = self.run("rejoin", PG_CONTROLDATA, &args, deadline).await?;
        run.stdout
            .lines()
            .find_map(|line| line.strip_prefix("Database cluster state:"))
            .map(|state| state.trim().to_owned())
            .ok_or_else(|| {
                self.error(
                    ResourceErrorKind::Failed,
                    "rejoin",
                    format!("pg_controldata gave no cluster state: {}", run.words()),
                )
            })
    }

    /// Runs `program` from `bindir` (as [`PgsqlParams::user`]) in its own process group with
    /// stdin from `/dev/null`, killing the group at `deadline`.
    async fn run(
        &self,
        action: &str,
        program: &str,
        args: &[OsString],
        deadline: Instant,
    ) -> Result<Run, ResourceError> {
        let path = self.params.bindir.join(program);
        let mut command = match &self.params.user {
            Some(user) => {
                let mut c = Command::new(SETPRIV);
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(&path);
                c
            }
            None => Command::new(&path),
        };
        command
            .args(args)
            .process_group(0)
            // The server programs must not inherit a directory their user cannot read.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .env(
                "PGCONNECT_TIMEOUT",
                connect_timeout_secs(deadline).to_string(),
            )
            .env("PGAPPNAME", "watchkeeper")
            .env_remove("PGPASSWORD")
            .env_remove("PGDATA")
            .env_remove("PGSERVICE")
            .kill_on_drop(true);
        if let Some(file) = &self.params.password_file {
            command.env("PGPASSFILE", file);
        }
        self.metrics.runs.fetch_add(1, Ordering::Relaxed);
        let mut child = command.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ResourceErrorKind::NotInstalled
            } else {
                ResourceErrorKind::Spawn
            };
            self.error(kind, action, format!("cannot run {}: {e}", path.display()))
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout_at(deadline, async {
            tokio::join!(read_capped(stdout), read_capped(stderr), child.wait())
        })
        .await;
        match finished {
            Ok((stdout, stderr, Ok(status))) => {
                let run = Run {
                    code: status.code(),
                    stdout,
                    stderr,
                };
                if run.code == Some(127) && self.params.user.is_some() && !path.exists() {
                    return Err(self.error(
                        ResourceErrorKind::NotInstalled,
                        action,
                        format!("{} is missing", path.display()),
                    ));
                }
                Ok(run)
            }
            Ok((_, _, Err(e))) => Err(self.error(
                ResourceErrorKind::Spawn,
                action,
                format!("cannot wait for {}: {e}", path.display()),
            )),
            Err(_) => {
                if let Some(group) = group {
                    // The group id is the child's PID, still ours: it is reaped only below.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.wait().await;
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(self.error(
                    ResourceErrorKind::Timeout,
                    action,
                    format!("{program} did not finish before the deadline; its process group was killed"),
                ))
            }
        }
    }

    /// The postmaster's PID when `postmaster.pid` names a live process working in this data
    /// directory (a stale file, a reused PID or a zombie do not count).
    fn live_postmaster(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        if pid <= 0 {
            return None;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        let datadir = std::fs::canonicalize(&self.params.datadir)
            .unwrap_or_else(|_| self.params.datadir.clone());
        (cwd == datadir).then(|| Pid::from_raw(pid))
    }

    /// Removes `postmaster.pid` when it provably names no live postmaster: no such process, a
    /// zombie (a crashed postmaster that nobody reaped: PostgreSQL's own `kill(pid, 0)` check
    /// takes it for alive and refuses to start), or a process working elsewhere (a reused PID).
    /// When the process cannot be inspected the file stays, and PostgreSQL decides.
    fn remove_stale_pid_file(&self, action: &str) -> Result<(), ResourceError> {
        let path = self.pid_file();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Ok(());
        };
        let stale = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            Ok(stat) => {
                let zombie = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state == "Z" || state == "X");
                let datadir = std::fs::canonicalize(&self.params.datadir)
                    .unwrap_or_else(|_| self.params.datadir.clone());
                zombie
                    || std::fs::read_link(format!("/proc/{pid}/cwd"))
                        .is_ok_and(|cwd| cwd != datadir)
            }
        };
        if !stale || pid <= 0 {
            return Ok(());
        }
        tracing::warn!(resource = %self.name, pid, "removing the stale postmaster.pid of a dead postmaster");
        std::fs::remove_file(&path).map_err(|e| {
            self.error(
                ResourceErrorKind::Failed,
                action,
                format!("cannot remove stale {} (PID {pid}): {e}", path.display()),
            )
        })
    }

    /// Creates the server log owned by the data directory's owner, so `pg_ctl` (running as that
    /// user) can append to it whoever owns the parent directory.
    fn prepare_log(&self, action: &str, log: &Path) -> Result<(), ResourceError> {
        if log.exists() {
            return Ok(());
        }
        let result = std::fs::metadata(&self.params.datadir).and_then(|meta| {
            std::fs::write(log, "")?;
            std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o600))?;
            std::os::unix::fs::chown(log, Some(meta.uid()), Some(meta.gid()))
        });
        result.map_err(|e| {
            self.error(
                ResourceErrorKind::Failed,
                action,
                format!("cannot create server log {}: {e}", log.display()),
            )
        })
    }

    fn manual_command(&self, conninfo: &str) -> String {
        let d = self.params.datadir.display();
        let bin = self.params.bindir.display();
        let who = self
            .params
            .user
            .as_deref()
            .map(|u| format!("as {u}: "))
            .unwrap_or_default();
        let conninfo = redact_conninfo(conninfo);
        format!(
            "{who}{bin}/pg_rewind --target-pgdata={d} --source-server='{conninfo}' \
             --write-recovery-conf && touch {d}/standby.signal && {bin}/pg_ctl start -D {d} \
             -o '-p {port}'; if the rewind fails: mv {d} {d}.old && {bin}/pg_basebackup -D {d} \
             -R -X stream -c fast -d '{conninfo}' && {bin}/pg_ctl start -D {d} -o '-p {port}'",
            port = self.params.port
        )
    }

    fn auth_error(&self, action: &str, message: &str) -> ResourceError {
        self.error(
            ResourceErrorKind::Permission,
            action,
            format!(
                "authentication as {} refused: {message}",
                self.params.superuser
            ),
        )
    }

    fn pid_file(&self) -> PathBuf {
        self.params.datadir.join("postmaster.pid")
    }

    fn standby_signal(&self) -> PathBuf {
        self.params.datadir.join("standby.signal")
    }

    fn log_path(&self) -> PathBuf {
        let mut log = self.params.datadir.clone().into_os_string();
        log.push(".log");
        PathBuf::from(log)
    }

    fn error(&self, kind: ResourceErrorKind, action: &str, message: String) -> ResourceError {
        ResourceError::new(kind, &self.name, action, message)
    }

    fn logged<T>(
        &self,
        action: &str,
        result: Result<T, ResourceError>,
    ) -> Result<T, ResourceError> {
        if let Err(e) = &result {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(resource = %self.name, datadir = %self.params.datadir.display(),
                action, kind = ?e.kind, message = %e.message, "catalog action failed");
        }
        result
    }
}

impl Resource for PgsqlResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn follow_interrupt(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        Some(Arc::clone(&self.interrupt))
    }

    super::logged_actions!();

    /// On a node that does not hold the group, the Catalog is a streaming standby of the
    /// holder's: a former primary is rewound or re-cloned as configured (never started as a
    /// primary), a standby that already streams is left alone, and with `rejoin = "manual"` the
    /// server stays down and the commands to run are returned.
    fn follow(&mut self, deadline: Instant) -> Option<ResourceFuture<'_, String>> {
        Some(Box::pin(async move {
            let report = self.rejoin_as_standby(deadline).await?;
            let ms = |d: Option<Duration>| {
                d.map_or_else(String::new, |d| format!(" in {} ms", d.as_millis()))
            };
            Ok(match report.outcome {
                RejoinOutcome::AlreadyStandby => "already a streaming standby".to_owned(),
                RejoinOutcome::Restarted => format!(
                    "standby restarted and streaming (rejoin {} ms)",
                    report.total.as_millis()
                ),
                RejoinOutcome::Rewound => format!(
                    "rewound{} and streaming (rejoin {} ms)",
                    ms(report.rewind),
                    report.total.as_millis()
                ),
                RejoinOutcome::Recloned { old_datadir } => format!(
                    "re-cloned{} and streaming; the previous data directory is kept at {}",
                    ms(report.clone),
                    old_datadir.display()
                ),
                RejoinOutcome::ManualRequired { command } => {
                    format!("stopped; rejoin = \"manual\": run {command}")
                }
            })
        }))
    }
}

/// Waits, until `deadline` but at most [`EXIT_SETTLE`], for process `pid` to be gone (or a
/// zombie: it has exited and only waits to be reaped).
async fn exited(pid: Option<Pid>, deadline: Instant) -> bool {
    let Some(pid) = pid else { return true };
    let until = deadline.min(Instant::now() + EXIT_SETTLE);
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
        };
        if gone {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(CLEANUP_POLL).await;
    }
}

/// The usual superuser role; Debian's clusters have it.
pub const DEFAULT_SUPERUSER: &str = "postgres";

/// What one program run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Exit code; `None` when a signal ended it.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The program's own words for a failure: stderr, else stdout, else the exit status.
    fn words(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        if text.is_empty() {
            format!("exit status {:?}", self.code)
        } else {
            text.replace('\n', "; ")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Standby,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Follow {
    /// Not in recovery.
    Primary,
    /// In recovery and streaming from the primary; the end of the primary's WAL as its
    /// sender last reported it (`latest_end_lsn`), once it has.
    Streaming(Option<String>),
    /// In recovery with the WAL receiver in another state (`none` when it does not run).
    Receiver(String),
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SqlError {
    /// Password or `pg_hba.conf` refused us.
    Auth(String),
    /// No server listens.
    Unreachable(String),
    /// The server runs but does not take connections yet (or any more).
    NotReady(String),
    /// Connected, and the statement failed.
    Query(String),
}

impl SqlError {
    fn message(&self) -> &str {
        match self {
            Self::Auth(m) | Self::Unreachable(m) | Self::NotReady(m) | Self::Query(m) => m,
        }
    }
}

/// Maps a failed `psql` run to why; exit code 2 is psql's "connection to the server went bad".
fn classify_psql(run: &Run) -> SqlError {
    let words = run.words();
    let m = words.to_ascii_lowercase();
    if is_auth_failure(&m) {
        SqlError::Auth(words)
    } else if m.contains("starting up")
        || m.contains("shutting down")
        || m.contains("not yet accepting connections")
        || m.contains("not accepting connections")
        || m.contains("in recovery mode")
        || m.contains("consistent recovery state has not been yet reached")
    {
        SqlError::NotReady(words)
    } else if run.code == Some(2)
        || m.contains("could not connect")
        || m.contains("connection to server")
    {
        SqlError::Unreachable(words)
    } else {
        SqlError::Query(words)
    }
}

fn is_auth_failure(text: &str) -> bool {
    let m = text.to_ascii_lowercase();
    m.contains("password authentication failed")
        || m.contains("no password supplied")
        || m.contains("authentication failed")
        || m.contains("no pg_hba.conf entry")
        || m.contains("pg_hba.conf rejects")
        || (m.contains("role") && m.contains("does not exist"))
}

/// `pg_controldata`'s states after a clean shutdown, of a primary and of a standby.
fn is_clean_shutdown(state: &str) -> bool {
    matches!(state, "shut down" | "shut down in recovery")
}

/// `postgresql.auto.conf` with every `primary_conninfo` line replaced by one for `conninfo`.
fn with_primary_conninfo(old: &str, conninfo: &str) -> String {
    let mut out = String::with_capacity(old.len() + conninfo.len() + 32);
    for line in old.lines() {
        let key = line.trim_start();
        let is_setting = key
            .strip_prefix("primary_conninfo")
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !is_setting {
            out.push_str(line);
            out.push('\n');
        }
    }
    let quoted = conninfo.replace('\\', "\\\\").replace('\'', "''");
    let _ = writeln!(out, "primary_conninfo = '{quoted}'");
    out
}

/// Whether `text` reads as a WAL position (`0/A2C740`), so it can be quoted into SQL.
/// [`FOLLOW_CHECK`]'s answer: `in recovery|receiver status|primary's end of WAL`.
fn parse_follow(text: &str) -> Result<Follow, SqlError> {
    let mut parts = text.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("false"), _, _) => Ok(Follow::Primary),
        (Some("true"), Some("streaming"), end) => Ok(Follow::Streaming(
            end.filter(|lsn| is_lsn(lsn)).map(str::to_owned),
        )),
        (Some("true"), Some(status), _) => Ok(Follow::Receiver(status.to_owned())),
        _ => Err(SqlError::Query(format!("unexpected answer {text:?}"))),
    }
}

fn is_lsn(text: &str) -> bool {
    text.split_once('/').is_some_and(|(hi, lo)| {
        !hi.is_empty()
            && !lo.is_empty()
            && hi.len() <= 8
            && lo.len() <= 8
            && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit())
    })
}

/// `conninfo` with any `password=` value replaced, for messages and logs.
fn redact_conninfo(conninfo: &str) -> String {
    conninfo
        .split(' ')
        .map(|word| match word.split_once('=') {
            Some((key, _)) if key.trim() == "password" => "password=***".to_owned(),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<datadir>.<tag>-<unix seconds>[-n]`, a name not taken yet.
fn sibling_path(datadir: &Path, tag: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = {
        let mut s = datadir.as_os_str().to_owned();
        s.push(format!(".{tag}-{secs}"));
        s
    };
    let mut candidate = PathBuf::from(&base);
    let mut n = 1u32;
    // Bounded: each name taken is a directory that exists; u32 names cannot all be taken.
    while candidate.exists() && n < u32::MAX {
        let mut s = base.clone();
        s.push(format!("-{n}"));
        candidate = PathBuf::from(s);
        n += 1;
    }
    candidate
}

/// The last [`LOG_TAIL`] bytes of the server log, one line.
fn log_tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL);
            String::from_utf8_lossy(&bytes[start..])
                .trim()
                .replace('\n', "; ")
        }
        Err(e) => format!("unreadable ({e})"),
    }
}

/// Seconds left until `deadline`, rounded up and at least 1, for `pg_ctl -t`.
fn whole_secs(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    (left.as_millis().div_ceil(1000))
        .try_into()
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `PGCONNECT_TIMEOUT` for the time left: libpq treats values under 2 as 2, and a connection
/// needs no more than [`MAX_CONNECT_TIMEOUT`] on loopback.
fn connect_timeout_secs(deadline: Instant) -> u64 {
    whole_secs(deadline).clamp(2, MAX_CONNECT_TIMEOUT.as_secs())
}

fn with_cleanup(e: ResourceError, stopped: bool) -> ResourceError {
    let note = if stopped {
        "; the server this action launched was shut down (immediate mode)"
    } else {
        "; the server this action launched could NOT be shut down"
    };
    ResourceError {
        message: format!("{}{note}", e.message),
        ..e
    }
}

fn os(s: &str) -> OsString {
    OsStr::new(s).to_owned()
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded by the child's lifetime, which the caller bounds by the deadline.
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

const PG_CTL: &str = "pg_ctl";
const POSTGRES: &str = "postgres";
const PSQL: &str = "psql";
const PG_REWIND: &str = "pg_rewind";
const PG_BASEBACKUP: &str = "pg_basebackup";
const PG_CONTROLDATA: &str = "pg_controldata";
/// util-linux's `setpriv` execs the program, so the process group is the program's own.
const SETPRIV: &str = "setpriv";
const AUTO_CONF: &str = "postgresql.auto.conf";
/// Every cluster has it; the checks need no database of their own.
const MAINTENANCE_DB: &str = "postgres";
const ROLE_CHECK: &str = "SELECT pg_is_in_recovery()";
/// A standby refuses to assign a transaction id, so this proves the server takes writes.
const WRITE_CHECK: &str = "SELECT txid_current()";
/// The primary's WAL write position; any role may ask.
const PRIMARY_LSN: &str = "SELECT pg_current_wal_lsn()";
/// Standbys that stream and have flushed everything this primary wrote, streaming for two
/// seconds at least: the standby's rejoin polls its own receiver, and must see
/// it stream once before this primary stops ([`PgsqlResource::wait_for_follower`]).
const FOLLOWER_CHECK: &str = "SELECT count(*) FROM pg_stat_replication \
    WHERE state = 'streaming' AND flush_lsn >= pg_current_wal_flush_lsn() \
    AND backend_start <= now() - interval '2 seconds'";
/// Longest a promoted primary waits for a standby before it stops ([`PgsqlResource::do_stop`]).
const FOLLOWER_WAIT: Duration = Duration::from_secs(5);
const FOLLOW_CHECK: &str = "SELECT pg_is_in_recovery()::text || '|' || \
    coalesce((SELECT status || '|' || coalesce(latest_end_lsn::text, '') \
              FROM pg_stat_wal_receiver), 'none|')";
/// First pause between polls: promotion on loopback takes tens of milliseconds.
const FIRST_POLL: Duration = Duration::from_millis(20);
/// Longest pause between polls, so a slow promotion is still noticed within a quarter second.
const MAX_POLL: Duration = Duration::from_millis(250);
/// Time kept back from fast shutdown for immediate shutdown, which takes well under a second.
const IMMEDIATE_RESERVE: Duration = Duration::from_secs(5);
/// How long a start that failed may spend after its deadline stopping what it launched.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);
/// After `SIGQUIT`, how long the postmaster gets before `SIGKILL`.
const KILL_AFTER: Duration = Duration::from_secs(3);
/// How long the primary a rejoining standby waits for may stay silent before the rejoin gives
/// up (and is retried later): long enough for a busy server's connection limit or a restart,
/// short enough that a promotion here is not held up.
const PRIMARY_GONE_LIMIT: Duration = Duration::from_secs(3);
/// How long a restarted standby gets to stream before the rejoin policy (rewind, re-clone)
/// takes over: replaying the WAL it missed and connecting take seconds, not minutes.
const STANDBY_RESTART_LIMIT: Duration = Duration::from_secs(20);
/// How long `postmaster.pid` must be absent before a killed start counts as having left
/// nothing (the postmaster writes it within milliseconds of being forked).
const PID_FILE_SETTLE: Duration = Duration::from_millis(200);
const CLEANUP_POLL: Duration = Duration::from_millis(20);
/// Connection attempts a monitor makes to a live postmaster before calling it failed.
const MONITOR_ATTEMPTS: usize = 3;
/// Pause between two of them.
const MONITOR_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// After `pg_ctl stop` returned, how long the postmaster may take to exit.
const EXIT_SETTLE: Duration = Duration::from_secs(2);
/// Connecting over loopback or a Unix socket takes milliseconds; more means a hung server.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the server log quoted in a failed start.
const LOG_TAIL: usize = 1024;
/// Most bytes kept of a program's stdout or stderr; the rest is read and dropped.
const MAX_OUTPUT: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: i32, stderr: &str) -> Run {
        Run {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn psql_failures_are_classified() {
        let auth = run(
            2,
            "psql: error: connection to server at \"127.0.0.1\", port 5 failed: \
                           FATAL:  password authentication failed for user \"postgres\"",
        );
        assert!(matches!(classify_psql(&auth), SqlError::Auth(_)));
        let down = run(
            2,
            "psql: error: connection to server at \"127.0.0.1\", port 5 failed: \
                           Connection refused",
        );
        assert!(matches!(classify_psql(&down), SqlError::Unreachable(_)));
        let starting = run(
            2,
            "psql: error: connection to server on socket \"/tmp/.s.PGSQL.5\" \
                               failed: FATAL:  the database system is starting up",
        );
        assert!(matches!(classify_psql(&starting), SqlError::NotReady(_)));
        let query = run(3, "ERROR:  cannot assign TransactionIds during recovery");
        assert!(matches!(classify_psql(&query), SqlError::Query(_)));
    }

    #[test]
    fn primary_conninfo_replaces_old_lines_and_keeps_others() {
        let old = "# Do not edit\nwork_mem = '4MB'\nprimary_conninfo = 'host=old'\n  \
                   primary_conninfo='x'\nprimary_conninfo_extra = 1\n";
        let new = with_primary_conninfo(old, "host=127.0.0.1 password=it's\\");
        assert_eq!(
            new,
            "# Do not edit\nwork_mem = '4MB'\nprimary_conninfo_extra = 1\n\
             primary_conninfo = 'host=127.0.0.1 password=it''s\\\\'\n"
        );
        assert_eq!(with_primary_conninfo("", "a"), "primary_conninfo = 'a'\n");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_conninfo("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn follow_answers_parse_with_the_primarys_end_of_wal() {
        assert_eq!(parse_follow("false|none|"), Ok(Follow::Primary));
        assert_eq!(
            parse_follow("true|streaming|0/3000148"),
            Ok(Follow::Streaming(Some("0/3000148".to_owned())))
        );
        // No report from the sender yet, or something that is not an LSN: not a target.
        assert_eq!(parse_follow("true|streaming|"), Ok(Follow::Streaming(None)));
        assert_eq!(
            parse_follow("true|streaming|0/3'; --"),
            Ok(Follow::Streaming(None))
        );
        assert_eq!(
            parse_follow("true|waiting|0/3000148"),
            Ok(Follow::Receiver("waiting".to_owned()))
        );
        assert_eq!(
            parse_follow("true|none|"),
            Ok(Follow::Receiver("none".to_owned()))
        );
        assert!(parse_follow("maybe").is_err());
    }

    #[test]
    fn lsns_are_checked_before_quoting() {
        assert!(is_lsn("0/A2C740"));
        assert!(!is_lsn("0/A2C740'; DROP"));
        assert!(!is_lsn("/1"));
        assert!(!is_lsn(""));
    }

    #[test]
    fn clean_states() {
        assert!(is_clean_shutdown("shut down"));
        assert!(is_clean_shutdown("shut down in recovery"));
        assert!(!is_clean_shutdown("in production"));
        assert!(!is_clean_shutdown("in archive recovery"));
    }

    #[test]
    fn new_checks_params() {
        let params = PgsqlParams {
            bindir: PathBuf::from("/nonexistent/bin"),
            datadir: PathBuf::from("/tmp/data"),
            port: 5432,
            host: "127.0.0.1".to_owned(),
            user: None,
            superuser: DEFAULT_SUPERUSER.to_owned(),
            password_file: None,
            primary_conninfo: None,
            rejoin: RejoinPolicy::Manual,
        };
        let e = PgsqlResource::new("catalog", params.clone()).err();
        assert_eq!(e.map(|e| e.kind), Some(ResourceErrorKind::NotInstalled));
        let relative = PgsqlParams {
            datadir: PathBuf::from("data"),
            ..params
        };
        let e = PgsqlResource::new("catalog", relative).err();
        assert_eq!(e.map(|e| e.kind), Some(ResourceErrorKind::Args));
    }

    #[test]
    fn aside_names_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = sibling_path(&data, "wk-aside");
        std::fs::create_dir(&first).expect("mkdir");
        let second = sibling_path(&data, "wk-aside");
        assert_ne!(first, second);
        assert!(second
            .to_string_lossy()
            .starts_with(&*data.to_string_lossy()));
    }
}
