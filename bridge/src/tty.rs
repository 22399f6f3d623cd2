//! A serial port as an embedded-io UART for the bridge's board loop: raw 8N1, non-blocking,
//! locked, and reopened when it fails.
//!
//! linux-embedded-hal's serial type implements embedded-hal-nb, one byte per call through a
//! blocking port with a timeout; the board loop wants embedded-io's "what is there now"
//! ([`ReadReady`](embedded_io::ReadReady)) so that one loop can serve two lines and the timers
//! without threads. So this module opens the tty itself: `O_NONBLOCK`, raw mode, an exclusive
//! `flock` (two bridges on one port would each see half the frames), and the input queue
//! flushed, since bytes from before the open are stale.
//!
//! A USB adapter that is unplugged hangs the descriptor up. The port then reports the error
//! once, closes, and tries to reopen the same path at most every [`REOPEN_INTERVAL`], so a
//! replugged adapter that udev gives the same name comes back without a restart, and a dead
//! one costs no CPU.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, BaudRate, ControlFlags, SetArg};

/// An open (or, after a failure, reopening) serial port.
#[derive(Debug)]
pub struct Tty {
    path: PathBuf,
    baud: BaudRate,
    file: Option<Flock<File>>,
    last_attempt: Instant,
}

/// A serial port failure, as the board loop sees it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TtyError(io::Error);

/// Errors opening a port.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The speed is not one the tty layer has a constant for.
    #[error("serial port {path}: {baud} baud is not supported (use 9600, 19200, 38400, 57600 or 115200)")]
    Baud {
        /// The port.
        path: PathBuf,
        /// The speed asked for.
        baud: u32,
    },
    /// The port could not be opened, locked or configured.
    #[error("serial port {path}: {what}: {source}")]
    Io {
        /// The port.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl Tty {
    /// Opens `path` at `baud`, 8N1, raw, locked, with stale input discarded.
    pub fn open(path: &Path, baud: u32) -> Result<Self, OpenError> {
        let speed = baud_rate(baud).ok_or_else(|| OpenError::Baud {
            path: path.to_owned(),
            baud,
        })?;
        let file = open_raw(path, speed)?;
        Ok(Self {
            path: path.to_owned(),
            baud: speed,
            file: Some(file),
            last_attempt: Instant::now(),
        })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A descriptor to wait on, while the port is open.
    pub fn poll_fd(&self) -> Option<PollFd<'_>> {
        self.file
            .as_ref()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
    }

    fn fail(&mut self, e: io::Error) -> TtyError {
        self.file = None;
        self.last_attempt = Instant::now();
        TtyError(e)
    }

    fn reopen(&mut self) {
        if self.file.is_some() || self.last_attempt.elapsed() < REOPEN_INTERVAL {
            return;
        }
        self.last_attempt = Instant::now();
        if let Ok(file) = open_raw(&self.path, self.baud) {
            self.file = Some(file);
        }
    }
}

impl embedded_io::Error for TtyError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self.0.kind() {
            io::ErrorKind::NotFound => embedded_io::ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => embedded_io::ErrorKind::PermissionDenied,
            io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                embedded_io::ErrorKind::BrokenPipe
            }
            io::ErrorKind::TimedOut => embedded_io::ErrorKind::TimedOut,
            io::ErrorKind::Interrupted => embedded_io::ErrorKind::Interrupted,
            _ => embedded_io::ErrorKind::Other,
        }
    }
}

impl embedded_io::ErrorType for Tty {
    type Error = TtyError;
}

impl embedded_io::ReadReady for Tty {
    fn read_ready(&mut self) -> Result<bool, TtyError> {
        self.reopen();
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Ok(false),
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                if revents.intersects(PollFlags::POLLIN) {
                    Ok(true)
                } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    let e = io::Error::new(io::ErrorKind::BrokenPipe, "port hung up");
                    Err(self.fail(e))
                } else {
                    Ok(false)
                }
            }
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

impl embedded_io::Read for Tty {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TtyError> {
        let Some(file) = &mut self.file else {
            return Ok(0);
        };
        match file.read(buf) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "end of file (device gone?)");
                Err(self.fail(e))
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl embedded_io::Write for Tty {
    fn write(&mut self, buf: &[u8]) -> Result<usize, TtyError> {
        let Some(file) = &mut self.file else {
            return Err(TtyError(io::Error::new(
                io::ErrorKind::NotConnected,
                "port closed, reopening",
            )));
        };
        let started = Instant::now();
        loop {
            match file.write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The line drains at its baud rate; an answer of 256 bytes takes 270 ms at
                    // 9600 baud, so waiting longer means nothing drains it at all.
                    let left = WRITE_TIMEOUT.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "write timed out");
                        return Err(self.fail(e));
                    }
                    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    fn flush(&mut self) -> Result<(), TtyError> {
        Ok(())
    }
}

fn open_raw(path: &Path, baud: BaudRate) -> Result<Flock<File>, OpenError> {
    let io = |what, source| OpenError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io("open", e))?;
    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| io("lock (another process has the port)", e.into()))?;
    let mut t = termios::tcgetattr(file.as_fd()).map_err(|e| io("tcgetattr", e.into()))?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, baud).map_err(|e| io("cfsetspeed", e.into()))?;
    t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
    t.control_flags &= !(ControlFlags::CSTOPB | ControlFlags::PARENB | ControlFlags::CRTSCTS);
    termios::tcsetattr(file.as_fd(), SetArg::TCSANOW, &t).map_err(|e| io("tcsetattr", e.into()))?;
    termios::tcflush(file.as_fd(), termios::FlushArg::TCIFLUSH)
        .map_err(|e| io("tcflush", e.into()))?;
    Ok(file)
}

fn baud_rate(baud: u32) -> Option<BaudRate> {
    Some(match baud {
        9_600 => BaudRate::B9600,
        19_200 => BaudRate::B19200,
        38_400 => BaudRate::B38400,
        57_600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        _ => return None,
    })
}

/// How often a failed port is tried again.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for the line to take an answer.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
