//! `voicewatch demo`: the whole pipeline in one process — the Discord
//! simulator, the gateway worker, the in-process bus and the edge — with
//! the demo pages and a small demo-only API (token minting, simulator
//! controls, stopping and starting the edge). The API is the contract in
//! `web/README.md`; nothing here exists outside this subcommand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use voicewatch_bus::{Bus, MemoryBus, MemoryBusConfig};
use voicewatch_protocol::{Keyring, Snowflake};
use voicewatch_tests::sim::{Channel, Guild, SimConfig, Simulator, VoiceState};
use voicewatch_ws_edge::EdgeArgs;
use voicewatch_ws_edge::rejoin::RejoinEdgeConfig;

use crate::compose;
use crate::killable::{KillSwitch, Killable};

/// The demo guild and its people (ids as in `web/README.md`).
const GUILD: u64 = voicewatch_tests::sim::rest::DEMO_GUILD;
const DEMO_USER: u64 = 3001;
const CH_GENERAL: u64 = 4000;
const CH_LOCKED: u64 = 4001;
const CH_FULL: u64 = 4002;
const USERS: [(u64, &str); 3] = [(3001, "You"), (3002, "Ava"), (3003, "Bo")];

#[derive(Args)]
pub struct DemoCmd {
    /// Where the demo page, its API and the WebSocket edge listen.
    #[arg(long, env = "VOICEWATCH_EDGE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The gateway worker's health/metrics address.
    #[arg(
        long,
        env = "VOICEWATCH_WORKER_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    worker_listen: SocketAddr,
    /// The built demo pages (default: `web/dist` of this checkout, built
    /// with npm when missing).
    #[arg(long, env = "VOICEWATCH_WEB_DIR")]
    web_dir: Option<PathBuf>,
}

/// `web/dist` of the checkout this binary was built from.
fn default_web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("web")
        .join("dist")
}

