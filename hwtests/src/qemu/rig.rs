//! The QEMU rig: a [`RigDesc`] built as one QEMU guest per host, so that scenarios run the
//! agent against real kernel drivers (i6300esb watchdog, 16550 UARTs, e1000 NICs) and a BMC
//! that really switches the machine off.
//!
//! - **Guests.** Debian's kernel, one busybox initramfs shared by all hosts (the host's name
//!   and heartbeat address come on the kernel command line), the agent built for musl, `-m
//!   128M`, and a 16 MiB ext4 disk each for the agent's state directory, which survives
//!   reboots as a real disk does. Volatile state (the marker resources in `/run`, a virtual IP)
//!   is gone after a reset or a power cycle.
//! - **Watchdog.** `-device i6300esb -action watchdog=reset`: a starved agent's guest reboots
//!   in the same qemu process; QMP reports `WATCHDOG` and `RESET` with host timestamps.
//! - **Serial cables.** A 16550 per cable end on a socket chardev, joined by a
//!   [`SocketCable`] relay on the host that the scenarios cut and restore.
//! - **Ethernet.** An e1000 per guest on one `-netdev socket` multicast segment on loopback (it
//!   survives any guest rebooting, unlike a point-to-point TCP link); QMP `set_link` gives
//!   carrier loss.
//! - **Client LAN.** When the group has a virtual IP, a third e1000 per guest on a segment of
//!   its own (`lan0`, 10.79.0.x) carries it, as a Bacula host's LAN NIC would, so that cutting
//!   the heartbeat network does not also take the address's carrier away.
//! - **Management and BMCs.** A second e1000 on user-mode networking, where the host's
//!   loopback is 10.0.2.2: the agent reaches its peers' `ipmi_sim` there over RMCP+. The BMC's
//!   power-off hook sends QMP `quit` to the guest and returns only when the qemu process is
//!   gone, so "the BMC reports off" means the machine is really off. Powering on again is the
//!   harness's job ([`QemuRig::power_on`]): a cold boot in a new qemu process.
//!
//! Every scenario judges the cluster from outside the agents: the marker resources print a
//! line on the guest's console when they really start or stop, an [`ArpObserver`] on the
//! guests' segment asks who answers for each virtual IP, as a client would, and QMP says when
//! a guest was reset, frozen or switched off. [`QemuRig::overlaps`] checks that no resource ever ran on two
//! powered hosts at once. Every process the rig starts is stopped by PID when it is dropped.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::arp::{ArpObserver, ArpSample};
use super::cable::SocketCable;
use super::{json_in, Guest, Rig};
use crate::ipmi_sim::{IpmiSim, IpmiSimConfig, DEFAULT_PASSWORD, DEFAULT_USER};
use crate::modbus_pdu::{ModbusPdu, ModbusPduOptions};
use crate::rig::desc::{ResourceKind, RigDesc};

/// One host of the rig.
#[derive(Debug)]
struct Host {
    dir: PathBuf,
    disk: PathBuf,
    bmc: Option<IpmiSim>,
    guest: Option<Guest>,
    /// Guests of earlier boots (powered off), kept for their consoles and events.
    past: Vec<Guest>,
    boots: u32,
}

/// A resource start or stop, or a host going dark, seen from outside the guests.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Host clock.
    pub at: Instant,
    /// Host index.
    pub host: usize,
    /// What happened.
    pub what: Seen,
}

/// What [`Observed`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A marker resource started (its console line).
    Start(String),
    /// A marker resource stopped.
    Stop(String),
    /// The guest was reset (watchdog or BMC): its volatile state is gone.
    Reset,
    /// The guest was switched off (its qemu process ended).
    Off,
}

/// The rig; see the module docs.
#[derive(Debug)]
pub struct QemuRig {
    /// The description it was built from.
    pub desc: RigDesc,
    base: Rig,
    initrd: PathBuf,
    hosts: Vec<Host>,
    cables: Vec<SocketCable>,
    pdu: Option<ModbusPdu>,
    /// One observer per virtual IP of the group, by resource name.
    vips: Vec<(String, ArpObserver)>,
    mcast: String,
    lan: String,
    /// The guest watchdog's timeout.
    pub watchdog_timeout: Duration,
    dir: tempfile::TempDir,
}

