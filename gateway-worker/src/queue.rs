//! An identify queue honouring `max_concurrency`: shard `i` is in bucket
//! `i % max_concurrency`, each bucket identifies at most once per interval.
//! Like twilight's `InMemoryQueue`, but the interval is configurable so that
//! tests against the simulator do not wait 5 s per re-identify.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use twilight_gateway::queue::Queue;

#[derive(Debug, Clone)]
pub struct SpacedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    concurrency: u16,
    interval: Duration,
    /// Next instant each bucket may identify.
    next: Mutex<HashMap<u16, Instant>>,
}

impl SpacedQueue {
    pub fn new(concurrency: u16, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                concurrency: concurrency.max(1),
                interval,
                next: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Queue for SpacedQueue {
    fn enqueue(&self, id: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let bucket = (id % u32::from(self.inner.concurrency)) as u16;
        let at = {
            let mut next = self.inner.next.lock();
            let now = Instant::now();
            let slot = next.entry(bucket).or_insert(now);
            let at = (*slot).max(now);
            *slot = at + self.inner.interval;
            at
        };
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = tx.send(());
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_identifies_per_bucket() {
        let q = SpacedQueue::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        let (a, b, c) = (q.enqueue(0), q.enqueue(1), q.enqueue(2));
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO, "two buckets identify at once");
        c.await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(5),
            "shard 2 shares bucket 0"
        );
    }
}
