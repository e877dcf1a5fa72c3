//! `switchboard bench --only growth`: does a routed message cost more when the stack has more
//! services? For N = 1, 10, 100 and 500 probes, one bench client calls them in turn (64 in
//! flight, 64-byte payloads), so the traffic is spread over all N. Per N: the routed rate and
//! the console's CPU per call, with the CPU the console spends idling at that N (hang checks,
//! metrics: per service per second, not per message) taken out. Both are given as ratios to
//! N = 1 measured in the same run; a per-call cost that grew with N would mean a scan over
//! the services on the hot path.
//!
//! Two costs grow with N whatever the router does, so the split between the console's own
//! code (user time) and the kernel's work for it (system time) is given too: spread over N
//! pipes, the 64 calls in flight no longer share one write and one wakeup per batch (past
//! N = 64 each call is a write, a wakeup and a read of its own); and the console busy-polls
//! for up to `busy_poll::CREDIT_PER_MESSAGE` after each message, which counts as user time
//! and grows as messages come further apart. Run with `SWITCHBOARD_BUSY_POLL=0` to take the
//! polling out.
//!
//! The first of those is what any hub pays, so at each N the same traffic also goes through
//! a bare hub over N echo processes ([`spread_hub`]), and the figure the target is about is
//! the console's CPU per call divided by the bare hub's, at 500 services against 1: about 1
//! (or less) when nothing on the console's path grows with the services. The probes' and the
//! bench client's CPU per call are given too: at hundreds of services they, woken once per
//! call, set the rate.
//!
//! CPU time on a shared machine is noisy, and it cannot tell more work from the same work
//! with more cache misses. Under `valgrind --tool=callgrind` each size's idle period and each
//! run is also a window of its own ([`super::callgrind`]), so the instructions per call can
//! be compared across sizes: `scripts/growth-callgrind.sh` does it (fewer calls there:
//! `SWITCHBOARD_GROWTH_CALLS`, `SWITCHBOARD_GROWTH_RUNS`).

use std::time::{Duration, Instant};

use switchboard_protocol::{Body, Envelope, Kind, Status};

use super::{
    BenchStack, Figure, callgrind,
    cpu::{Usage, processes_ns},
    median, spread_hub,
};
use crate::{router::GATEWAY, supervisor::SupervisorOptions};

pub const SIZES: [usize; 4] = [1, 10, 100, 500];
/// Calls per measured run, after a tenth as many not counted; `SWITCHBOARD_GROWTH_CALLS`
/// changes it (for a run under valgrind).
const CALLS: usize = 30_000;
const IN_FLIGHT: usize = 64;
/// Runs per size; the figures are their medians. `SWITCHBOARD_GROWTH_RUNS` changes it.
const RUNS: usize = 3;
/// How long the console's idle CPU is measured before the runs, at each size.
const IDLE: Duration = Duration::from_secs(3);

/// One size's medians.
#[derive(Debug, Clone, Copy)]
struct Measured {
    n: usize,
    rate: f64,
    /// Console CPU per call, idle subtracted, in µs.
    cpu_per_call_us: f64,
    /// Of which in the console's own code (user time), and in the kernel on its behalf.
    user_per_call_us: f64,
    system_per_call_us: f64,
    /// Console CPU while the calls ran, in percent of a core.
    busy_percent: f64,
    idle_percent: f64,
    /// The probes' CPU per call, all together, and the bench client's, in µs.
    probes_per_call_us: f64,
    client_per_call_us: f64,
    /// The bare spread hub at the same N ([`spread_hub`]): its rate and CPU per round trip.
    bare: Option<Bare>,
}

/// The bare spread hub's medians at one size.
#[derive(Debug, Clone, Copy)]
struct Bare {
    rate: f64,
    cpu_per_call_us: f64,
    user_per_call_us: f64,
    system_per_call_us: f64,
    /// Its echo processes' CPU per call, all together: what the probes' is held against.
    echoes_per_call_us: f64,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    /// Per call, idle taken out, in µs.
    per_call: Usage,
    busy_percent: f64,
    /// The probes' CPU per call, all of them together, and the bench client's, in µs.
    probes_per_call_us: f64,
    client_per_call_us: f64,
}

