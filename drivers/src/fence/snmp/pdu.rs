//! Switched PDUs over SNMP: APC (MasterSwitch and rPDU), Raritan PX, Eaton ePDU and custom
//! OIDs, with the profile detected by sysObjectID unless configured.
//!
//! A switched PDU is the fencing device of last resort: it cuts the power whatever state the node's
//! BMC or operating system is in. This driver keeps the [`FenceDevice`] contract as follows:
//!
//! - **Which OIDs.** A profile names a control column (or, for Eaton, separate off and on command
//!   columns), a status column and a name column; outlet N is the column's `.N`. `Auto` reads
//!   sysObjectID once per device and caches the choice; a sysObjectID it does not know is refused
//!   with the profiles to configure instead, never guessed, since writing the wrong column could
//!   switch the wrong outlet.
//! - **Off means every outlet.** A node fed by several outlets (redundant power supplies) is off
//!   only when all of them read off; `off` reads them (so an outlet that does not exist is found
//!   before anything is written), writes every one not yet off, then reads them all back until
//!   they are, and names the outlets still on when the deadline passes
//!   ([`FenceErrorKind::Unconfirmed`]).
//! - **Reboot** is off, confirmed off, `off_time` with the outlets off, then on, confirmed on. The
//!   PDU's own reboot command is never used, so the off is observed rather than assumed.
//! - **Names.** An outlet given by name is looked up once by walking the profile's name column; a
//!   name that is missing or names several outlets is [`FenceErrorKind::TargetUnknown`].
//! - **Time and credentials** are the session layer's: see [`super::SnmpSession`].
//!
//! Per-profile OIDs (the MIBs, and the choices fence-agents' `fence_apc_snmp`, `fence_raritan`
//! and `fence_eaton_snmp` make):
//!
//! | profile | control (value) | status (on / off) | names |
//! |---|---|---|---|
//! | APC MasterSwitch | sPDUOutletCtl `.318.1.1.4.4.2.1.3.N` (1 on, 2 off) | same column, 1 / 2 | sPDUOutletCtlName `.4.N` |
//! | APC rPDU | rPDUOutletControlOutletCommand `.318.1.1.12.3.3.1.1.4.N` (1 on, 2 off) | rPDUOutletStatusOutletState `.318.1.1.12.3.5.1.1.4.N`, 1 / 2 | rPDUOutletControlOutletName `.2.N` |
//! | Raritan PX (PDU2-MIB) | switchingOperation `.13742.6.4.1.2.1.2.1.N` (1 on, 0 off) | outletSwitchingState `.3.1.N`, 7 / 8 | outletName `.13742.6.3.5.3.1.3.1.N` |
//! | Eaton ePDU | outletControlOnCmd `.534.6.6.7.6.6.1.4.0.N`, outletControlOffCmd `.3.0.N` (delay 0 = now) | outletControlStatus `.2.0.N`, 1 / 0 | outletName `.534.6.6.7.6.1.1.3.0.N` |
//!
//! Raritan tables are indexed by pduId then outlet: pduId 1 is the PDU that answers (several
//! PDUs appear under one agent only when linked, and then each still has its own address). Eaton
//! tables are indexed by strappingIndex then outlet: 0 is the first (or only) unit of a daisy chain.
//! Any other reading than the off value counts as on (Eaton's pendingOff is still powered).
//!
//! Detection follows fence_apc_snmp's table: APC `.318.1.3.4.5` is an rPDU, `.318.1.3.4.4` (a
//! MasterSwitch Plus, whose outlets hang off several switch units) is refused, any other APC
//! sysObjectID uses the MasterSwitch column every APC PDU serves; `.13742` is Raritan and `.534`
//! Eaton.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Oid, SnmpParams, SnmpSession, SnmpValue};
use crate::fence::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};

/// Which OIDs and values switch an outlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduProfile {
    /// Chosen from the agent's sysObjectID on first use.
    Auto,
    /// APC MasterSwitch (PowerNet-MIB sPDUOutletCtl).
    ApcMasterSwitch,
    /// APC rack PDU (PowerNet-MIB rPDUOutletControl / rPDUOutletStatus).
    ApcRpdu,
    /// Raritan PX (PDU2-MIB outletSwitchingState / switchingOperation).
    RaritanPx,
    /// Eaton ePDU (EATON-EPDU-MIB outletControlStatus / outletControlOffCmd, OnCmd).
    EatonEpdu,
    /// Explicit OIDs and values.
    Custom(CustomProfile),
}

