//! The compiled index of every route's `to` numbers and `to_prefix` prefixes, so finding the
//! routes a DID can take costs one hash lookup and one walk of at most [`MAX_DIGITS`] trie
//! nodes, however many numbers are configured.
//!
//! Exact numbers live in a hash map keyed by the packed number (24 bytes an entry, so a million
//! DIDs fit in a few tens of MB); prefixes in a trie with one node per symbol. Each hit is a
//! list of route ids in file order. It owns no policy: which of the candidate routes wins is
//! [`Router::route_for`](crate::Router::route_for)'s business.
//!
//! [`MAX_DIGITS`]: crate::number::MAX_DIGITS

use crate::number::{symbol, Number, SYMBOLS};
use crate::RouteId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A run of `pool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Child index by symbol; 0 = none (the root is never a child).
    children: [u32; SYMBOLS],
    /// Routes with a prefix ending here.
    routes: Span,
}

/// Hashes the packed-number keys: they come from the config, not from peers, so a fixed,
/// fast mixer is enough (a peer only chooses what is looked up, never what is stored).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = crate::hash::mix(self.0 ^ crate::hash::fnv1a(bytes));
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = crate::hash::mix(self.0 ^ (k as u64) ^ crate::hash::mix((k >> 64) as u64));
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct NumberIndex {
    exact: HashMap<u128, Span, BuildHasherDefault<KeyHasher>>,
    trie: Vec<Node>,
    pool: Vec<RouteId>,
}

impl NumberIndex {
    /// Builds the index from (number, route) pairs; routes must come in ascending order per
    /// number (they do: routes are compiled in file order).
    pub(crate) fn build(exact: Vec<(Number, RouteId)>, prefixes: Vec<(Number, RouteId)>) -> Self {
        let mut index = NumberIndex {
            exact: HashMap::with_capacity_and_hasher(exact.len(), Default::default()),
            trie: vec![Node::default()],
            pool: Vec::with_capacity(exact.len() + prefixes.len()),
        };
        let mut keyed: Vec<(u128, RouteId)> = exact.iter().map(|(n, r)| (n.key(), *r)).collect();
        keyed.sort_unstable();
        keyed.dedup();
        let mut i = 0;
        while i < keyed.len() {
            let key = keyed[i].0;
            let start = index.pool.len() as u32;
            while i < keyed.len() && keyed[i].0 == key {
                index.pool.push(keyed[i].1);
                i += 1;
            }
            let len = index.pool.len() as u32 - start;
            index.exact.insert(key, Span { start, len });
        }

        // Trie: routes per node first, then laid out in the pool.
        let mut lists: Vec<Vec<RouteId>> = vec![Vec::new()];
        for (number, route) in prefixes {
            let mut node = 0usize;
            for &b in number.as_bytes() {
                let s = symbol(b) as usize;
                let child = index.trie[node].children[s];
                node = if child == 0 {
                    index.trie.push(Node::default());
                    lists.push(Vec::new());
                    let new = index.trie.len() - 1;
                    index.trie[node].children[s] = new as u32;
                    new
                } else {
                    child as usize
                };
            }
            if lists[node].last() != Some(&route) {
                lists[node].push(route);
            }
        }
        for (node, mut routes) in lists.into_iter().enumerate() {
            if routes.is_empty() {
                continue;
            }
            routes.sort_unstable();
            routes.dedup();
            let start = index.pool.len() as u32;
            index.pool.extend_from_slice(&routes);
            index.trie[node].routes = Span {
                start,
                len: routes.len() as u32,
            };
        }
        index
    }

    fn slice(&self, span: Span) -> &[RouteId] {
        &self.pool[span.start as usize..(span.start + span.len) as usize]
    }

    /// Routes listing `number` in `to`, in file order.
    pub(crate) fn exact(&self, number: &Number) -> &[RouteId] {
        self.exact
            .get(&number.key())
            .map_or(&[], |&span| self.slice(span))
    }

    /// Calls `f(prefix_len, routes)` for every configured prefix of `digits` (the whole of
    /// `digits` included), shortest first; `routes` are in file order.
    pub(crate) fn prefixes_of<'s>(
        &'s self,
        digits: &[u8],
        mut f: impl FnMut(usize, &'s [RouteId]),
    ) {
        let mut node = 0usize;
        for (i, &b) in digits.iter().enumerate() {
            let child = self.trie[node].children[symbol(b) as usize];
            if child == 0 {
                return;
            }
            node = child as usize;
            let span = self.trie[node].routes;
            if span.len > 0 {
                f(i + 1, self.slice(span));
            }
        }
    }

    /// Whether any route has a prefix condition.
    pub(crate) fn has_prefixes(&self) -> bool {
        self.trie.len() > 1
    }
}
