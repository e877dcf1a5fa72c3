//! Where the console gets what it shows and where it sends what the operator asks for. The UI
//! touches nothing else, so a remote headless instance can drive the same UI by implementing
//! this over the admin API (`switchboard attach`); the data it carries is plain serde types.

use std::{sync::Arc, time::Instant};

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::broadcast;

use super::view::{self, ConsoleView, HopView, LogView, RouteView};
use crate::{
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
    fn events(&self) -> broadcast::Receiver<Event>;
    /// New log lines as they arrive (the UI uses them as a signal to refresh its log pane).
    fn log_feed(&self) -> broadcast::Receiver<Arc<LogLine>>;
    /// An operator's command.
    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>>;
    /// The last `n` routed calls from or to `service` (all calls without one), oldest first.
    fn calls(&self, service: Option<&str>, n: usize) -> Vec<HopView>;
    /// The totals of the routes from or to `service` (all routes without one), busiest first.
    fn routes(&self, service: Option<&str>) -> Vec<RouteView>;
}

/// The supervisor running in this process.
#[derive(Clone)]
pub struct LocalSource {
    supervisor: Supervisor,
    started: Instant,
    /// The HTTP gateway's bound address, for the header.
    gateway: Option<String>,
}

impl LocalSource {
    pub fn new(supervisor: Supervisor) -> Self {
        LocalSource {
            supervisor,
            started: Instant::now(),
            gateway: None,
        }
    }

    /// Shows the gateway's address in the header.
    pub fn with_gateway(mut self, address: Option<std::net::SocketAddr>) -> Self {
        self.gateway = address.map(|a| a.to_string());
        self
    }
}

impl ConsoleSource for LocalSource {
    fn view(&self) -> ConsoleView {
        let mut view = view::snapshot(&self.supervisor, self.started);
        view.gateway.clone_from(&self.gateway);
        view
    }

    fn logs(&self, service: Option<&str>, n: usize) -> Vec<LogView> {
        let lines = match service {
            Some(name) => self.supervisor.logs.tail(name, n),
            None => self.supervisor.logs.tail_all(n),
        };
        lines.iter().map(|l| LogView::from(l.as_ref())).collect()
    }

    fn events(&self) -> broadcast::Receiver<Event> {
        self.supervisor.events.subscribe()
    }

    fn log_feed(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.supervisor.logs.subscribe()
    }

    fn calls(&self, service: Option<&str>, n: usize) -> Vec<HopView> {
        let hops = self.supervisor.router.hops_of(service, n);
        hops.iter().map(HopView::from).collect()
    }

    fn routes(&self, service: Option<&str>) -> Vec<RouteView> {
        view::routes_of(self.supervisor.router.routes(), service)
    }

    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>> {
        let supervisor = self.supervisor.clone();
        async move {
            let (action, target) = command.describe();
            let result = supervisor.command(command).await.map_err(|e| e.to_string());
            if let Some(audit) = &supervisor.audit {
                let outcome = match &result {
                    Ok(_) => "ok".to_string(),
                    Err(err) => err.clone(),
                };
                audit.record("console", action, &target, &outcome);
            }
            result
        }
        .boxed()
    }
}
