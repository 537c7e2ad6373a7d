//! The rooms a connection has joined, with their backplane channels (formatted once per join
//! rather than per send).
//!
//! A connection is in one room or a few, up to `--max-rooms-per-connection`: a list sized to
//! what it holds costs a tenth of a hash map's buckets, and searching a few entries is as fast.

/// Room names and their channels.
#[derive(Default)]
pub(super) struct JoinedRooms {
    entries: Vec<(Box<str>, String)>,
}

impl JoinedRooms {
    /// The channel of `room`, if joined.
    pub(super) fn get(&self, room: &str) -> Option<&String> {
        self.entries
            .iter()
            .find(|(name, _)| &**name == room)
            .map(|(_, channel)| channel)
    }

    pub(super) fn contains_key(&self, room: &str) -> bool {
        self.get(room).is_some()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records `room` as joined on `channel` (it was not).
    pub(super) fn insert(&mut self, room: &str, channel: String) {
        // One entry at a time: a connection rarely joins many, and a doubled list would hold
        // room for three more that never come.
        self.entries.reserve_exact(1);
        self.entries.push((room.into(), channel));
    }

    /// Forgets `room`; its channel if it was joined.
    pub(super) fn remove(&mut self, room: &str) -> Option<String> {
        let index = self.entries.iter().position(|(name, _)| &**name == room)?;
        let (_, channel) = self.entries.swap_remove(index);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(channel)
    }

    /// Every joined room's channel.
    pub(super) fn channels(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(_, channel)| channel)
    }
}
