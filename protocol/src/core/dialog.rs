//! The table of recently answered calls, keyed by a hash of Call-ID and both tags.
//!
//! The core needs it to tell a late retransmission of an answered call's 2xx (harmless) from a
//! 2xx nobody relayed (a ghost call to tear down). A UAS retransmits its 2xx for at most 64·T1
//! (RFC 3261 §13.3.1.4), so an entry is needed only that long: the core's periodic sweep forgets
//! entries older than twice that, which keeps the table as small as the answer rate × 2·64·T1
//! whatever the calls do later. Entries also leave early on the BYE's final response.

use crate::table::{self, KeyMap};
use std::time::Instant;

pub(super) struct Dialogs {
    table: KeyMap<Instant>,
}

impl Default for Dialogs {
    fn default() -> Self {
        Dialogs {
            table: table::new_table(),
        }
    }
}

impl Dialogs {
    pub(super) fn insert(&self, key: u64, since: Instant) {
        self.table.insert(key, since);
    }
    pub(super) fn remove(&self, key: u64) {
        self.table.remove(&key);
    }
    /// Forgets the dialogs of shard `shard` answered at or before `cutoff`, then sizes the
    /// shard for what is left (see [`table::size_shard_for_load`]); returns the entries it read
    /// and the entries it moved.
    pub(super) fn sweep_shard(&self, shard: usize, cutoff: Option<Instant>) -> (usize, usize) {
        let mut read = 0;
        if let Some(cutoff) = cutoff {
            let (old, walked) = table::keys_in_shard(&self.table, shard, |since| *since <= cutoff);
            read = walked;
            for k in old {
                self.table.remove_if(&k, |_, since| *since <= cutoff);
            }
        }
        (read, table::size_shard_for_load(&self.table, shard))
    }
    /// When dialog `key` was answered, if it is held.
    pub(super) fn since(&self, key: u64) -> Option<Instant> {
        self.table.get(&key).map(|e| *e.value())
    }
    pub(super) fn contains(&self, key: u64) -> bool {
        self.table.contains_key(&key)
    }
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
    /// See [`table::room`].
    pub(super) fn room(&self) -> usize {
        table::room(&self.table)
    }
}
