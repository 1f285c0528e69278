//! The fleet as operators run it: real processes of the `voicewatch`
//! binary (`simulate`, `worker`, two `edge`s) on a private nats-server,
//! configured only through the shared environment variables of the
//! protocol's section 8, and a WebSocket client that is moved from one edge
//! to the other by a drain without losing or repeating an event.
//!
//! Needs the binary: `VOICEWATCH_BIN`, else `target/debug/voicewatch`
//! (`./scripts/test` builds it first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voicewatch_bus::testkit::NatsServer;
use voicewatch_protocol::ServerFrame;

const T: Duration = Duration::from_secs(30);
const HMAC: &str = "fleet=fleet-test-secret";
const JWT: &str = "fleet-jwt-secret";

fn bin() -> PathBuf {
    let p = std::env::var_os("VOICEWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/voicewatch")
        });
    assert!(
        p.is_file(),
        "{} missing: build it with `cargo build --bin voicewatch` or set VOICEWATCH_BIN",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &'static str,
        args: &[&str],
        env: &[(&str, String)],
        dir: &std::path::Path,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VOICEWATCH_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            name,
            log,
        }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.name);
    }

    async fn exited(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + T;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers 200 (the process is up and says it is
/// ready), or fails with the process's log.
async fn ready(http: &reqwest::Client, url: &str, proc: &Proc) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not ready at {url}; log:\n{}",
            proc.name,
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "guilds": ["2000"], "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT.as_bytes()),
    )
    .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, Option<u16>> {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("no frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(ServerFrame::parse(t.as_bytes()).unwrap()),
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Connects and authenticates; returns the socket, the events replayed
/// before the ack, and the ack's cursor and `recovered`.
async fn connect(port: u16, resume: Option<&str>) -> (Ws, Vec<Value>, String, bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws"))
        .await
        .unwrap();
    let mut auth = json!({"v": 1, "type": "auth", "token": token("3001")});
    if let Some(c) = resume {
        auth["resume"] = json!({ "cursor": c });
    }
    ws.send(Message::text(auth.to_string())).await.unwrap();
    let mut replayed = Vec::new();
    loop {
        match next_frame(&mut ws).await {
            Ok(ServerFrame::Event { payload, .. }) => replayed.push(payload),
            Ok(ServerFrame::Ack { cursor, recovered }) => return (ws, replayed, cursor, recovered),
            Ok(_) => {}
            Err(code) => panic!("closed before the ack: {code:?}"),
        }
    }
}

async fn next_event(ws: &mut Ws) -> (Value, String) {
    loop {
        match next_frame(ws).await {
            Ok(ServerFrame::Event {
                payload, cursor, ..
            }) => return (payload, cursor),
            Ok(_) => {}
            Err(code) => panic!("closed while waiting for an event: {code:?}"),
        }
    }
}

async fn sim_voice(http: &reqwest::Client, sim: u16, user: &str, channel: Option<&str>) {
    let r = http
        .post(format!("http://127.0.0.1:{sim}/control/voice"))
        .json(&json!({"guildId": "2000", "userId": user, "channelId": channel}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "sim control: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_client_resumes_on_the_other_edge_without_loss_or_repeat() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (sim_port, worker_port, edge_a, edge_b) =
        (free_port(), free_port(), free_port(), free_port());
    let shared = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("VOICEWATCH_NATS_URL", nats.url()),
            ("VOICEWATCH_HMAC_KEYS", HMAC.to_owned()),
            ("VOICEWATCH_JWT_HS256_SECRET", JWT.to_owned()),
            ("VOICEWATCH_DISCORD_TOKEN", "sim-token".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        env
    };

    let sim = Proc::spawn(
        "simulate",
        &["simulate", "--listen", &format!("127.0.0.1:{sim_port}")],
        &shared(&[]),
        dir.path(),
    );
    ready(
        &http,
        &format!("http://127.0.0.1:{sim_port}/control/stats"),
        &sim,
    )
    .await;
    let worker = Proc::spawn(
        "worker",
        &["worker"],
        &shared(&[
            (
                "VOICEWATCH_WORKER_LISTEN",
                format!("127.0.0.1:{worker_port}"),
            ),
            (
                "VOICEWATCH_WORKER_STATE_DIR",
                dir.path().join("state").display().to_string(),
            ),
            (
                "VOICEWATCH_DISCORD_GATEWAY_URL",
                format!("ws://127.0.0.1:{sim_port}"),
            ),
            (
                "VOICEWATCH_DISCORD_API_URL",
                format!("http://127.0.0.1:{sim_port}"),
            ),
        ]),
        dir.path(),
    );
    let edge = |name, port: u16| {
        Proc::spawn(
            name,
            &["edge"],
            &shared(&[
                ("VOICEWATCH_EDGE_LISTEN", format!("127.0.0.1:{port}")),
                ("VOICEWATCH_EDGE_DRAIN_WINDOW_MS", "200".to_owned()),
            ]),
            dir.path(),
        )
    };
    let mut a = edge("edge-a", edge_a);
    let b = edge("edge-b", edge_b);
    ready(
        &http,
        &format!("http://127.0.0.1:{worker_port}/readyz"),
        &worker,
    )
    .await;
    ready(&http, &format!("http://127.0.0.1:{edge_a}/readyz"), &a).await;
    ready(&http, &format!("http://127.0.0.1:{edge_b}/readyz"), &b).await;

    // Live on edge A: the user joins voice.
    let (mut ws, replayed, _, _) = connect(edge_a, None).await;
    assert!(replayed.is_empty());
    sim_voice(&http, sim_port, "3001", Some("4000")).await;
    let (joined, cursor) = next_event(&mut ws).await;
    assert_eq!(joined["type"], "voice.joined", "{joined}");
    assert_eq!(joined["userId"], "3001");

    // Edge A drains: the client is told 1012 and goes.
    a.sigterm();
    loop {
        match next_frame(&mut ws).await {
            Err(code) => {
                assert_eq!(code, Some(1012), "drain closes with 1012");
                break;
            }
            Ok(ServerFrame::Error { code, .. }) => assert_eq!(code, "service_restart"),
            Ok(other) => panic!("unexpected frame while draining: {other:?}"),
        }
    }
    assert!(
        a.exited().await,
        "edge A did not exit after its drain:\n{}",
        a.log()
    );

    // The user drops out while the client has no connection.
    sim_voice(&http, sim_port, "3001", None).await;

    // The client resumes on edge B: the leave comes before the ack, the
    // join is not repeated, and the edge says nothing was lost.
    let deadline = tokio::time::Instant::now() + T;
    let (replayed, recovered) = loop {
        let (ws_b, replayed, _, recovered) = connect(edge_b, Some(&cursor)).await;
        if !replayed.is_empty() {
            drop(ws_b);
            break (replayed, recovered);
        }
        // The leave may still be on its way through the worker and NATS.
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leave never reached edge B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(recovered);
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["type"], "voice.left");
    assert_eq!(replayed[0]["userId"], "3001");
    assert_eq!(replayed[0]["previousChannelId"], "4000");
    drop((worker, sim, b, nats));
}
