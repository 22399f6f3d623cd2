//! The resource group on this node: the configured `[[resource]]` entries turned into
//! executors, with their deadlines settled.
//!
//! The order, the rollback of a failed start, the local restarts and the handover are the
//! engine's decisions; this module only builds what carries them out. A resource whose executor
//! cannot be built (a vip without an interface for this node) is kept with the reason, so that
//! starting it fails with that reason instead of the agent refusing to run: the peer may hold
//! the group and this node must still be able to stand by.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use drivers::resource::mount::{FsckPolicy, MountParams, MountResource};
use drivers::resource::ocf::{action_timeout, OcfParams, OcfResource};
use drivers::resource::pgsql::{PgsqlParams, PgsqlResource, RejoinPolicy};
use drivers::resource::script::{ScriptParams, ScriptResource};
use drivers::resource::systemd::{SystemdParams, SystemdResource};
use drivers::resource::vip::{VipParams, VipResource};
use drivers::resource::Resource;
use tokio::sync::Mutex;

use crate::config::{
    Config, FsckWord, RejoinWord, ResourceConfig, ResourceKind, DEFAULT_ACTION_TIMEOUT,
    DEFAULT_MONITOR_TIMEOUT,
};
use crate::runtime::driver::{Slot, SlotReport, Timeouts};

/// How long reading an OCF agent's meta-data may take at start-up.
const META_DATA_TIMEOUT: Duration = Duration::from_secs(5);

/// `{node}` in an OCF parameter, a script argument or an environment value is replaced by the
/// local node's name, so one configuration can give each node its own path or peer.
fn per_node(text: &str, node: &str) -> String {
    text.replace("{node}", node)
}

/// The executor of one resource on node `node`.
pub fn build(config: &ResourceConfig, node: &str) -> Result<Box<dyn Resource>, String> {
    let name = config.name.clone();
    let subst_all = |v: &[String]| v.iter().map(|a| per_node(a, node)).collect::<Vec<_>>();
    let subst_map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.clone(), per_node(v, node)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let built: Result<Box<dyn Resource>, drivers::resource::ResourceError> = match &config.kind {
        ResourceKind::Ocf {
            agent,
            ocf_root,
            params,
        } => OcfResource::new(
            name.clone(),
            OcfParams {
                agent: agent.clone(),
                ocf_root: ocf_root.clone(),
                instance: name.clone(),
                params: subst_map(params),
                prefix: Vec::new(),
            },
        )
        .map(|r| Box::new(r) as Box<dyn Resource>),
        ResourceKind::Script {
            start,
            stop,
            status,
            env,
        } => ScriptResource::new(
            name.clone(),
            ScriptParams {
                start: subst_all(start),
                stop: subst_all(stop),
                status: subst_all(status),
                env: subst_map(env),
            },
        )
        .map(|r| Box::new(r) as Box<dyn Resource>),
        ResourceKind::Systemd { unit } => {
            SystemdResource::new(name.clone(), SystemdParams::new(unit.clone()))
                .map(|r| Box::new(r) as Box<dyn Resource>)
        }
        ResourceKind::Mount {
            device,
            mountpoint,
            fstype,
            options,
            fsck,
        } => MountResource::new(
            name.clone(),
            MountParams {
                device: device.clone(),
                mountpoint: mountpoint.clone(),
                fstype: fstype.clone(),
                options: options.clone(),
                fsck: match fsck {
                    FsckWord::Never => FsckPolicy::Never,
                    FsckWord::Preen => FsckPolicy::Preen,
                    FsckWord::Force => FsckPolicy::Force,
                },
            },
        )
        .map(|r| Box::new(r) as Box<dyn Resource>),
        ResourceKind::Vip {
            address,
            prefix,
            interface,
        } => {
            let Some(interface) = interface.for_node(node) else {
                return Err(format!("vip {name} names no interface for node {node}"));
            };
            VipResource::new(
                name.clone(),
                VipParams {
                    address: *address,
                    prefix: *prefix,
                    interface: interface.clone(),
                    label: None,
                },
            )
            .map(|r| Box::new(r) as Box<dyn Resource>)
        }
        ResourceKind::Pgsql {
            bindir,
            datadir,
            port,
            host,
            user,
            superuser,
            password_file,
            primary_conninfo,
            rejoin,
        } => match (datadir.for_node(node), port.for_node(node)) {
            (Some(datadir), Some(port)) => PgsqlResource::new(
                name.clone(),
                PgsqlParams {
                    bindir: bindir.clone(),
                    datadir: datadir.clone(),
                    port: *port,
                    host: host.clone(),
                    user: user.clone(),
                    superuser: superuser.clone(),
                    password_file: password_file.clone(),
                    primary_conninfo: primary_conninfo
                        .as_ref()
                        .and_then(|c| c.for_node(node))
                        .cloned(),
                    rejoin: match rejoin {
                        RejoinWord::Rewind => RejoinPolicy::Rewind,
                        RejoinWord::Reclone => RejoinPolicy::Reclone,
                        RejoinWord::Manual => RejoinPolicy::Manual,
                    },
                },
            )
            .map(|r| Box::new(r) as Box<dyn Resource>),
            _ => {
                return Err(format!(
                    "pgsql {name} names no data directory or port for node {node}"
                ))
            }
        },
    };
    built.map_err(|e| e.to_string())
}

