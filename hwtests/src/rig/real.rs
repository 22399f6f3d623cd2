//! A rig of real hosts (`backend = "real"`): machines that already run watchkeeper, reached by
//! a command prefix (`ssh root@alpha-mgmt`), powered through commands on the harness's machine
//! (`ipmitool ... chassis power status|on|off`), observed through their own tools.
//!
//! The scenarios need the same things from real hardware as from the emulated rig, and get
//! them the way an administrator would:
//!
//! - **Agent.** `agent_pid` (by default `systemctl show -p MainPID --value watchkeeper`) gives
//!   the PID; a crash or a freeze is `kill -s KILL|STOP PID` on the host, never by name.
//! - **Power.** `power_status` is polled (at most every 200 ms); every on→off the harness sees
//!   counts as a power-off. A reboot is `power_off`, `power_on`, the host answering `run`
//!   again, and its agent running (started with `agent_start` if its unit did not).
//! - **Resources.** One shell script per look runs each resource's `check` on the host (a vip
//!   defaults to its address on any interface, the Catalog to `psql` answering that it is not
//!   in recovery).
//! - **Records.** The agents' JSON logs (`agent_log`): `resource_started`/`resource_stopped`
//!   place the group on a host, `fence_device_off` takes a host's power away at the fencer's
//!   time; replayed in time order they must never show two hosts running the group. This
//!   needs the hosts' clocks in step (NTP), as any cluster log reading does.
//! - **Faults.** A LAN cut one way is an nftables drop of UDP from the peer's `address` on the
//!   host (table `inet wkrig`), a BMC cut a drop of traffic to `bmc_address` on every other
//!   host (table `inet wkrig_bmc`), loss and delay `tc netem` on `lan_interface`; a serial
//!   cable is pulled only by the cable's own `cut`/`mend` commands. What the description gives
//!   no means for, and what the harness must not do to real machines (make a BMC lie, fill a
//!   disk, step a clock, break a site's resources), is listed by [`Rig::unavailable`] and
//!   declined by name.

use std::cell::{Cell, RefCell};
use std::io;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::desc::{RealHost, ResourceKind, RigDesc};
use super::emulated::never_two_hosts;
use super::{unsupported, Rig};
use crate::util::run_bounded;

/// Longest a command on a host or on the harness may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a power status stays fresh.
const POWER_FRESH: Duration = Duration::from_millis(200);
/// How long a host may take to boot and answer again.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the power may take to follow a command.
const POWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent's unit may take to start at boot before the harness starts it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The psql command line on a host when the Catalog gives none.
pub const DEFAULT_PSQL: &str = "runuser -u postgres -- psql -X -A -t -q -d postgres";

#[derive(Debug, Clone, Default)]
struct PowerSeen {
    on: Option<bool>,
    at: Option<Instant>,
    offs: Vec<f64>,
}

/// Real hosts; see the module docs.
#[derive(Debug)]
pub struct Real {
    desc: RigDesc,
    power: RefCell<Vec<PowerSeen>>,
    offs: Cell<u32>,
    reboots: RefCell<Vec<(f64, usize)>>,
    since: f64,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `text` as one shell word.
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn run_cmd(cmd: &mut Command, what: &str) -> io::Result<Output> {
    run_bounded(cmd, COMMAND_TIMEOUT).map_err(|e| io::Error::other(format!("{what}: {e}")))
}

fn ok(out: Output, what: &str) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{what}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

/// The power state a status command printed: `on` or `off` as a word, case aside
/// (`Chassis Power is on`, `Power: OFF`).
pub fn parse_power(text: &str) -> Option<bool> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .collect();
    match (
        words.iter().any(|w| w == "on"),
        words.iter().any(|w| w == "off"),
    ) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// The nftables script that drops UDP from `from` arriving at a host.
pub fn deafen_rules(from: &str) -> io::Result<String> {
    let family = family_of(from)?;
    Ok(format!(
        "table inet wkrig {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         {family} saddr {from} meta l4proto udp drop\n  }}\n}}\n"
    ))
}

/// The nftables script that drops everything a host sends to the BMC at `bmc` (`ip` or
/// `ip:port`; with a port, UDP to that port only).
pub fn bmc_cut_rules(bmc: &str) -> io::Result<String> {
    let (addr, port) = match bmc.parse::<std::net::SocketAddr>() {
        Ok(sa) => (sa.ip().to_string(), Some(sa.port())),
        Err(_) => (bmc.to_owned(), None),
    };
    let family = family_of(&addr)?;
    let port = port.map(|p| format!(" udp dport {p}")).unwrap_or_default();
    Ok(format!(
        "table inet wkrig_bmc {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
         {family} daddr {addr}{port} drop\n  }}\n}}\n"
    ))
}

