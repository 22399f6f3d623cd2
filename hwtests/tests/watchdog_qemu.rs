//! Self-fencing with a real kernel watchdog: the agent, built for musl, runs in a QEMU guest
//! with an emulated i6300esb (`-action watchdog=reset`) and a small ext4 disk for its state.
//!
//! One guest, three boots, all observed from the host (console lines and QMP events, both
//! stamped on arrival):
//! 1. `watchkeeper watchdog list` shows the device; `watchdog test` with a timeout beyond the
//!    device's maximum is refused with the device's range and disarms it again. The agent arms
//!    the watchdog (timeout 3 s) and feeds it for longer than the timeout (no reset), then is
//!    killed with SIGKILL: QMP reports `WATCHDOG` at the timeout and the guest reboots. (This
//!    order also proves that a disarm by an earlier process cannot leave the kernel's
//!    magic-close flag set, which would let the killed agent's close stop the timer.)
//! 2. The agent reports that the watchdog caused the reboot, with no last words (it was killed
//!    without warning). It is stopped cleanly (SIGTERM): magic close, and no reset follows for
//!    well over the timeout. Then `watchkeeper watchdog test` arms the device, feeds it, stops
//!    with last words, and the watchdog resets the guest again.
//! 3. The agent reports the watchdog reset and the test's last words, read from the disk.
//!
//! Needs what `scripts/deps-qemu.sh` installs; it skips (saying why) when that is missing,
//! except under CI=true, where it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hwtests::qemu::{Guest, Rig};

const TIMEOUT: Duration = Duration::from_secs(3);
const FEED_INTERVAL_MS: u64 = 250;
const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(30);

