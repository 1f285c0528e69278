//! The `voicewatch` binary: a thin CLI that composes the crates.
//!
//! Every option is a flag and an environment variable (`voicewatch <cmd>
//! --help` lists them with their defaults); the names shared by every
//! binary are those of the protocol's section 8.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "voicewatch",
    version,
    about = "Real-time Discord voice-channel dropout detection, pushed to browsers",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "VOICEWATCH_LOG", default_value = "info", global = true)]
    log: String,
    /// Log format.
    #[arg(long, env = "VOICEWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway worker: Discord shards → signed voice events on NATS.
    Worker(Placeholder),
    /// WebSocket edge: events from NATS → authenticated browsers.
    Edge(Box<EdgeCmd>),
    /// Worker and edge in one process on the in-process bus (one machine).
    Standalone(Placeholder),
    /// The demo: simulator, worker, edge and demo page in one process.
    Demo(Placeholder),
    /// Discord gateway and REST simulator (for tests, demos and load).
    Simulate(Placeholder),
}

/// Options of `voicewatch edge`.
#[derive(Args)]
struct EdgeCmd {
    #[command(flatten)]
    edge: voicewatch_ws_edge::EdgeArgs,
    /// NATS server URL(s), comma-separated (required: the edge runs on NATS).
    #[arg(long, env = "VOICEWATCH_NATS_URL")]
    nats_url: Option<String>,
    /// HMAC keys `kid=secret[,kid=secret…]`; the first one signs, all verify.
    #[arg(long, env = "VOICEWATCH_HMAC_KEYS", hide_env_values = true)]
    hmac_keys: Option<String>,
}

async fn run_edge(cmd: EdgeCmd) -> anyhow::Result<()> {
    let Some(_nats_url) = cmd.nats_url else {
        anyhow::bail!(
            "`edge` needs VOICEWATCH_NATS_URL (standalone and demo use the in-process bus)"
        );
    };
    let Some(keys) = cmd.hmac_keys else {
        anyhow::bail!("`edge` needs VOICEWATCH_HMAC_KEYS");
    };
    let _keyring = std::sync::Arc::new(voicewatch_protocol::Keyring::parse(&keys)?);
    // The NATS JetStream bus is not in `voicewatch-bus` yet; once it is,
    // connect it here and hand it to `serve_edge`.
    anyhow::bail!("the NATS bus is not built yet")
}

/// Runs an edge until SIGTERM/Ctrl-C, then drains it (shared by `edge`,
/// `standalone` and `demo`).
#[allow(dead_code)]
async fn serve_edge(edge: voicewatch_ws_edge::Edge) -> anyhow::Result<()> {
    let handle = edge.serve().await?;
    voicewatch_ws_edge::shutdown_signal().await;
    tracing::info!("SIGTERM: draining");
    handle.drain();
    handle.join().await;
    Ok(())
}

/// Options of a subcommand that is still being built.
#[derive(Args)]
struct Placeholder {}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_format)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Edge(cmd) => run_edge(*cmd).await,
            Command::Worker(_)
            | Command::Standalone(_)
            | Command::Demo(_)
            | Command::Simulate(_) => anyhow::bail!("this subcommand is not built yet"),
        }
    })
}
