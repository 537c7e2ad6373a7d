//! The text of a load message: who sent it, where it stands in its room's sequence and when it
//! was sent, padded to the configured size.
//!
//! Recipients identify messages by what the sender wrote, never by the server's `id`, so the
//! loss and duplicate counts do not depend on how the server numbers messages. The send time is
//! Unix time in microseconds: every client (and every ws-client process on the machine) reads
//! the same clock, so sender-to-recipient latency needs no synchronisation.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What a recipient reads back out of a message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Random tag of the ws-client run that sent it; other runs' messages are not accounted.
    pub run: u32,
    /// Position in the room's sequence of this run (0, 1, 2, …).
    pub seq: u64,
    /// Index of the sending client.
    pub sender: u32,
    /// Send time, microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Writes `stamp` into `out` (cleared first) and pads it with `.` to `size` bytes.
pub(crate) fn write(out: &mut String, stamp: Stamp, size: usize) {
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{:08x} {} {} {} ",
        stamp.run, stamp.seq, stamp.sender, stamp.sent_us
    );
    let pad = size.saturating_sub(out.len());
    out.extend(std::iter::repeat_n('.', pad));
}

/// Reads a stamp back; `None` for texts this tool did not write. Byte by byte: it runs once
/// per delivery, and splitting on a `char` pattern showed in the profile.
pub(crate) fn parse(text: &str) -> Option<Stamp> {
    let mut fields = text.as_bytes().split(|&b| b == b' ');
    let run = u32::try_from(digits(fields.next()?, 16)?).ok()?;
    let seq = digits(fields.next()?, 10)?;
    let sender = u32::try_from(digits(fields.next()?, 10)?).ok()?;
    let sent_us = digits(fields.next()?, 10)?;
    Some(Stamp {
        run,
        seq,
        sender,
        sent_us,
    })
}

/// A non-empty run of digits in `radix` (10 or 16) as a `u64`; `None` for anything else or
/// on overflow.
fn digits(field: &[u8], radix: u32) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |value, &b| {
        let digit = u64::from(char::from(b).to_digit(radix)?);
        value.checked_mul(u64::from(radix))?.checked_add(digit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let stamp = Stamp {
            run: 0xdead_beef,
            seq: 12_345,
            sender: 77,
            sent_us: 1_763_860_000_123_456,
        };
        let mut text = String::new();
        write(&mut text, stamp, 90);
        assert_eq!(text.len(), 90);
        assert_eq!(parse(&text), Some(stamp));
        // A size smaller than the stamp is not an error: the text is just the stamp.
        write(&mut text, stamp, 1);
        assert_eq!(parse(&text), Some(stamp));
    }

    #[test]
    fn ignores_foreign_texts() {
        for text in [
            "hi",
            "",
            "zz 1 2 3 ",
            "0000000a 1 2",
            "0000000a x 2 3 ",
            "0000000a  2 3 ",
            "1ffffffff 1 2 3 ",
            "0000000a 99999999999999999999 2 3 ",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
