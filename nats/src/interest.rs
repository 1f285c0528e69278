//! Per-guild live subscriptions shared by everyone on a node.
//!
//! An edge subscribes to a guild only while some client wants it:
//! [`Interest::acquire`] returns a guard once the guild's subscription is
//! active (the first acquire subscribes, later ones share it), and dropping
//! the last guard unsubscribes. Every delivery of every guild goes to one
//! sink that the node provides (the edge's hub).
//!
//! The map of guilds and their reference counts is changed only under one
//! lock, so acquire and release never race: a release that drops the count
//! to zero removes the entry and stops its subscription under the lock, and
//! an acquire that comes after it starts a fresh one. A stopped
//! subscription checks its `alive` flag before each call of the sink, so it
//! stops delivering as soon as the release returns (an event already being
//! handed over may still arrive). The sink must not block; it may acquire
//! and release guards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use voicewatch_protocol::Snowflake;

use crate::bus::{Bus, BusError, Delivery};

/// Where deliveries of every guild go.
pub type Sink = Arc<dyn Fn(Delivery) + Send + Sync>;

#[derive(Clone)]
enum SubState {
    Starting,
    Active,
    Failed(BusError),
}

struct Entry {
    id: u64,
    refs: usize,
    state: watch::Receiver<SubState>,
    stop: CancellationToken,
    alive: Arc<AtomicBool>,
}

struct Inner {
    bus: Arc<dyn Bus>,
    sink: Sink,
    guilds: Mutex<(u64, HashMap<Snowflake, Entry>)>,
}

/// The node's guild subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct Interest {
    inner: Arc<Inner>,
}

/// Keeps one guild subscribed; dropping the last one unsubscribes.
pub struct InterestGuard {
    inner: Arc<Inner>,
    guild: Snowflake,
    id: u64,
}

impl std::fmt::Debug for InterestGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterestGuard")
            .field("guild", &self.guild)
            .finish()
    }
}

impl InterestGuard {
    pub fn guild(&self) -> Snowflake {
        self.guild
    }
}

impl Interest {
    pub fn new(bus: Arc<dyn Bus>, sink: Sink) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                sink,
                guilds: Mutex::new((0, HashMap::new())),
            }),
        }
    }

    /// Guilds subscribed right now (a gauge).
    pub fn active_guilds(&self) -> usize {
        self.inner.guilds.lock().1.len()
    }

    /// Returns once `guild`'s live subscription is active: every event
    /// stored after this returns reaches the sink.
    pub async fn acquire(&self, guild: Snowflake) -> Result<InterestGuard, BusError> {
        let (guard, mut state) = {
            let mut g = self.inner.guilds.lock();
            let (next_id, map) = &mut *g;
            let entry = map.entry(guild).or_insert_with(|| {
                *next_id += 1;
                start(&self.inner, guild, *next_id)
            });
            entry.refs += 1;
            (
                InterestGuard {
                    inner: Arc::clone(&self.inner),
                    guild,
                    id: entry.id,
                },
                entry.state.clone(),
            )
        };
        // If this future is dropped while waiting, `guard` releases.
        loop {
            let s = state.borrow_and_update().clone();
            match s {
                SubState::Active => return Ok(guard),
                SubState::Failed(e) => return Err(e),
                SubState::Starting => {
                    if state.changed().await.is_err() {
                        return Err(BusError::Closed);
                    }
                }
            }
        }
    }
}

fn start(inner: &Arc<Inner>, guild: Snowflake, id: u64) -> Entry {
    let (tx, rx) = watch::channel(SubState::Starting);
    let stop = CancellationToken::new();
    let alive = Arc::new(AtomicBool::new(true));
    let bus = Arc::clone(&inner.bus);
    let sink = Arc::clone(&inner.sink);
    let weak = Arc::downgrade(inner);
    let task_stop = stop.clone();
    let task_alive = Arc::clone(&alive);
    tokio::spawn(async move {
        let subscribed = tokio::select! {
            r = bus.subscribe(guild) => r,
            _ = task_stop.cancelled() => return,
        };
        let mut stream = match subscribed {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%guild, error = %e, "guild subscription failed");
                // Forget the failed entry so that the next acquire retries.
                if let Some(inner) = weak.upgrade() {
                    let mut g = inner.guilds.lock();
                    if g.1.get(&guild).is_some_and(|e| e.id == id) {
                        g.1.remove(&guild);
                    }
                }
                let _ = tx.send(SubState::Failed(e));
                return;
            }
        };
        let _ = tx.send(SubState::Active);
        loop {
            let next = tokio::select! {
                d = stream.next() => d,
                _ = task_stop.cancelled() => return,
            };
            let Some(delivery) = next else {
                tracing::warn!(%guild, "guild subscription ended");
                return;
            };
            if !task_alive.load(Ordering::SeqCst) {
                return;
            }
            sink(delivery);
        }
    });
    Entry {
        id,
        refs: 0,
        state: rx,
        stop,
        alive,
    }
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        let mut g = self.inner.guilds.lock();
        let map = &mut g.1;
        let Some(entry) = map.get_mut(&self.guild) else {
            return;
        };
        if entry.id != self.id {
            // Our subscription failed and was replaced; nothing to release.
            return;
        }
        entry.refs -= 1;
        if entry.refs == 0
            && let Some(entry) = map.remove(&self.guild)
        {
            entry.alive.store(false, Ordering::SeqCst);
            entry.stop.cancel();
        }
    }
}
