//! Faults with real processes: a node killed with SIGKILL under load, clients that stop
//! reading during a flood, and tampered, oversize or replayed payloads injected into Redis. In
//! each, the clients that are not at fault keep every acknowledged message and their
//! connections, and the node's metrics say what happened.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_protocol::{ServerFrame, close};
use support::raw::{self, Incoming, RawSocket};
use support::{
    Client, KEY_A, Node, QUIET, RawSubscriber, RedisServer, STEP, cluster, exchange,
    expect_silence_all, key, member, unique, wait_until,
};

const ROOM: &str = "storm";
/// Pause between two sends of one client.
const PACE: Duration = Duration::from_millis(20);
/// These tests load nodes on purpose: without send-rate limits (flood control has tests of
/// its own).
const UNLIMITED: [&str; 4] = ["--send-rate", "0", "--name-send-rate", "0"];

async fn unlimited_node(redis: &RedisServer, id: &str, extra: &[&str]) -> Node {
    let args: Vec<&str> = UNLIMITED.iter().chain(extra).copied().collect();
    Node::redis_with(redis, id, &[&key(KEY_A)], &args).await
}

/// What one surviving client saw: the ids acked to it, and every message it received.
struct Tally {
    name: String,
    acked: Vec<String>,
    /// (sender name, message id), in arrival order.
    received: Vec<(String, String)>,
    /// Senders whose last message arrived.
    finished: HashSet<String>,
}

impl Tally {
    fn record(&mut self, frame: ServerFrame<'static>) {
        match frame {
            ServerFrame::Message { id, from, text, .. } => {
                if text.starts_with(LAST) {
                    self.finished.insert(from.to_string());
                }
                self.received.push((from.into_owned(), id.into_owned()));
            }
            other => panic!("{}: unexpected {other:?}", self.name),
        }
    }

    /// Sends one message and reads until its ack, recording whatever arrives meanwhile.
    /// Panics if the connection closes, an error comes, or nothing comes within `STEP`.
    async fn send_and_ack(&mut self, client: &mut Client, text: &str) {
        let reference = client.send_chat(ROOM, text).await;
        loop {
            match client.recv().await {
                ServerFrame::Ack { reference: r, id } if r.as_deref() == Some(&reference) => {
                    self.acked.push(id.into_owned());
                    return;
                }
                frame => self.record(frame),
            }
        }
    }

    /// The ids of the messages from `sender`, in arrival order.
    fn from(&self, sender: &str) -> Vec<&str> {
        self.received
            .iter()
            .filter(|(from, _)| from == sender)
            .map(|(_, id)| id.as_str())
            .collect()
    }
}

/// The text that marks a sender's last message.
const LAST: &str = "last from ";

/// A survivor sends paced messages until `stop`, then a last one, and reads until the last
/// message of every survivor came: messages from one sender arrive in order, so by then it
/// has everything the others sent.
async fn survive(mut client: Client, stop: Arc<AtomicBool>, survivors: usize) -> (Client, Tally) {
    let name = client.name().to_owned();
    let mut tally = Tally {
        name: name.clone(),
        acked: Vec::new(),
        received: Vec::new(),
        finished: HashSet::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        tally
            .send_and_ack(&mut client, &unique(&format!("{name} ")))
            .await;
        tokio::time::sleep(PACE).await;
    }
    tally
        .send_and_ack(&mut client, &format!("{LAST}{name}"))
        .await;
    while tally.finished.len() < survivors {
        let frame = client.recv().await;
        tally.record(frame);
    }
    (client, tally)
}

