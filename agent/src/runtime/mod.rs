//! The runtime: tokio glue that owns the links and the control socket, keeps time, feeds the
//! liveness tracker and reports what it decides.
//!
//! [`Resources::open`] does everything that can fail because of the host (persisting the
//! incarnation, opening serial ports, binding sockets, taking the control socket), so that a
//! busy cable or a port in use stops the agent before it announces anything. [`run`] then
//! drives one `select!` over link events, the heartbeat ticker, the next liveness deadline,
//! control requests and shutdown. Link tasks send through bounded channels and never block on
//! the main loop.

pub(crate) mod driver;
pub mod durable;
mod incarnation;
mod replica;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use drivers::link::serial::{SerialError, SerialParams, SerialPort};
use drivers::link::udp::{UdpError, UdpParams, UdpPort};
use drivers::link::{LinkCommon, LinkCounters, LinkEvent, LinkSender};
use proto::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Endpoint, LinkKind};
use crate::control::{ControlListener, ControlRequest, Request};
use crate::engine::{Action, Command, Engine, Input};
use crate::events::Reporter;
use crate::liveness::{Liveness, Transition};

mod journal;
use journal::JournalState;

pub use incarnation::{next_incarnation, IncarnationError};
pub use status::{EngineView, FenceDeviceStatus, LinkStatus, PeerLinkStatus, PeerStatus, Status};

