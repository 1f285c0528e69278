//! Pieces every subcommand composes: keys, the bus, an edge with the
//! rejoin route.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use voicewatch_bus::{Bus, NatsArgs, NatsBus};
use voicewatch_protocol::Keyring;
use voicewatch_ws_edge::rejoin::{RejoinEdgeConfig, RejoinEdgeMetrics, RejoinRoute};
use voicewatch_ws_edge::{Edge, EdgeArgs};

/// The HMAC keys that sign (worker) and verify (edge) events.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// HMAC keys, `kid=secret[,kid=secret…]`: the first one signs, all
    /// verify. Required (the demo generates one).
    #[arg(long, env = "VOICEWATCH_HMAC_KEYS", hide_env_values = true)]
    pub hmac_keys: Option<String>,
}

impl KeyArgs {
    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        let Some(spec) = &self.hmac_keys else {
            bail!(
                "no HMAC keys: set VOICEWATCH_HMAC_KEYS (or --hmac-keys) to kid=secret[,kid=secret…]"
            );
        };
        Keyring::parse(spec).context("VOICEWATCH_HMAC_KEYS")
    }
}

/// Connects to NATS and makes sure the stream exists (worker and edge both
/// do, so either may start first).
pub async fn connect_nats(args: NatsArgs) -> anyhow::Result<Arc<dyn Bus>> {
    if args.nats_url.is_empty() {
        bail!(
            "no NATS server: set VOICEWATCH_NATS_URL (or --nats-url); `voicewatch standalone` runs without one"
        );
    }
    let bus = NatsBus::connect(args).await.context("connecting to NATS")?;
    Ok(Arc::new(bus))
}

/// An edge with `POST /api/voice/rejoin` mounted, not listening yet.
pub fn edge_with_rejoin(
    args: EdgeArgs,
    rejoin: &RejoinEdgeConfig,
    prefix: &str,
    bus: Arc<dyn Bus>,
    keyring: Arc<Keyring>,
) -> anyhow::Result<Edge> {
    let edge = Edge::new(args, bus, keyring).context("configuring the edge")?;
    let metrics = RejoinEdgeMetrics::default();
    edge.metrics().register_extra(|r| metrics.register(r));
    let route = RejoinRoute::new(edge.bus(), prefix, edge.verify_token_fn(), rejoin, metrics);
    Ok(edge.merge(route.router()))
}
