//! Where the console gets what it shows and where it sends what the operator asks for. The UI
//! touches nothing else: [`LocalSource`] is the supervisor in this process, and the attached
//! console's remote source (in `attach`, above this module) an instance it is attached to.
//! Both hand out the read model's plain types ([`crate::api`]).

use std::{sync::Arc, time::Instant};

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{broadcast, watch};

use crate::{
    api::{ConsoleView, EventView, HopView, LogView, RouteView},
    event::Event,
    logs::LogLine,
    supervisor::{Command, Reply, Supervisor},
};

pub trait ConsoleSource: Clone + Send + Sync + 'static {
    /// A snapshot of everything the console shows except the logs.
    fn view(&self) -> ConsoleView;
    /// The last `n` log lines, of one service or of all of them interleaved, oldest first.
    fn logs(&self, service: Option<&str>, n: usize) -> Vec<LogView>;
    /// Lifecycle events as they happen.
    fn events(&self) -> EventFeed;
    /// Says when new log lines have arrived (the UI then refreshes its log pane).
    fn log_feed(&self) -> LogFeed;
    /// Says when the view has changed, for a source that knows (an attached console's copy
    /// changes when a patch arrives); without one the UI rebuilds it on events and a tick.
    fn view_feed(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// An operator's command; the error is a sentence to show.
    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>>;
    /// The last `n` routed calls from or to `service` (all calls without one), oldest first.
    fn calls(&self, service: Option<&str>, n: usize) -> Vec<HopView>;
    /// The totals of the routes from or to `service` (all routes without one), busiest first.
    fn routes(&self, service: Option<&str>) -> Vec<RouteView>;
    /// Asks for the whole stack to stop while the console stays and shows the progress, for a
    /// source that can; `None` (the default): the caller stops it once the console has ended.
    fn stop_stack(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// Lifecycle events, from the supervisor in this process or from an attached instance.
pub enum EventFeed {
    Local(broadcast::Receiver<Event>),
    Remote(broadcast::Receiver<EventView>),
}

impl EventFeed {
    /// The next event; `Lagged` when some were missed, `Closed` once there will be no more.
    pub async fn recv(&mut self) -> Result<EventView, broadcast::error::RecvError> {
        match self {
            EventFeed::Local(events) => events.recv().await.map(|e| EventView::from(&e)),
            EventFeed::Remote(events) => events.recv().await,
        }
    }
}

/// A signal that new log lines have arrived.
pub enum LogFeed {
    Local(broadcast::Receiver<Arc<LogLine>>),
    Remote(watch::Receiver<u64>),
}

impl LogFeed {
    /// Resolves when there are new lines (or some were missed); never, once the feed has ended.
    pub async fn changed(&mut self) {
        let open = match self {
            LogFeed::Local(lines) => {
                !matches!(lines.recv().await, Err(broadcast::error::RecvError::Closed))
            }
            LogFeed::Remote(seq) => seq.changed().await.is_ok(),
        };
        if !open {
            std::future::pending::<()>().await;
        }
    }
}

/// The supervisor running in this process.
#[derive(Clone)]
pub struct LocalSource {
    supervisor: Supervisor,
    started: Instant,
    /// The HTTP gateway's bound address, for the header.
    gateway: Option<String>,
    /// The stack file's gateway address when it was taken, for the header.
    gateway_taken: Option<String>,
    /// Where `q`'s stop is asked for: whoever owns the stack stops it (gateway first) while
    /// the console shows the progress.
    stop: Option<tokio::sync::mpsc::Sender<()>>,
}

impl LocalSource {
    pub fn new(supervisor: Supervisor) -> Self {
        LocalSource {
            supervisor,
            started: Instant::now(),
            gateway: None,
            gateway_taken: None,
            stop: None,
        }
    }

    /// `q`'s stop is asked for on `stop`, and the console stays to show its progress.
    pub fn with_stop(mut self, stop: tokio::sync::mpsc::Sender<()>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Says in the header that the stack file's gateway address was taken.
    pub fn with_gateway_taken(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.gateway_taken = address.map(|a| a.to_string());
        self
    }

    /// Shows the gateway's address in the header.
    pub fn with_gateway(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.gateway = address.map(|a| a.to_string());
        self
    }
}

/// The audit log's actor for actions taken in the local console.
pub const ACTOR: &str = "console";

impl ConsoleSource for LocalSource {
    fn view(&self) -> ConsoleView {
        let mut view = self.supervisor.view(self.started);
        view.gateway.clone_from(&self.gateway);
        view.gateway_taken.clone_from(&self.gateway_taken);
        view
    }

    fn logs(&self, service: Option<&str>, n: usize) -> Vec<LogView> {
        let lines = match service {
            Some(name) => self.supervisor.logs().tail(name, n),
            None => self.supervisor.logs().tail_all(n),
        };
        lines.iter().map(|l| LogView::from(l.as_ref())).collect()
    }

    fn events(&self) -> EventFeed {
        EventFeed::Local(self.supervisor.events().subscribe())
    }

    fn log_feed(&self) -> LogFeed {
        LogFeed::Local(self.supervisor.logs().subscribe())
    }

    fn calls(&self, service: Option<&str>, n: usize) -> Vec<HopView> {
        let hops = self.supervisor.router().hops_of(service, n);
        hops.iter().map(HopView::from).collect()
    }

    fn routes(&self, service: Option<&str>) -> Vec<RouteView> {
        crate::supervisor::snapshot::routes_of(self.supervisor.router().routes(), service)
    }

    fn stop_stack(&self) -> Option<BoxFuture<'static, ()>> {
        let stop = self.stop.clone()?;
        Some(
            async move {
                // Full (asked already) or closed (the owner has gone): nothing more to ask.
                let _ = stop.try_send(());
            }
            .boxed(),
        )
    }

    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>> {
        let supervisor = self.supervisor.clone();
        async move {
            supervisor
                .command_audited(command, ACTOR)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}
