//! What a join costs a node, by the size of the room: it must not grow with the room.
//!
//! Two measurements per room size (1,000 and 20,000 members, most of them on other nodes):
//! - `remote_join_and_leave`: another node's member joins and leaves, as this node hears it
//!   (one name opened, the roster updated twice, the room listed for its next report);
//! - `local_join_and_leave`: a member of this node joins (the roster updated, the first page
//!   of names for its `joined` built) and leaves;
//! - `report`: one coalesced presence report to the room's local members.
//!
//! Run with `cargo bench -p chat-server --bench big_rooms`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use chat_server::broker::Inbound;
use chat_server::envelope::Keyring;
use chat_server::metrics::Metrics;
use chat_server::presence::name_aad;
use chat_server::relay;
use chat_server::rooms::{Member, Outbox, Rooms};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;

const CHANNEL: &str = "chat:room:big";
/// Members of this node in the room, receiving reports.
const LOCAL_MEMBERS: u64 = 100;

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(&[[7; 32]]).expect("valid key"))
}

fn member(id: u64) -> (Member, chat_server::rooms::Inbox) {
    let (outbox, queue) = Outbox::new(1024);
    let member = Member {
        outbox,
        after: None,
        sealed_name: Bytes::new(),
        key: format!("here|{id}").into(),
        name: format!("local-{id:06}").into(),
        seen_changes: 0,
    };
    (member, queue)
}

/// A room of `size` members: `LOCAL_MEMBERS` here, the rest loaded as on other nodes.
fn room_of(size: u64) -> (Rooms, Vec<chat_server::rooms::Inbox>) {
    let (recovery, _requests) = tokio::sync::mpsc::unbounded_channel();
    let rooms = Rooms::new(keyring(), Arc::new(Metrics::new()), recovery);
    let mut queues = Vec::new();
    let mut generation = None;
    for id in 0..LOCAL_MEMBERS {
        let (joining, queue) = member(id);
        rooms.add(CHANNEL, "big", id, joining, |g| {
            generation = Some(g);
            futures::future::ready(Ok(None)).boxed().shared()
        });
        queues.push(queue);
    }
    let generation = generation.expect("the first member made the room");
    rooms.positioned(CHANNEL, generation, None);
    let snapshot = (LOCAL_MEMBERS..size)
        .map(|i| (format!("far|{i}"), format!("guest-{i:06}")))
        .collect();
    rooms.roster_loaded(CHANNEL, generation, 0, snapshot);
    rooms.report_presence(1_000);
    (rooms, queues)
}

fn join_cost(c: &mut Criterion) {
    let ring = keyring();
    let sealed = ring.seal(&name_aad(CHANNEL), b"newcomer");
    let mut group = c.benchmark_group("join");
    for size in [1_000u64, 20_000] {
        let (rooms, mut queues) = room_of(size);
        group.bench_function(format!("remote_join_and_leave_in_{size}"), |b| {
            b.iter(|| {
                rooms.deliver(CHANNEL.as_bytes(), relay::join_payload("far|new", &sealed));
                rooms.deliver(CHANNEL.as_bytes(), relay::leave_payload("far|new"));
            })
        });
        let mut next = LOCAL_MEMBERS;
        group.bench_function(format!("local_join_and_leave_in_{size}"), |b| {
            b.iter(|| {
                next += 1;
                let (joining, _queue) = member(next);
                rooms.add(CHANNEL, "big", next, joining, |_| {
                    unreachable!("the room exists")
                });
                black_box(rooms.members_page(CHANNEL, None, 100));
                rooms.remove(CHANNEL, next, || unreachable!("members remain"));
            })
        });
        group.bench_function(
            format!("report_to_{LOCAL_MEMBERS}_members_in_{size}"),
            |b| {
                b.iter(|| {
                    rooms.deliver(CHANNEL.as_bytes(), relay::join_payload("far|new", &sealed));
                    rooms.report_presence(1_000);
                    for queue in &mut queues {
                        black_box(queue.try_recv());
                    }
                    rooms.deliver(CHANNEL.as_bytes(), relay::leave_payload("far|new"));
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, join_cost);
criterion_main!(benches);
