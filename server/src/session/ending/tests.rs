//! How read and write errors end a session: whose fault each one is decides the close.

use tokio_tungstenite::tungstenite::Message;

use super::*;

fn close_code(end: &End) -> Option<u16> {
    match end {
        End::Violation { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_peer_that_vanishes_is_gone_not_a_violation() {
    let end = read_error_end(WsError::Protocol(
        ProtocolError::ResetWithoutClosingHandshake,
    ));
    assert!(matches!(end, End::Gone), "{}", end.describe());
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert!(matches!(read_error_end(WsError::Io(reset)), End::Gone));
}

#[test]
fn a_frame_that_cannot_be_written_is_a_server_error_not_a_departure() {
    let oversize = Message::text("x".repeat(frame_budget::FRAME_BUDGET + 1));
    let end = write_error_end(WsError::WriteBufferFull(Box::new(oversize)));
    assert!(matches!(end, End::Oversize { .. }), "{}", end.describe());
    let small = Message::text("x");
    let end = write_error_end(WsError::WriteBufferFull(Box::new(small)));
    assert!(matches!(end, End::SlowConsumer), "{}", end.describe());
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    assert!(matches!(write_error_end(WsError::Io(reset)), End::Gone));
}

#[test]
fn violations_close_with_their_codes() {
    let too_long = WsError::Capacity(CapacityError::MessageTooLong {
        size: 70_000,
        max_size: 65_536,
    });
    match read_error_end(too_long) {
        End::Violation {
            code,
            error: Some(error),
            ..
        } => {
            assert_eq!(code, close::MESSAGE_TOO_BIG);
            assert_eq!(error.code, ErrorCode::TooLarge);
        }
        other => panic!("{}", other.describe()),
    }
    let utf8 = read_error_end(WsError::Utf8("bad".into()));
    assert_eq!(close_code(&utf8), Some(close::INVALID_PAYLOAD));
    let unmasked = read_error_end(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient));
    assert_eq!(close_code(&unmasked), Some(close::PROTOCOL_ERROR));
}
