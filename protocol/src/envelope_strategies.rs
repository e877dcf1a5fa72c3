//! proptest strategies for envelopes of every kind, shared by the tests of the hand-written
//! postcard reader and writer (`envelope_decode`, `envelope_encode`).

use proptest::prelude::*;

use crate::envelope::{
    Body, Envelope, ErrorBody, ErrorCode, Hello, Kind, Priority, Status, Welcome,
};

pub(crate) fn status() -> impl Strategy<Value = Status> {
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

pub(crate) fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (".{0,8}", prop::collection::vec(".{0,6}", 0..3)).prop_map(|(name, methods)| {
            Kind::Hello(Box::new(Hello {
                name,
                methods,
                ..Hello::default()
            }))
        }),
        (any::<u32>(), ".{0,8}").prop_map(|(instance, service)| Kind::Welcome(Box::new(Welcome {
            instance,
            service,
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
        Just(Kind::Ack),
    ]
}

pub(crate) fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::Empty),
        prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| Body::Postcard(b.into())),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| Body::Json(b.into())),
    ]
}

/// Integers of every varint length, and the edges.
fn wide() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0..300u64, any::<u64>(), Just(u64::MAX)]
}

prop_compose! {
    pub(crate) fn envelope()(
        (id, correlation, trace, deadline_us) in (wide(), wide(), wide(), wide()),
        priority in any::<u8>(),
        kind in kind(),
        destination in ".{0,150}",
        method in "[a-z_]{0,30}",
        body in body(),
    ) -> Envelope {
        Envelope {
            id,
            correlation,
            trace,
            deadline_us,
            priority: Priority(priority),
            kind,
            destination: destination.into(),
            method: method.into(),
            body,
        }
    }
}