impl QemuRig {
    /// Builds `desc`: the initramfs (with `agent`, the musl build of `watchkeeper`), disks,
    /// BMCs and cables. Starts no guest.
    pub fn build(desc: RigDesc, agent: &Path) -> io::Result<Self> {
        if let Some((h, k)) = desc.hosts.iter().find_map(|h| {
            h.fence
                .iter()
                .find(|&&k| k != crate::rig::desc::FenceKind::Ipmi)
                .map(|k| (h, k))
        }) {
            return Err(io::Error::other(format!(
                "rig {:?}: host {} is fenced by {:?}: the QEMU guests are fenced by IPMI BMCs \
                 (and a Modbus PDU with `[qemu] pdu = true`); use fence = [\"ipmi\"]",
                desc.name,
                h.name,
                k.word()
            )));
        }
        let base = Rig::locate().map_err(io::Error::other)?;
        if desc.has_catalog() {
            return Err(io::Error::other(format!(
                "rig {:?} has a Catalog (pgsql): the QEMU guests have no PostgreSQL; use marker \
                 and vip resources",
                desc.name
            )));
        }
        if let Some(r) = desc
            .resources
            .iter()
            .find(|r| matches!(r.kind, ResourceKind::Ocf(_)))
        {
            return Err(io::Error::other(format!(
                "rig {:?}: resource {:?} is an OCF agent: the QEMU guests have no resource-agents; \
                 use marker and vip resources",
                desc.name, r.name
            )));
        }
        if which("socat").is_none() {
            return Err(io::Error::other(
                "socat is missing (the BMC's power hook talks QMP with it): run `bash scripts/deps-qemu.sh`",
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("wk-qemu-")
            .disable_cleanup(std::env::var_os("WK_RIG_KEEP").is_some())
            .tempdir()?;
        let d = dir.path().to_path_buf();
        let watchdog_timeout = desc.qemu.watchdog_timeout;
        let group = std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::new(239, 77, 0, 1),
            crate::free_udp_port(),
        );
        let mcast = group.to_string();
        // The client LAN, where the virtual IPs live: a segment of its own, so that cutting the
        // heartbeat network does not take the service address's carrier with it.
        let lan = std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::new(239, 79, 0, 1),
            crate::free_udp_port(),
        );
        let mut vips = Vec::new();
        for r in &desc.resources {
            if let ResourceKind::Vip { address } = &r.kind {
                let ip = address
                    .split_once('/')
                    .and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok())
                    .ok_or_else(|| {
                        io::Error::other(format!(
                            "resource {:?}: the QEMU rig observes IPv4 virtual IPs only",
                            r.name
                        ))
                    })?;
                vips.push((r.name.clone(), ArpObserver::start(lan, ip)?));
            }
        }
        let mut hosts = Vec::new();
        for h in &desc.hosts {
            let hdir = d.join(&h.name);
            fs::create_dir(&hdir)?;
            let disk = hdir.join("state.img");
            make_disk(&disk)?;
            let bmc = if h.witness {
                None
            } else {
                let bmc = IpmiSim::start(&IpmiSimConfig::default());
                let script = hdir.join("power-off.sh");
                fs::write(&script, power_off_script(&hdir))?;
                bmc.run_at_power_off(&script);
                Some(bmc)
            };
            hosts.push(Host {
                dir: hdir,
                disk,
                bmc,
                guest: None,
                past: Vec::new(),
                boots: 0,
            });
        }
        let mut cables = Vec::new();
        for (c, ends) in desc.cables.iter().enumerate() {
            let [a, b] = ends.map(|e| hosts[e].dir.join(format!("cable{c}.sock")));
            cables.push(SocketCable::start(&a, &b)?);
        }
        let pdu = if desc.qemu.pdu {
            let outlets = u16::try_from(hosts.len()).unwrap_or(u16::MAX);
            let pdu = ModbusPdu::start_tcp(&ModbusPduOptions {
                outlets,
                ..ModbusPduOptions::default()
            });
            let mut script = String::from("#!/bin/sh\n# Outlet i feeds host i.\ncase \"$2\" in\n");
            for (i, h) in hosts.iter().enumerate() {
                let _ = writeln!(script, "  {i}) sh \"{}/power-off.sh\" ;;", h.dir.display());
            }
            script.push_str("esac\n");
            let path = d.join("pdu-off.sh");
            fs::write(&path, script)?;
            pdu.set_off_hook(&path);
            Some(pdu)
        } else {
            None
        };
        let mut rig = Self {
            desc,
            base,
            initrd: d.join("initrd.cpio"),
            hosts,
            cables,
            pdu,
            vips,
            mcast,
            lan: lan.to_string(),
            watchdog_timeout,
            dir,
        };
        rig.write_initrd(agent)?;
        Ok(rig)
    }

