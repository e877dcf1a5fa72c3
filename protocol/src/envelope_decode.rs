//! Decoding an [`Envelope`] from its postcard bytes, written out by hand.
//!
//! Why: a routed request is decoded four times (by the console twice, by the callee and by
//! the caller), and on the 64-in-flight routing benchmark every CPU is busy, so each
//! decode's cost is paid straight out of the request rate. serde's generic path spent most
//! of a frame's decode on visitor plumbing: the decode bench (`cargo bench -p
//! switchboard-protocol --bench codec`) went from ~134 ns to ~70 ns per 64-byte request.
//!
//! The format does not change: this reads exactly what `postcard::from_bytes::<Envelope>`
//! reads and refuses exactly what it refuses (non-canonical varints are accepted as postcard
//! accepts them; a last varint byte that would overflow is refused as postcard refuses it).
//! A property test holds the two together on random envelopes and on random and damaged
//! bytes. The handshake kinds (Hello, Welcome), sent once per connection, are handed to
//! postcard whole.

use bytes::Bytes;

use crate::envelope::{Body, Envelope, ErrorBody, ErrorCode, Kind, Name, Priority, Status};

/// Decodes one envelope that must fill `bytes` exactly; `None` if postcard would refuse it.
pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope> {
    let mut envelope = Envelope::default();
    decode_into(bytes, &mut envelope).then_some(envelope)
}

/// Decodes one envelope that must fill `bytes` exactly into `slot`, field by field, so that
/// a reader can keep one envelope and never move a decoded one around (at 168 bytes, the
/// moves from the decoder up through the layers of a reader were a visible part of every
/// process's work per message). False if postcard would refuse the bytes; `slot` then holds
/// no meaningful envelope.
pub(crate) fn decode_into(bytes: &[u8], slot: &mut Envelope) -> bool {
    decode_fields(bytes, slot).is_some()
}

fn decode_fields(bytes: &[u8], slot: &mut Envelope) -> Option<()> {
    let mut reader = Reader { rest: bytes };
    slot.id = reader.varint_u64()?;
    slot.correlation = reader.varint_u64()?;
    slot.trace = reader.varint_u64()?;
    slot.deadline_us = reader.varint_u64()?;
    slot.priority = Priority(reader.byte()?);
    slot.kind = match reader.varint_u32()? {
        // Hello and Welcome: once per connection, and the only kinds with nested structs.
        0 | 1 => {
            *slot = decode_with_postcard(bytes)?;
            return Some(());
        }
        2 => Kind::Ready,
        3 => Kind::Request,
        4 => Kind::Response(reader.status()?),
        5 => Kind::Event,
        6 => Kind::Subscribe,
        7 => Kind::Unsubscribe,
        8 => Kind::StreamItem,
        9 => Kind::StreamEnd(reader.status()?),
        10 => Kind::Credit(reader.varint_u32()?),
        11 => Kind::Shutdown,
        12 => Kind::JobResult(reader.status()?),
        13 => Kind::Cancel,
        14 => Kind::Ack,
        _ => return None,
    };
    set_name(&mut slot.destination, reader.str()?);
    set_name(&mut slot.method, reader.str()?);
    slot.body = match reader.varint_u32()? {
        0 => Body::Empty,
        1 => Body::Postcard(Bytes::copy_from_slice(reader.bytes()?)),
        2 => Body::Json(Bytes::copy_from_slice(reader.bytes()?)),
        _ => return None,
    };
    reader.rest.is_empty().then_some(())
}

/// Replaces a name in place: an inline name is rewritten where it lies.
fn set_name(name: &mut Name, value: &str) {
    if name.as_str() != value {
        name.clear();
        name.push_str(value);
    }
}

fn decode_with_postcard(bytes: &[u8]) -> Option<Envelope> {
    match postcard::take_from_bytes::<Envelope>(bytes) {
        Ok((envelope, [])) => Some(envelope),
        Ok(_) | Err(_) => None,
    }
}

