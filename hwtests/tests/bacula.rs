//! Bacula end to end under watchkeeper: Debian's Bacula 9.6 Director, Storage Daemon, File
//! Daemon and bconsole, a PostgreSQL 15 primary and hot standby as the Catalog, ext4 on a loop
//! device as the backup storage and a virtual IP, moved by two real `watchkeeper run` agents
//! whose BMCs (ipmi_sim) power a node off by killing every process of it
//! (`hwtests::bacula`). Each node is a network namespace of its own, and so is the client host
//! running the File Daemon and bconsole, all on one bridged segment: the client reaches the
//! Director only through the virtual IP, wherever it is.
//!
//! Each test checks the real outcome: job status letters from the Catalog, restores compared
//! file by file with `cmp`, the Catalog's own record of Director starts, the Catalog servers'
//! recovery state, the daemons' PIDs. Needs root and the packages of `scripts/deps-bacula.sh`;
//! without them a test says why and returns, except under CI=true, where it fails.

use std::fs;
use std::time::{Duration, Instant};

use hwtests::agent::{log_timestamp, read_log_lines};
use hwtests::bacula::{BaculaCluster, Daemon, RESOURCES, WAIT};
use hwtests::pair::NAMES;
use serde_json::Value;

/// The cluster, or `None` (with the reason printed) where it cannot run outside CI.
fn cluster() -> Option<BaculaCluster> {
    if let Some(why) = hwtests::bacula::missing_prerequisites() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the Bacula tests: {why}"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    let began = Instant::now();
    let c = BaculaCluster::start().expect("Bacula cluster");
    eprintln!(
        "cluster up in {} ms: alpha, beta and the client in network namespaces {} on one \
         bridged segment (virtual IP {}); storage: ext4 on {} mounted by the mount resource",
        began.elapsed().as_millis(),
        c.lan.hosts.join(", "),
        hwtests::bacula::VIP,
        c.storage_device().display()
    );
    Some(c)
}

/// The order in which node `i`'s agent started (or stopped) resources since `from` lines.
fn resource_events(c: &BaculaCluster, i: usize, event: &str) -> Vec<String> {
    read_log_lines(&c.log(i))
        .iter()
        .filter(|v| v["event"] == event)
        .filter_map(|v| v["resource"].as_str().map(str::to_owned))
        .collect()
}

fn backup_ok(c: &BaculaCluster, job: &str) -> u32 {
    let (id, status) = c.backup(job).expect("backup");
    assert_eq!(status, "T", "job {job} ({id}) did not end OK");
    id
}

