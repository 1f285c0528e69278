//! What every part of one edge shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use voicewatch_bus::Bus;
use voicewatch_protocol::Keyring;

use crate::auth::JwtVerifier;
use crate::config::EdgeArgs;
use crate::hub::{Hub, Verifier};
use crate::listener::{Limits, Registry};
use crate::metrics::Metrics;

pub(crate) struct EdgeState {
    pub args: EdgeArgs,
    pub jwt: Arc<JwtVerifier>,
    pub bus: Arc<dyn Bus>,
    pub keyring: Arc<Keyring>,
    pub verifier: Arc<Verifier>,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub registry: Registry,
    /// Set when a drain starts: stop accepting, `/readyz` false.
    pub draining: CancellationToken,
    /// Set at the drain deadline: every connection drops at once.
    pub hard_stop: CancellationToken,
    next_id: AtomicU64,
}

impl EdgeState {
    pub fn new(
        args: EdgeArgs,
        jwt: Arc<JwtVerifier>,
        bus: Arc<dyn Bus>,
        keyring: Arc<Keyring>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let verifier = Arc::new(Verifier {
            keyring: Arc::clone(&keyring),
            tolerance_ms: args.signature_tolerance_ms,
            metrics: Arc::clone(&metrics),
        });
        Self {
            limits: Limits::new(&args),
            hub: Hub::new(Arc::clone(&bus), Arc::clone(&verifier)),
            registry: Registry::default(),
            args,
            jwt,
            bus,
            keyring,
            verifier,
            metrics,
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.args.close_timeout_ms)
    }

    /// Silence after which a peer is considered dead.
    pub fn dead_after(&self) -> Duration {
        Duration::from_millis(
            self.args
                .ws_ping_ms
                .saturating_add(self.args.ws_ping_timeout_ms),
        )
    }

    /// Drops every connection at once (the drain's deadline, or the edge
    /// itself dropped): no close handshakes.
    pub fn stop_all(&self) {
        self.hard_stop.cancel();
        for c in self.registry.snapshot() {
            c.stop_now();
        }
    }

    pub fn ready(&self) -> bool {
        !self.draining.is_cancelled() && self.bus.is_connected()
    }
}
