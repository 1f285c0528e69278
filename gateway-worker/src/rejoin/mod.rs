//! The rejoin check (contract section 6), worker side: answers
//! [`RejoinQuery`]s that the edge sends over the bus's request/reply subject
//! ([`voicewatch_protocol::subject::rejoin_rpc_subject`]).
//!
//! The answer comes from what the worker knows, in this order:
//!
//! 1. the small outcome cache (same user, guild and channel within
//!    `--rejoin-cache-ttl-ms`);
//! 2. the gateway, where it is authoritative ([`GatewayView`]): voice
//!    occupancy always (Discord's REST API cannot list who is in a voice
//!    channel), channel and guild data when the view has them;
//! 3. Discord's REST API through twilight-http ([`discord`]): the member,
//!    the channel and the guild with its roles, each call cut off after
//!    `--rejoin-discord-timeout-ms` because twilight retries 429s forever.
//!
//! Permissions are computed with twilight-util's `PermissionCalculator`
//! (guild owner, ADMINISTRATOR, role and member overwrites). See
//! `docs/rejoin.md` for the outcome table and every limit.

pub mod discord;
pub mod occupancy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use twilight_model::channel::ChannelType;
use twilight_model::channel::permission_overwrite::PermissionOverwrite;
use twilight_model::guild::Permissions;
use twilight_model::id::Id;
use twilight_model::id::marker::{RoleMarker, UserMarker};
use twilight_util::permission_calculator::PermissionCalculator;
use voicewatch_bus::{Bus, BusError};
use voicewatch_protocol::{RejoinError, RejoinOutcome, RejoinQuery};

pub use discord::{DiscordRest, Fetch};
pub use occupancy::VoiceOccupancy;

/// Limits of the worker side of the rejoin check.
#[derive(Debug, Clone, clap::Args)]
pub struct RejoinConfig {
    /// Time allowed for one Discord REST call of a rejoin check, retries of
    /// 429 answers included (twilight retries those without limit).
    #[arg(
        long = "rejoin-discord-timeout-ms",
        env = "VOICEWATCH_REJOIN_DISCORD_TIMEOUT_MS",
        default_value_t = 1500
    )]
    pub discord_timeout_ms: u64,
    /// How long an answer for one (user, guild, channel) is reused.
    /// 0 turns the cache off. Discord failures are never cached.
    #[arg(
        long = "rejoin-cache-ttl-ms",
        env = "VOICEWATCH_REJOIN_CACHE_TTL_MS",
        default_value_t = 5000
    )]
    pub cache_ttl_ms: u64,
    /// Most answers kept in the cache.
    #[arg(
        long = "rejoin-cache-capacity",
        env = "VOICEWATCH_REJOIN_CACHE_CAPACITY",
        default_value_t = 10_000
    )]
    pub cache_capacity: usize,
    /// Checks worked on at once; a request beyond that is answered
    /// `discord_error` at once rather than queued behind Discord.
    #[arg(
        long = "rejoin-max-inflight",
        env = "VOICEWATCH_REJOIN_MAX_INFLIGHT",
        default_value_t = 64
    )]
    pub max_inflight: usize,
}

impl Default for RejoinConfig {
    fn default() -> Self {
        Self {
            discord_timeout_ms: 1500,
            cache_ttl_ms: 5000,
            cache_capacity: 10_000,
            max_inflight: 64,
        }
    }
}

/// A voice or stage channel as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFacts {
    /// `None` when Discord did not say (REST answers always do).
    pub guild_id: Option<u64>,
    pub kind: ChannelType,
    /// `None` or `Some(0)`: no limit.
    pub user_limit: Option<u32>,
    pub overwrites: Vec<PermissionOverwrite>,
}

/// The guild-level facts of the permission computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuildFacts {
    pub owner_id: u64,
    /// Every role of the guild with its permissions, @everyone (whose id is
    /// the guild's) included.
    pub roles: Vec<(u64, Permissions)>,
}

/// What the check needs from the gateway side of the worker. Only what the
/// gateway knows authoritatively may be answered; `None` sends the check to
/// Discord's REST API (or, for occupancy, skips the user-limit check).
pub trait GatewayView: Send + Sync + 'static {
    /// Users now in voice in `channel`, or `None` when the guild's voice
    /// states are unknown or may be stale (not yet received, outage).
    fn occupants(&self, guild: u64, channel: u64) -> Option<Vec<u64>>;

    /// The channel, when the gateway keeps channels up to date.
    fn channel(&self, _guild: u64, _channel: u64) -> Option<ChannelFacts> {
        None
    }

    /// Owner and roles, when the gateway keeps them up to date.
    fn guild(&self, _guild: u64) -> Option<GuildFacts> {
        None
    }
}

