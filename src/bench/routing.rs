//! Routed request/response through the console, against this machine's baselines measured in
//! the same run: the raw pipe ping-pong (placed by the scheduler, and pinned across two cores),
//! the bare batched hub (blocking threads; its rate with 64 in flight and its round trip with
//! one), a hub of one thread that polls instead of sleeping (the console's design with nothing
//! else in it), and the design Switchboard replaces, a hub over Python
//! `multiprocessing.Queue`. Everything is measured in `ROUNDS` interleaved rounds.

use std::{path::Path, time::Duration};

use switchboard_protocol::{Body, Envelope, Kind, Status};

use super::{
    BenchStack, Figure,
    cpu::{Usage, processes_ns},
    median, percentile, pipes,
};
use crate::{router::GATEWAY, supervisor::SupervisorOptions};

const PYTHON_BASELINE: &str = include_str!("../../scripts/mp_queue_baseline.py");

/// Rounds of every measurement, interleaved: the machine's speed and the scheduler's placement
/// (the ping-pong is 6–8 µs when both ends share a core, 14–16 µs across cores) change from
/// one measurement to the next by more than the differences measured, so each figure is the
/// median over the rounds and each ratio the median of the rounds' ratios. Five: with three,
/// one round far off (single rounds of the 64-in-flight ratio range over 0.24–0.43) moved the
/// median run to run by more than a tenth.
const ROUNDS: usize = 5;

/// Every rate and round trip is measured after a warm-up of this share of its count, made at
/// the same load and not timed: the first requests of a run pay for what a steady state does
/// not (a fresh pipe's pages, the busy-poll window growing, the scheduler placing the
/// processes), and in a run of a few hundred milliseconds that start weighed as much as the
/// differences measured.
const WARMUP_DIVISOR: usize = 10;

fn warmup(count: usize) -> usize {
    count / WARMUP_DIVISOR
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Routed {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU per request, warm-up included, in µs: the console (this process), the caller and
    /// the callee. NaN where not measured (the Python baseline).
    pub console_us: f64,
    pub caller_us: f64,
    pub callee_us: f64,
}

impl Routed {
    /// A measurement that could not be made.
    pub(super) const MISSING: Routed = Routed {
        rate: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        console_us: f64::NAN,
        caller_us: f64::NAN,
        callee_us: f64::NAN,
    };

    /// The three processes' CPU per request together.
    fn cpu_us(&self) -> f64 {
        self.console_us + self.caller_us + self.callee_us
    }
}

/// One round of every measurement; NaN where one could not be made.
#[derive(Debug, Clone, Copy)]
struct Round {
    ping_p50: f64,
    ping_p99: f64,
    /// The ping-pong with its ends pinned to two CPUs; NaN where only one may be used.
    across_p50: f64,
    hub_rate: f64,
    /// The bare hub's CPU per request at 64 in flight: its threads and both peers.
    hub_cpu_us: f64,
    hub_p50: f64,
    polling_p50: f64,
    one: Routed,
    many: Routed,
    python_one: Option<Routed>,
    python_many: Option<Routed>,
}

fn figure(name: &str, value: f64, unit: &str, detail: impl Into<String>) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail: detail.into(),
    }
}

/// The median over the rounds of `pick`.
fn over(rounds: &[Round], pick: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(pick))
}

/// "median (each round's)" for a ratio, to two places.
fn ratio(rounds: &[Round], pick: impl Fn(&Round) -> f64) -> (f64, String) {
    let each: Vec<f64> = rounds.iter().map(&pick).collect();
    let listed = each
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    (median(each), listed)
}

pub async fn run(options: &SupervisorOptions, scale: usize) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = false;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        rounds.push(round(&options, scale).await);
    }
    figures(&rounds)
}

/// The stack the routed requests cross: a bench client calling a probe through the console.
/// It runs only while they are measured, so the baselines have the machine to themselves.
async fn routing_stack(options: &SupervisorOptions) -> Option<BenchStack> {
    let stack = BenchStack::start(
        r#"
        name = "bench-routing"
        [services.echo]
        builtin = "probe"
        [services.client]
        builtin = "bench-client"
        calls = ["echo"]
        "#,
        options,
    )?;
    stack.supervisor.begin().await;
    if stack.until_ready(Duration::from_secs(10)).await {
        return Some(stack);
    }
    eprintln!("bench: routing: the probe and the bench client did not become ready");
    stack.finish().await;
    None
}

/// Runs one baseline measurement with the peers' executable, off the runtime: the baselines
/// block on pipes.
async fn baseline<T: Send + 'static>(
    exe: &Path,
    measure: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Option<T> {
    let exe = exe.to_path_buf();
    tokio::task::spawn_blocking(move || measure(&exe))
        .await
        .ok()?
        .ok()
}

