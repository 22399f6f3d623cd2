//! The runtime: tokio glue that owns the links and the control socket, keeps time, feeds the
//! liveness tracker and reports what it decides.
//!
//! [`Resources::open`] does everything that can fail because of the host (persisting the
//! incarnation, opening serial ports, binding sockets, taking the control socket), so that a
//! busy cable or a port in use stops the agent before it announces anything. [`run`] then
//! drives one `select!` over link events, the heartbeat ticker, the next liveness deadline,
//! control requests and shutdown. Link tasks send through bounded channels and never block on
//! the main loop.

mod incarnation;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use drivers::link::serial::{SerialError, SerialParams, SerialPort};
use drivers::link::udp::{UdpError, UdpParams, UdpPort};
use drivers::link::{LinkCommon, LinkCounters, LinkEvent, LinkSender};
use proto::{Flags, Heartbeat, NodeId, Role, View};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Endpoint, LinkKind};
use crate::control::{ControlListener, ControlRequest};
use crate::liveness::{Liveness, Transition};

pub use incarnation::{next_incarnation, IncarnationError};
pub use status::{LinkStatus, PeerLinkStatus, PeerStatus, Status};

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
}

/// Everything the runtime needs, opened and checked.
pub struct Resources {
    config: Arc<Config>,
    local: NodeId,
    incarnation: u32,
    links: Vec<OpenLink>,
    control: ControlListener,
    watchdog: crate::watchdog::NodeWatchdog,
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
        // Last, so that nothing can fail after the watchdog is armed.
        let watchdog = crate::watchdog::NodeWatchdog::open(me)?;
        Ok(Self {
            config,
            local,
            incarnation,
            links,
            control,
            watchdog,
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
    } = resources;
    let started = Instant::now();
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
        let stop = shutdown.clone();
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
    tasks.spawn(control.serve(control_tx, shutdown.clone()));

    let me = config
        .node(local)
        .map(|n| n.name.clone())
        .unwrap_or_default();
    tracing::info!(
        event = "started",
        node = %me,
        incarnation,
        links = link_info.len(),
        "watchkeeper running"
    );
    watchdog.ready(&format!("node {me} running, incarnation {incarnation}"));
    // Only a shutdown request is a planned stop; the loop ending for any other reason is not.
    let mut planned_stop = false;
    // One sequence for all links: receivers order frames that took different paths by it.
    let mut sequence: u64 = 0;
    let mut ticker = tokio::time::interval(config.timing.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        watchdog.tick();
        let deadline = liveness.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            ev = events.recv() => match ev {
                Some(LinkEvent::Frame { heartbeat, at, .. }) => liveness.frame(at, &heartbeat),
                Some(LinkEvent::TransportUp { link }) => {
                    if let Some(i) = link_info.iter_mut().find(|i| i.id == link) {
                        i.transport_up = true;
                    }
                }
                Some(LinkEvent::TransportDown { link, reason }) => {
                    if let Some(i) = link_info.iter_mut().find(|i| i.id == link) {
                        i.transport_up = false;
                        tracing::warn!(event = "transport_down", link = %i.name, %reason, "link transport down");
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                sequence += 1;
                let mut hb = announce(&config, local, incarnation, &liveness);
                hb.sequence = sequence;
                for s in &senders {
                    s.send(hb);
                }
            }
            () = sleep_until(deadline) => liveness.tick(Instant::now()),
            Some(req) = control_rx.recv() => {
                let st = status::build(&config, local, incarnation, started, &liveness, &link_info);
                req.reply(st);
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    planned_stop = true;
                    break;
                }
            }
        }
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
            log_transition(&config, &link_info, t);
        }
        while unfences.try_join_next().is_some() {}
    }
    tracing::info!(event = "stopping", node = %me, "watchkeeper stopping");
    // Link tasks end on shutdown too, so the loop may have left through their closed channel.
    planned_stop |= *shutdown.borrow();
    // Until the engine holds resources, a planned stop holds nothing and may disarm.
    watchdog.stop(
        planned_stop,
        "the runtime loop ended without a shutdown request",
    );
    drop(senders);
    // An unfence under way is finished (each is bounded by its device's timeout) so that its
    // outcome reaches the ledger.
    let finish_unfences = async { while unfences.join_next().await.is_some() {} };
    if tokio::time::timeout(UNFENCE_GRACE, finish_unfences)
        .await
        .is_err()
    {
        tracing::error!("an unfence did not finish in time: check the switch ports with `watchkeeper unfence --list`");
    }
    let stop_all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_all)
        .await
        .is_err()
    {
        tracing::warn!("link tasks did not stop in time");
    }
}

/// The heartbeat this node announces. Until the decision engine runs the show, a node
/// announces itself as a standby holding nothing, with the peers it sees alive.
fn announce(config: &Config, local: NodeId, incarnation: u32, liveness: &Liveness) -> Heartbeat {
    let mut view = View::default();
    view.insert(local);
    for p in liveness.peers().iter().filter(|p| p.alive) {
        view.insert(p.id);
    }
    Heartbeat {
        cluster_id: config.cluster.id,
        sender: local,
        link: 0,
        role: Role::Standby,
        flags: Flags::default(),
        holder: None,
        prior: None,
        incarnation,
        sequence: 0,
        epoch: 0,
        view,
        seen_epoch: 0,
    }
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
/// How long a running unfence gets to finish at shutdown: the default device timeout.
const UNFENCE_GRACE: Duration = crate::config::DEFAULT_FENCE_TIMEOUT;