#[test]
fn the_watchdog_resets_a_killed_agents_guest_and_the_next_boot_says_why() {
    let rig = match Rig::locate() {
        Ok(rig) => rig,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: {why}");
            return;
        }
        Err(why) => panic!("{why} (CI=true: this test must run)"),
    };
    let started = Instant::now();
    let agent = guest_agent();
    let build_s = started.elapsed().as_secs_f64();
    let dir = hwtests::util::unique_tempdir("wkqemu").expect("tempdir");
    let initrd = dir.path().join("initrd.cpio");
    let mut archive = rig
        .initramfs(&["i6300esb", "virtio_pci", "virtio_blk", "ext4"])
        .expect("initramfs");
    archive
        .dir("wk")
        .file(
            "wk/watchkeeper",
            0o755,
            &std::fs::read(&agent).expect("agent binary"),
        )
        .file("wk/wk.toml", 0o644, guest_config().as_bytes())
        .file(
            "wk/cluster.key",
            0o600,
            format!("{}\n", "5a".repeat(32)).as_bytes(),
        )
        .file("scenario.sh", 0o755, SCENARIO.as_bytes());
    std::fs::write(&initrd, archive.finish()).expect("write initrd");
    let disk = dir.path().join("state.img");
    make_disk(&disk);

    let guest = Guest::start(
        &rig,
        &initrd,
        dir.path(),
        &[
            "-device",
            "i6300esb",
            "-action",
            "watchdog=reset",
            "-drive",
            &format!("file={},format=raw,if=virtio", disk.display()),
        ],
    )
    .expect("start qemu");
    let t0 = Instant::now();
    let fail = |what: &str| -> ! {
        panic!(
            "{what}\nconsole ({}):\n{}\nQMP events: {:?}",
            guest.console_log().display(),
            std::fs::read_to_string(guest.console_log()).unwrap_or_default(),
            guest.events()
        )
    };
    let line = |text: &str, after: Instant, timeout: Duration| {
        guest
            .wait_line(text, after, timeout)
            .map(|(at, _)| at)
            .unwrap_or_else(|| fail(&format!("no console line {text:?}")))
    };
    let log = |event: &str, after: Instant| {
        guest
            .wait_log(event, after, STEP)
            .unwrap_or_else(|| fail(&format!("no agent log event {event}")))
    };

    // Boot 1: armed, fed past the timeout, killed.
    let boot1 = line("WK-GUEST scenario boot 1", t0, BOOT);
    let listed = line(
        "/dev/watchdog0  identity \"i6300ESB timer\"  state inactive",
        boot1,
        STEP,
    );
    let refused = line("WK-GUEST too-long rc=69", listed, STEP);
    let said = guest.console().into_iter().any(|(at, l)| {
        at >= listed
            && at <= refused
            && l.contains("timeout 5000s is out of range: the device takes 1s to 2046s")
    });
    assert!(
        said,
        "no clear error for a timeout beyond the device's maximum"
    );
    let (armed_at, armed) = log("watchdog_armed", refused);
    assert_eq!(armed["timeout_ms"], 3000, "{armed}");
    assert_eq!(armed["identity"], "i6300ESB timer", "{armed}");
    assert_eq!(armed["realtime"], true, "{armed}");
    assert_eq!(armed["memory_locked"], true, "{armed}");
    let killed = line("WK-GUEST killed", armed_at, STEP);
    assert!(
        killed - armed_at > TIMEOUT,
        "the agent was killed only {:?} after arming",
        killed - armed_at
    );
    assert!(
        guest.events_between("WATCHDOG", t0, killed).is_empty(),
        "the watchdog fired while the agent fed it"
    );
    let fired = guest
        .wait_event("WATCHDOG", killed, STEP)
        .unwrap_or_else(|| fail("no WATCHDOG event after SIGKILL"));
    assert_eq!(fired.data["action"], "reset", "{:?}", fired.data);
    let kill_to_reset = fired.at - killed;
    // The last feed came at most one interval before the kill; the device fires one timeout
    // after it.
    assert!(
        kill_to_reset >= TIMEOUT - Duration::from_millis(FEED_INTERVAL_MS + 150)
            && kill_to_reset <= TIMEOUT + Duration::from_millis(500),
        "WATCHDOG {kill_to_reset:?} after SIGKILL; timeout {TIMEOUT:?}"
    );
    guest
        .wait_event("RESET", fired.at, STEP)
        .unwrap_or_else(|| fail("no RESET after WATCHDOG"));

    // Boot 2: the agent says why the host rebooted; then a clean stop does not reset.
    let boot2 = line("WK-GUEST scenario boot 2", fired.at, BOOT);
    let reboot_s = (boot2 - fired.at).as_secs_f64();
    let listed2 = line("/dev/watchdog0  identity \"i6300ESB timer\"", boot2, STEP);
    line("the last reboot was caused by this watchdog", listed2, STEP);
    let (_, previous) = log("watchdog_previous_run", boot2);
    assert_eq!(previous["watchdog_reset"], true, "{previous}");
    assert_eq!(previous["armed_before"], true, "{previous}");
    assert_eq!(previous["last_words"], "-", "{previous}");
    let boot_status_2 = previous["boot_status"].as_str().unwrap_or("?").to_owned();
    let (disarmed_at, _) = log("watchdog_disarmed", boot2);
    let stopped = line("WK-GUEST stopped rc=0", boot2, STEP);
    let quiet_until = line("WK-GUEST no-reset", stopped, STEP);
    assert!(quiet_until - disarmed_at > TIMEOUT * 2);
    assert!(
        guest
            .events_between("WATCHDOG", disarmed_at, quiet_until)
            .is_empty(),
        "the watchdog fired after a clean disarm"
    );

    // `watchkeeper watchdog test`: feeds, stops with last words, the device resets the guest.
    let test_stop = line("then stopped feeding", quiet_until, STEP);
    let fired2 = guest
        .wait_event("WATCHDOG", test_stop, STEP)
        .unwrap_or_else(|| fail("no WATCHDOG event after `watchdog test`"));
    let test_to_reset = fired2.at - test_stop;
    assert!(
        test_to_reset >= TIMEOUT - Duration::from_millis(500)
            && test_to_reset <= TIMEOUT + Duration::from_millis(500),
        "WATCHDOG {test_to_reset:?} after the test stopped feeding"
    );

    // Boot 3: the reason is read back from the disk.
    let boot3 = line("WK-GUEST scenario boot 3", fired2.at, BOOT);
    let (_, previous3) = log("watchdog_previous_run", boot3);
    assert_eq!(previous3["watchdog_reset"], true, "{previous3}");
    let words = previous3["last_words"].as_str().unwrap_or_default();
    assert!(words.contains("watchkeeper watchdog test"), "{previous3}");
    let message = previous3["message"].as_str().unwrap_or_default();
    assert!(message.contains("its last words"), "{message}");
    line("WK-GUEST done rc=0", boot3, STEP);

    eprintln!(
        "qemu watchdog: agent build {build_s:.1} s; boot 1 after {:.1} s; SIGKILL -> WATCHDOG \
         {} ms; WATCHDOG -> guest running its scenario again {reboot_s:.1} s; boot status after reset: \
         {boot_status_2}; clean disarm: no reset in {:.1} s; watchdog test stop -> WATCHDOG {} \
         ms; whole run {:.1} s",
        (boot1 - t0).as_secs_f64(),
        kill_to_reset.as_millis(),
        (quiet_until - disarmed_at).as_secs_f64(),
        test_to_reset.as_millis(),
        t0.elapsed().as_secs_f64(),
    );
}

