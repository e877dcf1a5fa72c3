//! This machine's physical baselines, with nothing of Switchboard in the way: a blocking pipe
//! ping-pong between two processes, a bare batched hub of plain threads copying 64-byte frames
//! A → hub → B → hub → A (its rate with many frames in flight, its round trip with one), and
//! the same hub as one thread that polls instead of blocking (its round trip with one).
//!
//! The peers are this same binary, run as the hidden `switchboard bench-peer echo|client`.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::AsFd,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use super::cpu::Usage;

/// Size of every frame in these baselines.
pub const FRAME: usize = 64;

fn stdio_files() -> std::io::Result<(File, File)> {
    let input = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let output = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    Ok((input, output))
}

/// `bench-peer echo`: writes back whatever arrives, as it arrives.
pub fn echo() -> std::io::Result<()> {
    let (mut input, mut output) = stdio_files()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        output.write_all(&buf[..n])?;
    }
}

/// `bench-peer tokio-echo`: the same on a current-thread tokio runtime, reading and writing
/// the pipes through its reactor as the SDK does: what an async runtime alone adds to a
/// process woken for each message (the growth bench's `SWITCHBOARD_GROWTH_ECHO`).
pub fn tokio_echo() -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (input, output) = stdio_files()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut input = tokio::net::unix::pipe::Receiver::from_file(input)?;
        let mut output = tokio::net::unix::pipe::Sender::from_file(output)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            output.write_all(&buf[..n]).await?;
        }
    })
}

/// `bench-peer client WINDOW COUNT WARMUP`: keeps WINDOW frames outstanding until WARMUP and
/// then COUNT more came back, then prints `elapsed_ns N p50_ns M` on stderr for the COUNT (the
/// warm-up, at the same load, is not timed). With one frame in flight each round trip is timed
/// and M is their median; with more, M is 0.
pub fn client(window: usize, count: usize, warmup: usize) -> std::io::Result<()> {
    let (mut input, mut output) = stdio_files()?;
    let frame = [7u8; FRAME];
    let timed = window == 1;
    let total = count + warmup;
    let mut round_trips = Vec::with_capacity(if timed { count } else { 0 });
    let mut start = Instant::now();
    let mut sent_at = start;
    let first = window.min(total);
    let mut batch = Vec::with_capacity(first * FRAME);
    for _ in 0..first {
        batch.extend_from_slice(&frame);
    }
    output.write_all(&batch)?;
    let mut sent = first;
    let mut received_bytes = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while received_bytes < total * FRAME {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let before = received_bytes / FRAME;
        received_bytes += n;
        let after = received_bytes / FRAME;
        let completed = after - before;
        if before < warmup && after >= warmup {
            // The warm-up is over: time from here.
            start = Instant::now();
            round_trips.clear();
        }
        if timed && completed > 0 {
            round_trips.push(sent_at.elapsed());
            sent_at = Instant::now();
        }
        let more = completed.min(total - sent);
        if more > 0 {
            batch.clear();
            for _ in 0..more {
                batch.extend_from_slice(&frame);
            }
            output.write_all(&batch)?;
            sent += more;
        }
    }
    let elapsed = start.elapsed();
    round_trips.sort();
    let p50 = round_trips
        .get(round_trips.len() / 2)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "elapsed_ns {} p50_ns {}",
        elapsed.as_nanos(),
        p50.as_nanos()
    );
    Ok(())
}

fn peer_command(exe: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("bench-peer")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `switchboard bench-peer ARGS…` with its three standard streams piped.
pub(super) fn peer(exe: &std::path::Path, args: &[&str]) -> std::io::Result<Child> {
    peer_command(exe, args).spawn()
}

/// Round-trip times of `rounds` blocking 64-byte ping-pongs with an echo process, wherever
/// the scheduler puts the two.
pub fn ping_pong(exe: &std::path::Path, rounds: usize) -> std::io::Result<Vec<Duration>> {
    ping_pong_with(peer(exe, &["echo"])?, rounds)
}

/// The same with the two ends pinned to two different CPUs, or `None` where this process may
/// run on only one. Unpinned, the scheduler puts the two on one CPU in some runs (6–8 µs here)
/// and on two in others (14–16 µs); pinned, the baseline is one of them every time.
pub fn ping_pong_across_cores(
    exe: &std::path::Path,
    rounds: usize,
) -> std::io::Result<Option<Vec<Duration>>> {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let allowed = sched_getaffinity(None)?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|&cpu| allowed.is_set(cpu));
    let (Some(here), Some(there)) = (cpus.next(), cpus.next()) else {
        return Ok(None);
    };
    let only = |cpu| {
        let mut set = CpuSet::new();
        set.set(cpu);
        set
    };
    let (here, there) = (only(here), only(there));
    let exe = exe.to_path_buf();
    // A thread of its own, so that pinning it pins nothing else of this process.
    std::thread::spawn(move || {
        sched_setaffinity(None, &here)?;
        let mut command = peer_command(&exe, &["echo"]);
        // SAFETY: between fork and exec the closure makes one system call and touches only
        // the set it owns; nothing is allocated and no lock is taken.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || sched_setaffinity(None, &there).map_err(Into::into));
        }
        ping_pong_with(command.spawn()?, rounds).map(Some)
    })
    .join()
    .map_err(|_| std::io::Error::other("the ping-pong thread panicked"))?
}

fn ping_pong_with(mut child: Child, rounds: usize) -> std::io::Result<Vec<Duration>> {
    let (Some(mut to), Some(mut from)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("no pipes"));
    };
    let frame = [1u8; FRAME];
    let mut back = [0u8; FRAME];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        to.write_all(&frame)?;
        from.read_exact(&mut back)?;
        times.push(start.elapsed());
    }
    drop(to);
    let _ = child.wait();
    Ok(times)
}

