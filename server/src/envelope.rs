//! Sealed envelopes: the only form in which chat data leaves a node.
//!
//! Redis is treated as an untrusted relay. Every payload a node publishes is sealed with
//! AES-256-GCM under a key shared by the cluster, with the channel name as associated data, so
//! Redis (or anyone who can write to it) can neither read a message nor move it to another room.
//!
//! Layout, version 1:
//!
//! ```text
//! | version: 1 byte = 1 | key id: 4 bytes | nonce: 12 bytes | ciphertext | tag: 16 bytes |
//! ```
//!
//! The key id is derived from the key itself, so every node names a key the same way however
//! the operator orders the key list. That is what makes rotation work: nodes seal with the first
//! key and open with any key they hold, so a new key can be added everywhere first and made
//! primary afterwards. Nonces are random: nodes share a key, so a counter would collide across
//! nodes, and 96 random bits stay safe up to 2^32 messages per key.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// First byte of every envelope: bump it for a new layout, so old nodes refuse what they
/// cannot read instead of misreading it.
pub const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of a key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Why a key given by the operator was refused. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key list is empty.
    #[error("no key given")]
    Empty,
    /// A key is not standard base64 (after trimming whitespace).
    #[error("key #{index} is not valid base64")]
    NotBase64 {
        /// Position of the key in the list, from 1.
        index: usize,
    },
    /// A key does not decode to [`KEY_LEN`] bytes.
    #[error("key #{index} decodes to {len} bytes; a key is exactly 32 bytes")]
    WrongLength {
        /// Position of the key in the list, from 1.
        index: usize,
        /// Bytes it decodes to.
        len: usize,
    },
    /// A key is the same as one earlier in the list.
    #[error("key #{index} is given twice")]
    Duplicate {
        /// Position of the repeat in the list, from 1.
        index: usize,
    },
}

/// Why an envelope could not be opened. Any of these means the payload is dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Fewer bytes than [`OVERHEAD`]: not an envelope at all.
    #[error("payload shorter than an envelope")]
    TooShort,
    /// The first byte is not [`VERSION`]: a newer node, or a payload never sealed (such as
    /// plain JSON).
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// Sealed with a key this node does not hold: typically mid-rotation, on a node not given
    /// the new key yet.
    #[error("sealed with a key this node does not hold")]
    UnknownKey,
    /// The tag does not match: the envelope was altered, or sealed for another channel.
    #[error("authentication failed: tampered, or sealed for another channel")]
    Forged,
}

struct SealingKey {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

/// The cluster's keys: the first seals, any opens. Ciphers are built once here, never per
/// message.
pub struct Keyring {
    keys: Vec<SealingKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the public key ids: key material must never reach a log.
        f.debug_list()
            .entries(self.keys.iter().map(|k| crate::hex::encode(&k.id)))
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from raw keys; the first one seals.
    pub fn new(secrets: &[[u8; KEY_LEN]]) -> Result<Self, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut keys: Vec<SealingKey> = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let id = key_id(secret);
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::Duplicate { index: index + 1 });
            }
            let cipher = Aes256Gcm::new(secret.into());
            keys.push(SealingKey { id, cipher });
        }
        Ok(Keyring { keys })
    }

    /// Builds a keyring from base64 keys as operators write them (`openssl rand -base64 32`).
    pub fn from_base64<S: AsRef<str>>(encoded: &[S]) -> Result<Self, KeyError> {
        let secrets = encoded
            .iter()
            .enumerate()
            .map(|(i, text)| decode_key(text.as_ref(), i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(&secrets)
    }

    /// A random keyring for a single node with the in-memory broker, where nothing leaves the
    /// process and no operator key is needed.
    pub fn ephemeral() -> Self {
        let mut secret = [0u8; KEY_LEN];
        rand::fill(&mut secret);
        Self::new(&[secret]).unwrap_or_else(|_| unreachable!("one key is a valid keyring"))
    }

    /// Public ids of the keys, primary first, for logs.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| crate::hex::encode(&k.id))
            .collect()
    }

    /// Seals `plaintext` for `channel` with the primary key.
    pub fn seal(&self, channel: &[u8], plaintext: &[u8]) -> Bytes {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut envelope = Vec::with_capacity(OVERHEAD + plaintext.len());
        envelope.push(VERSION);
        envelope.extend_from_slice(&key.id);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(plaintext);
        let tag = key
            .cipher
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                channel,
                (&mut envelope[HEADER_LEN..]).into(),
            )
            .unwrap_or_else(|_| unreachable!("chat payloads are far below the GCM size limit"));
        envelope.extend_from_slice(&tag);
        Bytes::from(envelope)
    }

    /// Opens an envelope received on `channel`, decrypting in place; the plaintext shares the
    /// envelope's allocation.
    pub fn open(&self, channel: &[u8], mut envelope: Vec<u8>) -> Result<Bytes, OpenError> {
        if envelope.len() < OVERHEAD {
            return Err(OpenError::TooShort);
        }
        if envelope[0] != VERSION {
            return Err(OpenError::UnknownVersion(envelope[0]));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id[..] == envelope[1..1 + KEY_ID_LEN])
            .ok_or(OpenError::UnknownKey)?;
        let (header, body) = envelope.split_at_mut(HEADER_LEN);
        let (ciphertext, tag) = body.split_at_mut(body.len() - TAG_LEN);
        let nonce = Nonce::try_from(&header[1 + KEY_ID_LEN..]).map_err(|_| OpenError::TooShort)?;
        let tag = Tag::try_from(&tag[..]).map_err(|_| OpenError::TooShort)?;
        key.cipher
            .decrypt_inout_detached(&nonce, channel, ciphertext.into(), &tag)
            .map_err(|_| OpenError::Forged)?;
        let end = envelope.len() - TAG_LEN;
        Ok(Bytes::from(envelope).slice(HEADER_LEN..end))
    }
}

