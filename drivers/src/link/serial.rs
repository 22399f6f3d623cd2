//! Serial heartbeat link: one end of a null-modem cable, 8N1, no flow control.
//!
//! The port is opened exclusively twice over: `TIOCEXCL` (which keeps other unprivileged
//! openers out) and an `flock` on the descriptor (which also stops a second watchkeeper running
//! as root, since root ignores `TIOCEXCL`); the serialport crate takes both when a port is
//! opened in exclusive mode. Two agents writing one cable would interleave
//! frames and make both ends look alive to each other when neither is.
//!
//! When the port fails (a USB adapter unplugged, a pty master gone) the link reports it down,
//! closes it and reopens the same path with exponential backoff, so a replugged adapter that
//! udev gives the same name comes back without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::serial::{Deframer, FramingError, MAX_ENCODED_LEN};
use proto::Heartbeat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_serial::{
    DataBits, FlowControl, Parity, SerialPort as _, SerialPortBuilderExt, SerialStream, StopBits,
};

use super::counters::bump;
use super::rx::Receiver;
use super::{stamp, LinkCommon, LinkEvent};

/// Serial port parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialParams {
    /// Device path (a udev symlink is best: it survives renumbering).
    pub device: PathBuf,
    /// Line speed.
    pub baud: u32,
}

/// Errors opening a serial port.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The device could not be opened or configured.
    #[error("cannot open serial port {device}: {message}")]
    Open {
        /// Device path.
        device: PathBuf,
        /// What the OS said.
        message: String,
    },
    /// Another process holds the port.
    #[error("serial port {device} is in use by another process (a cable serves one agent only)")]
    Busy {
        /// Device path.
        device: PathBuf,
    },
}

/// An open, locked serial port.
#[derive(Debug)]
pub struct SerialPort {
    stream: SerialStream,
}

impl SerialPort {
    /// Opens and locks `params.device` as 8N1 without flow control.
    ///
    /// Must be called inside a tokio runtime (the port registers with its reactor).
    pub fn open(params: &SerialParams) -> Result<Self, SerialError> {
        let device = params.device.clone();
        let path = params.device.to_string_lossy();
        let mut stream = tokio_serial::new(path.as_ref(), params.baud)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .open_native_async()
            .map_err(|e| open_error(&device, &e))?;
        // Exclusive is serialport's default; set it anyway so the guarantee does not hang on a
        // default of a dependency.
        stream
            .set_exclusive(true)
            .map_err(|e| open_error(&device, &e))?;
        // Bytes that arrived while nobody had the port open are from the past; a heartbeat
        // delivered late is a lie about the present.
        stream
            .clear(tokio_serial::ClearBuffer::Input)
            .map_err(|e| open_error(&device, &e))?;
        Ok(Self { stream })
    }
}

/// Runs the link until `shutdown` turns true: sends what `outgoing` publishes, delivers valid
/// frames, and reopens the port with backoff whenever it fails.
///
/// `port` is the port opened at start-up (so that a busy or missing device is reported before
/// the agent declares itself ready); `None` starts with a reopen.
pub async fn run(
    common: LinkCommon,
    params: SerialParams,
    port: Option<SerialPort>,
    mut outgoing: watch::Receiver<Option<Heartbeat>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rx = Receiver::new();
    let mut port = port;
    let mut backoff = REOPEN_BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    loop {
        let mut p = match port.take() {
            Some(p) => p,
            None => match SerialPort::open(&params) {
                Ok(p) => p,
                Err(e) => {
                    let msg = e.to_string();
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(link = %common.name, error = %msg, "serial port unavailable, retrying");
                        last_error = Some(msg);
                    }
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                    continue;
                }
            },
        };
        bump(&common.counters.opens);
        last_error = None;
        backoff = REOPEN_BACKOFF_MIN;
        tracing::info!(link = %common.name, device = %params.device.display(), "serial port open");
        let _ = common
            .events
            .send(LinkEvent::TransportUp { link: common.link })
            .await;

        let reason = serve(&common, &mut p, &mut rx, &mut outgoing, &mut shutdown).await;
        drop(p);
        match reason {
            None => return,
            Some(reason) => {
                tracing::warn!(link = %common.name, device = %params.device.display(), %reason, "serial port failed, reopening");
                let _ = common
                    .events
                    .send(LinkEvent::TransportDown {
                        link: common.link,
                        reason,
                    })
                    .await;
                if sleep_or_shutdown(REOPEN_BACKOFF_MIN, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Serves an open port. Returns `None` on shutdown, or why the port failed.
async fn serve(
    common: &LinkCommon,
    port: &mut SerialPort,
    rx: &mut Receiver,
    outgoing: &mut watch::Receiver<Option<Heartbeat>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut deframer = Deframer::new();
    let mut buf = [0u8; READ_BUF_LEN];
    loop {
        tokio::select! {
            r = port.stream.read(&mut buf) => match r {
                Ok(0) => return Some("end of file on the port (device gone?)".into()),
                Ok(n) => {
                    for &b in &buf[..n] {
                        match deframer.push(b) {
                            None => {}
                            Some(Ok(frame)) => rx.frame(common, &frame),
                            Some(Err(FramingError::Overrun)) => bump(&common.counters.resyncs),
                            Some(Err(_)) => bump(&common.counters.crc_errors),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(format!("read failed: {e}")),
            },
            changed = outgoing.changed() => {
                if changed.is_err() {
                    return None;
                }
                let Some(template) = *outgoing.borrow_and_update() else { continue };
                let frame = stamp(&template, common.link, &common.key);
                let mut wire = [0u8; MAX_ENCODED_LEN];
                let n = proto::serial::encode(&frame, &mut wire);
                match tokio::time::timeout(WRITE_TIMEOUT, port.stream.write_all(&wire[..n])).await {
                    Ok(Ok(())) => bump(&common.counters.frames_out),
                    Ok(Err(e)) => {
                        bump(&common.counters.send_errors);
                        return Some(format!("write failed: {e}"));
                    }
                    Err(_) => {
                        // Nothing drains the line (no flow control should make this
                        // impossible); count it and try again with the next heartbeat.
                        bump(&common.counters.send_errors);
                        tracing::debug!(link = %common.name, "serial write timed out");
                    }
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return None;
                }
            }
        }
    }
}

/// Sleeps for `d`; returns true if shutdown was requested meanwhile.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

fn open_error(device: &Path, e: &tokio_serial::Error) -> SerialError {
    // serialport reports a lost flock race as NoDevice with this description, and TIOCEXCL
    // refusals as EBUSY.
    let busy = matches!(
        e.kind(),
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::ResourceBusy)
    ) || (e.kind() == tokio_serial::ErrorKind::NoDevice
        && e.description.contains("lock"));
    if busy {
        SerialError::Busy {
            device: device.to_path_buf(),
        }
    } else {
        SerialError::Open {
            device: device.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// First reopen delay: short, because a replugged adapter is usually back within a second and
/// every second without the cable is a second with one heartbeat path fewer.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reopen delay: a missing adapter is retried at least this often, cheaply.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A heartbeat that cannot be written within this time is stale anyway.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// Read buffer: several frames' worth, so a burst after a stall is read in one call.
const READ_BUF_LEN: usize = 4 * MAX_ENCODED_LEN;
