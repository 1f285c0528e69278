//! The [`Bus`] trait and the types that cross it.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use voicewatch_protocol::{Cursor, SignedEvent, Snowflake};

/// One stored event as a subscriber sees it: the signed message exactly as
/// published, and its position in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: SignedEvent,
    pub cursor: Cursor,
}

/// What the store said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// Where the event is stored (for a duplicate: where the first copy is).
    pub cursor: Cursor,
    /// The id was already stored inside the duplicate window; nothing new
    /// was stored and subscribers see nothing.
    pub duplicate: bool,
}

/// The answer to [`Bus::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Stored events of the requested guilds after the cursor, in order.
    pub events: Vec<Delivery>,
    /// True when history reached back to the cursor, in the same epoch: no
    /// event of these guilds after the cursor is missing from `events`.
    pub recovered: bool,
    /// The end of the stream when the replay was taken; the position a
    /// client is at once it has `events`.
    pub head: Cursor,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Not connected, or the server did not answer: nothing was stored.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus operation timed out")]
    Timeout,
    /// Back-pressure from [`crate::outbox::Outbox`]: the caller must slow
    /// down or fail; the event was not taken.
    #[error("outbox full ({capacity} events waiting)")]
    OutboxFull { capacity: usize },
    /// A request found nobody serving its subject.
    #[error("no responders for {0}")]
    NoResponders(String),
    #[error("bus closed")]
    Closed,
    #[error("bus configuration: {0}")]
    Config(String),
}

/// Live deliveries of one guild, in stream order, without gaps (a gap seen
/// on the live path is filled from the stream before later events are
/// yielded). Dropping it unsubscribes.
pub type DeliveryStream = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// How a served request is answered.
#[async_trait]
pub trait Respond: Send {
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<(), BusError>;
}

/// One request for a served subject.
pub struct IncomingRequest {
    pub payload: Bytes,
    pub responder: Box<dyn Respond>,
}

impl IncomingRequest {
    pub async fn respond(self, payload: Bytes) -> Result<(), BusError> {
        self.responder.respond(payload).await
    }
}

/// Requests for one served subject; dropping it stops serving.
pub type RequestStream = Pin<Box<dyn Stream<Item = IncomingRequest> + Send>>;

/// What the worker and the edge need from the bus.
///
/// Subjects and headers follow the contract (`{prefix}.v1.{guild}.{kind}`,
/// `Nats-Msg-Id`, `Vw-*`); implementations take the prefix and stream name
/// from their configuration.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Stores one signed event and resolves once it is stored (the
    /// JetStream ack). Fails with [`BusError::Unavailable`] or
    /// [`BusError::Timeout`] when it cannot be stored; callers that must not
    /// lose events go through [`crate::outbox::Outbox`].
    async fn publish(&self, event: &SignedEvent) -> Result<PublishAck, BusError>;

    /// Starts receiving the live events of one guild: every event stored
    /// after this call returns is yielded, in order. Survives reconnects of
    /// the underlying connection.
    async fn subscribe(&self, guild: Snowflake) -> Result<DeliveryStream, BusError>;

    /// The current end of the stream (the cursor of the last stored event,
    /// or sequence 0 of the current epoch when empty).
    async fn head(&self) -> Result<Cursor, BusError>;

    /// Every stored event of `guilds` after `after`, in order, at most
    /// `limit` of them (when more exist, `recovered` is false).
    async fn replay(
        &self,
        guilds: &[Snowflake],
        after: Cursor,
        limit: usize,
    ) -> Result<Replay, BusError>;

    /// Sends a request and waits for one answer.
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;

    /// Serves a request subject; several servers of one subject share the
    /// requests (a queue group), each request goes to one of them.
    async fn serve(&self, subject: &str) -> Result<RequestStream, BusError>;

    /// Small durable key/value state (the worker's gateway sessions).
    async fn kv_get(&self, key: &str) -> Result<Option<Bytes>, BusError>;
    async fn kv_put(&self, key: &str, value: Bytes) -> Result<(), BusError>;

    /// Whether the bus is connected right now (for `/readyz`).
    fn is_connected(&self) -> bool;
}
