//! What the routing decision may look at in a request: [`Call`], filled in by the proxy core
//! from a scanned message, with no SIP syntax here. It borrows everything (no allocation per
//! call) and carries the call's `entropy`, so the decision is a pure function of its inputs.

use crate::CallFacts;

/// Looks up request headers for `match.header` conditions. Implemented by the proxy core over
/// its scanned message; `[(name, value)]` slices implement it for tests and tools.
pub trait Headers {
    /// The value of the first header called `name` (case-insensitive), surrounding whitespace
    /// trimmed; `None` if the request has no such header.
    fn header(&self, name: &str) -> Option<&str>;
}

/// A request without headers (or whose headers the rules do not need).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Headers for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

impl Headers for &[(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

impl Headers for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// One new call, as the routing decision sees it.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// User part of the Request-URI (the DID), or the number of a `tel:` URI.
    pub to_user: Option<&'a str>,
    /// The caller's number: From user part (or P-Asserted-Identity, as the core chooses).
    pub from_user: Option<&'a str>,
    /// Name of the listener the call came in on.
    pub listener: Option<&'a str>,
    /// The request's headers, for `match.header`.
    pub headers: &'a dyn Headers,
    /// The Call-ID, for `hash_on = "call-id"`.
    pub call_id: Option<&'a str>,
    /// Random bits for `weighted` groups (the core draws them per call; tests fix them).
    pub entropy: u64,
}

impl Default for Call<'_> {
    fn default() -> Self {
        Call {
            to_user: None,
            from_user: None,
            listener: None,
            headers: &NoHeaders,
            call_id: None,
            entropy: 0,
        }
    }
}

impl<'a> From<CallFacts<'a>> for Call<'a> {
    fn from(f: CallFacts<'a>) -> Call<'a> {
        Call {
            to_user: f.to_user,
            from_user: f.from_user,
            listener: f.listener,
            ..Call::default()
        }
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("to_user", &self.to_user)
            .field("from_user", &self.from_user)
            .field("listener", &self.listener)
            .field("call_id", &self.call_id)
            .field("entropy", &self.entropy)
            .finish_non_exhaustive()
    }
}
