//! Requests: `join`, `leave`, `members` and `send`, from a text frame to the future of their
//! reply (`typing`, `edit` and `delete` are in [`super::changes`]).
//!
//! A `join` and anything that publishes first ask the node's access rules ([`crate::access`])
//! whether this connection's token allows it; a refusal is `forbidden`, before any work.
//!
//! Every `send` passes flood control first ([`crate::flood`]); joins, leaves and member pages
//! pass their own per-connection budget before any work. When a verdict needs a round trip to
//! Redis, the publish waits for it inside the reply's future, and for the previous send's
//! publish (see [`FloodState`](super::flood_state::FloodState)), so one client's messages are
//! published in the order it sent them.

use chat_protocol::{ClientFrame, ErrorCode, FrameError, MessageId, ServerFrame};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Session;
use super::changes::{Outgoing, changed};
use super::replies::{Reply, not_joined, published, text_message, unavailable};
use crate::access::Denial;
use crate::flood::{Check, Verdict};
use crate::hub::Joined;

impl Session {
    /// Handles one text frame from the client.
    pub(super) fn on_text(&mut self, text: &str) {
        match chat_protocol::parse_client_frame(text) {
            Ok(ClientFrame::Join {
                room,
                since,
                reference,
            }) => {
                let reference = reference.map(Into::into);
                let Some(reference) = self.join_budget(reference) else {
                    return;
                };
                match since.map(|since| since.parse::<MessageId>()).transpose() {
                    Ok(since) => self.join(&room, since, reference),
                    Err(error) => self.reply_error(
                        FrameError::new(ErrorCode::BadRequest, format!("`since`: {error}"))
                            .with_reference(reference),
                    ),
                }
            }
            Ok(ClientFrame::Leave { room, reference }) => {
                if let Some(reference) = self.join_budget(reference.map(Into::into)) {
                    self.leave(&room, reference);
                }
            }
            Ok(ClientFrame::Members {
                room,
                after,
                reference,
            }) => {
                if let Some(reference) = self.join_budget(reference.map(Into::into)) {
                    self.members(&room, after.as_deref(), reference);
                }
            }
            Ok(ClientFrame::Send {
                room,
                text,
                reference,
            }) => self.send(&room, &text, reference.map(Into::into)),
            Ok(ClientFrame::Typing { room }) => self.typing(&room),
            Ok(ClientFrame::Edit {
                room,
                id,
                text,
                reference,
            }) => self.edit(&room, &id, &text, reference.map(Into::into)),
            Ok(ClientFrame::Delete {
                room,
                id,
                reference,
            }) => self.delete(&room, &id, reference.map(Into::into)),
            Err(error) => self.reply_error(error),
        }
    }

    /// Counts a join or a leave against the connection's budget for them. Gives the request's
    /// `ref` back when it may go on; otherwise queues the refusal and gives nothing.
    fn join_budget(&mut self, reference: Option<String>) -> Option<Option<String>> {
        match self.flood.check_join(self.hub.metrics()) {
            Verdict::Limited { retry_after_ms } => {
                let refused = Reply::JoinRefused {
                    retry_after_ms,
                    reference,
                };
                self.replies
                    .push_back(futures::future::ready(refused).boxed());
                None
            }
            _ => Some(reference),
        }
    }

    fn join(&mut self, room: &str, since: Option<MessageId>, reference: Option<String>) {
        if !self.rooms.contains_key(room) && self.forbidden_to_join(room, &reference) {
            return;
        }
        let (joined, awaited) = match self.rooms.get(room) {
            // Joining again changes nothing: the reply tells who is here.
            Some(channel) => {
                let page = self.hub.members_page(channel, None);
                let joined = async move {
                    Ok(Joined {
                        members: page.await,
                        history: Vec::new(),
                        recovered: None,
                    })
                };
                (joined.boxed(), false)
            }
            None if self.rooms.len() >= self.limits.max_rooms => {
                let message = format!(
                    "a connection may be in at most {} rooms; leave one first",
                    self.limits.max_rooms
                );
                return self.reply_error(
                    FrameError::new(ErrorCode::TooManyRooms, message).with_reference(reference),
                );
            }
            None => {
                let channel = self.hub.channel(room);
                let joined =
                    self.hub
                        .join(room, &channel, self.member, &self.name, &self.outbox, since);
                match joined {
                    Ok(joined) => {
                        self.rooms.insert(room, channel);
                        (joined, true)
                    }
                    Err(error) => {
                        return self.reply_error(unavailable(&error, "cannot join", reference));
                    }
                }
            }
        };
        self.joins_pending += usize::from(awaited);
        let room = room.to_owned();
        self.replies.push_back(
            async move {
                Reply::Joined {
                    room,
                    awaited,
                    reference,
                    result: joined.await,
                }
            }
            .boxed(),
        );
    }

