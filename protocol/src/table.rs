//! The tables every part of the core keeps (transactions, calls, dialogs, ghosts): sharded
//! `DashMap`s keyed by keyed hashes ([`crate::transaction::TxKey`], dialog keys), and the
//! shard-level machinery that keeps their memory in line with their load (sizing a shard,
//! reading a shard's keys, measuring room) for the core's sweep.
//!
//! It owns how a table is built and sized; it must not know what the tables hold or when they
//! are swept (the core decides). It uses dashmap's raw shard API, which dashmap documents as
//! unstable: the workspace pins dashmap to an exact version for it.

use std::hash::{BuildHasher, Hasher};

/// The hasher of tables keyed by `TxKey`s and other keyed hashes: the key already is a
/// uniformly distributed secret-keyed hash, so it is used as it is.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; folds anything else in so the hasher stays correct.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// A table keyed by keyed hashes (`TxKey`s, dialog keys). Make one with [`new_table`].
pub(crate) type KeyMap<V> = dashmap::DashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Shards of every [`KeyMap`], whatever the core count (dashmap's default is 4 per core: 8 on
/// two). A shard grows, rehashes in place or is resized as a whole, and whatever thread does it
/// stops that long: at 7,700 calls/s the server table holds ~500,000 entries, which took 41 ms
/// to grow on the project's VM, so ~5 ms a shard as 8 shards and ~0.3 ms (up to ~1 ms) as 128.
pub(crate) const SHARDS: usize = 128;

/// An empty [`KeyMap`] of [`SHARDS`] shards.
pub(crate) fn new_table<V>() -> KeyMap<V> {
    KeyMap::with_hasher_and_shard_amount(Default::default(), SHARDS)
}

/// Sizes shard `shard` of a table for what it holds (run periodically by the core's sweep, a
/// shard at a time, off the message path); returns how many entries it moved (0 when the shard
/// kept its size), the measure of the time it took:
///
/// - empty: all its memory goes back, so a node returns to its idle footprint;
/// - more than half full: it grows to twice what it holds. hashbrown reuses a removed entry's
///   slot only after a rehash, and a table more than half full that runs out of free slots that
///   way doubles instead: under steady load that came minutes in, as a step in RSS. Grown here,
///   it takes that size while the load ramps up and then rehashes in place;
/// - less than an eighth full (after a burst): it shrinks to twice what it holds.
///
/// The bands leave room between growing and shrinking, so a table never flips between them.
pub(crate) fn size_shard_for_load<V>(table: &KeyMap<V>, shard: usize) -> usize {
    let Some(shard) = table.shards().get(shard) else {
        return 0;
    };
    let hasher = table.hasher().clone();
    let rehash = |entry: &(u64, dashmap::SharedValue<V>)| hasher.hash_one(entry.0);
    let (len, room) = {
        let s = shard.read();
        (s.len(), full_capacity(s.buckets()))
    };
    if len == 0 && room > 0 {
        shard.write().shrink_to(0, rehash);
        0
    } else if room > 8 * len + SMALL_SHARD {
        shard.write().shrink_to(2 * len, rehash);
        len
    } else if 2 * len > room {
        // Asking for more than the table holds makes hashbrown double it.
        let mut s = shard.write();
        let (len, room) = (s.len(), full_capacity(s.buckets()));
        s.reserve((room + 1).saturating_sub(len), rehash);
        len
    } else {
        0
    }
}

/// The keys in shard `shard` of a table whose value `pick` chooses, read under the shard's lock
/// (what a sweep that walks a table a shard at a time removes), and how many entries it read.
pub(crate) fn keys_in_shard<V>(
    table: &KeyMap<V>,
    shard: usize,
    pick: impl Fn(&V) -> bool,
) -> (Vec<u64>, usize) {
    let Some(shard) = table.shards().get(shard) else {
        return (Vec::new(), 0);
    };
    let s = shard.read();
    // SAFETY: the iterator and the buckets it yields are used only while `s`, the shard's read
    // guard, is held, so the table can neither change nor be freed under them.
    let keys = unsafe {
        s.iter()
            .map(|bucket| bucket.as_ref())
            .filter(|(_, v)| pick(v.get()))
            .map(|(k, _)| *k)
            .collect()
    };
    (keys, s.len())
}

/// Entries a table holds before it must grow, summed over its shards: what its memory follows
/// (unlike `DashMap::capacity`, not lowered by the slots removals left "deleted").
pub(crate) fn room<V>(table: &KeyMap<V>) -> usize {
    table
        .shards()
        .iter()
        .map(|s| full_capacity(s.read().buckets()))
        .sum()
}

/// How many entries a hashbrown table of `buckets` holds before it must grow (its load factor),
/// whatever "deleted" markers currently use up.
fn full_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets.saturating_sub(1)
    } else {
        buckets / 8 * 7
    }
}

