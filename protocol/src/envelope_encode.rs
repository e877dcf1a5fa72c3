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
    match &envelope.kind {
        // Sent to postcard above.
        Kind::Hello(_) | Kind::Welcome(_) => {}
        Kind::Ready => out.push(2),
        Kind::Request => out.push(3),
        Kind::Response(status) => {
            out.push(4);
            put_status(out, status);
        }
        Kind::Event => out.push(5),
        Kind::Subscribe => out.push(6),
        Kind::Unsubscribe => out.push(7),
        Kind::StreamItem => out.push(8),
        Kind::StreamEnd(status) => {
            out.push(9);
            put_status(out, status);
        }
        Kind::Credit(credit) => {
            out.push(10);
            varint(out, u64::from(*credit));
        }
        Kind::Shutdown => out.push(11),
        Kind::JobResult(status) => {
            out.push(12);
            put_status(out, status);
        }
        Kind::Cancel => out.push(13),
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

/// LEB128, as postcard writes every integer wider than a byte (and enum variant indices,
/// which is why the kind tags above are single bytes: they are all below 128).
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
    use crate::envelope::{ErrorBody, ErrorCode, Hello, Priority, Welcome};

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Ok),
            (0..ErrorCode::ALL.len(), ".{0,200}").prop_map(|(code, message)| Status::Error(
                ErrorBody {
                    code: ErrorCode::ALL[code],
                    message
                }
            )),
        ]
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            ".{0,8}".prop_map(|name| Kind::Hello(Box::new(Hello {
                name,
                ..Hello::default()
            }))),
            any::<u32>().prop_map(|instance| Kind::Welcome(Box::new(Welcome {
                instance,
                ..Welcome::default()
            }))),
            Just(Kind::Ready),
            Just(Kind::Request),
            status().prop_map(Kind::Response),
            Just(Kind::Event),
            Just(Kind::Subscribe),
            Just(Kind::Unsubscribe),
            Just(Kind::StreamItem),
            status().prop_map(Kind::StreamEnd),
            any::<u32>().prop_map(Kind::Credit),
            Just(Kind::Shutdown),
            status().prop_map(Kind::JobResult),
            Just(Kind::Cancel),
        ]
    }

    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            Just(Body::Empty),
            prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| Body::Postcard(b.into())),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| Body::Json(b.into())),
        ]
    }

    fn wide() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 0..300u64, any::<u64>(), Just(u64::MAX)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn writes_what_postcard_writes(
            (id, correlation, trace, deadline_us) in (wide(), wide(), wide(), wide()),
            priority in any::<u8>(),
            kind in kind(),
            destination in ".{0,150}",
            method in "[a-z_]{0,30}",
            body in body(),
        ) {
            let envelope = Envelope {
                id,
                correlation,
                trace,
                deadline_us,
                priority: Priority(priority),
                kind,
                destination: destination.into(),
                method: method.into(),
                body,
            };
            let mut ours = vec![0xAA]; // appends, after what is already there
            encode(&envelope, &mut ours).unwrap();
            let theirs = postcard::to_allocvec(&envelope).unwrap();
            prop_assert_eq!(&ours[1..], theirs.as_slice());
            prop_assert_eq!(ours[0], 0xAA);
        }
    }
}
