//! End-to-end failover benchmark on real processes: two `watchkeeper run` agents with the
//! default timing (heartbeat 100 ms, deadtime 1 s, fence delay 500 ms), a BMC each (ipmi_sim,
//! IPMI v2.0 with cipher suite 3) and a five-resource group of Debian's OCF Dummy agent in
//! Bacula's order. Each run kills the holder with SIGKILL and measures, from the kill:
//!
//! - detect: the survivor declares the holder dead (`peer_down` in its log);
//! - fenced: the survivor's fencing level confirms the holder off through its BMC;
//! - started: the last resource of the group started on the survivor (= failover time).
//!
//! Then the killed node is powered on again, restarted, and rejoins as standby before the next
//! run, so the holder alternates. Times come from the survivor's own log timestamps against the
//! wall clock at the kill; both are this machine's clock.
//!
//! `cargo build --release -p agent && cargo run --release -p hwtests --bin bench-failover -- --runs 50`
//! (`--fault freeze` stops the holder with SIGSTOP instead: a hung host that still holds its
//! resources and sockets).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hwtests::agent::{log_timestamp, read_log_lines, watchkeeper_bin};
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig, DEFAULT_PASSWORD, DEFAULT_USER};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use nix::sys::signal::Signal;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);
const RESOURCES: [&str; 5] = ["storage", "catalog", "address", "bacula-sd", "bacula-dir"];

fn main() -> Result<()> {
    let mut runs = 20usize;
    let mut freeze = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--fault" => match args.next().as_deref() {
                Some("kill") => freeze = false,
                Some("freeze") => freeze = true,
                _ => bail!("--fault kill|freeze"),
            },
            other => bail!("unknown argument {other}; options: --runs N --fault kill|freeze"),
        }
    }
    let fault = if freeze {
        "SIGSTOP (frozen host)"
    } else {
        "SIGKILL"
    };
    let bin = watchkeeper_bin()?;
    println!(
        "watchkeeper failover benchmark: {} ({runs} runs of {fault}, interval {INTERVAL:?}, deadtime {DEADTIME:?}, default fence delay, IPMI via ipmi_sim, {} OCF Dummy resources)",
        bin.display(),
        RESOURCES.len()
    );
    let bmcs = [
        IpmiSim::start(&IpmiSimConfig::default()),
        IpmiSim::start(&IpmiSimConfig::default()),
    ];
    let mut pair = Pair::new(PairSpec::new(
        true,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))?;
    configure(&pair, &bmcs)?;
    let config = pair.config.clone();
    pair.start(0)?;
    pair.start(1)?;
    let mut holder = wait_for_holder(&config, [true, true])?;
    let mut rows = Vec::new();
    for run in 0..runs {
        let survivor = 1 - holder;
        let killed_at = SystemTime::now();
        let t0 = Instant::now();
        // A frozen host keeps its resources and sockets but says nothing: only fencing ends it.
        pair.agent(holder).kill(if freeze {
            Signal::SIGSTOP
        } else {
            Signal::SIGKILL
        })?;
        let mut alive = [true, true];
        alive[holder] = false;
        let got = wait_for_holder(&config, alive)?;
        if got != survivor {
            bail!(
                "run {run}: {} holds, expected {}",
                NAMES[got],
                NAMES[survivor]
            );
        }
        let seen = t0.elapsed();
        let row = breakdown(&pair.log(survivor), NAMES[holder], killed_at)
            .with_context(|| format!("run {run}: reading {}'s log", NAMES[survivor]))?;
        if bmcs[holder].power_on() {
            bail!("run {run}: {} was never powered off", NAMES[holder]);
        }
        println!(
            "run {run:>3}: {} killed -> detect {:>5} ms, fenced {:>5} ms, group started {:>5} ms on {} (seen by the poll at {} ms)",
            NAMES[holder],
            row.0,
            row.1,
            row.2,
            NAMES[survivor],
            seen.as_millis()
        );
        rows.push(row);
        // The BMC powered it off: on real hardware the frozen process is gone with its host.
        if freeze {
            pair.agent(holder).kill(Signal::SIGKILL)?;
        }
        // Power the old holder back on and let it rejoin as standby.
        bmcs[holder].set_power_on(true);
        pair.start(holder)?;
        wait_standby(&config, NAMES[survivor], NAMES[holder])?;
        holder = survivor;
    }
    println!();
    println!("| from {fault} of the holder to | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (i, what) in [
        "survivor declares it dead",
        "its BMC confirms it off",
        "group started on the survivor (failover)",
    ]
    .iter()
    .enumerate()
    {
        let mut v: Vec<u64> = rows.iter().map(|r| [r.0, r.1, r.2][i]).collect();
        v.sort_unstable();
        println!(
            "| {what} | {} | {} | {} |",
            pct(&v, 50),
            pct(&v, 99),
            v.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn pct(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

/// Adds the BMCs, fencing levels and the resource group to the pair's configuration.
fn configure(pair: &Pair, bmcs: &[IpmiSim; 2]) -> Result<()> {
    let mut text = fs::read_to_string(&pair.config)?;
    for name in NAMES {
        let line = format!("name = \"{name}\"\n");
        text = text.replace(&line, &format!("{line}fencing = [[\"ipmi-{name}\"]]\n"));
    }
    for (i, name) in NAMES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[fence_device]]\nname = \"ipmi-{name}\"\ntype = \"ipmi\"\ntarget = \"{name}\"\n\
             address = \"{}\"\nusername = \"{DEFAULT_USER}\"\npassword = \"{DEFAULT_PASSWORD}\"\n\
             cipher_suite = 3\ntimeout = \"5s\"\npoll_interval = \"50ms\"\n",
            bmcs[i].address()
        ));
    }
    let dir = pair.dir().display().to_string();
    for r in RESOURCES {
        text.push_str(&format!(
            "\n[[resource]]\nname = \"{r}\"\ntype = \"ocf\"\nagent = \"heartbeat:Dummy\"\n\
             params = {{ state = \"{dir}/{{node}}-{r}.state\" }}\n"
        ));
    }
    fs::write(&pair.config, text)?;
    Ok(())
}

