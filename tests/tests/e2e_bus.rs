//! Simulator → worker → bus → a subscriber that verifies every signature.
//! Each scenario runs on the in-process bus and, where the NATS bus exists,
//! on a private nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use voicewatch_bus::testkit::NatsServer;
use voicewatch_bus::{Bus, MemoryBus, NatsArgs, NatsBus};
use voicewatch_protocol::{EventKind, VoiceEvent};
use voicewatch_tests::harness::{BusEvents, T, start_bus_worker, worker_args};
use voicewatch_tests::sim::{SimConfig, Simulator};

const G: u64 = 2000;
const MARKER: u64 = 9999;

async fn sim() -> Simulator {
    let sim = Simulator::start(SimConfig {
        heartbeat_interval: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.add_simple_guild(G, 4000, 3);
    sim.voice_update(G, 3001, Some(4001)).unwrap();
    sim.voice_update(G, 3002, Some(4001)).unwrap();
    sim
}

type Row = (EventKind, u64, Option<u64>, Option<u64>);

fn rows(evs: &[VoiceEvent]) -> Vec<Row> {
    evs.iter()
        .map(|e| {
            (
                e.kind,
                e.user_id.get(),
                e.previous_channel_id.map(|c| c.get()),
                e.channel_id.map(|c| c.get()),
            )
        })
        .collect()
}

async fn leave_move_join(bus: Arc<dyn Bus>) {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut events = BusEvents::subscribe(bus.as_ref(), G).await;
    let w = start_bus_worker(&worker_args(&sim, dir.path()), bus.clone()).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(events.until_marker(&sim, G, MARKER, 4003).await.is_empty());

    let sess = sim.voice_update(G, 3001, None).unwrap();
    sim.voice_update(G, 3002, Some(4002)).unwrap();
    sim.voice_update(G, 3003, Some(4002)).unwrap();
    let got = events.until_marker(&sim, G, MARKER + 1, 4003).await;
    assert_eq!(
        rows(&got),
        vec![
            (EventKind::Left, 3001, Some(4001), None),
            (EventKind::Moved, 3002, Some(4001), Some(4002)),
            (EventKind::Joined, 3003, None, Some(4002)),
        ]
    );
    // The id is derived from what every worker sees (see the README).
    assert_eq!(got[0].id.as_str(), format!("e-{G}-3001-{sess}-1"));
    assert!(got[0].occurred_at.as_str().ends_with('Z'));
    w.shutdown().await;
}

async fn trouble_is_delivered_exactly_once(bus: Arc<dyn Bus>) {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let args = worker_args(&sim, dir.path());
    let mut events = BusEvents::subscribe(bus.as_ref(), G).await;
    let w = start_bus_worker(&args, bus.clone()).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(events.until_marker(&sim, G, MARKER, 4003).await.is_empty());

    // RESUME gap.
    sim.disconnect();
    sim.voice_update(G, 3001, None).unwrap();
    sim.wait_for("resume", T, |s| s.resumes_ok >= 1)
        .await
        .unwrap();
    let got = events.until_marker(&sim, G, MARKER + 1, 4003).await;
    assert_eq!(rows(&got), vec![(EventKind::Left, 3001, Some(4001), None)]);

    // op 9 re-identify.
    sim.op9(false);
    sim.voice_update(G, 3002, None).unwrap();
    sim.wait_for("re-identify", T, |s| s.identifies >= 2 && s.active >= 1)
        .await
        .unwrap();
    let got = events.until_marker(&sim, G, MARKER + 2, 4003).await;
    assert_eq!(rows(&got), vec![(EventKind::Left, 3002, Some(4001), None)]);

    // Worker restart.
    sim.voice_update(G, 3003, Some(4001)).unwrap();
    let _ = events.until_marker(&sim, G, MARKER + 3, 4003).await;
    w.shutdown().await;
    sim.voice_update(G, 3003, None).unwrap();
    let w = start_bus_worker(&args, bus.clone()).await;
    sim.wait_for("resume after restart", T, |s| {
        s.resumes_ok >= 2 && s.active >= 1
    })
    .await
    .unwrap();
    let got = events.until_marker(&sim, G, MARKER + 4, 4003).await;
    assert_eq!(rows(&got), vec![(EventKind::Left, 3003, Some(4001), None)]);

    // Guild outage: no leaves.
    sim.outage(G).unwrap();
    sim.restore(G).unwrap();
    assert!(
        events
            .until_marker(&sim, G, MARKER + 5, 4003)
            .await
            .is_empty()
    );
    w.shutdown().await;
}

#[tokio::test]
async fn memory_leave_move_join() {
    leave_move_join(Arc::new(MemoryBus::default())).await;
}

#[tokio::test]
async fn memory_trouble_is_delivered_exactly_once() {
    trouble_is_delivered_exactly_once(Arc::new(MemoryBus::default())).await;
}

async fn two_workers_agree_on_ids(bus: Arc<dyn Bus>) {
    let sim = sim().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut events = BusEvents::subscribe(bus.as_ref(), G).await;
    let w1 = start_bus_worker(&worker_args(&sim, d1.path()), bus.clone()).await;
    let w2 = start_bus_worker(&worker_args(&sim, d2.path()), bus.clone()).await;
    sim.wait_active(2, T).await.unwrap();
    // Both workers saw the marker join; the stream keeps one copy.
    assert!(events.until_marker(&sim, G, MARKER, 4003).await.is_empty());
    sim.voice_update(G, 3001, Some(4002)).unwrap();
    sim.voice_update(G, 3001, None).unwrap();
    let got = events.until_marker(&sim, G, MARKER + 1, 4003).await;
    assert_eq!(
        rows(&got),
        vec![
            (EventKind::Moved, 3001, Some(4001), Some(4002)),
            (EventKind::Left, 3001, Some(4002), None)
        ],
        "each change once, although two workers published it"
    );
    // Both workers publish the leave; the slower one may still be on its
    // way when the subscriber has seen the first copy.
    let left = |w: &voicewatch_gateway_worker::WorkerHandle| {
        w.metrics()
            .published
            .get_or_create(&[("type", "voice.left".to_owned())])
            .get()
    };
    tokio::time::timeout(T, async {
        while (left(&w1), left(&w2)) != (1, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both workers published the leave");
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn memory_two_workers_agree_on_ids() {
    two_workers_agree_on_ids(Arc::new(MemoryBus::default())).await;
}

async fn nats() -> (NatsServer, Arc<dyn Bus>) {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let bus = NatsBus::connect(NatsArgs::new([server.url()]))
        .await
        .unwrap();
    (server, Arc::new(bus))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_leave_move_join() {
    let (_server, bus) = nats().await;
    leave_move_join(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_trouble_is_delivered_exactly_once() {
    let (_server, bus) = nats().await;
    trouble_is_delivered_exactly_once(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_workers_agree_on_ids() {
    let (_server, bus) = nats().await;
    two_workers_agree_on_ids(bus).await;
}

/// NATS goes away: the leave waits in the outbox and is stored once when
/// NATS is back; shard state is not saved past it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_is_absorbed_by_the_outbox() {
    let (server, bus) = nats().await;
    let server = Arc::new(server);
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = worker_args(&sim, dir.path());
    args.publish_timeout_ms = 300;
    let mut events = BusEvents::subscribe(bus.as_ref(), G).await;
    let w = start_bus_worker(&args, bus.clone()).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(events.until_marker(&sim, G, MARKER, 4003).await.is_empty());

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    sim.voice_update(G, 3001, None).unwrap();
    let m = w.metrics();
    tokio::time::timeout(T, async {
        while m.queued.get() < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the leave went to the outbox");
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap();
    let got = events.until_marker(&sim, G, MARKER + 1, 4003).await;
    assert_eq!(rows(&got), vec![(EventKind::Left, 3001, Some(4001), None)]);
    w.shutdown().await;
}
