//! Reading a room's history stream: the command for a [`HistoryRange`], and its reply.
//!
//! Each room's messages are a Redis stream next to its channel, appended by the publish
//! script; entry ids are the message ids, so a range of messages is a range of the stream.

use redis::Value;

use crate::broker::{BadReply, HistoryEntry, HistoryRange};
use chat_protocol::MessageId;

/// The history stream of `channel`.
pub(super) fn key(channel: &str) -> String {
    format!("{channel}:history")
}

/// The read of `range` in `channel`'s history, and whether it returns the newest entry first
/// (`XREVRANGE`, which is how "the newest `limit`" is read in one command).
pub(super) fn read(channel: &str, range: HistoryRange) -> (redis::Cmd, bool) {
    let bound = |id: Option<MessageId>, open: &str| id.map_or(open.to_owned(), |id| id.to_string());
    match range {
        HistoryRange::Newest { through, limit } => {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(key(channel))
                .arg(bound(through, "+"))
                .arg("-")
                .arg("COUNT")
                .arg(limit);
            (cmd, true)
        }
        HistoryRange::From {
            from,
            through,
            limit,
        } => {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(key(channel))
                .arg(from.to_string())
                .arg(bound(through, "+"))
                .arg("COUNT")
                .arg(limit);
            (cmd, false)
        }
    }
}

/// Reads an `XRANGE` reply: `[[id, [field, value, ...]], ...]` with fields `b` (the sealed
/// body) and `t` (sent at, ms).
pub(super) fn parse_entries(reply: Value) -> Result<Vec<HistoryEntry>, BadReply> {
    let Value::Array(items) = reply else {
        return Err(BadReply::HistoryReply(reply));
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let (id, fields): (String, Vec<(String, Vec<u8>)>) = redis::from_redis_value(item)?;
        let id = id.parse().map_err(|_| BadReply::HistoryEntryId(id))?;
        let mut sealed_body = None;
        let mut ts = 0;
        for (field, value) in fields {
            match field.as_str() {
                "b" => sealed_body = Some(value),
                "t" => {
                    ts = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
        if let Some(sealed_body) = sealed_body {
            entries.push(HistoryEntry {
                id,
                sealed_body,
                ts,
            });
        }
    }
    Ok(entries)
}
