//! Fabric fencing: disabling a node's switch ports (IF-MIB ifAdminStatus) over SNMP, and
//! re-enabling them (unfencing) once the node is healthy again.
//!
//! A node whose Ethernet (iSCSI, NFS) or Fibre Channel ports are shut cannot reach shared
//! storage any more, even while it keeps running: that is enough for another node to take
//! over its data, and it is the one fence that works when the node's power cannot be
//! switched. This driver keeps the [`FenceDevice`] contract as follows:
//!
//! - **Every path.** A node is configured with all its ports (multipath): `off` sets
//!   ifAdminStatus down(2) on each and succeeds only once every one reads down, since one
//!   forgotten path is enough to corrupt the storage.
//! - **Confirmation.** After the SETs, ifAdminStatus (and, with `check_oper_status`,
//!   ifOperStatus where the switch reports it) is read back until all ports show the requested
//!   state, or the deadline passes ([`FenceErrorKind::Unconfirmed`], naming the ports still
//!   up). `on` (unfencing) confirms ifAdminStatus up only: the link partner may still be down.
//! - **No reboot.** A fabric fence isolates, it does not power-cycle: `reboot` is
//!   [`FenceErrorKind::Refused`] without touching the switch.
//! - **Ports by name.** A [`PortRef::Name`] is looked up once in ifName, then in ifAlias, and
//!   the ifIndex cached; a name that matches nothing is [`FenceErrorKind::TargetUnknown`] with
//!   some of the switch's names, and a name that matches two ports is refused, never guessed.
//!   Every ifIndex is checked to exist in the ifTable before anything is written.
//! - **Status.** A node is off only when all its ports are admin down; one port up means it
//!   can still reach the fabric.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::{Oid, SnmpParams, SnmpSession, SnmpValue};
use crate::fence::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};

/// A switch port by ifIndex, or by ifName / ifAlias (looked up once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// ifIndex.
    Index(u32),
    /// ifName or, failing that, ifAlias.
    Name(String),
}

/// One switch and the ports of every node it isolates.
#[derive(Debug, Clone)]
pub struct IfMibParams {
    /// Agent, version, credentials.
    pub snmp: SnmpParams,
    /// Per node name, every port that connects it (all multipath ports): all must read
    /// down before `off` succeeds.
    pub ports: BTreeMap<String, Vec<PortRef>>,
    /// Pause between reads while waiting for ports to show the requested state.
    pub poll_interval: Duration,
    /// Also require ifOperStatus down (where the switch reports it) before `off` succeeds.
    pub check_oper_status: bool,
}

/// Counters of one device, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfMibStats {
    /// Operations started (off, on, reboot, status, monitor).
    pub operations: u64,
    /// Operations that failed.
    pub errors: u64,
    /// ifAdminStatus SETs sent.
    pub sets: u64,
    /// Port-state reads (one GET each).
    pub reads: u64,
    /// Walks of ifName or ifAlias to resolve port names.
    pub walks: u64,
}

/// A switch that fences nodes by shutting their ports; see the module docs.
#[derive(Debug)]
pub struct IfMibDevice {
    name: String,
    params: IfMibParams,
    /// ifIndex of each configured port name, once resolved.
    resolved: BTreeMap<String, u32>,
    /// Whether the switch answers ifOperStatus for our ports; `None` until asked.
    oper_reported: Option<bool>,
    stats: IfMibStats,
}

impl IfMibDevice {
    /// A device named `name` that isolates the nodes in `params`.
    ///
    /// Fails with [`FenceErrorKind::Refused`] when no node is configured, a node has no ports
    /// or more than [`MAX_PORTS_PER_NODE`], a port name is empty, or an ifIndex is 0 or above
    /// 2147483647 (the IF-MIB range).
    pub fn new(name: impl Into<String>, params: IfMibParams) -> Result<Self, FenceError> {
        let name = name.into();
        validate(&params).map_err(|message| {
            tracing::warn!(device = %name, error = %message, "ifmib configuration refused");
            FenceError::new(FenceErrorKind::Refused, &name, message)
        })?;
        Ok(Self {
            name,
            params,
            resolved: BTreeMap::new(),
            oper_reported: None,
            stats: IfMibStats::default(),
        })
    }

