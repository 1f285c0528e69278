//! `voicewatch-load`: the load harness (see BENCHMARKS.md).

use std::process::ExitCode;

use clap::Parser;
use voicewatch_tests::load::{config::Cli, coordinator, worker};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The coordinator re-executes this binary as `voicewatch-load worker`.
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return match worker::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(coordinator::main(cli)) {
        Ok(report) if report.results.iter().all(|r| r.ok) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("voicewatch-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
