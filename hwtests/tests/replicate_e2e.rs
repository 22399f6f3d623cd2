//! Director configuration replication on real processes: two `watchkeeper run` agents, each
//! with its own fake `/opt/bacula/etc` (per-node `source` in `[replicate]`) and its own
//! replication address on 127.0.0.1. The holder serves its tree; the standby's copy appears
//! behind the symlink with identical bytes, follows a change at the next interval, and shows
//! in `watchkeeper status --json`. After a switchover the new holder serves through its
//! symlink, the old holder's real directory is moved aside (not deleted) and replaced by the
//! symlink, and the copy flows the other way.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hwtests::agent::watchkeeper_bin;
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use serde_json::Value;

const HEARTBEAT: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(600);
const SYNC_INTERVAL: Duration = Duration::from_millis(300);
/// A sync must land within one interval plus this (scheduling, hashing, fsyncs on a busy CI
/// host).
const SLACK: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(20);

const RESOURCE_SCRIPT: &str = r#"#!/bin/sh
action=$1; state=$2
case "$action" in
  start) : > "$state" ;;
  stop) rm -f "$state" ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

/// Node `i`'s fake Director configuration directory.
fn etc(dir: &Path, i: usize) -> PathBuf {
    dir.join(NAMES[i]).join("opt-bacula-etc")
}

fn rig() -> Pair {
    let pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        HEARTBEAT,
        DEADTIME,
    ))
    .expect("pair");
    let dir = pair.dir().to_path_buf();
    let script = dir.join("res.sh");
    fs::write(&script, RESOURCE_SCRIPT).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut text = fs::read_to_string(&pair.config).expect("config");
    for name in NAMES {
        let line = format!("name = \"{name}\"\n");
        assert_eq!(text.matches(&line).count(), 1, "{text}");
        text = text.replace(
            &line,
            &format!("{line}replicate = \"127.0.0.1:{}\"\n", free_tcp_port()),
        );
    }
    let d = dir.display();
    text.push_str(&format!(
        "\n[failover]\nstartup_timeout = \"3s\"\n\n\
         [[resource]]\nname = \"director\"\ntype = \"script\"\n\
         start = [\"{s}\", \"start\", \"{d}/{{node}}.director\"]\n\
         stop = [\"{s}\", \"stop\", \"{d}/{{node}}.director\"]\n\
         status = [\"{s}\", \"status\", \"{d}/{{node}}.director\"]\n\
         monitor_interval = \"1s\"\n\n\
         [replicate]\nsource = {{ alpha = \"{a}\", beta = \"{b}\" }}\ninterval = \"{ms}ms\"\n",
        s = script.display(),
        a = etc(&dir, 0).display(),
        b = etc(&dir, 1).display(),
        ms = SYNC_INTERVAL.as_millis(),
    ));
    fs::write(&pair.config, text).expect("config");
    for (i, name) in NAMES.iter().enumerate() {
        let root = etc(&dir, i);
        fs::create_dir_all(root.join("conf.d/clients")).expect("mkdir");
        fs::write(
            root.join("bacula-dir.conf"),
            format!("# Director on {name}\nDirector {{ Name = dir }}\n"),
        )
        .expect("write");
        fs::write(
            root.join("conf.d/pools.conf"),
            format!("Pool {{ Name = {name}-pool }}\n"),
        )
        .expect("write");
        fs::write(
            root.join("conf.d/clients/fd1.conf"),
            vec![b'x'; 5000 + i * 17],
        )
        .expect("write");
        fs::set_permissions(
            root.join("bacula-dir.conf"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
    }
    pair
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port on 127.0.0.1")
}

fn watchkeeper(config: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary"))
        .args(args)
        .args(["--node", node, "--config"])
        .arg(config)
        .output()
        .expect("run watchkeeper")
}

fn json(config: &Path, node: &str, args: &[&str]) -> Option<Value> {
    let out = watchkeeper(config, node, args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn holds(config: &Path, node: &str) -> bool {
    json(config, node, &["resources", "--json"]).is_some_and(|r| {
        r["holds"] == Value::Bool(true)
            && r["resources"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["state"] == "running"))
    })
}

/// Every directory and file under `root` (following `root` itself if it is a symlink): path,
/// mode, and contents for files.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            let mode = md.permissions().mode() & 0o777;
            if md.is_dir() {
                stack.push(p);
                out.insert(rel, (mode, None));
            } else {
                out.insert(rel, (mode, fs::read(&p).ok()));
            }
        }
    }
    out
}

