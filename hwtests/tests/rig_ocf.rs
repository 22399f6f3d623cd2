//! The emulated rig whose group is resource-agents' own OCF agents (`hwtests/rigs/ocf.toml`:
//! Filesystem on a loop device, IPaddr2, Dummy, and a marker last), run by the agents' OCF
//! executor: a lost holder, a switchover and a partition must leave the group whole on one host,
//! judged from the mount table, the hosts' interfaces and the Dummy's state file, and a file
//! written (and flushed) on the filesystem before each fault must be there after it.
//!
//! Needs root (namespaces, a loop device, mount) and resource-agents
//! (`scripts/deps-resource.sh`); skips with `SKIPPED:` otherwise, and fails instead under
//! `CI=true`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hwtests::ipmi_sim::{DEFAULT_PASSWORD, DEFAULT_USER};
use hwtests::rig::desc::RigDesc;
use hwtests::rig::emulated::Emulated;
use hwtests::rig::ocf::HEARTBEAT;
use hwtests::rig::scenario::Runner;
use hwtests::rig::Rig as _;

fn skip(why: &str) -> bool {
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI must run the OCF rig: {why}"
    );
    eprintln!("SKIPPED: {why}");
    true
}

/// Runs `names` in turn and checks that after each the new holder's filesystem had the write
/// made before the fault.
fn run_finding_writes<R: hwtests::rig::Rig>(runner: &mut Runner<R>, names: &[&str]) {
    for name in names {
        runner.run(name).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            runner
                .log
                .iter()
                .any(|l| l.starts_with(&format!("{name}: write "))
                    && l.contains("made before the fault")),
            "{name} checked no write on the filesystem: {:#?}",
            runner.log
        );
    }
}

#[test]
fn ocf_agents_fail_over_whole_and_the_filesystem_keeps_what_was_written() {
    if !nix::unistd::geteuid().is_root() && skip("the OCF rig needs root (namespaces, mount)") {
        return;
    }
    for agent in ["Dummy", "IPaddr2", "Filesystem"] {
        if !Path::new(HEARTBEAT).join(agent).exists()
            && skip(&format!(
                "{HEARTBEAT}/{agent} is missing (bash scripts/deps-resource.sh)"
            ))
        {
            return;
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rigs/ocf.toml");
    let rig = Emulated::build(RigDesc::load(&path).expect("rig description")).expect("rig");
    let mut runner = Runner::start(rig).unwrap_or_else(|e| panic!("{e}"));
    // Each failover finds the write made before it on the filesystem the new holder mounted.
    run_finding_writes(&mut runner, &["kill-holder", "switchover", "partition"]);
    let holder = runner.holder();
    let standby = 1 - holder;
    let rig = &runner.rig;
    let (h, s) = (rig.name(holder).to_owned(), rig.name(standby).to_owned());
    // The resources stamped their own starts on both hosts, and the stops of the switchover.
    let journal = rig.journal();
    for res in ["storage", "service-ip", "token"] {
        for (host, what) in [(&h, "start"), (&s, "start"), (&h, "stop"), (&s, "stop")] {
            let found = journal
                .iter()
                .any(|l| l.ends_with(&format!(" {host} {what} {res}")));
            // Only the host that handed over in the switchover stopped the group.
            assert!(
                found || what == "stop",
                "no {what} of {res} on {host} in the journal: {journal:#?}"
            );
        }
        assert!(
            journal.iter().any(|l| l.ends_with(&format!(" stop {res}"))),
            "no stop of {res} in the journal: {journal:#?}"
        );
    }
    let ocf = rig.ocf().expect("OCF side");
    let device = ocf.device().expect("loop device").to_owned();

    // Holding is read from the resources, not from the agents: the filesystem mounted by hand
    // on the standby's mount point makes it a second holder, and so does a Dummy state file.
    let mnt = ocf.mount_point(&s, "storage");
    let out = Command::new("mount")
        .arg(&device)
        .arg(&mnt)
        .output()
        .expect("mount");
    assert!(out.status.success(), "mount: {out:?}");
    let seen = (rig.running(standby), rig.holders());
    let out = Command::new("umount").arg(&mnt).output().expect("umount");
    assert!(out.status.success(), "umount: {out:?}");
    assert_eq!(seen, (vec!["storage".to_owned()], vec![0, 1]));
    let state = ocf.dummy_state(&s, "token");
    std::fs::write(&state, "").expect("state file");
    let seen = rig.running(standby);
    std::fs::remove_file(&state).expect("remove state file");
    assert_eq!(seen, vec!["token".to_owned()]);
    assert_eq!(rig.holders(), vec![holder]);

    // A power-off through the holder's BMC clears what a power cycle clears: the mount is
    // detached, the address dropped, the Dummy's state gone; the standby takes over.
    let before = rig.read_storage(holder);
    assert!(
        before.len() == 1 && before[0].1.as_deref() == Some("3"),
        "the third write (partition's) on {h}: {before:?}"
    );
    let bmc = rig.bmc_address(holder).expect("BMC");
    let out = Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            &bmc.ip().to_string(),
            "-p",
        ])
        .arg(bmc.port().to_string())
        .args(["-U", DEFAULT_USER, "-P", DEFAULT_PASSWORD])
        .args(["chassis", "power", "off"])
        .output()
        .expect("ipmitool");
    assert!(out.status.success(), "ipmitool: {out:?}");
    assert!(
        rig.wait(Duration::from_secs(5), |r| !r.powered(holder)
            && r.running(holder).iter().all(|n| n == "bacula-dir")),
        "{h} powered={} still runs {:?}",
        rig.powered(holder),
        rig.running(holder)
    );
    assert!(
        !ocf.dummy_state(&h, "token").exists(),
        "the Dummy's state outlived the power"
    );
    assert!(
        rig.wait(Duration::from_secs(30), |r| r.holds_all(standby)),
        "{s} did not take over: runs {:?}",
        rig.running(standby)
    );
    let text = rig.read_storage(standby);
    assert_eq!(text.len(), 1, "{text:?}");
    assert_eq!(text[0].1, before[0].1, "the last write on {s}");
    assert_ne!(
        text[0].0, before[0].0,
        "{s} mounted it on its own mount point"
    );
    rig.check_journal().unwrap_or_else(|e| panic!("{e}"));
}

