//! `voicewatch standalone`: the gateway worker and one edge in one process
//! (one machine, one community). The bus is the in-process one unless
//! `VOICEWATCH_NATS_URL` is set.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;
use voicewatch_bus::{Bus, MemoryBus, MemoryBusConfig};
use voicewatch_protocol::Keyring;
use voicewatch_ws_edge::EdgeArgs;
use voicewatch_ws_edge::rejoin::RejoinEdgeConfig;

use crate::compose;

#[derive(Args)]
pub struct StandaloneCmd {
    #[command(flatten)]
    worker: voicewatch_gateway_worker::Args,
    #[command(flatten)]
    edge: EdgeArgs,
    #[command(flatten)]
    rejoin: RejoinEdgeConfig,
}

pub async fn run(cmd: StandaloneCmd) -> anyhow::Result<()> {
    let keyring = Arc::new(Keyring::parse(&cmd.worker.hmac_keys)?);
    let bus: Arc<dyn Bus> = if cmd.worker.nats.nats_url.is_empty() {
        tracing::info!("in-process bus (set VOICEWATCH_NATS_URL to use NATS)");
        Arc::new(MemoryBus::new(MemoryBusConfig::default()))
    } else {
        compose::connect_nats(cmd.worker.nats.clone()).await?
    };
    let edge = compose::edge_with_rejoin(
        cmd.edge,
        &cmd.rejoin,
        &cmd.worker.nats.subject_prefix,
        Arc::clone(&bus),
        keyring,
    )?
    .serve()
    .await?;

    let stop_worker = CancellationToken::new();
    let mut worker = tokio::spawn({
        let stop = stop_worker.clone().cancelled_owned();
        let args = cmd.worker;
        async move { voicewatch_gateway_worker::run(&args, bus, stop).await }
    });

    let result = tokio::select! {
        () = voicewatch_ws_edge::shutdown_signal() => {
            tracing::info!("shutdown signal: draining the edge, stopping the worker");
            stop_worker.cancel();
            edge.drain();
            edge.join().await;
            (&mut worker).await
        }
        r = &mut worker => {
            edge.drain();
            edge.join().await;
            r
        }
    };
    match result {
        Ok(r) => Ok(r?),
        Err(e) => anyhow::bail!("worker task failed: {e}"),
    }
}
