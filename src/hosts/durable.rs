//! Durable topics in JetStream: `[topics."order.*"] durable = true`.
//!
//! An event on a durable topic is published to the stack's JetStream stream
//! (`SWITCHBOARD_STACK`, subjects `switchboard.STACK.events.TOPIC`, file storage) instead of
//! being delivered from the router's memory. Each service that subscribes to it gets a durable
//! pull consumer of its own, named after the service and the pattern, so that a console that
//! restarts, or a subscriber whose host is away, loses nothing: the server keeps what was not
//! acknowledged.
//!
//! From a consumer, an event goes to one ready replica of the service, as an `Event` whose
//! `correlation` names the delivery; the SDK answers `Ack` with it once every handler it matched
//! returned, and only then is the message acknowledged to JetStream. Unacknowledged within the
//! topic's `ack_wait` (a replica that died, a handler that failed, an SDK that does not ack),
//! it is delivered again: at least once. With no ready replica, it is handed back (`nak`) to
//! come again a second later.
//!
//! When full: events wait for the stream in a bounded queue ([`PUBLISH_QUEUE`]); one that finds
//! it full is dropped, counted and logged, as an event for a congested subscriber is.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use switchboard_protocol::{Envelope, Kind, topic::topic_matches};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    registry::{self, InstanceHandle, InstanceId, SharedRegistry},
    router::DurableTopics,
    stack::{Stack, TopicSpec},
    supervisor::Supervisor,
};

/// Events waiting to be stored.
pub const PUBLISH_QUEUE: usize = 8192;
/// How long a message waits before it is delivered again when no replica can take it now.
const NO_REPLICA_DELAY: Duration = Duration::from_secs(1);
/// How long the console keeps trying to set up the stream at start before it gives up with an
/// error: JetStream can be briefly unavailable while it starts, or while a cluster elects its
/// leader, though the server already takes connections.
const SET_UP_FOR: Duration = Duration::from_secs(15);
/// The pause between two tries.
const SET_UP_PAUSE: Duration = Duration::from_millis(500);
/// How often new subscribers are looked for (a consumer is made for each).
const LOOK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the durable topics' stream: {0}")]
pub struct DurableError(String);

/// The stack's stream and subjects.
#[derive(Debug, Clone)]
struct Names {
    stream: String,
    /// `switchboard.STACK.events`
    prefix: String,
}

impl Names {
    fn new(stack: &str) -> Names {
        let token = super::subjects::token(stack);
        Names {
            stream: format!("SWITCHBOARD_{token}"),
            prefix: format!("switchboard.{token}.events"),
        }
    }

    fn subject(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }
}

/// What the router hands durable events to.
struct Store {
    stack: Arc<Stack>,
    publish: mpsc::Sender<Envelope>,
    dropped: AtomicU64,
    deliveries: Arc<Deliveries>,
}

/// Deliveries waiting for their acknowledgement.
#[derive(Default)]
struct Deliveries {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Delivery>>,
}

struct Delivery {
    message: jetstream::Message,
    to: InstanceId,
    at: Instant,
}

