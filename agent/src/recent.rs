//! The last few engine events, with wall-clock times, for the status page.
//!
//! The engine reports what it decided as `Action::Alert` and `Action::Log`; the runtime writes
//! them to the log and also pushes them here, so that the page can show "what just happened"
//! without reading the journal. The ring is bounded ([`CAPACITY`]) and lives only in memory:
//! it is a view, not a record. Its only inputs are [`RecentEvents::push`] calls, so a
//! persistent events journal can feed it instead of the runtime without the page changing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A decision or state change worth knowing (`Action::Log`).
    Info,
    /// Something an operator should look at (`Action::Alert`).
    Alert,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentEvent {
    /// When it was recorded (wall clock, for people).
    pub at: SystemTime,
    /// How serious.
    pub severity: Severity,
    /// What happened, in words.
    pub text: String,
}

/// The ring of recent events, shared between the runtime and the HTTP task. The lock is held
/// only to push or copy, never across an await.
#[derive(Debug, Default)]
pub struct RecentEvents {
    ring: Mutex<VecDeque<RecentEvent>>,
}

impl RecentEvents {
    /// Records an event now, dropping the oldest past [`CAPACITY`].
    pub fn push(&self, severity: Severity, text: String) {
        self.push_at(SystemTime::now(), severity, text);
    }

    /// Records an event at `at` (a journal replaying its tail gives the original times).
    pub fn push_at(&self, at: SystemTime, severity: Severity, text: String) {
        // A panic elsewhere while holding the lock leaves a valid deque: use it as is.
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(RecentEvent { at, severity, text });
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<RecentEvent> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

/// Events kept: a page of them, enough to see a whole failover (peer down, fence started and
/// confirmed, election, takeover) and what led to it.
pub const CAPACITY: usize = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_events_newest_first() {
        let r = RecentEvents::default();
        for i in 0..CAPACITY + 7 {
            r.push(Severity::Info, format!("event {i}"));
        }
        r.push(Severity::Alert, "last".to_owned());
        let list = r.newest_first();
        assert_eq!(list.len(), CAPACITY);
        assert_eq!(list[0].text, "last");
        assert_eq!(list[0].severity, Severity::Alert);
        assert_eq!(list[1].text, format!("event {}", CAPACITY + 6));
        // The oldest kept: 8 were pushed out by the 57 + 1 pushes.
        assert_eq!(list[CAPACITY - 1].text, "event 8");
        assert!(list.windows(2).all(|w| w[0].at >= w[1].at));
    }
}
