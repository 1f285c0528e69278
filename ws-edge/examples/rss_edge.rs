//! Ad-hoc memory and fan-out check: an edge on the in-process bus, listening
//! on the address printed to stdout, until stdin closes. Pair with
//! `rss_clients`. Stdin lines: `pub N RATE` publishes N events to guild 2000
//! at RATE per second; `metrics` prints fan-out figures.
//!
//! cargo run --release -p voicewatch-ws-edge --example rss_edge

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The allocator of the `voicewatch` binary, so the figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;

use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use voicewatch_bus::{Bus, MemoryBus};
use voicewatch_protocol::{Keyring, SignedEvent, VoiceEvent};
use voicewatch_ws_edge::{Edge, EdgeArgs};

#[tokio::main]
async fn main() {
    let mut a = EdgeArgs::defaults();
    a.listen = "127.0.0.1:0".parse().unwrap();
    a.jwt_hs256_secret = Some("rss-secret".into());
    a.max_connections_per_ip = 1_000_000;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let keys = Arc::new(Keyring::parse("k1=rss").unwrap());
    let edge = Edge::start(a, bus.clone(), Arc::clone(&keys))
        .await
        .unwrap();
    println!("{}", edge.local_addr());
    eprintln!("{:?}", voicewatch_ws_edge::debug_sizes());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["pub", n, rate] => {
                let (n, rate): (u64, u64) = (n.parse().unwrap(), rate.parse().unwrap());
                let (bus, keys) = (bus.clone(), Arc::clone(&keys));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
                    for i in 0..n {
                        tick.tick().await;
                        let ev = VoiceEvent::from_slice(
                            format!(r#"{{"id":"p-{i}-{}","type":"voice.left","guildId":"2000","userId":"3001","channelId":null,"previousChannelId":"4000","occurredAt":"2026-11-28T00:00:00.123Z"}}"#, std::process::id()).as_bytes(),
                        )
                        .unwrap();
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis() as i64;
                        bus.publish(&SignedEvent::seal(&ev, &keys, now))
                            .await
                            .unwrap();
                    }
                    eprintln!("published {n}");
                });
            }
            ["metrics"] => {
                for l in edge.metrics().encode().lines() {
                    if l.contains("fanout")
                        || l.contains("delivered")
                        || l.contains("dropped")
                        || l.starts_with("voicewatch_edge_connections ")
                    {
                        println!("{l}");
                    }
                }
            }
            _ => {
                // Live heap vs resident: what the connections hold, and
                // what the allocator keeps besides.
                let _ = tikv_jemalloc_ctl::epoch::advance();
                let allocated = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0);
                let resident = tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0);
                eprintln!(
                    "edge: {} connections, heap allocated {allocated} B, allocator resident {resident} B",
                    edge.connections()
                );
            }
        }
    }
}
