//! Discord REST for the rejoin check, over the simulator's guild model, in
//! the shapes and with the headers of `shared/discord-gateway.md` (REST
//! part), plus error injection.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /api/v10/guilds/{g}/members/{u}` | `Member`; 404 10004 Unknown Guild / 10007 Unknown Member |
//! | `GET /api/v10/channels/{c}` | `Channel` with `guild_id`; 404 10003 Unknown Channel |
//! | `GET /api/v10/guilds/{g}` | `Guild` with `owner_id` and every role |
//! | `GET /api/v10/guilds/{g}/roles`, `…/roles/{r}` | `[Role]`, `Role`; 404 10011 Unknown Role |
//! | `GET /api/v10/guilds/{g}/channels` | `[Channel]` |
//! | `GET /api/v10/guilds/{g}/voice-states/{u}` | `VoiceState`; 404 10065 when not in voice |
//!
//! Every answer checks `Authorization: Bot <token>` (401 otherwise). A
//! success carries bucket headers and never a scope header, as Discord's do;
//! a 429 carries `X-RateLimit-Scope` and what twilight needs for that scope.
//!
//! Faults ([`Simulator::rest_fault`], or `POST /control/rest-fault` with a
//! [`FaultSpec`] body, `POST /control/rest-fault/clear`) apply to one route
//! kind or all of them, for a number of requests or until cleared.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::model::{self, Guild, channel_type};
use super::{Inner, Simulator};

/// The REST calls the simulator answers, for faults and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestRoute {
    Member,
    Channel,
    Guild,
    Roles,
    GuildChannels,
    VoiceState,
}

impl RestRoute {
    pub const ALL: [RestRoute; 6] = [
        RestRoute::Member,
        RestRoute::Channel,
        RestRoute::Guild,
        RestRoute::Roles,
        RestRoute::GuildChannels,
        RestRoute::VoiceState,
    ];

    fn bucket(self) -> &'static str {
        match self {
            RestRoute::Member => "a1b2c3d4e5f6member",
            RestRoute::Channel => "a1b2c3d4e5f6channel",
            RestRoute::Guild => "a1b2c3d4e5f6guild",
            RestRoute::Roles => "a1b2c3d4e5f6roles",
            RestRoute::GuildChannels => "a1b2c3d4e5f6gchannels",
            RestRoute::VoiceState => "a1b2c3d4e5f6voice",
        }
    }
}

/// The scope of a simulated 429 (`X-RateLimit-Scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// Per-route bucket: `X-RateLimit-Reset-After` says how long to wait.
    User,
    /// Shared resource: `Retry-After` in whole seconds.
    Shared,
    /// Global: twilight retries at once.
    Global,
}

/// What an injected fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RestFault {
    /// 404 with the route's "unknown" code.
    NotFound,
    /// 403 code 50001 Missing Access.
    Forbidden,
    /// 401, as for a wrong or revoked token.
    Unauthorized,
    /// 429 with Discord-shaped headers for `scope`.
    RateLimited {
        retry_after_ms: u64,
        scope: RateLimitScope,
    },
    /// 500 with a JSON error body.
    ServerError,
    /// Answers normally after `delay_ms`.
    Slow { delay_ms: u64 },
    /// 502 with an HTML body, as a proxy in front of Discord sends.
    NonJson,
}

/// `POST /control/rest-fault` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// `None`: every route.
    #[serde(default)]
    pub route: Option<RestRoute>,
    pub fault: RestFault,
    /// How many requests it applies to; `None`: until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

/// REST side state kept in the simulator.
#[derive(Debug, Default)]
pub(crate) struct RestState {
    faults: VecDeque<FaultSpec>,
    counts: std::collections::HashMap<RestRoute, u64>,
}

impl RestState {
    /// Counts the request and takes the first fault that applies.
    fn next(&mut self, route: RestRoute) -> Option<RestFault> {
        *self.counts.entry(route).or_default() += 1;
        let i = self
            .faults
            .iter()
            .position(|f| f.route.is_none_or(|r| r == route))?;
        let f = &mut self.faults[i];
        let fault = f.fault;
        match &mut f.times {
            Some(1) => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }
}

impl Simulator {
    /// Inject a fault on `route` (`None`: every route) for the next `times`
    /// requests (`None`: until [`Simulator::clear_rest_faults`]). Faults are
    /// applied in the order they were added.
    pub fn rest_fault(&self, route: Option<RestRoute>, fault: RestFault, times: Option<u32>) {
        self.inner().with(|st| {
            st.rest.faults.push_back(FaultSpec {
                route,
                fault,
                times,
            })
        });
    }

    pub fn clear_rest_faults(&self) {
        self.inner().with(|st| st.rest.faults.clear());
    }

    /// REST requests received for `route` (faulted ones included).
    pub fn rest_requests(&self, route: RestRoute) -> u64 {
        self.inner()
            .with(|st| st.rest.counts.get(&route).copied().unwrap_or(0))
    }