async fn round(options: &SupervisorOptions, scale: usize) -> Round {
    let exe = options.builtin_exe.as_path();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (ping_p50, ping_p99) = baseline(exe, move |exe| pipes::ping_pong(exe, 2000 * scale))
        .await
        .map_or((f64::NAN, f64::NAN), |mut times| {
            times.sort();
            let times: Vec<f64> = times.into_iter().map(us).collect();
            (percentile(&times, 0.5), percentile(&times, 0.99))
        });
    let across_p50 = baseline(exe, move |exe| {
        pipes::ping_pong_across_cores(exe, 2000 * scale)
    })
    .await
    .flatten()
    .map_or(f64::NAN, |mut times| {
        times.sort();
        let times: Vec<f64> = times.into_iter().map(us).collect();
        percentile(&times, 0.5)
    });
    let (hub_rate, hub_cpu_us) = baseline(exe, move |exe| {
        pipes::batched_hub(exe, 64, 50_000 * scale, warmup(50_000 * scale))
    })
    .await
    .map_or((f64::NAN, f64::NAN), |hub| (hub.rate, hub.cpu_us));
    let p50 = |hub: Option<pipes::HubRun>| hub.and_then(|hub| hub.p50).map_or(f64::NAN, us);
    // The same hub with one frame in flight: four wakeups where the ping-pong has two.
    let hub_p50 = p50(baseline(exe, move |exe| {
        pipes::batched_hub(exe, 1, 2000 * scale, warmup(2000 * scale))
    })
    .await);
    // And a hub that polls instead of sleeping, as the console does while messages come: only
    // the two ends are woken, so this is the floor for the console's design.
    let polling_p50 = p50(baseline(exe, move |exe| {
        pipes::polling_hub(exe, 2000 * scale, warmup(2000 * scale))
    })
    .await);
    let (mut one, mut many) = (Routed::MISSING, Routed::MISSING);
    if let Some(stack) = routing_stack(options).await {
        // Each run lasts a few hundred milliseconds: over the 40–70 ms that 2,000 and 25,000
        // requests took, a rate held the scheduler's moves of the three processes between the
        // CPUs as they changed pace (25% lower at 64 in flight than over 200,000 requests).
        one = routed(&stack, 1, 10_000 * scale)
            .await
            .unwrap_or(Routed::MISSING);
        many = routed(&stack, 64, 100_000 * scale)
            .await
            .unwrap_or(Routed::MISSING);
        stack.finish().await;
    }
    let python_one = python_baseline(1, 1000 * scale).await;
    let python_many = python_baseline(64, 10_000 * scale).await;
    Round {
        ping_p50,
        ping_p99,
        across_p50,
        hub_rate,
        hub_cpu_us,
        hub_p50,
        polling_p50,
        one,
        many,
        python_one,
        python_many,
    }
}

fn figures(rounds: &[Round]) -> Vec<Figure> {
    let mut figures = baseline_figures(rounds);
    figures.extend(routed_figures(rounds));
    figures.push(python_figure(rounds, 1, |r| r.python_one, |r| r.one));
    figures.push(python_figure(rounds, 64, |r| r.python_many, |r| r.many));
    figures
}

/// The round trip the routed one is held against: across two cores where there are two (the
/// routed one crosses cores too), else the one-core ping-pong. With its name.
fn reference(rounds: &[Round]) -> (fn(&Round) -> f64, &'static str) {
    if rounds.iter().any(|r| !r.across_p50.is_nan()) {
        (|r| r.across_p50, "the ping-pong across cores")
    } else {
        (|r| r.ping_p50, "the ping-pong")
    }
}

/// The baselines: pipe ping-pong, the bare batched hub and the polling hub.
fn baseline_figures(rounds: &[Round]) -> Vec<Figure> {
    let of = format!("median of {ROUNDS} interleaved rounds");
    let (reference, against) = reference(rounds);
    let across = rounds.iter().any(|r| !r.across_p50.is_nan());
    let (hub_vs_ping, hub_each) = ratio(rounds, |r| r.hub_p50 / reference(r));
    let (polling_vs_ping, polling_each) = ratio(rounds, |r| r.polling_p50 / reference(r));
    vec![
        figure(
            "pipe ping-pong round trip, p50",
            over(rounds, |r| r.ping_p50),
            "µs",
            format!("two processes, blocking 64-byte frames, placed by the scheduler; {of}"),
        ),
        figure(
            "pipe ping-pong round trip, p99",
            over(rounds, |r| r.ping_p99),
            "µs",
            "",
        ),
        figure(
            "pipe ping-pong across two cores, p50",
            over(rounds, |r| r.across_p50),
            "µs",
            if across {
                "the two ends pinned to two CPUs"
            } else {
                "one CPU allowed: not measured"
            },
        ),
        figure(
            "bare batched pipe hub, 64 in flight",
            over(rounds, |r| r.hub_rate),
            "req/s",
            "A → hub → B → hub → A, plain threads",
        ),
        figure(
            "bare hub round trip, 1 in flight, p50",
            over(rounds, |r| r.hub_p50),
            "µs",
            format!("{hub_vs_ping:.2}× {against} ({hub_each})"),
        ),
        figure(
            "polling hub round trip, 1 in flight, p50",
            over(rounds, |r| r.polling_p50),
            "µs",
            format!("{polling_vs_ping:.2}× {against} ({polling_each})"),
        ),
    ]
}

