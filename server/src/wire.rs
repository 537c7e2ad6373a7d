//! Server frames encoded once, in the form they take on the wire.
//!
//! A frame from a server is never masked, so the bytes of one `message` frame are the same
//! for every recipient. A [`TextFrame`] holds them, header and JSON, in one reference-counted
//! buffer: a node builds it once per message and every member's queue and socket write shares
//! it. Handing the text to tungstenite instead copied it into each connection's write buffer
//! and walked tungstenite's per-frame path (sink readiness, waker registration, framing) once
//! per recipient, about a tenth of a node's CPU per delivery under saturation.

use bytes::{BufMut, Bytes, BytesMut};

/// FIN and the text opcode: every frame the node writes is whole.
const TEXT_FIN: u8 = 0x81;
/// FIN and the ping opcode.
const PING_FIN: u8 = 0x89;
/// The longest header: the first byte, 127 and a 64-bit length.
const MAX_HEADER: usize = 10;

/// One encoded text frame: its header followed by its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextFrame {
    wire: Bytes,
    /// Where the JSON starts in `wire`.
    header: u8,
}

impl TextFrame {
    /// Encodes `json` as one unmasked, final text frame.
    pub fn new(json: &str) -> Self {
        let mut wire = BytesMut::with_capacity(MAX_HEADER + json.len());
        put_header(&mut wire, TEXT_FIN, json.len());
        let header = wire.len() as u8;
        wire.put_slice(json.as_bytes());
        TextFrame {
            wire: wire.freeze(),
            header,
        }
    }

    /// The JSON the frame carries.
    pub fn as_str(&self) -> &str {
        // Only `new` builds a frame, from a `&str`.
        std::str::from_utf8(&self.wire[usize::from(self.header)..])
            .unwrap_or_else(|_| unreachable!("a text frame holds the UTF-8 it was built from"))
    }

    /// Bytes of JSON, which is what budgets count.
    pub fn len(&self) -> usize {
        self.wire.len() - usize::from(self.header)
    }

    /// Whether the JSON is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame as written to the socket: a reference-count bump, no copy.
    pub fn wire(&self) -> Bytes {
        self.wire.clone()
    }

    /// The whole frame as written to the socket, taking this handle's reference.
    pub fn into_wire(self) -> Bytes {
        self.wire
    }
}

impl From<String> for TextFrame {
    fn from(json: String) -> Self {
        TextFrame::new(&json)
    }
}

impl From<&str> for TextFrame {
    fn from(json: &str) -> Self {
        TextFrame::new(json)
    }
}

impl From<TextFrame> for tokio_tungstenite::tungstenite::Message {
    /// For the few frames tungstenite writes itself (before a session starts, or beside a
    /// close): a copy of the JSON.
    fn from(frame: TextFrame) -> Self {
        tokio_tungstenite::tungstenite::Message::text(frame.as_str())
    }
}

/// An empty ping frame, written as it is.
pub fn ping() -> Bytes {
    Bytes::from_static(&[PING_FIN, 0])
}

/// Writes a server frame header: no mask, the length in the shortest form RFC 6455 allows.
fn put_header(out: &mut BytesMut, first: u8, len: usize) {
    out.put_u8(first);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    /// What tungstenite writes for the same text.
    fn tungstenite_bytes(json: &str) -> Vec<u8> {
        let frame = Frame::message(json.to_owned(), protocol_text(), true);
        let mut out = Vec::new();
        frame
            .format(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    fn protocol_text() -> tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        OpCode::Data(Data::Text)
    }

    #[test]
    fn frames_match_tungstenite_at_every_length_form() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 70_000] {
            let json = "x".repeat(len);
            let frame = TextFrame::new(&json);
            assert_eq!(&frame.wire()[..], &tungstenite_bytes(&json)[..], "{len}");
            assert_eq!(frame.as_str(), json);
            assert_eq!(frame.len(), len);
        }
    }

    #[test]
    fn the_ping_is_a_final_empty_ping() {
        let mut cursor = std::io::Cursor::new(ping().to_vec());
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("a valid header")
            .expect("a whole header");
        assert!(header.is_final && header.mask.is_none());
        assert_eq!(len, 0);
        assert_eq!(
            header.opcode,
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Control(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Ping
            )
        );
    }
}
