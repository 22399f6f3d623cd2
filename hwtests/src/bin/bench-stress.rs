//! False-failover benchmark under load: two `watchkeeper run` agents at the default timing
//! (heartbeat 100 ms, deadtime 1 s, default fence delay) with a serial cable and UDP on
//! loopback between them, IPMI fencing through ipmi_sim wired to each agent's process (a
//! power-off kills it) and the five OCF Dummy resources, while `stress-ng` loads the machine's
//! CPUs, I/O, disk and memory for `--minutes M` (default 10). Both "hosts" share this machine,
//! so the load is sized for both: by default two CPU workers per core.
//!
//! A healthy pair under load must not fail over: any change of holder, any second holder, any
//! `peer_down`, any fence attempt (log or fence ledger) or power command to a BMC, any resource
//! stopped or started after the start is a false failover, and the bench exits non-zero. It also
//! reports the heartbeat gaps it saw (each link's `last_seen_ms_ago` sampled every 250 ms from
//! the agents' control sockets, and `link_down` events with their silence), and each agent's
//! memory (VmHWM, VmRSS) and CPU over the load.
//!
//! `stress-ng` runs in its own process group, started and stopped by its PID (which is the
//! group's ID): SIGTERM to the group, SIGKILL after a grace, so no worker outlives the bench.
//! Its own `--timeout` is a second bound. Install it with `apt-get install stress-ng`.
//!
//! `scripts/bench-system.sh` builds and runs it; by hand:
//! `cargo build --release -p agent --bin watchkeeper && cargo run --release -p hwtests --bin
//! bench-stress -- --minutes 10`.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hwtests::agent::{log_timestamp, proc_stats, read_log_lines, watchkeeper_bin, ProcStats};
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);
const RESOURCES: [&str; 5] = ["storage", "catalog", "address", "bacula-sd", "bacula-dir"];
const SAMPLE: Duration = Duration::from_millis(250);
const MAX_MINUTES: u64 = 24 * 60;
/// Problems listed one by one; past this many only their number is kept.
const PROBLEMS_SHOWN: usize = 50;
/// How long stress-ng's workers get to exit after SIGTERM before SIGKILL.
const STRESS_GRACE: Duration = Duration::from_secs(10);

struct Load {
    cpu: usize,
    io: usize,
    hdd: usize,
    vm: usize,
}

