//! The dialog table: answered calls, keyed by a hash of Call-ID and both tags.
//!
//! The core needs it to tell a late retransmission of an answered call's 2xx (harmless) from a
//! 2xx nobody relayed (a ghost call to tear down). Entries leave on the BYE's final response.

use dashmap::DashMap;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Dialogs {
    table: DashMap<u64, Instant>,
}

impl Dialogs {
    pub fn insert(&self, key: u64, since: Instant) {
        self.table.insert(key, since);
    }
    pub fn remove(&self, key: u64) {
        self.table.remove(&key);
    }
    pub fn contains(&self, key: u64) -> bool {
        self.table.contains_key(&key)
    }
    pub fn len(&self) -> usize {
        self.table.len()
    }
}
