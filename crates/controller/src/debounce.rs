//! Debounce: turn a burst of change notifications into one compile.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};

/// Something that says when a change happened.
pub trait Changes {
    /// Resolves to `true` on a change, `false` once no more changes can come.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;
}

impl<T: Send> Changes for mpsc::UnboundedReceiver<T> {
    async fn changed(&mut self) -> bool {
        self.recv().await.is_some()
    }
}

impl<T: Send + Sync> Changes for watch::Receiver<T> {
    async fn changed(&mut self) -> bool {
        watch::Receiver::changed(self).await.is_ok()
    }
}

/// Waits for a change, then for the changes to settle: until `holdoff` passes without a new
/// one, but never longer than `max_delay` after the first, so a steady stream of changes
/// still gets compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub holdoff: Duration,
    pub max_delay: Duration,
}

impl Debounce {
    /// Returns `false` only when the first wait already found that no change can come.
    pub async fn settle(&self, changes: &mut impl Changes) -> bool {
        if !changes.changed().await {
            return false;
        }
        let deadline = Instant::now() + self.max_delay;
        loop {
            let quiet = (Instant::now() + self.holdoff).min(deadline);
            match timeout_at(quiet, changes.changed()).await {
                Ok(true) if Instant::now() < deadline => continue,
                // Deadline reached, quiet period passed, or sender gone: compile what we have.
                _ => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn debounce() -> Debounce {
        Debounce {
            holdoff: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_once_after_the_holdoff() {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..5 {
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Keep the sender alive past the holdoff.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        assert!(debounce().settle(&mut rx).await);
        let waited = start.elapsed();
        // Last event at 80 ms, plus 100 ms of quiet.
        assert!(
            waited >= Duration::from_millis(180) && waited < Duration::from_millis(200),
            "{waited:?}"
        );
        // All five were consumed by the one settle.
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_cut_at_the_max_delay() {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                if tx.send(()).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(debounce().settle(&mut rx).await);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1000) && waited < Duration::from_millis(1100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_source_ends_the_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        drop(tx);
        assert!(!debounce().settle(&mut rx).await);
    }
}
