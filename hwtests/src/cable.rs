//! An emulated serial null-modem cable built from two pseudo-terminal pairs.
//!
//! The agent's serial link driver opens a path such as `/dev/serial/by-id/…` and talks to a tty.
//! Hardware-in-the-loop tests need two such paths whose traffic crosses over, and they need to
//! break the cable in the ways real cables break: unplugged electrically, one wire broken, line
//! noise, latency, and a USB adapter pulled out of its socket. [`PtyCable`] gives two stable
//! symlinks (like the udev `SYMLINK+=` names in production) onto the slave sides of two pty pairs
//! and relays bytes between the masters in a background thread that applies those faults.
//!
//! # Contract
//!
//! - Bytes written on side A's path arrive on side B's path in order, and vice versa, unless a
//!   fault drops them; every byte is counted once as forwarded or dropped (see [`CableStats`])
//!   once it has left the relay's delay queue.
//! - The cable keeps its own descriptor of each slave open for the pair's whole life. Without it
//!   the master reads `EIO` and polls `POLLHUP` whenever no process has the slave open, e.g.
//!   between the agent closing and reopening the port, and the relay could not tell a restart
//!   from a removal. Holding the slave also keeps the slave's termios (raw) across reopens.
//! - A receiver that does not read behaves like a UART that overruns: the slave's input buffer
//!   (about 20 KiB on Linux) fills, then further bytes are dropped and counted. Because the
//!   cable holds the slave open, bytes sent while nobody has a side open wait in that buffer for
//!   the next opener, where a real UART would have discarded them; drivers should
//!   `tcflush(TCIFLUSH)` after opening, as they must on real hardware anyway.
//! - [`PtyCable::unplug`] closes side A's pair, as when a USB serial adapter is removed: the
//!   symlink disappears, the old `/dev/pts/N` node vanishes at once (opening it gives `ENOENT`)
//!   although the agent still holds a descriptor, and that descriptor is hung up: poll reports
//!   `POLLIN | POLLOUT | POLLERR | POLLHUP`, reads return 0 (end of file, not `EIO`) and writes
//!   fail with `EIO`. [`PtyCable::replug`] brings up a new pair, with a different `/dev/pts/N`,
//!   behind the same symlink.
//! - Every loop is bounded: the relay thread stops when the cable is dropped or after
//!   [`RELAY_LIFETIME_MAX`], and each wake-up does a bounded amount of work.
//!
//! # Design
//!
//! The relay thread owns both pty pairs; controls that only flip flags use atomics, and controls
//! that change the pairs or the byte stream (`unplug`, `replug`, `inject`) are commands on a
//! channel, answered on a per-call reply channel, so the relay never shares a descriptor with a
//! caller that could close it underneath a `poll`. Masters are non-blocking; bytes held for the
//! configured delay sit in a bounded per-direction queue.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use nix::unistd::{read, ttyname, write};

/// Which way bytes travel through the cable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written on side A, received on side B.
    AtoB,
    /// Written on side B, received on side A.
    BtoA,
}

impl Direction {
    /// The opposite direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::AtoB => Direction::BtoA,
            Direction::BtoA => Direction::AtoB,
        }
    }

    fn index(self) -> usize {
        match self {
            Direction::AtoB => 0,
            Direction::BtoA => 1,
        }
    }
}

/// A snapshot of the cable's byte counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CableStats {
    /// Bytes read from side A and written to side B.
    pub a_to_b_forwarded_bytes: u64,
    /// Bytes read from side B and written to side A.
    pub b_to_a_forwarded_bytes: u64,
    /// Bytes written on side A that never reached side B (cut, unplugged, queue full).
    pub a_to_b_dropped_bytes: u64,
    /// Bytes written on side B that never reached side A (cut, unplugged, queue full).
    pub b_to_a_dropped_bytes: u64,
    /// Noise bytes from [`PtyCable::inject`] that reached their receiver.
    pub injected_bytes: u64,
}

