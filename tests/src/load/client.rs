//! One load client: connect from its own source address, authenticate (or
//! CONNECT+SUB for nats-ws), count and time events, reconnect and resume.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::load::clock::{mono_ns, unix_ms};
use crate::load::config::{Status, Target, WorkerSpec};
use crate::load::natsproto::{Parser, ServerOp};

pub type Ws = WebSocketStream<TcpStream>;

/// Latencies are recorded in microseconds, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// Counters shared by every client of a worker.
pub struct Stats {
    pub connected: AtomicU64,
    pub ever: AtomicU64,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub duplicates_live: AtomicU64,
    pub reconnects: AtomicU64,
    pub disconnects: AtomicU64,
    pub failures: AtomicU64,
    pub not_recovered: AtomicU64,
    pub bad_frames: AtomicU64,
    pub last_auth_ns: AtomicU64,
    pub max_gap_ns: AtomicU64,
    pub kicks: AtomicU64,
    pub closes: Mutex<BTreeMap<String, u64>>,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub live: Mutex<Histogram<u64>>,
    pub replay: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            connected: AtomicU64::new(0),
            ever: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            duplicates_live: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            not_recovered: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            last_auth_ns: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            live: Mutex::new(new_histogram()),
            replay: Mutex::new(new_histogram()),
        }
    }
}

impl Stats {
    pub fn status(&self, worker: usize) -> Status {
        Status {
            worker,
            connected: self.connected.load(Relaxed),
            ever: self.ever.load(Relaxed),
            received: self.received.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            duplicates_live: self.duplicates_live.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            failures: self.failures.load(Relaxed),
            not_recovered: self.not_recovered.load(Relaxed),
            bad_frames: self.bad_frames.load(Relaxed),
            last_auth_ns: self.last_auth_ns.load(Relaxed),
            max_gap_ns: self.max_gap_ns.load(Relaxed),
            kicks: self.kicks.load(Relaxed),
            last: None,
        }
    }

    fn error(&self, what: &str) {
        // Keep the map small: the first few words identify the cause.
        let key: String = what
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        let key: String = key.chars().take(80).collect();
        *self.errors.lock().entry(key).or_default() += 1;
    }

    fn duplicate(&self, live: bool) {
        self.duplicates.fetch_add(1, Relaxed);
        if live {
            self.duplicates_live.fetch_add(1, Relaxed);
        }
    }

    fn close(&self, what: String) {
        *self.closes.lock().entry(what).or_default() += 1;
    }
}

/// What every client of a worker shares.
pub struct Shared {
    pub spec: WorkerSpec,
    pub stats: Stats,
    pub handshakes: Semaphore,
    pub stop: watch::Receiver<bool>,
    pub jwt_key: jsonwebtoken::EncodingKey,
}

pub struct Client {
    pub index: usize,
    pub guild: u64,
    pub user: u64,
    pub endpoint: SocketAddr,
    pub source: Ipv4Addr,
    pub kick: Arc<Notify>,
}

#[derive(Serialize)]
struct TokenClaims {
    sub: String,
    guilds: [String; 1],
    exp: i64,
    iat: i64,
}

/// The fields of a server frame the harness looks at. Strings borrow from
/// the frame: the harness shares the cores with what it measures, so it
/// allocates nothing per delivery it does not keep.
#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    cursor: Option<Cow<'a, str>>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, borrow)]
    payload: Option<Probe<'a>>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// The harness's own fields inside an event (emission time and sequence),
/// or, for events from the full path that lack them, the id and time.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default)]
    lt: Option<u64>,
    #[serde(default)]
    ls: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, rename = "occurredAt", borrow)]
    occurred_at: Option<Cow<'a, str>>,
}

struct State {
    cursor: Option<String>,
    last_seq: u64,
    /// Hashes of the latest event ids (full path: no sequence to go by).
    recent: std::collections::VecDeque<u64>,
    authed_before: bool,
    /// CLOCK_MONOTONIC ns when the last authenticated session ended.
    ended_ns: u64,
    parser: Parser,
}

enum End {
    Stop,
    Kicked,
    Closed(String),
}

