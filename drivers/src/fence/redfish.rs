//! Redfish fencing: `ComputerSystem.Reset` on a BMC's REST API, confirmed by reading
//! `PowerState` back.
//!
//! Most current servers have a Redfish service on their BMC, and it is the one management
//! interface that reports errors as structured JSON rather than as a numeric completion code.
//! This driver keeps the [`FenceDevice`] contract as follows:
//!
//! - **Which system.** The service root's `Systems` collection is read once and cached. The
//!   configured system is matched by `@odata.id` (a URI) or by `Id`; a service with several
//!   systems and none configured is refused with the list, never guessed.
//! - **Reset types.** `ForceOff` and `On` only: fencing must not wait for an operating system to
//!   agree to shut down (`GracefulShutdown`), and `reboot` is off, confirmed off, then on, so the
//!   off is observed rather than hidden inside a `ForceRestart`.
//! - **Confirmation.** After a reset the system's `PowerState` is polled until it reads the
//!   requested state or the deadline passes ([`FenceErrorKind::Unconfirmed`]).
//! - **Time.** Every request carries a timeout, the smaller of the configured request timeout
//!   and what is left before the operation's deadline; a service that does not answer by the
//!   deadline is [`FenceErrorKind::Timeout`].
//! - **Credentials.** Basic authentication on every request, or a Redfish session (POST to
//!   `SessionService/Sessions`, `X-Auth-Token` on each request, DELETE of the session when the
//!   operation ends, also when it failed). A 401 or 403 is [`FenceErrorKind::Auth`] at once.
//!   The password is only ever sent, never logged.
//! - **TLS.** Verified by default against the system's trust store; alternatively against one
//!   CA file, or by pinning the SHA-256 fingerprint of the BMC's own certificate (the usual
//!   answer to self-signed BMC certificates). Skipping verification is a separate, explicitly
//!   named choice ([`TlsTrust::DangerInsecure`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};
use crate::secret::Secret;

/// How to reach and authenticate to one Redfish service, and which system it switches.
#[derive(Debug, Clone)]
pub struct RedfishParams {
    /// Base URL of the service, `https://host[:port]` (or `http://` for a lab).
    pub url: String,
    /// The system to switch: its `@odata.id` (starting with `/`) or its `Id`. `None` is allowed
    /// only when the service has exactly one system.
    pub system: Option<String>,
    /// User name; `None` sends no credentials (services that need none).
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Basic or session authentication.
    pub auth: RedfishAuth,
    /// How to check the service's certificate.
    pub tls: TlsTrust,
    /// Upper bound on any single request.
    pub request_timeout: Duration,
    /// Pause between two reads of `PowerState` while waiting for a reset to show.
    pub poll_interval: Duration,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedfishAuth {
    /// HTTP basic authentication on every request.
    Basic,
    /// A Redfish session per operation: log in, use `X-Auth-Token`, log out.
    Session,
}

/// How the service's TLS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// Against the system's trust store (and the host name).
    System,
    /// Against the CA certificates in this PEM file (and the host name).
    CaFile(PathBuf),
    /// The service's own certificate must have this SHA-256 fingerprint; nothing else about it
    /// is checked, since the pin names the certificate exactly.
    Pin([u8; 32]),
    /// Any certificate is accepted: anyone on the path can impersonate the BMC.
    DangerInsecure,
}

/// A Redfish service that fences one node; see the module docs.
#[derive(Debug)]
pub struct RedfishDevice {
    name: String,
    target: String,
    params: RedfishParams,
    base: reqwest::Url,
    client: reqwest::Client,
    /// `@odata.id` of the system, once discovered.
    system_uri: Option<String>,
    /// Its `ComputerSystem.Reset` target, once read.
    reset_uri: Option<String>,
}