/// A PDU the built-in profiles do not know: the outlet number is appended to both OIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomProfile {
    /// Control column, e.g. `1.3.6.1.4.1.318.1.1.4.4.2.1.3` (outlet N is `.N`).
    pub control_oid: String,
    /// Status column (may equal the control column).
    pub status_oid: String,
    /// Value written to switch on.
    pub on: i64,
    /// Value written to switch off.
    pub off: i64,
    /// Value the status column reads when on.
    pub status_on: i64,
    /// Value the status column reads when off.
    pub status_off: i64,
}

/// An outlet by number or by the name the PDU gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutletRef {
    /// Outlet number (the index in the PDU's outlet table).
    Number(u32),
    /// Outlet name as the PDU reports it (looked up once).
    Name(String),
}

/// One SNMP PDU and the outlets of every node it powers.
#[derive(Debug, Clone)]
pub struct SnmpPduParams {
    /// Agent, version, credentials.
    pub snmp: SnmpParams,
    /// Which OIDs to use.
    pub profile: PduProfile,
    /// Per node name, every outlet that feeds it: all must read off before `off` succeeds.
    pub outlets: BTreeMap<String, Vec<OutletRef>>,
    /// Pause between reads while waiting for outlets to show the requested state.
    pub poll_interval: Duration,
    /// How long `reboot` keeps the outlets off before switching them on again.
    pub off_time: Duration,
}

/// A switched PDU that fences the nodes of [`SnmpPduParams::outlets`]; see the module docs.
#[derive(Debug)]
pub struct SnmpPduDevice {
    name: String,
    params: SnmpPduParams,
    /// The profile in use: the configured one, or the detected one after first contact.
    profile: Option<PduProfile>,
    /// Its OIDs.
    table: Option<Table>,
    /// Outlet numbers by name, once walked.
    names: Option<BTreeMap<String, Vec<u32>>>,
    metrics: Arc<SnmpPduMetrics>,
}

/// Counters of one PDU, for the metrics endpoint and for tests.
#[derive(Debug, Default)]
pub struct SnmpPduMetrics {
    /// Operations started (off, on, reboot, status, monitor).
    pub operations: AtomicU64,
    /// Operations that failed.
    pub errors: AtomicU64,
    /// Outlet SETs sent.
    pub sets: AtomicU64,
    /// Status reads while confirming a switch.
    pub polls: AtomicU64,
    /// SNMP resends and dropped datagrams over all sessions.
    pub retransmits: AtomicU64,
    /// Datagrams dropped (stale, foreign, unauthentic) over all sessions.
    pub dropped: AtomicU64,
}

impl SnmpPduDevice {
    /// A PDU named `name` switching the outlets in `params`.
    ///
    /// Fails with [`FenceErrorKind::Refused`] when a node has no outlet, an outlet number is 0,
    /// or a custom profile's OIDs do not parse.
    pub fn new(name: impl Into<String>, params: SnmpPduParams) -> Result<Self, FenceError> {
        let name = name.into();
        let refused = |message: String| FenceError::new(FenceErrorKind::Refused, &name, message);
        for (node, outlets) in &params.outlets {
            if outlets.is_empty() {
                return Err(refused(format!("node {node} has no outlet")));
            }
            if outlets.contains(&OutletRef::Number(0)) {
                return Err(refused(format!("node {node}: outlet numbers start at 1")));
            }
        }
        let (profile, table) = match &params.profile {
            PduProfile::Auto => (None, None),
            other => (
                Some(other.clone()),
                Some(Table::of(other).map_err(refused)?),
            ),
        };
        Ok(Self {
            name,
            params,
            profile,
            table,
            names: None,
            metrics: Arc::default(),
        })
    }

