//! The JetStream bus on a 3-node cluster: the node the client is connected
//! to is killed mid-stream, and nothing is lost or repeated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use voicewatch_bus::testkit::{NatsCluster, event, guild};
use voicewatch_bus::{Bus, NatsArgs, NatsBus, Outbox, OutboxConfig};
use voicewatch_protocol::Cursor;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connected_node_loses_nothing() {
    let cluster = NatsCluster::start(3);
    let args = NatsArgs {
        stream_replicas: 3,
        nats_timeout: Duration::from_secs(2),
        nats_reconnect_max_delay: Duration::from_millis(200),
        ..NatsArgs::new(cluster.urls())
    };
    let bus = Arc::new(NatsBus::connect(args.clone()).await.unwrap());
    let g = guild(9001);
    let mut live = bus.subscribe(g).await.unwrap();
    let outbox = Outbox::new(
        Arc::clone(&bus) as Arc<dyn Bus>,
        OutboxConfig {
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let events: Vec<_> = (0..60)
        .map(|i| event(g, &format!("cluster-{i}-{}", rand::random::<u32>())))
        .collect();
    for e in &events[..30] {
        outbox.try_send(e.clone()).unwrap();
    }
    assert!(outbox.flush(WAIT).await);

    let port = bus.client().server_info().port;
    let node = cluster
        .node_with_port(port)
        .expect("connected to a node of the cluster");
    cluster.stop_node(node);
    for e in &events[30..] {
        outbox.try_send(e.clone()).unwrap();
    }
    assert!(outbox.flush(WAIT).await, "stored after failover");
    assert_ne!(
        bus.client().server_info().port,
        port,
        "moved to another node"
    );

    for e in &events {
        let d = tokio::time::timeout(WAIT, live.next())
            .await
            .expect("delivery")
            .expect("open");
        assert_eq!(d.event.id, e.id, "in order, once");
    }
    let r = bus
        .replay(&[g], Cursor::new(bus.head().await.unwrap().epoch, 0), 1000)
        .await
        .unwrap();
    assert!(r.recovered);
    let ids: Vec<_> = r.events.iter().map(|d| d.event.id.clone()).collect();
    let want: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want, "the stream holds each event once");
}
