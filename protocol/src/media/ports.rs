//! The relay's port pool for one local IP: a configured inclusive range handed out in pairs (an
//! even RTP port and the odd RTCP port after it, RFC 3550 §11), with O(1) allocation and release
//! from a FIFO free list (the longest-freed pair goes first, so a late packet of an ended call is
//! unlikely to land on a new one) and a guard against double release.
//!
//! It must not: bind sockets, know about sessions, or grow beyond the configured range.

use std::collections::VecDeque;

/// One local IP's RTP/RTCP port pairs.
#[derive(Debug)]
pub(crate) struct PortPool {
    /// The first pair's RTP port (even).
    base: u16,
    /// Pair indices free to hand out, oldest-freed first.
    free: VecDeque<u16>,
    /// Per pair: handed out now.
    taken: Vec<bool>,
}

impl PortPool {
    /// The pairs that fit in `min..=max`: the first even port ≥ `min` and every even port whose
    /// odd partner is ≤ `max`. An empty or inverted range gives an empty pool.
    pub(crate) fn new(min: u16, max: u16) -> PortPool {
        let base = min.saturating_add(min % 2);
        let pairs = if max > base {
            (u32::from(max) - u32::from(base)).div_ceil(2)
        } else {
            0
        };
        let pairs = u16::try_from(pairs).unwrap_or(u16::MAX);
        PortPool {
            base,
            free: (0..pairs).collect(),
            taken: vec![false; usize::from(pairs)],
        }
    }

    /// Every port of the pool (RTP and RTCP), in order.
    pub(crate) fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.taken.len() * 2).filter_map(|i| u16::try_from(i).ok().map(|i| self.base + i))
    }

    /// Ports in the pool, both kinds.
    pub(crate) fn capacity(&self) -> usize {
        self.taken.len() * 2
    }

    /// The offset of `port` among [`PortPool::ports`], if it is one of them.
    pub(crate) fn index_of(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.base)?);
        (i < self.capacity()).then_some(i)
    }

    /// A free pair's RTP port (its RTCP port is +1), or `None` when the pool is exhausted.
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        let pair = self.free.pop_front()?;
        if let Some(t) = self.taken.get_mut(usize::from(pair)) {
            *t = true;
        }
        Some(self.base + pair * 2)
    }

    /// Returns the pair whose RTP port is `rtp`; a port not handed out is ignored (`false`).
    pub(crate) fn free(&mut self, rtp: u16) -> bool {
        let Some(offset) = rtp.checked_sub(self.base) else {
            return false;
        };
        if offset % 2 != 0 {
            return false;
        }
        let pair = offset / 2;
        match self.taken.get_mut(usize::from(pair)) {
            Some(t) if *t => {
                *t = false;
                self.free.push_back(pair);
                true
            }
            _ => false,
        }
    }

    /// Ports (not pairs) handed out now.
    pub(crate) fn in_use(&self) -> usize {
        (self.taken.len() - self.free.len()) * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_allocates_even_odd_pairs_within_the_range() {
        let mut pool = PortPool::new(10001, 10006);
        // 10002/3, 10004/5; 10006 has no partner.
        assert_eq!(pool.capacity(), 4);
        assert_eq!(
            pool.ports().collect::<Vec<_>>(),
            [10002, 10003, 10004, 10005]
        );
        assert_eq!(pool.alloc(), Some(10002));
        assert_eq!(pool.alloc(), Some(10004));
        assert_eq!(pool.alloc(), None);
        assert_eq!(pool.in_use(), 4);
        pool.free(10002);
        pool.free(10002); // double release ignored
        pool.free(10003); // not a pair's RTP port
        pool.free(9000);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.alloc(), Some(10002));
        assert_eq!(pool.index_of(10005), Some(3));
        assert_eq!(pool.index_of(10006), None);
        assert_eq!(pool.index_of(1), None);
    }

    #[test]
    fn pool_reuses_the_longest_freed_pair_first() {
        let mut pool = PortPool::new(20000, 20007);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        pool.free(a);
        pool.free(b);
        assert_eq!(pool.alloc(), Some(20004));
        assert_eq!(pool.alloc(), Some(20006));
        assert_eq!(pool.alloc(), Some(a));
    }

    #[test]
    fn pool_of_an_empty_range_is_empty() {
        let mut pool = PortPool::new(5000, 5000);
        assert_eq!(pool.alloc(), None);
        assert_eq!(PortPool::new(6000, 5000).capacity(), 0);
        assert_eq!(PortPool::new(65534, 65535).capacity(), 2);
    }
}