/// An emulated null-modem cable between two symlinked pty slaves; see the module docs.
///
/// Dropping the cable stops the relay thread, closes both pairs (hanging up any process that
/// still has a slave open) and removes both symlinks.
#[derive(Debug)]
pub struct PtyCable {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    relay: Option<JoinHandle<()>>,
    a_path: PathBuf,
    b_path: PathBuf,
}

impl PtyCable {
    /// Opens two raw pty pairs, links `dir/a_name` and `dir/b_name` to their slaves and starts
    /// the relay thread.
    ///
    /// An existing symlink at either path is replaced (a leftover of an earlier run); any other
    /// existing file is an `AlreadyExists` error.
    pub fn new(dir: &Path, a_name: &str, b_name: &str) -> io::Result<PtyCable> {
        let a_path = dir.join(a_name);
        let b_path = dir.join(b_name);
        if a_path == b_path {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("both cable ends are named {}", a_path.display()),
            ));
        }
        let a = Port::open()?;
        let b = Port::open()?;
        link_atomically(&a.device, &a_path)?;
        if let Err(e) = link_atomically(&b.device, &b_path) {
            let _ = fs::remove_file(&a_path);
            return Err(e);
        }
        let shared = Arc::new(Shared {
            a_plugged: AtomicBool::new(true),
            ..Shared::default()
        });
        let (commands, command_rx) = mpsc::channel();
        let relay_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("pty-cable {a_name}<->{b_name}"))
            .spawn(move || {
                Relay::new(relay_shared, command_rx, [Some(a), Some(b)]).run();
            });
        let relay = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                let _ = fs::remove_file(&a_path);
                let _ = fs::remove_file(&b_path);
                return Err(e);
            }
        };
        Ok(PtyCable {
            shared,
            commands,
            relay: Some(relay),
            a_path,
            b_path,
        })
    }

    /// The symlink for side A (the side that [`PtyCable::unplug`] removes).
    pub fn a_path(&self) -> &Path {
        &self.a_path
    }

    /// The symlink for side B.
    pub fn b_path(&self) -> &Path {
        &self.b_path
    }

    /// Drops every byte in both directions, including bytes already in flight, until
    /// [`PtyCable::restore`]. The device nodes stay: the ports open and write fine.
    pub fn cut(&self) {
        self.shared.cut[0].store(true, Ordering::SeqCst);
        self.shared.cut[1].store(true, Ordering::SeqCst);
    }

    /// Drops every byte travelling in `direction` until [`PtyCable::restore`] (one broken wire).
    pub fn cut_one_way(&self, direction: Direction) {
        self.shared.cut[direction.index()].store(true, Ordering::SeqCst);
    }

    /// Undoes [`PtyCable::cut`] and [`PtyCable::cut_one_way`]; bytes dropped meanwhile stay lost.
    pub fn restore(&self) {
        self.shared.cut[0].store(false, Ordering::SeqCst);
        self.shared.cut[1].store(false, Ordering::SeqCst);
    }

    /// Delivers `noise` to the receiver of `direction` as if it arrived on the line, queued
    /// behind bytes already in flight that way.
    ///
    /// Noise reaches the receiver even while the cable is cut, since it models interference on
    /// the receiver's side of the break; it is lost only if the receiving side is unplugged or
    /// its buffer is full, and lost noise is not counted as dropped. Returns once the relay has
    /// queued it.
    pub fn inject(&self, direction: Direction, noise: &[u8]) -> io::Result<()> {
        self.request(|reply| Command::Inject {
            direction,
            bytes: noise.to_vec(),
            reply,
        })
    }

    /// Holds every byte for `delay` before delivering it (propagation or buffering latency).
    /// Zero, the default, delivers as soon as the receiver can take it.
    pub fn set_delay(&self, delay: Duration) {
        let delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(delay_us, Ordering::SeqCst);
    }

    /// Simulates pulling side A's USB adapter: removes the symlink, then closes side A's pty
    /// pair so whoever has the old slave open is hung up. Bytes towards A are dropped until
    /// [`PtyCable::replug`]. Unplugging an unplugged cable is a no-op.
    pub fn unplug(&self) -> io::Result<()> {
        remove_symlink(&self.a_path)?;
        let old = self.request_value(|reply| Command::Unplug { reply })?;
        // Dropping the port here closes the master and the kept slave; the hang-up happens now.
        drop(old);
        Ok(())
    }

    /// Simulates plugging side A's adapter back in: a new pty pair, forwarded at once, behind
    /// the same symlink. Fails with `AlreadyExists` if side A is plugged in.
    pub fn replug(&self) -> io::Result<()> {
        let port = Port::open()?;
        let device = port.device.clone();
        let refused = self.request_value(|reply| Command::Plug { port, reply })?;
        if refused.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already plugged in", self.a_path.display()),
            ));
        }
        // The path appears only after the relay forwards the new pair, as udev adds links
        // only after the device is up.
        link_atomically(&device, &self.a_path)
    }

    /// Whether side A is plugged in.
    pub fn is_plugged(&self) -> bool {
        self.shared.a_plugged.load(Ordering::SeqCst)
    }

    /// Bytes forwarded in `direction` so far (injected noise not included).
    pub fn forwarded_bytes(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.index()].load(Ordering::SeqCst)
    }

    /// Bytes dropped in `direction` so far.
    pub fn dropped_bytes(&self, direction: Direction) -> u64 {
        self.shared.dropped[direction.index()].load(Ordering::SeqCst)
    }

    /// All counters at once.
    pub fn stats(&self) -> CableStats {
        CableStats {
            a_to_b_forwarded_bytes: self.forwarded_bytes(Direction::AtoB),
            b_to_a_forwarded_bytes: self.forwarded_bytes(Direction::BtoA),
            a_to_b_dropped_bytes: self.dropped_bytes(Direction::AtoB),
            b_to_a_dropped_bytes: self.dropped_bytes(Direction::BtoA),
            injected_bytes: self.shared.injected.load(Ordering::SeqCst),
        }
    }

    /// Sends a command that carries a reply channel and waits a bounded time for the reply.
    fn request_value<T>(&self, command: impl FnOnce(SyncSender<T>) -> Command) -> io::Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.commands
            .send(command(reply))
            .map_err(|_| relay_gone())?;
        match answer.recv_timeout(COMMAND_REPLY_TIMEOUT) {
            Ok(value) => Ok(value),
            Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "pty cable relay did not answer in time",
            )),
            Err(RecvTimeoutError::Disconnected) => Err(relay_gone()),
        }
    }

    fn request(&self, command: impl FnOnce(SyncSender<()>) -> Command) -> io::Result<()> {
        self.request_value(command)
    }
}

