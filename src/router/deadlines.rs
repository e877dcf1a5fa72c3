//! The deadline sweeper: answers `timeout` for requests in flight or held past their deadline.

use std::time::{Duration, Instant};

use switchboard_protocol::ErrorCode;

use super::{InFlight, Inner, Router, lock};

/// How often the deadline sweeper looks at in-flight requests while any are waiting.
const SWEEP_EVERY: Duration = Duration::from_millis(5);

/// Answers `timeout` for requests whose deadline passed. Sleeps while nothing with a deadline is
/// in flight, so an idle console does not wake up for it.
pub(super) async fn sweep_deadlines(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let has_deadlines = lock(&strong.in_flight)
            .values()
            .any(|f| f.deadline.is_some())
            || lock(&strong.held).has_requests();
        if !has_deadlines {
            // Re-checked every second so the task ends soon after the router is dropped.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), strong.sweeper_wake.notified()).await;
            continue;
        }
        drop(strong);
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<(u64, InFlight)> = {
            let mut in_flight = lock(&strong.in_flight);
            let ids: Vec<u64> = in_flight
                .iter()
                .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| in_flight.remove(&id).map(|f| (id, f)))
                .collect()
        };
        let router = Router {
            inner: strong.clone(),
        };
        let expired_held = lock(&strong.held).expired(now);
        let mut touched: Vec<&str> = expired_held
            .iter()
            .map(|h| h.envelope.destination.as_str())
            .collect();
        touched.dedup();
        for service in touched {
            let left = lock(&strong.held).requests_for(service);
            router.publish_held(service, left);
        }
        for held in expired_held {
            let message = format!(
                "`{}` did not come back within the deadline",
                held.envelope.destination
            );
            router.refuse(
                &held.from,
                held.caller,
                &held.envelope,
                ErrorCode::Timeout,
                &message,
            );
        }
        for (routed_id, flight) in expired {
            let message = format!(
                "`{}` did not answer within the deadline",
                flight.target.service
            );
            // A stream cut short is cancelled at its producer; a plain request just ends.
            let cancel = flight.streaming;
            router.end_flight(routed_id, flight, ErrorCode::Timeout, &message, cancel);
        }
    }
}