/// Node alpha feeds the guest's i6300esb; beta only completes the cluster.
fn guest_config() -> String {
    format!(
        r#"[cluster]
name = "qemu"
key_file = "cluster.key"

[[link]]
name = "lo0"
kind = "udp"

[[node]]
id = 1
name = "alpha"
control_socket = "/run/wk.sock"
state_dir = "/state/alpha"
links.lo0 = {{ address = "127.0.0.1:5405" }}
watchdog = {{ device = "/dev/watchdog0", timeout = "{}s", feed_interval = "{FEED_INTERVAL_MS}ms" }}

[[node]]
id = 2
name = "beta"
links.lo0 = {{ address = "127.0.0.1:5406" }}
"#,
        TIMEOUT.as_secs()
    )
}

/// The guest's scenario; the boot number lives on the state disk.
const SCENARIO: &str = r#"#!/bin/sh
n=$(cat /state/boot 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /state/boot; sync
i=0; while [ ! -e /dev/watchdog0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "WK-GUEST scenario boot $n: $(cat /sys/class/watchdog/watchdog0/identity) bootstatus=$(cat /sys/class/watchdog/watchdog0/bootstatus)"
boot=$(cat /proc/sys/kernel/random/boot_id)
/wk/watchkeeper watchdog list
start_agent() {
  /wk/watchkeeper run --log-json --node alpha --config /wk/wk.toml &
  pid=$!
  i=0
  until grep -q "$boot" /state/alpha/watchdog.armed 2>/dev/null || [ $i -ge 300 ]; do
    sleep 0.1; i=$((i + 1))
  done
}
case $n in
1)
  # Beyond the i6300esb's range: refused with the device's range, disarmed again, no reset.
  /wk/watchkeeper watchdog test --i-understand-this-resets-the-host --device /dev/watchdog0 \
    --timeout-s 5000
  echo "WK-GUEST too-long rc=$?"
  start_agent; sleep 5
  kill -9 $pid; echo "WK-GUEST killed"
  sleep 60 ;;
2)
  start_agent; sleep 1
  kill -TERM $pid; wait $pid; echo "WK-GUEST stopped rc=$?"
  sleep 7; echo "WK-GUEST no-reset"
  /wk/watchkeeper watchdog test --i-understand-this-resets-the-host --config /wk/wk.toml \
    --node alpha --timeout-s 3
  echo "WK-GUEST test-exit rc=$?"
  sleep 60 ;;
*)
  start_agent; sleep 1
  kill -TERM $pid; wait $pid; echo "WK-GUEST done rc=$?" ;;
esac
"#;

/// The agent for the guest: `WK_GUEST_AGENT` if set, else built here for
/// x86_64-unknown-linux-musl (release, so it is small) into this build's target directory.
fn guest_agent() -> PathBuf {
    if let Some(bin) = std::env::var_os("WK_GUEST_AGENT") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> -> target
    let target = exe.ancestors().nth(3).expect("target directory").to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "-p", "agent", "--bin", "watchkeeper"])
        .args(["--target", MUSL])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the agent for {MUSL} failed");
    let bin = target.join(MUSL).join("release/watchkeeper");
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

/// A 16 MiB ext4 image for the guest's state directory.
fn make_disk(path: &Path) {
    let file = std::fs::File::create(path).expect("disk image");
    file.set_len(16 << 20).expect("size disk image");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const MUSL: &str = "x86_64-unknown-linux-musl";