pub async fn run(client: Client, shared: Arc<Shared>) {
    let mut st = State {
        cursor: None,
        last_seq: 0,
        recent: std::collections::VecDeque::new(),
        authed_before: false,
        ended_ns: 0,
        parser: Parser::default(),
    };
    let mut stop = shared.stop.clone();
    let mut failures_in_row = 0u32;
    let mut delay: Option<Duration> = None;
    // Like a load balancer routing a new connection: after a failed connect
    // or a session the server ended (drain, kill), the next attempt goes to
    // another endpoint (spread: `failover_step`), so a drained edge's
    // clients resume on the others.
    let endpoints = &shared.spec.endpoints;
    let mut at = endpoints
        .iter()
        .position(|e| *e == client.endpoint)
        .unwrap_or(0);
    let step = super::assign::failover_step(client.index, endpoints.len());
    let mut endpoint = client.endpoint;
    let mut next_endpoint = |e: &mut SocketAddr| {
        if !endpoints.is_empty() {
            at = (at + step) % endpoints.len();
            *e = endpoints[at];
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(d) = delay.take() {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => return,
            }
        }
        let opened = {
            let _permit = shared.handshakes.acquire().await;
            tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(20), open(&client, endpoint, &shared, &st)) => r,
                _ = stop.changed() => return,
            }
        };
        let mut ws = match opened {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.stats.failures.fetch_add(1, Relaxed);
                shared.stats.error(&e);
                next_endpoint(&mut endpoint);
                delay = Some(backoff(failures_in_row, shared.spec.reconnect_jitter_ms));
                failures_in_row = failures_in_row.saturating_add(1);
                continue;
            }
            Err(_) => {
                shared.stats.failures.fetch_add(1, Relaxed);
                shared.stats.error("handshake timeout");
                next_endpoint(&mut endpoint);
                delay = Some(backoff(failures_in_row, shared.spec.reconnect_jitter_ms));
                failures_in_row = failures_in_row.saturating_add(1);
                continue;
            }
        };
        st.parser = Parser::default();
        let (end, authed) = session(&mut ws, &client, &shared, &mut st, &mut stop).await;
        if authed {
            shared.stats.connected.fetch_sub(1, Relaxed);
            st.ended_ns = mono_ns();
            failures_in_row = 0;
        } else {
            failures_in_row = failures_in_row.saturating_add(1);
        }
        shared.stats.disconnects.fetch_add(1, Relaxed);
        match end {
            End::Stop => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            End::Kicked => {
                shared.stats.close("kicked".into());
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                // A churned client comes straight back, as a page reload does.
            }
            End::Closed(why) => {
                shared.stats.close(why);
                next_endpoint(&mut endpoint);
                delay = Some(if failures_in_row == 0 {
                    jitter(shared.spec.reconnect_jitter_ms)
                } else {
                    backoff(failures_in_row, shared.spec.reconnect_jitter_ms)
                });
            }
        }
    }
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=max_ms.max(1)))
}

/// Exponential from 250 ms up to 5 s, plus jitter.
fn backoff(n: u32, jitter_ms: u64) -> Duration {
    let base = 250u64.saturating_mul(1u64 << n.min(5)).min(5_000);
    Duration::from_millis(base) + jitter(jitter_ms)
}

async fn open(
    client: &Client,
    endpoint: SocketAddr,
    shared: &Shared,
    st: &State,
) -> Result<Ws, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(client.source.into(), 0))
        .map_err(|e| format!("bind {}: {e}", client.source))?;
    let stream = sock
        .connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let path = match shared.spec.target {
        Target::Edge => "/api/ws",
        Target::NatsWs => "/",
    };
    let url = format!("ws://{endpoint}{path}");
    // tungstenite reserves 128 KiB read and write buffers by default: at
    // 18,000 clients a process that is gigabytes of harness, not load.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("ws handshake: {e}"))?;
    let hello = match shared.spec.target {
        Target::Edge => Message::text(auth_frame(client, shared, st)?),
        Target::NatsWs => {
            let prefix = &shared.spec.subject_prefix;
            Message::binary(format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1,\"lang\":\"voicewatch-load\",\"version\":\"0.1\"}}\r\nSUB {prefix}.v1.{}.* 1\r\nPING\r\n",
                client.guild
            ))
        }
    };
    ws.send(hello)
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    Ok(ws)
}

fn auth_frame(client: &Client, shared: &Shared, st: &State) -> Result<String, String> {
    let now = unix_ms() / 1000;
    let claims = TokenClaims {
        sub: client.user.to_string(),
        guilds: [client.guild.to_string()],
        exp: now + 24 * 3600,
        iat: now,
    };
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &shared.jwt_key)
        .map_err(|e| format!("jwt: {e}"))?;
    let mut frame = serde_json::json!({"v": 1, "type": "auth", "token": token});
    if let Some(cursor) = &st.cursor {
        frame["resume"] = serde_json::json!({ "cursor": cursor });
    }
    Ok(frame.to_string())
}

fn on_authed(shared: &Shared, st: &mut State, recovered: bool) {
    let stats = &shared.stats;
    stats.connected.fetch_add(1, Relaxed);
    if st.authed_before {
        stats.reconnects.fetch_add(1, Relaxed);
        if !recovered {
            stats.not_recovered.fetch_add(1, Relaxed);
        }
        let now = mono_ns();
        stats.last_auth_ns.fetch_max(now, Relaxed);
        stats
            .max_gap_ns
            .fetch_max(now.saturating_sub(st.ended_ns), Relaxed);
    } else {
        stats.ever.fetch_add(1, Relaxed);
        st.authed_before = true;
    }
}

/// Stores the latest cursor, reusing the string's buffer.
fn keep_cursor(slot: &mut Option<String>, cursor: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(cursor);
        }
        None => *slot = Some(cursor.to_owned()),
    }
}

