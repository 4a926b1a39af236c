//! Topology hiding in what pointsman writes about its destinations: the Record-Route of a dialog
//! names the destination that answered (trunk affinity for the caller's in-dialog requests), and
//! the carrier reads every Record-Route. It carries a token, not the name: the first 48 bits of
//! HMAC-SHA256 over the name, keyed with `[node] topology_key` (the same on every node of a pair;
//! the built-in key when none is set, which keeps names out of sight but lets someone who knows
//! this code test guesses). A token is stable across reloads and restarts for a name, so a
//! dialog keeps its affinity through both; a name that comes back in `psd=` (a dialog of a
//! release that wrote names) is still taken.
//!
//! It must not: write or accept anything that tells the carrier a destination's name or address.

use routing_rules::{DestId, Router};
use std::collections::HashMap;

/// The key when `[node] topology_key` is not set.
const BUILT_IN_KEY: &[u8] = b"pointsman topology hiding: set [node] topology_key";

/// A `psd=` token: 12 hex digits.
const TOKEN_HEX: usize = 12;

/// The key destination tokens are made with.
#[derive(Clone)]
pub(super) struct TopologyKey(ring::hmac::Key);

impl TopologyKey {
    /// `secret` (`[node] topology_key`), or the built-in key.
    pub(super) fn new(secret: Option<&str>) -> TopologyKey {
        let bytes = secret.map_or(BUILT_IN_KEY, str::as_bytes);
        TopologyKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The token of destination `name`.
    pub(super) fn token(&self, name: &str) -> String {
        let tag = ring::hmac::sign(&self.0, name.as_bytes());
        let mut token = String::with_capacity(TOKEN_HEX);
        for b in tag.as_ref().iter().take(TOKEN_HEX / 2) {
            token.push(char::from(HEX[usize::from(b >> 4)]));
            token.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        token
    }
}

impl std::fmt::Debug for TopologyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopologyKey(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Every destination's token of one rule set, both ways.
#[derive(Debug, Default)]
pub(super) struct DestTokens {
    by_dest: Vec<String>,
    by_token: HashMap<String, DestId>,
}

impl DestTokens {
    /// The tokens of `router`'s destinations under `key`.
    pub(super) fn new(router: &Router, key: &TopologyKey) -> DestTokens {
        let by_dest: Vec<String> = router
            .rules
            .destinations
            .iter()
            .map(|d| key.token(&d.name))
            .collect();
        let by_token = by_dest
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), DestId(i as u32)))
            .collect();
        DestTokens { by_dest, by_token }
    }

    /// The token `psd=` carries for `dest`.
    pub(super) fn of(&self, dest: DestId) -> &str {
        self.by_dest.get(dest.0 as usize).map_or("", String::as_str)
    }

    /// The destination a `psd=` value names: a token, or (a dialog of an earlier release) a
    /// destination's name.
    pub(super) fn dest(&self, router: &Router, psd: &str) -> Option<DestId> {
        self.by_token
            .get(psd)
            .copied()
            .or_else(|| router.destination_by_name(psd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_12_hex_digits_stable_for_a_name_and_key_and_differs_by_key() {
        let key = TopologyKey::new(Some("pair-secret-1"));
        let t = key.token("primary");
        assert_eq!(t.len(), TOKEN_HEX);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(t, TopologyKey::new(Some("pair-secret-1")).token("primary"));
        assert_ne!(t, key.token("secondary"));
        assert_ne!(t, TopologyKey::new(Some("pair-secret-2")).token("primary"));
        assert_ne!(t, TopologyKey::new(None).token("primary"));
        assert!(!t.contains("primary"));
    }
}
