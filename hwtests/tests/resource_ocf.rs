//! The OCF executor against real agents: resource-agents' `Dummy`, `IPaddr2` (in a network
//! namespace the test creates, on a veth pair) and `Filesystem` (on a loop device), plus small
//! agents written here that fail in the ways the executor must report truthfully: a failing
//! start, a stop that hangs (killed at the deadline, with its child), a failing monitor, "not
//! installed", and a start that lies.
//!
//! Tests that need root print why and return when not root, except under CI=true, where they
//! fail instead. Every namespace, loop device, mount and process a test creates is removed by
//! that test, by the name or PID it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use drivers::resource::ocf::{action_timeout, OcfParams, OcfResource};
use drivers::resource::{Resource, ResourceErrorKind, ResourceState};
use tokio::time::Instant;

const HEARTBEAT: &str = "/usr/lib/ocf/resource.d/heartbeat";
const OCF_ROOT: &str = "/usr/lib/ocf";
/// Deadline for actions that should finish at once (the real agents take 5–40 ms).
const STEP: Duration = Duration::from_secs(20);

#[tokio::test]
async fn dummy_starts_monitors_and_stops_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("dummy.state");
    let mut r = ocf(
        "dummy1",
        Path::new(HEARTBEAT).join("Dummy"),
        &[("state", state.to_str().expect("utf-8 path"))],
    );
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(timed("start", r.start(deadline())).await, Ok(()));
    assert!(state.exists(), "Dummy keeps its state file");
    assert_eq!(timed("start (running)", r.start(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Running)
    );
    assert_eq!(timed("stop", r.stop(deadline())).await, Ok(()));
    assert!(!state.exists());
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
}

#[tokio::test]
async fn meta_data_of_real_agents_parses_with_timeouts() {
    let started = StdInstant::now();
    let dummy = ocf("d", Path::new(HEARTBEAT).join("Dummy"), &[]);
    let meta = dummy.meta_data(deadline()).await.expect("Dummy meta-data");
    eprintln!("Dummy meta-data: {:?}", started.elapsed());
    assert_eq!(meta.name, "Dummy");
    assert_eq!(
        action_timeout(&meta, "start"),
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        action_timeout(&meta, "meta-data"),
        Some(Duration::from_secs(5))
    );
    let state = meta
        .parameters
        .iter()
        .find(|p| p.name == "state")
        .expect("state parameter");
    assert!(state.unique && !state.required);

    let started = StdInstant::now();
    let ip = ocf("ip", Path::new(HEARTBEAT).join("IPaddr2"), &[]);
    let meta = ip.meta_data(deadline()).await.expect("IPaddr2 meta-data");
    eprintln!("IPaddr2 meta-data: {:?}", started.elapsed());
    assert_eq!(meta.name, "IPaddr2");
    let param = meta
        .parameters
        .iter()
        .find(|p| p.name == "ip")
        .expect("ip parameter");
    assert!(param.required && param.unique);
    assert_eq!(
        action_timeout(&meta, "start"),
        Some(Duration::from_secs(20))
    );
    let monitor = meta
        .actions
        .iter()
        .find(|a| a.name == "monitor")
        .expect("monitor");
    assert_eq!(monitor.interval, Some(Duration::from_secs(10)));

    let started = StdInstant::now();
    let fs = ocf("fs", Path::new(HEARTBEAT).join("Filesystem"), &[]);
    let meta = fs
        .meta_data(deadline())
        .await
        .expect("Filesystem meta-data");
    eprintln!("Filesystem meta-data: {:?}", started.elapsed());
    assert_eq!(meta.name, "Filesystem");
    for name in ["device", "directory", "fstype"] {
        let p = meta.parameters.iter().find(|p| p.name == name);
        assert!(p.is_some_and(|p| p.required), "{name} is required");
    }
    assert_eq!(
        action_timeout(&meta, "start"),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        action_timeout(&meta, "monitor"),
        Some(Duration::from_secs(40))
    );
    assert_eq!(
        action_timeout(&meta, "validate-all"),
        Some(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn validate_all_accepts_good_and_refuses_bad_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("dummy.state");
    let good = ocf(
        "dummy1",
        Path::new(HEARTBEAT).join("Dummy"),
        &[("state", state.to_str().expect("utf-8 path"))],
    );
    assert_eq!(good.validate(deadline()).await, Ok(()));
    let bad = ocf(
        "dummy1",
        Path::new(HEARTBEAT).join("Dummy"),
        &[("state", "/nonexistent/wk-ocf/dummy.state")],
    );
    let e = bad
        .validate(deadline())
        .await
        .expect_err("unwritable state refused");
    assert_eq!(e.kind, ResourceErrorKind::Args, "{e}");
    assert!(e.message.contains("is not writable"), "{e}");
    // Filesystem without its required parameters: not configured.
    let fs = ocf("fs", Path::new(HEARTBEAT).join("Filesystem"), &[]);
    let e = fs.validate(deadline()).await.expect_err("no device");
    assert_eq!(e.kind, ResourceErrorKind::NotConfigured, "{e}");
    assert!(e.message.contains("OCF_RESKEY_device"), "{e}");
}

#[tokio::test]
async fn a_failing_start_reports_the_agents_error_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = test_agent(
        dir.path(),
        "FailStart",
        &[(
            "start",
            "echo 'FailStart(r)[1]: ERROR: cannot bind 10.0.0.9:9103' >&2; exit 1",
        )],
    );
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    let e = timed("start", r.start(deadline()))
        .await
        .expect_err("start fails");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert_eq!(e.action, "start");
    assert!(e.message.contains("returned 1 (OCF_ERR_GENERIC)"), "{e}");
    assert!(
        e.message.contains("ERROR: cannot bind 10.0.0.9:9103"),
        "{e}"
    );
}

#[tokio::test]
async fn a_hanging_stop_times_out_and_its_children_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let stop = format!(
        "echo $$ > {p}; sleep 1000 & echo $! >> {p}; wait",
        p = pids.display()
    );
    let agent = test_agent(dir.path(), "HangStop", &[("stop", &stop)]);
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    assert_eq!(r.start(deadline()).await, Ok(()));
    let allowed = Duration::from_millis(1500);
    let started = StdInstant::now();
    let e = r
        .stop(Instant::now() + allowed)
        .await
        .expect_err("stop hangs");
    let elapsed = started.elapsed();
    eprintln!("hanging stop returned after {elapsed:?} (deadline {allowed:?}): {e}");
    assert_eq!(e.kind, ResourceErrorKind::Timeout, "{e}");
    assert_eq!(e.action, "stop");
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
    assert_eq!(pids.len(), 2, "agent and sleep PIDs");
    for pid in pids {
        assert!(dead(pid), "process {pid} survived the deadline");
    }
}