/// Errors preparing the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The incarnation could not be persisted.
    #[error(transparent)]
    Incarnation(#[from] IncarnationError),
    /// A serial link could not be opened.
    #[error("link {link}: {source}")]
    Serial {
        /// Link name.
        link: String,
        /// Cause.
        #[source]
        source: SerialError,
    },
    /// A UDP link could not be set up.
    #[error("link {link}: {source}")]
    Udp {
        /// Link name.
        link: String,
        /// Cause.
        #[source]
        source: UdpError,
    },
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The hardware watchdog could not be armed.
    #[error(transparent)]
    Watchdog(#[from] crate::watchdog::WatchdogSetupError),
    /// The `[http]` listener could not be bound.
    #[error(transparent)]
    Http(#[from] crate::metrics::server::HttpError),
}

/// Everything the runtime needs, opened and checked.
pub struct Resources {
    config: Arc<Config>,
    local: NodeId,
    incarnation: u32,
    links: Vec<OpenLink>,
    control: ControlListener,
    watchdog: crate::watchdog::NodeWatchdog,
    /// The `[http]` listener and whether it serves the status page.
    http: Option<(tokio::net::TcpListener, bool)>,
}

enum Transport {
    Serial(SerialParams, SerialPort),
    Udp(UdpPort, String),
}

struct OpenLink {
    id: u8,
    name: String,
    kind: &'static str,
    transport: Transport,
    peers: Vec<NodeId>,
}

impl Resources {
    /// Persists a new incarnation, opens every link of `local` and the control socket.
    /// Must be called inside a tokio runtime.
    pub fn open(config: Config, local: NodeId) -> Result<Self, RuntimeError> {
        let config = Arc::new(config);
        let me = config.node(local).ok_or(IncarnationError::UnknownNode)?;
        let incarnation = next_incarnation(&me.state_dir)?;
        let mut links = Vec::new();
        for nl in &me.links {
            let link = config.link(nl.link);
            let peers: Vec<NodeId> = config
                .nodes
                .iter()
                .filter(|n| n.id != local && n.links.iter().any(|l| l.link == nl.link))
                .map(|n| n.id)
                .collect();
            let transport = match (&link.kind, &nl.endpoint) {
                (LinkKind::Serial { baud }, Endpoint::Serial { device }) => {
                    let params = SerialParams {
                        device: device.clone(),
                        baud: *baud,
                    };
                    let port =
                        SerialPort::open(&params).map_err(|source| RuntimeError::Serial {
                            link: link.name.clone(),
                            source,
                        })?;
                    Transport::Serial(params, port)
                }
                (LinkKind::Udp { multicast }, Endpoint::Udp { address, interface }) => {
                    let dests = config
                        .nodes
                        .iter()
                        .filter(|n| n.id != local)
                        .flat_map(|n| n.links.iter())
                        .filter(|l| l.link == nl.link)
                        .filter_map(|l| match &l.endpoint {
                            Endpoint::Udp { address, .. } => Some(*address),
                            Endpoint::Serial { .. } => None,
                        })
                        .collect();
                    let params = UdpParams {
                        bind: *address,
                        interface: interface.clone(),
                        peers: dests,
                        multicast: *multicast,
                    };
                    let port = UdpPort::open(&params).map_err(|source| RuntimeError::Udp {
                        link: link.name.clone(),
                        source,
                    })?;
                    Transport::Udp(port, address.to_string())
                }
                // The config conversion guarantees endpoints match their link's kind.
                _ => continue,
            };
            links.push(OpenLink {
                id: nl.link.0,
                name: link.name.clone(),
                kind: match link.kind {
                    LinkKind::Serial { .. } => "serial",
                    LinkKind::Udp { .. } => "udp",
                },
                transport,
                peers,
            });
        }
        let control = ControlListener::bind(&me.control_socket)?;
        let http = match &config.http {
            Some(h) => match h.listen_for(&me.name) {
                Some(address) => Some((crate::metrics::server::bind(address)?, h.status_page)),
                None => None,
            },
            None => None,
        };
        // Last, so that nothing can fail after the watchdog is armed.
        let watchdog = crate::watchdog::NodeWatchdog::open(me)?;
        Ok(Self {
            config,
            local,
            incarnation,
            links,
            control,
            watchdog,
            http,
        })
    }

    /// The incarnation persisted for this run.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(resources: Resources, mut shutdown: watch::Receiver<bool>) {
    let Resources {
        config,
        local,
        incarnation,
        links,
        control,
        mut watchdog,
        http,
    } = resources;
    let started = Instant::now();
    // Links and the control socket outlive a shutdown request until the group is handed over.
    let (links_stop, links_stop_rx) = watch::channel(false);
    let (events_tx, mut events) = mpsc::channel::<LinkEvent>(EVENT_QUEUE);
    let mut tasks = JoinSet::new();
    let mut senders = Vec::new();
    let mut link_info = Vec::new();
    for l in links {
        let counters = Arc::new(LinkCounters::default());
        let common = LinkCommon {
            link: l.id,
            name: l.name.clone(),
            local,
            peers: l.peers.clone(),
            cluster_id: config.cluster.id,
            key: Arc::from(config.cluster.key.expose()),
            events: events_tx.clone(),
            counters: counters.clone(),
        };
        let (sender, outgoing) = LinkSender::new();
        senders.push(sender);
        let stop = links_stop_rx.clone();
        let detail = match l.transport {
            Transport::Serial(params, port) => {
                let d = params.device.display().to_string();
                tasks.spawn(drivers::link::serial::run(
                    common,
                    params,
                    Some(port),
                    outgoing,
                    stop,
                ));
                d
            }
            Transport::Udp(port, addr) => {
                tasks.spawn(drivers::link::udp::run(common, port, outgoing, stop));
                addr
            }
        };
        link_info.push(status::LinkInfo {
            id: l.id,
            name: l.name,
            kind: l.kind,
            detail,
            transport_up: false,
            counters,
        });
    }
    drop(events_tx);

    let peers = config.nodes.iter().filter(|n| n.id != local).map(|n| {
        let shared = n
            .links
            .iter()
            .map(|l| l.link.0)
            .filter(|id| link_info.iter().any(|i| i.id == *id))
            .collect::<Vec<_>>();
        (n.id, shared)
    });
    let mut liveness = Liveness::new(config.timing.deadtime, peers);
    // Unfencing runs beside the loop (a switch may take seconds) and is awaited on shutdown.
    let mut unfences = JoinSet::new();
    let ledger_path = config
        .node(local)
        .map(|n| crate::fence::ledger::path(&n.state_dir));
    let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(CONTROL_QUEUE);
    let metrics = crate::metrics::Metrics::default();
    let recent = Arc::new(crate::recent::RecentEvents::default());
    if let Some((listener, status_page)) = http {
        let ctx = crate::metrics::server::Context {
            requests: control_tx.clone(),
            metrics: metrics.clone(),
            feed_gaps: watchdog.feeder().map(crate::watchdog::Feeder::gaps),
            recent: recent.clone(),
            status_page,
        };
        if let Ok(a) = listener.local_addr() {
            tracing::info!(event = "http_listening", address = %a, status_page, "serving /metrics on http://{a}");
        }
        tasks.spawn(crate::metrics::server::serve(
            listener,
            ctx,
            links_stop_rx.clone(),
        ));
    }
    tasks.spawn(control.serve(control_tx, links_stop_rx.clone()));

    let me = config
        .node(local)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let state_dir = config
        .node(local)
        .map(|n| n.state_dir.clone())
        .unwrap_or_default();

    // The decision journal and alert recipients: fed without waiting, see `crate::events`.
    let (reporter, event_workers) = match config.node(local) {
        Some(n) => Reporter::start(&config, n),
        None => (Reporter::disabled(&me), crate::events::Workers::none()),
    };
    let mut journal = JournalState::default();
    // The engine: its record from disk, this boot's incarnation, randomness for elections.
    let (results_tx, mut results) = mpsc::channel::<Input>(RESULT_QUEUE);
    let durable = match durable::load(&state_dir) {
        Ok(d) => d,
        Err(e) => {
            // Checked again here because the record may have changed since the agent started.
            tracing::error!(event = "ownership_unreadable", error = %e, "{e}");
            watchdog.stop(true, "ownership record unreadable");
            let _ = links_stop.send(true);
            return;
        }
    };
    let seed = u64::from(incarnation)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
            });
    let mut engine = Engine::new(
        config.engine_config(local, config.resource_names()),
        durable,
        incarnation,
        seed,
        Instant::now(),
    );
    // Reading OCF agents' meta-data may take a few seconds; the watchdog is armed already, so
    // the loop proves progress meanwhile (nothing is held yet).
    let slots = {
        let building = crate::group::slots(&config, &me);
        tokio::pin!(building);
        loop {
            tokio::select! {
                slots = &mut building => break slots,
                () = tokio::time::sleep(STARTUP_PROGRESS) => watchdog.progress(),
            }
        }
    };
    let mut driver = driver::Driver {
        config: config.clone(),
        local,
        state_dir: state_dir.clone(),
        results: results_tx,
        devices: fence_devices(&config),
        slots,
        tasks: JoinSet::new(),
        resource_actions: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        health: std::collections::BTreeMap::new(),
        persist_tx: None,
        metrics: metrics.clone(),
        recent,
        reporter: reporter.clone(),
    };
    driver.check_devices(Instant::now());
    reporter.set_epoch(durable.epoch);
    if let Some(why) = watchdog.previous_reset() {
        reporter.alert(crate::events::AlertBody {
            kind: "watchdog_reboot",
            outcome: Some("reset".to_owned()),
            message: format!("{me} was reset by its watchdog: {why}"),
            ..crate::events::AlertBody::default()
        });
        reporter.journal(
            durable.epoch,
            crate::events::Part::new(
                "watchdog_reboot",
                format!("start after a watchdog reset: {why}"),
            ),
            Vec::new(),
            Vec::new(),
        );
    }
    tracing::info!(
        event = "started",
        node = %me,
        incarnation,
        epoch = durable.epoch,
        links = link_info.len(),
        resources = driver.slots.len(),
        fence_devices = driver.devices.len(),
        "watchkeeper running"
    );
    // Director configuration replication (`[replicate]`): serve while holding, pull otherwise.
    let mut replication = replica::Replication::new(&config, local);
    watchdog.ready(&format!("node {me} running, incarnation {incarnation}"));
    // Only a shutdown request is a planned stop; the loop ending for any other reason is not.
    let mut planned_stop = false;
    // Set once a shutdown was asked for: the group is being handed over or stopped first.
    let mut leaving: Option<tokio::time::Instant> = None;
    // One sequence for all links: receivers order frames that took different paths by it.
    let mut sequence: u64 = 0;
    let mut actions = Vec::new();
    loop {
        let now = Instant::now();
        watchdog.tick();
        while let Some(a) = engine.poll_action() {
            actions.push(a);
        }
        journal.record(&config, &reporter, &engine, &liveness, &actions);
        for a in actions.drain(..) {
            match a {
                Action::SendHeartbeat(mut hb) => {
                    // The engine knows nodes, not clusters or sequences: the runtime stamps them.
                    sequence += 1;
                    hb.sequence = sequence;
                    hb.cluster_id = config.cluster.id;
                    for s in &senders {
                        s.send(hb);
                    }
                }
                Action::FeedWatchdog => watchdog.progress(),
                Action::StarveWatchdog { reason } => {
                    tracing::error!(event = "self_fence", %reason, "self-fencing: {reason}");
                    if let Some(f) = watchdog.feeder() {
                        f.starve(reason.clone());
                    }
                }
                other => driver.execute(other),
            }
        }
        driver.reap();
        if let Some(r) = &mut replication {
            r.update(engine.holds_resources(), &liveness);
        }
        if let Some(since) = leaving {
            let idle = driver
                .resource_actions
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0;
            if (!engine.holds_resources() && idle)
                || tokio::time::Instant::now() >= since + LEAVE_GRACE
            {
                planned_stop = !engine.holds_resources();
                break;
            }
        }
        let deadline = [
            engine.next_deadline(),
            liveness.next_deadline(),
            driver.next_monitor(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(tokio::time::Instant::from_std)
        .map(|d| d.min(tokio::time::Instant::now() + MAX_IDLE));
        tokio::select! {
            ev = events.recv() => match ev {
                Some(LinkEvent::Frame { heartbeat, at, .. }) => {
                    liveness.frame(at, &heartbeat);
                    journal.handle(&mut engine, Input::Heartbeat(heartbeat));
                }
                Some(LinkEvent::TransportUp { link }) => {
                    if let Some(i) = link_info.iter_mut().find(|i| i.id == link) {
                        i.transport_up = true;
                    }
                    journal.handle(&mut engine, Input::Link { link, up: true });
                }
                Some(LinkEvent::TransportDown { link, reason }) => {
                    if let Some(i) = link_info.iter_mut().find(|i| i.id == link) {
                        i.transport_up = false;
                        tracing::warn!(event = "transport_down", link = %i.name, %reason, "link transport down");
                    }
                    journal.handle(&mut engine, Input::Link { link, up: false });
                }
                None => break,
            },
            Some(input) = results.recv() => journal.handle(&mut engine, input),
            () = sleep_until(deadline) => {
                let now = Instant::now();
                liveness.tick(now);
                driver.monitors(now);
                driver.check_devices(now);
                journal.cause = Some(Input::Tick);
                engine.handle(now, Input::Tick);
                // A standby keeps its copies (the Catalog) following the live holder.
                if let (Some((holder, epoch)), false) = (engine.known_holder(), engine.holds_resources()) {
                    let holder_alive = liveness.peers().iter().any(|p| p.id == holder && p.alive);
                    if holder != local && holder_alive && leaving.is_none() {
                        driver.follow(holder, epoch, now);
                    }
                }
            }
            Some(req) = control_rx.recv() => match req.request.clone() {
                Request::Status => {
                    let mut st = status::build(&config, local, incarnation, started, &liveness, &link_info);
                    st.fence_devices = driver.device_report();
                    st.engine = Some(status::EngineView {
                        role: format!("{:?}", engine.role()),
                        epoch: engine.durable().epoch.max(engine.known_holder().map_or(0, |h| h.1)),
                        holder: engine
                            .known_holder()
                            .and_then(|(n, _)| config.node(n).map(|n| n.name.clone())),
                        holds: engine.holds_resources(),
                        quorate: engine.quorate(),
                    });
                    req.reply(st);
                }
                Request::Resources => req.answer(driver.resources_report(&engine)),
                Request::Switchover { node } => {
                    let answer = switchover(&config, local, &engine, &liveness, node.as_deref());
                    if let Ok(target) = &answer {
                        journal.handle(&mut engine, Input::Command(Command::Switchover(*target)));
                    }
                    req.answer(match answer {
                        Ok(target) => serde_json::json!({
                            "ok": true,
                            "message": format!(
                                "handing the group over to {}: stopping here in reverse order, then it starts there",
                                config.node(target).map_or("?", |n| n.name.as_str())
                            ),
                        }),
                        Err(e) => serde_json::json!({ "error": e }),
                    });
                }
                Request::Standby => {
                    journal.handle(&mut engine, Input::Command(Command::Standby));
                    req.answer(serde_json::json!({ "ok": true, "message": format!("{me} is in standby: it will not hold the group") }));
                }
                Request::Unstandby => {
                    journal.handle(&mut engine, Input::Command(Command::Unstandby));
                    req.answer(serde_json::json!({ "ok": true, "message": format!("{me} may hold the group again") }));
                }
                Request::Cleanup => {
                    journal.handle(&mut engine, Input::Command(Command::Clear));
                    driver.clear_failures();
                    req.answer(serde_json::json!({ "ok": true, "message": "resource failures forgotten" }));
                }
            },
            r = shutdown.changed(), if leaving.is_none() => {
                if r.is_err() || *shutdown.borrow() {
                    tracing::info!(event = "leaving", node = %me, holds = engine.holds_resources(), "shutdown asked: handing the group over or stopping it before leaving");
                    journal.handle(&mut engine, Input::Command(Command::Standby));
                    leaving = Some(tokio::time::Instant::now());
                }
            }
        }
        let _ = now;
        while let Some(t) = liveness.poll_transition() {
            if let (Transition::PeerUp { peer }, Some(ledger)) = (&t, &ledger_path) {
                // A node that is heard again has rejoined: lift the fabric fences it is under.
                if let Some(name) = config.node(*peer).map(|n| n.name.clone()) {
                    let (config, ledger) = (config.clone(), ledger.clone());
                    unfences.spawn(async move {
                        crate::fence::unfence::auto_unfence(&config, &ledger, &name).await;
                    });
                }
            }
            if let Transition::PeerDown { peer, silent_for } = &t {
                let name = config
                    .node(*peer)
                    .map_or_else(|| peer.to_string(), |n| n.name.clone());
                metrics.peer_detected_dead(&name, *silent_for);
            }
            journal.transition(&config, &reporter, &engine, &link_info, &t);
            log_transition(&config, &link_info, t);
        }
        while unfences.try_join_next().is_some() {}
    }
    tracing::info!(event = "stopping", node = %me, holds = engine.holds_resources(), "watchkeeper stopping");
    // A node still holding resources (stop failed, or the grace ran out) must not disarm: the
    // watchdog resets it so the peer can take over safely.
    planned_stop &= *shutdown.borrow() && !engine.holds_resources();
    watchdog.stop(
        planned_stop,
        if engine.holds_resources() {
            "stopping while still holding resources"
        } else {
            "the runtime loop ended without a shutdown request"
        },
    );
    let _ = links_stop.send(true);
    drop(senders);
    if let Some(r) = replication {
        r.shutdown().await;
    }
    // Unfences and resource actions under way are finished (each is bounded by its timeout)
    // so that their outcome reaches the ledger and the log. The ownership-record writer ends
    // once its queue is closed, after writing what is queued.
    driver.persist_tx = None;
    let finish = async {
        while unfences.join_next().await.is_some() {}
        while driver.tasks.join_next().await.is_some() {}
    };
    if tokio::time::timeout(UNFENCE_GRACE, finish).await.is_err() {
        tracing::error!("an unfence or resource action did not finish in time: check with `watchkeeper unfence --list` and `watchkeeper resources`");
    }
    drop(driver);
    drop(reporter);
    event_workers.finish(EVENTS_GRACE).await;
    let stop_all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_all)
        .await
        .is_err()
    {
        tracing::warn!("link tasks did not stop in time");
    }
}

/// Checks a switchover request: this node must hold the group and the target must be a peer
/// that is alive and may hold it.
fn switchover(
    config: &Config,
    local: NodeId,
    engine: &Engine,
    liveness: &Liveness,
    node: Option<&str>,
) -> Result<NodeId, String> {
    if !engine.holds_resources() {
        return Err("this node does not hold the group: run switchover on the holder".to_owned());
    }
    let witnesses = &config.failover.witnesses;
    let candidates: Vec<&crate::config::Node> = config
        .nodes
        .iter()
        .filter(|n| n.id != local && !witnesses.contains(&n.name))
        .collect();
    let target = match node {
        Some(name) => candidates
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| format!("{name} is not a peer that can hold the group"))?,
        None => match candidates.as_slice() {
            [only] => only,
            _ => return Err("name the node to hand over to".to_owned()),
        },
    };
    let alive = liveness
        .peers()
        .iter()
        .any(|p| p.id == target.id && p.alive);
    if !alive {
        return Err(format!(
            "{} is not heard: a handover needs the new holder alive",
            target.name
        ));
    }
    Ok(target.id)
}

