//! The managers' decision logic for services: pure functions from the cluster's state to
//! the changes that bring it closer to what users declared.
//!
//! The leader runs them in a loop (`crate::reconciler`): read a [`View`] of the store,
//! [`orchestrate`] (replicated, global and job services, restarts, rolling updates and
//! rollbacks, the task reaper), allocate (moves new tasks to Pending; networking will
//! reserve addresses here), [`schedule`] (place pending tasks on nodes), then propose the
//! resulting [`Plan`]. Nothing here touches the store, the clock or randomness: the time
//! and an ID source come in, so every decision is unit-testable on its actions.

pub mod constraint;
pub mod orchestrate;
pub mod scheduler;

use chrono::{DateTime, Utc};
use shoal_store::model::{Cluster, Node, Service, Task};

pub use orchestrate::orchestrate;
pub use scheduler::schedule;

/// The state the decisions are made on (a consistent read of the store).
#[derive(Clone, Debug, Default)]
pub struct View {
    pub cluster: Cluster,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    /// The leader's clock.
    pub now: DateTime<Utc>,
}

/// Changes to propose. Updates and deletes carry the version they were decided on, so a
/// decision made on stale state is refused by the store (and made again next round).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// New tasks (state New, or Pending with a node for global modes).
    pub create_tasks: Vec<Task>,
    /// Changed tasks (desired state, status, node).
    pub update_tasks: Vec<Task>,
    /// Tasks to delete (the reaper).
    pub delete_tasks: Vec<Task>,
    /// Changed services (update status, rollbacks, job iteration).
    pub update_services: Vec<Service>,
    /// When the decisions should be made again even if nothing changes (restart delays,
    /// update delays, monitor windows).
    pub wake_at: Option<DateTime<Utc>>,
}

impl Plan {
    /// Whether there is nothing to propose.
    pub fn is_empty(&self) -> bool {
        self.create_tasks.is_empty()
            && self.update_tasks.is_empty()
            && self.delete_tasks.is_empty()
            && self.update_services.is_empty()
    }

    /// Keeps the earlier of two wake-up times.
    pub fn wake(&mut self, at: DateTime<Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Makes new task IDs (random in the daemon, counters in tests).
pub trait IdSource {
    fn new_id(&mut self) -> String;
}

impl<F: FnMut() -> String> IdSource for F {
    fn new_id(&mut self) -> String {
        self()
    }
}
