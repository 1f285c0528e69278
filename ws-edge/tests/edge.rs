//! The edge against real WebSocket clients and an in-process bus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::SinkExt;
use voicewatch_bus::Bus;

use common::*;
use serde_json::json;
use voicewatch_protocol::{Cursor, SignedEvent, Stamp, Subject};

#[tokio::test]
async fn ack_events_ping_pong_and_heartbeats() {
    let bus = TestBus::new();
    let mut a = args();
    a.heartbeat_ms = 150;
    a.ws_ping_ms = 150;
    let edge = start(a, bus.clone()).await;
    bus.send(&event(2000, 1, 0, 0)).await;
    let (mut c, ack) = client(&edge, 3001, &[2000]).await;
    assert_eq!(ack["cursor"], bus.head_now().to_string());
    assert_eq!(ack["recovered"], false);
    assert_eq!(ack["v"], 1);

    let cur = bus.send(&event(2000, 3002, 1, 0)).await;
    let f = c.frame().await;
    assert_eq!(f["v"], 1);
    assert_eq!(f["event"], "voice.joined");
    assert_eq!(f["cursor"], cur.to_string());
    assert_eq!(f["payload"]["guildId"], "2000");
    assert_eq!(f["payload"]["userId"], "3002");
    assert_eq!(f["payload"]["channelId"], "4000");

    c.send(json!({"v":1,"type":"ping"})).await;
    assert_eq!(c.frame().await, json!({"v":1,"type":"pong"}));

    // Server heartbeat frame and WebSocket ping both arrive.
    let (mut heartbeat, mut ws_ping) = (false, false);
    while !(heartbeat && ws_ping) {
        match c.next().await {
            Seen::Frame(v) => {
                assert_eq!(v, json!({"v":1,"type":"ping"}));
                heartbeat = true;
            }
            Seen::WsPing => ws_ping = true,
            other => panic!("{other:?}"),
        }
    }
    c.close().await;
    eventually("close counted", || {
        metric(
            &edge,
            "voicewatch_edge_connections_closed_total{code=\"1000\"}",
        ) == 1.0
    })
    .await;
    eventually("no connections", || edge.connections() == 0).await;
}

#[tokio::test]
async fn isolation_and_self_scope() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let (mut a, _) = client(&edge, 3001, &[2000]).await;
    let (mut b, _) = client(&edge, 3002, &[2001]).await;
    let mut s = Client::connect(&edge.ws_url()).await;
    s.send_auth(&token(3001, &[2000, 2001]), None, Some("self"))
        .await;
    assert_eq!(s.frame().await["type"], "ack");

    bus.send(&event(2000, 3002, 1, 0)).await;
    bus.send(&event(2001, 3001, 2, 0)).await;
    bus.send(&event(2002, 3001, 3, 0)).await;
    bus.send(&event(2000, 3001, 4, 0)).await;
    bus.send(&event(2001, 3002, 5, 0)).await;

    assert_eq!(event_n(&a.frame().await), 1);
    assert_eq!(event_n(&a.frame().await), 4);
    assert_eq!(event_n(&b.frame().await), 2);
    assert_eq!(event_n(&b.frame().await), 5);
    // Order holds per guild; across guilds it is free.
    let mut got = [event_n(&s.frame().await), event_n(&s.frame().await)];
    got.sort();
    assert_eq!(got, [2, 4]);
    // Sentinels: the next frame of each is the sentinel, nothing leaked between.
    bus.send(&event(2000, 3001, 6, 0)).await;
    bus.send(&event(2001, 3001, 7, 0)).await;
    assert_eq!(event_n(&a.frame().await), 6);
    assert_eq!(event_n(&b.frame().await), 7);
    let mut got = [event_n(&s.frame().await), event_n(&s.frame().await)];
    got.sort();
    assert_eq!(got, [6, 7]);
    for f in [a, b, s] {
        f.close().await;
    }
}