impl RedfishDevice {
    /// A device named `name` that fences node `target` through the service in `params`.
    ///
    /// Fails with [`FenceErrorKind::Refused`] when the URL is not `http(s)://host[:port]`, a
    /// password is missing, or the TLS settings cannot be loaded (unreadable CA file).
    pub fn new(
        name: impl Into<String>,
        target: impl Into<String>,
        params: RedfishParams,
    ) -> Result<Self, FenceError> {
        let name = name.into();
        let refused = |message: String| FenceError::new(FenceErrorKind::Refused, &name, message);
        let base = reqwest::Url::parse(&params.url)
            .map_err(|e| refused(format!("url {:?}: {e}", params.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(refused(format!(
                "url {:?}: expected http(s)://host[:port]",
                params.url
            )));
        }
        if params.username.is_some() && params.password.is_none() {
            return Err(refused("a user name is set but no password".to_owned()));
        }
        let tls = tls_config(&params.tls).map_err(refused)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(params.request_timeout)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent(concat!("watchkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| refused(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            name,
            target: target.into(),
            params,
            base,
            client,
            system_uri: None,
            reset_uri: None,
        })
    }

    /// The node this device fences.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The `@odata.id` of every system the service offers, for `list` and error messages.
    pub async fn systems(&mut self, deadline: Instant) -> Result<Vec<String>, FenceError> {
        let mut session = self.login(deadline).await?;
        let result = self.members(&session, deadline).await;
        self.logout(&mut session, deadline).await;
        result
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
        if target != self.target {
            return Err(self.error(
                FenceErrorKind::TargetUnknown,
                format!("fences node {}, not {target}", self.target),
            ));
        }
        let started = Instant::now();
        let mut session = self.login(deadline).await?;
        let result = self.run(&session, op, started, deadline).await;
        self.logout(&mut session, deadline).await;
        match &result {
            Ok(outcome) => tracing::info!(
                device = %self.name, target, op = op.label(), polls = outcome.polls,
                elapsed_ms = started.elapsed().as_millis(), "redfish operation confirmed"
            ),
            Err(e) => tracing::warn!(
                device = %self.name, target, op = op.label(), kind = ?e.kind,
                error = %e.message, "redfish operation failed"
            ),
        }
        result.map(T::from_outcome)
    }

    async fn run(
        &mut self,
        session: &Session,
        op: Op,
        started: Instant,
        deadline: Instant,
    ) -> Result<Outcome, FenceError> {
        let system = self.system_uri(session, deadline).await?;
        match op {
            Op::Status => {
                let state = self.power_state(session, &system, deadline).await?;
                Ok(Outcome {
                    state,
                    polls: 1,
                    started,
                })
            }
            Op::Set(want) => {
                self.set(session, &system, want, None, started, deadline)
                    .await
            }
            Op::Reboot => {
                let off = self
                    .set(session, &system, PowerState::Off, None, started, deadline)
                    .await?;
                // Off was just read back, so the on half need not read it again.
                let on = self
                    .set(
                        session,
                        &system,
                        PowerState::On,
                        Some(PowerState::Off),
                        started,
                        deadline,
                    )
                    .await?;
                Ok(Outcome {
                    state: on.state,
                    polls: off.polls + on.polls,
                    started,
                })
            }
            Op::Monitor => {
                self.power_state(session, &system, deadline).await?;
                Ok(Outcome {
                    state: PowerState::On,
                    polls: 1,
                    started,
                })
            }
        }
    }

    /// Resets `system` towards `want` unless it already reads so, then polls until it does.
    async fn set(
        &mut self,
        session: &Session,
        system: &str,
        want: PowerState,
        known: Option<PowerState>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Outcome, FenceError> {
        let (mut state, mut polls, action) = match (known, &self.reset_uri) {
            (Some(state), Some(action)) => (state, 0, action.clone()),
            _ => {
                let doc = self.get(session, system, deadline).await?;
                let action = reset_target(system, &doc);
                self.reset_uri = Some(action.clone());
                (self.parse_state(system, &doc)?, 1, action)
            }
        };
        if state == want {
            return Ok(Outcome {
                state,
                polls,
                started,
            });
        }
        let reset = match want {
            PowerState::Off => "ForceOff",
            PowerState::On => "On",
        };
        let body = serde_json::json!({ "ResetType": reset });
        self.request(session, Method::POST, &action, Some(&body), deadline)
            .await?;
        // Bounded by the deadline: each round either returns or sleeps. The first read-back is
        // immediate and the next ones come quickly (many BMCs switch within milliseconds), then
        // they back off to the configured interval so that a slow BMC is not flooded.
        let mut pause = Duration::ZERO;
        // Whether a read after the reset has been answered.
        let mut read_back = false;
        loop {
            let next = Instant::now() + pause;
            pause = (pause * 2).clamp(FIRST_POLL, self.params.poll_interval.max(FIRST_POLL));
            if next >= deadline {
                return Err(self.unconfirmed(reset, system, state, polls));
            }
            tokio::time::sleep_until(next).await;
            state = match self.power_state(session, system, deadline).await {
                Ok(state) => state,
                // The reset was accepted and an earlier read-back answered: the deadline
                // cutting a later read leaves that answer the last word.
                Err(e) if e.kind == FenceErrorKind::Timeout && read_back => {
                    return Err(self.unconfirmed(reset, system, state, polls))
                }
                Err(e) => return Err(e),
            };
            read_back = true;
            polls += 1;
            if state == want {
                return Ok(Outcome {
                    state,
                    polls,
                    started,
                });
            }
        }
    }

    fn unconfirmed(&self, reset: &str, system: &str, state: PowerState, polls: u32) -> FenceError {
        self.error(
            FenceErrorKind::Unconfirmed,
            format!(
                "{reset} accepted but {system} still reports {} after {polls} reads",
                state_word(state)
            ),
        )
    }

    async fn power_state(
        &self,
        session: &Session,
        system: &str,
        deadline: Instant,
    ) -> Result<PowerState, FenceError> {
        let doc = self.get(session, system, deadline).await?;
        self.parse_state(system, &doc)
    }

    fn parse_state(&self, system: &str, doc: &Value) -> Result<PowerState, FenceError> {
        match doc.get("PowerState").and_then(Value::as_str) {
            // Only a plain "Off" confirms off: a system powering on or off is still powered.
            Some("Off") => Ok(PowerState::Off),
            Some("On" | "PoweringOn" | "PoweringOff" | "Paused") => Ok(PowerState::On),
            other => Err(self.error(
                FenceErrorKind::Refused,
                format!("{system} reports no usable PowerState ({other:?})"),
            )),
        }
    }

    async fn system_uri(
        &mut self,
        session: &Session,
        deadline: Instant,
    ) -> Result<String, FenceError> {
        if let Some(uri) = &self.system_uri {
            return Ok(uri.clone());
        }
        // A configured URI is used as it is: one request less per operation, and a wrong one
        // still fails as TargetUnknown (404) on first use.
        if let Some(uri) = self.params.system.as_deref().filter(|s| s.starts_with('/')) {
            self.system_uri = Some(uri.to_owned());
            return Ok(uri.to_owned());
        }
        let members = self.members(session, deadline).await?;
        let chosen = match self.params.system.as_deref() {
            None => match members.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(self.error(
                        FenceErrorKind::TargetUnknown,
                        "the service lists no systems".to_owned(),
                    ))
                }
                _ => {
                    return Err(self.error(
                        FenceErrorKind::TargetUnknown,
                        format!(
                            "the service has {} systems and none is configured; name one of: {}",
                            members.len(),
                            members.join(", ")
                        ),
                    ))
                }
            },
            Some(wanted) => match self
                .find_system(session, &members, wanted, deadline)
                .await?
            {
                Some(uri) => uri,
                None => {
                    return Err(self.error(
                        FenceErrorKind::TargetUnknown,
                        format!(
                            "no system {wanted}; the service has: {}",
                            members.join(", ")
                        ),
                    ))
                }
            },
        };
        self.system_uri = Some(chosen.clone());
        Ok(chosen)
    }

    /// The member whose URI or `Id` is `wanted`: first by URI and last path segment (no extra
    /// request), then by reading each member's `Id`.
    async fn find_system(
        &self,
        session: &Session,
        members: &[String],
        wanted: &str,
        deadline: Instant,
    ) -> Result<Option<String>, FenceError> {
        let trimmed = wanted.trim_end_matches('/');
        if let Some(uri) = members.iter().find(|m| {
            let m = m.trim_end_matches('/');
            m == trimmed || m.rsplit('/').next() == Some(trimmed)
        }) {
            return Ok(Some(uri.clone()));
        }
        for uri in members.iter().take(MAX_SYSTEMS) {
            let doc = self.get(session, uri, deadline).await?;
            if doc.get("Id").and_then(Value::as_str) == Some(wanted) {
                return Ok(Some(uri.clone()));
            }
        }
        Ok(None)
    }

    async fn members(
        &self,
        session: &Session,
        deadline: Instant,
    ) -> Result<Vec<String>, FenceError> {
        let root = self.get(session, SERVICE_ROOT, deadline).await?;
        let collection = root
            .pointer("/Systems/@odata.id")
            .and_then(Value::as_str)
            .unwrap_or(SYSTEMS);
        let doc = self.get(session, collection, deadline).await?;
        let members = doc
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .take(MAX_SYSTEMS)
                    .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(members)
    }

    async fn login(&self, deadline: Instant) -> Result<Session, FenceError> {
        let (Some(user), Some(password)) = (&self.params.username, &self.params.password) else {
            return Ok(Session::Anonymous);
        };
        match self.params.auth {
            RedfishAuth::Basic => Ok(Session::Basic {
                user: user.clone(),
                password: password.clone(),
            }),
            RedfishAuth::Session => {
                let root = self
                    .get(&Session::Anonymous, SERVICE_ROOT, deadline)
                    .await?;
                let advertised = root
                    .pointer("/Links/Sessions/@odata.id")
                    .and_then(Value::as_str);
                if advertised.is_none() && root.get("SessionService").is_none() {
                    return Err(self.error(
                        FenceErrorKind::Refused,
                        "the service offers no session service: configure auth = \"basic\""
                            .to_owned(),
                    ));
                }
                let path = advertised.unwrap_or(SESSIONS);
                let body = serde_json::json!({
                    "UserName": user,
                    "Password": password.expose(),
                });
                let response = self
                    .send(
                        &Session::Anonymous,
                        Method::POST,
                        path,
                        Some(&body),
                        deadline,
                    )
                    .await?;
                let headers = response.headers();
                let token = headers
                    .get("X-Auth-Token")
                    .and_then(|v| v.to_str().ok())
                    .map(|t| Secret::new(t.to_owned()));
                let location = headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match token {
                    Some(token) => Ok(Session::Token { token, location }),
                    None => Err(self.error(
                        FenceErrorKind::Refused,
                        "the session service answered without X-Auth-Token".to_owned(),
                    )),
                }
            }
        }
    }

    /// Ends a session; failures are logged, not returned, since the operation's own result is
    /// what matters and the BMC expires abandoned sessions.
    async fn logout(&self, session: &mut Session, deadline: Instant) {
        let Session::Token { location, .. } = session else {
            return;
        };
        let Some(location) = location.clone() else {
            tracing::warn!(device = %self.name, "session has no Location to delete");
            return;
        };
        // Logging out is worth a moment past an operation that used its whole deadline.
        let deadline = deadline.max(Instant::now() + LOGOUT_GRACE);
        if let Err(e) = self
            .send(session, Method::DELETE, &location, None, deadline)
            .await
        {
            tracing::warn!(device = %self.name, error = %e.message, "session logout failed");
        }
        *session = Session::Anonymous;
    }

    async fn get(
        &self,
        session: &Session,
        path: &str,
        deadline: Instant,
    ) -> Result<Value, FenceError> {
        self.request(session, Method::GET, path, None, deadline)
            .await
    }

    async fn request(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, FenceError> {
        let response = self.send(session, method, path, body, deadline).await?;
        let remaining = self.remaining(deadline)?;
        let bytes = match tokio::time::timeout(remaining, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(self.transport_error(&e, path)),
            Err(_) => {
                return Err(self.error(
                    FenceErrorKind::Timeout,
                    format!("{path}: no complete answer before the deadline"),
                ))
            }
        };
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                FenceErrorKind::Refused,
                format!("{path}: the answer is not JSON: {e}"),
            )
        })
    }

    /// Sends one request and checks its status; the body is left to the caller.
    async fn send(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<reqwest::Response, FenceError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.error(FenceErrorKind::Refused, format!("bad path {path:?}: {e}")))?;
        let remaining = self.remaining(deadline)?;
        let timeout = remaining.min(self.params.request_timeout);
        let mut request = self
            .client
            .request(method.clone(), url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        request = match session {
            Session::Anonymous => request,
            Session::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Session::Token { token, .. } => request.header("X-Auth-Token", token.expose()),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, path))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = tokio::time::timeout(self.remaining(deadline)?, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let detail = redfish_message(&text);
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FenceErrorKind::Auth,
            StatusCode::NOT_FOUND => FenceErrorKind::TargetUnknown,
            _ => FenceErrorKind::Refused,
        };
        Err(self.error(kind, format!("{method} {path}: HTTP {status}{detail}")))
    }

    fn remaining(&self, deadline: Instant) -> Result<Duration, FenceError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(self.error(
                FenceErrorKind::Timeout,
                "the deadline passed before the operation completed".to_owned(),
            ));
        }
        Ok(deadline - now)
    }

    fn transport_error(&self, e: &reqwest::Error, path: &str) -> FenceError {
        let chain = error_chain(e);
        let kind = if e.is_timeout() {
            FenceErrorKind::Timeout
        } else if chain.contains("certificate")
            || chain.contains("fingerprint")
            || chain.contains("InvalidCertificate")
        {
            FenceErrorKind::Refused
        } else if e.is_connect() {
            FenceErrorKind::Unreachable
        } else {
            FenceErrorKind::Refused
        };
        self.error(kind, format!("{path}: {chain}"))
    }

    fn error(&self, kind: FenceErrorKind, message: String) -> FenceError {
        FenceError::new(kind, &self.name, message)
    }
}

