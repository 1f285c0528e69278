//! HTTP side of the simulator: the gateway WebSocket routes, Discord REST
//! (`GET /api/v10/gateway/bot`), and the control surface used by
//! `voicewatch simulate` and the demo:
//!
//! | request | effect |
//! | --- | --- |
//! | `POST /control/voice` `{"guildId":"G","userId":"U","channelId":"C"\|null}` | voice state change (join, move, leave) |
//! | `POST /control/guilds` `{"guildId":"G","firstChannelId":"C","voiceChannels":N}` | add a simple guild |
//! | `GET /control/guilds/{G}/voice` | `{"U":"C",...}` current voice map |
//! | `POST /control/op7` | op 7 RECONNECT to every connection |
//! | `POST /control/op9?resumable=true\|false` | op 9 INVALID SESSION |
//! | `POST /control/close?code=N` | close every connection with N |
//! | `POST /control/disconnect` | drop every TCP connection, no close frame |
//! | `POST /control/zombie` | current connections stop answering |
//! | `POST /control/outage/{G}` / `POST /control/restore/{G}` | guild outage and its end |
//! | `POST /control/load` (body: [`super::load::LoadConfig`] fields, all optional) | start a load run; answers when it ends with the report |
//! | `GET /control/stats` | connection and dispatch counters |
//!
//! Snowflakes are strings, as in the wire contract.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Inner, Simulator, gateway, load};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", any(ws))
        .route("/resume", any(ws))
        .route("/resume/", any(ws))
        .route("/api/v10/gateway/bot", get(gateway_bot))
        .route("/api/v10/gateway", get(gateway_plain))
        .route("/control/voice", post(voice))
        .route("/control/guilds", post(add_guild))
        .route("/control/guilds/{guild}/voice", get(voice_map))
        .route("/control/op7", post(op7))
        .route("/control/op9", post(op9))
        .route("/control/close", post(close))
        .route("/control/disconnect", post(disconnect))
        .route("/control/zombie", post(zombie))
        .route("/control/outage/{guild}", post(outage))
        .route("/control/restore/{guild}", post(restore))
        .route("/control/load", post(run_load))
        .route("/control/stats", get(stats))
        .with_state(inner.clone())
        .merge(super::rest::router(inner))
}

fn sim(inner: Arc<Inner>) -> Simulator {
    Simulator {
        inner,
        server: Default::default(),
    }
}

async fn ws(State(inner): State<Arc<Inner>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| gateway::serve(inner, socket))
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let token = inner.state.lock().cfg.token.clone();
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bot ") == Some(token.as_str()))
}

async fn gateway_bot(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if !authorized(&inner, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401: Unauthorized", "code": 0})),
        )
            .into_response();
    }
    let (shards, conc) = {
        let st = inner.state.lock();
        (st.cfg.recommended_shards, st.cfg.max_concurrency)
    };
    Json(json!({
        "url": format!("ws://{}", inner.addr),
        "shards": shards,
        "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": conc},
    }))
    .into_response()
}

async fn gateway_plain(State(inner): State<Arc<Inner>>) -> Response {
    Json(json!({"url": format!("ws://{}", inner.addr)})).into_response()
}

type Reject = (StatusCode, String);

fn snowflake(s: &str) -> Result<u64, Reject> {
    s.parse::<u64>()
        .ok()
        .filter(|v| *v != 0)
        .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("bad snowflake {s:?}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoiceBody {
    guild_id: String,
    user_id: String,
    channel_id: Option<String>,
}

async fn voice(State(inner): State<Arc<Inner>>, Json(b): Json<VoiceBody>) -> Response {
    let r = (|| {
        let g = snowflake(&b.guild_id)?;
        let u = snowflake(&b.user_id)?;
        let c = b.channel_id.as_deref().map(snowflake).transpose()?;
        sim(inner)
            .voice_update(g, u, c)
            .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))
    })();
    match r {
        Ok(session) => Json(json!({"sessionId": session})).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GuildBody {
    guild_id: String,
    first_channel_id: String,
    #[serde(default = "two")]
    voice_channels: u32,
}

fn two() -> u32 {
    2
}

async fn add_guild(State(inner): State<Arc<Inner>>, Json(b): Json<GuildBody>) -> Response {
    match (snowflake(&b.guild_id), snowflake(&b.first_channel_id)) {
        (Ok(g), Ok(c)) => {
            sim(inner).add_simple_guild(g, c, b.voice_channels);
            StatusCode::NO_CONTENT.into_response()
        }
        (Err(r), _) | (_, Err(r)) => r.into_response(),
    }
}

async fn voice_map(State(inner): State<Arc<Inner>>, Path(guild): Path<String>) -> Response {
    match snowflake(&guild) {
        Ok(g) => {
            let m: BTreeMap<String, String> = sim(inner)
                .voice_state(g)
                .into_iter()
                .map(|(u, c)| (u.to_string(), c.to_string()))
                .collect();
            Json(m).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn op7(State(inner): State<Arc<Inner>>) -> StatusCode {
    sim(inner).op7();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Op9Query {
    #[serde(default)]
    resumable: bool,
}

async fn op9(State(inner): State<Arc<Inner>>, Query(q): Query<Op9Query>) -> StatusCode {
    sim(inner).op9(q.resumable);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CloseQuery {
    code: u16,
}

async fn close(State(inner): State<Arc<Inner>>, Query(q): Query<CloseQuery>) -> StatusCode {
    sim(inner).close(q.code);
    StatusCode::NO_CONTENT
}

async fn disconnect(State(inner): State<Arc<Inner>>) -> StatusCode {
    sim(inner).disconnect();
    StatusCode::NO_CONTENT
}

async fn zombie(State(inner): State<Arc<Inner>>) -> StatusCode {
    sim(inner).zombie();
    StatusCode::NO_CONTENT
}

async fn outage(State(inner): State<Arc<Inner>>, Path(guild): Path<String>) -> Response {
    match snowflake(&guild).and_then(|g| {
        sim(inner)
            .outage(g)
            .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))
    }) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

async fn restore(State(inner): State<Arc<Inner>>, Path(guild): Path<String>) -> Response {
    match snowflake(&guild).and_then(|g| {
        sim(inner)
            .restore(g)
            .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))
    }) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

async fn run_load(State(inner): State<Arc<Inner>>, Json(cfg): Json<load::LoadConfig>) -> Response {
    let s = sim(inner);
    let report = load::run(&s, &cfg).await;
    Json(report).into_response()
}

async fn stats(State(inner): State<Arc<Inner>>) -> Response {
    Json(sim(inner).stats()).into_response()
}