impl Drop for PtyCable {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The relay checks `stop` at least every POLL_INTERVAL; a relay that misses the bound is
        // left detached rather than hanging the test that drops the cable.
        if let Some(relay) = self.relay.take() {
            let deadline = Instant::now() + RELAY_JOIN_TIMEOUT;
            while !relay.is_finished() && Instant::now() < deadline {
                thread::sleep(POLL_INTERVAL);
            }
            if relay.is_finished() {
                let _ = relay.join();
            } else {
                eprintln!("pty cable relay did not stop within {RELAY_JOIN_TIMEOUT:?}; detaching");
            }
        }
        let _ = remove_symlink(&self.a_path);
        let _ = remove_symlink(&self.b_path);
    }
}

/// State the controls share with the relay thread.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// Indexed by [`Direction::index`].
    cut: [AtomicBool; 2],
    delay_us: AtomicU64,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    injected: AtomicU64,
    a_plugged: AtomicBool,
}

impl Shared {
    fn count_dropped(&self, direction: Direction, bytes: usize) {
        self.dropped[direction.index()].fetch_add(len_u64(bytes), Ordering::SeqCst);
    }
}

#[derive(Debug)]
enum Command {
    Inject {
        direction: Direction,
        bytes: Vec<u8>,
        reply: SyncSender<()>,
    },
    /// Replies with side A's port, if it was plugged in.
    Unplug { reply: SyncSender<Option<Port>> },
    /// Replies with the port handed in if side A was already plugged in.
    Plug {
        port: Port,
        reply: SyncSender<Option<Port>>,
    },
}

