//! Command line of `voicewatch-load` and what the coordinator and its
//! workers say to each other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Our edge (`voicewatch edge`) behind a private nats-server (JetStream).
    Edge,
    /// nats-server's own WebSocket listener; clients speak NATS (CONNECT,
    /// SUB voice.v1.{guild}.*, PING/PONG): what a user might run instead.
    NatsWs,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Edge => "edge",
            Target::NatsWs => "nats-ws",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    Edge,
    NatsWs,
    /// nats-ws first, then edge; one report side by side.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dist {
    Even,
    Zipf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Connect N, hold, measure memory per connection; one probe event per
    /// guild at the end proves every connection is live.
    Idle,
    /// One big guild.
    Fanout,
    /// Many small guilds.
    Guilds,
    /// Clients disconnect and reconnect (resuming) while events flow.
    Churn,
    /// Kill (or drain with SIGTERM) one server with its clients while events
    /// flow; time until all are back and resumed, and loss.
    Storm,
    /// Several servers behind the harness's round-robin.
    Fleet,
    /// A few hundred connections for a few seconds (the suite's smoke test).
    Smoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EventPath {
    Bus,
    Full,
}

/// Which guild ids the clients use: the harness's own, or the simulator's
/// load guilds (full path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuildScheme {
    #[default]
    Harness,
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StormMode {
    /// SIGKILL: connections drop without a close frame.
    Kill,
    /// SIGTERM: the edge drains (close 1012) before exiting.
    Term,
}

