//! The emulated rig on real processes: each fault scenario once, then a short chaos run, on the
//! rig description a user would start from (`hwtests/rigs/pair.toml`: namespaces, a virtual IP,
//! a PostgreSQL Catalog), or, when not root, on the loopback rig (marker resources only; the
//! test says which faults that leaves out).
//!
//! `CHAOS_SEED` replays a chaos run; `CHAOS_FAULTS` sets its length (30 by default, as in CI).
//!
//! `hwtests/rigs/mixed.toml` runs the fencing scenarios with every kind of fence device.

use std::path::Path;

use hwtests::rig::desc::RigDesc;
use hwtests::rig::emulated::Emulated;
use hwtests::rig::scenario::Runner;

fn rig() -> Emulated {
    let root = nix::unistd::geteuid().is_root();
    rig_from(if root { "pair.toml" } else { "loopback.toml" })
}

/// Builds the shipped rig `file`, printing what this machine cannot give it.
fn rig_from(file: &str) -> Emulated {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root: the full rig must run there"
        );
        eprintln!(
            "not root: {file} on loopback (no virtual IP, Catalog, carrier loss, firewall or \
             full disk)"
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rigs")
        .join(file);
    let desc = RigDesc::load(&path).expect("rig description");
    let rig = Emulated::build(desc).expect("rig");
    for (fault, why) in &rig.limits.missing {
        eprintln!("note: {fault} is not available here: {why}");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true") || rig.limits.missing.is_empty(),
        "CI must run every fault: {:?}",
        rig.limits.missing
    );
    rig
}

#[test]
fn every_rig_description_shipped_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rigs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("rigs") {
        let path = entry.expect("entry").path();
        let desc = RigDesc::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(desc.hosts.len() >= 2, "{}", path.display());
        n += 1;
    }
    assert!(n >= 3, "{n} rig descriptions");
}

