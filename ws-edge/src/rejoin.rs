//! `POST /api/voice/rejoin` (contract section 6), edge side.
//!
//! The edge authenticates the browser (bearer JWT; the guild must be in the
//! token; the user is the token's `sub`), applies the per-user rate limit,
//! and asks the worker over the bus's request/reply subject
//! ([`voicewatch_protocol::subject::rejoin_rpc_subject`]); only the worker
//! holds the bot token. The worker's answer is re-encoded, never passed on
//! as received.
//!
//! Beyond the contract's table (the contract leaves these open):
//! - a body that is not `{"guildId","channelId"}` with snowflake strings:
//!   400 `{"ok":false,"error":"bad_request",...}`; over 4 KiB: 413;
//! - no worker answers within `--rejoin-timeout-ms`, none serves the
//!   subject, or the bus is down: 502 `discord_error` — to the browser it is
//!   the same as Discord not answering: try again later.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use voicewatch_bus::{Bus, BusError};
use voicewatch_protocol::{Claims, RejoinError, RejoinOutcome, RejoinQuery, RejoinRequest};

/// The path of the rejoin check.
pub const PATH: &str = "/api/voice/rejoin";

/// Largest accepted request body.
pub const MAX_BODY: usize = 4096;

/// Keys kept by the rate limiter before idle ones are first swept.
const LIMITER_SWEEP_AT: usize = 10_000;

/// Limits of the edge side of the rejoin check.
#[derive(Debug, Clone, clap::Args)]
pub struct RejoinEdgeConfig {
    /// How long the edge waits for the worker's answer before answering
    /// `discord_error` (502). Keep it above twice the worker's
    /// `--rejoin-discord-timeout-ms`.
    #[arg(
        long = "rejoin-timeout-ms",
        env = "VOICEWATCH_REJOIN_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub timeout_ms: u64,
    /// Rejoin checks one user may make per minute, sustained (0: no limit).
    #[arg(
        long = "rejoin-rate-per-minute",
        env = "VOICEWATCH_REJOIN_RATE_PER_MINUTE",
        default_value_t = 12
    )]
    pub rate_per_minute: u32,
    /// Rejoin checks one user may make back to back before the per-minute
    /// rate applies.
    #[arg(
        long = "rejoin-rate-burst",
        env = "VOICEWATCH_REJOIN_RATE_BURST",
        default_value_t = 5
    )]
    pub rate_burst: u32,
}

impl Default for RejoinEdgeConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            rate_per_minute: 12,
            rate_burst: 5,
        }
    }
}

/// Metrics of the edge side (`voicewatch_edge_rejoin_*` in the edge's
/// registry).
#[derive(Debug, Clone, Default)]
pub struct RejoinEdgeMetrics {
    /// Answers by outcome: `ok`, the contract's error codes, `bad_request`.
    pub requests: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Why no usable worker answer came: `timeout`, `no_responders`,
    /// `unavailable`, `bad_answer`.
    pub worker_failures: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl RejoinEdgeMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rejoin");
        r.register(
            "requests",
            "Rejoin checks answered, by outcome",
            self.requests.clone(),
        );
        r.register(
            "worker_failures",
            "Rejoin checks the worker did not answer usably, by reason",
            self.worker_failures.clone(),
        );
    }

    pub fn outcome_count(&self, outcome: &'static str) -> u64 {
        self.requests
            .get_or_create(&vec![("outcome", outcome)])
            .get()
    }

    pub fn worker_failure_count(&self, reason: &'static str) -> u64 {
        self.worker_failures
            .get_or_create(&vec![("reason", reason)])
            .get()
    }
}

/// Checks a bearer token: the claims when it is valid now (signature,
/// algorithm, `exp`/`nbf`, audience and issuer as configured), `None`
/// otherwise. The edge's JWT verifier provides it.
pub type VerifyToken = Arc<dyn Fn(&str) -> Option<Claims> + Send + Sync>;

/// The route's state. Build with [`RejoinRoute::new`], mount with
/// [`RejoinRoute::router`].
pub struct RejoinRoute {
    bus: Arc<dyn Bus>,
    subject: String,
    verify: VerifyToken,
    limiter: Option<DefaultKeyedRateLimiter<u64>>,
    /// Limiter size at which idle keys are swept next; doubles when a sweep
    /// frees little, so that many active users do not mean a sweep per
    /// request.
    next_sweep: AtomicUsize,
    timeout: Duration,
    metrics: RejoinEdgeMetrics,
}

