//! The HTTP listener of `[http]`: `GET /metrics` (OpenMetrics text) and, when
//! `status_page = true`, `GET /` (the HTML status page). Nothing else, and nothing that
//! changes the agent: it is read-only by construction, since it can only send the control
//! queue `Status` and `Resources` requests.
//!
//! # Bounds
//!
//! Everything is bounded so that a misbehaving client cannot cost the agent more than a few
//! idle tasks: at most [`MAX_CONNECTIONS`] connections are served at once (further ones wait
//! in the kernel's backlog), one request per connection (no keep-alive), headers must arrive
//! within [`HEADER_TIMEOUT`] and a whole connection ends after [`CONNECTION_TIMEOUT`]. The main
//! loop is asked through the control queue with [`SNAPSHOT_TIMEOUT`]: a stalled loop costs a
//! 503, never a blocked task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{Metrics, ResourceView, Snapshot};
use crate::control::{self, ControlRequest};
use crate::recent::RecentEvents;
use crate::runtime::Status;
use crate::watchdog::FeedGaps;

/// Errors of the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listening address could not be bound.
    #[error("http listener {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why a snapshot could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The main loop did not answer in time.
    #[error("the agent's main loop did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The main loop has ended.
    #[error("the agent is stopping")]
    Stopping,
    /// The answer was not a status report.
    #[error("unexpected answer from the main loop: {0}")]
    Answer(String),
}

/// What the listener serves from.
#[derive(Debug, Clone)]
pub struct Context {
    /// The main loop's control queue.
    pub requests: mpsc::Sender<ControlRequest>,
    /// Histograms recorded by the runtime.
    pub metrics: Metrics,
    /// The watchdog feeder's gaps, when this node has a watchdog.
    pub feed_gaps: Option<FeedGaps>,
    /// Recent engine events.
    pub recent: Arc<RecentEvents>,
    /// Whether `/` serves the status page.
    pub status_page: bool,
}

/// Binds `address`; done before the agent announces anything, so a port in use stops it.
/// Must be called inside a tokio runtime.
pub fn bind(address: SocketAddr) -> Result<TcpListener, HttpError> {
    let bound = std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std);
    bound.map_err(|source| HttpError::Bind { address, source })
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, ctx: Context, mut stop: watch::Receiver<bool>) {
    let ctx = Arc::new(ctx);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A free slot first, so that a flood waits in the backlog rather than in memory.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(event = "http_accept_failed", error = %e, "http listener: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let ctx = ctx.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(respond(&ctx, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A client that reads too slowly is cut off; nothing to report beyond that.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// Asks the main loop for a snapshot, bounded by [`SNAPSHOT_TIMEOUT`].
pub async fn snapshot(ctx: &Context) -> Result<Snapshot, SnapshotError> {
    let status = ask(&ctx.requests, control::Request::Status).await?;
    let status: Status =
        serde_json::from_value(status).map_err(|e| SnapshotError::Answer(e.to_string()))?;
    let resources = ask(&ctx.requests, control::Request::Resources).await?;
    Ok(Snapshot {
        status,
        resources: ResourceView::from_report(&resources),
        events: ctx.recent.newest_first(),
    })
}

async fn ask(
    requests: &mpsc::Sender<ControlRequest>,
    request: control::Request,
) -> Result<serde_json::Value, SnapshotError> {
    let (req, answer) = ControlRequest::new(request);
    let exchange = async {
        requests
            .send(req)
            .await
            .map_err(|_| SnapshotError::Stopping)?;
        answer.await.map_err(|_| SnapshotError::Stopping)
    };
    tokio::time::timeout(SNAPSHOT_TIMEOUT, exchange)
        .await
        .map_err(|_| SnapshotError::Timeout(SNAPSHOT_TIMEOUT))?
}

async fn respond(ctx: &Context, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let page = path == "/" && ctx.status_page;
    if path != "/metrics" && !page {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this agent serves /metrics".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET: this endpoint is read-only".into(),
        );
    }
    let snap = match snapshot(ctx).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    if page {
        return with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::page::render(&snap),
        );
    }
    match super::encode(&snap, &ctx.metrics, ctx.feed_gaps.as_ref()) {
        Ok(text) => with_type(StatusCode::OK, super::CONTENT_TYPE, text),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", text)
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Connections served at once: a Prometheus server or two, a browser, an operator's curl.
pub const MAX_CONNECTIONS: usize = 8;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, request and response together.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for the main loop, which answers within one iteration (well
/// under a millisecond) unless it is stalled; a scrape timeout is usually 10 s, so the
/// scraper still gets the 503 in time to record it.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Stands in for the main loop: answers `answers` requests from the queue, then stops
    /// reading it (stalls) while keeping it open.
    fn fake_loop(mut rx: mpsc::Receiver<ControlRequest>, answers: usize) {
        tokio::spawn(async move {
            for _ in 0..answers {
                let Some(req) = rx.recv().await else { return };
                match req.request {
                    control::Request::Status => req.reply(crate::metrics::tests::snapshot().status),
                    _ => req.answer(serde_json::json!({ "resources": [
                        { "name": "catalog", "type": "pgsql", "state": "running" }
                    ]})),
                }
            }
            std::future::pending::<()>().await;
            drop(rx);
        });
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .expect("answered in time")
            .expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }

    #[tokio::test]
    async fn serves_metrics_refuses_the_rest_and_answers_503_when_the_loop_stalls() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = mpsc::channel(4);
        // One scrape is two requests (status, resources).
        fake_loop(rx, 2);
        let ctx = Context {
            requests: tx,
            metrics: Metrics::default(),
            feed_gaps: None,
            recent: Arc::default(),
            status_page: false,
        };
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(listener, ctx, stop));

        let (code, text) = request(addr, "GET", "/metrics").await;
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("watchkeeper_epoch 7.0"), "{text}");
        assert!(
            text.contains("resource=\"catalog\",state=\"running\""),
            "{text}"
        );
        assert!(text.contains("application/openmetrics-text"), "{text}");
        let (code, text) = request(addr, "GET", "/").await;
        assert_eq!(code, 404, "the page is off: {text}");
        let (code, text) = request(addr, "POST", "/metrics").await;
        assert_eq!(code, 405, "{text}");

        let began = std::time::Instant::now();
        let (code, text) = request(addr, "GET", "/metrics").await;
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("did not answer within 2000 ms"), "{text}");
        assert!(began.elapsed() < SNAPSHOT_TIMEOUT + Duration::from_secs(2));

        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops when told")
            .expect("server task");
    }
}
