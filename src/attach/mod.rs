//! `switchboard attach`: the full console over a running instance.
//!
//! [`RemoteSource`] is the console's second [`ConsoleSource`]: it keeps a copy of the
//! instance's read model, kept current by the console stream (`GET /admin/console`, see
//! [`crate::api::stream`]): one `hello` with the whole view and recent logs, then patches,
//! events and log lines as they happen. Nothing is polled. Actions go to the admin API, which
//! writes them to the audit log under this client's name. When the link drops, the header
//! says so and the link is made again with backoff; the next `hello` catches the copy up.

mod link;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use hyper::Method;
use tokio::sync::{broadcast, watch};

use crate::{
    api::{
        AttachedView, ConsoleView, EventView, HopView, LogView, RouteView, stream::MAX_LOG_TAIL,
    },
    client::{Client, Target, api_error},
    gateway::admin::{Done, RunStarted, ScaleRequest},
    supervisor::{Command, Reply},
    tui::{ConsoleSource, EventFeed, Exit, LogFeed, state::Quit},
};

/// How often the calls overlay's data is asked for while it is open.
const CALLS_EVERY: Duration = Duration::from_secs(1);
/// Lifecycle events kept for a UI that falls behind.
const EVENT_BUFFER: usize = 1024;

/// What the attached console knows of the instance.
#[derive(Default)]
struct Model {
    /// The view as JSON, which patches apply to, and the same decoded.
    json: serde_json::Value,
    view: ConsoleView,
    logs: VecDeque<LogView>,
    link: AttachedView,
    /// The calls overlay's last answer, by service (`None` for all).
    calls: Option<(Option<String>, Vec<HopView>, Vec<RouteView>)>,
    /// When the calls were last asked for (they are asked for at most once a second).
    calls_asked: Option<std::time::Instant>,
}

struct Shared {
    model: Mutex<Model>,
    events: broadcast::Sender<EventView>,
    /// Bumped when log lines arrive.
    log_seq: watch::Sender<u64>,
    /// Bumped when the view changes.
    view_seq: watch::Sender<u64>,
}

impl Shared {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The instance an attached console shows.
#[derive(Clone)]
pub struct RemoteSource {
    shared: Arc<Shared>,
    client: Client,
    read_only: bool,
}

impl RemoteSource {
    /// A source for the instance at `target`, and the task that keeps its link up. The task
    /// runs until it is dropped or aborted: spawn it on a runtime beside the UI.
    pub fn connect(target: Target, read_only: bool) -> (RemoteSource, BoxFuture<'static, ()>) {
        let name = if read_only {
            "attach --read-only"
        } else {
            "attach"
        };
        let client = Client::new(target).named(crate::client::who(name));
        let shared = Arc::new(Shared {
            model: Mutex::new(Model {
                link: AttachedView {
                    to: client.target.address.to_string(),
                    connected: false,
                    read_only,
                    problem: Some("connecting…".into()),
                },
                ..Model::default()
            }),
            events: broadcast::channel(EVENT_BUFFER).0,
            log_seq: watch::Sender::new(0),
            view_seq: watch::Sender::new(0),
        });
        let task = link::run(shared.clone(), client.clone()).boxed();
        (
            RemoteSource {
                shared,
                client,
                read_only,
            },
            task,
        )
    }

    /// Whether the link is up now.
    pub fn connected(&self) -> bool {
        self.shared.model().link.connected
    }

    /// Asks the instance to stop every service (the attached console's "stop everything").
    pub async fn stop_instance(&self) -> Result<(), String> {
        if self.read_only {
            return Err("read-only console: stopping the stack is refused".into());
        }
        self.client
            .json::<Done>(Method::POST, "/admin/shutdown", None::<&()>)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// Fetches the calls overlay's data in the background, once at a time.
    fn refresh_calls(&self, service: Option<&str>, n: usize) {
        {
            let mut model = self.shared.model();
            if model
                .calls_asked
                .is_some_and(|at| at.elapsed() < CALLS_EVERY)
            {
                return;
            }
            model.calls_asked = Some(std::time::Instant::now());
        }
        let (client, shared) = (self.client.clone(), self.shared.clone());
        let service = service.map(str::to_string);
        tokio::spawn(async move {
            let query = service
                .as_deref()
                .map_or(String::new(), |s| format!("&service={}", segment(s)));
            let calls = client
                .json::<Vec<HopView>>(
                    Method::GET,
                    &format!("/admin/calls?limit={n}{query}"),
                    None::<&()>,
                )
                .await
                .unwrap_or_default();
            let routes = client
                .json::<Vec<RouteView>>(
                    Method::GET,
                    &format!("/admin/routes?x=1{query}"),
                    None::<&()>,
                )
                .await
                .unwrap_or_default();
            let mut model = shared.model();
            model.calls = Some((service, calls, routes));
            drop(model);
            // The UI rebuilds its view on this signal, and asks again for the overlay's data.
            shared.view_seq.send_modify(|n| *n += 1);
        });
    }
}

impl ConsoleSource for RemoteSource {
    fn view(&self) -> ConsoleView {
        let model = self.shared.model();
        let mut view = model.view.clone();
        view.attached = Some(model.link.clone());
        view
    }

