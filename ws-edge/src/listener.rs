//! Accepting connections: the TCP/TLS accept loop, the `/api/ws` upgrade with
//! its limits (origin, total, per IP, per user), the registry of open
//! connections, and the drain.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use voicewatch_protocol::{CloseCode, Snowflake};

use crate::config::EdgeArgs;
use crate::connection;
use crate::outbound::ConnShared;
use crate::state::EdgeState;

/// Counts per key with a cap.
struct Counter<K> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Copy> Counter<K> {
    fn new(max: usize) -> Self {
        Self {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(&self, k: K) -> bool {
        let mut c = self.counts.lock();
        let n = c.entry(k).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                c.remove(&k);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, k: K) {
        if let Entry::Occupied(mut e) = self.counts.lock().entry(k) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The connection caps.
pub(crate) struct Limits {
    per_ip: Counter<IpAddr>,
    per_user: Counter<Snowflake>,
    max_total: usize,
}

impl Limits {
    pub fn new(args: &EdgeArgs) -> Self {
        Self {
            per_ip: Counter::new(args.max_connections_per_ip),
            per_user: Counter::new(args.max_connections_per_user),
            max_total: args.max_connections,
        }
    }

    pub fn acquire_user(&self, st: &Arc<EdgeState>, user: Snowflake) -> Option<UserSlot> {
        self.per_user.acquire(user).then(|| UserSlot {
            user,
            st: Arc::clone(st),
        })
    }
}

/// A per-user count, released on drop.
pub(crate) struct UserSlot {
    user: Snowflake,
    st: Arc<EdgeState>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.st.limits.per_user.release(self.user);
    }
}

/// Every open WebSocket connection, for caps and the drain.
#[derive(Default)]
pub(crate) struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnShared>>>,
    count: CountWatch,
}

struct CountWatch(watch::Sender<usize>);

impl Default for CountWatch {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Registry {
    pub fn len(&self) -> usize {
        *self.count.0.borrow()
    }

    pub fn snapshot(&self) -> Vec<Arc<ConnShared>> {
        let mut v: Vec<_> = self.conns.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Resolves once no connection is open.
    pub async fn empty(&self) {
        let mut rx = self.count.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// A registered connection (and its per-IP count), released on drop.
pub(crate) struct ConnSlot {
    pub shared: Arc<ConnShared>,
    ip: IpAddr,
    st: Arc<EdgeState>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let n = {
            let mut c = self.st.registry.conns.lock();
            c.remove(&self.shared.id);
            c.len()
        };
        self.st.registry.count.0.send_replace(n);
        self.st.limits.per_ip.release(self.ip);
    }
}

fn open_slot(st: &Arc<EdgeState>, ip: IpAddr) -> Result<ConnSlot, (CloseCode, &'static str)> {
    let shared = Arc::new(ConnShared::new(
        st.next_id(),
        st.args.outbound_buffer_bytes,
        Arc::clone(&st.metrics),
    ));
    if !st.limits.per_ip.acquire(ip) {
        st.metrics.reject("per_ip");
        return Err((
            CloseCode::RateLimited,
            "too many connections from this address",
        ));
    }
    let n = {
        let mut c = st.registry.conns.lock();
        if c.len() >= st.limits.max_total {
            None
        } else {
            c.insert(shared.id, Arc::clone(&shared));
            Some(c.len())
        }
    };
    let Some(n) = n else {
        st.limits.per_ip.release(ip);
        st.metrics.reject("total");
        return Err((CloseCode::RateLimited, "too many connections"));
    };
    st.registry.count.0.send_replace(n);
    Ok(ConnSlot {
        shared,
        ip,
        st: Arc::clone(st),
    })
}

fn origin_allowed(args: &EdgeArgs, headers: &HeaderMap) -> bool {
    if args.allowed_origins.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        // Non-browser clients send no Origin; the allow-list guards browsers.
        None => true,
        Some(o) => args
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
    }
}

pub(crate) async fn ws_handler(
    State(st): State<Arc<EdgeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if st.draining.is_cancelled() {
        st.metrics.reject("draining");
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if !origin_allowed(&st.args, &headers) {
        st.metrics.reject("origin");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let slot = open_slot(&st, peer.ip());
    let a = &st.args;
    ws.read_buffer_size(a.ws_read_buffer_bytes)
        // Frames written in one turn of a connection (a backlog) leave in one
        // syscall, flushed at the end of the turn; a lone frame is written at
        // once. The buffer's capacity stays with the connection, so it is
        // kept small (an idle connection holds about one frame's worth).
        .write_buffer_size(WRITE_COALESCE_BYTES)
        .max_message_size(a.max_message_bytes)
        .max_frame_size(a.max_message_bytes)
        .on_upgrade(move |socket| connection::serve(socket, st, slot))
}

/// Bytes of frames coalesced into one socket write when a connection has a
/// backlog: the kernel's per-write cost dominates fan-out, so a connection
/// that fell behind catches up several frames per syscall.
const WRITE_COALESCE_BYTES: usize = 4096;

/// Accepts until the drain is over. While draining, health checks and
/// metrics keep answering (`/readyz` says 503, so a load balancer sees the
/// node go unready rather than unreachable) and upgrades get 503.
pub(crate) async fn accept_loop(
    st: Arc<EdgeState>,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            _ = st.hard_stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve_tcp(
                    Arc::clone(&st),
                    tcp,
                    peer,
                    router.clone(),
                    tls.clone(),
                ));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of
                // spinning, connections already open keep working.
                tracing::warn!(error = %e, "accept failed");
                st.metrics.reject("accept_error");
                tokio::select! {
                    _ = st.hard_stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn serve_tcp(
    st: Arc<EdgeState>,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
) {
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    // Plain and TLS connections differ in type only.
    macro_rules! drive {
        ($io:expr) => {{
            let conn = http
                .serve_connection(TokioIo::new($io), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = st.hard_stop.cancelled() => {}
            }
            // Plain HTTP (health, metrics) finishes its request in flight.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }};
    }
    match tls {
        None => drive!(tcp),
        Some(acceptor) => {
            let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            let Ok(Ok(io)) = hs else {
                st.metrics.reject("tls_handshake");
                return;
            };
            drive!(io)
        }
    }
}

/// Closes every connection with 1012 spread over the window, then, at the
/// deadline, drops whatever is left.
pub(crate) async fn drain(st: Arc<EdgeState>) {
    let start = Instant::now();
    let window = Duration::from_millis(st.args.drain_window_ms);
    let deadline =
        start + Duration::from_millis(st.args.drain_timeout_ms.max(st.args.drain_window_ms));
    let conns = st.registry.snapshot();
    let n = conns.len().max(1) as u32;
    tracing::info!(connections = conns.len(), ?window, "draining");
    let spread = async {
        for (i, c) in conns.iter().enumerate() {
            sleep_until(start + window * i as u32 / n).await;
            c.request_close(CloseCode::Restart);
        }
        drop(conns);
        st.registry.empty().await;
    };
    tokio::select! {
        _ = spread => {}
        _ = sleep_until(deadline) => {
            tracing::warn!(left = st.registry.len(), "drain deadline: dropping connections");
        }
    }
    st.stop_all();
    // Close paths race the hard stop, so this is quick.
    let _ = tokio::time::timeout(Duration::from_secs(5), st.registry.empty()).await;
}
