//! Opens N authenticated idle connections to an edge and holds them.
//!
//! rss_clients ADDR N [CONCURRENCY]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args[1].clone();
    let n: usize = args[2].parse().unwrap();
    let conc: usize = args.get(3).map_or(256, |c| c.parse().unwrap());
    // `one`: every connection in guild 2000 (fan-out); otherwise 100 guilds.
    let one_guild = args.get(4).is_some_and(|m| m == "one");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = EncodingKey::from_secret(b"rss-secret");
    let sem = Arc::new(Semaphore::new(conc));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for i in 0..n {
        let token = encode(
            &Header::default(),
            &json!({"sub": (10_000 + i).to_string(), "guilds": [(2000 + if one_guild { 0 } else { i % 100 }).to_string()], "exp": exp}),
            &key,
        )
        .unwrap();
        let url = format!("ws://{addr}/api/ws");
        let sem = Arc::clone(&sem);
        let mut hold = hold_rx.clone();
        let acked = acked_tx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text(
                json!({"v":1,"type":"auth","token":token}).to_string(),
            ))
            .await
            .unwrap();
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("\"ack\"") => break,
                    Some(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
            drop(permit);
            let _ = acked.send(());
            // Idle, but answer pings.
            loop {
                tokio::select! {
                    m = ws.next() => if m.is_none() { break },
                    _ = hold.changed() => break,
                }
            }
        }));
    }
    for _ in 0..n {
        acked_rx.recv().await.unwrap();
    }
    let el = start.elapsed();
    println!(
        "{n} authenticated connections in {:.2} s ({:.0}/s)",
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64()
    );
    let mut buf = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while stdin.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    let _ = hold_tx.send(true);
}