impl RejoinRoute {
    pub fn new(
        bus: Arc<dyn Bus>,
        prefix: &str,
        verify: VerifyToken,
        cfg: &RejoinEdgeConfig,
        metrics: RejoinEdgeMetrics,
    ) -> Arc<Self> {
        let limiter = NonZeroU32::new(cfg.rate_per_minute).map(|rate| {
            let burst = NonZeroU32::new(cfg.rate_burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Arc::new(Self {
            bus,
            subject: voicewatch_protocol::subject::rejoin_rpc_subject(prefix),
            verify,
            limiter,
            next_sweep: AtomicUsize::new(LIMITER_SWEEP_AT),
            timeout: Duration::from_millis(cfg.timeout_ms),
            metrics,
        })
    }

    /// `POST /api/voice/rejoin`, ready to merge into the edge's router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(PATH, post(handle))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    pub fn metrics(&self) -> &RejoinEdgeMetrics {
        &self.metrics
    }

    /// The whole check, without HTTP framing: status, body, and the
    /// `Retry-After` seconds of a 429.
    pub async fn answer(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, String, Option<u64>) {
        let (outcome, label, retry_after) = self.decide(headers, body).await;
        self.metrics
            .requests
            .get_or_create(&vec![("outcome", label)])
            .inc();
        match outcome {
            Decision::Outcome(o) => {
                let status =
                    StatusCode::from_u16(o.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
                (status, o.to_json(), retry_after)
            }
            Decision::BadRequest(message) => {
                let body =
                    serde_json::json!({"ok": false, "error": "bad_request", "message": message});
                (StatusCode::BAD_REQUEST, body.to_string(), None)
            }
        }
    }

    async fn decide(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Decision, &'static str, Option<u64>) {
        let refuse = |e: RejoinError| {
            (
                Decision::Outcome(RejoinOutcome::refused(e)),
                e.as_str(),
                None,
            )
        };

        let Some(claims) = bearer(headers).and_then(|t| (self.verify)(t)) else {
            return refuse(RejoinError::Unauthorized);
        };
        if let Some(limiter) = &self.limiter {
            if limiter.len() > self.next_sweep.load(Ordering::Relaxed) {
                limiter.retain_recent();
                let next = (limiter.len() * 2).max(LIMITER_SWEEP_AT);
                self.next_sweep.store(next, Ordering::Relaxed);
            }
            if let Err(not_until) = limiter.check_key(&claims.sub.get()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                // Whole seconds, rounded up, never 0: "retry now" would be
                // refused again.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let (d, l, _) = refuse(RejoinError::RateLimited);
                return (d, l, Some(secs.max(1)));
            }
        }
        let req: RejoinRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Decision::BadRequest(format!("expected {{\"guildId\",\"channelId\"}}: {e}")),
                    "bad_request",
                    None,
                );
            }
        };
        if !claims.guilds.contains(&req.guild_id) {
            return refuse(RejoinError::Unauthorized);
        }
        let query = RejoinQuery {
            user_id: claims.sub,
            guild_id: req.guild_id,
            channel_id: req.channel_id,
        };
        let payload = match serde_json::to_vec(&query) {
            Ok(p) => p,
            Err(_) => return refuse(RejoinError::DiscordError),
        };
        let failed = |reason: &'static str, message: &str| {
            self.metrics
                .worker_failures
                .get_or_create(&vec![("reason", reason)])
                .inc();
            tracing::warn!(reason, "rejoin check: no usable worker answer");
            (
                Decision::Outcome(RejoinOutcome::Refused {
                    error: RejoinError::DiscordError,
                    message: message.to_owned(),
                }),
                RejoinError::DiscordError.as_str(),
                None,
            )
        };
        let answer = match self
            .bus
            .request(&self.subject, payload.into(), self.timeout)
            .await
        {
            Ok(a) => a,
            Err(BusError::Timeout) => {
                return failed("timeout", "the check took too long; try again");
            }
            Err(BusError::NoResponders(_)) => {
                return failed(
                    "no_responders",
                    "the rejoin check is not available; try again",
                );
            }
            Err(_) => {
                return failed(
                    "unavailable",
                    "the rejoin check is not available; try again",
                );
            }
        };
        match RejoinOutcome::from_json(&answer) {
            Ok(RejoinOutcome::Ok {
                guild_id,
                channel_id,
            }) if guild_id != req.guild_id || channel_id != req.channel_id => failed(
                "bad_answer",
                "the rejoin check answered about another channel",
            ),
            // The edge's own codes are not the worker's to give.
            Ok(RejoinOutcome::Refused {
                error: RejoinError::Unauthorized | RejoinError::RateLimited,
                ..
            }) => failed("bad_answer", "the rejoin check failed; try again"),
            Ok(o) => {
                let label = match &o {
                    RejoinOutcome::Ok { .. } => "ok",
                    RejoinOutcome::Refused { error, .. } => error.as_str(),
                };
                (Decision::Outcome(o), label, None)
            }
            Err(_) => failed("bad_answer", "the rejoin check failed; try again"),
        }
    }
}

enum Decision {
    Outcome(RejoinOutcome),
    BadRequest(String),
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn handle(
    State(route): State<Arc<RejoinRoute>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, body, retry_after) = route.answer(&headers, &body).await;
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