impl DurableTopics for Store {
    fn publish(&self, event: &Envelope) -> bool {
        if self.stack.durable_topic(&event.destination).is_none() {
            return false;
        }
        if self.publish.try_send(event.clone()).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(topic = %event.destination, dropped, "durable event dropped: the queue to the stream is full");
        }
        true
    }

    fn acked(&self, from: &InstanceHandle, delivery: u64) {
        let taken = {
            let mut waiting = lock(&self.deliveries.waiting);
            // A replica acknowledges only what was delivered to it.
            match waiting.get(&delivery) {
                Some(d) if d.to == from.id => waiting.remove(&delivery),
                _ => None,
            }
        };
        if let Some(delivery) = taken {
            tokio::spawn(async move {
                if let Err(err) = delivery.message.ack().await {
                    tracing::debug!(cause = %err, "cannot acknowledge a durable event");
                }
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets up the stream of the stack's durable topics and hands their events to it, when there
/// are any. Returns the tasks, which run until the console ends.
pub async fn start(
    supervisor: &Supervisor,
    client: async_nats::Client,
) -> Result<Vec<JoinHandle<()>>, DurableError> {
    let stack = supervisor.stack().clone();
    let durable: Vec<TopicSpec> = stack.topics.iter().filter(|t| t.durable).cloned().collect();
    if durable.is_empty() {
        return Ok(Vec::new());
    }
    let names = Names::new(&stack.name);
    let js = jetstream::new(client);
    let config = jetstream::stream::Config {
        name: names.stream.clone(),
        subjects: durable.iter().map(|t| names.subject(&t.pattern)).collect(),
        max_age: durable
            .iter()
            .map(|t| t.max_age)
            .max()
            .unwrap_or(TopicSpec::MAX_AGE),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    set_up_stream(&js, config).await?;
    let (publish, queued) = mpsc::channel(PUBLISH_QUEUE);
    let deliveries = Arc::new(Deliveries::default());
    supervisor.router().set_durable(Arc::new(Store {
        stack: stack.clone(),
        publish,
        dropped: AtomicU64::new(0),
        deliveries: deliveries.clone(),
    }));
    let subscribers = Subscribers {
        js: js.clone(),
        names: names.clone(),
        topics: durable,
        registry: supervisor.registry().clone(),
        deliveries,
        running: HashSet::new(),
        tasks: Vec::new(),
    };
    Ok(vec![
        tokio::spawn(store(js, names, queued)),
        tokio::spawn(subscribers.run()),
    ])
}

/// Creates the stack's stream, or brings its settings up to date, trying again for
/// [`SET_UP_FOR`] while JetStream does not answer or refuses.
async fn set_up_stream(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<(), DurableError> {
    let started = std::time::Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let err = match js.create_or_update_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if started.elapsed() + SET_UP_PAUSE >= SET_UP_FOR {
            let tries = match tries {
                1 => "once".to_string(),
                n => format!("{n} times"),
            };
            return Err(DurableError(format!(
                "{err} (tried {tries} over {:.1} s)",
                started.elapsed().as_secs_f64()
            )));
        }
        // The first failure and then one in ten: the operator sees why the start waits
        // without a line every half second.
        if tries % 10 == 1 {
            tracing::warn!(cause = %err, tries, "JetStream cannot set up the durable topics' stream yet; trying again");
        }
        tokio::time::sleep(SET_UP_PAUSE).await;
    }
}

/// Publishes the queued events to the stream, in order; the server's acknowledgements are
/// awaited beside, so one slow acknowledgement does not hold the next publish.
async fn store(js: jetstream::Context, names: Names, mut queued: mpsc::Receiver<Envelope>) {
    while let Some(event) = queued.recv().await {
        let payload = match postcard::to_allocvec(&event) {
            Ok(payload) => Bytes::from(payload),
            Err(err) => {
                tracing::warn!(cause = %err, "cannot encode a durable event");
                continue;
            }
        };
        match js.publish(names.subject(&event.destination), payload).await {
            Ok(stored) => {
                let topic = event.destination.clone();
                tokio::spawn(async move {
                    if let Err(err) = stored.await {
                        tracing::warn!(%topic, cause = %err, "a durable event was not stored");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(topic = %event.destination, cause = %err, "cannot publish a durable event");
            }
        }
    }
}

/// Makes a consumer for each service that subscribes to a durable topic, and runs it.
struct Subscribers {
    js: jetstream::Context,
    names: Names,
    topics: Vec<TopicSpec>,
    registry: SharedRegistry,
    deliveries: Arc<Deliveries>,
    /// (service, pattern) with a consumer running.
    running: HashSet<(String, String)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Subscribers {
    async fn run(mut self) {
        let mut look = tokio::time::interval(LOOK_EVERY);
        loop {
            look.tick().await;
            for (service, topic) in self.wanted() {
                let key = (service.clone(), topic.pattern.clone());
                if self.running.contains(&key) {
                    continue;
                }
                match self.consumer(&service, &topic).await {
                    Ok(consumer) => {
                        self.running.insert(key);
                        let deliver = Deliver {
                            service,
                            registry: self.registry.clone(),
                            deliveries: self.deliveries.clone(),
                        };
                        self.tasks.push(tokio::spawn(deliver.run(consumer)));
                    }
                    Err(err) => {
                        tracing::warn!(%service, pattern = %topic.pattern, cause = %err, "cannot make a durable consumer; trying again");
                    }
                }
            }
            self.forget_old(self.topics.iter().map(|t| t.ack_wait).max());
        }
    }

    /// (service, durable topic) for every service whose subscriptions overlap the topic.
    fn wanted(&self) -> Vec<(String, TopicSpec)> {
        let registry = registry::read(&self.registry);
        let mut wanted = Vec::new();
        for service in &registry.services {
            let patterns: Vec<String> = service
                .instances
                .iter()
                .filter_map(|i| i.handle.as_ref())
                .filter_map(|h| h.subscriptions.read().ok().map(|s| s.clone()))
                .flatten()
                .collect();
            for topic in &self.topics {
                if patterns.iter().any(|p| overlap(p, &topic.pattern)) {
                    wanted.push((service.name().to_string(), topic.clone()));
                }
            }
        }
        wanted
    }

    async fn consumer(
        &self,
        service: &str,
        topic: &TopicSpec,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
        let name = consumer_name(service, &topic.pattern);
        let stream = self
            .js
            .get_stream(&self.names.stream)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.names.subject(&topic.pattern),
                    ack_wait: topic.ack_wait,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Deliveries never acknowledged (the replica died, or its SDK does not ack): JetStream
    /// delivers them again after `ack_wait`; their entries go after twice that.
    fn forget_old(&self, ack_wait: Option<Duration>) {
        let keep = ack_wait.unwrap_or(TopicSpec::ACK_WAIT) * 2;
        lock(&self.deliveries.waiting).retain(|_, d| d.at.elapsed() < keep);
    }
}

/// Whether some topic could match both patterns: each matches the other read as a topic (a
/// wildcard read as a token), which holds whenever one is at least as wide as the other.
fn overlap(subscription: &str, durable: &str) -> bool {
    topic_matches(subscription, durable) || topic_matches(durable, subscription)
}

/// A consumer's name: the service and the pattern, in the characters a name may hold.
fn consumer_name(service: &str, pattern: &str) -> String {
    let pattern: String = pattern
        .chars()
        .map(|c| match c {
            '.' => '_',
            '*' => 'S',
            '>' => 'G',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    format!("{service}__{pattern}")
}

/// One service's consumer: each message to one of its ready replicas.
struct Deliver {
    service: String,
    registry: SharedRegistry,
    deliveries: Arc<Deliveries>,
}

impl Deliver {
    async fn run(self, consumer: jetstream::consumer::Consumer<pull::Config>) {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(service = %self.service, cause = %err, "cannot read a durable consumer");
                return;
            }
        };
        while let Some(message) = messages.next().await {
            let Ok(message) = message else {
                continue;
            };
            self.deliver(message).await;
        }
    }

    async fn deliver(&self, message: jetstream::Message) {
        let Ok(mut event) = postcard::from_bytes::<Envelope>(&message.payload) else {
            tracing::warn!(service = %self.service, "a durable event does not decode; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        let Some(target) = self.replica(&event.destination) else {
            let _ = message.ack_with(AckKind::Nak(Some(NO_REPLICA_DELAY))).await;
            return;
        };
        let delivery = self.deliveries.next.fetch_add(1, Ordering::Relaxed) + 1;
        event.kind = Kind::Event;
        event.correlation = delivery;
        lock(&self.deliveries.waiting).insert(
            delivery,
            Delivery {
                message,
                to: target.id,
                at: Instant::now(),
            },
        );
        if target.link.try_send(&event).is_err() {
            let delivery = lock(&self.deliveries.waiting).remove(&delivery);
            if let Some(delivery) = delivery {
                let _ = delivery
                    .message
                    .ack_with(AckKind::Nak(Some(NO_REPLICA_DELAY)))
                    .await;
            }
        }
    }

    /// The least busy ready replica subscribed to `topic`.
    fn replica(&self, topic: &str) -> Option<Arc<InstanceHandle>> {
        let registry = registry::read(&self.registry);
        registry
            .service(&self.service)?
            .instances
            .iter()
            .filter_map(|i| i.handle.clone())
            .filter(|h| h.is_routable())
            .filter(|h| {
                h.subscriptions
                    .read()
                    .is_ok_and(|s| s.iter().any(|p| topic_matches(p, topic)))
            })
            .min_by_key(|h| h.outstanding.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_overlap_when_one_is_as_wide_as_the_other() {
        assert!(overlap("order.*", "order.*"));
        assert!(overlap("order.>", "order.*"));
        assert!(overlap("order.created", "order.*"));
        assert!(!overlap("user.*", "order.*"));
        assert_eq!(
            consumer_name("notification", "order.*"),
            "notification__order_S"
        );
    }
}
