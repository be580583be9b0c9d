//! A map keyed by incident id for values that open incidents have: incident ids are numbered
//! from 1 in order, and the open ones are mostly recent, so they sit close together. Values are
//! kept in chunks of [`CHUNK`] consecutive ids, in place (no hashing, no empty buckets of a
//! hash table at three-quarters load, and no table twice the size next to the old one while it
//! grows: during a storm of 400 000 new incidents a hash table keyed by incident held a
//! 524 288-bucket table, and briefly also the 262 144-bucket one). A chunk goes when its last
//! value does.
//!
//! The cost of the layout is a chunk per id range that still has a value: a few incidents
//! left open among thousands of resolved ones keep their chunks (at most [`CHUNK`] slots each).

use std::collections::HashMap;

/// Consecutive ids per chunk.
pub const CHUNK: usize = 256;

/// A value type with an empty value that marks a free slot.
pub trait Slot: Default {
    fn is_free(&self) -> bool;
}

impl<A: smallvec::Array> Slot for smallvec::SmallVec<A> {
    fn is_free(&self) -> bool {
        self.is_empty()
    }
}

impl<T> Slot for Option<T> {
    fn is_free(&self) -> bool {
        self.is_none()
    }
}

struct Chunk<T> {
    slots: Box<[T]>,
    used: usize,
}

pub struct DenseMap<T: Slot> {
    chunks: HashMap<u64, Chunk<T>>,
    len: usize,
}

impl<T: Slot> Default for DenseMap<T> {
    fn default() -> Self {
        DenseMap {
            chunks: HashMap::new(),
            len: 0,
        }
    }
}

fn place(id: u64) -> (u64, usize) {
    (id / CHUNK as u64, (id % CHUNK as u64) as usize)
}

impl<T: Slot> DenseMap<T> {
    /// The value of `id`; `None` for a free slot.
    pub fn get(&self, id: u64) -> Option<&T> {
        let (c, i) = place(id);
        self.chunks
            .get(&c)
            .map(|chunk| &chunk.slots[i])
            .filter(|v| !v.is_free())
    }

    /// Sets the value of `id`; a free value removes it.
    pub fn set(&mut self, id: u64, value: T) {
        if value.is_free() {
            self.remove(id);
            return;
        }
        let (c, i) = place(id);
        let chunk = self.chunks.entry(c).or_insert_with(|| Chunk {
            slots: (0..CHUNK).map(|_| T::default()).collect(),
            used: 0,
        });
        if chunk.slots[i].is_free() {
            chunk.used += 1;
            self.len += 1;
        }
        chunk.slots[i] = value;
    }

    /// Removes the value of `id` and returns it, if it had one.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (c, i) = place(id);
        let chunk = self.chunks.get_mut(&c)?;
        if chunk.slots[i].is_free() {
            return None;
        }
        let old = std::mem::take(&mut chunk.slots[i]);
        chunk.used -= 1;
        self.len -= 1;
        if chunk.used == 0 {
            self.chunks.remove(&c);
        }
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks held (for tests of the layout).
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a `HashMap`, as the reference.
        #[test]
        fn behaves_like_a_hash_map(
            ops in proptest::collection::vec((0u64..2_000, any::<Option<u8>>()), 0..300)
        ) {
            let mut ours: DenseMap<Option<u8>> = DenseMap::default();
            let mut reference: HashMap<u64, u8> = HashMap::new();
            for (id, v) in ops {
                match v {
                    Some(v) => {
                        ours.set(id, Some(v));
                        reference.insert(id, v);
                    }
                    None => {
                        let got = ours.remove(id).flatten();
                        prop_assert_eq!(got, reference.remove(&id));
                    }
                }
                prop_assert_eq!(ours.len(), reference.len());
            }
            for id in 0..2_000 {
                prop_assert_eq!(ours.get(id).copied().flatten(), reference.get(&id).copied());
            }
            // A chunk is held exactly while one of its ids has a value.
            let mut held: Vec<u64> = reference.keys().map(|id| id / CHUNK as u64).collect();
            held.sort_unstable();
            held.dedup();
            prop_assert_eq!(ours.chunks(), held.len());
        }
    }

    #[test]
    fn setting_a_free_value_removes() {
        let mut m: DenseMap<Option<u8>> = DenseMap::default();
        m.set(5, Some(1));
        m.set(5, None);
        assert!(m.is_empty());
        assert_eq!(m.chunks(), 0);
        assert_eq!(m.get(5), None);
    }
}
