//! The DMZ gate in front of the proxy core: which sources may talk to a listener at all
//! (CIDR allow lists), how many new transactions a source may start (a token bucket per source
//! IP), which User-Agents are scanners, and when pointsman is too busy to take new calls.
//!
//! Pure and time-passed-in like the core: it answers questions, the core acts on the answers
//! (drop silently, or 503 with Retry-After). Its one table, the rate-limit buckets, is capped:
//! when full, idle buckets are swept, and sources that still find no room share one overflow
//! bucket, so a flood of spoofed addresses cannot grow memory.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// An IPv4 or IPv6 network, `192.0.2.0/24`, `2001:db8::/32` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip/prefix` or a bare `ip` (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("prefix length {p:?} must be 0..={max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            // An IPv4 source on a dual-stack socket arrives as ::ffff:a.b.c.d.
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A listener's allow list; `None` lets every source in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub allow: Option<Vec<Cidr>>,
}

impl Acl {
    /// Whether the source is in the list (an open listener lists nobody).
    pub fn lists(&self, ip: IpAddr) -> bool {
        self.allow
            .as_ref()
            .is_some_and(|nets| nets.iter().any(|n| n.contains(ip)))
    }

    /// Whether the source may send to this listener at all.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.allow.is_none() || self.lists(ip)
    }
}

/// `[guard]`: rate limits, scanner blocking, overload shedding, table caps.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardConfig {
    /// New out-of-dialog transactions per second per source IP, for sources that are neither
    /// on the listener's allow list nor a destination (an open listener lists nobody). The
    /// default is far above what one carrier trunk sends from one address: it stops a single
    /// flooding address, never a trunk.
    pub rate: f64,
    /// Bucket size: how many may come at once.
    pub burst: f64,
    /// The same limit for sources on the listener's allow list and destinations; `None` (the
    /// default) does not limit them: a carrier the operator allowed is never throttled unless
    /// asked for. Past it they get 503 + Retry-After, never silence.
    pub allowed_rate: Option<f64>,
    /// Bucket size of `allowed_rate`.
    pub allowed_burst: f64,
    /// Most sources with a bucket of their own.
    pub max_sources: usize,
    /// Out-of-dialog requests whose User-Agent contains one of these (case-insensitive) are
    /// dropped without an answer.
    pub block_user_agents: Vec<String>,
    /// Shed new INVITEs (503 + Retry-After) while a UDP socket's receive queue is fuller than
    /// this fraction of its buffer.
    pub overload_backlog: f64,
    /// Most transactions in progress at once (calls being set up, requests being relayed); a
    /// new INVITE beyond it gets 503 + Retry-After. Transactions that only absorb
    /// retransmissions after their final answer do not count: they cost a few hundred bytes
    /// each and there are at most the call rate × 64·T1 of them.
    pub max_transactions: usize,
    /// Most answered calls held at once (until their BYE); a new INVITE beyond it gets 503 +
    /// Retry-After.
    pub max_calls: usize,
    /// Retry-After of pointsman's own 503s (overload, rate limit, nothing to route to).
    pub retry_after: Duration,
}

/// Default `[guard] rate`: new transactions per second from one address that is neither allowed
/// nor a destination. Carrier trunks send a few hundred calls/s from one SBC address at their
/// busiest; 5,000/s is above any trunk and under half of what one node handles, so one flooding
/// address cannot take a node's capacity from the others.
pub(crate) const DEFAULT_RATE: f64 = 5_000.0;

/// Default `[guard] block_user_agents`: tools that scan the internet for SIP servers.
pub(crate) const SCANNER_USER_AGENTS: [&str; 6] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "vaxsipuseragent",
];

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            rate: DEFAULT_RATE,
            burst: 2.0 * DEFAULT_RATE,
            allowed_rate: None,
            allowed_burst: 0.0,
            max_sources: 65_536,
            block_user_agents: SCANNER_USER_AGENTS.iter().map(|s| s.to_string()).collect(),
            overload_backlog: 0.5,
            max_transactions: 200_000,
            max_calls: 100_000,
            retry_after: Duration::from_secs(5),
        }
    }
}

impl GuardConfig {
    /// Whether a User-Agent value belongs to a blocked scanner.
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.block_user_agents.iter().any(|p| {
            let p = p.as_bytes();
            !p.is_empty()
                && user_agent
                    .windows(p.len())
                    .any(|w| w.eq_ignore_ascii_case(p))
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = self.at.max(now);
    }
}

/// A token bucket per source IP, capped in number.
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: DashMap<IpAddr, Bucket>,
    /// Shared by the sources that found no room of their own.
    overflow: std::sync::Mutex<Bucket>,
}