#[tokio::test]
async fn a_failing_monitor_is_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = test_agent(
        dir.path(),
        "BadMonitor",
        &[(
            "monitor",
            "echo 'ERROR: daemon answers no more' >&2; exit 1",
        )],
    );
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    let e = timed("monitor", r.monitor(deadline()))
        .await
        .expect_err("fails");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("daemon answers no more"), "{e}");
}

#[tokio::test]
async fn not_installed_and_promoted_are_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = test_agent(
        dir.path(),
        "Missing",
        &[
            (
                "start",
                "echo 'ocf-exit-reason:bacula-sd not found' >&2; exit 5",
            ),
            ("monitor", "exit 5"),
        ],
    );
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    let e = r.start(deadline()).await.expect_err("not installed");
    assert_eq!(e.kind, ResourceErrorKind::NotInstalled);
    assert!(
        e.message
            .starts_with("start returned 5 (OCF_ERR_INSTALLED): bacula-sd not found"),
        "{e}"
    );
    let e = r.monitor(deadline()).await.expect_err("not installed");
    assert_eq!(e.kind, ResourceErrorKind::NotInstalled);

    let agent = test_agent(dir.path(), "Promoted", &[("monitor", "exit 8")]);
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    let e = r.monitor(deadline()).await.expect_err("promoted");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("promoted"), "{e}");
}

#[tokio::test]
async fn a_start_that_monitor_contradicts_is_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = test_agent(
        dir.path(),
        "Liar",
        &[("start", "exit 0"), ("monitor", "exit 7")],
    );
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    let e = r.start(deadline()).await.expect_err("monitor says stopped");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(
        e.message
            .contains("started but monitor reports not running"),
        "{e}"
    );
}