/// A view that knows nothing: every check goes to REST and user limits are
/// not enforced. For tools and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGateway;

impl GatewayView for NoGateway {
    fn occupants(&self, _guild: u64, _channel: u64) -> Option<Vec<u64>> {
        None
    }
}

/// Prometheus metrics of the worker side (`voicewatch_worker_rejoin_*` in
/// the worker's registry).
#[derive(Debug, Clone)]
pub struct RejoinMetrics {
    /// Answers by outcome (`ok` or the contract's error code).
    pub checks: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub cache_hits: Counter,
    /// Answers not stored because the cache was full of live entries.
    pub cache_full: Counter,
    /// Discord REST calls by route and result (`ok`, `not_found`,
    /// `forbidden`, `error`, `non_json`, `timeout`, `bad_body`).
    pub discord_requests: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Checks of a channel with a user limit whose occupancy was unknown.
    pub occupancy_unknown: Counter,
    /// Requests answered `discord_error` at once because
    /// `--rejoin-max-inflight` checks were running.
    pub busy: Counter,
    /// Requests whose payload was not a valid query.
    pub bad_requests: Counter,
    pub inflight: Gauge,
    pub check_seconds: Histogram,
}

impl Default for RejoinMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RejoinMetrics {
    pub fn new() -> Self {
        Self {
            checks: Family::default(),
            cache_hits: Counter::default(),
            cache_full: Counter::default(),
            discord_requests: Family::default(),
            occupancy_unknown: Counter::default(),
            busy: Counter::default(),
            bad_requests: Counter::default(),
            inflight: Gauge::default(),
            check_seconds: Histogram::new([
                0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
            ]),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rejoin");
        r.register(
            "checks",
            "Rejoin checks answered, by outcome",
            self.checks.clone(),
        );
        r.register(
            "cache_hits",
            "Rejoin checks answered from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "cache_full",
            "Rejoin answers not cached because the cache was full",
            self.cache_full.clone(),
        );
        r.register(
            "discord_requests",
            "Discord REST calls made for rejoin checks, by route and result",
            self.discord_requests.clone(),
        );
        r.register(
            "occupancy_unknown",
            "Checks of a limited channel whose occupancy the gateway did not know",
            self.occupancy_unknown.clone(),
        );
        r.register(
            "busy",
            "Rejoin requests refused because too many were in flight",
            self.busy.clone(),
        );
        r.register(
            "bad_requests",
            "Rejoin requests with an unreadable payload",
            self.bad_requests.clone(),
        );
        r.register(
            "inflight",
            "Rejoin checks in progress",
            self.inflight.clone(),
        );
        r.register(
            "check_seconds",
            "Time to answer a rejoin check",
            self.check_seconds.clone(),
        );
    }

    pub fn outcome_count(&self, outcome: &'static str) -> u64 {
        self.checks.get_or_create(&vec![("outcome", outcome)]).get()
    }

    pub fn discord_count(&self, route: &'static str, result: &'static str) -> u64 {
        self.discord_requests
            .get_or_create(&vec![("route", route), ("result", result)])
            .get()
    }
}

fn outcome_label(o: &RejoinOutcome) -> &'static str {
    match o {
        RejoinOutcome::Ok { .. } => "ok",
        RejoinOutcome::Refused { error, .. } => error.as_str(),
    }
}

type CacheKey = (u64, u64, u64);

/// Recent answers, bounded; expired entries are swept when it fills up.
struct OutcomeCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<CacheKey, (Instant, RejoinOutcome)>,
}

impl OutcomeCache {
    fn get(&self, key: &CacheKey, now: Instant) -> Option<RejoinOutcome> {
        match self.entries.get(key) {
            Some((at, o)) if now.duration_since(*at) < self.ttl => Some(o.clone()),
            _ => None,
        }
    }

    /// False when the cache is full of live entries.
    fn put(&mut self, key: CacheKey, outcome: RejoinOutcome, now: Instant) -> bool {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.duration_since(*at) < ttl);
            if self.entries.len() >= self.capacity {
                return false;
            }
        }
        self.entries.insert(key, (now, outcome));
        true
    }
}

/// Answers rejoin queries. Cheap to share (`Arc`).
pub struct RejoinChecker {
    rest: DiscordRest,
    view: Arc<dyn GatewayView>,
    cache: Mutex<OutcomeCache>,
    metrics: RejoinMetrics,
    cfg: RejoinConfig,
}

