//! `watchkeeper demo`: a whole two-node cluster on this machine, and a failover to watch.
//!
//! A newcomer should see what watchkeeper is for in one command, without root, hardware or a
//! second host: two real agents (and, with `--witness`, a third that only votes) joined by UDP
//! on 127.0.0.1 and a serial cable made of pty pairs, a BMC per node they fence each other
//! through over real IPMI v2.0 LAN (RMCP+) with a switched PDU over real Modbus TCP as the
//! second fencing level, and a resource group of real OCF agents (Debian's Dummy) or shell
//! scripts. The demo then kills the holder with SIGKILL, as a host that hangs would look, and
//! reports from outside the agents what happens: detection, fencing through the BMC (or, with
//! `--bmc-down`, the BMC failing and the PDU taking over), each resource started on the
//! survivor, and the total time, with its breakdown; then it powers the old holder on through
//! the same device and shows it rejoin as a standby.
//!
//! # Contract
//!
//! - Nothing is faked inside the agents: they are `watchkeeper run` processes with a generated
//!   configuration, and everything the demo reports comes from their control sockets, their
//!   JSON logs, the PDU's served requests and the demo's own process table.
//! - Powering an outlet or a chassis off kills that agent (SIGKILL); powering it on starts it
//!   again (a power cycle or hard reset does both). So the survivor's fence really ends the
//!   node, and "power on" really boots it.
//! - Every process the demo starts is stopped when it ends, however it ends (finished, failed,
//!   Ctrl-C): SIGTERM, SIGKILL after a bounded wait, reaped. The temporary directory is removed
//!   unless `--keep`. Without root only 127.0.0.1 is used; as root (unless `--loopback`) each
//!   node is a network namespace of its own on a bridge the demo makes (see `netns`), and the
//!   namespaces are deleted at the end.
//! - `--script` (the default when stdin is not a terminal) runs the failover once and exits 0
//!   after a summary, or 1 naming the step that did not happen in time; it prints
//!   `started NODE pid N` for every process, so a test can check none is left.

mod bmc;
mod cable;
mod cluster;
mod netns;
mod pdu;
mod view;

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_modbus::client::Writer as _;

use bmc::{ChassisAction, ChassisEvent};
use cluster::{Cluster, ClusterError, GroupKind, LogEvent, Options, GROUP};
use pdu::PowerEvent;
use view::{ms, ms_between, Screen, Snapshot};

/// What went wrong running the demo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The cluster could not be set up or an agent started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A step did not happen in time.
    #[error("{what} did not happen within {} s", waited.as_secs())]
    Timeout {
        /// The step.
        what: String,
        /// How long the demo waited.
        waited: Duration,
    },
    /// Powering a node on through its BMC or the PDU failed.
    #[error("cannot power {node} on through the {device} at {address}: {error}")]
    PowerOn {
        /// Node.
        node: String,
        /// `BMC` or `PDU`.
        device: &'static str,
        /// Device address.
        address: std::net::SocketAddr,
        /// What the Modbus client said.
        error: String,
    },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

/// The demo's options, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct DemoArgs {
    /// Add a witness node `gamma` that only votes.
    pub witness: bool,
    /// Run the failover once without waiting for Enter, print a summary and exit.
    pub script: bool,
    /// Keep the temporary directory (configuration, logs, state) at the end.
    pub keep: bool,
    /// Stay on 127.0.0.1 even as root.
    pub loopback: bool,
    /// The holder's BMC stops answering before the kill, so the PDU (fencing level 2) fences.
    pub bmc_down: bool,
}

/// Runs the demo; returns the process exit code.
pub fn run(args: DemoArgs) -> u8 {
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(main(args))
}