    /// The profile in use: the configured one, or for `Auto` the detected one once the PDU has
    /// been contacted.
    pub fn profile(&self) -> Option<&PduProfile> {
        self.profile.as_ref()
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<SnmpPduMetrics> {
        Arc::clone(&self.metrics)
    }

    async fn operation(
        &mut self,
        target: &str,
        deadline: Instant,
        op: Op,
    ) -> Result<Confirmed, FenceError> {
        self.metrics.operations.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.run(target, deadline, op, started).await;
        match &result {
            Ok(done) => tracing::info!(
                device = %self.name, target, op = op.label(), polls = done.polls,
                elapsed_ms = done.elapsed.as_millis(), "snmp pdu operation done"
            ),
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    device = %self.name, target, op = op.label(), kind = ?e.kind,
                    error = %e.message, "snmp pdu operation failed"
                );
            }
        }
        result
    }

    async fn run(
        &mut self,
        target: &str,
        deadline: Instant,
        op: Op,
        started: Instant,
    ) -> Result<Confirmed, FenceError> {
        let refs = match op {
            Op::Monitor => self.params.outlets.values().flatten().cloned().collect(),
            _ => match self.params.outlets.get(target) {
                Some(refs) => refs.clone(),
                None => {
                    let served: Vec<&str> =
                        self.params.outlets.keys().map(String::as_str).collect();
                    return Err(self.error(
                        FenceErrorKind::TargetUnknown,
                        format!("powers nodes {}, not {target}", served.join(", ")),
                    ));
                }
            },
        };
        let mut session = SnmpSession::connect(&self.name, &self.params.snmp, deadline).await?;
        let result = self
            .with_session(&mut session, refs, deadline, op, started)
            .await;
        let stats = session.stats();
        self.metrics
            .retransmits
            .fetch_add(stats.retransmits, Ordering::Relaxed);
        self.metrics
            .dropped
            .fetch_add(stats.dropped, Ordering::Relaxed);
        result
    }

    async fn with_session(
        &mut self,
        session: &mut SnmpSession,
        refs: Vec<OutletRef>,
        deadline: Instant,
        op: Op,
        started: Instant,
    ) -> Result<Confirmed, FenceError> {
        let sys_object_id = match op {
            Op::Monitor => Some(session.sys_object_id(deadline).await?),
            _ => None,
        };
        let table = self.table(session, sys_object_id, deadline).await?;
        let outlets = self.outlets(session, &table, &refs, deadline).await?;
        match op {
            Op::Switch(want) => {
                self.switch(session, &table, &outlets, want, started, deadline)
                    .await
            }
            Op::Reboot => {
                let off = self
                    .switch(
                        session,
                        &table,
                        &outlets,
                        PowerState::Off,
                        started,
                        deadline,
                    )
                    .await?;
                let resume = Instant::now() + self.params.off_time;
                if resume >= deadline {
                    return Err(self.error(
                        FenceErrorKind::Timeout,
                        format!(
                            "outlets {} are off, but the deadline leaves no room for off_time \
                             ({} ms): they stay off",
                            list(&outlets),
                            self.params.off_time.as_millis()
                        ),
                    ));
                }
                tokio::time::sleep_until(resume).await;
                let on = self
                    .switch(session, &table, &outlets, PowerState::On, started, deadline)
                    .await?;
                Ok(Confirmed {
                    state: on.state,
                    polls: off.polls + on.polls,
                    elapsed: started.elapsed(),
                })
            }
            Op::Status | Op::Monitor => {
                let states = self.read(session, &table, &outlets, deadline).await?;
                let state = if states.iter().all(|(_, s)| *s == PowerState::Off) {
                    PowerState::Off
                } else {
                    PowerState::On
                };
                Ok(Confirmed {
                    state,
                    polls: 1,
                    elapsed: started.elapsed(),
                })
            }
        }
    }

    /// Reads the outlets, writes `want` to those not showing it, then reads them back until all
    /// do. The first read also proves every outlet exists before anything is written.
    async fn switch(
        &mut self,
        session: &mut SnmpSession,
        table: &Table,
        outlets: &[u32],
        want: PowerState,
        started: Instant,
        deadline: Instant,
    ) -> Result<Confirmed, FenceError> {
        let command = match want {
            PowerState::Off => &table.off,
            PowerState::On => &table.on,
        };
        let before = self.read(session, table, outlets, deadline).await?;
        let mut polls = 1u32;
        let mut pending: Vec<u32> = before
            .iter()
            .filter(|(_, s)| *s != want)
            .map(|(n, _)| *n)
            .collect();
        for &n in &pending {
            self.metrics.sets.fetch_add(1, Ordering::Relaxed);
            session
                .set_int(&command.column.child(n), command.value, deadline)
                .await
                .map_err(|e| self.outlet_error(n, e))?;
        }
        // Bounded by the deadline: each round either returns or sleeps. The first read-back is
        // immediate (most PDUs switch a relay within milliseconds), the next ones back off to
        // the configured interval so a slow PDU is not flooded.
        let mut pause = Duration::ZERO;
        loop {
            if pending.is_empty() {
                return Ok(Confirmed {
                    state: want,
                    polls,
                    elapsed: started.elapsed(),
                });
            }
            let next = Instant::now() + pause;
            pause = (pause * 2).clamp(FIRST_POLL, self.params.poll_interval.max(FIRST_POLL));
            if next >= deadline {
                return Err(self.unconfirmed(want, &pending, polls));
            }
            tokio::time::sleep_until(next).await;
            let states = match self.read(session, table, outlets, deadline).await {
                Ok(states) => states,
                // The commands were accepted; what is known at the deadline is that the
                // outlets had not yet been seen switched.
                Err(e) if e.kind == FenceErrorKind::Timeout => {
                    return Err(self.unconfirmed(want, &pending, polls))
                }
                Err(e) => return Err(e),
            };
            polls += 1;
            self.metrics.polls.fetch_add(1, Ordering::Relaxed);
            pending = states
                .iter()
                .filter(|(_, s)| *s != want)
                .map(|(n, _)| *n)
                .collect();
        }
    }

    /// Reads the state of every outlet, a few per GET.
    async fn read(
        &self,
        session: &mut SnmpSession,
        table: &Table,
        outlets: &[u32],
        deadline: Instant,
    ) -> Result<Vec<(u32, PowerState)>, FenceError> {
        let mut states = Vec::with_capacity(outlets.len());
        for chunk in outlets.chunks(OUTLETS_PER_GET) {
            let oids: Vec<Oid> = chunk.iter().map(|n| table.status.child(*n)).collect();
            let values = session.get(&oids, deadline).await.map_err(|e| {
                if e.kind == FenceErrorKind::TargetUnknown {
                    self.error(
                        FenceErrorKind::TargetUnknown,
                        format!("outlet {} of {}: {}", list(chunk), table.label, e.message),
                    )
                } else {
                    e
                }
            })?;
            for (&n, (oid, value)) in chunk.iter().zip(values) {
                let state = match value {
                    SnmpValue::Int(v) if v == table.status_off => PowerState::Off,
                    SnmpValue::Int(_) => PowerState::On,
                    other => {
                        return Err(self.error(
                            FenceErrorKind::Refused,
                            format!("outlet {n}: {oid} reads {other}, not an integer state"),
                        ))
                    }
                };
                states.push((n, state));
            }
        }
        Ok(states)
    }

    /// The profile's OIDs, detecting the profile on first use.
    async fn table(
        &mut self,
        session: &mut SnmpSession,
        sys_object_id: Option<Oid>,
        deadline: Instant,
    ) -> Result<Table, FenceError> {
        if let Some(table) = &self.table {
            return Ok(table.clone());
        }
        let id = match sys_object_id {
            Some(id) => id,
            None => session.sys_object_id(deadline).await?,
        };
        let profile = detect_profile(&id).map_err(|m| self.error(FenceErrorKind::Refused, m))?;
        let table = Table::of(&profile).map_err(|m| self.error(FenceErrorKind::Refused, m))?;
        tracing::info!(device = %self.name, sys_object_id = %id, profile = ?profile,
            "snmp pdu model detected");
        self.profile = Some(profile);
        self.table = Some(table.clone());
        Ok(table)
    }

    /// Outlet numbers for `refs`, in order and without repeats, walking the names once if needed.
    async fn outlets(
        &mut self,
        session: &mut SnmpSession,
        table: &Table,
        refs: &[OutletRef],
        deadline: Instant,
    ) -> Result<Vec<u32>, FenceError> {
        let mut out: Vec<u32> = Vec::with_capacity(refs.len());
        for r in refs {
            let n = match r {
                OutletRef::Number(n) => *n,
                OutletRef::Name(name) => {
                    let names = self.names(session, table, deadline).await?;
                    let found = lookup(&names, name);
                    found.map_err(|m| self.error(FenceErrorKind::TargetUnknown, m))?
                }
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    async fn names(
        &mut self,
        session: &mut SnmpSession,
        table: &Table,
        deadline: Instant,
    ) -> Result<BTreeMap<String, Vec<u32>>, FenceError> {
        if let Some(names) = &self.names {
            return Ok(names.clone());
        }
        let Some(column) = &table.names else {
            return Err(self.error(
                FenceErrorKind::TargetUnknown,
                format!(
                    "{} has no outlet name column: configure outlet numbers",
                    table.label
                ),
            ));
        };
        let rows = session.walk(column, deadline, MAX_OUTLETS).await?;
        let names = name_map(column, &rows);
        self.names = Some(names.clone());
        Ok(names)
    }

    fn unconfirmed(&self, want: PowerState, pending: &[u32], polls: u32) -> FenceError {
        let (done, still) = match want {
            PowerState::Off => ("off", "on"),
            PowerState::On => ("on", "off"),
        };
        self.error(
            FenceErrorKind::Unconfirmed,
            format!(
                "switched {done}, but outlet {} still read {still} after {polls} reads",
                list(pending)
            ),
        )
    }

    /// Puts the outlet number in front of a session error about one of its OIDs.
    fn outlet_error(&self, outlet: u32, e: FenceError) -> FenceError {
        match e.kind {
            FenceErrorKind::Refused | FenceErrorKind::TargetUnknown => {
                self.error(e.kind, format!("outlet {outlet}: {}", e.message))
            }
            _ => e,
        }
    }

    fn error(&self, kind: FenceErrorKind, message: String) -> FenceError {
        FenceError::new(kind, &self.name, message)
    }
}

impl FenceDevice for SnmpPduDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Switch(PowerState::Off)))
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Switch(PowerState::On)))
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.operation(target, deadline, Op::Reboot))
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(async move {
            self.operation(target, deadline, Op::Status)
                .await
                .map(|c| c.state)
        })
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move { self.operation("", deadline, Op::Monitor).await.map(|_| ()) })
    }
}

