//! The chaos test: the demo shop runs under the real `switchboard` binary (headless, gateway on
//! a loopback port) with orders coming in over HTTP, while random services (order, user,
//! notification, storefront) are killed with SIGKILL again and again. Afterwards:
//!
//! - every order the gateway answered 2xx exists and completed, in order's SQLite file;
//! - every event of every order was recorded exactly once, in notification's SQLite file;
//! - the console never went down, and every killed service came back;
//! - after SIGTERM to the console, no process of the stack remains.
//!
//! It prints what it did: kills, requests, answers by status and code, the worst
//! time-to-recover (SIGKILL until GET /admin/services shows the service ready under a new pid).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, processes_under, signal, spawn_reading_lines, stack_file};
use hyper::Method;
use rustix::process::Signal;
use serde_json::{Value, json};
use switchboard::{api::ConsoleView, client::Client, registry::InstanceState};

/// How long services are killed for.
const CHAOS: Duration = Duration::from_secs(20);
/// Concurrent HTTP clients placing orders.
const SHOPPERS: usize = 4;
/// Each shopper waits this long between orders. Unpaced they outran what `order` processes (32
/// at once, 4 stages of 20 ms), and the settling wait measured that backlog (22 s for 14,790
/// orders) rather than recovery; paced, fewer than 300 orders a second arrive.
const PACE: Duration = Duration::from_millis(15);
const VICTIMS: [&str; 4] = ["order", "user", "notification", "storefront"];
/// Bound for any one wait (startup, recovery, settling, shutdown).
const LIMIT: Duration = Duration::from_secs(60);

/// The demo stack, faster: short stages, quick restarts, and a restart limit that repeated
/// kills cannot reach (the test is about recovering, not about giving up).
fn chaos_stack() -> String {
    let restart = "backoff = { initial = \"50ms\", max = \"300ms\" }\n\
                   restart_limit = { count = 1000, window = \"60s\" }\n";
    let mut toml = include_str!("../src/stack/demo.toml")
        .replace("name = \"demo\"", "name = \"chaos\"")
        .replace("request_timeout = \"10s\"", "request_timeout = \"3s\"")
        .replace("stage_ms = \"150\"", "stage_ms = \"20\"")
        .replace("rate = \"20\"", "rate = \"10\"");
    for service in VICTIMS {
        let header = format!("[services.{service}]\n");
        assert!(toml.contains(&header), "the demo stack has no {service}");
        toml = toml.replace(&header, &format!("{header}{restart}"));
    }
    toml
}

/// The console under test, SIGKILLed if the test fails before stopping it.
struct Console {
    child: Child,
    dir: tempfile::TempDir,
    client: Client,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    fn start() -> Console {
        let (dir, stack) = stack_file(&chaos_stack());
        // Headless output is every service's log; only the gateway's address is wanted.
        let (child, lines) = spawn_reading_lines(
            Command::new(SWITCHBOARD)
                .args(["up", stack.to_str().unwrap(), "--headless"])
                .args(["--gateway", "127.0.0.1:0"])
                .env_remove("SWITCHBOARD_TOKEN"),
            |line| line.contains("gateway on http://"),
        );
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the console did not print its gateway address");
        let address = common::gateway_address(&line).expect("an address");
        let client = common::gateway_client(dir.path(), address);
        Console { child, dir, client }
    }