    fn leave(&mut self, room: &str, reference: Option<String>) {
        match self.rooms.remove(room) {
            Some(channel) => {
                self.hub.leave(&channel, self.member);
                self.typing.remove(room);
                let left = ServerFrame::Left { room: room.into() };
                self.reply(text_message(left.to_json()));
            }
            None => self.reply_error(not_joined(room, reference)),
        }
    }

    fn members(&mut self, room: &str, after: Option<&str>, reference: Option<String>) {
        let Some(channel) = self.rooms.get(room) else {
            return self.reply_error(not_joined(room, reference));
        };
        let page = self.hub.members_page(channel, after);
        let room = room.to_owned();
        self.replies.push_back(
            async move {
                let page = page.await;
                let frame = ServerFrame::Members {
                    room: room.into(),
                    count: page.count,
                    members: page.names.into_iter().map(Into::into).collect(),
                    more_members: page.more,
                    reference: reference.map(Into::into),
                };
                Reply::Ready(text_message(frame.to_json()))
            }
            .boxed(),
        );
    }

    /// Refuses (with `forbidden`) a join the connection's token does not allow; says whether
    /// it did.
    fn forbidden_to_join(&mut self, room: &str, reference: &Option<String>) -> bool {
        let allowed = self.limits.access.may_join(&self.name, &self.grants, room);
        self.refuse_denied(room, allowed, reference)
    }

    /// Whether the connection is in `room` and may publish there; otherwise queues the
    /// refusal (`not_joined` or `forbidden`).
    fn may_publish_in(&mut self, room: &str, reference: &Option<String>) -> bool {
        if !self.rooms.contains_key(room) {
            self.reply_error(not_joined(room, reference.clone()));
            return false;
        }
        let allowed = self.limits.access.may_publish(&self.grants, room);
        !self.refuse_denied(room, allowed, reference)
    }

    /// The joined room's channel, if the connection may publish there (see
    /// [`Self::may_publish_in`]).
    pub(super) fn publishing_channel(
        &mut self,
        room: &str,
        reference: &Option<String>,
    ) -> Option<String> {
        if !self.may_publish_in(room, reference) {
            return None;
        }
        self.rooms.get(room).cloned()
    }

    /// Queues and counts the `forbidden` error of a denial; says whether there was one.
    pub(super) fn refuse_denied(
        &mut self,
        room: &str,
        allowed: Result<(), Denial>,
        reference: &Option<String>,
    ) -> bool {
        let Err(denial) = allowed else {
            return false;
        };
        self.hub.metrics().chat.forbidden.inc(denial);
        self.reply_error(denial.error(room, reference.clone()));
        true
    }

    fn send(&mut self, room: &str, text: &str, reference: Option<String>) {
        if !self.may_publish_in(room, &reference) {
            return;
        }
        let Some(channel) = self.rooms.get(room) else {
            return;
        };
        if let Err(error) = chat_protocol::validate_text_size(text, self.limits.max_text_bytes) {
            return self.reply_error(error.with_reference(reference));
        }
        let pending = match self.flood.check(self.hub.metrics(), &self.name, room, text) {
            Check::Ready(Verdict::Allowed) if self.flood.turn_is_free() => {
                let publication = self.hub.publish(channel, room, &self.name, text);
                self.replies
                    .push_back(published(publication, reference).boxed());
                return;
            }
            Check::Ready(Verdict::Allowed) => futures::future::ready(Verdict::Allowed).boxed(),
            // A refusal publishes nothing, so it need not wait for its turn.
            Check::Ready(verdict) => return self.reply_refused(verdict, reference),
            Check::Pending(verdict) => verdict,
        };
        let (channel, outgoing) = (channel.clone(), Outgoing::Message(text.to_owned()));
        self.send_after_check(pending, channel, room, outgoing, reference);
    }

    /// Publishes once flood control allows it and the previous such send has been published.
    pub(super) fn send_after_check(
        &mut self,
        verdict: BoxFuture<'static, Verdict>,
        channel: String,
        room: &str,
        outgoing: Outgoing,
        reference: Option<String>,
    ) {
        let turn = self.flood.take_turn();
        let hub = self.hub.clone();
        let (room, name) = (room.to_owned(), self.name.clone());
        self.replies.push_back(
            async move {
                let verdict = verdict.await;
                if let Some(previous) = turn.previous {
                    let _ = previous.await;
                }
                if verdict != Verdict::Allowed {
                    return Reply::Refused { verdict, reference };
                }
                match outgoing {
                    Outgoing::Message(text) => {
                        let publication = hub.publish(&channel, &room, &name, &text);
                        // Dropping the sender, after publishing or refusing, hands the turn on.
                        drop(turn.mine);
                        published(publication, reference).await
                    }
                    Outgoing::Change(draft) => {
                        // The change is published only once its author is checked: the turn
                        // is held until then, so the sender's later messages stay behind it.
                        let result = hub.publish_change(&channel, &room, &name, draft).await;
                        drop(turn.mine);
                        changed(&hub, &room, result, reference)
                    }
                }
            }
            .boxed(),
        );
    }
}