fn decode_key(text: &str, index: usize) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64 { index })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength {
        index,
        len: bytes.len(),
    })
}

fn key_id(secret: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"chat-envelope-key-id/v1")
        .chain_update(secret)
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &[u8] = b"chat:room:lobby";

    fn keyring(seed: u8) -> Keyring {
        Keyring::new(&[[seed; KEY_LEN]]).unwrap()
    }

    #[test]
    fn round_trip() {
        let ring = keyring(1);
        let sealed = ring.seal(CHANNEL, b"hello");
        assert_eq!(sealed.len(), OVERHEAD + 5);
        assert_eq!(sealed[0], VERSION);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(ring.open(CHANNEL, sealed.to_vec()).unwrap(), &b"hello"[..]);
    }

    #[test]
    fn nonces_are_fresh() {
        let ring = keyring(1);
        assert_ne!(ring.seal(CHANNEL, b"same"), ring.seal(CHANNEL, b"same"));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let ring = keyring(1);
        let sealed = ring.seal(CHANNEL, b"integrity matters").to_vec();
        for bit in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert!(ring.open(CHANNEL, tampered).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn wrong_key_is_refused() {
        let sealed = keyring(1).seal(CHANNEL, b"secret").to_vec();
        assert_eq!(keyring(2).open(CHANNEL, sealed), Err(OpenError::UnknownKey));
    }

    #[test]
    fn wrong_channel_is_refused() {
        let ring = keyring(1);
        let sealed = ring.seal(CHANNEL, b"for the lobby").to_vec();
        assert_eq!(
            ring.open(b"chat:room:other", sealed),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn short_and_foreign_payloads_are_refused() {
        let ring = keyring(1);
        assert_eq!(ring.open(CHANNEL, vec![]), Err(OpenError::TooShort));
        assert_eq!(
            ring.open(CHANNEL, vec![VERSION; OVERHEAD - 1]),
            Err(OpenError::TooShort)
        );
        let mut future = ring.seal(CHANNEL, b"x").to_vec();
        future[0] = 2;
        assert_eq!(
            ring.open(CHANNEL, future),
            Err(OpenError::UnknownVersion(2))
        );
        assert_eq!(
            ring.open(
                CHANNEL,
                b"{\"type\":\"message\",\"text\":\"plain json\"}".to_vec()
            ),
            Err(OpenError::UnknownVersion(b'{'))
        );
    }

    #[test]
    fn rotation_seals_with_the_first_and_opens_with_any() {
        let old = [1u8; KEY_LEN];
        let new = [2u8; KEY_LEN];
        let before = Keyring::new(&[old]).unwrap();
        let during = Keyring::new(&[new, old]).unwrap();
        let after = Keyring::new(&[new]).unwrap();

        let from_old_node = before.seal(CHANNEL, b"old").to_vec();
        assert_eq!(
            during.open(CHANNEL, from_old_node.clone()).unwrap(),
            &b"old"[..]
        );
        let from_rotated_node = during.seal(CHANNEL, b"new").to_vec();
        assert_eq!(
            after.open(CHANNEL, from_rotated_node.clone()).unwrap(),
            &b"new"[..]
        );
        assert_eq!(
            before.open(CHANNEL, from_rotated_node),
            Err(OpenError::UnknownKey)
        );
        assert_eq!(
            after.open(CHANNEL, from_old_node),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn key_ids_do_not_depend_on_order() {
        let a = Keyring::new(&[[1; KEY_LEN], [2; KEY_LEN]]).unwrap();
        let b = Keyring::new(&[[2; KEY_LEN], [1; KEY_LEN]]).unwrap();
        assert_eq!(a.key_ids()[0], b.key_ids()[1]);
        assert_eq!(a.key_ids()[1], b.key_ids()[0]);
    }

    #[test]
    fn operator_keys_are_validated() {
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; KEY_LEN]);
        assert!(Keyring::from_base64(&[format!(" {good}\n")]).is_ok());
        assert_eq!(
            Keyring::from_base64::<&str>(&[]).unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            Keyring::from_base64(&["not base64!"]).unwrap_err(),
            KeyError::NotBase64 { index: 1 }
        );
        assert_eq!(
            Keyring::from_base64(&[good.as_str(), "c2hvcnQ="]).unwrap_err(),
            KeyError::WrongLength { index: 2, len: 5 }
        );
        assert_eq!(
            Keyring::from_base64(&[good.as_str(), good.as_str()]).unwrap_err(),
            KeyError::Duplicate { index: 2 }
        );
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let ring = keyring(0xAB);
        let shown = format!("{ring:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert_eq!(shown, format!("[\"{}\"]", ring.key_ids()[0]));
    }
}
