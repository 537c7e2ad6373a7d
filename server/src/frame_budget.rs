//! Byte budgets for the frames the node writes, so that every frame it builds can be written.
//!
//! tungstenite refuses a frame that would grow a connection's write buffer past
//! [`MAX_WRITE_BUFFER_BYTES`] (`WriteBufferFull`), before any byte of it is sent. When a frame
//! is handed over, the buffer holds at most [`WRITE_BUFFER_BYTES`] of earlier frames (beyond
//! that it writes them out, or waits until it can) plus at most a queued control frame, so a
//! frame of up to [`FRAME_BUDGET`] is always accepted. A frame larger than that is a bug of
//! the node, not the client's doing: the session closes with 1011 and counts it.
//!
//! Sessions now write their frames themselves (see `session::outgoing`), so only the frames
//! tungstenite still writes (a refusal before a session starts, an error before a close) can
//! meet that check; the budget still bounds every frame the node builds, which is what keeps
//! a `joined` frame within what a client accepts and one write's memory bounded.
//!
//! Where each frame's bound comes from:
//! - `welcome`, `ack`, `left`: names, rooms, refs, node ids and message ids all have protocol
//!   limits, which keep these frames under a few KiB;
//! - `presence` and `members`: their names are cut to [`MEMBERS_BUDGET`] where they are
//!   chosen (a roster's pages and reports, [`crate::rooms`]);
//! - `error`: the message is cut to [`MAX_ERROR_MESSAGE_BYTES`] here, whatever produced it;
//! - `message` and `edited`: grow with the text, up to 6 bytes per byte of text once
//!   JSON-escaped (a control character becomes `\u0001`); [`check_max_text_bytes`] refuses at
//!   start-up a `--max-text-bytes` whose largest frame would not fit in a `joined` frame's
//!   history. An `edited` frame's `target` (an id) fits in the same overhead; `deleted` and
//!   `typing` frames carry no text;
//! - `joined`: its member list is a page (as `members`), and [`joined_frame`] is the one place
//!   its history is cut to its share of the budget.

use chat_protocol::ServerFrame;

use crate::http::{MAX_WRITE_BUFFER_BYTES, WRITE_BUFFER_BYTES};
use crate::hub::Joined;
use crate::metrics::FrameMetrics;

/// Room for a frame header (at most 10 bytes from the node) and a pong or close frame that
/// tungstenite may have queued (at most 127 bytes), with margin.
const CONTROL_HEADROOM: usize = 1024;

/// The largest frame the node may build: whatever an earlier frame and a control frame leave
/// of the write buffer.
pub(crate) const FRAME_BUDGET: usize =
    MAX_WRITE_BUFFER_BYTES - WRITE_BUFFER_BYTES - CONTROL_HEADROOM;

/// The share of a `joined` frame for its member list, and the most bytes of names in a
/// `members` or `presence` frame. Names take at most 259 bytes each once quoted (32 characters
/// of up to 4 bytes, each `"` or `\` escaped), usually a tenth of that.
pub(crate) const MEMBERS_BUDGET: usize = 32 * 1024;

/// The fixed part of a `joined` frame: its field names, a room name of at most 64 bytes and
/// `recovered`.
const JOINED_OVERHEAD: usize = 256;

/// The share of a `joined` frame for its history.
pub(crate) const HISTORY_BUDGET: usize = FRAME_BUDGET - MEMBERS_BUDGET - JOINED_OVERHEAD;

// Checked when compiling: a header (10 bytes) and a control frame (127) fit beside a frame of
// the budget and a full write buffer; and a change of the buffer sizes cannot silently shrink
// history below what the documentation promises.
const _: () = assert!(FRAME_BUDGET + WRITE_BUFFER_BYTES + 10 + 127 <= MAX_WRITE_BUFFER_BYTES);
const _: () = assert!(FRAME_BUDGET == 252_928 && HISTORY_BUDGET == 219_904);

/// The bytes of a `message` frame besides its text: field names, an id of two 20-digit
/// numbers, a room of 64 bytes, a name of 32 characters of up to 4 bytes, a 20-digit `ts`;
/// with room for an `edited` frame's `target` id (about 60 bytes more).
const MESSAGE_OVERHEAD: usize = 512;

/// Bytes one byte of text may take in a frame: a control character is written `\u0001`.
const ESCAPED_BYTES_PER_BYTE: usize = 6;

/// The longest `message` of an `error` frame, in bytes; longer ones are cut.
pub(crate) const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// The largest `message` frame a text of `max_text_bytes` can make.
pub(crate) fn largest_message_frame(max_text_bytes: usize) -> usize {
    max_text_bytes
        .saturating_mul(ESCAPED_BYTES_PER_BYTE)
        .saturating_add(MESSAGE_OVERHEAD)
}

