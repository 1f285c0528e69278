//! A bounded, ordered outbox in front of any [`Bus`].
//!
//! The gateway worker must not lose events while NATS is unreachable, nor
//! block its shards. Events wait here, in order, and one background task
//! publishes them front first, retrying with exponential backoff until the
//! bus takes each one. A repeated publish after an ambiguous failure is
//! harmless: the stream de-duplicates by `Nats-Msg-Id`. When the outbox is
//! full, [`Outbox::try_send`] refuses with [`BusError::OutboxFull`]
//! (back-pressure): nothing is dropped silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use voicewatch_protocol::SignedEvent;

use crate::bus::{Bus, BusError};

/// Limits of an [`Outbox`].
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Events waiting (including the one being published) before
    /// `try_send` refuses. Default 10,000 (`VOICEWATCH_OUTBOX_SIZE`).
    pub capacity: usize,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

struct Shared {
    queue: Mutex<VecDeque<SignedEvent>>,
    /// Events taken and not yet stored (queue plus the one in flight).
    depth: AtomicUsize,
    published: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    wake: Notify,
    drained: Notify,
}

/// The outbox; dropping it stops the publisher task (events still waiting
/// are lost with the process, as they would be on a crash).
pub struct Outbox {
    shared: Arc<Shared>,
    capacity: usize,
    stop: CancellationToken,
}

impl Outbox {
    /// Starts the publisher task on the current tokio runtime.
    pub fn new(bus: Arc<dyn Bus>, config: OutboxConfig) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            depth: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            wake: Notify::new(),
            drained: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(run(bus, Arc::clone(&shared), config.clone(), stop.clone()));
        Self {
            shared,
            capacity: config.capacity.max(1),
            stop,
        }
    }

    /// Queues one event, or refuses with [`BusError::OutboxFull`] when
    /// `capacity` events are already waiting.
    pub fn try_send(&self, event: SignedEvent) -> Result<(), BusError> {
        {
            let mut q = self.shared.queue.lock();
            if self.shared.depth.load(Ordering::SeqCst) >= self.capacity {
                return Err(BusError::OutboxFull {
                    capacity: self.capacity,
                });
            }
            self.shared.depth.fetch_add(1, Ordering::SeqCst);
            q.push_back(event);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Events waiting, including one being published (a gauge).
    pub fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events the bus stored (counter; duplicates included).
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Events the stream already had (counter).
    pub fn duplicates(&self) -> u64 {
        self.shared.duplicates.load(Ordering::Relaxed)
    }

    /// Failed publish attempts that were retried (counter).
    pub fn retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    /// Events the bus refused for good (configuration errors; counter).
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Waits until every queued event is stored, or `timeout` passes
    /// (graceful shutdown, tests). True when empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let drained = self.shared.drained.notified();
                if self.depth() == 0 {
                    return;
                }
                drained.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn retryable(e: &BusError) -> bool {
    !matches!(e, BusError::Config(_) | BusError::Closed)
}

async fn run(
    bus: Arc<dyn Bus>,
    shared: Arc<Shared>,
    config: OutboxConfig,
    stop: CancellationToken,
) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_jitter()
        .without_max_times();
    loop {
        let wake = shared.wake.notified();
        let next = shared.queue.lock().front().cloned();
        let Some(event) = next else {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = wake => continue,
            }
        };
        let attempt = (|| bus.publish(&event))
            .retry(backoff)
            .when(retryable)
            .notify(|e, after| {
                shared.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?after, id = %event.id, "publish failed; retrying");
            });
        // Stop first: a dropped outbox must not start a publish (with an
        // unbiased select, a task first polled after the drop could still
        // publish once if the bus happened to be up).
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(ack) => {
                shared.published.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, id = %event.id, "bus refused an event for good");
            }
        }
        shared.queue.lock().pop_front();
        if shared.depth.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.drained.notify_waiters();
        }
    }
}
