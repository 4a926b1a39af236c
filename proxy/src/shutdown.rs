//! Stopping on SIGTERM or SIGINT without cutting calls that ring.
//!
//! At the first signal the node stops taking calls: new INVITEs get 503 with Retry-After and
//! `/ready` answers 503, while everything of the calls in progress goes on. The process ends
//! once no call has been in setup for [`ack_window`] (the ACK of the last answer must pass:
//! a 2xx retransmitted to a node that never saw the answer would be torn down as a ghost),
//! when `[node] shutdown_grace` is over, or at once on a second signal; it logs what it left
//! each time. Answered calls do not hold the stop: pointsman carries no media, and their
//! in-dialog requests reach the node that takes its place (the restarted one, or the other node
//! of a pair).
//!
//! [`Stop`] decides with time passed in; [`Signals`] is the part that waits.

use crate::node::Node;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

/// How often a stopping node looks at its calls in setup.
const POLL: Duration = Duration::from_millis(20);

/// How often a running node looks whether its workers are still there.
const WATCH: Duration = Duration::from_secs(1);

/// What a stopping node does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Calls are in setup, or the last one left it less than the ACK window ago.
    Wait,
    /// No call in setup: exit now.
    Done,
    /// The grace is over with calls still in setup: exit now, and say so.
    GraceOver,
}

/// How long after the last call left setup a stopping node stays: the ACK of its 2xx must
/// pass. The ACK comes one round trip (T1) after the 2xx; if it is lost the callee sends the
/// 2xx again after T1, then 2·T1, and each is relayed and ACKed again: 4·T1 covers two losses.
pub(crate) fn ack_window(t1: Duration) -> Duration {
    t1 * 4
}

/// A stop in progress, fed what the core holds at each look.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stop {
    at: Instant,
    grace: Duration,
    ack_window: Duration,
    /// The last look that saw a call in setup (the stop itself at first: a call answered just
    /// before the signal needs its ACK too).
    busy_at: Instant,
}

impl Stop {
    pub(crate) fn new(at: Instant, grace: Duration, ack_window: Duration) -> Stop {
        Stop {
            at,
            grace,
            ack_window,
            busy_at: at,
        }
    }