/// The built-in profile for an agent reporting `sys_object_id`, as `PduProfile::Auto` chooses
/// it (see the module docs for the table).
///
/// Public so that tools which only read a PDU (`fence_watchkeeper -o list`) pick the model the
/// way the driver does. A MasterSwitch Plus or an unknown sysObjectID is an error naming the
/// profiles to configure instead.
pub fn detect_profile(sys_object_id: &Oid) -> Result<PduProfile, String> {
    let under = |prefix: &str| Oid::parse(prefix).is_some_and(|p| sys_object_id.starts_with(&p));
    if under(APC_RPDU_SYSOID) {
        Ok(PduProfile::ApcRpdu)
    } else if under(APC_MSP_SYSOID) {
        Err(format!(
            "sysObjectID {sys_object_id} is an APC MasterSwitch Plus, whose outlets the built-in \
             profiles cannot address: set profile = \"custom\" with its OIDs"
        ))
    } else if under(APC_ENTERPRISE) {
        Ok(PduProfile::ApcMasterSwitch)
    } else if under(RARITAN_ENTERPRISE) {
        Ok(PduProfile::RaritanPx)
    } else if under(EATON_ENTERPRISE) {
        Ok(PduProfile::EatonEpdu)
    } else {
        Err(format!(
            "cannot tell the PDU model from sysObjectID {sys_object_id}: set profile = \"apc\", \
             \"apc-rpdu\", \"raritan\", \"eaton\" or \"custom\""
        ))
    }
}