impl FenceDevice for RedfishDevice {
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
            let target = self.target.clone();
            self.operation::<PowerState>(&target, deadline, Op::Monitor)
                .await
                .map(|_| ())
        })
    }
}

/// Parses a certificate pin: 64 hex digits, optionally in colon-separated pairs as `openssl x509
/// -fingerprint -sha256` prints them, optionally prefixed `sha256:`.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let hex: String = text.chars().filter(|&c| c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What an operation ends with, before it is shaped into the trait's return type.
#[derive(Debug, Clone, Copy)]
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

#[derive(Debug, Clone, Copy)]
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

/// Credentials for the requests of one operation.
enum Session {
    Anonymous,
    Basic {
        user: String,
        password: Secret,
    },
    Token {
        token: Secret,
        location: Option<String>,
    },
}

/// The `ComputerSystem.Reset` target the system advertises, or the standard path.
fn reset_target(system: &str, doc: &Value) -> String {
    doc.pointer("/Actions/#ComputerSystem.Reset/target")
        .and_then(Value::as_str)
        .map_or_else(
            || {
                format!(
                    "{}/Actions/ComputerSystem.Reset",
                    system.trim_end_matches('/')
                )
            },
            str::to_owned,
        )
}

fn state_word(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "On",
        PowerState::Off => "Off",
    }
}

