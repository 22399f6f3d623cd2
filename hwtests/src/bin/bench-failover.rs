//! End-to-end failover benchmark on real processes: two `watchkeeper run` agents with the
//! default timing (heartbeat 100 ms, deadtime 1 s, default fence delay), a BMC each (ipmi_sim,
//! IPMI v2.0 with cipher suite 3) whose power-off really kills that node's agent, and a
//! five-resource group of Debian's OCF Dummy agent in Bacula's order. The nodes share two
//! heartbeat links: a serial cable (a pty pair through a relay that can be cut) and UDP on
//! loopback through a relay in this process that can be cut too, so that a partition cuts
//! every heartbeat path while the BMCs, on their own loopback ports, stay reachable.
//!
//! Each run injects one fault and measures, from the moment of the fault:
//!
//! - detect: the survivor declares the other node dead (`peer_down` in its log);
//! - fenced: the survivor's fencing level confirms the other node off through its BMC;
//! - each resource started on the survivor, in order; the last one is the failover time.
//!
//! Faults (`--fault`):
//!
//! - `kill`: SIGKILL of the holder (a crashed host);
//! - `freeze`: SIGSTOP of the holder (a hung host that keeps its resources and sockets; only
//!   fencing ends it);
//! - `partition`: every heartbeat link cut, both nodes alive. The holder fences at once, the
//!   standby only after the fence delay, so the holder wins and keeps its group: there is no
//!   takeover to time, and the bench checks that the group was never stopped or restarted.
//!
//! Then the fenced node is powered on again, restarted, and rejoins as standby before the next
//! run (after a kill or a freeze the holder alternates). Times come from the survivor's own log
//! timestamps against the wall clock at the fault; both are this machine's clock. At the end it
//! prints p50/p99/max of every step and each agent's memory (VmHWM, VmRSS) and CPU over the
//! whole run, from `/proc`.
//!
//! `scripts/bench-system.sh` builds and runs it; by hand:
//! `cargo build --release -p agent --bin watchkeeper && cargo run --release -p hwtests --bin
//! bench-failover -- --runs 50 --fault kill`.
//!
//! `--catalog` (with `--fault kill`) makes the second resource the real Catalog: a PostgreSQL
//! primary and streaming hot standby ([`PgCluster`]) under the agent's `pgsql` resource, which
//! starts by promoting the local standby. The kill also crashes the holder's PostgreSQL, as a
//! power loss would, and a thread measures "Catalog writable": the first `INSERT` the new
//! primary accepts, polled with `psql` from the kill. When the killed node comes back, its
//! agent makes the old primary a standby of the new one (`rejoin = "rewind"`: `pg_rewind`), and
//! the bench waits for that (`resource_following` in its log) before the next run.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use hwtests::agent::{log_timestamp, proc_stats, read_log_lines, watchkeeper_bin};
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use hwtests::pg::{Node as PgNode, PgCluster, PG_OS_USER};
use hwtests::rig::relay::{UdpRelay as Leg, Way};
use hwtests::util::percentile;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);
const RESOURCES: [&str; 5] = ["storage", "catalog", "address", "bacula-sd", "bacula-dir"];
/// Most runs one invocation accepts: each takes seconds, so this bounds a run to hours.
const MAX_RUNS: usize = 2000;
/// Longest wait for the old primary to become a streaming standby (`--catalog`).
const REJOIN_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Freeze,
    Partition,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL of the holder",
            Fault::Freeze => "SIGSTOP of the holder (frozen host)",
            Fault::Partition => "heartbeat partition (serial and UDP cut, BMCs reachable)",
        }
    }
}

