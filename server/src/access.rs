//! Who may join and who may send where: room permissions from tokens, private rooms and direct
//! messages.
//!
//! A node without `--auth-secret` cannot tell one user from another (a name is only what the
//! client says), so it keeps every room open except those whose point is to be closed: private
//! rooms (under `--private-prefix`) and direct-message rooms (`dm.<a>.<b>`) are refused there,
//! never opened. With tokens, two optional claims narrow what a connection may do:
//!
//! - `rooms`: the rooms its holder may join. Without it, any room that is neither private nor a
//!   direct message (so tokens issued before these claims keep working); private rooms always
//!   need an entry that matches them.
//! - `publish`: the rooms it may send to (and edit, delete and type in). Without it, wherever
//!   it may join; with it, a room missing from it is read-only for this holder.
//!
//! Entries are exact room names, or prefix patterns `<prefix>.*` that match the rooms below the
//! prefix (`team-42.*` matches `team-42.x`, not `team-42`), or `*` for every room. A direct
//! message room is joinable by its two users, whatever the claims say: the token's `sub` is
//! what identifies them.
//!
//! Each decision is a pure function here so the rules can be tested without a socket; the
//! session asks before it joins or publishes, and answers a refusal with `forbidden`.

use chat_protocol::{ErrorCode, FrameError};

/// The prefix of direct-message rooms, `dm.<a>.<b>`.
pub const DM_PREFIX: &str = "dm.";

/// The default `--private-prefix`.
pub const DEFAULT_PRIVATE_PREFIX: &str = "private.";

/// What a connection's token allows, as far as rooms go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Whether the name came from a verified token: only then does it identify anyone.
    pub verified: bool,
    /// The token's `rooms` claim, if it had one.
    pub rooms: Option<Vec<String>>,
    /// The token's `publish` claim, if it had one.
    pub publish: Option<Vec<String>>,
}

/// Why a request was refused with `forbidden`; also the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A private room the token does not name (or no token at all).
    Private,
    /// A direct-message room of others, a non-canonical one, or any without a token.
    DirectMessage,
    /// A room outside the token's `rooms` claim.
    NotInRooms,
    /// A send (edit, delete, typing) into a room outside the token's `publish` claim.
    ReadOnly,
    /// An edit or delete of someone else's message.
    NotAuthor,
}

impl Denial {
    /// Every denial, for registering one metric series each up front.
    pub const ALL: [Denial; 5] = [
        Denial::Private,
        Denial::DirectMessage,
        Denial::NotInRooms,
        Denial::ReadOnly,
        Denial::NotAuthor,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Private => "private",
            Denial::DirectMessage => "direct_message",
            Denial::NotInRooms => "not_in_rooms",
            Denial::ReadOnly => "read_only",
            Denial::NotAuthor => "not_author",
        }
    }

    /// The `forbidden` error the client gets, answering `reference`.
    pub fn error(self, room: &str, reference: Option<String>) -> FrameError {
        let message = match self {
            Denial::Private => {
                format!("room `{room}` is private: only a token whose `rooms` names it may join")
            }
            Denial::DirectMessage => format!(
                "`{room}` is not one of your direct-message rooms: they are named \
                 dm.<a>.<b> after their two users, a before b, and need a token"
            ),
            Denial::NotInRooms => format!("your token does not let you join room `{room}`"),
            Denial::ReadOnly => format!("your token lets you read room `{room}`, not send to it"),
            Denial::NotAuthor => "only the author of a message may edit or delete it".to_owned(),
        };
        FrameError::new(ErrorCode::Forbidden, message).with_reference(reference)
    }
}

/// The node's rules: which rooms are private.
#[derive(Debug, Clone)]
pub struct Policy {
    private_prefix: String,
}

impl Policy {
    /// Rules under which rooms starting with `private_prefix` are private.
    pub fn new(private_prefix: impl Into<String>) -> Self {
        Policy {
            private_prefix: private_prefix.into(),
        }
    }

    /// Whether `name`, holding `grants`, may join `room`.
    pub fn may_join(&self, name: &str, grants: &Grants, room: &str) -> Result<(), Denial> {
        if let Some(pair) = room.strip_prefix(DM_PREFIX) {
            return match dm_pair(pair) {
                Some((a, b)) if grants.verified && (name == a || name == b) => Ok(()),
                _ => Err(Denial::DirectMessage),
            };
        }
        let listed = grants
            .rooms
            .as_deref()
            .map(|rooms| matches_any(rooms, room));
        if room.starts_with(&self.private_prefix) {
            return match (grants.verified, listed) {
                (true, Some(true)) => Ok(()),
                _ => Err(Denial::Private),
            };
        }
        match listed {
            Some(false) => Err(Denial::NotInRooms),
            _ => Ok(()),
        }
    }