/// Every resource of the group for node `node`, with deadlines settled: configured values
/// first, then what an OCF agent's meta-data advertises, then the defaults.
pub(crate) async fn slots(config: &Config, node: &str) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(config.resources.len());
    for r in &config.resources {
        let (executor, build_error) = match build(r, node) {
            Ok(e) => (Some(e), None),
            Err(e) => {
                tracing::error!(event = "resource_unbuildable", resource = %r.name, error = %e, "resource {} cannot be run on this node: {e}", r.name);
                (None, Some(e))
            }
        };
        let mut advertised = (None, None, None);
        if let (
            ResourceKind::Ocf {
                agent,
                ocf_root,
                params,
            },
            true,
        ) = (
            &r.kind,
            r.start_timeout.is_none() || r.stop_timeout.is_none() || r.monitor_timeout.is_none(),
        ) {
            let probe = OcfResource::new(
                r.name.clone(),
                OcfParams {
                    agent: agent.clone(),
                    ocf_root: ocf_root.clone(),
                    instance: r.name.clone(),
                    params: params.clone(),
                    prefix: Vec::new(),
                },
            );
            if let Ok(probe) = probe {
                let deadline = tokio::time::Instant::now() + META_DATA_TIMEOUT;
                match probe.meta_data(deadline).await {
                    Ok(meta) => {
                        advertised = (
                            action_timeout(&meta, "start"),
                            action_timeout(&meta, "stop"),
                            action_timeout(&meta, "monitor"),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(resource = %r.name, error = %e, "cannot read the agent's meta-data; default timeouts apply")
                    }
                }
            }
        }
        let timeouts = Timeouts {
            start: r
                .start_timeout
                .or(advertised.0)
                .unwrap_or(DEFAULT_ACTION_TIMEOUT),
            stop: r
                .stop_timeout
                .or(advertised.1)
                .unwrap_or(DEFAULT_ACTION_TIMEOUT),
            monitor: r
                .monitor_timeout
                .or(advertised.2)
                .unwrap_or(DEFAULT_MONITOR_TIMEOUT),
        };
        slots.push(Slot {
            config: r.clone(),
            executor: executor.map(|e| Arc::new(Mutex::new(e))),
            build_error,
            timeouts,
            running: Arc::new(AtomicBool::new(false)),
            last: Arc::new(StdMutex::new(SlotReport {
                state: "stopped".to_owned(),
                ..SlotReport::default()
            })),
            next_monitor: None,
            followed: Arc::default(),
        });
    }
    slots
}
