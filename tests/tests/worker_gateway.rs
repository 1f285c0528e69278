//! Simulator → worker → sink: the tracker's output across gateway trouble.
//! (The same flows through the bus with signatures are in `e2e_bus.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use voicewatch_gateway_worker::rejoin::GatewayView;
use voicewatch_gateway_worker::tracker::{Change, ChangeKind};
use voicewatch_gateway_worker::{FileStateStore, StateStore};
use voicewatch_tests::harness::{ChannelSink, T, start_worker, until_marker, worker_args};
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

fn summary(c: &[Change]) -> Vec<(ChangeKind, u64, Option<u64>, Option<u64>)> {
    c.iter()
        .map(|c| (c.kind, c.user, c.previous, c.channel))
        .collect()
}

#[tokio::test]
async fn leave_move_join() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&worker_args(&sim, dir.path()), sink).await;
    sim.wait_active(1, T).await.unwrap();
    // Nothing for people already in voice at the start.
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );

    sim.voice_update(G, 3001, None).unwrap();
    sim.voice_update(G, 3002, Some(4002)).unwrap();
    sim.voice_update(G, 3003, Some(4002)).unwrap();
    sim.voice_update(G, 3003, Some(4002)).unwrap(); // e.g. a mute: no event
    let got = until_marker(&sim, &mut rx, G, MARKER + 1, 4003).await;
    assert_eq!(
        summary(&got),
        vec![
            (ChangeKind::Left, 3001, Some(4001), None),
            (ChangeKind::Moved, 3002, Some(4001), Some(4002)),
            (ChangeKind::Joined, 3003, None, Some(4002)),
        ]
    );
    w.shutdown().await;
}

#[tokio::test]
async fn leave_during_resume_gap_is_delivered_once() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&worker_args(&sim, dir.path()), sink).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );

    sim.disconnect();
    sim.voice_update(G, 3001, None).unwrap();
    sim.wait_for("resume", T, |s| s.resumes_ok >= 1)
        .await
        .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 1, 4003).await;
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Left, 3001, Some(4001), None)]
    );

    // op 7 and a zombie connection: resumed, nothing invented.
    sim.op7();
    sim.voice_update(G, 3002, None).unwrap();
    sim.wait_for("resume after op 7", T, |s| s.resumes_ok >= 2)
        .await
        .unwrap();
    sim.zombie();
    sim.voice_update(G, 3002, Some(4001)).unwrap();
    sim.wait_for("resume after zombie", T, |s| s.resumes_ok >= 3)
        .await
        .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 2, 4003).await;
    assert_eq!(
        summary(&got),
        vec![
            (ChangeKind::Left, 3002, Some(4001), None),
            (ChangeKind::Joined, 3002, None, Some(4001))
        ]
    );
    assert_eq!(sim.stats().identifies, 1);
    w.shutdown().await;
}

#[tokio::test]
async fn leave_during_op9_reidentify_is_delivered_once() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&worker_args(&sim, dir.path()), sink).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );

    // The session is gone: the leave is never dispatched, only the new
    // GUILD_CREATE shows it.
    sim.op9(false);
    sim.voice_update(G, 3001, None).unwrap();
    sim.voice_update(G, 3002, Some(4002)).unwrap();
    sim.wait_for("re-identify", T, |s| s.identifies >= 2 && s.active >= 1)
        .await
        .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 1, 4003).await;
    assert_eq!(
        summary(&got),
        vec![
            (ChangeKind::Left, 3001, Some(4001), None),
            (ChangeKind::Moved, 3002, Some(4001), Some(4002))
        ]
    );

    // 4009: twilight tries to resume, is refused, identifies again.
    sim.close(4009);
    sim.voice_update(G, 3002, None).unwrap();
    sim.wait_for("re-identify after 4009", T, |s| {
        s.identifies >= 3 && s.resumes_refused >= 1
    })
    .await
    .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 2, 4003).await;
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Left, 3002, Some(4002), None)]
    );
    w.shutdown().await;
}

