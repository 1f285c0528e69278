//! `voicewatch simulate`: run the simulator as a process (demo, load runs).

use std::net::SocketAddr;
use std::time::Duration;

use super::load::{self, LoadConfig};
use super::{SimConfig, SimError, Simulator};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address of the gateway, REST and control server.
    #[arg(long, env = "VOICEWATCH_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Bot token clients must present.
    #[arg(long, env = "VOICEWATCH_DISCORD_TOKEN", default_value = "sim-token")]
    pub token: String,
    /// Shard count recommended by `GET /api/v10/gateway/bot`.
    #[arg(long, env = "VOICEWATCH_SIM_SHARDS", default_value_t = 1)]
    pub shards: u32,
    /// Identify concurrency (`max_concurrency`) announced to clients.
    #[arg(long, env = "VOICEWATCH_SIM_MAX_CONCURRENCY", default_value_t = 1)]
    pub max_concurrency: u16,
    /// HELLO heartbeat interval in milliseconds.
    #[arg(long, env = "VOICEWATCH_SIM_HEARTBEAT_MS", default_value_t = 41_250)]
    pub heartbeat_ms: u64,
    /// Demo guilds created at start: 2000 is `rest::demo_guild` (voice
    /// channels 4000 open, 4001 locked, 4002 full), then 2001.. with voice
    /// channels 4011.., 4021.., ….
    #[arg(long, env = "VOICEWATCH_SIM_GUILDS", default_value_t = 1)]
    pub guilds: u32,
    /// Load mode: create this many load guilds (0: none).
    #[arg(long, env = "VOICEWATCH_SIM_LOAD_GUILDS", default_value_t = 0)]
    pub load_guilds: u32,
    /// Load mode: users spread over the load guilds.
    #[arg(long, env = "VOICEWATCH_SIM_LOAD_USERS", default_value_t = 50_000)]
    pub load_users: u32,
    /// Load mode: voice changes per second.
    #[arg(long, env = "VOICEWATCH_SIM_LOAD_RATE", default_value_t = 2_000)]
    pub load_rate: u32,
    /// Load mode: seconds of changes.
    #[arg(long, env = "VOICEWATCH_SIM_LOAD_SECS", default_value_t = 60.0)]
    pub load_secs: f64,
    /// Load mode: start the changes once this many connections are active
    /// (0: only on `POST /control/load`).
    #[arg(long, env = "VOICEWATCH_SIM_LOAD_AFTER_ACTIVE", default_value_t = 0)]
    pub load_after_active: u64,
}

pub async fn run(
    args: SimulateArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SimError> {
    let sim = Simulator::bind(
        args.listen,
        SimConfig {
            token: args.token.clone(),
            recommended_shards: args.shards.max(1),
            max_concurrency: args.max_concurrency.max(1),
            heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(100)),
            ..SimConfig::default()
        },
    )
    .await?;
    for i in 0..u64::from(args.guilds) {
        if i == 0 {
            // The demo's guild: open, locked and full voice channels.
            sim.add_guild(super::rest::demo_guild());
        } else {
            sim.add_simple_guild(2000 + i, 4000 + i * 10, 3);
        }
    }
    let cfg = LoadConfig {
        guilds: args.load_guilds,
        users: args.load_users,
        rate: args.load_rate,
        duration_secs: args.load_secs,
        ..LoadConfig::default()
    };
    if args.load_guilds > 0 {
        load::populate(&sim, &cfg);
    }
    tracing::info!(gateway = %sim.gateway_url(), api = %sim.api_url(), "simulator listening");
    if args.load_guilds > 0 && args.load_after_active > 0 {
        let sim2 = sim.clone();
        tokio::spawn(async move {
            if sim2
                .wait_active(args.load_after_active, Duration::from_secs(3600))
                .await
                .is_ok()
            {
                let report = load::run(&sim2, &cfg).await;
                tracing::info!(?report, "load run finished");
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
        });
    }
    shutdown.await;
    sim.shutdown();
    Ok(())
}