#[tokio::test]
async fn subscriptions_follow_clients() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    assert_eq!(edge.subscribed_guilds(), 0);
    let (a, _) = client(&edge, 1, &[2000, 2001]).await;
    let (b, _) = client(&edge, 2, &[2001]).await;
    assert_eq!(edge.subscribed_guilds(), 2);
    assert_eq!(bus.subscriptions.load(Ordering::SeqCst), 2);
    a.close().await;
    eventually("2000 unsubscribed", || edge.subscribed_guilds() == 1).await;
    eventually("bus sub dropped", || {
        bus.subscriptions.load(Ordering::SeqCst) == 1
    })
    .await;
    b.close().await;
    eventually("all unsubscribed", || {
        bus.subscriptions.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(metric(&edge, "voicewatch_edge_guild_subscriptions"), 0.0);
}

#[tokio::test]
async fn auth_close_codes() {
    let bus = TestBus::new();
    let mut a = args();
    a.auth_timeout_ms = 200;
    a.max_message_bytes = 4096;
    let edge = start(a, bus.clone()).await;
    let url = edge.ws_url();

    // 4002: nothing sent in time.
    let mut c = Client::connect(&url).await;
    c.expect_close(4002).await;

    // 4001: bad signature, alg none, expired, unconfigured algorithm, too many guilds.
    let bad_sig = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub":"1","guilds":["2000"],"exp": now_ms()/1000 + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZ3VpbGRzIjpbIjIwMDAiXSwiZXhwIjo5OTk5OTk5OTk5fQ.";
    let expired = token_with(json!({"sub":"1","guilds":["2000"],"exp": now_ms()/1000 - 10}));
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"sub":"1","guilds":["2000"],"exp": now_ms()/1000 + 60}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let too_many = token_with(json!({"sub":"1","guilds":many,"exp": now_ms()/1000 + 60}));
    for t in [
        bad_sig.as_str(),
        none,
        expired.as_str(),
        hs384.as_str(),
        too_many.as_str(),
    ] {
        let mut c = Client::connect(&url).await;
        c.send_auth(t, None, None).await;
        c.expect_close(4001).await;
    }
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_auth_failures_total{reason=\"signature\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_auth_failures_total{reason=\"algorithm\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_auth_failures_total{reason=\"expired\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_auth_failures_total{reason=\"too_many_guilds\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_auth_failures_total{reason=\"timeout\"}"
        ),
        1.0
    );

    // 4000: not JSON, wrong version, ping before auth, binary, oversized.
    for bad in [
        "nope",
        r#"{"v":2,"type":"auth","token":"x"}"#,
        r#"{"v":1,"type":"ping"}"#,
        r#"{"v":1,"type":"hello"}"#,
    ] {
        let mut c = Client::connect(&url).await;
        c.send_text(bad).await;
        c.expect_close(4000).await;
    }
    let mut c = Client::connect(&url).await;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2,
    ]))
    .await
    .unwrap();
    c.expect_close(4000).await;
    let mut c = Client::connect(&url).await;
    c.send_text(&format!(
        r#"{{"v":1,"type":"auth","token":"{}"}}"#,
        "a".repeat(5000)
    ))
    .await;
    c.expect_close(4000).await;

    // 4000 after auth too: an unknown frame type.
    let (mut c, _) = client(&edge, 1, &[2000]).await;
    c.send_text(r#"{"v":1,"type":"subscribe"}"#).await;
    c.expect_close(4000).await;
    eventually("voicewatch_edge_connections_closed_total", || {
        metric(
            &edge,
            "voicewatch_edge_connections_closed_total{code=\"4000\"}",
        ) == 7.0
    })
    .await;
    eventually("voicewatch_edge_connections_closed_total", || {
        metric(
            &edge,
            "voicewatch_edge_connections_closed_total{code=\"4001\"}",
        ) == 5.0
    })
    .await;
}