/// The column a profile's outlet names are read from (outlet N is its `.N`), where the driver
/// resolves outlet names; `None` for `Auto` (not yet detected) and for custom profiles, which
/// have no name column.
pub fn name_column(profile: &PduProfile) -> Option<Oid> {
    Table::of(profile).ok().and_then(|table| table.names)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Switch(PowerState),
    Reboot,
    Status,
    Monitor,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Switch(PowerState::Off) => "off",
            Op::Switch(PowerState::On) => "on",
            Op::Reboot => "reboot",
            Op::Status => "status",
            Op::Monitor => "monitor",
        }
    }
}

/// One command: write `value` to `column.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    column: Oid,
    value: i64,
}

/// The OIDs and values of one profile; outlet N is each column's `.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    label: &'static str,
    on: Command,
    off: Command,
    status: Oid,
    status_off: i64,
    names: Option<Oid>,
}

impl Table {
    fn of(profile: &PduProfile) -> Result<Table, String> {
        let oid =
            |text: &str| Oid::parse(text).ok_or_else(|| format!("OID {text:?} does not parse"));
        let fixed = |control: &str, on, off, status: &str, status_off, names: &str, label| {
            Ok(Table {
                label,
                on: Command {
                    column: oid(control)?,
                    value: on,
                },
                off: Command {
                    column: oid(control)?,
                    value: off,
                },
                status: oid(status)?,
                status_off,
                names: Some(oid(names)?),
            })
        };
        match profile {
            PduProfile::Auto => Err("the profile is not yet detected".to_owned()),
            PduProfile::ApcMasterSwitch => fixed(
                APC_MS_CONTROL,
                1,
                2,
                APC_MS_CONTROL,
                2,
                APC_MS_NAME,
                "APC MasterSwitch",
            ),
            PduProfile::ApcRpdu => fixed(
                APC_RPDU_CONTROL,
                1,
                2,
                APC_RPDU_STATUS,
                2,
                APC_RPDU_NAME,
                "APC rPDU",
            ),
            PduProfile::RaritanPx => fixed(
                RARITAN_CONTROL,
                1,
                0,
                RARITAN_STATUS,
                8,
                RARITAN_NAME,
                "Raritan PX",
            ),
            PduProfile::EatonEpdu => Ok(Table {
                label: "Eaton ePDU",
                on: Command {
                    column: oid(EATON_ON_CMD)?,
                    value: EATON_NOW,
                },
                off: Command {
                    column: oid(EATON_OFF_CMD)?,
                    value: EATON_NOW,
                },
                status: oid(EATON_STATUS)?,
                status_off: 0,
                names: Some(oid(EATON_NAME)?),
            }),
            PduProfile::Custom(custom) => Ok(Table {
                label: "the custom profile",
                on: Command {
                    column: oid(&custom.control_oid)?,
                    value: custom.on,
                },
                off: Command {
                    column: oid(&custom.control_oid)?,
                    value: custom.off,
                },
                status: oid(&custom.status_oid)?,
                status_off: custom.status_off,
                names: None,
            }),
        }
    }
}