impl RateLimiter {
    /// `rate` tokens a second per source, at most `burst` saved up, at most `max_sources`
    /// buckets of their own.
    pub(crate) fn new(rate: f64, burst: f64, max_sources: usize, now: Instant) -> RateLimiter {
        RateLimiter {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            max_sources: max_sources.max(1),
            buckets: DashMap::new(),
            overflow: std::sync::Mutex::new(Bucket {
                tokens: burst.max(1.0),
                at: now,
            }),
        }
    }

    /// The limit `[guard]` sets for sources that are neither allowed nor destinations.
    pub(crate) fn for_unlisted(cfg: &GuardConfig, now: Instant) -> RateLimiter {
        RateLimiter::new(cfg.rate, cfg.burst, cfg.max_sources, now)
    }

    /// The limit `[guard]` sets for allowed sources and destinations, if any.
    pub(crate) fn for_allowed(cfg: &GuardConfig, now: Instant) -> Option<RateLimiter> {
        cfg.allowed_rate
            .map(|rate| RateLimiter::new(rate, cfg.allowed_burst, cfg.max_sources, now))
    }

    /// Takes one token for `ip`: `false` means over its rate.
    pub(crate) fn take(&self, ip: IpAddr, now: Instant) -> bool {
        if let Some(mut b) = self.buckets.get_mut(&ip) {
            return self.spend(&mut b, now);
        }
        if self.buckets.len() >= self.max_sources {
            self.sweep(now);
        }
        if self.buckets.len() >= self.max_sources {
            let mut b = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            return self.spend(&mut b, now);
        }
        let mut b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.spend(&mut b, now)
    }

    fn spend(&self, b: &mut Bucket, now: Instant) -> bool {
        b.refill(self.rate, self.burst, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets the buckets that have refilled (their sources have been quiet long enough).
    pub(crate) fn sweep(&self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.refill(rate, burst, now);
            b.tokens < burst
        });
    }

    /// Sources with a bucket of their own.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_match_their_networks_only() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("192.0.2.77")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(net.contains(ip("::ffff:192.0.2.5")), "v4-mapped sources");
        let one = Cidr::parse("198.51.100.7").unwrap();
        assert!(one.contains(ip("198.51.100.7")) && !one.contains(ip("198.51.100.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("203.0.113.9")));
        for bad in ["192.0.2.0/33", "nonsense/8", "2001:db8::/129", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_open_listener_admits_everyone_and_lists_nobody() {
        let open = Acl::default();
        assert!(open.admits(ip("203.0.113.1")) && !open.lists(ip("203.0.113.1")));
        let closed = Acl {
            allow: Some(vec![Cidr::parse("10.1.0.0/16").unwrap()]),
        };
        assert!(closed.admits(ip("10.1.2.3")) && closed.lists(ip("10.1.2.3")));
        assert!(!closed.admits(ip("10.2.0.1")));
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let cfg = GuardConfig {
            rate: 10.0,
            burst: 5.0,
            ..GuardConfig::default()
        };
        let rl = RateLimiter::for_unlisted(&cfg, t0);
        let a = ip("192.0.2.1");
        assert_eq!((0..8).filter(|_| rl.take(a, t0)).count(), 5, "the burst");
        // 10/s: one more token every 100 ms.
        assert!(!rl.take(a, t0 + Duration::from_millis(50)));
        assert!(rl.take(a, t0 + Duration::from_millis(160)));
        // Another source has its own bucket.
        assert!(rl.take(ip("192.0.2.2"), t0));
    }

    #[test]
    fn the_bucket_table_is_capped_and_quiet_sources_are_swept() {
        let t0 = Instant::now();
        let cfg = GuardConfig {
            rate: 1.0,
            burst: 2.0,
            max_sources: 100,
            ..GuardConfig::default()
        };
        let rl = RateLimiter::for_unlisted(&cfg, t0);
        // A flood from 10,000 spoofed addresses: the table never passes its cap, and the
        // sources without room share the overflow bucket (2 tokens).
        let mut passed = 0;
        for n in 0..10_000u32 {
            let src = IpAddr::from((0x0a00_0000u32 + n).to_be_bytes());
            passed += usize::from(rl.take(src, t0));
        }
        assert_eq!(rl.len(), 100);
        assert_eq!(passed, 100 + 2);
        // Once they have been quiet long enough to refill, they are forgotten.
        rl.sweep(t0 + Duration::from_secs(3));
        assert!(rl.is_empty());
    }

    #[test]
    fn scanner_user_agents_are_recognised_case_insensitively() {
        let cfg = GuardConfig::default();
        assert!(cfg.is_scanner(b"friendly-scanner"));
        assert!(cfg.is_scanner(b"SIPVicious 0.3.4"));
        assert!(!cfg.is_scanner(b"Carrier-SBC/5.1"));
        let none = GuardConfig {
            block_user_agents: vec![],
            ..GuardConfig::default()
        };
        assert!(!none.is_scanner(b"friendly-scanner"));
    }
}
