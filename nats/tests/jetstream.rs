//! What only the JetStream bus has: the wire format other tools see, the
//! shipped stream definition, trimmed history, and stream loss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use voicewatch_bus::jetstream::stream_config;
use voicewatch_bus::testkit::{NatsServer, event, guild, test_keyring};
use voicewatch_bus::{Bus, NatsArgs, NatsBus, Storage};
use voicewatch_protocol::{Cursor, SignedEvent};

const WAIT: Duration = Duration::from_secs(15);

fn args(url: String) -> NatsArgs {
    NatsArgs {
        nats_timeout: Duration::from_secs(2),
        nats_reconnect_max_delay: Duration::from_millis(200),
        ..NatsArgs::new([url])
    }
}

#[tokio::test]
async fn wire_format_follows_the_contract_both_ways() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(args(server.url())).await.unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut tap = raw.subscribe("voice.v1.>").await.unwrap();
    // A round trip: the server has the SUB once this answers.
    raw.request("$JS.API.INFO", Bytes::new()).await.unwrap();

    let g = guild(2000);
    let e = event(g, "e-2000-3001-sess-a-1");
    bus.publish(&e).await.unwrap();
    let m = tokio::time::timeout(WAIT, tap.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "voice.v1.2000.left");
    assert_eq!(m.payload, e.payload, "payload bytes exactly as signed");
    let h = m.headers.unwrap();
    assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), e.id);
    assert_eq!(h.get("Vw-Timestamp").unwrap().as_str(), e.stamp.timestamp);
    assert_eq!(h.get("Vw-Key-Id").unwrap().as_str(), "test");
    let sig = h.get("Vw-Signature").unwrap().as_str();
    assert!(sig.starts_with("v1=") && sig.len() == 67, "{sig}");

    // A third-party producer publishing by the contract reaches bus
    // subscribers, and verifies.
    let mut live = bus.subscribe(g).await.unwrap();
    let other = event(g, "third-party-1");
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", other.id.as_str());
    headers.insert("Vw-Timestamp", other.stamp.timestamp.as_str());
    headers.insert("Vw-Signature", other.stamp.signature.as_str());
    let js = async_nats::jetstream::new(raw.clone());
    js.publish_with_headers("voice.v1.2000.left", headers, other.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    let d = tokio::time::timeout(WAIT, live.next())
        .await
        .unwrap()
        .unwrap();
    let got: SignedEvent = d.event;
    assert_eq!(got.id, other.id);
    assert_eq!(got.stamp.key_id, None, "absent header stays absent");
    got.open(&test_keyring(), None, 0).expect("verifies");
}

#[tokio::test]
async fn shipped_stream_definition_is_what_the_bus_provisions() {
    let server = NatsServer::start();
    let raw = async_nats::connect(server.url()).await.unwrap();
    // What `nats stream add --config nats/conf/stream-VOICE.json` sends.
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/stream-VOICE.json"
    ))
    .unwrap();
    let answer = raw
        .request("$JS.API.STREAM.CREATE.VOICE", Bytes::from(file))
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert!(answer.get("error").is_none(), "{answer}");

    let bus = NatsBus::connect(args(server.url())).await.unwrap();
    let info = bus
        .jetstream()
        .get_stream("VOICE")
        .await
        .unwrap()
        .cached_info()
        .clone();
    let want = stream_config(bus.args());
    let have: stream::Config = info.config;
    assert_eq!(have.subjects, want.subjects);
    assert_eq!(have.max_age, want.max_age);
    assert_eq!(have.duplicate_window, want.duplicate_window);
    assert_eq!(have.storage, want.storage);
    assert_eq!(have.num_replicas, want.num_replicas);
    assert_eq!(have.republish, want.republish);
    assert_eq!(have.discard, want.discard);
    assert!(have.allow_direct);
    // Provisioning over the operator's stream kept it (same epoch).
    assert_eq!(
        bus.head().await.unwrap().epoch,
        u64::try_from(info.created.unix_timestamp_nanos()).unwrap()
    );
}