/// `voicewatch-load SCENARIO [options]`. Every size has a scenario default;
/// options override it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "voicewatch-load",
    version,
    about = "Load harness for the voicewatch edge and nats-server's WebSocket listener"
)]
pub struct Cli {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// What to load.
    #[arg(
        long,
        value_enum,
        default_value = "both",
        env = "VOICEWATCH_LOAD_TARGET"
    )]
    pub target: Targets,
    /// Number of client connections.
    #[arg(short = 'n', long, env = "VOICEWATCH_LOAD_CLIENTS")]
    pub clients: Option<usize>,
    /// Number of guilds the clients are spread over.
    #[arg(short = 'g', long, env = "VOICEWATCH_LOAD_GUILDS")]
    pub guilds: Option<usize>,
    #[arg(long, value_enum, default_value = "even", env = "VOICEWATCH_LOAD_DIST")]
    pub dist: Dist,
    /// Zipf exponent for `--dist zipf`.
    #[arg(long, default_value_t = 1.0, env = "VOICEWATCH_LOAD_ZIPF_S")]
    pub zipf_s: f64,
    /// Events per second published during the event phase (over all guilds).
    #[arg(long, env = "VOICEWATCH_LOAD_RATE")]
    pub rate: Option<f64>,
    /// Length of the event phase, seconds.
    #[arg(long, env = "VOICEWATCH_LOAD_DURATION")]
    pub duration: Option<f64>,
    /// How long `idle` holds the connections before the probe, seconds.
    #[arg(long, default_value_t = 10.0, env = "VOICEWATCH_LOAD_HOLD")]
    pub hold: f64,
    /// Server processes (edges, or nats-server cluster nodes for nats-ws).
    /// Default: enough for ~18,000 connections each (`storm`: one more, so the
    /// victim's clients fit on the others).
    #[arg(long, env = "VOICEWATCH_LOAD_SERVERS")]
    pub servers: Option<usize>,
    /// Client worker processes. Default: enough for ~18,000 connections each.
    #[arg(long, env = "VOICEWATCH_LOAD_WORKERS")]
    pub workers: Option<usize>,
    /// Tokio threads per worker process.
    #[arg(long, default_value_t = 1, env = "VOICEWATCH_LOAD_WORKER_THREADS")]
    pub worker_threads: usize,
    /// Connections per process (workers and servers) when sizing defaults.
    #[arg(long, default_value_t = 18_000, env = "VOICEWATCH_LOAD_PER_PROCESS")]
    pub per_process: usize,
    /// Clients per loopback source address.
    #[arg(long, default_value_t = 5_000, env = "VOICEWATCH_LOAD_PER_ADDRESS")]
    pub per_address: usize,
    /// Handshakes in flight per worker.
    #[arg(
        long,
        default_value_t = 64,
        env = "VOICEWATCH_LOAD_CONNECT_CONCURRENCY"
    )]
    pub connect_concurrency: usize,
    /// Reconnects wait a uniform random 0..this many ms first (jitter).
    #[arg(
        long,
        default_value_t = 1000,
        env = "VOICEWATCH_LOAD_RECONNECT_JITTER_MS"
    )]
    pub reconnect_jitter_ms: u64,
    /// `churn`: disconnect/reconnect cycles per second over all clients.
    #[arg(long, env = "VOICEWATCH_LOAD_CHURN")]
    pub churn: Option<f64>,
    /// `storm`: how the victim server goes away.
    #[arg(
        long,
        value_enum,
        default_value = "kill",
        env = "VOICEWATCH_LOAD_STORM"
    )]
    pub storm: StormMode,
    /// The `voicewatch` binary for edges.
    #[arg(
        long,
        default_value = "target/release/voicewatch",
        env = "VOICEWATCH_LOAD_EDGE_BIN"
    )]
    pub edge_bin: PathBuf,
    /// Extra `KEY=VALUE` environment for every edge (repeatable).
    #[arg(
        long = "edge-env",
        env = "VOICEWATCH_LOAD_EDGE_ENV",
        value_delimiter = ';'
    )]
    pub edge_env: Vec<String>,
    /// nats-server binary (default: on PATH, else .venv/bin/nats-server).
    #[arg(long, env = "VOICEWATCH_LOAD_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
    /// HS256 secret the harness mints client tokens with (given to edges).
    #[arg(
        long,
        default_value = "load-test-jwt-secret",
        env = "VOICEWATCH_JWT_HS256_SECRET"
    )]
    pub jwt_secret: String,
    /// HMAC keys for signing events (given to edges).
    #[arg(
        long,
        default_value = "load=load-test-hmac-secret",
        env = "VOICEWATCH_HMAC_KEYS"
    )]
    pub hmac_keys: String,
    #[arg(long, default_value = "voice", env = "VOICEWATCH_SUBJECT_PREFIX")]
    pub subject_prefix: String,
    #[arg(long, default_value = "VOICE", env = "VOICEWATCH_STREAM")]
    pub stream: String,
    /// Write the JSON report here.
    #[arg(long, env = "VOICEWATCH_LOAD_JSON")]
    pub json: Option<PathBuf>,
    /// Keep the temporary directory with server configs and logs.
    #[arg(long, env = "VOICEWATCH_LOAD_KEEP_LOGS")]
    pub keep_logs: bool,
    /// After the last event, wait at most this long for deliveries still in
    /// flight (a saturated target keeps a backlog), seconds.
    #[arg(long, default_value_t = 30.0, env = "VOICEWATCH_LOAD_DRAIN_TIMEOUT")]
    pub drain_timeout: f64,
    /// With `--target both`, pause this long between the two targets. The
    /// machine needs it after a saturated run: the edge at 100k
    /// deliveries/s measured p99 78–119 ms started at once after nats-ws,
    /// 24 ms after a 20 s pause (and 30–37 ms alone).
    #[arg(long, default_value_t = 20.0, env = "VOICEWATCH_LOAD_SETTLE")]
    pub settle: f64,
    /// Give up connecting after this many seconds.
    #[arg(long, env = "VOICEWATCH_LOAD_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<f64>,
    /// Where events come from: the harness publishing signed events straight
    /// onto the bus, or the full path (simulator load mode → `voicewatch
    /// worker` → NATS → target), both started from `--edge-bin`.
    #[arg(long, value_enum, default_value = "bus", env = "VOICEWATCH_LOAD_PATH")]
    pub path: EventPath,
    /// Full path: simulated users (spread over the guilds).
    #[arg(long, env = "VOICEWATCH_LOAD_SIM_USERS")]
    pub sim_users: Option<u32>,
}

/// The sizes a run ends up with after scenario defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub clients: usize,
    pub guilds: usize,
    pub dist: Dist,
    pub rate: f64,
    pub duration_s: f64,
    pub hold_s: f64,
    pub servers: usize,
    pub workers: usize,
    pub churn_per_s: f64,
    pub storm: Option<StormMode>,
    pub path: EventPath,
}