async fn main(args: DemoArgs) -> u8 {
    let interactive = !args.script && std::io::stdin().is_terminal();
    // Handlers first, so a Ctrl-C during setup already stops what was started.
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("watchkeeper demo: cannot handle signals; refusing to start processes");
        return 1;
    };
    let started = Instant::now();
    let mut cluster = match Cluster::create(Options {
        witness: args.witness,
        keep: args.keep,
        loopback: args.loopback,
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("watchkeeper demo: {e}");
            return 1;
        }
    };
    let mut screen = Screen::new(std::io::stdout().is_terminal(), started);
    header(&cluster, &mut screen, interactive);
    screen.clear();
    let outcome = {
        let mut demo = Demo::new(&mut cluster, &mut screen, interactive, args.bmc_down);
        tokio::select! {
            r = demo.play() => r,
            _ = int.recv() => Err(DemoError::Interrupted),
            _ = term.recv() => Err(DemoError::Interrupted),
        }
    };
    screen.finish();
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid.map(|p| format!("{} pid {p}", n.name)))
        .collect();
    let dir = cluster.dir.clone();
    println!(
        "stopping every process the demo started{}",
        if pids.is_empty() {
            String::new()
        } else {
            format!(" ({})", pids.join(", "))
        }
    );
    let killed = cluster.shutdown().await;
    if !killed.is_empty() {
        println!("killed with SIGKILL after the grace: pids {killed:?}");
    }
    if args.keep {
        println!("kept {}", dir.display());
    } else {
        println!("removed {}", dir.display());
    }
    match outcome {
        Ok(()) => 0,
        Err(DemoError::Interrupted) if interactive => 0,
        Err(DemoError::Interrupted) => 130,
        Err(e) => {
            eprintln!("watchkeeper demo: {e}");
            1
        }
    }
}

/// What the demo set up, said once before anything starts.
fn header(c: &Cluster, screen: &mut Screen, interactive: bool) {
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name).collect();
    screen.plain(&format!(
        "watchkeeper demo: {} agents on this machine ({}), no root needed",
        names.len(),
        names.join(", ")
    ));
    screen.plain(&format!("  directory  {}", c.dir.display()));
    screen.plain(&format!("  network    {}", c.network));
    let udp: Vec<String> = c.lan.iter().map(ToString::to_string).collect();
    match (&c.cable, &c.cable_error) {
        (Some(cable), _) => screen.plain(&format!(
            "  links      serial0: pty null-modem cable {} <-> {} relayed by the demo; lan0: UDP {}",
            file_name(&cable.paths()[0]),
            file_name(&cable.paths()[1]),
            udp.join(" ")
        )),
        (None, why) => screen.plain(&format!(
            "  links      lan0: UDP {} (no serial cable: {})",
            udp.join(" "),
            why.as_deref().unwrap_or("no pty")
        )),
    }
    let bmcs: Vec<String> = c
        .nodes
        .iter()
        .filter_map(|n| Some(format!("{} {}", n.name, c.bmcs.get(n.bmc?)?.address())))
        .collect();
    screen.plain(&format!(
        "  fencing    level 1: a simulated BMC per node speaking IPMI v2.0 LAN (RMCP+, cipher suite 3): {}",
        bmcs.join(", ")
    ));
    screen.plain(&format!(
        "             level 2: a simulated PDU speaking Modbus TCP at {}: coil 0 powers alpha, coil 1 powers beta",
        c.pdu.address()
    ));
    screen.plain(&match c.group {
        GroupKind::Ocf => format!(
            "  resources  {}: real OCF resources (heartbeat:Dummy, {})",
            GROUP.join(" -> "),
            cluster::DUMMY
        ),
        GroupKind::Script => format!(
            "  resources  {}: shell scripts on state files (no OCF Dummy at {})",
            GROUP.join(" -> "),
            cluster::DUMMY
        ),
    });
    screen.plain(&format!(
        "  timing     heartbeat {} ms, deadtime {} ms, fence_delay {} ms",
        cluster::HEARTBEAT_MS,
        cluster::DEADTIME_MS,
        cluster::FENCE_DELAY_MS
    ));
    if c.nodes.len() > 2 {
        screen.plain("  witness    gamma votes (UDP only) and never holds the group");
    }
    if !interactive {
        screen.plain("  mode       scripted: the failover runs once, then a summary");
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The demo in progress: the cluster, the screen and what was last seen.
struct Demo<'a> {
    c: &'a mut Cluster,
    screen: &'a mut Screen,
    interactive: bool,
    bmc_down: bool,
    snapshots: Vec<Snapshot>,
    tick: tokio::time::Interval,
    stdin: Option<mpsc::Receiver<()>>,
    enter: bool,
    failover: Option<Failover>,
}

