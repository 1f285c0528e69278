#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The edge side of the rejoin check against an in-process bus, with a
//! stand-in worker: authentication, rate limit, body errors, and workers that
//! answer, do not answer, or are missing. The real worker against the
//! simulator is tested in `tests/tests/rejoin.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use voicewatch_bus::{Bus, MemoryBus};
use voicewatch_protocol::{Claims, ClaimsLimits, RejoinOutcome, RejoinQuery};
use voicewatch_ws_edge::rejoin::{RejoinEdgeConfig, RejoinEdgeMetrics, RejoinRoute};

const SECRET: &[u8] = b"rejoin-test-secret";
const WAIT: Duration = Duration::from_secs(10);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn token(sub: u64, guilds: &[u64], exp_in: i64) -> String {
    let claims = json!({
        "sub": sub.to_string(),
        "guilds": guilds.iter().map(u64::to_string).collect::<Vec<_>>(),
        "exp": now() + exp_in,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn verifier() -> voicewatch_ws_edge::rejoin::VerifyToken {
    Arc::new(|t: &str| {
        let data = jsonwebtoken::decode::<Claims>(
            t,
            &DecodingKey::from_secret(SECRET),
            &Validation::new(Algorithm::HS256),
        )
        .ok()?;
        data.claims.validate(now(), ClaimsLimits::default()).ok()?;
        Some(data.claims)
    })
}

struct Edge {
    url: String,
    route: Arc<RejoinRoute>,
    bus: Arc<MemoryBus>,
    http: reqwest::Client,
}

async fn edge(cfg: RejoinEdgeConfig) -> Edge {
    let bus = Arc::new(MemoryBus::default());
    let route = RejoinRoute::new(
        bus.clone(),
        "voice",
        verifier(),
        &cfg,
        RejoinEdgeMetrics::default(),
    );
    let app = route.clone().router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Edge {
        url: format!("http://{addr}/api/voice/rejoin"),
        route,
        bus,
        http: reqwest::Client::new(),
    }
}

impl Edge {
    async fn post(&self, token: Option<&str>, body: &str) -> (u16, Value, Option<String>) {
        let mut req = self
            .http
            .post(&self.url)
            .body(body.to_owned())
            .timeout(WAIT);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        (status, body, retry)
    }

    /// A worker that answers every query with `answer(query)` and reports the
    /// queries it saw.
    async fn worker(
        &self,
        answer: fn(&RejoinQuery) -> RejoinOutcome,
    ) -> mpsc::UnboundedReceiver<RejoinQuery> {
        let mut reqs = self.bus.serve("voice.rpc.v1.rejoin").await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(r) = reqs.next().await {
                let q: RejoinQuery = serde_json::from_slice(&r.payload).unwrap();
                let _ = tx.send(q);
                r.respond(Bytes::from(answer(&q).to_json())).await.unwrap();
            }
        });
        rx
    }
}

fn body(g: u64, c: u64) -> String {
    json!({"guildId": g.to_string(), "channelId": c.to_string()}).to_string()
}

fn unlimited() -> RejoinEdgeConfig {
    RejoinEdgeConfig {
        rate_per_minute: 0,
        ..RejoinEdgeConfig::default()
    }
}

#[tokio::test]
async fn unauthorized_without_a_valid_token_or_guild() {
    let e = edge(unlimited()).await;
    let mut seen = e
        .worker(|q| RejoinOutcome::Ok {
            guild_id: q.guild_id,
            channel_id: q.channel_id,
        })
        .await;
    let good = token(3001, &[2000], 600);
    let cases = [
        (None, body(2000, 4000)),
        (Some("not-a-jwt".to_owned()), body(2000, 4000)),
        (Some(token(3001, &[2000], -60)), body(2000, 4000)),
        (Some(good.clone()), body(2001, 4000)),
    ];
    for (t, b) in cases {
        let (status, v, _) = e.post(t.as_deref(), &b).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "unauthorized");
    }
    assert!(
        seen.try_recv().is_err(),
        "no unauthorized check reached the worker"
    );
    assert_eq!(e.route.metrics().outcome_count("unauthorized"), 4);

    let (status, v, _) = e.post(Some(&good), &body(2000, 4000)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"ok": true, "guildId": "2000", "channelId": "4000", "url": "https://discord.com/channels/2000/4000"})
    );
    let q = tokio::time::timeout(WAIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (q.user_id.get(), q.guild_id.get(), q.channel_id.get()),
        (3001, 2000, 4000),
        "the user is the token's sub"
    );
}