    /// What to do at `now`, with `calls_in_setup` in the core.
    pub(crate) fn next(&mut self, now: Instant, calls_in_setup: usize) -> Next {
        let grace_over = now.saturating_duration_since(self.at) >= self.grace;
        if calls_in_setup > 0 {
            self.busy_at = now;
            return if grace_over {
                Next::GraceOver
            } else {
                Next::Wait
            };
        }
        if grace_over || now.saturating_duration_since(self.busy_at) >= self.ack_window {
            Next::Done
        } else {
            Next::Wait
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment of [`Signals::install`]: one that comes while
/// the node starts is served once it runs.
pub(crate) struct Signals {
    runtime: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Signals> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = {
            let _guard = runtime.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(Signals { runtime, term, int })
    }

    /// Blocks until a signal, then stops `node` as the module says. Returns an error only when
    /// every one of `workers` ended on its own (a node without workers must not look alive).
    pub(crate) fn wait_and_stop(
        self,
        node: &Node,
        grace: Duration,
        ack_window: Duration,
        workers: &[JoinHandle<()>],
    ) -> anyhow::Result<()> {
        let Signals {
            runtime,
            mut term,
            mut int,
        } = self;
        runtime.block_on(async move {
            let first = loop {
                tokio::select! {
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                    _ = tokio::time::sleep(WATCH) => {
                        if workers.iter().all(JoinHandle::is_finished) {
                            error!("every worker has ended: the node stops");
                            anyhow::bail!("every worker thread has ended");
                        }
                    }
                }
            };
            node.stop_taking_calls();
            let core = node.core();
            info!(
                signal = first,
                grace = %humantime::format_duration(grace),
                calls_in_setup = core.calls_in_setup(),
                answered_calls = core.answered_calls(),
                "stopping: new calls get 503, /ready answers 503; calls in setup may finish \
                 until the grace is over (a second signal exits at once)"
            );
            let mut stop = Stop::new(Instant::now(), grace, ack_window);
            loop {
                match stop.next(Instant::now(), core.calls_in_setup()) {
                    Next::Wait => {}
                    Next::Done => {
                        info!(
                            calls_in_setup = 0,
                            answered_calls = core.answered_calls(),
                            "stopped: no call in setup; answered calls go on through the node \
                             that takes this one's place"
                        );
                        return Ok(());
                    }
                    Next::GraceOver => {
                        warn!(
                            calls_in_setup = core.calls_in_setup(),
                            answered_calls = core.answered_calls(),
                            grace = %humantime::format_duration(grace),
                            "stopped: node.shutdown_grace is over with calls still in setup"
                        );
                        return Ok(());
                    }
                }
                let second = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = tokio::time::sleep(POLL) => continue,
                };
                warn!(
                    signal = second,
                    calls_in_setup = core.calls_in_setup(),
                    answered_calls = core.answered_calls(),
                    "stopped at once on a second signal: the calls still in setup are cut"
                );
                return Ok(());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(25);
    const ACK: Duration = Duration::from_secs(2);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_stopping_node_exits_one_ack_window_after_the_last_call_left_setup() {
        let t0 = Instant::now();
        let mut stop = Stop::new(t0, GRACE, ACK);
        assert_eq!(stop.next(t0, 3), Next::Wait);
        assert_eq!(stop.next(ms(t0, 10_000), 1), Next::Wait);
        // The last call was answered: its ACK has 2 s to pass.
        assert_eq!(stop.next(ms(t0, 10_020), 0), Next::Wait);
        assert_eq!(stop.next(ms(t0, 11_999), 0), Next::Wait);
        assert_eq!(stop.next(ms(t0, 12_000), 0), Next::Done);
    }

    #[test]
    fn an_idle_node_waits_one_ack_window_for_an_answer_just_before_the_signal() {
        let t0 = Instant::now();
        let mut stop = Stop::new(t0, GRACE, ACK);
        assert_eq!(stop.next(t0, 0), Next::Wait);
        assert_eq!(stop.next(ms(t0, 1_999), 0), Next::Wait);
        assert_eq!(stop.next(ms(t0, 2_000), 0), Next::Done);
    }

    #[test]
    fn at_the_end_of_the_grace_calls_still_in_setup_are_left() {
        let t0 = Instant::now();
        let mut stop = Stop::new(t0, GRACE, ACK);
        assert_eq!(stop.next(ms(t0, 24_999), 1), Next::Wait);
        assert_eq!(stop.next(ms(t0, 25_000), 1), Next::GraceOver);
        // The grace bounds the ACK window too.
        let mut stop = Stop::new(t0, GRACE, ACK);
        assert_eq!(stop.next(ms(t0, 24_900), 1), Next::Wait);
        assert_eq!(stop.next(ms(t0, 25_000), 0), Next::Done);
        // No grace: nothing waits.
        let mut stop = Stop::new(t0, Duration::ZERO, ACK);
        assert_eq!(stop.next(t0, 1), Next::GraceOver);
        let mut stop = Stop::new(t0, Duration::ZERO, ACK);
        assert_eq!(stop.next(t0, 0), Next::Done);
    }

    #[test]
    fn a_clock_read_before_the_stop_is_no_time_passed() {
        let t0 = Instant::now();
        let mut stop = Stop::new(ms(t0, 5), GRACE, ACK);
        assert_eq!(stop.next(t0, 1), Next::Wait);
    }

    #[test]
    fn the_ack_window_is_four_t1() {
        assert_eq!(
            ack_window(Duration::from_millis(500)),
            Duration::from_secs(2)
        );
    }
}