    /// The rig's directory (consoles, QMP sockets, disks).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.desc.hosts[i].name
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the rig has no hosts (never: a description has two or three).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Boots host `i` in a new qemu process (its power switched on at the BMC first). Returns
    /// when qemu runs; the guest boots in the background.
    pub fn power_on(&mut self, i: usize) -> io::Result<()> {
        if self.running(i) {
            return Ok(());
        }
        if let Some(bmc) = &self.hosts[i].bmc {
            bmc.set_power_on(true);
        }
        if let Some(pdu) = &self.pdu {
            pdu.set_outlet(1, u16::try_from(i).unwrap_or(u16::MAX), true);
        }
        let args = self.qemu_args(i);
        let host = &mut self.hosts[i];
        if let Some(old) = host.guest.take() {
            host.past.push(old);
        }
        host.boots += 1;
        let boot_dir = host.dir.join(format!("boot{}", host.boots));
        fs::create_dir_all(&boot_dir)?;
        let cmdline = format!(
            "wk.node={} wk.addr={} wk.lan=10.79.0.{}",
            self.desc.hosts[i].name,
            hb_address(i),
            i + 1
        );
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let guest = Guest::start_with(&self.base, &self.initrd, &boot_dir, &cmdline, &arg_refs)?;
        // The BMC's power-off hook finds the current qemu here.
        fs::write(host.dir.join("qemu.pid"), format!("{}\n", guest.pid()))?;
        fs::write(
            host.dir.join("ctl.path"),
            format!("{}\n", boot_dir.join("ctl.sock").display()),
        )?;
        host.guest = Some(guest);
        Ok(())
    }

    /// Whether host `i`'s qemu process is running (paused counts as running).
    pub fn running(&mut self, i: usize) -> bool {
        self.hosts[i].guest.as_mut().is_some_and(|g| !g.exited())
    }

    /// Host `i`'s current guest, if it was ever started.
    pub fn guest(&self, i: usize) -> Option<&Guest> {
        self.hosts[i].guest.as_ref()
    }

    /// Host `i`'s current guest, mutably (to write to its console).
    pub fn guest_mut(&mut self, i: usize) -> Option<&mut Guest> {
        self.hosts[i].guest.as_mut()
    }

    /// Host `i`'s BMC (none for a witness).
    pub fn bmc(&self, i: usize) -> Option<&IpmiSim> {
        self.hosts[i].bmc.as_ref()
    }

    /// Host `i`'s BMC, mutably (to stop it).
    pub fn bmc_mut(&mut self, i: usize) -> Option<&mut IpmiSim> {
        self.hosts[i].bmc.as_mut()
    }

    /// The PDU feeding the guests, if the rig has one (`[qemu] pdu = true`).
    pub fn pdu(&self) -> Option<&ModbusPdu> {
        self.pdu.as_ref()
    }

    /// Sends a command line to host `i`'s console (the guest's command loop: `kill-agent`,
    /// `stop-agent`, `start-agent`).
    pub fn console_command(&mut self, i: usize, command: &str) -> io::Result<()> {
        self.hosts[i]
            .guest
            .as_mut()
            .ok_or_else(|| io::Error::other("the guest is off"))?
            .send_line(command)
    }

    /// Cuts (`true`) or reconnects every serial cable.
    pub fn cut_serial(&self, cut: bool) {
        for c in &self.cables {
            c.set_cut(cut);
        }
    }

    /// Line noise on every serial cable: one bit flipped in every `every`-th byte (0: clean).
    pub fn noise_serial(&self, every: u32) {
        for c in &self.cables {
            c.set_noise(every);
        }
    }

    /// Latency on every serial cable (zero for none).
    pub fn delay_serial(&self, delay: Duration) {
        for c in &self.cables {
            c.set_delay(delay);
        }
    }

    /// Carrier loss (`up = false`) or back on host `i`'s heartbeat NIC, by QMP `set_link`.
    pub fn set_lan_link(&self, i: usize, up: bool) -> io::Result<()> {
        self.set_link(i, "hb", up)
    }

    /// The same for host `i`'s management NIC (the path to the BMCs).
    pub fn set_mgmt_link(&self, i: usize, up: bool) -> io::Result<()> {
        self.set_link(i, "mg", up)
    }

