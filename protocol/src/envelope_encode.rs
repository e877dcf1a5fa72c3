//! Encoding an [`Envelope`] to its postcard bytes, written out by hand: the other half of
//! `envelope_decode`, for the same reason (every process on a routed request's path encodes
//! it, and serde's generic path was most of an encode's cost).
//!
//! The bytes are postcard's, exactly: a property test compares them with
//! `postcard::to_allocvec` on random envelopes. The handshake kinds (Hello, Welcome) are
//! handed to postcard.

use crate::envelope::{Body, Envelope, Kind, Status};

/// Appends the postcard encoding of `envelope` to `out`.
pub(crate) fn encode(envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    if matches!(envelope.kind, Kind::Hello(_) | Kind::Welcome(_)) {
        *out = postcard::to_extend(envelope, std::mem::take(out))?;
        return Ok(());
    }
    varint(out, envelope.id);
    varint(out, envelope.correlation);
    varint(out, envelope.trace);
    varint(out, envelope.deadline_us);
    out.push(envelope.priority.0);
    out.push(kind_tag(&envelope.kind));
    match &envelope.kind {
        Kind::Response(status) | Kind::StreamEnd(status) | Kind::JobResult(status) => {
            put_status(out, status);
        }
        Kind::Credit(credit) => varint(out, u64::from(*credit)),
        _ => {}
    }
    put_bytes(out, envelope.destination.as_bytes());
    put_bytes(out, envelope.method.as_bytes());
    match &envelope.body {
        Body::Empty => out.push(0),
        Body::Postcard(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        Body::Json(bytes) => {
            out.push(2);
            put_bytes(out, bytes);
        }
    }
    Ok(())
}

/// The kind's variant index, which postcard writes as a varint: one byte, as all are below 128.
fn kind_tag(kind: &Kind) -> u8 {
    match kind {
        Kind::Hello(_) => 0,
        Kind::Welcome(_) => 1,
        Kind::Ready => 2,
        Kind::Request => 3,
        Kind::Response(_) => 4,
        Kind::Event => 5,
        Kind::Subscribe => 6,
        Kind::Unsubscribe => 7,
        Kind::StreamItem => 8,
        Kind::StreamEnd(_) => 9,
        Kind::Credit(_) => 10,
        Kind::Shutdown => 11,
        Kind::JobResult(_) => 12,
        Kind::Cancel => 13,
        Kind::Ack => 14,
    }
}

/// LEB128, as postcard writes every integer wider than a byte and every enum variant index.
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_status(out: &mut Vec<u8>, status: &Status) {
    match status {
        Status::Ok => out.push(0),
        Status::Error(error) => {
            out.push(1);
            out.push(error.code as u8);
            put_bytes(out, error.message.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::envelope_strategies::envelope;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn writes_what_postcard_writes(envelope in envelope()) {
            let mut ours = vec![0xAA]; // appends, after what is already there
            encode(&envelope, &mut ours).unwrap();
            let theirs = postcard::to_allocvec(&envelope).unwrap();
            prop_assert_eq!(&ours[1..], theirs.as_slice());
            prop_assert_eq!(ours[0], 0xAA);
        }
    }
}