    /// This device's counters.
    pub fn stats(&self) -> IfMibStats {
        self.stats
    }

    /// The nodes this device isolates.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.params.ports.keys().map(String::as_str)
    }

    async fn operation<T>(
        &mut self,
        target: &str,
        deadline: Instant,
        op: Op,
    ) -> Result<T, FenceError>
    where
        T: FromOutcome,
    {
        let started = Instant::now();
        self.stats.operations += 1;
        let result = self.run(target, op, started, deadline).await;
        match &result {
            Ok(outcome) => tracing::info!(
                device = %self.name, target, op = op.label(), polls = outcome.polls,
                elapsed_ms = started.elapsed().as_millis(), "ifmib operation confirmed"
            ),
            Err(e) => {
                self.stats.errors += 1;
                tracing::warn!(
                    device = %self.name, target, op = op.label(), kind = ?e.kind,
                    error = %e.message, "ifmib operation failed"
                );
            }
        }
        result.map(T::from_outcome)
    }

    async fn run(
        &mut self,
        target: &str,
        op: Op,
        started: Instant,
        deadline: Instant,
    ) -> Result<Outcome, FenceError> {
        let refs = match (op, self.params.ports.get(target)) {
            (Op::Monitor, _) => Vec::new(),
            (_, Some(refs)) => refs.clone(),
            (_, None) => {
                return Err(self.error(
                    FenceErrorKind::TargetUnknown,
                    format!(
                        "isolates nodes {}, not {target}",
                        self.params
                            .ports
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        if op == Op::Reboot {
            return Err(self.error(FenceErrorKind::Refused, REBOOT_REFUSED.to_owned()));
        }
        let mut session = SnmpSession::connect(&self.name, &self.params.snmp, deadline).await?;
        match op {
            Op::Set(want) => {
                let ports = self.resolve(&mut session, &refs, deadline).await?;
                self.switch(&mut session, &ports, want, started, deadline)
                    .await
            }
            Op::Status => {
                let ports = self.resolve(&mut session, &refs, deadline).await?;
                let states = self.read(&mut session, &ports, false, deadline).await?;
                let state = if states.iter().all(|s| s.admin == ADMIN_DOWN) {
                    PowerState::Off
                } else {
                    PowerState::On
                };
                Ok(Outcome {
                    state,
                    polls: 1,
                    started,
                })
            }
            Op::Monitor => {
                let all: Vec<Vec<PortRef>> = self.params.ports.values().cloned().collect();
                let mut polls = 0;
                for refs in all {
                    let ports = self.resolve(&mut session, &refs, deadline).await?;
                    self.read(&mut session, &ports, false, deadline).await?;
                    polls += 1;
                }
                Ok(Outcome {
                    state: PowerState::On,
                    polls,
                    started,
                })
            }
            Op::Reboot => Err(self.error(FenceErrorKind::Refused, REBOOT_REFUSED.to_owned())),
        }
    }

    /// Sets every port's ifAdminStatus towards `want`, then reads until all show it.
    async fn switch(
        &mut self,
        session: &mut SnmpSession,
        ports: &[Port],
        want: PowerState,
        started: Instant,
        deadline: Instant,
    ) -> Result<Outcome, FenceError> {
        // The first read proves every ifIndex exists before anything is written: a SET to a
        // missing row would come back as notWritable, which says nothing about the row.
        let check_oper = want == PowerState::Off && self.params.check_oper_status;
        self.read(session, ports, check_oper, deadline).await?;
        let mut polls: u32 = 1;
        let value = match want {
            PowerState::Off => ADMIN_DOWN,
            PowerState::On => ADMIN_UP,
        };
        // Every port is written, also one that already reads the wanted state: the write is
        // idempotent, and a port someone is re-enabling at this moment must not slip through.
        for port in ports {
            self.stats.sets += 1;
            session
                .set_int(&admin_oid(port.index), value, deadline)
                .await
                .map_err(|e| self.port_error(e, port))?;
        }
        // Bounded by the deadline: each round either returns or sleeps. The first read-back is
        // immediate (switches apply ifAdminStatus within milliseconds), later ones back off to
        // the configured interval.
        let mut pause = FIRST_POLL;
        // The ports still pending at the last answered read-back, once there is one.
        let mut last_pending: Option<Vec<String>> = None;
        loop {
            let states = match self.read(session, ports, check_oper, deadline).await {
                Ok(states) => states,
                // The SETs were accepted and an earlier read-back was answered: the deadline
                // cutting a later read leaves that answer the last word, which is unconfirmed,
                // not a silent switch.
                Err(e) if e.kind == FenceErrorKind::Timeout => match last_pending {
                    Some(pending) => return Err(self.unconfirmed(value, want, polls, &pending)),
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            };
            polls += 1;
            let pending = pending(want, ports, &states);
            if pending.is_empty() {
                return Ok(Outcome {
                    state: want,
                    polls,
                    started,
                });
            }
            let next = Instant::now() + pause;
            if next >= deadline {
                return Err(self.unconfirmed(value, want, polls, &pending));
            }
            last_pending = Some(pending);
            pause = (pause * 2).min(self.params.poll_interval.max(FIRST_POLL));
            tokio::time::sleep_until(next).await;
        }
    }

    fn unconfirmed(
        &self,
        value: i64,
        want: PowerState,
        polls: u32,
        pending: &[String],
    ) -> FenceError {
        self.error(
            FenceErrorKind::Unconfirmed,
            format!(
                "ifAdminStatus set to {} but after {polls} reads still {}: {}",
                admin_word(value),
                match want {
                    PowerState::Off => "up",
                    PowerState::On => "down",
                },
                pending.join(", ")
            ),
        )
    }

    /// ifAdminStatus (and ifOperStatus when asked and the switch has it) of every port, in
    /// one GET.
    async fn read(
        &mut self,
        session: &mut SnmpSession,
        ports: &[Port],
        with_oper: bool,
        deadline: Instant,
    ) -> Result<Vec<PortState>, FenceError> {
        let admin: Vec<Oid> = ports.iter().map(|p| admin_oid(p.index)).collect();
        if with_oper && self.oper_reported != Some(false) {
            let mut oids = admin.clone();
            oids.extend(ports.iter().map(|p| oper_oid(p.index)));
            self.stats.reads += 1;
            match session.get(&oids, deadline).await {
                Ok(values) => {
                    self.oper_reported = Some(true);
                    return self.port_states(ports, &values, true);
                }
                // Some switches (FC directors, old firmware) serve ifAdminStatus but not
                // ifOperStatus: learn that once, then confirm on ifAdminStatus alone.
                Err(e)
                    if e.kind == FenceErrorKind::TargetUnknown && self.oper_reported.is_none() =>
                {
                    tracing::debug!(device = %self.name, error = %e.message, "no ifOperStatus");
                }
                Err(e) => return Err(self.ports_error(e, ports)),
            }
            self.stats.reads += 1;
            let values = session
                .get(&admin, deadline)
                .await
                .map_err(|e| self.ports_error(e, ports))?;
            self.oper_reported = Some(false);
            tracing::info!(
                device = %self.name,
                "the switch does not report ifOperStatus: confirming on ifAdminStatus only"
            );
            return self.port_states(ports, &values, false);
        }
        self.stats.reads += 1;
        let values = session
            .get(&admin, deadline)
            .await
            .map_err(|e| self.ports_error(e, ports))?;
        self.port_states(ports, &values, false)
    }

    fn port_states(
        &self,
        ports: &[Port],
        values: &[(Oid, SnmpValue)],
        with_oper: bool,
    ) -> Result<Vec<PortState>, FenceError> {
        parse_states(ports, values, with_oper)
            .map_err(|message| self.error(FenceErrorKind::Refused, message))
    }

    /// The ports of one node, names resolved through the cache or one walk of ifName, then
    /// (for names still unknown) one of ifAlias.
    async fn resolve(
        &mut self,
        session: &mut SnmpSession,
        refs: &[PortRef],
        deadline: Instant,
    ) -> Result<Vec<Port>, FenceError> {
        let missing: Vec<&str> = refs
            .iter()
            .filter_map(|r| match r {
                PortRef::Name(name) if !self.resolved.contains_key(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let mut known = Vec::new();
            let mut unresolved: Vec<&str> = missing;
            for column in [IF_NAME, IF_ALIAS] {
                if unresolved.is_empty() {
                    break;
                }
                let column = column_oid(column);
                self.stats.walks += 1;
                let rows = session.walk(&column, deadline, MAX_PORTS).await?;
                let table = name_table(&column, &rows);
                let mut still = Vec::new();
                for name in unresolved {
                    match table.get(name).map(Vec::as_slice) {
                        Some([index]) => {
                            self.resolved.insert(name.to_owned(), *index);
                        }
                        Some(indexes) if indexes.len() > 1 => {
                            return Err(self.error(
                                FenceErrorKind::Refused,
                                format!(
                                    "port name {name:?} is ambiguous: ifIndex {} all carry it \
                                     ({}); configure the ifIndex instead",
                                    join_numbers(indexes),
                                    column_word(&column)
                                ),
                            ));
                        }
                        _ => still.push(name),
                    }
                }
                unresolved = still;
                known.extend(table.into_keys());
            }
            if let Some(first) = unresolved.first() {
                return Err(self.error(
                    FenceErrorKind::TargetUnknown,
                    format!(
                        "no port named {first:?} in ifName or ifAlias of {}; it has {}",
                        self.params.snmp.address,
                        sample_names(&known)
                    ),
                ));
            }
        }
        refs.iter()
            .map(|r| match r {
                PortRef::Index(index) => Ok(Port {
                    label: format!("ifIndex {index}"),
                    index: *index,
                }),
                PortRef::Name(name) => match self.resolved.get(name) {
                    Some(index) => Ok(Port {
                        label: format!("{name} (ifIndex {index})"),
                        index: *index,
                    }),
                    // Unreachable by construction (every missing name was resolved or
                    // returned an error above), but reported rather than assumed.
                    None => Err(self.error(
                        FenceErrorKind::TargetUnknown,
                        format!("port {name:?} is not resolved"),
                    )),
                },
            })
            .collect()
    }

    /// A failed read of `ports`: a missing object names the port it belongs to.
    fn ports_error(&self, e: FenceError, ports: &[Port]) -> FenceError {
        if e.kind != FenceErrorKind::TargetUnknown {
            return e;
        }
        let port = ports.iter().find(|p| {
            e.message.contains(&format!("{} ", admin_oid(p.index)))
                || e.message.contains(&format!("{} ", oper_oid(p.index)))
        });
        match port {
            Some(port) => self.port_error(e, port),
            None => e,
        }
    }

    fn port_error(&self, e: FenceError, port: &Port) -> FenceError {
        let message = match e.kind {
            FenceErrorKind::TargetUnknown => {
                format!(
                    "port {} is not in the switch's ifTable: {}",
                    port.label, e.message
                )
            }
            _ => format!("port {}: {}", port.label, e.message),
        };
        FenceError::new(e.kind, &self.name, message)
    }

    fn error(&self, kind: FenceErrorKind, message: String) -> FenceError {
        FenceError::new(kind, &self.name, message)
    }
}

impl FenceDevice for IfMibDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Set(PowerState::Off)))
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Set(PowerState::On)))
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Reboot))
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(self.operation(target, deadline, Op::Status))
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move {
            self.operation::<PowerState>("", deadline, Op::Monitor)
                .await
                .map(|_| ())
        })
    }
}