/// The real-rig backend on the OCF rig, through the description [`Emulated::export_real`]
/// writes: it sees the OCF resources only through their `check` lines run on the hosts (the
/// mount point, the address on `hb0`, the Dummy's state file), and the boot script clears what
/// a power cycle clears, so a lost holder is fenced and the group taken over exactly as on the
/// emulated backend.
#[test]
fn the_real_backend_sees_ocf_resources_through_their_checks() {
    if !nix::unistd::geteuid().is_root()
        && skip("the real backend reaches the emulated hosts through their namespaces (root)")
    {
        return;
    }
    if !Path::new(HEARTBEAT).join("Filesystem").exists()
        && skip(&format!(
            "{HEARTBEAT} is missing (bash scripts/deps-resource.sh)"
        ))
    {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rigs/ocf.toml");
    let emulated = Emulated::build(RigDesc::load(&path).expect("rig description")).expect("rig");
    let exported = emulated.export_real().expect("export");
    let desc = RigDesc::load(&exported).unwrap_or_else(|e| panic!("{e}"));
    // The Filesystem and IPaddr2 leave their checks to the backend's defaults (the host's
    // mount point, given with `{node}`; the address); the Dummy's state file is the rig's own.
    let kinds: Vec<(String, bool)> = desc
        .resources
        .iter()
        .map(|r| (format!("{:?}", r.kind), r.check.is_some()))
        .collect();
    let dir = emulated.dir().display().to_string();
    assert_eq!(
        kinds[..3],
        [
            (
                format!("Ocf(Filesystem {{ directory: Some(\"{dir}/{{node}}-storage\") }})"),
                false
            ),
            (
                "Ocf(IPaddr2 { address: \"10.79.0.101/24\" })".to_owned(),
                false
            ),
            ("Ocf(Dummy)".to_owned(), true)
        ],
        "{kinds:?}"
    );
    let real = hwtests::rig::real::Real::connect(desc).unwrap_or_else(|e| panic!("{e}"));
    let mut runner = Runner::start(real).unwrap_or_else(|e| panic!("{e}"));
    // The file written through the host's shell before each fault is read back on the new
    // holder's mount point.
    run_finding_writes(&mut runner, &["kill-holder", "switchover"]);
    let holder = runner.holder();
    let running = runner.rig.running(holder);
    assert_eq!(
        running,
        ["storage", "service-ip", "token", "bacula-dir"],
        "the holder's checks"
    );
    assert!(runner.rig.running(1 - holder).is_empty());
    drop(runner);
    drop(emulated);
}
