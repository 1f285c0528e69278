//! voicewatch-ws-edge: the browser-facing WebSocket edge (`voicewatch edge`).
//!
//! Stateless: any number of edges run behind a plain load balancer, each
//! subscribed on the bus to the guilds its clients want. Data flows one way:
//! bus delivery → [`hub`] (verify once, encode once) → each connection's
//! bounded queue ([`outbound`]) → its socket ([`connection`]). The
//! [`listener`] accepts, enforces connection limits and drains.
//!
//! ```no_run
//! # async fn f(bus: std::sync::Arc<dyn voicewatch_bus::Bus>, keys: std::sync::Arc<voicewatch_protocol::Keyring>) -> Result<(), voicewatch_ws_edge::EdgeError> {
//! let args = voicewatch_ws_edge::EdgeArgs::from_env().expect("args");
//! let edge = voicewatch_ws_edge::Edge::start(args, bus, keys).await?;
//! edge.drain();
//! edge.join().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod connection;
pub mod frames;
pub mod hub;
mod ingest;
mod listener;
pub mod metrics;
pub mod outbound;
pub mod rejoin;
mod state;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use voicewatch_bus::Bus;
use voicewatch_protocol::Keyring;

pub use auth::{AuthConfigError, AuthError, JwtVerifier};
pub use config::EdgeArgs;
pub use metrics::Metrics;

use state::EdgeState;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// An edge that is configured but not listening yet: callers that add
/// routes (the demo, the rejoin endpoint) take the token verifier and the
/// bus from here, [`Edge::merge`] their router, then [`Edge::serve`].
pub struct Edge {
    state: Arc<EdgeState>,
    extra: Router,
}

impl Edge {
    pub fn new(
        args: EdgeArgs,
        bus: Arc<dyn Bus>,
        keyring: Arc<Keyring>,
    ) -> Result<Self, EdgeError> {
        let jwt = Arc::new(JwtVerifier::from_args(&args)?);
        Ok(Self {
            state: Arc::new(EdgeState::new(args, jwt, bus, keyring)),
            extra: Router::new(),
        })
    }

    /// Configures, binds and starts serving.
    pub async fn start(
        args: EdgeArgs,
        bus: Arc<dyn Bus>,
        keyring: Arc<Keyring>,
    ) -> Result<EdgeHandle, EdgeError> {
        Self::new(args, bus, keyring)?.serve().await
    }

    /// The client-token verifier (for `Authorization: Bearer` routes).
    pub fn jwt(&self) -> Arc<JwtVerifier> {
        Arc::clone(&self.state.jwt)
    }

    pub fn bus(&self) -> Arc<dyn Bus> {
        Arc::clone(&self.state.bus)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// A token check in the shape `rejoin::RejoinRoute` takes.
    pub fn verify_token_fn(&self) -> rejoin::VerifyToken {
        let jwt = self.jwt();
        Arc::new(move |token: &str| jwt.verify_now(token).ok())
    }

    pub fn args(&self) -> &EdgeArgs {
        &self.state.args
    }

    /// Adds routes served beside the edge's own.
    pub fn merge(mut self, routes: Router) -> Self {
        self.extra = self.extra.merge(routes);
        self
    }

    /// The complete router (edge routes and merged ones).
    pub fn router(&self) -> Router {
        let st = &self.state;
        let ingest = post(ingest::ingest)
            .layer(DefaultBodyLimit::max(st.args.ingest_max_bytes))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(st),
                ingest::count_413,
            ));
        Router::new()
            .route("/api/ws", get(listener::ws_handler))
            .route("/api/internal/events", ingest)
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(Arc::clone(st))
            .merge(self.extra.clone())
    }

    /// Binds the listen address and starts accepting.
    pub async fn serve(self) -> Result<EdgeHandle, EdgeError> {
        let args = &self.state.args;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
            _ => None,
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|source| EdgeError::Bind {
                addr: args.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| EdgeError::Bind {
            addr: args.listen,
            source,
        })?;
        let router = self.router();
        let accept = tokio::spawn(listener::accept_loop(
            Arc::clone(&self.state),
            listener,
            router,
            tls.clone(),
        ));
        tracing::info!(%addr, tls = tls.is_some(), "edge listening");
        Ok(EdgeHandle {
            addr,
            tls: tls.is_some(),
            state: self.state,
            accept: Mutex::new(Some(accept)),
            drain: Mutex::new(None),
        })
    }
}

/// A running edge.
pub struct EdgeHandle {
    addr: SocketAddr,
    tls: bool,
    state: Arc<EdgeState>,
    accept: Mutex<Option<JoinHandle<()>>>,
    drain: Mutex<Option<JoinHandle<()>>>,
}

impl EdgeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://…/api/ws` (or `wss://` with TLS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/api/ws", self.addr)
    }

    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    pub fn jwt(&self) -> Arc<JwtVerifier> {
        Arc::clone(&self.state.jwt)
    }

    pub fn bus(&self) -> Arc<dyn Bus> {
        Arc::clone(&self.state.bus)
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.state.registry.len()
    }

    /// Guilds subscribed on the bus right now.
    pub fn subscribed_guilds(&self) -> usize {
        self.state.hub.subscribed_guilds()
    }

    pub fn is_draining(&self) -> bool {
        self.state.draining.is_cancelled()
    }

    /// Starts the graceful drain (idempotent): stop accepting, `/readyz`
    /// false, every client closed with 1012 over the drain window.
    pub fn drain(&self) {
        let mut d = self.drain.lock();
        if d.is_some() {
            return;
        }
        self.state.draining.cancel();
        self.state.metrics.draining.set(1);
        *d = Some(tokio::spawn(listener::drain(Arc::clone(&self.state))));
    }

    /// Resolves once a drain has finished (every connection closed, or the
    /// deadline passed) and the listener is closed.
    pub async fn join(&self) {
        self.state.draining.cancelled().await;
        let accept = self.accept.lock().take();
        if let Some(a) = accept {
            let _ = a.await;
        }
        let drain = self.drain.lock().take();
        if let Some(d) = drain {
            let _ = d.await;
        }
    }
}

impl Drop for EdgeHandle {
    fn drop(&mut self) {
        // A dropped handle stops everything (tests): no task outlives it.
        self.state.draining.cancel();
        self.state.stop_all();
    }
}

async fn readyz(State(st): State<Arc<EdgeState>>) -> impl IntoResponse {
    if st.ready() {
        (StatusCode::OK, "ready")
    } else if st.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "bus disconnected")
    }
}

async fn metrics_text(State(st): State<Arc<EdgeState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
}

/// Sizes of per-connection structures (memory checks).
#[doc(hidden)]
pub fn debug_sizes() -> Vec<(&'static str, usize)> {
    connection::sizes()
}

/// Resolves on SIGTERM or Ctrl-C (the binary drains on it).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
