//! The hub: what a session can do to the cluster (join, leave, publish), independent of which
//! broker runs.
//!
//! Publishing is the sending half of the hot path: the body of the `message` frame every
//! recipient will see is serialized exactly once, here, with the server's timestamp and the
//! sender's name, then sealed for the room's channel and handed to the broker, which assigns
//! the id while storing it in history. Receiving nodes only open it.
//!
//! Joining answers with a page of the room's members, from the node's roster of the room (read
//! from presence once per room, not once per join; see [`crate::presence`]), and its history.
//! The history is read up to the position where the joiner's live messages start (see [`Position`]), so the two meet without
//! a gap or a duplicate, and a client that says which message it saw last (`since`) gets
//! exactly what came after it, or learns that history no longer reaches back that far.
//!
//! Edits, deletions and typing signals are in [`changes`].

mod changes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chat_protocol::{EmbeddedFrame, MessageId};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::broker::{
    BrokerError, BrokerFuture, HistoryEntry, HistoryLimits, HistoryRange, SharedBroker,
};
use crate::envelope::Keyring;
use crate::ids::now_ms;
use crate::keyspace::Keyspace;
use crate::metrics::Metrics;
use crate::presence::{PresenceConfig, PresenceEntry, SharedPresence, name_aad};
use crate::relay;
use crate::rooms::roster::Loaded;
use crate::rooms::{
    Member, MemberId, MemberPage, Outbox, Position, Recovery, Resync, Rooms, Roster,
};

pub use changes::{ChangeDraft, ChangeError};

/// How long to wait before asking history again for a room's missed messages.
const RESYNC_RETRY: Duration = Duration::from_millis(250);

/// One per node, shared by its sessions, the HTTP API and the recovery task.
pub struct Hub {
    node_id: String,
    keyspace: Keyspace,
    rooms: Arc<Rooms>,
    broker: SharedBroker,
    presence: SharedPresence,
    keyring: Arc<Keyring>,
    metrics: Arc<Metrics>,
    history: HistoryLimits,
    presence_config: PresenceConfig,
    member_ids: AtomicU64,
}

/// What a `joined` reply carries.
pub struct Joined {
    /// The first page of the room's names, and how many there are.
    pub members: MemberPage,
    /// `message` frames, oldest first: with `since`, those after it (the newest ones when
    /// history no longer reaches back that far); without, the newest ones no older than
    /// `--history-max-age-secs`. Cut to the frame budget only when the reply is written.
    pub history: Vec<EmbeddedFrame>,
    /// Whether `history` holds everything after the join's `since`; `None` without `since`.
    pub recovered: Option<bool>,
}

/// What the hub is built from.
pub struct HubParts {
    /// This node's name; presence keys are `<node_id>|<member id>`, so it must not contain '|'.
    pub node_id: String,
    /// Where room channels are: `<prefix>:room:<room>`, with a hash tag on a Redis Cluster.
    pub keyspace: Keyspace,
    /// The node's local rooms, shared with the broker that delivers into them.
    pub rooms: Arc<Rooms>,
    /// The backplane messages are published to and read back from.
    pub broker: SharedBroker,
    /// Where members are announced, cluster-wide, under sealed names.
    pub presence: SharedPresence,
    /// Seals what the hub publishes: messages and member names.
    pub keyring: Arc<Keyring>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// How much history a joiner is given.
    pub history: HistoryLimits,
    /// Page sizes and how presence is reported.
    pub presence_config: PresenceConfig,
}

impl Hub {
    /// A hub over `parts`; it starts no task: run [`Hub::recover`] alongside it.
    pub fn new(parts: HubParts) -> Self {
        Hub {
            node_id: parts.node_id,
            keyspace: parts.keyspace,
            rooms: parts.rooms,
            broker: parts.broker,
            presence: parts.presence,
            keyring: parts.keyring,
            metrics: parts.metrics,
            history: parts.history,
            presence_config: parts.presence_config,
            member_ids: AtomicU64::new(1),
        }
    }

