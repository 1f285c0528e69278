//! Command-line and environment configuration (`voicewatch worker`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `voicewatch worker`. Shared names follow section 8 of the
/// wire contract; the rest are this worker's own.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Discord bot token.
    #[arg(long, env = "VOICEWATCH_DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: String,

    /// Shards this worker runs (all of them, 0..N-1); default: Discord's
    /// recommendation from `GET /gateway/bot`.
    #[arg(long, env = "VOICEWATCH_SHARDS")]
    pub shards: Option<u32>,

    /// Gateway URL override (the simulator), e.g. `ws://127.0.0.1:8090`.
    #[arg(long, env = "VOICEWATCH_DISCORD_GATEWAY_URL")]
    pub discord_gateway_url: Option<String>,

    /// REST base URL override (the simulator), e.g. `http://127.0.0.1:8090`.
    #[arg(long, env = "VOICEWATCH_DISCORD_API_URL")]
    pub discord_api_url: Option<String>,

    /// `kid=secret[,kid=secret…]`; the first key signs.
    #[arg(long, env = "VOICEWATCH_HMAC_KEYS", hide_env_values = true)]
    pub hmac_keys: String,

    /// NATS options (section 8 names, plus the bus crate's own).
    #[command(flatten)]
    pub nats: voicewatch_bus::NatsArgs,

    /// Health and metrics address.
    #[arg(
        id = "worker_listen",
        long = "worker-listen",
        env = "VOICEWATCH_WORKER_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub listen: SocketAddr,

    /// Directory for shard sessions and voice maps (file state store).
    #[arg(
        long,
        env = "VOICEWATCH_WORKER_STATE_DIR",
        default_value = "./voicewatch-worker-state"
    )]
    pub state_dir: PathBuf,

    /// How often a shard's session and voice map are saved (milliseconds).
    /// A crash loses at most this much state; RESUME replays it and the
    /// deterministic event ids make the re-published events duplicates that
    /// JetStream drops.
    #[arg(
        long,
        env = "VOICEWATCH_WORKER_SAVE_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub save_interval_ms: u64,

    /// Minimum spacing of IDENTIFYs per concurrency bucket (milliseconds).
    /// Discord's is 5000; tests against the simulator use less.
    #[arg(
        long,
        env = "VOICEWATCH_WORKER_IDENTIFY_INTERVAL_MS",
        default_value_t = 5000
    )]
    pub identify_interval_ms: u64,

    /// Bound on waiting for one bus acknowledgement before the event goes to
    /// the outbox instead (milliseconds).
    #[arg(
        long,
        env = "VOICEWATCH_WORKER_PUBLISH_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub publish_timeout_ms: u64,

    /// Identify concurrency (`max_concurrency`); default: Discord's answer,
    /// or 1 when the shard count is configured and Discord cannot be asked.
    #[arg(long, env = "VOICEWATCH_WORKER_IDENTIFY_CONCURRENCY")]
    pub identify_concurrency: Option<u16>,

    /// Limits of the rejoin check (`docs/rejoin.md`).
    #[command(flatten)]
    pub rejoin: crate::rejoin::RejoinConfig,
}

impl Args {
    pub fn save_interval(&self) -> Duration {
        Duration::from_millis(self.save_interval_ms.max(10))
    }

    pub fn identify_interval(&self) -> Duration {
        Duration::from_millis(self.identify_interval_ms)
    }

    /// Arguments for tests and embedding: everything at its default.
    pub fn for_simulator(
        token: &str,
        gateway_url: &str,
        api_url: &str,
        hmac_keys: &str,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            discord_token: token.to_owned(),
            shards: None,
            discord_gateway_url: Some(gateway_url.to_owned()),
            discord_api_url: Some(api_url.to_owned()),
            hmac_keys: hmac_keys.to_owned(),
            nats: voicewatch_bus::NatsArgs::new(Vec::<String>::new()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir,
            save_interval_ms: 1000,
            identify_interval_ms: 5000,
            identify_concurrency: None,
            publish_timeout_ms: 2000,
            rejoin: crate::rejoin::RejoinConfig::default(),
        }
    }
}
