//! The table of recently answered calls, keyed by a hash of Call-ID and both tags.
//!
//! The core needs it to tell a late retransmission of an answered call's 2xx (harmless) from a
//! 2xx nobody relayed (a ghost call to tear down). A UAS retransmits its 2xx for at most 64·T1
//! (RFC 3261 §13.3.1.4), so an entry is needed only that long: the core's periodic sweep forgets
//! entries older than twice that, which keeps the table as small as the answer rate × 2·64·T1
//! whatever the calls do later. Entries also leave early on the BYE's final response.

use crate::transaction::key::KeyMap;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Dialogs {
    table: KeyMap<Instant>,
}

impl Dialogs {
    pub fn insert(&self, key: u64, since: Instant) {
        self.table.insert(key, since);
    }
    pub fn remove(&self, key: u64) {
        self.table.remove(&key);
    }
    /// Forgets every dialog answered at or before `cutoff`.
    pub fn expire_before(&self, cutoff: Instant) {
        self.table.retain(|_, since| *since > cutoff);
    }
    pub fn size_for_load(&self) {
        crate::transaction::key::size_for_load(&self.table);
    }
    pub fn contains(&self, key: u64) -> bool {
        self.table.contains_key(&key)
    }
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// See [`crate::transaction::key::room`].
    pub fn room(&self) -> usize {
        crate::transaction::key::room(&self.table)
    }
}
