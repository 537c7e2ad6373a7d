//! Several nodes on one real Redis: fan-out across nodes, room isolation, sealed payloads,
//! refusal of foreign payloads, key rotation, configuration and server-stamped identity.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chat_protocol::ServerFrame;
use support::{
    Client, KEY_A, Node, QUIET, RedisServer, TempDir, cluster, exchange, expect_silence_all, key,
    member, now_secs, redis_node_args, wait_until,
};

const KEY_B: u8 = 0xB2;

async fn decrypt_failures(node: &Node) -> f64 {
    node.metric("chat_decrypt_failures_total").await
}

/// Waits until every node's decrypt-failure counter is above its value in `before`.
async fn wait_for_more_decrypt_failures(nodes: &[&Node], before: &[f64]) {
    for (node, before) in nodes.iter().zip(before) {
        wait_until(
            "chat_decrypt_failures_total increases",
            Duration::from_secs(3),
            async || decrypt_failures(node).await > *before,
        )
        .await;
    }
}

async fn assert_healthy(node: &Node) {
    assert_eq!(node.status_of("/healthz").await, 200, "healthz");
    assert_eq!(node.status_of("/readyz").await, 200, "readyz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_member_on_every_node_exactly_once() {
    let cluster = cluster(3).await;
    let room = "lobby";
    let mut clients = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        for j in 0..2 {
            clients.push(member(node, &format!("node-{i}"), &format!("user-{i}-{j}"), room).await);
        }
    }

    // Every client sends three messages before anyone reads.
    let mut sent = Vec::new(); // (sender index, ref, text)
    for (i, client) in clients.iter_mut().enumerate() {
        for k in 0..3 {
            let text = format!("message {k} from client {i}");
            let reference = client.send_chat(room, &text).await;
            sent.push((i, reference, text));
        }
    }
    let names: Vec<String> = clients.iter().map(|c| c.name().to_owned()).collect();
    let sender_of: HashMap<&str, &str> = sent
        .iter()
        .map(|(i, _, text)| (text.as_str(), names[*i].as_str()))
        .collect();

    let mut id_of_text: HashMap<String, String> = HashMap::new();
    for client in &mut clients {
        let chats = client.messages(sent.len()).await;
        let mut texts_seen = HashMap::new();
        for chat in &chats {
            assert_eq!(chat.room, room, "{chat:?}");
            let from = sender_of
                .get(chat.text.as_str())
                .unwrap_or_else(|| panic!("{} got an unknown message {chat:?}", client.name()));
            assert_eq!(chat.from, *from, "{chat:?}");
            *texts_seen.entry(chat.text.clone()).or_insert(0) += 1;
            let id = id_of_text
                .entry(chat.text.clone())
                .or_insert_with(|| chat.id.clone());
            assert_eq!(*id, chat.id, "one message, one id on every member");
        }
        assert!(
            texts_seen.values().all(|&n| n == 1),
            "{} got duplicates: {texts_seen:?}",
            client.name()
        );
    }
    let distinct_ids: std::collections::HashSet<&String> = id_of_text.values().collect();
    assert_eq!(distinct_ids.len(), sent.len(), "message ids are unique");

    for (i, reference, text) in &sent {
        let acked = clients[*i].ack(reference).await;
        assert_eq!(acked, id_of_text[text], "ack id of {text:?}");
    }
    let mut all: Vec<&mut Client> = clients.iter_mut().collect();
    expect_silence_all(&mut all, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut red0 = member(n0, "node-0", "red-0", "red").await;
    let mut red1 = member(n1, "node-1", "red-1", "red").await;
    let mut blue0 = member(n0, "node-0", "blue-0", "blue").await;
    let mut blue1 = member(n1, "node-1", "blue-1", "blue").await;

    exchange(&mut red0, "red", "only for red", &mut [&mut red1]).await;
    expect_silence_all(&mut [&mut blue0, &mut blue1], QUIET).await;

    exchange(&mut blue1, "blue", "only for blue", &mut [&mut blue0]).await;
    expect_silence_all(&mut [&mut red0, &mut red1], QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_carries_only_sealed_payloads() {
    let cluster = cluster(2).await;
    let mut raw = cluster.redis.psubscribe("chat:*").await;
    let text_marker = "TEXT-MARKER-5d1e9c7a";
    let name_marker = "NAME-MARKER-8b2f";
    let mut sender = member(&cluster.nodes[0], "node-0", name_marker, "vault").await;
    let mut receiver = member(&cluster.nodes[1], "node-1", "receiver", "vault").await;

    exchange(
        &mut sender,
        "vault",
        &format!("the secret is {text_marker}"),
        &mut [&mut receiver],
    )
    .await;

    let seen = raw.collect_for(Duration::from_millis(500)).await;
    assert!(
        seen.iter().any(|(channel, _)| channel == "chat:room:vault"),
        "no traffic on chat:room:vault; channels seen: {:?}",
        seen.iter().map(|(c, _)| c).collect::<Vec<_>>()
    );
    for (channel, payload) in &seen {
        for marker in [text_marker, name_marker] {
            assert!(
                !payload
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes()),
                "{marker} in plaintext on {channel}: {:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_payloads_are_dropped() {
    let cluster = cluster(2).await;
    let nodes = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut a = member(nodes[0], "node-0", "a", "garden").await;
    let mut b = member(nodes[1], "node-1", "b", "garden").await;
    let before = [
        decrypt_failures(nodes[0]).await,
        decrypt_failures(nodes[1]).await,
    ];

    let forged_plaintext = ServerFrame::Message {
        room: "garden".into(),
        id: "forged".into(),
        from: "mallory".into(),
        text: "plaintext forgery".into(),
        ts: 1,
    }
    .to_json();
    let garbage: [&[u8]; 5] = [
        b"",
        b"x",
        &[0u8; 12],
        &[0x5a; 300],
        forged_plaintext.as_bytes(),
    ];
    for payload in garbage {
        let receivers = cluster.redis.publish("chat:room:garden", payload).await;
        assert!(
            receivers >= 2,
            "both nodes subscribe chat:room:garden ({receivers})"
        );
    }

    expect_silence_all(&mut [&mut a, &mut b], Duration::from_millis(500)).await;
    wait_for_more_decrypt_failures(&nodes, &before).await;
    for node in nodes {
        assert_healthy(node).await;
    }
    exchange(&mut a, "garden", "still talking", &mut [&mut b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sealed_with_another_key_are_dropped() {
    let cluster = cluster(2).await;
    let nodes = [&cluster.nodes[0], &cluster.nodes[1]];
    let other = Node::redis(&cluster.redis, "node-other-key", &[&key(KEY_B)]).await;
    let mut a = member(nodes[0], "node-0", "a", "mixed").await;
    let mut b = member(nodes[1], "node-1", "b", "mixed").await;
    let mut intruder = member(&other, "node-other-key", "intruder", "mixed").await;
    let before = [
        decrypt_failures(nodes[0]).await,
        decrypt_failures(nodes[1]).await,
    ];

    // The intruder's own node can open what it sealed, so the intruder gets ack and copy.
    intruder.say("mixed", "sealed with key B").await;

    expect_silence_all(&mut [&mut a, &mut b], Duration::from_millis(500)).await;
    wait_for_more_decrypt_failures(&nodes, &before).await;
    for node in nodes {
        assert_healthy(node).await;
    }
    exchange(&mut a, "mixed", "key A chat goes on", &mut [&mut b]).await;
    intruder.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_node_reads_old_key_and_seals_with_its_first_key() {
    let redis = RedisServer::start().await;
    let (old_key, new_key) = (key(KEY_A), key(KEY_B));
    let old = Node::redis(&redis, "node-old", &[&old_key]).await;
    let rotated = Node::redis(&redis, "node-rotated", &[&new_key, &old_key]).await;
    let mut on_old = member(&old, "node-old", "on-old", "rot").await;
    let mut on_rotated = member(&rotated, "node-rotated", "on-rotated", "rot").await;

    // Any key decrypts: the rotated node opens what the old node sealed with the old key.
    exchange(
        &mut on_old,
        "rot",
        "sealed with the old key",
        &mut [&mut on_rotated],
    )
    .await;

    // The first key encrypts: the old node cannot open what the rotated node sends.
    let before = decrypt_failures(&old).await;
    on_rotated.say("rot", "sealed with the new key").await;
    on_old.expect_silence(Duration::from_millis(500)).await;
    wait_for_more_decrypt_failures(&[&old], &[before]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_configured_only_through_the_environment_join_the_cluster() {
    let redis = RedisServer::start().await;
    let (key_a, key_b) = (key(KEY_A), key(KEY_B));
    let mut raw = redis.psubscribe("custom:*").await;
    let mut args = redis_node_args(&redis, "node-flags", &[&key_a]);
    args.extend(["--redis-prefix".to_owned(), "custom".to_owned()]);
    let by_flags = Node::spawn(&args, &[]).await;
    let keys = format!("{key_a},{key_b}");
    let by_env = Node::from_env(&[
        ("CHAT_LISTEN", "127.0.0.1:0"),
        ("CHAT_REDIS_URL", &redis.url()),
        ("CHAT_KEY", &keys),
        ("CHAT_NODE_ID", "node-env"),
        ("CHAT_REDIS_PREFIX", "custom"),
    ])
    .await;
    let key_dir = TempDir::new("keys");
    let key_file = key_dir.path().join("chat.keys");
    std::fs::write(&key_file, format!("# current key\n\n{key_a}\n")).expect("write key file");
    let by_key_file = Node::from_env(&[
        ("CHAT_LISTEN", "127.0.0.1:0"),
        ("CHAT_REDIS_URL", &redis.url()),
        ("CHAT_KEY_FILE", key_file.to_str().expect("utf-8 temp path")),
        ("CHAT_NODE_ID", "node-key-file"),
        ("CHAT_REDIS_PREFIX", "custom"),
    ])
    .await;
    for node in [&by_flags, &by_env, &by_key_file] {
        node.wait_ready().await;
    }
    let mut flagged = member(&by_flags, "node-flags", "flagged", "env").await;
    let mut envied = member(&by_env, "node-env", "envied", "env").await;
    let mut filed = member(&by_key_file, "node-key-file", "filed", "env").await;

    exchange(
        &mut flagged,
        "env",
        "to the env nodes",
        &mut [&mut envied, &mut filed],
    )
    .await;
    exchange(
        &mut envied,
        "env",
        "from the env node",
        &mut [&mut flagged, &mut filed],
    )
    .await;
    exchange(
        &mut filed,
        "env",
        "from the key file",
        &mut [&mut flagged, &mut envied],
    )
    .await;
    let seen = raw.collect_for(Duration::from_millis(300)).await;
    assert!(
        seen.iter().any(|(channel, _)| channel == "custom:room:env"),
        "no traffic on custom:room:env; channels seen: {:?}",
        seen.iter().map(|(c, _)| c).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_usable_key_refuses_to_start() {
    let redis = RedisServer::start().await;
    let (status, stderr) = Node::run_to_exit(
        &redis_node_args(&redis, "node-keyless", &[]),
        &[],
        Duration::from_secs(5),
    )
    .await;
    assert!(!status.success(), "started without a key: {status}");
    assert!(
        stderr.contains("openssl rand -base64 32"),
        "the error should say how to make a key; stderr:\n{stderr}"
    );

    let short_key = "c2l4dGVlbiBieXRlcyBrZXk="; // base64 of 16 bytes
    for bad_key in [short_key, "not base64 at all!"] {
        let (status, stderr) = Node::run_to_exit(
            &redis_node_args(&redis, "node-bad-key", &[bad_key]),
            &[],
            Duration::from_secs(5),
        )
        .await;
        assert!(
            !status.success(),
            "started with key {bad_key:?}: {status}; stderr:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_identity_is_stamped_by_the_server() {
    let cluster = cluster(2).await;
    let mut alice = member(&cluster.nodes[0], "node-0", "alice", "stamp").await;
    let mut bob = member(&cluster.nodes[1], "node-1", "bob", "stamp").await;

    alice
        .send_raw_text(
            r#"{"type":"send","room":"stamp","text":"trust me","ref":"forge","from":"mallory","id":"x","ts":1}"#,
        )
        .await;
    let id = alice.ack("forge").await;
    assert_ne!(id, "x", "the id is the server's");
    let not_before = now_secs() - 60;
    for client in [&mut alice, &mut bob] {
        let chat = client.message_with_id(&id).await;
        assert_eq!(chat.from, "alice", "{chat:?}");
        assert_eq!(chat.text, "trust me", "{chat:?}");
        assert!(chat.ts >= not_before, "ts is the server's clock: {chat:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_cluster_traffic() {
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut a = member(n0, "node-0", "a", "count").await;
    let mut b = member(n1, "node-1", "b", "count").await;

    exchange(&mut a, "count", "counted", &mut [&mut b]).await;

    for node in [n0, n1] {
        let metrics = node.metrics().await;
        let value = |series: &str| {
            metrics
                .value(series)
                .unwrap_or_else(|| panic!("no {series} in:\n{}", metrics.0))
        };
        assert_eq!(value("chat_broker_ready"), 1.0);
        assert_eq!(value("chat_connections"), 1.0);
        assert_eq!(value("chat_rooms"), 1.0);
        assert!(value("chat_messages_out_total") >= 1.0);
    }
    let sender = n0.metrics().await;
    assert!(
        sender.value("chat_messages_in_total").unwrap_or(0.0) >= 1.0,
        "{}",
        sender.0
    );
    assert!(
        sender
            .value("chat_publish_duration_seconds_count")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        sender.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_the_redis_password_never_appear_in_logs_or_help() {
    let redis = RedisServer::start().await;
    let password = "pw-7f3e9c1d";
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut redis.connection().await)
        .await
        .expect("CONFIG SET requirepass");
    let key_a = key(KEY_A);
    let url = format!("redis://:{password}@127.0.0.1:{}/", redis.port());
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        url.as_str(),
        "--node-id",
        "quiet",
        "--key",
        key_a.as_str(),
    ];
    let node = Node::spawn(&args, &[("RUST_LOG", "trace")]).await;
    wait_until("the node is ready", Duration::from_secs(5), async || {
        node.status_of("/readyz").await == 200
    })
    .await;
    let mut a = member(&node, "quiet", "a", "hush").await;
    let mut b = member(&node, "quiet", "b", "hush").await;
    exchange(&mut a, "hush", "nothing to see", &mut [&mut b]).await;

    let log = node.log_text();
    assert!(
        log.contains("connected to Redis"),
        "the log is being written"
    );
    assert!(!log.contains(&key_a), "the key appears in the log");
    assert!(
        !log.contains(password),
        "the Redis password appears in the log"
    );

    let (status, help) = Node::run_to_exit(
        &["--help"],
        &[
            ("CHAT_KEY", key_a.as_str()),
            ("CHAT_REDIS_URL", url.as_str()),
        ],
        Duration::from_secs(5),
    )
    .await;
    assert!(status.success());
    assert!(help.contains("--key"), "{help}");
    assert!(!help.contains(&key_a), "the key appears in --help");
    assert!(
        !help.contains(password),
        "the Redis password appears in --help"
    );
}