/// How many calls per run, and how many runs per size.
#[derive(Debug, Clone, Copy)]
struct Plan {
    calls: usize,
    runs: usize,
    /// The bare hub's echo processes: `bench-peer echo` (blocking reads), or `tokio-echo` in
    /// `SWITCHBOARD_GROWTH_ECHO`.
    echo: &'static str,
}

impl Plan {
    /// The defaults, or the counts in `SWITCHBOARD_GROWTH_CALLS` and `SWITCHBOARD_GROWTH_RUNS`.
    fn from_env() -> Plan {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| v > 0)
                .unwrap_or(default)
        };
        Plan {
            calls: var("SWITCHBOARD_GROWTH_CALLS", CALLS),
            runs: var("SWITCHBOARD_GROWTH_RUNS", RUNS),
            echo: match std::env::var("SWITCHBOARD_GROWTH_ECHO").as_deref() {
                Ok("tokio-echo") => "tokio-echo",
                _ => "echo",
            },
        }
    }

    fn warmup(self) -> usize {
        self.calls / 10
    }
}

pub async fn run(options: &SupervisorOptions, only: &[usize]) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = false;
    let plan = Plan::from_env();
    let mut measured = Vec::new();
    for &n in if only.is_empty() { &SIZES[..] } else { only } {
        match measure(&options, n, plan).await {
            Some(m) => measured.push(m),
            None => eprintln!("bench: growth: no figures at {n} services"),
        }
    }
    figures(&measured, plan)
}

fn stack(n: usize) -> String {
    let names: Vec<String> = (0..n).map(|i| format!("\"e{i:03}\"")).collect();
    let mut toml = format!(
        "name = \"bench-growth\"\n[services.client]\nbuiltin = \"bench-client\"\ncalls = [{}]\n",
        names.join(", ")
    );
    for i in 0..n {
        toml.push_str(&format!("[services.e{i:03}]\nbuiltin = \"probe\"\n"));
    }
    toml
}

async fn measure(options: &SupervisorOptions, n: usize, plan: Plan) -> Option<Measured> {
    let bench = BenchStack::start(&stack(n), options)?;
    bench.supervisor.begin().await;
    let limit = Duration::from_secs(15 + n as u64 / 20);
    if !bench.until_ready(limit).await {
        eprintln!("bench: growth: {n} services did not become ready");
        bench.finish().await;
        return None;
    }
    // Past the start-up's last echoes, then the idle cost at this size.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = callgrind::Window::open(&format!("growth n={n} idle"));
    let before = Usage::own();
    let started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let wall = started.elapsed().as_secs_f64();
    window.close_with(&format!("wall_s={wall:.6}"));
    let idle = Usage::own().since(before).scaled(1.0 / wall);
    let targets: Vec<String> = (0..n).map(|i| format!("e{i:03}")).collect();
    let pids = Pids::of(&bench, &targets);
    let mut runs = Vec::with_capacity(plan.runs);
    for _ in 0..plan.runs {
        if let Some(run) = spread(&bench, &targets, &pids, idle, plan).await {
            runs.push(run);
        }
    }
    bench.finish().await;
    if runs.is_empty() {
        return None;
    }
    let median = |pick: fn(&Run) -> f64| median(runs.iter().map(pick));
    let bare = bare(options, n, plan).await;
    Some(Measured {
        n,
        rate: median(|r| r.rate),
        cpu_per_call_us: median(|r| r.per_call.total()),
        user_per_call_us: median(|r| r.per_call.user),
        system_per_call_us: median(|r| r.per_call.system),
        busy_percent: median(|r| r.busy_percent),
        idle_percent: idle.total() * 100.0,
        probes_per_call_us: median(|r| r.probes_per_call_us),
        client_per_call_us: median(|r| r.client_per_call_us),
        bare,
    })
}