/// Routed through the console, 1 and 64 in flight, against the baselines.
fn routed_figures(rounds: &[Round]) -> Vec<Figure> {
    let (reference, against) = reference(rounds);
    let (one_vs_ping, one_each) = ratio(rounds, |r| r.one.p50_us / reference(r));
    let (one_vs_polling, _) = ratio(rounds, |r| r.one.p50_us / r.polling_p50);
    let (many_vs_hub, many_each) = ratio(rounds, |r| r.many.rate / r.hub_rate);
    vec![
        figure(
            "routed round trip, 1 in flight, p50",
            over(rounds, |r| r.one.p50_us),
            "µs",
            format!(
                "{one_vs_ping:.2}× {against} ({one_each}), {one_vs_polling:.2}× the polling hub"
            ),
        ),
        figure(
            "routed round trip, 1 in flight, p99",
            over(rounds, |r| r.one.p99_us),
            "µs",
            "",
        ),
        figure(
            "routed requests/s, 1 in flight",
            over(rounds, |r| r.one.rate),
            "req/s",
            "",
        ),
        figure(
            "routed requests/s, 64 in flight",
            over(rounds, |r| r.many.rate),
            "req/s",
            format!("{many_vs_hub:.2}× the bare hub ({many_each})"),
        ),
        figure(
            "routed round trip, 64 in flight, p50",
            over(rounds, |r| r.many.p50_us),
            "µs",
            "",
        ),
        figure(
            "  CPU per request, routed, 64 in flight",
            over(rounds, |r| r.many.cpu_us()),
            "µs",
            format!(
                "console {:.2}, caller {:.2}, callee {:.2}: {:.2} cores busy (polling included)",
                over(rounds, |r| r.many.console_us),
                over(rounds, |r| r.many.caller_us),
                over(rounds, |r| r.many.callee_us),
                over(rounds, |r| r.many.cpu_us() * r.many.rate / 1e6),
            ),
        ),
        figure(
            "  CPU per request, bare hub, 64 in flight",
            over(rounds, |r| r.hub_cpu_us),
            "µs",
            format!(
                "its threads and both peers: {:.2} cores busy; its rate is set by how much \
                 each wake-up batches, not by the CPU",
                over(rounds, |r| r.hub_cpu_us * r.hub_rate / 1e6),
            ),
        ),
    ]
}

/// Python's `multiprocessing.Queue` hub at `in_flight`, and routed ÷ python.
fn python_figure(
    rounds: &[Round],
    in_flight: usize,
    python: fn(&Round) -> Option<Routed>,
    routed: fn(&Round) -> Routed,
) -> Figure {
    let name = format!("python mp.Queue hub, {in_flight} in flight");
    if rounds.iter().all(|r| python(r).is_none()) {
        return figure(&name, f64::NAN, "req/s", "python3 not available");
    }
    let field =
        |pick: fn(&Routed) -> f64| over(rounds, |r| python(r).as_ref().map_or(f64::NAN, pick));
    let (times, each) = ratio(rounds, |r| {
        python(r).map_or(f64::NAN, |p| routed(r).rate / p.rate)
    });
    figure(
        &name,
        field(|p| p.rate),
        "req/s",
        format!(
            "p50 {:.0} µs; routed ÷ python = {times:.1}× ({each})",
            field(|p| p.p50_us)
        ),
    )
}

