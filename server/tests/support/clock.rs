//! A paused tokio clock that moves only when the test moves it, for tests of timeouts.
//!
//! Plain `tokio::time::pause` advances the clock to the next timer whenever the runtime is
//! idle, also while a byte is on its way through a loopback socket, so a timer could fire
//! before the frame that should have beaten it is read. A [`FrozenClock`] holds that
//! auto-advance off (a blocking task that is running inhibits it) and moves time in small
//! ticks, with a real pause after each for the sockets to deliver. Seconds of node time pass
//! in a tenth of the wall time, in order, and every wait keeps its deadline.
//!
//! Needs the current-thread runtime (`#[tokio::test]`) with the node in the same runtime
//! ([`super::TestServer`]).

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

/// Node time per tick.
const TICK: Duration = Duration::from_millis(20);
/// Wall time after each tick, for loopback I/O to arrive and be handled.
const SETTLE: Duration = Duration::from_millis(2);

/// The paused clock of the current runtime; auto-advance is back on when dropped.
pub(crate) struct FrozenClock {
    /// Dropping it ends the blocking task that inhibits auto-advance.
    _hold: mpsc::Sender<()>,
}

impl FrozenClock {
    /// Pauses the clock of the current (current-thread) runtime.
    pub(crate) fn freeze() -> FrozenClock {
        tokio::time::pause();
        let (hold, held) = mpsc::channel::<()>();
        drop(tokio::task::spawn_blocking(move || {
            // Returns when the sender is dropped.
            let _ = held.recv();
        }));
        FrozenClock { _hold: hold }
    }

    /// Runs `work` to its end while the clock ticks forward; its own deadlines bound it.
    pub(crate) async fn during<T>(&self, work: impl Future<Output = T>) -> T {
        let ticking = async {
            loop {
                settle().await;
                tokio::time::advance(TICK).await;
            }
        };
        tokio::select! {
            out = work => out,
            _ = ticking => unreachable!("the ticks never end"),
        }
    }

    /// Lets `duration` of node time pass, tick by tick.
    pub(crate) async fn pass(&self, duration: Duration) {
        self.during(tokio::time::sleep(duration)).await;
    }
}

/// Waits `SETTLE` of wall time without moving the paused clock.
async fn settle() {
    tokio::task::spawn_blocking(|| std::thread::sleep(SETTLE))
        .await
        .expect("a sleeping thread does not panic");
}