    fn set_link(&self, i: usize, name: &str, up: bool) -> io::Result<()> {
        let g = self.hosts[i]
            .guest
            .as_ref()
            .ok_or_else(|| io::Error::other("the guest is off"))?;
        g.qmp("set_link", serde_json::json!({ "name": name, "up": up }))
            .map(|_| ())
    }

    /// Every console line of host `i` since `after`, over all its boots.
    pub fn lines(&self, i: usize, after: Instant) -> Vec<(Instant, String)> {
        let h = &self.hosts[i];
        h.past
            .iter()
            .chain(h.guest.iter())
            .flat_map(Guest::console)
            .filter(|(at, _)| *at >= after)
            .collect()
    }

    /// The first agent log event `event` (JSON on the console) of host `i` after `after`
    /// matching `pred`, waiting up to `timeout`.
    pub fn wait_log(
        &self,
        i: usize,
        event: &str,
        after: Instant,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        wait(timeout, || {
            self.lines(i, after).into_iter().find_map(|(at, line)| {
                let v = json_in(&line)?;
                (v["event"] == event && pred(&v)).then_some((at, v))
            })
        })
    }

    /// The first console line of host `i` after `after` containing `text`, waiting up to
    /// `timeout`.
    pub fn wait_line(
        &self,
        i: usize,
        text: &str,
        after: Instant,
        timeout: Duration,
    ) -> Option<(Instant, String)> {
        wait(timeout, || {
            self.lines(i, after)
                .into_iter()
                .find(|(_, l)| l.contains(text))
        })
    }

    /// The first QMP event `name` of host `i` after `after` (any boot), waiting up to `timeout`.
    pub fn wait_event(
        &self,
        i: usize,
        name: &str,
        after: Instant,
        timeout: Duration,
    ) -> Option<super::QmpEvent> {
        wait(timeout, || {
            let h = &self.hosts[i];
            h.past
                .iter()
                .chain(h.guest.iter())
                .flat_map(Guest::events)
                .find(|e| e.at >= after && e.name == name)
        })
    }

