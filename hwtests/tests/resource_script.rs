//! The script executor against real scripts the test writes: a small daemon-like service
//! (start, stop, LSB status), a start that hangs (killed at the deadline, with its child), a
//! failing start, a status that reports LSB 1 ("dead, pid file exists"), and a start that
//! status contradicts. Every process a test creates is gone when it ends (checked by PID).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use drivers::resource::script::{ScriptParams, ScriptResource};
use drivers::resource::{Resource, ResourceErrorKind, ResourceState};
use tokio::time::Instant;

const STEP: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_service_starts_reports_and_stops_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = DaemonGuard(dir.path().join("daemon.pid"));
    let mut r = service(dir.path(), &[]);
    assert_eq!(
        timed("status", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(timed("start", r.start(deadline())).await, Ok(()));
    let pid = daemon_pid(dir.path());
    assert!(!dead(pid), "the daemon runs after start");
    assert_eq!(timed("start (running)", r.start(deadline())).await, Ok(()));
    assert_eq!(
        daemon_pid(dir.path()),
        pid,
        "a second start started nothing"
    );
    assert_eq!(
        timed("status", r.monitor(deadline())).await,
        Ok(ResourceState::Running)
    );
    assert_eq!(timed("stop", r.stop(deadline())).await, Ok(()));
    assert!(wait_dead(pid), "the daemon {pid} is gone after stop");
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(
        timed("status", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
}

#[tokio::test]
async fn the_environment_is_clean_plus_the_configured_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("env");
    let sh = |c: String| vec!["/bin/sh".to_owned(), "-c".to_owned(), c];
    let mut r = ScriptResource::new(
        "envdump",
        ScriptParams {
            start: sh("exit 0".into()),
            stop: sh("exit 0".into()),
            status: sh(format!("env > {}; exit 3", dump.display())),
            env: BTreeMap::from([("BACULA_DIR".to_owned(), "bacula-dir".to_owned())]),
        },
    )
    .expect("valid");
    assert_eq!(r.monitor(deadline()).await, Ok(ResourceState::Stopped));
    let text = std::fs::read_to_string(&dump).expect("env dump");
    assert!(text.lines().any(|l| l == "BACULA_DIR=bacula-dir"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{text}"
    );
    for inherited in ["HOME=", "USER=", "CARGO="] {
        assert!(
            !text.lines().any(|l| l.starts_with(inherited)),
            "{inherited} leaked"
        );
    }
}

#[tokio::test]
async fn a_hanging_start_times_out_and_its_children_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let start = format!(
        "echo starting; echo $$ > {p}; sleep 1000 & echo $! >> {p}; wait",
        p = pids.display()
    );
    let mut r = service(dir.path(), &[("start", &start)]);
    let allowed = Duration::from_millis(1500);
    let started = StdInstant::now();
    let e = r
        .start(Instant::now() + allowed)
        .await
        .expect_err("start hangs");
    let elapsed = started.elapsed();
    eprintln!("hanging start returned after {elapsed:?} (deadline {allowed:?}): {e}");
    assert_eq!(e.kind, ResourceErrorKind::Timeout, "{e}");
    assert_eq!(e.action, "start");
    assert!(
        e.message.contains("starting"),
        "the output so far is kept: {e}"
    );
    assert!(
        elapsed >= allowed - Duration::from_millis(300),
        "{elapsed:?}"
    );
    assert!(
        elapsed < allowed + Duration::from_millis(200),
        "{elapsed:?}"
    );
    let pids = std::fs::read_to_string(&pids).expect("pid file");
    let pids: Vec<i32> = pids
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2, "script and sleep PIDs");
    for pid in pids {
        assert!(dead(pid), "process {pid} survived the deadline");
    }
}

#[tokio::test]
async fn a_failing_start_reports_its_error_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = service(
        dir.path(),
        &[(
            "start",
            "echo 'ERROR: bacula-sd.conf: no Device resource' >&2; exit 6",
        )],
    );
    let e = timed("start", r.start(deadline()))
        .await
        .expect_err("fails");
    assert_eq!(e.kind, ResourceErrorKind::NotConfigured, "{e}");
    assert!(e.message.starts_with("start exited 6"), "{e}");
    assert!(
        e.message
            .contains("ERROR: bacula-sd.conf: no Device resource"),
        "{e}"
    );
}

#[tokio::test]
async fn lsb_status_codes_are_read_as_lsb_means_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = service(dir.path(), &[("status", "exit 3")]);
    assert_eq!(r.monitor(deadline()).await, Ok(ResourceState::Stopped));
    let mut r = service(dir.path(), &[("status", "exit 7")]);
    assert_eq!(r.monitor(deadline()).await, Ok(ResourceState::Stopped));
    let mut r = service(
        dir.path(),
        &[(
            "status",
            "echo 'bacula-sd dead but pid file exists'; exit 1",
        )],
    );
    let e = r.monitor(deadline()).await.expect_err("dead");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("dead but pid file exists"), "{e}");
}

#[tokio::test]
async fn a_start_that_status_contradicts_is_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = service(dir.path(), &[("start", "exit 0"), ("status", "exit 3")]);
    let e = r.start(deadline()).await.expect_err("status says stopped");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(
        e.message.contains("started but status reports not running"),
        "{e}"
    );
}

#[tokio::test]
async fn a_stop_that_status_contradicts_is_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = service(dir.path(), &[("stop", "exit 0"), ("status", "exit 0")]);
    let e = r.stop(deadline()).await.expect_err("status says running");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(
        e.message.contains("stopped but status reports running"),
        "{e}"
    );
}

fn deadline() -> Instant {
    Instant::now() + STEP
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = StdInstant::now();
    let out = f.await;
    eprintln!("{what}: {:?}", started.elapsed());
    out
}

/// A service of three sh scripts in `dir`: start runs a `sleep` daemon (detached with setsid,
/// output to /dev/null) and writes its pid file, stop kills it, status checks it (LSB codes).
/// `overrides` replace a script's body.
fn service(dir: &Path, overrides: &[(&str, &str)]) -> ScriptResource {
    let pidfile = dir.join("daemon.pid");
    let p = pidfile.display();
    let defaults = [
        (
            "start",
            format!("setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {p}; exit 0"),
        ),
        (
            "stop",
            format!("[ -f {p} ] || exit 0; kill $(cat {p}) 2>/dev/null; rm -f {p}; exit 0"),
        ),
        (
            "status",
            format!("[ -f {p} ] && kill -0 $(cat {p}) 2>/dev/null && exit 0; exit 3"),
        ),
    ];
    let mut argv = BTreeMap::new();
    for (action, default) in defaults {
        let body = overrides
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(default, |(_, b)| (*b).to_owned());
        argv.insert(
            action,
            vec![write_script(dir, action, &body).display().to_string()],
        );
    }
    let mut take = |a: &str| argv.remove(a).unwrap_or_default();
    ScriptResource::new(
        "svc",
        ScriptParams {
            start: take("start"),
            stop: take("stop"),
            status: take("status"),
            env: BTreeMap::new(),
        },
    )
    .expect("valid scripts")
}

fn write_script(dir: &Path, action: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "{action}-{}.sh",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn daemon_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("daemon.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| s == 'Z' || s == 'X'),
        Err(_) => true,
    }
}

/// `kill` returns before the process is gone; waits up to a second for it.
fn wait_dead(pid: i32) -> bool {
    let until = StdInstant::now() + Duration::from_secs(1);
    while !dead(pid) && StdInstant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    dead(pid)
}

/// Kills the test service's daemon, by the PID in its pid file, if a failed test left it.
struct DaemonGuard(PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