#[tokio::test]
async fn token_expiry_and_refresh() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let url = edge.ws_url();
    // exp has one-second granularity: "+2" expires between 1 and 2 s from now.
    let soon = |sub: &str, guilds: serde_json::Value, secs: i64| {
        token_with(json!({"sub": sub, "guilds": guilds, "exp": now_ms()/1000 + secs}))
    };

    // 4003 when exp passes (1-2 s from now).
    let mut c = Client::connect(&url).await;
    c.auth(&soon("3001", json!(["2000"]), 2), None).await;
    c.expect_close(4003).await;

    // A refresh is acked; it may drop guilds, and it moves exp.
    let mut c = Client::connect(&url).await;
    c.auth(&soon("3001", json!(["2000", "2001"]), 2), None)
        .await;
    let ack = c.auth(&soon("3001", json!(["2000"]), 3600), None).await;
    assert_eq!(ack["recovered"], true);
    bus.send(&event(2001, 1, 1, 0)).await;
    bus.send(&event(2000, 1, 2, 0)).await;
    // Past the first token's exp, and only guild 2000 is delivered.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    bus.send(&event(2000, 1, 3, 0)).await;
    assert_eq!(event_n(&c.frame().await), 2);
    assert_eq!(event_n(&c.frame().await), 3);

    // Adding a guild or changing the subject fails the refresh with 4001.
    c.send_auth(&soon("3001", json!(["2000", "2002"]), 3600), None, None)
        .await;
    c.expect_close(4001).await;
    let mut c = Client::connect(&url).await;
    c.auth(&soon("3001", json!(["2000"]), 3600), None).await;
    c.send_auth(&soon("3002", json!(["2000"]), 3600), None, None)
        .await;
    c.expect_close(4001).await;
    let _ = c.ws.close(None).await;
    eventually("voicewatch_edge_connections_closed_total", || {
        metric(
            &edge,
            "voicewatch_edge_connections_closed_total{code=\"4003\"}",
        ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn limits_answer_4029() {
    let bus = TestBus::new();
    let mut a = args();
    a.max_connections_per_user = 1;
    a.max_connections_per_ip = 2;
    a.inbound_rate = 1.0;
    a.inbound_burst = 3.0;
    let edge = start(a, bus.clone()).await;
    let url = edge.ws_url();

    // Per user.
    let (first, _) = client(&edge, 1, &[2000]).await;
    let mut second = Client::connect(&url).await;
    second.send_auth(&token(1, &[2000]), None, None).await;
    second.expect_close(4029).await;
    drop(second);
    eventually("second gone", || edge.connections() == 1).await;
    assert_eq!(
        metric(&edge, "voicewatch_edge_rejected_total{reason=\"per_user\"}"),
        1.0
    );

    // Per IP: `first` plus one more is the cap.
    let (mut other, _) = client(&edge, 2, &[2000]).await;
    let mut third = Client::connect(&url).await;
    third.expect_close(4029).await;
    assert_eq!(
        metric(&edge, "voicewatch_edge_rejected_total{reason=\"per_ip\"}"),
        1.0
    );

    // Inbound rate: a burst of 3, then 4029.
    for _ in 0..2 {
        other.send(json!({"v":1,"type":"ping"})).await;
    }
    for _ in 0..4 {
        other.send(json!({"v":1,"type":"ping"})).await;
    }
    other.expect_close(4029).await;
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_rejected_total{reason=\"inbound_rate\"}"
        ),
        1.0
    );
    first.close().await;

    // Total.
    let mut t = args();
    t.max_connections = 1;
    let edge2 = start(t, bus.clone()).await;
    let (_one, _) = client(&edge2, 1, &[2000]).await;
    let mut two = Client::connect(&edge2.ws_url()).await;
    two.expect_close(4029).await;
    assert_eq!(
        metric(&edge2, "voicewatch_edge_rejected_total{reason=\"total\"}"),
        1.0
    );
}

#[tokio::test]
async fn origin_allow_list() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let bus = TestBus::new();
    let mut a = args();
    a.allowed_origins = vec!["https://ok.example".into()];
    let edge = start(a, bus).await;
    let mut req = edge.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut req = edge.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://ok.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    assert_eq!(
        metric(&edge, "voicewatch_edge_rejected_total{reason=\"origin\"}"),
        1.0
    );
}

#[tokio::test]
async fn dead_peer_is_dropped() {
    let bus = TestBus::new();
    let mut a = args();
    a.ws_ping_ms = 100;
    a.ws_ping_timeout_ms = 200;
    a.heartbeat_ms = 60_000;
    let edge = start(a, bus).await;
    // Authenticate, then never read again: no pong ever answers the pings.
    let (_c, _) = client(&edge, 1, &[2000]).await;
    eventually("dead peer dropped", || {
        metric(&edge, "voicewatch_edge_dead_peers_total") == 1.0
    })
    .await;
    eventually("gone", || edge.connections() == 0).await;
}

#[tokio::test]
async fn forged_stale_and_cross_guild_events_are_dropped() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let (mut c, _) = client(&edge, 1, &[2000, 2001]).await;

    let ev = event(2000, 1, 1, 0);
    // Wrong key.
    let forged = SignedEvent::seal(
        &ev,
        &voicewatch_protocol::Keyring::parse("k1=other").unwrap(),
        now_ms(),
    );
    bus.publish(&forged).await.unwrap();
    // Stale: signed ten minutes ago.
    bus.publish(&SignedEvent::seal(&ev, &keyring(), now_ms() - 600_000))
        .await
        .unwrap();
    // Cross-guild: a valid event of 2001 published on 2000's subject.
    let mut cross = seal(&event(2001, 1, 2, 0));
    cross.subject = Subject::new(g(2000), cross.subject.kind);
    bus.publish(&cross).await.unwrap();
    // Malformed and missing signatures, unknown key.
    let mut bad = seal(&ev);
    bad.stamp.signature = "v1=xyz".into();
    bus.publish(&bad).await.unwrap();
    let mut missing = seal(&ev);
    missing.stamp = Stamp {
        signature: String::new(),
        ..missing.stamp
    };
    bus.publish(&missing).await.unwrap();
    let mut unknown = seal(&ev);
    unknown.stamp.key_id = Some("nope".into());
    bus.publish(&unknown).await.unwrap();
    // Tampered payload.
    let mut tampered = seal(&ev);
    let text = String::from_utf8(tampered.payload.to_vec())
        .unwrap()
        .replace("4000", "4001");
    tampered.payload = bytes::Bytes::from(text);
    bus.publish(&tampered).await.unwrap();

    bus.send(&event(2000, 1, 99, 0)).await;
    assert_eq!(event_n(&c.frame().await), 99);
    for (reason, n) in [
        ("signature_mismatch", 2.0),
        ("stale", 1.0),
        ("subject_mismatch", 1.0),
        ("signature_malformed", 1.0),
        ("signature_missing", 1.0),
        ("unknown_key", 1.0),
    ] {
        assert_eq!(
            metric(
                &edge,
                &format!("voicewatch_edge_events_dropped_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}"
        );
    }
    assert_eq!(metric(&edge, "voicewatch_edge_events_received_total"), 8.0);
    assert_eq!(metric(&edge, "voicewatch_edge_events_delivered_total"), 1.0);

    // Replay verifies too (without the freshness check: history is old).
    // Replayed before the ack: the stale one (valid signature) and the good one.
    let mut r = Client::connect(&edge.ws_url()).await;
    r.send_auth(
        &token(3, &[2000, 2001]),
        Some(&Cursor::new(7, 0).to_string()),
        None,
    )
    .await;
    assert_eq!(event_n(&r.frame().await), 1);
    assert_eq!(event_n(&r.frame().await), 99);
    let ack = r.frame().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["recovered"], true);
}

