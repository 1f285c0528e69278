//! The production sink: each change becomes a contract event (section 1),
//! HMAC-stamped with the signing key of `VOICEWATCH_HMAC_KEYS` (section 2),
//! and is stored through the [`Bus`]. The only way the worker produces a
//! message is [`BusSink::seal`]: there is no unsigned path.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Map;
use time::OffsetDateTime;
use voicewatch_bus::{Bus, BusError, Outbox, OutboxConfig};
use voicewatch_protocol::{
    EventId, EventKind, Keyring, SignedEvent, Snowflake, Timestamp, VoiceEvent,
};

use crate::tracker::{Change, ChangeKind};
use crate::worker::{Published, Sink, SinkError};

pub struct BusSink {
    bus: Arc<dyn Bus>,
    keyring: Arc<Keyring>,
    outbox: Arc<Outbox>,
    publish_timeout: Duration,
}

impl BusSink {
    /// Events are published directly while the bus acknowledges within
    /// `publish_timeout` (the normal path, whose latency is measured); when
    /// it does not, they go to the bus crate's outbox, and every later event
    /// follows them there until it is drained, so order is kept.
    pub fn new(
        bus: Arc<dyn Bus>,
        keyring: Keyring,
        outbox: OutboxConfig,
        publish_timeout: Duration,
    ) -> Self {
        let outbox = Arc::new(Outbox::new(bus.clone(), outbox));
        Self {
            bus,
            keyring: Arc::new(keyring),
            outbox,
            publish_timeout,
        }
    }

    /// The signed message for one change. Fails only on values no Discord
    /// id can have (zero snowflakes), which the worker then skips: they
    /// cannot be published under the contract.
    pub fn seal(
        keyring: &Keyring,
        change: &Change,
        occurred_at: OffsetDateTime,
    ) -> Result<SignedEvent, SinkError> {
        let sf = |v: u64| {
            Snowflake::new(v).ok_or_else(|| SinkError(format!("zero snowflake in {}", change.id)))
        };
        let occurred_ms = (occurred_at.unix_timestamp_nanos() / 1_000_000) as i64;
        let event = VoiceEvent {
            id: EventId::new(change.id.clone()).map_err(|e| SinkError(e.to_string()))?,
            kind: match change.kind {
                ChangeKind::Joined => EventKind::Joined,
                ChangeKind::Left => EventKind::Left,
                ChangeKind::Moved => EventKind::Moved,
            },
            guild_id: sf(change.guild)?,
            user_id: sf(change.user)?,
            channel_id: change.channel.map(sf).transpose()?,
            previous_channel_id: change.previous.map(sf).transpose()?,
            occurred_at: Timestamp::from_unix_millis(occurred_ms)
                .map_err(|e| SinkError(e.to_string()))?,
            extra: Map::new(),
        };
        event.validate().map_err(|e| SinkError(e.to_string()))?;
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Ok(SignedEvent::seal(&event, keyring, now_ms))
    }
}

impl Sink for BusSink {
    fn publish(
        &self,
        change: &Change,
        occurred_at: OffsetDateTime,
    ) -> BoxFuture<'static, Result<Published, SinkError>> {
        let signed = Self::seal(&self.keyring, change, occurred_at);
        let bus = self.bus.clone();
        let outbox = self.outbox.clone();
        let timeout = self.publish_timeout;
        async move {
            let signed = match signed {
                Ok(s) => s,
                Err(e) => {
                    // Not publishable under the contract; retrying cannot help.
                    tracing::error!(error = %e, "skipping a change that cannot form a valid event");
                    return Ok(Published::Acked);
                }
            };
            if outbox.depth() == 0 {
                match tokio::time::timeout(timeout, bus.publish(&signed)).await {
                    Ok(Ok(_ack)) => return Ok(Published::Acked),
                    Ok(Err(BusError::Closed)) => return Err(SinkError("bus closed".into())),
                    Ok(Err(e)) => tracing::warn!(error = %e, id = %signed.id, "publish failed; queueing in the outbox"),
                    Err(_) => tracing::warn!(id = %signed.id, "publish not acknowledged in time; queueing in the outbox"),
                }
            }
            // A publish that timed out may have been stored anyway: the
            // outbox publishes it again and JetStream drops the duplicate.
            outbox.try_send(signed).map(|()| Published::Queued).map_err(|e| SinkError(e.to_string()))
        }
        .boxed()
    }

    fn connected(&self) -> bool {
        self.bus.is_connected()
    }

    fn pending(&self) -> u64 {
        self.outbox.depth() as u64
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        self.outbox.flush(timeout).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_events_verify_and_match_the_subject() {
        let keyring = Keyring::parse("k1=secret").unwrap();
        let change = Change {
            kind: ChangeKind::Left,
            guild: 2000,
            user: 3001,
            channel: None,
            previous: Some(4000),
            id: "e-2000-3001-s-2".into(),
        };
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let signed = BusSink::seal(&keyring, &change, at).unwrap();
        assert_eq!(signed.id, "e-2000-3001-s-2");
        let ev = signed.open(&keyring, None, 300_000).unwrap();
        assert_eq!(ev.previous_channel_id.map(Snowflake::get), Some(4000));
        assert_eq!(ev.channel_id, None);
        assert!(ev.occurred_at.as_str().ends_with(".000Z"));
        let other = Keyring::parse("k1=other").unwrap();
        assert!(signed.open(&other, None, 300_000).is_err());
    }
}