/// Every configured fence device, built once; one that cannot be built is left out and logged,
/// so fencing through it fails with that reason.
fn fence_devices(config: &Config) -> std::collections::BTreeMap<String, driver::SharedDevice> {
    let mut devices = std::collections::BTreeMap::new();
    for d in &config.fencing.devices {
        match crate::fence::build_device(d) {
            Ok(dev) => {
                devices.insert(d.name.clone(), Arc::new(tokio::sync::Mutex::new(dev)));
            }
            Err(e) => {
                tracing::error!(event = "fence_device_unbuildable", device = %d.name, error = %e, "fence device {} cannot be used: {e}", d.name);
            }
        }
    }
    devices
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn log_transition(config: &Config, links: &[status::LinkInfo], t: Transition) {
    let peer_name = |id: NodeId| {
        config
            .node(id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    let link_of = |id: u8| links.iter().find(|l| l.id == id);
    match t {
        Transition::LinkUp { peer, link } => {
            let l = link_of(link);
            tracing::info!(
                event = "link_up",
                peer = %peer_name(peer),
                link = l.map_or("?", |l| l.name.as_str()),
                kind = l.map_or("?", |l| l.kind),
                "{} link {} to {} up",
                l.map_or("?", |l| l.kind),
                l.map_or("?", |l| l.name.as_str()),
                peer_name(peer)
            );
        }
        Transition::LinkDown {
            peer,
            link,
            silent_for,
        } => {
            let l = link_of(link);
            tracing::warn!(
                event = "link_down",
                peer = %peer_name(peer),
                link = l.map_or("?", |l| l.name.as_str()),
                kind = l.map_or("?", |l| l.kind),
                silent_ms = ms(silent_for),
                "{} link {} to {} down: no valid frame for {} ms",
                l.map_or("?", |l| l.kind),
                l.map_or("?", |l| l.name.as_str()),
                peer_name(peer),
                ms(silent_for)
            );
        }
        Transition::PeerUp { peer } => {
            tracing::info!(event = "peer_up", peer = %peer_name(peer), "peer {} alive", peer_name(peer));
        }
        Transition::PeerDown { peer, silent_for } => {
            tracing::error!(
                event = "peer_down",
                peer = %peer_name(peer),
                silent_ms = ms(silent_for),
                "peer {} dead: silent on every link for {} ms",
                peer_name(peer),
                ms(silent_for)
            );
        }
        Transition::PeerRestarted {
            peer,
            previous,
            current,
        } => {
            tracing::warn!(
                event = "peer_restarted",
                peer = %peer_name(peer),
                previous,
                current,
                "peer {} restarted (incarnation {} -> {})",
                peer_name(peer),
                previous,
                current
            );
        }
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Frames waiting for the main loop. At 16 nodes × 8 links × 100 Hz a burst of a quarter
/// second fits; beyond that the loop is stalled and dropping (counted) is the right answer.
const EVENT_QUEUE: usize = 4096;
/// Control requests waiting for the main loop; status queries are rare.
const CONTROL_QUEUE: usize = 16;
/// How long link tasks get to notice shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often start-up work proves progress to the watchdog feeder.
const STARTUP_PROGRESS: Duration = Duration::from_millis(200);
/// Results of device and resource tasks waiting for the main loop.
const RESULT_QUEUE: usize = 64;
/// How long a shutdown waits for the group to be handed over or stopped before giving up (and
/// leaving the watchdog to reset the host if it still holds anything).
const LEAVE_GRACE: Duration = Duration::from_secs(120);
/// The loop wakes at least this often, so monitors and the engine's clock never wait on a
/// quiet network.
const MAX_IDLE: Duration = Duration::from_millis(250);
/// How long queued journal lines and alerts get at shutdown: one alert timeout's worth of a
/// recipient finishing what it was sending.
const EVENTS_GRACE: Duration = Duration::from_secs(5);
/// How long a running unfence gets to finish at shutdown: the default device timeout.
const UNFENCE_GRACE: Duration = crate::config::DEFAULT_FENCE_TIMEOUT;
