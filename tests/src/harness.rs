//! Helpers that compose the simulator and the worker for end-to-end tests.

// Test helpers: a panic is a test failure, with the message saying why.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use voicewatch_gateway_worker::tracker::Change;
use voicewatch_gateway_worker::{
    Args, FileStateStore, Published, Sink, SinkError, Worker, WorkerHandle,
};

use crate::sim::Simulator;

pub const HMAC_KEYS: &str = "k1=test-secret-0123456789";

/// Worker arguments pointed at `sim`, with a short identify interval and a
/// free port.
pub fn worker_args(sim: &Simulator, state_dir: &Path) -> Args {
    let mut a = Args::for_simulator(
        &sim.token(),
        &sim.gateway_url(),
        &sim.api_url(),
        HMAC_KEYS,
        state_dir.to_path_buf(),
    );
    a.identify_interval_ms = 100;
    a.save_interval_ms = 100;
    a
}

/// A sink that hands every change to the test.
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<Change>,
}

impl ChannelSink {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { tx }), rx)
    }
}

impl Sink for ChannelSink {
    fn publish(
        &self,
        change: &Change,
        _at: OffsetDateTime,
    ) -> BoxFuture<'static, Result<Published, SinkError>> {
        let r = self
            .tx
            .send(change.clone())
            .map(|()| Published::Acked)
            .map_err(|_| SinkError("receiver gone".into()));
        async move { r }.boxed()
    }

    fn connected(&self) -> bool {
        true
    }
}

pub async fn start_worker(args: &Args, sink: Arc<dyn Sink>) -> WorkerHandle {
    let store = Arc::new(FileStateStore::new(&args.state_dir).expect("state dir"));
    Worker::start(args, sink, store)
        .await
        .expect("worker starts")
}

/// Next item or panic after `timeout`.
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, timeout: Duration) -> T {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("channel open")
}

/// Assert nothing arrives within `quiet` (used after a known barrier, so the
/// window only bounds how long a wrong extra event could take to show up).
pub async fn assert_quiet<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    quiet: Duration,
) {
    if let Ok(Some(x)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected event {x:?}");
    }
}

pub const T: Duration = Duration::from_secs(10);

/// Make a marker user join `channel` and collect every change up to and
/// including the marker's join. Dispatches of one shard are processed in
/// order, so anything the worker would (wrongly) emit before the marker is
/// in the returned list: no sleeping needed to prove an absence.
pub async fn until_marker(
    sim: &Simulator,
    rx: &mut mpsc::UnboundedReceiver<Change>,
    guild: u64,
    marker_user: u64,
    channel: u64,
) -> Vec<Change> {
    sim.voice_update(guild, marker_user, Some(channel))
        .expect("marker");
    let mut seen = Vec::new();
    loop {
        let c = recv(rx, T).await;
        let done = c.user == marker_user && c.channel == Some(channel);
        seen.push(c);
        if done {
            seen.pop();
            return seen;
        }
    }
}

/// Verified events of one guild from the bus.
pub struct BusEvents {
    stream: voicewatch_bus::DeliveryStream,
    keyring: voicewatch_protocol::Keyring,
}

impl BusEvents {
    pub async fn subscribe(bus: &dyn voicewatch_bus::Bus, guild: u64) -> Self {
        let g = voicewatch_protocol::Snowflake::new(guild).expect("guild id");
        let stream = bus.subscribe(g).await.expect("subscribe");
        Self {
            stream,
            keyring: voicewatch_protocol::Keyring::parse(HMAC_KEYS).expect("keys"),
        }
    }

    /// Next event; panics unless its HMAC verifies with the worker's key,
    /// its timestamp is fresh, and payload and subject agree.
    pub async fn next(
        &mut self,
    ) -> (
        voicewatch_protocol::VoiceEvent,
        voicewatch_protocol::SignedEvent,
    ) {
        use futures::StreamExt;
        let d = tokio::time::timeout(T, self.stream.next())
            .await
            .expect("timed out waiting for a bus event")
            .expect("stream open");
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let ev = d
            .event
            .open(&self.keyring, Some(now as i64), 300_000)
            .expect("signature and payload verify");
        let wrong = voicewatch_protocol::Keyring::parse("k1=not-the-key").expect("keys");
        assert!(
            d.event.open(&wrong, None, 300_000).is_err(),
            "a wrong key must not verify"
        );
        assert_eq!(d.event.id, ev.id.as_str(), "Nats-Msg-Id is the event id");
        (ev, d.event)
    }

    /// Like [`until_marker`], on the bus.
    pub async fn until_marker(
        &mut self,
        sim: &Simulator,
        guild: u64,
        marker_user: u64,
        channel: u64,
    ) -> Vec<voicewatch_protocol::VoiceEvent> {
        sim.voice_update(guild, marker_user, Some(channel))
            .expect("marker");
        let mut seen = Vec::new();
        loop {
            let (ev, _) = self.next().await;
            if ev.user_id.get() == marker_user && ev.channel_id.map(|c| c.get()) == Some(channel) {
                return seen;
            }
            seen.push(ev);
        }
    }
}

/// The worker on `bus`, as `voicewatch worker` composes it.
pub async fn start_bus_worker(args: &Args, bus: Arc<dyn voicewatch_bus::Bus>) -> WorkerHandle {
    let keyring = voicewatch_protocol::Keyring::parse(&args.hmac_keys).expect("keys");
    let sink = voicewatch_gateway_worker::BusSink::new(
        bus,
        keyring,
        voicewatch_bus::OutboxConfig::default(),
        Duration::from_secs(2),
    );
    start_worker(args, Arc::new(sink)).await
}