    /// Resource starts and stops, resets and power-offs of every host, in time order.
    pub fn observed(&self) -> Vec<Observed> {
        let mut out = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            for g in h.past.iter().chain(h.guest.iter()) {
                for (at, line) in g.console() {
                    if let Some(rest) = line.find("WK-RES ").map(|p| &line[p + "WK-RES ".len()..]) {
                        let mut w = rest.split_whitespace();
                        let (_node, action, name) = (w.next(), w.next(), w.next());
                        let what = match (action, name) {
                            (Some("start"), Some(n)) => Seen::Start(n.to_owned()),
                            (Some("stop"), Some(n)) => Seen::Stop(n.to_owned()),
                            _ => continue,
                        };
                        out.push(Observed { at, host: i, what });
                    }
                }
                for e in g.events() {
                    let what = match e.name.as_str() {
                        "RESET" => Seen::Reset,
                        "SHUTDOWN" => Seen::Off,
                        _ => continue,
                    };
                    out.push(Observed {
                        at: e.at,
                        host: i,
                        what,
                    });
                }
            }
        }
        out.sort_by_key(|o| o.at);
        out
    }

    /// Which hosts run each resource now, from [`QemuRig::observed`].
    pub fn holding(&self) -> Vec<Vec<String>> {
        let mut held = vec![Vec::<String>::new(); self.hosts.len()];
        for o in self.observed() {
            apply(&mut held, &o);
        }
        held
    }

    /// Hosts that run every marker resource of the group now (from their consoles; virtual
    /// IPs are judged by [`QemuRig::vip_owned_since`]).
    pub fn holders(&self) -> Vec<usize> {
        let held = self.holding();
        (0..self.hosts.len())
            .filter(|&i| {
                self.desc
                    .resources
                    .iter()
                    .filter(|r| !matches!(r.kind, ResourceKind::Vip { .. }))
                    .all(|r| held[i].contains(&r.name))
            })
            .collect()
    }

    /// Whether the group has virtual IPs (observed by ARP).
    pub fn has_vips(&self) -> bool {
        !self.vips.is_empty()
    }

    /// When every virtual IP of the group was first answered for by host `i` alone, after
    /// `after`; `None` until it has been (a rig without virtual IPs: `after`).
    pub fn vip_owned_since(&self, i: usize, after: Instant) -> Option<Instant> {
        let mac_last = u8::try_from(i + 1).ok()?;
        let mut latest = after;
        for (_, obs) in &self.vips {
            let first = obs
                .samples()
                .into_iter()
                .find(|s| s.at >= after && s.owners == [mac_last])?;
            latest = latest.max(first.at);
        }
        Some(latest)
    }

    /// Every ARP sample of every virtual IP, by resource name.
    pub fn vip_samples(&self) -> Vec<(String, Vec<ArpSample>)> {
        self.vips
            .iter()
            .map(|(n, o)| (n.clone(), o.samples()))
            .collect()
    }

    /// Every moment a resource ran on two hosts at once (a frozen host still counts: it holds
    /// its resources until it is reset or switched off), as messages; empty when none.
    pub fn overlaps(&self) -> Vec<String> {
        let mut held = vec![Vec::<String>::new(); self.hosts.len()];
        let mut bad = Vec::new();
        let t0 = self.observed().first().map(|o| o.at);
        for o in self.observed() {
            apply(&mut held, &o);
            if let Seen::Start(name) = &o.what {
                let others: Vec<&str> = (0..self.hosts.len())
                    .filter(|&j| j != o.host && held[j].contains(name))
                    .map(|j| self.name(j))
                    .collect();
                if !others.is_empty() {
                    bad.push(format!(
                        "{name} started on {} at +{:.3} s while {} still ran it",
                        self.name(o.host),
                        t0.map_or(0.0, |t| (o.at - t).as_secs_f64()),
                        others.join(", ")
                    ));
                }
            }
        }
        for (name, samples) in self.vip_samples() {
            for s in samples.iter().filter(|s| s.owners.len() > 1) {
                let who: Vec<String> = s
                    .owners
                    .iter()
                    .map(|&m| {
                        usize::from(m)
                            .checked_sub(1)
                            .filter(|&i| i < self.hosts.len())
                            .map_or_else(|| format!("MAC ..:{m:02x}"), |i| self.name(i).to_owned())
                    })
                    .collect();
                bad.push(format!(
                    "virtual IP {name} answered ARP from {} at once",
                    who.join(" and ")
                ));
            }
        }
        bad
    }

    /// Console logs of every boot of every host, for failure messages.
    pub fn consoles(&self) -> String {
        let mut s = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            for g in h.past.iter().chain(h.guest.iter()) {
                let _ = writeln!(
                    s,
                    "--- {} {}:\n{}\nQMP: {:?}",
                    self.name(i),
                    g.console_log().display(),
                    fs::read_to_string(g.console_log()).unwrap_or_default(),
                    g.events()
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                );
            }
        }
        s
    }

    fn qemu_args(&self, i: usize) -> Vec<String> {
        let h = &self.hosts[i];
        let octet = i + 1;
        let mut a: Vec<String> = vec![
            "-device".into(),
            "i6300esb".into(),
            "-action".into(),
            "watchdog=reset".into(),
            "-drive".into(),
            format!("file={},format=raw,if=virtio", h.disk.display()),
            "-netdev".into(),
            format!("socket,id=hb,mcast={},localaddr=127.0.0.1", self.mcast),
            "-device".into(),
            format!("e1000,netdev=hb,mac={HB_MAC_PREFIX}{octet:02x}"),
            // restrict=off: the guest reaches the host's loopback (the BMCs) at 10.0.2.2.
            "-netdev".into(),
            "user,id=mg,net=10.0.2.0/24,restrict=off".into(),
            "-device".into(),
            format!("e1000,netdev=mg,mac={MG_MAC_PREFIX}{octet:02x}"),
        ];
        if !self.vips.is_empty() {
            a.push("-netdev".into());
            a.push(format!(
                "socket,id=lan,mcast={},localaddr=127.0.0.1",
                self.lan
            ));
            a.push("-device".into());
            a.push(format!("e1000,netdev=lan,mac={LAN_MAC_PREFIX}{octet:02x}"));
        }
        for (c, ends) in self.desc.cables.iter().enumerate() {
            if ends.contains(&i) {
                a.push("-chardev".into());
                a.push(format!(
                    "socket,id=cable{c},path={},server=on,wait=off",
                    h.dir.join(format!("cable{c}.sock")).display()
                ));
                a.push("-device".into());
                a.push(format!("isa-serial,chardev=cable{c}"));
            }
        }
        a
    }

    fn write_initrd(&mut self, agent: &Path) -> io::Result<()> {
        let mut archive =
            self.base
                .initramfs(&["i6300esb", "e1000", "virtio_pci", "virtio_blk", "ext4"])?;
        archive
            .dir("wk")
            .file("wk/watchkeeper", 0o755, &fs::read(agent)?)
            .file("wk/wk.toml", 0o644, self.config_text().as_bytes())
            .file("wk/cluster.key", 0o600, CLUSTER_KEY.as_bytes())
            .file("wk/marker.sh", 0o755, MARKER_SCRIPT.as_bytes())
            .file("scenario.sh", 0o755, GUEST_SCRIPT.as_bytes());
        fs::write(&self.initrd, archive.finish())
    }

    /// The agents' configuration, the same file in every guest.
    fn config_text(&self) -> String {
        let desc = &self.desc;
        let mut s = String::new();
        let _ = write!(
            s,
            "# Generated by the QEMU rig {:?}.\n[cluster]\nname = \"qemu\"\nkey_file = \"/wk/cluster.key\"\n\n\
             [timing]\nheartbeat_interval = \"{}ms\"\ndeadtime = \"{}ms\"\n\n\
             [failover]\nfence_delay = \"{}ms\"\nstartup_timeout = \"{}ms\"\n",
            desc.name,
            desc.interval.as_millis(),
            desc.deadtime.as_millis(),
            desc.fence_delay.as_millis(),
            (desc.deadtime * 3).as_millis(),
        );
        for c in 0..desc.cables.len() {
            let _ = write!(s, "\n[[link]]\nname = \"serial{c}\"\nkind = \"serial\"\n");
        }
        if !desc.ethernet.is_empty() {
            s.push_str("\n[[link]]\nname = \"hb\"\nkind = \"udp\"\n");
        }
        for (i, h) in desc.hosts.iter().enumerate() {
            let _ = write!(
                s,
                "\n[[node]]\nid = {}\nname = \"{}\"\ncontrol_socket = \"/run/wk.sock\"\nstate_dir = \"/state/wk\"\n",
                i + 1,
                h.name
            );
            // The console is ttyS0; each cable end of this host is the next ISA UART, in the
            // order the qemu arguments add them.
            let mut tty = 1;
            for (c, ends) in desc.cables.iter().enumerate() {
                if ends.contains(&i) {
                    let _ = writeln!(s, "links.serial{c} = {{ device = \"/dev/ttyS{tty}\" }}");
                    tty += 1;
                }
            }
            if desc.ethernet.contains(&i) {
                let _ = writeln!(
                    s,
                    "links.hb = {{ address = \"{}:{HB_PORT}\" }}",
                    hb_address(i)
                );
            }
            let _ = writeln!(
                s,
                "watchdog = {{ device = \"/dev/watchdog0\", timeout = \"{}s\", feed_interval = \"{}ms\" }}",
                self.watchdog_timeout.as_secs(),
                FEED_INTERVAL.as_millis()
            );
            if h.witness {
                s.push_str("witness = true\n");
            } else {
                let mut levels: Vec<String> = h
                    .fence
                    .iter()
                    .enumerate()
                    .map(|(l, _)| format!("[\"bmc{l}-{}\"]", h.name))
                    .collect();
                if self.pdu.is_some() {
                    levels.push("[\"pdu\"]".into());
                }
                let _ = writeln!(s, "fencing = [{}]", levels.join(", "));
            }
        }
        for (i, h) in desc.hosts.iter().enumerate() {
            let Some(bmc) = &self.hosts[i].bmc else {
                continue;
            };
            for (l, _) in h.fence.iter().enumerate() {
                let _ = write!(
                    s,
                    "\n[[fence_device]]\nname = \"bmc{l}-{n}\"\ntype = \"ipmi\"\ntarget = \"{n}\"\n\
                     address = \"{SLIRP_HOST}:{port}\"\nusername = \"{DEFAULT_USER}\"\npassword = \"{DEFAULT_PASSWORD}\"\n\
                     cipher_suite = 3\ntimeout = \"5s\"\npoll_interval = \"100ms\"\n",
                    n = h.name,
                    port = bmc.address().port()
                );
            }
        }
        if let Some(pdu) = &self.pdu {
            let outlets: Vec<String> = desc
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| !h.witness)
                .map(|(i, h)| format!("{} = [{{ coil = {i} }}]", h.name))
                .collect();
            let _ = write!(
                s,
                "\n[[fence_device]]\nname = \"pdu\"\ntype = \"modbus\"\naddress = \"{SLIRP_HOST}:{}\"\n\
                 unit = 1\noutlets = {{ {} }}\n",
                pdu.address().port(),
                outlets.join(", ")
            );
        }
        for r in &desc.resources {
            let _ = write!(s, "\n[[resource]]\nname = \"{}\"\n", r.name);
            match &r.kind {
                // `build` refuses OCF resources; a Catalog is refused too.
                ResourceKind::Marker | ResourceKind::Pgsql | ResourceKind::Ocf(_) => {
                    let _ = write!(
                        s,
                        "type = \"script\"\n\
                         start = [\"/wk/marker.sh\", \"start\", \"{n}\", \"{{node}}\"]\n\
                         stop = [\"/wk/marker.sh\", \"stop\", \"{n}\", \"{{node}}\"]\n\
                         status = [\"/wk/marker.sh\", \"status\", \"{n}\", \"{{node}}\"]\n\
                         start_timeout = \"5s\"\nstop_timeout = \"5s\"\n",
                        n = r.name
                    );
                }
                ResourceKind::Vip { address } => {
                    let _ = write!(
                        s,
                        "type = \"vip\"\naddress = \"{address}\"\ninterface = \"lan0\"\n"
                    );
                }
            }
            s.push_str("monitor_interval = \"2s\"\n");
        }
        s
    }
}