/// The demo pages, built with `web/scripts/build.sh` when absent.
fn ensure_web(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if !dir.join("index.html").is_file() {
            bail!(
                "{}: no index.html (build the web pages with web/scripts/build.sh)",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let dir = default_web_dir();
    if dir.join("index.html").is_file() {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/scripts/build.sh");
    eprintln!(
        "voicewatch demo: building the demo pages ({})",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !dir.join("index.html").is_file() {
        bail!(
            "building the demo pages failed ({}); Node 20 and npm are needed",
            script.display()
        );
    }
    Ok(dir)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex_encode(&b)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The simulator's demo guild ("General" open, "Locked" denies CONNECT to
/// @everyone, "Full" has a user limit of 1 with Bo inside), with You and
/// Ava starting in General so the first click can drop You out.
fn demo_guild() -> Guild {
    let mut g = voicewatch_tests::sim::rest::demo_guild();
    for user in [DEMO_USER, 3002] {
        g.voice.insert(
            user,
            VoiceState {
                channel_id: CH_GENERAL,
                session_id: format!("demo-{user}"),
            },
        );
    }
    g
}

struct DemoState {
    sim: Simulator,
    jwt_secret: String,
    /// Set while the edge is "stopped": upgrades get 503.
    edge_stopped: AtomicBool,
    /// Cuts every WebSocket accepted so far.
    kill: Mutex<KillSwitch>,
}

pub async fn run(cmd: DemoCmd) -> anyhow::Result<()> {
    let web_dir = ensure_web(cmd.web_dir)?;
    let hmac_keys = format!("demo={}", random_hex(32));
    let jwt_secret = random_hex(32);
    let keyring = Arc::new(Keyring::parse(&hmac_keys)?);
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(MemoryBusConfig::default()));

    let sim = Simulator::start(SimConfig::default())
        .await
        .context("starting the Discord simulator")?;
    sim.add_guild(demo_guild());

    let state_dir = tempfile::tempdir().context("worker state directory")?;
    let mut worker_args = voicewatch_gateway_worker::Args::for_simulator(
        &sim.token(),
        &sim.gateway_url(),
        &sim.api_url(),
        &hmac_keys,
        state_dir.path().to_owned(),
    );
    worker_args.listen = cmd.worker_listen;
    // The worker runs as `voicewatch worker` does (shards, rejoin
    // answers, state saved in a temp dir), on the in-process bus.
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn({
        let bus = Arc::clone(&bus);
        let stop = stop_worker.clone().cancelled_owned();
        async move { voicewatch_gateway_worker::run(&worker_args, bus, stop).await }
    });

    let mut edge_args = EdgeArgs::defaults();
    edge_args.listen = cmd.listen;
    edge_args.jwt_hs256_secret = Some(jwt_secret.clone());
    let edge = compose::edge_with_rejoin(
        edge_args,
        &RejoinEdgeConfig::default(),
        "voice",
        Arc::clone(&bus),
        keyring,
    )?;

    let demo = Arc::new(DemoState {
        sim,
        jwt_secret,
        edge_stopped: AtomicBool::new(false),
        kill: Mutex::new(KillSwitch::new()),
    });
    let router = edge
        .merge(demo_routes(Arc::clone(&demo)))
        .router()
        .fallback_service(ServeDir::new(&web_dir));

    let listener = TcpListener::bind(cmd.listen)
        .await
        .with_context(|| format!("binding {}", cmd.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let accept = tokio::spawn(accept_loop(
        listener,
        router,
        Arc::clone(&demo),
        shutdown.clone(),
    ));
    tracing::info!(%addr, web = %web_dir.display(), worker = %cmd.worker_listen, "demo running");
    eprintln!("\n  voicewatch demo: open http://{addr}/\n");

    voicewatch_ws_edge::shutdown_signal().await;
    shutdown.cancel();
    demo.kill.lock().kill();
    stop_worker.cancel();
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "worker stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "worker task failed"),
    }
    demo.sim.shutdown();
    let _ = accept.await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    demo: Arc<DemoState>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let armed = Arc::new(AtomicBool::new(false));
        let io = Killable::new(tcp, demo.kill.lock().token(), Arc::clone(&armed));
        let router = router.clone();
        let demo = Arc::clone(&demo);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if req.uri().path() == "/api/ws" {
                    armed.store(true, Ordering::Relaxed);
                }
                let stopped = demo.edge_stopped.load(Ordering::SeqCst);
                let router = router.clone();
                async move {
                    if stopped && req.uri().path() == "/api/ws" {
                        return Ok((StatusCode::SERVICE_UNAVAILABLE, "edge stopped (demo)")
                            .into_response());
                    }
                    router.oneshot(req).await
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = http
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn demo_routes(demo: Arc<DemoState>) -> Router {
    Router::new()
        .route("/api/demo/config", get(config))
        .route("/api/demo/token", post(token))
        .route("/api/demo/sim/voice", post(sim_voice))
        .route("/api/demo/sim/disconnect", post(sim_disconnect))
        .route("/api/demo/edge/stop", post(edge_stop))
        .route("/api/demo/edge/start", post(edge_start))
        .with_state(demo)
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "bad_request", "message": message.into() })),
    )
        .into_response()
}

async fn config(State(demo): State<Arc<DemoState>>) -> Response {
    let Some(guild) = demo.sim.guild(GUILD) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let channels: Vec<Value> = guild
        .voice_channel_ids()
        .into_iter()
        .filter_map(|id| guild.channels.iter().find(|c: &&Channel| c.id == id))
        .map(|c| {
            let kind = match c.id {
                CH_LOCKED => "locked",
                CH_FULL => "full",
                _ => "open",
            };
            json!({ "id": c.id.to_string(), "name": c.name, "kind": kind })
        })
        .collect();
    let users: Vec<Value> = USERS
        .iter()
        .map(|(id, name)| json!({ "id": id.to_string(), "name": name }))
        .collect();
    let voice: serde_json::Map<String, Value> = demo
        .sim
        .voice_state(GUILD)
        .into_iter()
        .map(|(u, c)| (u.to_string(), Value::from(c.to_string())))
        .collect();
    Json(json!({
        "guildId": GUILD.to_string(),
        "userId": DEMO_USER.to_string(),
        "channels": channels,
        "users": users,
        "voice": voice,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    user_id: String,
}

async fn token(State(demo): State<Arc<DemoState>>, body: Option<Json<TokenBody>>) -> Response {
    let Some(Json(body)) = body else {
        return bad_request("expected {\"userId\": \"…\"}");
    };
    let Ok(user) = body.user_id.parse::<Snowflake>() else {
        return bad_request("userId must be a snowflake string");
    };
    let now = time_now_secs();
    let claims = json!({
        "sub": user.to_string(),
        "guilds": [GUILD.to_string()],
        "iat": now,
        "exp": now + 3600,
    });
    match jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(demo.jwt_secret.as_bytes()),
    ) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn time_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoiceBody {
    guild_id: String,
    user_id: String,
    channel_id: Option<String>,
}

async fn sim_voice(State(demo): State<Arc<DemoState>>, body: Option<Json<VoiceBody>>) -> Response {
    let Some(Json(b)) = body else {
        return bad_request("expected {\"guildId\",\"userId\",\"channelId\"|null}");
    };
    let parse = |s: &str| s.parse::<Snowflake>().map(Snowflake::get);
    let (Ok(guild), Ok(user)) = (parse(&b.guild_id), parse(&b.user_id)) else {
        return bad_request("guildId and userId must be snowflake strings");
    };
    let channel = match b.channel_id.as_deref().map(parse) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return bad_request("channelId must be a snowflake string or null"),
    };
    match demo.sim.voice_update(guild, user, channel) {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not_found", "message": e.to_string() })),
        )
            .into_response(),
    }
}

async fn sim_disconnect(State(demo): State<Arc<DemoState>>) -> StatusCode {
    demo.sim.disconnect();
    StatusCode::ACCEPTED
}

async fn edge_stop(State(demo): State<Arc<DemoState>>) -> StatusCode {
    demo.edge_stopped.store(true, Ordering::SeqCst);
    // Every WebSocket accepted so far is cut (no close frame, as a crashed
    // edge would); new connections get a fresh switch.
    let mut kill = demo.kill.lock();
    kill.kill();
    *kill = KillSwitch::new();
    StatusCode::ACCEPTED
}

async fn edge_start(State(demo): State<Arc<DemoState>>) -> StatusCode {
    demo.edge_stopped.store(false, Ordering::SeqCst);
    StatusCode::ACCEPTED
}
