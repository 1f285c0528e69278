//! One conformance suite for every [`Bus`]: each check is a generic
//! function over a [`Harness`], run against the in-process bus and against
//! the JetStream bus on a private nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use voicewatch_bus::testkit::{NatsServer, event, guild};
use voicewatch_bus::{
    Bus, BusError, Delivery, DeliveryStream, Interest, MemoryBus, MemoryBusConfig, NatsArgs,
    NatsBus, Outbox, OutboxConfig, Storage,
};
use voicewatch_protocol::{Cursor, SignedEvent, Snowflake};

const WAIT: Duration = Duration::from_secs(15);

#[async_trait]
trait Harness: Send + Sync {
    fn bus(&self) -> Arc<dyn Bus>;
    /// Another client of the same bus.
    async fn other_client(&self) -> Arc<dyn Bus>;
    /// Makes the bus unreachable (publishes fail).
    async fn outage(&self);
    async fn restore(&self);
    /// Stores `n` events of `guild` that live subscribers do not get on
    /// the live path (so they must be filled from history).
    async fn stored_without_live(&self, guild: Snowflake, ids: &[String]);
    /// Deletes the stream and creates it again (a new epoch); returns the
    /// bus to use from now on.
    async fn recreate_stream(&self) -> Arc<dyn Bus>;
}

async fn next(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("delivery within the timeout")
        .expect("stream open")
}

async fn publish_ok(bus: &dyn Bus, e: &SignedEvent) -> Cursor {
    let ack = bus.publish(e).await.expect("publish");
    assert!(!ack.duplicate, "{} is new", e.id);
    ack.cursor
}

/// Nothing more is delivered: a sentinel published after `guard` arrives
/// first on `stream`.
async fn assert_next_is(stream: &mut DeliveryStream, id: &str) {
    let d = next(stream).await;
    assert_eq!(d.event.id, id, "unexpected delivery");
}

fn uid(tag: &str) -> String {
    format!("{tag}-{}", rand::random::<u64>())
}

// ---------------------------------------------------------------- checks

async fn order_per_guild(h: &dyn Harness) {
    let bus = h.bus();
    let (g1, g2) = (guild(101), guild(102));
    let mut s1 = bus.subscribe(g1).await.unwrap();
    let mut s2 = bus.subscribe(g2).await.unwrap();
    let mut sent1 = Vec::new();
    let mut sent2 = Vec::new();
    let mut last = 0;
    for i in 0..40 {
        let (g, sent) = if i % 3 == 0 {
            (g2, &mut sent2)
        } else {
            (g1, &mut sent1)
        };
        let e = event(g, &uid(&format!("order-{i}")));
        let c = publish_ok(&*bus, &e).await;
        assert!(c.seq > last, "acks increase");
        last = c.seq;
        sent.push((e, c));
    }
    for (stream, sent) in [(&mut s1, &sent1), (&mut s2, &sent2)] {
        for (e, c) in sent {
            let d = next(stream).await;
            assert_eq!(&d.event, e, "exact event, in order");
            assert_eq!(&d.cursor, c);
        }
    }
    assert_eq!(bus.head().await.unwrap().seq, last);
}

async fn dedupe_by_id(h: &dyn Harness) {
    let bus = h.bus();
    let g = guild(201);
    let mut s = bus.subscribe(g).await.unwrap();
    let start = bus.head().await.unwrap();
    let e = event(g, &uid("dup"));
    let first = bus.publish(&e).await.unwrap();
    let again = bus.publish(&e).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate, "second publish of one id is a duplicate");
    assert_eq!(
        again.cursor, first.cursor,
        "a duplicate points at the first copy"
    );
    let f = event(g, &uid("after-dup"));
    publish_ok(&*bus, &f).await;
    assert_next_is(&mut s, &e.id).await;
    assert_next_is(&mut s, &f.id).await;
    let r = bus.replay(&[g], start, 100).await.unwrap();
    assert_eq!(r.events.len(), 2, "stored once");
}

