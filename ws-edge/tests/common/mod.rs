//! Shared test helpers: an in-process bus with knobs (lost history, failed
//! publishes), event and token builders, and a WebSocket client that checks
//! the contract's frames.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header, encode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voicewatch_bus::{Bus, BusError, Delivery, DeliveryStream, PublishAck, Replay, RequestStream};
use voicewatch_protocol::{Cursor, Keyring, SignedEvent, Snowflake, VoiceEvent};
use voicewatch_ws_edge::{Edge, EdgeArgs, EdgeHandle};

pub const JWT_SECRET: &str = "test-jwt-secret";
pub const HMAC_KEYS: &str = "k1=hmac-secret-1";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::parse(HMAC_KEYS).unwrap())
}

pub fn g(n: u64) -> Snowflake {
    Snowflake::new(n).unwrap()
}

/// `voice.joined` of `user` in `guild`, id `e-{guild}-{user}-{n}`, with an
/// optional padding field (consumers pass unknown fields on).
pub fn event(guild: u64, user: u64, n: u64, pad: usize) -> VoiceEvent {
    let mut v = json!({
        "id": format!("e-{guild}-{user}-{n}"),
        "type": "voice.joined",
        "guildId": guild.to_string(),
        "userId": user.to_string(),
        "channelId": "4000",
        "previousChannelId": null,
        "occurredAt": "2026-11-28T00:00:00.123Z",
        "n": n,
    });
    if pad > 0 {
        v["pad"] = json!("x".repeat(pad));
    }
    VoiceEvent::from_slice(v.to_string().as_bytes()).unwrap()
}

pub fn seal(ev: &VoiceEvent) -> SignedEvent {
    SignedEvent::seal(ev, &keyring(), now_ms())
}

pub fn token_with(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(sub: u64, guilds: &[u64]) -> String {
    let guilds: Vec<String> = guilds.iter().map(u64::to_string).collect();
    token_with(json!({"sub": sub.to_string(), "guilds": guilds, "exp": now_ms() / 1000 + 3600}))
}

pub fn args() -> EdgeArgs {
    let mut a = EdgeArgs::defaults();
    a.listen = "127.0.0.1:0".parse().unwrap();
    a.jwt_hs256_secret = Some(JWT_SECRET.into());
    a.drain_window_ms = 200;
    a.close_timeout_ms = 2_000;
    a
}

pub async fn start(args: EdgeArgs, bus: Arc<dyn Bus>) -> EdgeHandle {
    Edge::start(args, bus, keyring()).await.unwrap()
}

/// Reads one metric sample from the edge's registry (0 when absent).
pub fn metric(edge: &EdgeHandle, sample: &str) -> f64 {
    let text = edge.metrics().encode();
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Polls `cond` until it holds or the wait times out.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- test bus

/// An in-process bus: one stream, per-guild live fan-out, replay with an
/// optionally forgotten prefix.
pub struct TestBus {
    epoch: u64,
    inner: Mutex<Inner>,
    pub fail_publish: AtomicBool,
    pub connected: AtomicBool,
    pub subscriptions: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Inner {
    log: Vec<Delivery>,
    /// While set, live deliveries wait here (the edge's subscription lags
    /// behind the stream, as a busy NATS subscriber does).
    held: Option<Vec<Delivery>>,
    /// Sequences at or below this are gone from history.
    forgotten: u64,
    subs: HashMap<Snowflake, Vec<mpsc::UnboundedSender<Delivery>>>,
}

impl TestBus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: 7,
            inner: Mutex::new(Inner::default()),
            fail_publish: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            subscriptions: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Drops history up to the current head (retention ran).
    pub fn forget_history(&self) {
        let mut i = self.inner.lock();
        i.forgotten = i.log.len() as u64;
    }

    pub fn head_now(&self) -> Cursor {
        Cursor::new(self.epoch, self.inner.lock().log.len() as u64)
    }

    pub async fn send(&self, ev: &VoiceEvent) -> Cursor {
        self.publish(&seal(ev)).await.unwrap().cursor
    }

    /// From now on, live deliveries are stored but not yet handed to
    /// subscribers (replay and head already see them).
    pub fn hold_live(&self) {
        let mut i = self.inner.lock();
        i.held.get_or_insert_with(Vec::new);
    }

    /// Hands the held live deliveries over, in order, and stops holding.
    pub fn release_live(&self) {
        let mut i = self.inner.lock();
        for d in i.held.take().unwrap_or_default() {
            if let Some(subs) = i.subs.get_mut(&d.event.guild_id()) {
                subs.retain(|s| s.unbounded_send(d.clone()).is_ok());
            }
        }
    }
}

struct Counted<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for Counted<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

#[async_trait]
impl Bus for TestBus {
    async fn publish(&self, event: &SignedEvent) -> Result<PublishAck, BusError> {
        if self.fail_publish.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("test".into()));
        }
        let mut i = self.inner.lock();
        let cursor = Cursor::new(self.epoch, i.log.len() as u64 + 1);
        let d = Delivery {
            event: event.clone(),
            cursor,
        };
        i.log.push(d.clone());
        if let Some(held) = &mut i.held {
            held.push(d);
        } else if let Some(subs) = i.subs.get_mut(&event.guild_id()) {
            subs.retain(|s| s.unbounded_send(d.clone()).is_ok());
        }
        Ok(PublishAck {
            cursor,
            duplicate: false,
        })
    }

    async fn subscribe(&self, guild: Snowflake) -> Result<DeliveryStream, BusError> {
        let (tx, rx) = mpsc::unbounded();
        self.inner.lock().subs.entry(guild).or_default().push(tx);
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        Ok(Box::pin(Counted {
            inner: rx,
            count: Arc::clone(&self.subscriptions),
        }))
    }

    async fn head(&self) -> Result<Cursor, BusError> {
        Ok(self.head_now())
    }

    async fn replay(
        &self,
        guilds: &[Snowflake],
        after: Cursor,
        limit: usize,
    ) -> Result<Replay, BusError> {
        let i = self.inner.lock();
        let head = Cursor::new(self.epoch, i.log.len() as u64);
        let mut recovered =
            after.epoch == self.epoch && after.seq >= i.forgotten && after.seq <= head.seq;
        let start = if after.epoch == self.epoch {
            after.seq.max(i.forgotten)
        } else {
            i.forgotten
        };
        let mut events = Vec::new();
        for d in &i.log[start.min(head.seq) as usize..] {
            if guilds.contains(&d.event.guild_id()) {
                if events.len() == limit {
                    recovered = false;
                    break;
                }
                events.push(d.clone());
            }
        }
        Ok(Replay {
            events,
            recovered,
            head,
        })
    }

    async fn request(&self, s: &str, _: Bytes, _: Duration) -> Result<Bytes, BusError> {
        Err(BusError::NoResponders(s.into()))
    }

    async fn serve(&self, _: &str) -> Result<RequestStream, BusError> {
        Err(BusError::Config("test bus".into()))
    }

    async fn kv_get(&self, _: &str) -> Result<Option<Bytes>, BusError> {
        Ok(None)
    }

    async fn kv_put(&self, _: &str, _: Bytes) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- client

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Frame(Value),
    WsPing,
    Close(Option<u16>),
    /// The stream ended without a close frame, or errored.
    Gone,
}