fn main() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut minutes = 10u64;
    let mut load = Load {
        cpu: 2 * cores,
        io: 2,
        hdd: 2,
        vm: 2,
    };
    let mut args = std::env::args().skip(1);
    let usage = "options: --minutes M --cpu N --io N --hdd N --vm N";
    while let Some(a) = args.next() {
        let mut value = || -> Result<usize> {
            args.next()
                .with_context(|| format!("{a} needs a number"))?
                .parse::<usize>()
                .with_context(|| format!("{a} needs a number"))
        };
        match a.as_str() {
            "--minutes" => minutes = u64::try_from(value()?)?,
            "--cpu" => load.cpu = value()?,
            "--io" => load.io = value()?,
            "--hdd" => load.hdd = value()?,
            "--vm" => load.vm = value()?,
            other => bail!("unknown argument {other}; {usage}"),
        }
    }
    if minutes == 0 || minutes > MAX_MINUTES {
        bail!("--minutes must be 1 to {MAX_MINUTES}");
    }
    let stress_ng = stress_ng_version()?;
    let bin = watchkeeper_bin()?;
    println!(
        "watchkeeper false-failover benchmark: {} under {stress_ng} for {minutes} min \
         (--cpu {} --io {} --hdd {} --vm {} on {cores} cores), interval {INTERVAL:?}, deadtime \
         {DEADTIME:?}, default fence delay, IPMI via ipmi_sim, {} OCF Dummy resources",
        bin.display(),
        load.cpu,
        load.io,
        load.hdd,
        load.vm,
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
    for (i, bmc) in bmcs.iter().enumerate() {
        let pid = pair.start(i)?.pid();
        bmc.wire_power_to(u32::try_from(pid.as_raw())?);
    }
    let holder = wait_settled(&pair)?;
    let epoch = pair.status(holder)?["engine"]["epoch"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "{} holds the group at epoch {epoch}; loading the machine",
        NAMES[holder]
    );

    let pids = [pair.agent(0).pid(), pair.agent(1).pid()];
    let before = pids.map(proc_stats);
    let since = SystemTime::now();
    let began = Instant::now();
    let duration = Duration::from_secs(minutes * 60);
    let mut stress = Stress::start(&load, pair.dir(), duration)?;
    let mut watch = Watch::new(holder, epoch);
    let mut peak_hwm = [0u64; 2];
    let mut next_report = began + Duration::from_secs(60);
    while began.elapsed() < duration {
        std::thread::sleep(SAMPLE);
        watch.sample(&pair);
        for i in 0..2 {
            if let Some(s) = proc_stats(pids[i]) {
                peak_hwm[i] = peak_hwm[i].max(s.vm_hwm_kib);
            }
        }
        if stress.exited() {
            bail!("stress-ng ended early; its output:\n{}", stress.output());
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            println!(
                "{:>3} min: load {}, {} status samples, {} holder changes, largest gap {} ms",
                began.elapsed().as_secs() / 60,
                loadavg(),
                watch.samples,
                watch.holder_changes,
                watch.max_gap_ms.values().max().copied().unwrap_or(0)
            );
        }
    }
    let after = pids.map(proc_stats);
    let wall = began.elapsed();
    let load_at_end = loadavg();
    stress.stop();
    println!("stress-ng stopped; load average at the end of the load: {load_at_end}");

    // What the agents logged and recorded since the load began.
    let mut false_failovers = Vec::new();
    false_failovers.extend(watch.problems.iter().cloned());
    if watch.more_problems > 0 {
        false_failovers.push(format!("{} more sampled problems", watch.more_problems));
    }
    let mut restarts = Vec::new();
    let mut link_downs = 0usize;
    let mut max_silent = 0u64;
    for i in 0..2 {
        for v in read_log_lines(&pair.log(i))
            .iter()
            .filter(|v| log_timestamp(v).is_some_and(|t| t >= since))
        {
            let event = v["event"].as_str().unwrap_or("");
            match event {
                "link_down" => {
                    link_downs += 1;
                    max_silent = max_silent.max(v["silent_ms"].as_u64().unwrap_or(0));
                }
                "peer_down"
                | "peer_restarted"
                | "fence_level_done"
                | "fence_device_off"
                | "fence_device_failed"
                | "self_fence" => {
                    false_failovers.push(format!("{}: {v}", NAMES[i]));
                }
                "resource_started" | "resource_stopped" | "resource_monitor_failed" => {
                    restarts.push(format!("{}: {v}", NAMES[i]));
                }
                _ => {}
            }
        }
        let ledger = pair
            .dir()
            .join(format!("{}-state/fence-ledger.jsonl", NAMES[i]));
        let fences = fs::read_to_string(&ledger)
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0);
        if fences > 0 {
            false_failovers.push(format!(
                "{}'s fence ledger holds {fences} entries",
                NAMES[i]
            ));
        }
        if !bmcs[i].power_on() || !bmcs[i].power_log().is_empty() {
            false_failovers.push(format!(
                "{}'s BMC received power commands: {:?}",
                NAMES[i],
                bmcs[i].power_log()
            ));
        }
        if !pair.agent(i).is_running() {
            false_failovers.push(format!("{}'s agent is gone", NAMES[i]));
        }
    }

    println!();
    println!("| under stress-ng for {minutes} min | value |");
    println!("|---|---|");
    println!(
        "| false failovers (holder changes, fences, peer_down) | {} |",
        false_failovers.len()
    );
    println!(
        "| resource events (monitor failures, stops, starts) | {} |",
        restarts.len()
    );
    println!(
        "| split brain (two holders in one sample) | {} |",
        watch.split_brain
    );
    println!(
        "| status samples (both nodes, every {} ms) | {} ({} unanswered) |",
        SAMPLE.as_millis(),
        watch.samples,
        watch.unanswered
    );
    for (link, gap) in &watch.max_gap_ms {
        println!("| largest sampled heartbeat age on {link} | {gap} ms |");
    }
    println!("| link_down events (one link silent past its deadtime) | {link_downs} (longest silence {max_silent} ms) |");
    println!();
    println!("| agent | peak VmHWM | VmRSS at the end | CPU during the load |");
    println!("|---|---|---|---|");
    for i in 0..2 {
        let (b, a) = (before[i].unwrap_or_default(), after[i].unwrap_or_default());
        print_usage(NAMES[i], b, a, peak_hwm[i], wall);
    }
    for r in &restarts {
        println!("resource event: {r}");
    }
    if !false_failovers.is_empty() {
        for f in false_failovers.iter().take(PROBLEMS_SHOWN) {
            println!("false failover: {f}");
        }
        bail!("{} false failovers under load", false_failovers.len());
    }
    println!();
    println!("no false failover in {minutes} min of load");
    Ok(())
}

