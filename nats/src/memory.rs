//! The in-process bus: the single-machine default (`standalone`, `demo`)
//! and the reference the NATS implementation is tested against.
//!
//! It behaves like the JetStream stream it stands in for: one global
//! sequence, an epoch chosen at creation (so cursors of another incarnation
//! are recognised), bounded history per guild, de-duplication by event id
//! inside a window, live delivery per guild that never skips a stored event
//! (a lagging subscriber is refilled from history), request/reply with one
//! server per request, and a small key/value map.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};
use voicewatch_protocol::{Cursor, SignedEvent, Snowflake};

use crate::bus::{
    Bus, BusError, Delivery, DeliveryStream, IncomingRequest, PublishAck, Replay, RequestStream,
    Respond,
};

/// Limits of a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemoryBusConfig {
    /// Events kept per guild for replay (oldest dropped first).
    pub history_per_guild: usize,
    /// How long an event id is remembered for de-duplication.
    pub duplicate_window: Duration,
    /// Live events buffered per guild for a slow subscriber before it is
    /// refilled from history instead. Small on purpose: the ring is
    /// allocated whole for every guild that has a subscriber or an event
    /// (1,024 slots cost ~180 KiB a guild), and a lagging subscriber loses
    /// nothing, it is refilled from history.
    pub live_buffer: usize,
    /// Requests queued per server before a request waits.
    pub request_queue: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            history_per_guild: 10_000,
            duplicate_window: Duration::from_secs(120),
            live_buffer: 64,
            request_queue: 256,
        }
    }
}

struct GuildLog {
    history: VecDeque<Delivery>,
    /// Highest sequence of this guild dropped from history (0: none), so a
    /// replay knows whether history still reaches back to a cursor.
    trimmed_through: u64,
    live: broadcast::Sender<Delivery>,
}

struct Server {
    id: u64,
    tx: mpsc::Sender<IncomingRequest>,
}

struct State {
    seq: u64,
    guilds: HashMap<Snowflake, GuildLog>,
    seen: HashMap<String, (Instant, Cursor)>,
    seen_order: VecDeque<(Instant, String)>,
    servers: HashMap<String, Vec<Server>>,
    next_server: u64,
    round_robin: u64,
    kv: HashMap<String, Bytes>,
}

/// The in-process [`Bus`]. Cheap to share behind an `Arc`.
pub struct MemoryBus {
    epoch: u64,
    config: MemoryBusConfig,
    state: Arc<Mutex<State>>,
    offline: AtomicBool,
}

