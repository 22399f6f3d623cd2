//! A serial null-modem cable made of two pty pairs, relayed by the demo.
//!
//! The agents' serial link opens a tty path and exchanges COBS frames over it; on one machine
//! two pty pairs whose masters are joined stand in for two USB adapters and a cable. The test
//! rig has a full version with faults (`hwtests::cable`); the agent crate cannot depend on it,
//! and the demo needs only the wire, so this is the small part of it.
//!
//! # Contract
//!
//! - Bytes written on one path arrive on the other, in order; what the receiver's input buffer
//!   does not take is dropped, as a UART overruns.
//! - The cable keeps each slave open for its whole life, so a master never reads `EIO` while an
//!   agent is down or restarting (the SIGKILLed holder), and the slave stays raw across reopens.
//! - Dropping the cable stops the relay thread within one poll interval, closes both pairs and
//!   removes both symlinks.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use nix::unistd::{read, ttyname, write};

/// What can go wrong building the cable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CableError {
    /// A pty pair could not be opened or set up.
    #[error("cannot open a pty pair ({step}): {source}")]
    Pty {
        /// Which step failed.
        step: &'static str,
        /// What the OS said.
        #[source]
        source: Errno,
    },
    /// A symlink to a slave could not be made.
    #[error("cannot link {path} to the pty: {source}")]
    Link {
        /// The symlink path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The relay thread could not be started.
    #[error("cannot start the cable relay thread: {0}")]
    Thread(#[source] io::Error),
}

/// The running cable; see the module docs.
#[derive(Debug)]
pub(crate) struct Cable {
    stop: Arc<AtomicBool>,
    relay: Option<JoinHandle<()>>,
    paths: [PathBuf; 2],
}

impl Cable {
    /// Opens two raw pty pairs, links `dir/a` and `dir/b` to their slaves and starts relaying.
    pub(crate) fn new(dir: &Path, a: &str, b: &str) -> Result<Self, CableError> {
        let ports = [Port::open()?, Port::open()?];
        let paths = [dir.join(a), dir.join(b)];
        for (port, path) in ports.iter().zip(&paths) {
            std::os::unix::fs::symlink(&port.device, path).map_err(|source| CableError::Link {
                path: path.clone(),
                source,
            })?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let relay = std::thread::Builder::new()
            .name("demo-cable".to_owned())
            .spawn(move || relay(&ports, &flag))
            .map_err(CableError::Thread)?;
        Ok(Self {
            stop,
            relay: Some(relay),
            paths,
        })
    }

    /// The two ends, as the agents' configuration names them.
    pub(crate) fn paths(&self) -> &[PathBuf; 2] {
        &self.paths
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(relay) = self.relay.take() {
            // The relay wakes every POLL_INTERVAL, so this returns promptly.
            let _ = relay.join();
        }
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One pty pair: the master the relay reads and writes, and the slave it keeps open.
#[derive(Debug)]
struct Port {
    master: OwnedFd,
    _slave: OwnedFd,
    device: PathBuf,
}

impl Port {
    fn open() -> Result<Self, CableError> {
        let pty = |step| move |source| CableError::Pty { step, source };
        let pair = openpty(None, None).map_err(pty("openpty"))?;
        // Agents are children of the demo: a master inherited by one would keep the line up.
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(pty("cloexec"))?;
        }
        let mut termios = tcgetattr(&pair.slave).map_err(pty("tcgetattr"))?;
        cfmakeraw(&mut termios);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &termios).map_err(pty("tcsetattr"))?;
        let flags = fcntl(&pair.master, FcntlArg::F_GETFL).map_err(pty("getfl"))?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&pair.master, FcntlArg::F_SETFL(flags)).map_err(pty("setfl"))?;
        let device = ttyname(&pair.slave).map_err(pty("ttyname"))?;
        Ok(Self {
            master: pair.master,
            _slave: pair.slave,
            device,
        })
    }
}

/// Copies bytes between the two masters until `stop` is set.
fn relay(ports: &[Port; 2], stop: &AtomicBool) {
    let mut buf = [0u8; READ_CHUNK_BYTES];
    let timeout = PollTimeout::from(u16::try_from(POLL_INTERVAL.as_millis()).unwrap_or(u16::MAX));
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [
            PollFd::new(ports[0].master.as_fd(), PollFlags::POLLIN),
            PollFd::new(ports[1].master.as_fd(), PollFlags::POLLIN),
        ];
        let ready = match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => fds.map(|fd| fd.revents().is_some_and(|r| !r.is_empty())),
            Err(_) => {
                // Not expected on descriptors the relay owns; back off instead of spinning.
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        for (from, to) in [(0, 1), (1, 0)] {
            if !ready[from] {
                continue;
            }
            for _ in 0..READS_PER_WAKE_MAX {
                match read(&ports[from].master, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => write_some(&ports[to].master, &buf[..n]),
                }
            }
        }
    }
}

/// Writes what the receiver takes now; the rest is lost, as on an overrun UART.
fn write_some(master: &OwnedFd, mut bytes: &[u8]) {
    for _ in 0..WRITE_ATTEMPTS_MAX {
        if bytes.is_empty() {
            return;
        }
        match write(master, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The relay notices `stop` this fast; 5 ms is far below the 100 ms heartbeat interval.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// A pty moves a few KiB per read at most.
const READ_CHUNK_BYTES: usize = 4096;
/// Reads per side per wake, so one side cannot starve the other.
const READS_PER_WAKE_MAX: usize = 16;
/// A master takes a chunk in one or two writes.
const WRITE_ATTEMPTS_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;
    use nix::sys::stat::Mode;

    #[test]
    fn bytes_cross_both_ways_and_drop_cleans_up() {
        let dir = std::env::temp_dir().join(format!("wk-demo-cable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cable = Cable::new(&dir, "a", "b").expect("cable");
        let [a, b] = cable
            .paths()
            .clone()
            .map(|p| open(&p, OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty()).expect("open"));
        for (from, to, msg) in [(&a, &b, b"ping"), (&b, &a, b"pong")] {
            assert_eq!(write(from, msg), Ok(4));
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            for _ in 0..100 {
                let mut fds = [PollFd::new(to.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, PollTimeout::from(20u16)).unwrap_or(0) > 0 {
                    let n = read(to, &mut buf).expect("read");
                    got.extend_from_slice(&buf[..n]);
                }
                if got.len() >= 4 {
                    break;
                }
            }
            assert_eq!(&got, msg);
        }
        let paths = cable.paths().clone();
        drop(cable);
        assert!(paths.iter().all(|p| std::fs::symlink_metadata(p).is_err()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