fn main() -> Result<()> {
    let mut runs = 20usize;
    let mut fault = Fault::Kill;
    let mut catalog = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--fault" => {
                fault = match args.next().as_deref() {
                    Some("kill") => Fault::Kill,
                    Some("freeze") => Fault::Freeze,
                    Some("partition") => Fault::Partition,
                    _ => bail!("--fault kill|freeze|partition"),
                }
            }
            "--catalog" => catalog = true,
            other => bail!(
                "unknown argument {other}; options: --runs N --fault kill|freeze|partition \
                 [--catalog]"
            ),
        }
    }
    if catalog && fault != Fault::Kill {
        bail!("--catalog goes with --fault kill only");
    }
    if runs == 0 || runs > MAX_RUNS {
        bail!("--runs must be 1 to {MAX_RUNS}");
    }
    let bin = watchkeeper_bin()?;
    println!(
        "watchkeeper failover benchmark: {} ({runs} runs, fault: {}, interval {INTERVAL:?}, \
         deadtime {DEADTIME:?}, default fence delay, IPMI via ipmi_sim, {} resources: {})",
        bin.display(),
        fault.describe(),
        RESOURCES.len(),
        if catalog {
            "OCF Dummy, the catalog a PostgreSQL primary + streaming standby"
        } else {
            "OCF Dummy"
        }
    );
    let mut rig = Rig::new(catalog)?;
    let config = rig.pair.config.clone();
    rig.start(0)?;
    rig.start(1)?;
    let mut holder = wait_for_holder(&config, [true, true])?;
    if rig.pg.is_some() && holder != 0 {
        bail!(
            "{} was elected first, but the Catalog's primary is alpha's",
            NAMES[holder]
        );
    }
    let began = Instant::now();
    let mut rows = Vec::new();
    for run in 0..runs {
        let row = match fault {
            Fault::Kill | Fault::Freeze => rig.fail_holder(run, holder, fault)?,
            Fault::Partition => rig.partition(run, holder)?,
        };
        rows.push(row);
        if fault != Fault::Partition {
            holder = 1 - holder;
        }
    }
    rig.sample();
    let wall = began.elapsed();
    println!();
    summary(fault, &rows);
    println!();
    rig.usage.print(wall);
    Ok(())
}

/// The measured steps of one run, in milliseconds from the fault.
struct Row {
    detect: u64,
    fenced: u64,
    /// Each resource's start on the survivor, in group order; empty when nothing started.
    started: Vec<u64>,
    /// The first write the new primary of the Catalog accepted (`--catalog`).
    writable: Option<u64>,
}

/// The pair, its BMCs and the UDP relay, with each node's own configuration.
struct Rig {
    // First, so the agents stop while their links and BMCs still work.
    pair: Pair,
    relay: UdpRelay,
    bmcs: [IpmiSim; 2],
    configs: [PathBuf; 2],
    usage: Usage,
    /// The Catalog's servers, alpha's first (`--catalog`); after the agents, which use them.
    pg: Option<PgCluster>,
}

impl Rig {
    fn new(catalog: bool) -> Result<Rig> {
        let bmcs = [
            IpmiSim::start(&IpmiSimConfig::default()),
            IpmiSim::start(&IpmiSimConfig::default()),
        ];
        let pair = Pair::new(PairSpec::new(
            true,
            Some(Net::Loopback4),
            INTERVAL,
            DEADTIME,
        ))?;
        let pg = catalog.then(PgCluster::start);
        if let Some(pg) = &pg {
            pg.sql(
                PgNode::A,
                "CREATE TABLE bench_failover (run int, at timestamptz DEFAULT now())",
            )
            .map_err(|e| anyhow!("creating the bench table: {e}"))?;
            pg.wait_for(PgNode::B, "SELECT count(*) FROM bench_failover", "0", WAIT);
        }
        configure(&pair, &bmcs, pg.as_ref())?;
        let [Some(a), Some(b)] = pair.udp else {
            bail!("the pair has no UDP addresses");
        };
        let relay = UdpRelay::start([a, b])?;
        // Each node sends to the relay's port that stands for its peer; sources are not
        // checked (frames are authenticated), so replies need no address rewriting.
        let text = fs::read_to_string(&pair.config)?;
        let mut configs = [PathBuf::new(), PathBuf::new()];
        for i in 0..2 {
            let peer = [a, b][1 - i];
            let line = format!("address = \"{peer}\"");
            if text.matches(&line).count() != 1 {
                bail!("cannot find {line} once in {}", pair.config.display());
            }
            let mut own = text.replace(&line, &format!("address = \"{}\"", relay.fronts[1 - i]));
            if let Some(pg) = &pg {
                // Each node's own server: the shared file names alpha's.
                let node = pg_node(i);
                own = own
                    .replace(
                        &format!("datadir = \"{}\"", pg.datadir(PgNode::A).display()),
                        &format!("datadir = \"{}\"", pg.datadir(node).display()),
                    )
                    .replace(
                        &format!("port = {}\n", pg.port(PgNode::A)),
                        &format!("port = {}\n", pg.port(node)),
                    );
            }
            configs[i] = pair.dir().join(format!("{}.toml", NAMES[i]));
            fs::write(&configs[i], own)?;
        }
        Ok(Rig {
            bmcs,
            relay,
            configs,
            usage: Usage::default(),
            pair,
            pg,
        })
    }