    /// This node's name, as clients see it in `welcome`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The node's counters, also served on `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the broker can take requests now; while it cannot, joins and API publishes are
    /// refused and the node reports itself not ready.
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready()
    }

    /// A fresh id for a connection's membership entries.
    pub fn next_member_id(&self) -> MemberId {
        self.member_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The backplane channel of a (validated) room name.
    pub fn channel(&self, room: &str) -> String {
        self.keyspace.channel(room)
    }

    /// The member's key in presence: unique in the cluster, and naming its node.
    fn presence_key(&self, member: MemberId) -> String {
        format!("{}|{member}", self.node_id)
    }

    /// Makes `member` a local member of `room`, announces it, and resolves to what its
    /// `joined` reply carries. Messages reach its outbox from then on; those up to `since`
    /// never do. Fails at once while the backplane is down, so that nobody is told they joined
    /// a room whose messages this node cannot hear.
    pub fn join(
        &self,
        room: &str,
        channel: &str,
        member: MemberId,
        name: &str,
        outbox: &Outbox,
        since: Option<MessageId>,
    ) -> Result<BrokerFuture<Joined>, BrokerError> {
        if !self.broker.is_ready() {
            return Err(BrokerError::Disconnected);
        }
        let sealed_name = self.keyring.seal(&name_aad(channel), name.as_bytes());
        let key = self.presence_key(member);
        let joining = Member {
            outbox: outbox.clone(),
            after: since,
            sealed_name: sealed_name.clone(),
            key: key.as_str().into(),
            name: name.into(),
            seen_changes: 0,
        };
        let position = self
            .rooms
            .add(channel, room, member, joining, |generation| {
                self.prepare_room(channel, generation)
            });
        let broker = self.broker.clone();
        let presence = self.presence.clone();
        let rooms = self.rooms.clone();
        let channel = channel.to_owned();
        let limits = self.history;
        let page_size = self.presence_config.page_size();
        Ok(async move {
            let through = match position {
                Position::After(last) => last,
                Position::Pending(ready) => ready.await?,
            };
            // Queued together, so they share one round trip.
            let added = presence.add(&channel, &key, sealed_name);
            let history = read_history(&*broker, &channel, since, through, limits);
            let (added, history) = futures::join!(added, history);
            added?;
            let (entries, recovered) = history?;
            let mut frames: Vec<(MessageId, String)> = rooms
                .open_history(&channel, entries)
                .into_iter()
                .map(|(id, frame)| (id, frame.as_str().to_owned()))
                .collect();
            changes::redact_deleted(&mut frames);
            let history = frames
                .into_iter()
                .filter_map(|(_, frame)| EmbeddedFrame::new(frame).ok())
                .collect();
            Ok(Joined {
                members: rooms
                    .members_page(&channel, None, page_size)
                    .unwrap_or_else(MemberPage::empty),
                history,
                recovered,
            })
        }
        .boxed())
    }

    /// A page of the names in a room this node has members in, after `after`, from the
    /// node's roster with no round trip, once the roster has loaded (a page asked for just
    /// after the room's first join waits for it). Empty without a local member.
    pub fn members_page(
        &self,
        channel: &str,
        after: Option<&str>,
    ) -> BoxFuture<'static, MemberPage> {
        let ready = self.rooms.ready(channel);
        let rooms = self.rooms.clone();
        let channel = channel.to_owned();
        let after = after.map(str::to_owned);
        let page_size = self.presence_config.page_size();
        async move {
            // A room that failed to prepare has no roster to wait for: its join failed.
            if let Some(ready) = ready {
                let _ = ready.await;
            }
            rooms
                .members_page(&channel, after.as_deref(), page_size)
                .unwrap_or_else(MemberPage::empty)
        }
        .boxed()
    }

    /// A page of the names in any room, after `after`: from the node's roster when it has
    /// members there, otherwise read from presence (for the HTTP API, whose node may have no
    /// member in the room; that read is as large as the room).
    pub fn members_page_anywhere(
        &self,
        channel: &str,
        after: Option<&str>,
    ) -> BrokerFuture<MemberPage> {
        if self.rooms.ready(channel).is_some() {
            return self.members_page(channel, after).map(Ok).boxed();
        }
        let members = self.presence.members(channel);
        let rooms = self.rooms.clone();
        let channel = channel.to_owned();
        let after = after.map(str::to_owned);
        let page_size = self.presence_config.page_size();
        async move {
            let roster = Roster::of(open_members(&rooms, &channel, members.await?));
            Ok(roster.page(after.as_deref(), page_size))
        }
        .boxed()
    }

    /// Subscribes a room that is new on this node, finds the newest message in its history
    /// (live delivery starts after it) and loads its roster.
    fn prepare_room(&self, channel: &str, generation: u64) -> crate::rooms::Ready {
        let subscribed = self.broker.subscribe(channel);
        let broker = self.broker.clone();
        let presence = self.presence.clone();
        let rooms = self.rooms.clone();
        let channel = channel.to_owned();
        async move {
            subscribed.await?;
            let newest = HistoryRange::Newest {
                through: None,
                limit: 1,
            };
            // Both after the subscription, so no event or message falls between.
            let newest = broker.history(&channel, newest);
            let roster = read_roster(&rooms, &*presence, &channel, generation, 0);
            let (newest, roster) = futures::join!(newest, roster);
            let last = newest?.last().map(|e| e.id);
            if let Loaded::Again(load) = roster? {
                rooms.request_roster(&channel, generation, load);
            }
            rooms.positioned(&channel, generation, last);
            Ok(last)
        }
        .boxed()
        .shared()
    }

    /// Loads a room's roster again (after a reconnect), until it is current or the room is
    /// gone.
    async fn reload_roster(&self, channel: String, generation: u64, mut load: u64) {
        while self.rooms.has_room(&channel, generation) {
            match read_roster(&self.rooms, &*self.presence, &channel, generation, load).await {
                Ok(Loaded::Again(next)) => load = next,
                Ok(Loaded::Applied | Loaded::Stale) => return,
                Err(error) => {
                    log::debug!("{channel}: cannot read the room's members yet: {error}");
                    tokio::time::sleep(RESYNC_RETRY).await;
                }
            }
        }
    }

    /// Reports every room's presence changes to its members, one frame per changed room per
    /// `--presence-interval-ms`, until the hub is dropped.
    pub fn spawn_presence_reports(self: &Arc<Self>) {
        let hub: Weak<Hub> = Arc::downgrade(self);
        let mut ticks = tokio::time::interval(self.presence_config.interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let names_max = self.presence_config.presence_names_max;
        tokio::spawn(async move {
            loop {
                ticks.tick().await;
                let Some(hub) = hub.upgrade() else { return };
                hub.rooms.report_presence(names_max);
            }
        });
    }

    /// How many connections on this node are members of the room behind `channel`.
    pub fn local_members(&self, channel: &str) -> usize {
        self.rooms.member_count(channel)
    }

    /// Withdraws `member` from the room's presence and from the local room; the room's last
    /// local member unsubscribes this node from its channel.
    pub fn leave(&self, channel: &str, member: MemberId) {
        self.presence.remove(channel, &self.presence_key(member));
        self.rooms
            .remove(channel, member, || self.broker.unsubscribe(channel));
    }

    /// Stamps, serializes once, seals and publishes a message from `from`; resolves to its id
    /// once the broker accepted it.
    pub fn publish(
        &self,
        channel: &str,
        room: &str,
        from: &str,
        text: &str,
    ) -> BrokerFuture<MessageId> {
        let ts = now_ms();
        let body = relay::message_body(room, from, text, ts);
        let sealed = self.keyring.seal(channel.as_bytes(), body.as_bytes());
        self.broker.publish(channel, sealed, ts)
    }

    /// Announces every local member again: after a reconnect, presence may have lost them.
    fn announce_members(&self) {
        for (channel, member, sealed_name) in self.rooms.members() {
            let added = self
                .presence
                .add(&channel, &self.presence_key(member), sealed_name);
            tokio::spawn(async move {
                if let Err(error) = added.await {
                    log::debug!("cannot announce a member again: {error}");
                }
            });
        }
    }

    /// Serves the rooms' recovery requests until the node stops.
    pub async fn recover(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<Recovery>) {
        while let Some(request) = requests.recv().await {
            match request {
                Recovery::Room(resync) => {
                    let hub = self.clone();
                    tokio::spawn(async move { hub.resync(resync).await });
                }
                Recovery::Presence => self.announce_members(),
                Recovery::Roster {
                    channel,
                    generation,
                    load,
                } => {
                    let hub = self.clone();
                    tokio::spawn(async move { hub.reload_roster(channel, generation, load).await });
                }
            }
        }
    }

    async fn resync(&self, resync: Resync) {
        // Missed messages are read from where the room stands; otherwise only the newest id
        // is wanted, to vouch for what the room holds: reading from the start instead would
        // return trimmed history ahead of messages still on their way, and skip them.
        let range = if resync.missed {
            HistoryRange::From {
                from: resync
                    .after
                    .map_or(MessageId { epoch: 0, seq: 0 }, MessageId::successor),
                through: None,
                limit: self.history.size,
            }
        } else {
            HistoryRange::Newest {
                through: None,
                limit: 1,
            }
        };
        loop {
            if !self.rooms.wants(&resync) {
                return;
            }
            match self.broker.history(&resync.channel, range).await {
                Ok(entries) => {
                    let newest = entries.last().map(|entry| entry.id);
                    let found = if resync.missed {
                        self.rooms.open_history(&resync.channel, entries)
                    } else {
                        Vec::new()
                    };
                    self.metrics.resyncs.inc();
                    return self.rooms.recovered(&resync, found, newest);
                }
                Err(error) => {
                    log::debug!(
                        "{}: cannot fetch missed messages yet: {error}",
                        resync.channel
                    );
                    tokio::time::sleep(RESYNC_RETRY).await;
                }
            }
        }
    }
}