/// The same traffic through the bare spread hub and `n` echo processes, as many runs as the
/// console had, after the console's stack is gone.
async fn bare(options: &SupervisorOptions, n: usize, plan: Plan) -> Option<Bare> {
    let exe = options.builtin_exe.clone();
    let mut runs = Vec::with_capacity(plan.runs);
    for _ in 0..plan.runs {
        let exe = exe.clone();
        let run = tokio::task::spawn_blocking(move || {
            spread_hub::run(&exe, plan.echo, n, IN_FLIGHT, plan.calls, plan.warmup())
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|run| run.map_err(|err| err.to_string()));
        match run {
            Ok(run) => runs.push(run),
            Err(err) => eprintln!("bench: growth: bare hub over {n} echoes: {err}"),
        }
    }
    if runs.is_empty() {
        return None;
    }
    Some(Bare {
        rate: median(runs.iter().map(|r| r.rate)),
        cpu_per_call_us: median(runs.iter().map(|r| r.user_us + r.system_us)),
        user_per_call_us: median(runs.iter().map(|r| r.user_us)),
        system_per_call_us: median(runs.iter().map(|r| r.system_us)),
        echoes_per_call_us: median(runs.iter().map(|r| r.echoes_us)),
    })
}

/// One run of calls spread over `targets`: the rate the client saw, the console's CPU per call
/// with `idle` (cores) taken out, and its CPU while the calls ran.
async fn spread(
    bench: &BenchStack,
    targets: &[String],
    pids: &Pids,
    idle: Usage,
    plan: Plan,
) -> Option<Run> {
    let warmup = plan.warmup();
    let run = serde_json::json!({
        "target": targets[0], "targets": targets, "method": "bytes", "in_flight": IN_FLIGHT,
        "count": plan.calls, "warmup": warmup, "payload": 64
    });
    let request = Envelope {
        id: 1,
        deadline_us: 300_000_000,
        kind: Kind::Request,
        destination: "client".into(),
        method: "run".into(),
        body: Body::Json(serde_json::to_vec(&run).ok()?.into()),
        ..Envelope::default()
    };
    let calls = plan.calls + warmup;
    let window = callgrind::Window::open(&format!("growth n={} calls={calls}", targets.len()));
    let (probes_before, client_before) = (pids.probes_ns(), pids.client_ns());
    let before = Usage::own();
    let started = Instant::now();
    let answer = bench.supervisor.router().call(GATEWAY, request).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = Usage::own().since(before);
    let probes_ns = pids.probes_ns().saturating_sub(probes_before);
    let client_ns = pids.client_ns().saturating_sub(client_before);
    window.close_with(&format!("wall_s={wall:.6}"));
    let (Kind::Response(Status::Ok), Body::Json(json)) = (&answer.kind, &answer.body) else {
        tracing::warn!(?answer, "bench client failed");
        return None;
    };
    let report = serde_json::from_slice::<serde_json::Value>(json).ok()?;
    if report["errors"].as_u64() != Some(0) {
        eprintln!("bench: growth: {} calls failed", report["errors"]);
    }
    let rate = report["count"].as_f64()? / (report["elapsed_us"].as_f64()? / 1e6);
    let calls = calls as f64;
    let idle = idle.scaled(wall);
    let per_call = Usage {
        user: (cpu.user - idle.user).max(0.0),
        system: (cpu.system - idle.system).max(0.0),
    }
    .scaled(1e6 / calls);
    Some(Run {
        rate,
        per_call,
        busy_percent: cpu.total() / wall * 100.0,
        probes_per_call_us: probes_ns as f64 / 1e3 / calls,
        client_per_call_us: client_ns as f64 / 1e3 / calls,
    })
}

/// The processes of a growth stack: the bench client and the probes.
struct Pids {
    client: Vec<u32>,
    probes: Vec<u32>,
}

impl Pids {
    fn of(bench: &BenchStack, targets: &[String]) -> Pids {
        Pids {
            client: bench.pids("client"),
            probes: targets.iter().flat_map(|t| bench.pids(t)).collect(),
        }
    }

    fn probes_ns(&self) -> u64 {
        processes_ns(&self.probes)
    }

    fn client_ns(&self) -> u64 {
        processes_ns(&self.client)
    }
}

fn figures(measured: &[Measured], plan: Plan) -> Vec<Figure> {
    let base = measured.iter().find(|m| m.n == 1).copied();
    let mut figures = Vec::new();
    for m in measured {
        let ratio = |value: f64, of: fn(&Measured) -> f64| {
            base.map_or(String::new(), |b| {
                format!("; {:.2}× that at 1 service", value / of(&b))
            })
        };
        figures.push(Figure {
            name: format!("{} services, traffic spread over all: routed calls", m.n),
            value: m.rate,
            unit: "calls/s".into(),
            detail: format!(
                "one bench client calling each in turn, {IN_FLIGHT} in flight, 64 B; median of {} runs of {}{}",
                plan.runs,
                plan.calls,
                ratio(m.rate, |b| b.rate)
            ),
        });
        figures.push(Figure {
            name: "  console CPU per call".into(),
            value: m.cpu_per_call_us,
            unit: "µs".into(),
            detail: format!(
                "its idle CPU at this size ({:.2} % of a core) taken out{}",
                m.idle_percent,
                ratio(m.cpu_per_call_us, |b| b.cpu_per_call_us)
            ),
        });
        figures.push(Figure {
            name: "    in the console's code (user)".into(),
            value: m.user_per_call_us,
            unit: "µs".into(),
            detail: ratio(m.user_per_call_us, |b| b.user_per_call_us).replacen("; ", "", 1),
        });
        figures.push(Figure {
            name: "    in the kernel for it (system)".into(),
            value: m.system_per_call_us,
            unit: "µs".into(),
            detail: ratio(m.system_per_call_us, |b| b.system_per_call_us).replacen("; ", "", 1),
        });
        figures.push(Figure {
            name: "  console CPU while routing".into(),
            value: m.busy_percent,
            unit: "% of a core".into(),
            detail: String::new(),
        });
        figures.push(Figure {
            name: "  the probes' CPU per call".into(),
            value: m.probes_per_call_us,
            unit: "µs".into(),
            detail: format!(
                "all {} together; the bench client's {:.2} µs{}",
                m.n,
                m.client_per_call_us,
                ratio(m.probes_per_call_us, |b| b.probes_per_call_us)
            ),
        });
        if let Some(bare) = m.bare {
            figures.push(Figure {
                name: format!("  bare hub over {} {} processes", m.n, plan.echo),
                value: bare.rate,
                unit: "calls/s".into(),
                detail: "the same traffic through one epoll thread, nothing of Switchboard".into(),
            });
            figures.push(Figure {
                name: "    its CPU per call".into(),
                value: bare.cpu_per_call_us,
                unit: "µs".into(),
                detail: format!(
                    "user {:.2}, system {:.2}{}",
                    bare.user_per_call_us,
                    bare.system_per_call_us,
                    base.and_then(|b| b.bare).map_or(String::new(), |b| format!(
                        "; {:.2}× that at 1 echo",
                        bare.cpu_per_call_us / b.cpu_per_call_us
                    ))
                ),
            });
            figures.push(Figure {
                name: format!("    its {} processes' CPU per call", plan.echo),
                value: bare.echoes_per_call_us,
                unit: "µs".into(),
                detail: format!(
                    "all {} together; the probes' ÷ theirs: {:.2}×",
                    m.n,
                    m.probes_per_call_us / bare.echoes_per_call_us
                ),
            });
            figures.push(Figure {
                name: "  console CPU per call ÷ the bare hub's".into(),
                value: m.cpu_per_call_us / bare.cpu_per_call_us,
                unit: "×".into(),
                detail: format!(
                    "the kernel's part alone (system time) {:.2}×",
                    m.system_per_call_us / bare.system_per_call_us
                ),
            });
        }
    }
    if let (Some(b), Some(last)) = (base, measured.last().filter(|m| m.n > 1)) {
        figures.push(Figure {
            name: format!("console CPU per call, {} ÷ 1 services", last.n),
            value: last.cpu_per_call_us / b.cpu_per_call_us,
            unit: "×".into(),
            detail: "same run; grows with what spreading costs any hub (below)".into(),
        });
        if let (Some(bare_base), Some(bare_last)) = (b.bare, last.bare) {
            let at = |m: &Measured, bare: Bare| m.cpu_per_call_us / bare.cpu_per_call_us;
            figures.push(Figure {
                name: format!(
                    "console CPU per call ÷ the bare hub's, {} ÷ 1 services",
                    last.n
                ),
                value: at(last, bare_last) / at(&b, bare_base),
                unit: "×".into(),
                detail: "same run; target: about 1 (nothing on the console's hot path grows with \
                         the services)"
                    .into(),
            });
        }
    }
    figures
}