/// The largest `--max-text-bytes` whose every message fits in a `joined` frame's history.
pub(crate) fn max_text_bytes_limit() -> usize {
    (HISTORY_BUDGET - MESSAGE_OVERHEAD) / ESCAPED_BYTES_PER_BYTE
}

/// A configuration whose frames could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "--max-text-bytes {max_text_bytes} is too large: a message of that much text takes up \
         to {frame_bytes} bytes once JSON-escaped (6 bytes per control character), more than \
         the {HISTORY_BUDGET} bytes a frame may carry; lower --max-text-bytes to at most {limit}"
    )]
    TextTooLarge {
        max_text_bytes: usize,
        frame_bytes: usize,
        limit: usize,
    },
}

/// Refuses a `--max-text-bytes` whose largest message could be neither delivered nor carried
/// in a `joined` frame's history.
pub(crate) fn check_max_text_bytes(max_text_bytes: usize) -> Result<(), BudgetError> {
    let frame_bytes = largest_message_frame(max_text_bytes);
    if frame_bytes > HISTORY_BUDGET {
        return Err(BudgetError::TextTooLarge {
            max_text_bytes,
            frame_bytes,
            limit: max_text_bytes_limit(),
        });
    }
    Ok(())
}

/// How many of the largest messages a `joined` frame holds, when that is fewer than
/// `history_size`: a full history of them does not fit in one frame, so joins carry its
/// newest part. Said once at start-up, so operators know why `recovered` may be `false`.
pub(crate) fn history_fit(history_size: usize, max_text_bytes: usize) -> Option<usize> {
    let fit = HISTORY_BUDGET / largest_message_frame(max_text_bytes);
    (fit < history_size).then_some(fit)
}

/// Says at start-up when a full history of the largest messages does not fit in a `joined`
/// frame, so that operators know why joins may carry fewer than `--history-size` messages.
pub(crate) fn explain_history_fit(history_size: usize, max_text_bytes: usize) {
    if let Some(fit) = history_fit(history_size, max_text_bytes) {
        log::info!(
            "a joined frame holds at most {HISTORY_BUDGET} bytes of history: from {fit} (of \
             the largest messages) to all {history_size} of --history-size; joins get the newest \
             that fit, and a `since` join that needs more gets recovered:false"
        );
    }
}

/// The `joined` frame for `room`, cut to the budget: its page of members (already within
/// [`MEMBERS_BUDGET`]) and the newest history that fits [`HISTORY_BUDGET`]. History stays
/// contiguous, so a client can still tell a gap by the ids; when a `since` join loses part of
/// it, `recovered` becomes `false`.
pub(crate) fn joined_frame(room: &str, joined: Joined, metrics: &FrameMetrics) -> String {
    let Joined {
        members,
        mut history,
        recovered,
    } = joined;
    let kept_history = fitting(
        history.iter().rev().map(|frame| frame.json().len()),
        HISTORY_BUDGET,
    );
    let history_trimmed = kept_history < history.len();
    if history_trimmed {
        metrics.joined_trimmed.inc();
        let left_out = history.len() - kept_history;
        history.drain(..left_out);
    }
    let frame = ServerFrame::Joined {
        room: room.into(),
        count: members.count,
        members: members.names.into_iter().map(Into::into).collect(),
        more_members: members.more,
        history,
        recovered: recovered.map(|complete| complete && !history_trimmed),
    };
    frame.to_json()
}

/// How many of the leading items, of these JSON sizes, fit in `budget` bytes with a comma each.
fn fitting(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut used = 0usize;
    sizes
        .take_while(|size| {
            used = used.saturating_add(size + 1);
            used <= budget
        })
        .count()
}

/// `message` cut to at most [`MAX_ERROR_MESSAGE_BYTES`], on a character boundary.
pub(crate) fn bounded_error_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// The length of `text` as a JSON string, quotes included, as serde_json writes it.
pub(crate) fn json_string_len(text: &str) -> usize {
    let escaped: usize = text
        .bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum();
    escaped + 2
}

#[cfg(test)]
mod tests {
    use chat_protocol::{EmbeddedFrame, ErrorCode, limits};

    use super::*;
    use crate::rooms::MemberPage;

    /// The worst name: 32 characters of 4 bytes each.
    fn widest_name() -> String {
        "😀".repeat(limits::MAX_NAME_CHARS)
    }

    fn widest_room() -> String {
        "r".repeat(limits::MAX_ROOM_BYTES)
    }

    fn widest_id() -> String {
        format!("{}-{}", u64::MAX, u64::MAX)
    }

    fn message(room: &str, id: &str, text: &str) -> String {
        ServerFrame::Message {
            id: id.into(),
            room: room.into(),
            from: widest_name().into(),
            text: text.into(),
            ts: u64::MAX,
        }
        .to_json()
    }

