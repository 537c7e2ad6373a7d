//! Publishes queued together go to Redis as one script call, and still each has its own
//! outcome: the broker against a real Redis, driven directly so that a batch is certain.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_server::broker::redis::{RedisOptions, RedisTiming};
use chat_server::broker::{Broker, BrokerError, HistoryLimits, Inbound, RedisBroker};
use chat_server::config::RedisTarget;
use chat_server::keyspace::Keyspace;
use chat_server::metrics::Metrics;
use support::{RedisServer, STEP, wait_until};

/// Payloads are not looked at here.
struct Ignore;

impl Inbound for Ignore {
    fn deliver(&self, _: &[u8], _: Vec<u8>) {}
    fn reconnected(&self) {}
}

async fn evalsha_calls(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.connection().await)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// A broker on `url`, ready.
async fn broker(url: &str) -> RedisBroker {
    let options = RedisOptions {
        timing: RedisTiming::default(),
        history: HistoryLimits {
            size: 100,
            max_age: Duration::from_secs(3600),
        },
        keyspace: Keyspace::new("chat", false),
        node_id: "batches".to_owned(),
    };
    let target = RedisTarget::Single(url.to_owned());
    let broker = RedisBroker::start(&target, options, Arc::new(Ignore), Arc::new(Metrics::new()))
        .expect("a valid URL");
    wait_until("the broker is ready", STEP, async || broker.is_ready()).await;
    broker
}

async fn stored(redis: &RedisServer, channel: &str) -> usize {
    redis::cmd("XLEN")
        .arg(format!("{channel}:history"))
        .query_async(&mut redis.connection().await)
        .await
        .expect("XLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_publishes_is_one_call_and_a_refused_message_fails_alone() {
    let redis = RedisServer::start().await;
    // Not a stream: every append to this room's history is refused.
    let _: () = redis::cmd("SET")
        .arg("chat:room:broken:history")
        .arg("not a stream")
        .query_async(&mut redis.connection().await)
        .await
        .expect("SET");
    let broker = broker(&redis.url()).await;
    // One message first, so that the room's epoch is known and the batch needs no read.
    let first = broker
        .publish("chat:room:a", Bytes::from_static(b"first"), 1)
        .await
        .expect("published");
    let before = evalsha_calls(&redis).await;

    // Queued without waiting in between: they reach the queue before it is sent.
    let rooms = ["chat:room:a", "chat:room:broken", "chat:room:b"];
    let published: Vec<_> = (0..30)
        .map(|n| broker.publish(rooms[n % 3], Bytes::from(format!("m{n}")), 2))
        .collect();
    let outcomes = futures::future::join_all(published).await;

    let mut seq_a = first.seq;
    for (n, outcome) in outcomes.into_iter().enumerate() {
        match (rooms[n % 3], outcome) {
            ("chat:room:broken", Err(BrokerError::Refused(_))) => {}
            ("chat:room:a", Ok(id)) => {
                assert_eq!((id.epoch, id.seq), (first.epoch, seq_a + 1), "message {n}");
                seq_a = id.seq;
            }
            ("chat:room:b", Ok(_)) => {}
            (room, outcome) => panic!("message {n} to {room}: {outcome:?}"),
        }
    }
    let calls = evalsha_calls(&redis).await - before;
    assert!(calls <= 3, "30 publishes took {calls} script calls");
    assert_eq!(stored(&redis, "chat:room:a").await, 11);
}

/// A message Redis appends but refuses to publish (an ACL) is not left in history, where a
/// later join would show a message its sender was told failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redis_refuses_to_publish_is_taken_out_of_history() {
    let redis = RedisServer::start().await;
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "node",
            "on",
            ">secret",
            "~*",
            "allchannels",
            "+@all",
            "-publish",
            "(+publish &chat:room:open)",
        ])
        .query_async(&mut redis.connection().await)
        .await
        .expect("ACL SETUSER");
    let broker = broker(&format!("redis://node:secret@127.0.0.1:{}/", redis.port())).await;
    let published: Vec<_> = ["chat:room:open", "chat:room:readonly", "chat:room:open"]
        .into_iter()
        .map(|channel| broker.publish(channel, Bytes::from_static(b"m"), 1))
        .collect();
    let outcomes = futures::future::join_all(published).await;
    assert!(
        matches!(&outcomes[..], [Ok(_), Err(BrokerError::Refused(_)), Ok(_)]),
        "{outcomes:?}"
    );
    assert_eq!(stored(&redis, "chat:room:open").await, 2);
    assert_eq!(stored(&redis, "chat:room:readonly").await, 0);
}

/// Redis that forgot its scripts (flushed, restarted from a snapshot, a failover) refuses the
/// calls with NOSCRIPT; they are sent again once the scripts are loaded, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_refused_for_a_lost_script_are_sent_again() {
    let redis = RedisServer::start().await;
    let broker = broker(&redis.url()).await;
    broker
        .publish("chat:room:a", Bytes::from_static(b"first"), 1)
        .await
        .expect("published");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis.connection().await)
        .await
        .expect("SCRIPT FLUSH");
    let published: Vec<_> = (0..10)
        .map(|n| broker.publish("chat:room:a", Bytes::from(format!("m{n}")), 2))
        .collect();
    let outcomes = futures::future::join_all(published).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(stored(&redis, "chat:room:a").await, 11);
}
