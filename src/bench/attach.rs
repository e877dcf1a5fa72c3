//! `bench --only attach`: what an attached console costs and how fresh it is.
//!
//! The demo stack runs in this process with its gateway on loopback. A real
//! `switchboard attach` runs on a pseudo-terminal of 120×40, connected through a loopback
//! proxy that counts the bytes both ways; the bytes it writes to its terminal are counted on
//! the pty's master. Both are measured over an idle stretch (nobody at the keyboard; the demo
//! stack's own load generator keeps running, so figures move as they would on screen).
//!
//! Freshness is measured in this process, with an attached [`RemoteSource`] over the admin
//! socket: from the instance's lifecycle event of a state flip (a service stopped, then
//! started) to the attached copy showing the new state, and from a new metrics sample in the
//! instance to the attached copy's next change.

use std::{
    os::fd::OwnedFd,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Figure, bench_stack, percentile};
use crate::{
    app::App,
    attach::RemoteSource,
    client::{Endpoint, Target},
    gateway::Bind,
    registry::InstanceState,
    stack,
    supervisor::{Command as Control, SupervisorOptions},
    tui::ConsoleSource,
};

/// How long the attached console settles (its first `hello` is the whole view and the log
/// tail) before the idle stretch is measured.
const SETTLE: Duration = Duration::from_secs(3);
/// State flips and samples timed.
const FLIPS: usize = 10;
const SAMPLES: usize = 10;

