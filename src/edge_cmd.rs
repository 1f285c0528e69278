//! `voicewatch edge`: one WebSocket edge on NATS.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use voicewatch_bus::NatsArgs;
use voicewatch_ws_edge::EdgeArgs;
use voicewatch_ws_edge::rejoin::RejoinEdgeConfig;

use crate::compose::{self, KeyArgs};

#[derive(Args)]
pub struct EdgeCmd {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    edge: EdgeArgs,
    #[command(flatten)]
    rejoin: RejoinEdgeConfig,
}

pub async fn run(cmd: EdgeCmd) -> anyhow::Result<()> {
    let keyring = Arc::new(cmd.keys.keyring()?);
    let bus = compose::connect_nats(cmd.nats.clone())
        .await
        .context("edge needs NATS")?;
    let edge = compose::edge_with_rejoin(
        cmd.edge,
        &cmd.rejoin,
        &cmd.nats.subject_prefix,
        bus,
        keyring,
    )?;
    let handle = edge.serve().await?;
    voicewatch_ws_edge::shutdown_signal().await;
    tracing::info!("shutdown signal: draining");
    handle.drain();
    handle.join().await;
    Ok(())
}
