//! The rejoin check end to end: browser request → edge (JWT, rate limit) →
//! in-process bus → worker (cache, gateway view, twilight-http) → the
//! simulator's Discord REST, with error injection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use voicewatch_bus::{Bus, MemoryBus};
use voicewatch_gateway_worker::rejoin::{
    ChannelFacts, GatewayView, GuildFacts, RejoinChecker, RejoinConfig, RejoinMetrics,
    VoiceOccupancy, discord,
};
use voicewatch_protocol::{Claims, ClaimsLimits};
use voicewatch_tests::sim::rest::{self, RateLimitScope, RestFault, RestRoute};
use voicewatch_tests::sim::{Overwrite, Role, SimConfig, Simulator};
use voicewatch_ws_edge::rejoin::{RejoinEdgeConfig, RejoinEdgeMetrics, RejoinRoute};

const SECRET: &[u8] = b"rejoin-e2e-secret";
const WAIT: Duration = Duration::from_secs(15);
const G: u64 = rest::DEMO_GUILD;
const ROLE: u64 = 5000;

struct World {
    sim: Simulator,
    voice: Arc<VoiceOccupancy>,
    checker: Arc<RejoinChecker>,
    edge: Arc<RejoinRoute>,
    url: String,
    http: reqwest::Client,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn token(sub: u64) -> String {
    let claims = json!({"sub": sub.to_string(), "guilds": [G.to_string()], "exp": now() + 600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

async fn world(worker: RejoinConfig, edge_cfg: RejoinEdgeConfig) -> World {
    world_on(Arc::new(MemoryBus::default()), worker, edge_cfg, None).await
}

async fn world_on(
    bus: Arc<dyn Bus>,
    worker: RejoinConfig,
    edge_cfg: RejoinEdgeConfig,
    view: Option<Arc<dyn GatewayView>>,
) -> World {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_guild(rest::demo_guild());
    let http =
        discord::build_client(&sim.token(), Some(&sim.api_url()), Duration::from_secs(10)).unwrap();
    let voice = Arc::new(VoiceOccupancy::new());
    let view = view.unwrap_or_else(|| voice.clone());
    let checker = Arc::new(RejoinChecker::new(
        Arc::new(http),
        view,
        worker,
        RejoinMetrics::new(),
    ));
    tokio::spawn(checker.clone().serve(bus.clone(), "voice".into()));
    let verify = Arc::new(|t: &str| {
        let data = jsonwebtoken::decode::<Claims>(
            t,
            &DecodingKey::from_secret(SECRET),
            &Validation::new(Algorithm::HS256),
        )
        .ok()?;
        data.claims.validate(now(), ClaimsLimits::default()).ok()?;
        Some(data.claims)
    });
    let edge = RejoinRoute::new(
        bus,
        "voice",
        verify,
        &edge_cfg,
        RejoinEdgeMetrics::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/voice/rejoin", listener.local_addr().unwrap());
    let app = edge.clone().router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let w = World {
        sim,
        voice,
        checker,
        edge,
        url,
        http: reqwest::Client::new(),
    };
    w.sync_voice();
    w
}

/// Default limits, no per-user rate limit (checked on its own below).
async fn default_world() -> World {
    world(
        RejoinConfig::default(),
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await
}

impl World {
    /// What the gateway would tell the worker: the guild's voice states.
    fn sync_voice(&self) {
        self.voice.replace_guild(G, self.sim.voice_state(G), false);
    }

    async fn post(&self, user: u64, channel: u64) -> (u16, Value) {
        let resp = self
            .http
            .post(&self.url)
            .header("authorization", format!("Bearer {}", token(user)))
            .json(&json!({"guildId": G.to_string(), "channelId": channel.to_string()}))
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_str(&resp.text().await.unwrap()).unwrap(),
        )
    }

    async fn expect(&self, user: u64, channel: u64, status: u16, error: Option<&str>) -> Value {
        let (s, v) = self.post(user, channel).await;
        assert_eq!(s, status, "user {user} channel {channel}: {v}");
        match error {
            None => {
                assert_eq!(v["ok"], true, "{v}");
                assert_eq!(
                    v["url"],
                    format!("https://discord.com/channels/{G}/{channel}")
                );
            }
            Some(e) => {
                assert_eq!(v["ok"], false, "{v}");
                assert_eq!(v["error"], e, "user {user} channel {channel}: {v}");
            }
        }
        v
    }
}

#[tokio::test]
async fn demo_guild_answers_ok_missing_permissions_and_channel_full() {
    let w = default_world().await;
    w.expect(3001, 4000, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    w.expect(3001, 4002, 409, Some("channel_full")).await;
    // The one already in "Full" may rejoin it.
    w.expect(3003, 4002, 200, None).await;
    // The owner passes any overwrite.
    w.expect(1000, 4001, 200, None).await;
    let m = w.checker.metrics();
    assert_eq!(m.outcome_count("ok"), 3);
    assert_eq!(m.outcome_count("missing_permissions"), 1);
    assert_eq!(m.outcome_count("channel_full"), 1);
    assert_eq!(w.edge.metrics().outcome_count("channel_full"), 1);
}

#[tokio::test]
async fn not_in_guild_and_channel_not_found() {
    let w = default_world().await;
    w.expect(3999, 4000, 403, Some("not_in_guild")).await;
    w.expect(3001, 4999, 404, Some("channel_not_found")).await;
    // A text channel is not a voice channel.
    w.expect(3001, 4003, 404, Some("channel_not_found")).await;
    // A voice channel of another guild is not in this one.
    w.sim.add_simple_guild(2100, 6000, 1);
    w.expect(3001, 6001, 404, Some("channel_not_found")).await;
}

#[tokio::test]
async fn overwrite_denies_everyone_but_allows_a_role() {
    // No cache: the guild is edited between checks of the same channel.
    let w = world(
        RejoinConfig {
            cache_ttl_ms: 0,
            ..RejoinConfig::default()
        },
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    w.expect(3002, 4001, 403, Some("missing_permissions")).await;
    assert!(w.sim.edit_guild(G, |g| {
        g.roles.push(Role {
            id: ROLE,
            name: "raiders".into(),
            permissions: 0,
            position: 1,
        });
        g.members.get_mut(&3002).unwrap().roles.push(ROLE);
        let locked = g.channels.iter_mut().find(|c| c.id == 4001).unwrap();
        locked.overwrites.push(Overwrite {
            id: ROLE,
            kind: 0,
            allow: rest::CONNECT,
            deny: 0,
        });
    }));
    w.expect(3002, 4001, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    // A member overwrite that denies VIEW_CHANNEL wins over the role's allow.
    assert!(w.sim.edit_guild(G, |g| {
        let locked = g.channels.iter_mut().find(|c| c.id == 4001).unwrap();
        locked.overwrites.push(Overwrite {
            id: 3002,
            kind: 1,
            allow: 0,
            deny: rest::VIEW_CHANNEL,
        });
    }));
    w.expect(3002, 4001, 403, Some("missing_permissions")).await;
}

#[tokio::test]
async fn administrator_and_move_members_pass_locks_and_limits() {
    let w = default_world().await;
    assert!(w.sim.edit_guild(G, |g| {
        g.roles.push(Role {
            id: ROLE,
            name: "admin".into(),
            permissions: rest::ADMINISTRATOR,
            position: 1,
        });
        g.roles.push(Role {
            id: ROLE + 1,
            name: "mover".into(),
            permissions: rest::MOVE_MEMBERS,
            position: 2,
        });
        g.members.get_mut(&3001).unwrap().roles.push(ROLE);
        g.members.get_mut(&3002).unwrap().roles.push(ROLE + 1);
    }));
    w.expect(3001, 4001, 200, None).await;
    w.expect(3001, 4002, 200, None).await;
    w.expect(3002, 4002, 200, None).await;
    w.expect(3002, 4001, 403, Some("missing_permissions")).await;
}

#[tokio::test]
async fn occupancy_follows_the_gateway_and_is_skipped_when_unknown() {
    let w = default_world().await;
    // 3003 leaves "Full": it has room now.
    w.sim.voice_update(G, 3003, None).unwrap();
    w.sync_voice();
    w.expect(3001, 4002, 200, None).await;
    // Without the gateway's voice states the limit cannot be checked: the
    // check lets the user try (Discord itself refuses if it is full).
    w.voice.set_stale(G);
    w.expect(3002, 4002, 200, None).await;
    assert_eq!(w.checker.metrics().occupancy_unknown.get(), 1);
}

#[tokio::test]
async fn a_429_then_success_is_ok() {
    let w = default_world().await;
    w.sim.rest_fault(
        Some(RestRoute::Member),
        RestFault::RateLimited {
            retry_after_ms: 200,
            scope: RateLimitScope::User,
        },
        Some(1),
    );
    w.expect(3001, 4000, 200, None).await;
    assert_eq!(
        w.sim.rest_requests(RestRoute::Member),
        2,
        "twilight retried after the 429"
    );
}

#[tokio::test]
async fn endless_429s_end_in_discord_error() {
    let w = world(
        RejoinConfig {
            discord_timeout_ms: 700,
            ..RejoinConfig::default()
        },
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    for scope in [RateLimitScope::User, RateLimitScope::Global] {
        w.sim.clear_rest_faults();
        w.sim.rest_fault(
            Some(RestRoute::Member),
            RestFault::RateLimited {
                retry_after_ms: 100,
                scope,
            },
            None,
        );
        let before = w.sim.rest_requests(RestRoute::Member);
        w.expect(3001, 4000, 502, Some("discord_error")).await;
        assert!(
            w.sim.rest_requests(RestRoute::Member) > before + 1,
            "{scope:?}: retried, then cut off"
        );
    }
    assert!(w.checker.metrics().discord_count("member", "timeout") >= 2);
    // Discord failures are not cached: once Discord answers, so do we.
    w.sim.clear_rest_faults();
    w.expect(3001, 4000, 200, None).await;
}

#[tokio::test]
async fn injected_errors_map_to_the_contract() {
    let w = world(
        RejoinConfig {
            discord_timeout_ms: 500,
            cache_ttl_ms: 0,
            ..RejoinConfig::default()
        },
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    let cases: [(RestRoute, RestFault, u16, &str, &str); 8] = [
        (
            RestRoute::Member,
            RestFault::NotFound,
            403,
            "not_in_guild",
            "not_found",
        ),
        (
            RestRoute::Channel,
            RestFault::NotFound,
            404,
            "channel_not_found",
            "not_found",
        ),
        (
            RestRoute::Member,
            RestFault::Forbidden,
            502,
            "discord_error",
            "forbidden",
        ),
        (
            RestRoute::Channel,
            RestFault::Forbidden,
            502,
            "discord_error",
            "forbidden",
        ),
        (
            RestRoute::Guild,
            RestFault::ServerError,
            502,
            "discord_error",
            "error",
        ),
        (
            RestRoute::Member,
            RestFault::NonJson,
            502,
            "discord_error",
            "non_json",
        ),
        (
            RestRoute::Channel,
            RestFault::Slow { delay_ms: 3000 },
            502,
            "discord_error",
            "timeout",
        ),
        (
            RestRoute::Member,
            RestFault::Unauthorized,
            502,
            "discord_error",
            "error",
        ),
    ];
    for (route, fault, status, code, result) in cases {
        w.sim.rest_fault(Some(route), fault, Some(1));
        w.expect(3001, 4000, status, Some(code)).await;
        let label = match route {
            RestRoute::Member => "member",
            RestRoute::Channel => "channel",
            _ => "guild",
        };
        assert!(
            w.checker.metrics().discord_count(label, result) >= 1,
            "{route:?} {fault:?}"
        );
        // Every fault was one request only: the next check is fine again
        // (after a 401 too: the client does not remember it).
        w.expect(3001, 4000, 200, None).await;
    }
}

#[tokio::test]
async fn repeated_checks_are_served_from_the_cache() {
    let w = default_world().await;
    w.expect(3001, 4000, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    let member_calls = w.sim.rest_requests(RestRoute::Member);
    w.expect(3001, 4000, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    assert_eq!(
        w.sim.rest_requests(RestRoute::Member),
        member_calls,
        "no new Discord call"
    );
    assert_eq!(w.checker.metrics().cache_hits.get(), 2);
    // Another user is another check.
    w.expect(3002, 4000, 200, None).await;
    assert_eq!(w.sim.rest_requests(RestRoute::Member), member_calls + 1);
}

#[tokio::test]
async fn a_worker_that_does_not_answer_in_time_is_a_discord_error() {
    // Discord is slower than the edge is willing to wait; the worker's own
    // limit is longer still, so it is the edge that gives up.
    let w = world(
        RejoinConfig {
            discord_timeout_ms: 5000,
            ..RejoinConfig::default()
        },
        RejoinEdgeConfig {
            timeout_ms: 300,
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    w.sim
        .rest_fault(None, RestFault::Slow { delay_ms: 2000 }, Some(3));
    w.expect(3001, 4000, 502, Some("discord_error")).await;
    assert_eq!(w.edge.metrics().worker_failure_count("timeout"), 1);
}

#[tokio::test]
async fn per_user_rate_limit_on_the_endpoint() {
    let w = world(
        RejoinConfig::default(),
        RejoinEdgeConfig {
            rate_per_minute: 1,
            rate_burst: 2,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    w.expect(3001, 4000, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    let resp = w
        .http
        .post(&w.url)
        .header("authorization", format!("Bearer {}", token(3001)))
        .json(&json!({"guildId": G.to_string(), "channelId": "4000"}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    w.expect(3002, 4000, 200, None).await;
}

/// The production path: `worker::run` (shards, tracker, the rejoin server it
/// starts) on a bus, the edge route on the same bus. Occupancy comes from the
/// worker's own gateway view, nothing is fed by the test.
#[tokio::test]
async fn the_running_worker_answers_from_its_own_gateway_view() {
    use futures::StreamExt;
    use voicewatch_tests::harness::{HMAC_KEYS, worker_args};

    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_guild(rest::demo_guild());
    let dir = tempfile::tempdir().unwrap();
    let mut args = worker_args(&sim, dir.path());
    args.hmac_keys = HMAC_KEYS.into();
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let mut events = bus
        .subscribe(voicewatch_protocol::Snowflake::new(G).unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let bus = bus.clone();
        tokio::spawn(async move {
            voicewatch_gateway_worker::worker::run(&args, bus, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let verify = Arc::new(|t: &str| {
        let data = jsonwebtoken::decode::<Claims>(
            t,
            &DecodingKey::from_secret(SECRET),
            &Validation::new(Algorithm::HS256),
        )
        .ok()?;
        Some(data.claims)
    });
    let edge = RejoinRoute::new(
        bus.clone(),
        "voice",
        verify,
        &RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
        RejoinEdgeMetrics::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/voice/rejoin", listener.local_addr().unwrap());
    let app = edge.clone().router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let post = |user: u64, channel: u64| {
        let url = url.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(&url)
                .header("authorization", format!("Bearer {}", token(user)))
                .json(&json!({"guildId": G.to_string(), "channelId": channel.to_string()}))
                .timeout(WAIT)
                .send()
                .await
                .unwrap();
            let s = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap();
            (s, v["error"].as_str().map(str::to_owned))
        }
    };

    // Once a change after the GUILD_CREATE is on the bus, the worker has
    // taken in the guild's voice states.
    sim.wait_active(1, WAIT).await.unwrap();
    sim.voice_update(G, 3002, Some(4000)).unwrap();
    let e = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("joined event")
        .unwrap();
    assert!(
        std::str::from_utf8(&e.event.payload)
            .unwrap()
            .contains("voice.joined")
    );
    assert_eq!(post(3001, 4002).await, (409, Some("channel_full".into())));
    assert_eq!(
        post(3001, 4001).await,
        (403, Some("missing_permissions".into()))
    );
    assert_eq!(post(3001, 4000).await, (200, None));

    // 3003 leaves "Full": there is room for the next one who asks.
    sim.voice_update(G, 3003, None).unwrap();
    let e = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("left event")
        .unwrap();
    assert!(
        std::str::from_utf8(&e.event.payload)
            .unwrap()
            .contains("voice.left")
    );
    assert_eq!(post(3002, 4002).await, (200, None));

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("worker stops")
        .unwrap()
        .unwrap();
}

/// Every simulated REST answer parses as the twilight model it stands for,
/// successes carry bucket headers and no scope, and a `shared` 429 is
/// retried by twilight too.
#[tokio::test]
async fn simulated_rest_is_discord_shaped() {
    use twilight_model::id::Id;

    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_guild(rest::demo_guild());
    let http =
        discord::build_client(&sim.token(), Some(&sim.api_url()), Duration::from_secs(10)).unwrap();
    let g = Id::new(G);

    let guild = tokio::time::timeout(WAIT, async {
        http.guild(g).await.unwrap().model().await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(guild.owner_id.get(), 1000);
    assert_eq!(guild.roles.len(), 1);
    let roles = tokio::time::timeout(WAIT, async {
        http.roles(g).await.unwrap().models().await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(roles[0].id.get(), G);
    let role = tokio::time::timeout(WAIT, async {
        http.role(g, Id::new(G))
            .await
            .unwrap()
            .model()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(role.name, "@everyone");
    let channels = tokio::time::timeout(WAIT, async {
        http.guild_channels(g)
            .await
            .unwrap()
            .models()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    let locked = channels.iter().find(|c| c.id.get() == 4001).unwrap();
    assert_eq!(locked.permission_overwrites.as_ref().unwrap().len(), 1);
    let full = tokio::time::timeout(WAIT, async {
        http.channel(Id::new(4002))
            .await
            .unwrap()
            .model()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        (full.user_limit, full.guild_id.map(|g| g.get())),
        (Some(1), Some(G))
    );
    let member = tokio::time::timeout(WAIT, async {
        http.guild_member(g, Id::new(3001))
            .await
            .unwrap()
            .model()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(member.user.id.get(), 3001);
    let vs = tokio::time::timeout(WAIT, async {
        http.user_voice_state(g, Id::new(3003))
            .await
            .unwrap()
            .model()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(vs.channel_id.map(|c| c.get()), Some(4002));
    let err = tokio::time::timeout(WAIT, async {
        http.user_voice_state(g, Id::new(3001)).await.unwrap_err()
    })
    .await
    .unwrap();
    assert!(
        matches!(err.kind(), twilight_http::error::ErrorType::Response { status, .. } if status.get() == 404)
    );

    let raw = reqwest::Client::new()
        .get(format!("{}/api/v10/channels/4000", sim.api_url()))
        .header("authorization", format!("Bot {}", sim.token()))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 200);
    assert!(raw.headers().contains_key("x-ratelimit-bucket"));
    assert!(
        !raw.headers().contains_key("x-ratelimit-scope"),
        "Discord sends no scope on a success"
    );
    let unauthorized = reqwest::Client::new()
        .get(format!("{}/api/v10/channels/4000", sim.api_url()))
        .header("authorization", "Bot wrong")
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    sim.rest_fault(
        Some(RestRoute::Channel),
        RestFault::RateLimited {
            retry_after_ms: 1000,
            scope: RateLimitScope::Shared,
        },
        Some(1),
    );
    let before = sim.rest_requests(RestRoute::Channel);
    tokio::time::timeout(WAIT, async { http.channel(Id::new(4000)).await.unwrap() })
        .await
        .unwrap();
    assert_eq!(
        sim.rest_requests(RestRoute::Channel),
        before + 2,
        "429 then success"
    );
}

/// `--rejoin-max-inflight`: a check beyond the limit is answered at once.
#[tokio::test]
async fn checks_beyond_max_inflight_are_refused_at_once() {
    let w = world(
        RejoinConfig {
            max_inflight: 1,
            discord_timeout_ms: 5000,
            ..RejoinConfig::default()
        },
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
    )
    .await;
    // The first check hangs on a slow Discord (released when the test ends).
    w.sim
        .rest_fault(None, RestFault::Slow { delay_ms: 3000 }, Some(3));
    let first = {
        let url = w.url.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(&url)
                .header("authorization", format!("Bearer {}", token(3002)))
                .json(&json!({"guildId": G.to_string(), "channelId": "4000"}))
                .timeout(WAIT)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Wait (bounded) until it is in flight.
    tokio::time::timeout(WAIT, async {
        while w.checker.metrics().inflight.get() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("first check in flight");
    let v = w.expect(3001, 4000, 502, Some("discord_error")).await;
    assert!(v["message"].as_str().unwrap().contains("too many"), "{v}");
    assert_eq!(w.checker.metrics().busy.get(), 1);
    first.abort();
}

/// The same checks over a real nats-server (request/reply with a queue
/// group), including a subject nobody serves.
#[tokio::test]
async fn over_nats() {
    let nats = voicewatch_bus::testkit::NatsServer::start();
    let bus: Arc<dyn Bus> = Arc::new(
        voicewatch_bus::NatsBus::connect(voicewatch_bus::NatsArgs::new([nats.url()]))
            .await
            .unwrap(),
    );
    let w = world_on(
        bus.clone(),
        RejoinConfig::default(),
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
        None,
    )
    .await;
    w.expect(3001, 4000, 200, None).await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    w.expect(3001, 4002, 409, Some("channel_full")).await;
    // An edge whose prefix no worker serves.
    let lonely = RejoinRoute::new(
        bus,
        "nobody",
        Arc::new(|t: &str| {
            jsonwebtoken::decode::<Claims>(
                t,
                &DecodingKey::from_secret(SECRET),
                &Validation::new(Algorithm::HS256),
            )
            .ok()
            .map(|d| d.claims)
        }),
        &RejoinEdgeConfig {
            timeout_ms: 2000,
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
        RejoinEdgeMetrics::default(),
    );
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", token(3001)).parse().unwrap(),
    );
    let (status, body, _) = tokio::time::timeout(
        WAIT,
        lonely.answer(&headers, br#"{"guildId":"2000","channelId":"4000"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status.as_u16(), 502, "{body}");
    assert!(body.contains("discord_error"));
    let m = lonely.metrics();
    assert_eq!(
        m.worker_failure_count("no_responders") + m.worker_failure_count("timeout"),
        1
    );
}

/// Where the gateway view knows the channel and the guild, only the member
/// is asked from Discord.
#[tokio::test]
async fn channel_and_guild_from_the_gateway_view_skip_rest() {
    use twilight_model::channel::ChannelType;
    use twilight_model::channel::permission_overwrite::{
        PermissionOverwrite, PermissionOverwriteType,
    };
    use twilight_model::guild::Permissions;
    use twilight_model::id::Id;

    struct Cached;
    impl GatewayView for Cached {
        fn occupants(&self, _guild: u64, channel: u64) -> Option<Vec<u64>> {
            Some(if channel == 4002 { vec![3003] } else { vec![] })
        }
        fn channel(&self, _guild: u64, channel: u64) -> Option<ChannelFacts> {
            (channel == 4001).then(|| ChannelFacts {
                guild_id: Some(G),
                kind: ChannelType::GuildVoice,
                user_limit: None,
                overwrites: vec![PermissionOverwrite {
                    id: Id::new(G),
                    kind: PermissionOverwriteType::Role,
                    allow: Permissions::empty(),
                    deny: Permissions::CONNECT,
                }],
            })
        }
        fn guild(&self, _guild: u64) -> Option<GuildFacts> {
            Some(GuildFacts {
                owner_id: 1000,
                roles: vec![(G, Permissions::VIEW_CHANNEL | Permissions::CONNECT)],
            })
        }
    }
    let w = world_on(
        Arc::new(MemoryBus::default()),
        RejoinConfig::default(),
        RejoinEdgeConfig {
            rate_per_minute: 0,
            ..RejoinEdgeConfig::default()
        },
        Some(Arc::new(Cached)),
    )
    .await;
    w.expect(3001, 4001, 403, Some("missing_permissions")).await;
    assert_eq!(w.sim.rest_requests(RestRoute::Channel), 0);
    assert_eq!(w.sim.rest_requests(RestRoute::Guild), 0);
    assert_eq!(w.sim.rest_requests(RestRoute::Member), 1);
    // A channel the view does not know still comes from REST.
    w.expect(3001, 4002, 409, Some("channel_full")).await;
    assert_eq!(w.sim.rest_requests(RestRoute::Channel), 1);
}

/// The HTTP control surface for faults (demo panel, shell), and an API URL
/// override given with its `/api/v10` suffix.
#[tokio::test]
async fn faults_over_http_and_api_url_with_suffix() {
    use twilight_model::id::Id;

    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_guild(rest::demo_guild());
    let http = discord::build_client(
        &sim.token(),
        Some(&format!("{}/api/v10/", sim.api_url())),
        Duration::from_secs(10),
    )
    .unwrap();
    let control = reqwest::Client::new();
    let r = control
        .post(format!("{}/control/rest-fault", sim.api_url()))
        .json(&json!({"route": "member", "fault": {"kind": "not_found"}, "times": 1}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let member = || async {
        tokio::time::timeout(WAIT, async {
            http.guild_member(Id::new(G), Id::new(3001)).await
        })
        .await
        .unwrap()
    };
    let err = member().await.unwrap_err();
    assert!(
        matches!(err.kind(), twilight_http::error::ErrorType::Response { status, .. } if status.get() == 404),
        "{err:?}"
    );
    assert!(member().await.is_ok(), "the fault was for one request");
    control
        .post(format!("{}/control/rest-fault", sim.api_url()))
        .json(&json!({"fault": {"kind": "server_error"}}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert!(member().await.is_err());
    assert!(member().await.is_err(), "until cleared");
    let r = control
        .post(format!("{}/control/rest-fault/clear", sim.api_url()))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(member().await.is_ok());
}