    #[test]
    fn json_string_lengths_match_serde_json() {
        for text in [
            "",
            "plain",
            "q\"b\\",
            "\n\r\t\u{8}\u{c}",
            "\u{1}\u{1f}\u{7f}",
            "😀é",
        ] {
            let serialized = serde_json::to_string(text).unwrap();
            assert_eq!(json_string_len(text), serialized.len(), "{text:?}");
        }
    }

    #[test]
    fn the_largest_message_frame_is_bounded_by_its_estimate() {
        for max_text in [1, 4096, max_text_bytes_limit()] {
            let text = "\u{1}".repeat(max_text);
            let frame = message(&widest_room(), &widest_id(), &text);
            assert!(frame.len() <= largest_message_frame(max_text), "{max_text}");
        }
    }

    #[test]
    fn every_other_frame_is_small_by_construction() {
        let widest_ref = "\u{1}".repeat(limits::MAX_REF_BYTES);
        let frames = [
            ServerFrame::Welcome {
                node: "😀".repeat(64).into(),
                session: "s".repeat(64).into(),
                name: widest_name().into(),
            },
            ServerFrame::Ack {
                reference: Some(widest_ref.as_str().into()),
                id: widest_id().into(),
            },
            ServerFrame::Left {
                room: widest_room().into(),
            },
            ServerFrame::Error {
                code: ErrorCode::TooManyRooms,
                message: bounded_error_message("\u{1}".repeat(1 << 20)).into(),
                reference: Some(widest_ref.as_str().into()),
                retry_after_ms: Some(u64::MAX),
            },
        ];
        for frame in frames {
            let json = frame.to_json();
            assert!(json.len() <= 16 * 1024, "{} bytes: {json:.80}", json.len());
        }
    }

    #[test]
    fn error_messages_are_cut_on_a_character_boundary() {
        let cut = bounded_error_message("é".repeat(MAX_ERROR_MESSAGE_BYTES));
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE_BYTES);
        let odd = bounded_error_message(format!("x{}", "é".repeat(MAX_ERROR_MESSAGE_BYTES)));
        assert_eq!(odd.len(), MAX_ERROR_MESSAGE_BYTES - 1);
        assert_eq!(bounded_error_message("short".into()), "short");
    }

    #[test]
    fn an_impossible_text_limit_is_refused_with_the_flag_to_lower() {
        assert!(check_max_text_bytes(limits::DEFAULT_MAX_TEXT_BYTES).is_ok());
        assert!(check_max_text_bytes(max_text_bytes_limit()).is_ok());
        let error = check_max_text_bytes(max_text_bytes_limit() + 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("lower --max-text-bytes"), "{error}");
        assert!(
            error.contains(&format!("at most {}", max_text_bytes_limit())),
            "{error}"
        );
        assert_eq!(history_fit(100, limits::DEFAULT_MAX_TEXT_BYTES), Some(8));
        assert_eq!(history_fit(100, 100), None);
        assert_eq!(
            max_text_bytes_limit(),
            36_565,
            "as the help of --max-text-bytes says"
        );
    }

    fn history(count: usize, text: &str) -> Vec<EmbeddedFrame> {
        (0..count)
            .map(|seq| {
                let frame = message("room", &format!("1-{seq}"), text);
                EmbeddedFrame::new(frame).unwrap()
            })
            .collect()
    }

    #[test]
    fn joined_keeps_the_newest_history_that_fits_and_says_what_is_missing() {
        let metrics = FrameMetrics::new();
        let text = "\u{1}".repeat(limits::DEFAULT_MAX_TEXT_BYTES);
        let full = history(100, &text);
        let joined = Joined {
            members: page(),
            history: full.clone(),
            recovered: Some(true),
        };
        let json = joined_frame("room", joined, &metrics);
        assert!(json.len() <= FRAME_BUDGET, "{}", json.len());
        let ServerFrame::Joined {
            history, recovered, ..
        } = serde_json::from_str(&json).unwrap()
        else {
            panic!("not a joined frame");
        };
        assert!(
            history.len() >= 8 && history.len() < 100,
            "{}",
            history.len()
        );
        assert_eq!(history, full[100 - history.len()..], "the newest, in order");
        assert_eq!(recovered, Some(false));
        assert_eq!(metrics.joined_trimmed.get(), 1);

        let small = Joined {
            members: page(),
            history: history_of_small(),
            recovered: Some(true),
        };
        let json = joined_frame("room", small, &metrics);
        assert!(json.contains(r#""recovered":true"#), "{json}");
        assert_eq!(metrics.joined_trimmed.get(), 1, "nothing left out");
    }

    fn page() -> MemberPage {
        MemberPage {
            count: 1,
            names: vec!["ada".into()],
            more: false,
        }
    }

    fn history_of_small() -> Vec<EmbeddedFrame> {
        history(100, "hello")
    }
}
