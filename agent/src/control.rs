//! The control socket: a Unix stream socket on which `watchkeeper status` (and scripts) ask the
//! running agent questions.
//!
//! The protocol is one JSON object per line each way: a request such as `{"cmd":"status"}`,
//! `{"cmd":"resources"}` or an operator command (`{"cmd":"switchover","node":"beta"}`,
//! `{"cmd":"standby"}`, `{"cmd":"unstandby"}`, `{"cmd":"cleanup"}`), answered by one line
//! holding the answer object, or `{"error":"..."}`. Lines are bounded,
//! connections are bounded in number and time, and a client that misbehaves is dropped without
//! touching the main loop, which only ever sees complete, parsed requests.
//!
//! The socket is created mode 0660, so only root and the socket's group may query. A socket
//! file left by a crashed agent is replaced; one that still answers belongs to a running agent,
//! and binding then fails instead of stealing it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::runtime::Status;

/// Errors on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another agent answers on this socket.
    #[error("control socket {path} is in use by a running agent")]
    InUse {
        /// Socket path.
        path: PathBuf,
    },
    /// A socket call failed.
    #[error("control socket {path}: {what}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Which step.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error or something unreadable.
    #[error("control socket {path}: {message}")]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The agent did not answer in time.
    #[error("control socket {path}: no answer within {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The status report.
    Status,
    /// The resource group: each resource's state, last action and last monitor.
    Resources,
    /// Planned handover of the group to `node` (or to any peer that can take it).
    Switchover {
        /// Target node name; `None`: the peer.
        #[serde(default)]
        node: Option<String>,
    },
    /// Never hold the group on this node; hand it over if holding.
    Standby,
    /// Undo `standby`.
    Unstandby,
    /// Forget the resource failures that made this node ineligible to hold the group.
    Cleanup,
}

/// A parsed request waiting for the main loop's answer.
#[derive(Debug)]
pub struct ControlRequest {
    /// What was asked.
    pub request: Request,
    reply: oneshot::Sender<serde_json::Value>,
}

impl ControlRequest {
    /// A request from inside the agent (the HTTP task), and where its answer will arrive.
    pub fn new(request: Request) -> (Self, oneshot::Receiver<serde_json::Value>) {
        let (reply, answer) = oneshot::channel();
        (Self { request, reply }, answer)
    }

    /// Answers a status request.
    pub fn reply(self, status: Status) {
        let value = serde_json::to_value(status).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("cannot render status: {e}") }),
        );
        self.answer(value);
    }

    /// Answers with any JSON object (`{"error": ...}` for a refusal).
    pub fn answer(self, value: serde_json::Value) {
        // The client may have gone away; nothing to do then.
        let _ = self.reply.send(value);
    }
}

/// The bound control socket.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlListener {
    /// Binds `path`, replacing a stale socket file (inside a tokio runtime).
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |what| {
            let path = path.to_path_buf();
            move |source| ControlError::Io { path, what, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create directory"))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(io("remove stale socket"))?;
        }
        let listener = UnixListener::bind(path).map_err(io("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(io("chmod"))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Accepts clients until shutdown, forwarding their requests to `requests`. Removes the
    /// socket file when it stops.
    pub async fn serve(
        self,
        requests: mpsc::Sender<ControlRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::debug!("control socket: too many clients, dropping one");
                            continue;
                        };
                        let requests = requests.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, client(stream, requests)).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn client(stream: UnixStream, requests: mpsc::Sender<ControlRequest>) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(MAX_LINE as u64)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests
                    .send(ControlRequest { request, reply: tx })
                    .await
                    .is_err()
                {
                    return;
                }
                match rx.await {
                    Ok(value) => serde_json::to_string(&value),
                    Err(_) => return,
                }
            }
            Err(e) => {
                serde_json::to_string(&serde_json::json!({ "error": format!("bad request: {e}") }))
            }
        };
        let Ok(mut answer) = answer else { return };
        answer.push('\n');
        if wr.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Asks the agent at `path` for its status.
pub async fn query_status(path: &Path, timeout: Duration) -> Result<Status, ControlError> {
    let value = query(path, &Request::Status, timeout).await?;
    serde_json::from_value(value).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        message: format!("unexpected answer: {e}"),
    })
}

/// Sends `request` to the agent at `path` and returns its answer; `{"error": ...}` answers
/// are errors.
pub async fn query(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let fut = async {
        let io = |what| {
            let path = path.to_path_buf();
            move |source| ControlError::Io { path, what, source }
        };
        let stream = UnixStream::connect(path).await.map_err(io("connect"))?;
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_string(request).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            message: format!("cannot encode the request: {e}"),
        })?;
        line.push('\n');
        wr.write_all(line.as_bytes()).await.map_err(io("write"))?;
        let mut line = String::new();
        BufReader::new(rd.take(MAX_STATUS_LEN as u64))
            .read_line(&mut line)
            .await
            .map_err(io("read"))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| ControlError::Protocol {
                path: path.to_path_buf(),
                message: format!("unreadable answer: {e}"),
            })?;
        if let Some(err) = value.get("error") {
            return Err(ControlError::Protocol {
                path: path.to_path_buf(),
                message: err.as_str().map_or_else(|| err.to_string(), str::to_owned),
            });
        }
        Ok(value)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_path_buf(),
            timeout,
        })?
}

/// Clients served at once; more are refused, so a flood cannot exhaust the agent.
const MAX_CLIENTS: usize = 8;
/// A client connection lives at most this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line read from a client.
const MAX_LINE: usize = 4096;
/// Longest answer accepted by the client side (16 nodes × 8 links fit with room to spare).
const MAX_STATUS_LEN: usize = 1 << 20;
/// Pause after a failed accept (e.g. out of descriptors), so the loop cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