    /// Starts node `i` and wires its BMC's power to the new process.
    fn start(&mut self, i: usize) -> Result<()> {
        let config = self.configs[i].clone();
        let pid = self.pair.start_with_config(i, &config)?.pid();
        self.bmcs[i].wire_power_to(u32::try_from(pid.as_raw())?);
        self.usage.started(i, pid);
        Ok(())
    }

    fn sample(&mut self) {
        for i in 0..2 {
            let pid = self.pair.agent(i).pid();
            self.usage.sample(i, pid);
        }
    }

    /// Kills or freezes the holder; the other node must fence it and take the group over.
    fn fail_holder(&mut self, run: usize, holder: usize, fault: Fault) -> Result<Row> {
        let survivor = 1 - holder;
        let config = self.pair.config.clone();
        self.sample();
        let at = SystemTime::now();
        let signal = if fault == Fault::Freeze {
            Signal::SIGSTOP
        } else {
            Signal::SIGKILL
        };
        self.pair.agent(holder).kill(signal)?;
        let mut alive = [true, true];
        alive[holder] = false;
        let (got, writable) = match &self.pg {
            None => (wait_for_holder(&config, alive)?, None),
            Some(pg) => {
                // The power loss takes the holder's PostgreSQL with it.
                pg.crash(pg_node(holder));
                std::thread::scope(|s| {
                    let poll = s.spawn(|| first_write(pg, pg_node(survivor), run, at));
                    let got = wait_for_holder(&config, alive);
                    let writable = poll.join().map_err(|_| anyhow!("the write poll panicked"));
                    Ok::<_, anyhow::Error>((got?, Some(writable??)))
                })?
            }
        };
        if got != survivor {
            bail!(
                "run {run}: {} holds, expected {}",
                NAMES[got],
                NAMES[survivor]
            );
        }
        let mut row = breakdown(&self.pair.log(survivor), NAMES[holder], at, true)
            .with_context(|| format!("run {run}: reading {}'s log", NAMES[survivor]))?;
        row.writable = writable;
        if self.bmcs[holder].power_on() {
            bail!("run {run}: {} was never powered off", NAMES[holder]);
        }
        if !self.bmcs[survivor].power_on() {
            bail!(
                "run {run}: the survivor {} was powered off",
                NAMES[survivor]
            );
        }
        let what = if fault == Fault::Freeze {
            "frozen"
        } else {
            "killed"
        };
        print_row(
            run,
            &format!("{} {what}", NAMES[holder]),
            &row,
            NAMES[survivor],
        );
        self.rejoin(holder, survivor)?;
        Ok(row)
    }