/// One pty pair: the master the relay reads and writes, and a slave held open (see module docs).
#[derive(Debug)]
struct Port {
    master: OwnedFd,
    _slave: OwnedFd,
    device: PathBuf,
}

impl Port {
    fn open() -> io::Result<Port> {
        let pair = openpty(None, None)?;
        // Agents started by the same test must not inherit these: a copy of the master in a
        // child keeps the line up after the cable closes it, so an unplug would not hang up.
        for fd in [&pair.master, &pair.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        let mut termios = tcgetattr(&pair.slave)?;
        cfmakeraw(&mut termios);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &termios)?;
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let device = ttyname(&pair.slave)?;
        Ok(Port {
            master: pair.master,
            _slave: pair.slave,
            device,
        })
    }
}

/// A run of bytes in flight; `injected` bytes ignore cuts.
#[derive(Debug)]
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
    injected: bool,
}

/// The relay thread's state: both ports (index 0 is A) and one queue per direction.
struct Relay {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    ports: [Option<Port>; 2],
    queues: [VecDeque<Chunk>; 2],
    queued_bytes: [usize; 2],
}

impl Relay {
    fn new(shared: Arc<Shared>, commands: Receiver<Command>, ports: [Option<Port>; 2]) -> Relay {
        Relay {
            shared,
            commands,
            ports,
            queues: [VecDeque::new(), VecDeque::new()],
            queued_bytes: [0, 0],
        }
    }

    fn run(mut self) {
        let started = Instant::now();
        while !self.shared.stop.load(Ordering::SeqCst) && started.elapsed() < RELAY_LIFETIME_MAX {
            if self.take_commands().is_err() {
                // The cable was dropped without the stop flag being seen; nothing can control
                // the relay any more.
                break;
            }
            let readable = self.wait_readable();
            let mut peer_missing = false;
            for side in [0, 1] {
                if readable[side] {
                    peer_missing |= self.read_side(side);
                }
            }
            self.flush();
            if peer_missing {
                // The master reports EIO/HUP while no slave is open; sleep instead of spinning.
                thread::sleep(PEER_MISSING_BACKOFF);
            }
        }
    }