fn on_event(shared: &Shared, st: &mut State, probe: Option<Probe<'_>>, live: bool) {
    let now = mono_ns();
    let Some(probe) = probe else {
        shared.stats.bad_frames.fetch_add(1, Relaxed);
        return;
    };
    let us = match probe {
        Probe {
            lt: Some(lt),
            ls: Some(ls),
            ..
        } => {
            // One publisher, in order, per guild: a sequence number not above
            // the last one seen is a duplicate (e.g. replayed twice around a
            // resume).
            if ls <= st.last_seq {
                shared.stats.duplicate(live);
                return;
            }
            st.last_seq = ls;
            now.saturating_sub(lt) / 1000
        }
        Probe {
            id: Some(id),
            occurred_at,
            ..
        } => {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(&id);
            if st.recent.contains(&h) {
                shared.stats.duplicate(live);
                return;
            }
            if st.recent.len() >= 64 {
                st.recent.pop_front();
            }
            st.recent.push_back(h);
            // The worker stamps occurredAt in wall-clock milliseconds.
            let occurred = occurred_at
                .and_then(|s| voicewatch_protocol::Timestamp::parse(&s).ok())
                .map(|t| t.unix_millis())
                .unwrap_or_else(unix_ms);
            (unix_ms().saturating_sub(occurred).max(0) as u64) * 1000
        }
        _ => {
            shared.stats.bad_frames.fetch_add(1, Relaxed);
            return;
        }
    };
    shared.stats.received.fetch_add(1, Relaxed);
    let hist = if live {
        &shared.stats.live
    } else {
        &shared.stats.replay
    };
    hist.lock().saturating_record(us.max(1));
}

async fn session(
    ws: &mut Ws,
    client: &Client,
    shared: &Shared,
    st: &mut State,
    stop: &mut watch::Receiver<bool>,
) -> (End, bool) {
    let mut authed = false;
    let auth_deadline = tokio::time::sleep(Duration::from_secs(15));
    tokio::pin!(auth_deadline);
    // Made once per session, not once per frame: the harness shares the
    // cores with what it measures.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let kicked = client.kick.notified();
    tokio::pin!(kicked);
    loop {
        let msg = tokio::select! {
            _ = &mut stopped => return (End::Stop, authed),
            _ = &mut kicked => {
                shared.stats.kicks.fetch_add(1, Relaxed);
                return (End::Kicked, authed);
            }
            _ = &mut auth_deadline, if !authed => return (End::Closed("no-ack".into()), authed),
            msg = ws.next() => msg,
        };
        match msg {
            None => return (End::Closed("eof".into()), authed),
            Some(Err(e)) => {
                shared.stats.error(&format!("read: {e}"));
                return (End::Closed("error".into()), authed);
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame
                    .map(|f| u16::from(f.code).to_string())
                    .unwrap_or_else(|| "none".into());
                return (End::Closed(code), authed);
            }
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<InFrame<'_>>(text.as_str()) {
                    Ok(f) => match &*f.kind {
                        "event" => {
                            if let Some(c) = &f.cursor {
                                keep_cursor(&mut st.cursor, c);
                            }
                            on_event(shared, st, f.payload, authed || !st.authed_before);
                        }
                        "ack" => {
                            if let Some(c) = &f.cursor {
                                keep_cursor(&mut st.cursor, c);
                            }
                            if !authed {
                                authed = true;
                                on_authed(shared, st, f.recovered.unwrap_or(false));
                            }
                        }
                        "error" => {
                            // The message tells a drain ("service restart") from
                            // a bus timeout during auth ("event bus unavailable"),
                            // both 1012.
                            let code = f.code.map(|c| c.to_string()).unwrap_or_default();
                            let message = f.message.unwrap_or_default();
                            shared
                                .stats
                                .error(&format!("server error {code}: {message}"));
                        }
                        _ => {}
                    },
                    Err(_) => {
                        shared.stats.bad_frames.fetch_add(1, Relaxed);
                    }
                }
            }
            Some(Ok(Message::Binary(data))) => {
                st.parser.push(&data);
                loop {
                    match st.parser.next_op() {
                        Ok(None) => break,
                        Ok(Some(ServerOp::Pong)) => {
                            if !authed {
                                authed = true;
                                on_authed(shared, st, false);
                            }
                        }
                        Ok(Some(ServerOp::Ping)) => {
                            if ws.send(Message::binary(&b"PONG\r\n"[..])).await.is_err() {
                                return (End::Closed("error".into()), authed);
                            }
                        }
                        Ok(Some(ServerOp::Msg(payload))) => {
                            let probe = serde_json::from_slice::<Probe<'_>>(&payload).ok();
                            on_event(shared, st, probe, true);
                        }
                        Ok(Some(ServerOp::Err(e))) => shared.stats.error(&format!("nats -ERR {e}")),
                        Ok(Some(_)) => {}
                        Err(e) => {
                            shared.stats.error(&e.to_string());
                            return (End::Closed("protocol".into()), authed);
                        }
                    }
                }
            }
            Some(Ok(_)) => {}
        }
    }
}
