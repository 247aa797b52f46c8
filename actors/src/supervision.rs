//! Restart policy shared by every supervisor: capped exponential backoff.
//!
//! ractor has no restart strategy of its own (its default stops a supervisor
//! when any child exits), so each supervisor's `handle_supervisor_evt` decides:
//! restart on failure after [`Backoff::next_delay`], let a normal stop go, and
//! restart nothing once shutdown has begun.

use std::time::{Duration, Instant};

use crate::config::SupervisionConfig;

/// A crash this long after the previous one starts the backoff afresh.
const CALM_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Backoff {
    /// Which kind of actor restarts: the label of its restart count.
    kind: &'static str,
    min: Duration,
    max: Duration,
    failures: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    pub fn new(kind: &'static str, config: &SupervisionConfig) -> Self {
        Backoff {
            kind,
            min: Duration::from_millis(config.restart_min_ms),
            max: Duration::from_millis(config.restart_max_ms.max(config.restart_min_ms)),
            failures: 0,
            last_failure: None,
        }
    }

    /// Records a failure and returns how long to wait before restarting.
    pub fn next_delay(&mut self) -> Duration {
        crate::metrics::actor_restarted(self.kind);
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|last| now.duration_since(last) > CALM_PERIOD)
        {
            self.failures = 0;
        }
        self.last_failure = Some(now);
        let delay = self.min.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        delay.min(self.max)
    }
}

/// A restartable actor's current ref, shared by every clone of a handle:
/// the supervisor re-points it on restart, so holders never keep a dead ref.
pub struct Slot<M: ractor::Message>(std::sync::Arc<std::sync::RwLock<ractor::ActorRef<M>>>);

// By hand: `derive` would ask for `M: Clone`.
impl<M: ractor::Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<M: ractor::Message> Slot<M> {
    pub fn new(actor: ractor::ActorRef<M>) -> Self {
        Slot(std::sync::Arc::new(std::sync::RwLock::new(actor)))
    }

    // std RwLock, not tokio's: never held across an await.
    pub fn replace(&self, actor: ractor::ActorRef<M>) {
        *self.0.write().expect("actor slot poisoned") = actor;
    }

    pub fn get(&self) -> ractor::ActorRef<M> {
        self.0.read().expect("actor slot poisoned").clone()
    }
}

/// The child a supervision event reports stopped, and why if it failed;
/// `None` for events that are not an exit.
pub fn exit_of(event: ractor::SupervisionEvent) -> Option<(ractor::ActorCell, Option<String>)> {
    match event {
        ractor::SupervisionEvent::ActorTerminated(cell, _, _) => Some((cell, None)),
        ractor::SupervisionEvent::ActorFailed(cell, error) => Some((cell, Some(error.to_string()))),
        _ => None,
    }
}

/// A child's report type converts into its parent's message (as the variant
/// `$parent::$variant`) and back, so the parent hands the child a
/// `DerivedActorRef<Report>` and the child never names the parent's enum.
macro_rules! reports_to {
    ($report:ty => $parent:ident :: $variant:ident) => {
        impl From<$report> for $parent {
            fn from(report: $report) -> Self {
                $parent::$variant(report)
            }
        }

        impl TryFrom<$parent> for $report {
            type Error = ();

            fn try_from(message: $parent) -> std::result::Result<Self, ()> {
                match message {
                    $parent::$variant(report) => Ok(report),
                    _ => Err(()),
                }
            }
        }
    };
}
pub(crate) use reports_to;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        let mut backoff = Backoff::new(
            "test",
            &SupervisionConfig {
                restart_min_ms: 100,
                restart_max_ms: 500,
            },
        );
        let delays: Vec<u64> = (0..5)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }
}