impl Drop for QemuRig {
    fn drop(&mut self) {
        // Guests first (by PID, in Guest's own drop), then the relays and BMCs.
        for h in &mut self.hosts {
            h.guest = None;
            h.past.clear();
        }
        self.cables.clear();
    }
}

/// The musl build of the agent for the guests: `WK_GUEST_AGENT` if set, else built now with
/// cargo for x86_64-unknown-linux-musl (release, so it is small) into the running program's own
/// target directory (`$CARGO_TARGET_DIR`, or the nearest ancestor holding cargo's
/// `CACHEDIR.TAG`), so that tests and the `hwtests` binary share one build.
pub fn guest_agent() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("WK_GUEST_AGENT") {
        return Ok(PathBuf::from(bin));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| io::Error::other("no workspace root"))?
        .to_owned();
    let exe = std::env::current_exe()?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => exe
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
            .map_or_else(|| workspace.join("target"), Path::to_path_buf),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "-p", "agent", "--bin", "watchkeeper"])
        .args(["--target", MUSL])
        .arg("--target-dir")
        .arg(&target)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "building the agent for {MUSL} failed"
        )));
    }
    let bin = target.join(MUSL).join("release/watchkeeper");
    if !bin.is_file() {
        return Err(io::Error::other(format!(
            "{} missing after the build",
            bin.display()
        )));
    }
    Ok(bin)
}