    fn data(&self, file: &str) -> PathBuf {
        self.dir.path().join(".switchboard/data").join(file)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    async fn view(&self) -> Option<ConsoleView> {
        self.client
            .json::<ConsoleView>(Method::GET, "/admin/services", None::<&()>)
            .await
            .ok()
    }

    /// Waits until every one of `services` is ready; false at the bound.
    async fn until_ready(&self, services: &[&str]) -> bool {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            if let Some(view) = self.view().await
                && services.iter().all(|name| {
                    view.services
                        .iter()
                        .any(|s| s.name == *name && s.state == InstanceState::Ready)
                })
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// What the shoppers saw.
#[derive(Default)]
struct Tally {
    acknowledged: Vec<i64>,
    /// "200", "503 unavailable", "504 timeout", "transport: ..."
    answers: BTreeMap<String, u32>,
    /// 503s that came without a `Retry-After` header.
    no_retry_after: u32,
    /// The slowest answer.
    slowest: Duration,
}

async fn shop(client: Client, customers: Vec<i64>, worker: usize, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut n = worker;
    while Instant::now() < until {
        n += 1;
        let body = json!({
            "user_id": customers[n % customers.len()],
            "item": "cable",
            "quantity": 1 + n % 3,
        });
        let sent = Instant::now();
        let response = client
            .send(Method::POST, "/orders", Some(body.to_string().into_bytes()))
            .await;
        tally.slowest = tally.slowest.max(sent.elapsed());
        let key = match response {
            Ok(response) if response.status.is_success() => {
                let order: Value = serde_json::from_slice(&response.body).unwrap();
                tally
                    .acknowledged
                    .push(order["id"].as_i64().expect("an order id"));
                response.status.as_u16().to_string()
            }
            Ok(response) => {
                if response.status == hyper::StatusCode::SERVICE_UNAVAILABLE
                    && !response.headers.contains_key(hyper::header::RETRY_AFTER)
                {
                    tally.no_retry_after += 1;
                }
                let code = response.error_code().unwrap_or_else(|| "?".into());
                format!("{} {code}", response.status.as_u16())
            }
            Err(err) => format!("transport: {err}"),
        };
        *tally.answers.entry(key).or_default() += 1;
        tokio::time::sleep(PACE).await;
    }
    tally
}

/// One SIGKILL and how long the service took to come back.
struct Kill {
    service: &'static str,
    recovered: Option<Duration>,
}

/// Polls the admin API until `service` is ready under a pid other than `killed`.
async fn recovery(client: Client, service: &'static str, killed: u32, at: Instant) -> Kill {
    let deadline = at + LIMIT;
    while Instant::now() < deadline {
        if let Ok(view) = client
            .json::<ConsoleView>(Method::GET, "/admin/services", None::<&()>)
            .await
            && let Some(row) = view.services.iter().find(|s| s.name == service)
            && row.state == InstanceState::Ready
            && row.pid.is_some_and(|pid| pid != killed)
        {
            return Kill {
                service,
                recovered: Some(at.elapsed()),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Kill {
        service,
        recovered: None,
    }
}

/// (order id → status) as order stored them.
fn orders(path: &Path) -> HashMap<i64, String> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut statement = db.prepare("SELECT id, status FROM orders").unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_loses_nothing_while_its_services_are_killed_at_random() {
    let mut console = Console::start();
    assert!(
        console.until_ready(&VICTIMS).await,
        "the shop never became ready"
    );
    let mut customers = Vec::new();
    for i in 0..5 {
        let user: Value = console
            .client
            .json(
                Method::POST,
                "/users",
                Some(&json!({ "name": "Chaos Shopper", "email": format!("chaos{i}@example.com") })),
            )
            .await
            .unwrap();
        customers.push(user["id"].as_i64().unwrap());
    }

    let started = Instant::now();
    let until = started + CHAOS;
    let shoppers: Vec<_> = (0..SHOPPERS)
        .map(|worker| {
            tokio::spawn(shop(
                console.client.clone(),
                customers.clone(),
                worker,
                until,
            ))
        })
        .collect();

    // Every pid the stack ever showed, for the orphan check at the end.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut recoveries = Vec::new();
    let mut console_down = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(400 + fastrand::u64(..500))).await;
        if !console.alive() {
            console_down = true;
            break;
        }
        let Some(view) = console.view().await else {
            continue;
        };
        seen.lock()
            .unwrap()
            .extend(view.services.iter().filter_map(|s| s.pid));
        let service = VICTIMS[fastrand::usize(..VICTIMS.len())];
        let Some(pid) = view
            .services
            .iter()
            .find(|s| s.name == service && s.state == InstanceState::Ready)
            .and_then(|s| s.pid)
        else {
            // Still coming back from the last kill: pick again next round.
            continue;
        };
        signal(pid, Signal::KILL);
        let at = Instant::now();
        recoveries.push(tokio::spawn(recovery(
            console.client.clone(),
            service,
            pid,
            at,
        )));
    }
    assert!(!console_down, "the console exited during the chaos");

    let mut tally = Tally::default();
    for shopper in shoppers {
        let t = shopper.await.unwrap();
        tally.acknowledged.extend(t.acknowledged);
        tally.no_retry_after += t.no_retry_after;
        tally.slowest = tally.slowest.max(t.slowest);
        for (k, n) in t.answers {
            *tally.answers.entry(k).or_default() += n;
        }
    }
    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let mut worst: Option<(Duration, &str)> = None;
    let mut never_back = Vec::new();
    for recovery in recoveries {
        let kill = recovery.await.unwrap();
        *kills.entry(kill.service).or_default() += 1;
        match kill.recovered {
            Some(took) if worst.is_none_or(|(w, _)| took > w) => worst = Some((took, kill.service)),
            Some(_) => {}
            None => never_back.push(kill.service),
        }
    }
    let requests: u32 = tally.answers.values().sum();
    eprintln!("chaos: {CHAOS:?} with {SHOPPERS} HTTP shoppers and the storefront");
    eprintln!("chaos: kills {kills:?}");
    eprintln!(
        "chaos: {requests} requests, answers {:?}, slowest {:?}",
        tally.answers, tally.slowest
    );
    eprintln!(
        "chaos: {} orders acknowledged; worst time-to-recover {:?}",
        tally.acknowledged.len(),
        worst
    );
    let total_kills: u32 = kills.values().sum();
    assert!(total_kills >= 15, "only {total_kills} kills: {kills:?}");
    assert!(
        VICTIMS.iter().all(|v| kills.contains_key(v)),
        "not every victim was killed: {kills:?}"
    );
    assert!(never_back.is_empty(), "never came back: {never_back:?}");
    // What the README promises a client: a failure is an answer, never a hang or a cut
    // connection; a 503 says when to retry.
    let unexpected: Vec<(&String, &u32)> = tally
        .answers
        .iter()
        .filter(|(key, _)| {
            !(key.starts_with('2') || key.starts_with("503 ") || key.starts_with("504 "))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers a client should never get: {unexpected:?}"
    );
    assert_eq!(tally.no_retry_after, 0, "503s without Retry-After");
    // The gateway's request timeout is 3 s here: nothing may be held much past it.
    assert!(
        tally.slowest < Duration::from_secs(6),
        "an order was held {:?}",
        tally.slowest
    );
    assert!(
        tally.acknowledged.len() >= 50,
        "only {} orders went through",
        tally.acknowledged.len()
    );
    assert!(console.alive(), "the console exited");
    assert!(
        console.until_ready(&VICTIMS).await,
        "not every service is back"
    );

    // Once the killing stops, the outbox drains: every acknowledged order completes and is
    // notified once per event; no order at all is notified twice for one event.
    let settling = Instant::now();
    loop {
        // Notifications first: the storefront still places orders, and one stored after a
        // later read of orders.db could otherwise look like a notification for nothing.
        let notified = common::notifications_by_order(&console.data("notifications.db"));
        let stored = orders(&console.data("orders.db"));
        for (order, kinds) in &notified {
            let unique: BTreeSet<&String> = kinds.iter().collect();
            assert_eq!(
                unique.len(),
                kinds.len(),
                "order {order} notified twice: {kinds:?}"
            );
            assert!(
                stored.contains_key(order),
                "notification for unknown order {order}"
            );
        }
        let pending: Vec<i64> = tally
            .acknowledged
            .iter()
            .copied()
            .filter(|id| {
                let mut kinds = notified.get(id).cloned().unwrap_or_default();
                kinds.sort();
                stored.get(id).map(String::as_str) != Some("completed")
                    || kinds != ["completed", "created"]
            })
            .collect();
        for id in &tally.acknowledged {
            assert!(
                stored.contains_key(id),
                "acknowledged order {id} is not stored"
            );
        }
        if pending.is_empty() {
            break;
        }
        assert!(
            settling.elapsed() < LIMIT,
            "{} acknowledged orders never completed with both notifications, e.g. {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "chaos: settled {:?} after the last kill",
        settling.elapsed()
    );

    // Graceful shutdown, then nothing of the stack remains.
    if let Some(view) = console.view().await {
        seen.lock()
            .unwrap()
            .extend(view.services.iter().filter_map(|s| s.pid));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(console.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = console.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the console did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the console exited with {status}");
    let seen = seen.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<u32> = seen
            .iter()
            .copied()
            .filter(|pid| common::alive(*pid))
            .collect();
        let strays = processes_under(console.dir.path());
        if alive.is_empty() && strays.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running after shutdown: seen {alive:?}, by environment {strays:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("chaos: {} pids seen, none left", seen.len());
}