    /// Applies pending commands; `Err` when the controlling [`PtyCable`] is gone.
    fn take_commands(&mut self) -> Result<(), ()> {
        for _ in 0..COMMANDS_PER_WAKE_MAX {
            let command = match self.commands.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(()),
            };
            match command {
                Command::Inject {
                    direction,
                    bytes,
                    reply,
                } => {
                    self.enqueue(direction, bytes, true);
                    let _ = reply.send(());
                }
                Command::Unplug { reply } => {
                    let old = self.ports[0].take();
                    self.shared.a_plugged.store(false, Ordering::SeqCst);
                    // Bytes in flight towards A have lost their receiver.
                    self.drop_queue(Direction::BtoA);
                    let _ = reply.send(old);
                }
                Command::Plug { port, reply } => {
                    if self.ports[0].is_some() {
                        let _ = reply.send(Some(port));
                    } else {
                        self.ports[0] = Some(port);
                        self.shared.a_plugged.store(true, Ordering::SeqCst);
                        let _ = reply.send(None);
                    }
                }
            }
        }
        Ok(())
    }

    /// Polls the present masters for input; returns which sides are readable (or hung up).
    fn wait_readable(&self) -> [bool; 2] {
        let timeout = self.poll_timeout();
        let mut fds = Vec::with_capacity(2);
        let mut sides = Vec::with_capacity(2);
        for (side, port) in self.ports.iter().enumerate() {
            if let Some(port) = port {
                fds.push(PollFd::new(port.master.as_fd(), PollFlags::POLLIN));
                sides.push(side);
            }
        }
        let mut readable = [false, false];
        if fds.is_empty() {
            thread::sleep(timeout);
            return readable;
        }
        let timeout_ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Ok(0) => {}
            Ok(_) => {
                for (fd, side) in fds.iter().zip(sides) {
                    readable[side] = fd.revents().is_some_and(|r| !r.is_empty());
                }
            }
            Err(Errno::EINTR) => {}
            // Not expected with descriptors the relay owns; back off instead of spinning.
            Err(_) => thread::sleep(timeout),
        }
        readable
    }

    /// How long the next poll may sleep: the poll interval, shortened to the next due chunk.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        self.queues
            .iter()
            .filter_map(|q| q.front())
            .map(|chunk| chunk.due.saturating_duration_since(now))
            .fold(POLL_INTERVAL, Duration::min)
    }

    /// Drains side `side`'s master (bounded); returns true if its peer looked absent (EIO/HUP).
    fn read_side(&mut self, side: usize) -> bool {
        let direction = if side == 0 {
            Direction::AtoB
        } else {
            Direction::BtoA
        };
        let mut buf = [0u8; READ_CHUNK_BYTES];
        for _ in 0..READS_PER_WAKE_MAX {
            let Some(port) = &self.ports[side] else {
                return false;
            };
            match read(&port.master, &mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    if self.shared.cut[direction.index()].load(Ordering::SeqCst) {
                        self.discard(direction, n, false);
                    } else {
                        self.enqueue(direction, buf[..n].to_vec(), false);
                    }
                }
                Err(Errno::EAGAIN) => return false,
                Err(Errno::EINTR) => {}
                // EIO: no slave open right now. The cable's own slave descriptor prevents this,
                // but treat it as a transient absence rather than an end.
                Err(_) => return true,
            }
        }
        false
    }

    fn enqueue(&mut self, direction: Direction, bytes: Vec<u8>, injected: bool) {
        let d = direction.index();
        let receiver = 1 - d;
        if self.ports[receiver].is_none() || self.queued_bytes[d] + bytes.len() > QUEUE_BYTES_MAX {
            self.discard(direction, bytes.len(), injected);
            return;
        }
        let delay = Duration::from_micros(self.shared.delay_us.load(Ordering::SeqCst));
        self.queued_bytes[d] += bytes.len();
        self.queues[d].push_back(Chunk {
            due: Instant::now() + delay,
            bytes,
            injected,
        });
    }

    /// Writes due chunks to their receivers. What a receiver's full input buffer refuses is
    /// dropped, as a UART overruns, rather than kept to arrive late in a burst.
    fn flush(&mut self) {
        for direction in [Direction::AtoB, Direction::BtoA] {
            let d = direction.index();
            let receiver = 1 - d;
            for _ in 0..FLUSH_WRITES_PER_WAKE_MAX {
                let now = Instant::now();
                if self.queues[d].front().is_none_or(|chunk| chunk.due > now) {
                    break;
                }
                let Some(chunk) = self.queues[d].pop_front() else {
                    break;
                };
                self.queued_bytes[d] -= chunk.bytes.len();
                let cut = self.shared.cut[d].load(Ordering::SeqCst);
                let written = match &self.ports[receiver] {
                    Some(port) if !cut || chunk.injected => write_some(&port.master, &chunk.bytes),
                    _ => 0,
                };
                let counter = if chunk.injected {
                    &self.shared.injected
                } else {
                    &self.shared.forwarded[d]
                };
                counter.fetch_add(len_u64(written), Ordering::SeqCst);
                self.discard(direction, chunk.bytes.len() - written, chunk.injected);
            }
        }
    }

    fn drop_queue(&mut self, direction: Direction) {
        let d = direction.index();
        let chunks: Vec<Chunk> = self.queues[d].drain(..).collect();
        self.queued_bytes[d] = 0;
        for chunk in chunks {
            self.discard(direction, chunk.bytes.len(), chunk.injected);
        }
    }

    /// Counts bytes that will never arrive; lost noise is not counted, it was never sent.
    fn discard(&self, direction: Direction, len: usize, injected: bool) {
        if !injected {
            self.shared.count_dropped(direction, len);
        }
    }
}