fn apply(held: &mut [Vec<String>], o: &Observed) {
    let h = &mut held[o.host];
    match &o.what {
        Seen::Start(n) => {
            if !h.contains(n) {
                h.push(n.clone());
            }
        }
        Seen::Stop(n) => h.retain(|x| x != n),
        Seen::Reset | Seen::Off => h.clear(),
    }
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

/// Host `i`'s address on the heartbeat segment.
fn hb_address(i: usize) -> String {
    format!("10.77.0.{}", i + 1)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// A 16 MiB ext4 image for a guest's state directory.
fn make_disk(path: &Path) -> io::Result<()> {
    let file = fs::File::create(path)?;
    file.set_len(16 << 20)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4 {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// What the BMC runs on power-off: QMP `quit` to the host's current qemu, then waits (bounded)
/// until the process has ended (gone or a zombie), SIGKILL as a last resort. The BMC reports
/// off only after this returns.
fn power_off_script(host_dir: &Path) -> String {
    let d = host_dir.display();
    format!(
        r#"#!/bin/sh
# Generated by hwtests::qemu::rig: switch the guest off through QMP.
pid=$(cat "{d}/qemu.pid" 2>/dev/null) || exit 0
ctl=$(cat "{d}/ctl.path" 2>/dev/null)
gone() {{ s=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$pid/status 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }}
gone && exit 0
printf '{{"execute":"qmp_capabilities"}}\n{{"execute":"quit"}}\n' | socat -t 2 - "UNIX-CONNECT:$ctl" >/dev/null 2>&1
i=0
while ! gone && [ $i -lt 300 ]; do sleep 0.01; i=$((i + 1)); done
gone || kill -9 "$pid"
echo "$(date +%s.%N) off pid=$pid after $i polls" >> "{d}/power.log"
"#
    )
}

/// The guest's scenario script: network, the agent, then a command loop on the console.
const GUEST_SCRIPT: &str = r#"#!/bin/sh
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
node=$(arg wk.node); addr=$(arg wk.addr)
stty -echo 2>/dev/null
# Name the NICs by MAC: hb0 the heartbeat segment, mg0 the management network.
for d in /sys/class/net/eth*; do
  [ -e "$d" ] || continue
  case "$(cat $d/address)" in
    52:54:00:77:*) ip link set "${d##*/}" name hb0 ;;
    52:54:00:02:*) ip link set "${d##*/}" name mg0 ;;
    52:54:00:79:*) ip link set "${d##*/}" name lan0 ;;
  esac
done
[ -e /sys/class/net/lan0 ] && ip link set lan0 up && ip addr add "$(arg wk.lan)/24" dev lan0
ip link set hb0 up && ip addr add "$addr/24" dev hb0
ip link set mg0 up && ip addr add 10.0.2.15/24 dev mg0
# An e1000 reports carrier a moment after it is set up; start the agent on a host whose links
# are up, as a network-online target would.
for n in hb0 lan0; do
  [ -e /sys/class/net/$n ] || continue
  i=0; while [ "$(cat /sys/class/net/$n/carrier 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
done
mkdir -p /run/wk /state/wk
i=0; while [ ! -e /dev/watchdog0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
n=$(cat /state/boot 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /state/boot; sync
echo "WK-GUEST node=$node boot=$n bootstatus=$(cat /sys/class/watchdog/watchdog0/bootstatus 2>/dev/null)"
pid=
start_agent() {
  /wk/watchkeeper run --log-json --node "$node" --config /wk/wk.toml &
  pid=$!
  echo "WK-GUEST agent-started pid=$pid"
}
start_agent
while read -r cmd; do
  case "$cmd" in
    kill-agent) kill -9 "$pid"; echo "WK-GUEST agent-killed" ;;
    stop-agent) kill -TERM "$pid"; wait "$pid"; echo "WK-GUEST agent-stopped rc=$?" ;;
    start-agent) start_agent ;;
    "") ;;
    *) echo "WK-GUEST unknown command $cmd" ;;
  esac
