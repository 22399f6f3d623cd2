//! `SystemdResource` against a fake `systemctl` that records its argv and answers as systemctl
//! 252 does for an active, a failed, a missing and a hanging unit, and on a host not booted with
//! systemd; then one run against the real `/bin/systemctl` of this machine.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drivers::resource::systemd::{SystemdParams, SystemdResource, DEFAULT_SYSTEMCTL};
use drivers::resource::{Resource as _, ResourceErrorKind, ResourceState};
use tokio::time::Instant;

/// A fake systemctl in a temporary directory, with its argv log and unit states beside it.
struct Fake {
    dir: tempfile::TempDir,
    systemctl: PathBuf,
}

impl Fake {
    fn new() -> Self {
        let dir = hwtests::util::unique_tempdir("wksysd").expect("tempdir");
        let systemctl = dir.path().join("systemctl");
        let script = FAKE.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&systemctl, script).expect("write fake systemctl");
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Self { dir, systemctl }
    }

    fn resource(&self, unit: &str) -> SystemdResource {
        SystemdResource::new(
            format!("svc-{unit}"),
            SystemdParams {
                unit: unit.to_owned(),
                systemctl: self.systemctl.clone(),
            },
        )
        .expect("valid unit")
    }

    fn argv_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The fake: `--no-pager --no-ask-password VERB [--property=...] -- UNIT`, one line of argv
/// per run in argv.log, unit state in a file per unit.
const FAKE: &str = r#"#!/bin/sh
dir='@DIR@'
echo "$*" >> "$dir/argv.log"
verb=''
unit=''
seen_dashes=''
for a in "$@"; do
  if [ -n "$seen_dashes" ]; then unit="$a"
  elif [ "$a" = "--" ]; then seen_dashes=1
  else case "$a" in --*) ;; *) [ -z "$verb" ] && verb="$a" ;; esac
  fi
done
state_file="$dir/$unit.state"
state=$(cat "$state_file" 2>/dev/null || echo inactive)
case "$unit" in
  nobus.service)
    echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
    echo "Failed to connect to bus: Host is down" >&2
    exit 1 ;;
  hang.service)
    echo $$ > "$dir/hang.pid"
    exec sleep 60 ;;
esac
case "$verb" in
  start)
    case "$unit" in
      good.service) echo active > "$state_file"; exit 0 ;;
      broken.service)
        echo failed > "$state_file"
        echo "Job for broken.service failed because the control process exited with error code." >&2
        echo "See \"systemctl status broken.service\" and \"journalctl -xeu broken.service\" for details." >&2
        exit 1 ;;
      *) echo "Failed to start $unit: Unit $unit not found." >&2; exit 5 ;;
    esac ;;
  stop)
    case "$unit" in
      good.service|broken.service) echo inactive > "$state_file"; exit 0 ;;
      *) echo "Failed to stop $unit: Unit $unit not loaded." >&2; exit 5 ;;
    esac ;;
  is-active)
    echo "$state"
    [ "$state" = active ] && exit 0
    exit 3 ;;
  show)
    case "$unit" in
      good.service|broken.service) load=loaded ;;
      *) load=not-found ;;
    esac
    echo "Result=$( [ "$state" = failed ] && echo exit-code || echo success )"
    echo "ExecMainCode=$( [ "$state" = failed ] && echo 1 || echo 0 )"
    echo "ExecMainStatus=$( [ "$state" = failed ] && echo 1 || echo 0 )"
    echo "LoadState=$load"
    echo "ActiveState=$state"
    echo "SubState=$( [ "$state" = active ] && echo running || echo dead )"
    exit 0 ;;
