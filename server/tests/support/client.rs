//! A protocol v1 WebSocket client for tests, and assertions over several clients at once.
//!
//! Frames read while waiting for another one are kept in order and handed out by later reads,
//! and `presence` frames are set aside, so no helper loses a frame and none trips over one it
//! was not waiting for. Every read has a deadline, so a test fails instead of hanging.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::presence::PresenceLog;
use super::{QUIET, STEP, unique};

/// A chat message as delivered to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chat {
    pub room: String,
    pub id: String,
    pub from: String,
    pub text: String,
    pub ts: u64,
}

impl Chat {
    fn from_frame(frame: &ServerFrame<'_>) -> Option<Chat> {
        match frame {
            ServerFrame::Message {
                room,
                id,
                from,
                text,
                ts,
            } => Some(Chat {
                room: room.to_string(),
                id: id.to_string(),
                from: from.to_string(),
                text: text.to_string(),
                ts: *ts,
            }),
            _ => None,
        }
    }
}

/// What the server sent in its welcome frame.
#[derive(Debug, Clone)]
pub(crate) struct Welcome {
    pub node: String,
    pub session: String,
    pub name: String,
}

/// What a read from the socket gave.
pub(super) enum Event {
    Frame(ServerFrame<'static>),
    Closed(Option<u16>),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol v1 WebSocket client. Frames read while waiting for another one are kept in
/// order and handed out by later reads, so no helper loses a frame.
pub(crate) struct Client {
    ws: Ws,
    welcome: Option<Welcome>,
    pub(super) pending: VecDeque<ServerFrame<'static>>,
    /// `presence` frames, set aside as they arrive so that they never interleave with what a
    /// test waits for.
    pub(super) presence: PresenceLog,
    closed: Option<Option<u16>>,
}

/// What a `joined` reply carried.
#[derive(Debug, Clone)]
pub(crate) struct JoinedReply {
    pub count: u64,
    pub members: Vec<String>,
    pub more_members: bool,
    /// The `message` frames of its history.
    pub history: Vec<Chat>,
    /// Every frame of its history (`message`, `edited`, `deleted`), in order.
    pub history_frames: Vec<ServerFrame<'static>>,
    pub recovered: Option<bool>,
}

impl Client {
    /// Completes the WebSocket handshake without reading anything.
    pub(crate) async fn open(url: &str) -> Client {
        let (ws, response) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake with {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        assert_eq!(response.status(), 101, "handshake status");
        Client {
            ws,
            welcome: None,
            pending: VecDeque::new(),
            presence: PresenceLog::default(),
            closed: None,
        }
    }

    /// Connects and reads the welcome frame, which must come first.
    pub(crate) async fn connect(url: &str) -> Client {
        let mut client = Client::open(url).await;
        match client.recv().await {
            ServerFrame::Welcome {
                node,
                session,
                name,
            } => {
                assert!(!node.is_empty(), "welcome without node");
                assert!(!session.is_empty(), "welcome without session");
                client.welcome = Some(Welcome {
                    node: node.into_owned(),
                    session: session.into_owned(),
                    name: name.into_owned(),
                });
            }
            other => panic!("first frame from {url} is not a welcome: {other:?}"),
        }
        client
    }

    pub(crate) fn welcome(&self) -> &Welcome {
        self.welcome
            .as_ref()
            .expect("client connected with a welcome")
    }

    pub(crate) fn name(&self) -> &str {
        &self.welcome().name
    }

    pub(crate) async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(STEP, self.ws.send(message))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send");
    }

    pub(crate) async fn send_frame(&mut self, frame: &ClientFrame<'_>) {
        let json = serde_json::to_string(frame).expect("client frames serialize");
        self.send_raw_text(&json).await;
    }

    pub(crate) async fn send_raw_text(&mut self, text: &str) {
        self.send_message(Message::text(text)).await;
    }

    pub(crate) async fn send_binary(&mut self, bytes: &[u8]) {
        self.send_message(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await;
    }

    /// A single final text frame with arbitrary (possibly invalid UTF-8) payload bytes.
    pub(crate) async fn send_raw_text_frame(&mut self, payload: &[u8]) {
        let frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        self.send_message(Message::Frame(frame)).await;
    }

    /// Sends `text` to `room` with a fresh ref and returns the ref.
    pub(crate) async fn send_chat(&mut self, room: &str, text: &str) -> String {
        let reference = unique("ref-");
        self.send_frame(&ClientFrame::Send {
            room: room.into(),
            text: text.into(),
            reference: Some(reference.as_str().into()),
        })
        .await;
        reference
    }

    pub(super) async fn read_event(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        if let Some(code) = self.closed {
            return Some(Event::Closed(code));
        }
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            let event = match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: ServerFrame<'static> = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent a bad frame {text:?}: {e}"));
                    if let ServerFrame::Presence { .. } = frame {
                        self.presence.record(frame);
                        continue;
                    }
                    Event::Frame(frame)
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| f.code.into())),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("server sent an unexpected message: {other:?}"),
                Some(Err(e)) => panic!("WebSocket failed without a close frame: {e}"),
                None => panic!("WebSocket ended without a close frame"),
            };
            if let Event::Closed(code) = event {
                self.closed = Some(code);
            }
            return Some(event);
        }
    }

    /// The next frame within `timeout`, or None; panics if the server closes.
    pub(crate) async fn recv_within(&mut self, timeout: Duration) -> Option<ServerFrame<'static>> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        match self
            .read_event(tokio::time::Instant::now() + timeout)
            .await?
        {
            Event::Frame(frame) => Some(frame),
            Event::Closed(code) => panic!("server closed the connection (code {code:?})"),
        }
    }

    /// The next frame; panics if none comes within `STEP`.
    pub(crate) async fn recv(&mut self) -> ServerFrame<'static> {
        self.recv_within(STEP)
            .await
            .unwrap_or_else(|| panic!("no frame within {STEP:?}"))
    }

    /// The first frame matching `pred` within `timeout`, or None. Frames that do not match
    /// are kept for later reads, in order.
    pub(crate) async fn recv_until_within(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ServerFrame<'static>) -> bool,
    ) -> Option<ServerFrame<'static>> {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.read_event(deadline).await? {
                Event::Frame(frame) if pred(&frame) => return Some(frame),
                Event::Frame(frame) => self.pending.push_back(frame),
                Event::Closed(code) => panic!(
                    "server closed the connection (code {code:?}); unread frames: {:?}",
                    self.pending
                ),
            }
        }
    }

    /// The first frame matching `pred` (described by `what`); panics after `STEP`.
    pub(crate) async fn recv_until(
        &mut self,
        what: &str,
        pred: impl FnMut(&ServerFrame<'static>) -> bool,
    ) -> ServerFrame<'static> {
        match self.recv_until_within(STEP, pred).await {
            Some(frame) => frame,
            None => panic!(
                "no {what} within {STEP:?}; other frames: {:?}",
                self.pending
            ),
        }
    }

    /// The ack, `members` page or error answering the request with `reference`.
    pub(crate) async fn reply_to(&mut self, reference: Option<&str>) -> ServerFrame<'static> {
        self.recv_until(
            &format!("reply to ref {reference:?}"),
            |frame| match frame {
                ServerFrame::Ack { reference: r, .. }
                | ServerFrame::Members { reference: r, .. }
                | ServerFrame::Error { reference: r, .. } => r.as_deref() == reference,
                _ => false,
            },
        )
        .await
    }

    /// Waits for the ack of `reference` and returns the message id in it.
    pub(crate) async fn ack(&mut self, reference: &str) -> String {
        match self.reply_to(Some(reference)).await {
            ServerFrame::Ack { id, .. } => {
                assert!(!id.is_empty(), "ack with an empty id");
                id.into_owned()
            }
            other => panic!("expected an ack for {reference}, got {other:?}"),
        }
    }

    /// Waits for an error frame with `reference` and checks its code.
    pub(crate) async fn expect_error(&mut self, code: ErrorCode, reference: Option<&str>) {
        match self.reply_to(reference).await {
            ServerFrame::Error { code: got, .. } if got == code => {}
            other => panic!("expected error {code} with ref {reference:?}, got {other:?}"),
        }
    }

    /// Joins `room` and waits for `joined`.
    pub(crate) async fn join(&mut self, room: &str) -> JoinedReply {
        self.join_since(room, None).await
    }

    /// Joins `room`, saying which message was seen last, and waits for `joined`.
    pub(crate) async fn join_since(&mut self, room: &str, since: Option<&str>) -> JoinedReply {
        let reference = unique("join-");
        self.send_frame(&ClientFrame::Join {
            room: room.into(),
            since: since.map(Into::into),
            reference: Some(reference.as_str().into()),
        })
        .await;
        let frame = self
            .recv_until(&format!("joined {room}"), |frame| match frame {
                ServerFrame::Joined { room: r, .. } => r == room,
                ServerFrame::Error { reference: r, .. } => r.as_deref() == Some(&reference),
                _ => false,
            })
            .await;
        match frame {
            ServerFrame::Joined {
                count,
                members,
                more_members,
                history,
                recovered,
                ..
            } => {
                let history_frames: Vec<ServerFrame<'static>> = history
                    .iter()
                    .map(|embedded| serde_json::from_str(embedded.json()).expect("a history frame"))
                    .collect();
                JoinedReply {
                    count,
                    members: members.into_iter().map(Cow::into_owned).collect(),
                    more_members,
                    history: history_frames.iter().filter_map(Chat::from_frame).collect(),
                    history_frames,
                    recovered,
                }
            }
            other => panic!("join {room}: {other:?}"),
        }
    }

    /// Leaves `room` and waits for `left`.
    pub(crate) async fn leave(&mut self, room: &str) {
        self.send_frame(&ClientFrame::Leave {
            room: room.into(),
            reference: None,
        })
        .await;
        self.recv_until(
            &format!("left {room}"),
            |frame| matches!(frame, ServerFrame::Left { room: r } if r == room),
        )
        .await;
    }

    /// The next chat message with id `id`.
    pub(crate) async fn message_with_id(&mut self, id: &str) -> Chat {
        let frame = self
            .recv_until(
                &format!("message {id}"),
                |frame| matches!(frame, ServerFrame::Message { id: i, .. } if i == id),
            )
            .await;
        Chat::from_frame(&frame).expect("a message frame")
    }

    /// The next chat message whose text is `text`, if one comes within `timeout`.
    pub(crate) async fn message_with_text_within(
        &mut self,
        text: &str,
        timeout: Duration,
    ) -> Option<Chat> {
        let frame = self
            .recv_until_within(
                timeout,
                |frame| matches!(frame, ServerFrame::Message { text: t, .. } if t == text),
            )
            .await?;
        Chat::from_frame(&frame)
    }

    /// The next `count` chat messages, in arrival order (other frames are kept).
    pub(crate) async fn messages(&mut self, count: usize) -> Vec<Chat> {
        let mut chats = Vec::with_capacity(count);
        while chats.len() < count {
            let frame = self
                .recv_until(
                    &format!("message {} of {count} (got {chats:?})", chats.len() + 1),
                    |frame| matches!(frame, ServerFrame::Message { .. }),
                )
                .await;
            chats.extend(Chat::from_frame(&frame));
        }
        chats
    }

    /// Sends `text` to `room`, checks the ack and the sender's own copy, and returns the id.
    pub(crate) async fn say(&mut self, room: &str, text: &str) -> String {
        let reference = self.send_chat(room, text).await;
        let id = self.ack(&reference).await;
        let own = self.message_with_id(&id).await;
        let name = self.name().to_owned();
        assert_eq!(
            (own.room.as_str(), own.from.as_str(), own.text.as_str()),
            (room, name.as_str(), text),
            "the sender's own copy of {id}"
        );
        id
    }

    /// Asserts that nothing arrives for `window` and nothing unread is kept.
    pub(crate) async fn expect_silence(&mut self, window: Duration) {
        assert!(
            self.pending.is_empty(),
            "{}: expected silence, but unread frames: {:?}",
            self.label(),
            self.pending
        );
        let deadline = tokio::time::Instant::now() + window;
        if let Some(event) = self.read_event(deadline).await {
            match event {
                Event::Frame(frame) => panic!("{}: expected silence, got {frame:?}", self.label()),
                Event::Closed(code) => {
                    panic!("{}: expected silence, got a close ({code:?})", self.label())
                }
            }
        }
    }

    /// Every frame unread so far plus whatever arrives within `window`.
    pub(crate) async fn drain(&mut self, window: Duration) -> Vec<ServerFrame<'static>> {
        let mut frames: Vec<_> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + window;
        while let Some(event) = self.read_event(deadline).await {
            match event {
                Event::Frame(frame) => frames.push(frame),
                Event::Closed(code) => panic!("{}: closed ({code:?}) while draining", self.label()),
            }
        }
        frames
    }

    /// Every frame read but not handed out yet, e.g. those [`Client::expect_close`] kept.
    pub(crate) fn take_unread(&mut self) -> Vec<ServerFrame<'static>> {
        self.pending.drain(..).collect()
    }

    /// Reads until the server's close frame (skipping data frames) and returns its code.
    pub(crate) async fn expect_close(&mut self) -> u16 {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match self.read_event(deadline).await {
                None => panic!("{}: no close frame within {STEP:?}", self.label()),
                Some(Event::Frame(frame)) => self.pending.push_back(frame),
                Some(Event::Closed(None)) => panic!("{}: close frame without a code", self.label()),
                Some(Event::Closed(Some(code))) => {
                    self.finish_close().await;
                    return code;
                }
            }
        }
    }

    /// Keeps reading after the server's close frame, as a real client does: the read sends
    /// tungstenite's queued close reply, and the server then ends the connection.
    async fn finish_close(&mut self) {
        let deadline = tokio::time::Instant::now() + STEP;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
    }

    fn label(&self) -> String {
        match &self.welcome {
            Some(welcome) => format!("client {:?} on {}", welcome.name, welcome.node),
            None => "client".to_owned(),
        }
    }
}

/// `sender` says `text` in `room`; every client in `receivers` gets it exactly once, with the
/// sender's name and the acked id. Returns the id.
pub(crate) async fn exchange(
    sender: &mut Client,
    room: &str,
    text: &str,
    receivers: &mut [&mut Client],
) -> String {
    let id = sender.say(room, text).await;
    let from = sender.name().to_owned();
    for receiver in receivers.iter_mut() {
        let chat = receiver.message_with_id(&id).await;
        assert_eq!(
            (chat.room.as_str(), chat.from.as_str(), chat.text.as_str()),
            (room, from.as_str(), text),
            "message {id} as {} got it",
            receiver.label()
        );
    }
    sender.expect_silence(QUIET).await;
    expect_silence_all(receivers, QUIET).await;
    id
}

/// Asserts silence on every client at once.
pub(crate) async fn expect_silence_all(clients: &mut [&mut Client], window: Duration) {
    futures::future::join_all(clients.iter_mut().map(|c| c.expect_silence(window))).await;
}