impl Cli {
    pub fn plan(&self) -> Plan {
        use Scenario::*;
        let (n, g, rate, dur) = match self.scenario {
            Idle => (10_000, 100, 0.0, 0.0),
            Fanout => (10_000, 1, 50.0, 20.0),
            Guilds => (100_000, 10_000, 1_000.0, 20.0),
            Churn => (10_000, 1_000, 200.0, 20.0),
            Storm => (50_000, 5_000, 100.0, 30.0),
            Fleet => (20_000, 2_000, 1_000.0, 20.0),
            Smoke => (300, 10, 20.0, 3.0),
        };
        let clients = self.clients.unwrap_or(n).max(1);
        let per = self.per_process.max(1);
        let need = clients.div_ceil(per);
        let servers = self
            .servers
            .unwrap_or(match self.scenario {
                Fleet => need.max(2),
                // The victim's clients move to the others, which must still
                // fit: one spare server.
                Storm => need + 1,
                _ => need,
            })
            .max(1);
        Plan {
            scenario: self.scenario,
            clients,
            guilds: self.guilds.unwrap_or(g).max(1),
            dist: self.dist,
            rate: self.rate.unwrap_or(rate),
            duration_s: self.duration.unwrap_or(dur),
            hold_s: if self.scenario == Idle {
                self.hold
            } else {
                0.0
            },
            servers,
            workers: self.workers.unwrap_or(need).max(1),
            churn_per_s: self
                .churn
                .unwrap_or(if self.scenario == Churn { 500.0 } else { 0.0 }),
            storm: (self.scenario == Storm).then_some(self.storm),
            path: self.path,
        }
    }
}

/// What a worker process is told, as the first line on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub worker: usize,
    pub target: Target,
    pub endpoints: Vec<SocketAddr>,
    /// Client indices `first..first + count`.
    pub first: usize,
    pub count: usize,
    pub total: usize,
    pub guilds: usize,
    pub dist: Dist,
    pub zipf_s: f64,
    pub per_address: usize,
    pub jwt_secret: String,
    pub subject_prefix: String,
    pub connect_concurrency: usize,
    pub reconnect_jitter_ms: u64,
    pub threads: usize,
    #[serde(default)]
    pub guild_scheme: GuildScheme,
}

/// Coordinator → worker, one a line after the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Disconnect (close 1000) and reconnect this many of the worker's
    /// clients per second, chosen at random.
    Churn { per_sec: f64 },
    /// Close everything, send the final report, exit.
    Stop,
}

/// Worker → coordinator, one a line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub worker: usize,
    /// Clients currently authenticated (edge: acked; nats-ws: PONG after SUB).
    pub connected: u64,
    /// Clients that have been authenticated at least once.
    pub ever: u64,
    /// Unique events received (duplicates not counted).
    pub received: u64,
    pub duplicates: u64,
    /// Of those, delivered live (after the session's ack) rather than in a
    /// resume's replay.
    #[serde(default)]
    pub duplicates_live: u64,
    /// Successful re-authentications after a disconnect.
    pub reconnects: u64,
    /// Sessions that ended (any reason).
    pub disconnects: u64,
    /// Connect/handshake attempts that failed.
    pub failures: u64,
    /// Resumes the edge acked with `recovered:false`.
    pub not_recovered: u64,
    /// Frames that did not parse.
    pub bad_frames: u64,
    /// CLOCK_MONOTONIC ns of the latest re-authentication.
    pub last_auth_ns: u64,
    /// Longest session end → re-authentication of one client, ns.
    #[serde(default)]
    pub max_gap_ns: u64,
    pub kicks: u64,
    /// Only in the final line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Final>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    /// Close codes (or `eof`/`error`) that ended sessions, with counts.
    pub closes: BTreeMap<String, u64>,
    /// First words of connect errors and server error frames, with counts.
    pub errors: BTreeMap<String, u64>,
    /// hdrhistogram V2, hex: latency in µs of live events.
    pub live_hist: String,
    /// Same for events replayed on resume (received before the ack).
    pub replay_hist: String,
}
