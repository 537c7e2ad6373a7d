//! Property tests of envelope opening, run briefly with every test run. Whatever arrives from
//! Redis, `Keyring::open` returns instead of panicking, and it opens only what a holder of the
//! key sealed for that very channel, unaltered: arbitrary bytes, sealed envelopes with random
//! edits, and envelopes replayed into another channel never open.

use chat_server::envelope::{KEY_LEN, Keyring, OVERHEAD, VERSION};
use proptest::prelude::*;

const KEY: [u8; KEY_LEN] = [0x42; KEY_LEN];

fn keyring() -> Keyring {
    Keyring::new(&[KEY]).expect("one key is a valid keyring")
}

/// AES-GCM is cheap, but the tests run unoptimized: a few hundred cases per property keep
/// each well under a few seconds.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn channel() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "chat:room:[A-Za-z0-9_.-]{1,64}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..80),
    ]
}

fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}

/// One edit of an envelope in transit.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Truncate { at: usize },
    Append { bytes: Vec<u8> },
    Swap { a: usize, b: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0..8u8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (at, any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        (at, any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        at.prop_map(|at| Edit::Delete { at }),
        at.prop_map(|at| Edit::Truncate { at }),
        prop::collection::vec(any::<u8>(), 1..20).prop_map(|bytes| Edit::Append { bytes }),
        (at, at).prop_map(|(a, b)| Edit::Swap { a, b }),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let n = bytes.len();
    match edit {
        Edit::Append { bytes: tail } => bytes.extend_from_slice(tail),
        _ if n == 0 => {}
        Edit::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Edit::Set { at, byte } => bytes[at % n] = *byte,
        Edit::Insert { at, byte } => bytes.insert(at % (n + 1), *byte),
        Edit::Delete { at } => {
            bytes.remove(at % n);
        }
        Edit::Truncate { at } => bytes.truncate(at % n),
        Edit::Swap { a, b } => bytes.swap(a % n, b % n),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_open(
        channel in channel(),
        mut payload in prop::collection::vec(any::<u8>(), 0..200),
        looks_like_version_1 in any::<bool>(),
    ) {
        // Half the inputs get past the version check, so the key lookup is exercised too.
        if looks_like_version_1 && !payload.is_empty() {
            payload[0] = VERSION;
        }
        prop_assert!(keyring().open(&channel, payload).is_err());
    }

    #[test]
    fn garbage_with_the_right_header_never_opens(
        channel in channel(),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        // A real header (version and key id) in front of random bytes reaches the tag check.
        let ring = keyring();
        let header = &ring.seal(&channel, b"")[..OVERHEAD - 16];
        let mut payload = header.to_vec();
        payload.extend_from_slice(&body);
        prop_assert!(ring.open(&channel, payload).is_err());
    }

    #[test]
    fn sealed_envelopes_open_to_their_plaintext(channel in channel(), plaintext in plaintext()) {
        let ring = keyring();
        let sealed = ring.seal(&channel, &plaintext);
        prop_assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
        let opened = ring.open(&channel, sealed.to_vec());
        prop_assert_eq!(opened.as_deref().ok(), Some(&plaintext[..]));
    }

    #[test]
    fn edited_envelopes_never_open(
        channel in channel(),
        plaintext in plaintext(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let ring = keyring();
        let sealed = ring.seal(&channel, &plaintext).to_vec();
        let mut edited = sealed.clone();
        for edit in &edits {
            apply(&mut edited, edit);
        }
        let opened = ring.open(&channel, edited.clone());
        if edited == sealed {
            // Edits that cancel out (a swap of equal bytes, a flip twice) leave it intact.
            prop_assert_eq!(opened.as_deref().ok(), Some(&plaintext[..]));
        } else {
            prop_assert!(opened.is_err(), "an edited envelope opened: {:?}", edits);
        }
    }

    #[test]
    fn envelopes_never_open_in_another_channel(
        channel in channel(),
        other in channel(),
        plaintext in plaintext(),
    ) {
        prop_assume!(channel != other);
        let ring = keyring();
        let sealed = ring.seal(&channel, &plaintext).to_vec();
        prop_assert!(ring.open(&other, sealed).is_err());
    }

    #[test]
    fn envelopes_never_open_under_another_key(
        channel in channel(),
        plaintext in plaintext(),
        other_key in any::<[u8; KEY_LEN]>(),
    ) {
        prop_assume!(other_key != KEY);
        let sealed = keyring().seal(&channel, &plaintext).to_vec();
        let stranger = Keyring::new(&[other_key]).expect("one key is a valid keyring");
        prop_assert!(stranger.open(&channel, sealed).is_err());
    }
}