/// Epochs are creation times in unix milliseconds, made strictly increasing
/// within the process so that two buses created in the same millisecond
/// still tell their cursors apart.
fn next_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(MemoryBusConfig::default())
    }
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        let config = MemoryBusConfig {
            history_per_guild: config.history_per_guild.max(1),
            live_buffer: config.live_buffer.max(1),
            request_queue: config.request_queue.max(1),
            ..config
        };
        Self {
            epoch: next_epoch(),
            config,
            state: Arc::new(Mutex::new(State {
                seq: 0,
                guilds: HashMap::new(),
                seen: HashMap::new(),
                seen_order: VecDeque::new(),
                servers: HashMap::new(),
                next_server: 0,
                round_robin: 0,
                kv: HashMap::new(),
            })),
            offline: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &MemoryBusConfig {
        &self.config
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Fault injection for tests of callers: while offline, `publish`
    /// fails with [`BusError::Unavailable`] and `is_connected` is false,
    /// as when a NATS server is unreachable. Subscriptions stay.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    fn cursor(&self, seq: u64) -> Cursor {
        Cursor::new(self.epoch, seq)
    }

    fn expire_seen(&self, st: &mut State, now: Instant) {
        while let Some((at, _)) = st.seen_order.front() {
            if now.duration_since(*at) < self.config.duplicate_window {
                break;
            }
            if let Some((at, id)) = st.seen_order.pop_front()
                && st.seen.get(&id).is_some_and(|(t, _)| *t == at)
            {
                st.seen.remove(&id);
            }
        }
    }

    fn guild_log<'a>(&self, st: &'a mut State, guild: Snowflake) -> &'a mut GuildLog {
        let live_buffer = self.config.live_buffer;
        st.guilds.entry(guild).or_insert_with(|| GuildLog {
            history: VecDeque::new(),
            trimmed_through: 0,
            live: broadcast::channel(live_buffer).0,
        })
    }

    /// The stored events of `guild` after `seq`, and whether history still
    /// reached back that far.
    fn history_after(st: &State, guild: Snowflake, seq: u64) -> (Vec<Delivery>, bool) {
        match st.guilds.get(&guild) {
            None => (Vec::new(), true),
            Some(log) => {
                let start = log.history.partition_point(|d| d.cursor.seq <= seq);
                let events = log.history.range(start..).cloned().collect();
                (events, log.trimmed_through <= seq)
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, event: &SignedEvent) -> Result<PublishAck, BusError> {
        if self.offline.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("in-process bus is offline".into()));
        }
        let now = Instant::now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.expire_seen(st, now);
        if let Some((_, cursor)) = st.seen.get(&event.id) {
            return Ok(PublishAck {
                cursor: *cursor,
                duplicate: true,
            });
        }
        st.seq += 1;
        let cursor = self.cursor(st.seq);
        st.seen.insert(event.id.clone(), (now, cursor));
        st.seen_order.push_back((now, event.id.clone()));
        let delivery = Delivery {
            event: event.clone(),
            cursor,
        };
        let cap = self.config.history_per_guild;
        let log = self.guild_log(st, event.guild_id());
        if log.history.len() >= cap
            && let Some(old) = log.history.pop_front()
        {
            log.trimmed_through = old.cursor.seq;
        }
        log.history.push_back(delivery.clone());
        // Sent under the lock: live order is stream order. No receivers is
        // not an error.
        let _ = log.live.send(delivery);
        Ok(PublishAck {
            cursor,
            duplicate: false,
        })
    }

    async fn subscribe(&self, guild: Snowflake) -> Result<DeliveryStream, BusError> {
        let (rx, after) = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let after = st.seq;
            (self.guild_log(st, guild).live.subscribe(), after)
        };
        let state = Arc::clone(&self.state);
        struct Sub {
            rx: broadcast::Receiver<Delivery>,
            last: u64,
            refill: VecDeque<Delivery>,
            state: Arc<Mutex<State>>,
            guild: Snowflake,
        }
        let sub = Sub {
            rx,
            last: after,
            refill: VecDeque::new(),
            state,
            guild,
        };
        let stream = futures::stream::unfold(sub, |mut sub| async move {
            loop {
                if let Some(d) = sub.refill.pop_front() {
                    sub.last = d.cursor.seq;
                    return Some((d, sub));
                }
                match sub.rx.recv().await {
                    Ok(d) if d.cursor.seq <= sub.last => continue,
                    Ok(d) => {
                        sub.last = d.cursor.seq;
                        return Some((d, sub));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let (events, complete) =
                            MemoryBus::history_after(&sub.state.lock(), sub.guild, sub.last);
                        if !complete {
                            tracing::warn!(
                                guild = %sub.guild,
                                missed,
                                "live subscriber lagged past the guild's history; events lost"
                            );
                        }
                        sub.refill = events.into();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn head(&self) -> Result<Cursor, BusError> {
        Ok(self.cursor(self.state.lock().seq))
    }

    async fn replay(
        &self,
        guilds: &[Snowflake],
        after: Cursor,
        limit: usize,
    ) -> Result<Replay, BusError> {
        let st = self.state.lock();
        let head = self.cursor(st.seq);
        // Another incarnation's cursor says nothing about this one: offer
        // everything this one holds, and say it is not a recovery.
        let same_epoch = after.epoch == self.epoch && after.seq <= st.seq;
        let from = if same_epoch { after.seq } else { 0 };
        let mut recovered = same_epoch;
        let mut events = Vec::new();
        let mut seen_guilds = Vec::with_capacity(guilds.len());
        for &g in guilds {
            if seen_guilds.contains(&g) {
                continue;
            }
            seen_guilds.push(g);
            let (mut evs, complete) = Self::history_after(&st, g, from);
            recovered &= complete;
            events.append(&mut evs);
        }
        drop(st);
        events.sort_unstable_by_key(|d| d.cursor.seq);
        if events.len() > limit {
            events.truncate(limit);
            recovered = false;
        }
        Ok(Replay {
            events,
            recovered,
            head,
        })
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let work = async {
            let (tx, rx) = oneshot::channel();
            let mut request = IncomingRequest {
                payload,
                responder: Box::new(MemoryResponder { tx }),
            };
            loop {
                let server = {
                    let mut st = self.state.lock();
                    st.round_robin = st.round_robin.wrapping_add(1);
                    let pick = st.round_robin;
                    let servers = st.servers.get_mut(subject);
                    match servers {
                        Some(list) => {
                            list.retain(|s| !s.tx.is_closed());
                            if list.is_empty() {
                                None
                            } else {
                                let i = (pick % list.len() as u64) as usize;
                                Some((list[i].id, list[i].tx.clone()))
                            }
                        }
                        None => None,
                    }
                };
                let Some((id, tx)) = server else {
                    return Err(BusError::NoResponders(subject.to_owned()));
                };
                match tx.send(request).await {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        // That server stopped between the pick and the send.
                        request = back;
                        let mut st = self.state.lock();
                        if let Some(list) = st.servers.get_mut(subject) {
                            list.retain(|s| s.id != id);
                        }
                    }
                }
            }
            // A server that drops the request without answering is like
            // one that never answers.
            rx.await.map_err(|_| BusError::Timeout)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(BusError::Timeout)) | Err(_) => Err(BusError::Timeout),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn serve(&self, subject: &str) -> Result<RequestStream, BusError> {
        let (tx, rx) = mpsc::channel(self.config.request_queue);
        let mut st = self.state.lock();
        st.next_server += 1;
        let id = st.next_server;
        st.servers
            .entry(subject.to_owned())
            .or_default()
            .push(Server { id, tx });
        Ok(tokio_stream_from(rx))
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Bytes>, BusError> {
        crate::validate_kv_key(key)?;
        Ok(self.state.lock().kv.get(key).cloned())
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        crate::validate_kv_key(key)?;
        self.state.lock().kv.insert(key.to_owned(), value);
        Ok(())
    }

    fn is_connected(&self) -> bool {
        !self.offline.load(Ordering::SeqCst)
    }
}

fn tokio_stream_from(rx: mpsc::Receiver<IncomingRequest>) -> RequestStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed()
}

struct MemoryResponder {
    tx: oneshot::Sender<Bytes>,
}

#[async_trait]
impl Respond for MemoryResponder {
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<(), BusError> {
        // The requester may have timed out and gone; that is its business.
        let _ = self.tx.send(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{event, guild};

    #[tokio::test]
    async fn history_is_bounded_and_replay_says_so() {
        let bus = MemoryBus::new(MemoryBusConfig {
            history_per_guild: 3,
            ..Default::default()
        });
        let g = guild(1);
        let start = bus.head().await.unwrap();
        for i in 0..5 {
            bus.publish(&event(g, &format!("h-{i}"))).await.unwrap();
        }
        let r = bus.replay(&[g], start, 100).await.unwrap();
        assert_eq!(r.events.len(), 3);
        assert!(!r.recovered, "two events were trimmed after the cursor");
        let r = bus
            .replay(&[g], Cursor::new(bus.epoch(), 2), 100)
            .await
            .unwrap();
        assert!(r.recovered);
        assert_eq!(r.events.len(), 3);
    }

    #[tokio::test]
    async fn lagging_subscriber_is_refilled_from_history() {
        let bus = MemoryBus::new(MemoryBusConfig {
            live_buffer: 2,
            ..Default::default()
        });
        let g = guild(7);
        let mut sub = bus.subscribe(g).await.unwrap();
        for i in 0..20 {
            bus.publish(&event(g, &format!("lag-{i}"))).await.unwrap();
        }
        for want in 1..=20u64 {
            let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(d.cursor.seq, want);
        }
    }

    #[tokio::test]
    async fn epochs_differ_between_buses() {
        assert_ne!(MemoryBus::default().epoch(), MemoryBus::default().epoch());
    }
}
