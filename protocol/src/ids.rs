//! Message ids, `<epoch>-<seq>`: assigned by the backplane when it stores a message, ordered
//! within a room, and parsed from clients' `since`, so their arithmetic must never overflow.

/// A message id: ordered within a room, and gap-free within one `epoch`.
///
/// Written `"<epoch>-<seq>"`. A room's history starts a new epoch (the time it began, in
/// unix ms) when it is created, or recreated after it expired or was lost; within an epoch
/// `seq` counts up by one per message from 0. So a client that sees `seq` jump by more than
/// one knows it missed messages, and one that sees a new epoch knows continuity was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// When the room's history began, in unix ms; a new value means continuity was broken.
    pub epoch: u64,
    /// The message's position within its epoch, from 0, one more per message.
    pub seq: u64,
}

impl MessageId {
    /// The largest id there can be.
    pub const MAX: MessageId = MessageId {
        epoch: u64::MAX,
        seq: u64::MAX,
    };

    /// The id that directly follows this one in the same epoch; `None` once the epoch has no
    /// further id. Ids come from outside (Redis, clients), so this must never overflow.
    pub fn next(self) -> Option<MessageId> {
        Some(MessageId {
            epoch: self.epoch,
            seq: self.seq.checked_add(1)?,
        })
    }

    /// The smallest id greater than this one (the start of the next epoch once this epoch has
    /// no further id), or this id itself if it is [`MessageId::MAX`]: the lower bound of a
    /// range of what comes after it.
    pub fn successor(self) -> MessageId {
        self.next().unwrap_or(MessageId {
            epoch: self.epoch.saturating_add(1),
            seq: if self.epoch == u64::MAX { u64::MAX } else { 0 },
        })
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl std::str::FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = text.split_once('-').ok_or(InvalidMessageId)?;
        let number = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidMessageId);
            }
            digits.parse::<u64>().map_err(|_| InvalidMessageId)
        };
        Ok(MessageId {
            epoch: number(epoch)?,
            seq: number(seq)?,
        })
    }
}

/// A string that is not a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected `<epoch>-<seq>`)")]
pub struct InvalidMessageId;
