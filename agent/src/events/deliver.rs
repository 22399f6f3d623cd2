//! Delivering alerts to one recipient: a hook program, an SMTP relay or a webhook.
//!
//! Each recipient has its own task and queue, so a slow relay never delays a hook. Every
//! delivery has the recipient's timeout: a hook still running then is killed (its whole
//! process group, by the group id the agent created for it, so a shell's children go too) and
//! reaped; an SMTP or HTTP exchange is abandoned. Failures are logged and counted, never
//! retried: the next alert is more useful than a late copy of this one.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Alert, Counters};
use crate::config::{AlertConfig, AlertKind};

/// Errors building a recipient or delivering to it.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The HTTP client or its TLS setup could not be built.
    #[error("webhook {url}: {reason}")]
    Setup {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A hook could not be started.
    #[error("hook {program}: cannot start: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A hook exited unsuccessfully.
    #[error("hook {program}: {status}{stderr}")]
    HookFailed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of what it wrote to stderr, prefixed with `: `, or nothing.
        stderr: String,
    },
    /// The delivery did not finish within the recipient's timeout.
    #[error("{what}: no answer within {timeout_ms} ms{killed}")]
    TimedOut {
        /// Recipient description.
        what: String,
        /// The timeout.
        timeout_ms: u64,
        /// `; killed` for a hook.
        killed: &'static str,
    },
    /// The mail could not be built (an address the relay would refuse).
    #[error("smtp {relay}: cannot build the mail: {reason}")]
    Mail {
        /// The relay.
        relay: String,
        /// Why.
        reason: String,
    },
    /// The relay refused the mail or could not be reached.
    #[error("smtp {relay}: {source}")]
    Smtp {
        /// The relay.
        relay: String,
        /// What lettre said.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The webhook could not be reached (refused, TLS, timeout of the exchange).
    #[error("webhook {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What reqwest said, with its causes (the TLS error is only in the chain).
        reason: String,
    },
    /// The webhook answered with a non-success status.
    #[error("webhook {url}: HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
}

/// One recipient, ready to deliver.
pub struct Sink {
    config: AlertConfig,
    how: How,
}

enum How {
    Hook(Vec<String>),
    Smtp {
        relay: String,
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: String,
        to: Vec<String>,
    },
    Webhook {
        url: String,
        client: reqwest::Client,
    },
}

impl Sink {
    /// Builds the recipient described by `config`, for node `node` (the SMTP greeting name).
    pub fn new(config: &AlertConfig, node: &str) -> Result<Self, DeliverError> {
        let how = match &config.kind {
            AlertKind::Hook { command } => How::Hook(command.clone()),
            AlertKind::Smtp {
                host,
                port,
                from,
                to,
            } => {
                let hello = nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| node.to_owned());
                // A plain relay on the site's network, as the configuration documents.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(*port)
                    .hello_name(ClientId::Domain(hello))
                    .timeout(Some(config.timeout))
                    .build();
                How::Smtp {
                    relay: format!("{host}:{port}"),
                    transport,
                    from: from.clone(),
                    to: to.clone(),
                }
            }
            AlertKind::Webhook { url, ca_file } => {
                let trust = match ca_file {
                    Some(f) => drivers::fence::redfish::TlsTrust::CaFile(f.clone()),
                    None => drivers::fence::redfish::TlsTrust::System,
                };
                let setup = |reason: String| DeliverError::Setup {
                    url: url.clone(),
                    reason,
                };
                let tls = drivers::fence::redfish::tls_config(&trust).map_err(setup)?;
                let client = reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .no_proxy()
                    .timeout(config.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("watchkeeper/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| setup(format!("cannot build the HTTP client: {e}")))?;
                How::Webhook {
                    url: url.clone(),
                    client,
                }
            }
        };
        Ok(Self {
            config: config.clone(),
            how,
        })
    }

    /// Delivers one alert within the recipient's timeout.
    pub async fn deliver(&self, alert: &Alert) -> Result<(), DeliverError> {
        let timeout = self.config.timeout;
        match &self.how {
            How::Hook(command) => hook(command, alert, timeout).await,
            How::Smtp {
                relay,
                transport,
                from,
                to,
            } => {
                let mail = mail(alert, from, to).map_err(|reason| DeliverError::Mail {
                    relay: relay.clone(),
                    reason,
                })?;
                match tokio::time::timeout(timeout, transport.send(mail)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(source)) => Err(DeliverError::Smtp {
                        relay: relay.clone(),
                        source,
                    }),
                    Err(_) => Err(DeliverError::TimedOut {
                        what: format!("smtp {relay}"),
                        timeout_ms: ms(timeout),
                        killed: "",
                    }),
                }
            }
            How::Webhook { url, client } => {
                let body = serde_json::to_vec(alert).unwrap_or_default();
                let send = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send();
                match tokio::time::timeout(timeout, send).await {
                    Ok(Ok(r)) if r.status().is_success() => Ok(()),
                    Ok(Ok(r)) => Err(DeliverError::HttpStatus {
                        url: url.clone(),
                        status: r.status().as_u16(),
                    }),
                    Ok(Err(e)) => Err(DeliverError::Http {
                        url: url.clone(),
                        reason: error_chain(&e),
                    }),
                    Err(_) => Err(DeliverError::TimedOut {
                        what: format!("webhook {url}"),
                        timeout_ms: ms(timeout),
                        killed: "",
                    }),
                }
            }
        }
    }
}

