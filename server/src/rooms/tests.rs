//! Unit tests of room membership, fan-out and ordering, with a real keyring and no broker:
//! the tests play the broker's part (deliveries, positions, resync answers) by hand.

use super::*;
use crate::broker::Inbound;
use crate::presence::name_aad;
use crate::relay::Relayed;
use futures::FutureExt;

const CHANNEL: &str = "chat:room:c";

struct Fixture {
    rooms: Rooms,
    keyring: Arc<Keyring>,
    metrics: Arc<Metrics>,
    recovery: mpsc::UnboundedReceiver<Recovery>,
}

fn fixture() -> Fixture {
    fixture_with(|rooms| rooms)
}

fn fixture_with(configure: impl FnOnce(Rooms) -> Rooms) -> Fixture {
    let keyring = Arc::new(Keyring::new(&[[9; 32]]).unwrap());
    let metrics = Arc::new(Metrics::new());
    let (sender, recovery) = mpsc::unbounded_channel();
    Fixture {
        rooms: configure(Rooms::new(keyring.clone(), metrics.clone(), sender)),
        keyring,
        metrics,
        recovery,
    }
}

fn id(seq: u64) -> MessageId {
    MessageId { epoch: 7, seq }
}

fn member(id: MemberId, outbox: Outbox, after: Option<MessageId>) -> Member {
    Member {
        outbox,
        after,
        sealed_name: Bytes::new(),
        key: format!("here|{id}").into(),
        name: format!("m{id}").into(),
        seen_changes: 0,
    }
}

fn never_ready() -> Ready {
    futures::future::pending().boxed().shared()
}

impl Fixture {
    /// Adds a member; returns the room's generation when it is new (and still positioning).
    fn add(&self, member_id: MemberId, outbox: Outbox, after: Option<MessageId>) -> Option<u64> {
        let mut generation = None;
        let joining = member(member_id, outbox, after);
        self.rooms.add(CHANNEL, "c", member_id, joining, |g| {
            generation = Some(g);
            never_ready()
        });
        generation
    }

    /// Adds a member; a new room is positioned at `last` right away. Returns the
    /// member's queue and the room's generation.
    fn join(
        &self,
        member_id: MemberId,
        after: Option<MessageId>,
        last: Option<MessageId>,
    ) -> (Inbox, u64) {
        let (outbox, queue) = Outbox::new(64);
        if let Some(generation) = self.add(member_id, outbox, after) {
            self.rooms.positioned(CHANNEL, generation, last);
            self.rooms.roster_loaded(CHANNEL, generation, 0, Vec::new());
        }
        let generation = self.rooms.rooms.get(CHANNEL).unwrap().generation;
        (queue, generation)
    }

    fn message(&self, seq: u64) -> Vec<u8> {
        let body = relay::message_body("c", "a", &format!("m{seq}"), 1);
        let sealed = self.keyring.seal(CHANNEL.as_bytes(), body.as_bytes());
        relay::message_payload(id(seq), &sealed)
    }

    fn deliver(&self, seq: u64) {
        self.rooms.deliver(CHANNEL.as_bytes(), self.message(seq));
    }

    /// The resync the rooms asked for last; panics if there is none.
    fn resync(&mut self) -> Resync {
        match self.recovery.try_recv() {
            Ok(Recovery::Room(resync)) => resync,
            other => panic!("expected a resync, got {other:?}"),
        }
    }

    fn frame(&self, seq: u64) -> (MessageId, TextFrame) {
        let payload = self.message(seq);
        let Some(Relayed::Message { offset, .. }) = relay::parse(&payload) else {
            unreachable!()
        };
        let frame = self
            .rooms
            .open_message(CHANNEL, id(seq), payload[offset..].to_vec())
            .unwrap();
        (id(seq), frame)
    }
}

/// The sequence numbers of the message frames waiting in `queue`.
fn received(queue: &mut Inbox) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(frame) = queue.try_recv() {
        let frame: chat_protocol::ServerFrame<'_> = serde_json::from_str(frame.as_str()).unwrap();
        if let chat_protocol::ServerFrame::Message { id, .. } = frame {
            seqs.push(id.parse::<MessageId>().unwrap().seq);
        }
    }
    seqs
}

