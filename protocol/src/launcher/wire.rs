//! The job's frames, read on a thread of their own: its Hello is answered with a Welcome, its
//! Ready and JobResult are recorded, and a call (which needs a console to route it) is answered
//! `unavailable` at once instead of waiting for its deadline.

use std::{
    io::{Read, Write},
    process::{ChildStdin, ChildStdout},
    sync::Arc,
};

use bytes::BytesMut;

use super::handle::{Change, Shared};
use crate::{
    Body, Envelope, ErrorCode, Kind, PROTOCOL_VERSION, Status, Welcome,
    codec::{DEFAULT_MAX_FRAME, decode_frame, encode_frame},
};

/// What the Welcome says.
pub(super) struct Greeting {
    pub(super) name: String,
    pub(super) params: String,
    pub(super) heartbeat_ms: u32,
}

/// Reads frames from the job until its stdout closes.
pub(super) fn read_frames(mut stdout: ChildStdout, shared: Arc<Shared>, greeting: Greeting) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut skipping = false; // inside a frame over the limit: dropped up to its end
    loop {
        let read = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte != 0 {
                if pending.len() >= DEFAULT_MAX_FRAME {
                    skipping = true;
                    pending.clear();
                }
                if !skipping {
                    pending.push(byte);
                }
                continue;
            }
            if !skipping && !pending.is_empty() {
                // A frame that does not decode is skipped, as the console does (§2).
                if let Ok(envelope) = decode_frame(&pending) {
                    on_message(envelope, &shared, &greeting);
                }
            }
            pending.clear();
            skipping = false;
        }
    }
}

fn on_message(envelope: Envelope, shared: &Shared, greeting: &Greeting) {
    match envelope.kind {
        Kind::Hello(hello) => {
            let welcome = Welcome {
                protocol_version: PROTOCOL_VERSION,
                service: greeting.name.clone(),
                instance: 0,
                heartbeat_ms: greeting.heartbeat_ms,
                settings: Vec::new(),
                params: greeting.params.clone(),
            };
            send(shared, envelope.id, Kind::Welcome(Box::new(welcome)));
            shared.publish(Change::Hello {
                name: hello.name,
                version: hello.version,
            });
        }
        Kind::Ready => shared.publish(Change::Ready),
        Kind::JobResult(status) => {
            let result = match status {
                Status::Ok => Ok(match envelope.body {
                    Body::Json(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Body::Postcard(bytes) => format!("<{} postcard bytes>", bytes.len()),
                    Body::Empty => String::new(),
                }),
                Status::Error(err) => Err(err),
            };
            shared.set_result(result);
        }
        Kind::Request => {
            let status = Status::error(
                ErrorCode::Unavailable,
                "no console: a launched job cannot call other services",
            );
            send(shared, envelope.id, Kind::Response(status));
        }
        _ => {}
    }
}

/// Writes one frame to the job's stdin; a job that closed it is not an error here (its exit
/// is what counts).
fn send(shared: &Shared, correlation: u64, kind: Kind) {
    let envelope = Envelope {
        id: shared.next_id(),
        correlation,
        kind,
        ..Envelope::default()
    };
    let mut frame = BytesMut::new();
    if encode_frame(&envelope, &mut frame).is_err() {
        return;
    }
    shared.with_stdin(|stdin: &mut ChildStdin| {
        let _ = stdin.write_all(&frame).and_then(|()| stdin.flush());
    });
}

/// Asks the job to stop: a Shutdown frame, then EOF (§5, Shutdown).
pub(super) fn shutdown(shared: &Shared) {
    send(shared, 0, Kind::Shutdown);
    shared.close_stdin();
}
