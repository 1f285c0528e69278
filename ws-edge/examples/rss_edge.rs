//! Ad-hoc memory check: an edge on the in-process bus, listening on the
//! address printed to stdout, until stdin closes. Pair with `rss_clients`.
//!
//! cargo run --release -p voicewatch-ws-edge --example rss_edge

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use voicewatch_bus::MemoryBus;
use voicewatch_protocol::Keyring;
use voicewatch_ws_edge::{Edge, EdgeArgs};

#[tokio::main]
async fn main() {
    let mut a = EdgeArgs::defaults();
    a.listen = "127.0.0.1:0".parse().unwrap();
    a.jwt_hs256_secret = Some("rss-secret".into());
    a.max_connections_per_ip = 1_000_000;
    let bus = Arc::new(MemoryBus::default());
    let keys = Arc::new(Keyring::parse("k1=rss").unwrap());
    let edge = Edge::start(a, bus, keys).await.unwrap();
    println!("{}", edge.local_addr());
    eprintln!("{:?}", voicewatch_ws_edge::debug_sizes());
    let mut buf = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {
        eprintln!("edge: {} connections", edge.connections());
    }
}