pub struct Client {
    pub ws: Ws,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self { ws }
    }

    /// Connects with a tiny receive buffer (slow-consumer tests).
    pub async fn connect_small_rcvbuf(url: &str, addr: std::net::SocketAddr) -> Self {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        Self { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_owned())).await.unwrap();
    }

    /// The next frame, WebSocket ping or close (pongs are skipped).
    pub async fn next(&mut self) -> Seen {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Seen::Frame(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(Message::Ping(_))) => return Seen::WsPing,
                Some(Ok(Message::Close(c))) => return Seen::Close(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Seen::Gone,
            }
        }
    }

    /// The next JSON frame, skipping server heartbeats and WebSocket pings.
    pub async fn frame(&mut self) -> Value {
        loop {
            match self.next().await {
                Seen::Frame(v) if v["type"] == "ping" => continue,
                Seen::Frame(v) => return v,
                Seen::WsPing => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    pub async fn auth(&mut self, token: &str, resume: Option<&str>) -> Value {
        self.send_auth(token, resume, None).await;
        let ack = self.frame().await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["event"], "auth.ok");
        ack
    }

    pub async fn send_auth(&mut self, token: &str, resume: Option<&str>, scope: Option<&str>) {
        let mut f = json!({"v": 1, "type": "auth", "token": token});
        if let Some(c) = resume {
            f["resume"] = json!({"cursor": c});
        }
        if let Some(s) = scope {
            f["scope"] = json!(s);
        }
        self.send(f).await;
    }

    /// Expects the error frame with the code's name, then the close code.
    pub async fn expect_close(&mut self, code: u16) {
        let name = voicewatch_protocol::CloseCode::from_code(code)
            .unwrap()
            .error_code();
        loop {
            match self.next().await {
                Seen::Frame(v) if v["type"] == "error" => {
                    assert_eq!(v["code"], name, "{v}");
                    assert!(v["message"].is_string());
                    break;
                }
                Seen::Frame(v)
                    if ["ping", "pong", "event", "ack"]
                        .contains(&v["type"].as_str().unwrap_or("")) =>
                {
                    continue;
                }
                Seen::WsPing => continue,
                other => panic!("expected error frame {name}, got {other:?}"),
            }
        }
        assert_eq!(self.next().await, Seen::Close(Some(code)));
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCode::Normal,
                reason: "".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// An authenticated client.
pub async fn client(edge: &EdgeHandle, sub: u64, guilds: &[u64]) -> (Client, Value) {
    let mut c = Client::connect(&edge.ws_url()).await;
    let ack = c.auth(&token(sub, guilds), None).await;
    (c, ack)
}

pub fn event_n(frame: &Value) -> u64 {
    assert_eq!(frame["type"], "event", "{frame}");
    frame["payload"]["n"].as_u64().unwrap()
}

impl Client {
    pub async fn try_connect(url: &str) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws })
    }
}