    /// Cuts every heartbeat link: the holder must fence the standby and keep its group.
    fn partition(&mut self, run: usize, holder: usize) -> Result<Row> {
        let standby = 1 - holder;
        let config = self.pair.config.clone();
        self.sample();
        let at = SystemTime::now();
        self.pair.cable.as_ref().context("no cable")?.cut();
        self.relay.cut(true);
        let deadline = Instant::now() + WAIT;
        while self.bmcs[standby].power_on() {
            if Instant::now() > deadline {
                bail!(
                    "run {run}: {} was not fenced within {WAIT:?}",
                    NAMES[standby]
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut alive = [true, true];
        alive[standby] = false;
        let got = wait_for_holder(&config, alive)?;
        if got != holder {
            bail!("run {run}: {} holds after the partition", NAMES[got]);
        }
        // A fence the standby had sent before its power went would have landed by now.
        std::thread::sleep(Duration::from_millis(300));
        if !self.bmcs[holder].power_on() {
            bail!("run {run}: both nodes were fenced");
        }
        let row = breakdown(&self.pair.log(holder), NAMES[standby], at, false)
            .with_context(|| format!("run {run}: reading {}'s log", NAMES[holder]))?;
        let touched = read_log_lines(&self.pair.log(holder))
            .iter()
            .filter(|v| v["event"] == "resource_started" || v["event"] == "resource_stopped")
            .filter(|v| log_timestamp(v).is_some_and(|t| t >= at))
            .count();
        if touched != 0 {
            bail!("run {run}: the holder stopped or started {touched} resources in a partition");
        }
        print_row(run, "partition", &row, NAMES[holder]);
        self.pair.cable.as_ref().context("no cable")?.restore();
        self.relay.cut(false);
        self.rejoin(standby, holder)?;
        Ok(row)
    }

    /// Powers the fenced node `down` on again, restarts it and waits until `up` hears it as
    /// standby.
    fn rejoin(&mut self, down: usize, up: usize) -> Result<()> {
        let agent = self.pair.agent(down);
        if agent.wait_exit(Duration::from_secs(5)).is_none() {
            bail!("{}'s agent survived its power-off", NAMES[down]);
        }
        self.bmcs[down].set_power_on(true);
        self.start(down)?;
        wait_standby(&self.pair.config, NAMES[up], NAMES[down])?;
        if let Some(pg) = &self.pg {
            // The returning node's agent rewinds its old primary into a standby of the new one.
            let followed = self.pair.agent(down).wait_for_log(
                |v| {
                    v["resource"] == "catalog"
                        && (v["event"] == "resource_following"
                            || v["event"] == "resource_follow_failed")
                },
                REJOIN_WAIT,
            );
            match followed {
                Some(v) if v["event"] == "resource_following" => {}
                Some(v) => bail!("{}'s Catalog cannot follow: {v}", NAMES[down]),
                None => bail!(
                    "{}'s Catalog did not follow {} within {REJOIN_WAIT:?}",
                    NAMES[down],
                    NAMES[up]
                ),
            }
            if pg.in_recovery(pg_node(down)) != Some(true)
                || pg.in_recovery(pg_node(up)) != Some(false)
            {
                bail!(
                    "after the rejoin the Catalog's primary is not {}'s",
                    NAMES[up]
                );
            }
        }
        Ok(())
    }
}

fn print_row(run: usize, what: &str, row: &Row, on: &str) {
    let steps: Vec<String> = row
        .started
        .iter()
        .zip(RESOURCES)
        .map(|(ms, r)| format!("{r} {ms}"))
        .collect();
    let writable = row
        .writable
        .map(|w| format!(", Catalog writable {w} ms"))
        .unwrap_or_default();
    let steps = if steps.is_empty() {
        format!("group kept on {on}, never stopped")
    } else {
        format!("started {} ms on {on}{writable}", steps.join(", "))
    };
    println!(
        "run {run:>3}: {what} -> detect {:>5} ms, fenced {:>5} ms, {steps}",
        row.detect, row.fenced
    );
}

fn summary(fault: Fault, rows: &[Row]) {
    println!(
        "| from the {} to | p50 ms | p99 ms | max ms |",
        fault.describe()
    );
    println!("|---|---|---|---|");
    let line = |what: &str, mut v: Vec<u64>| {
        v.sort_unstable();
        println!(
            "| {what} | {} | {} | {} |",
            percentile(&v, 50),
            percentile(&v, 99),
            v.last().copied().unwrap_or(0)
        );
    };
    line(
        "survivor declares the other node dead (detection)",
        rows.iter().map(|r| r.detect).collect(),
    );
    line(
        "its BMC confirms it off (fence confirmed)",
        rows.iter().map(|r| r.fenced).collect(),
    );
    if fault == Fault::Partition {
        println!(
            "| group on the holder | kept | kept | never stopped in {} runs |",
            rows.len()
        );
        return;
    }
    for (i, r) in RESOURCES.iter().enumerate() {
        let what = if i + 1 == RESOURCES.len() {
            format!("{r} started: group running on the survivor (failover)")
        } else {
            format!("{r} started")
        };
        line(
            &what,
            rows.iter()
                .filter_map(|row| row.started.get(i).copied())
                .collect(),
        );
    }
    let writable: Vec<u64> = rows.iter().filter_map(|r| r.writable).collect();
    if !writable.is_empty() {
        line(
            "the new primary accepts a write (Catalog writable)",
            writable,
        );
    }
}

/// Each node's memory and CPU over the whole run, summed over the agent processes it had.
#[derive(Default)]
struct Usage {
    /// Per node: per PID, (first CPU seen, last CPU seen, peak VmHWM, last VmRSS), KiB.
    procs: [BTreeMap<i32, (Duration, Duration, u64, u64)>; 2],
    current: [i32; 2],
    since: [Option<Instant>; 2],
}

impl Usage {
    fn started(&mut self, node: usize, pid: Pid) {
        self.since[node].get_or_insert_with(Instant::now);
        self.current[node] = pid.as_raw();
        self.sample(node, pid);
    }

    fn sample(&mut self, node: usize, pid: Pid) {
        let Some(s) = proc_stats(pid) else { return };
        let e = self.procs[node]
            .entry(pid.as_raw())
            .or_insert((s.cpu, s.cpu, 0, 0));
        e.1 = s.cpu;
        e.2 = e.2.max(s.vm_hwm_kib);
        e.3 = s.vm_rss_kib;
    }

    fn print(&self, wall: Duration) {
        println!("| agent | processes | peak VmHWM | last VmRSS | CPU time | CPU / wall |");
        println!("|---|---|---|---|---|---|");
        for (i, procs) in self.procs.iter().enumerate() {
            let cpu: Duration = procs.values().map(|p| p.1.saturating_sub(p.0)).sum();
            let hwm = procs.values().map(|p| p.2).max().unwrap_or(0);
            let rss = procs.get(&self.current[i]).map_or(0, |p| p.3);
            let wall = self.since[i].map_or(wall, |s| s.elapsed());
            println!(
                "| {} | {} | {:.1} MiB | {:.1} MiB | {:.2} s | {:.2} % over {:.0} s |",
                NAMES[i],
                procs.len(),
                kib_to_mib(hwm),
                kib_to_mib(rss),
                cpu.as_secs_f64(),
                100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
                wall.as_secs_f64()
            );
        }
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    // KiB counts of an agent are far below 2^52: the conversion is exact.
    kib as f64 / 1024.0
}

/// A UDP "cable" between two loopback sockets: one relay leg towards each node
/// ([`hwtests::rig::relay::UdpRelay`]); each node sends to the leg that stands for its peer,
/// which forwards to the peer's real address unless it is cut.
struct UdpRelay {
    /// The front for node 0 and for node 1: what the other node sends to.
    fronts: [SocketAddr; 2],
    legs: [Leg; 2],
}

impl UdpRelay {
    fn start(targets: [SocketAddr; 2]) -> Result<UdpRelay> {
        let lo: SocketAddr = "127.0.0.1:0".parse()?;
        let legs = [
            Leg::start(lo, lo, targets[0])?,
            Leg::start(lo, lo, targets[1])?,
        ];
        Ok(UdpRelay {
            fronts: [legs[0].front(), legs[1].front()],
            legs,
        })
    }

    fn cut(&self, cut: bool) {
        for leg in &self.legs {
            leg.set_cut(Way::ToTarget, cut);
        }
    }
}

/// Adds the BMCs, fencing levels and the resource group to the pair's configuration.
fn configure(pair: &Pair, bmcs: &[IpmiSim; 2], pg: Option<&PgCluster>) -> Result<()> {
    let mut text = hwtests::pair::add_ipmi_fencing(
        &fs::read_to_string(&pair.config)?,
        &[bmcs[0].address(), bmcs[1].address()],
    );
    let dir = pair.dir().display().to_string();
    for r in RESOURCES {
        if let (Some(pg), "catalog") = (pg, r) {
            // Alpha's server; each node's own file names its own (see `Rig::new`).
            let a = PgNode::A;
            text.push_str(&format!(
                "\n[[resource]]\nname = \"{r}\"\ntype = \"pgsql\"\nbindir = \"{}\"\n\
                 datadir = \"{}\"\nport = {}\nhost = \"127.0.0.1\"\nuser = \"{PG_OS_USER}\"\n\
                 superuser = \"postgres\"\npassword_file = \"{}\"\n\
                 primary_conninfo = {{ alpha = \"{}\", beta = \"{}\" }}\nrejoin = \"rewind\"\n",
                pg.bindir().display(),
                pg.datadir(a).display(),
                pg.port(a),
                pg.password_file().display(),
                pg.conninfo_to(PgNode::B, PgNode::A),
                pg.conninfo_to(PgNode::A, PgNode::B),
            ));
            continue;
        }
        text.push_str(&format!(
            "\n[[resource]]\nname = \"{r}\"\ntype = \"ocf\"\nagent = \"heartbeat:Dummy\"\n\
             params = {{ state = \"{dir}/{{node}}-{r}.state\" }}\n"
        ));
    }
    fs::write(&pair.config, text)?;
    Ok(())
}

/// Alpha runs the Catalog's node A, beta node B.
fn pg_node(i: usize) -> PgNode {
    if i == 0 {
        PgNode::A
    } else {
        PgNode::B
    }
}

/// Polls `INSERT`s into the Catalog on `node` until one is accepted; milliseconds from `at`.
fn first_write(pg: &PgCluster, node: PgNode, run: usize, at: SystemTime) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    let sql = format!("INSERT INTO bench_failover (run) VALUES ({run})");
    let mut last = String::new();
    while Instant::now() < deadline {
        match pg.sql(node, &sql) {
            Ok(_) => {
                let d = SystemTime::now().duration_since(at).unwrap_or_default();
                return Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{node:?} accepted no write within {WAIT:?}; last error: {last}")
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

/// Milliseconds from `at` to: `peer_down` of `victim`, the fencing level that confirmed it off,
/// and (when `takeover`) each resource's start, from the survivor's log.
fn breakdown(log: &Path, victim: &str, at: SystemTime, takeover: bool) -> Result<Row> {
    let after = |v: &Value| log_timestamp(v).filter(|t| *t >= at);
    let ms = |t: SystemTime| {
        t.duration_since(at)
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
    let mut started = Vec::new();
    if takeover {
        for r in RESOURCES {
            let t = first(&|v| v["event"] == "resource_started" && v["resource"] == r)
                .with_context(|| format!("no start of {r}"))?;
            started.push(ms(t));
        }
    }
    Ok(Row {
        detect: ms(detect),
        fenced: ms(fenced),
        started,
        writable: None,
    })
}
