//! A Discord gateway simulator: a WebSocket server that speaks the gateway
//! protocol the way `shared/discord-gateway.md` describes it (checked against
//! twilight-gateway 0.18), with a Rust control API for tests and an HTTP
//! control surface for `voicewatch simulate` (see [`http`]).
//!
//! One server, one port:
//! - `ws://ADDR/` — the gateway (`/?v=10&encoding=json`);
//! - `ws://ADDR/resume/` — the `resume_gateway_url` handed out in READY, so a
//!   test can see that a client resumes where it was told to;
//! - `GET /api/v10/gateway/bot` — recommended shard count and identify
//!   concurrency;
//! - `/control/...` — the HTTP control surface.

pub mod cli;
mod gateway;
pub mod http;
pub mod load;
pub mod model;
pub mod rest;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use model::{Channel, Guild, Member, Overwrite, Role, VoiceState};

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The bot token clients must present (without the `Bot ` prefix).
    pub token: String,
    /// Shard count answered by `GET /gateway/bot`.
    pub recommended_shards: u32,
    /// `session_start_limit.max_concurrency` answered by `GET /gateway/bot`.
    pub max_concurrency: u16,
    /// `heartbeat_interval` in HELLO. Tests use a short one so that zombie
    /// detection takes a second, not 41 s.
    pub heartbeat_interval: Duration,
    /// Dispatches kept per session for RESUME. A session whose buffer
    /// overflows can no longer be resumed (Discord answers op 9 false then).
    pub replay_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token: "sim-token".into(),
            recommended_shards: 1,
            max_concurrency: 1,
            heartbeat_interval: Duration::from_millis(41_250),
            replay_capacity: 200_000,
        }
    }
}

/// Counters a test can wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub connections: u64,
    pub identifies: u64,
    pub resumes_ok: u64,
    pub resumes_refused: u64,
    pub heartbeats: u64,
    pub dispatches: u64,
    /// Connections currently attached to a session that got READY or RESUMED.
    pub active: u64,
}

