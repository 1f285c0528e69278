//! The edge's Prometheus metrics. One registry per [`crate::Edge`], no
//! global state, so that several edges can run in one process (tests).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];
type CodeLabels = [(&'static str, u16); 1];

pub struct Metrics {
    registry: parking_lot::Mutex<Registry>,
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub connections_closed: Family<CodeLabels, Counter>,
    pub rejected: Family<Labels, Counter>,
    pub auth_failures: Family<Labels, Counter>,
    pub auth_ok: Counter,
    pub resumes: Family<Labels, Counter>,
    pub replayed_events: Counter,
    pub events_received: Counter,
    pub events_delivered: Counter,
    pub events_dropped: Family<Labels, Counter>,
    pub fanout_latency: Histogram,
    pub outbound_queue_bytes: Gauge,
    pub guild_subscriptions: Gauge,
    pub inbound_frames: Counter,
    pub ingest: Family<[(&'static str, u16); 1], Counter>,
    pub draining: Gauge,
    pub dead_peers: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("voicewatch_edge");
        let m = Self {
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            rejected: Family::default(),
            auth_failures: Family::default(),
            auth_ok: Counter::default(),
            resumes: Family::default(),
            replayed_events: Counter::default(),
            events_received: Counter::default(),
            events_delivered: Counter::default(),
            events_dropped: Family::default(),
            // 100 µs .. ~3.3 s
            fanout_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
            outbound_queue_bytes: Gauge::default(),
            guild_subscriptions: Gauge::default(),
            inbound_frames: Counter::default(),
            ingest: Family::default(),
            draining: Gauge::default(),
            dead_peers: Counter::default(),
            registry: parking_lot::Mutex::new(Registry::default()),
        };
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections accepted",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "WebSocket connections closed, by close code (0: dropped without a close frame)",
            m.connections_closed.clone(),
        );
        r.register(
            "rejected",
            "Upgrades and connections refused by a limit, by reason",
            m.rejected.clone(),
        );
        r.register(
            "auth_failures",
            "Failed authentications, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "auth_ok",
            "Successful authentications (including refreshes)",
            m.auth_ok.clone(),
        );
        r.register(
            "resumes",
            "Auth frames with a resume cursor, by outcome",
            m.resumes.clone(),
        );
        r.register(
            "replayed_events",
            "Events sent to clients from bus replay",
            m.replayed_events.clone(),
        );
        r.register(
            "events_received",
            "Events received live from the bus",
            m.events_received.clone(),
        );
        r.register(
            "events_delivered",
            "Event frames written to sockets",
            m.events_delivered.clone(),
        );
        r.register(
            "events_dropped",
            "Events or deliveries dropped, by reason",
            m.events_dropped.clone(),
        );
        r.register(
            "fanout_latency_seconds",
            "From bus receipt of an event until every connection of its guild wrote (or discarded) it",
            m.fanout_latency.clone(),
        );
        r.register(
            "outbound_queue_bytes",
            "Bytes queued for sockets, all connections",
            m.outbound_queue_bytes.clone(),
        );
        r.register(
            "guild_subscriptions",
            "Guilds this edge is subscribed to on the bus",
            m.guild_subscriptions.clone(),
        );
        r.register(
            "inbound_frames",
            "Frames received from clients",
            m.inbound_frames.clone(),
        );
        r.register(
            "ingest_requests",
            "POST /api/internal/events answers, by status",
            m.ingest.clone(),
        );
        r.register(
            "dead_peers",
            "Connections dropped for silence after a WebSocket ping",
            m.dead_peers.clone(),
        );
        r.register("draining", "1 while the edge drains", m.draining.clone());
        Self {
            registry: parking_lot::Mutex::new(r),
            ..m
        }
    }

    pub fn closed(&self, code: u16) {
        self.connections_closed
            .get_or_create(&[("code", code)])
            .inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn resume(&self, outcome: &'static str) {
        self.resumes.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.events_dropped
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Adds metrics of routes served beside the edge (rejoin, demo) to the
    /// edge's `/metrics`.
    pub fn register_extra(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock());
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry.lock());
        out
    }
}