/// Waits until the File Daemon has sent more than `bytes` for its running job.
fn wait_fd_sent(c: &BaculaCluster, bytes: u64) -> u64 {
    let began = Instant::now();
    loop {
        if let Some(sent) = c.fd_bytes_sent().filter(|&b| b > bytes) {
            return sent;
        }
        assert!(began.elapsed() < WAIT, "the File Daemon sent nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until node `i`'s agent has logged that its Catalog follows the holder; that line.
fn wait_following(c: &BaculaCluster, i: usize) -> String {
    let began = Instant::now();
    loop {
        if let Some(line) = read_log_lines(&c.log(i))
            .iter()
            .rev()
            .find(|v| v["event"] == "resource_following" && v["resource"] == "catalog")
        {
            return line["message"].as_str().unwrap_or_default().to_owned();
        }
        assert!(began.elapsed() < WAIT, "{} logged no rejoin", NAMES[i]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn in_order() -> Vec<String> {
    RESOURCES.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn planned_switchover_while_idle_moves_everything_in_order() {
    let Some(c) = cluster() else { return };
    let (h, s) = (c.first_holder(), 1 - c.first_holder());
    let before = backup_ok(&c, "BackupRig");
    assert_eq!(resource_events(&c, h, "resource_started"), in_order());

    let began = Instant::now();
    let out = c.watchkeeper(h, &["switchover"]).expect("switchover");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_holder(s, [true, true], WAIT)
        .expect("the peer holds");
    eprintln!(
        "switchover {} -> {}: whole group running there after {} ms",
        NAMES[h],
        NAMES[s],
        began.elapsed().as_millis()
    );
    let mut reverse = in_order();
    reverse.reverse();
    assert_eq!(
        resource_events(&c, h, "resource_stopped"),
        reverse,
        "the old holder stops in reverse: the Director and the SD first"
    );
    assert_eq!(resource_events(&c, s, "resource_started"), in_order());
    assert!(c.daemon_pid(h, Daemon::Director).is_none());
    assert!(c.daemon_pid(h, Daemon::Storage).is_none());
    assert!(!c.storage_mounted(h));
    assert!(c.storage_mounted(s));
    assert!(c.daemon_pid(s, Daemon::Director).is_some());
    // The old primary follows the new one.
    c.wait_standby(h, WAIT).expect("the old holder stands by");
    eprintln!("{}: {}", NAMES[h], wait_following(&c, h));
    assert_eq!(c.pg.in_recovery(BaculaCluster::catalog_node(h)), Some(true));
    assert_eq!(
        c.pg.in_recovery(BaculaCluster::catalog_node(s)),
        Some(false)
    );

    let after = backup_ok(&c, "BackupRig");
    assert!(after > before);
    c.restore_and_compare(before, "switchover")
        .expect("the backup taken before the switchover restores identically");
    let starts = c.director_starts().expect("director starts");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        c.bmcs[0].power_on() && c.bmcs[1].power_on(),
        "a switchover fences nobody"
    );
}

#[test]
fn holder_crash_during_a_backup_is_fenced_taken_over_and_the_job_run_again() {
    let Some(mut c) = cluster() else { return };
    let (h, s) = (c.first_holder(), 1 - c.first_holder());
    let earlier = backup_ok(&c, "BackupRig");
    let slow = c.run_job("BackupSlow").expect("slow job");
    let sent = wait_fd_sent(&c, 1 << 20);
    assert_eq!(c.job_status(slow).expect("status"), "R");
    let starts_before = c.director_starts().expect("starts").len();

    let crashed = Instant::now();
    c.crash(h).expect("crash the holder");
    eprintln!("crashed {} during job {slow} ({sent} bytes sent)", NAMES[h]);
    let mut alive = [true, true];
    alive[h] = false;
    c.wait_holder(s, alive, WAIT).expect("the peer takes over");
    let took = crashed.elapsed();
    assert!(
        !c.bmcs[h].power_on(),
        "the crashed node was powered off by its BMC"
    );
    assert!(
        c.bmcs[h].power_log().iter().any(|l| l.contains("power=0")),
        "{:?}",
        c.bmcs[h].power_log()
    );
    c.powered_off(h);
    let mut took_status = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if c.director_answers() {
            took_status = Some(crashed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took_status = took_status.expect("the new Director answers status dir");
    eprintln!(
        "crash -> group on {} {} ms, first status dir answered {} ms",
        NAMES[s],
        took.as_millis(),
        took_status.as_millis()
    );

    // The new Director marked the interrupted job failed at its start, which came after the
    // fence was confirmed, and it is the only start since the crash.
    assert_eq!(c.wait_job(slow, WAIT).expect("slow job ended"), "f");
    let starts = c.director_starts().expect("starts");
    assert_eq!(
        starts.len(),
        starts_before + 1,
        "one Director start after the crash: {starts:?}"
    );
    let fenced = unix_seconds(
        read_log_lines(&c.log(s))
            .iter()
            .find(|v| v["event"] == "fence_level_done" && v["ok"] == true)
            .and_then(log_timestamp)
            .expect("the survivor logged the confirmed fence"),
    );
    let started = starts[starts_before].at_unix;
    assert!(
        started > fenced,
        "the new Director started {:.3} s after the fence was confirmed",
        started - fenced
    );
    eprintln!(
        "the new Director's start reached the Catalog {} ms after the fence was confirmed",
        ((started - fenced) * 1000.0).round()
    );
    // ... and the post-takeover hook ran it again.
    let rerun: u32 = {
        let deadline = Instant::now() + WAIT;
        loop {
            let id = c
                .catalog(&format!(
                    "SELECT min(jobid) FROM job WHERE name = 'BackupSlow' AND jobid > {slow}"
                ))
                .expect("catalog");
            if let Ok(id) = id.parse() {
                break id;
            }
            assert!(Instant::now() < deadline, "no rerun: {}", c.rerun_log(s));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(
        c.rerun_log(s).contains("rerun BackupSlow"),
        "{}",
        c.rerun_log(s)
    );
    assert_eq!(c.wait_job(rerun, WAIT).expect("rerun ended"), "T");
    c.restore_and_compare(earlier, "after-crash")
        .expect("the earlier backup restores identically");
}

#[test]
fn heartbeat_partition_never_leaves_two_directors_on_the_catalog() {
    let Some(mut c) = cluster() else { return };
    let (h, s) = (c.first_holder(), 1 - c.first_holder());
    let slow = c.run_job("BackupSlow").expect("slow job");
    wait_fd_sent(&c, 256 << 10);
    let starts = c.director_starts().expect("starts");
    assert_eq!(starts.len(), 1, "{starts:?}");

    let cut = Instant::now();
    c.cable.cut();
    let deadline = Instant::now() + WAIT;
    while c.bmcs[s].power_on() {
        assert!(Instant::now() < deadline, "the standby was not fenced");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "partition: the standby {} powered off {} ms after the cut",
        NAMES[s],
        cut.elapsed().as_millis()
    );
    c.powered_off(s);
    assert!(c.bmcs[h].power_on(), "the holder was not fenced");
    // The holder keeps the group throughout, and its running job goes on.
    let mut alive = [true, true];
    alive[s] = false;
    c.wait_holder(h, alive, WAIT)
        .expect("the holder keeps the group");
    std::thread::sleep(hwtests::bacula::DEADTIME * 3);
    c.wait_holder(h, alive, WAIT)
        .expect("the holder still keeps it");
    assert_eq!(
        c.wait_job(slow, WAIT).expect("slow job ended"),
        "T",
        "no second Director marked the running job failed"
    );
    let starts = c.director_starts().expect("starts");
    assert_eq!(
        starts.len(),
        1,
        "only the holder's Director ever started on the Catalog: {starts:?}"
    );
    assert_eq!(
        resource_events(&c, s, "resource_started"),
        Vec::<String>::new(),
        "the fenced standby started nothing"
    );
    backup_ok(&c, "BackupRig");
}

#[test]
fn old_holder_rejoins_as_standby_and_a_switchback_moves_everything_home() {
    let Some(mut c) = cluster() else { return };
    let (h, s) = (c.first_holder(), 1 - c.first_holder());
    let (home, away) = (
        BaculaCluster::catalog_node(h),
        BaculaCluster::catalog_node(s),
    );
    let first = backup_ok(&c, "BackupRig");
    c.crash(h).expect("crash the holder");
    let mut alive = [true, true];
    alive[h] = false;
    c.wait_holder(s, alive, WAIT).expect("the peer takes over");
    c.powered_off(h);
    let away_backup = backup_ok(&c, "BackupRig");

    // Powered on again, the old holder's agent rewinds its Catalog into a standby.
    c.bmcs[h].set_power_on(true);
    c.start_agent(h).expect("restart the old holder");
    let took = c.wait_standby(h, WAIT).expect("the old holder rejoins");
    let how = wait_following(&c, h);
    eprintln!(
        "{} rejoined as standby {} ms after its restart: {how}",
        NAMES[h],
        took.as_millis()
    );
    assert!(
        how.contains("rewound") || how.contains("re-cloned"),
        "the old primary was rewound or re-cloned, never started as a primary: {how}"
    );
    assert_eq!(c.pg.in_recovery(home), Some(true));
    assert!(c.daemon_pid(h, Daemon::Director).is_none());
    assert!(c.daemon_pid(h, Daemon::Storage).is_none());
    assert!(!c.storage_mounted(h));
    let report = c.resources(h).expect("resources");
    assert_eq!(report["holds"], Value::Bool(false), "{report}");

    // Switchback.
    let began = Instant::now();
    let since = std::time::SystemTime::now();
    let out = c.watchkeeper(s, &["switchover"]).expect("switchover");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_holder(h, [true, true], WAIT).expect("home again");
    eprintln!(
        "switchback to {}: whole group running after {} ms",
        NAMES[h],
        began.elapsed().as_millis()
    );
    c.wait_standby(s, WAIT).expect("the peer stands by");
    // By the agents' own logs: every resource stopped on the peer before any started here.
    let replayed = c
        .check_handover_since(since, s)
        .unwrap_or_else(|e| panic!("switchback: {e}"));
    assert!(replayed >= 12, "{replayed} starts and stops replayed");
    assert_eq!(c.pg.in_recovery(home), Some(false));
    assert_eq!(c.pg.in_recovery(away), Some(true));
    assert!(c.daemon_pid(s, Daemon::Director).is_none());
    assert!(c.storage_mounted(h) && !c.storage_mounted(s));
    backup_ok(&c, "BackupRig");
    c.restore_and_compare(first, "first").expect("first backup");
    c.restore_and_compare(away_backup, "away")
        .expect("the backup taken on the peer");
}

#[test]
fn director_configuration_change_reaches_the_standby_and_runs_after_failover() {
    let Some(mut c) = cluster() else { return };
    let (h, s) = (c.first_holder(), 1 - c.first_holder());
    let holder = c.shared_config(h);
    let mut text = fs::read_to_string(&holder).expect("holder's configuration");
    text.push_str(
        "Job {\n  Name = BackupExtra\n  Type = Backup\n  Level = Full\n  Client = client-fd\n  \
         FileSet = RigSet\n  Storage = RigStorage\n  Pool = RigPool\n  Messages = Standard\n}\n",
    );
    fs::write(&holder, &text).expect("edit");
    let edited = Instant::now();
    let deadline = Instant::now() + WAIT;
    while !fs::read_to_string(c.shared_config(s)).is_ok_and(|t| t == text) {
        assert!(
            Instant::now() < deadline,
            "the change did not reach the standby"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the Director configuration change reached the standby {} after {} ms",
        NAMES[s],
        edited.elapsed().as_millis()
    );
    let out = c.test_director_config(s).expect("bacula-dir -t");
    assert!(
        out.status.success(),
        "the standby's copy is a valid Director configuration: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !c.bconsole("show jobs")
            .expect("show jobs")
            .contains("BackupExtra"),
        "the running Director was not reloaded"
    );

    c.crash(h).expect("crash the holder");
    let mut alive = [true, true];
    alive[h] = false;
    c.wait_holder(s, alive, WAIT)
        .expect("the standby takes over");
    c.powered_off(h);
    let jobs = c.bconsole("show jobs").expect("show jobs");
    assert!(jobs.contains("BackupExtra"), "{jobs}");
    backup_ok(&c, "BackupExtra");
}
