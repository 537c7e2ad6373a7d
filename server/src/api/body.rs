//! Reading request bodies without trusting them: media type, size, then JSON.
//!
//! A body is refused before it is read when it says it is too large, and reading stops at the
//! limit when it does not say. A batch is split into its messages without parsing them, so
//! that each message is checked on its own and one bad message fails alone; messages beyond
//! the batch limit are counted but not kept, so a body of many tiny elements cannot make the
//! node hold a huge list.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use chat_protocol::api::Publish;
use chat_protocol::{ErrorCode, FrameError};
use futures::StreamExt;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::Failure;

/// The body of a JSON request, at most `limit` bytes long.
pub(super) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Failure> {
    if !is_json(headers) {
        return Err(Failure::unsupported_media_type());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Failure::body_too_large(limit));
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            Failure::bad_request(format!("the request body could not be read: {error}"))
        })?;
        if buffer.len() + chunk.len() > limit {
            return Err(Failure::body_too_large(limit));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// `Content-Type: application/json`, parameters such as `charset=utf-8` allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// The body as text; JSON is UTF-8.
pub(super) fn utf8(body: &[u8]) -> Result<&str, Failure> {
    std::str::from_utf8(body)
        .map_err(|_| Failure::bad_request("the request body is not valid UTF-8".to_owned()))
}

/// Parses and checks one message, as a WebSocket `send` is checked. Unknown fields are ignored.
pub(super) fn parse_message(json: &str, max_text_bytes: usize) -> Result<Publish<'_>, FrameError> {
    // serde would take a JSON array for a struct too; a message is an object.
    if !json.trim_start().starts_with('{') {
        return Err(bad_message("a message must be a JSON object".to_owned()));
    }
    let message: Publish<'_> = serde_json::from_str(json)
        .map_err(|error| bad_message(format!("invalid message: {error}")))?;
    message.validate(max_text_bytes)?;
    Ok(message)
}

fn bad_message(message: String) -> FrameError {
    FrameError::new(ErrorCode::BadRequest, message)
}

/// A batch body, split into its messages.
pub(super) struct Batch<'a> {
    /// The first messages, at most the batch limit, each still unparsed JSON.
    pub messages: Vec<&'a RawValue>,
    /// How many messages the body holds in all.
    pub count: usize,
}

/// Splits `{"messages":[…]}` into at most `max` messages (unknown top-level fields ignored).
pub(super) fn parse_batch(json: &str, max: usize) -> Result<Batch<'_>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let batch = BatchSeed { max }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(batch)
}

struct BatchSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Batch<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Batch<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with a `messages` array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch<'de>, A::Error> {
        let mut batch = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "messages" {
                map.next_value::<IgnoredAny>()?;
            } else if batch.is_some() {
                return Err(de::Error::duplicate_field("messages"));
            } else {
                batch = Some(map.next_value_seed(MessagesSeed { max: self.max })?);
            }
        }
        batch.ok_or_else(|| de::Error::missing_field("messages"))
    }
}

struct MessagesSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for MessagesSeed {
    type Value = Batch<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Batch<'de>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        let mut count = 0;
        loop {
            let more = if messages.len() < self.max {
                seq.next_element::<&'de RawValue>()?
                    .map(|message| messages.push(message))
                    .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(Batch { messages, count });
            }
            count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_batch_into_raw_messages() {
        let batch = parse_batch(
            r#"{"v":[1,{"a":2}],"messages":[{"room":"r","from":"f","text":"t"}, 5 ,"x"]}"#,
            10,
        )
        .unwrap();
        assert_eq!(batch.count, 3);
        let raw: Vec<&str> = batch.messages.iter().map(|m| m.get()).collect();
        assert_eq!(
            raw,
            [r#"{"room":"r","from":"f","text":"t"}"#, "5", r#""x""#]
        );
    }

    #[test]
    fn counts_but_does_not_keep_messages_beyond_the_limit() {
        let batch = parse_batch(r#"{"messages":[{},{},{},{}]}"#, 2).unwrap();
        assert_eq!((batch.messages.len(), batch.count), (2, 4));
    }

    #[test]
    fn refuses_what_is_not_a_batch() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"messages":{}}"#,
            r#"{"messages":[],"messages":[]}"#,
            r#"{"messages":[] } x"#,
            r#"{"messages":[{"#,
        ] {
            assert!(parse_batch(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn checks_each_message_like_a_websocket_send() {
        let ok = parse_message(r#" {"room":"r","from":"Bot","text":"hi","ts":1}"#, 10).unwrap();
        assert_eq!((&*ok.room, &*ok.from, &*ok.text), ("r", "Bot", "hi"));
        let code = |json: &str| parse_message(json, 10).unwrap_err().code;
        assert_eq!(code("5"), ErrorCode::BadRequest);
        assert_eq!(code(r#"["r","Bot","hi"]"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"room":"r","text":"hi"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"room":5,"from":"Bot","text":"hi"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"room":"r r","from":"Bot","text":"hi"}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code(r#"{"room":"r","from":"","text":"hi"}"#),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(r#"{"room":"r","from":"Bot","text":"01234567890"}"#),
            ErrorCode::TooLarge
        );
    }
}
