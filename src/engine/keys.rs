//! Compact in-memory sets and maps keyed by incident keys (group keys and fingerprints).
//!
//! The writer keeps every open incident's key in memory (a new alert's lookup costs no store
//! read), so during a storm of unique alerts this map is as large as the storm: 400 000 open
//! incidents. Keyed by `String` it cost about 100 bytes per incident (the string's 24-byte
//! header, its heap block and the table's slack); keyed by a 16-byte [`Key`] it costs about 40.
//!
//! A [`Key`] is exact for the shapes incidentd makes itself and Alertmanager sends: 16 lowercase
//! hex digits (a fingerprint: 64 bits) and `g:` followed by 16 lowercase hex digits (a group
//! key). Decoding those is a bijection, so two different keys of these shapes never share a
//! [`Key`]. Any other string (a generic webhook's own fingerprint) is hashed to 127 bits with two
//! independently keyed SipHash-1-3 hashers seeded at random per process (the map is rebuilt from
//! the store at every start), so a collision needs about 2^63 keys or a key the sender cannot
//! know; hashed keys never collide with the exact shapes (bit 127 tells them apart).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use crate::domain::incident::IncidentId;

/// A key in 16 bytes (two words, not a `u128`, so a map entry with an 8-byte value takes 24
/// bytes, not 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u64; 2]);

/// Turns key strings into [`Key`]s; one per process (its hashers' seeds are random).
#[derive(Clone)]
pub struct KeyCodec {
    hi: RandomState,
    lo: RandomState,
}

impl Default for KeyCodec {
    fn default() -> Self {
        KeyCodec {
            hi: RandomState::new(),
            lo: RandomState::new(),
        }
    }
}

/// Tags of the exact shapes (the high word); hashed keys have the top bit set instead.
const TAG_FINGERPRINT: u64 = 1;
const TAG_GROUP: u64 = 2;
const HASHED: u64 = 1 << 63;

/// 16 lowercase hex digits as a number; `None` for anything else (uppercase included, so that
/// the decoding stays a bijection).
fn hex16(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

impl KeyCodec {
    pub fn key(&self, s: &str) -> Key {
        if let Some(v) = hex16(s) {
            return Key([TAG_FINGERPRINT, v]);
        }
        if let Some(v) = s.strip_prefix("g:").and_then(hex16) {
            return Key([TAG_GROUP, v]);
        }
        Key([self.hi.hash_one(s) | HASHED, self.lo.hash_one(s)])
    }
}

/// Open incidents by key: the writer's copy of the store's fingerprints tree.
#[derive(Default)]
pub struct OpenKeys {
    codec: KeyCodec,
    map: HashMap<Key, IncidentId>,
}

impl OpenKeys {
    pub fn get(&self, key: &str) -> Option<IncidentId> {
        self.map.get(&self.codec.key(key)).copied()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(&self.codec.key(key))
    }

    pub fn insert(&mut self, key: &str, id: IncidentId) {
        self.map.insert(self.codec.key(key), id);
    }

    pub fn remove(&mut self, key: &str) {
        self.map.remove(&self.codec.key(key));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<(S, IncidentId)> for OpenKeys {
    fn from_iter<I: IntoIterator<Item = (S, IncidentId)>>(iter: I) -> Self {
        let mut keys = OpenKeys::default();
        for (k, id) in iter {
            keys.insert(k.as_ref(), id);
        }
        keys
    }
}

/// A set of keys (the fingerprints that have history).
#[derive(Default)]
pub struct KeySet {
    codec: KeyCodec,
    set: HashSet<Key>,
}

impl KeySet {
    pub fn contains(&self, key: &str) -> bool {
        self.set.contains(&self.codec.key(key))
    }

    pub fn insert(&mut self, key: &str) {
        self.set.insert(self.codec.key(key));
    }
}

impl<S: AsRef<str>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut keys = KeySet::default();
        for k in iter {
            keys.insert(k.as_ref());
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_shapes_decode_and_differ() {
        let c = KeyCodec::default();
        assert_eq!(c.key("00000000000000ff"), Key([TAG_FINGERPRINT, 255]));
        assert_eq!(c.key("g:00000000000000ff"), Key([TAG_GROUP, 255]));
        // Uppercase and other lengths are not the exact shape: hashed, so still distinct.
        for other in [
            "00000000000000FF",
            "0000000000000ff",
            "g:0000000000000ff",
            "h:00000000000000ff",
        ] {
            let k = c.key(other);
            assert_ne!(k.0[0] & HASHED, 0, "{other} should be hashed");
            assert_ne!(k, c.key("00000000000000ff"));
            assert_ne!(k, c.key("g:00000000000000ff"));
        }
    }

    #[test]
    fn map_behaves_like_a_string_map() {
        let mut m = OpenKeys::default();
        m.insert("g:0123456789abcdef", IncidentId(1));
        m.insert("0123456789abcdef", IncidentId(2));
        m.insert("my-own-fingerprint", IncidentId(3));
        assert_eq!(m.get("g:0123456789abcdef"), Some(IncidentId(1)));
        assert_eq!(m.get("0123456789abcdef"), Some(IncidentId(2)));
        assert_eq!(m.get("my-own-fingerprint"), Some(IncidentId(3)));
        assert_eq!(m.get("my-own-fingerprinT"), None);
        m.remove("0123456789abcdef");
        assert!(!m.contains("0123456789abcdef"));
        assert!(m.contains("g:0123456789abcdef"));
        assert_eq!(m.len(), 2);
        let mut s = KeySet::default();
        s.insert("abc");
        assert!(s.contains("abc") && !s.contains("abd"));
    }

    proptest! {
        /// Against a `HashMap<String, _>` as the reference, for strings of every shape.
        #[test]
        fn agrees_with_a_string_map(
            ops in proptest::collection::vec(
                (prop_oneof![
                    "[0-9a-f]{16}",
                    "g:[0-9a-f]{16}",
                    "[0-9a-fA-F]{15,17}",
                    "g?:?[a-z0-9:-]{0,20}",
                ], any::<bool>(), 0u64..1000),
                0..200,
            )
        ) {
            let mut ours = OpenKeys::default();
            let mut reference: HashMap<String, IncidentId> = HashMap::new();
            for (k, insert, id) in &ops {
                if *insert {
                    ours.insert(k, IncidentId(*id));
                    reference.insert(k.clone(), IncidentId(*id));
                } else {
                    ours.remove(k);
                    reference.remove(k);
                }
            }
            prop_assert_eq!(ours.len(), reference.len());
            for (k, _, _) in &ops {
                prop_assert_eq!(ours.get(k), reference.get(k).copied());
            }
        }
    }
}
