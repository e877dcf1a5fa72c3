//! Which replicas a scale-in removes. Taking the highest-numbered slots (as the supervisor once
//! did) can stop every healthy replica and keep a failed one: `scale order 3` next to a failed
//! replica 0, then `scale order 1`, left no replica ready. So the order is what serves callers
//! least first: replicas without a process (failed, crashed, in backoff), then unready ones
//! (starting, degraded, stale, stopping), then ready ones, newest first within each, as
//! Kubernetes' ReplicaSet picks pods to delete.

use std::{cmp::Reverse, time::Instant};

use crate::registry::{Instance, InstanceState};

/// How much a replica serves callers now: removed in ascending order.
fn rank(instance: &Instance) -> u8 {
    match instance.state {
        InstanceState::Ready if !instance.stale => 2,
        state if state.has_process() => 1,
        _ => 0,
    }
}

/// The replica numbers of `instances` in the order a scale-in removes them. A ready replica
/// comes after every unready one, so it is never stopped while an unready one remains.
pub fn removal_order<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Vec<u32> {
    let mut candidates: Vec<(u8, Reverse<Option<Instant>>, Reverse<u32>)> = instances
        .into_iter()
        .map(|i| (rank(i), Reverse(i.started), Reverse(i.id.replica)))
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .map(|(_, _, Reverse(replica))| replica)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::InstanceId;

    fn instance(replica: u32, state: InstanceState, started_secs_ago: u64) -> Instance {
        let mut instance = Instance::new(InstanceId {
            service: 0,
            replica,
            generation: u64::from(replica) + 1,
        });
        instance.state = state;
        instance.started = Instant::now().checked_sub(Duration::from_secs(started_secs_ago));
        instance
    }

    #[test]
    fn failed_then_unready_then_the_newest_ready() {
        let instances = [
            instance(0, InstanceState::Failed, 100),
            instance(1, InstanceState::Ready, 50),
            instance(2, InstanceState::Ready, 10),
            instance(3, InstanceState::Starting, 1),
            instance(4, InstanceState::Ready, 30),
        ];
        assert_eq!(removal_order(&instances), [0, 3, 2, 4, 1]);
    }

    #[test]
    fn a_stale_replica_goes_before_a_ready_one() {
        let mut stale = instance(0, InstanceState::Ready, 100);
        stale.stale = true;
        let instances = [stale, instance(1, InstanceState::Ready, 200)];
        assert_eq!(removal_order(&instances), [0, 1]);
    }
}