fn refused(error: RejoinError, message: impl Into<String>) -> RejoinOutcome {
    RejoinOutcome::Refused {
        error,
        message: message.into(),
    }
}

impl RejoinChecker {
    /// `http` is built by [`discord::build_client`] (or shared with the
    /// rest of the worker, if it was built the same way).
    pub fn new(
        http: Arc<twilight_http::Client>,
        view: Arc<dyn GatewayView>,
        cfg: RejoinConfig,
        metrics: RejoinMetrics,
    ) -> Self {
        Self {
            rest: DiscordRest::new(
                http,
                Duration::from_millis(cfg.discord_timeout_ms),
                metrics.clone(),
            ),
            view,
            cache: Mutex::new(OutcomeCache {
                ttl: Duration::from_millis(cfg.cache_ttl_ms),
                capacity: cfg.cache_capacity,
                entries: HashMap::new(),
            }),
            metrics,
            cfg,
        }
    }

    pub fn metrics(&self) -> &RejoinMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &RejoinConfig {
        &self.cfg
    }

    /// The answer for one query: from the cache, or worked out afresh.
    pub async fn check(&self, q: RejoinQuery) -> RejoinOutcome {
        let started = Instant::now();
        let key = (q.user_id.get(), q.guild_id.get(), q.channel_id.get());
        let cached = self.cache.lock().get(&key, started);
        let outcome = match cached {
            Some(o) => {
                self.metrics.cache_hits.inc();
                o
            }
            None => {
                let o = self.check_uncached(q).await;
                // A Discord failure is worth asking again at once; every other
                // answer is a fact about the guild for a few seconds.
                let cacheable = !matches!(
                    o,
                    RejoinOutcome::Refused {
                        error: RejoinError::DiscordError,
                        ..
                    }
                );
                if cacheable
                    && self.cfg.cache_ttl_ms > 0
                    && !self.cache.lock().put(key, o.clone(), Instant::now())
                {
                    self.metrics.cache_full.inc();
                }
                o
            }
        };
        self.metrics
            .checks
            .get_or_create(&vec![("outcome", outcome_label(&outcome))])
            .inc();
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn check_uncached(&self, q: RejoinQuery) -> RejoinOutcome {
        let (guild, user, channel) = (q.guild_id.get(), q.user_id.get(), q.channel_id.get());
        let cached_channel = self.view.channel(guild, channel);
        let cached_guild = self.view.guild(guild);
        // Independent calls run together; twilight still orders the two under
        // `guilds/{g}` one after the other.
        let (member, channel_facts, guild_facts) = tokio::join!(
            self.rest.member(guild, user),
            async {
                match cached_channel {
                    Some(c) => Fetch::Found(c),
                    None => self.rest.channel(channel).await,
                }
            },
            async {
                match cached_guild {
                    Some(g) => Fetch::Found(g),
                    None => self.rest.guild(guild).await,
                }
            },
        );

        let member_roles = match member {
            Fetch::Found(roles) => roles,
            Fetch::NotFound => return RejoinOutcome::refused(RejoinError::NotInGuild),
            Fetch::Forbidden | Fetch::Failed => {
                return RejoinOutcome::refused(RejoinError::DiscordError);
            }
        };
        let ch = match channel_facts {
            Fetch::Found(c) => c,
            Fetch::NotFound => return RejoinOutcome::refused(RejoinError::ChannelNotFound),
            // The bot may not see the channel: that says nothing about the
            // user, so it is a failure to answer, not a refusal.
            Fetch::Forbidden | Fetch::Failed => {
                return refused(
                    RejoinError::DiscordError,
                    "Discord did not tell us about that channel; try again",
                );
            }
        };
        if ch.guild_id.is_some_and(|g| g != guild) {
            return RejoinOutcome::refused(RejoinError::ChannelNotFound);
        }
        if !matches!(
            ch.kind,
            ChannelType::GuildVoice | ChannelType::GuildStageVoice
        ) {
            return refused(
                RejoinError::ChannelNotFound,
                "that channel is not a voice channel",
            );
        }
        let g = match guild_facts {
            Fetch::Found(g) => g,
            Fetch::NotFound | Fetch::Forbidden | Fetch::Failed => {
                return RejoinOutcome::refused(RejoinError::DiscordError);
            }
        };

        let perms = channel_permissions(guild, user, &member_roles, &g, &ch);
        if !perms.contains(Permissions::VIEW_CHANNEL | Permissions::CONNECT) {
            return RejoinOutcome::refused(RejoinError::MissingPermissions);
        }

        if let Some(limit) = ch.user_limit.filter(|l| *l > 0) {
            // Discord lets members who may move others into a full channel.
            if !perms.contains(Permissions::MOVE_MEMBERS) {
                match self.view.occupants(guild, channel) {
                    Some(users) => {
                        let others = users.iter().filter(|u| **u != user).count();
                        if others >= limit as usize {
                            return RejoinOutcome::refused(RejoinError::ChannelFull);
                        }
                    }
                    None => {
                        self.metrics.occupancy_unknown.inc();
                    }
                }
            }
        }
        RejoinOutcome::Ok {
            guild_id: q.guild_id,
            channel_id: q.channel_id,
        }
    }

    /// Serves the rejoin subject until the bus stops delivering requests.
    /// Each request is answered on its own task, at most
    /// `max_inflight` at once.
    pub async fn serve(self: Arc<Self>, bus: Arc<dyn Bus>, prefix: String) -> Result<(), BusError> {
        let subject = voicewatch_protocol::subject::rejoin_rpc_subject(&prefix);
        let mut requests = bus.serve(&subject).await?;
        let permits = Arc::new(Semaphore::new(self.cfg.max_inflight.max(1)));
        tracing::info!(%subject, "serving rejoin checks");
        while let Some(req) = requests.next().await {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.metrics.busy.inc();
                let o = refused(
                    RejoinError::DiscordError,
                    "too many rejoin checks at once; try again",
                );
                if let Err(e) = req.respond(Bytes::from(o.to_json())).await {
                    tracing::debug!(error = %e, "rejoin answer not delivered");
                }
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.metrics.inflight.inc();
                let answer = match serde_json::from_slice::<RejoinQuery>(&req.payload) {
                    Ok(q) => this.check(q).await,
                    Err(e) => {
                        this.metrics.bad_requests.inc();
                        tracing::warn!(error = %e, "unreadable rejoin query");
                        refused(RejoinError::DiscordError, "unreadable rejoin query")
                    }
                };
                this.metrics.inflight.dec();
                if let Err(e) = req.respond(Bytes::from(answer.to_json())).await {
                    tracing::debug!(error = %e, "rejoin answer not delivered");
                }
            });
        }
        Ok(())
    }
}

