//! The feeder: a dedicated thread that feeds the watchdog only while it is told to feed and the
//! agent's main loop is visibly alive.
//!
//! # Design
//!
//! Feeding from the main loop would tie the host's survival to every await in it, and feeding
//! from a plain thread would let a loaded host miss feeds and reset itself. So the feeder is a
//! thread of its own at `SCHED_FIFO` priority, with all memory locked (`mlockall` current and
//! future) and its stack pre-faulted, so that neither CPU load nor paging delays a feed. It
//! never logs, allocates or touches the disk while feeding: any of those could block on
//! something unrelated (a full log pipe, a stuck disk) and reset a healthy host.
//!
//! It feeds at each interval only if both hold:
//! - the engine's last word was "feed" ([`Feeder::feed`]); and
//! - the main loop bumped [`Progress`] within the progress bound, so a main loop stuck in a
//!   blocking call, a deadlock or an endless loop starves the watchdog although the thread is
//!   fine.
//!
//! Starving is final: once the feeder has stopped feeding ([`Feeder::starve`], or no progress)
//! it never feeds again, whatever it is told later. "Feed later" would let a host that was
//! declared self-fenced come back while its peers have already taken over.
//!
//! The moment it starves, and before the next feed would have been due, the feeder writes the
//! reason ("last words") to the state directory and fsyncs it; the agent reads it back after the
//! reboot. The decision never waits for the write: the feeds stop first, and the timeout leaves
//! the write ample time to land.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drivers::watchdog::{Watchdog, WatchdogError};

use super::state::{self, LastWords};

/// How a feeder runs.
#[derive(Debug, Clone)]
pub struct FeederParams {
    /// Time between feeds.
    pub interval: Duration,
    /// Starve when the main loop has not bumped [`Progress`] for this long.
    pub progress_timeout: Duration,
    /// SCHED_FIFO priority (1–99) of the thread, or `None` to stay at normal priority
    /// (benchmarks compare the two).
    pub realtime_priority: Option<u8>,
    /// Where the last words go; `None` writes none.
    pub state_dir: Option<PathBuf>,
}

/// Errors of the feeder.
#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    /// The feeder thread could not be started.
    #[error("cannot start the watchdog feeder thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The feeder has starved the watchdog; it cannot be disarmed or fed any more.
    #[error("the watchdog is starving ({reason}): it cannot be fed or disarmed any more")]
    Starving {
        /// Why it starved.
        reason: String,
    },
    /// The device refused to disarm.
    #[error("cannot disarm the watchdog: {0}")]
    Disarm(#[source] WatchdogError),
    /// The feeder thread ended abnormally.
    #[error("the watchdog feeder thread died")]
    ThreadDied,
}