#[tokio::test]
async fn guild_outage_produces_no_leaves() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&worker_args(&sim, dir.path()), sink).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );

    sim.outage(G).unwrap();
    sim.restore(G).unwrap();
    assert!(
        until_marker(&sim, &mut rx, G, MARKER + 1, 4003)
            .await
            .is_empty(),
        "outage and return: no events"
    );

    // A leave during the outage is found when the guild returns.
    sim.outage(G).unwrap();
    sim.voice_update(G, 3001, None).unwrap();
    sim.restore(G).unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 2, 4003).await;
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Left, 3001, Some(4001), None)]
    );

    // Removed from the guild: tracking ends, no leaves.
    sim.remove_guild(G).unwrap();
    sim.add_simple_guild(G + 1, 5000, 2);
    let got = until_marker(&sim, &mut rx, G + 1, MARKER, 5001).await;
    assert!(got.is_empty(), "{got:?}");
    w.shutdown().await;
}

#[tokio::test]
async fn leave_while_worker_restarts_is_delivered_once() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let args = worker_args(&sim, dir.path());

    // Graceful restart: the session is saved and resumed; the replay has it.
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&args, sink).await;
    sim.wait_active(1, T).await.unwrap();
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );
    w.shutdown().await;
    sim.voice_update(G, 3001, None).unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&args, sink).await;
    sim.wait_for("resume after restart", T, |s| {
        s.resumes_ok >= 1 && s.active >= 1
    })
    .await
    .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 1, 4003).await;
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Left, 3001, Some(4001), None)]
    );
    assert_eq!(sim.stats().identifies, 1, "resumed, not re-identified");

    // Crash, and the session expires meanwhile: the saved map is diffed
    // against the fresh snapshot.
    // Wait until the periodic save holds the marker's join (polling a file:
    // the store has no notification).
    let store = FileStateStore::new(dir.path()).unwrap();
    tokio::time::timeout(T, async {
        loop {
            let saved = store.load_all().unwrap_or_default();
            if saved
                .iter()
                .any(|s| s.tracker.voice_map(G).contains_key(&(MARKER + 1)))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    w.abort().await;
    sim.expire_sessions();
    sim.voice_update(G, 3002, None).unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&args, sink).await;
    sim.wait_for("identify after crash", T, |s| {
        s.identifies >= 2 && s.active >= 1
    })
    .await
    .unwrap();
    let got = until_marker(&sim, &mut rx, G, MARKER + 2, 4003).await;
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Left, 3002, Some(4001), None)]
    );
    w.shutdown().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = ChannelSink::new();
    let w = start_worker(&worker_args(&sim, dir.path()), sink).await;
    let base = format!("http://{}", w.addr());
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = tokio::time::timeout(T, http.get(url).send())
                .await
                .unwrap()
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    sim.wait_active(1, T).await.unwrap();
    // The marker proves READY and GUILD_CREATE were handled.
    assert!(
        until_marker(&sim, &mut rx, G, MARKER, 4003)
            .await
            .is_empty()
    );
    let (code, body) = get("/readyz").await;
    assert_eq!(
        (code, body.trim()),
        (200, "shards_active=1/1 bus_connected=true")
    );
    assert!(w.is_ready());
    let mut occupants = w
        .voice()
        .occupants(G, 4001)
        .expect("occupancy known after GUILD_CREATE");
    occupants.sort_unstable();
    assert_eq!(
        occupants,
        vec![3001, 3002],
        "the rejoin check sees the shards' voice map"
    );

    sim.voice_update(G, 3001, None).unwrap();
    let _ = until_marker(&sim, &mut rx, G, MARKER + 1, 4003).await;
    let (code, m) = get("/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "voicewatch_worker_shard_state{shard=\"0\"} 3",
        "voicewatch_worker_events_published_total{type=\"voice.left\"} 1",
        "voicewatch_worker_dropouts_total 1",
        "voicewatch_worker_dropouts_by_guild_total{guild=\"2000\"} 1",
        "voicewatch_worker_gateway_events_total{type=\"READY\"} 1",
        "voicewatch_worker_publish_latency_seconds_count",
        "voicewatch_worker_outbox_depth 0",
        "voicewatch_worker_users_in_voice{shard=\"0\"} 3",
    ] {
        assert!(m.contains(needle), "{needle} missing in\n{m}");
    }

    // Not ready while the shard is away.
    sim.close(4009);
    sim.shutdown();
    tokio::time::timeout(T, async {
        while w.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(get("/readyz").await.0, 503);
    w.shutdown().await;
}