/// The unread part of the input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// A varint of at most `max_bytes` bytes whose last byte is at most `max_last` (the bits
    /// left of the type's width): postcard's `try_take_varint_u64`/`_u32`, rule for rule.
    fn varint(&mut self, max_bytes: usize, max_last: u8) -> Option<u64> {
        let first = self.byte()?;
        if first & 0x80 == 0 {
            return Some(u64::from(first));
        }
        let mut out = u64::from(first & 0x7F);
        for i in 1..max_bytes {
            let byte = self.byte()?;
            out |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return (i < max_bytes - 1 || byte <= max_last).then_some(out);
            }
        }
        None
    }

    fn varint_u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    fn varint_u32(&mut self) -> Option<u32> {
        // At most 5 bytes with a last byte of at most 0x0F: the value fits 32 bits.
        self.varint(5, 0x0F).map(|v| v as u32)
    }

    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    /// A byte string: its length as a varint, then the bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.varint_u64()?;
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn status(&mut self) -> Option<Status> {
        match self.varint_u32()? {
            0 => Some(Status::Ok),
            1 => {
                let code = *ErrorCode::ALL.get(self.varint_u32()? as usize)?;
                let message = self.str()?.to_owned();
                Some(Status::Error(ErrorBody { code, message }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::envelope_strategies::envelope;

    fn postcard_decode(bytes: &[u8]) -> Option<Envelope> {
        decode_with_postcard(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn reads_what_postcard_writes(envelope in envelope()) {
            let bytes = postcard::to_allocvec(&envelope).unwrap();
            prop_assert_eq!(decode(&bytes), Some(envelope));
        }

        /// One slot, many envelopes, some of them cut short: after each good one the slot
        /// holds exactly it, with nothing left over from before.
        #[test]
        fn a_reused_slot_holds_exactly_the_last_envelope(
            envelopes in prop::collection::vec((envelope(), any::<bool>()), 1..8),
        ) {
            let mut slot = Envelope::default();
            for (envelope, cut) in envelopes {
                let mut bytes = postcard::to_allocvec(&envelope).unwrap();
                if cut {
                    bytes.pop();
                    prop_assert!(!decode_into(&bytes, &mut slot));
                } else {
                    prop_assert!(decode_into(&bytes, &mut slot));
                    prop_assert_eq!(&slot, &envelope);
                }
            }
        }

        /// Damaged encodings (a byte changed, cut short, or a byte added) and plain noise:
        /// the decoder takes what postcard takes, as the same envelope, and nothing else.
        #[test]
        fn agrees_with_postcard_on_damaged_bytes(
            envelope in envelope(),
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
            damage in 0..4u8,
        ) {
            let mut bytes = postcard::to_allocvec(&envelope).unwrap();
            let at = at.index(bytes.len());
            match damage {
                0 => bytes[at] = value,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, value),
                _ => bytes.push(value),
            }
            prop_assert_eq!(decode(&bytes), postcard_decode(&bytes));
        }

        #[test]
        fn agrees_with_postcard_on_noise(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&bytes), postcard_decode(&bytes));
        }
    }

    /// Every byte of a few small encodings set to every value: each tag (kind, status, error
    /// code, body) and each length meets every value it could have, in place.
    #[test]
    fn agrees_with_postcard_on_every_single_byte_change() {
        let small = |kind: Kind, body: Body| Envelope {
            id: 300,
            correlation: 7,
            trace: 1,
            deadline_us: 0,
            kind,
            destination: "ab".into(),
            method: "c".into(),
            body,
            ..Envelope::default()
        };
        let envelopes = [
            small(Kind::Request, Body::Postcard(Bytes::from_static(&[1, 2]))),
            small(
                Kind::Response(Status::error(ErrorCode::Timeout, "x")),
                Body::Empty,
            ),
            small(Kind::Credit(200), Body::Json(Bytes::from_static(b"{}"))),
        ];
        for envelope in envelopes {
            let original = postcard::to_allocvec(&envelope).unwrap();
            for at in 0..original.len() {
                for value in 0..=u8::MAX {
                    let mut bytes = original.clone();
                    bytes[at] = value;
                    assert_eq!(
                        decode(&bytes),
                        postcard_decode(&bytes),
                        "byte {at} set to {value:#04x} in {original:02x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn varint_edges_match_postcard() {
        // Header of a Request with everything else empty, after a chosen first varint.
        let tail = [0u8, 0, 0, 1, 3, 0, 0, 0];
        let cases: Vec<Vec<u8>> = vec![
            vec![0x80, 0x00],                                                 // non-canonical 0
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], // u64::MAX
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], // overflows
            vec![0x80; 10],                                                   // never ends
            vec![0x80; 11],
        ];
        for first in cases {
            let bytes = [first.as_slice(), &tail].concat();
            assert_eq!(decode(&bytes), postcard_decode(&bytes), "{first:02x?}");
        }
        // Credit's u32: the fifth byte may carry four bits only.
        for last in [0x0Fu8, 0x10] {
            let bytes = [0, 0, 0, 0, 1, 10, 0xFF, 0xFF, 0xFF, 0xFF, last, 0, 0, 0];
            assert_eq!(decode(&bytes), postcard_decode(&bytes), "{last:02x}");
        }
    }
}
