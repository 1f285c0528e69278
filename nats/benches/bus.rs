//! Publish → subscriber latency and throughput of both buses.
//!
//! ```text
//! cargo bench -p voicewatch-bus --bench bus            # both
//! cargo bench -p voicewatch-bus --bench bus -- memory  # or nats
//! ```
//!
//! Latency: one event at a time, from the start of `publish` until the
//! subscriber of its guild yields it (includes the JetStream ack for
//! NATS). Throughput: `CONCURRENCY` publishers push `EVENTS` events to one
//! guild; the clock stops when the subscriber has all of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use voicewatch_bus::testkit::{NatsServer, event, guild};
use voicewatch_bus::{Bus, MemoryBus, MemoryBusConfig, NatsArgs, NatsBus};

const LATENCY_SAMPLES: usize = 2_000;
const EVENTS: usize = 20_000;
const CONCURRENCY: usize = 32;
const WAIT: Duration = Duration::from_secs(30);

async fn latency(name: &str, bus: Arc<dyn Bus>) {
    let g = guild(77);
    let mut sub = bus.subscribe(g).await.unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..LATENCY_SAMPLES + 200 {
        let e = event(g, &format!("lat-{i}-{}", rand::random::<u32>()));
        let t0 = Instant::now();
        bus.publish(&e).await.unwrap();
        let d = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        let us = t0.elapsed().as_micros() as u64;
        assert_eq!(d.event.id, e.id);
        if i >= 200 {
            // The first 200 warm up connections and caches.
            h.record(us).unwrap();
        }
    }
    println!(
        "{name:<8} latency  publish→subscriber  n={}  p50={}µs  p90={}µs  p99={}µs  max={}µs",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
}

async fn throughput(name: &str, bus: Arc<dyn Bus>) {
    let g = guild(78);
    let mut sub = bus.subscribe(g).await.unwrap();
    let events: Vec<_> = (0..EVENTS)
        .map(|i| event(g, &format!("tp-{i}-{}", rand::random::<u32>())))
        .collect();
    let events = Arc::new(events);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONCURRENCY {
        let bus = Arc::clone(&bus);
        let events = Arc::clone(&events);
        tasks.push(tokio::spawn(async move {
            for e in events.iter().skip(k).step_by(CONCURRENCY) {
                bus.publish(e).await.unwrap();
            }
        }));
    }
    let mut got = 0;
    while got < EVENTS {
        tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        got += 1;
    }
    let elapsed = t0.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{name:<8} throughput  {EVENTS} events, {CONCURRENCY} publishers, 1 subscriber: {:.0} events/s ({:.2?})",
        EVENTS as f64 / elapsed.as_secs_f64(),
        elapsed
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |n: &str| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if wants("memory") {
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig {
                history_per_guild: EVENTS * 2,
                ..Default::default()
            }));
            latency("memory", Arc::clone(&bus)).await;
            throughput("memory", bus).await;
        }
        if wants("nats") {
            let server = NatsServer::start();
            let bus: Arc<dyn Bus> = Arc::new(
                NatsBus::connect(NatsArgs::new([server.url()]))
                    .await
                    .unwrap(),
            );
            latency("nats", Arc::clone(&bus)).await;
            throughput("nats", bus).await;
        }
    });
}