esac
echo "Unknown command verb $verb." >&2
exit 1
"#;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn active_unit_starts_stops_and_is_monitored() {
    let fake = Fake::new();
    let mut unit = fake.resource("good.service");
    assert_eq!(unit.monitor(deadline()).await, Ok(ResourceState::Stopped));
    unit.start(deadline()).await.expect("start");
    assert_eq!(unit.monitor(deadline()).await, Ok(ResourceState::Running));
    unit.start(deadline()).await.expect("start again");
    unit.stop(deadline()).await.expect("stop");
    unit.stop(deadline()).await.expect("stop again");
    assert_eq!(unit.monitor(deadline()).await, Ok(ResourceState::Stopped));
    let log = fake.argv_log();
    assert_eq!(
        log.first().map(String::as_str),
        Some("--no-pager --no-ask-password is-active -- good.service")
    );
    // A stopped unit is also asked whether systemd knows it at all.
    assert_eq!(
        log.get(1).map(String::as_str),
        Some(
            "--no-pager --no-ask-password show \
             --property=LoadState,ActiveState,SubState,Result,ExecMainStatus,ExecMainCode \
             -- good.service"
        )
    );
    assert_eq!(
        log.get(2).map(String::as_str),
        Some("--no-pager --no-ask-password start -- good.service")
    );
    // start is confirmed by reading the state back.
    assert_eq!(
        log.get(3).map(String::as_str),
        Some("--no-pager --no-ask-password is-active -- good.service")
    );
    assert!(log
        .iter()
        .any(|l| l == "--no-pager --no-ask-password stop -- good.service"));
    assert_eq!(
        unit.metrics()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn failed_unit_is_reported_with_systemd_reasons() {
    let fake = Fake::new();
    let mut unit = fake.resource("broken.service");
    let e = unit.start(deadline()).await.expect_err("start must fail");
    assert_eq!(e.kind, ResourceErrorKind::Failed, "{e}");
    assert!(
        e.message
            .contains("broken.service failed: Result=exit-code, ExecMainStatus=1"),
        "{e}"
    );
    assert!(e.message.contains("Job for broken.service failed"), "{e}");
    let e = unit
        .monitor(deadline())
        .await
        .expect_err("monitor must fail");
    assert_eq!(e.kind, ResourceErrorKind::Failed, "{e}");
    assert!(
        e.message
            .contains("broken.service failed: Result=exit-code, ExecMainStatus=1"),
        "{e}"
    );
    // Stopping a failed unit leaves it stopped, and that is a success.
    unit.stop(deadline()).await.expect("stop");
    assert_eq!(unit.monitor(deadline()).await, Ok(ResourceState::Stopped));
}

#[tokio::test]
async fn missing_unit_is_not_installed_and_stopping_it_succeeds() {
    let fake = Fake::new();
    let mut unit = fake.resource("nosuch.service");
    let e = unit.start(deadline()).await.expect_err("start must fail");
    assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
    assert!(e.message.contains("not found"), "{e}");
    let e = unit
        .monitor(deadline())
        .await
        .expect_err("monitor must fail");
    assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
    unit.stop(deadline())
        .await
        .expect("a unit systemd does not know is stopped");
}

#[tokio::test]
async fn hanging_systemctl_is_killed_at_the_deadline() {
    let fake = Fake::new();
    let mut unit = fake.resource("hang.service");
    let started = Instant::now();
    let e = unit
        .start(Instant::now() + Duration::from_millis(500))
        .await
        .expect_err("start must time out");
    assert_eq!(e.kind, ResourceErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(fake.dir.path().join("hang.pid")).expect("pid file");
    let proc_dir = Path::new("/proc").join(pid.trim());
    assert!(
        !proc_dir.exists(),
        "the hanging systemctl {} survived",
        pid.trim()
    );
}

#[tokio::test]
async fn host_without_systemd_is_not_installed() {
    let fake = Fake::new();
    let mut unit = fake.resource("nobus.service");
    for result in [
        unit.start(deadline()).await.err(),
        unit.stop(deadline()).await.err(),
        unit.monitor(deadline()).await.err(),
    ] {
        let e = result.expect("must fail");
        assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
        assert!(e.message.contains("not been booted with systemd"), "{e}");
    }
}

#[tokio::test]
async fn missing_systemctl_is_not_installed() {
    let dir = hwtests::util::unique_tempdir("wksysd").expect("tempdir");
    let mut unit = SystemdResource::new(
        "svc",
        SystemdParams {
            unit: "bacula-dir.service".to_owned(),
            systemctl: dir.path().join("no-systemctl-here"),
        },
    )
    .expect("valid unit");
    let e = unit.monitor(deadline()).await.expect_err("must fail");
    assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
}

/// The real systemctl: on a host whose PID 1 is not systemd (no /run/systemd/system) it must
/// be NotInstalled with systemctl's explanation; under systemd, journald runs and a unit that
/// does not exist is NotInstalled.
#[tokio::test]
async fn real_systemctl() {
    if !Path::new(DEFAULT_SYSTEMCTL).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI machines have {DEFAULT_SYSTEMCTL}"
        );
        eprintln!("skipped: no {DEFAULT_SYSTEMCTL} on this machine");
        return;
    }
    let real =
        |unit: &str| SystemdResource::new("svc", SystemdParams::new(unit)).expect("valid unit");
    if Path::new("/run/systemd/system").exists() {
        let mut journald = real("systemd-journald.service");
        assert_eq!(
            journald.monitor(deadline()).await,
            Ok(ResourceState::Running)
        );
        let mut missing = real("watchkeeper-test-no-such-unit.service");
        let e = missing.monitor(deadline()).await.expect_err("must fail");
        assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
    } else {
        let mut unit = real("bacula-dir.service");
        let e = unit.monitor(deadline()).await.expect_err("must fail");
        assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
        assert!(e.message.contains("not been booted with systemd"), "{e}");
        let e = unit.start(deadline()).await.expect_err("must fail");
        assert_eq!(e.kind, ResourceErrorKind::NotInstalled, "{e}");
    }
}