fn print_usage(name: &str, before: ProcStats, after: ProcStats, peak: u64, wall: Duration) {
    let cpu = after.cpu.saturating_sub(before.cpu);
    println!(
        "| {name} | {:.1} MiB | {:.1} MiB | {:.2} s = {:.2} % of one core over {:.0} s |",
        kib_to_mib(peak.max(after.vm_hwm_kib)),
        kib_to_mib(after.vm_rss_kib),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        wall.as_secs_f64()
    );
}

fn kib_to_mib(kib: u64) -> f64 {
    // KiB counts of an agent are far below 2^52: the conversion is exact.
    kib as f64 / 1024.0
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// What the control sockets said during the load.
struct Watch {
    holder: usize,
    epoch: u64,
    samples: usize,
    unanswered: usize,
    holder_changes: usize,
    split_brain: usize,
    max_gap_ms: std::collections::BTreeMap<String, u64>,
    problems: Vec<String>,
    more_problems: usize,
}

impl Watch {
    fn new(holder: usize, epoch: u64) -> Watch {
        Watch {
            holder,
            epoch,
            samples: 0,
            unanswered: 0,
            holder_changes: 0,
            split_brain: 0,
            max_gap_ms: std::collections::BTreeMap::new(),
            problems: Vec::new(),
            more_problems: 0,
        }
    }

    fn problem(&mut self, what: String) {
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(what);
        } else {
            self.more_problems += 1;
        }
    }

    fn sample(&mut self, pair: &Pair) {
        let mut holds = [false, false];
        for (i, held) in holds.iter_mut().enumerate() {
            let Ok(st) = pair.status(i) else {
                self.unanswered += 1;
                continue;
            };
            self.samples += 1;
            let engine = &st["engine"];
            *held = engine["holds"] == Value::Bool(true);
            let holder = engine["holder"].as_str().unwrap_or("");
            let epoch = engine["epoch"].as_u64().unwrap_or(0);
            if holder != NAMES[self.holder] || epoch != self.epoch {
                self.holder_changes += 1;
                self.problem(format!(
                    "{} sees holder {holder:?} at epoch {epoch} (was {} at {})",
                    NAMES[i], NAMES[self.holder], self.epoch
                ));
            }
            for p in st["peers"].as_array().into_iter().flatten() {
                if p["alive"] != Value::Bool(true) {
                    self.problem(format!("{} sees {} dead", NAMES[i], p["name"]));
                }
                for l in p["links"].as_array().into_iter().flatten() {
                    let key = format!(
                        "{} from {} ({})",
                        l["link"].as_str().unwrap_or("?"),
                        p["name"].as_str().unwrap_or("?"),
                        NAMES[i]
                    );
                    let age = l["last_seen_ms_ago"].as_u64().unwrap_or(u64::MAX);
                    let e = self.max_gap_ms.entry(key).or_insert(0);
                    *e = (*e).max(age);
                }
            }
        }
        if holds == [true, true] {
            self.split_brain += 1;
            self.problem("both nodes hold the group".to_owned());
        }
    }
}

