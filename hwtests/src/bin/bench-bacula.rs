//! Bacula failover benchmark on the real thing (`hwtests::bacula`): two `watchkeeper run`
//! agents, a BMC each (ipmi_sim), ext4 on a loop device, a PostgreSQL 15 primary and hot
//! standby as the Catalog, the virtual IP, Debian's Bacula 9.6 Storage Daemon and Director, and
//! a File Daemon and bconsole on a client host (a second network namespace) that reach the
//! Director only through the virtual IP.
//!
//! Each run crashes the holder (SIGKILL of every process of the node at once: agent, Director,
//! Storage Daemon, Catalog server) and measures, from the crash:
//!
//! - detect: the survivor declares the holder dead (`peer_down` in its log);
//! - fenced: its fencing level confirms the holder off through the BMC;
//! - mount, promote, VIP, SD, Director: each resource of the group started on the survivor
//!   (`resource_started`: the storage mounted after fsck, the Catalog taking writes, the
//!   address added and announced, each daemon listening);
//! - status dir: the first `status dir` through bconsole on the client host that the new
//!   Director answers (= failover time).
//!
//! Then the crashed node is powered on, its agent restarted, and it rejoins as standby (its
//! Catalog rewound into a standby of the new primary) before the next run, so the holder
//! alternates. Times come from the survivor's log timestamps and this process's clock, both
//! this machine's.
//!
//! As root, after `scripts/deps-bacula.sh`:
//! `cargo build --release -p agent --bin watchkeeper && cargo run --release -p hwtests --bin bench-bacula -- --runs 10`

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hwtests::agent::{log_timestamp, read_log_lines, watchkeeper_bin};
use hwtests::bacula::{BaculaCluster, DEADTIME, INTERVAL, WAIT};
use hwtests::pair::NAMES;
use hwtests::util::percentile;
use serde_json::Value;

/// The columns after detect and fence, and the resource each one reads.
const STEPS: [(&str, &str); 5] = [
    ("mount", "storage"),
    ("promote", "catalog"),
    ("VIP", "address"),
    ("SD", "bacula-sd"),
    ("Director", "bacula-dir"),
];

fn main() -> Result<()> {
    let mut runs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other}; options: --runs N"),
        }
    }
    if let Some(why) = hwtests::bacula::missing_prerequisites() {
        bail!("cannot run: {why}");
    }
    println!(
        "watchkeeper Bacula failover benchmark: {} ({runs} runs of a holder crash, heartbeat \
         {INTERVAL:?} over a serial cable, deadtime {DEADTIME:?}, fence delay 300 ms, IPMI via \
         ipmi_sim, Bacula {}, PostgreSQL {})",
        watchkeeper_bin()?.display(),
        version(&["/usr/sbin/bacula-dir", "-?"], "Version:"),
        version(
            &["/usr/lib/postgresql/15/bin/postgres", "--version"],
            "postgres"
        ),
    );
    let began = Instant::now();
    let mut c = BaculaCluster::start()?;
    println!(
        "cluster up in {} ms ({} holds)",
        began.elapsed().as_millis(),
        NAMES[c.first_holder()]
    );
    let rows = match measure(&mut c, runs) {
        Ok(rows) => rows,
        Err(e) => {
            c.print_logs();
            return Err(e);
        }
    };
    print_table(&rows);
    Ok(())
}

