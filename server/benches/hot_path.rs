//! The per-message costs of the hot path, without sockets: sealing and serializing a message
//! on the sending node, and opening it and handing it to every local member on a receiving node.
//!
//! Run with `cargo bench -p chat-server --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;

use chat_server::broker::{Inbound, MemoryBroker};
use chat_server::envelope::Keyring;
use chat_server::hub::Hub;
use chat_server::metrics::Metrics;
use chat_server::rooms::{Outbox, Rooms};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;

const CHANNEL: &str = "chat:room:lobby";
/// A typical chat message frame (~170 bytes), as members receive it.
const FRAME: &str = r#"{"type":"message","room":"lobby","id":"0193f0c2a1b27d4e19a0000002a","from":"guest-0421","text":"1763860000000 the quick brown fox jumps over the lazy dog, 90 bytes of chat text here!","ts":1763860000000}"#;

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
    let rooms = Arc::new(Rooms::new(keyring(), metrics.clone()));
    let broker = Arc::new(MemoryBroker::new(rooms.clone()));
    let hub = Hub::new("bench".into(), "chat", rooms, broker, keyring(), metrics);
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    // Stamp, serialize once and seal; the room has no members, so nothing is delivered.
    group.bench_function("stamp_serialize_seal", |b| {
        b.iter(|| {
            hub.publish(
                CHANNEL,
                "lobby",
                "guest-0421",
                black_box("the quick brown fox"),
            )
            .accepted
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
        let rooms = Rooms::new(ring.clone(), Arc::new(Metrics::new()));
        let mut queues = Vec::with_capacity(members);
        for member in 0..members {
            let (outbox, queue) = Outbox::new(16);
            let subscribed = rooms.add(CHANNEL, member as u64, outbox, || {
                futures::future::ready(Ok(())).boxed()
            });
            assert!(subscribed.now_or_never().is_some());
            queues.push(queue);
        }
        // One message opened once and queued to every member, then taken off every queue as
        // the members' tasks would: the per-delivery cost of a receiving node.
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("open_and_queue_to_{members}_members"), |b| {
            b.iter_batched(
                || sealed.to_vec(),
                |payload| {
                    rooms.deliver(CHANNEL.as_bytes(), payload);
                    for queue in &mut queues {
                        black_box(queue.try_recv().ok());
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