/// The device that cut a node's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Its BMC (IPMI Chassis Control).
    Bmc,
    /// A PDU outlet (Modbus coil).
    Pdu(u16),
}

impl Cut {
    /// How the summary names it.
    fn words(self) -> String {
        match self {
            Self::Bmc => "its BMC (IPMI chassis power off)".to_owned(),
            Self::Pdu(coil) => format!("the PDU (coil {coil} off)"),
        }
    }
}

/// What woke the demo up.
enum Next {
    Log(LogEvent),
    Power(PowerEvent),
    Chassis(ChassisEvent),
    Stdin(Option<()>),
    Refresh,
}

/// What was seen of the failover, each step when it happened.
#[derive(Debug)]
struct Failover {
    victim: usize,
    survivor: usize,
    killed: Instant,
    detected: Option<Instant>,
    /// When power was cut, and by which device.
    cut: Option<(Instant, Cut)>,
    confirmed: Option<Instant>,
    started: Vec<(String, Instant)>,
}

impl<'a> Demo<'a> {
    fn new(c: &'a mut Cluster, screen: &'a mut Screen, interactive: bool, bmc_down: bool) -> Self {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let stdin = interactive.then(stdin_lines);
        Self {
            c,
            screen,
            interactive,
            bmc_down,
            snapshots: Vec::new(),
            tick,
            stdin,
            enter: false,
            failover: None,
        }
    }

    async fn play(&mut self) -> Result<(), DemoError> {
        for i in 0..self.c.nodes.len() {
            self.start(i)?;
        }
        self.screen
            .say("waiting for the agents to elect a holder and start the group");
        let holder = self
            .until("a holder running the whole group", ELECT_WAIT, |d| {
                d.holder()
            })
            .await?;
        let (h, s) = (holder, 1 - holder);
        let epoch = self.snapshots.get(h).and_then(Snapshot::epoch).unwrap_or(0);
        self.screen.say(&format!(
            "{} holds the group (epoch {epoch}): {} running; {} is standby",
            self.c.nodes[h].name,
            GROUP.join(", "),
            self.c.nodes[s].name
        ));
        if self.interactive {
            self.screen.set_prompt(Some(&format!(
                ">> press Enter to kill the holder {} with SIGKILL (a host losing power)",
                self.c.nodes[h].name
            )));
            self.enter = false;
            self.until("Enter", Duration::MAX, |d| d.enter.then_some(()))
                .await?;
            self.screen.set_prompt(None);
        }
        let summary = self.failover(h, s).await?;
        let rejoin = self.power_on(h, s).await?;
        self.screen.plain("");
        self.screen.plain("== summary");
        self.screen.plain(&summary);
        self.screen.plain(&rejoin);
        self.refresh().await;
        if self.interactive {
            self.screen.set_prompt(Some(
                ">> the cluster keeps running: press Ctrl-C to stop everything",
            ));
            loop {
                self.step().await?;
            }
        }
        Ok(())
    }

