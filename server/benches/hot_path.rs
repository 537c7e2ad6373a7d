//! The per-message costs of the hot path, without sockets: sealing and serializing a message
//! on the sending node, and opening it and handing it to every local member on a receiving node.
//!
//! Run with `cargo bench -p chat-server --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use chat_protocol::MessageId;
use chat_server::broker::{HistoryLimits, Inbound, MemoryBroker};
use chat_server::envelope::Keyring;
use chat_server::hub::{Hub, HubParts};
use chat_server::keyspace::Keyspace;
use chat_server::metrics::Metrics;
use chat_server::relay;
use chat_server::rooms::{Member, Outbox, Rooms};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;

const CHANNEL: &str = "chat:room:lobby";
/// A typical chat message body (~150 bytes; members receive it with its type and id).
const FRAME: &str = r#"{"room":"lobby","from":"guest-0421","text":"1763860000000 the quick brown fox jumps over the lazy dog, 90 bytes of chat text here!","ts":1763860000000}"#;

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(&[[7; 32]]).expect("valid key"))
}

fn envelope(c: &mut Criterion) {
    let ring = keyring();
    let sealed = ring.seal(CHANNEL.as_bytes(), FRAME.as_bytes());
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal", |b| {
        b.iter(|| ring.seal(black_box(CHANNEL.as_bytes()), black_box(FRAME.as_bytes())))
    });
    group.bench_function("open", |b| {
        b.iter_batched(
            || sealed.to_vec(),
            |payload| ring.open(CHANNEL.as_bytes(), payload),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn publish(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let (recovery, _requests) = tokio::sync::mpsc::unbounded_channel();
    let rooms = Arc::new(Rooms::new(keyring(), metrics.clone(), recovery));
    let history = HistoryLimits {
        size: 100,
        max_age: Duration::from_secs(3600),
    };
    let broker = Arc::new(MemoryBroker::new(rooms.clone(), history));
    let hub = Hub::new(HubParts {
        node_id: "bench".into(),
        keyspace: Keyspace::new("chat", false),
        rooms,
        broker: broker.clone(),
        presence: broker,
        keyring: keyring(),
        metrics,
        history,
        presence_config: Default::default(),
    });
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    // Stamp, serialize once, seal and append to the in-memory history; the room has no
    // members, so nothing is delivered.
    group.bench_function("stamp_serialize_seal_store", |b| {
        b.iter(|| {
            hub.publish(
                CHANNEL,
                "lobby",
                "guest-0421",
                black_box("the quick brown fox"),
            )
            .now_or_never()
        })
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let ring = keyring();
    let sealed = ring.seal(CHANNEL.as_bytes(), FRAME.as_bytes());
    let mut group = c.benchmark_group("fan_out");
    for members in [100usize, 1_000, 10_000] {
        let (recovery, _requests) = tokio::sync::mpsc::unbounded_channel();
        let rooms = Rooms::new(ring.clone(), Arc::new(Metrics::new()), recovery);
        let mut queues = Vec::with_capacity(members);
        for member in 0..members {
            let (outbox, queue) = Outbox::new(16);
            let joining = Member {
                outbox,
                after: None,
                sealed_name: Bytes::new(),
                key: format!("bench|{member}").into(),
                name: format!("guest-{member}").into(),
                seen_changes: 0,
            };
            let mut new_room = None;
            rooms.add(CHANNEL, "lobby", member as u64, joining, |generation| {
                new_room = Some(generation);
                futures::future::ready(Ok(None)).boxed().shared()
            });
            if let Some(generation) = new_room {
                rooms.positioned(CHANNEL, generation, None);
            }
            queues.push(queue);
        }
        let mut seq = 0;
        // One message opened once and queued to every member, then taken off every queue as
        // the members' tasks would: the per-delivery cost of a receiving node.
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("open_and_queue_to_{members}_members"), |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    relay::message_payload(
                        MessageId {
                            epoch: 1,
                            seq: seq - 1,
                        },
                        &sealed,
                    )
                },
                |payload| {
                    rooms.deliver(CHANNEL.as_bytes(), payload);
                    for queue in &mut queues {
                        black_box(queue.try_recv());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, envelope, publish, fan_out);
criterion_main!(benches);
