//! Handing memory back to the operating system after load.
//!
//! The core frees its per-call state within 64·T1 and shrinks its tables once they empty out,
//! but the C allocator keeps freed pages mapped for reuse, so a node that took 3,000 calls/s
//! would stay at its peak RSS forever. A watcher thread compares the room the core's tables
//! hold with the most it saw since it last trimmed; once that falls to an eighth, load has gone
//! and `malloc_trim` returns the free pages (and once more when the tables hold nothing). Under
//! steady load nothing happens: the allocator reuses what was freed, and trimming would only
//! cost the workers time.
//!
//! glibc also raises its mmap and trim thresholds each time a large block is freed, up to 32 and
//! 64 MB: after a run, a worker's arena then keeps megabytes on top of its heap that neither
//! `free` nor `malloc_trim` (which trims the top of the main arena only) gives back. The
//! thresholds are fixed at start-up instead.

use pointsman_protocol::Core;
use std::sync::Arc;
use std::time::Duration;

/// How often the watcher looks.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Tables with room for fewer entries than this at their peak are not worth a trim.
const WORTH_TRIMMING: usize = 2_000;

/// Decides when to trim, from the table sizes it is shown (time and allocator left out).
#[derive(Debug, Default)]
pub(crate) struct TrimPolicy {
    peak: usize,
    /// A trim happened while entries were still held: trim once more when they are all gone.
    drained_pending: bool,
}

impl TrimPolicy {
    /// `held`: room for entries in the core's tables now. True when memory should be handed back.
    pub(crate) fn observe(&mut self, held: usize) -> bool {
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

/// Blocks at least this large are mapped on their own (and unmapped when freed), and a worker's
/// arena gives back the top of its heap beyond this: glibc's starting values, kept fixed.
const ALLOCATOR_THRESHOLD: libc::c_int = 128 * 1024;

/// Starts the watcher thread for `core`, after fixing the allocator's thresholds.
pub(crate) fn spawn_trimmer(core: Arc<Core>) -> std::io::Result<()> {
    fix_allocator_thresholds();
    std::thread::Builder::new()
        .name("pointsman-memory".into())
        .spawn(move || {
            let mut policy = TrimPolicy::default();
            loop {
                std::thread::sleep(CHECK_EVERY);
                if policy.observe(core.table_room()) {
                    trim();
                }
            }
        })?;
    Ok(())
}

/// Stops glibc from raising its mmap and trim thresholds as large blocks come and go (setting
/// either turns the dynamic adjustment off for both).
pub(crate) fn fix_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's tuning parameters; these are valid values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, ALLOCATOR_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, ALLOCATOR_THRESHOLD);
    }
}

/// Returns the allocator's free pages to the operating system.
pub(crate) fn trim() {
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