#[tokio::test]
async fn trimmed_history_is_not_a_recovery() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(args(server.url())).await.unwrap();
    let g = guild(3000);
    let first = bus.publish(&event(g, "trim-1")).await.unwrap().cursor;
    bus.publish(&event(g, "trim-2")).await.unwrap();
    bus.jetstream()
        .get_stream("VOICE")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let kept = bus.publish(&event(g, "trim-3")).await.unwrap().cursor;
    let r = bus.replay(&[g], first, 100).await.unwrap();
    assert!(!r.recovered, "trim-2 is gone");
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].cursor, kept);
    let r = bus
        .replay(&[g], Cursor::new(kept.epoch, kept.seq - 1), 100)
        .await
        .unwrap();
    assert!(r.recovered);
}

#[tokio::test]
async fn a_lost_memory_stream_is_provisioned_again() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsArgs {
        stream_storage: Storage::Memory,
        ..args(server.url())
    })
    .await
    .unwrap();
    let g = guild(4000);
    let mut live = bus.subscribe(g).await.unwrap();
    let old = bus.publish(&event(g, "mem-1")).await.unwrap().cursor;
    assert_eq!(
        tokio::time::timeout(WAIT, live.next())
            .await
            .unwrap()
            .unwrap()
            .event
            .id,
        "mem-1"
    );
    server.restart();
    bus.wait_connected(true, WAIT).await.unwrap();
    // Re-provisioning runs after the reconnect; the outbox retries until
    // the stream is back.
    let bus = std::sync::Arc::new(bus);
    let outbox = voicewatch_bus::Outbox::new(bus.clone(), Default::default());
    outbox.try_send(event(g, "mem-2")).unwrap();
    assert!(outbox.flush(WAIT).await);
    let head = bus.head().await.unwrap();
    assert_ne!(head.epoch, old.epoch, "a new stream");
    let d = tokio::time::timeout(WAIT, live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.event.id, "mem-2");
    assert_eq!(d.cursor, head, "live cursors follow the new epoch");
    assert!(!bus.replay(&[g], old, 10).await.unwrap().recovered);
}

#[tokio::test]
async fn live_subscription_follows_a_recreated_stream() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(args(server.url())).await.unwrap();
    let g = guild(5000);
    let mut live = bus.subscribe(g).await.unwrap();
    for i in 0..3 {
        bus.publish(&event(g, &format!("before-{i}")))
            .await
            .unwrap();
        tokio::time::timeout(WAIT, live.next())
            .await
            .unwrap()
            .unwrap();
    }
    bus.jetstream().delete_stream("VOICE").await.unwrap();
    bus.ensure_stream().await.unwrap();
    let ack = bus.publish(&event(g, "after")).await.unwrap();
    assert_eq!(ack.cursor.seq, 1);
    let d = tokio::time::timeout(WAIT, live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.event.id, "after");
    assert_eq!(d.cursor, ack.cursor);
}

/// Many guilds subscribed at once (an edge's connect storm) share their
/// stream-info requests; each subscription still gets exactly the events
/// stored after it was made, and an event stored before it is not replayed
/// as live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_storm_gets_every_later_event_and_no_earlier_one() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(args(server.url())).await.unwrap();
    let guilds: Vec<_> = (1..=200).map(|i| guild(5000 + i)).collect();
    for g in &guilds {
        bus.publish(&event(*g, &format!("before-{g}")))
            .await
            .unwrap();
    }
    let subs = futures::future::join_all(guilds.iter().map(|g| bus.subscribe(*g))).await;
    let mut subs: Vec<_> = subs.into_iter().map(Result::unwrap).collect();
    for g in &guilds {
        bus.publish(&event(*g, &format!("after-{g}")))
            .await
            .unwrap();
    }
    for (g, sub) in guilds.iter().zip(subs.iter_mut()) {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("live event in time")
            .unwrap();
        assert_eq!(d.event.id, format!("after-{g}"));
    }
}