/// `runs` crashes of the holder, alternating; one row of milliseconds per run.
fn measure(c: &mut BaculaCluster, runs: usize) -> Result<Vec<Vec<u64>>> {
    let mut holder = c.first_holder();
    let mut rows: Vec<Vec<u64>> = Vec::new();
    for run in 0..runs {
        let survivor = 1 - holder;
        let crashed_at = SystemTime::now();
        let t0 = Instant::now();
        c.crash(holder)?;
        wait_logged(c, survivor, crashed_at)?;
        let answered = loop {
            if c.director_answers() {
                break t0.elapsed();
            }
            if t0.elapsed() > WAIT {
                bail!(
                    "run {run}: the Director on {} never answered",
                    NAMES[survivor]
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if c.bmcs[holder].power_on() {
            bail!("run {run}: {} was never powered off", NAMES[holder]);
        }
        let mut row = breakdown(&read_log_lines(&c.log(survivor)), NAMES[holder], crashed_at)
            .with_context(|| format!("run {run}: reading {}'s log", NAMES[survivor]))?;
        row.push(u64::try_from(answered.as_millis()).unwrap_or(u64::MAX));
        println!(
            "run {run:>3}: {} crashed -> detect {:>5}, fenced {:>5}, mount {:>5}, promote {:>5}, \
             VIP {:>5}, SD {:>5}, Director {:>5}, status dir answered {:>5} ms on {}",
            NAMES[holder],
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            NAMES[survivor]
        );
        rows.push(row);
        c.powered_off(holder);
        c.bmcs[holder].set_power_on(true);
        c.start_agent(holder)?;
        c.wait_standby(holder, WAIT)?;
        holder = survivor;
    }
    Ok(rows)
}

fn print_table(rows: &[Vec<u64>]) {
    println!();
    println!("| from the holder's crash to | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    let names = [
        "survivor declares it dead (detect)",
        "its BMC confirms it off (fence)",
        "storage mounted",
        "Catalog promoted, taking writes",
        "virtual IP up and announced",
        "Storage Daemon listening",
        "Director listening",
        "first `status dir` answered through the VIP (failover)",
    ];
    for (i, what) in names.iter().enumerate() {
        let mut v: Vec<u64> = rows.iter().map(|r| r[i]).collect();
        v.sort_unstable();
        println!(
            "| {what} | {} | {} | {} |",
            percentile(&v, 50),
            percentile(&v, 99),
            v.last().copied().unwrap_or(0)
        );
    }
}

/// Waits until the survivor logs the Director started after `since`.
fn wait_logged(c: &BaculaCluster, survivor: usize, since: SystemTime) -> Result<()> {
    let began = Instant::now();
    while began.elapsed() < WAIT {
        let done = read_log_lines(&c.log(survivor)).iter().any(|v| {
            v["event"] == "resource_started"
                && v["resource"] == "bacula-dir"
                && log_timestamp(v).is_some_and(|t| t >= since)
        });
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "{} did not start the Director within {WAIT:?}",
        NAMES[survivor]
    )
}

/// Milliseconds from `crashed_at` to: `peer_down` of `victim`, the confirmed fence, and the
/// start of each resource of [`STEPS`], from the survivor's log.
fn breakdown(lines: &[Value], victim: &str, crashed_at: SystemTime) -> Result<Vec<u64>> {
    let after = |v: &Value| log_timestamp(v).filter(|t| *t >= crashed_at);
    let ms = |t: SystemTime| {
        t.duration_since(crashed_at)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    };
    let first = |pred: &dyn Fn(&Value) -> bool| lines.iter().filter(|v| pred(v)).find_map(after);
    let mut row = vec![
        ms(first(&|v| v["event"] == "peer_down" && v["peer"] == victim).context("no peer_down")?),
        ms(
            first(&|v| v["event"] == "fence_level_done" && v["peer"] == victim && v["ok"] == true)
                .context("no confirmed fence")?,
        ),
    ];
    for (what, resource) in STEPS {
        row.push(ms(first(&|v| {
            v["event"] == "resource_started" && v["resource"] == resource
        })
        .with_context(|| format!("no start of {resource} ({what})"))?));
    }
    Ok(row)
}

/// The first line of a program's output containing `marker`, trimmed, or "unknown".
fn version(cmd: &[&str], marker: &str) -> String {
    let Some((program, args)) = cmd.split_first() else {
        return "unknown".into();
    };
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .find(|l| l.contains(marker))
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