fn resources(config: &Path, node: &str) -> Option<Value> {
    let out = Command::new(watchkeeper_bin().ok()?)
        .args(["resources", "--json", "--node", node, "--config"])
        .arg(config)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn holds_all(r: &Value) -> bool {
    r["holds"] == Value::Bool(true)
        && r["resources"].as_array().is_some_and(|v| {
            v.len() == RESOURCES.len() && v.iter().all(|r| r["state"] == "running")
        })
}

/// Waits until one of the live nodes holds the whole group; never accepts two holders.
fn wait_for_holder(config: &Path, alive: [bool; 2]) -> Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let holding: Vec<usize> = (0..2)
            .filter(|&i| alive[i] && resources(config, NAMES[i]).is_some_and(|r| holds_all(&r)))
            .collect();
        match holding.as_slice() {
            [one] => return Ok(*one),
            [] => {}
            _ => bail!("two holders"),
        }
        if Instant::now() > deadline {
            bail!("no holder within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `holder` hears `standby` again, and `standby` holds nothing.
fn wait_standby(config: &Path, holder: &str, standby: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new(watchkeeper_bin()?)
            .args(["status", "--json", "--node", holder, "--config"])
            .arg(config)
            .output()?;
        let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let heard = st["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["name"] == standby && p["alive"] == true && p["role"] == "standby")
        });
        let idle = resources(config, standby).is_some_and(|r| r["holds"] == Value::Bool(false));
        if heard && idle {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{standby} did not rejoin as standby within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Milliseconds from `killed_at` to: `peer_down` of `victim`, the fencing level that confirmed
/// it off, and the last resource started, from the survivor's log.
fn breakdown(log: &Path, victim: &str, killed_at: SystemTime) -> Result<(u64, u64, u64)> {
    let after = |v: &Value| log_timestamp(v).filter(|t| *t >= killed_at);
    let ms = |t: SystemTime| {
        t.duration_since(killed_at)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    };
    let lines = read_log_lines(log);
    let first = |pred: &dyn Fn(&Value) -> bool| lines.iter().filter(|v| pred(v)).find_map(&after);
    let detect =
        first(&|v| v["event"] == "peer_down" && v["peer"] == victim).context("no peer_down")?;
    let fenced =
        first(&|v| v["event"] == "fence_level_done" && v["peer"] == victim && v["ok"] == true)
            .with_context(|| {
                let fence: Vec<String> = lines
                    .iter()
                    .filter(|v| v.to_string().contains("fence"))
                    .map(Value::to_string)
                    .collect();
                format!("no confirmed fence; fence lines: {fence:#?}")
            })?;
    let started = lines
        .iter()
        .filter(|v| {
            v["event"] == "resource_started" && v["resource"] == RESOURCES[RESOURCES.len() - 1]
        })
        .filter_map(after)
        .next()
        .context("no start of the last resource")?;
    Ok((ms(detect), ms(fenced), ms(started)))
}