    /// Replace a guild's data without telling the gateway (REST sees it at
    /// once; for tests of REST answers only).
    pub fn edit_guild(&self, guild: u64, f: impl FnOnce(&mut Guild)) -> bool {
        self.inner().with(|st| match st.guilds.get_mut(&guild) {
            Some(g) => {
                f(g);
                true
            }
            None => false,
        })
    }
}

/// The demo's guild: 2000 with voice channels 4000 "General" (open), 4001
/// "Locked" (CONNECT denied to @everyone) and 4002 "Full" (user limit 1,
/// user 3003 in it), text channel 4003 "chat", members 3001 (the demo
/// user), 3002 and 3003. For user 3001 the rejoin check answers ok,
/// `missing_permissions` and `channel_full` for 4000, 4001 and 4002.
pub fn demo_guild() -> Guild {
    let mut g = Guild::new(DEMO_GUILD, 1_000, 4003, 0);
    g.channels[0].name = "chat".into();
    let voice = |id: u64, name: &str, user_limit: u32, overwrites| model::Channel {
        id,
        name: name.into(),
        kind: channel_type::GUILD_VOICE,
        user_limit,
        overwrites,
    };
    g.channels.insert(0, voice(4000, "General", 0, Vec::new()));
    g.channels.insert(
        1,
        voice(
            4001,
            "Locked",
            0,
            vec![model::Overwrite {
                id: DEMO_GUILD,
                kind: 0,
                allow: 0,
                deny: CONNECT,
            }],
        ),
    );
    g.channels.insert(2, voice(4002, "Full", 1, Vec::new()));
    for user in [3001, 3002, 3003] {
        g.members.insert(
            user,
            model::Member {
                user_id: user,
                roles: Vec::new(),
            },
        );
    }
    g.voice.insert(
        3003,
        model::VoiceState {
            channel_id: 4002,
            session_id: "demo3003".into(),
        },
    );
    g
}

pub const DEMO_GUILD: u64 = 2000;
/// Discord's permission bits used by the simulator's fixtures.
pub const VIEW_CHANNEL: u64 = 1 << 10;
pub const CONNECT: u64 = 1 << 20;
pub const ADMINISTRATOR: u64 = 1 << 3;
pub const MOVE_MEMBERS: u64 = 1 << 24;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/v10/guilds/{g}/members/{u}", get(member))
        .route("/api/v10/channels/{c}", get(channel))
        .route("/api/v10/guilds/{g}", get(guild))
        .route("/api/v10/guilds/{g}/roles", get(roles))
        .route("/api/v10/guilds/{g}/roles/{r}", get(role))
        .route("/api/v10/guilds/{g}/channels", get(guild_channels))
        .route("/api/v10/guilds/{g}/voice-states/{u}", get(voice_state))
        .route("/control/rest-fault", post(add_fault))
        .route("/control/rest-fault/clear", post(clear_faults))
        .with_state(inner)
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

fn unknown(code: u64, what: &str) -> Response {
    error(StatusCode::NOT_FOUND, code, &format!("Unknown {what}"))
}

/// Bucket headers of a success: Discord sends them, without a scope.
fn ok(route: RestRoute, body: Value) -> Response {
    let mut r = Json(body).into_response();
    let h = r.headers_mut();
    h.insert(
        "x-ratelimit-bucket",
        HeaderValue::from_static(route.bucket()),
    );
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4"));
    h.insert("x-ratelimit-reset-after", HeaderValue::from_static("1.000"));
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 1;
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    r
}

fn rate_limited(route: RestRoute, retry_after_ms: u64, scope: RateLimitScope) -> Response {
    let secs = retry_after_ms as f64 / 1000.0;
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": secs,
        "global": scope == RateLimitScope::Global,
    });
    let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let h = r.headers_mut();
    // Retry-After is whole seconds (twilight parses it as an integer).
    let whole = retry_after_ms.div_ceil(1000).max(1);
    h.insert(header::RETRY_AFTER, HeaderValue::from(whole));
    h.insert(
        "x-ratelimit-bucket",
        HeaderValue::from_static(route.bucket()),
    );
    match scope {
        RateLimitScope::User => {
            h.insert("x-ratelimit-scope", HeaderValue::from_static("user"));
            h.insert("x-ratelimit-limit", HeaderValue::from_static("5"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::from_str(&format!("{secs:.3}")) {
                h.insert("x-ratelimit-reset-after", v);
            }
            let reset = time::OffsetDateTime::now_utc().unix_timestamp() + whole as i64;
            h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        }
        RateLimitScope::Shared => {
            h.insert("x-ratelimit-scope", HeaderValue::from_static("shared"));
        }
        RateLimitScope::Global => {
            h.insert("x-ratelimit-scope", HeaderValue::from_static("global"));
            h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
        }
    }
    r
}

/// Authorization, counters and faults common to every REST route: `Err`
/// is the answer to send instead of the real one.
async fn gate(inner: &Inner, headers: &HeaderMap, route: RestRoute) -> Result<(), Response> {
    let (token, fault) = inner.with(|st| (st.cfg.token.clone(), st.rest.next(route)));
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bot ") == Some(token.as_str()));
    if !authorized {
        return Err(error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"));
    }
    match fault {
        None => Ok(()),
        Some(RestFault::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok(())
        }
        Some(RestFault::NotFound) => Err(unknown(
            match route {
                RestRoute::Member => 10007,
                RestRoute::Channel => 10003,
                RestRoute::Roles => 10011,
                RestRoute::VoiceState => 10065,
                RestRoute::Guild | RestRoute::GuildChannels => 10004,
            },
            "Resource",
        )),
        Some(RestFault::Forbidden) => Err(error(StatusCode::FORBIDDEN, 50001, "Missing Access")),
        Some(RestFault::Unauthorized) => {
            Err(error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"))
        }
        Some(RestFault::RateLimited {
            retry_after_ms,
            scope,
        }) => Err(rate_limited(route, retry_after_ms, scope)),
        Some(RestFault::ServerError) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        )),
        Some(RestFault::NonJson) => Err((
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response()),
    }
}

fn id(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|v| *v != 0)
}

/// Looks a guild up the way Discord does for a bot: unknown or unavailable
/// guilds are 404 10004.
fn with_guild(inner: &Inner, g: &str, f: impl FnOnce(&Guild) -> Response) -> Response {
    inner.with(|st| {
        match id(g)
            .and_then(|g| st.guilds.get(&g))
            .filter(|g| !g.unavailable)
        {
            Some(g) => f(g),
            None => unknown(10004, "Guild"),
        }
    })
}

async fn member(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((g, u)): Path<(String, String)>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::Member).await {
        return r;
    }
    with_guild(&inner, &g, |guild| {
        match id(&u).and_then(|u| guild.members.get(&u)) {
            Some(m) => ok(RestRoute::Member, model::member_json(m)),
            None => unknown(10007, "Member"),
        }
    })
}