/// The delivery task of one recipient: delivers each alert in turn until the queue closes.
pub(super) async fn run(sink: Sink, mut rx: mpsc::Receiver<Arc<Alert>>, counters: Arc<Counters>) {
    while let Some(alert) = rx.recv().await {
        let t = Instant::now();
        let name = &sink.config.name;
        match sink.deliver(&alert).await {
            Ok(()) => {
                counters.alerts_delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(event = "alert_delivered", alert = %name, kind = %alert.kind, sequence = alert.sequence, ms = ms(t.elapsed()), "alert {} ({}) delivered to {name} in {} ms", alert.sequence, alert.kind, ms(t.elapsed()));
            }
            Err(e) => {
                counters.alerts_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event = "alert_failed", alert = %name, kind = %alert.kind, sequence = alert.sequence, error = %e, "alert {} ({}) not delivered to {name}: {e}", alert.sequence, alert.kind);
            }
        }
    }
}

/// The environment a hook gets, Pacemaker-style (`CRM_alert_*` there).
pub fn hook_env(alert: &Alert) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("WATCHKEEPER_EVENT_KIND", alert.kind.clone()),
        ("WATCHKEEPER_EVENT_NODE", alert.node.clone()),
        ("WATCHKEEPER_EVENT_CLUSTER", alert.cluster.clone()),
        ("WATCHKEEPER_EVENT_TARGET", opt(&alert.target)),
        ("WATCHKEEPER_EVENT_EPOCH", alert.epoch.to_string()),
        ("WATCHKEEPER_EVENT_OUTCOME", opt(&alert.outcome)),
        (
            "WATCHKEEPER_EVENT_DURATION_MS",
            alert.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
        ),
        ("WATCHKEEPER_EVENT_MESSAGE", alert.message.clone()),
        ("WATCHKEEPER_EVENT_TIME", alert.time.clone()),
        ("WATCHKEEPER_EVENT_UNIX_MS", alert.unix_ms.to_string()),
        ("WATCHKEEPER_EVENT_SEQUENCE", alert.sequence.to_string()),
    ]
}

async fn hook(command: &[String], alert: &Alert, timeout: Duration) -> Result<(), DeliverError> {
    let program = command.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(command.iter().skip(1))
        .envs(hook_env(alert))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| DeliverError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    let json = serde_json::to_vec(alert).unwrap_or_default();
    let stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let work = async {
        if let Some(mut stdin) = stdin {
            // A hook that ignores its stdin closes the pipe early; that is its right.
            let _ = stdin.write_all(&json).await;
            let _ = stdin.write_all(b"\n").await;
            drop(stdin);
        }
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(STDERR_KEEP).read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    };
    let outcome = tokio::time::timeout(timeout, work).await;
    match outcome {
        Ok((Ok(status), err)) if status.success() => {
            let _ = err;
            Ok(())
        }
        Ok((Ok(status), err)) => {
            let text = String::from_utf8_lossy(&err).trim().to_owned();
            Err(DeliverError::HookFailed {
                program,
                status,
                stderr: if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                },
            })
        }
        Ok((Err(source), _)) => Err(DeliverError::Spawn { program, source }),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group id is the hook's PID (process_group(0) above).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // Reaped here; bounded because SIGKILL cannot be ignored.
            let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
            Err(DeliverError::TimedOut {
                what: format!("hook {program}"),
                timeout_ms: ms(timeout),
                killed: "; killed",
            })
        }
    }
}

fn mail(alert: &Alert, from: &str, to: &[String]) -> Result<Message, String> {
    let subject = format!(
        "[watchkeeper {}] {} on {}{}{}",
        alert.cluster,
        alert.kind,
        alert.node,
        alert
            .target
            .as_ref()
            .map_or(String::new(), |t| format!(": {t}")),
        alert
            .outcome
            .as_ref()
            .map_or(String::new(), |o| format!(" {o}")),
    );
    let json = serde_json::to_string_pretty(alert).unwrap_or_default();
    let body = format!("{}\n\n{json}\n", alert.message);
    let mut builder = Message::builder()
        .from(from.parse().map_err(|e| format!("from {from}: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        builder = builder.to(t.parse().map_err(|e| format!("to {t}: {e}"))?);
    }
    builder.body(body).map_err(|e| e.to_string())
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    // A source chain is short; the bound only guards against a cyclic one.
    for _ in 0..8 {
        let Some(s) = source else { break };
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A hook's stderr kept for the failure log: enough for an error message, not a flood.
const STDERR_KEEP: u64 = 2048;
/// How long reaping a killed hook may take before it is left to `kill_on_drop`.
const REAP_GRACE: Duration = Duration::from_secs(2);