/// ` (message)` from a Redfish error body, or nothing.
fn redfish_message(text: &str) -> String {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return String::new();
    };
    let message = doc
        .pointer("/error/@Message.ExtendedInfo/0/Message")
        .or_else(|| doc.pointer("/error/message"))
        .and_then(Value::as_str);
    message.map_or_else(String::new, |m| format!(" ({m})"))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    // A source chain is short; the bound only guards against a cyclic one.
    for _ in 0..8 {
        let Some(s) = source else { break };
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// The TLS client configuration for `trust`, on the ring provider; also used by the agent's
/// HTTPS webhooks, so both check certificates the same way.
pub fn tls_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match trust {
        TlsTrust::System => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("cannot load the system trust store: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        TlsTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs.take(MAX_CA_CERTS) {
                let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: Some(*pin),
                provider,
            }))
            .with_no_client_auth(),
        TlsTrust::DangerInsecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts the server certificate whose SHA-256 is `pin` (any certificate when `None`), and
/// still checks the handshake signatures, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned {}",
                hex_colon(&digest),
                hex_colon(&pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

const SERVICE_ROOT: &str = "/redfish/v1/";
/// Standard locations, used when the service root does not link them.
const SYSTEMS: &str = "/redfish/v1/Systems";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
/// A BMC serves a handful of systems; a blade chassis a few dozen. The bound keeps a hostile
/// collection from costing a request per member without end.
const MAX_SYSTEMS: usize = 64;
/// BMCs redirect aliases to canonical URIs once; more than a few hops is a loop.
const MAX_REDIRECTS: usize = 5;
/// A CA bundle is a few hundred certificates at most.
const MAX_CA_CERTS: usize = 1000;
/// Pause before the second read-back after a reset; doubled up to `poll_interval` after each.
const FIRST_POLL: Duration = Duration::from_millis(20);
/// Time allowed to delete a session after the operation's deadline has passed.
const LOGOUT_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_openssl_and_plain_form() {
        let colon = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colon), Some([0xAB; 32]));
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", "0f".repeat(32))),
            Some([0x0F; 32])
        );
        assert_eq!(parse_fingerprint("AB:CD"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
    }

    #[test]
    fn redfish_error_messages_are_extracted() {
        let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"x",
            "@Message.ExtendedInfo":[{"Message":"Reset type not allowed"}]}}"#;
        assert_eq!(redfish_message(body), " (Reset type not allowed)");
        assert_eq!(redfish_message(r#"{"error":{"message":"no"}}"#), " (no)");
        assert_eq!(redfish_message("<html>"), "");
    }

    #[test]
    fn bad_urls_and_missing_passwords_are_refused() {
        let params = RedfishParams {
            url: "ftp://bmc".to_owned(),
            system: None,
            username: None,
            password: None,
            auth: RedfishAuth::Basic,
            tls: TlsTrust::System,
            request_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
        };
        let e = RedfishDevice::new("r", "n", params.clone()).err();
        assert_eq!(e.map(|e| e.kind), Some(FenceErrorKind::Refused));
        let params = RedfishParams {
            url: "https://127.0.0.1".to_owned(),
            username: Some("admin".to_owned()),
            ..params
        };
        let e = RedfishDevice::new("r", "n", params).err();
        assert_eq!(e.map(|e| e.kind), Some(FenceErrorKind::Refused));
    }
}