/// Writes as much of `bytes` to a non-blocking master as the receiver takes now; returns the
/// count. Stops at `EAGAIN` (the slave's input buffer is full) or any other error.
fn write_some(master: &OwnedFd, bytes: &[u8]) -> usize {
    let mut written = 0;
    for _ in 0..WRITE_ATTEMPTS_MAX {
        if written == bytes.len() {
            break;
        }
        match write(master, &bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    written
}

/// Points `link` at `target`, replacing an existing symlink atomically (by rename), so a
/// process polling for the path never sees a half-made link.
fn link_atomically(target: &Path, link: &Path) -> io::Result<()> {
    match fs::symlink_metadata(link) {
        Ok(meta) if !meta.file_type().is_symlink() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a symlink", link.display()),
            ));
        }
        _ => {}
    }
    let mut temp_name = link.as_os_str().to_owned();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp_name);
    let _ = fs::remove_file(&temp);
    symlink(target, &temp)?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

/// Removes `link` if it is a symlink; a missing path is fine.
fn remove_symlink(link: &Path) -> io::Result<()> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => fs::remove_file(link),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a symlink; not removing it", link.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn relay_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "pty cable relay thread has stopped",
    )
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// How long the relay sleeps in `poll` at most, so flags, commands and delayed bytes are
/// handled within this bound. 5 ms is well under the agent's shortest heartbeat interval.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Sleep after a master reported a missing peer (EIO/HUP), which makes `poll` return at once.
const PEER_MISSING_BACKOFF: Duration = Duration::from_millis(5);

/// Safety net for a cable leaked without being dropped: no test runs longer than this.
pub const RELAY_LIFETIME_MAX: Duration = Duration::from_secs(60 * 60);

/// How long a control waits for the relay to take a command; the relay wakes every
/// `POLL_INTERVAL`, so only a wedged relay misses it.
const COMMAND_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `Drop` waits for the relay thread to stop before detaching it.
const RELAY_JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Read size per call; a pty moves at most a few KiB per read anyway.
const READ_CHUNK_BYTES: usize = 4096;

/// Reads per side per wake, so one chatty side cannot starve the other or the controls.
const READS_PER_WAKE_MAX: usize = 16;

/// Writes per direction per wake, for the same reason.
const FLUSH_WRITES_PER_WAKE_MAX: usize = 64;

/// Write calls per chunk; a pty master takes a whole chunk in one or two.
const WRITE_ATTEMPTS_MAX: usize = 8;

/// Commands applied per wake.
const COMMANDS_PER_WAKE_MAX: usize = 16;