fn family_of(addr: &str) -> io::Result<&'static str> {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => Ok("ip"),
        Ok(std::net::IpAddr::V6(_)) => Ok("ip6"),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr:?} is not an IP address"),
        )),
    }
}

impl Real {
    /// Reaches every host of `desc` (a real rig) and reads its power: a host that cannot be
    /// reached, or a power status that prints neither on nor off, is an error naming it.
    pub fn connect(desc: RigDesc) -> io::Result<Self> {
        if desc.hosts.iter().any(|h| h.real.is_none()) {
            return Err(io::Error::other(format!(
                "rig {:?} is not a real rig (backend = \"real\")",
                desc.name
            )));
        }
        let n = desc.hosts.len();
        let rig = Self {
            desc,
            power: RefCell::new(vec![PowerSeen::default(); n]),
            offs: Cell::new(0),
            reboots: RefCell::new(Vec::new()),
            since: unix_now(),
        };
        for i in 0..n {
            let power = rig.read_power(i)?;
            if power {
                ok(rig.sh(i, "true")?, &format!("{}: run", rig.name(i)))?;
            }
        }
        Ok(rig)
    }

    fn host(&self, i: usize) -> &RealHost {
        // `connect` checked that every host has its real settings.
        self.desc.hosts[i]
            .real
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked in connect"))
    }

    /// Runs shell line `line` on host `i`.
    pub fn sh(&self, i: usize, line: &str) -> io::Result<Output> {
        let run = &self.host(i).run;
        run_cmd(
            Command::new(&run[0]).args(&run[1..]).arg(line),
            &format!("{} on {}", line, self.name(i)),
        )
    }

    fn local(&self, cmd: &[String], what: &str) -> io::Result<Output> {
        ok(run_cmd(Command::new(&cmd[0]).args(&cmd[1..]), what)?, what)
    }

    /// Reads host `i`'s power now, recording an on→off.
    fn read_power(&self, i: usize) -> io::Result<bool> {
        let h = self.host(i);
        if h.power_status.is_empty() {
            return Ok(true);
        }
        let what = format!("{}: power_status", self.name(i));
        let out = self.local(&h.power_status, &what)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let on = parse_power(&text).ok_or_else(|| {
            io::Error::other(format!("{what} printed neither on nor off: {text:?}"))
        })?;
        let mut seen = self.power.borrow_mut();
        let s = &mut seen[i];
        if s.on == Some(true) && !on {
            s.offs.push(unix_now());
            self.offs.set(self.offs.get() + 1);
        }
        s.on = Some(on);
        s.at = Some(Instant::now());
        Ok(on)
    }

