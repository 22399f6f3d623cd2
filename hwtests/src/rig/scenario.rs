//! Scenarios on a rig, checked from outside the agents.
//!
//! Each scenario injects one fault, waits for the outcome the engine's rules demand, checks the
//! invariants, then mends everything (links healed, dead or fenced hosts rebooted) and waits
//! until the cluster is whole again. The invariants, on every poll:
//!
//! - never two holders, judged from the resources themselves (marker files, who has the virtual
//!   IP, which PostgreSQL accepts writes, where the filesystem is mounted) among hosts with
//!   power: a host whose BMC reports it off is not counted, as on real hardware it is dark;
//! - no takeover before a confirmed fence: a survivor starts nothing while the old holder's BMC
//!   still reports power on;
//! - the epoch never goes back, and grows with every change of holder;
//! - rows written to the Catalog (and replicated) before a failure are there after it, and so
//!   is a file written (and flushed) on the group's filesystems.
//!
//! `chaos` runs random faults in sequence from a printed seed, so a failing run can be replayed.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::Rig;

/// How long an outcome may take (detection, fence, start, a rejoin with pg_rewind).
const WAIT: Duration = Duration::from_secs(30);
/// How long a lost host may take to come back whole: boot, rejoin, the Catalog rewound or
/// restarted and streaming (a follow that raced the holder's start is retried seconds later).
const REJOIN_WAIT: Duration = Duration::from_secs(60);
/// How long a fault that must change nothing is held.
const QUIET: Duration = Duration::from_secs(5);

/// Scenario names `run` accepts.
pub const SCENARIOS: [&str; 16] = [
    "switchover",
    "kill-holder",
    "kill-standby",
    "freeze-holder",
    "partition",
    "isolate-holder",
    "one-way",
    "lossy-lan",
    "corrupt-links",
    "bmc-lies",
    "bmc-down",
    "disk-full",
    "clock-jump",
    "start-failure",
    "stop-hang",
    "chaos",
];

/// A scenario failed: what was expected and what the rig showed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, Failed> {
    Err(Failed(msg.into()))
}

/// Runs scenarios on a built rig, keeping track of the holder and the epoch.
#[derive(Debug)]
pub struct Runner<R: Rig> {
    /// The rig.
    pub rig: R,
    holder: usize,
    epoch: u64,
    rows: u64,
    /// Writes made to the group's filesystems (each the next count, in one file).
    writes: u64,
    /// One line per step, also printed.
    pub log: Vec<String>,
    /// Failover times measured so far.
    pub timings: Vec<Timing>,
}

/// One failover, timed from the fault by the rig's own clocks.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The scenario.
    pub scenario: String,
    /// Fault to the BMC switching the lost host off, in milliseconds.
    pub fenced_ms: f64,
    /// Fault to the last resource of the group started on the survivor, in milliseconds.
    pub group_ms: f64,
}

fn fault_error(e: std::io::Error) -> Failed {
    Failed(e.to_string())
}

