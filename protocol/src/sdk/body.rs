//! Encoding and decoding bodies, so that one typed handler answers both postcard and JSON.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::error::HandlerError;
use crate::envelope::Body;

/// Which encoding a reply should use: the one the request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Postcard,
    Json,
}

impl Encoding {
    pub fn of(body: &Body) -> Encoding {
        match body {
            Body::Json(_) => Encoding::Json,
            Body::Postcard(_) | Body::Empty => Encoding::Postcard,
        }
    }
}

/// Decodes a body into `T`. An empty body decodes as JSON `null` or as zero postcard bytes, so
/// handlers taking `()` or `Option<_>` accept it. A JSON `null` (what the gateway sends for a
/// request with no body and no parameters, like `GET /orders`) that `T` refuses is tried as
/// `{}` too, so a struct whose fields all have defaults takes it as "all defaults".
pub fn decode<T: DeserializeOwned>(body: &Body) -> Result<T, HandlerError> {
    match body {
        Body::Postcard(bytes) => postcard::from_bytes(bytes)
            .map_err(|err| HandlerError::bad_request(format!("undecodable postcard body: {err}"))),
        Body::Json(bytes) => serde_json::from_slice(bytes)
            .or_else(|err| {
                if bytes.trim_ascii() == b"null" {
                    serde_json::from_slice(b"{}").map_err(|_| err)
                } else {
                    Err(err)
                }
            })
            .map_err(|err| HandlerError::bad_request(format!("invalid JSON body: {err}"))),
        Body::Empty => postcard::from_bytes(&[])
            .or_else(|_| serde_json::from_slice(b"null"))
            .map_err(|_| HandlerError::bad_request("missing body")),
    }
}

/// Encodes `value` in `encoding`.
pub fn encode<T: Serialize + ?Sized>(value: &T, encoding: Encoding) -> Result<Body, HandlerError> {
    match encoding {
        Encoding::Postcard => postcard::to_allocvec(value)
            .map(|v| Body::Postcard(Bytes::from(v)))
            .map_err(|err| HandlerError::internal(format!("cannot encode reply: {err}"))),
        Encoding::Json => serde_json::to_vec(value)
            .map(|v| Body::Json(Bytes::from(v)))
            .map_err(|err| HandlerError::internal(format!("cannot encode reply: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct User {
        id: u64,
        email: String,
    }

    #[test]
    fn one_type_reads_both_encodings() {
        let user = User {
            id: 7,
            email: "a@b.c".into(),
        };
        for encoding in [Encoding::Postcard, Encoding::Json] {
            let body = encode(&user, encoding).unwrap();
            assert_eq!(Encoding::of(&body), encoding);
            assert_eq!(decode::<User>(&body).unwrap(), user);
        }
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        let err = decode::<User>(&Body::Json(Bytes::from_static(b"{\"id\":"))).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadRequest);
        let err = decode::<User>(&Body::Postcard(Bytes::from_static(&[0xff]))).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadRequest);
        assert!(decode::<()>(&Body::Empty).is_ok());
        assert!(decode::<Option<u32>>(&Body::Empty).is_ok());
        assert!(decode::<User>(&Body::Empty).is_err());
    }

    #[test]
    fn json_null_is_all_defaults_for_a_struct_that_has_them() {
        #[derive(Deserialize, Debug, PartialEq, Default)]
        struct Page {
            #[serde(default)]
            after: i64,
        }
        let null = Body::Json(Bytes::from_static(b"null"));
        assert_eq!(decode::<Page>(&null).unwrap(), Page::default());
        assert_eq!(decode::<()>(&null).unwrap(), ());
        // A struct with a required field still refuses it, with serde's first complaint.
        let err = decode::<User>(&null).unwrap_err();
        assert!(err.message.contains("null"), "{}", err.message);
    }
}