async fn interest_on_off(h: &dyn Harness) {
    let bus = h.bus();
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let interest = Interest::new(
        Arc::clone(&bus),
        Arc::new(move |d| {
            let _ = tx.send(d);
        }),
    );
    let (g, sentinel_guild) = (guild(301), guild(302));

    // Concurrent acquires and releases of one guild.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let interest = interest.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let guard = interest.acquire(g).await.unwrap();
                if (i + j) % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                drop(guard);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
    }
    assert_eq!(interest.active_guilds(), 0, "every guard released");

    // Acquire right after a teardown ends subscribed.
    for _ in 0..10 {
        drop(interest.acquire(g).await.unwrap());
    }
    let held = interest.acquire(g).await.unwrap();
    let shared = interest.acquire(g).await.unwrap();
    assert_eq!(interest.active_guilds(), 1);
    let e = event(g, &uid("interest"));
    publish_ok(&*bus, &e).await;
    let d = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.event.id, e.id);
    drop(held);
    let e2 = event(g, &uid("interest-shared"));
    publish_ok(&*bus, &e2).await;
    let d = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.event.id, e2.id,
        "still subscribed while one guard remains"
    );

    // Released: events of the guild no longer reach the sink.
    drop(shared);
    assert_eq!(interest.active_guilds(), 0);
    let sentinel = interest.acquire(sentinel_guild).await.unwrap();
    publish_ok(&*bus, &event(g, &uid("unwatched"))).await;
    let s = event(sentinel_guild, &uid("sentinel"));
    publish_ok(&*bus, &s).await;
    let d = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.event.id, s.id,
        "the released guild's event was not delivered"
    );
    drop(sentinel);
}

async fn replay_after_cursor(h: &dyn Harness) {
    let bus = h.bus();
    let (g1, g2) = (guild(401), guild(402));
    let mut ids = Vec::new();
    let mut cursors = Vec::new();
    for i in 0..8 {
        let g = if i % 2 == 0 { g1 } else { g2 };
        let e = event(g, &uid(&format!("replay-{i}")));
        cursors.push(publish_ok(&*bus, &e).await);
        ids.push(e.id);
    }
    let after = cursors[1];
    let r = bus.replay(&[g1], after, 100).await.unwrap();
    assert!(r.recovered);
    assert_eq!(r.head, cursors[7]);
    let got: Vec<_> = r.events.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(got, vec![ids[2].clone(), ids[4].clone(), ids[6].clone()]);

    let both = bus.replay(&[g2, g1, g1], after, 100).await.unwrap();
    assert!(both.recovered);
    let got: Vec<_> = both.events.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(got, ids[2..].to_vec(), "merged in stream order, no repeats");

    let capped = bus.replay(&[g1, g2], after, 3).await.unwrap();
    assert!(!capped.recovered, "more than the limit");
    assert_eq!(capped.events.len(), 3);
    assert_eq!(capped.events[0].event.id, ids[2]);

    let at_head = bus.replay(&[g1], cursors[7], 100).await.unwrap();
    assert!(at_head.recovered && at_head.events.is_empty());

    let foreign = Cursor::new(after.epoch.wrapping_add(1), after.seq);
    assert!(!bus.replay(&[g1], foreign, 100).await.unwrap().recovered);

    // The stream is deleted and recreated: old cursors do not recover.
    let bus = h.recreate_stream().await;
    let fresh = event(g1, &uid("after-recreate"));
    let c = publish_ok(&*bus, &fresh).await;
    assert_ne!(c.epoch, after.epoch, "a new stream is a new epoch");
    let r = bus.replay(&[g1], after, 100).await.unwrap();
    assert!(!r.recovered, "cursor of the deleted stream");
    let got: Vec<_> = r.events.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(
        got,
        vec![fresh.id.clone()],
        "everything the new stream holds"
    );
    let r = bus
        .replay(&[g1], Cursor::new(c.epoch, 0), 100)
        .await
        .unwrap();
    assert!(r.recovered);
}

async fn gap_fill(h: &dyn Harness) {
    let bus = h.bus();
    let g = guild(501);
    let mut s = bus.subscribe(g).await.unwrap();
    let before = event(g, &uid("gap-before"));
    publish_ok(&*bus, &before).await;
    assert_next_is(&mut s, &before.id).await;
    let missed: Vec<String> = (0..6).map(|i| uid(&format!("gap-{i}"))).collect();
    h.stored_without_live(g, &missed).await;
    let after = event(g, &uid("gap-after"));
    publish_ok(&*bus, &after).await;
    let mut last = 0;
    for id in missed.iter().chain([&after.id]) {
        let d = next(&mut s).await;
        assert_eq!(&d.event.id, id, "filled in order");
        assert!(d.cursor.seq > last);
        last = d.cursor.seq;
    }
}

