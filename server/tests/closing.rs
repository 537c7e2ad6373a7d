//! How the node ends connections it closes, with real processes and raw sockets.
//!
//! Lingering closes: a client still writing a megabyte when the node closes it for a violation
//! (an oversize text or binary frame, fragments that never end), or still writing for longer
//! than the node's closing handshake waits (a refused name, flooding), reads the error frame and
//! the close code, then the end of the connection, never a TCP reset; and its writes go
//! through, since the node reads and discards the rest.
//!
//! The write deadline: a client that stops reading while the node writes to it is closed with
//! 4001 within `--write-timeout-secs`, and its connection is gone from `chat_connections`.

mod support;

use std::time::Duration;

use chat_protocol::{ErrorCode, ServerFrame, close};
use support::raw::{self, Incoming, RawSocket};
use support::{NO_FLOOD_LIMITS, Node, STEP, wait_until};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const ROOM: &str = "lobby";
/// What the client is still writing when the node closes it.
const MIB: usize = 1 << 20;
/// A paced writer writes its megabyte in this many chunks...
const CHUNKS: usize = 16;
/// ...this far apart: for about 1.3 s, longer than a closing handshake is waited for (1 s),
/// shorter than a close lingers (2 s).
const PACE: Duration = Duration::from_millis(80);

