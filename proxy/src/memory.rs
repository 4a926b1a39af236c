//! Handing memory back to the operating system after load.
//!
//! The core frees its per-call state within 64·T1 and shrinks its tables once they empty out,
//! but the C allocator keeps freed pages mapped for reuse, so a node that took 3,000 calls/s
//! would stay at its peak RSS forever. A watcher thread compares the core's table sizes with the
//! largest it saw since it last trimmed; once they fall to an eighth of that, load has gone and
//! `malloc_trim` returns the free pages. Under steady load nothing happens: the allocator reuses
//! what was freed, and trimming would only cost the workers time.

use crate::proxy::Core;
use std::sync::Arc;
use std::time::Duration;

/// How often the watcher looks.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Tables below this many entries at their peak are not worth a trim.
const WORTH_TRIMMING: usize = 2_000;

/// Decides when to trim, from the table sizes it is shown (time and allocator left out).
#[derive(Debug, Default)]
pub struct TrimPolicy {
    peak: usize,
    /// A trim happened while entries were still held: trim once more when they are all gone.
    drained_pending: bool,
}

impl TrimPolicy {
    /// `held`: entries in the core's tables now. True when memory should be handed back.
    pub fn observe(&mut self, held: usize) -> bool {
        if held == 0 && std::mem::take(&mut self.drained_pending) {
            self.peak = 0;
            return true;
        }
        self.peak = self.peak.max(held);
        if self.peak >= WORTH_TRIMMING && held.saturating_mul(8) <= self.peak {
            self.peak = held;
            self.drained_pending = held > 0;
            return true;
        }
        false
    }
}

/// Starts the watcher thread for `core`.
pub fn spawn_trimmer(core: Arc<Core>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pointsman-memory".into())
        .spawn(move || {
            let mut policy = TrimPolicy::default();
            loop {
                std::thread::sleep(CHECK_EVERY);
                let (servers, clients, dialogs) = core.table_sizes();
                if policy.observe(servers + clients + dialogs + core.answered_calls()) {
                    trim();
                }
            }
        })?;
    Ok(())
}

/// Returns the allocator's free pages to the operating system.
pub fn trim() {
    // The metrics exporter frees drained histogram blocks through crossbeam's epoch-based
    // garbage collection, which only runs as threads pin: once the calls stop nobody does, and
    // each block left over pins a page of its own. Collect them first.
    for _ in 0..256 {
        crossbeam_epoch::pin().flush();
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any argument is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_load_falls_away_and_never_under_steady_load() {
        let mut p = TrimPolicy::default();
        // Ramp up and hold steady: no trim.
        for held in [0, 10_000, 50_000, 64_000, 63_000, 64_500, 60_000] {
            assert!(!p.observe(held), "{held}");
        }
        // The run ends: tables drain over 64·T1.
        assert!(!p.observe(30_000));
        assert!(p.observe(7_000), "an eighth of the peak: trim");
        assert!(!p.observe(6_000));
        assert!(p.observe(0), "all drained: once more");
        assert!(!p.observe(0), "and not again");
        assert!(!p.observe(100));
        // A small node never trims.
        let mut small = TrimPolicy::default();
        assert!(!small.observe(1_000));
        assert!(!small.observe(0));
    }
}