#[tokio::test]
async fn resume_recovered_without_gap_or_duplicate() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let (mut c, _) = client(&edge, 1, &[2000]).await;
    bus.send(&event(2000, 1, 1, 0)).await;
    bus.send(&event(2000, 1, 2, 0)).await;
    let f1 = c.frame().await;
    assert_eq!(event_n(&f1), 1);
    let cursor = f1["cursor"].as_str().unwrap().to_owned();
    drop(c);
    bus.send(&event(2001, 1, 50, 0)).await;
    bus.send(&event(2000, 1, 3, 0)).await;

    // A publisher keeps going while clients resume: every client sees 2..=N
    // exactly once, in order, whatever the interleaving of replay and live.
    const N: u64 = 400;
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 4..=N {
                bus.send(&event(2000, 1, n, 0)).await;
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let url = edge.ws_url();
        let cursor = cursor.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            c.send_auth(&token(10 + i, &[2000]), Some(&cursor), None)
                .await;
            let mut seen = Vec::new();
            let mut acked = false;
            while seen.last() != Some(&N) {
                let f = c.frame().await;
                if f["type"] == "ack" {
                    assert_eq!(f["recovered"], true);
                    acked = true;
                    continue;
                }
                seen.push(event_n(&f));
            }
            assert!(acked);
            assert_eq!(seen, (2..=N).collect::<Vec<_>>());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    publisher.await.unwrap();
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_resumes_total{outcome=\"recovered\"}"
        ),
        8.0
    );
}

/// The edge's subscription may lag behind the stream (a busy NATS
/// subscriber): a resume's replay then reads events the hub pushes only
/// after the ack. Those are at or below the ack's cursor and must not reach
/// the client a second time (the storm and churn duplicates).
#[tokio::test]
async fn resume_while_live_lags_behind_the_stream_has_no_duplicate() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    // Keeps the guild subscribed across the resume.
    let (mut watcher, _) = client(&edge, 1, &[2000]).await;
    let (mut c, _) = client(&edge, 2, &[2000]).await;
    bus.send(&event(2000, 1, 1, 0)).await;
    let f1 = c.frame().await;
    assert_eq!(event_n(&f1), 1);
    assert_eq!(event_n(&watcher.frame().await), 1);
    let cursor = f1["cursor"].as_str().unwrap().to_owned();
    c.close().await;

    bus.hold_live();
    for n in 2..=4 {
        bus.send(&event(2000, 1, n, 0)).await;
    }
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&token(2, &[2000]), Some(&cursor), None).await;
    let mut replayed = Vec::new();
    let ack = loop {
        let f = c.frame().await;
        if f["type"] == "ack" {
            break f;
        }
        replayed.push(event_n(&f));
    };
    assert_eq!(replayed, vec![2, 3, 4]);
    assert_eq!(ack["recovered"], true);

    // The lagging subscription catches up, then a new event.
    bus.release_live();
    for n in 2..=4 {
        assert_eq!(event_n(&watcher.frame().await), n);
    }
    bus.send(&event(2000, 1, 5, 0)).await;
    assert_eq!(event_n(&watcher.frame().await), 5);
    let next = c.frame().await;
    assert_eq!(
        event_n(&next),
        5,
        "an event at or below the ack's cursor came again: {next}"
    );
}

