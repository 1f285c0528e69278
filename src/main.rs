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
    Worker(Box<voicewatch_gateway_worker::Args>),
    /// WebSocket edge: events from NATS → authenticated browsers.
    Edge(Placeholder),
    /// Worker and edge in one process on the in-process bus (one machine).
    Standalone(Placeholder),
    /// The demo: simulator, worker, edge and demo page in one process.
    Demo(Placeholder),
    /// Discord gateway and REST simulator (for tests, demos and load).
    Simulate(voicewatch_tests::sim::cli::SimulateArgs),
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

/// Ctrl-C or SIGTERM (rolling restarts): stop gracefully.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_format)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Worker(args) => {
                if args.nats.nats_url.is_empty() {
                    anyhow::bail!("voicewatch worker needs VOICEWATCH_NATS_URL");
                }
                let bus = voicewatch_bus::NatsBus::connect(args.nats.clone()).await?;
                voicewatch_gateway_worker::run(&args, std::sync::Arc::new(bus), shutdown_signal())
                    .await?;
                Ok(())
            }
            Command::Simulate(args) => {
                voicewatch_tests::sim::cli::run(args, shutdown_signal()).await?;
                Ok(())
            }
            Command::Edge(_) | Command::Standalone(_) | Command::Demo(_) => {
                anyhow::bail!("this subcommand is not built yet")
            }
        }
    })
}