fn scenarios(names: &[&str]) {
    let rig = rig();
    let mut runner = Runner::start(rig).unwrap_or_else(|e| panic!("{e}"));
    for name in names {
        let skip = runner.rig.limits.missing.iter().any(|(m, _)| m == name);
        if skip {
            eprintln!("{name}: not available on this machine (see the note above)");
            continue;
        }
        runner.run(name).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_group_moves_whole_and_a_lost_holder_is_fenced_first() {
    scenarios(&["switchover", "kill-holder", "kill-standby", "freeze-holder"]);
}

#[test]
fn link_faults_leave_one_holder_and_no_false_failover() {
    scenarios(&[
        "partition",
        "isolate-holder",
        "one-way",
        "lossy-lan",
        "corrupt-links",
        "clock-jump",
    ]);
}

#[test]
fn no_takeover_without_a_confirmed_fence_or_a_durable_epoch() {
    scenarios(&["bmc-lies", "bmc-down", "disk-full"]);
}

#[test]
fn a_failed_start_or_a_hung_stop_never_splits_the_group() {
    scenarios(&["start-failure", "stop-hang"]);
}

/// The rig fenced by all four kinds of device (`hwtests/rigs/mixed.toml`: alpha by Redfish then
/// a Modbus PDU, beta by IPMI then an SNMP PDU), each reached through the management network.
/// In turn: a killed holder fenced by its first level; a holder whose first level is
/// unreachable fenced by its second (beta's SNMP PDU, then alpha's Modbus PDU); every device
/// of a holder lying, so nothing starts until they obey. At the end every one of the four
/// devices has switched its host off, and acknowledged an off it ignored, by its own log.
#[test]
fn every_kind_of_fence_device_fences_and_a_dead_first_level_hands_over() {
    let rig = rig_from("mixed.toml");
    let mut runner = Runner::start(rig).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runner.rig.name(runner.holder()), "alpha");
    for name in [
        "kill-holder",
        "bmc-down",
        "bmc-lies",
        "bmc-lies",
        "bmc-down",
    ] {
        runner.run(name).unwrap_or_else(|e| panic!("{e}"));
    }
    for i in 0..2 {
        for d in runner.rig.fence_devices(i) {
            assert!(
                !d.off_times().is_empty(),
                "{} never switched {} off",
                d.name(),
                runner.rig.name(i)
            );
            assert!(
                d.ignored_offs() > 0,
                "{} never lied about an off for {}",
                d.name(),
                runner.rig.name(i)
            );
        }
    }
    // The scenarios said which level acted.
    let downs: Vec<&String> = runner
        .log
        .iter()
        .filter(|l| l.starts_with("bmc-down: ") && l.contains("fenced by a later level"))
        .collect();
    assert_eq!(downs.len(), 2, "{:?}", runner.log);
}

#[test]
fn chaos_on_the_rig() {
    let faults: usize = std::env::var("CHAOS_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let mut runner = Runner::start(rig()).unwrap_or_else(|e| panic!("{e}"));
    runner.chaos(seed, faults).unwrap_or_else(|e| panic!("{e}"));
}

/// The shipped rig `file` built here and exported as a real-rig description (its path), or
/// `None` when not root: the real backend reaches the emulated hosts through their namespaces.
fn exported(file: &str) -> Option<(Emulated, std::path::PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root: the real backend must be tested there"
        );
        eprintln!(
            "SKIPPED: the real backend reaches the emulated hosts through their namespaces (root)"
        );
        return None;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rigs")
        .join(file);
    let emulated = Emulated::build(RigDesc::load(&path).expect("rig description")).expect("rig");
    let exported = emulated.export_real().expect("export");
    Some((emulated, exported))
}

/// The real-rig backend, pointed at this machine's emulated hosts through the description
/// [`Emulated::export_real`] writes: it reaches them only by the commands a real rig's
/// description gives (`nsenter` for `ssh`, `ipmitool` against the BMCs, a boot script for the
/// unit), and must fail over, fence and rejoin exactly as the emulated backend does, with the
/// group placed from the agents' own logs. Faults it has no means for are declined by name.
#[test]
fn the_real_backend_drives_hosts_only_through_their_commands() {
    let Some((emulated, exported)) = exported("pair.toml") else {
        return;
    };
    let desc = RigDesc::load(&exported).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(desc.backend, hwtests::rig::desc::Backend::Real);
    let real = hwtests::rig::real::Real::connect(desc).unwrap_or_else(|e| panic!("{e}"));
    let mut runner = Runner::start(real).unwrap_or_else(|e| panic!("{e}"));
    for name in ["kill-holder", "switchover", "freeze-holder", "kill-standby"] {
        runner.run(name).unwrap_or_else(|e| panic!("{e}"));
    }
    // The failovers were timed from the agents' logs and the fencer's record.
    assert!(
        runner
            .timings
            .iter()
            .any(|t| t.scenario == "kill-holder" && t.fenced_ms > 0.0 && t.group_ms > t.fenced_ms),
        "{:?}",
        runner.timings
    );
    // The exported description gives no way to pull the cable or to make a BMC lie.
    for (name, fault) in [
        ("partition", "serial-cut"),
        ("bmc-lies", "bmc-lies"),
        ("clock-jump", "clock-jump"),
    ] {
        let why = runner
            .declines(name)
            .unwrap_or_else(|| panic!("{name} must be declined"));
        assert!(why.contains(fault), "{why}");
        let e = runner.run(name).expect_err("declined");
        assert!(e.0.contains("declined"), "{e}");
    }
    drop(runner);
    drop(emulated);
}

/// The real-rig backend on the rig fenced by every kind of device: the exported description
/// powers each host through a script that drives its devices as a site would (`curl` on the
/// Redfish API, pymodbus on the Modbus PDU, `ipmitool`, `snmpget`/`snmpset` on the SNMP PDU's
/// outlet), and the backend sees the fence and reboots the host through it.
#[test]
fn the_real_backend_powers_hosts_through_every_kind_of_device() {
    let Some((_emulated, exported)) = exported("mixed.toml") else {
        return;
    };
    let desc = RigDesc::load(&exported).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&exported).expect("exported description");
    assert!(text.contains("fence = [\"redfish\", \"modbus\"]"), "{text}");
    // The power script answers before any agent runs: both hosts on.
    for h in &desc.hosts {
        let real = h.real.as_ref().expect("real settings");
        let out = std::process::Command::new(&real.power_status[0])
            .args(&real.power_status[1..])
            .output()
            .expect("power_status");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "on",
            "{}: {}",
            h.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let real = hwtests::rig::real::Real::connect(desc).unwrap_or_else(|e| panic!("{e}"));
    let mut runner = Runner::start(real).unwrap_or_else(|e| panic!("{e}"));
    // Alpha (Redfish, Modbus) then beta (IPMI, SNMP) is lost, fenced and rebooted.
    for name in ["kill-holder", "kill-holder"] {
        runner.run(name).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        runner
            .timings
            .iter()
            .filter(|t| t.fenced_ms > 0.0 && t.group_ms > t.fenced_ms)
            .count(),
        2,
        "{:?}",
        runner.timings
    );
}