    fn logs(&self, service: Option<&str>, n: usize) -> Vec<LogView> {
        let model = self.shared.model();
        let mut lines: Vec<LogView> = model
            .logs
            .iter()
            .rev()
            .filter(|l| service.is_none_or(|s| l.service == s))
            .take(n)
            .cloned()
            .collect();
        lines.reverse();
        lines
    }

    fn events(&self) -> EventFeed {
        EventFeed::Remote(self.shared.events.subscribe())
    }

    fn log_feed(&self) -> LogFeed {
        LogFeed::Remote(self.shared.log_seq.subscribe())
    }

    fn view_feed(&self) -> Option<watch::Receiver<u64>> {
        Some(self.shared.view_seq.subscribe())
    }

    fn command(&self, command: Command) -> BoxFuture<'static, Result<Reply, String>> {
        let client = self.client.clone();
        let read_only = self.read_only;
        async move {
            if read_only {
                return Err(format!(
                    "read-only console: `{command}` refused (attach without --read-only to act)"
                ));
            }
            send_command(&client, &command)
                .await
                .map_err(|err| err.to_string())
        }
        .boxed()
    }

    fn calls(&self, service: Option<&str>, n: usize) -> Vec<HopView> {
        self.refresh_calls(service, n);
        let model = self.shared.model();
        match &model.calls {
            Some((s, calls, _)) if s.as_deref() == service => calls.clone(),
            _ => Vec::new(),
        }
    }

    fn routes(&self, service: Option<&str>) -> Vec<RouteView> {
        let model = self.shared.model();
        match &model.calls {
            Some((s, _, routes)) if s.as_deref() == service => routes.clone(),
            _ => Vec::new(),
        }
    }
}

async fn send_command(
    client: &Client,
    command: &Command,
) -> Result<Reply, crate::client::ClientError> {
    let service = |name: &str, action: &str| format!("/admin/services/{}/{action}", segment(name));
    match command {
        Command::Start(n) | Command::Stop(n) | Command::Restart(n) | Command::Kill(n) => {
            let (action, _) = command.describe();
            let _: Done = client
                .json(Method::POST, &service(n, action), None::<&()>)
                .await?;
            Ok(Reply::Done)
        }
        Command::Scale(n, replicas) => {
            let body = ScaleRequest {
                replicas: *replicas,
            };
            let _: Done = client
                .json(Method::POST, &service(n, "scale"), Some(&body))
                .await?;
            Ok(Reply::Done)
        }
        Command::ResetBreaker(n) => {
            let path = format!("/admin/services/{}/breaker/reset", segment(n));
            let _: Done = client.json(Method::POST, &path, None::<&()>).await?;
            Ok(Reply::Done)
        }
        Command::RunJob(n, params) => {
            let path = format!("/admin/jobs/{}/run", segment(n));
            let response = client
                .send(
                    Method::POST,
                    &path,
                    params.as_ref().map(|p| p.as_bytes().to_vec()),
                )
                .await?;
            if !response.status.is_success() {
                return Err(api_error(&response));
            }
            let started: RunStarted = serde_json::from_slice(&response.body)
                .map_err(|err| crate::client::ClientError::Decode(err.to_string()))?;
            Ok(Reply::JobRun(started.run))
        }
    }
}

fn segment(text: &str) -> String {
    crate::client::commands::segment(text)
}

/// Runs the attached console until the operator leaves it; returns what to tell them.
pub async fn run(target: Target, read_only: bool) -> String {
    let to = target.address.to_string();
    let (source, link) = RemoteSource::connect(target, read_only);
    let link = tokio::spawn(link);
    let (end_ui, ui_ends) = tokio::sync::oneshot::channel::<Exit>();
    let ui = match crate::tui::terminal::spawn(
        source.clone(),
        async move {
            ui_ends
                .await
                .unwrap_or_else(|_| Exit::Shutdown("ending".into()))
        },
        || {},
    ) {
        Ok(ui) => ui,
        Err(err) => return format!("cannot start the console: {err}"),
    };
    let ui = tokio::task::spawn_blocking(move || ui.join());
    tokio::pin!(ui);
    let mut signals = crate::app::signals::Signals::install().ok();
    let signal = async {
        match &mut signals {
            Some(signals) => signals.next().await,
            None => std::future::pending().await,
        }
    };
    let exit = tokio::select! {
        exit = &mut ui => exit.ok().and_then(Result::ok),
        signal = signal => {
            let exit = match signal {
                crate::app::signals::Signal::Hangup => Exit::TerminalLost("hangup".into()),
                crate::app::signals::Signal::Terminate(name) => Exit::Shutdown(name.into()),
            };
            let _ = end_ui.send(exit.clone());
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut ui).await;
            Some(exit)
        }
    };
    let message = match exit {
        Some(Exit::Quit(Quit::Stop)) => match source.stop_instance().await {
            Ok(()) => format!("asked the instance at {to} to stop every service"),
            Err(err) => format!("{err}; detached from {to}, the stack keeps running"),
        },
        Some(Exit::Quit(Quit::Detach)) => format!("detached from {to}; the stack keeps running"),
        Some(Exit::TerminalLost(why) | Exit::Shutdown(why)) => {
            format!("{why}; detached from {to}, the stack keeps running")
        }
        None => "the console failed; the stack keeps running".into(),
    };
    link.abort();
    message
}

/// Log lines an attached console keeps (its scrollback and search).
pub const LOGS_KEPT: usize = MAX_LOG_TAIL;
