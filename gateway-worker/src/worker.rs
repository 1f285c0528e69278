//! Shards → tracker → sink, the HTTP endpoints, and the lifecycle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;
use twilight_gateway::{
    CloseFrame, ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::gateway::payload::incoming::GuildCreate;

use crate::config::Args;
use crate::metrics::Metrics;
use crate::queue::SpacedQueue;
use crate::state::{SavedSession, ShardState, StateStore};
use crate::tracker::{Change, Tracker};

/// Where changes go: signed and published on the bus (see `BusSink`), or
/// anything a test wants. `publish` resolves when the event is stored
/// (`Acked`) or safely queued for a later store (`Queued`, the outbox); an
/// error is retried by the worker, never dropped.
pub trait Sink: Send + Sync + 'static {
    fn publish(
        &self,
        change: &Change,
        occurred_at: OffsetDateTime,
    ) -> BoxFuture<'static, Result<Published, SinkError>>;
    /// For `/readyz`.
    fn connected(&self) -> bool;
    /// Events taken but not yet stored (the outbox depth). Shard state is
    /// only saved while this is 0, so a crash never loses a queued event:
    /// the restarted worker resumes from before it and publishes it again.
    fn pending(&self) -> u64 {
        0
    }
    /// Wait until nothing is pending (graceful shutdown). True when drained.
    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored by the bus.
    Acked,
    /// Queued in the outbox while the bus is unavailable.
    Queued,
}

#[derive(Debug, thiserror::Error)]
#[error("publish failed: {0}")]
pub struct SinkError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("asking Discord for the shard count: {0}")]
    GatewayInfo(String),
    #[error("binding the health/metrics listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
    #[error("configuration: {0}")]
    Config(String),
}

/// Shard state numbers for the gauge and readiness.
const DISCONNECTED: u8 = 0;
const IDENTIFYING: u8 = 1;
const RESUMING: u8 = 2;
const ACTIVE: u8 = 3;
const FATAL: u8 = 4;

struct Ctx {
    sink: Arc<dyn Sink>,
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    shard_states: Vec<AtomicU8>,
    save_interval: Duration,
    stopping: AtomicBool,
    /// Voice occupancy for the rejoin check's user limits.
    voice: Arc<crate::rejoin::VoiceOccupancy>,
}

pub struct Worker;

/// A running worker.
pub struct WorkerHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    ctx: Arc<Ctx>,
    shards: u32,
}

/// Install the process-level rustls provider twilight needs (it panics
/// without one, even for `ws://`). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Worker {
    /// Start every shard and the health/metrics server.
    pub async fn start(
        args: &Args,
        sink: Arc<dyn Sink>,
        store: Arc<dyn StateStore>,
    ) -> Result<WorkerHandle, WorkerError> {
        install_crypto_provider();
        let (shards, concurrency) = shard_plan(args).await?;
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Ctx {
            sink,
            store,
            metrics: metrics.clone(),
            shard_states: (0..shards).map(|_| AtomicU8::new(DISCONNECTED)).collect(),
            save_interval: args.save_interval(),
            stopping: AtomicBool::new(false),
            voice: Arc::new(crate::rejoin::VoiceOccupancy::new()),
        });
        let saved = restore_states(ctx.store.load_all()?, shards);
        let queue = SpacedQueue::new(concurrency, args.identify_interval());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        {
            let ctx = ctx.clone();
            let mut rx = shutdown_rx.clone();
            tasks.spawn(async move {
                let app = http_router(ctx);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            });
        }
        let intents = Intents::GUILDS | Intents::GUILD_VOICE_STATES;
        for (id, saved) in (0..shards).zip(saved) {
            let mut builder =
                ConfigBuilder::new(args.discord_token.clone(), intents).queue(queue.clone());
            if let Some(url) = &args.discord_gateway_url {
                builder = builder.proxy_url(url.trim_end_matches('/').to_owned());
            }
            if let Some(s) = &saved.session {
                builder = builder.session(twilight_gateway::Session::new(s.sequence, s.id.clone()));
                if let Some(url) = &s.resume_url {
                    builder = builder.resume_url(url.clone());
                }
            }
            let shard = Shard::with_config(ShardId::new(id, shards), builder.build());
            tracing::info!(
                shard = id,
                shards,
                resuming = saved.session.is_some(),
                "starting shard"
            );
            tasks.spawn(run_shard(
                shard,
                saved.tracker,
                ctx.clone(),
                shutdown_rx.clone(),
            ));
        }
        Ok(WorkerHandle {
            addr,
            shutdown,
            tasks,
            ctx,
            shards,
        })
    }
}