/// A running stress-ng in its own process group (whose ID is its PID); stopped on drop.
struct Stress {
    child: Option<Child>,
    pgid: Pid,
    output: std::path::PathBuf,
}

impl Stress {
    fn start(load: &Load, dir: &Path, duration: Duration) -> Result<Stress> {
        let work = dir.join("stress");
        fs::create_dir_all(&work)?;
        let output = dir.join("stress-ng.out");
        let out = fs::File::create(&output)?;
        // Its own timeout is a second bound, past the bench's own stop.
        let timeout = duration + Duration::from_secs(60);
        let child = Command::new("stress-ng")
            .args(["--cpu", &load.cpu.to_string()])
            .args(["--io", &load.io.to_string()])
            .args(["--hdd", &load.hdd.to_string(), "--hdd-bytes", "128M"])
            .args(["--vm", &load.vm.to_string(), "--vm-bytes", "128M"])
            .arg("--temp-path")
            .arg(&work)
            .args(["--timeout", &format!("{}s", timeout.as_secs())])
            .arg("--metrics-brief")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting stress-ng (install it with `apt-get install stress-ng`)")?;
        let pgid = Pid::from_raw(i32::try_from(child.id())?);
        Ok(Stress {
            child: Some(child),
            pgid,
            output,
        })
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// SIGTERM to the group, SIGKILL after [`STRESS_GRACE`], then reaps the leader. The group
    /// cannot be reused while its leader is unreaped, so signalling it by ID is safe until then.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let began = Instant::now();
        while began.elapsed() < STRESS_GRACE {
            // Workers are gone once the group is empty: signalling it then fails.
            if matches!(child.try_wait(), Ok(Some(_))) && killpg(self.pgid, None).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stress_ng_version() -> Result<String> {
    let out = Command::new("stress-ng")
        .arg("--version")
        .output()
        .context("stress-ng is missing: install it with `apt-get install stress-ng`")?;
    if !out.status.success() {
        bail!("stress-ng --version failed: install it with `apt-get install stress-ng`");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Adds the BMCs, fencing levels and the resource group to the pair's configuration.
fn configure(pair: &Pair, bmcs: &[IpmiSim; 2]) -> Result<()> {
    let mut text = hwtests::pair::add_ipmi_fencing(
        &fs::read_to_string(&pair.config)?,
        &[bmcs[0].address(), bmcs[1].address()],
    );
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

/// Waits until one node holds and runs the whole group and the other is a live standby; the
/// holder's index.
fn wait_settled(pair: &Pair) -> Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = [pair.status(0).ok(), pair.status(1).ok()];
        let holds = |s: &Option<Value>| {
            s.as_ref()
                .is_some_and(|s| s["engine"]["holds"] == Value::Bool(true))
        };
        let holding: Vec<usize> = (0..2).filter(|&i| holds(&st[i])).collect();
        if let [h] = holding.as_slice() {
            let running = resources(&pair.config, NAMES[*h]).is_some_and(|r| {
                r["resources"].as_array().is_some_and(|v| {
                    v.len() == RESOURCES.len() && v.iter().all(|r| r["state"] == "running")
                })
            });
            let other_hears = st[1 - h].as_ref().is_some_and(|s| {
                s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["alive"] == Value::Bool(true)))
            });
            if running && other_hears {
                return Ok(*h);
            }
        } else if holding.len() > 1 {
            bail!("two holders at start");
        }
        if Instant::now() > deadline {
            bail!("the pair did not settle within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
