//! The growth bench's baseline: a bare hub that spreads one client's frames over N echo
//! processes, with nothing of Switchboard in the way.
//!
//! The console's cost per call grows with the number of services it spreads traffic over for
//! two reasons that have nothing to do with its code: the calls in flight stop sharing pipe
//! writes and wake-ups (past N = 64 each is a write, a wake-up and a read of its own), and the
//! kernel's and the processes' state for N pipes no longer fits in the cache. This hub pays
//! both and nothing else. It is one thread, like the console, that sleeps in `epoll_wait` (the
//! console with busy polling off), reads whatever the client has sent, deals its 64-byte
//! frames out to the echoes in turn (one write per echo per read, the batching a good hub
//! does), and passes whatever the echoes send back to the client in one write per wake-up. Its
//! CPU per message at N, beside the console's at the same N, says how much of the console's
//! growth is its own.
//!
//! The peers are `switchboard bench-peer client|echo` ([`super::pipes`]).

use std::{
    io::{Read, Write},
    os::fd::AsFd,
    path::Path,
    process::{Child, ChildStdin, ChildStdout},
};

use rustix::{
    buffer::spare_capacity,
    event::epoll,
    fs::{OFlags, fcntl_getfl, fcntl_setfl},
};

use super::{
    cpu::{Usage, processes_ns},
    pipes::{FRAME, client_report, peer},
};

/// What one run through the spread hub measured.
#[derive(Debug, Clone, Copy)]
pub struct SpreadRun {
    /// Round trips per second the client saw, after its warm-up.
    pub rate: f64,
    /// The hub thread's CPU per round trip, warm-up included, in µs: in its own code and in
    /// the kernel for it.
    pub user_us: f64,
    pub system_us: f64,
    /// The echo processes' CPU per round trip, all together, in µs.
    pub echoes_us: f64,
}

/// The client and the echoes, killed and reaped however the run ends.
struct Peers(Vec<Child>);

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `count` round trips (after `warmup` more) from one client keeping `window` frames in flight,
/// through a hub that deals them out over `echoes` processes of `bench-peer ECHO` (`echo`, or
/// `tokio-echo`).
pub fn run(
    exe: &Path,
    echo: &str,
    echoes: usize,
    window: usize,
    count: usize,
    warmup: usize,
) -> std::io::Result<SpreadRun> {
    let echoes = echoes.max(1);
    let mut peers = Peers(Vec::with_capacity(echoes + 1));
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    // The echoes first, each answering one frame before anything is measured: a process
    // still starting (exec, loading, its runtime) would count its start-up as the run's work.
    for _ in 0..echoes {
        let mut child = peer(exe, &[echo])?;
        let (Some(mut input), Some(mut output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("no pipes"));
        };
        // Echoes say nothing; their stderr is not needed.
        drop(child.stderr.take());
        peers.0.push(child);
        input.write_all(&[0u8; FRAME])?;
        output.read_exact(&mut [0u8; FRAME])?;
        inputs.push(input);
        outputs.push(output);
    }
    let echo_pids: Vec<u32> = peers.0.iter().map(Child::id).collect();
    let client_args = [
        "client".to_string(),
        window.to_string(),
        count.to_string(),
        warmup.to_string(),
    ];
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let mut client = peer(exe, &client_args)?;
    let (Some(input), Some(output), Some(mut client_err)) = (
        client.stdin.take(),
        client.stdout.take(),
        client.stderr.take(),
    ) else {
        return Err(std::io::Error::other("no pipes"));
    };
    peers.0.push(client);
    // The client is index 0 of what the hub relays.
    inputs.insert(0, input);
    outputs.insert(0, output);
    for output in &outputs {
        fcntl_setfl(
            output.as_fd(),
            fcntl_getfl(output.as_fd())? | OFlags::NONBLOCK,
        )?;
    }
    let hub = std::thread::spawn(move || {
        let (before, echoes_before) = (Usage::thread(), processes_ns(&echo_pids));
        relay(&mut inputs, &mut outputs)?;
        // Read while the echoes still run: they end once their stdin closes, below.
        let echoes_ns = processes_ns(&echo_pids).saturating_sub(echoes_before);
        Ok::<_, std::io::Error>((Usage::thread().since(before), echoes_ns))
    });
    let mut report = String::new();
    client_err.read_to_string(&mut report)?;
    let (used, echoes_ns) = hub
        .join()
        .map_err(|_| std::io::Error::other("the spread hub panicked"))??;
    drop(peers);
    let rate = client_report(&report, count, false)?.rate;
    let messages = (count + warmup) as f64;
    Ok(SpreadRun {
        rate,
        user_us: used.user * 1e6 / messages,
        system_us: used.system * 1e6 / messages,
        echoes_us: echoes_ns as f64 / 1e3 / messages,
    })
}

/// Relays until the client closes its stdout. Index 0 is the client, the rest are echoes.
fn relay(inputs: &mut [ChildStdin], outputs: &mut [ChildStdout]) -> std::io::Result<()> {
    let poller = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, output) in outputs.iter().enumerate() {
        epoll::add(
            &poller,
            output,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
    }
    let echoes = outputs.len() - 1;
    let mut events = Vec::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of a frame from the client whose rest has not arrived yet.
    let mut partial = Vec::with_capacity(FRAME);
    // Frames for each echo from this read of the client, written once the read is dealt out.
    let mut batches: Vec<Vec<u8>> = vec![Vec::new(); echoes];
    let mut touched = Vec::with_capacity(echoes);
    let mut back = Vec::with_capacity(64 * 1024);
    let mut next = 0usize;
    loop {
        events.clear();
        epoll::wait(&poller, spare_capacity(&mut events), None)?;
        for event in &events {
            let i = event.data.u64() as usize;
            let n = match outputs[i].read(&mut buf) {
                Ok(0) if i == 0 => return Ok(()),
                Ok(0) => return Err(std::io::Error::other("an echo closed its stdout")),
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            };
            if i > 0 {
                back.extend_from_slice(&buf[..n]);
                continue;
            }
            partial.extend_from_slice(&buf[..n]);
            let whole = partial.len() / FRAME * FRAME;
            for frame in partial[..whole].chunks_exact(FRAME) {
                let echo = next % echoes;
                next = next.wrapping_add(1);
                if batches[echo].is_empty() {
                    touched.push(echo);
                }
                batches[echo].extend_from_slice(frame);
            }
            partial.drain(..whole);
            for echo in touched.drain(..) {
                inputs[echo + 1].write_all(&batches[echo])?;
                batches[echo].clear();
            }
        }
        if !back.is_empty() {
            inputs[0].write_all(&back)?;
            back.clear();
        }
    }
}
