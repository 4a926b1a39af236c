//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2).
//!
//! A key is a 64-bit keyed hash (SipHash with a per-process random key, so a peer cannot aim
//! collisions) of the fields that identify a transaction. Tables are keyed by it directly, with
//! [`KeyHasher`]: hashing a key again would only cost time.

use crate::wire::{Message, Method, StartLine};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// The RFC 3261 branch prefix that makes a branch globally unique.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

pub type TxKey = u64;

/// The hasher of tables keyed by [`TxKey`]s and other keyed hashes: the key already is a
/// uniformly distributed secret-keyed hash, so it is used as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

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

/// A table keyed by keyed hashes ([`TxKey`], dialog keys).
pub type KeyMap<V> = dashmap::DashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Gives a table's memory back once it holds less than a quarter of what it has room for (after
/// a burst of load), and all of it once the table is empty, so a node returns to its idle
/// footprint. A table holding a few entries keeps room for about a thousand: shrinking it
/// would only make the next calls grow it again.
pub fn shrink_if_sparse<V>(table: &KeyMap<V>) {
    let capacity = table.capacity();
    let len = table.len();
    if (len == 0 && capacity > 0) || capacity > 4 * len + 1024 {
        table.shrink_to_fit();
    }
}

/// Which transaction a method belongs to: ACK goes with its INVITE, CANCEL has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodClass {
    Invite,
    Cancel,
    Other,
}

impl MethodClass {
    pub fn of(method: Method) -> MethodClass {
        match method {
            Method::Invite | Method::Ack => MethodClass::Invite,
            Method::Cancel => MethodClass::Cancel,
            _ => MethodClass::Other,
        }
    }
}

/// Builds keys with one process-wide random seed.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    seed: RandomState,
}

impl Keys {
    pub fn new() -> Keys {
        Keys::default()
    }

    fn finish(&self, parts: &[&[u8]], class: MethodClass, extra: u32) -> TxKey {
        let mut h = self.seed.build_hasher();
        for p in parts {
            p.hash(&mut h);
        }
        class.hash(&mut h);
        extra.hash(&mut h);
        h.finish()
    }

    /// The server transaction a request belongs to, with `class` overriding the request's own
    /// (a CANCEL looks up its INVITE with `MethodClass::Invite`, §9.2).
    pub fn server_with_class(&self, msg: &Message<'_>, class: MethodClass) -> TxKey {
        let via = &msg.top_via;
        let port = via.port.unwrap_or(0) as u32;
        // For `Other`, the method token itself tells two non-INVITE transactions apart.
        let method = match (class, msg.start) {
            (MethodClass::Other, StartLine::Request { method_span, .. }) => msg.slice(method_span),
            _ => &[],
        };
        match via.branch.map(|b| msg.slice(b)) {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => {
                self.finish(&[branch, msg.slice(via.host), method], class, port)
            }
            // RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number and the top Via.
            _ => {
                let uri = match msg.start {
                    StartLine::Request { uri, .. } => msg.slice(uri),
                    StartLine::Response { .. } => &[],
                };
                let from_tag = msg.from.tag.map(|t| msg.slice(t)).unwrap_or(&[]);
                self.finish(
                    &[
                        uri,
                        from_tag,
                        msg.slice(msg.call_id),
                        msg.slice(via.value),
                        method,
                    ],
                    class,
                    msg.cseq,
                )
            }
        }
    }

    /// The server transaction of a received request.
    pub fn server(&self, msg: &Message<'_>) -> TxKey {
        let class = msg
            .method()
            .map(MethodClass::of)
            .unwrap_or(MethodClass::Other);
        self.server_with_class(msg, class)
    }

    /// The client transaction pointsman created with this branch.
    pub fn client(&self, branch: &[u8], class: MethodClass) -> TxKey {
        self.finish(&[branch], class, 0)
    }

    /// The client transaction a received response belongs to (`None` without a branch).
    pub fn client_of_response(&self, msg: &Message<'_>) -> Option<TxKey> {
        let branch = msg.top_via.branch.map(|b| msg.slice(b))?;
        Some(self.client(branch, MethodClass::of(msg.cseq_method)))
    }

    /// Any other keyed hash of a few fields (dialogs, ghost calls).
    pub fn of(&self, parts: &[&[u8]]) -> u64 {
        self.finish(parts, MethodClass::Other, u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64) -> KeyMap<[u8; 64]> {
        let table = KeyMap::default();
        for k in 0..n {
            table.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), [0; 64]);
        }
        table
    }

    #[test]
    fn tables_give_their_room_back_when_sparse_and_all_of_it_when_empty() {
        // After a burst: a few entries left in room for thousands -> shrunk to fit them.
        let table = filled(20_000);
        table.retain(|k, _| k % 100 == 0);
        let left = table.len();
        shrink_if_sparse(&table);
        assert!(table.capacity() < 4 * left + 1024, "{}", table.capacity());

        // A small table in use keeps its room: the next calls would only grow it again.
        let small = filled(500);
        small.retain(|k, _| k % 10 == 0);
        let before = small.capacity();
        shrink_if_sparse(&small);
        assert_eq!(small.capacity(), before);

        // Empty: nothing is kept, however little room it had.
        small.clear();
        shrink_if_sparse(&small);
        assert_eq!(small.capacity(), 0);
        let never_used: KeyMap<u8> = KeyMap::default();
        shrink_if_sparse(&never_used);
        assert_eq!(never_used.capacity(), 0);
    }
}