done
"#;

/// A marker resource: a state file in `/run` (gone after a reset), and a console line on every
/// real start and stop, which the host reads with its own timestamp.
const MARKER_SCRIPT: &str = r#"#!/bin/sh
action=$1; name=$2; node=$3
state=/run/wk/$name.state
case "$action" in
  start) if [ ! -e "$state" ]; then : > "$state"; echo "WK-RES $node start $name" > /dev/console; fi ;;
  stop) if [ -e "$state" ]; then rm -f "$state"; echo "WK-RES $node stop $name" > /dev/console; fi ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

/// The cluster key (test material, the same in every guest).
const CLUSTER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
/// The host's loopback as user-mode networking shows it to the guest.
const SLIRP_HOST: &str = "10.0.2.2";
/// The agents' UDP heartbeat port.
const HB_PORT: u16 = 5405;
/// Heartbeat NIC MACs: this prefix and the host's number.
const HB_MAC_PREFIX: &str = "52:54:00:77:00:";
/// Management NIC MACs.
const MG_MAC_PREFIX: &str = "52:54:00:02:00:";
/// Client LAN NIC MACs (only when the group has a virtual IP); the ARP observer reads the
/// host's number from the last octet.
const LAN_MAC_PREFIX: &str = "52:54:00:79:00:";
/// The agent feeds the watchdog this often: short, so that SIGKILL-to-reset is close to the
/// timeout itself.
pub const FEED_INTERVAL: Duration = Duration::from_millis(100);
/// How often waits re-read consoles and events.
const POLL: Duration = Duration::from_millis(20);
/// The guests' Rust target.
const MUSL: &str = "x86_64-unknown-linux-musl";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rig_fenced_by_other_kinds_than_ipmi_is_refused_by_name() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rigs/mixed.toml");
        let desc = RigDesc::load(&path).expect("rig description");
        let e = QemuRig::build(desc, Path::new("/nonexistent/watchkeeper"))
            .expect_err("a QEMU rig fenced by Redfish")
            .to_string();
        assert!(
            e.starts_with("rig \"mixed\": host alpha is fenced by \"redfish\""),
            "{e}"
        );
    }
}