/// Outlet numbers by name from a walk of a name column; rows not directly under it are skipped.
fn name_map(column: &Oid, rows: &[(Oid, SnmpValue)]) -> BTreeMap<String, Vec<u32>> {
    let mut names: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (oid, value) in rows {
        if oid.arcs().len() != column.arcs().len() + 1 {
            continue;
        }
        let (Some(n), Some(name)) = (oid.last(), value.as_text()) else {
            continue;
        };
        names.entry(name.trim().to_owned()).or_default().push(n);
    }
    names
}

/// The outlet called `name`; an absent or ambiguous name is an error listing what exists.
fn lookup(names: &BTreeMap<String, Vec<u32>>, name: &str) -> Result<u32, String> {
    match names.get(name.trim()).map(Vec::as_slice) {
        Some([n]) => Ok(*n),
        Some(several) => Err(format!(
            "outlet name {name:?} is used by outlets {}: configure outlet numbers",
            list(several)
        )),
        None => {
            let mut known = String::new();
            for (i, k) in names.keys().take(MAX_NAMES_LISTED).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(known, "{sep}{k:?}");
            }
            if names.len() > MAX_NAMES_LISTED {
                known.push_str(", …");
            }
            Err(format!("no outlet named {name:?}; the PDU has: {known}"))
        }
    }
}

fn list(outlets: &[u32]) -> String {
    let parts: Vec<String> = outlets.iter().map(u32::to_string).collect();
    parts.join(", ")
}