#[tokio::test]
async fn resume_not_recovered() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let old = bus.send(&event(2000, 1, 1, 0)).await;
    bus.send(&event(2000, 1, 2, 0)).await;
    bus.forget_history();
    bus.send(&event(2000, 1, 3, 0)).await;

    // History no longer reaches the cursor: what is left, then recovered false.
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&token(1, &[2000]), Some(&old.to_string()), None)
        .await;
    assert_eq!(event_n(&c.frame().await), 3);
    let ack = c.frame().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["recovered"], false);
    assert_eq!(ack["cursor"], bus.head_now().to_string());

    // A cursor of another epoch or garbage: recovered false, live from head.
    for cur in ["99-1", "garbage"] {
        let mut c = Client::connect(&edge.ws_url()).await;
        c.send_auth(&token(1, &[2000]), Some(cur), None).await;
        loop {
            let f = c.frame().await;
            if f["type"] == "ack" {
                assert_eq!(f["recovered"], false);
                break;
            }
        }
        let live = bus.send(&event(2000, 1, 10, 0)).await;
        let f = c.frame().await;
        assert_eq!(f["cursor"], live.to_string());
    }
    // Over the replay limit.
    let mut a = args();
    a.resume_max_events = 1;
    let edge2 = start(a, bus.clone()).await;
    let mut c = Client::connect(&edge2.ws_url()).await;
    let from = Cursor::new(7, 3);
    c.send_auth(&token(1, &[2000]), Some(&from.to_string()), None)
        .await;
    assert_eq!(c.frame().await["type"], "event");
    let ack = c.frame().await;
    assert_eq!(ack["recovered"], false);
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_resumes_total{outcome=\"not_recovered\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_resumes_total{outcome=\"invalid_cursor\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn slow_consumer_is_cut_and_others_keep_receiving() {
    let bus = TestBus::new();
    let mut a = args();
    a.outbound_buffer_bytes = 64 * 1024;
    a.close_timeout_ms = 10_000;
    let edge = start(a, bus.clone()).await;
    let mut slow = Client::connect_small_rcvbuf(&edge.ws_url(), edge.local_addr()).await;
    slow.auth(&token(1, &[2000]), None).await;
    let (mut fast, _) = client(&edge, 2, &[2000]).await;

    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut next = 1;
        loop {
            let f = fast.frame().await;
            assert_eq!(event_n(&f), next);
            progress_tx.send_replace(next);
            if f["payload"]["last"] == true {
                return next;
            }
            next += 1;
        }
    });
    // Publish, paced by the fast reader, until the edge cuts the slow one.
    let mut n = 0;
    while metric(
        &edge,
        "voicewatch_edge_events_dropped_total{reason=\"slow_consumer\"}",
    ) == 0.0
    {
        n += 1;
        assert!(n < 20_000, "slow consumer never cut");
        bus.send(&event(2000, 1, n, 4096)).await;
        let want = n.saturating_sub(4);
        tokio::time::timeout(WAIT, progress.wait_for(|p| *p >= want))
            .await
            .unwrap()
            .unwrap();
    }
    let mut last =
        serde_json::from_slice::<serde_json::Value>(&event(2000, 1, n + 1, 0).to_bytes()).unwrap();
    last["last"] = json!(true);
    let last = voicewatch_protocol::VoiceEvent::from_slice(last.to_string().as_bytes()).unwrap();
    bus.send(&last).await;
    assert_eq!(reader.await.unwrap(), n + 1);

    // The slow reader gets what was written before the cut, then 4008.
    slow.expect_close(4008).await;
    eventually("voicewatch_edge_connections_closed_total", || {
        metric(
            &edge,
            "voicewatch_edge_connections_closed_total{code=\"4008\"}",
        ) == 1.0
    })
    .await;
    eventually("queue empty", || {
        metric(&edge, "voicewatch_edge_outbound_queue_bytes") == 0.0
    })
    .await;
}