#[tokio::test]
async fn worker_refusals_keep_code_and_status() {
    let e = edge(unlimited()).await;
    let _seen = e
        .worker(|q| match q.channel_id.get() {
            4001 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::MissingPermissions),
            4002 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::ChannelFull),
            4404 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::ChannelNotFound),
            4403 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::NotInGuild),
            4502 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::DiscordError),
            // A worker must not hand out the edge's own codes.
            4429 => RejoinOutcome::refused(voicewatch_protocol::RejoinError::RateLimited),
            _ => RejoinOutcome::Ok {
                guild_id: q.guild_id,
                channel_id: q.channel_id,
            },
        })
        .await;
    let t = token(3001, &[2000], 600);
    for (c, status, code) in [
        (4001, 403, "missing_permissions"),
        (4002, 409, "channel_full"),
        (4404, 404, "channel_not_found"),
        (4403, 403, "not_in_guild"),
        (4502, 502, "discord_error"),
        (4429, 502, "discord_error"),
    ] {
        let (s, v, _) = e.post(Some(&t), &body(2000, c)).await;
        assert_eq!((s, v["error"].as_str().unwrap()), (status, code), "{v}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn worker_that_does_not_answer_in_time_is_a_discord_error() {
    let e = edge(RejoinEdgeConfig {
        timeout_ms: 300,
        ..unlimited()
    })
    .await;
    // Serves the subject but never answers.
    let mut held = e.bus.serve("voice.rpc.v1.rejoin").await.unwrap();
    let keep = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(r) = held.next().await {
            kept.push(r);
        }
    });
    let t = token(3001, &[2000], 600);
    let (s, v, _) = e.post(Some(&t), &body(2000, 4000)).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (502, "discord_error"),
        "{v}"
    );
    assert_eq!(e.route.metrics().worker_failure_count("timeout"), 1);
    keep.abort();
}

#[tokio::test]
async fn no_worker_at_all_is_a_discord_error() {
    let e = edge(unlimited()).await;
    let t = token(3001, &[2000], 600);
    let (s, v, _) = e.post(Some(&t), &body(2000, 4000)).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (502, "discord_error"),
        "{v}"
    );
    assert_eq!(e.route.metrics().worker_failure_count("no_responders"), 1);
}

#[tokio::test]
async fn per_user_rate_limit_with_retry_after() {
    let e = edge(RejoinEdgeConfig {
        rate_per_minute: 1,
        rate_burst: 2,
        ..RejoinEdgeConfig::default()
    })
    .await;
    let _seen = e
        .worker(|q| RejoinOutcome::Ok {
            guild_id: q.guild_id,
            channel_id: q.channel_id,
        })
        .await;
    let a = token(3001, &[2000], 600);
    let b = token(3002, &[2000], 600);
    for _ in 0..2 {
        assert_eq!(e.post(Some(&a), &body(2000, 4000)).await.0, 200);
    }
    let (s, v, retry) = e.post(Some(&a), &body(2000, 4000)).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (429, "rate_limited"),
        "{v}"
    );
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        e.post(Some(&b), &body(2000, 4000)).await.0,
        200,
        "another user is not limited"
    );
    assert_eq!(e.route.metrics().outcome_count("rate_limited"), 1);
}

#[tokio::test]
async fn malformed_body_is_400_and_oversized_is_413() {
    let e = edge(unlimited()).await;
    let t = token(3001, &[2000], 600);
    for b in [
        "",
        "{}",
        r#"{"guildId":2000,"channelId":"4000"}"#,
        r#"{"guildId":"2000","channelId":"0"}"#,
    ] {
        let (s, v, _) = e.post(Some(&t), b).await;
        assert_eq!(
            (s, v["error"].as_str().unwrap()),
            (400, "bad_request"),
            "{b}: {v}"
        );
    }
    let big = format!(
        r#"{{"guildId":"2000","channelId":"4000","pad":"{}"}}"#,
        "x".repeat(8192)
    );
    let resp = e
        .http
        .post(&e.url)
        .header("authorization", format!("Bearer {t}"))
        .body(big)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}
