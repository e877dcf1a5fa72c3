//! This machine's physical baselines, with nothing of Switchboard in the way: a blocking pipe
//! ping-pong between two processes, and a bare batched hub of plain threads copying 64-byte
//! frames A → hub → B → hub → A. Any hub over pipes is bounded by the second.
//!
//! The peers are this same binary, run as the hidden `switchboard bench-peer echo|client`.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::AsFd,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

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

/// `bench-peer client WINDOW COUNT`: keeps WINDOW frames outstanding until COUNT came back,
/// then prints the elapsed nanoseconds on stderr.
pub fn client(window: usize, count: usize) -> std::io::Result<()> {
    let (mut input, mut output) = stdio_files()?;
    let frame = [7u8; FRAME];
    let start = Instant::now();
    let first = window.min(count);
    let mut batch = Vec::with_capacity(first * FRAME);
    for _ in 0..first {
        batch.extend_from_slice(&frame);
    }
    output.write_all(&batch)?;
    let mut sent = first;
    let mut received_bytes = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while received_bytes < count * FRAME {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let before = received_bytes / FRAME;
        received_bytes += n;
        let completed = received_bytes / FRAME - before;
        let more = completed.min(count - sent);
        if more > 0 {
            batch.clear();
            for _ in 0..more {
                batch.extend_from_slice(&frame);
            }
            output.write_all(&batch)?;
            sent += more;
        }
    }
    eprintln!("elapsed_ns {}", start.elapsed().as_nanos());
    Ok(())
}

fn peer(exe: &std::path::Path, args: &[&str]) -> std::io::Result<Child> {
    Command::new(exe)
        .arg("bench-peer")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Round-trip times of `rounds` blocking 64-byte ping-pongs with an echo process.
pub fn ping_pong(exe: &std::path::Path, rounds: usize) -> std::io::Result<Vec<Duration>> {
    let mut child = peer(exe, &["echo"])?;
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

/// Requests per second through a bare hub of two copying threads, `window` in flight.
pub fn batched_hub(exe: &std::path::Path, window: usize, count: usize) -> std::io::Result<f64> {
    let mut a = peer(exe, &["client", &window.to_string(), &count.to_string()])?;
    let mut b = peer(exe, &["echo"])?;
    let (Some(a_in), Some(mut a_out), Some(mut a_err)) =
        (a.stdin.take(), a.stdout.take(), a.stderr.take())
    else {
        return Err(std::io::Error::other("no pipes"));
    };
    let (Some(b_in), Some(b_out)) = (b.stdin.take(), b.stdout.take()) else {
        return Err(std::io::Error::other("no pipes"));
    };
    let copy = |mut from: std::process::ChildStdout, mut to: std::process::ChildStdin| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // Read whatever is there and pass it on in one write: the batching of a good hub.
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
    };
    let forward = {
        let b_in = b_in;
        std::thread::spawn(move || {
            let mut to = b_in;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = a_out.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
    };
    let back = copy(b_out, a_in);
    let mut report = String::new();
    a_err.read_to_string(&mut report)?;
    let _ = a.wait();
    let _ = b.kill();
    let _ = b.wait();
    let _ = forward.join();
    let _ = back.join();
    let nanos: f64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("client said: {report}")))?;
    Ok(count as f64 / (nanos / 1e9))
}