#[tokio::test]
async fn ingest_endpoint() {
    let bus = TestBus::new();
    let mut a = args();
    a.ingest_max_bytes = 2048;
    let edge = start(a, bus.clone()).await;
    let (mut c, _) = client(&edge, 1, &[2000]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/internal/events", edge.http_url());
    let post = |body: Vec<u8>, stamp: Option<Stamp>| {
        let mut r = http.post(&url).body(body);
        if let Some(s) = stamp {
            r = r
                .header("Vw-Timestamp", s.timestamp)
                .header("Vw-Signature", s.signature);
            if let Some(k) = s.key_id {
                r = r.header("Vw-Key-Id", k);
            }
        }
        r.send()
    };
    let ev = event(2000, 1, 1, 0);
    let body = ev.to_bytes();
    let kr = keyring();
    let r = post(body.clone(), Some(kr.sign(now_ms(), &body)))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"id": "e-2000-1-1"})
    );
    assert_eq!(event_n(&c.frame().await), 1);

    assert_eq!(post(body.clone(), None).await.unwrap().status(), 401);
    let wrong = voicewatch_protocol::Keyring::parse("k1=nope")
        .unwrap()
        .sign(now_ms(), &body);
    assert_eq!(post(body.clone(), Some(wrong)).await.unwrap().status(), 401);
    assert_eq!(
        post(body.clone(), Some(kr.sign(now_ms() - 600_000, &body)))
            .await
            .unwrap()
            .status(),
        401
    );
    let junk = br#"{"id":"x","type":"voice.exploded"}"#.to_vec();
    assert_eq!(
        post(junk.clone(), Some(kr.sign(now_ms(), &junk)))
            .await
            .unwrap()
            .status(),
        400
    );
    let big = event(2000, 1, 2, 4000).to_bytes();
    assert_eq!(
        post(big.clone(), Some(kr.sign(now_ms(), &big)))
            .await
            .unwrap()
            .status(),
        413
    );
    bus.fail_publish.store(true, Ordering::SeqCst);
    assert_eq!(
        post(body.clone(), Some(kr.sign(now_ms(), &body)))
            .await
            .unwrap()
            .status(),
        503
    );
    for (s, n) in [(202, 1.0), (401, 3.0), (400, 1.0), (413, 1.0), (503, 1.0)] {
        assert_eq!(
            metric(
                &edge,
                &format!("voicewatch_edge_ingest_requests_total{{status=\"{s}\"}}")
            ),
            n,
            "{s}"
        );
    }
}

#[tokio::test]
async fn health_ready_metrics() {
    let bus = TestBus::new();
    let edge = start(args(), bus.clone()).await;
    let base = edge.http_url();
    let get = |p: &str| reqwest::get(format!("{base}{p}"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    bus.connected.store(false, Ordering::SeqCst);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    bus.connected.store(true, Ordering::SeqCst);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for family in [
        "voicewatch_edge_connections ",
        "voicewatch_edge_fanout_latency_seconds_bucket",
        "voicewatch_edge_outbound_queue_bytes",
        "voicewatch_edge_guild_subscriptions",
        "voicewatch_edge_events_received_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
}

#[tokio::test]
async fn drain_moves_clients_to_another_edge_without_loss() {
    let bus = TestBus::new();
    drain_scenario(bus.clone(), bus.clone(), bus).await;
}

/// Two edges, each with its own connection to a real nats-server (JetStream),
/// as two processes would be.
#[tokio::test]
async fn drain_moves_clients_without_loss_on_nats() {
    use voicewatch_bus::testkit::NatsServer;
    use voicewatch_bus::{NatsArgs, NatsBus};
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let connect = || async {
        let b: Arc<dyn Bus> = Arc::new(
            NatsBus::connect(NatsArgs::new([server.url()]))
                .await
                .unwrap(),
        );
        b
    };
    let (a, b, p) = (connect().await, connect().await, connect().await);
    drain_scenario(a, b, p).await;
}

#[tokio::test]
async fn nats_events_isolation_signatures_and_resume() {
    use voicewatch_bus::testkit::NatsServer;
    use voicewatch_bus::{NatsArgs, NatsBus};
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(NatsArgs::new([server.url()]))
            .await
            .unwrap(),
    );
    let edge = start(args(), bus.clone()).await;
    let (mut a, _) = client(&edge, 1, &[2000]).await;
    let (mut b, _) = client(&edge, 2, &[2001]).await;
    let forged = SignedEvent::seal(
        &event(2000, 1, 1, 0),
        &voicewatch_protocol::Keyring::parse("k1=other").unwrap(),
        now_ms(),
    );
    bus.publish(&forged).await.unwrap();
    let c2 = bus
        .publish(&seal(&event(2000, 1, 2, 0)))
        .await
        .unwrap()
        .cursor;
    bus.publish(&seal(&event(2001, 1, 3, 0))).await.unwrap();
    let f = a.frame().await;
    assert_eq!(
        (event_n(&f), f["cursor"].as_str().unwrap()),
        (2, c2.to_string().as_str())
    );
    assert_eq!(event_n(&b.frame().await), 3);
    assert_eq!(
        metric(
            &edge,
            "voicewatch_edge_events_dropped_total{reason=\"signature_mismatch\"}"
        ),
        1.0
    );
    drop(a);
    bus.publish(&seal(&event(2000, 1, 4, 0))).await.unwrap();
    bus.publish(&seal(&event(2000, 1, 5, 0))).await.unwrap();
    let mut a = Client::connect(&edge.ws_url()).await;
    a.send_auth(&token(1, &[2000]), Some(&c2.to_string()), None)
        .await;
    assert_eq!(event_n(&a.frame().await), 4);
    assert_eq!(event_n(&a.frame().await), 5);
    let ack = a.frame().await;
    assert_eq!(ack["recovered"], true);
    bus.publish(&seal(&event(2000, 1, 6, 0))).await.unwrap();
    assert_eq!(event_n(&a.frame().await), 6);
}

#[tokio::test]
async fn drain_moves_clients_without_loss_on_memory_bus() {
    let bus: Arc<dyn Bus> = Arc::new(voicewatch_bus::MemoryBus::default());
    drain_scenario(bus.clone(), bus.clone(), bus).await;
}

#[tokio::test]
async fn memory_bus_resume_outcomes() {
    let bus: Arc<dyn Bus> = Arc::new(voicewatch_bus::MemoryBus::new(
        voicewatch_bus::MemoryBusConfig {
            history_per_guild: 3,
            ..Default::default()
        },
    ));
    let edge = start(args(), bus.clone()).await;
    let first = bus
        .publish(&seal(&event(2000, 1, 1, 0)))
        .await
        .unwrap()
        .cursor;
    bus.publish(&seal(&event(2000, 1, 2, 0))).await.unwrap();
    bus.publish(&seal(&event(2000, 1, 3, 0))).await.unwrap();
    // History holds 1..=3: resuming after 1 recovers 2 and 3.
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&token(1, &[2000]), Some(&first.to_string()), None)
        .await;
    assert_eq!(event_n(&c.frame().await), 2);
    assert_eq!(event_n(&c.frame().await), 3);
    assert_eq!(c.frame().await["recovered"], true);
    let live = bus
        .publish(&seal(&event(2000, 1, 4, 0)))
        .await
        .unwrap()
        .cursor;
    let f = c.frame().await;
    assert_eq!(
        (event_n(&f), f["cursor"].as_str().unwrap()),
        (4, live.to_string().as_str())
    );
    bus.publish(&seal(&event(2000, 1, 5, 0))).await.unwrap();
    // 1 and 2 are gone now: resuming after 1 is not recovered.
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&token(2, &[2000]), Some(&first.to_string()), None)
        .await;
    loop {
        let f = c.frame().await;
        if f["type"] == "ack" {
            assert_eq!(f["recovered"], false);
            break;
        }
    }
}