/// Waits until `target` is a symlink whose tree equals `source`'s; returns the time it took.
fn wait_copy(source: &Path, target: &Path, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let linked = fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink());
        let want = snapshot(source);
        if linked && !want.is_empty() && snapshot(target) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} is not a copy of {} within {within:?}:\nwant {:?}\ngot  {:?}",
            target.display(),
            source.display(),
            want.keys().collect::<Vec<_>>(),
            snapshot(target).keys().collect::<Vec<_>>(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directories moved aside beside `target`.
fn moved_aside(target: &Path) -> Vec<PathBuf> {
    let name = target
        .file_name()
        .map(|n| format!("{}.before-watchkeeper-", n.to_string_lossy()))
        .unwrap_or_default();
    let mut v: Vec<PathBuf> = target
        .parent()
        .and_then(|p| fs::read_dir(p).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn the_holders_configuration_reaches_the_standby_both_ways() {
    let mut pair = rig();
    let config = pair.config.clone();
    let dir = pair.dir().to_path_buf();
    let originals = [snapshot(&etc(&dir, 0)), snapshot(&etc(&dir, 1))];
    pair.start(0).expect("start alpha");
    pair.start(1).expect("start beta");

    // 1. A holder is elected.
    let deadline = Instant::now() + WAIT;
    let h = loop {
        if let Some(i) = (0..2).find(|&i| holds(&config, NAMES[i])) {
            break i;
        }
        assert!(Instant::now() < deadline, "no holder within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = 1 - h;
    let (hsrc, starget) = (etc(&dir, h), etc(&dir, s));

    // 2. The holder's tree appears on the standby with identical bytes and modes. The
    //    standby's own directory (a fresh install's) is moved aside, not deleted.
    let took = wait_copy(&hsrc, &starget, SYNC_INTERVAL + SLACK);
    eprintln!(
        "first copy {} -> {}: {} ms after the holder was seen",
        NAMES[h],
        NAMES[s],
        took.as_millis()
    );
    let aside = moved_aside(&starget);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(snapshot(&aside[0]), originals[s], "standby's own tree kept");
    let link = fs::read_link(&starget).expect("symlink");
    assert!(
        link.ends_with("replica/current"),
        "target links to the replica: {}",
        link.display()
    );

    // 3. A change on the holder arrives at the next interval.
    fs::write(hsrc.join("conf.d/pools.conf"), "Pool { Name = changed }\n").expect("edit");
    fs::create_dir_all(hsrc.join("conf.d/storage")).expect("mkdir");
    fs::write(
        hsrc.join("conf.d/storage/sd2.conf"),
        "Storage { Name = sd2 }\n",
    )
    .expect("add");
    fs::remove_file(hsrc.join("conf.d/clients/fd1.conf")).expect("remove");
    let took = wait_copy(&hsrc, &starget, SYNC_INTERVAL + SLACK);
    eprintln!("change arrived after {} ms", took.as_millis());

    // 4. The standby reports a fresh copy.
    let st = json(&config, NAMES[s], &["status", "--json"]).expect("status");
    let age = st["replica_age_ms"].as_u64().expect("replica_age_ms");
    eprintln!("{} replica_age_ms = {age}", NAMES[s]);
    assert!(
        u128::from(age) < (SYNC_INTERVAL + SLACK).as_millis(),
        "replica_age_ms {age}"
    );
    let before_switch = snapshot(&hsrc);

    // 5. Switchover: the new holder serves through its symlink, the old holder's real
    //    directory is moved aside and replaced by the symlink, and changes flow back.
    let out = watchkeeper(&config, NAMES[h], &["switchover"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while !holds(&config, NAMES[s]) {
        assert!(started.elapsed() < WAIT, "{} does not hold", NAMES[s]);
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("switchover took {} ms", started.elapsed().as_millis());
    let (nsrc, ntarget) = (etc(&dir, s), etc(&dir, h));
    let took = wait_copy(&nsrc, &ntarget, WAIT);
    eprintln!(
        "old holder {} linked to the copy of {} after {} ms",
        NAMES[h],
        NAMES[s],
        took.as_millis()
    );
    let aside = moved_aside(&ntarget);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        snapshot(&aside[0]),
        before_switch,
        "the old holder's live tree is kept aside"
    );
    pair.agent(h)
        .wait_for_log(|v| v["event"] == "replica_target_moved_aside", WAIT)
        .expect("the move is logged");

    // An edit on the new holder, made through its symlinked configuration path.
    fs::write(nsrc.join("bacula-dir.conf"), "# edited on the new holder\n").expect("edit");
    fs::write(nsrc.join("conf.d/new.conf"), "Job { Name = new }\n").expect("add");
    let took = wait_copy(&nsrc, &ntarget, SYNC_INTERVAL + SLACK);
    eprintln!(
        "change on the new holder arrived after {} ms",
        took.as_millis()
    );
    let back = fs::read(ntarget.join("bacula-dir.conf")).expect("read");
    assert_eq!(back, b"# edited on the new holder\n");

    for (i, name) in NAMES.iter().enumerate() {
        let logs = pair.agent(i).logs();
        let count = |e: &str| logs.iter().filter(|v| v["event"] == e).count();
        eprintln!(
            "{name}: {} replica_synced, {} replica_sync_failed, {} replicate_served",
            count("replica_synced"),
            count("replica_sync_failed"),
            count("replicate_served")
        );
        for v in logs.iter().filter(|v| v["event"] == "replica_sync_failed") {
            eprintln!("  {v}");
        }
    }
    for i in [s, h] {
        let mut a = pair.take(i).expect("agent");
        a.stop().expect("stop agent");
    }
}
