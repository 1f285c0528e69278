//! Prometheus metrics of the worker (`/metrics`).

use std::collections::HashSet;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::tracker::ChangeKind;

type Label = [(&'static str, String); 1];

/// Guilds that get their own dropout series; the rest are counted under
/// `guild="other"` so that a bot in 100k guilds does not blow up the scrape.
pub const DROPOUT_GUILD_SERIES_LIMIT: usize = 100;

pub struct Metrics {
    pub registry: Registry,
    /// 0 disconnected, 1 identifying, 2 resuming, 3 active, 4 fatally closed.
    pub shard_state: Family<Label, Gauge>,
    pub gateway_events: Family<Label, Counter>,
    pub published: Family<Label, Counter>,
    pub publish_latency: Histogram,
    pub publish_retries: Counter,
    pub queued: Counter,
    pub outbox_depth: Gauge,
    pub users_in_voice: Family<Label, Gauge>,
    pub dropouts: Counter,
    pub dropouts_by_guild: Family<Label, Counter>,
    pub state_saves: Counter,
    pub state_save_errors: Counter,
    /// The rejoin check's metrics (`voicewatch_worker_rejoin_*`).
    pub rejoin: crate::rejoin::RejoinMetrics,
    dropout_guilds: Mutex<HashSet<u64>>,
    /// Dispatch received → publish acknowledged, microseconds (for p50/p99
    /// reports; the Prometheus histogram has coarse buckets).
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("voicewatch_worker");
        let m = Self {
            shard_state: Family::default(),
            gateway_events: Family::default(),
            published: Family::default(),
            publish_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            publish_retries: Counter::default(),
            queued: Counter::default(),
            outbox_depth: Gauge::default(),
            users_in_voice: Family::default(),
            dropouts: Counter::default(),
            dropouts_by_guild: Family::default(),
            state_saves: Counter::default(),
            state_save_errors: Counter::default(),
            rejoin: crate::rejoin::RejoinMetrics::new(),
            dropout_guilds: Mutex::new(HashSet::new()),
            latency_us: Mutex::new(new_hdr()),
            registry: Registry::default(),
        };
        registry.register(
            "shard_state",
            "Shard state: 0 disconnected, 1 identifying, 2 resuming, 3 active, 4 fatally closed",
            m.shard_state.clone(),
        );
        registry.register(
            "gateway_events",
            "Gateway dispatches and closes seen, by type",
            m.gateway_events.clone(),
        );
        registry.register(
            "events_published",
            "Voice events acknowledged by the bus, by type",
            m.published.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "Dispatch received to publish acknowledged",
            m.publish_latency.clone(),
        );
        registry.register(
            "publish_retries",
            "Publish attempts that failed and were retried",
            m.publish_retries.clone(),
        );
        registry.register(
            "events_queued",
            "Events handed to the outbox because the bus did not acknowledge in time",
            m.queued.clone(),
        );
        registry.register(
            "outbox_depth",
            "Events waiting in the bus outbox",
            m.outbox_depth.clone(),
        );
        registry.register(
            "users_in_voice",
            "Users in voice in the tracked guilds, by shard",
            m.users_in_voice.clone(),
        );
        registry.register(
            "dropouts",
            "voice.left events published",
            m.dropouts.clone(),
        );
        registry.register(
            "dropouts_by_guild",
            "voice.left events by guild (first 100 guilds; the rest under guild=\"other\")",
            m.dropouts_by_guild.clone(),
        );
        registry.register("state_saves", "Shard state saves", m.state_saves.clone());
        registry.register(
            "state_save_errors",
            "Shard state saves that failed",
            m.state_save_errors.clone(),
        );
        m.rejoin.register(&mut registry);
        Self { registry, ..m }
    }

    /// `latency` is `None` for an event that went to the outbox (its store
    /// time is not observed per event; see `outbox_depth`).
    pub fn observe_published(&self, kind: ChangeKind, guild: u64, latency: Option<Duration>) {
        self.published
            .get_or_create(&[("type", kind_name(kind).to_owned())])
            .inc();
        match latency {
            Some(latency) => {
                self.publish_latency.observe(latency.as_secs_f64());
                let _ = self
                    .latency_us
                    .lock()
                    .record(latency.as_micros().max(1) as u64);
            }
            None => {
                self.queued.inc();
            }
        }
        if kind == ChangeKind::Left {
            self.dropouts.inc();
            let label = {
                let mut g = self.dropout_guilds.lock();
                if g.contains(&guild) || g.len() < DROPOUT_GUILD_SERIES_LIMIT {
                    g.insert(guild);
                    guild.to_string()
                } else {
                    "other".to_owned()
                }
            };
            self.dropouts_by_guild
                .get_or_create(&[("guild", label)])
                .inc();
        }
    }

    pub fn gateway_event(&self, name: &str) {
        self.gateway_events
            .get_or_create(&[("type", name.to_owned())])
            .inc();
    }

    /// (p50, p99, max, count) of dispatch → ack latency.
    pub fn latency_summary(&self) -> LatencySummary {
        let h = self.latency_us.lock();
        LatencySummary {
            count: h.len(),
            p50: Duration::from_micros(h.value_at_quantile(0.5)),
            p99: Duration::from_micros(h.value_at_quantile(0.99)),
            max: Duration::from_micros(h.max()),
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

fn new_hdr() -> hdrhistogram::Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits; the bounds are constants.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        hdrhistogram::Histogram::new(3)
            .unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

pub fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Joined => "voice.joined",
        ChangeKind::Left => "voice.left",
        ChangeKind::Moved => "voice.moved",
    }
}