/// Polls `pred` every 20 ms for at most `timeout`.
fn wait_for<R: Rig>(rig: &R, timeout: Duration, mut pred: impl FnMut(&R) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred(rig) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The faults scenario `name` injects on `rig` (names from [`super::FAULTS`]).
pub fn faults_of(name: &str, desc: &super::desc::RigDesc) -> Vec<&'static str> {
    let cables = !desc.cables.is_empty();
    let lan = !desc.ethernet.is_empty();
    let mut f = Vec::new();
    match name {
        "partition" | "isolate-holder" => {
            if cables {
                f.push("serial-cut");
            }
            if lan {
                f.push("lan-cut");
            }
        }
        "one-way" => {
            if cables {
                f.push("serial-cut");
            }
            if lan {
                f.push("lan-cut");
            }
        }
        "lossy-lan" => {
            if cables {
                f.push("serial-cut");
            }
            f.push("lan-degrade");
        }
        "corrupt-links" => f.extend(["lan-corrupt", "serial-noise"]),
        "bmc-lies" => f.push("bmc-lies"),
        "bmc-down" => f.push("bmc-down"),
        "disk-full" => f.push("disk-full"),
        "clock-jump" => f.push("clock-jump"),
        "start-failure" => f.push("start-failure"),
        "stop-hang" => f.push("stop-hang"),
        _ => {}
    }
    f
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<R: Rig> Runner<R> {
    /// Starts the agents (the first host that can hold first, so that its PostgreSQL, the
    /// Catalog's primary, is where the group starts) and waits for the group to run there. On
    /// a rig whose cluster already runs (real hosts), the host holding the group stays the
    /// holder and every other agent is started if it does not run.
    pub fn start(mut rig: R) -> Result<Self, Failed> {
        let [a, b] = rig.desc().holders();
        let n = rig.desc().hosts.len();
        let holder = [a, b].into_iter().find(|&i| rig.holds_all(i));
        let holder = match holder {
            Some(h) => h,
            None => {
                // With the witnesses, whose votes it needs.
                for i in 0..n {
                    if (i == a || rig.desc().hosts[i].witness) && !rig.agent_running(i) {
                        rig.start(i)
                            .map_err(|e| Failed(format!("start {}: {e}", rig.name(i))))?;
                    }
                }
                if !wait_for(&rig, WAIT, |r| r.holds_all(a)) {
                    return fail(format!(
                        "{} did not take the group within {WAIT:?}",
                        rig.name(a)
                    ));
                }
                a
            }
        };
        // Alone, it fenced the others before taking over (it cannot know they hold nothing):
        // they boot now, as after a power cut.
        for i in 0..n {
            if i != holder && !rig.agent_running(i) {
                let started = if rig.powered(i) {
                    rig.start(i)
                } else {
                    rig.reboot(i)
                };
                started.map_err(|e| Failed(format!("start {}: {e}", rig.name(i))))?;
            }
        }
        let mut runner = Self {
            rig,
            holder,
            epoch: 0,
            rows: 0,
            writes: 0,
            log: Vec::new(),
            timings: Vec::new(),
        };
        runner.wait_whole("start")?;
        runner.epoch = runner.epoch_of(holder).unwrap_or(0);
        if runner.rig.desc().has_catalog() {
            runner
                .rig
                .catalog_sql(
                    holder,
                    "CREATE TABLE IF NOT EXISTS chaos (n bigint primary key)",
                )
                .map_err(Failed)?;
            runner.rows = runner
                .rig
                .catalog_sql(holder, "SELECT count(*) FROM chaos")
                .map_err(Failed)?
                .trim()
                .parse()
                .map_err(|e| Failed(format!("rows in chaos: {e}")))?;
        }
        Ok(runner)
    }

    /// The host holding the group.
    pub fn holder(&self) -> usize {
        self.holder
    }

    fn say(&mut self, line: String) {
        eprintln!("{line}");
        self.log.push(line);
    }

    fn epoch_of(&self, i: usize) -> Option<u64> {
        self.rig.resources(i).and_then(|r| r["epoch"].as_u64())
    }

    fn standby(&self) -> usize {
        let [a, b] = self.rig.desc().holders();
        if self.holder == a {
            b
        } else {
            a
        }
    }

    /// Polls until `pred`, checking on every poll that no two powered hosts run resources.
    fn watch(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&R) -> bool,
    ) -> Result<Duration, Failed> {
        let started = Instant::now();
        loop {
            // Two looks: one look reads the hosts one after the other, and a switchover
            // (tens of milliseconds) can fall between them; a real double holder persists.
            let holders = self.rig.holders();
            if holders.len() > 1 && self.rig.holders().len() > 1 {
                let seen: Vec<String> = holders
                    .iter()
                    .map(|&i| format!("{} runs {:?}", self.rig.name(i), self.rig.running(i)))
                    .collect();
                return fail(format!("{what}: two holders: {}", seen.join("; ")));
            }
            if pred(&self.rig) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let seen: Vec<String> = (0..self.rig.desc().hosts.len())
                    .map(|i| {
                        format!(
                            "{} powered={} runs {:?}",
                            self.rig.name(i),
                            self.rig.powered(i),
                            self.rig.running(i)
                        )
                    })
                    .collect();
                return fail(format!(
                    "{what}: not within {timeout:?}: {}",
                    seen.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// For [`QUIET`], checks every 50 ms that `broken` finds nothing wrong.
    fn stays_quiet(&self, broken: impl Fn(&R) -> Option<String>) -> Result<(), Failed> {
        let started = Instant::now();
        while started.elapsed() < QUIET {
            if let Some(why) = broken(&self.rig) {
                return fail(why);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until exactly one of `pair` has power and runs the whole group, then checks the
    /// epoch and the rows on it; returns it.
    fn one_survivor(&mut self, what: &str, pair: [usize; 2]) -> Result<usize, Failed> {
        self.watch(what, WAIT, |r| {
            let alive: Vec<usize> = pair.into_iter().filter(|&i| r.powered(i)).collect();
            alive.len() == 1 && r.holds_all(alive[0])
        })?;
        let winner = if self.rig.powered(pair[0]) {
            pair[0]
        } else {
            pair[1]
        };
        self.check_after(what, winner)?;
        Ok(winner)
    }

    /// Holds the current state for `QUIET`, failing if the holder changes or anything is
    /// powered off.
    fn hold_still(&self, what: &str) -> Result<(), Failed> {
        let holder = self.holder;
        let offs = self.rig.power_offs();
        self.stays_quiet(|r| {
            if !r.holds_all(holder) || r.holders() != vec![holder] {
                Some(format!(
                    "{what}: the group moved or stopped: {} runs {:?}, holders {:?}",
                    r.name(holder),
                    r.running(holder),
                    r.holders()
                ))
            } else if r.power_offs() != offs {
                Some(format!("{what}: a host was fenced"))
            } else {
                None
            }
        })
    }

    /// Writes a row on the Catalog's primary and waits until the standby has it, and the
    /// next count into a file on the group's filesystems.
    fn write_row(&mut self) -> Result<(), Failed> {
        let n = self.writes + 1;
        let wrote = self
            .rig
            .write_storage(self.holder, &n.to_string())
            .map_err(|e| Failed(format!("write on the group's filesystem: {e}")))?;
        if wrote > 0 {
            self.writes = n;
        }
        if !self.rig.desc().has_catalog() {
            return Ok(());
        }
        let (p, standby) = (self.holder, self.standby());
        let n = self.rows + 1;
        self.rig
            .catalog_sql(p, &format!("INSERT INTO chaos VALUES ({n})"))
            .map_err(|e| Failed(format!("write row {n}: {e}")))?;
        let deadline = Instant::now() + WAIT;
        loop {
            if self
                .rig
                .catalog_sql(standby, "SELECT count(*) FROM chaos")
                .is_ok_and(|c| c.trim() == n.to_string())
            {
                break;
            }
            if Instant::now() > deadline {
                return fail(format!("row {n} did not reach the standby"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.rows = n;
        Ok(())
    }

    /// After a change of holder: the epoch grew, rows are there.
    fn check_after(&mut self, what: &str, new_holder: usize) -> Result<(), Failed> {
        let epoch = self.epoch_of(new_holder).unwrap_or(0);
        if epoch < self.epoch {
            return fail(format!("{what}: epoch went back {} -> {epoch}", self.epoch));
        }
        if new_holder != self.holder && epoch <= self.epoch {
            return fail(format!("{what}: new holder at the old epoch {epoch}"));
        }
        if self.rig.desc().has_catalog() {
            let count = self
                .rig
                .catalog_sql(new_holder, "SELECT count(*) FROM chaos")
                .map_err(Failed)?;
            if count.trim() != self.rows.to_string() {
                return fail(format!(
                    "{what}: {} rows written before, {} after",
                    self.rows,
                    count.trim()
                ));
            }
        }
        if self.writes > 0 {
            let want = self.writes.to_string();
            let seen = self.rig.read_storage(new_holder);
            if seen.is_empty() {
                return fail(format!(
                    "{what}: {} holds the group but has no filesystem of it mounted",
                    self.rig.name(new_holder)
                ));
            }
            for (dir, text) in seen {
                if text.as_deref() != Some(want.as_str()) {
                    return fail(format!(
                        "{what}: {dir} on {} has {text:?}, written before the fault: {want:?}",
                        self.rig.name(new_holder)
                    ));
                }
                self.say(format!(
                    "{what}: write {want} made before the fault is on {} at {dir}",
                    self.rig.name(new_holder)
                ));
            }
        }
        self.epoch = epoch;
        self.holder = new_holder;
        Ok(())
    }

    /// Mends links and faults, reboots every host without power or agent, and waits until
    /// every host is back: the holder runs the group, the others are standby.
    fn mend(&mut self, what: &str) -> Result<(), Failed> {
        let events = self
            .rig
            .check_journal()
            .map_err(|e| Failed(format!("{what}: {e}")))?;
        self.say(format!(
            "{what}: journal of {events} starts, stops and power-offs: never two hosts at once"
        ));
        self.rig
            .heal()
            .map_err(|e| Failed(format!("{what}: heal: {e}")))?;
        for i in 0..self.rig.desc().hosts.len() {
            let running = self.rig.agent_running(i);
            if !self.rig.powered(i) || !running {
                self.rig
                    .reboot(i)
                    .map_err(|e| Failed(format!("{what}: reboot: {e}")))?;
            }
        }
        self.wait_whole(what)
    }

    fn wait_whole(&self, what: &str) -> Result<(), Failed> {
        let holder = self.holder;
        let n = self.rig.desc().hosts.len();
        let standby = self.standby();
        self.watch(&format!("{what}: rejoin"), REJOIN_WAIT, |r| {
            r.holds_all(holder)
                && (0..n).filter(|&i| i != holder).all(|i| {
                    let witness = r.desc().hosts[i].witness;
                    r.resources(i)
                        .is_some_and(|v| v["holds"] == false && (witness || v["role"] == "Standby"))
                })
                // The Catalog's copy on the standby streams again: the next failure loses
                // nothing written from here on.
                && (!r.desc().has_catalog()
                    || r
                        .catalog_sql(standby, "SELECT status FROM pg_stat_wal_receiver")
                        .is_ok_and(|s| s.trim() == "streaming"))
        })?;
        Ok(())
    }

    /// The holder is lost (killed, frozen): the standby fences it, then takes over.
    fn lose_holder(&mut self, what: &str, signal: Signal) -> Result<(), Failed> {
        let victim = self.holder;
        let survivor = self.standby();
        self.write_row()?;
        let t0 = Instant::now();
        let at = unix_now();
        self.rig
            .signal(victim, signal)
            .map_err(|e| Failed(e.to_string()))?;
        // No takeover before the fence: while the victim has power, the survivor runs nothing.
        let took = self.no_start_before_fence(what, survivor, victim)?;
        self.watch(what, WAIT, |r| r.holds_all(survivor))?;
        let total = t0.elapsed();
        self.check_after(what, survivor)?;
        self.record(what, at, victim, survivor);
        self.say(format!(
            "{what}: {} fenced after {} ms, group running on {} after {} ms",
            self.rig.name(victim),
            took.as_millis(),
            self.rig.name(survivor),
            total.as_millis()
        ));
        self.mend(what)
    }

    /// Every heartbeat path between the two holders cut (a witness, if any, hears both): one
    /// side fences the other, one holder remains.
    fn partition(&mut self, what: &str) -> Result<(), Failed> {
        let [a, b] = self.rig.desc().holders();
        self.write_row()?;
        self.rig.cut_serial(true).map_err(fault_error)?;
        self.rig
            .deafen(a, b)
            .and_then(|()| self.rig.deafen(b, a))
            .map_err(|e| Failed(e.to_string()))?;
        if self.has_witness() {
            return self.witness_keeps_peace(what);
        }
        let winner = self.one_survivor(what, [a, b])?;
        self.say(format!(
            "{what}: {} survived and holds",
            self.rig.name(winner)
        ));
        self.mend(what)
    }

    fn has_witness(&self) -> bool {
        self.rig.desc().hosts.iter().any(|h| h.witness)
    }

    /// The witness still hears both sides of a cut between the two hosts: each knows the other
    /// is alive through it, so the holder keeps the group and nobody is fenced.
    fn witness_keeps_peace(&mut self, what: &str) -> Result<(), Failed> {
        self.hold_still(what)?;
        self.say(format!(
            "{what}: the witness hears both sides: {} keeps the group, nobody fenced",
            self.rig.name(self.holder)
        ));
        self.mend(what)
    }

    /// The holder cut off from every other host on every heartbeat path (the management
    /// network stays up). With a witness the majority fences it and takes over, and the holder,
    /// which lost its quorum, stops the group by itself as well.
    fn isolate_holder(&mut self, what: &str) -> Result<(), Failed> {
        if !self.has_witness() {
            // Two hosts: the same as a partition, which the holder's head start wins.
            return self.partition(what);
        }
        let (h, s) = (self.holder, self.standby());
        self.write_row()?;
        self.rig.cut_serial(true).map_err(fault_error)?;
        for o in (0..self.rig.desc().hosts.len()).filter(|&o| o != h) {
            self.rig
                .deafen(o, h)
                .and_then(|()| self.rig.deafen(h, o))
                .map_err(|e| Failed(e.to_string()))?;
        }
        let took = self.watch(what, WAIT, |r| r.holds_all(s) && r.running(h).is_empty())?;
        self.check_after(what, s)?;
        self.say(format!(
            "{what}: {} isolated; {} holds after {} ms ({} powered {})",
            self.rig.name(h),
            self.rig.name(s),
            took.as_millis(),
            self.rig.name(h),
            if self.rig.powered(h) { "on" } else { "off" }
        ));
        self.mend(what)
    }

    /// The standby hears nothing from the holder, the holder still hears the standby.
    fn one_way(&mut self, what: &str) -> Result<(), Failed> {
        let (h, s) = (self.holder, self.standby());
        self.write_row()?;
        self.rig.deafen(s, h).map_err(|e| Failed(e.to_string()))?;
        if self.has_witness() {
            return self.witness_keeps_peace(what);
        }
        let winner = self.one_survivor(what, [h, s])?;
        self.say(format!(
            "{what}: {} holds, the other was fenced",
            self.rig.name(winner)
        ));
        self.mend(what)
    }

    /// A fence device that cannot confirm: no takeover while it fails, takeover once it works.
    /// `bmc-lies` makes every device of the holder lie; `bmc-down` cuts its first level's
    /// device, and when the holder has a next level, that level must fence it at once.
    fn bad_bmc(&mut self, what: &str, lie: bool) -> Result<(), Failed> {
        let (victim, survivor) = (self.holder, self.standby());
        if !lie && self.rig.desc().hosts[victim].fence.len() > 1 {
            return self.next_level_fences(what, victim, survivor);
        }
        self.write_row()?;
        if lie {
            self.rig
                .bmc_ignores_off(victim, true)
                .map_err(fault_error)?;
        } else {
            self.rig.cut_bmc(victim, true).map_err(fault_error)?;
        }
        self.rig.kill(victim).map_err(|e| Failed(e.to_string()))?;
        self.stays_quiet(|r| {
            let runs = r.running(survivor);
            (!runs.is_empty()).then(|| {
                format!(
                    "{what}: {} took over without a confirmed fence: {runs:?}",
                    r.name(survivor)
                )
            })
        })?;
        if lie {
            self.rig
                .bmc_ignores_off(victim, false)
                .map_err(fault_error)?;
        } else {
            self.rig.cut_bmc(victim, false).map_err(fault_error)?;
        }
        // A crashed agent on a powered host left its resources running: they count until the
        // fence takes the power.
        self.watch(what, WAIT, |r| !r.powered(victim) && r.holds_all(survivor))?;
        self.check_after(what, survivor)?;
        self.say(format!(
            "{what}: nothing started for {} s while the fence failed; takeover once it worked",
            QUIET.as_secs()
        ));
        self.mend(what)
    }

    /// Every heartbeat datagram on the LAN has a bit flipped, then (the LAN clean again) the
    /// serial cables carry bursts of line noise between frames. Each time the other path
    /// carries the heartbeat: nothing may move, and every host must have dropped and counted
    /// what it could not authenticate or decode, on the link it arrived on.
    fn corrupt_links(&mut self, what: &str) -> Result<(), Failed> {
        let hosts: Vec<usize> = (0..self.rig.desc().hosts.len()).collect();
        let before = self.rejected_counts(&hosts)?;
        self.rig.corrupt_lan(true).map_err(fault_error)?;
        let lan = self.hold_still(what);
        self.rig.corrupt_lan(false).map_err(fault_error)?;
        lan?;
        let mid = self.rejected_counts(&hosts)?;
        let burst = std::cell::Cell::new(0u64);
        let noise_failed = std::cell::RefCell::new(None);
        let holder = self.holder;
        let offs = self.rig.power_offs();
        self.stays_quiet(|r| {
            burst.set(burst.get() + 1);
            if let Err(e) = r.serial_noise(burst.get()) {
                *noise_failed.borrow_mut() = Some(e.to_string());
            }
            if !r.holds_all(holder) || r.holders() != vec![holder] || r.power_offs() != offs {
                Some(format!(
                    "{what}: line noise on the cables moved the group: holders {:?}, {} power-offs",
                    r.holders(),
                    r.power_offs() - offs
                ))
            } else {
                None
            }
        })?;
        if let Some(e) = noise_failed.into_inner() {
            return fail(format!("{what}: injecting noise: {e}"));
        }
        let after = self.rejected_counts(&hosts)?;
        for (k, &i) in hosts.iter().enumerate() {
            let (lan_dropped, serial_dropped) = (mid[k].0 - before[k].0, after[k].1 - mid[k].1);
            if lan_dropped == 0 || serial_dropped == 0 {
                return fail(format!(
                    "{what}: {} counted {lan_dropped} rejected LAN frames while they were \
                     corrupted and {serial_dropped} rejected serial frames under {} bursts of noise",
                    self.rig.name(i),
                    burst.get()
                ));
            }
        }
        let counts: Vec<String> = hosts
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                format!(
                    "{} {} on the LAN, {} on serial",
                    self.rig.name(i),
                    mid[k].0 - before[k].0,
                    after[k].1 - mid[k].1
                )
            })
            .collect();
        self.say(format!(
            "{what}: every LAN datagram corrupted for {} s, then {} bursts of line noise on the \
             cables: no failover; frames rejected and counted: {}",
            QUIET.as_secs(),
            burst.get(),
            counts.join("; ")
        ));
        self.mend(what)
    }

    /// The holder's first fencing level unreachable when it dies: the survivor must fence it
    /// through its next level (never starting anything while it has power), then take over.
    fn next_level_fences(
        &mut self,
        what: &str,
        victim: usize,
        survivor: usize,
    ) -> Result<(), Failed> {
        let kinds: Vec<&str> = self.rig.desc().hosts[victim]
            .fence
            .iter()
            .map(|k| k.word())
            .collect();
        self.write_row()?;
        self.rig.cut_bmc(victim, true).map_err(fault_error)?;
        let at = unix_now();
        self.rig.kill(victim).map_err(|e| Failed(e.to_string()))?;
        let took = self.no_start_before_fence(what, survivor, victim)?;
        self.watch(what, WAIT, |r| !r.powered(victim) && r.holds_all(survivor))?;
        if let Some(levels) = self.rig.levels_off_since(victim, at) {
            if levels.first().is_none_or(|&l| l == 0) {
                return fail(format!(
                    "{what}: {} was switched off by levels {levels:?} of {kinds:?}, not by a \
                     level after the unreachable {}",
                    self.rig.name(victim),
                    kinds[0]
                ));
            }
        }
        self.check_after(what, survivor)?;
        self.record(what, at, victim, survivor);
        self.say(format!(
            "{what}: {}'s {} unreachable; fenced by a later level of {kinds:?} after {} ms, \
             group on {}",
            self.rig.name(victim),
            kinds[0],
            took.as_millis(),
            self.rig.name(survivor)
        ));
        self.mend(what)
    }

    /// Per host: frames its UDP links and its serial links rejected so far (bad MAC, bad
    /// CRC or framing, malformed, replayed, foreign), from `watchkeeper status --json`.
    fn rejected_counts(&self, hosts: &[usize]) -> Result<Vec<(u64, u64)>, Failed> {
        hosts
            .iter()
            .map(|&i| {
                let out = self
                    .rig
                    .cli(i, &["status", "--json"])
                    .map_err(|e| Failed(format!("status of {}: {e}", self.rig.name(i))))?;
                let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                    Failed(format!(
                        "status of {}: {e}: {}",
                        self.rig.name(i),
                        String::from_utf8_lossy(&out.stderr)
                    ))
                })?;
                let mut counts = (0, 0);
                for l in v["links"].as_array().into_iter().flatten() {
                    let n: u64 = [
                        "crc_errors",
                        "resyncs",
                        "auth_failures",
                        "replays",
                        "malformed",
                        "foreign_cluster",
                    ]
                    .iter()
                    .filter_map(|k| l[*k].as_u64())
                    .sum();
                    match l["kind"].as_str() {
                        Some("udp") => counts.0 += n,
                        Some("serial") => counts.1 += n,
                        _ => {}
                    }
                }
                Ok(counts)
            })
            .collect()
    }

    /// The standby's state directory is full when the holder dies: it cannot record the new
    /// epoch, so it must not take over until it can.
    fn disk_full(&mut self, what: &str) -> Result<(), Failed> {
        let (victim, survivor) = (self.holder, self.standby());
        self.write_row()?;
        self.rig
            .fill_disk(survivor, true)
            .map_err(|e| Failed(e.to_string()))?;
        self.rig.kill(victim).map_err(|e| Failed(e.to_string()))?;
        self.stays_quiet(|r| {
            let runs = r.running(survivor);
            (!runs.is_empty()).then(|| {
                format!(
                    "{what}: {} started {runs:?} with a full state directory",
                    r.name(survivor)
                )
            })
        })?;
        self.rig
            .fill_disk(survivor, false)
            .map_err(|e| Failed(e.to_string()))?;
        self.watch(what, WAIT, |r| !r.powered(victim) && r.holds_all(survivor))?;
        self.check_after(what, survivor)?;
        self.say(format!(
            "{what}: nothing started while the state directory was full; takeover once freed"
        ));
        self.mend(what)
    }

    /// The last marker resource of the group (the Director on a Bacula rig).
    fn last_marker(&self) -> Option<String> {
        self.rig
            .desc()
            .resources
            .iter()
            .rev()
            .find(|r| r.kind == super::desc::ResourceKind::Marker)
            .map(|r| r.name.clone())
    }

    /// Waits until `survivor` starts something or `victim` loses power, and fails if the
    /// survivor started while the victim still had power; how long that took.
    fn no_start_before_fence(
        &self,
        what: &str,
        survivor: usize,
        victim: usize,
    ) -> Result<Duration, Failed> {
        let took = self.watch(what, WAIT, |r| {
            !r.running(survivor).is_empty() || !r.powered_now(victim)
        })?;
        if self.started_with_power_on(survivor, victim) {
            return fail(format!(
                "{what}: {} started {:?} before {} was fenced",
                self.rig.name(survivor),
                self.rig.running(survivor),
                self.rig.name(victim)
            ));
        }
        Ok(took)
    }

    /// Whether `survivor` runs resources while `victim` still has power: read in that order,
    /// so that on a rig whose looks take time (real hosts) a fence between the two reads
    /// cannot pass for a start before the fence.
    fn started_with_power_on(&self, survivor: usize, victim: usize) -> bool {
        !self.rig.running(survivor).is_empty() && self.rig.powered_now(victim)
    }

    /// Writes a row, breaks the group's last marker resource with `fault(rig, holder,
    /// standby, resource)`, then asks the holder to switch over: the holder, the standby, the
    /// resource and the switchover's output.
    fn switchover_with(
        &mut self,
        fault: impl FnOnce(&mut R, usize, usize, &str) -> std::io::Result<()>,
    ) -> Result<(usize, usize, String, std::process::Output), Failed> {
        let (h, s) = (self.holder, self.standby());
        let res = self
            .last_marker()
            .ok_or_else(|| Failed("no marker resource".into()))?;
        self.write_row()?;
        fault(&mut self.rig, h, s, &res).map_err(fault_error)?;
        let out = self.rig.cli(h, &["switchover"]).map_err(fault_error)?;
        Ok((h, s, res, out))
    }

    /// A switchover to a standby whose last resource will not start: the group must end up
    /// running whole on one host, never half on each.
    fn start_failure(&mut self, what: &str) -> Result<(), Failed> {
        let asked = unix_now();
        let (h, s, res, out) =
            self.switchover_with(|rig, _, s, res| rig.refuse_start(s, res, true))?;
        self.say(format!(
            "{what}: switchover to {} whose {res} will not start: {}",
            self.rig.name(s),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        // The switchover has run its course once the group is whole on the standby, or whole
        // again on the holder after starting there anew: right after the command the holder
        // still runs it all, which says nothing yet.
        let first = self.rig.desc().resources[0].name.clone();
        self.watch(what, WAIT, |r| {
            let (on_h, on_s) = (r.holds_all(h), r.holds_all(s));
            (on_s && !on_h)
                || (on_h && !on_s && r.start_times(h, &first).iter().any(|&t| t > asked))
        })?;
        let winner = if self.rig.holds_all(h) { h } else { s };
        self.check_after(what, winner)?;
        self.say(format!(
            "{what}: the group runs whole on {}",
            self.rig.name(winner)
        ));
        // As an operator would once the cause is fixed: the failed start made the node
        // ineligible until its failures are forgotten.
        self.rig
            .refuse_start(s, &res, false)
            .map_err(|e| Failed(e.to_string()))?;
        let out = self
            .rig
            .cli(s, &["cleanup", &res])
            .map_err(|e| Failed(e.to_string()))?;
        if !out.status.success() {
            return fail(format!(
                "{what}: cleanup on {}: {}",
                self.rig.name(s),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.mend(what)
    }

    /// A switchover whose stop hangs on the holder: the holder cannot hand over cleanly, so it
    /// must be fenced before the standby starts anything.
    fn stop_hang(&mut self, what: &str) -> Result<(), Failed> {
        let (h, s, _, _) = self.switchover_with(|rig, h, _, res| rig.hang_stop(h, res, true))?;
        let fenced = self.watch(what, WAIT, |r| {
            !r.running(s).is_empty() || !r.powered_now(h)
        })?;
        if self.started_with_power_on(s, h) {
            return fail(format!(
                "{what}: {} started {:?} while {} (stop hung) had power",
                self.rig.name(s),
                self.rig.running(s),
                self.rig.name(h)
            ));
        }
        self.watch(what, WAIT, |r| r.holds_all(s))?;
        self.check_after(what, s)?;
        self.say(format!(
            "{what}: {} fenced {} ms after its stop hung; {} holds",
            self.rig.name(h),
            fenced.as_millis(),
            self.rig.name(s)
        ));
        self.mend(what)
    }

    /// A planned switchover: the group moves in order, nobody is fenced.
    fn switchover(&mut self, what: &str) -> Result<(), Failed> {
        let (h, s) = (self.holder, self.standby());
        self.write_row()?;
        let offs = self.rig.power_offs();
        let out = self
            .rig
            .cli(h, &["switchover"])
            .map_err(|e| Failed(e.to_string()))?;
        if !out.status.success() {
            return fail(format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let took = self.watch(what, WAIT, |r| r.holds_all(s))?;
        if self.rig.power_offs() != offs {
            return fail(format!("{what}: a planned switchover fenced a host"));
        }
        self.check_after(what, s)?;
        self.say(format!(
            "{what}: the group moved to {} in {} ms",
            self.rig.name(s),
            took.as_millis()
        ));
        self.mend(what)
    }

    /// The standby's agent is killed: the holder keeps the group.
    fn kill_standby(&mut self, what: &str) -> Result<(), Failed> {
        let (h, s) = (self.holder, self.standby());
        self.write_row()?;
        self.rig.kill(s).map_err(|e| Failed(e.to_string()))?;
        self.stays_quiet(|r| {
            (!r.holds_all(h)).then(|| {
                format!(
                    "{what}: {} stopped holding: runs {:?}",
                    r.name(h),
                    r.running(h)
                )
            })
        })?;
        self.check_after(what, h)?;
        self.say(format!(
            "{what}: {} kept the group ({} powered {})",
            self.rig.name(h),
            self.rig.name(s),
            if self.rig.powered(s) { "on" } else { "off" }
        ));
        self.mend(what)
    }

    /// Times of a failover from the rig's own clocks: the fence devices' logs for the fence, the
    /// resource journal for the last resource of the group started on the survivor.
    fn record(&mut self, what: &str, at: f64, victim: usize, survivor: usize) {
        let off = self
            .rig
            .off_times(victim)
            .into_iter()
            .filter(|&t| t >= at)
            .reduce(f64::min);
        let last = self.last_marker();
        let started = last.and_then(|res| {
            self.rig
                .start_times(survivor, &res)
                .into_iter()
                .find(|&t| t >= at)
        });
        if let (Some(off), Some(started)) = (off, started) {
            self.timings.push(Timing {
                scenario: what.to_owned(),
                fenced_ms: (off - at) * 1000.0,
                group_ms: (started - at) * 1000.0,
            });
        }
    }

    /// Runs one named scenario (not `chaos`).
    pub fn run(&mut self, name: &str) -> Result<(), Failed> {
        if let Some(why) = self.declines(name) {
            return fail(why);
        }
        match name {
            "kill-holder" => self.lose_holder(name, Signal::SIGKILL),
            "freeze-holder" => self.lose_holder(name, Signal::SIGSTOP),
            "switchover" => self.switchover(name),
            "kill-standby" => self.kill_standby(name),
            "partition" => self.partition(name),
            "isolate-holder" => self.isolate_holder(name),
            "one-way" => self.one_way(name),
            "lossy-lan" => {
                self.rig.cut_serial(true).map_err(fault_error)?;
                self.rig
                    .degrade_lan(15, Duration::from_millis(80))
                    .map_err(fault_error)?;
                self.hold_still(name)?;
                self.say(format!(
                    "{name}: 15 % loss and 80 ms delay on the only link for {} s: no failover",
                    QUIET.as_secs()
                ));
                self.mend(name)
            }
            "corrupt-links" => self.corrupt_links(name),
            "bmc-lies" => self.bad_bmc(name, true),
            "bmc-down" => self.bad_bmc(name, false),
            "disk-full" => self.disk_full(name),
            "start-failure" => self.start_failure(name),
            "stop-hang" => self.stop_hang(name),
            "clock-jump" => {
                let s = self.standby();
                let h = self.holder;
                self.rig
                    .set_clock_offset(h, 3600)
                    .map_err(|e| Failed(e.to_string()))?;
                self.rig
                    .set_clock_offset(s, -3600)
                    .map_err(|e| Failed(e.to_string()))?;
                self.hold_still(name)?;
                self.say(format!(
                    "{name}: wall clocks stepped +1 h and -1 h for {} s: no failover",
                    QUIET.as_secs()
                ));
                self.mend(name)
            }
            other => fail(format!(
                "unknown scenario {other:?}; known: {}",
                SCENARIOS.join(", ")
            )),
        }
    }

    /// Why scenario `name` cannot run on this rig, if it cannot: a fault it needs that the
    /// rig cannot inject, named.
    pub fn declines(&self, name: &str) -> Option<String> {
        let desc = self.rig.desc();
        if name == "corrupt-links" && (desc.cables.is_empty() || desc.ethernet.is_empty()) {
            return Some(format!(
                "{name} declined on rig {:?}: it spoils one heartbeat path at a time while the \
                 other carries the heartbeat, so it needs both a serial cable and a LAN",
                desc.name
            ));
        }
        let missing = self.rig.unavailable();
        faults_of(name, self.rig.desc()).into_iter().find_map(|f| {
            missing.iter().find(|(m, _)| *m == f).map(|(m, why)| {
                format!(
                    "{name} declined on rig {:?}: it needs fault {m}, which this rig cannot \
                     inject: {why}",
                    self.rig.desc().name
                )
            })
        })
    }

    /// `faults` random scenarios from `seed`, among those the rig can run.
    pub fn chaos(&mut self, seed: u64, faults: usize) -> Result<(), Failed> {
        let available: Vec<&str> = SCENARIOS[..SCENARIOS.len() - 1]
            .iter()
            .copied()
            .filter(|s| self.declines(s).is_none())
            .collect();
        self.say(format!(
            "chaos: {faults} faults, seed {seed} (replay with --seed {seed}); faults: {}",
            available.join(", ")
        ));
        let mut rng = seed | 1;
        for n in 0..faults {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = available.len() as u64;
            let pick = available[usize::try_from(rng % len).unwrap_or(0)];
            self.say(format!(
                "fault {n}: {pick} (holder {}, epoch {})",
                self.rig.name(self.holder),
                self.epoch
            ));
            self.run(pick)
                .map_err(|e| Failed(format!("fault {n} ({pick}, seed {seed}): {}", e.0)))?;
        }
        Ok(())
    }
}