async fn drain_scenario(bus_a: Arc<dyn Bus>, bus_b: Arc<dyn Bus>, bus: Arc<dyn Bus>) {
    let mut a = args();
    a.drain_window_ms = 300;
    let edge_a = start(a, bus_a).await;
    let edge_b = start(args(), bus_b).await;

    const N: u64 = 2000;
    const CLIENTS: u64 = 6;
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS as usize);
    for i in 0..CLIENTS {
        let (url_a, url_b) = (edge_a.ws_url(), edge_b.ws_url());
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let tok = token(100 + i, &[2000]);
            let mut c = Client::connect(&url_a).await;
            let mut cursor = c.auth(&tok, None).await["cursor"]
                .as_str()
                .unwrap()
                .to_owned();
            ready.send(()).await.unwrap();
            let mut seen = Vec::new();
            let mut moved = false;
            loop {
                match c.next().await {
                    Seen::Frame(f) if f["type"] == "event" => {
                        cursor = f["cursor"].as_str().unwrap().to_owned();
                        seen.push(event_n(&f));
                        if seen.last() == Some(&N) {
                            break;
                        }
                    }
                    Seen::Frame(f) if f["type"] == "error" => {
                        assert_eq!(f["code"], "service_restart");
                        assert_eq!(c.next().await, Seen::Close(Some(1012)));
                        assert!(!moved);
                        moved = true;
                        c = Client::connect(&url_b).await;
                        c.send_auth(&tok, Some(&cursor), None).await;
                    }
                    Seen::Frame(f) if f["type"] == "ack" => assert_eq!(f["recovered"], true),
                    Seen::Frame(_) | Seen::WsPing => {}
                    other => panic!("{other:?}"),
                }
            }
            assert!(moved, "client {i} was never drained");
            let first_bad = seen.iter().zip(1..).position(|(s, want)| *s != want);
            assert!(
                first_bad.is_none() && seen.len() == N as usize,
                "client {i}: {} events, first wrong at index {first_bad:?}: {:?}",
                seen.len(),
                first_bad.map(|b| &seen[b.saturating_sub(3)..(b + 3).min(seen.len())])
            );
        }));
    }
    for _ in 0..CLIENTS {
        ready_rx.recv().await.unwrap();
    }
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 1..=N {
                bus.publish(&seal(&event(2000, 1, n, 0))).await.unwrap();
                if n % 4 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        })
    };
    // Drain while events flow.
    eventually("some events delivered", || {
        metric(&edge_a, "voicewatch_edge_events_delivered_total") > 50.0
    })
    .await;
    edge_a.drain();
    // Still answering while it drains: unready, and no new WebSockets.
    let ready = reqwest::get(format!("{}/readyz", edge_a.http_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.unwrap(), "draining");
    let upgrade = reqwest::Client::new()
        .get(format!("{}/api/ws", edge_a.http_url()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 503);
    let healthz = reqwest::get(format!("{}/healthz", edge_a.http_url()))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    tokio::time::timeout(WAIT, edge_a.join())
        .await
        .expect("drain finished");
    assert_eq!(edge_a.connections(), 0);
    assert!(Client::try_connect(&edge_a.ws_url()).await.is_err());
    publisher.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    eventually("voicewatch_edge_connections_closed_total", || {
        metric(
            &edge_a,
            "voicewatch_edge_connections_closed_total{code=\"1012\"}",
        ) == CLIENTS as f64
    })
    .await;
    assert_eq!(
        metric(
            &edge_b,
            "voicewatch_edge_resumes_total{outcome=\"recovered\"}"
        ),
        CLIENTS as f64
    );
}

fn key_path(name: &str) -> std::path::PathBuf {
    // Test-only keys, generated with openssl (see ws-edge/tests/keys).
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

#[tokio::test]
async fn public_key_tokens_rs256_es256_eddsa() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let bus = TestBus::new();
    let mut a = args();
    a.jwt_hs256_secret = None;
    a.jwt_public_keys = vec![
        key_path("jwks.json"),
        key_path("ec.pub"),
        key_path("ed.pub"),
    ];
    let edge = start(a, bus.clone()).await;
    let claims = json!({"sub":"1","guilds":["2000"],"exp": now_ms()/1000 + 60});
    let read = |n: &str| std::fs::read(key_path(n)).unwrap();
    let mut rs = Header::new(Algorithm::RS256);
    rs.kid = Some("rsa-1".into());
    let tokens = [
        jsonwebtoken::encode(
            &rs,
            &claims,
            &EncodingKey::from_rsa_pem(&read("rsa.key")).unwrap(),
        )
        .unwrap(),
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&read("ec.key")).unwrap(),
        )
        .unwrap(),
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(&read("ed.key")).unwrap(),
        )
        .unwrap(),
    ];
    for t in &tokens {
        let mut c = Client::connect(&edge.ws_url()).await;
        c.auth(t, None).await;
        c.close().await;
    }
    // HS256 is not configured on this edge; a wrong kid finds no key.
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&token(1, &[2000]), None, None).await;
    c.expect_close(4001).await;
    rs.kid = Some("other".into());
    let wrong_kid = jsonwebtoken::encode(
        &rs,
        &claims,
        &EncodingKey::from_rsa_pem(&read("rsa.key")).unwrap(),
    )
    .unwrap();
    let mut c = Client::connect(&edge.ws_url()).await;
    c.send_auth(&wrong_kid, None, None).await;
    c.expect_close(4001).await;
}

