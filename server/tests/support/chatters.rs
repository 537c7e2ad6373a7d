//! Users who chat without pause while a test breaks something under them: each sends to one
//! room at a steady pace, reconnects to the next node when its connection breaks and rejoins
//! with the last id it saw, and records what was acknowledged and what it received, so a test
//! can check that every acknowledged message reached everyone exactly once, in id order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::{MessageId, ServerFrame};
use futures::{SinkExt, StreamExt};
use tokio::sync::Barrier;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::Node;

/// The room the users chat in.
pub(crate) const ROOM: &str = "faults";
/// Per user, between two messages.
const SEND_INTERVAL: Duration = Duration::from_millis(25);

/// What one user saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) name: String,
    /// Texts of this user's messages that were acknowledged, and when.
    pub(crate) acked: Vec<(String, Instant)>,
    /// Every message received, in order: from history and live.
    pub(crate) received: Vec<(MessageId, String)>,
    /// Connections lost and made again.
    pub(crate) reconnects: usize,
}

/// A user who chats on `urls[first]` and, when the connection breaks, reconnects to the next
/// node that answers and rejoins with the last id it saw. It sends until `stop_sending`, then
/// listens until `stop`.
async fn user(
    name: String,
    urls: Vec<String>,
    first: usize,
    everyone_joined: Arc<Barrier>,
    stop_sending: Instant,
    stop: Instant,
) -> Seen {
    let mut seen = Seen {
        name: name.clone(),
        ..Seen::default()
    };
    let mut node = first;
    let mut joined_once = false;
    let mut sent = 0u64;
    let mut pending: HashMap<String, String> = HashMap::new();
    while Instant::now() < stop {
        let url = format!("{}?name={name}", urls[node % urls.len()]);
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let since = seen.received.last().map(|(id, _)| id.to_string());
        let join = serde_json::json!({"type": "join", "room": ROOM, "since": since, "ref": "join"});
        if ws.send(Message::text(join.to_string())).await.is_err() {
            continue;
        }
        let mut ticker = tokio::time::interval(SEND_INTERVAL);
        let mut joined = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(stop) => return seen,
                _ = ticker.tick(), if joined && Instant::now() < stop_sending => {
                    sent += 1;
                    let text = format!("{name}:{sent}");
                    let reference = sent.to_string();
                    let frame = serde_json::json!({"type": "send", "room": ROOM, "text": text, "ref": reference});
                    pending.insert(reference, text);
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
                incoming = ws.next() => {
                    let Some(Ok(Message::Text(text))) = incoming else {
                        match incoming {
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            _ => break,
                        }
                    };
                    let frame: ServerFrame<'_> = serde_json::from_str(&text).expect("a server frame");
                    match frame {
                        ServerFrame::Joined { history, .. } => {
                            for embedded in history {
                                let frame: ServerFrame<'_> = serde_json::from_str(embedded.json()).expect("history frame");
                                if let ServerFrame::Message { id, text, .. } = frame {
                                    seen.received.push((id.parse().expect("an id"), text.into_owned()));
                                }
                            }
                            joined = true;
                            if !joined_once {
                                joined_once = true;
                                everyone_joined.wait().await;
                                ticker.reset();
                            }
                        }
                        ServerFrame::Message { id, text, .. } => {
                            seen.received.push((id.parse().expect("an id"), text.into_owned()));
                        }
                        ServerFrame::Ack { reference: Some(reference), .. } => {
                            if let Some(text) = pending.remove(reference.as_ref()) {
                                seen.acked.push((text, Instant::now()));
                            }
                        }
                        // Unavailable while Redis is down: not acked, so not owed to anyone.
                        ServerFrame::Error { reference: Some(reference), .. } => {
                            pending.remove(reference.as_ref());
                        }
                        _ => {}
                    }
                }
            }
        }
        // Whatever was in flight on the lost connection is neither acked nor refused.
        pending.clear();
        seen.reconnects += 1;
        node += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// Every user saw every acknowledged message exactly once, in id order.
pub(crate) fn assert_exactly_once_in_order(outcomes: &[Seen]) {
    assert_in_order_acked_after(outcomes, None);
}

/// Every user received messages in id order, none twice, and every message acknowledged after
/// `since` (all of them for `None`).
pub(crate) fn assert_in_order_acked_after(outcomes: &[Seen], since: Option<Instant>) {
    let acked: HashSet<&str> = outcomes
        .iter()
        .flat_map(|seen| seen.acked.iter())
        .filter(|(_, at)| since.is_none_or(|since| *at > since))
        .map(|(text, _)| text.as_str())
        .collect();
    assert!(
        acked.len() > 100,
        "too little traffic to prove anything: {}",
        acked.len()
    );
    for seen in outcomes {
        for pair in seen.received.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{} received {} after {} (out of order or twice)",
                seen.name,
                pair[1].0,
                pair[0].0
            );
        }
        let received: HashSet<&str> = seen.received.iter().map(|(_, t)| t.as_str()).collect();
        let missing: Vec<&&str> = acked.difference(&received).collect();
        assert!(
            missing.is_empty(),
            "{} missed {} of {} acknowledged messages, e.g. {:?}",
            seen.name,
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// Starts `users` users spread over `nodes`; they chat for `sending` after all joined.
pub(crate) fn start_users(
    nodes: &[Node],
    users: usize,
    sending: Duration,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let urls: Vec<String> = nodes.iter().map(|node| node.ws_url(None)).collect();
    let barrier = Arc::new(Barrier::new(users));
    let stop_sending = Instant::now() + sending;
    let stop = stop_sending + Duration::from_secs(4);
    (0..users)
        .map(|i| {
            tokio::spawn(user(
                format!("user{i}"),
                urls.clone(),
                i,
                barrier.clone(),
                stop_sending,
                stop,
            ))
        })
        .collect()
}

pub(crate) async fn outcomes(users: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    let mut outcomes = Vec::with_capacity(users.len());
    for user in users {
        outcomes.push(user.await.expect("user task"));
    }
    outcomes
}