    /// Whether a holder of `grants`, already in `room`, may send to it.
    pub fn may_publish(&self, grants: &Grants, room: &str) -> Result<(), Denial> {
        // Direct messages belong to their two users: both may always write there.
        if room.starts_with(DM_PREFIX) {
            return Ok(());
        }
        match grants.publish.as_deref() {
            Some(publish) if !matches_any(publish, room) => Err(Denial::ReadOnly),
            _ => Ok(()),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(DEFAULT_PRIVATE_PREFIX)
    }
}

/// The two names of a direct-message room (the part after `dm.`), when it is canonical: two
/// non-empty names without a dot, the first before the second in byte order.
fn dm_pair(pair: &str) -> Option<(&str, &str)> {
    let (a, b) = pair.split_once('.')?;
    (!a.is_empty() && !b.contains('.') && a < b).then_some((a, b))
}

fn matches_any(entries: &[String], room: &str) -> bool {
    entries.iter().any(|entry| matches(entry, room))
}

/// Whether one claim entry matches `room`: exactly, as `<prefix>.*`, or as `*`.
fn matches(entry: &str, room: &str) -> bool {
    if entry == "*" {
        return true;
    }
    match entry.strip_suffix(".*") {
        Some(prefix) => room
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|below| !below.is_empty()),
        None => entry == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(rooms: Option<&[&str]>, publish: Option<&[&str]>) -> Grants {
        let list = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect();
        Grants {
            verified: true,
            rooms: rooms.map(list),
            publish: publish.map(list),
        }
    }

    #[test]
    fn patterns_match_exactly_or_below_their_prefix() {
        assert!(matches("lobby", "lobby"));
        assert!(!matches("lobby", "lobby2"));
        assert!(matches("team-42.*", "team-42.x"));
        assert!(matches("team-42.*", "team-42.x.y"));
        assert!(!matches("team-42.*", "team-42"));
        assert!(!matches("team-42.*", "team-42."));
        assert!(!matches("team-42.*", "team-420.x"));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn without_claims_every_open_room_is_joinable_and_writable() {
        let policy = Policy::default();
        for grants in [Grants::default(), token(None, None)] {
            assert_eq!(policy.may_join("ada", &grants, "lobby"), Ok(()));
            assert_eq!(policy.may_publish(&grants, "lobby"), Ok(()));
            assert_eq!(
                policy.may_join("ada", &grants, "private.board"),
                Err(Denial::Private)
            );
        }
    }

    #[test]
    fn private_rooms_need_a_token_that_names_them() {
        let policy = Policy::default();
        let board = token(Some(&["private.board"]), None);
        assert_eq!(policy.may_join("ada", &board, "private.board"), Ok(()));
        assert_eq!(
            policy.may_join("ada", &board, "private.other"),
            Err(Denial::Private)
        );
        assert_eq!(
            policy.may_join("ada", &board, "lobby"),
            Err(Denial::NotInRooms)
        );
        let all = token(Some(&["private.*"]), None);
        assert_eq!(policy.may_join("ada", &all, "private.other"), Ok(()));
        // A listing without a token proves nothing.
        let unverified = Grants {
            verified: false,
            ..board
        };
        assert_eq!(
            policy.may_join("ada", &unverified, "private.board"),
            Err(Denial::Private)
        );
        let custom = Policy::new("staff-");
        assert_eq!(
            custom.may_join("ada", &token(None, None), "staff-room"),
            Err(Denial::Private)
        );
        assert_eq!(
            custom.may_join("ada", &token(None, None), "private.x"),
            Ok(())
        );
    }

    #[test]
    fn publish_claims_make_rooms_read_only() {
        let policy = Policy::default();
        let reader = token(Some(&["news", "team.*"]), Some(&["team.*"]));
        assert_eq!(policy.may_join("ada", &reader, "news"), Ok(()));
        assert_eq!(policy.may_publish(&reader, "news"), Err(Denial::ReadOnly));
        assert_eq!(policy.may_publish(&reader, "team.dev"), Ok(()));
        let silent = token(None, Some(&[]));
        assert_eq!(policy.may_publish(&silent, "lobby"), Err(Denial::ReadOnly));
        assert_eq!(policy.may_publish(&silent, "dm.ada.bob"), Ok(()));
    }

    #[test]
    fn direct_messages_are_for_their_two_verified_users() {
        let policy = Policy::default();
        let anyone = token(Some(&["lobby"]), Some(&[]));
        assert_eq!(policy.may_join("ada", &anyone, "dm.ada.bob"), Ok(()));
        assert_eq!(policy.may_join("bob", &anyone, "dm.ada.bob"), Ok(()));
        for (name, room) in [
            ("eve", "dm.ada.bob"),
            ("ada", "dm.bob.ada"),
            ("ada", "dm.ada.ada"),
            ("ada", "dm.ada"),
            ("ada", "dm.ada.bob.x"),
            ("ada", "dm..ada"),
        ] {
            assert_eq!(
                policy.may_join(name, &anyone, room),
                Err(Denial::DirectMessage),
                "{name} {room}"
            );
        }
        assert_eq!(
            policy.may_join("ada", &Grants::default(), "dm.ada.bob"),
            Err(Denial::DirectMessage)
        );
    }
}