/// Reads the history a joiner gets: what follows `since` up to `through`, or the newest
/// messages up to `through`; and whether it holds everything after `since`.
async fn read_history(
    broker: &dyn crate::broker::Broker,
    channel: &str,
    since: Option<MessageId>,
    through: Option<MessageId>,
    limits: HistoryLimits,
) -> Result<(Vec<HistoryEntry>, Option<bool>), BrokerError> {
    let Some(through) = through else {
        // History is empty: whatever `since` named is gone.
        return Ok((Vec::new(), since.map(|_| false)));
    };
    if let Some(since) = since {
        if since >= through {
            return Ok((Vec::new(), Some(true)));
        }
        // `since` itself plus up to `size` after it: complete if it starts at `since` and
        // reaches `through`.
        let range = HistoryRange::From {
            from: since,
            through: Some(through),
            limit: limits.size + 1,
        };
        let mut entries = broker.history(channel, range).await?;
        let complete = entries.first().is_some_and(|e| e.id == since)
            && entries.last().is_some_and(|e| e.id == through);
        if complete {
            entries.remove(0);
            return Ok((entries, Some(true)));
        }
    }
    let range = HistoryRange::Newest {
        through: Some(through),
        limit: limits.size,
    };
    let mut entries = broker.history(channel, range).await?;
    if since.is_none() {
        // A plain join shows recent messages only; a recovering client gets all it missed.
        let oldest = now_ms().saturating_sub(limits.max_age.as_millis() as u64);
        entries.retain(|entry| entry.ts >= oldest);
    }
    Ok((entries, since.map(|_| false)))
}

/// Reads a room's members from presence, opens their names, and hands them to the room's
/// roster as load `load`.
async fn read_roster(
    rooms: &Rooms,
    presence: &dyn crate::presence::Presence,
    channel: &str,
    generation: u64,
    load: u64,
) -> Result<Loaded, BrokerError> {
    let snapshot = open_members(rooms, channel, presence.members(channel).await?);
    Ok(rooms.roster_loaded(channel, generation, load, snapshot))
}

/// Opens the names of presence entries; those that do not open are dropped and counted.
fn open_members(
    rooms: &Rooms,
    channel: &str,
    entries: Vec<PresenceEntry>,
) -> Vec<(String, String)> {
    entries
        .into_iter()
        .filter_map(|entry| {
            let name = rooms
                .open_name(channel, entry.sealed_name)
                .map_err(|reason| rooms.dropped(channel, &reason))
                .ok()?;
            Some((entry.member, name))
        })
        .collect()
}