impl WorkerHandle {
    /// The bound health/metrics address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// Who is in which voice channel, as the shards see it (for the rejoin
    /// check).
    pub fn voice(&self) -> Arc<crate::rejoin::VoiceOccupancy> {
        self.ctx.voice.clone()
    }

    /// Every shard active and the sink connected.
    pub fn is_ready(&self) -> bool {
        ready(&self.ctx)
    }

    /// Graceful stop: shards close with a resumable close code, their
    /// sessions and voice maps are saved, the HTTP server ends.
    pub async fn shutdown(mut self) {
        self.ctx.stopping.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stop without a goodbye, as a crash would (state saved only by the
    /// periodic saves).
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when the worker stops by itself (every shard fatally closed).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn ready(ctx: &Ctx) -> bool {
    ctx.shard_states
        .iter()
        .all(|s| s.load(Ordering::Relaxed) == ACTIVE)
        && ctx.sink.connected()
}

/// Shard count and identify concurrency: configured, or Discord's answer.
async fn shard_plan(args: &Args) -> Result<(u32, u16), WorkerError> {
    if let (Some(n), Some(c)) = (args.shards, args.identify_concurrency) {
        return Ok((n.max(1), c.max(1)));
    }
    let info = match gateway_bot(args).await {
        Ok(info) => info,
        Err(e) if args.shards.is_some() => {
            tracing::warn!(error = %e, "could not ask Discord for identify concurrency; using 1");
            return Ok((
                args.shards.unwrap_or(1).max(1),
                args.identify_concurrency.unwrap_or(1).max(1),
            ));
        }
        Err(e) => return Err(e),
    };
    let shards = args.shards.unwrap_or(info.shards).max(1);
    let conc = args
        .identify_concurrency
        .unwrap_or(info.session_start_limit.max_concurrency)
        .max(1);
    Ok((shards, conc))
}

async fn gateway_bot(
    args: &Args,
) -> Result<twilight_model::gateway::connection_info::BotConnectionInfo, WorkerError> {
    let mut builder = twilight_http::Client::builder()
        .token(args.discord_token.clone())
        .timeout(Duration::from_secs(10));
    if let Some(base) = &args.discord_api_url {
        // twilight builds `{scheme}://{host}/api/v10/...` itself: pass the
        // host without scheme (and without a trailing /api/v10).
        let (host, http) = match base.strip_prefix("http://") {
            Some(h) => (h, true),
            None => (base.strip_prefix("https://").unwrap_or(base), false),
        };
        let host = host
            .trim_end_matches('/')
            .trim_end_matches("/api/v10")
            .trim_end_matches('/');
        builder = builder.proxy(host.to_owned(), http);
    }
    let client = builder.build();
    let fut = async {
        let resp = client
            .gateway()
            .authed()
            .await
            .map_err(|e| WorkerError::GatewayInfo(e.to_string()))?;
        resp.model()
            .await
            .map_err(|e| WorkerError::GatewayInfo(e.to_string()))
    };
    // twilight retries 429 forever; bound the whole call.
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| WorkerError::GatewayInfo("timed out".into()))?
}

/// Per new shard: its saved session (same shard count only) and voice map.
/// Voice maps saved under another shard count are redistributed by guild, so
/// changing `VOICEWATCH_SHARDS` keeps them (the sessions cannot be kept).
fn restore_states(saved: Vec<ShardState>, shards: u32) -> Vec<ShardState> {
    let mut out: Vec<ShardState> = (0..shards)
        .map(|id| ShardState {
            shard: id,
            total: shards,
            session: None,
            tracker: Tracker::new(),
        })
        .collect();
    let (same, other): (Vec<_>, Vec<_>) = saved.into_iter().partition(|s| s.total == shards);
    for s in same {
        if let Some(slot) = out.get_mut(s.shard as usize) {
            *slot = s;
        }
    }
    for s in other {
        for (guild, voice) in s.tracker.guilds {
            let target = ((guild >> 22) % u64::from(shards)) as usize;
            if let Some(slot) = out.get_mut(target) {
                slot.tracker.guilds.entry(guild).or_insert(voice);
            }
        }
    }
    out
}

fn wanted() -> EventTypeFlags {
    EventTypeFlags::READY
        | EventTypeFlags::RESUMED
        | EventTypeFlags::GUILD_CREATE
        | EventTypeFlags::GUILD_DELETE
        | EventTypeFlags::VOICE_STATE_UPDATE
        | EventTypeFlags::GATEWAY_INVALIDATE_SESSION
        | EventTypeFlags::GATEWAY_RECONNECT
}

async fn run_shard(
    mut shard: Shard<SpacedQueue>,
    mut tracker: Tracker,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = shard.id().number();
    let label = [("shard", id.to_string())];
    ctx.voice.sync_all(&tracker);
    let mut save_tick = tokio::time::interval(ctx.save_interval);
    save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saved_seq: Option<(String, u64)> = None;
    let mut dirty = true;
    set_state(&ctx, id, IDENTIFYING, &label);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => {
                close_for_resume(&mut shard).await;
                if ctx.sink.flush(Duration::from_secs(5)).await {
                    save(&ctx, snapshot(&shard, &tracker)).await;
                } else {
                    // Keep the older saved state: the next process resumes
                    // from there and publishes the queued events again.
                    tracing::warn!(shard = id, "outbox not drained; not saving the newer state");
                }
                set_state(&ctx, id, DISCONNECTED, &label);
                return;
            }
            _ = save_tick.tick() => {
                let now = shard.session().map(|s| (s.id().to_owned(), s.sequence()));
                if (dirty || now != saved_seq) && ctx.sink.pending() == 0 {
                    save(&ctx, snapshot(&shard, &tracker)).await;
                    saved_seq = now;
                    dirty = false;
                }
                ctx.metrics.outbox_depth.set(ctx.sink.pending() as i64);
            }
            item = shard.next_event(wanted()) => {
                let received = Instant::now();
                let occurred_at = OffsetDateTime::now_utc();
                let event = match item {
                    None => {
                        tracing::error!(shard = id, "shard fatally closed");
                        set_state(&ctx, id, FATAL, &label);
                        if ctx.sink.pending() == 0 {
                            save(&ctx, snapshot(&shard, &tracker)).await;
                        }
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(shard = id, error = %e, "gateway receive error");
                        ctx.metrics.gateway_event("error");
                        continue;
                    }
                    Some(Ok(ev)) => ev,
                };
                let changes = handle_event(&ctx, id, &label, &mut tracker, &shard, event);
                if !changes.is_empty() {
                    dirty = true;
                }
                for change in changes {
                    publish(&ctx, &change, occurred_at, received).await;
                }
            }
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn set_state(ctx: &Ctx, id: u32, state: u8, label: &[(&'static str, String); 1]) {
    if let Some(s) = ctx.shard_states.get(id as usize) {
        s.store(state, Ordering::Relaxed);
    }
    ctx.metrics
        .shard_state
        .get_or_create(label)
        .set(i64::from(state));
}

fn handle_event(
    ctx: &Ctx,
    id: u32,
    label: &[(&'static str, String); 1],
    tracker: &mut Tracker,
    shard: &Shard<SpacedQueue>,
    event: Event,
) -> Vec<Change> {
    let m = &ctx.metrics;
    // A guild whose whole voice map changed (snapshot, outage, removal).
    let touched = match &event {
        Event::GuildCreate(gc) => Some(gc.id().get()),
        Event::GuildDelete(gd) => Some(gd.id.get()),
        _ => None,
    };
    let out = match event {
        Event::Ready(r) => {
            m.gateway_event("READY");
            tracing::info!(
                shard = id,
                guilds = r.guilds.len(),
                "identified (fresh session)"
            );
            tracker.ready(r.guilds.iter().map(|g| g.id.get()));
            ctx.voice.sync_all(tracker);
            set_state(ctx, id, ACTIVE, label);
            Vec::new()
        }
        Event::Resumed => {
            m.gateway_event("RESUMED");
            tracing::info!(shard = id, "resumed");
            set_state(ctx, id, ACTIVE, label);
            Vec::new()
        }
        Event::GuildCreate(gc) => {
            m.gateway_event("GUILD_CREATE");
            match *gc {
                GuildCreate::Available(g) => tracker.guild_create(
                    g.id.get(),
                    g.voice_states.iter().filter_map(|v| {
                        v.channel_id
                            .map(|c| (v.user_id.get(), c.get(), v.session_id.as_str()))
                    }),
                ),
                GuildCreate::Unavailable(u) => {
                    tracker.guild_unavailable(u.id.get());
                    Vec::new()
                }
            }
        }
        Event::GuildDelete(gd) => {
            m.gateway_event("GUILD_DELETE");
            if gd.unavailable == Some(true) {
                tracker.guild_unavailable(gd.id.get());
            } else {
                tracing::info!(shard = id, guild = gd.id.get(), "removed from guild");
                tracker.guild_removed(gd.id.get());
            }
            Vec::new()
        }
        Event::VoiceStateUpdate(v) => {
            m.gateway_event("VOICE_STATE_UPDATE");
            match v.0.guild_id {
                Some(g) => tracker.voice_update(
                    g.get(),
                    v.0.user_id.get(),
                    v.0.channel_id.map(|c| c.get()),
                    &v.0.session_id,
                ),
                None => Vec::new(),
            }
        }
        Event::GatewayClose(frame) => {
            m.gateway_event("GATEWAY_CLOSE");
            tracing::info!(
                shard = id,
                code = frame.as_ref().map(|f| f.code),
                "gateway closed"
            );
            set_state(
                ctx,
                id,
                if shard.session().is_some() {
                    RESUMING
                } else {
                    IDENTIFYING
                },
                label,
            );
            Vec::new()
        }
        Event::GatewayInvalidateSession(resumable) => {
            m.gateway_event("INVALID_SESSION");
            set_state(
                ctx,
                id,
                if resumable { RESUMING } else { IDENTIFYING },
                label,
            );
            Vec::new()
        }
        Event::GatewayReconnect => {
            m.gateway_event("RECONNECT");
            set_state(ctx, id, RESUMING, label);
            Vec::new()
        }
        _ => Vec::new(),
    };
    m.users_in_voice
        .get_or_create(label)
        .set(tracker.users_in_voice() as i64);
    if let Some(guild) = touched {
        ctx.voice.sync_guild(guild, tracker);
    }
    for c in &out {
        ctx.voice.voice_update(c.guild, c.user, c.channel);
    }
    out
}

/// Publish until the sink accepts: a change is never dropped. The shard is
/// not polled meanwhile; if that lasts, Discord's heartbeat check fails and
/// the shard resumes later, which replays what came in the meantime.
async fn publish(ctx: &Ctx, change: &Change, occurred_at: OffsetDateTime, received: Instant) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match ctx.sink.publish(change, occurred_at).await {
            Ok(Published::Acked) => {
                ctx.metrics
                    .observe_published(change.kind, change.guild, Some(received.elapsed()));
                return;
            }
            Ok(Published::Queued) => {
                ctx.metrics
                    .observe_published(change.kind, change.guild, None);
                return;
            }
            Err(e) => {
                ctx.metrics.publish_retries.inc();
                tracing::warn!(id = %change.id, error = %e, "publish failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Close with 4000 so that Discord keeps the session for the next process,
/// and wait (briefly) for the server's answer.
async fn close_for_resume(shard: &mut Shard<SpacedQueue>) {
    if shard.session().is_none() {
        return;
    }
    shard.close(CloseFrame::RESUME);
    let wait = async {
        while let Some(item) = shard.next_event(EventTypeFlags::empty()).await {
            if matches!(item, Ok(Event::GatewayClose(_))) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
}

fn snapshot(shard: &Shard<SpacedQueue>, tracker: &Tracker) -> ShardState {
    ShardState {
        shard: shard.id().number(),
        total: shard.id().total(),
        session: shard.session().map(|s| SavedSession {
            id: s.id().to_owned(),
            sequence: s.sequence(),
            resume_url: shard.resume_url().map(str::to_owned),
        }),
        tracker: tracker.clone(),
    }
}

async fn save(ctx: &Ctx, state: ShardState) {
    let store = ctx.store.clone();
    let r = tokio::task::spawn_blocking(move || store.save(&state)).await;
    match r {
        Ok(Ok(())) => {
            ctx.metrics.state_saves.inc();
        }
        Ok(Err(e)) => {
            ctx.metrics.state_save_errors.inc();
            tracing::warn!(error = %e, "saving shard state failed");
        }
        Err(e) => {
            ctx.metrics.state_save_errors.inc();
            tracing::warn!(error = %e, "saving shard state panicked");
        }
    }
}

fn http_router(ctx: Arc<Ctx>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get({
                let ctx = ctx.clone();
                move || {
                    let ctx = ctx.clone();
                    async move {
                        let states: HashMap<usize, u8> = ctx
                            .shard_states
                            .iter()
                            .map(|s| s.load(Ordering::Relaxed))
                            .enumerate()
                            .collect();
                        let body = format!(
                            "shards_active={}/{} bus_connected={}\n",
                            states.values().filter(|s| **s == ACTIVE).count(),
                            states.len(),
                            ctx.sink.connected()
                        );
                        let code = if ready(&ctx) && !ctx.stopping.load(Ordering::Relaxed) {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (code, body)
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let ctx = ctx.clone();
                async move {
                    ctx.metrics.outbox_depth.set(ctx.sink.pending() as i64);
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        ctx.metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
}

/// `voicewatch worker`: start on `bus`, run until `shutdown` resolves (then
/// stop gracefully, keeping sessions resumable) or every shard is fatally
/// closed.
pub async fn run(
    args: &Args,
    bus: Arc<dyn voicewatch_bus::Bus>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    let keyring = voicewatch_protocol::Keyring::parse(&args.hmac_keys)
        .map_err(|e| WorkerError::Config(format!("VOICEWATCH_HMAC_KEYS: {e}")))?;
    let sink = Arc::new(crate::sink::BusSink::new(
        bus.clone(),
        keyring,
        voicewatch_bus::OutboxConfig {
            capacity: args.nats.outbox_size.max(1),
            ..Default::default()
        },
        Duration::from_millis(args.publish_timeout_ms.max(1)),
    ));
    let store = Arc::new(crate::state::FileStateStore::new(&args.state_dir)?);
    let mut handle = Worker::start(args, sink, store).await?;
    tracing::info!(listen = %handle.addr(), shards = handle.shard_count(), "worker running");
    let rejoin = crate::rejoin::start(args, bus, handle.voice(), handle.metrics().rejoin.clone())
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    let _stop_rejoin = AbortOnDrop(rejoin);
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down: closing shards resumably and saving state");
            handle.shutdown().await;
            Ok(())
        }
        () = handle.wait() => Err(WorkerError::Config("every shard closed fatally (bad token or intents?)".into())),
    }
}

/// Stops a task when the owner returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_redistributes_maps_of_another_shard_count() {
        let mut t = Tracker::new();
        t.guild_create(1 << 22, [(1, 40, "a")]);
        t.guild_create(2 << 22, [(2, 40, "b")]);
        let old = ShardState {
            shard: 0,
            total: 1,
            session: Some(SavedSession {
                id: "s".into(),
                sequence: 3,
                resume_url: None,
            }),
            tracker: t,
        };
        let out = restore_states(vec![old], 2);
        assert!(
            out.iter().all(|s| s.session.is_none()),
            "sessions of another shard count are dropped"
        );
        assert!(out[1].tracker.is_tracked(1 << 22));
        assert!(out[0].tracker.is_tracked(2 << 22));
    }
}
