//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3, §9.2).
//!
//! A key is a 64-bit keyed hash (SipHash with a per-process random key, so a peer cannot aim
//! collisions) of the fields that identify a transaction. Tables are keyed by it directly (see
//! [`crate::table`]): hashing a key again would only cost time.

use crate::wire::{Message, Method, StartLine};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

/// The RFC 3261 branch prefix that makes a branch globally unique.
pub(super) const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

pub type TxKey = u64;

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