pub async fn run(options: &SupervisorOptions, idle_for: Duration) -> Vec<Figure> {
    let Some((stack, dir)) = bench_stack(stack::DEMO_TOML) else {
        return Vec::new();
    };
    let app = match App::start(
        stack,
        options.clone(),
        Bind::At(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await
    {
        Ok(app) => app,
        Err(err) => {
            eprintln!("bench attach: {err}");
            return Vec::new();
        }
    };
    app.begin().await;
    let mut figures = Vec::new();
    if ready(&app, Duration::from_secs(30)).await {
        figures.extend(idle_traffic(&app, idle_for).await);
        figures.extend(freshness(&app).await);
    } else {
        eprintln!("bench attach: the demo stack did not become ready");
    }
    let _ = app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    figures
}

async fn ready(app: &App, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let ready = crate::registry::read(app.supervisor.registry())
            .services
            .iter()
            .filter(|s| s.spec.kind != crate::stack::ServiceKind::Job)
            .all(|s| s.ready_instances() > 0);
        if ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Bytes per second on the link and to the terminal of a real attached console left alone.
async fn idle_traffic(app: &App, idle_for: Duration) -> Vec<Figure> {
    let Some(gateway) = app.gateway().map(crate::gateway::Gateway::address) else {
        return Vec::new();
    };
    let token = std::fs::read_to_string(
        app.supervisor
            .stack()
            .run_dir
            .join(crate::gateway::auth::TOKEN_FILE),
    )
    .unwrap_or_default();
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        return Vec::new();
    };
    let Ok(proxy_address) = listener.local_addr() else {
        return Vec::new();
    };
    let link_bytes = Arc::new(AtomicU64::new(0));
    let proxy = tokio::spawn(proxy(listener, gateway, link_bytes.clone()));
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let mut command = Command::new(exe);
    command.args([
        "attach",
        "--address",
        &proxy_address.to_string(),
        "--token",
        token.trim(),
    ]);
    let (mut child, master) = match on_pty(&mut command, 120, 40) {
        Ok(spawned) => spawned,
        Err(err) => {
            eprintln!("bench attach: cannot start an attached console on a pty: {err}");
            proxy.abort();
            return Vec::new();
        }
    };
    let screen_bytes = Arc::new(AtomicU64::new(0));
    let reader = {
        let screen_bytes = screen_bytes.clone();
        std::thread::spawn(move || count_reads(&master, &screen_bytes))
    };
    tokio::time::sleep(SETTLE).await;
    let (link_before, screen_before) = (
        link_bytes.load(Ordering::Relaxed),
        screen_bytes.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    tokio::time::sleep(idle_for).await;
    let seconds = start.elapsed().as_secs_f64();
    let link = (link_bytes.load(Ordering::Relaxed) - link_before) as f64 / seconds;
    let screen = (screen_bytes.load(Ordering::Relaxed) - screen_before) as f64 / seconds;
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    proxy.abort();
    let detail = format!(
        "a real `attach` on a 120×40 pty, demo stack with its load, {} s after {} s to settle",
        idle_for.as_secs(),
        SETTLE.as_secs()
    );
    vec![
        Figure {
            name: "attach: idle link traffic (both ways)".into(),
            value: link,
            unit: "B/s".into(),
            detail: format!("{detail} (target < 2048)"),
        },
        Figure {
            name: "attach: idle writes to its terminal".into(),
            value: screen,
            unit: "B/s".into(),
            detail: format!("{detail} (target < 2048)"),
        },
    ]
}

/// Milliseconds from a change in the instance to the attached copy having it.
async fn freshness(app: &App) -> Vec<Figure> {
    let Some(socket) = app.socket().map(|s| s.path().to_path_buf()) else {
        return Vec::new();
    };
    let (source, link) = RemoteSource::connect(
        Target {
            address: Endpoint::Unix(socket),
            token: None,
        },
        false,
    );
    let link = tokio::spawn(link);
    let start = Instant::now();
    while !source.connected() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut flips = Vec::new();
    let service = "notification";
    for round in 0..FLIPS * 2 {
        let (command, wanted) = if round % 2 == 0 {
            (Control::Stop(service.into()), InstanceState::Stopped)
        } else {
            (Control::Start(service.into()), InstanceState::Ready)
        };
        let mut events = app.supervisor.events().subscribe();
        if app.supervisor.command(command).await.is_err() {
            break;
        }
        // The instance's own moment: its lifecycle event of the flip.
        let flipped = super::next(&mut events, Duration::from_secs(20), |e| {
            e.service == service
                && matches!(e.kind, crate::event::EventKind::State { to, .. } if to == wanted)
        })
        .await;
        if flipped.is_none() {
            break;
        }
        let at = Instant::now();
        if shows(&source, service, wanted, Duration::from_secs(5)).await {
            flips.push(at.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut samples = Vec::new();
    let mut sampled = crate::monitor::metrics::read(app.supervisor.metrics()).samples();
    let mut changes = source.view_feed();
    for _ in 0..SAMPLES {
        if sampled.changed().await.is_err() {
            break;
        }
        let at = Instant::now();
        if let Some(changes) = &mut changes {
            changes.mark_unchanged();
            let next = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
            if matches!(next, Ok(Ok(()))) {
                samples.push(at.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    link.abort();
    let mut figures = Vec::new();
    for (name, mut times, what) in [
        (
            "attach: state flip to attached copy",
            flips,
            "stop/start of notification, event in the instance → the attached view shows it",
        ),
        (
            "attach: new sample to attached copy",
            samples,
            "a metrics sample in the instance → the attached view's next change",
        ),
    ] {
        times.sort_by(f64::total_cmp);
        if times.is_empty() {
            continue;
        }
        figures.push(Figure {
            name: format!("{name}, p50"),
            value: percentile(&times, 0.5),
            unit: "ms".into(),
            detail: format!("{what}; {} rounds (target < 100)", times.len()),
        });
        figures.push(Figure {
            name: format!("{name}, max"),
            value: percentile(&times, 1.0),
            unit: "ms".into(),
            detail: format!("{} rounds", times.len()),
        });
    }
    figures
}

/// Waits until the attached copy shows `service` in `state`.
async fn shows(
    source: &RemoteSource,
    service: &str,
    state: InstanceState,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if source
            .view()
            .services
            .iter()
            .any(|s| s.name == service && s.state == state)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    false
}

/// Forwards every connection to `upstream`, counting the bytes both ways.
async fn proxy(listener: TcpListener, upstream: std::net::SocketAddr, bytes: Arc<AtomicU64>) {
    while let Ok((client, _)) = listener.accept().await {
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pump(client_read, server_write, bytes.clone()),
                pump(server_read, client_write, bytes),
            );
        });
    }
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Starts `command` on a new pseudo-terminal of `cols`×`rows`, as its controlling terminal.
fn on_pty(command: &mut Command, cols: u16, rows: u16) -> std::io::Result<(Child, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::new(
            std::str::from_utf8(name.as_bytes()).map_err(std::io::Error::other)?,
        ))?;
    rustix::termios::tcsetwinsize(
        &slave,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and the ioctl are async-signal-safe; fd 0 is the pty's slave by then.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    let child = command.spawn();
    // The command keeps its stdio until told otherwise: the slave would stay open here, and
    // the master would never see the end of the child.
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok((child?, master))
}

/// Reads the pty's master until it ends, counting the bytes.
fn count_reads(master: &OwnedFd, bytes: &AtomicU64) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = rustix::io::read(master, &mut buffer) {
        if n == 0 {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
