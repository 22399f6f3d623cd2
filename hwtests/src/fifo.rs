//! A FIFO that stands in for `/dev/watchdog`, with a reader that timestamps every byte.
//!
//! The agent's watchdog driver feeds any FIFO by writing one byte per feed (`k`) and writes the
//! magic close (`V`) only on a clean disarm, so a test that points a node's watchdog at a
//! [`FifoWatchdog`] sees exactly when the real agent process fed, when it stopped, and how it
//! closed the device, on a machine without a watchdog. The reader opens the FIFO before the
//! agent does (a writer cannot open a FIFO without a reader) and runs until dropped.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One thing the reader saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FifoEvent {
    /// A byte arrived.
    Byte(Instant, u8),
    /// Every writer closed the FIFO.
    Closed(Instant),
}

/// A FIFO watchdog stand-in and its recording reader; see the module docs.
#[derive(Debug)]
pub struct FifoWatchdog {
    path: PathBuf,
    events: Arc<Mutex<Vec<FifoEvent>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl FifoWatchdog {
    /// Creates the FIFO at `path` and starts reading it.
    pub fn new(path: &Path) -> io::Result<Self> {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (events, stop) = (events.clone(), stop.clone());
            std::thread::spawn(move || read_loop(file, &events, &stop))
        };
        Ok(Self {
            path: path.to_owned(),
            events,
            stop,
            reader: Some(reader),
        })
    }

    /// The FIFO's path, to put in the node's `watchdog.device`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<FifoEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Arrival times of the keepalive bytes (anything but the magic close).
    pub fn feeds(&self) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FifoEvent::Byte(at, b) if b != MAGIC_CLOSE => Some(at),
                _ => None,
            })
            .collect()
    }

    /// Whether the magic close `V` was written.
    pub fn magic_closed(&self) -> bool {
        self.events()
            .iter()
            .any(|e| matches!(e, FifoEvent::Byte(_, MAGIC_CLOSE)))
    }

    /// Waits up to `timeout` for the magic close; returns whether it came.
    pub fn wait_magic_close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.magic_closed() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        self.magic_closed()
    }

    /// When the writer closed the FIFO, if it has.
    pub fn closed_at(&self) -> Option<Instant> {
        self.events().into_iter().find_map(|e| match e {
            FifoEvent::Closed(at) => Some(at),
            FifoEvent::Byte(..) => None,
        })
    }

    /// Waits up to `timeout` until `n` feeds have arrived; returns whether they did.
    pub fn wait_feeds(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.feeds().len() >= n {
                return true;
            }
            std::thread::sleep(POLL);
        }
        self.feeds().len() >= n
    }
}

impl Drop for FifoWatchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_loop(mut file: File, events: &Mutex<Vec<FifoEvent>>, stop: &AtomicBool) {
    let mut buf = [0u8; 256];
    let mut writer_seen = false;
    let mut closed = false;
    while !stop.load(Ordering::SeqCst) {
        let ready = {
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(POLL_MS)).unwrap_or(0)
        };
        if ready == 0 {
            continue;
        }
        match file.read(&mut buf) {
            Ok(0) => {
                // No writer: before the agent opened the FIFO, or after it closed it. A FIFO
                // without writers polls readable at once, so wait instead of spinning.
                if writer_seen && !closed {
                    closed = true;
                    push(events, FifoEvent::Closed(Instant::now()));
                }
                std::thread::sleep(POLL);
            }
            Ok(n) => {
                let now = Instant::now();
                writer_seen = true;
                closed = false;
                for &b in &buf[..n] {
                    push(events, FifoEvent::Byte(now, b));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn push(events: &Mutex<Vec<FifoEvent>>, event: FifoEvent) {
    if let Ok(mut events) = events.lock() {
        if events.len() < MAX_EVENTS {
            events.push(event);
        }
    }
}

/// The magic close, as the driver writes it.
pub const MAGIC_CLOSE: u8 = b'V';

/// How long one poll waits; also the reader's reaction time to being dropped.
const POLL_MS: u16 = 20;
const POLL: Duration = Duration::from_millis(POLL_MS as u64);

/// Events kept at most: a day of feeds at 100 Hz would not reach it in a test.
const MAX_EVENTS: usize = 1 << 20;