    /// Kills the holder `h` and reports the takeover by `s` as it happens.
    async fn failover(&mut self, h: usize, s: usize) -> Result<String, DemoError> {
        let (hn, sn) = (self.c.nodes[h].name, self.c.nodes[s].name);
        self.screen.plain("");
        self.screen.plain(&format!(
            "== failover: the holder {hn} is killed with SIGKILL; its power stays on, as for a host that hangs or crashes"
        ));
        if self.bmc_down {
            if let Some(bmc) = self.c.nodes[h].bmc.and_then(|b| self.c.bmcs.get(b)) {
                bmc.set_answering(false);
            }
            self.screen.say(&format!(
                "{hn}'s BMC stops answering (--bmc-down): fencing level 1 must fail and the PDU, level 2, must fence"
            ));
        }
        let killed = Instant::now();
        let pid = self.c.kill(h).await;
        self.failover = Some(Failover {
            victim: h,
            survivor: s,
            killed,
            detected: None,
            cut: None,
            confirmed: None,
            started: Vec::new(),
        });
        self.screen.say(&format!(
            "+{:>5} ms  killed {hn} (pid {})",
            0,
            pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ));
        self.until(
            &format!("the takeover of the group by {sn}"),
            FAILOVER_WAIT,
            |d| {
                d.failover
                    .as_ref()
                    .filter(|f| f.started.len() == GROUP.len())
                    .map(|_| ())
            },
        )
        .await?;
        let Some(f) = self.failover.take() else {
            return Err(DemoError::Timeout {
                what: "the failover record".to_owned(),
                waited: Duration::ZERO,
            });
        };
        let last = f.started.iter().map(|(_, t)| *t).max().unwrap_or(killed);
        let total = ms_between(killed, last);
        let detected = f.detected.unwrap_or(killed);
        let (cut_at, cut) = f.cut.unwrap_or((detected, Cut::Bmc));
        let confirmed = f.confirmed.unwrap_or(cut_at);
        self.screen.say(&format!(
            "total failover: {total} ms from the kill to the last resource running on {sn}"
        ));
        let breakdown = format!(
            "detection {} ms (deadtime {} ms) + fencing {} ms (fence delay, {}) + confirmation {} ms + starting {} resources {} ms",
            ms_between(killed, detected),
            cluster::DEADTIME_MS,
            ms_between(detected, cut_at),
            match cut {
                Cut::Bmc => "IPMI login and Chassis Control".to_owned(),
                Cut::Pdu(_) => format!(
                    "the BMC's level failing after {} ms, PDU write",
                    cluster::BMC_TIMEOUT_MS
                ),
            },
            ms_between(cut_at, confirmed),
            GROUP.len(),
            ms_between(confirmed, last)
        );
        self.screen.say(&format!("  breakdown: {breakdown}"));
        Ok(format!(
            "failover: {hn} killed; {sn} detected it after {} ms, fenced it through {}, read back off, and ran the whole group {total} ms after the kill",
            ms_between(killed, detected),
            cut.words(),
        ))
    }

