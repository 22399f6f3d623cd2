//! An in-process [`FenceDevice`] with error injection, for testing what sits above the drivers
//! (the agent's fencing levels, the engine's retries) without a BMC.
//!
//! It keeps a power state per target and honours the trait's contract: `off` returns only
//! once its own state reads off, a device that "lies" acknowledges and never changes state
//! (so `off` ends [`FenceErrorKind::Unconfirmed`] at the deadline), a hanging device never
//! answers (so every call ends [`FenceErrorKind::Timeout`] at the deadline).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Confirmed, FenceDevice, FenceError, FenceErrorKind, FenceFuture, PowerState};

/// How the double behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Switches targets after `delay` and reports the truth.
    Works {
        /// Time for a state change to take effect.
        delay: Duration,
    },
    /// Answers every call with this error kind at once.
    Fails(FenceErrorKind),
    /// Never answers.
    Hangs,
    /// Accepts commands, never changes state.
    Lies,
}

/// The double.
#[derive(Debug, Clone)]
pub struct FakeFence {
    name: String,
    power: BTreeMap<String, PowerState>,
    behaviour: Behaviour,
    calls: Vec<String>,
}

impl FakeFence {
    /// A device serving `targets`, all powered on.
    pub fn new(name: impl Into<String>, targets: &[&str], behaviour: Behaviour) -> Self {
        Self {
            name: name.into(),
            power: targets
                .iter()
                .map(|t| ((*t).to_owned(), PowerState::On))
                .collect(),
            behaviour,
            calls: Vec::new(),
        }
    }

    /// Changes the behaviour (a BMC that breaks, or recovers).
    pub fn set_behaviour(&mut self, behaviour: Behaviour) {
        self.behaviour = behaviour;
    }

    /// The real state of `target`.
    pub fn power(&self, target: &str) -> Option<PowerState> {
        self.power.get(target).copied()
    }

    /// Every call so far, as "action target".
    pub fn calls(&self) -> &[String] {
        &self.calls
    }

    async fn switch(
        &mut self,
        action: &str,
        target: &str,
        want: PowerState,
        deadline: Instant,
    ) -> Result<Confirmed, FenceError> {
        let start = Instant::now();
        self.gate(action, target, deadline).await?;
        match self.behaviour.clone() {
            Behaviour::Works { delay } => {
                if Instant::now() + delay > deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Err(self.err(
                        FenceErrorKind::Timeout,
                        format!("{action} {target}: no confirmation by the deadline"),
                    ));
                }
                tokio::time::sleep(delay).await;
                self.power.insert(target.to_owned(), want);
                Ok(Confirmed {
                    state: want,
                    polls: 1,
                    elapsed: start.elapsed(),
                })
            }
            Behaviour::Lies => {
                tokio::time::sleep_until(deadline).await;
                Err(self.err(
                    FenceErrorKind::Unconfirmed,
                    format!(
                        "{action} {target}: accepted, but the target still reads {:?}",
                        self.power(target)
                    ),
                ))
            }
            // `gate` answered these.
            Behaviour::Fails(kind) => {
                Err(self.err(kind, format!("{action} {target}: injected failure")))
            }
            Behaviour::Hangs => Err(self.err(
                FenceErrorKind::Timeout,
                format!("{action} {target}: no answer"),
            )),
        }
    }

    /// Records the call, checks the target, and applies the failures that answer at once or
    /// never.
    async fn gate(
        &mut self,
        action: &str,
        target: &str,
        deadline: Instant,
    ) -> Result<(), FenceError> {
        self.calls.push(format!("{action} {target}"));
        match &self.behaviour {
            Behaviour::Hangs => {
                tokio::time::sleep_until(deadline).await;
                return Err(self.err(
                    FenceErrorKind::Timeout,
                    format!("{action} {target}: no answer"),
                ));
            }
            Behaviour::Fails(kind) => {
                return Err(self.err(*kind, format!("{action} {target}: injected failure")))
            }
            Behaviour::Works { .. } | Behaviour::Lies => {}
        }
        if !self.power.contains_key(target) {
            return Err(self.err(
                FenceErrorKind::TargetUnknown,
                format!("{target} is not a target of this device"),
            ));
        }
        Ok(())
    }

    fn err(&self, kind: FenceErrorKind, message: String) -> FenceError {
        FenceError::new(kind, self.name.clone(), message)
    }
}

impl FenceDevice for FakeFence {
    fn name(&self) -> &str {
        &self.name
    }

    fn off<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.switch("off", target, PowerState::Off, deadline))
    }

    fn on<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(self.switch("on", target, PowerState::On, deadline))
    }

    fn reboot<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, Confirmed> {
        Box::pin(async move {
            self.switch("off", target, PowerState::Off, deadline)
                .await?;
            self.switch("on", target, PowerState::On, deadline).await
        })
    }

    fn status<'a>(&'a mut self, target: &'a str, deadline: Instant) -> FenceFuture<'a, PowerState> {
        Box::pin(async move {
            self.gate("status", target, deadline).await?;
            self.power(target)
                .ok_or_else(|| self.err(FenceErrorKind::TargetUnknown, target.to_owned()))
        })
    }

    fn monitor(&mut self, deadline: Instant) -> FenceFuture<'_, ()> {
        Box::pin(async move {
            let first = self.power.keys().next().cloned().unwrap_or_default();
            self.gate("monitor", &first, deadline).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn works_switches_and_confirms() {
        let mut d = FakeFence::new(
            "bmc",
            &["alpha"],
            Behaviour::Works {
                delay: Duration::from_millis(20),
            },
        );
        let c = d.off("alpha", deadline(1000)).await.expect("off");
        assert_eq!(c.state, PowerState::Off);
        assert_eq!(d.power("alpha"), Some(PowerState::Off));
        assert_eq!(d.status("alpha", deadline(100)).await, Ok(PowerState::Off));
        assert_eq!(
            d.reboot("alpha", deadline(1000)).await.map(|c| c.state),
            Ok(PowerState::On)
        );
        assert_eq!(
            d.calls(),
            ["off alpha", "status alpha", "off alpha", "on alpha"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_injected_failure_has_its_kind() {
        let mut d = FakeFence::new("bmc", &["alpha"], Behaviour::Lies);
        assert_eq!(
            d.off("alpha", deadline(500)).await.map_err(|e| e.kind()),
            Err(FenceErrorKind::Unconfirmed)
        );
        assert_eq!(
            d.power("alpha"),
            Some(PowerState::On),
            "a lying device leaves the target on"
        );
        d.set_behaviour(Behaviour::Hangs);
        let t = Instant::now();
        assert_eq!(
            d.off("alpha", deadline(500)).await.map_err(|e| e.kind()),
            Err(FenceErrorKind::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(500));
        d.set_behaviour(Behaviour::Fails(FenceErrorKind::Auth));
        assert_eq!(
            d.monitor(deadline(100)).await.map_err(|e| e.kind()),
            Err(FenceErrorKind::Auth)
        );
        d.set_behaviour(Behaviour::Works {
            delay: Duration::from_secs(2),
        });
        assert_eq!(
            d.off("alpha", deadline(500)).await.map_err(|e| e.kind()),
            Err(FenceErrorKind::Timeout)
        );
        assert_eq!(
            d.off("beta", deadline(500)).await.map_err(|e| e.kind()),
            Err(FenceErrorKind::TargetUnknown)
        );
    }
}
