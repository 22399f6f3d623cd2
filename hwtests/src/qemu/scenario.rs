//! Scenarios on the QEMU rig, judged from outside the guests: console lines the marker
//! resources print when they really start or stop, QMP events (`WATCHDOG`, `RESET`, `STOP`,
//! `SHUTDOWN`) and the qemu processes themselves, all stamped with the host's clock.
//!
//! After every scenario: no resource ever ran on two powered hosts at once (a frozen host counts
//! as running what it held), the survivor started nothing before the old holder's qemu had
//! ended, and the fence the agent reported as confirmed matches a qemu process that really
//! ended. Each scenario then mends the rig (links back, the switched-off guest booted again)
//! and waits until the cluster is whole, so scenarios can run back to back and a bench can
//! repeat one.
//!
//! | name | issue scenario | fault |
//! |---|---|---|
//! | `kill-holder` | 1 | SIGKILL of the holder's agent inside its guest |
//! | `freeze-holder` | 2 | QMP `stop` of the holder's whole guest |
//! | `partition` | 3 | serial cables cut and carrier lost on every heartbeat NIC; BMCs reachable (with a witness: the standby alone is cut off) |
//! | `isolate-holder` | 4 | the holder alone loses its heartbeat links, the others their BMC path (three hosts) |
//! | `bmc-down` | 5 | the holder's BMC stopped, then the holder frozen: the PDU level (needs `[qemu] pdu = true`) |
//! | `bad-cable` | — | line noise on the serial cables (Ethernet up), then a slow serial line as the only link: nothing may happen |
//! | `watchdog-reboot` | 6 | the standby's agent is killed while the holder cannot reach its BMC: the watchdog resets the standby, whose agent reports why it rebooted |

use std::time::{Duration, Instant};

use super::rig::QemuRig;
use crate::rig::desc::RigDesc;

/// Scenario names [`QemuRunner::run`] accepts.
pub const SCENARIOS: [&str; 7] = [
    "kill-holder",
    "freeze-holder",
    "partition",
    "isolate-holder",
    "bmc-down",
    "watchdog-reboot",
    "bad-cable",
];

/// A scenario failed: what was expected and what the rig showed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

/// One scenario run, timed from the fault by the host's clock (milliseconds).
#[derive(Debug, Clone, Default)]
pub struct QemuTiming {
    /// The scenario.
    pub scenario: String,
    /// Fault to the survivor's agent declaring the peer dead.
    pub detect_ms: Option<f64>,
    /// Fault to the victim's qemu ending (QMP `SHUTDOWN` from the BMC's power-off).
    pub off_ms: Option<f64>,
    /// Fault to the survivor's agent reporting the fence confirmed.
    pub fence_confirmed_ms: Option<f64>,
    /// Fault to the whole group running on the survivor.
    pub takeover_ms: Option<f64>,
    /// Fault to the watchdog's `WATCHDOG` event. For a SIGKILL of the agent, the last feed came
    /// at most one feed interval before the kill, so this is the last-feed-to-reset time to
    /// within that interval.
    pub watchdog_ms: Option<f64>,
    /// The watchdog's reset to the rebooted guest's agent running again.
    pub reboot_ms: Option<f64>,
}

/// Runs scenarios on a [`QemuRig`], keeping track of the holder.
#[derive(Debug)]
pub struct QemuRunner {
    /// The rig.
    pub rig: QemuRig,
    holder: usize,
    /// Timings so far.
    pub timings: Vec<QemuTiming>,
    /// Seconds from starting the guests to the cluster holding the group.
    pub boot_s: f64,
}

impl QemuRunner {
    /// Boots every guest and waits until one host holds the whole group with every agent up.
    pub fn start(mut rig: QemuRig) -> Result<Self, Failed> {
        let t0 = Instant::now();
        for i in 0..rig.len() {
            rig.power_on(i)
                .map_err(|e| Failed(format!("starting {}: {e}", rig.name(i))))?;
        }
        let mut runner = Self {
            rig,
            holder: 0,
            timings: Vec::new(),
            boot_s: 0.0,
        };
        for i in 0..runner.rig.len() {
            runner.agent_started(i, t0)?;
        }
        runner.holder = runner.settled(t0)?;
        runner.boot_s = t0.elapsed().as_secs_f64();
        say(format!(
            "rig up in {:.1} s: {} holds the group",
            runner.boot_s,
            runner.rig.name(runner.holder)
        ));
        Ok(runner)
    }

    /// The host holding the group.
    pub fn holder(&self) -> usize {
        self.holder
    }