#[tokio::test]
async fn tls_serves_wss() {
    let bus = TestBus::new();
    let mut a = args();
    a.tls_cert = Some(key_path("tls.crt"));
    a.tls_key = Some(key_path("tls.key"));
    let edge = start(a, bus.clone()).await;
    assert!(edge.ws_url().starts_with("wss://"));

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(key_path("tls.crt")).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(edge.local_addr())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(edge.ws_url(), tls)
        .await
        .unwrap();
    let mut ws = ws;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"v":1,"type":"auth","token":token(1,&[2000])}).to_string(),
    ))
    .await
    .unwrap();
    use futures::StreamExt;
    let ack = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_text().unwrap().contains("auth.ok"));
    bus.send(&event(2000, 1, 5, 0)).await;
    let ev = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ev.to_text().unwrap().contains("\"n\":5"));
}

/// Frames arriving together are all answered: the live loop reads a batch
/// per turn and must come back for the rest on its own.
#[tokio::test]
async fn a_burst_of_client_frames_is_answered_in_full() {
    let bus = TestBus::new();
    let mut a = args();
    a.inbound_burst = 100.0;
    let edge = start(a, bus.clone()).await;
    let (mut c, _ack) = client(&edge, 3001, &[2000]).await;
    let ping = json!({"v":1,"type":"ping"}).to_string();
    for _ in 0..40 {
        c.ws.feed(tokio_tungstenite::tungstenite::Message::text(ping.clone()))
            .await
            .unwrap();
    }
    c.ws.flush().await.unwrap();
    for i in 0..40 {
        let f = tokio::time::timeout(std::time::Duration::from_secs(5), c.frame())
            .await
            .unwrap_or_else(|_| panic!("pong {i} never came"));
        assert_eq!(f, json!({"v":1,"type":"pong"}));
    }
}