/// What the bare hub measured.
#[derive(Debug, Clone, Copy)]
pub struct HubRun {
    pub rate: f64,
    /// Median round trip; measured only with one frame in flight.
    pub p50: Option<Duration>,
    /// CPU per round trip of the hub's threads and both peers together, warm-up included, in
    /// µs.
    pub cpu_us: f64,
}

/// Requests per second through a bare hub of two copying threads, `window` in flight, over
/// `count` requests after `warmup` more.
pub fn batched_hub(
    exe: &std::path::Path,
    window: usize,
    count: usize,
    warmup: usize,
) -> std::io::Result<HubRun> {
    through_hub(exe, window, count, warmup, |pipes| {
        let copy = |mut from: ChildStdout, mut to: ChildStdin| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                // Read whatever is there and pass it on in one write: the batching of a good
                // hub.
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Usage::thread().total()
            })
        };
        Ok(vec![
            copy(pipes.a_out, pipes.b_in),
            copy(pipes.b_out, pipes.a_in),
        ])
    })
}

/// The pipe ends a hub connects: the client A's stdin and stdout, the echo B's.
struct HubPipes {
    a_in: ChildStdin,
    a_out: ChildStdout,
    b_in: ChildStdin,
    b_out: ChildStdout,
}

/// The hub's two peers, killed and reaped however the measurement ends.
struct Peers {
    a: Child,
    b: Child,
}

impl Drop for Peers {
    fn drop(&mut self) {
        for child in [&mut self.a, &mut self.b] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts A (`bench-peer client`: `window` frames in flight until `warmup` and then `count`
/// came back) and B (an echo), lets `hub` connect them with threads of its own, and reads A's
/// report when it is done.
fn through_hub(
    exe: &std::path::Path,
    window: usize,
    count: usize,
    warmup: usize,
    hub: impl FnOnce(HubPipes) -> std::io::Result<Vec<std::thread::JoinHandle<f64>>>,
) -> std::io::Result<HubRun> {
    let children_before = Usage::reaped_children();
    let mut peers = Peers {
        a: peer(
            exe,
            &[
                "client",
                &window.to_string(),
                &count.to_string(),
                &warmup.to_string(),
            ],
        )?,
        b: peer(exe, &["echo"])?,
    };
    let (Some(a_in), Some(a_out), Some(mut a_err), Some(b_in), Some(b_out)) = (
        peers.a.stdin.take(),
        peers.a.stdout.take(),
        peers.a.stderr.take(),
        peers.b.stdin.take(),
        peers.b.stdout.take(),
    ) else {
        return Err(std::io::Error::other("no pipes"));
    };
    let threads = hub(HubPipes {
        a_in,
        a_out,
        b_in,
        b_out,
    })?;
    let mut report = String::new();
    a_err.read_to_string(&mut report)?;
    let _ = peers.a.wait();
    // B's end: its stdin closes when the hub's threads end, which they do once A is gone.
    drop(peers);
    // Each hub thread's CPU over its whole life, which is this run.
    let hub_seconds: f64 = threads
        .into_iter()
        .map(|thread| thread.join().unwrap_or(f64::NAN))
        .sum();
    let peers_seconds = Usage::reaped_children().since(children_before).total();
    let mut run = client_report(&report, count, window == 1)?;
    run.cpu_us = (hub_seconds + peers_seconds) * 1e6 / (count + warmup) as f64;
    Ok(run)
}

/// Reads the client's `elapsed_ns N p50_ns M`.
pub(super) fn client_report(report: &str, count: usize, timed: bool) -> std::io::Result<HubRun> {
    let field = |name: &str| -> Option<u64> {
        let mut words = report.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    let (Some(elapsed), Some(p50)) = (field("elapsed_ns"), field("p50_ns")) else {
        return Err(std::io::Error::other(format!("client said: {report}")));
    };
    Ok(HubRun {
        rate: count as f64 / (elapsed as f64 / 1e9),
        p50: timed.then(|| Duration::from_nanos(p50)),
        cpu_us: f64::NAN,
    })
}

/// The same exchange through a hub of one thread that never sleeps: it polls both pipes
/// without blocking, as the console does while messages keep coming, so only A and B are ever
/// woken. One frame in flight; the client times each round trip.
pub fn polling_hub(exe: &std::path::Path, count: usize, warmup: usize) -> std::io::Result<HubRun> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    through_hub(exe, 1, count, warmup, |mut pipes| {
        for fd in [pipes.a_out.as_fd(), pipes.b_out.as_fd()] {
            fcntl_setfl(fd, fcntl_getfl(fd)? | OFlags::NONBLOCK)?;
        }
        Ok(vec![std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // Ends when A, done, closes its stdout (or B is gone).
            while pass_on(&mut pipes.a_out, &mut pipes.b_in, &mut buf)
                && pass_on(&mut pipes.b_out, &mut pipes.a_in, &mut buf)
            {
                std::hint::spin_loop();
            }
            Usage::thread().total()
        })])
    })
}

/// Copies what `from` has to `to` without waiting for more; false once either end is closed.
fn pass_on(from: &mut impl Read, to: &mut impl Write, buf: &mut [u8]) -> bool {
    match from.read(buf) {
        Ok(0) => false,
        Ok(n) => to.write_all(&buf[..n]).is_ok(),
        Err(err) => err.kind() == std::io::ErrorKind::WouldBlock,
    }
}