    /// Runs scenario `name`, then mends the rig.
    pub fn run(&mut self, name: &str) -> Result<QemuTiming, Failed> {
        let t = match name {
            "kill-holder" => self.kill_holder()?,
            "freeze-holder" => self.freeze_holder()?,
            "partition" => self.partition()?,
            "isolate-holder" => self.isolate_holder()?,
            "bmc-down" => self.bmc_down()?,
            "watchdog-reboot" => self.watchdog_reboot()?,
            "bad-cable" => self.bad_cable()?,
            other => {
                return Err(Failed(format!(
                    "unknown scenario {other:?}; known: {}",
                    SCENARIOS.join(", ")
                )))
            }
        };
        self.check_overlaps()?;
        self.ensure_whole()?;
        self.timings.push(t.clone());
        Ok(t)
    }

    /// Scenario 1: SIGKILL of the holder's agent. Its watchdog resets the guest at the
    /// timeout; the standby detects the silence, fences the holder through its BMC (the qemu
    /// process ends) and only then starts the group.
    fn kill_holder(&mut self) -> Result<QemuTiming, Failed> {
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "kill-holder".into(),
            ..QemuTiming::default()
        };
        let before = Instant::now();
        self.command(h, "kill-agent")?;
        let fault = self.line(h, "WK-GUEST agent-killed", before, STEP)?;
        let wd = self
            .rig
            .wait_event(h, "WATCHDOG", fault, self.rig.watchdog_timeout + STEP)
            .ok_or_else(|| self.fail("the killed holder's watchdog never fired"))?;
        if wd.data["action"] != "reset" {
            return Err(self.fail(&format!("WATCHDOG action {:?}", wd.data)));
        }
        t.watchdog_ms = Some(ms(wd.at - fault));
        self.fenced_and_taken_over(h, s, fault, &mut t)?;
        if wd.at > fault + self.rig.watchdog_timeout + WATCHDOG_SLACK {
            return Err(self.fail(&format!(
                "WATCHDOG {:.0} ms after the kill; timeout {:?}",
                ms(wd.at - fault),
                self.rig.watchdog_timeout
            )));
        }
        self.report(&t);
        self.mend(h, s)?;
        Ok(t)
    }

    /// Scenario 2: the holder's whole guest frozen (QMP `stop`) beyond the deadtime. It must be
    /// switched off before it can run again; it is never resumed by the harness unless the
    /// standby failed to fence it.
    fn freeze_holder(&mut self) -> Result<QemuTiming, Failed> {
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "freeze-holder".into(),
            ..QemuTiming::default()
        };
        let fault = Instant::now();
        self.rig
            .guest(h)
            .ok_or_else(|| self.fail("the holder is off"))?
            .qmp("stop", serde_json::Value::Null)
            .map_err(|e| self.fail(&format!("QMP stop: {e}")))?;
        self.fenced_and_taken_over(h, s, fault, &mut t)?;
        let resumed = self
            .rig
            .lines(h, fault)
            .into_iter()
            .any(|(_, l)| l.contains("WK-RES"));
        if resumed {
            return Err(self.fail("the frozen holder ran its resources again"));
        }
        self.report(&t);
        self.mend(h, s)?;
        Ok(t)
    }

    /// Scenario 3: every heartbeat path cut (serial relays stopped, carrier lost on every
    /// heartbeat NIC), management up. Both sides race to fence; exactly one guest survives,
    /// holding the group.
    fn partition(&mut self) -> Result<QemuTiming, Failed> {
        if self.rig.len() > 2 {
            return self.partition_with_witness();
        }
        let h = self.holder;
        let mut t = QemuTiming {
            scenario: "partition".into(),
            ..QemuTiming::default()
        };
        let fault = Instant::now();
        self.rig.cut_serial(true);
        for i in 0..self.rig.len() {
            self.rig
                .set_lan_link(i, false)
                .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        }
        // Someone is switched off; then nothing else may happen for a while.
        let off = wait(WAIT, || {
            (0..self.rig.len()).find_map(|i| {
                self.rig
                    .wait_event(i, "SHUTDOWN", fault, Duration::ZERO)
                    .map(|e| (i, e))
            })
        });
        let Some((victim, off)) = off else {
            self.heal_links()?;
            return Err(self.fail("nobody was fenced in the partition"));
        };
        t.off_ms = Some(ms(off.at - fault));
        std::thread::sleep(QUIET);
        let alive: Vec<usize> = (0..self.rig.len())
            .filter(|&i| self.rig.running(i))
            .collect();
        if alive.len() != 1 {
            return Err(self.fail(&format!(
                "{} guests running after the partition: {:?}",
                alive.len(),
                alive
            )));
        }
        let survivor = alive[0];
        if let Some((at, _)) = self
            .rig
            .wait_log(survivor, "peer_down", fault, WAIT, |_| true)
        {
            t.detect_ms = Some(ms(at - fault));
        }
        let name = self.rig.name(victim).to_owned();
        let (confirmed, _) = self
            .rig
            .wait_log(survivor, "fence_level_done", fault, WAIT, |v| {
                v["peer"] == name.as_str() && v["ok"] == true
            })
            .ok_or_else(|| self.fail("the survivor never confirmed its fence"))?;
        t.fence_confirmed_ms = Some(ms(confirmed - fault));
        if confirmed < off.at {
            return Err(self.fail("the fence was confirmed before the victim's qemu ended"));
        }
        let holds = wait(WAIT, || (self.rig.holders() == [survivor]).then_some(()));
        if holds.is_none() {
            return Err(self.fail(&format!(
                "{} survived but does not hold the group",
                self.rig.name(survivor)
            )));
        }
        if survivor != h {
            t.takeover_ms = self.group_started(survivor, fault).map(|at| ms(at - fault));
        }
        say(format!(
            "partition: {} survived ({}), {} switched off",
            self.rig.name(survivor),
            if survivor == h {
                "the holder, as its head start in the fence race intends"
            } else {
                "the standby"
            },
            name
        ));
        self.report(&t);
        self.heal_links()?;
        self.mend(victim, survivor)?;
        Ok(t)
    }

    /// Scenario 3 with a witness: the standby is cut off every heartbeat path (serial and its
    /// Ethernet carrier), so the holder and the witness are the majority. The holder keeps the
    /// group without a break; the standby, alone, never starts anything (it is fenced by the
    /// majority or stays a standby without quorum).
    fn partition_with_witness(&mut self) -> Result<QemuTiming, Failed> {
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "partition".into(),
            ..QemuTiming::default()
        };
        let fault = Instant::now();
        self.rig.cut_serial(true);
        self.rig
            .set_lan_link(s, false)
            .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        let name = self.rig.name(s).to_owned();
        let (down, _) = self
            .rig
            .wait_log(h, "peer_down", fault, WAIT, |v| v["peer"] == name.as_str())
            .ok_or_else(|| self.fail("the holder never declared the cut-off standby dead"))?;
        t.detect_ms = Some(ms(down - fault));
        // Fenced by the majority, or not (it holds nothing): either way it stays out this long.
        let off = self
            .rig
            .wait_event(s, "SHUTDOWN", fault, WITNESS_PARTITION_HOLD);
        t.off_ms = off.as_ref().map(|e| ms(e.at - fault));
        if let Some((at, _)) =
            self.rig
                .wait_log(h, "fence_level_done", fault, Duration::ZERO, |v| {
                    v["peer"] == name.as_str() && v["ok"] == true
                })
        {
            t.fence_confirmed_ms = Some(ms(at - fault));
        }
        let held: Vec<String> = self
            .rig
            .lines(h, fault)
            .into_iter()
            .filter(|(_, l)| l.contains("WK-RES"))
            .map(|(_, l)| l)
            .collect();
        if !held.is_empty() || self.rig.holders() != [h] {
            return Err(self.fail(&format!(
                "the majority's holder did not keep the group without a break: {held:?}"
            )));
        }
        if self.first_start(s, fault).is_some() {
            return Err(self.fail("the cut-off standby started a resource"));
        }
        say(format!(
            "partition: {} (with the witness) kept the group; {} {}",
            self.rig.name(h),
            name,
            if off.is_some() {
                "was switched off by the majority"
            } else {
                "stayed out without quorum"
            }
        ));
        self.report(&t);
        self.heal_links()?;
        let fencing = self.declared_dead(h, s, fault);
        if self.rig.running(s) {
            self.rejoined(s, h, fault)?;
            if fencing {
                std::thread::sleep(FENCE_RETRY_SETTLE);
            }
            if !self.rig.running(s) {
                self.mend(s, h)?;
            }
        } else {
            self.mend(s, h)?;
        }
        Ok(t)
    }

    /// Scenario 4: three hosts, the holder alone loses its heartbeat links, and the majority
    /// cannot reach its BMC (their management NICs lose carrier too), so the only way out is
    /// the holder's self-fence. It has no quorum: it stops the group and starves its watchdog,
    /// which resets it at the deadline; the majority takes over only after that.
    fn isolate_holder(&mut self) -> Result<QemuTiming, Failed> {
        if self.rig.len() < 3 {
            return Err(Failed(
                "isolate-holder needs three hosts (a witness): use a rig such as hwtests/rigs/qemu-witness.toml".into(),
            ));
        }
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "isolate-holder".into(),
            ..QemuTiming::default()
        };
        let others: Vec<usize> = (0..self.rig.len()).filter(|&i| i != h).collect();
        for &i in &others {
            self.rig
                .set_mgmt_link(i, false)
                .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        }
        let fault = Instant::now();
        self.rig.cut_serial(true);
        self.rig
            .set_lan_link(h, false)
            .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        let name = self.rig.name(h).to_owned();
        if let Some((at, _)) = self
            .rig
            .wait_log(s, "peer_down", fault, WAIT, |v| v["peer"] == name.as_str())
        {
            t.detect_ms = Some(ms(at - fault));
        }
        let started = wait(WAIT, || self.group_started(s, fault));
        for &i in &others {
            let _ = self.rig.set_mgmt_link(i, true);
        }
        let started = started.ok_or_else(|| self.fail("the majority never took over"))?;
        t.takeover_ms = Some(ms(started - fault));
        let wd = self
            .rig
            .wait_event(h, "WATCHDOG", fault, Duration::ZERO)
            .ok_or_else(|| self.fail("the isolated holder's watchdog never fired"))?;
        t.watchdog_ms = Some(ms(wd.at - fault));
        let stops = self
            .rig
            .lines(h, fault)
            .into_iter()
            .filter(|(at, l)| *at < wd.at && l.contains("WK-RES") && l.contains(" stop "))
            .count();
        if stops < self.rig.desc.resources.len() {
            return Err(self.fail(&format!(
                "the isolated holder stopped {stops} of {} resources before its watchdog fired",
                self.rig.desc.resources.len()
            )));
        }
        match self.first_start(s, fault) {
            Some(first) if first >= wd.at => {}
            _ => {
                return Err(self.fail(
                    "the majority started the group before the isolated holder's watchdog reset it",
                ))
            }
        }
        self.report(&t);
        self.heal_links()?;
        // The majority's fence of the holder failed while its BMC path was down and is retried
        // once the path is back, even after the holder has self-fenced: that retry may switch
        // it off while it boots, rejoins or just after. Boot it again if so.
        let booted = wait(BOOT, || {
            if !self.rig.running(h) {
                Some(false)
            } else {
                self.rig
                    .wait_log(h, "started", wd.at, Duration::ZERO, |_| true)
                    .map(|_| true)
            }
        });
        if booted == Some(false) {
            say(format!(
                "isolate-holder: note: a retried fence switched {} off while it came back from its watchdog reset",
                self.rig.name(h)
            ));
            self.mend(h, s)?;
        } else if self.rig.running(h) {
            self.agent_started(h, wd.at)?;
            self.rejoined(h, s, wd.at)?;
            self.holder = s;
            // The retry may still come after the rejoin: wait it out.
            std::thread::sleep(FENCE_RETRY_SETTLE);
            if !self.rig.running(h) {
                say(format!(
                    "isolate-holder: note: a retried fence switched {} off after it had self-fenced and rejoined",
                    self.rig.name(h)
                ));
                self.mend(h, s)?;
            }
        } else {
            self.mend(h, s)?;
        }
        Ok(t)
    }

    /// Scenario 5: the holder's BMC is stopped, then the holder frozen. The standby's first
    /// level (IPMI) fails, it says so, and the PDU level cuts the holder's outlet: its qemu
    /// ends before the PDU acknowledges, and only then does the standby take over.
    fn bmc_down(&mut self) -> Result<QemuTiming, Failed> {
        if self.rig.pdu().is_none() {
            return Err(Failed(
                "bmc-down needs a PDU level: `[qemu] pdu = true`, as in hwtests/rigs/qemu-pdu.toml"
                    .into(),
            ));
        }
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "bmc-down".into(),
            ..QemuTiming::default()
        };
        if let Some(bmc) = self.rig.bmc_mut(h) {
            bmc.stop();
        }
        let fault = Instant::now();
        let frozen = self
            .rig
            .guest(h)
            .ok_or_else(|| self.fail("the holder is off"))?
            .qmp("stop", serde_json::Value::Null);
        if let Err(e) = frozen {
            return Err(self.fail(&format!("QMP stop: {e}")));
        }
        let result = self.fenced_and_taken_over(h, s, fault, &mut t);
        if let Some(bmc) = self.rig.bmc_mut(h) {
            bmc.restart();
        }
        result?;
        let name = self.rig.name(h).to_owned();
        let (_, first) = self
            .rig
            .wait_log(s, "fence_level_done", fault, Duration::ZERO, |v| {
                v["peer"] == name.as_str() && v["level"] == 1
            })
            .ok_or_else(|| self.fail("no result of the IPMI level"))?;
        if first["ok"] != false {
            return Err(self.fail(&format!(
                "the IPMI level of a stopped BMC succeeded: {first}"
            )));
        }
        let (_, last) = self
            .rig
            .wait_log(s, "fence_level_done", fault, Duration::ZERO, |v| {
                v["peer"] == name.as_str() && v["ok"] == true
            })
            .ok_or_else(|| self.fail("no successful fencing level"))?;
        if last["level"] != 2 {
            return Err(self.fail(&format!("the fence succeeded at {last}, not the PDU level")));
        }
        // The error the operator sees: the device of the failed level, and why.
        let alert = self
            .rig
            .wait_log(s, "fence_device_failed", fault, Duration::ZERO, |v| {
                v["device"] == format!("bmc0-{name}").as_str() && v["level"] == "ERROR"
            })
            .ok_or_else(|| self.fail("no error named the failed IPMI level"))?;
        // And the alert the administrators get names that level and its device.
        let device = format!("bmc0-{name}");
        let level_alert = self
            .rig
            .wait_log(s, "alert", fault, Duration::ZERO, |v| {
                v["alert"] == "fence"
                    && v["outcome"] != "off"
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&device) && m.contains("level 1"))
            })
            .ok_or_else(|| self.fail("no fence alert named the failed IPMI level"))?;
        say(format!(
            "bmc-down: the standby logged the error {:?} and alerted {:?}; the PDU switched {name} off",
            alert.1["message"].as_str().unwrap_or("?"),
            level_alert.1["message"].as_str().unwrap_or("?")
        ));
        self.report(&t);
        self.mend(h, s)?;
        Ok(t)
    }

    /// Scenario 6: the standby's agent is killed while the holder's management link is down
    /// (its fence attempts fail), so the standby's own watchdog resets it; after the reboot
    /// its agent reports that the watchdog caused it, from the boot status and its state disk.
    fn watchdog_reboot(&mut self) -> Result<QemuTiming, Failed> {
        let (h, s) = (self.holder, self.standby());
        let mut t = QemuTiming {
            scenario: "watchdog-reboot".into(),
            ..QemuTiming::default()
        };
        self.rig
            .set_mgmt_link(h, false)
            .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        let before = Instant::now();
        self.command(s, "kill-agent")?;
        let fault = self.line(s, "WK-GUEST agent-killed", before, STEP)?;
        let wd = self
            .rig
            .wait_event(s, "WATCHDOG", fault, self.rig.watchdog_timeout + STEP)
            .ok_or_else(|| self.fail("the killed standby's watchdog never fired"))?;
        t.watchdog_ms = Some(ms(wd.at - fault));
        let (back, previous) = self
            .rig
            .wait_log(s, "watchdog_previous_run", wd.at, BOOT, |_| true)
            .ok_or_else(|| self.fail("the rebooted standby did not report its previous run"))?;
        t.reboot_ms = Some(ms(back - wd.at));
        self.rig
            .set_mgmt_link(h, true)
            .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        if previous["watchdog_reset"] != true {
            return Err(self.fail(&format!(
                "the standby did not report a watchdog reset: {previous}"
            )));
        }
        say(format!(
            "watchdog-reboot: {} reports: {}",
            self.rig.name(s),
            previous["message"].as_str().unwrap_or("?")
        ));
        if self.rig.holders() != [h] {
            return Err(self.fail("the holder lost the group while its standby rebooted"));
        }
        self.report(&t);
        if self.rig.running(s) {
            self.rejoined(s, h, fault)?;
            // The holder's fence of its standby failed while its BMC path was down; a retry
            // may still switch the standby off now that the path is back ([`ensure_whole`]
            // boots it again).
            let fencing = self.declared_dead(h, s, fault);
            if fencing {
                std::thread::sleep(FENCE_RETRY_SETTLE);
            }
        } else {
            // The holder's fence got through once its link was back.
            self.mend(s, h)?;
        }
        Ok(t)
    }

    /// A bad serial cable must not cause a failover: first line noise (one bit flipped in every
    /// seventh byte, so no frame passes its CRC) while the Ethernet is up, then the Ethernet cut
    /// and the serial line clean but slow (each byte delivered late, within the deadtime).
    /// Nobody is declared dead, switched off or reset, and the holder keeps the group.
    fn bad_cable(&mut self) -> Result<QemuTiming, Failed> {
        let h = self.holder;
        let t = QemuTiming {
            scenario: "bad-cable".into(),
            ..QemuTiming::default()
        };
        let hold = self.rig.desc.deadtime * 2;
        // The serial link must be up before the noise can take it down: a standby booted by
        // the previous scenario's mend may be answering on the Ethernet only so far.
        for i in 0..self.rig.len() {
            self.serial_up(i)?;
        }
        let fault = Instant::now();
        self.rig.noise_serial(NOISE_EVERY);
        std::thread::sleep(hold);
        self.rig.noise_serial(0);
        let slow = Instant::now();
        self.rig.delay_serial(SLOW_LINE);
        for i in 0..self.rig.len() {
            self.rig
                .set_lan_link(i, false)
                .map_err(|e| self.fail(&format!("set_link: {e}")))?;
        }
        std::thread::sleep(hold);
        self.heal_links()?;
        self.rig.delay_serial(Duration::ZERO);
        let mut seen = Vec::new();
        for i in 0..self.rig.len() {
            for event in ["peer_down", "self_fence"] {
                if let Some((_, v)) = self.rig.wait_log(i, event, fault, Duration::ZERO, |_| true) {
                    seen.push(format!("{}: {v}", self.rig.name(i)));
                }
            }
            for event in ["SHUTDOWN", "RESET", "WATCHDOG"] {
                if self
                    .rig
                    .wait_event(i, event, fault, Duration::ZERO)
                    .is_some()
                {
                    seen.push(format!("{}: QMP {event}", self.rig.name(i)));
                }
            }
        }
        if !seen.is_empty() {
            return Err(self.fail(&format!("a bad cable caused: {}", seen.join("; "))));
        }
        // The faults were real: the noise took the serial link down (no frame passed), and
        // while the Ethernet was cut the slow serial line alone carried the peer.
        let serial_down = self
            .rig
            .wait_log(h, "link_down", fault, Duration::ZERO, |v| {
                v["kind"] == "serial"
            })
            .is_some_and(|(at, _)| at < slow);
        let udp_down = self
            .rig
            .wait_log(h, "link_down", slow, Duration::ZERO, |v| v["kind"] == "udp")
            .is_some();
        if !serial_down || !udp_down {
            return Err(self.fail(&format!(
                "the faults did not take effect: serial link down under noise {serial_down}, \
                 Ethernet link down when cut {udp_down}"
            )));
        }
        let stops = self
            .rig
            .lines(h, fault)
            .into_iter()
            .filter(|(_, l)| l.contains("WK-RES"))
            .count();
        if stops > 0 || self.rig.holders() != [h] {
            return Err(self.fail("the holder did not keep the group through a bad cable"));
        }
        say(format!(
            "bad-cable: {:?} of noise (the serial link went down), then {:?} of the Ethernet cut and the serial line delayed by {SLOW_LINE:?}: no one declared dead, {} kept the group",
            hold,
            hold,
            self.rig.name(h)
        ));
        Ok(t)
    }

    /// The common end of a lost holder: the standby declares it dead, its BMC switches it off
    /// (the qemu process ends), the standby reports the fence confirmed and starts the group,
    /// and starts nothing before the power-off.
    fn fenced_and_taken_over(
        &mut self,
        h: usize,
        s: usize,
        fault: Instant,
        t: &mut QemuTiming,
    ) -> Result<(), Failed> {
        let name = self.rig.name(h).to_owned();
        let (down, _) = self
            .rig
            .wait_log(s, "peer_down", fault, WAIT, |v| v["peer"] == name.as_str())
            .ok_or_else(|| self.fail("the standby never declared the holder dead"))?;
        t.detect_ms = Some(ms(down - fault));
        let off = self
            .rig
            .wait_event(h, "SHUTDOWN", fault, WAIT)
            .ok_or_else(|| self.fail("the holder's guest was never switched off"))?;
        t.off_ms = Some(ms(off.at - fault));
        let (confirmed, _) = self
            .rig
            .wait_log(s, "fence_level_done", fault, WAIT, |v| {
                v["peer"] == name.as_str() && v["ok"] == true
            })
            .ok_or_else(|| self.fail("the standby never confirmed the fence"))?;
        t.fence_confirmed_ms = Some(ms(confirmed - fault));
        if confirmed < off.at {
            return Err(self.fail("the fence was confirmed before the holder's qemu ended"));
        }
        // "Confirmed off" is checked against the process, not only QMP.
        let gone = wait(STEP, || (!self.rig.running(h)).then_some(()));
        if gone.is_none() {
            return Err(self.fail("the BMC reported off but the holder's qemu still runs"));
        }
        let started = wait(WAIT, || self.group_started(s, fault))
            .ok_or_else(|| self.fail("the standby never started the whole group"))?;
        t.takeover_ms = Some(ms(started - fault));
        match self.first_start(s, fault) {
            Some(first) if first < off.at => {
                Err(self.fail("the standby started a resource before the holder's qemu had ended"))
            }
            _ => Ok(()),
        }
    }

    /// Boots the switched-off host `victim` again and waits until it rejoined `survivor`, which
    /// is then the holder.
    fn mend(&mut self, victim: usize, survivor: usize) -> Result<(), Failed> {
        let t = Instant::now();
        self.rig
            .power_on(victim)
            .map_err(|e| self.fail(&format!("power on: {e}")))?;
        self.agent_started(victim, t)?;
        self.rejoined(victim, survivor, t)?;
        self.holder = survivor;
        if self.rig.holders() != [survivor] {
            return Err(self.fail("after the rejoin the group is not on the survivor alone"));
        }
        if wait(STEP, || self.rig.vip_owned_since(survivor, t)).is_none() {
            return Err(
                self.fail("after the rejoin the survivor does not answer for the virtual IP")
            );
        }
        say(format!(
            "mended: {} back in {:.1} s",
            self.rig.name(victim),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Boots every guest that is off (a late fence retry can switch off a node that already
    /// rejoined) and waits until it rejoined the holder, so the next scenario starts whole.
    fn ensure_whole(&mut self) -> Result<(), Failed> {
        for i in 0..self.rig.len() {
            if !self.rig.running(i) {
                say(format!(
                    "note: {} was switched off after the scenario had settled; booting it",
                    self.rig.name(i)
                ));
                let holder = self.holder;
                self.mend(i, holder)?;
            }
        }
        Ok(())
    }

    /// Waits until host `i`'s last serial link event is `link_up` (its serial link carries
    /// frames now), for at most [`STEP`] times three.
    fn serial_up(&self, i: usize) -> Result<(), Failed> {
        let began = Instant::now();
        let since = began
            .checked_sub(Duration::from_secs(24 * 3600))
            .unwrap_or(began);
        while began.elapsed() < STEP * 3 {
            let last = self
                .rig
                .lines(i, since)
                .into_iter()
                .rev()
                .filter(|(_, l)| l.contains("\"kind\":\"serial\""))
                .find_map(|(_, l)| {
                    if l.contains("\"event\":\"link_up\"") {
                        Some(true)
                    } else if l.contains("\"event\":\"link_down\"") {
                        Some(false)
                    } else {
                        None
                    }
                });
            if last == Some(true) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(self.fail(&format!(
            "{}'s serial link did not come up",
            self.rig.name(i)
        )))
    }

    /// Whether host `by` declared host `dead` dead since `after` (its log's `peer_down`): it
    /// fences it then, and a failed fence is retried until one gets through.
    fn declared_dead(&self, by: usize, dead: usize, after: Instant) -> bool {
        let peer = format!("\"peer\":\"{}\"", self.rig.name(dead));
        self.rig
            .lines(by, after)
            .iter()
            .any(|(_, l)| l.contains("\"event\":\"peer_down\"") && l.contains(&peer))
    }

    fn rejoined(&self, back: usize, other: usize, after: Instant) -> Result<(), Failed> {
        let name = self.rig.name(back).to_owned();
        self.rig
            .wait_log(other, "peer_up", after, BOOT, |v| {
                v["peer"] == name.as_str()
            })
            .map(|_| ())
            .ok_or_else(|| self.fail(&format!("{name} never rejoined")))
    }

    fn heal_links(&self) -> Result<(), Failed> {
        self.rig.cut_serial(false);
        for i in 0..self.rig.len() {
            if self.rig.guest(i).is_some() {
                // A guest that is off has no link to restore; a new boot starts with it up.
                let _ = self.rig.set_lan_link(i, true);
            }
        }
        Ok(())
    }

    fn agent_started(&self, i: usize, after: Instant) -> Result<(), Failed> {
        self.rig
            .wait_log(i, "started", after, BOOT, |_| true)
            .map(|_| ())
            .ok_or_else(|| {
                self.fail(&format!(
                    "{}'s agent did not start within {BOOT:?}",
                    self.rig.name(i)
                ))
            })
    }

    /// Waits until exactly one host holds the group and every other agent has seen it.
    fn settled(&self, after: Instant) -> Result<usize, Failed> {
        let holder = wait(BOOT, || match self.rig.holders().as_slice() {
            [one] => self.group_started(*one, after).map(|_| *one),
            _ => None,
        })
        .ok_or_else(|| self.fail("no single host took the group at start"))?;
        for i in 0..self.rig.len() {
            if i != holder {
                self.rejoined(i, holder, after)?;
            }
        }
        Ok(holder)
    }

    /// When host `i` had started the whole group after `after` (its last start line), if it
    /// has.
    fn group_started(&self, i: usize, after: Instant) -> Option<Instant> {
        if !self.rig.holders().contains(&i) {
            return None;
        }
        let markers = self
            .rig
            .lines(i, after)
            .into_iter()
            .filter(|(_, l)| l.contains("WK-RES") && l.contains(" start "))
            .map(|(at, _)| at)
            .max();
        let vips = self.rig.vip_owned_since(i, after)?;
        Some(markers.map_or(vips, |m| m.max(vips)))
    }

    fn first_start(&self, i: usize, after: Instant) -> Option<Instant> {
        self.rig
            .lines(i, after)
            .into_iter()
            .find(|(_, l)| l.contains("WK-RES") && l.contains(" start "))
            .map(|(at, _)| at)
    }

    fn standby(&self) -> usize {
        let [a, b] = self.rig.desc.holders();
        if self.holder == a {
            b
        } else {
            a
        }
    }

    fn command(&mut self, i: usize, command: &str) -> Result<(), Failed> {
        self.rig
            .console_command(i, command)
            .map_err(|e| self.fail(&format!("console of {}: {e}", self.rig.name(i))))
    }

    fn line(
        &self,
        i: usize,
        text: &str,
        after: Instant,
        timeout: Duration,
    ) -> Result<Instant, Failed> {
        self.rig
            .wait_line(i, text, after, timeout)
            .map(|(at, _)| at)
            .ok_or_else(|| self.fail(&format!("no console line {text:?} on {}", self.rig.name(i))))
    }

    fn check_overlaps(&self) -> Result<(), Failed> {
        let bad = self.rig.overlaps();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(self.fail(&format!("two holders: {}", bad.join("; "))))
        }
    }

    fn report(&self, t: &QemuTiming) {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.0} ms"));
        say(format!(
            "{}: detection {}, qemu off {}, fence confirmed {}, takeover {}, fault->WATCHDOG {}, reset->agent {}",
            t.scenario,
            f(t.detect_ms),
            f(t.off_ms),
            f(t.fence_confirmed_ms),
            f(t.takeover_ms),
            f(t.watchdog_ms),
            f(t.reboot_ms)
        ));
    }

    fn fail(&self, what: &str) -> Failed {
        Failed(format!(
            "{what}\nrig directory {}\n{}",
            self.rig.dir().display(),
            self.rig.consoles()
        ))
    }
}

fn say(line: String) {
    println!("{line}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn wait<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A guest boots in about 4.5 s under software emulation, 8 s with three at once on two
/// cores; the agent then waits for its peers. A minute covers a loaded CI machine.
const BOOT: Duration = Duration::from_secs(60);
/// Detection, fence and takeover take a few seconds with the rigs' timings.
const WAIT: Duration = Duration::from_secs(30);
/// One console command's answer, or the watchdog's margin beyond its timeout.
const STEP: Duration = Duration::from_secs(10);
/// How long a settled partition is watched for a second power-off.
const QUIET: Duration = Duration::from_secs(3);
/// The i6300esb fires within tens of milliseconds of its timeout; the console line of the
/// kill can lag the kill itself a little.
const WATCHDOG_SLACK: Duration = Duration::from_millis(500);
/// A failed fence is retried after 2 s (the agent's default) and the IPMI device's timeout in
/// the rigs is 5 s: a pending retry has ended well within this.
const FENCE_RETRY_SETTLE: Duration = Duration::from_secs(9);
/// How long the cut-off standby of a witness rig is held out: the deadtime, the fence delay
/// and a fence by IPMI fit well within it.
const WITNESS_PARTITION_HOLD: Duration = Duration::from_secs(10);
/// `bad-cable`'s noise: one flipped bit every this many bytes hits every heartbeat frame.
const NOISE_EVERY: u32 = 7;
/// `bad-cable`'s slow line: well above the heartbeat interval, well below the deadtime.
const SLOW_LINE: Duration = Duration::from_millis(500);
/// How often waits re-read consoles and events.
const POLL: Duration = Duration::from_millis(50);

/// `hwtests run|bench --backend qemu`: builds the rig (and the musl agent), runs `scenario` once,
/// or `runs` times when benchmarking, printing the timings table.
pub fn cli(desc: RigDesc, scenario: &str, runs: Option<usize>) -> Result<(), Failed> {
    if !SCENARIOS.contains(&scenario) {
        return Err(Failed(format!(
            "unknown scenario {scenario:?} for the qemu backend; known: {}",
            SCENARIOS.join(", ")
        )));
    }
    let agent = super::rig::guest_agent().map_err(|e| Failed(e.to_string()))?;
    let rig = QemuRig::build(desc, &agent).map_err(|e| Failed(e.to_string()))?;
    say(format!(
        "rig {:?} built in {}",
        rig.desc.name,
        rig.dir().display()
    ));
    let mut runner = QemuRunner::start(rig)?;
    let n = runs.unwrap_or(1);
    let t0 = Instant::now();
    for _ in 0..n {
        runner.run(scenario)?;
    }
    say(format!(
        "{scenario}: passed {n} run(s) in {:.1} s (rig boot {:.1} s)",
        t0.elapsed().as_secs_f64(),
        runner.boot_s
    ));
    if runs.is_some() {
        print!("{}", table(&runner.timings));
    }
    Ok(())
}

/// Reads one timing of a run.
type Metric = fn(&QemuTiming) -> Option<f64>;

/// The bench table: p50, p90 and max of each timing over the runs that measured it.
pub fn table(timings: &[QemuTiming]) -> String {
    let rows: [(&str, Metric); 6] = [
        ("detection (peer declared dead)", |t| t.detect_ms),
        ("victim's qemu off (BMC or PDU power-off)", |t| t.off_ms),
        ("fence confirmed by the survivor", |t| t.fence_confirmed_ms),
        ("takeover (whole group running)", |t| t.takeover_ms),
        (
            "WATCHDOG event (kill-holder: last feed <= 100 ms before the fault)",
            |t| t.watchdog_ms,
        ),
        ("watchdog reset to the agent running again", |t| t.reboot_ms),
    ];
    let mut s = format!(
        "\n{} runs; milliseconds from the fault\n| from the fault to | n | p50 | p90 | max |\n|---|---|---|---|---|\n",
        timings.len()
    );
    for (what, get) in rows {
        let mut v: Vec<u64> = timings
            .iter()
            .filter_map(get)
            .map(|x| Duration::from_secs_f64(x.max(0.0) / 1000.0).as_millis())
            .map(|m| u64::try_from(m).unwrap_or(u64::MAX))
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        s.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            v.len(),
            crate::util::percentile(&v, 50),
            crate::util::percentile(&v, 90),
            crate::util::percentile(&v, 100)
        ));
    }
    s
}