#[tokio::test]
async fn stop_returning_7_counts_only_when_monitor_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = test_agent(dir.path(), "Stop7", &[("stop", "rm -f \"$state\"; exit 7")]);
    let mut r = ocf("r", agent, &[("state", &state_in(dir.path()))]);
    assert_eq!(r.start(deadline()).await, Ok(()));
    assert_eq!(r.stop(deadline()).await, Ok(()));

    let agent = test_agent(dir.path(), "Stop7Running", &[("stop", "exit 7")]);
    let mut r = ocf("r2", agent, &[("state", &state_in(dir.path()))]);
    assert_eq!(r.start(deadline()).await, Ok(()));
    let e = r.stop(deadline()).await.expect_err("still running");
    assert_eq!(e.kind, ResourceErrorKind::Failed);
    assert!(e.message.contains("monitor reports running"), "{e}");
}

#[tokio::test]
async fn agents_get_a_clean_ocf_environment_with_the_time_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("env");
    let agent = test_agent(
        dir.path(),
        "EnvDump",
        &[("monitor", &format!("env > {}; exit 7", dump.display()))],
    );
    let mut r = ocf(
        "envdump",
        agent,
        &[("state", &state_in(dir.path())), ("ip", "10.1.2.3")],
    );
    let allowed = Duration::from_secs(15);
    assert_eq!(
        r.monitor(Instant::now() + allowed).await,
        Ok(ResourceState::Stopped)
    );
    let text = std::fs::read_to_string(&dump).expect("env dump");
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env.get("OCF_ROOT"), Some(&OCF_ROOT));
    assert_eq!(env.get("OCF_RESOURCE_INSTANCE"), Some(&"envdump"));
    assert_eq!(env.get("OCF_RESOURCE_TYPE"), Some(&"EnvDump"));
    assert_eq!(env.get("OCF_RESOURCE_PROVIDER"), Some(&"wktest"));
    assert_eq!(env.get("OCF_RESKEY_ip"), Some(&"10.1.2.3"));
    let timeout_ms: u128 = env
        .get("OCF_RESKEY_CRM_meta_timeout")
        .and_then(|v| v.parse().ok())
        .expect("meta timeout in ms");
    assert!(
        timeout_ms <= allowed.as_millis() && timeout_ms > allowed.as_millis() - 1000,
        "{timeout_ms}"
    );
    for inherited in ["HOME", "USER", "CARGO", "RUST_TEST_THREADS"] {
        assert!(
            !env.contains_key(inherited),
            "{inherited} leaked into the agent"
        );
    }
}