fn send(room: &str, text: &str) -> String {
    format!(r#"{{"type":"send","room":"{room}","text":"{text}"}}"#)
}

fn join(room: &str) -> Vec<u8> {
    raw::text(format!(r#"{{"type":"join","room":"{room}"}}"#))
}

/// A text message of 1 MiB in 4 KiB fragments, none of them final.
fn endless_fragments() -> Vec<u8> {
    let piece = vec![b'x'; 4096];
    (0..MIB / piece.len())
        .flat_map(|i| {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            raw::frame(OpCode::Data(opcode), false, &piece)
        })
        .collect()
}

/// Reads the welcome (or the refusal's error) that opens a raw connection.
async fn expect_welcome(socket: &mut RawSocket) {
    match socket.recv().await {
        Incoming::Frame(ServerFrame::Welcome { .. }) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// `frames` cut into [`CHUNKS`] chunks of whole frames.
fn chunked(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .chunks(frames.len().div_ceil(CHUNKS))
        .map(|chunk| chunk.concat())
        .collect()
}

/// While `writing` is still going on, reads the `error` frame (if given) and the close frame
/// with `code`, then the end of the connection; and the whole input is written.
async fn expect_lingering_close(
    mut socket: RawSocket,
    writing: JoinHandle<std::io::Result<()>>,
    error: Option<ErrorCode>,
    code: u16,
) {
    let mut error = error;
    loop {
        match socket.recv().await {
            Incoming::Frame(ServerFrame::Error { code: got, .. }) if Some(got) == error => {
                error = None;
            }
            // Replies before the violation, such as the refusals that make a flooder.
            Incoming::Frame(_) | Incoming::Ping | Incoming::Pong => {}
            Incoming::Close(got) => {
                assert!(error.is_none(), "closed without the {error:?} error frame");
                assert_eq!(got, Some(code), "close code");
                break;
            }
            other => panic!("expected {error:?} and close {code}, got {other:?}"),
        }
    }
    match socket.recv().await {
        Incoming::End => {}
        other => panic!("expected the end of the connection after close {code}, got {other:?}"),
    }
    tokio::time::timeout(STEP, writing)
        .await
        .expect("the input is written while the node lingers")
        .expect("writer task")
        .expect("the node read the input instead of resetting the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_still_writing_a_megabyte_read_why_they_were_closed() {
    let node = Node::memory().await;
    let oversize_text = raw::text(send(ROOM, &"x".repeat(MIB)));
    let cases = [
        ("1 MiB text frame", oversize_text),
        ("1 MiB binary frame", raw::binary(&vec![0xA5; MIB])),
        ("fragments that never end", endless_fragments()),
    ];
    for (what, input) in cases {
        eprintln!("case: {what}");
        let mut socket = RawSocket::connect_to(&node, "writer").await;
        expect_welcome(&mut socket).await;
        let writing = socket.write(input);
        let error = Some(ErrorCode::TooLarge);
        expect_lingering_close(socket, writing, error, close::MESSAGE_TOO_BIG).await;
    }
    let closes = format!("chat_closes_total{{code=\"{}\"}}", close::MESSAGE_TOO_BIG);
    assert_eq!(node.metric(&closes).await, 3.0);
    wait_until("the closed connections are gone", STEP, async || {
        node.metric("chat_connections").await == 0.0
    })
    .await;
    let mut ada = node.client("ada").await;
    ada.join(ROOM).await;
    ada.say(ROOM, "the node carries on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_is_read_while_the_client_writes_on() {
    let node = Node::memory().await;
    let socket = RawSocket::connect_to(&node, &"n".repeat(40)).await;
    let joins: Vec<Vec<u8>> = (0..MIB / 32).map(|_| join(ROOM)).collect();
    let writing = socket.write_paced(chunked(&joins), PACE);
    let error = Some(ErrorCode::InvalidName);
    expect_lingering_close(socket, writing, error, close::POLICY_VIOLATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_writing_on_reads_its_1008() {
    let node = Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--send-rate",
            "1",
            "--send-burst",
            "1",
            "--flood-close-after",
            "5",
        ],
        &[],
    )
    .await;
    let mut socket = RawSocket::connect_to(&node, "flooder").await;
    expect_welcome(&mut socket).await;
    let _ = socket.write(join(ROOM)).await;
    let sends: Vec<Vec<u8>> = (0..MIB / 48)
        .map(|i| raw::text(send(ROOM, &format!("flood {i}"))))
        .collect();
    let writing = socket.write_paced(chunked(&sends), PACE);
    let error = Some(ErrorCode::RateLimited);
    expect_lingering_close(socket, writing, error, close::POLICY_VIOLATION).await;
    assert_eq!(node.metric("chat_flood_closes_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_at_the_write_timeout() {
    const WRITE_TIMEOUT_SECS: u64 = 1;
    const TEXT_BYTES: usize = 16 * 1024;
    /// Far more than the kernel buffers between the node and the stalled client hold, so a
    /// write to it is left pending; the queue is large enough never to overflow first.
    const MESSAGES: usize = 600;
    let timeout = WRITE_TIMEOUT_SECS.to_string();
    let text_bytes = TEXT_BYTES.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--write-timeout-secs",
        &timeout,
        "--outbound-queue",
        "100000",
        "--max-text-bytes",
        &text_bytes,
        "--idle-timeout-secs",
        "0",
    ];
    args.extend(NO_FLOOD_LIMITS);
    let node = Node::spawn(&args, &[]).await;

    let mut stalled = RawSocket::connect_with_receive_buffer(&node, "stalled", 4096).await;
    let _ = stalled.write(join(ROOM)).await;
    for _ in 0..2 {
        // The welcome, then `joined`; after that this client reads nothing.
        assert!(matches!(stalled.recv().await, Incoming::Frame(_)));
    }
    let mut alice = node.client("alice").await;
    alice.join(ROOM).await;
    for i in 0..MESSAGES {
        let text = format!("{i:05}{}", "x".repeat(TEXT_BYTES - 5));
        alice.say(ROOM, &text).await;
    }
    // The write to the stalled client has been pending since some time during the flood.
    let deadline = Duration::from_secs(WRITE_TIMEOUT_SECS) + STEP;
    wait_until("the stalled client is closed", deadline, async || {
        node.metric("chat_write_timeouts_total").await == 1.0
    })
    .await;
    wait_until("its connection is gone", STEP, async || {
        node.metric("chat_connections").await == 1.0
    })
    .await;
    let slow_closes = format!("chat_closes_total{{code=\"{}\"}}", close::SLOW_CONSUMER);
    assert_eq!(node.metric(&slow_closes).await, 1.0);
    assert_eq!(node.metric("chat_slow_consumer_closes_total").await, 0.0);
    alice.say(ROOM, "the room carries on").await;
    drop(stalled);
}