#[test]
fn prepares_on_first_member_and_unsubscribes_after_last() {
    let f = fixture();
    let prepared = std::cell::Cell::new(0);
    let unsubscribes = std::cell::Cell::new(0);
    for member_id in [1, 2] {
        let (outbox, _queue) = Outbox::new(4);
        let position = f.rooms.add(
            CHANNEL,
            "c",
            member_id,
            member(member_id, outbox, None),
            |_| {
                prepared.set(prepared.get() + 1);
                never_ready()
            },
        );
        assert!(matches!(position, Position::Pending(_)));
    }
    assert_eq!(prepared.get(), 1);
    assert_eq!(f.metrics.rooms.get(), 1);
    f.rooms
        .remove(CHANNEL, 1, || unsubscribes.set(unsubscribes.get() + 1));
    assert_eq!(unsubscribes.get(), 0);
    f.rooms
        .remove(CHANNEL, 2, || unsubscribes.set(unsubscribes.get() + 1));
    assert_eq!(unsubscribes.get(), 1);
    assert_eq!(f.metrics.rooms.get(), 0);
}

#[test]
fn fans_out_one_shared_frame_and_flags_slow_consumers() {
    let f = fixture();
    let (mut fast, _) = f.join(1, None, Some(id(0)));
    let (slow, slow_queue) = Outbox::new(1);
    let position = f
        .rooms
        .add(CHANNEL, "c", 2, member(2, slow, None), |_| never_ready());
    assert!(matches!(position, Position::After(Some(last)) if last == id(0)));
    f.deliver(1);
    f.deliver(2);
    assert_eq!(received(&mut fast), vec![1, 2]);
    assert!(slow_queue.has_overflowed());
    assert_eq!(f.metrics.messages_out.get(), 3);
    drop(slow_queue);
}

#[test]
fn holds_messages_until_positioned_then_delivers_only_newer_ones() {
    let f = fixture();
    let (outbox, mut queue) = Outbox::new(64);
    let generation = f.add(1, outbox, None).unwrap();
    f.deliver(4);
    f.deliver(5);
    assert!(received(&mut queue).is_empty());
    // History ended at 4 when the room looked: 4 belongs to the joiner's history.
    f.rooms.positioned(CHANNEL, generation, Some(id(4)));
    assert_eq!(received(&mut queue), vec![5]);
    f.deliver(6);
    assert_eq!(received(&mut queue), vec![6]);
}

#[test]
fn drops_duplicates_and_fills_gaps_from_history_in_order() {
    let mut f = fixture();
    let (mut queue, generation) = f.join(1, None, Some(id(0)));
    f.deliver(1);
    f.deliver(1);
    f.deliver(4);
    f.deliver(5);
    assert_eq!(received(&mut queue), vec![1]);
    assert_eq!(f.metrics.backplane_gaps.get(), 1);
    let resync = f.resync();
    assert_eq!(
        resync,
        Resync {
            channel: CHANNEL.into(),
            generation,
            after: Some(id(1)),
            missed: true,
        }
    );
    assert!(f.rooms.wants(&resync));
    let found = (2..=4).map(|seq| f.frame(seq)).collect();
    f.rooms.recovered(&resync, found, None);
    assert!(!f.rooms.wants(&resync));
    assert_eq!(received(&mut queue), vec![2, 3, 4, 5]);
    f.deliver(6);
    assert_eq!(received(&mut queue), vec![6]);
}

#[test]
fn a_reconnect_resyncs_every_live_room_reloads_its_roster_and_announces_members_again() {
    let mut f = fixture();
    let (mut queue, generation) = f.join(1, None, Some(id(3)));
    f.rooms.reconnected();
    assert!(matches!(f.recovery.try_recv(), Ok(Recovery::Room(r)) if r.after == Some(id(3))));
    let reload = Recovery::Roster {
        channel: CHANNEL.to_owned(),
        generation,
        load: 1,
    };
    assert_eq!(f.recovery.try_recv(), Ok(reload));
    assert_eq!(f.recovery.try_recv(), Ok(Recovery::Presence));
    f.deliver(5);
    assert!(received(&mut queue).is_empty());
}

#[test]
fn a_member_does_not_get_what_it_had_before_joining() {
    let f = fixture();
    let (mut early, _) = f.join(1, None, Some(id(2)));
    let (mut late, _) = f.join(2, Some(id(4)), None);
    for seq in 3..=5 {
        f.deliver(seq);
    }
    assert_eq!(received(&mut early), vec![3, 4, 5]);
    assert_eq!(received(&mut late), vec![5]);
}

