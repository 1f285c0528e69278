//! Every option of the edge: a clap flag and a `VOICEWATCH_…` variable each
//! (contract section 8 for the shared names). `ws-edge/README.md` lists them
//! with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Options of `voicewatch edge` (and of the edge inside `standalone`/`demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// HTTP/WebSocket listen address.
    #[arg(
        long = "listen",
        env = "VOICEWATCH_EDGE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// HS256 secret for client tokens.
    #[arg(long, env = "VOICEWATCH_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,

    /// PEM or JWKS file(s) with RS256/ES256/EdDSA public keys, comma-separated.
    #[arg(long, env = "VOICEWATCH_JWT_PUBLIC_KEYS", value_delimiter = ',')]
    pub jwt_public_keys: Vec<PathBuf>,

    /// Required `aud` of client tokens, when set.
    #[arg(long, env = "VOICEWATCH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` of client tokens, when set.
    #[arg(long, env = "VOICEWATCH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Leeway for exp/nbf/iat, seconds.
    #[arg(long, env = "VOICEWATCH_JWT_LEEWAY_SECS", default_value_t = 0)]
    pub jwt_leeway_secs: u64,

    /// Cap on the `guilds` claim.
    #[arg(long, env = "VOICEWATCH_EDGE_MAX_GUILDS", default_value_t = 100)]
    pub max_guilds: usize,

    /// Time a new connection has to send its auth frame (then 4002).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_AUTH_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub auth_timeout_ms: u64,

    /// Interval of the server heartbeat frame `{"v":1,"type":"ping"}`.
    #[arg(long, env = "VOICEWATCH_EDGE_HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,

    /// Interval of WebSocket ping control frames (dead-peer detection).
    #[arg(long, env = "VOICEWATCH_EDGE_WS_PING_MS", default_value_t = 30_000)]
    pub ws_ping_ms: u64,

    /// A peer silent (no frame, no pong) this long after a ping is dropped.
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_WS_PING_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub ws_ping_timeout_ms: u64,

    /// Outbound bytes queued for one connection before it is cut (4008).
    #[arg(long, env = "VOICEWATCH_EDGE_OUTBOUND_BUFFER_BYTES", default_value_t = 1 << 20)]
    pub outbound_buffer_bytes: usize,

    /// Largest inbound WebSocket message (and frame), bytes.
    #[arg(long, env = "VOICEWATCH_EDGE_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024)]
    pub max_message_bytes: usize,

    /// Read buffer of each WebSocket, bytes (small: it is per connection).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_WS_READ_BUFFER_BYTES",
        default_value_t = 512
    )]
    pub ws_read_buffer_bytes: usize,

    /// Sustained inbound frames per second per connection (then 4029).
    #[arg(long, env = "VOICEWATCH_EDGE_INBOUND_RATE", default_value_t = 5.0)]
    pub inbound_rate: f64,

    /// Inbound frame burst per connection above the sustained rate.
    #[arg(long, env = "VOICEWATCH_EDGE_INBOUND_BURST", default_value_t = 20.0)]
    pub inbound_burst: f64,

    /// WebSocket connections this edge holds at most (then 4029).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_MAX_CONNECTIONS",
        default_value_t = 100_000
    )]
    pub max_connections: usize,

    /// Authenticated connections per user (token `sub`) at most (then 4029).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_MAX_CONNECTIONS_PER_USER",
        default_value_t = 32
    )]
    pub max_connections_per_user: usize,

    /// WebSocket connections per client IP at most (then 4029).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 25_000
    )]
    pub max_connections_per_ip: usize,

    /// Allowed `Origin` headers, comma-separated; empty allows any origin.
    #[arg(long, env = "VOICEWATCH_EDGE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most events replayed to one resuming client (more: recovered false).
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_RESUME_MAX_EVENTS",
        default_value_t = 10_000
    )]
    pub resume_max_events: usize,

    /// How long auth waits for the bus (subscribe, replay, head).
    #[arg(long, env = "VOICEWATCH_EDGE_BUS_TIMEOUT_MS", default_value_t = 10_000)]
    pub bus_timeout_ms: u64,

    /// Tolerance between a live event's signature timestamp and our clock.
    #[arg(
        long,
        env = "VOICEWATCH_SIGNATURE_TOLERANCE_MS",
        default_value_t = 300_000
    )]
    pub signature_tolerance_ms: i64,

    /// Window over which a drain spreads its 1012 closes.
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_DRAIN_WINDOW_MS",
        default_value_t = 10_000
    )]
    pub drain_window_ms: u64,

    /// Deadline of a drain: connections still open then are dropped.
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_DRAIN_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub drain_timeout_ms: u64,

    /// Time allowed to write the error and close frames before dropping.
    #[arg(
        long,
        env = "VOICEWATCH_EDGE_CLOSE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub close_timeout_ms: u64,

    /// Largest body of `POST /api/internal/events` (then 413).
    #[arg(long, env = "VOICEWATCH_EDGE_INGEST_MAX_BYTES", default_value_t = 64 * 1024)]
    pub ingest_max_bytes: usize,

    /// TLS certificate chain (PEM); with --tls-key the edge serves wss://.
    #[arg(long, env = "VOICEWATCH_EDGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "VOICEWATCH_EDGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Parser)]
struct Only {
    #[command(flatten)]
    args: EdgeArgs,
}

impl EdgeArgs {
    /// The defaults with the environment applied, as `voicewatch edge`
    /// without flags would see them.
    pub fn from_env() -> Result<Self, clap::Error> {
        Only::try_parse_from(["edge"]).map(|o| o.args)
    }

    /// Pure defaults, ignoring the environment (tests, embedding).
    pub fn defaults() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_hs256_secret: None,
            jwt_public_keys: Vec::new(),
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway_secs: 0,
            max_guilds: 100,
            auth_timeout_ms: 10_000,
            heartbeat_ms: 25_000,
            ws_ping_ms: 30_000,
            ws_ping_timeout_ms: 30_000,
            outbound_buffer_bytes: 1 << 20,
            max_message_bytes: 16 * 1024,
            ws_read_buffer_bytes: 512,
            inbound_rate: 5.0,
            inbound_burst: 20.0,
            max_connections: 100_000,
            max_connections_per_user: 32,
            max_connections_per_ip: 25_000,
            allowed_origins: Vec::new(),
            resume_max_events: 10_000,
            bus_timeout_ms: 10_000,
            signature_tolerance_ms: 300_000,
            drain_window_ms: 10_000,
            drain_timeout_ms: 30_000,
            close_timeout_ms: 5_000,
            ingest_max_bytes: 64 * 1024,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_clap() {
        let parsed = Only::try_parse_from(["edge"]).unwrap().args;
        let d = EdgeArgs::defaults();
        // Only compare when the environment does not override anything.
        if std::env::vars().all(|(k, _)| !k.starts_with("VOICEWATCH_")) {
            assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
        }
    }
}
