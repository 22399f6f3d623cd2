//! An in-process watchdog for tests of the code that drives one: it records every call with
//! its time, and fails on demand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Watchdog, WatchdogCounters, WatchdogError};

/// What happened to a [`FakeWatchdog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeEvent {
    /// A keepalive that succeeded.
    Keepalive(Instant),
    /// A keepalive that failed by injection.
    FailedKeepalive(Instant),
    /// A disarm.
    Disarmed(Instant),
}

/// A watchdog double. Clones share the record and the injection switch, so a test keeps one
/// clone while the code under test owns the other.
#[derive(Debug, Clone, Default)]
pub struct FakeWatchdog {
    events: Arc<Mutex<Vec<FakeEvent>>>,
    fail_keepalive: Arc<AtomicBool>,
    counters: Arc<WatchdogCounters>,
}

impl FakeWatchdog {
    /// A double that succeeds until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes keepalives fail (`true`) or succeed again (`false`).
    pub fn fail_keepalives(&self, fail: bool) {
        self.fail_keepalive.store(fail, Ordering::SeqCst);
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<FakeEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Times of the successful keepalives.
    pub fn keepalives(&self) -> Vec<Instant> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FakeEvent::Keepalive(at) => Some(at),
                _ => None,
            })
            .collect()
    }

    /// Whether it was disarmed.
    pub fn disarmed(&self) -> bool {
        self.events()
            .iter()
            .any(|e| matches!(e, FakeEvent::Disarmed(_)))
    }

    fn record(&self, event: FakeEvent) {
        if let Ok(mut events) = self.events.lock() {
            if events.len() < MAX_EVENTS {
                events.push(event);
            }
        }
    }
}

impl Watchdog for FakeWatchdog {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        let now = Instant::now();
        if self.fail_keepalive.load(Ordering::SeqCst) {
            self.record(FakeEvent::FailedKeepalive(now));
            self.counters
                .keepalive_errors
                .fetch_add(1, Ordering::Relaxed);
            return Err(WatchdogError::Injected {
                device: self.name(),
                what: "keepalive",
            });
        }
        self.record(FakeEvent::Keepalive(now));
        self.counters.keepalives.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn disarm(self: Box<Self>) -> Result<(), WatchdogError> {
        self.record(FakeEvent::Disarmed(Instant::now()));
        Ok(())
    }

    fn name(&self) -> String {
        "fake-watchdog".to_owned()
    }

    fn counters(&self) -> &WatchdogCounters {
        &self.counters
    }
}

/// Events kept at most, so a forgotten double in a long test cannot grow without bound.
const MAX_EVENTS: usize = 1 << 20;