#[test]
fn drops_what_does_not_open() {
    let f = fixture();
    let (queue, _) = f.join(1, None, None);
    let channel = CHANNEL.as_bytes();
    f.rooms.deliver(channel, b"garbage".to_vec());
    let body = relay::message_body("c", "a", "t", 1);
    let moved = f.keyring.seal(b"chat:room:other", body.as_bytes());
    f.rooms
        .deliver(channel, relay::message_payload(id(0), &moved));
    let foreign = Keyring::new(&[[1; 32]])
        .unwrap()
        .seal(channel, body.as_bytes());
    f.rooms
        .deliver(channel, relay::message_payload(id(0), &foreign));
    let name_as_body = f.keyring.seal(&name_aad(CHANNEL), b"Ada");
    f.rooms
        .deliver(channel, relay::message_payload(id(0), &name_as_body));
    let body_as_name = f.keyring.seal(channel, b"Ada");
    f.rooms
        .deliver(channel, relay::join_payload("x|1", &body_as_name));
    assert!(queue.try_recv().is_none());
    assert_eq!(f.metrics.decrypt_failures.get(), 5);
}

impl Fixture {
    /// Announces that `member` joined under `name`, as another node would.
    fn remote_join(&self, member: &str, name: &str) {
        let sealed = self.keyring.seal(&name_aad(CHANNEL), name.as_bytes());
        let payload = relay::join_payload(member, &sealed);
        self.rooms.deliver(CHANNEL.as_bytes(), payload);
    }

    fn remote_leave(&self, member: &str) {
        let payload = relay::leave_payload(member);
        self.rooms.deliver(CHANNEL.as_bytes(), payload);
    }
}

fn frames(queue: &mut Inbox) -> Vec<String> {
    std::iter::from_fn(|| queue.try_recv())
        .map(|frame| frame.as_str().to_owned())
        .collect()
}