/// Bytes in flight per direction before new bytes are dropped: far above what heartbeats send
/// during any test delay, small enough that a stuck receiver cannot grow memory without bound.
const QUEUE_BYTES_MAX: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;
    use nix::sys::stat::Mode;

    /// Opens a cable end as the agent would: read-write, not as controlling terminal, raw.
    fn open_end(path: &Path) -> OwnedFd {
        let fd = open(path, OFlag::O_RDWR | OFlag::O_NOCTTY, Mode::empty())
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut termios = tcgetattr(&fd).expect("tcgetattr on a fresh pty slave");
        cfmakeraw(&mut termios);
        tcsetattr(&fd, SetArg::TCSANOW, &termios).expect("tcsetattr on a fresh pty slave");
        fd
    }

    fn write_all(fd: &OwnedFd, bytes: &[u8]) {
        let mut rest = bytes;
        for _ in 0..100 {
            if rest.is_empty() {
                return;
            }
            let n = write(fd, rest).expect("write to pty slave");
            rest = &rest[n..];
        }
        panic!("write did not finish");
    }

    /// Reads until `want` bytes arrived or `timeout` passed; every read waits in `poll`.
    fn read_for(fd: &OwnedFd, want: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while out.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => break,
                Ok(_) => match read(fd, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                },
                Err(_) => break,
            }
        }
        out
    }

    fn cable(dir: &Path) -> PtyCable {
        PtyCable::new(dir, "ttyA", "ttyB").expect("create pty cable")
    }

    const WAIT: Duration = Duration::from_secs(2);

    /// The cable's counters once `done` holds, or after [`WAIT`].
    fn settled(cable: &PtyCable, done: impl Fn(&CableStats) -> bool) -> CableStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = cable.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    const QUIET: Duration = Duration::from_millis(150);

    #[test]
    fn controls_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PtyCable>();
    }

    #[test]
    fn bytes_cross_both_ways() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        assert!(fs::read_link(cable.a_path())
            .expect("a is a symlink")
            .starts_with("/dev/pts"));
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        write_all(&a, b"hello from a");
        assert_eq!(read_for(&b, 12, WAIT), b"hello from a");
        write_all(&b, b"\x00\xffbinary\r\n");
        assert_eq!(read_for(&a, 10, WAIT), b"\x00\xffbinary\r\n");
        // The relay counts a write after it returns, so the reader may see bytes first.
        let stats = settled(&cable, |s| s.b_to_a_forwarded_bytes == 10);
        assert_eq!(stats.a_to_b_forwarded_bytes, 12);
        assert_eq!(stats.b_to_a_forwarded_bytes, 10);
        assert_eq!(stats.a_to_b_dropped_bytes + stats.b_to_a_dropped_bytes, 0);
    }

    #[test]
    fn reopening_an_end_keeps_the_cable_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let b = open_end(cable.b_path());
        drop(open_end(cable.a_path()));
        let a = open_end(cable.a_path());
        write_all(&a, b"again");
        assert_eq!(read_for(&b, 5, WAIT), b"again");
    }

    #[test]
    fn cut_drops_and_restore_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        cable.cut();
        write_all(&a, b"lost");
        write_all(&b, b"gone!");
        assert!(read_for(&b, 1, QUIET).is_empty());
        assert!(read_for(&a, 1, QUIET).is_empty());
        assert_eq!(cable.dropped_bytes(Direction::AtoB), 4);
        assert_eq!(cable.dropped_bytes(Direction::BtoA), 5);
        cable.restore();
        write_all(&a, b"back");
        assert_eq!(read_for(&b, 4, WAIT), b"back");
    }

    #[test]
    fn cut_one_way_leaves_the_other_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        cable.cut_one_way(Direction::AtoB);
        write_all(&a, b"lost");
        write_all(&b, b"kept");
        assert_eq!(read_for(&a, 4, WAIT), b"kept");
        assert!(read_for(&b, 1, QUIET).is_empty());
    }

    #[test]
    fn inject_delivers_noise_even_while_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        cable
            .inject(Direction::AtoB, b"\x7e\x00noise")
            .expect("inject");
        assert_eq!(read_for(&b, 7, WAIT), b"\x7e\x00noise");
        cable.cut();
        cable.inject(Direction::BtoA, b"zz").expect("inject");
        assert_eq!(read_for(&a, 2, WAIT), b"zz");
        assert_eq!(settled(&cable, |s| s.injected_bytes == 9).injected_bytes, 9);
    }

    #[test]
    fn delay_holds_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        cable.set_delay(Duration::from_millis(300));
        let sent = Instant::now();
        write_all(&a, b"late");
        assert_eq!(read_for(&b, 4, WAIT), b"late");
        assert!(sent.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_receiver_that_does_not_read_overruns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let a = open_end(cable.a_path());
        let sent: u64 = 256 * 1024;
        for _ in 0..256 {
            write_all(&a, &[0x55; 1024]);
        }
        let deadline = Instant::now() + WAIT;
        let accounted = || {
            let stats = cable.stats();
            stats.a_to_b_forwarded_bytes + stats.a_to_b_dropped_bytes
        };
        while accounted() < sent && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(accounted(), sent);
        assert!(cable.dropped_bytes(Direction::AtoB) > 0);
        let b = open_end(cable.b_path());
        let buffered = read_for(&b, usize::MAX, QUIET);
        assert_eq!(
            len_u64(buffered.len()),
            cable.forwarded_bytes(Direction::AtoB)
        );
    }

    #[test]
    fn unplug_hangs_up_and_replug_gives_a_new_working_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let old_device = fs::read_link(cable.a_path()).expect("a is a symlink");
        let a = open_end(cable.a_path());
        let b = open_end(cable.b_path());
        cable.unplug().expect("unplug");
        assert!(!cable.is_plugged());
        assert!(fs::symlink_metadata(cable.a_path()).is_err());

        // The old descriptor is hung up: poll says HUP, read gives EOF or EIO, write gives EIO.
        let mut fds = [PollFd::new(a.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(1000u16)).expect("poll");
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        assert!(revents.contains(PollFlags::POLLHUP), "{revents:?}");
        let mut buf = [0u8; 8];
        assert!(matches!(read(&a, &mut buf), Ok(0) | Err(Errno::EIO)));
        assert_eq!(write(&a, b"x"), Err(Errno::EIO));

        // Bytes towards the unplugged side are dropped.
        write_all(&b, b"void");
        assert!(read_for(&a, 1, QUIET).is_empty());
        for _ in 0..100 {
            if cable.dropped_bytes(Direction::BtoA) == 4 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cable.dropped_bytes(Direction::BtoA), 4);

        cable.replug().expect("replug");
        assert!(cable.is_plugged());
        assert!(cable.replug().is_err(), "replug while plugged in");
        let new_device = fs::read_link(cable.a_path()).expect("a is a symlink again");
        assert_ne!(old_device, new_device);
        let a = open_end(cable.a_path());
        write_all(&a, b"fresh");
        assert_eq!(read_for(&b, 5, WAIT), b"fresh");
        write_all(&b, b"reply");
        assert_eq!(read_for(&a, 5, WAIT), b"reply");
    }

    #[test]
    fn drop_removes_symlinks_and_hangs_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cable = cable(dir.path());
        let (a_path, b_path) = (cable.a_path().to_owned(), cable.b_path().to_owned());
        let b = open_end(&b_path);
        drop(cable);
        assert!(fs::symlink_metadata(&a_path).is_err());
        assert!(fs::symlink_metadata(&b_path).is_err());
        assert_eq!(write(&b, b"x"), Err(Errno::EIO));
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("ttyA"), b"not a link").expect("write file");
        let err = PtyCable::new(dir.path(), "ttyA", "ttyB").expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(fs::symlink_metadata(dir.path().join("ttyB")).is_err());
    }

    #[test]
    fn master_without_any_open_slave_reads_eio() {
        // Documents the kernel behaviour the cable's kept slave descriptor exists to avoid.
        let pair = openpty(None, None).expect("openpty");
        drop(pair.slave);
        let mut fds = [PollFd::new(pair.master.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u16)).expect("poll");
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        assert!(revents.contains(PollFlags::POLLHUP), "{revents:?}");
        let mut buf = [0u8; 8];
        assert_eq!(read(&pair.master, &mut buf), Err(Errno::EIO));
    }
}