/// Starts answering rejoin checks for a running worker: a twilight client
/// from the worker's token and `VOICEWATCH_DISCORD_API_URL`, occupancy from
/// the shards. The task ends when the bus stops serving the subject; abort
/// it to stop earlier.
pub fn start(
    args: &crate::config::Args,
    bus: Arc<dyn Bus>,
    voice: Arc<VoiceOccupancy>,
    metrics: RejoinMetrics,
) -> Result<tokio::task::JoinHandle<()>, discord::ClientError> {
    let http = discord::build_client(
        &args.discord_token,
        args.discord_api_url.as_deref(),
        Duration::from_millis(args.rejoin.discord_timeout_ms),
    )?;
    let checker = Arc::new(RejoinChecker::new(
        Arc::new(http),
        voice,
        args.rejoin.clone(),
        metrics,
    ));
    let prefix = args.nats.subject_prefix.clone();
    Ok(tokio::spawn(async move {
        if let Err(e) = checker.serve(bus, prefix).await {
            tracing::error!(error = %e, "rejoin checks are not being served");
        }
    }))
}

/// The user's permissions in the channel. Roles the member lists but the
/// guild does not know are ignored (deleted a moment ago).
pub fn channel_permissions(
    guild: u64,
    user: u64,
    member_roles: &[u64],
    g: &GuildFacts,
    ch: &ChannelFacts,
) -> Permissions {
    let (Some(guild_id), Some(user_id)) =
        (Id::new_checked(guild), Id::<UserMarker>::new_checked(user))
    else {
        return Permissions::empty();
    };
    let everyone = g
        .roles
        .iter()
        .find(|(id, _)| *id == guild)
        .map(|(_, p)| *p)
        .unwrap_or_else(Permissions::empty);
    let roles: Vec<(Id<RoleMarker>, Permissions)> = member_roles
        .iter()
        .filter(|r| **r != guild)
        .filter_map(|r| {
            let p = g.roles.iter().find(|(id, _)| id == r)?.1;
            Some((Id::new_checked(*r)?, p))
        })
        .collect();
    let mut calc = PermissionCalculator::new(guild_id, user_id, everyone, &roles);
    if let Some(owner) = Id::new_checked(g.owner_id) {
        calc = calc.owner_id(owner);
    }
    calc.in_channel(ch.kind, &ch.overwrites)
}

#[cfg(test)]
mod tests;
