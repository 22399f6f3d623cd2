//! The rig on QEMU guests: scenarios 1 and 3 of the hardware-in-the-loop issue on two guests
//! with real kernel drivers (i6300esb watchdog, 16550 UARTs, e1000 NICs) and BMCs that really
//! switch a guest off, judged from outside the guests (consoles, QMP, qemu processes).
//!
//! 1. `kill-holder`: the holder's agent is SIGKILLed inside its guest. Its watchdog resets the
//!    guest at the timeout (QMP `WATCHDOG`); the standby declares it dead, fences it through its
//!    `ipmi_sim` over RMCP+ (the qemu process ends), and only then starts the group.
//! 2. `partition`: serial cable cut and carrier lost on both heartbeat NICs, management network
//!    up: exactly one guest survives, holding the group; the other was switched off by its BMC.
//!
//! A second test runs the rest of the set once each, so that none of them rots: scenario 2
//! (`freeze-holder`), 6 (`watchdog-reboot`) and `bad-cable` on the pair, 3 with a witness and
//! 4 (`isolate-holder`) on three guests, and 5 (`bmc-down`, the PDU level) on the pair with a
//! PDU.
//!
//! After each: no resource ran on two powered guests at once (marker resources from the
//! consoles; the virtual IP from ARP probes on the guests' client LAN, as a client would see
//! it), the switched-off guest boots again and rejoins. Both scenarios share one boot of the rig (CI time).
//!
//! Needs what `scripts/deps-qemu.sh` and `scripts/deps-ipmi.sh` install; it skips (saying why)
//! when the guest kernel or QEMU is missing, except under CI=true, where it fails instead.

use std::path::Path;
use std::time::{Duration, Instant};

use hwtests::qemu::rig::{guest_agent, QemuRig, FEED_INTERVAL};
use hwtests::qemu::scenario::{table, QemuRunner};
use hwtests::qemu::Rig;
use hwtests::rig::desc::RigDesc;

#[test]
fn a_killed_holder_is_reset_and_fenced_and_a_partition_leaves_one_survivor() {
    if !qemu_available() {
        return;
    }
    let t0 = Instant::now();
    let agent = guest_agent().expect("the agent built for musl");
    let build_s = t0.elapsed().as_secs_f64();
    let desc = rig("qemu-pair.toml");
    let deadtime = desc.deadtime;
    let rig = QemuRig::build(desc, &agent).expect("build the rig");
    let wd_timeout = rig.watchdog_timeout;
    let mut runner = QemuRunner::start(rig).unwrap_or_else(|e| panic!("{e}"));
    let holder = runner.holder();

    let kill = runner.run("kill-holder").unwrap_or_else(|e| panic!("{e}"));
    let at = |v: Option<f64>, what: &str| v.unwrap_or_else(|| panic!("kill-holder: no {what}"));
    // The last feed came at most one feed interval before the kill; the device fires one
    // timeout after it.
    let wd = at(kill.watchdog_ms, "WATCHDOG");
    let low = (wd_timeout - FEED_INTERVAL).as_secs_f64() * 1000.0 - 50.0;
    let high = wd_timeout.as_secs_f64() * 1000.0 + 500.0;
    assert!(
        (low..=high).contains(&wd),
        "WATCHDOG {wd:.0} ms after SIGKILL; timeout {wd_timeout:?}"
    );
    let detect = at(kill.detect_ms, "detection");
    assert!(
        detect >= deadtime.as_secs_f64() * 1000.0 - 500.0,
        "declared dead after {detect:.0} ms, before the deadtime {deadtime:?}"
    );
    let off = at(kill.off_ms, "power-off");
    let confirmed = at(kill.fence_confirmed_ms, "fence confirmation");
    let takeover = at(kill.takeover_ms, "takeover");
    assert!(
        detect <= off && off <= confirmed && confirmed <= takeover,
        "{kill:?}"
    );
    assert_ne!(runner.holder(), holder, "the group did not move");

    let part = runner.run("partition").unwrap_or_else(|e| panic!("{e}"));
    let off = part.off_ms.expect("partition: nobody switched off");
    assert!(
        off >= deadtime.as_secs_f64() * 1000.0 - 500.0,
        "a guest was switched off {off:.0} ms into the partition, before the deadtime"
    );
    assert!(runner.rig.overlaps().is_empty());
    assert_eq!(runner.rig.holders(), vec![runner.holder()]);
    // The virtual IP was seen from outside, answered by one guest at a time.
    for (name, samples) in runner.rig.vip_samples() {
        let answered = samples.iter().filter(|s| s.owners.len() == 1).count();
        assert!(answered > 10, "{name}: only {answered} ARP probes answered");
        assert!(
            samples.iter().all(|s| s.owners.len() <= 1),
            "{name}: two owners"
        );
    }
    assert!(
        runner.rig.has_vips(),
        "qemu-pair.toml's group has a virtual IP"
    );

    eprintln!(
        "qemu rig: agent build {build_s:.1} s; rig boot to a holder {:.1} s; whole test {:.1} s{}",
        runner.boot_s,
        t0.elapsed().as_secs_f64(),
        table(&runner.timings)
    );
    assert!(t0.elapsed() < Duration::from_secs(600));
}

#[test]
fn freeze_witness_isolation_bmc_down_watchdog_reboot_and_a_bad_cable() {
    if !qemu_available() {
        return;
    }
    let t0 = Instant::now();
    let agent = guest_agent().expect("the agent built for musl");
    let plan: [(&str, &[&str]); 3] = [
        (
            "qemu-pair.toml",
            &["freeze-holder", "watchdog-reboot", "bad-cable"],
        ),
        ("qemu-witness.toml", &["partition", "isolate-holder"]),
        ("qemu-pdu.toml", &["bmc-down"]),
    ];
    let mut report = String::new();
    for (file, scenarios) in plan {
        let rig = QemuRig::build(rig(file), &agent).expect("build the rig");
        let mut runner = QemuRunner::start(rig).unwrap_or_else(|e| panic!("{file}: {e}"));
        for name in scenarios {
            let t = runner
                .run(name)
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            match *name {
                "freeze-holder" | "bmc-down" => {
                    let off = t.off_ms.expect("switched off");
                    let takeover = t.takeover_ms.expect("taken over");
                    assert!(off <= takeover, "{t:?}");
                }
                "isolate-holder" => {
                    let wd = t.watchdog_ms.expect("self-fenced");
                    assert!(wd <= t.takeover_ms.expect("taken over"), "{t:?}");
                }
                "watchdog-reboot" => assert!(t.reboot_ms.is_some(), "{t:?}"),
                _ => {}
            }
        }
        assert!(runner.rig.overlaps().is_empty());
        report.push_str(&format!("{file}:{}", table(&runner.timings)));
    }
    eprintln!(
        "qemu rig, the rest of the set: {:.1} s\n{report}",
        t0.elapsed().as_secs_f64()
    );
}

/// Whether QEMU and the guest kernel are installed; prints `SKIPPED` if not, and fails instead
/// under CI=true.
fn qemu_available() -> bool {
    match Rig::locate() {
        Ok(_) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{why} (CI=true: this test must run)")
        }
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn rig(file: &str) -> RigDesc {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rigs")
        .join(file);
    RigDesc::load(&path).expect("rig description")
}
