//! The bus: how signed voice events travel from the gateway worker to the
//! edges, and how the edge asks the worker questions (request/reply).
//!
//! One trait, [`Bus`], with two implementations that pass one conformance
//! suite: NATS JetStream for a fleet, and an in-process bus for the
//! single-machine embedded default. Around the trait sit two helpers that
//! work with either: [`outbox::Outbox`] (bounded, ordered retry while the bus
//! is down) and [`interest::Interest`] (reference-counted per-guild
//! subscriptions for a node).

pub mod bus;
pub mod config;
pub mod interest;
pub mod jetstream;
pub mod memory;
pub mod outbox;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use bus::{
    Bus, BusError, Delivery, DeliveryStream, IncomingRequest, PublishAck, Replay, RequestStream,
    Respond,
};
pub use config::{NatsArgs, Storage};
pub use interest::{Interest, InterestGuard, Sink};
pub use jetstream::NatsBus;
pub use memory::{MemoryBus, MemoryBusConfig};
pub use outbox::{Outbox, OutboxConfig};
pub use voicewatch_protocol::Snowflake as GuildId;

/// The bus the options ask for: the JetStream bus when
/// `VOICEWATCH_NATS_URL` is set, otherwise the in-process bus (`standalone`
/// and `demo`; `worker` and `edge` must refuse an empty URL themselves).
pub async fn connect(args: &NatsArgs) -> Result<std::sync::Arc<dyn Bus>, BusError> {
    if args.nats_url.is_empty() {
        Ok(std::sync::Arc::new(MemoryBus::default()))
    } else {
        Ok(std::sync::Arc::new(NatsBus::connect(args.clone()).await?))
    }
}

/// Keys of [`Bus::kv_put`]/[`Bus::kv_get`]: what a JetStream KV bucket
/// accepts (`[-/_=.a-zA-Z0-9]+`, no leading or trailing dot), checked by
/// both buses alike.
pub fn validate_kv_key(key: &str) -> Result<(), BusError> {
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BusError::Config(format!(
            "invalid key {key:?}: use [-/_=.a-zA-Z0-9]"
        )))
    }
}
