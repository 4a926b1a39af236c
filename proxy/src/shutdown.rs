//! Stopping on SIGTERM or SIGINT without cutting calls that ring.
//!
//! At the first signal the node stops taking calls: new INVITEs get 503 with Retry-After and
//! `/ready` answers 503, while everything of the calls in progress goes on. The process ends
//! as soon as no call is in setup, when `[node] shutdown_grace` is over, or at once on a second
//! signal; it logs what it left each time. Answered calls do not hold the stop: pointsman
//! carries no media, and their in-dialog requests reach the node that takes its place (the
//! restarted one, or the other node of a pair).
//!
//! [`next`] decides with time passed in; [`Signals`] is the part that waits.

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
pub enum Next {
    /// Calls are still in setup and the grace goes on.
    Wait,
    /// No call is in setup: exit now.
    Done,
    /// The grace is over with calls still in setup: exit now, and say so.
    GraceOver,
}

/// Stopped at `stopped`, with `grace` for calls in setup: what to do at `now`.
pub fn next(stopped: Instant, grace: Duration, now: Instant, calls_in_setup: usize) -> Next {
    if calls_in_setup == 0 {
        Next::Done
    } else if now.saturating_duration_since(stopped) >= grace {
        Next::GraceOver
    } else {
        Next::Wait
    }
}

/// SIGTERM and SIGINT, caught from the moment of [`Signals::install`]: one that comes while
/// the node starts is served once it runs.
pub struct Signals {
    runtime: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
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
    pub fn wait_and_stop(
        self,
        node: &Node,
        grace: Duration,
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
            let stopped = Instant::now();
            loop {
                match next(stopped, grace, Instant::now(), core.calls_in_setup()) {
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
                    "stopped at once on a second signal: calls in setup are cut"
                );
                return Ok(());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_node_exits_when_no_call_is_in_setup_or_the_grace_is_over() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(25);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(next(t0, grace, t0, 0), Next::Done, "nothing to wait for");
        assert_eq!(next(t0, grace, t0, 3), Next::Wait);
        assert_eq!(next(t0, grace, at(24_999), 1), Next::Wait);
        assert_eq!(
            next(t0, grace, at(10_000), 0),
            Next::Done,
            "the last one ended"
        );
        assert_eq!(next(t0, grace, at(25_000), 1), Next::GraceOver);
        assert_eq!(next(t0, grace, at(90_000), 2), Next::GraceOver);
        // No grace: calls in setup are cut at once.
        assert_eq!(next(t0, Duration::ZERO, t0, 1), Next::GraceOver);
        // A clock read before the stop (another thread's) is no time passed.
        assert_eq!(next(at(5), grace, t0, 1), Next::Wait);
    }
}