#[test]
fn presence_events_are_coalesced_into_one_report_per_room() {
    let f = fixture();
    let (mut queue, _) = f.join(1, None, None);
    for i in 0..50 {
        f.remote_join(&format!("far|{i}"), &format!("u{i:02}"));
    }
    for i in 10..50 {
        f.remote_leave(&format!("far|{i}"));
    }
    // A second connection of the same person changes nothing people see.
    f.remote_join("far|99", "u00");
    assert!(
        queue.try_recv().is_none(),
        "nothing is sent before the report"
    );
    assert_eq!(f.rooms.report_presence(1000), 1);
    let joins: Vec<String> = [r#""m1""#.to_owned()]
        .into_iter()
        .chain((0..10).map(|i| format!(r#""u{i:02}""#)))
        .collect();
    // Those who came and went are said to be gone: a member may have seen them meanwhile.
    let leaves: Vec<String> = (10..50).map(|i| format!(r#""u{i:02}""#)).collect();
    assert_eq!(
        frames(&mut queue),
        [format!(
            r#"{{"type":"presence","room":"c","count":11,"joins":[{}],"leaves":[{}]}}"#,
            joins.join(","),
            leaves.join(",")
        )]
    );
    assert_eq!(f.rooms.report_presence(1000), 0, "nothing changed since");
    f.remote_leave("far|0");
    f.remote_leave("far|99");
    f.remote_leave("far|1");
    f.remote_leave("never|1");
    assert_eq!(f.rooms.report_presence(1000), 1);
    assert_eq!(
        frames(&mut queue),
        [r#"{"type":"presence","room":"c","count":9,"joins":[],"leaves":["u00","u01"]}"#]
    );
    // Above the names limit, only the count.
    f.remote_join("far|1", "u01");
    f.rooms.report_presence(5);
    assert_eq!(
        frames(&mut queue),
        [r#"{"type":"presence","room":"c","count":10}"#]
    );
}

#[test]
fn presence_reports_take_at_most_half_a_queue_and_close_nobody() {
    let f = fixture();
    let (outbox, mut queue) = Outbox::new(8);
    let generation = f.add(1, outbox, None).unwrap();
    f.rooms.positioned(CHANNEL, generation, Some(id(0)));
    f.rooms.roster_loaded(CHANNEL, generation, 0, Vec::new());
    for i in 0..20 {
        f.remote_join(&format!("far|{i}"), "Ada");
        f.remote_leave(&format!("far|{i}"));
        f.remote_join(&format!("far|{i}"), &format!("u{i}"));
        f.rooms.report_presence(1000);
    }
    assert_eq!(f.metrics.presence_dropped.get(), 16);
    // Messages still have room, and nobody was flagged.
    f.deliver(1);
    assert!(!queue.has_overflowed());
    assert_eq!(frames(&mut queue).len(), 5);
}

#[test]
fn a_roster_loads_on_top_of_what_was_heard_meanwhile() {
    let f = fixture();
    let (outbox, mut queue) = Outbox::new(64);
    let generation = f.add(1, outbox, None).unwrap();
    f.remote_join("far|1", "Ada");
    f.remote_leave("far|2");
    let snapshot = vec![
        ("far|2".to_owned(), "Bob".to_owned()),
        ("far|3".to_owned(), "Cy".to_owned()),
    ];
    f.rooms.roster_loaded(CHANNEL, generation, 0, snapshot);
    let page = f.rooms.members_page(CHANNEL, None, 10).unwrap();
    assert_eq!(page.names, ["Ada", "Cy", "m1"]);
    f.rooms.report_presence(1000);
    assert_eq!(
        frames(&mut queue),
        [r#"{"type":"presence","room":"c","count":3,"joins":["Ada","Cy","m1"],"leaves":[]}"#]
    );
}

#[test]
fn an_id_history_does_not_hold_cannot_silence_the_room() {
    let forged_ids = [id(u64::MAX), MessageId::MAX, MessageId { epoch: 8, seq: 0 }];
    for forged in forged_ids {
        let mut f = fixture();
        let (mut queue, _) = f.join(1, None, Some(id(0)));
        // A genuine sealed body, replayed under an id no node assigned.
        let payload = f.message(1);
        let Some(Relayed::Message { offset, .. }) = relay::parse(&payload) else {
            unreachable!()
        };
        let replay = relay::message_payload(forged, &payload[offset..]);
        f.rooms.deliver(CHANNEL.as_bytes(), replay);
        assert!(received(&mut queue).is_empty(), "{forged}");
        let resync = f.resync();
        assert_eq!(resync.after, Some(id(0)));
        // History holds nothing after 0: the forged id is dropped, and history asked once
        // more in case what was dropped was genuine.
        f.rooms.recovered(&resync, Vec::new(), None);
        assert_eq!(f.rooms.drops().get(DropReason::Unconfirmed), 1);
        let again = f.resync();
        assert_eq!(again.after, Some(id(0)));
        f.rooms.recovered(&again, Vec::new(), None);
        assert!(f.recovery.try_recv().is_err(), "no third resync");
        f.deliver(1);
        f.deliver(2);
        assert_eq!(received(&mut queue), vec![1, 2], "{forged}");
    }
}

#[test]
fn the_first_message_of_a_new_epoch_is_confirmed_by_history() {
    let mut f = fixture();
    let (mut queue, _) = f.join(1, None, None);
    f.deliver(0);
    assert!(received(&mut queue).is_empty());
    let resync = f.resync();
    assert_eq!(resync.after, None);
    f.rooms.recovered(&resync, vec![f.frame(0)], None);
    f.deliver(1);
    assert_eq!(received(&mut queue), vec![0, 1]);
    assert_eq!(f.metrics.backplane_gaps.get(), 0);
}

#[test]
fn payloads_larger_than_any_envelope_are_dropped_unopened() {
    let f = fixture_with(|rooms| rooms.with_max_text_bytes(16));
    let (mut queue, _) = f.join(1, None, Some(id(0)));
    let bound = relay::max_payload_len(16);
    let mut oversize = f.message(1);
    oversize.resize(bound + 1, b'x');
    f.rooms.deliver(CHANNEL.as_bytes(), oversize);
    let long_name = vec![b'n'; relay::MAX_PRESENCE_PAYLOAD_LEN];
    let presence = relay::join_payload("x|1", &long_name);
    f.rooms.deliver(CHANNEL.as_bytes(), presence);
    assert_eq!(f.rooms.drops().get(DropReason::Oversize), 2);
    assert_eq!(f.metrics.decrypt_failures.get(), 0, "never opened");
    f.deliver(1);
    assert_eq!(received(&mut queue), vec![1]);
}

#[test]
fn held_messages_beyond_the_byte_budget_are_dropped_then_fetched_from_history() {
    let frame_bytes = fixture().frame(1).1.len();
    let budget = HeldBudget {
        messages: 100,
        bytes: 2 * frame_bytes + frame_bytes / 2,
    };
    let mut f = fixture_with(|rooms| rooms.with_held_budget(budget));
    let (mut queue, _) = f.join(1, None, Some(id(0)));
    for seq in 2..=5 {
        f.deliver(seq);
    }
    let resync = f.resync();
    f.rooms
        .recovered(&resync, vec![f.frame(1), f.frame(2)], None);
    // 2 and 3 were held; 4 and 5 did not fit.
    assert_eq!(received(&mut queue), vec![1, 2, 3]);
    assert_eq!(f.rooms.drops().get(DropReason::HeldBudget), 2);
    let again = f.resync();
    assert_eq!(again.after, Some(id(3)));
    f.rooms
        .recovered(&again, vec![f.frame(4), f.frame(5)], None);
    assert_eq!(received(&mut queue), vec![4, 5]);
}