async fn outbox_through_outage(h: &dyn Harness) {
    let bus = h.bus();
    let g = guild(601);
    let mut s = bus.subscribe(g).await.unwrap();
    let start = bus.head().await.unwrap();
    let outbox = Outbox::new(
        Arc::clone(&bus),
        OutboxConfig {
            capacity: 100,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
    );
    let events: Vec<SignedEvent> = (0..30)
        .map(|i| event(g, &uid(&format!("ob-{i}"))))
        .collect();
    for e in &events[..10] {
        outbox.try_send(e.clone()).unwrap();
    }
    assert!(outbox.flush(WAIT).await);
    h.outage().await;
    assert!(!bus.is_connected());
    for e in &events[10..] {
        outbox.try_send(e.clone()).unwrap();
    }
    assert!(outbox.depth() > 0, "held while the bus is down");
    // Back-pressure instead of loss.
    let small = Outbox::new(
        Arc::clone(&bus),
        OutboxConfig {
            capacity: 2,
            ..Default::default()
        },
    );
    small.try_send(event(g, &uid("small-1"))).unwrap();
    small.try_send(event(g, &uid("small-2"))).unwrap();
    assert_eq!(
        small.try_send(event(g, &uid("small-3"))),
        Err(BusError::OutboxFull { capacity: 2 })
    );
    drop(small);
    h.restore().await;
    assert!(outbox.flush(WAIT).await, "delivered after the outage");
    assert_eq!(outbox.depth(), 0);
    for e in &events {
        let d = next(&mut s).await;
        assert_eq!(d.event.id, e.id, "in order, none lost, none twice");
    }
    let r = bus.replay(&[g], start, 1000).await.unwrap();
    let stored: Vec<_> = r
        .events
        .iter()
        .map(|d| d.event.id.clone())
        .filter(|id| id.starts_with("ob-"))
        .collect();
    let want: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(stored, want, "stored once each");
}

async fn reconnect_keeps_subscriptions(h: &dyn Harness) {
    let bus = h.bus();
    let other = h.other_client().await;
    let g = guild(701);
    let mut s = bus.subscribe(g).await.unwrap();
    h.outage().await;
    h.restore().await;
    // Published by another client: our subscription must still see it,
    // whether it arrives live or from the refill after the reconnect.
    let outbox = Outbox::new(Arc::clone(&other), OutboxConfig::default());
    let e = event(g, &uid("after-reconnect"));
    outbox.try_send(e.clone()).unwrap();
    assert!(outbox.flush(WAIT).await);
    assert_next_is(&mut s, &e.id).await;
}

async fn request_reply(h: &dyn Harness) {
    let bus = h.bus();
    let other = h.other_client().await;
    let subject = format!("test.rpc.{}", rand::random::<u32>());
    match bus
        .request(&subject, Bytes::from_static(b"x"), Duration::from_secs(2))
        .await
    {
        Err(BusError::NoResponders(_)) => {}
        r => panic!("expected NoResponders, got {r:?}"),
    }
    let (count_tx, mut count_rx) = mpsc::unbounded_channel::<usize>();
    for (n, server) in [(0usize, &bus), (1, &other)] {
        let mut reqs = server.serve(&subject).await.unwrap();
        let count_tx = count_tx.clone();
        tokio::spawn(async move {
            while let Some(r) = reqs.next().await {
                let mut answer = r.payload.to_vec();
                answer.extend_from_slice(format!("@{n}").as_bytes());
                let _ = count_tx.send(n);
                r.respond(Bytes::from(answer)).await.unwrap();
            }
        });
    }
    drop(count_tx);
    // Interest of a served subject may take a moment to reach the server
    // the requester uses; the first request retries on NoResponders.
    let mut answered = [0usize; 2];
    for i in 0..20 {
        let payload = Bytes::from(format!("q{i}"));
        let answer = loop {
            match bus.request(&subject, payload.clone(), WAIT).await {
                Err(BusError::NoResponders(_)) => tokio::task::yield_now().await,
                r => break r.unwrap(),
            }
        };
        let text = String::from_utf8(answer.to_vec()).unwrap();
        assert!(text.starts_with(&format!("q{i}@")), "{text}");
        let n = tokio::time::timeout(WAIT, count_rx.recv())
            .await
            .unwrap()
            .unwrap();
        answered[n] += 1;
    }
    assert_eq!(answered[0] + answered[1], 20, "one server per request");
    assert!(answered[0] > 0 && answered[1] > 0, "shared: {answered:?}");

    // A server that never answers: the requester times out.
    let silent = format!("test.silent.{}", rand::random::<u32>());
    let mut reqs = bus.serve(&silent).await.unwrap();
    let hold = tokio::spawn(async move {
        let r = reqs.next().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(r);
    });
    let r = loop {
        match other
            .request(&silent, Bytes::new(), Duration::from_millis(300))
            .await
        {
            Err(BusError::NoResponders(_)) => tokio::task::yield_now().await,
            r => break r,
        }
    };
    assert_eq!(r, Err(BusError::Timeout));
    hold.abort();
}

async fn key_value(h: &dyn Harness) {
    let bus = h.bus();
    let other = h.other_client().await;
    let key = format!("shard.{}", rand::random::<u32>());
    assert_eq!(bus.kv_get(&key).await.unwrap(), None);
    bus.kv_put(&key, Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(
        other.kv_get(&key).await.unwrap(),
        Some(Bytes::from_static(b"one"))
    );
    other
        .kv_put(&key, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(
        bus.kv_get(&key).await.unwrap(),
        Some(Bytes::from_static(b"two"))
    );
    for bad in ["", "a b", "shard:0", ".x", "*"] {
        assert!(
            matches!(
                bus.kv_put(bad, Bytes::new()).await,
                Err(BusError::Config(_))
            ),
            "{bad:?}"
        );
    }
}

// ------------------------------------------------------------- harnesses

struct Memory {
    bus: parking_lot::Mutex<Arc<MemoryBus>>,
}

impl Memory {
    fn new() -> Self {
        Self {
            bus: parking_lot::Mutex::new(Arc::new(Self::make())),
        }
    }

    fn make() -> MemoryBus {
        MemoryBus::new(MemoryBusConfig {
            // Small, so that `stored_without_live` can overrun it.
            live_buffer: 4,
            ..Default::default()
        })
    }

    fn mem(&self) -> Arc<MemoryBus> {
        Arc::clone(&self.bus.lock())
    }
}

#[async_trait]
impl Harness for Memory {
    fn bus(&self) -> Arc<dyn Bus> {
        self.mem()
    }
    async fn other_client(&self) -> Arc<dyn Bus> {
        self.mem()
    }
    async fn outage(&self) {
        self.mem().set_offline(true);
    }
    async fn restore(&self) {
        self.mem().set_offline(false);
    }
    async fn stored_without_live(&self, guild: Snowflake, ids: &[String]) {
        // More than the live buffer while nobody reads: the subscriber lags.
        assert!(ids.len() > self.mem().config().live_buffer);
        for id in ids {
            publish_ok(&*self.mem(), &event(guild, id)).await;
        }
    }
    async fn recreate_stream(&self) -> Arc<dyn Bus> {
        let fresh = Arc::new(Self::make());
        *self.bus.lock() = Arc::clone(&fresh);
        fresh
    }
}

struct Nats {
    server: NatsServer,
    bus: Arc<NatsBus>,
}

fn nats_args(url: String) -> NatsArgs {
    NatsArgs {
        stream_storage: Storage::File,
        nats_timeout: Duration::from_secs(2),
        nats_reconnect_max_delay: Duration::from_millis(200),
        ..NatsArgs::new([url])
    }
}

impl Nats {
    async fn new() -> Self {
        let server = NatsServer::start();
        let bus = Arc::new(NatsBus::connect(nats_args(server.url())).await.unwrap());
        Self { server, bus }
    }
}

#[async_trait]
impl Harness for Nats {
    fn bus(&self) -> Arc<dyn Bus> {
        Arc::clone(&self.bus) as Arc<dyn Bus>
    }
    async fn other_client(&self) -> Arc<dyn Bus> {
        Arc::new(
            NatsBus::connect(nats_args(self.server.url()))
                .await
                .unwrap(),
        )
    }
    async fn outage(&self) {
        self.server.stop();
        // The client notices the closed socket; wait for it to say so.
        self.bus.wait_connected(false, WAIT).await.unwrap();
    }
    async fn restore(&self) {
        self.server.restart();
    }
    async fn stored_without_live(&self, guild: Snowflake, ids: &[String]) {
        // Republish off: the stream stores but tells nobody live.
        let js = self.bus.jetstream();
        let mut cfg = voicewatch_bus::jetstream::stream_config(self.bus.args());
        let with = cfg.clone();
        cfg.republish = None;
        js.update_stream(cfg).await.unwrap();
        for id in ids {
            publish_ok(&*self.bus, &event(guild, id)).await;
        }
        js.update_stream(with).await.unwrap();
    }
    async fn recreate_stream(&self) -> Arc<dyn Bus> {
        let name = self.bus.args().stream.clone();
        self.bus.jetstream().delete_stream(&name).await.unwrap();
        self.bus.ensure_stream().await.unwrap();
        self.bus()
    }
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let h = super::Memory::new();
                    super::$check(&h).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let h = super::Nats::new().await;
                    super::$check(&h).await;
                }
            )*
        }
    };
}

suite!(
    order_per_guild,
    dedupe_by_id,
    interest_on_off,
    replay_after_cursor,
    gap_fill,
    outbox_through_outage,
    reconnect_keeps_subscriptions,
    request_reply,
    key_value,
);
