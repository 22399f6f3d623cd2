//! Queries to a running agent's Unix control socket.
//!
//! Logs say what happened; the control socket says what the agent believes now (role, peers,
//! link states), which is what a scenario asserts at its end. The protocol is one JSON request
//! line answered by one JSON response line, per connection.
//!
//! # Contract
//!
//! Every query is bounded by its timeout, covering connect, write and read; a response line is
//! at most [`RESPONSE_BYTES_MAX`] long. Errors are `io::Error`s: `TimedOut`, `InvalidData` for a
//! response that is not JSON or too long, `UnexpectedEof` for a connection closed before any
//! response, and the connect error (`NotFound`, `ConnectionRefused`) while the agent is not
//! listening yet, which [`wait_for_status`] rides out.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Asks the agent listening on `socket` for its status (`{"cmd":"status"}`).
pub fn query_status(socket: &Path, timeout: Duration) -> io::Result<Value> {
    query(socket, &serde_json::json!({ "cmd": "status" }), timeout)
}

/// Sends `request` as one line to the agent on `socket` and parses the one-line response.
pub fn query(socket: &Path, request: &Value, timeout: Duration) -> io::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(&line)?;

    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        };
        if n == 0 {
            // A peer that closes instead of ending the line still sent a whole response.
            if response.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "control socket closed without a response",
                ));
            }
            break;
        }
        if let Some(newline) = buf[..n].iter().position(|&b| b == b'\n') {
            response.extend_from_slice(&buf[..newline]);
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() > RESPONSE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("control response longer than {RESPONSE_BYTES_MAX} bytes"),
            ));
        }
    }
    serde_json::from_slice(&response).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "control response is not JSON ({e}): {}",
                String::from_utf8_lossy(&response)
            ),
        )
    })
}

/// Polls the status every [`STATUS_POLL_INTERVAL`] until `pred` holds, for up to `timeout`;
/// returns the first status that matched. Failed queries (agent not listening yet, restarting)
/// count as "not yet".
pub fn wait_for_status(
    socket: &Path,
    pred: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok(status) = query_status(socket, left.min(QUERY_TIMEOUT_MAX)) {
            if pred(&status) {
                return Some(status);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        thread::sleep(left.min(STATUS_POLL_INTERVAL));
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    // A zero timeout means "block forever" to the socket API, so zero is a timeout here.
    if left.is_zero() {
        Err(timed_out())
    } else {
        Ok(left)
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "control socket query timed out")
}

/// Status is polled this often: fine enough to time failovers to tens of milliseconds without
/// loading the agent.
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One query inside [`wait_for_status`] waits at most this long, so an agent that accepted but
/// stalled (e.g. frozen by `SIGSTOP`) does not use up the whole wait in one try.
const QUERY_TIMEOUT_MAX: Duration = Duration::from_secs(1);

/// A status response is a few KiB; anything near this limit is a bug, not a status.
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;

/// Whether a `resources --json` report says its node holds the group: `holds`, and not
/// self-fencing (waiting for its watchdog, which on real hardware is as good as gone).
pub fn report_holds(report: Option<&Value>) -> bool {
    report.is_some_and(|r| r["holds"] == Value::Bool(true) && r["role"] != "SelfFencing")
}

/// Two nodes' reports, taken one after the other, both say they hold: whether both really
/// held at once. The first report may predate a switchover the second already shows, so the
/// first node is asked again (`ask_first_again`): still holding in the same epoch, it held all
/// along, so both held when the second node was asked. Returns that second look when they
/// did, for the message.
pub fn both_held(
    first: Option<&Value>,
    ask_first_again: impl FnOnce() -> Option<Value>,
) -> Option<Value> {
    let again = ask_first_again()?;
    let same_epoch = first.is_some_and(|r| r["epoch"] == again["epoch"]);
    (report_holds(Some(&again)) && same_epoch).then_some(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_held_only_when_the_first_still_holds_in_the_same_epoch() {
        let report = |holds: bool, epoch: u64, role: &str| serde_json::json!({ "holds": holds, "epoch": epoch, "role": role });
        let first = report(true, 2, "Holder");
        assert!(report_holds(Some(&first)));
        assert!(!report_holds(Some(&report(true, 2, "SelfFencing"))));
        assert!(!report_holds(None));
        // Released since (a switchover between the two looks).
        assert!(both_held(Some(&first), || Some(report(false, 2, "Standby"))).is_none());
        assert!(both_held(Some(&first), || Some(report(true, 2, "Releasing"))).is_some());
        // Holding again in a later epoch: not the same holding.
        assert!(both_held(Some(&first), || Some(report(true, 4, "Holder"))).is_none());
        assert!(both_held(Some(&first), || None).is_none());
    }
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    /// A control socket double that answers `connections` connections with `reply(n)`.
    fn serve(
        listener: UnixListener,
        connections: usize,
        reply: impl Fn(usize) -> Option<String> + Send + 'static,
    ) -> thread::JoinHandle<Vec<String>> {
        thread::spawn(move || {
            let mut requests = Vec::new();
            for n in 0..connections {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                requests.push(request);
                if let Some(text) = reply(n) {
                    let _ = (&stream).write_all(text.as_bytes());
                }
            }
            requests
        })
    }

    #[test]
    fn status_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let server = serve(UnixListener::bind(&path).expect("bind"), 1, |_| {
            Some("{\"role\":\"primary\",\"peers\":[]}\n".into())
        });
        let status = query_status(&path, Duration::from_secs(2)).expect("status");
        assert_eq!(status["role"], "primary");
        assert_eq!(
            server.join().expect("server"),
            vec!["{\"cmd\":\"status\"}\n"]
        );
    }

    #[test]
    fn errors_are_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let missing = query_status(&path, Duration::from_millis(200)).expect_err("no socket");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);

        let listener = UnixListener::bind(&path).expect("bind");
        let server = serve(listener, 2, |n| (n == 0).then(|| "not json\n".to_string()));
        let garbage = query_status(&path, Duration::from_secs(2)).expect_err("not json");
        assert_eq!(garbage.kind(), io::ErrorKind::InvalidData);
        let closed = query_status(&path, Duration::from_secs(2)).expect_err("closed");
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
        server.join().expect("server");
    }

    #[test]
    fn silent_agent_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        // Listening but never accepting: the connection completes against the backlog.
        let _listener = UnixListener::bind(&path).expect("bind");
        let started = Instant::now();
        let err = query_status(&path, Duration::from_millis(200)).expect_err("silent");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn wait_for_status_rides_out_startup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let bind_path = path.clone();
        let server = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let listener = UnixListener::bind(&bind_path).expect("bind");
            serve(listener, 3, |n| Some(format!("{{\"n\":{n}}}\n")))
                .join()
                .expect("server")
        });
        let status = wait_for_status(&path, |s| s["n"] == 2, Duration::from_secs(5));
        assert_eq!(status.map(|s| s["n"].clone()), Some(Value::from(2)));
        assert_eq!(server.join().expect("server").len(), 3);
        assert!(wait_for_status(&path, |_| true, Duration::from_millis(100)).is_none());
    }
}
