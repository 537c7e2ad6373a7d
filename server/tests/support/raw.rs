//! A WebSocket client that writes hand-made bytes: frames a well-behaved library refuses to
//! send (unmasked, reserved bits or opcodes, broken fragmentation, invalid UTF-8, lying length
//! headers) and floods of frames written in one go. It reads what the server answers frame by
//! frame, so a test sees exactly which error frame and close code came, and in what order.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::ServerFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use super::{Endpoint, STEP};

/// One frame as a client would put it on the wire: masked unless `mask` is None.
pub(crate) fn encode(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    Frame::from_payload(header, Bytes::copy_from_slice(payload))
        .format(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// A masked frame with `opcode`, final or not.
pub(crate) fn frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
    encode(
        FrameHeader {
            is_final,
            opcode,
            mask: Some(*b"mask"),
            ..FrameHeader::default()
        },
        payload,
    )
}

/// A masked, final text frame carrying `text` (or any bytes, valid UTF-8 or not).
pub(crate) fn text(text: impl AsRef<[u8]>) -> Vec<u8> {
    frame(OpCode::Data(Data::Text), true, text.as_ref())
}

pub(crate) fn binary(payload: &[u8]) -> Vec<u8> {
    frame(OpCode::Data(Data::Binary), true, payload)
}

pub(crate) fn ping(payload: &[u8]) -> Vec<u8> {
    frame(OpCode::Control(Control::Ping), true, payload)
}

/// `message` split into `pieces` frames: a text frame and continuations, the last one final.
pub(crate) fn fragmented(message: &[u8], pieces: usize) -> Vec<u8> {
    let size = message.len().div_ceil(pieces.max(1)).max(1);
    let chunks: Vec<&[u8]> = message.chunks(size).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        out.extend(frame(opcode, i + 1 == chunks.len(), chunk));
    }
    out
}

/// The path and query of the WebSocket URL of `node` for `name`.
fn node_path(node: &Endpoint, name: &str) -> String {
    let url = node.ws_url(Some(name));
    url.strip_prefix(&format!("ws://{}", node.addr()))
        .expect("the node's WebSocket URL starts with its address")
        .to_owned()
}

/// What one read from the server gave.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(ServerFrame<'static>),
    Ping,
    Pong,
    /// A close frame and its code, if it had one.
    Close(Option<u16>),
    /// The server ended the TCP connection.
    End,
    /// The read failed (for example a reset after the server closed).
    Failed(String),
    /// Nothing came before the deadline.
    Timeout,
}

/// A WebSocket connection whose every outgoing byte is chosen by the test.
pub(crate) struct RawSocket {
    reader: OwnedReadHalf,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    buffer: Vec<u8>,
}

impl RawSocket {
    /// Completes the handshake on `path` (e.g. `/ws?name=x`) and reads nothing else. With
    /// `receive_buffer`, the socket's kernel receive buffer is that small, so a client that
    /// stops reading pushes back on the server after little data.
    async fn connect(addr: SocketAddr, path: &str, receive_buffer: Option<u32>) -> RawSocket {
        let handshake = async {
            let socket = TcpSocket::new_v4()?;
            if let Some(bytes) = receive_buffer {
                socket.set_recv_buffer_size(bytes)?;
            }
            let mut stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let mut buffer = Vec::new();
            let head_end = loop {
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed during the handshake"));
                }
                buffer.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
            buffer.drain(..head_end);
            Ok::<_, std::io::Error>((stream, head, buffer))
        };
        let (stream, head, buffer) = tokio::time::timeout(STEP, handshake)
            .await
            .unwrap_or_else(|_| panic!("raw handshake with {addr} timed out"))
            .unwrap_or_else(|e| panic!("raw handshake with {addr}: {e}"));
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "raw handshake refused: {head}"
        );
        let (reader, writer) = stream.into_split();
        RawSocket {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            buffer,
        }
    }

    /// Connects to `node` as `name` (percent-encoded in the URL) and reads nothing.
    pub(crate) async fn connect_to(node: &Endpoint, name: &str) -> RawSocket {
        RawSocket::connect(node.addr(), &node_path(node, name), None).await
    }

    /// Like [`RawSocket::connect_to`], with a kernel receive buffer of `bytes` (the kernel
    /// doubles it and has a floor of a few KiB).
    pub(crate) async fn connect_with_receive_buffer(
        node: &Endpoint,
        name: &str,
        bytes: u32,
    ) -> RawSocket {
        RawSocket::connect(node.addr(), &node_path(node, name), Some(bytes)).await
    }

    /// Writes `bytes` on a task of its own, so the test can read the server's answers while a
    /// large input is still going out (a server that stops reading would otherwise block it).
    pub(crate) fn write(&self, bytes: Vec<u8>) -> JoinHandle<std::io::Result<()>> {
        let writer = Arc::clone(&self.writer);
        tokio::spawn(async move {
            let mut writer = writer.lock().await;
            writer.write_all(&bytes).await?;
            writer.flush().await
        })
    }

    /// Writes `chunks` one after another, `interval` apart, on a task of its own: a client
    /// that is still writing a while after the server stopped listening to it.
    pub(crate) fn write_paced(
        &self,
        chunks: Vec<Vec<u8>>,
        interval: Duration,
    ) -> JoinHandle<std::io::Result<()>> {
        let writer = Arc::clone(&self.writer);
        tokio::spawn(async move {
            let mut writer = writer.lock().await;
            for chunk in chunks {
                writer.write_all(&chunk).await?;
                writer.flush().await?;
                tokio::time::sleep(interval).await;
            }
            Ok(())
        })
    }

    /// The next frame from the server, or what ended the wait, by `deadline`.
    pub(crate) async fn next(&mut self, deadline: Instant) -> Incoming {
        loop {
            if let Some(incoming) = self.parse_buffered() {
                return incoming;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.reader.read(&mut chunk)).await {
                Err(_) => return Incoming::Timeout,
                Ok(Ok(0)) => return Incoming::End,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Incoming::Failed(e.to_string()),
            }
        }
    }

    /// The next frame within `STEP`.
    pub(crate) async fn recv(&mut self) -> Incoming {
        self.next(Instant::now() + STEP).await
    }

    fn parse_buffered(&mut self) -> Option<Incoming> {
        let mut cursor = Cursor::new(&self.buffer[..]);
        let (header, length) = FrameHeader::parse(&mut cursor)
            .unwrap_or_else(|e| panic!("the server sent a malformed frame header: {e}"))?;
        let start = usize::try_from(cursor.position()).expect("header length fits usize");
        let length = usize::try_from(length).expect("frame length fits usize");
        if self.buffer.len() < start + length {
            return None;
        }
        assert!(header.mask.is_none(), "the server masked a frame");
        assert!(header.is_final, "the server fragmented a frame");
        let payload: Vec<u8> = self.buffer.drain(..start + length).skip(start).collect();
        Some(match header.opcode {
            OpCode::Data(Data::Text) => {
                let frame = serde_json::from_slice(&payload).unwrap_or_else(|e| {
                    panic!(
                        "the server sent a bad frame {:?}: {e}",
                        String::from_utf8_lossy(&payload)
                    )
                });
                Incoming::Frame(frame)
            }
            OpCode::Control(Control::Close) => Incoming::Close(
                payload
                    .get(..2)
                    .map(|code| u16::from_be_bytes([code[0], code[1]])),
            ),
            OpCode::Control(Control::Ping) => Incoming::Ping,
            OpCode::Control(Control::Pong) => Incoming::Pong,
            other => panic!("the server sent an unexpected {other:?} frame"),
        })
    }
}
