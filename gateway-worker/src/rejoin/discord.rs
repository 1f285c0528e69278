//! Discord REST calls of the rejoin check, through twilight-http, following
//! the facts in `shared/discord-gateway.md` (REST part).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use twilight_http::error::ErrorType;
use twilight_http::response::Response;
use twilight_model::id::Id;

use super::{ChannelFacts, GuildFacts, RejoinMetrics};

/// Discord's API host, used when no override is configured.
pub const DISCORD_API_HOST: &str = "discord.com";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("VOICEWATCH_DISCORD_API_URL must start with http:// or https://, got {0:?}")]
    BadApiUrl(String),
}

/// The twilight client of the rejoin check.
///
/// - `api_url` (`VOICEWATCH_DISCORD_API_URL`, e.g. `http://127.0.0.1:8090`)
///   goes to `ClientBuilder::proxy` without its scheme, since twilight
///   builds `{scheme}://{host}/api/v10/{route}` itself; a trailing
///   `/api/v10` is dropped for the same reason.
/// - `remember_invalid_token(false)`: one 401 (a proxy, a token rotated a
///   moment ago) must not break every later check for good.
/// - Must run inside a tokio runtime (twilight's rate limiter spawns a task).
/// - `request_timeout` bounds each attempt; the caller still bounds the
///   whole call, because 429s are retried without end.
pub fn build_client(
    token: &str,
    api_url: Option<&str>,
    request_timeout: Duration,
) -> Result<twilight_http::Client, ClientError> {
    // twilight's TLS stack panics at build time without a process-level
    // provider, even for http:// URLs; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = twilight_http::Client::builder()
        .token(token.to_owned())
        .remember_invalid_token(false)
        .timeout(request_timeout);
    if let Some(url) = api_url.map(str::trim).filter(|u| !u.is_empty()) {
        let (host, use_http) = if let Some(h) = url.strip_prefix("http://") {
            (h, true)
        } else if let Some(h) = url.strip_prefix("https://") {
            (h, false)
        } else {
            return Err(ClientError::BadApiUrl(url.to_owned()));
        };
        let host = host.trim_end_matches('/');
        let host = host.strip_suffix("/api/v10").unwrap_or(host);
        let host = host.trim_end_matches('/');
        if host.is_empty() {
            return Err(ClientError::BadApiUrl(url.to_owned()));
        }
        b = b.proxy(host.to_owned(), use_http);
    }
    Ok(b.build())
}

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch<T> {
    Found(T),
    /// Discord answered 404.
    NotFound,
    /// Discord answered 403 (the bot lacks access).
    Forbidden,
    /// Anything else: 5xx, 401, other 4xx, a body that is not JSON or not
    /// the expected model, a connection error, or the time limit (which is
    /// also what endless 429s end in).
    Failed,
}

/// REST lookups with a time limit and metrics per call.
pub struct DiscordRest {
    http: Arc<twilight_http::Client>,
    timeout: Duration,
    metrics: RejoinMetrics,
}

impl DiscordRest {
    pub fn new(
        http: Arc<twilight_http::Client>,
        timeout: Duration,
        metrics: RejoinMetrics,
    ) -> Self {
        Self {
            http,
            timeout,
            metrics,
        }
    }

    /// The member's role ids.
    pub async fn member(&self, guild: u64, user: u64) -> Fetch<Vec<u64>> {
        let (Some(g), Some(u)) = (Id::new_checked(guild), Id::new_checked(user)) else {
            return Fetch::NotFound;
        };
        self.call("member", self.http.guild_member(g, u))
            .await
            .map(|m| m.roles.iter().map(|r| r.get()).collect())
    }

    pub async fn channel(&self, channel: u64) -> Fetch<ChannelFacts> {
        let Some(c) = Id::new_checked(channel) else {
            return Fetch::NotFound;
        };
        self.call("channel", self.http.channel(c))
            .await
            .map(|c| ChannelFacts {
                guild_id: c.guild_id.map(|g| g.get()),
                kind: c.kind,
                user_limit: c.user_limit,
                overwrites: c.permission_overwrites.unwrap_or_default(),
            })
    }

    /// Owner and roles in one call (`GET guilds/{g}`).
    pub async fn guild(&self, guild: u64) -> Fetch<GuildFacts> {
        let Some(g) = Id::new_checked(guild) else {
            return Fetch::NotFound;
        };
        self.call("guild", self.http.guild(g))
            .await
            .map(|g| GuildFacts {
                owner_id: g.owner_id.get(),
                roles: g
                    .roles
                    .iter()
                    .map(|r| (r.id.get(), r.permissions))
                    .collect(),
            })
    }

    async fn call<T, R>(&self, route: &'static str, request: R) -> Fetch<T>
    where
        T: DeserializeOwned + Unpin + Send,
        R: IntoFuture<Output = Result<Response<T>, twilight_http::Error>>,
    {
        let attempt = async {
            match request.await {
                Ok(resp) => match resp.model().await {
                    Ok(m) => (Fetch::Found(m), "ok"),
                    Err(e) => {
                        tracing::warn!(route, error = %e, "Discord answered a body we cannot read");
                        (Fetch::Failed, "bad_body")
                    }
                },
                Err(e) => classify(route, &e),
            }
        };
        let (fetch, result) = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(route, timeout = ?self.timeout, "Discord call timed out (slow, or 429 after 429)");
                (Fetch::Failed, "timeout")
            }
        };
        self.metrics
            .discord_requests
            .get_or_create(&vec![("route", route), ("result", result)])
            .inc();
        fetch
    }
}

fn classify<T>(route: &'static str, e: &twilight_http::Error) -> (Fetch<T>, &'static str) {
    match e.kind() {
        ErrorType::Response { status, .. } if status.get() == 404 => (Fetch::NotFound, "not_found"),
        ErrorType::Response { status, .. } if status.get() == 403 => {
            tracing::warn!(route, "Discord refused the bot access (403)");
            (Fetch::Forbidden, "forbidden")
        }
        // The status is lost when the body is not JSON (an HTML error page
        // from a proxy, an empty 502): never a refusal, always a failure.
        ErrorType::Parsing { .. } => {
            tracing::warn!(route, "Discord answered with a body that is not JSON");
            (Fetch::Failed, "non_json")
        }
        _ => {
            tracing::warn!(route, error = %e, "Discord call failed");
            (Fetch::Failed, "error")
        }
    }
}

impl<T> Fetch<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fetch<U> {
        match self {
            Fetch::Found(t) => Fetch::Found(f(t)),
            Fetch::NotFound => Fetch::NotFound,
            Fetch::Forbidden => Fetch::Forbidden,
            Fetch::Failed => Fetch::Failed,
        }
    }
}