    /// Powers `h` on through its BMC (or, when its BMC was down, through the PDU) and waits
    /// until it rejoins as a standby while `s` keeps the group.
    async fn power_on(&mut self, h: usize, s: usize) -> Result<String, DemoError> {
        let (hn, sn) = (self.c.nodes[h].name, self.c.nodes[s].name);
        self.screen.plain("");
        let bmc = self.c.nodes[h].bmc.and_then(|b| self.c.bmcs.get(b));
        let asked = Instant::now();
        let device = match bmc {
            Some(bmc) if !self.bmc_down => {
                self.screen.plain(&format!(
                    "== {hn} comes back: the demo powers it on through its BMC (IPMI chassis power on, with the agent's own IPMI driver)"
                ));
                let address = bmc.address();
                let mut params = drivers::fence::ipmi::IpmiParams::new(
                    address,
                    self.c.bmc_user,
                    drivers::secret::Secret::new(self.c.bmc_password.clone()),
                );
                params.poll_interval = Duration::from_millis(20);
                let power_on = async move {
                    let deadline = tokio::time::Instant::now() + POWER_ON_WAIT;
                    let mut device = drivers::fence::ipmi::IpmiDevice::new("demo", hn, params)
                        .map_err(|e| e.to_string())?;
                    use drivers::fence::FenceDevice as _;
                    device
                        .on(hn, deadline)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                let result = match self.c.net.as_ref().map(netns::DemoNet::switch_path) {
                    // From the switch's namespace, where the BMCs are: on a thread of its own
                    // with a runtime of its own, so the BMC keeps serving on this one.
                    Some(path) => tokio::task::spawn_blocking(move || {
                        netns::in_ns(&path, || {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map(|rt| rt.block_on(power_on))
                        })
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .and_then(|r| r),
                    None => power_on.await,
                };
                if let Err(error) = result {
                    return Err(DemoError::PowerOn {
                        node: hn.to_owned(),
                        device: "BMC",
                        address,
                        error,
                    });
                }
                "its BMC"
            }
            _ => {
                self.pdu_on(h).await?;
                if let Some(bmc) = self.c.nodes[h].bmc.and_then(|b| self.c.bmcs.get(b)) {
                    bmc.set_answering(true);
                    self.screen
                        .say(&format!("{hn}'s BMC answers again (its network is back)"));
                }
                "the PDU"
            }
        };
        let (hs, ss) = (hn.to_owned(), sn.to_owned());
        self.until(
            &format!("{hn} rejoining as a standby"),
            REJOIN_WAIT,
            move |d| {
                let (a, b) = (d.snapshots.get(h)?, d.snapshots.get(s)?);
                (a.pid.is_some()
                    && a.role() == "Standby"
                    && a.holds_nothing()
                    && a.sees_alive(&ss)
                    && b.sees_alive(&hs)
                    && b.runs_group(GROUP.len()))
                .then_some(())
            },
        )
        .await?;
        let took = ms(asked.elapsed());
        self.screen.say(&format!(
            "{hn} rejoined as {} {took} ms after power-on: it hears {sn} and holds nothing; {sn} keeps the group",
            self.snapshots.get(h).map_or("?", Snapshot::role)
        ));
        // It must stay that way: a rejoining node never takes the group back by itself.
        let until = Instant::now() + STABLE;
        while Instant::now() < until {
            self.step().await?;
        }
        let kept = self
            .snapshots
            .get(s)
            .is_some_and(|b| b.runs_group(GROUP.len()))
            && self.snapshots.get(h).is_some_and(Snapshot::holds_nothing);
        if !kept {
            return Err(DemoError::Timeout {
                what: format!("{sn} keeping the group after {hn} rejoined"),
                waited: STABLE,
            });
        }
        self.screen.say(&format!(
            "{} s later {sn} still holds the group (epoch {}) and {hn} is still standby",
            STABLE.as_secs(),
            self.snapshots.get(s).and_then(Snapshot::epoch).unwrap_or(0)
        ));
        Ok(format!(
            "rejoin: {hn} was powered on through {device} and rejoined as a standby in {took} ms; {sn} kept the group"
        ))
    }

    /// Writes node `h`'s PDU outlet on, as the demo's own Modbus client.
    async fn pdu_on(&mut self, h: usize) -> Result<(), DemoError> {
        let hn = self.c.nodes[h].name;
        let outlet = self.c.nodes[h].outlet.unwrap_or(0);
        self.screen.plain(&format!(
            "== {hn} comes back: the demo powers it on through the PDU (Modbus write coil {outlet} = 1)"
        ));
        let address = self.c.pdu.address();
        let written = tokio::time::timeout(POWER_ON_WAIT, async {
            let stream = self.c.connect(address).await.map_err(|e| e.to_string())?;
            let mut ctx = tokio_modbus::client::tcp::attach(stream);
            match ctx.write_single_coil(outlet, true).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(exception)) => Err(format!("exception {exception}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        written
            .map_err(|_| format!("no answer within {} s", POWER_ON_WAIT.as_secs()))
            .and_then(|r| r)
            .map_err(|error| DemoError::PowerOn {
                node: hn.to_owned(),
                device: "PDU",
                address,
                error,
            })
    }

    /// The node running the whole group, if exactly one does.
    fn holder(&self) -> Option<usize> {
        let holders: Vec<usize> = (0..self.snapshots.len().min(2))
            .filter(|&i| self.snapshots[i].runs_group(GROUP.len()))
            .collect();
        match holders.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Steps until `done` gives a value, or fails after `wait`.
    async fn until<T>(
        &mut self,
        what: &str,
        wait: Duration,
        done: impl Fn(&Self) -> Option<T>,
    ) -> Result<T, DemoError> {
        let started = Instant::now();
        loop {
            if let Some(v) = done(self) {
                return Ok(v);
            }
            if started.elapsed() >= wait {
                return Err(DemoError::Timeout {
                    what: what.to_owned(),
                    waited: wait,
                });
            }
            self.step().await?;
        }
    }

    /// Waits for the next thing to happen and handles it.
    async fn step(&mut self) -> Result<(), DemoError> {
        let (events, power, chassis, stdin, tick) = (
            &mut self.c.events,
            &mut self.c.power,
            &mut self.c.chassis,
            &mut self.stdin,
            &mut self.tick,
        );
        let next = tokio::select! {
            Some(ev) = events.recv() => Next::Log(ev),
            Some(p) = power.recv() => Next::Power(p),
            Some(c) = chassis.recv() => Next::Chassis(c),
            got = async {
                match stdin {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => Next::Stdin(got),
            _ = tick.tick() => Next::Refresh,
        };
        match next {
            Next::Log(ev) => self.log_event(&ev),
            Next::Power(p) => self.power_event(p).await?,
            Next::Chassis(c) => self.chassis_event(c).await?,
            Next::Stdin(Some(())) => self.enter = true,
            // stdin closed: no Enter can come; go on as if it had been pressed.
            Next::Stdin(None) => {
                self.stdin = None;
                self.enter = true;
            }
            Next::Refresh => self.refresh().await,
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<(), DemoError> {
        let pid = self.c.start(i)?;
        self.screen.say(&format!(
            "started {} pid {}",
            self.c.nodes[i].name,
            pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ));
        Ok(())
    }

    /// Queries every running agent and redraws.
    async fn refresh(&mut self) {
        let mut snapshots = Vec::with_capacity(self.c.nodes.len());
        for i in 0..self.c.nodes.len() {
            let running = self.c.running(i);
            let node = &self.c.nodes[i];
            let (status, resources) = if running {
                let status = crate::control::query_status(&node.socket, QUERY_TIMEOUT);
                let resources = crate::control::query(
                    &node.socket,
                    &crate::control::Request::Resources,
                    QUERY_TIMEOUT,
                );
                let (s, r) = tokio::join!(status, resources);
                (s.ok(), r.ok())
            } else {
                (None, None)
            };
            snapshots.push(Snapshot {
                name: node.name.to_owned(),
                pid: node.pid,
                powered: self.c.powered(i),
                status,
                resources,
                last_fence: node.last_fence.clone(),
            });
        }
        self.snapshots = snapshots;
        self.screen.show(&self.snapshots);
    }

    /// An agent's log event: remembered for the view, and reported during a failover.
    fn log_event(&mut self, ev: &LogEvent) {
        let name = self.c.nodes.get(ev.node).map_or("?", |n| n.name);
        match ev.event() {
            "fence_device_off" => {
                let words = format!(
                    "{} confirmed {} off in {} ms",
                    ev.field("device"),
                    ev.fenced(),
                    ev.value["ms"]
                );
                if let Some(n) = self.c.nodes.get_mut(ev.node) {
                    n.last_fence = Some(words);
                }
            }
            "fence_device_failed" => {
                let words = format!(
                    "{} FAILED on {}: {}",
                    ev.field("device"),
                    ev.fenced(),
                    ev.field("error")
                );
                if let Some(n) = self.c.nodes.get_mut(ev.node) {
                    n.last_fence = Some(words.clone());
                }
                self.screen.say(&format!("{name}: fencing: {words}"));
            }
            "start_failed" | "self_fence" => {
                self.screen.say(&format!("{name}: {}", ev.field("message")));
            }
            _ => {}
        }
        let Some(f) = &mut self.failover else {
            return;
        };
        if ev.node != f.survivor {
            return;
        }
        let victim = self.c.nodes[f.victim].name;
        let at = |t: Instant| format!("+{:>5} ms", ms_between(f.killed, t));
        match ev.event() {
            "peer_down" if ev.field("peer") == victim && f.detected.is_none() => {
                f.detected = Some(ev.at);
                self.screen.say(&format!(
                    "{}  detection: {name} declares {victim} dead (peer_down: silent on every link for {} ms)",
                    at(ev.at),
                    ev.value["silent_ms"]
                ));
            }
            "fence_level_done" if ev.fenced() == victim => {
                let ok = ev.value["ok"] == serde_json::Value::Bool(true);
                if ok && f.confirmed.is_none() {
                    f.confirmed = Some(ev.at);
                }
                self.screen.say(&format!(
                    "{}  fence {}: {name}'s fencing level {} of {victim} {} (fence_level_done, {} ms)",
                    at(ev.at),
                    if ok { "confirmed" } else { "FAILED" },
                    ev.value["level"],
                    match (ok, f.cut) {
                        (false, _) => "did not confirm",
                        (true, Some((_, Cut::Pdu(_)))) => "read the outlet back off",
                        (true, _) => "read the chassis power back off",
                    },
                    ev.value["ms"]
                ));
            }
            "resource_started" => {
                let resource = ev.field("resource").to_owned();
                self.screen.say(&format!(
                    "{}  takeover: {name} started {resource} ({} ms)",
                    at(ev.at),
                    ev.value["ms"]
                ));
                f.started.push((resource, ev.at));
            }
            "resource_start_failed" => {
                self.screen.say(&format!(
                    "{}  takeover: {name} FAILED to start {}: {}",
                    at(ev.at),
                    ev.field("resource"),
                    ev.field("error")
                ));
            }
            _ => {}
        }
    }

    /// A write served by the PDU: kills or starts the agent behind the outlet.
    async fn power_event(&mut self, p: PowerEvent) -> Result<(), DemoError> {
        let Some(i) = self.c.node_of_outlet(p.outlet) else {
            return Ok(());
        };
        let name = self.c.nodes[i].name;
        let stamp = match &mut self.failover {
            Some(f) if f.victim == i && !p.on => {
                f.cut.get_or_insert((p.at, Cut::Pdu(p.outlet)));
                format!("+{:>5} ms  ", ms_between(f.killed, p.at))
            }
            _ => String::new(),
        };
        if p.on {
            self.screen.say(&format!(
                "{stamp}PDU: coil {} written 1: {name} powered on{}",
                p.outlet,
                if p.changed {
                    ", booting it"
                } else {
                    " (it was)"
                }
            ));
            if !self.c.running(i) {
                self.start(i)?;
            }
        } else {
            let was = self.c.running(i);
            self.c.kill(i).await;
            self.screen.say(&format!(
                "{stamp}fencing: PDU coil {} written 0: {name} powered off{}",
                p.outlet,
                if was {
                    " (its agent was running: killed)"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }
}

impl Demo<'_> {
    /// A Chassis Control served by a BMC: kills, starts or restarts the agent behind it.
    async fn chassis_event(&mut self, e: ChassisEvent) -> Result<(), DemoError> {
        let Some(i) = self.c.node_of_bmc(e.bmc) else {
            return Ok(());
        };
        let name = self.c.nodes[i].name;
        let off = matches!(
            e.action,
            ChassisAction::Off | ChassisAction::Cycle | ChassisAction::Reset
        );
        let stamp = match &mut self.failover {
            Some(f) if f.victim == i && off => {
                f.cut.get_or_insert((e.at, Cut::Bmc));
                format!("+{:>5} ms  ", ms_between(f.killed, e.at))
            }
            _ => String::new(),
        };
        let was = self.c.running(i);
        if off {
            self.c.kill(i).await;
        }
        let words = e.action.words();
        let what = match e.action {
            ChassisAction::Off => format!(
                "{name} powered off{}",
                if was {
                    " (its agent was running: killed)"
                } else {
                    ""
                }
            ),
            ChassisAction::On if !e.changed => format!("{name} powered on (it was)"),
            ChassisAction::On => format!("{name} powered on, booting it"),
            ChassisAction::Cycle | ChassisAction::Reset => format!("{name} restarted"),
        };
        let prefix = if off { "fencing: " } else { "" };
        self.screen.say(&format!(
            "{stamp}{prefix}{name}'s BMC: IPMI chassis {words}: {what}"
        ));
        if e.action != ChassisAction::Off && !self.c.running(i) {
            self.start(i)?;
        }
        Ok(())
    }
}

/// Lines typed on stdin, read by a thread (stdin has no async reader in this runtime). The
/// thread blocks in `read_line` until the process exits; it holds nothing else.
fn stdin_lines() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("demo-stdin".to_owned())
        .spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.blocking_send(()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    // Without the thread the channel closes at once, which `step` takes as Enter.
    drop(spawned);
    rx
}

/// The live view's refresh period.
const REFRESH: Duration = Duration::from_millis(200);
/// A control query gets this long: the agent answers in microseconds, a dead one not at all.
const QUERY_TIMEOUT: Duration = Duration::from_millis(150);
/// Agents elect a holder and start the group within a few seconds (election timeout 2 s).
const ELECT_WAIT: Duration = Duration::from_secs(30);
/// A failover takes about a second; this bounds a stuck one.
const FAILOVER_WAIT: Duration = Duration::from_secs(20);
/// A restarted agent rejoins within its startup timeout.
const REJOIN_WAIT: Duration = Duration::from_secs(20);
/// How long the rejoined node is watched staying standby.
const STABLE: Duration = Duration::from_secs(2);
/// The demo's own power-on (a Modbus write to the PDU, or an IPMI session with the BMC).
const POWER_ON_WAIT: Duration = Duration::from_secs(2);