/// One port of a node, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    /// How messages name it: `ifIndex 3` or `port3 (ifIndex 3)`.
    label: String,
    index: u32,
}

/// What one read showed of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortState {
    admin: i64,
    /// `None` when not read.
    oper: Option<i64>,
}

struct Outcome {
    state: PowerState,
    polls: u32,
    started: Instant,
}

trait FromOutcome {
    fn from_outcome(outcome: Outcome) -> Self;
}

impl FromOutcome for Confirmed {
    fn from_outcome(o: Outcome) -> Self {
        Confirmed {
            state: o.state,
            polls: o.polls,
            elapsed: o.started.elapsed(),
        }
    }
}

impl FromOutcome for PowerState {
    fn from_outcome(o: Outcome) -> Self {
        o.state
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Status,
    Set(PowerState),
    Reboot,
    Monitor,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::Set(PowerState::Off) => "off",
            Op::Set(PowerState::On) => "on",
            Op::Reboot => "reboot",
            Op::Monitor => "monitor",
        }
    }
}

fn validate(params: &IfMibParams) -> Result<(), String> {
    if params.ports.is_empty() {
        return Err("no node is configured: nothing to isolate".to_owned());
    }
    for (node, refs) in &params.ports {
        if refs.is_empty() {
            return Err(format!("node {node} has no switch ports"));
        }
        if refs.len() > MAX_PORTS_PER_NODE {
            return Err(format!(
                "node {node} has {} ports, more than {MAX_PORTS_PER_NODE}",
                refs.len()
            ));
        }
        for r in refs {
            match r {
                PortRef::Index(index) if *index == 0 || *index > MAX_IF_INDEX => {
                    return Err(format!(
                        "node {node}: ifIndex {index} is outside 1..={MAX_IF_INDEX}"
                    ))
                }
                PortRef::Name(name) if name.trim().is_empty() => {
                    return Err(format!("node {node}: a port name is empty"))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The port states in `values`, which answer a GET of every port's ifAdminStatus, then (with
/// `with_oper`) every port's ifOperStatus, in the order of `ports`.
fn parse_states(
    ports: &[Port],
    values: &[(Oid, SnmpValue)],
    with_oper: bool,
) -> Result<Vec<PortState>, String> {
    let expected = if with_oper {
        2 * ports.len()
    } else {
        ports.len()
    };
    if values.len() != expected {
        return Err(format!(
            "the switch answered {} values for {expected} port objects",
            values.len()
        ));
    }
    let int = |(oid, value): &(Oid, SnmpValue)| {
        value
            .as_int()
            .ok_or_else(|| format!("{oid} reads {value}, not an INTEGER"))
    };
    let mut states = Vec::with_capacity(ports.len());
    for (i, _) in ports.iter().enumerate() {
        let admin = values.get(i).map(int).transpose()?;
        let oper = if with_oper {
            values.get(ports.len() + i).map(int).transpose()?
        } else {
            None
        };
        match admin {
            Some(admin) => states.push(PortState { admin, oper }),
            None => return Err("the switch answered too few values".to_owned()),
        }
    }
    Ok(states)
}

/// The ports not yet in the `want` state, as labels with what they read.
fn pending(want: PowerState, ports: &[Port], states: &[PortState]) -> Vec<String> {
    ports
        .iter()
        .zip(states)
        .filter_map(|(port, s)| {
            let admin_ok = match want {
                PowerState::Off => s.admin == ADMIN_DOWN,
                PowerState::On => s.admin == ADMIN_UP,
            };
            let oper_ok = match (want, s.oper) {
                (PowerState::Off, Some(oper)) => OPER_CONFIRMS_DOWN.contains(&oper),
                _ => true,
            };
            if admin_ok && oper_ok {
                return None;
            }
            let mut text = format!("{} admin {}", port.label, admin_word(s.admin));
            if let Some(oper) = s.oper {
                let _ = write!(text, " oper {}", oper_word(oper));
            }
            Some(text)
        })
        .collect()
}

/// ifIndex by name from a walk of `column` (ifName or ifAlias); a name on several ports keeps
/// all its indexes so that the caller can refuse to guess. Empty names are skipped.
fn name_table(column: &Oid, rows: &[(Oid, SnmpValue)]) -> BTreeMap<String, Vec<u32>> {
    let mut table: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (oid, value) in rows {
        let index = match oid.arcs().strip_prefix(column.arcs()) {
            Some([index]) => *index,
            _ => continue,
        };
        let Some(name) = value.as_text() else {
            continue;
        };
        let name = name.trim_end_matches('\0').to_owned();
        if !name.is_empty() {
            table.entry(name).or_default().push(index);
        }
    }
    table
}

/// Up to [`MAX_NAMES_SHOWN`] of `names`, for an error message.
fn sample_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no port names at all (use ifIndex)".to_owned();
    }
    let mut text = names
        .iter()
        .take(MAX_NAMES_SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMES_SHOWN {
        let _ = write!(text, " and {} more", names.len() - MAX_NAMES_SHOWN);
    }
    text
}

fn join_numbers(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_word(column: &Oid) -> &'static str {
    if column.arcs() == IF_ALIAS {
        "ifAlias"
    } else {
        "ifName"
    }
}

fn admin_word(value: i64) -> String {
    match value {
        ADMIN_UP => "up(1)".to_owned(),
        ADMIN_DOWN => "down(2)".to_owned(),
        3 => "testing(3)".to_owned(),
        other => format!("{other}"),
    }
}

fn oper_word(value: i64) -> String {
    match value {
        1 => "up(1)".to_owned(),
        2 => "down(2)".to_owned(),
        3 => "testing(3)".to_owned(),
        4 => "unknown(4)".to_owned(),
        5 => "dormant(5)".to_owned(),
        6 => "notPresent(6)".to_owned(),
        7 => "lowerLayerDown(7)".to_owned(),
        other => format!("{other}"),
    }
}

fn column_oid(arcs: &'static [u32]) -> Oid {
    // Only called with the IF-MIB constants below, which start 1.3 and are short: from_arcs
    // accepts every one of them (column_oids_are_the_if_mib_ones checks each).
    Oid::from_arcs(arcs).expect("IF-MIB column OIDs are encodable")
}

fn admin_oid(index: u32) -> Oid {
    column_oid(IF_ADMIN_STATUS).child(index)
}

fn oper_oid(index: u32) -> Oid {
    column_oid(IF_OPER_STATUS).child(index)
}

/// ifAdminStatus up(1).
const ADMIN_UP: i64 = 1;
/// ifAdminStatus down(2).
const ADMIN_DOWN: i64 = 2;
/// ifOperStatus values that confirm a port carries no traffic: down(2), notPresent(6),
/// lowerLayerDown(7). testing(3), unknown(4) and dormant(5) do not: they say nothing certain
/// about the link.
const OPER_CONFIRMS_DOWN: [i64; 3] = [2, 6, 7];
/// IF-MIB ifAdminStatus column (ifTable).
const IF_ADMIN_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 7];
/// IF-MIB ifOperStatus column (ifTable).
const IF_OPER_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 8];
/// IF-MIB ifName column (ifXTable).
const IF_NAME: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
/// IF-MIB ifAlias column (ifXTable).
const IF_ALIAS: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18];
/// ifIndex is `InterfaceIndex`, 1..2147483647.
const MAX_IF_INDEX: u32 = 2_147_483_647;
/// Rows a name walk may return: a chassis switch with every VLAN interface stays well below
/// this, and the bound keeps a broken agent from walking forever.
const MAX_PORTS: usize = 8192;
/// Ports of one node: real multipath setups have 2–8; this bounds one GET's size.
pub const MAX_PORTS_PER_NODE: usize = 32;
/// Port names quoted in an unknown-name error.
const MAX_NAMES_SHOWN: usize = 8;
/// First pause between read-backs; they then double up to the configured poll interval.
const FIRST_POLL: Duration = Duration::from_millis(20);
/// Why `reboot` is refused.
const REBOOT_REFUSED: &str =
    "a fabric fence isolates, it does not power-cycle: use off, then on (unfence)";

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::fence::snmp::SnmpSecurity;
    use crate::secret::Secret;

    fn params(ports: BTreeMap<String, Vec<PortRef>>) -> IfMibParams {
        IfMibParams {
            snmp: SnmpParams {
                address: SocketAddr::from((Ipv4Addr::LOCALHOST, 161)),
                security: SnmpSecurity::V2c {
                    community: Secret::new("private"),
                },
                request_timeout: Duration::from_millis(500),
                retries: 1,
            },
            ports,
            poll_interval: Duration::from_millis(100),
            check_oper_status: true,
        }
    }

    fn port(index: u32) -> Port {
        Port {
            label: format!("ifIndex {index}"),
            index,
        }
    }

    fn oid(text: &str) -> Oid {
        Oid::parse(text).unwrap_or_else(|| panic!("test OID {text}"))
    }

    #[test]
    fn bad_configurations_are_refused() {
        let refused = |ports: BTreeMap<String, Vec<PortRef>>| {
            IfMibDevice::new("sw", params(ports)).err().map(|e| e.kind)
        };
        assert_eq!(refused(BTreeMap::new()), Some(FenceErrorKind::Refused));
        let node = |refs: Vec<PortRef>| BTreeMap::from([("a".to_owned(), refs)]);
        assert_eq!(refused(node(vec![])), Some(FenceErrorKind::Refused));
        assert_eq!(
            refused(node(vec![PortRef::Index(0)])),
            Some(FenceErrorKind::Refused)
        );
        assert_eq!(
            refused(node(vec![PortRef::Name(" ".to_owned())])),
            Some(FenceErrorKind::Refused)
        );
        assert_eq!(
            refused(node(vec![PortRef::Index(1); MAX_PORTS_PER_NODE + 1])),
            Some(FenceErrorKind::Refused)
        );
        assert!(IfMibDevice::new(
            "sw",
            params(node(vec![
                PortRef::Index(3),
                PortRef::Name("port4".to_owned())
            ]))
        )
        .is_ok());
    }

    #[tokio::test]
    async fn reboot_and_unknown_nodes_fail_without_touching_the_switch() {
        // The address is never contacted: both fail before a session is opened.
        let mut device = IfMibDevice::new(
            "sw",
            params(BTreeMap::from([("a".to_owned(), vec![PortRef::Index(1)])])),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(1);
        let e = device.reboot("a", deadline).await.err();
        assert_eq!(e.as_ref().map(|e| e.kind), Some(FenceErrorKind::Refused));
        assert!(e.is_some_and(|e| e.message.contains("does not power-cycle")));
        let e = device.off("zz", deadline).await.err();
        assert_eq!(e.map(|e| e.kind), Some(FenceErrorKind::TargetUnknown));
        assert_eq!(device.stats().errors, 2);
        assert_eq!(device.stats().sets, 0);
    }

    #[test]
    fn states_parse_in_request_order() {
        let ports = [port(3), port(4)];
        let values = vec![
            (admin_oid(3), SnmpValue::Int(2)),
            (admin_oid(4), SnmpValue::Int(1)),
            (oper_oid(3), SnmpValue::Int(7)),
            (oper_oid(4), SnmpValue::Int(1)),
        ];
        let states = parse_states(&ports, &values, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            states,
            [
                PortState {
                    admin: 2,
                    oper: Some(7)
                },
                PortState {
                    admin: 1,
                    oper: Some(1)
                }
            ]
        );
        assert!(parse_states(&ports, &values[..2], true).is_err());
        let text = vec![
            (admin_oid(3), SnmpValue::Str(b"down".to_vec())),
            (admin_oid(4), SnmpValue::Int(1)),
        ];
        assert!(parse_states(&ports, &text, false).is_err());
    }

    #[test]
    fn off_needs_every_port_admin_down_and_oper_down_when_read() {
        let ports = [port(1), port(2)];
        let s = |admin, oper| PortState { admin, oper };
        assert!(pending(PowerState::Off, &ports, &[s(2, None), s(2, None)]).is_empty());
        assert_eq!(
            pending(PowerState::Off, &ports, &[s(2, None), s(1, None)]),
            ["ifIndex 2 admin up(1)"]
        );
        // Admin down but the link still up (the switch has not applied it yet).
        assert_eq!(
            pending(PowerState::Off, &ports, &[s(2, Some(1)), s(2, Some(2))]),
            ["ifIndex 1 admin down(2) oper up(1)"]
        );
        assert!(pending(PowerState::Off, &ports, &[s(2, Some(6)), s(2, Some(7))]).is_empty());
        // dormant is not proof of isolation.
        assert_eq!(
            pending(PowerState::Off, &ports, &[s(2, Some(5)), s(2, Some(2))]).len(),
            1
        );
        // Unfencing asks admin up only: the partner's link may be down.
        assert!(pending(PowerState::On, &ports, &[s(1, Some(2)), s(1, None)]).is_empty());
        assert_eq!(
            pending(PowerState::On, &ports, &[s(1, None), s(3, None)]).len(),
            1
        );
    }

    #[test]
    fn name_tables_keep_duplicates_and_skip_other_columns() {
        let column = column_oid(IF_ALIAS);
        let rows = vec![
            (
                oid(".1.3.6.1.2.1.31.1.1.1.18.1"),
                SnmpValue::Str(b"db1-hba".to_vec()),
            ),
            (
                oid(".1.3.6.1.2.1.31.1.1.1.18.2"),
                SnmpValue::Str(b"db1-hba".to_vec()),
            ),
            (
                oid(".1.3.6.1.2.1.31.1.1.1.18.3"),
                SnmpValue::Str(b"".to_vec()),
            ),
            (
                oid(".1.3.6.1.2.1.31.1.1.1.18.4.9"),
                SnmpValue::Str(b"odd".to_vec()),
            ),
            (oid(".1.3.6.1.2.1.31.1.1.1.18.5"), SnmpValue::Int(5)),
            (
                oid(".1.3.6.1.2.1.31.1.1.1.18.6"),
                SnmpValue::Str(b"web\0".to_vec()),
            ),
        ];
        let table = name_table(&column, &rows);
        assert_eq!(table.get("db1-hba"), Some(&vec![1, 2]));
        assert_eq!(table.get("web"), Some(&vec![6]));
        assert_eq!(table.len(), 2);
        assert_eq!(column_word(&column), "ifAlias");
    }

    #[test]
    fn unknown_name_messages_list_a_bounded_sample() {
        let names: Vec<String> = (1..=20).map(|n| format!("port{n}")).collect();
        let text = sample_names(&names);
        assert!(text.starts_with("\"port1\", \"port10\"") || text.starts_with("\"port1\""));
        assert!(text.ends_with("and 12 more"), "{text}");
        assert!(sample_names(&[]).contains("use ifIndex"));
    }

    #[test]
    fn column_oids_are_the_if_mib_ones() {
        assert_eq!(admin_oid(7).to_string(), ".1.3.6.1.2.1.2.2.1.7.7");
        assert_eq!(oper_oid(7).to_string(), ".1.3.6.1.2.1.2.2.1.8.7");
        assert_eq!(column_oid(IF_NAME).to_string(), ".1.3.6.1.2.1.31.1.1.1.1");
        assert_eq!(column_oid(IF_ALIAS).to_string(), ".1.3.6.1.2.1.31.1.1.1.18");
    }
}