/// Controls for one connection.
enum Ctl {
    Frame(Arc<str>),
    Close(u16, &'static str),
    /// Drop the TCP connection without a close frame.
    Drop,
}

struct Conn {
    tx: mpsc::UnboundedSender<Ctl>,
    session: Option<String>,
    zombie: bool,
}

struct Session {
    shard: (u32, u32),
    seq: u64,
    buffer: VecDeque<(u64, Arc<str>)>,
    conn: Option<u64>,
    resumable: bool,
}

pub(crate) struct State {
    cfg: SimConfig,
    addr: SocketAddr,
    guilds: BTreeMap<u64, Guild>,
    sessions: HashMap<String, Session>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    stats: SimStats,
    rest: rest::RestState,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    addr: SocketAddr,
}

/// The simulator; cheap to clone. Dropping the last clone does not stop the
/// server: call [`Simulator::shutdown`] (tests just let the runtime end).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bind: {0}")]
    Bind(#[from] std::io::Error),
    #[error("no such guild {0}")]
    NoSuchGuild(u64),
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl Simulator {
    /// Start on `127.0.0.1` on a free port.
    pub async fn start(cfg: SimConfig) -> Result<Self, SimError> {
        Self::bind(
            "127.0.0.1:0"
                .parse()
                .map_err(|_| std::io::Error::other("addr"))?,
            cfg,
        )
        .await
    }

    pub async fn bind(addr: SocketAddr, cfg: SimConfig) -> Result<Self, SimError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                cfg,
                addr,
                guilds: BTreeMap::new(),
                sessions: HashMap::new(),
                conns: HashMap::new(),
                next_id: 1,
                stats: SimStats::default(),
                rest: Default::default(),
            }),
            changed,
            addr,
        });
        let router = http::router(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "simulator server ended");
            }
        });
        Ok(Self {
            inner,
            server: Arc::new(Mutex::new(Some(server))),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// For `VOICEWATCH_DISCORD_GATEWAY_URL`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.inner.addr)
    }

    /// For `VOICEWATCH_DISCORD_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn token(&self) -> String {
        self.inner.state.lock().cfg.token.clone()
    }

    /// Stop accepting and drop every connection (as a crash of Discord would).
    pub fn shutdown(&self) {
        if let Some(h) = self.server.lock().take() {
            h.abort();
        }
        self.disconnect();
    }

    // ---- the world ----

    /// Add or replace a guild. Connected sessions of its shard get a
    /// GUILD_CREATE (the bot was added to a guild).
    pub fn add_guild(&self, guild: Guild) {
        self.inner.with(|st| {
            let id = guild.id;
            let payload = guild.to_guild_create();
            st.guilds.insert(id, guild);
            st.dispatch_guild(id, "GUILD_CREATE", &payload);
        });
    }

    /// A small guild with `voice_channels` voice channels `first_channel+1..`.
    pub fn add_simple_guild(&self, guild_id: u64, first_channel: u64, voice_channels: u32) {
        self.add_guild(Guild::new(guild_id, 1_000, first_channel, voice_channels));
    }

    /// A user's voice state changes (join / move / leave, or an update that
    /// keeps the channel when `channel` equals the current one). Dispatched
    /// to every session of the guild's shard, unless the guild is in an
    /// outage. Returns the user's voice session id.
    pub fn voice_update(
        &self,
        guild: u64,
        user: u64,
        channel: Option<u64>,
    ) -> Result<String, SimError> {
        self.inner.with(|st| st.voice_update(guild, user, channel))
    }

    /// The guild's current voice map, user → channel.
    pub fn voice_state(&self, guild: u64) -> BTreeMap<u64, u64> {
        self.inner.with(|st| {
            st.guilds
                .get(&guild)
                .map(|g| g.voice.iter().map(|(u, v)| (*u, v.channel_id)).collect())
                .unwrap_or_default()
        })
    }

    pub fn guild(&self, guild: u64) -> Option<Guild> {
        self.inner.with(|st| st.guilds.get(&guild).cloned())
    }

    pub fn guild_ids(&self) -> Vec<u64> {
        self.inner.with(|st| st.guilds.keys().copied().collect())
    }

    /// Guild outage: GUILD_DELETE `unavailable: true`; nothing more about the
    /// guild is sent until [`Simulator::restore`].
    pub fn outage(&self, guild: u64) -> Result<(), SimError> {
        self.inner.with(|st| {
            let g = st
                .guilds
                .get_mut(&guild)
                .ok_or(SimError::NoSuchGuild(guild))?;
            g.unavailable = true;
            let d = json!({"id": guild.to_string(), "unavailable": true});
            st.dispatch_guild_force(guild, "GUILD_DELETE", &d);
            Ok(())
        })
    }

    /// End an outage: a full GUILD_CREATE with the guild's current state.
    pub fn restore(&self, guild: u64) -> Result<(), SimError> {
        self.inner.with(|st| {
            let g = st
                .guilds
                .get_mut(&guild)
                .ok_or(SimError::NoSuchGuild(guild))?;
            g.unavailable = false;
            let d = g.to_guild_create();
            st.dispatch_guild(guild, "GUILD_CREATE", &d);
            Ok(())
        })
    }

    /// The bot is removed from a guild: GUILD_DELETE without `unavailable`.
    pub fn remove_guild(&self, guild: u64) -> Result<(), SimError> {
        self.inner.with(|st| {
            if !st.guilds.contains_key(&guild) {
                return Err(SimError::NoSuchGuild(guild));
            }
            let d = json!({"id": guild.to_string()});
            st.dispatch_guild_force(guild, "GUILD_DELETE", &d);
            st.guilds.remove(&guild);
            Ok(())
        })
    }

    // ---- connection trouble ----

    /// Drop every connection's TCP stream without a close frame. Sessions
    /// stay resumable.
    pub fn disconnect(&self) {
        self.inner.for_conns(|_| Some(Ctl::Drop));
    }

    /// op 7 RECONNECT to every connection.
    pub fn op7(&self) {
        let f: Arc<str> = model::frame(None, None, 7, &json!(null)).into();
        self.inner.for_conns(|_| Some(Ctl::Frame(f.clone())));
    }

    /// op 9 INVALID SESSION to every connection; `false` also forgets the
    /// sessions, so the clients must IDENTIFY again.
    pub fn op9(&self, resumable: bool) {
        let f: Arc<str> = model::frame(None, None, 9, &json!(resumable)).into();
        self.inner.with(|st| {
            for conn in st.conns.values() {
                if let Some(sid) = &conn.session {
                    if !resumable && let Some(s) = st.sessions.get_mut(sid) {
                        s.resumable = false;
                    }
                    let _ = conn.tx.send(Ctl::Frame(f.clone()));
                }
            }
            if !resumable {
                st.sessions.retain(|_, s| s.resumable);
            }
        });
    }

    /// Close every connection with `code`. After 4007 and 4009 the session
    /// can no longer be resumed (Discord refuses the RESUME with op 9 false).
    pub fn close(&self, code: u16) {
        self.inner.with(|st| {
            let invalidate = matches!(code, 4007 | 4009);
            for conn in st.conns.values() {
                if invalidate
                    && let Some(s) = conn
                        .session
                        .as_ref()
                        .and_then(|sid| st.sessions.get_mut(sid))
                {
                    s.resumable = false;
                }
                let _ = conn.tx.send(Ctl::Close(code, "simulated close"));
            }
        });
    }

    /// Forget every session, connected or not: the next RESUME is refused
    /// with op 9 false (as Discord does some minutes after a disconnect).
    pub fn expire_sessions(&self) {
        self.inner.with(|st| st.sessions.clear());
    }

    /// Every current connection goes silent: no HEARTBEAT_ACK and no
    /// dispatches (they are still buffered for the RESUME that follows).
    pub fn zombie(&self) {
        self.inner.with(|st| {
            for c in st.conns.values_mut() {
                c.zombie = true;
            }
        });
    }

    /// Ask every connection for a heartbeat (server op 1).
    pub fn request_heartbeat(&self) {
        let f: Arc<str> = model::frame(None, None, 1, &json!(null)).into();
        self.inner.for_conns(|_| Some(Ctl::Frame(f.clone())));
    }

    // ---- observation ----

    pub fn stats(&self) -> SimStats {
        self.inner.state.lock().stats.clone()
    }

    /// Wait until `pred(stats)` holds; every change of the simulator's state
    /// wakes the waiter.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SimStats) -> bool,
    ) -> Result<SimStats, SimError> {
        let mut rx = self.inner.changed.subscribe();
        let fut = async {
            loop {
                let s = self.stats();
                if pred(&s) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `inner`, which we hold.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| SimError::Timeout(what.to_string()))
    }

    /// Wait until `n` connections are attached to an active session.
    pub async fn wait_active(&self, n: u64, timeout: Duration) -> Result<SimStats, SimError> {
        self.wait_for(&format!("{n} active connections"), timeout, |s| {
            s.active >= n
        })
        .await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.state.lock());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        r
    }

    fn for_conns(&self, mut f: impl FnMut(&Conn) -> Option<Ctl>) {
        self.with(|st| {
            for c in st.conns.values() {
                if let Some(ctl) = f(c) {
                    let _ = c.tx.send(ctl);
                }
            }
        });
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) fn voice_update(
        &mut self,
        guild: u64,
        user: u64,
        channel: Option<u64>,
    ) -> Result<String, SimError> {
        let vs_id = self.next_id();
        let g = self
            .guilds
            .get_mut(&guild)
            .ok_or(SimError::NoSuchGuild(guild))?;
        g.members.entry(user).or_insert_with(|| Member {
            user_id: user,
            roles: Vec::new(),
        });
        let session_id = match (channel, g.voice.get_mut(&user)) {
            (Some(c), Some(vs)) => {
                vs.channel_id = c;
                vs.session_id.clone()
            }
            (Some(c), None) => {
                let session_id = format!("vs{vs_id:08x}");
                g.voice.insert(
                    user,
                    VoiceState {
                        channel_id: c,
                        session_id: session_id.clone(),
                    },
                );
                session_id
            }
            (None, Some(_)) => g
                .voice
                .remove(&user)
                .map(|v| v.session_id)
                .unwrap_or_default(),
            (None, None) => format!("vs{vs_id:08x}"),
        };
        if !g.unavailable {
            let d = model::voice_state_json(Some(guild), user, channel, &session_id);
            self.dispatch_guild(guild, "VOICE_STATE_UPDATE", &d);
        }
        Ok(session_id)
    }

    /// Dispatch to every session of the guild's shard, unless the guild is
    /// unavailable.
    fn dispatch_guild(&mut self, guild: u64, t: &str, d: &serde_json::Value) {
        if self.guilds.get(&guild).is_some_and(|g| g.unavailable) {
            return;
        }
        self.dispatch_guild_force(guild, t, d);
    }

    fn dispatch_guild_force(&mut self, guild: u64, t: &str, d: &serde_json::Value) {
        let d = d.to_string();
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| model::shard_for(guild, s.shard.1) == s.shard.0)
            .map(|(id, _)| id.clone())
            .collect();
        for sid in ids {
            self.dispatch_raw(&sid, t, &d);
        }
    }

    /// Give `d` the session's next sequence number, buffer it for RESUME and
    /// send it to the attached connection (unless that one is a zombie).
    fn dispatch_raw(&mut self, sid: &str, t: &str, d: &str) {
        let cap = self.cfg.replay_capacity;
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.seq += 1;
        let f: Arc<str> = format!("{{\"t\":\"{t}\",\"s\":{},\"op\":0,\"d\":{d}}}", s.seq).into();
        s.buffer.push_back((s.seq, f.clone()));
        if s.buffer.len() > cap {
            // Discord forgets old dispatches too; the session can then only
            // be answered with op 9 false.
            s.buffer.pop_front();
        }
        self.stats.dispatches += 1;
        if let Some(conn) = s.conn.and_then(|c| self.conns.get(&c))
            && !conn.zombie
        {
            let _ = conn.tx.send(Ctl::Frame(f));
        }
    }

    fn recount_active(&mut self) {
        self.stats.active = self.conns.values().filter(|c| c.session.is_some()).count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn voice_update_tracks_sessions() {
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        sim.add_simple_guild(2000, 4000, 2);
        let s1 = sim.voice_update(2000, 3001, Some(4001)).unwrap();
        let s2 = sim.voice_update(2000, 3001, Some(4002)).unwrap();
        assert_eq!(s1, s2, "a move keeps the voice session");
        assert_eq!(sim.voice_state(2000).get(&3001), Some(&4002));
        let s3 = sim.voice_update(2000, 3001, None).unwrap();
        assert_eq!(s3, s1, "a leave reports the session that ended");
        assert!(sim.voice_state(2000).is_empty());
        let s4 = sim.voice_update(2000, 3001, Some(4001)).unwrap();
        assert_ne!(s4, s1, "a new join is a new voice session");
    }
}
