//! Unit tests of the in-memory broker: delivery, history ranges, presence, and the bounds on
//! how many rooms keep history.

use std::time::Duration;

use super::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Vec<u8>)>>);

impl Inbound for Recorder {
    fn deliver(&self, channel: &[u8], payload: Vec<u8>) {
        let channel = String::from_utf8(channel.to_vec()).unwrap();
        self.0.lock().unwrap().push((channel, payload));
    }

    fn reconnected(&self) {}
}

fn broker(size: usize) -> (MemoryBroker, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let limits = HistoryLimits {
        size,
        max_age: Duration::from_secs(60),
    };
    (MemoryBroker::new(recorder.clone(), limits), recorder)
}

async fn publish(broker: &MemoryBroker, channel: &str, body: &'static [u8]) -> MessageId {
    broker
        .publish(channel, Bytes::from_static(body), 1)
        .await
        .unwrap()
}

#[tokio::test]
async fn delivers_only_subscribed_channels_with_counting_ids() {
    let (broker, recorder) = broker(10);
    broker.subscribe("a").await.unwrap();
    let first = publish(&broker, "a", b"1").await;
    let other = publish(&broker, "b", b"2").await;
    broker.unsubscribe("a");
    let second = publish(&broker, "a", b"3").await;
    assert_eq!((first.seq, second.seq, other.seq), (0, 1, 0));
    assert_eq!(first.epoch, second.epoch);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![("a".to_owned(), relay::message_payload(first, b"1"))]
    );
}

#[tokio::test]
async fn keeps_the_newest_entries_and_reads_ranges() {
    let (broker, _) = broker(3);
    let mut ids = Vec::new();
    for body in [&b"1"[..], b"2", b"3", b"4", b"5"] {
        ids.push(
            broker
                .publish("a", Bytes::from_static(body), 1)
                .await
                .unwrap(),
        );
    }
    let seqs = |entries: Vec<HistoryEntry>| entries.iter().map(|e| e.id.seq).collect::<Vec<_>>();
    let newest = HistoryRange::Newest {
        through: None,
        limit: 10,
    };
    assert_eq!(
        seqs(broker.history("a", newest).await.unwrap()),
        vec![2, 3, 4]
    );
    let newest_through = HistoryRange::Newest {
        through: Some(ids[3]),
        limit: 1,
    };
    assert_eq!(
        seqs(broker.history("a", newest_through).await.unwrap()),
        vec![3]
    );
    let from = HistoryRange::From {
        from: ids[3],
        through: None,
        limit: 10,
    };
    let entries = broker.history("a", from).await.unwrap();
    assert_eq!(entries[0].sealed_body, b"4");
    assert_eq!(seqs(entries), vec![3, 4]);
}

#[tokio::test]
async fn announces_presence_to_subscribers() {
    let (broker, recorder) = broker(10);
    broker.subscribe("a").await.unwrap();
    Presence::add(&broker, "a", "n|1", Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    let entry = PresenceEntry {
        member: "n|1".into(),
        sealed_name: b"sealed".to_vec(),
    };
    assert_eq!(broker.members("a").await.unwrap(), vec![entry]);
    Presence::remove(&broker, "a", "n|1");
    Presence::remove(&broker, "a", "n|1");
    assert!(broker.members("a").await.unwrap().is_empty());
    let payloads: Vec<Vec<u8>> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(
        payloads,
        vec![
            relay::join_payload("n|1", b"sealed"),
            relay::leave_payload("n|1"),
        ]
    );
}

#[tokio::test]
async fn sweeps_idle_rooms_whose_history_is_too_old_without_touching_them() {
    let (broker, _) = broker(10);
    publish(&broker, "idle", b"1").await;
    publish(&broker, "occupied", b"2").await;
    Presence::add(&broker, "occupied", "n|1", Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    assert_eq!(broker.history_rooms(), 2);
    assert_eq!(broker.sweep(now_ms()), 0, "nothing is old yet");
    let later = now_ms() + 61_000;
    assert_eq!(broker.sweep(later), 1);
    assert_eq!(broker.history_rooms(), 1);
    assert_eq!(broker.history_rooms.get(), 1);
    assert!(!broker.channels.contains_key("idle"));
    // A room with members keeps its channel; its history expires when it is next read.
    assert_eq!(broker.members("occupied").await.unwrap().len(), 1);
}

#[tokio::test]
async fn fresh_room_names_cannot_grow_history_beyond_the_cap() {
    let (broker, _) = broker(10);
    let broker = broker.with_max_rooms(20);
    Presence::add(&broker, "busy", "n|1", Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    publish(&broker, "busy", b"kept").await;
    let mut most = 0;
    for n in 0..1_000 {
        let room = format!("fresh-{n}");
        broker
            .publish(&room, Bytes::from_static(b"x"), 1)
            .await
            .unwrap();
        most = most.max(broker.history_rooms());
        assert!(
            broker.channels.len() <= 21,
            "{} channels",
            broker.channels.len()
        );
    }
    assert!(
        most <= 21,
        "at most the cap plus the one being added: {most}"
    );
    assert_eq!(broker.history_rooms(), broker.history_rooms.get() as usize);
    // The room with a member is never evicted; the newest room is kept.
    let newest = HistoryRange::Newest {
        through: None,
        limit: 10,
    };
    assert_eq!(broker.history("busy", newest).await.unwrap().len(), 1);
    assert_eq!(broker.history("fresh-999", newest).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_sweeper_runs_on_a_timer_and_stops_with_the_broker() {
    let recorder = Arc::new(Recorder::default());
    let limits = HistoryLimits {
        size: 10,
        max_age: Duration::from_secs(1),
    };
    let broker = Arc::new(MemoryBroker::new(recorder, limits));
    assert_eq!(broker.sweep_interval(), Duration::from_secs(1));
    let sweeper = broker.spawn_sweeper();
    publish(&broker, "idle", b"1").await;
    assert_eq!(broker.history_rooms(), 1);
    // Older than 1 s by the second tick, and nothing touches the room meanwhile.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(broker.history_rooms(), 0);
    assert!(broker.channels.is_empty());
    assert!(!sweeper.is_finished());
    drop(broker);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(sweeper.is_finished());
}