/// PowerNet-MIB sPDUOutletCtl: read 1 on / 2 off, write 1 on / 2 off.
const APC_MS_CONTROL: &str = "1.3.6.1.4.1.318.1.1.4.4.2.1.3";
/// PowerNet-MIB sPDUOutletCtlName.
const APC_MS_NAME: &str = "1.3.6.1.4.1.318.1.1.4.4.2.1.4";
/// PowerNet-MIB rPDUOutletControlOutletCommand: write 1 on / 2 off.
const APC_RPDU_CONTROL: &str = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4";
/// PowerNet-MIB rPDUOutletStatusOutletState: read 1 on / 2 off.
const APC_RPDU_STATUS: &str = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4";
/// PowerNet-MIB rPDUOutletControlOutletName.
const APC_RPDU_NAME: &str = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.2";
/// PDU2-MIB switchingOperation for pduId 1: write off(0) / on(1).
const RARITAN_CONTROL: &str = "1.3.6.1.4.1.13742.6.4.1.2.1.2.1";
/// PDU2-MIB outletSwitchingState for pduId 1: read on(7) / off(8).
const RARITAN_STATUS: &str = "1.3.6.1.4.1.13742.6.4.1.2.1.3.1";
/// PDU2-MIB outletName for pduId 1.
const RARITAN_NAME: &str = "1.3.6.1.4.1.13742.6.3.5.3.1.3.1";
/// EATON-EPDU-MIB outletControlStatus for strappingIndex 0: read off(0) / on(1) (2, 3 pending).
const EATON_STATUS: &str = "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0";
/// EATON-EPDU-MIB outletControlOffCmd: write a delay in seconds.
const EATON_OFF_CMD: &str = "1.3.6.1.4.1.534.6.6.7.6.6.1.3.0";
/// EATON-EPDU-MIB outletControlOnCmd: write a delay in seconds.
const EATON_ON_CMD: &str = "1.3.6.1.4.1.534.6.6.7.6.6.1.4.0";
/// EATON-EPDU-MIB outletName for strappingIndex 0.
const EATON_NAME: &str = "1.3.6.1.4.1.534.6.6.7.6.1.1.3.0";
/// Eaton command delay: now (-1 would cancel a pending command).
const EATON_NOW: i64 = 0;
/// APC masterSwitchrPDU: fence_apc_snmp's "APC rPDU".
const APC_RPDU_SYSOID: &str = "1.3.6.1.4.1.318.1.3.4.5";
/// APC masterSwitchMSP (MasterSwitch Plus).
const APC_MSP_SYSOID: &str = "1.3.6.1.4.1.318.1.3.4.4";
const APC_ENTERPRISE: &str = "1.3.6.1.4.1.318";
const RARITAN_ENTERPRISE: &str = "1.3.6.1.4.1.13742";
const EATON_ENTERPRISE: &str = "1.3.6.1.4.1.534";
/// Pause before the second read-back after a SET; doubled up to `poll_interval` after each.
const FIRST_POLL: Duration = Duration::from_millis(20);
/// Outlets read per GET: small enough for any PDU's message size, large enough that a node's
/// outlets take one request.
const OUTLETS_PER_GET: usize = 16;
/// Rows a name walk may return: the largest PDUs have 48 outlets, daisy chains a few hundred.
const MAX_OUTLETS: usize = 512;
/// Names quoted in a "no such outlet" error.
const MAX_NAMES_LISTED: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).expect("test OID")
    }

    #[test]
    fn profiles_address_outlet_n() {
        let ms = Table::of(&PduProfile::ApcMasterSwitch).expect("builds");
        assert_eq!(
            ms.off.column.child(5).to_string(),
            ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.5"
        );
        assert_eq!((ms.on.value, ms.off.value, ms.status_off), (1, 2, 2));
        assert_eq!(ms.status, ms.off.column);

        let rpdu = Table::of(&PduProfile::ApcRpdu).expect("builds");
        assert_eq!(
            rpdu.on.column.child(3).to_string(),
            ".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3"
        );
        assert_eq!(
            rpdu.status.child(3).to_string(),
            ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.3"
        );
        assert_eq!(
            rpdu.names
                .as_ref()
                .map(|n| n.child(3).to_string())
                .as_deref(),
            Some(".1.3.6.1.4.1.318.1.1.12.3.3.1.1.2.3")
        );

        let raritan = Table::of(&PduProfile::RaritanPx).expect("builds");
        assert_eq!(
            raritan.off.column.child(7).to_string(),
            ".1.3.6.1.4.1.13742.6.4.1.2.1.2.1.7"
        );
        assert_eq!(
            (raritan.on.value, raritan.off.value, raritan.status_off),
            (1, 0, 8)
        );
        assert_eq!(
            raritan.status.child(7).to_string(),
            ".1.3.6.1.4.1.13742.6.4.1.2.1.3.1.7"
        );

        let eaton = Table::of(&PduProfile::EatonEpdu).expect("builds");
        assert_eq!(
            eaton.off.column.child(2).to_string(),
            ".1.3.6.1.4.1.534.6.6.7.6.6.1.3.0.2"
        );
        assert_eq!(
            eaton.on.column.child(2).to_string(),
            ".1.3.6.1.4.1.534.6.6.7.6.6.1.4.0.2"
        );
        assert_eq!(
            (eaton.on.value, eaton.off.value, eaton.status_off),
            (0, 0, 0)
        );
        assert_eq!(
            eaton.status.child(2).to_string(),
            ".1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.2"
        );
    }

    #[test]
    fn custom_profiles_parse_their_oids() {
        let custom = CustomProfile {
            control_oid: ".1.3.6.1.4.1.99.1".to_owned(),
            status_oid: "1.3.6.1.4.1.99.2".to_owned(),
            on: 5,
            off: 6,
            status_on: 1,
            status_off: 0,
        };
        let table = Table::of(&PduProfile::Custom(custom.clone())).expect("builds");
        assert_eq!(table.on.column.child(1).to_string(), ".1.3.6.1.4.1.99.1.1");
        assert_eq!((table.on.value, table.off.value), (5, 6));
        assert_eq!(table.names, None);
        let bad = CustomProfile {
            control_oid: "enterprises.99".to_owned(),
            ..custom
        };
        assert!(Table::of(&PduProfile::Custom(bad)).is_err());
    }

    #[test]
    fn models_are_detected_by_sys_object_id() {
        let detect = |s: &str| detect_profile(&oid(s));
        assert_eq!(detect(".1.3.6.1.4.1.318.1.3.4.5"), Ok(PduProfile::ApcRpdu));
        assert_eq!(
            detect(".1.3.6.1.4.1.318.1.3.4.2"),
            Ok(PduProfile::ApcMasterSwitch)
        );
        assert_eq!(
            detect(".1.3.6.1.4.1.318.1.3.4.6"),
            Ok(PduProfile::ApcMasterSwitch)
        );
        assert_eq!(detect(".1.3.6.1.4.1.13742.6"), Ok(PduProfile::RaritanPx));
        assert_eq!(detect(".1.3.6.1.4.1.534.6.6.7"), Ok(PduProfile::EatonEpdu));
        assert!(detect(".1.3.6.1.4.1.318.1.3.4.4").is_err_and(|m| m.contains("MasterSwitch Plus")));
        let unknown = detect(".1.3.6.1.4.1.8072.3.2.10").expect_err("net-snmp is no PDU");
        assert!(
            unknown.contains("cannot tell the PDU model from sysObjectID .1.3.6.1.4.1.8072.3.2.10")
        );
        assert!(unknown.contains("set profile ="));
        // A prefix must end on an arc boundary: enterprise 3180 is not APC.
        assert!(detect(".1.3.6.1.4.1.3180.1").is_err());
    }

    #[test]
    fn name_columns_are_the_tables_and_only_for_built_in_profiles() {
        assert_eq!(
            name_column(&PduProfile::ApcMasterSwitch),
            Some(oid(APC_MS_NAME))
        );
        assert_eq!(name_column(&PduProfile::ApcRpdu), Some(oid(APC_RPDU_NAME)));
        assert_eq!(name_column(&PduProfile::RaritanPx), Some(oid(RARITAN_NAME)));
        assert_eq!(name_column(&PduProfile::EatonEpdu), Some(oid(EATON_NAME)));
        assert_eq!(name_column(&PduProfile::Auto), None);
        let custom = CustomProfile {
            control_oid: APC_MS_CONTROL.to_owned(),
            status_oid: APC_MS_CONTROL.to_owned(),
            on: 1,
            off: 2,
            status_on: 1,
            status_off: 2,
        };
        assert_eq!(name_column(&PduProfile::Custom(custom)), None);
    }

    #[test]
    fn names_are_looked_up_from_the_walk() {
        let column = oid(APC_MS_NAME);
        let rows = vec![
            (column.child(1), SnmpValue::Str(b"web1-psu1".to_vec())),
            (column.child(2), SnmpValue::Str(b"web1-psu2 ".to_vec())),
            (column.child(3), SnmpValue::Str(b"spare".to_vec())),
            (column.child(4), SnmpValue::Str(b"spare".to_vec())),
            (column.child(5).child(1), SnmpValue::Str(b"deeper".to_vec())),
            (column.child(6), SnmpValue::Int(3)),
        ];
        let names = name_map(&column, &rows);
        assert_eq!(lookup(&names, "web1-psu1"), Ok(1));
        assert_eq!(lookup(&names, "web1-psu2"), Ok(2));
        let ambiguous = lookup(&names, "spare").expect_err("two outlets");
        assert!(ambiguous.contains("3, 4"), "{ambiguous}");
        let missing = lookup(&names, "db1").expect_err("absent");
        assert!(missing.contains("\"web1-psu1\""), "{missing}");
        assert!(lookup(&names, "deeper").is_err());
    }

    #[test]
    fn new_checks_the_outlets() {
        let params = |outlets: Vec<OutletRef>, profile| SnmpPduParams {
            snmp: SnmpParams {
                address: "127.0.0.1:161".parse().expect("address"),
                security: super::super::SnmpSecurity::V2c {
                    community: crate::secret::Secret::new("private"),
                },
                request_timeout: Duration::from_millis(500),
                retries: 1,
            },
            profile,
            outlets: BTreeMap::from([("web1".to_owned(), outlets)]),
            poll_interval: Duration::from_millis(100),
            off_time: Duration::from_secs(1),
        };
        assert!(SnmpPduDevice::new("pdu", params(vec![], PduProfile::Auto)).is_err());
        assert!(
            SnmpPduDevice::new("pdu", params(vec![OutletRef::Number(0)], PduProfile::Auto))
                .is_err()
        );
        let device =
            SnmpPduDevice::new("pdu", params(vec![OutletRef::Number(1)], PduProfile::Auto))
                .expect("valid");
        assert_eq!(device.profile(), None);
        let device = SnmpPduDevice::new(
            "pdu",
            params(vec![OutletRef::Number(1)], PduProfile::EatonEpdu),
        )
        .expect("valid");
        assert_eq!(device.profile(), Some(&PduProfile::EatonEpdu));
    }
}
