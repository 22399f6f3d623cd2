//! Status LED patterns: one LED, told apart by rhythm, so an operator at the rack sees at a
//! glance whether the bridge watches the host.
//!
//! The patterns are chosen so that none is a steady off: a dark LED always means the bridge
//! itself is dead (no power, firmware hung), never a state.
//!
//! | pattern    | rhythm                                   |
//! |------------|------------------------------------------|
//! | disarmed   | a 100 ms flash every 2 s                 |
//! | grace      | 500 ms on, 500 ms off                    |
//! | armed      | steady on                                |
//! | link bad   | two 100 ms flashes per second            |
//! | triggered  | 100 ms on, 100 ms off                    |
//! | fenced     | 1 s on, 1 s off                          |

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Not watching the host.
    Disarmed,
    /// Armed, waiting for the host to boot.
    Grace,
    /// Watching, heartbeats arrive.
    Armed,
    /// Watching, but frames are bad or late.
    LinkBad,
    /// The watchdog holds the host's power off or reset asserted.
    Triggered,
    /// A peer fenced the host through Modbus.
    Fenced,
}

impl Pattern {
    /// The LED level at `now_ms`.
    pub fn level(self, now_ms: u64) -> bool {
        match self {
            Self::Disarmed => now_ms % 2000 < 100,
            Self::Grace => now_ms % 1000 < 500,
            Self::Armed => true,
            Self::LinkBad => {
                let t = now_ms % 1000;
                t < 100 || (200..300).contains(&t)
            }
            Self::Triggered => now_ms % 200 < 100,
            Self::Fenced => now_ms % 2000 < 1000,
        }
    }

    /// The next time after `now_ms` the level may change (for boards that sleep between
    /// events); `None` for a steady pattern.
    pub fn next_change(self, now_ms: u64) -> Option<u64> {
        let step = match self {
            Self::Armed => return None,
            Self::Disarmed | Self::Grace | Self::LinkBad | Self::Triggered => 100,
            Self::Fenced => 1000,
        };
        Some((now_ms / step + 1) * step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(p: Pattern, period_ms: u64) -> std::vec::Vec<bool> {
        (0..period_ms / 100).map(|i| p.level(i * 100)).collect()
    }

    #[test]
    fn every_pattern_is_distinct_and_none_is_dark() {
        let all = [
            Pattern::Disarmed,
            Pattern::Grace,
            Pattern::Armed,
            Pattern::LinkBad,
            Pattern::Triggered,
            Pattern::Fenced,
        ];
        let traces: std::vec::Vec<_> = all.iter().map(|&p| trace(p, 2000)).collect();
        for (i, a) in traces.iter().enumerate() {
            assert!(a.iter().any(|&on| on), "{:?} is never lit", all[i]);
            for b in &traces[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            trace(Pattern::LinkBad, 1000),
            [true, false, true, false, false, false, false, false, false, false]
        );
    }

    #[test]
    fn changes_fall_on_the_pattern_grid() {
        assert_eq!(Pattern::Armed.next_change(5), None);
        assert_eq!(Pattern::Triggered.next_change(0), Some(100));
        assert_eq!(Pattern::Triggered.next_change(150), Some(200));
        assert_eq!(Pattern::Fenced.next_change(999), Some(1000));
        // The level never changes between two grid points.
        for p in [
            Pattern::Disarmed,
            Pattern::LinkBad,
            Pattern::Triggered,
            Pattern::Grace,
        ] {
            for t in 0..2000u64 {
                let next = p.next_change(t).expect("blinks");
                assert_eq!(p.level(t), p.level(next - 1), "{p:?} at {t}");
            }
        }
    }
}
