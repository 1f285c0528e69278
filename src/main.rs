//! The `voicewatch` binary: a thin CLI that composes the crates.
//!
//! Every option is a flag and an environment variable (`voicewatch <cmd>
//! --help` lists them with their defaults); the names shared by every
//! binary are those of the protocol's section 8.

use clap::{Parser, Subcommand, ValueEnum};

// An edge holds tens of thousands of small long-lived per-connection
// allocations interleaved with short-lived handshake buffers; glibc's malloc
// fragments under that pattern (measured at 19,500 connections: 5.6 KiB RSS
// a connection for a 4.9 KiB live heap), jemalloc's size classes do not
// (4.9 for 4.9). See ws-edge/README.md, "Memory".
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod compose;
mod demo;
mod edge_cmd;
mod killable;
mod standalone;

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
    Edge(Box<edge_cmd::EdgeCmd>),
    /// Worker and edge in one process on the in-process bus (one machine).
    Standalone(Box<standalone::StandaloneCmd>),
    /// The demo: simulator, worker, edge and demo page in one process.
    Demo(demo::DemoCmd),
    /// Discord gateway and REST simulator (for tests, demos and load).
    Simulate(voicewatch_tests::sim::cli::SimulateArgs),
}

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

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with causes) rather than a backtrace.
            eprintln!("voicewatch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(&cli.log, cli.log_format)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Worker(args) => {
                let bus = compose::connect_nats(args.nats.clone()).await?;
                voicewatch_gateway_worker::run(&args, bus, voicewatch_ws_edge::shutdown_signal())
                    .await?;
                Ok(())
            }
            Command::Simulate(args) => {
                voicewatch_tests::sim::cli::run(args, voicewatch_ws_edge::shutdown_signal())
                    .await?;
                Ok(())
            }
            Command::Edge(cmd) => edge_cmd::run(*cmd).await,
            Command::Demo(cmd) => demo::run(cmd).await,
            Command::Standalone(cmd) => standalone::run(*cmd).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand's flags are unique and well-formed (clap checks
    /// this only when a subcommand is used, so check them all here).
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