#[tokio::test]
async fn ipaddr2_adds_and_removes_an_address_in_a_namespace() {
    if !root_or_skip("IPaddr2 needs a network namespace") {
        return;
    }
    let ns = Netns::create(&format!("wkocf{}", std::process::id())).expect("netns");
    run_ok(&[
        "ip", "-n", &ns.0, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    run_ok(&["ip", "-n", &ns.0, "link", "set", "v0", "up"]);
    run_ok(&["ip", "-n", &ns.0, "link", "set", "v1", "up"]);
    let mut r = OcfResource::new(
        "vip",
        OcfParams {
            agent: Path::new(HEARTBEAT).join("IPaddr2"),
            ocf_root: OCF_ROOT.into(),
            instance: "vip".into(),
            params: params(&[("ip", "10.77.0.5"), ("cidr_netmask", "24"), ("nic", "v0")]),
            prefix: ["ip", "netns", "exec", &ns.0].map(String::from).to_vec(),
        },
    )
    .expect("IPaddr2");
    let has_address = || {
        let out = run_ok(&["ip", "-n", &ns.0, "-o", "addr", "show", "dev", "v0"]);
        out.contains("inet 10.77.0.5/24")
    };
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
    assert_eq!(timed("start", r.start(deadline())).await, Ok(()));
    assert!(has_address(), "10.77.0.5 on v0 after start");
    assert_eq!(timed("start (running)", r.start(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Running)
    );
    assert_eq!(timed("stop", r.stop(deadline())).await, Ok(()));
    assert!(!has_address(), "10.77.0.5 gone after stop");
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
}

#[tokio::test]
async fn filesystem_mounts_and_unmounts_a_loop_device() {
    if !root_or_skip("Filesystem needs a loop device and mount") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("fs.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(32 * 1024 * 1024))
        .expect("image");
    run_ok(&["mkfs.ext4", "-q", "-F", image.to_str().expect("utf-8 path")]);
    let device = Loop::attach(&image, &mnt);
    let mut r = ocf(
        "fs",
        Path::new(HEARTBEAT).join("Filesystem"),
        &[
            ("device", &device.dev),
            ("directory", mnt.to_str().expect("utf-8 path")),
            ("fstype", "ext4"),
        ],
    );
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
    assert_eq!(timed("start", r.start(deadline())).await, Ok(()));
    assert!(mounted(&mnt), "{} mounted after start", mnt.display());
    std::fs::write(mnt.join("catalog.dump"), b"bacula").expect("write on the mount");
    assert_eq!(timed("start (running)", r.start(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Running)
    );
    assert_eq!(timed("stop", r.stop(deadline())).await, Ok(()));
    assert!(!mounted(&mnt), "unmounted after stop");
    assert!(
        !mnt.join("catalog.dump").exists(),
        "the file lives on the device"
    );
    assert_eq!(timed("stop (stopped)", r.stop(deadline())).await, Ok(()));
    assert_eq!(
        timed("monitor", r.monitor(deadline())).await,
        Ok(ResourceState::Stopped)
    );
}

fn ocf(name: &str, agent: PathBuf, kv: &[(&str, &str)]) -> OcfResource {
    OcfResource::new(
        name,
        OcfParams {
            agent,
            ocf_root: OCF_ROOT.into(),
            instance: name.into(),
            params: params(kv),
            prefix: Vec::new(),
        },
    )
    .expect("valid OCF parameters")
}

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn deadline() -> Instant {
    Instant::now() + STEP
}

fn state_in(dir: &Path) -> String {
    dir.join(format!("state-{}", rand_suffix()))
        .display()
        .to_string()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Awaits `f`, printing how long it took.
async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = StdInstant::now();
    let out = f.await;
    eprintln!("{what}: {:?}", started.elapsed());
    out
}

/// Writes a plain-sh OCF agent `dir/wktest/<name>` keeping its state in a file, with the
/// given action bodies replacing the defaults.
fn test_agent(dir: &Path, name: &str, overrides: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let body = |action: &str, default: &str| {
        overrides
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(default.to_owned(), |(_, b)| (*b).to_owned())
    };
    let script = format!(
        "#!/bin/sh\n\
         # watchkeeper test agent {name}: sources nothing; state is a file.\n\
         state=\"$OCF_RESKEY_state\"\n\
         case \"$1\" in\n\
         start) {start} ;;\n\
         stop) {stop} ;;\n\
         monitor) {monitor} ;;\n\
         validate-all) exit 0 ;;\n\
         meta-data) echo '<resource-agent name=\"{name}\"><actions><action name=\"start\" \
         timeout=\"2s\"/></actions></resource-agent>'; exit 0 ;;\n\
         *) exit 3 ;;\n\
         esac\n",
        start = body("start", "touch \"$state\" && exit 0; exit 1"),
        stop = body("stop", "rm -f \"$state\" && exit 0; exit 1"),
        monitor = body("monitor", "[ -f \"$state\" ] && exit 0; exit 7"),
    );
    let provider = dir.join("wktest");
    std::fs::create_dir_all(&provider).expect("agent dir");
    let path = provider.join(name);
    std::fs::write(&path, script).expect("write agent");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
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

/// True when root; otherwise says why the test is skipped, or fails under CI=true.
fn root_or_skip(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}: CI=true runs as root, so this test must run"
    );
    eprintln!("SKIPPED (not root): {why}");
    false
}

/// Runs a command that must succeed and returns its stdout.
fn run_ok(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv.join(" ")));
    assert!(
        out.status.success(),
        "{}: {}: {}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_str().expect("utf-8 path");
    info.lines().any(|l| l.split(' ').nth(4) == Some(dir))
}

/// A network namespace this test created; deleted (by its name) on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> std::io::Result<Self> {
        let status = Command::new("ip").args(["netns", "add", name]).status()?;
        if status.success() {
            Ok(Self(name.to_owned()))
        } else {
            Err(std::io::Error::other(format!(
                "ip netns add {name}: {status}"
            )))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair inside it.
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A loop device this test attached; unmounted (if the test left it mounted) and detached, by
/// its name, on drop.
struct Loop {
    dev: String,
    mnt: PathBuf,
}

impl Loop {
    fn attach(image: &Path, mnt: &Path) -> Self {
        let dev = run_ok(&[
            "losetup",
            "--find",
            "--show",
            image.to_str().expect("utf-8 path"),
        ])
        .trim()
        .to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Self {
            dev,
            mnt: mnt.to_owned(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}