/// How the thread's operating-system setup went; each failure weakens timeliness, not safety
/// (a late feed resets the host, it never keeps a host alive that should die), so the caller
/// logs it and carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// SCHED_FIFO at the asked priority: `Ok`, or why not (`Ok` too when none was asked).
    pub realtime: Result<(), String>,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)`: `Ok`, or why not.
    pub memory_locked: Result<(), String>,
}

/// Counters and timing of the feeder, for status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeederStats {
    /// Successful feeds.
    pub feeds: u64,
    /// Failed feeds.
    pub errors: u64,
    /// Longest time between two successful feeds.
    pub max_gap: Duration,
    /// Whether the feeder is starving the watchdog.
    pub starving: bool,
}

/// The handle the main loop bumps on every iteration to prove it is making progress.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Shared>);

impl Progress {
    /// Records that the main loop went round once more.
    pub fn bump(&self) {
        self.0
            .progress_ns
            .store(self.0.elapsed_ns(Instant::now()), Ordering::Release);
    }
}

/// A running feeder; see the module documentation.
///
/// Dropping it ends the thread and closes the device without disarming it, so a kernel
/// watchdog goes on counting down: only [`Feeder::disarm_clean`] stops it.
#[derive(Debug)]
pub struct Feeder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Outcome>>,
    device: String,
}

impl Feeder {
    /// Starts feeding `dog` at once, then every `params.interval`.
    pub fn start(
        dog: Box<dyn Watchdog>,
        params: FeederParams,
    ) -> Result<(Self, SetupReport), FeederError> {
        let memory_locked = lock_memory();
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Feed,
                starved: None,
                exit: false,
            }),
            wake: Condvar::new(),
            epoch: now,
            progress_ns: AtomicU64::new(0),
            feeds: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            gap_buckets: [const { AtomicU64::new(0) }; GAP_BUCKETS_NS.len() + 1],
            gap_sum_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let device = dog.name();
        let (setup_tx, setup_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let realtime = match params.realtime_priority {
                    Some(priority) => set_realtime_priority(priority).map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                prefault_stack();
                let _ = setup_tx.send(realtime);
                run(&thread_shared, dog, &params)
            })
            .map_err(FeederError::Spawn)?;
        let realtime = setup_rx
            .recv()
            .unwrap_or_else(|_| Err("thread died".to_owned()));
        Ok((
            Self {
                shared,
                thread: Some(thread),
                device,
            },
            SetupReport {
                realtime,
                memory_locked,
            },
        ))
    }

    /// The handle the main loop bumps each iteration.
    pub fn progress(&self) -> Progress {
        Progress(self.shared.clone())
    }

    /// The engine says feed. Refused once starving: starving is final.
    pub fn feed(&self) -> Result<(), FeederError> {
        let st = self.shared.lock();
        match &st.starved {
            Some(reason) => Err(FeederError::Starving {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Stops feeding for good, recording `reason` as the last words. No feed happens after this
    /// returns. A second call keeps the first reason.
    pub fn starve(&self, reason: impl Into<String>) {
        let mut st = self.shared.lock();
        if st.starved.is_none() && matches!(st.mode, Mode::Feed) {
            st.mode = Mode::Starve(reason.into());
            self.shared.wake.notify_all();
        }
    }

    /// Why the feeder starved, if it has.
    pub fn starved(&self) -> Option<String> {
        let st = self.shared.lock();
        st.starved.clone().or_else(|| match &st.mode {
            Mode::Starve(reason) => Some(reason.clone()),
            _ => None,
        })
    }

    /// Disarms the watchdog (magic close) and ends the thread: only for a clean, planned stop
    /// while holding nothing. Refused once starving.
    pub fn disarm_clean(mut self) -> Result<(), FeederError> {
        {
            let mut st = self.shared.lock();
            if let Some(reason) = st.starved.clone().or_else(|| match &st.mode {
                Mode::Starve(reason) => Some(reason.clone()),
                _ => None,
            }) {
                return Err(FeederError::Starving { reason });
            }
            st.mode = Mode::Disarm;
            self.shared.wake.notify_all();
        }
        let thread = self.thread.take().ok_or(FeederError::ThreadDied)?;
        match thread.join() {
            Ok(Outcome::Disarmed(result)) => result.map_err(FeederError::Disarm),
            Ok(Outcome::Starved(reason)) => Err(FeederError::Starving { reason }),
            Ok(Outcome::Dropped) | Err(_) => Err(FeederError::ThreadDied),
        }
    }

    /// Counters and timing so far.
    pub fn stats(&self) -> FeederStats {
        FeederStats {
            feeds: self.shared.feeds.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            max_gap: Duration::from_nanos(self.shared.max_gap_ns.load(Ordering::Relaxed)),
            starving: self.starved().is_some(),
        }
    }

    /// The distribution of gaps between successful feeds, for the metrics endpoint.
    pub fn gaps(&self) -> FeedGaps {
        FeedGaps(self.shared.clone())
    }

    /// The last keepalive error not yet reported, for the main loop to log (the feeder thread
    /// itself never logs).
    pub fn take_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok()?.take()
    }

    /// The device being fed, for logs.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        {
            // A starve not yet acted on is still carried out: the thread records the last
            // words before it sees the exit.
            let mut st = self.shared.lock();
            st.exit = true;
            self.shared.wake.notify_all();
        }
        let _ = thread.join();
    }
}

/// A read handle on the feeder's gap histogram: the time between two successful feeds,
/// counted by the feeder thread itself into fixed buckets of atomics, so recording a gap never
/// takes a lock or allocates (a scrape must not be able to delay a feed).
#[derive(Debug, Clone)]
pub struct FeedGaps(Arc<Shared>);

/// The gap histogram at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedGapSnapshot {
    /// Per-bucket (not cumulative) counts by upper bound in seconds; the last bound is
    /// `f64::MAX`, standing for +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all gaps, in seconds.
    pub sum_seconds: f64,
    /// Number of gaps.
    pub count: u64,
}

impl FeedGaps {
    /// Reads the histogram. Buckets are read one by one while the feeder may add to them, so
    /// `count` is their sum as read rather than a separate counter: the two always agree.
    pub fn snapshot(&self) -> FeedGapSnapshot {
        let bounds = GAP_BUCKETS_NS
            .iter()
            .map(|ns| Duration::from_nanos(*ns).as_secs_f64())
            .chain(std::iter::once(f64::MAX));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.0.gap_buckets.iter())
            .map(|(b, c)| (b, c.load(Ordering::Relaxed)))
            .collect();
        FeedGapSnapshot {
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
            sum_seconds: Duration::from_nanos(self.0.gap_sum_ns.load(Ordering::Relaxed))
                .as_secs_f64(),
        }
    }
}

/// Sets the calling thread to SCHED_FIFO at `priority` (1–99).
///
/// Public so that benchmarks can give their observer threads the same footing.
pub fn set_realtime_priority(priority: u8) -> std::io::Result<()> {
    // pthread_setschedparam rather than sched_setscheduler: both set the calling thread on
    // glibc, but musl's sched_setscheduler is a stub that always fails with ENOSYS.
    // SAFETY: sched_param is a plain C struct (musl adds fields glibc lacks) for which all
    // zero bytes are a valid value; pthread_setschedparam only reads the live, initialised
    // `param`, and pthread_self() is the calling thread's valid handle. nix has no wrapper.
    let rc = unsafe {
        let mut param: libc::sched_param = std::mem::zeroed();
        param.sched_priority = libc::c_int::from(priority);
        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        // pthread functions return the error number instead of setting errno.
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last progress bump.
    progress_ns: AtomicU64,
    feeds: AtomicU64,
    errors: AtomicU64,
    max_gap_ns: AtomicU64,
    /// Gaps between feeds by bucket of [`GAP_BUCKETS_NS`], the last one past every bound.
    gap_buckets: [AtomicU64; GAP_BUCKETS_NS.len() + 1],
    gap_sum_ns: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent (every update is one
        // assignment), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn elapsed_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Set by the thread once it has stopped feeding.
    starved: Option<String>,
    /// The [`Feeder`] was dropped: end the thread without disarming.
    exit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Feed,
    Starve(String),
    Disarm,
}

enum Outcome {
    Disarmed(Result<(), WatchdogError>),
    Starved(String),
    Dropped,
}

/// The thread's body.
fn run(shared: &Shared, mut dog: Box<dyn Watchdog>, params: &FeederParams) -> Outcome {
    let mut next = Instant::now();
    let mut last_feed: Option<Instant> = None;
    let mut st = shared.lock();
    loop {
        // Sleep until the next feed is due or the mode changes; bounded by the interval.
        while st.mode == Mode::Feed && !st.exit {
            let now = Instant::now();
            if now >= next {
                break;
            }
            st = shared
                .wake
                .wait_timeout(st, next - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        match &st.mode {
            Mode::Feed if st.exit => return Outcome::Dropped,
            Mode::Feed => {}
            Mode::Starve(reason) => {
                let reason = reason.clone();
                st.starved = Some(reason.clone());
                drop(st);
                say_last_words(&reason, &*dog, params);
                return park_starving(shared, dog, reason);
            }
            Mode::Disarm => {
                drop(st);
                return Outcome::Disarmed(dog.disarm());
            }
        }
        let now = Instant::now();
        let progress_at =
            shared.epoch + Duration::from_nanos(shared.progress_ns.load(Ordering::Acquire));
        let silent = now.saturating_duration_since(progress_at);
        if silent > params.progress_timeout {
            st.mode = Mode::Starve(format!(
                "the main loop made no progress for {} ms (bound {} ms)",
                silent.as_millis(),
                params.progress_timeout.as_millis()
            ));
            continue;
        }
        // The lock is held across the keepalive so that a starve() that returned has
        // certainly seen its last feed; a keepalive on a non-blocking descriptor is quick.
        match dog.keepalive() {
            Ok(()) => {
                shared.feeds.fetch_add(1, Ordering::Relaxed);
                if let Some(prev) = last_feed {
                    let gap = u64::try_from(now.duration_since(prev).as_nanos()).unwrap_or(0);
                    shared.max_gap_ns.fetch_max(gap, Ordering::Relaxed);
                    let bucket = GAP_BUCKETS_NS
                        .iter()
                        .position(|b| gap <= *b)
                        .unwrap_or(GAP_BUCKETS_NS.len());
                    if let Some(c) = shared.gap_buckets.get(bucket) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.gap_sum_ns.fetch_add(gap, Ordering::Relaxed);
                }
                last_feed = Some(now);
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut slot) = shared.last_error.try_lock() {
                    *slot = Some(e.to_string());
                }
            }
        }
        // Missed intervals are skipped, not made up in a burst.
        next += params.interval;
        if next <= now {
            next = now + params.interval;
        }
    }
}

/// Holds the device, unfed, until the feeder is dropped: keeping it open stops anyone else from
/// opening and feeding it.
fn park_starving(shared: &Shared, dog: Box<dyn Watchdog>, reason: String) -> Outcome {
    let mut st = shared.lock();
    while !st.exit {
        st = shared
            .wake
            .wait_timeout(st, PARK_WAKE)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    drop(st);
    // Closing without the magic close: a kernel watchdog keeps counting down.
    drop(dog);
    Outcome::Starved(reason)
}

fn say_last_words(reason: &str, dog: &dyn Watchdog, params: &FeederParams) {
    let Some(dir) = &params.state_dir else {
        return;
    };
    let words = LastWords::now(reason, &dog.name());
    // Nobody is left to tell if this fails: the watchdog is starving either way, and the agent
    // that starts after the reset reports the last words as missing.
    let _ = state::write_last_words(dir, &words);
}

fn lock_memory() -> Result<(), String> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| e.to_string())
}

/// Touches the stack the thread will use, so that its pages are resident (and, with
/// `MCL_FUTURE`, locked) before the first feed instead of faulting in on a deep call later.
fn prefault_stack() {
    let mut block = [0u8; PREFAULT_BYTES];
    for i in (0..PREFAULT_BYTES).step_by(PAGE_BYTES) {
        block[i] = 1;
    }
    std::hint::black_box(&mut block);
}

/// The feeder thread's name, as `ps -L` and `top -H` show it.
const THREAD_NAME: &str = "wk-watchdog";

/// Stack of the feeder thread: its deepest path is the last-words write (serde_json and a few
/// syscalls), far below this.
const STACK_BYTES: usize = 256 * 1024;

/// Bytes of stack touched up front: most of the stack, leaving room for the frames above.
const PREFAULT_BYTES: usize = 128 * 1024;

/// The smallest page size on Linux; touching one byte per page faults every page in.
const PAGE_BYTES: usize = 4096;

/// How often a starving feeder checks whether it was dropped; only the end of the agent waits
/// on it.
const PARK_WAKE: Duration = Duration::from_secs(1);
/// Upper bounds, in nanoseconds, of the feed-gap histogram's buckets. The default feed interval
/// is 1 s (a 10 s timeout fed ten times), so the buckets are finest just above it, where a
/// loaded host's late feeds show first; the lowest bounds serve short intervals (10 ms in the
/// feed-gap benchmark), and the top bounds reach the longest allowed timeouts, past which the
/// host would have been reset.
const GAP_BUCKETS_NS: [u64; 16] = [
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    750_000_000,
    1_000_000_000,
    1_100_000_000,
    1_250_000_000,
    1_500_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

#[cfg(test)]
mod tests {
    use drivers::watchdog::FakeWatchdog;

    use super::*;

    fn params(interval_ms: u64, progress_ms: u64, dir: Option<PathBuf>) -> FeederParams {
        FeederParams {
            interval: Duration::from_millis(interval_ms),
            progress_timeout: Duration::from_millis(progress_ms),
            realtime_priority: None,
            state_dir: dir,
        }
    }

    /// Keeps bumping `progress` from a helper thread until `stop` is dropped.
    fn keep_progressing(progress: Progress) -> mpsc::Sender<()> {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(5))
            {
                progress.bump();
            }
        });
        stop
    }

    #[test]
    fn feeds_at_the_interval_and_stops_at_once_when_starved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeWatchdog::new();
        let (feeder, _) = Feeder::start(
            Box::new(fake.clone()),
            params(20, 1000, Some(dir.path().to_owned())),
        )
        .expect("start");
        let _stop = keep_progressing(feeder.progress());
        std::thread::sleep(Duration::from_millis(300));
        feeder.starve("test says starve");
        let starved_at = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let feeds = fake.keepalives();
        assert!(feeds.len() >= 10, "only {} feeds in 300 ms", feeds.len());
        assert!(feeds.iter().all(|&t| t <= starved_at), "fed after starve");
        let gaps: Vec<Duration> = feeds.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).unwrap_or(1);
        assert!(
            mean > Duration::from_millis(17) && mean < Duration::from_millis(30),
            "mean gap {mean:?}"
        );
        assert!(matches!(feeder.feed(), Err(FeederError::Starving { .. })));
        let words = state::take_previous(dir.path()).expect("read").last_words;
        assert_eq!(words.map(|w| w.reason), Some("test says starve".to_owned()));
        assert!(!fake.disarmed());
        assert!(matches!(
            feeder.disarm_clean(),
            Err(FeederError::Starving { .. })
        ));
        assert!(!fake.disarmed(), "a starving watchdog is never disarmed");
    }

    #[test]
    fn feed_gaps_are_counted_into_buckets_that_agree_with_the_feeds() {
        let fake = FakeWatchdog::new();
        let (feeder, _) =
            Feeder::start(Box::new(fake.clone()), params(20, 1000, None)).expect("start");
        let _stop = keep_progressing(feeder.progress());
        std::thread::sleep(Duration::from_millis(250));
        let gaps = feeder.gaps();
        drop(feeder);
        let snap = gaps.snapshot();
        let feeds = u64::try_from(fake.keepalives().len()).unwrap_or(0);
        assert!(feeds >= 5, "only {feeds} feeds");
        assert_eq!(snap.count, feeds - 1, "one gap between each two feeds");
        assert_eq!(snap.buckets.len(), GAP_BUCKETS_NS.len() + 1);
        assert_eq!(snap.buckets.last().map(|b| b.0), Some(f64::MAX));
        // 20 ms gaps land in the (10 ms, 25 ms] bucket unless the machine stalled the thread.
        let second = snap.buckets.get(1).map_or(0, |b| b.1);
        assert!(second * 2 >= snap.count, "{snap:?}");
        let mean = snap.sum_seconds / f64::from(u32::try_from(snap.count).unwrap_or(1));
        assert!(mean > 0.015 && mean < 0.1, "mean gap {mean} s");
    }

    #[test]
    fn starves_when_the_main_loop_stops_making_progress() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeWatchdog::new();
        let (feeder, _) = Feeder::start(
            Box::new(fake.clone()),
            params(10, 100, Some(dir.path().to_owned())),
        )
        .expect("start");
        let stop = keep_progressing(feeder.progress());
        std::thread::sleep(Duration::from_millis(200));
        assert!(feeder.starved().is_none(), "starved while progressing");
        drop(stop);
        let stalled_at = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let reason = feeder.starved().expect("starved after the loop stalled");
        assert!(reason.contains("no progress"), "{reason}");
        let last = fake.keepalives().last().copied().expect("fed at first");
        assert!(
            last < stalled_at + Duration::from_millis(100 + 20),
            "fed {:?} after the stall",
            last - stalled_at
        );
        let words = state::take_previous(dir.path()).expect("read").last_words;
        assert!(words.is_some_and(|w| w.reason == reason));
    }

    #[test]
    fn a_clean_disarm_stops_the_device_and_failures_are_counted() {
        let fake = FakeWatchdog::new();
        let (feeder, report) =
            Feeder::start(Box::new(fake.clone()), params(10, 1000, None)).expect("start");
        assert_eq!(report.realtime, Ok(()));
        let _stop = keep_progressing(feeder.progress());
        std::thread::sleep(Duration::from_millis(50));
        fake.fail_keepalives(true);
        std::thread::sleep(Duration::from_millis(50));
        let stats = feeder.stats();
        assert!(stats.errors > 0 && stats.feeds > 0, "{stats:?}");
        assert!(feeder.take_error().is_some_and(|e| e.contains("injected")));
        feeder.disarm_clean().expect("disarm");
        assert!(fake.disarmed());
    }

    #[test]
    fn a_starve_right_before_drop_still_leaves_last_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeWatchdog::new();
        let (feeder, _) = Feeder::start(
            Box::new(fake.clone()),
            params(10, 1000, Some(dir.path().to_owned())),
        )
        .expect("start");
        feeder.starve("going down");
        drop(feeder);
        let words = state::take_previous(dir.path()).expect("read").last_words;
        assert_eq!(words.map(|w| w.reason), Some("going down".to_owned()));
        assert!(!fake.disarmed());
    }

    #[test]
    fn dropping_a_feeder_never_disarms() {
        let fake = FakeWatchdog::new();
        let (feeder, _) =
            Feeder::start(Box::new(fake.clone()), params(10, 1000, None)).expect("start");
        std::thread::sleep(Duration::from_millis(30));
        drop(feeder);
        assert!(!fake.disarmed());
        let fed = fake.keepalives().len();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fake.keepalives().len(), fed, "fed after drop");
    }
}