    fn wait_power(&self, i: usize, on: bool) -> io::Result<()> {
        let began = Instant::now();
        while began.elapsed() < POWER_TIMEOUT {
            if self.read_power(i)? == on {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(io::Error::other(format!(
            "{}: power not {} within {POWER_TIMEOUT:?}",
            self.name(i),
            if on { "on" } else { "off" }
        )))
    }

    fn agent_pid(&self, i: usize) -> Option<i32> {
        let out = self.sh(i, &self.host(i).agent_pid).ok()?;
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (pid > 0).then_some(pid)
    }

    /// `watchkeeper ARGS --node NAME [--config FILE]` as a shell line for host `i`.
    fn wk_line(&self, i: usize, args: &[&str]) -> String {
        let h = self.host(i);
        let mut line = h.watchkeeper.clone();
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        line.push_str(" --node ");
        line.push_str(&quote(self.name(i)));
        if let Some(c) = &h.agent_config {
            line.push_str(" --config ");
            line.push_str(&quote(c));
        }
        line
    }

    fn psql(&self) -> String {
        self.desc
            .resources
            .iter()
            .find(|r| r.kind == ResourceKind::Pgsql)
            .and_then(|r| r.psql.clone())
            .unwrap_or_else(|| DEFAULT_PSQL.to_owned())
    }

    /// The shell test for resource `r` on a host.
    fn check_of(&self, r: &super::desc::Resource) -> String {
        if let Some(c) = &r.check {
            return c.clone();
        }
        match &r.kind {
            ResourceKind::Vip { address } => {
                format!(
                    "ip -o addr show | grep -qF {}",
                    quote(&format!(" {address} "))
                )
            }
            ResourceKind::Pgsql => format!(
                "[ \"$({} -c 'SELECT pg_is_in_recovery()' 2>/dev/null)\" = f ]",
                self.psql()
            ),
            // The description refuses a marker without `check` on a real rig.
            ResourceKind::Marker => "false".into(),
            // And an OCF resource without a default check (a Filesystem without `directory`).
            ResourceKind::Ocf(agent) => {
                super::ocf::real_check(&r.name, agent).unwrap_or_else(|| "false".into())
            }
        }
    }

    /// Host `i`'s agent log, as JSON objects (other lines skipped).
    fn log(&self, i: usize) -> Vec<Value> {
        self.sh(i, &self.host(i).agent_log)
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(time, event, resource or peer)` of host `i`'s log lines since the harness started.
    fn events(&self, i: usize) -> Vec<(f64, String, String)> {
        self.log(i)
            .iter()
            .filter_map(|v| {
                let t = crate::agent::log_timestamp(v)?
                    .duration_since(UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64();
                let field = |k: &str| crate::agent::log_field(v, k).map(str::to_owned);
                let event = field("event")?;
                let subject = match event.as_str() {
                    "resource_started" | "resource_stopped" => field("resource")?,
                    "fence_device_off" => field("peer")?,
                    _ => return None,
                };
                (t >= self.since).then_some((t, event, subject))
            })
            .collect()
    }

    fn nft(&self, i: usize, rules: &str) -> io::Result<()> {
        let line = format!("nft -f - <<'WKRIG'\n{rules}WKRIG\n");
        ok(self.sh(i, &line)?, &format!("{}: nft", self.name(i))).map(|_| ())
    }

    fn missing(&self, fault: &str) -> Option<String> {
        self.unavailable()
            .into_iter()
            .find(|(f, _)| *f == fault)
            .map(|(_, why)| why)
    }

    fn require(&self, fault: &'static str) -> io::Result<()> {
        match self.missing(fault) {
            Some(why) => Err(unsupported(fault, &why)),
            None => Ok(()),
        }
    }
}

impl Rig for Real {
    fn desc(&self) -> &RigDesc {
        &self.desc
    }

    fn start(&mut self, i: usize) -> io::Result<()> {
        let line = self.host(i).agent_start.clone();
        ok(
            self.sh(i, &line)?,
            &format!("{}: agent_start", self.name(i)),
        )?;
        let began = Instant::now();
        while began.elapsed() < AGENT_TIMEOUT {
            if self.agent_running(i) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::other(format!(
            "{}: the agent does not run {AGENT_TIMEOUT:?} after agent_start",
            self.name(i)
        )))
    }

    fn agent_running(&mut self, i: usize) -> bool {
        self.agent_pid(i).is_some_and(|pid| {
            self.sh(i, &format!("kill -0 {pid}"))
                .is_ok_and(|o| o.status.success())
        })
    }

    fn signal(&mut self, i: usize, signal: Signal) -> io::Result<()> {
        let Some(pid) = self.agent_pid(i) else {
            return Ok(());
        };
        let name = signal.as_str().trim_start_matches("SIG");
        ok(
            self.sh(i, &format!("kill -s {name} {pid}"))?,
            &format!("{}: kill -s {name} {pid}", self.name(i)),
        )
        .map(|_| ())
    }

    fn powered(&self, i: usize) -> bool {
        let fresh = {
            let seen = self.power.borrow();
            match (seen[i].on, seen[i].at) {
                (Some(on), Some(at)) if at.elapsed() < POWER_FRESH => Some(on),
                _ => None,
            }
        };
        match fresh {
            Some(on) => on,
            None => match self.read_power(i) {
                Ok(on) => on,
                // A BMC that does not answer this once: the last state seen stands.
                Err(_) => self.power.borrow()[i].on.unwrap_or(true),
            },
        }
    }

    fn reboot(&mut self, i: usize) -> io::Result<()> {
        let h = self.host(i).clone();
        if h.power_on.is_empty() {
            return Err(io::Error::other(format!(
                "{}: no power commands (a witness is not rebooted by the harness)",
                self.name(i)
            )));
        }
        if self.read_power(i)? {
            self.local(&h.power_off, &format!("{}: power_off", self.name(i)))?;
            self.wait_power(i, false)?;
        }
        self.reboots.borrow_mut().push((unix_now(), i));
        self.local(&h.power_on, &format!("{}: power_on", self.name(i)))?;
        self.wait_power(i, true)?;
        let began = Instant::now();
        while !self.sh(i, "true").is_ok_and(|o| o.status.success()) {
            if began.elapsed() > BOOT_TIMEOUT {
                return Err(io::Error::other(format!(
                    "{}: no answer {BOOT_TIMEOUT:?} after power on",
                    self.name(i)
                )));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        // Its unit normally starts the agent at boot; give it a moment, then start it.
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(5) {
            if self.agent_running(i) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        self.start(i)
    }

    fn resources(&self, i: usize) -> Option<Value> {
        let out = self
            .sh(i, &self.wk_line(i, &["resources", "--json"]))
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn cli(&self, i: usize, args: &[&str]) -> io::Result<Output> {
        self.sh(i, &self.wk_line(i, args))
    }

    fn running(&self, i: usize) -> Vec<String> {
        let mut script = String::new();
        for r in &self.desc.resources {
            script.push_str(&format!(
                "if {} >/dev/null 2>&1; then echo {}; fi\n",
                self.check_of(r).replace("{node}", self.name(i)),
                quote(&r.name)
            ));
        }
        let Ok(out) = self.sh(i, &script) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let said: Vec<&str> = text.lines().map(str::trim).collect();
        self.desc
            .resources
            .iter()
            .filter(|r| said.contains(&r.name.as_str()))
            .map(|r| r.name.clone())
            .collect()
    }

    fn powered_now(&self, i: usize) -> bool {
        self.read_power(i)
            .or_else(|_| self.read_power(i))
            .unwrap_or(true)
    }

    /// A host counts as a holder only on a fresh power reading: a cached "on" could be older
    /// than the fence that switched it off.
    fn holders(&self) -> Vec<usize> {
        (0..self.desc.hosts.len())
            .filter(|&i| !self.running(i).is_empty() && self.powered_now(i))
            .collect()
    }

    fn catalog_sql(&self, i: usize, sql: &str) -> Result<String, String> {
        let line = format!("{} -c {}", self.psql(), quote(sql));
        let out = self.sh(i, &line).map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "{} on {}: {}",
                sql,
                self.name(i),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn power_offs(&self) -> u32 {
        for i in 0..self.desc.hosts.len() {
            let _ = self.powered(i);
        }
        self.offs.get()
    }

    fn off_times(&self, i: usize) -> Vec<f64> {
        // The fencer's record first (it confirmed the off), then what the harness saw.
        let name = self.name(i).to_owned();
        let mut t: Vec<f64> = (0..self.desc.hosts.len())
            .filter(|&o| o != i)
            .flat_map(|o| self.events(o))
            .filter(|(_, e, peer)| e == "fence_device_off" && *peer == name)
            .map(|(t, _, _)| t)
            .collect();
        t.extend(self.power.borrow()[i].offs.iter().copied());
        t.sort_by(f64::total_cmp);
        t
    }

    fn start_times(&self, i: usize, resource: &str) -> Vec<f64> {
        self.events(i)
            .into_iter()
            .filter(|(_, e, r)| e == "resource_started" && r == resource)
            .map(|(t, _, _)| t)
            .collect()
    }

    fn check_journal(&self) -> Result<usize, String> {
        let mut events: Vec<(f64, String, String, String)> = Vec::new();
        for i in 0..self.desc.hosts.len() {
            for (t, e, subject) in self.events(i) {
                let (node, what, res) = match e.as_str() {
                    "resource_started" => (self.name(i).to_owned(), "start", subject),
                    "resource_stopped" => (self.name(i).to_owned(), "stop", subject),
                    // The fencer confirmed the peer off: it runs nothing from then on.
                    _ => (subject, "off", "-".to_owned()),
                };
                events.push((t, node, what.to_owned(), res));
            }
        }
        for &(t, i) in self.reboots.borrow().iter() {
            events.push((t, self.name(i).to_owned(), "reboot".into(), "-".into()));
        }
        never_two_hosts(&mut events)?;
        Ok(events.len())
    }

    fn heal(&mut self) -> io::Result<()> {
        for (c, cable) in self.desc.cable_info.iter().enumerate() {
            if let Some(mend) = &cable.mend {
                self.local(mend, &format!("cable[{c}].mend"))?;
            }
        }
        for i in 0..self.desc.hosts.len() {
            if !self.powered(i) {
                continue;
            }
            let mut line =
                "nft delete table inet wkrig 2>/dev/null; nft delete table inet wkrig_bmc 2>/dev/null; "
                    .to_owned();
            if let Some(dev) = &self.host(i).lan_interface {
                line.push_str(&format!(
                    "tc qdisc del dev {} root 2>/dev/null; ",
                    quote(dev)
                ));
            }
            line.push_str("true");
            ok(self.sh(i, &line)?, &format!("{}: heal", self.name(i)))?;
        }
        Ok(())
    }

    fn unavailable(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let no_cut: Vec<String> = self
            .desc
            .cable_info
            .iter()
            .filter(|c| c.cut.is_none())
            .map(|c| format!("{}–{}", self.name(c.ends[0]), self.name(c.ends[1])))
            .collect();
        if !no_cut.is_empty() {
            out.push((
                "serial-cut",
                format!(
                    "cable {} has no `cut`/`mend` commands (a relay that opens it); pull it by hand instead",
                    no_cut.join(", ")
                ),
            ));
        }
        let lan = &self.desc.ethernet;
        let lacking = |key: &str, f: &dyn Fn(&RealHost) -> bool, hosts: &[usize]| -> Vec<String> {
            hosts
                .iter()
                .filter(|&&i| !f(self.host(i)))
                .map(|&i| format!("{} has no `{key}`", self.name(i)))
                .collect()
        };
        let l = lacking("address", &|h| h.address.is_some(), lan);
        if !l.is_empty() {
            out.push(("lan-cut", l.join("; ")));
        }
        let l = lacking("lan_interface", &|h| h.lan_interface.is_some(), lan);
        if !l.is_empty() || lan.is_empty() {
            out.push((
                "lan-degrade",
                if lan.is_empty() {
                    "the rig has no Ethernet heartbeat link".into()
                } else {
                    l.join("; ")
                },
            ));
        }
        if !l.is_empty() || lan.is_empty() {
            out.push((
                "lan-corrupt",
                if lan.is_empty() {
                    "the rig has no Ethernet heartbeat link".into()
                } else {
                    l.join("; ")
                },
            ));
        }
        out.push((
            "serial-noise",
            "the harness cannot put noise on a real serial line".into(),
        ));
        let fenced: Vec<usize> = self.desc.holders().to_vec();
        let l = lacking("bmc_address", &|h| h.bmc_address.is_some(), &fenced);
        if !l.is_empty() {
            out.push(("bmc-down", l.join("; ")));
        }
        out.push((
            "bmc-lies",
            "a real BMC cannot be made to acknowledge an off and keep the power on".into(),
        ));
        out.push((
            "disk-full",
            "the harness does not fill a real host's filesystems".into(),
        ));
        out.push((
            "clock-jump",
            "the harness does not step a real host's clock (everything on it would see it)".into(),
        ));
        for f in ["start-failure", "stop-hang"] {
            out.push((
                f,
                "the harness does not break a site's own resources".into(),
            ));
        }
        out
    }

    fn cut_serial(&mut self, cut: bool) -> io::Result<()> {
        self.require("serial-cut")?;
        for (c, cable) in self.desc.cable_info.iter().enumerate() {
            let (cmd, what) = if cut {
                (&cable.cut, "cut")
            } else {
                (&cable.mend, "mend")
            };
            if let Some(cmd) = cmd {
                self.local(cmd, &format!("cable[{c}].{what}"))?;
            }
        }
        Ok(())
    }

    fn deafen(&mut self, to: usize, from: usize) -> io::Result<()> {
        // A cable cannot be cut one way: between these two it is cut both ways.
        if self
            .desc
            .cables
            .iter()
            .any(|c| c.contains(&to) && c.contains(&from))
        {
            self.cut_serial(true)?;
        }
        if !self.desc.ethernet.contains(&to) || !self.desc.ethernet.contains(&from) {
            return Ok(());
        }
        self.require("lan-cut")?;
        let addr = self.host(from).address.clone().unwrap_or_default();
        self.nft(to, &deafen_rules(&addr)?)
    }

    fn corrupt_lan(&mut self, on: bool) -> io::Result<()> {
        self.require("lan-corrupt")?;
        for &i in &self.desc.ethernet.clone() {
            let dev = quote(&self.host(i).lan_interface.clone().unwrap_or_default());
            let line = if on {
                format!("tc qdisc replace dev {dev} root netem corrupt 100%")
            } else {
                format!("tc qdisc del dev {dev} root 2>/dev/null; true")
            };
            ok(self.sh(i, &line)?, &format!("{}: tc", self.name(i)))?;
        }
        Ok(())
    }

    fn serial_noise(&self, _burst: u64) -> io::Result<()> {
        Err(super::unsupported(
            "serial-noise",
            "the harness cannot put noise on a real serial line",
        ))
    }

    fn degrade_lan(&mut self, loss_percent: u32, delay: Duration) -> io::Result<()> {
        self.require("lan-degrade")?;
        for &i in &self.desc.ethernet.clone() {
            let dev = self.host(i).lan_interface.clone().unwrap_or_default();
            let line = format!(
                "tc qdisc replace dev {} root netem loss {loss_percent}% delay {}ms",
                quote(&dev),
                delay.as_millis()
            );
            ok(self.sh(i, &line)?, &format!("{}: tc", self.name(i)))?;
        }
        Ok(())
    }

    fn cut_bmc(&mut self, i: usize, cut: bool) -> io::Result<()> {
        self.require("bmc-down")?;
        let bmc = self.host(i).bmc_address.clone().unwrap_or_default();
        let rules = bmc_cut_rules(&bmc)?;
        for o in (0..self.desc.hosts.len()).filter(|&o| o != i) {
            if !self.powered(o) {
                continue;
            }
            if cut {
                self.nft(o, &rules)?;
            } else {
                self.sh(o, "nft delete table inet wkrig_bmc 2>/dev/null; true")?;
            }
        }
        Ok(())
    }

    fn bmc_ignores_off(&mut self, _: usize, _: bool) -> io::Result<()> {
        self.require("bmc-lies")
    }

    fn fill_disk(&mut self, _: usize, _: bool) -> io::Result<()> {
        self.require("disk-full")
    }

    fn refuse_start(&mut self, _: usize, _: &str, _: bool) -> io::Result<()> {
        self.require("start-failure")
    }

    fn hang_stop(&mut self, _: usize, _: &str, _: bool) -> io::Result<()> {
        self.require("stop-hang")
    }

    fn set_clock_offset(&mut self, _: usize, _: i64) -> io::Result<()> {
        self.require("clock-jump")
    }

    fn write_storage(&self, i: usize, text: &str) -> Result<usize, String> {
        let mut n = 0;
        for dir in self.storage_dirs(i) {
            let line = storage_write_line(&dir, text);
            let out = self.sh(i, &line).map_err(|e| e.to_string())?;
            match out.status.code() {
                Some(0) => n += 1,
                Some(3) => {}
                _ => {
                    return Err(format!(
                        "{line} on {}: {}",
                        self.name(i),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            }
        }
        Ok(n)
    }

    fn read_storage(&self, i: usize) -> Vec<(String, Option<String>)> {
        let mut seen = Vec::new();
        for dir in self.storage_dirs(i) {
            let line = format!(
                "mountpoint -q {d} || exit 3; cat {d}/{f}",
                d = quote(&dir),
                f = super::ocf::STORAGE_FILE
            );
            match self.sh(i, &line) {
                Ok(out) if out.status.code() == Some(3) => {}
                Ok(out) if out.status.success() => {
                    seen.push((dir, Some(String::from_utf8_lossy(&out.stdout).into_owned())))
                }
                _ => seen.push((dir, None)),
            }
        }
        seen
    }
}

impl Real {
    /// Host `i`'s mount points of the group's OCF Filesystems that give a `directory`.
    fn storage_dirs(&self, i: usize) -> Vec<String> {
        self.desc
            .resources
            .iter()
            .filter_map(|r| match &r.kind {
                ResourceKind::Ocf(super::ocf::OcfAgent::Filesystem { directory: Some(d) }) => {
                    Some(d.replace("{node}", self.name(i)))
                }
                _ => None,
            })
            .collect()
    }
}

/// A shell line writing `text` to the scenarios' file in `dir`, if `dir` is a mount point
/// (else exit 3), flushed to the device with its directory before it is renamed into place.
fn storage_write_line(dir: &str, text: &str) -> String {
    let f = super::ocf::STORAGE_FILE;
    format!(
        "mountpoint -q {d} || exit 3; printf %s {t} > {d}/{f}.tmp && sync {d}/{f}.tmp && \
         mv -f {d}/{f}.tmp {d}/{f} && sync {d}",
        d = quote(dir),
        t = quote(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_words_are_read_from_the_usual_tools() {
        assert_eq!(parse_power("Chassis Power is on\n"), Some(true));
        assert_eq!(parse_power("Chassis Power is off\n"), Some(false));
        assert_eq!(parse_power("Power: OFF"), Some(false));
        assert_eq!(
            parse_power("Error: Unable to establish IPMI v2 / RMCP+ session"),
            None
        );
        assert_eq!(parse_power("on or off"), None);
    }

    #[test]
    fn the_storage_write_touches_only_a_mount_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("not mounted");
        std::fs::create_dir(&d).expect("dir");
        let line = storage_write_line(&d.display().to_string(), "7; echo hi");
        let out = Command::new("sh").args(["-c", &line]).output().expect("sh");
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_eq!(std::fs::read_dir(&d).expect("read").count(), 0);
    }

    #[test]
    fn shell_words_survive_quoting() {
        for text in [
            "plain",
            "two words",
            "it's",
            "$(reboot)",
            "a'b'c",
            "",
            "`x`",
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(text)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), text, "{text:?}");
        }
    }

    #[test]
    fn fault_rules_name_the_address_family_and_refuse_a_name() {
        let r = deafen_rules("10.0.0.12").expect("v4");
        assert!(
            r.contains("ip saddr 10.0.0.12 meta l4proto udp drop"),
            "{r}"
        );
        let r = deafen_rules("fd00::12").expect("v6");
        assert!(
            r.contains("ip6 saddr fd00::12 meta l4proto udp drop"),
            "{r}"
        );
        let r = bmc_cut_rules("10.0.1.11:623").expect("with port");
        assert!(r.contains("ip daddr 10.0.1.11 udp dport 623 drop"), "{r}");
        let r = bmc_cut_rules("10.0.1.11").expect("address");
        assert!(r.contains("ip daddr 10.0.1.11 drop"), "{r}");
        assert!(deafen_rules("beta-lan").is_err());
    }

    /// nftables itself accepts the rules (`nft -c` parses and checks them against the kernel
    /// without applying), in a namespace of the test's own.
    #[test]
    fn nftables_accepts_the_fault_rules() {
        if !crate::netns::available() || Command::new("nft").arg("-v").output().is_err() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI runs as root with nftables"
            );
            eprintln!("SKIPPED: needs root and nft");
            return;
        }
        let pair = crate::netns::VethPair::new().expect("namespace");
        for rules in [
            deafen_rules("10.0.0.12").expect("v4"),
            deafen_rules("fd00::12").expect("v6"),
            bmc_cut_rules("10.0.1.11:623").expect("with port"),
            bmc_cut_rules("10.0.1.11").expect("address"),
        ] {
            let out = crate::util::run_bounded_input(
                Command::new("ip").args(["netns", "exec", &pair.ns[0], "nft", "-c", "-f", "-"]),
                &rules,
                COMMAND_TIMEOUT,
            )
            .expect("nft");
            assert!(
                out.status.success(),
                "{rules}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