/// A shard with room for this many entries more than eight times what it holds keeps them: a
/// node taking a few calls would only grow it again.
const SMALL_SHARD: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    /// [`size_shard_for_load`] over every shard, as a whole sweep pass does.
    fn size_for_load<V>(table: &KeyMap<V>) {
        for shard in 0..table.shards().len() {
            size_shard_for_load(table, shard);
        }
    }

    fn filled(n: u64) -> KeyMap<[u8; 64]> {
        let table = new_table();
        for k in 0..n {
            table.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), [0; 64]);
        }
        table
    }

    /// Another call's key in place of `k`'s: anywhere in the table, as real keys are.
    fn churned(k: u64, round: u64) -> u64 {
        (k ^ round)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23)
    }

    #[test]
    fn tables_are_kept_at_most_half_full_and_give_their_room_back_when_sparse_or_empty() {
        // Filled as a ramp-up fills it: more than half full somewhere, then grown to twice.
        let table = filled(20_000);
        size_for_load(&table);
        for shard in table.shards() {
            let s = shard.read();
            assert!(
                2 * s.len() <= s.capacity(),
                "{} in {}",
                s.len(),
                s.capacity()
            );
        }
        // Sized once, it stays: the next sweep under the same load changes nothing.
        let grown = room(&table);
        size_for_load(&table);
        assert_eq!(room(&table), grown);
        // Churn at a steady size (every entry replaced): no doubling, removed slots are reused.
        for round in 1..=5u64 {
            let keys: Vec<u64> = table.iter().map(|e| *e.key()).collect();
            for k in keys {
                table.remove(&k);
                table.insert(churned(k, round), [0; 64]);
            }
            size_for_load(&table);
        }
        assert_eq!(table.len(), 20_000);
        assert_eq!(room(&table), grown, "steady load, steady room");
        // Left to hashbrown, the same churn doubles the table once, long after the ramp-up.
        // (Filled close to its room: that is where removals leave "deleted" markers.)
        let control: KeyMap<[u8; 64]> = new_table();
        let mut k = 0u64;
        while control.len() * 20 < room(&control) * 19 || control.len() < 20_000 {
            k += 1;
            control.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), [0; 64]);
        }
        let before = room(&control);
        for round in 1..=5u64 {
            let keys: Vec<u64> = control.iter().map(|e| *e.key()).collect();
            for k in keys {
                control.remove(&k);
                control.insert(churned(k, round), [0; 64]);
            }
        }
        assert!(room(&control) > before, "{} -> {}", before, room(&control));

        // After a burst: a few entries left in room for thousands -> shrunk to twice them.
        table.retain(|k, _| k % 100 == 0);
        let left = table.len();
        size_for_load(&table);
        assert!(
            table.capacity() <= 4 * left + 8 * SMALL_SHARD,
            "{}",
            table.capacity()
        );
        assert!(table.capacity() >= 2 * left);

        // A small table in use keeps its room: the next calls would only grow it again.
        let small = filled(40 * SHARDS as u64);
        size_for_load(&small);
        small.retain(|k, _| k % 2 == 0);
        let before = small.capacity();
        size_for_load(&small);
        assert_eq!(small.capacity(), before);

        // Empty: nothing is kept, however little room it had.
        small.clear();
        size_for_load(&small);
        assert_eq!(small.capacity(), 0);
        let never_used: KeyMap<u8> = new_table();
        size_for_load(&never_used);
        assert_eq!(never_used.capacity(), 0);
    }
}
