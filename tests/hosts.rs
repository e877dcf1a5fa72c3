//! Several hosts in one console: a real `nats-server` on loopback, the console and two agents
//! (`switchboard agent --host a` and `--host b`) as separate processes of the real binary,
//! each with its own run directory. `user` runs on host a, `order` beside the console, and
//! `notification` on host b, so every order crosses all three: the gateway calls `order`
//! (console), which calls `user` (a) and publishes events that `notification` (b) takes and
//! answers by calling `order` again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, nats::NatsServer, processes_under, signal};
use hyper::Method;
use rustix::process::Signal;
use serde_json::{Value, json};
use switchboard::{
    api::ConsoleView,
    client::{Client, RawResponse},
    registry::InstanceState,
};

/// Bound for any one wait.
const LIMIT: Duration = Duration::from_secs(60);

/// The shop on three hosts; `nats` is the body of its `[nats]` table.
fn shop(nats: &str) -> String {
    format!(
        r#"
name = "hosts"

[nats]
{nats}

[gateway]
request_timeout = "10s"
routes = [
  {{ route = "POST /users", call = "user.create" }},
  {{ route = "GET /users/{{id}}", call = "user.get" }},
  {{ route = "POST /orders", call = "order.create" }},
  {{ route = "GET /orders/{{id}}/notifications", call = "notification.for_order" }},
  {{ route = "GET /count", call = "probe.count", stream = true }},
]

[services.user]
builtin = "user"
host = "a"
heartbeat_timeout = "3s"
backoff = {{ initial = "50ms", max = "300ms" }}

[services.order]
builtin = "order"
depends_on = {{ user = "ready" }}
calls = ["user"]
heartbeat_timeout = "3s"
settings = {{ stage_ms = "5", user_timeout_ms = "2000" }}

[services.notification]
builtin = "notification"
host = "b"
calls = ["order"]
heartbeat_timeout = "3s"

[services.probe]
builtin = "probe"
host = "b"

[services.report]
kind = "job"
builtin = "order-report"
host = "a"
calls = ["order"]
params = '{{"page": 100, "pace_ms": 0}}'
"#
    )
}

/// The shop for the chaos test: `user` beside the console, `order` on host a, `notification`
/// on host b, each restarted quickly and never given up on.
fn chaos_shop(nats: &str) -> String {
    let restart = "backoff = { initial = \"50ms\", max = \"300ms\" }\n\
                   restart_limit = { count = 1000, window = \"60s\" }\n";
    shop(nats)
        .replace("builtin = \"user\"\nhost = \"a\"\n", "builtin = \"user\"\n")
        .replace("backoff = { initial = \"50ms\", max = \"300ms\" }\n", "")
        .replace(
            "builtin = \"order\"\n",
            &format!("builtin = \"order\"\nhost = \"a\"\n{restart}"),
        )
        .replace(
            "builtin = \"notification\"\n",
            &format!("builtin = \"notification\"\n{restart}"),
        )
        .replace(
            "builtin = \"user\"\n",
            &format!("builtin = \"user\"\n{restart}"),
        )
}