/// Requests from the bench client service (`client`) through the console to the probe
/// (`echo`) and back.
pub(super) async fn routed(stack: &BenchStack, in_flight: usize, count: usize) -> Option<Routed> {
    let run = serde_json::json!({
        "target": "echo", "method": "bytes", "in_flight": in_flight, "count": count,
        "warmup": warmup(count), "payload": 64
    });
    let request = Envelope {
        id: 1,
        deadline_us: 300_000_000,
        kind: Kind::Request,
        destination: "client".into(),
        method: "run".into(),
        body: Body::Json(serde_json::to_vec(&run).unwrap_or_default().into()),
        ..Envelope::default()
    };
    let (caller, callee) = (stack.pids("client"), stack.pids("echo"));
    let (caller_before, callee_before) = (processes_ns(&caller), processes_ns(&callee));
    let console_before = Usage::own();
    let answer = stack.supervisor.router().call(GATEWAY, request).await;
    let console = Usage::own().since(console_before).total();
    let caller_ns = processes_ns(&caller).saturating_sub(caller_before);
    let callee_ns = processes_ns(&callee).saturating_sub(callee_before);
    let (Kind::Response(Status::Ok), Body::Json(json)) = (&answer.kind, &answer.body) else {
        tracing::warn!(?answer, "bench client failed");
        return None;
    };
    let report = serde_json::from_slice::<serde_json::Value>(json).ok()?;
    let elapsed = report["elapsed_us"].as_f64()? / 1e6;
    let requests = (count + warmup(count)) as f64;
    Some(Routed {
        rate: report["count"].as_f64()? / elapsed,
        p50_us: report["p50_us"].as_f64()?,
        p99_us: report["p99_us"].as_f64()?,
        console_us: console * 1e6 / requests,
        caller_us: caller_ns as f64 / 1e3 / requests,
        callee_us: callee_ns as f64 / 1e3 / requests,
    })
}

async fn python_baseline(in_flight: usize, count: usize) -> Option<Routed> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let script = dir.join("mp_queue_baseline.py");
    std::fs::write(&script, PYTHON_BASELINE).ok()?;
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(in_flight.to_string())
        .arg(count.to_string())
        .arg(warmup(count).to_string())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(Routed {
        rate: report["rate"].as_f64()?,
        p50_us: report["p50_us"].as_f64()?,
        p99_us: report["p99_us"].as_f64()?,
        ..Routed::MISSING
    })
}

/// `bench-peer` entry point: the processes the pipe baselines talk to.
pub fn peer(args: &[String]) -> std::io::Result<()> {
    match args {
        [kind] if kind == "echo" => pipes::echo(),
        [kind] if kind == "tokio-echo" => pipes::tokio_echo(),
        [kind, window, count, warmup] if kind == "client" => {
            let parse = |s: &String| {
                s.parse::<usize>()
                    .map_err(|e| std::io::Error::other(e.to_string()))
            };
            pipes::client(parse(window)?, parse(count)?, parse(warmup)?)
        }
        _ => Err(std::io::Error::other(
            "usage: bench-peer echo | tokio-echo | client WINDOW COUNT WARMUP",
        )),
    }
}

/// The routing half of `switchboard bench --check`: [`ROUNDS`] interleaved rounds of the routed
/// round trip (1 in flight) ÷ the ping-pong (across cores where there are two), and the routed
/// rate (64 in flight) ÷ the bare hub's. No Python.
///
/// The round trip is the median of the rounds' ratios. The rate is the best round's ratio:
/// on a loaded machine the bare hub (threads in one process) batches more as it is slowed and
/// the routed path (three processes) cannot, so single rounds range over 0.04–0.65 and the
/// median of five failed the check in runs beside a CPU hog (docs/performance.md). Load only
/// lowers the ratio; a change that wrecks routing lowers it in every round, the best one too.
pub(super) async fn check(options: &SupervisorOptions) -> (f64, f64) {
    let mut options = options.clone();
    options.log_files = false;
    let exe = options.builtin_exe.clone();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p50 = |mut times: Vec<Duration>| {
        times.sort();
        let times: Vec<f64> = times.into_iter().map(us).collect();
        percentile(&times, 0.5)
    };
    let (mut round_trips, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let across = baseline(&exe, |exe| pipes::ping_pong_across_cores(exe, 2000)).await;
        let ping = match across.flatten() {
            Some(times) => p50(times),
            None => baseline(&exe, |exe| pipes::ping_pong(exe, 2000))
                .await
                .map_or(f64::NAN, p50),
        };
        let hub = baseline(&exe, |exe| {
            pipes::batched_hub(exe, 64, 50_000, warmup(50_000))
        })
        .await
        .map_or(f64::NAN, |hub| hub.rate);
        let (mut one, mut many) = (Routed::MISSING, Routed::MISSING);
        if let Some(stack) = routing_stack(&options).await {
            one = routed(&stack, 1, 10_000).await.unwrap_or(Routed::MISSING);
            many = routed(&stack, 64, 100_000).await.unwrap_or(Routed::MISSING);
            stack.finish().await;
        }
        round_trips.push(one.p50_us / ping);
        rates.push(many.rate / hub);
    }
    let best = rates
        .iter()
        .copied()
        .filter(|r| !r.is_nan())
        .fold(f64::NAN, f64::max);
    (median(round_trips), best)
}