/// A client of the node that will be killed: sends paced messages over a raw socket until
/// the connection drops, and returns how it ended.
async fn doomed(mut socket: RawSocket, name: String) -> Incoming {
    let _ = socket
        .write(raw::text(format!(r#"{{"type":"join","room":"{ROOM}"}}"#)))
        .await;
    loop {
        let send =
            serde_json::json!({"type": "send", "room": ROOM, "text": unique(&format!("{name} "))});
        let _ = socket.write(raw::text(send.to_string())).await;
        // Read whatever came until a short pause, or the end.
        let pause = tokio::time::Instant::now() + PACE;
        loop {
            match socket.next(pause).await {
                Incoming::Timeout => break,
                Incoming::Frame(_) | Incoming::Ping | Incoming::Pong => {}
                ended => return ended,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_leaves_the_other_nodes_clients_unaffected() {
    const PER_NODE: usize = 3;
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(unlimited_node(&redis, &format!("node-{n}"), &[]).await);
    }
    let mut survivors = Vec::new();
    for (n, node) in nodes[..2].iter().enumerate() {
        for i in 0..PER_NODE {
            let name = format!("n{n}-c{i}");
            survivors.push(member(node, &format!("node-{n}"), &name, ROOM).await);
        }
    }
    let names: Vec<String> = survivors.iter().map(|c| c.name().to_owned()).collect();
    let mut victims = Vec::new();
    for i in 0..PER_NODE {
        let name = format!("n2-c{i}");
        let mut socket = RawSocket::connect_to(&nodes[2], &name).await;
        assert!(matches!(
            socket.recv().await,
            Incoming::Frame(ServerFrame::Welcome { .. })
        ));
        victims.push(tokio::spawn(doomed(socket, name)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let count = survivors.len();
    let running: Vec<_> = survivors
        .into_iter()
        .map(|client| tokio::spawn(survive(client, Arc::clone(&stop), count)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // SIGKILL: the node gets no chance to close its connections or leave its channels.
    let killed = nodes.remove(2);
    drop(killed);
    for victim in victims {
        let ended = tokio::time::timeout(STEP, victim)
            .await
            .expect("the killed node's clients notice within 5 s")
            .expect("victim task");
        assert!(
            matches!(ended, Incoming::End | Incoming::Failed(_)),
            "a client of the killed node saw {ended:?}"
        );
    }
    // Redis drops the dead node's subscriptions with its connection.
    wait_until("only the surviving nodes subscribe", STEP, async || {
        redis.subscribers(&format!("chat:room:{ROOM}")).await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut tallies = Vec::new();
    let mut clients = Vec::new();
    for task in running {
        let (client, tally) = tokio::time::timeout(4 * STEP, task)
            .await
            .expect("survivors finish")
            .expect("a survivor stayed connected and got every ack");
        clients.push(client);
        tallies.push(tally);
    }
    let acked: HashMap<&str, &Vec<String>> = tallies
        .iter()
        .map(|t| (t.name.as_str(), &t.acked))
        .collect();
    for tally in &tallies {
        for sender in &names {
            let expected: Vec<&str> = acked[sender.as_str()].iter().map(String::as_str).collect();
            assert!(expected.len() > 10, "{sender} sent only {}", expected.len());
            assert_eq!(
                tally.from(sender),
                expected,
                "{} got every message acked to {sender}, once and in order",
                tally.name
            );
        }
    }
    let sent: usize = tallies.iter().map(|t| t.acked.len()).sum();
    let delivered: usize = tallies.iter().map(|t| t.received.len()).sum();
    eprintln!("survivors: {sent} messages acked, {delivered} deliveries checked");
    let mut clients: Vec<&mut Client> = clients.iter_mut().collect();
    expect_silence_all(&mut clients, QUIET).await;
    for node in &nodes {
        assert_eq!(node.status_of("/healthz").await, 200);
        assert_eq!(node.status_of("/readyz").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stall_during_a_flood_are_closed_while_memory_stays_bounded() {
    const STALLED: usize = 20;
    const MESSAGES: usize = 300;
    const TEXT_BYTES: usize = 16 * 1024;
    /// A stalled connection may hold its 256 KiB write buffer; queued messages are shared by
    /// every recipient. 20 stalled readers thus cost a few MiB, while copies per connection
    /// of a 4.8 MB flood would cost 96 MB.
    const GROWTH_KIB: u64 = 24 * 1024;
    let redis = RedisServer::start().await;
    let text_bytes = TEXT_BYTES.to_string();
    let limits = ["--outbound-queue", "64", "--max-text-bytes", &text_bytes];
    let node = unlimited_node(&redis, "node-0", &limits).await;

    let mut stalled = Vec::new();
    for i in 0..STALLED {
        // A small receive buffer makes the node's writes block after little data, so the
        // flood overflows the queue without megabytes of kernel buffers to fill first.
        let name = format!("stalled-{i}");
        let mut socket = RawSocket::connect_with_receive_buffer(&node, &name, 4096).await;
        let _ = socket
            .write(raw::text(format!(r#"{{"type":"join","room":"{ROOM}"}}"#)))
            .await;
        for _ in 0..2 {
            // The welcome, then `joined`; after that this client reads nothing.
            assert!(matches!(socket.recv().await, Incoming::Frame(_)));
        }
        stalled.push(socket);
    }
    let mut alice = member(&node, "node-0", "alice", ROOM).await;
    let mut bob = member(&node, "node-0", "bob", ROOM).await;
    let before_kib = node.rss_kib();

    // Bob reads everything while alice floods the room with 4.8 MB. The queue leaves room
    // for the burst of 20 presence departures that reaches him when the stalled are closed.
    let reader = tokio::spawn(async move {
        let got = bob.messages(MESSAGES).await;
        (bob, got)
    });
    let mut peak_kib = before_kib;
    let mut sent = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let text = format!("{i:05}{}", "x".repeat(TEXT_BYTES - 5));
        sent.push(alice.say(ROOM, &text).await);
        if i % 10 == 0 {
            peak_kib = peak_kib.max(node.rss_kib());
        }
    }
    let (mut bob, got) = reader.await.expect("bob's reader");
    let got: Vec<String> = got.into_iter().map(|chat| chat.id).collect();
    assert_eq!(got, sent, "the reading member got every message, in order");

    wait_until("every stalled reader is closed", 3 * STEP, async || {
        node.metric("chat_slow_consumer_closes_total").await == STALLED as f64
    })
    .await;
    // Each close waits a moment for a handshake the stalled reader cannot answer.
    wait_until("the stalled connections are gone", 3 * STEP, async || {
        node.metric("chat_connections").await == 2.0
    })
    .await;
    let metrics = node.metrics().await;
    let slow_closes = format!("chat_closes_total{{code=\"{}\"}}", close::SLOW_CONSUMER);
    assert_eq!(metrics.value(&slow_closes), Some(STALLED as f64));
    let after_kib = node.rss_kib();
    eprintln!(
        "node RSS: {before_kib} KiB before, {peak_kib} KiB at most during, {after_kib} KiB after"
    );
    for (when, kib) in [("during", peak_kib), ("after", after_kib)] {
        assert!(
            kib <= before_kib + GROWTH_KIB,
            "RSS {when} the flood: {kib} KiB, from {before_kib} KiB before"
        );
    }

    // A stalled reader that reads again finds what its buffers held, then the end: the close
    // frame (4001) was queued behind that data and the node gave up waiting for it to drain.
    let mut late = stalled.pop().expect("a stalled reader");
    loop {
        match late.recv().await {
            Incoming::Frame(_) | Incoming::Ping | Incoming::Pong => {}
            Incoming::Close(Some(close::SLOW_CONSUMER)) | Incoming::End => break,
            other => panic!("a stalled reader got {other:?} instead of close 4001"),
        }
    }
    exchange(&mut bob, ROOM, "the room goes on", &mut [&mut alice]).await;
}

/// `sender` says something in `room` to `receiver`; returns the payload that crossed Redis
/// for it (`m<id>\n<sealed body>`), as someone who can read Redis would see it.
async fn genuine_payload(
    redis: &RedisServer,
    sender: &mut Client,
    receiver: &mut Client,
    room: &str,
) -> Vec<u8> {
    let mut raw_subscriber = redis.psubscribe("chat:room:*").await;
    exchange(sender, room, "genuine", &mut [receiver]).await;
    let channel = format!("chat:room:{room}");
    let is_message = |payload: &[u8]| payload.first() == Some(&b'm');
    first_payload(&mut raw_subscriber, &channel, is_message).await
}

/// The first payload `subscriber` saw on `channel` that is `wanted`.
async fn first_payload(
    subscriber: &mut RawSubscriber,
    channel: &str,
    wanted: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    subscriber
        .collect_for(Duration::from_millis(500))
        .await
        .into_iter()
        .find(|(c, payload)| c == channel && wanted(payload))
        .map(|(_, payload)| payload)
        .expect("the genuine payload crossed Redis")
}

/// The value of `chat_backplane_dropped_total` for `reason` on `node`.
async fn backplane_dropped(node: &Node, reason: &str) -> f64 {
    let series = format!("chat_backplane_dropped_total{{reason=\"{reason}\"}}");
    node.metric(&series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_payloads_in_redis_are_dropped_and_counted() {
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut raw_subscriber = cluster.redis.psubscribe("chat:room:*").await;
    let mut a = member(n0, "node-0", "a", "vault").await;
    let mut b = member(n1, "node-1", "b", "vault").await;
    let mut c = member(n1, "node-1", "c", "other").await;
    exchange(&mut a, "vault", "genuine", &mut [&mut b]).await;
    // The first payload on the channel announces a's join: `+<member key>\n<sealed name>`.
    let payload = first_payload(&mut raw_subscriber, "chat:room:vault", |_| true).await;
    let name_at = payload.iter().position(|&b| b == b'\n').expect("a join") + 1;
    let (head, sealed) = payload.split_at(name_at);

    let failures = async |node: &Node| node.metric("chat_decrypt_failures_total").await;
    let before = [failures(n0).await, failures(n1).await];
    // Version 1 byte, key id 4, nonce 12, ciphertext, tag 16.
    let flip = |at: usize| {
        let mut tampered = payload.clone();
        tampered[name_at + at] ^= 0x01;
        tampered
    };
    let tampered = [
        flip(1),                                      // key id
        flip(6),                                      // nonce
        flip(17),                                     // ciphertext
        flip(sealed.len() - 1),                       // tag
        [head, &sealed[..sealed.len() - 1]].concat(), // truncated
    ];
    // Receivers: the nodes subscribed to the channel, plus the raw pattern subscriber.
    for payload in &tampered {
        assert_eq!(cluster.redis.publish("chat:room:vault", payload).await, 3);
    }
    // Intact, but replayed into another room: the channel is authenticated too.
    assert_eq!(cluster.redis.publish("chat:room:other", &payload).await, 2);

    let expected = [
        before[0] + tampered.len() as f64,
        before[1] + tampered.len() as f64 + 1.0,
    ];
    wait_until("each dropped payload is counted", STEP, async || {
        [failures(n0).await, failures(n1).await] == expected
    })
    .await;
    expect_silence_all(&mut [&mut a, &mut b, &mut c], QUIET).await;
    exchange(&mut b, "vault", "still genuine", &mut [&mut a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payloads_in_redis_are_dropped_unopened_and_the_room_goes_on() {
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut a = member(n0, "node-0", "a", "vault").await;
    let mut b = member(n1, "node-1", "b", "vault").await;
    let genuine = genuine_payload(&cluster.redis, &mut a, &mut b, "vault").await;
    let failures = async |node: &Node| node.metric("chat_decrypt_failures_total").await;
    let before = [failures(n0).await, failures(n1).await];

    // A genuine message padded far beyond what a 4096-byte text can seal to (about 26 KB),
    // and plain junk of 1 MiB: neither is opened, both are counted.
    let mut padded = genuine.clone();
    padded.resize(64 * 1024, b'x');
    let mut junk = b"m1-1\n".to_vec();
    junk.resize(1024 * 1024, 0xff);
    for payload in [&padded, &junk] {
        assert_eq!(cluster.redis.publish("chat:room:vault", payload).await, 2);
    }
    wait_until("each node counts both as oversize", STEP, async || {
        backplane_dropped(n0, "oversize").await == 2.0
            && backplane_dropped(n1, "oversize").await == 2.0
    })
    .await;
    assert_eq!(
        [failures(n0).await, failures(n1).await],
        before,
        "oversize payloads are dropped before they are opened"
    );
    expect_silence_all(&mut [&mut a, &mut b], QUIET).await;
    exchange(&mut b, "vault", "still here", &mut [&mut a]).await;
    exchange(&mut a, "vault", "and here", &mut [&mut b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_body_under_an_id_beyond_history_cannot_silence_a_room() {
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut a = member(n0, "node-0", "a", "vault").await;
    let mut a2 = member(n0, "node-0", "a2", "vault").await;
    let mut b = member(n1, "node-1", "b", "vault").await;
    let genuine = genuine_payload(&cluster.redis, &mut a, &mut b, "vault").await;
    a2.drain(QUIET).await;
    let newline = genuine
        .iter()
        .position(|&byte| byte == b'\n')
        .expect("a newline after the id");
    let id = std::str::from_utf8(&genuine[1..newline]).expect("an ASCII id");
    let (epoch, _) = id.split_once('-').expect("<epoch>-<seq>");
    let max = u64::MAX;
    let forged_ids = [
        format!("{epoch}-{max}"),
        format!("{max}-0"),
        format!("{max}-{max}"),
    ];

    for (round, forged) in forged_ids.iter().enumerate() {
        // The genuine sealed body, replayed under an id no node assigned.
        let mut replay = format!("m{forged}\n").into_bytes();
        replay.extend_from_slice(&genuine[newline + 1..]);
        assert_eq!(cluster.redis.publish("chat:room:vault", &replay).await, 2);
        let dropped = (round + 1) as f64;
        wait_until("both nodes drop the replay", STEP, async || {
            backplane_dropped(n0, "unconfirmed_id").await == dropped
                && backplane_dropped(n1, "unconfirmed_id").await == dropped
        })
        .await;
        // Nobody got the replay, and chat goes on for every member, across both nodes.
        expect_silence_all(&mut [&mut a, &mut a2, &mut b], QUIET).await;
        let text = format!("after {forged}");
        exchange(&mut a, "vault", &text, &mut [&mut a2, &mut b]).await;
        exchange(&mut b, "vault", &text, &mut [&mut a, &mut a2]).await;
    }
}