async fn channel(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(c): Path<String>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::Channel).await {
        return r;
    }
    let Some(c) = id(&c) else {
        return unknown(10003, "Channel");
    };
    inner.with(|st| {
        st.guilds
            .values()
            .filter(|g| !g.unavailable)
            .find_map(|g| {
                g.channels
                    .iter()
                    .find(|ch| ch.id == c)
                    .map(|ch| model::channel_json(ch, Some(g.id)))
            })
            .map(|v| ok(RestRoute::Channel, v))
            .unwrap_or_else(|| unknown(10003, "Channel"))
    })
}

/// The REST `Guild`: every field twilight-model requires, and the roles.
fn guild_json(g: &Guild) -> Value {
    json!({
        "id": g.id.to_string(),
        "name": g.name,
        "owner_id": g.owner_id.to_string(),
        "roles": g.roles.iter().map(model::role_json).collect::<Vec<_>>(),
        "features": [],
        "afk_timeout": 300,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "preferred_locale": "en-US",
        "premium_progress_bar_enabled": false,
        "system_channel_flags": 0,
        "verification_level": 0,
        "emojis": [],
        "stickers": [],
    })
}

async fn guild(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(g): Path<String>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::Guild).await {
        return r;
    }
    with_guild(&inner, &g, |guild| ok(RestRoute::Guild, guild_json(guild)))
}

async fn roles(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(g): Path<String>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::Roles).await {
        return r;
    }
    with_guild(&inner, &g, |guild| {
        ok(
            RestRoute::Roles,
            Value::Array(guild.roles.iter().map(model::role_json).collect()),
        )
    })
}

async fn role(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((g, r)): Path<(String, String)>,
) -> Response {
    if let Err(resp) = gate(&inner, &headers, RestRoute::Roles).await {
        return resp;
    }
    with_guild(&inner, &g, |guild| {
        match id(&r).and_then(|r| guild.roles.iter().find(|x| x.id == r)) {
            Some(role) => ok(RestRoute::Roles, model::role_json(role)),
            None => unknown(10011, "Role"),
        }
    })
}

async fn guild_channels(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(g): Path<String>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::GuildChannels).await {
        return r;
    }
    with_guild(&inner, &g, |guild| {
        let list = guild
            .channels
            .iter()
            .map(|c| model::channel_json(c, Some(guild.id)))
            .collect();
        ok(RestRoute::GuildChannels, Value::Array(list))
    })
}

async fn voice_state(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((g, u)): Path<(String, String)>,
) -> Response {
    if let Err(r) = gate(&inner, &headers, RestRoute::VoiceState).await {
        return r;
    }
    with_guild(&inner, &g, |guild| {
        match id(&u).and_then(|u| guild.voice.get(&u).map(|v| (u, v))) {
            Some((u, v)) => ok(
                RestRoute::VoiceState,
                model::voice_state_json(Some(guild.id), u, Some(v.channel_id), &v.session_id),
            ),
            None => unknown(10065, "Voice State"),
        }
    })
}

async fn add_fault(State(inner): State<Arc<Inner>>, Json(spec): Json<FaultSpec>) -> StatusCode {
    inner.with(|st| st.rest.faults.push_back(spec));
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(inner): State<Arc<Inner>>) -> StatusCode {
    inner.with(|st| st.rest.faults.clear());
    StatusCode::NO_CONTENT
}
