//! A QMP listener: connects to a guest's QMP socket, enables the protocol, and records every
//! event with the host time it arrived, until qemu closes the socket.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// When the host read it.
    pub at: Instant,
    /// Its name, e.g. `WATCHDOG` or `RESET`.
    pub name: String,
    /// Its `data` member.
    pub data: Value,
}

/// Connects to the control monitor at `path`, negotiates, runs `execute` with `arguments`
/// (`Value::Null` for none) and returns its `return` member. Events arriving meanwhile are
/// skipped (the event monitor records them).
pub(super) fn command(
    path: &Path,
    execute: &str,
    arguments: Value,
    timeout: Duration,
) -> io::Result<Value> {
    let stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("QMP socket {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    let mut request = serde_json::json!({ "execute": execute });
    if !arguments.is_null() {
        request["arguments"] = arguments;
    }
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    writer.write_all(format!("{request}\n").as_bytes())?;
    let mut answers = 0;
    // Two answers (capabilities, then the command); events in between are skipped. The
    // count bounds the loop; a silent qemu ends it through the read timeout.
    for _ in 0..MAX_LINES {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            // `quit` closes the socket as it answers.
            return if execute == "quit" {
                Ok(Value::Null)
            } else {
                Err(io::Error::other(format!(
                    "QMP closed before answering {execute}"
                )))
            };
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(e) = v.get("error") {
            return Err(io::Error::other(format!("QMP {execute}: {e}")));
        }
        if let Some(r) = v.get("return") {
            answers += 1;
            if answers == 2 {
                return Ok(r.clone());
            }
        }
    }
    Err(io::Error::other(format!("QMP {execute}: no answer")))
}

/// Lines read while waiting for a command's answer (events can come in between).
const MAX_LINES: usize = 1000;

/// Connects (retrying until `timeout`), negotiates capabilities, and records events into
/// `events` from a thread that ends when the socket closes.
pub(super) fn listen(
    path: &Path,
    events: Arc<Mutex<Vec<QmpEvent>>>,
    timeout: Duration,
) -> io::Result<JoinHandle<()>> {
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("QMP socket {}: {e}", path.display()),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("QMP closed during negotiation"));
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v.get("return").is_some() || v.get("error").is_some() {
            break;
        }
    }
    // Events may be minutes apart; the thread ends when qemu closes the socket.
    reader.get_ref().set_read_timeout(None)?;
    Ok(std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(name) = v.get("event").and_then(Value::as_str) {
                    let event = QmpEvent {
                        at,
                        name: name.to_owned(),
                        data: v.get("data").cloned().unwrap_or(Value::Null),
                    };
                    if let Ok(mut e) = events.lock() {
                        e.push(event);
                    }
                }
            }
            line.clear();
        }
    }))
}