/// The environment a host's process gets (variables holding its NATS secrets).
type Env = fn(&str) -> Vec<(&'static str, String)>;

fn no_env(_: &str) -> Vec<(&'static str, String)> {
    Vec::new()
}

/// A process of the test, SIGKILLed if the test ends before it does.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The console, its agents and their NATS server.
struct Stack {
    dir: tempfile::TempDir,
    file: PathBuf,
    nats: NatsServer,
    console: Process,
    client: Client,
    agents: HashMap<&'static str, Process>,
}

impl Stack {
    /// The shop with `[nats]` = `url = …` and `extra`, the NATS server with `config`; the
    /// console and agents a and b started with `env(host)` in their environments.
    fn start(config: Option<&str>, extra: &str, env: Env) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        Stack::start_in(dir, shop, config, extra, env)
    }

    /// [`start`](Self::start) in `dir`, where the files `config` and `extra` name are, with
    /// the stack `layout` makes of the `[nats]` table's body.
    fn start_in(
        dir: tempfile::TempDir,
        layout: fn(&str) -> String,
        config: Option<&str>,
        extra: &str,
        env: Env,
    ) -> Stack {
        let nats = NatsServer::start(dir.path(), config);
        let file = dir.path().join("stack.toml");
        std::fs::write(&file, layout(&format!("url = \"{}\"\n{extra}", nats.url()))).unwrap();
        let mut agents = HashMap::new();
        for host in ["a", "b"] {
            agents.insert(host, agent(&file, host, &env(host)));
        }
        let (console, client) = console(dir.path(), &file, &env("console"));
        Stack {
            dir,
            file,
            nats,
            console,
            client,
            agents,
        }
    }

    async fn view(&self) -> Option<ConsoleView> {
        self.client
            .json::<ConsoleView>(Method::GET, "/admin/services", None::<&()>)
            .await
            .ok()
    }

    /// Waits until `check` holds for the console's view; the last view seen when it does not.
    async fn until(&self, what: &str, check: impl Fn(&ConsoleView) -> bool) -> ConsoleView {
        let deadline = Instant::now() + LIMIT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(view) = self.view().await {
                if check(&view) {
                    return view;
                }
                last = Some(view);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: not within {LIMIT:?}; last view: {last:#?}");
    }

    async fn post(&self, path: &str, body: &Value) -> RawResponse {
        self.client
            .send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> RawResponse {
        self.client.send(Method::GET, path, None).await.unwrap()
    }

    fn data(&self, file: &str) -> PathBuf {
        self.dir.path().join(".switchboard/data").join(file)
    }

    /// SIGTERM to the console and the agents; each must stop cleanly, leaving no process.
    fn stop(mut self) {
        let mut children: Vec<(String, Process)> = self
            .agents
            .drain()
            .map(|(host, p)| (format!("agent {host}"), p))
            .collect();
        let console = std::mem::replace(&mut self.console, Process(spawn_true()));
        children.push(("console".into(), console));
        for (_, process) in &children {
            signal(process.0.id(), Signal::TERM);
        }
        for (name, mut process) in children {
            let deadline = Instant::now() + LIMIT;
            let status = loop {
                if let Some(status) = process.0.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "{name} did not stop");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(status.success(), "{name} ended {status}");
        }
        let strays = processes_under(self.dir.path());
        assert!(strays.is_empty(), "left running: {strays:?}");
    }
}

fn spawn_true() -> Child {
    Command::new("true").spawn().unwrap()
}

fn agent(file: &Path, host: &str, env: &[(&'static str, String)]) -> Process {
    let mut command = Command::new(SWITCHBOARD);
    command
        .args(["agent", "--host", host])
        .arg(file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Process(command.spawn().unwrap())
}

fn console(dir: &Path, file: &Path, env: &[(&'static str, String)]) -> (Process, Client) {
    // Its stderr is kept: when it ends before it is up, the failure says why.
    let said = dir.join("console-stderr.log");
    let stderr = std::fs::File::create(&said).unwrap();
    let (child, lines) = common::spawn_reading_into(
        Command::new(SWITCHBOARD)
            .args(["up", file.to_str().unwrap(), "--headless"])
            .args(["--gateway", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("SWITCHBOARD_TOKEN"),
        stderr,
        |line| line.contains("gateway on http://").then_some(line),
    );
    let mut child = Process(child);
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|err| {
            let status = child.0.try_wait();
            let said = std::fs::read_to_string(&said).unwrap_or_default();
            panic!(
                "the console did not print its gateway address ({err}; exit {status:?}); \
                 it said:\n{said}"
            )
        });
    let address = common::gateway_address(&line).expect("an address");
    (child, common::gateway_client(dir, address))
}

fn row<'v>(view: &'v ConsoleView, name: &str) -> &'v switchboard::api::ServiceRow {
    view.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} in the view"))
}

fn ready(view: &ConsoleView, names: &[&str]) -> bool {
    names
        .iter()
        .all(|name| row(view, name).state == InstanceState::Ready)
}

fn json_of(response: &RawResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

/// Creates a user through the gateway (user runs on host a, or beside the console); its id.
async fn create_user(stack: &Stack, name: &str) -> i64 {
    let email = format!("{}@example.com", name.to_lowercase());
    let created = stack
        .post("/users", &json!({ "name": name, "email": email }))
        .await;
    assert!(created.status.is_success(), "{:?}", json_of(&created));
    json_of(&created)["id"].as_i64().expect("a user id")
}

/// Places an order for `user`; its id when acknowledged.
async fn order(stack: &Stack, user: i64) -> Option<i64> {
    let body = json!({ "user_id": user, "item": "cable", "quantity": 1 });
    let response = stack.post("/orders", &body).await;
    response
        .status
        .is_success()
        .then(|| json_of(&response)["id"].as_i64().expect("an order id"))
}

/// Calls go console → a, b → console, console → b and pub/sub console → b; the console shows
/// where each service runs with its live figures; commands for a remote service are carried
/// out by its host's agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_console_routes_and_commands_services_on_three_hosts() {
    let stack = Stack::start(None, "", no_env);
    let view = stack
        .until("every service ready", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    assert_eq!(row(&view, "user").host.as_deref(), Some("a"));
    assert_eq!(row(&view, "notification").host.as_deref(), Some("b"));
    assert_eq!(row(&view, "order").host, None, "the console's own");
    let user_pid = row(&view, "user").pid.expect("user's pid, from host a");
    assert!(
        common::alive(user_pid),
        "the agent's process, on this machine"
    );

    // Gateway (console) → user (a).
    let user = create_user(&stack, "Ann").await;
    // order (console) → user (a), then order's events → notification (b), which calls
    // order (console) back.
    let placed = order(&stack, user)
        .await
        .expect("the order is acknowledged");
    let notifications = {
        let deadline = Instant::now() + LIMIT;
        loop {
            let answer = stack.get(&format!("/orders/{placed}/notifications")).await;
            let list = json_of(&answer)["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if list.len() >= 2 || Instant::now() > deadline {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let kinds: Vec<&str> = notifications
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["created", "completed"], "{notifications:?}");

    // A stream from host b, read by the gateway under credit: every item, in order.
    let streamed = stack.get("/count?n=3000&pace_ms=0").await;
    assert!(streamed.status.is_success(), "{:?}", streamed.status);
    let items: Vec<Value> = String::from_utf8_lossy(&streamed.body)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let indices: Vec<u64> = items.iter().filter_map(|i| i["index"].as_u64()).collect();
    assert_eq!(indices, (0..3000).collect::<Vec<u64>>());

    // The segment of a remote service is relayed: its heartbeat is seen, its requests counted.
    let view = stack
        .until("user's heartbeat and memory seen from host a", |v| {
            let user = row(v, "user");
            user.heartbeat_age
                .is_some_and(|age| age < Duration::from_secs(3))
                && user.rss > 0
        })
        .await;
    assert!(row(&view, "user").instances.iter().all(|r| r.pid.is_some()));

    // Commands go to the agent: a rolling restart gives user a new process, a scale a second.
    let restarted = stack.post("/admin/services/user/restart", &json!({})).await;
    assert!(restarted.status.is_success(), "{:?}", json_of(&restarted));
    stack
        .until("user restarted on host a", |v| {
            let user = row(v, "user");
            user.state == InstanceState::Ready && user.pid.is_some_and(|p| p != user_pid)
        })
        .await;
    // Host a's log lines reach the console: its agent's lines about the service, and the
    // service's own stderr (the SDK says it drains when told to stop).
    let deadline = Instant::now() + LIMIT;
    loop {
        let lines: Vec<Value> = stack
            .client
            .json(
                Method::GET,
                "/admin/services/user/logs?tail=200",
                None::<&()>,
            )
            .await
            .unwrap();
        let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
        if texts.iter().any(|t| t.contains("spawned pid"))
            && texts.iter().any(|t| t.contains("draining"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "user's log lines: {texts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scaled = stack
        .post("/admin/services/user/scale", &json!({ "replicas": 2 }))
        .await;
    assert!(scaled.status.is_success(), "{:?}", json_of(&scaled));
    stack
        .until("two replicas of user on host a", |v| {
            let user = row(v, "user");
            user.ready == 2 && user.replicas == 2
        })
        .await;
    let answer = stack.get(&format!("/users/{user}")).await;
    assert!(answer.status.is_success(), "{:?}", json_of(&answer));

    // A job of host a, run from the command line of the console's host: it calls order
    // (a → console) and its result comes back with its agent's status.
    let run = Command::new(SWITCHBOARD)
        .args(["run", "report", "--file"])
        .arg(&stack.file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        said.contains("report #1: done:") && said.contains("\"orders\":1"),
        "{said}"
    );
    stack.stop();
}

/// An agent killed with SIGKILL: its host is shown unreachable and its callers are answered
/// `unavailable`, not left to time out; started again, its services are adopted. Then the NATS
/// server itself is killed and restarted under load: the agents' services are adopted again
/// without a restart, and every acknowledged order is stored once with one notification per
/// event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_go_silent_are_unreachable_and_come_back_without_restarts() {
    let mut stack = Stack::start(None, "", no_env);
    stack
        .until("every service ready", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    let user = create_user(&stack, "Bo").await;

    // The agent of a dies with its keeper's help: nothing of host a is left.
    let agent = stack.agents.remove("a").unwrap();
    signal(agent.0.id(), Signal::KILL);
    drop(agent);
    stack
        .until("host a unreachable", |v| {
            row(v, "user").state == InstanceState::Unreachable
        })
        .await;
    let answer = stack.get(&format!("/users/{user}")).await;
    assert_eq!(
        answer.error_code().as_deref(),
        Some("unavailable"),
        "{:?}",
        json_of(&answer)
    );
    stack.agents.insert("a", agent_of(&stack, "a"));
    stack.until("host a back", |v| ready(v, &["user"])).await;
    let answer = stack.get(&format!("/users/{user}")).await;
    assert!(answer.status.is_success(), "{:?}", json_of(&answer));

    // The NATS server dies and comes back while orders come in.
    let before = stack
        .until("every service ready again", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    let pids: Vec<(String, Option<u32>)> = ["user", "notification"]
        .iter()
        .map(|name| (name.to_string(), row(&before, name).pid))
        .collect();
    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        acknowledged.extend(order(&stack, user).await);
    }
    stack.nats.kill();
    stack
        .until("both hosts unreachable", |v| {
            row(v, "user").state == InstanceState::Unreachable
                && row(v, "notification").state == InstanceState::Unreachable
        })
        .await;
    for _ in 0..5 {
        // Refused (user cannot be reached), never acknowledged and lost.
        acknowledged.extend(order(&stack, user).await);
    }
    stack.nats.restart();
    let after = stack
        .until("both hosts adopted again", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    for (name, pid) in pids {
        assert_eq!(row(&after, &name).pid, pid, "{name} was restarted");
    }
    // The orders refused while user was unreachable opened order's breaker: a client that
    // retries after it is let through again.
    let deadline = Instant::now() + LIMIT;
    let mut placed = 0;
    while placed < 20 {
        assert!(Instant::now() < deadline, "orders are not taken again");
        match order(&stack, user).await {
            Some(id) => {
                acknowledged.push(id);
                placed += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // Every acknowledged order is stored, and each of its events notified once.
    until_stored_and_notified(&stack, &acknowledged).await;
    stack.stop();
}

/// Waits until every acknowledged order is stored and each of its two events notified, in any
/// order (an event lost with the server is redelivered later); fails at once on an event
/// notified twice.
async fn until_stored_and_notified(stack: &Stack, acknowledged: &[i64]) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let stored = stored_orders(&stack.data("orders.db"));
        let notified = if stack.data("notifications.db").exists() {
            common::notifications_by_order(&stack.data("notifications.db"))
        } else {
            HashMap::new()
        };
        for (order, kinds) in &notified {
            let mut unique = kinds.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                kinds.len(),
                "order {order}: an event notified twice"
            );
        }
        let missing: Vec<&i64> = acknowledged
            .iter()
            .filter(|id| {
                let mut kinds = notified.get(*id).cloned().unwrap_or_default();
                kinds.sort();
                !stored.contains(id) || kinds != ["completed", "created"]
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged orders not stored or not notified: {missing:?} (outbox: {:?})",
            missing.len(),
            acknowledged.len(),
            outbox(&stack.data("orders.db"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outbox's rows not acknowledged yet: (order, topic).
fn outbox(path: &Path) -> Vec<(i64, String)> {
    let Ok(db) = rusqlite::Connection::open(path) else {
        return Vec::new();
    };
    let Ok(mut statement) =
        db.prepare("SELECT order_id, topic FROM outbox WHERE acked_at_ms IS NULL")
    else {
        return Vec::new();
    };
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

fn agent_of(stack: &Stack, host: &str) -> Process {
    agent(&stack.file, host, &[])
}

/// The shop runs end to end: a user, an order, and its two notifications.
async fn shop_works(stack: &Stack) {
    stack
        .until("every service ready", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    let user = create_user(stack, "Cy").await;
    let placed = order(stack, user).await.expect("the order is acknowledged");
    let deadline = Instant::now() + LIMIT;
    loop {
        let answer = stack.get(&format!("/orders/{placed}/notifications")).await;
        if json_of(&answer)["notifications"]
            .as_array()
            .is_some_and(|list| list.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", json_of(&answer));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of the orders `order` stored.
fn stored_orders(path: &Path) -> Vec<i64> {
    let Ok(db) = rusqlite::Connection::open(path) else {
        return Vec::new();
    };
    let Ok(mut statement) = db.prepare("SELECT id FROM orders") else {
        return Vec::new();
    };
    statement
        .query_map([], |r| r.get(0))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// With `[nats]` credentials, an agent with the wrong password cannot join: it says so and
/// exits; with the right one it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_wrong_credential_is_refused() {
    let config =
        "authorization {\n  user: \"switchboard\"\n  password: \"s3cret-of-the-stack\"\n}\n";
    let extra = "user = \"switchboard\"\npassword_env = \"HOSTS_NATS_PASSWORD\"\n";
    let stack = Stack::start(Some(config), extra, |_| {
        vec![("HOSTS_NATS_PASSWORD", "s3cret-of-the-stack".to_string())]
    });
    shop_works(&stack).await;
    // A second agent for a host whose agent runs says so, in an agent's words.
    let second = Command::new(SWITCHBOARD)
        .args(["agent", "--host", "a"])
        .arg(&stack.file)
        .env("HOSTS_NATS_PASSWORD", "s3cret-of-the-stack")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("the agent of host `a` is already running as pid"),
        "{said}"
    );
    let wrong = Command::new(SWITCHBOARD)
        .args(["agent", "--host", "a"])
        .arg(&stack.file)
        .env("HOSTS_NATS_PASSWORD", "guessed")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("cannot connect to NATS") && said.to_lowercase().contains("author"),
        "{said}"
    );
    let unset = Command::new(SWITCHBOARD)
        .args(["agent", "--host", "a"])
        .arg(&stack.file)
        .env_remove("HOSTS_NATS_PASSWORD")
        .output()
        .unwrap();
    assert!(!unset.status.success());
    assert!(
        String::from_utf8_lossy(&unset.stderr).contains("HOSTS_NATS_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&unset.stderr)
    );
    stack.stop();
}

/// Each host has a NATS user of its own whose permissions let it publish only its own
/// subjects (the permissions docs/hosts.md gives): the shop runs under them, and host a's user
/// can neither listen to host b's frames nor speak for host b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_publishes_only_its_own_subjects() {
    let agent = |host: &str, password: &str| {
        format!(
            "{{ user: \"{host}\", password: \"{password}\", permissions: {{ \
               publish: [\"switchboard.hosts.{host}.up\", \"switchboard.hosts.{host}.status\", \"switchboard.hosts.{host}.logs\"], \
               subscribe: [\"switchboard.hosts.{host}.down\", \"switchboard.hosts.{host}.control\"], \
               allow_responses: true }} }}"
        )
    };
    let config = format!(
        "authorization {{\n  users = [\n    {{ user: \"console\", password: \"pc\", permissions: {{ \
           publish: [\"switchboard.hosts.*.down\", \"switchboard.hosts.*.control\"], \
           subscribe: [\"switchboard.hosts.*.up\", \"switchboard.hosts.*.status\", \"switchboard.hosts.*.logs\", \"_INBOX.>\"] }} }}\n    {}\n    {}\n  ]\n}}\n",
        agent("a", "pa"),
        agent("b", "pb")
    );
    let extra = "user = \"{host}\"\npassword_env = \"HOSTS_NATS_PASSWORD\"\n";
    let stack = Stack::start(Some(&config), extra, |host| {
        let password = match host {
            "a" => "pa",
            "b" => "pb",
            _ => "pc",
        };
        vec![("HOSTS_NATS_PASSWORD", password.to_string())]
    });
    shop_works(&stack).await;
    // A restart goes console → a on `control`, and its answer back on the console's inbox.
    let restarted = stack.post("/admin/services/user/restart", &json!({})).await;
    assert!(restarted.status.is_success(), "{:?}", json_of(&restarted));

    // Host a's user tries to read what the console sends host b, and to speak for host b.
    let (violations, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password("a".into(), "pa".into())
        .event_callback(move |event| {
            let violations = violations.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = violations.send(err.to_string());
                }
            }
        })
        .connect(stack.nats.url())
        .await
        .expect("host a's user connects");
    let _listening = client
        .subscribe("switchboard.hosts.b.down")
        .await
        .expect("the subscription is sent");
    client
        .publish("switchboard.hosts.b.up", "spoofed".into())
        .await
        .expect("the publish is sent");
    client.flush().await.expect("flushed");
    let mut refused = Vec::new();
    while refused.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
            Ok(Some(violation)) => refused.push(violation.to_lowercase()),
            _ => break,
        }
    }
    assert!(
        refused
            .iter()
            .any(|v| v.contains("permissions violation") && v.contains("subscription")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|v| v.contains("permissions violation") && v.contains("publish")),
        "{refused:?}"
    );
    stack.stop();
}

/// With `[nats.tls]`, every host reaches the server over TLS, the server checking each
/// client's certificate against the stack's CA (the test makes its own): the shop runs, and a
/// host without a client certificate cannot join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_talk_over_tls_with_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::write(dir.path());
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let tls = format!(
        "tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let stack = Stack::start_in(dir, shop, Some(&config), &tls, no_env);
    shop_works(&stack).await;

    // The same stack without the client certificate: the agent cannot connect.
    let bare = std::fs::read_to_string(&stack.file).unwrap().replace(
        &tls,
        &format!("tls = {{ ca_file = \"{}\" }}\n", pki.ca.display()),
    );
    let file = stack.dir.path().join("no-client-certificate.toml");
    std::fs::write(&file, bare).unwrap();
    let refused = Command::new(SWITCHBOARD)
        .args(["agent", "--host", "a"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot connect to NATS"), "{said}");
    stack.stop();
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(vec!["host".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

/// The chaos test's guarantees across hosts: while orders come in, the processes of `order`
/// (host a), `notification` (host b) and `user` (beside the console) are SIGKILLed at random;
/// their agents (and the console) restart them. Every acknowledged order is stored, and each of
/// its events notified exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_loses_nothing_while_services_on_three_hosts_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_in(dir, chaos_shop, None, "", no_env);
    stack
        .until("every service ready", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    let view = stack.view().await.unwrap();
    assert_eq!(row(&view, "order").host.as_deref(), Some("a"));
    assert_eq!(row(&view, "user").host, None);
    let user = create_user(&stack, "Di").await;

    let until = Instant::now() + Duration::from_secs(8);
    let stack = std::sync::Arc::new(stack);
    let shoppers: Vec<_> = (0..3)
        .map(|_| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                while Instant::now() < until {
                    acknowledged.extend(order(&stack, user).await);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                acknowledged
            })
        })
        .collect();
    let mut kills = 0;
    let mut turn = 0usize;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = ["order", "notification", "user"][turn % 3];
        turn += 1;
        if let Some(view) = stack.view().await
            && let Some(pid) = row(&view, victim).pid
            && signal(pid, Signal::KILL)
        {
            kills += 1;
        }
    }
    let mut acknowledged = Vec::new();
    for shopper in shoppers {
        acknowledged.extend(shopper.await.unwrap());
    }
    assert!(kills >= 6, "only {kills} kills");
    assert!(
        acknowledged.len() >= 20,
        "{} orders acknowledged",
        acknowledged.len()
    );
    until_stored_and_notified(&stack, &acknowledged).await;
    let stack = std::sync::Arc::into_inner(stack).expect("the shoppers are done");
    stack.stop();
}

/// A stack with a durable topic: `publisher` beside the console, `subscriber` on host b.
fn durable_stack(nats: &str) -> String {
    format!(
        r#"
name = "durable"

[nats]
{nats}

[topics."jobs.*"]
durable = true
ack_wait = "2s"

[gateway]
request_timeout = "10s"
routes = [
  {{ route = "POST /publish", call = "publisher.publish" }},
  {{ route = "GET /received", call = "subscriber.received" }},
]

[services.publisher]
builtin = "probe"

[services.subscriber]
builtin = "probe"
host = "b"
env = {{ PROBE_SUBSCRIBE = "jobs.*" }}

[services.idle]
builtin = "probe"
host = "a"
"#
    )
}

impl Stack {
    /// SIGTERM to the console and a new one on the same stack file (its gateway elsewhere).
    fn restart_console(&mut self) {
        signal(self.console.0.id(), Signal::TERM);
        let deadline = Instant::now() + LIMIT;
        while self.console.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the console did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (console, client) = console(self.dir.path(), &self.file, &[]);
        self.console = console;
        self.client = client;
    }

    /// SIGTERM to an agent, waiting for it to stop its services and leave.
    fn stop_agent(&mut self, host: &'static str) {
        let mut agent = self.agents.remove(host).expect("running");
        signal(agent.0.id(), Signal::TERM);
        let deadline = Instant::now() + LIMIT;
        while agent.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "agent {host} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The texts `subscriber` has taken since it started.
async fn received(stack: &Stack) -> Vec<String> {
    let answer = stack.get("/received").await;
    json_of(&answer)
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r["text"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn publish(stack: &Stack, text: &str) {
    let answer = stack
        .post("/publish", &json!({ "topic": "jobs.done", "text": text }))
        .await;
    assert!(answer.status.is_success(), "{:?}", json_of(&answer));
}

/// Waits until `subscriber` has taken every one of `texts`.
async fn until_received(stack: &Stack, texts: &[String]) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = received(stack).await;
        if texts.iter().all(|t| got.contains(t)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscriber took {got:?}, not all of {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `[topics."jobs.*"] durable = true`: events are kept by JetStream until the subscribing
/// service acknowledges them. Published while the subscriber's host is down and across a
/// restart of the console, none is lost: the subscriber, back, takes each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_topic_loses_nothing_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "jetstream {{\n  store_dir: \"{}\"\n}}\n",
        dir.path().join("jetstream").display()
    );
    let mut stack = Stack::start_in(dir, durable_stack, Some(&config), "", no_env);
    stack
        .until("every service ready", |v| {
            ready(v, &["publisher", "subscriber", "idle"])
        })
        .await;
    let first: Vec<String> = (0..5).map(|i| format!("event {i}")).collect();
    for text in &first {
        publish(&stack, text).await;
    }
    until_received(&stack, &first).await;

    // The subscriber's host goes away; events keep coming; the console restarts.
    stack.stop_agent("b");
    stack
        .until("the subscriber gone", |v| {
            row(v, "subscriber").state != InstanceState::Ready
        })
        .await;
    let kept: Vec<String> = (5..15).map(|i| format!("event {i}")).collect();
    for text in &kept[..5] {
        publish(&stack, text).await;
    }
    stack.restart_console();
    stack
        .until("the new console ready", |v| ready(v, &["publisher"]))
        .await;
    for text in &kept[5..] {
        publish(&stack, text).await;
    }
    // Back: every event published while it was away reaches the new subscriber process.
    let back = agent_of(&stack, "b");
    stack.agents.insert("b", back);
    stack
        .until("the subscriber back", |v| ready(v, &["subscriber"]))
        .await;
    until_received(&stack, &kept).await;
    let got = received(&stack).await;
    assert!(
        !got.iter().any(|t| first.contains(t)),
        "events acknowledged before came again: {got:?}"
    );
    stack.stop();
}

/// A console started while the server takes connections but JetStream does not answer yet
/// (here: a server without it, given it a moment later, as a restart or a cluster electing its
/// leader would) waits for it and comes up, where it used to end with an error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_waits_for_jetstream_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path(), Some("# no JetStream yet\n"));
    let file = dir.path().join("stack.toml");
    std::fs::write(&file, durable_stack(&format!("url = \"{}\"\n", nats.url()))).unwrap();
    let config = format!(
        "jetstream {{\n  store_dir: \"{}\"\n}}\n",
        dir.path().join("jetstream").display()
    );
    let conf = dir.path().join("nats.conf");
    // JetStream arrives two seconds after the console started: the server restarts with it,
    // on the same port.
    let enable = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        std::fs::write(&conf, config).unwrap();
        nats.restart();
        nats
    });
    let started = Instant::now();
    let (console, client) = console(dir.path(), &file, &[]);
    let _nats = enable.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "up before JetStream was there"
    );
    let said = std::fs::read_to_string(dir.path().join("console-stderr.log")).unwrap_or_default();
    assert!(said.contains("trying again"), "it said: {said}");
    // Up for good: its admin API answers, and the durable topic's stream is there.
    let view: Result<ConsoleView, _> = client
        .json(Method::GET, "/admin/services", None::<&()>)
        .await;
    assert!(view.is_ok(), "{view:?}");
    drop(console);
}

/// A host that misbehaves on NATS (garbage on its subjects, a status speaking for another
/// host's service, a replica number no service can have, a frame from an instance never
/// adopted) changes nothing: the console stays up and shows what the real agents say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_mislead_the_console() {
    use switchboard::hosts::wire::{HostStatus, InstanceKey, RemoteInstance, UpRef};
    let stack = Stack::start(None, "", no_env);
    let before = stack
        .until("every service ready", |v| {
            ready(v, &["user", "order", "notification", "probe"])
        })
        .await;
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let key = |service: &str, replica: u32| InstanceKey {
        service: service.into(),
        replica,
        boot: 1,
        generation: 1,
    };
    let claim = |service: &str, replica: u32| RemoteInstance {
        key: key(service, replica),
        state: InstanceState::Ready,
        pid: Some(1),
        routable: true,
        version: None,
        methods: vec!["get".into()],
        topics: Vec::new(),
        restarts: 0,
        uptime_ms: None,
        heartbeat_age_ms: None,
        cpu_percent: 0.0,
        rss_bytes: 0,
        last_exit: None,
        snapshot: None,
    };
    for subject in ["up", "status", "logs"] {
        client
            .publish(
                format!("switchboard.hosts.a.{subject}"),
                vec![0xff; 64].into(),
            )
            .await
            .unwrap();
    }
    // Host a speaks for b's notification, and for a replica of user far past any limit; its
    // own status goes on beside (its agent publishes twice a second), so only the claims
    // would show.
    let lies = HostStatus {
        boot: 1,
        agent_pid: 1,
        leaving: false,
        instances: vec![claim("notification", 0), claim("user", u32::MAX)],
        runs: Vec::new(),
    };
    client
        .publish(
            "switchboard.hosts.a.status",
            postcard::to_allocvec(&lies).unwrap().into(),
        )
        .await
        .unwrap();
    let request = switchboard_protocol::Envelope {
        id: 9,
        kind: switchboard_protocol::Kind::Request,
        destination: "order".into(),
        method: "get".into(),
        ..Default::default()
    };
    let stranger = key("user", 7);
    client
        .publish(
            "switchboard.hosts.a.up",
            postcard::to_allocvec(&UpRef::Frame {
                key: &stranger,
                envelope: &request,
            })
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = stack.view().await.expect("the console is up");
    assert_eq!(
        row(&after, "notification").pid,
        row(&before, "notification").pid,
        "host a spoke for b"
    );
    assert!(ready(&after, &["user", "order", "notification", "probe"]));
    assert!(
        row(&after, "user")
            .instances
            .iter()
            .all(|r| r.replica < 1000),
        "{:?}",
        row(&after, "user").instances
    );
    shop_works(&stack).await;
    stack.stop();
}

/// The Python SDK acknowledges durable events: five events reach a Python subscriber once
/// each, and none comes again after the topic's `ack_wait` (2 s) has passed twice over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_acknowledges_durable_events() {
    fn python_stack(nats: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/durable_subscriber.py")
            .display()
            .to_string();
        // It publishes the events too: the probe's bodies are postcard, which it cannot read.
        durable_stack(nats)
            .replace(
                "[services.subscriber]\nbuiltin = \"probe\"\nhost = \"b\"\nenv = { PROBE_SUBSCRIBE = \"jobs.*\" }\n",
                &format!("[services.subscriber]\ncommand = \"python3\"\nargs = [\"{script}\"]\nprotocol = true\n"),
            )
            .replace("call = \"publisher.publish\"", "call = \"subscriber.publish\"")
            // Host b's agent has a service still.
            .replace(
                "[services.publisher]\nbuiltin = \"probe\"\n",
                "[services.publisher]\nbuiltin = \"probe\"\nhost = \"b\"\n",
            )
    }
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "jetstream {{\n  store_dir: \"{}\"\n}}\n",
        dir.path().join("jetstream").display()
    );
    let stack = Stack::start_in(dir, python_stack, Some(&config), "", no_env);
    stack
        .until("every service ready", |v| {
            ready(v, &["publisher", "subscriber", "idle"])
        })
        .await;
    assert_eq!(row(&stack.view().await.unwrap(), "subscriber").host, None);
    let texts: Vec<String> = (0..5).map(|i| format!("event {i}")).collect();
    for text in &texts {
        publish(&stack, text).await;
    }
    let file = stack.data("durable-taken.txt");
    let lines = || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    let deadline = Instant::now() + LIMIT;
    while !texts.iter().all(|t| lines().contains(t)) {
        assert!(Instant::now() < deadline, "taken: {:?}", lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Unacknowledged, each would come again after 2 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut taken = lines();
    taken.sort();
    assert_eq!(taken, texts, "delivered again: not acknowledged");
    stack.stop();
}
