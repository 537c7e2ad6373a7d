//! Where everything a cluster shares lives in Redis: the names of room channels and keys, of
//! the node registry, and of the per-name flood keys.
//!
//! On a single Redis names are plain (`<prefix>:room:<room>`). On a Redis Cluster a script
//! may only touch keys of one slot, and a sharded channel lives in a slot too, so every name
//! that one operation touches together carries one hash tag:
//!
//! - a room's channel, history and presence hash carry the tag of the room's *partition*
//!   (`<prefix>:{<tag>}:room:<room>`), one of [`PARTITIONS`], picked by a hash of the room's
//!   name. Partitions rather than a tag per room let one script call batch the messages of
//!   many rooms, and keep the number of slots a node subscribes in bounded;
//! - the partitions' tags are not `{0}`..`{63}`: those hash to clustered slots, so a shard
//!   could own twice the partitions of another. Each tag is instead the first string that
//!   hashes into its own 1/64 of the slot space, so partitions spread over slots, and so over
//!   shards, evenly;
//! - the node registry (heartbeats, sweeps, each node's rooms) shares the tag `{registry}`,
//!   since the heartbeat script reads and writes it in one call;
//! - a name's flood keys (its rate and its debounce) share a tag made of the name.
//!
//! The layout is part of the wire contract: every node of a cluster must use the same
//! prefix and topology, and changing the number of partitions would move rooms' history.

use std::sync::LazyLock;

/// Partitions of the room space on a Redis Cluster. Fixed: it decides which slot each room
/// lives in.
pub const PARTITIONS: usize = 64;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The tag of each partition, without braces: the shortest base-36 string whose slot falls
/// in the partition's own range of slots.
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let width = SLOTS / PARTITIONS;
    let mut tags: Vec<Option<String>> = vec![None; PARTITIONS];
    let mut missing = PARTITIONS;
    let mut candidate: u64 = 0;
    while missing > 0 {
        let tag = base36(candidate);
        let partition = slot_of(&tag) / width;
        if tags[partition].is_none() {
            tags[partition] = Some(tag);
            missing -= 1;
        }
        candidate += 1;
    }
    tags.into_iter().flatten().collect()
});

/// How names are laid out for one deployment.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
    cluster: bool,
}

impl Keyspace {
    /// Names under `prefix` (validated by the configuration: no braces), tagged for a Redis
    /// Cluster when `cluster` is set.
    pub fn new(prefix: &str, cluster: bool) -> Self {
        Keyspace {
            prefix: prefix.to_owned(),
            cluster,
        }
    }

    /// Whether names are tagged for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The channel of a (validated) room: its history and presence keys are named after it.
    pub fn channel(&self, room: &str) -> String {
        if self.cluster {
            let tag = &TAGS[partition(room)];
            format!("{}:{{{tag}}}:room:{room}", self.prefix)
        } else {
            format!("{}:room:{room}", self.prefix)
        }
    }

    /// A key of the node registry (`nodes`, `sweeps`, `node:<id>:rooms`).
    pub fn registry(&self, name: &str) -> String {
        if self.cluster {
            format!("{}:{{registry}}:{name}", self.prefix)
        } else {
            format!("{}:{name}", self.prefix)
        }
    }

    /// The start of a name's flood keys: its rate key and its debounce keys follow it, so they
    /// share one slot.
    pub fn flood(&self, name: &str) -> String {
        if self.cluster {
            format!("{}:flood:{{{name}}}:", self.prefix)
        } else {
            format!("{}:flood:{name}:", self.prefix)
        }
    }
}

/// The partition of a room: CRC-16 of its name (the same function as Redis's slots), so every
/// node, in any version, agrees.
fn partition(room: &str) -> usize {
    slot_of(room) % PARTITIONS
}

/// The Redis Cluster slot of a key: CRC-16 (XMODEM) of its hash tag if it has a non-empty
/// one, else of the whole key, modulo the slot count, as Redis computes it.
pub fn slot_of(key: &str) -> usize {
    let key = key.as_bytes();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    usize::from(crc16::State::<crc16::XMODEM>::calculate(hashed)) % SLOTS
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // Known values from CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{}x"), slot_of("{}x"));
        for key in ["chat:room:a", "{registry}", "a{b}c", "{}x", "x{"] {
            let ours = slot_of(key);
            let theirs = redis::cluster_routing::Slot::for_key(key);
            assert_eq!(
                redis::cluster_routing::Slot::new(ours as u16),
                Some(theirs),
                "{key}"
            );
        }
    }

    #[test]
    fn partitions_spread_evenly_over_slots() {
        let width = SLOTS / PARTITIONS;
        for (partition, tag) in TAGS.iter().enumerate() {
            assert_eq!(slot_of(tag) / width, partition, "tag {tag}");
        }
        // The default layout of three masters splits the slots in three ranges: each owns
        // 21 or 22 partitions.
        let per_master = |range: std::ops::Range<usize>| {
            TAGS.iter()
                .filter(|tag| range.contains(&slot_of(tag)))
                .count()
        };
        let counts = [
            per_master(0..5461),
            per_master(5461..10923),
            per_master(10923..SLOTS),
        ];
        assert!(counts.iter().all(|&n| n == 21 || n == 22), "{counts:?}");
    }

    #[test]
    fn a_room_keeps_its_keys_and_channel_in_one_slot() {
        let cluster = Keyspace::new("chat", true);
        let channel = cluster.channel("lobby{x}");
        assert!(channel.starts_with("chat:{") && channel.ends_with("}:room:lobby{x}"));
        let slot = slot_of(&channel);
        assert_eq!(slot_of(&format!("{channel}:history")), slot);
        assert_eq!(slot_of(&format!("{channel}:presence")), slot);
        assert_eq!(
            slot_of(&cluster.registry("nodes")),
            slot_of(&cluster.registry("node:a:rooms"))
        );
        let flood = cluster.flood("ada}");
        assert_eq!(
            slot_of(&format!("{flood}rate")),
            slot_of(&format!("{flood}dup:00"))
        );

        let single = Keyspace::new("chat", false);
        assert_eq!(single.channel("lobby"), "chat:room:lobby");
        assert_eq!(single.registry("nodes"), "chat:nodes");
    }
}
