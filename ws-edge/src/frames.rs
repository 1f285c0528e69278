//! Server frames, encoded once. An event is verified and serialized once per
//! edge into an [`EventFrame`]; every connection of its guild queues the same
//! `Arc` and writes the same bytes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use voicewatch_bus::Delivery;
use voicewatch_protocol::frame::{PING_JSON, PONG_JSON};
use voicewatch_protocol::{CloseCode, Cursor, ServerFrame, Snowflake, VoiceEvent};

use crate::metrics::Metrics;

pub const PING: Utf8Bytes = Utf8Bytes::from_static(PING_JSON);
pub const PONG: Utf8Bytes = Utf8Bytes::from_static(PONG_JSON);

/// One event frame shared by every connection that receives it.
#[derive(Debug)]
pub struct EventFrame {
    pub text: Utf8Bytes,
    pub cursor: Cursor,
    pub user: Snowflake,
    /// When the edge received it from the bus (fan-out latency).
    pub received: Instant,
    /// Live frames observe the fan-out latency when the last connection
    /// lets go of them (written, or discarded by a closing connection):
    /// one observation per event, nothing per delivery.
    latency: Option<Arc<Metrics>>,
}

impl Drop for EventFrame {
    fn drop(&mut self) {
        if let Some(m) = &self.latency {
            m.fanout_latency
                .observe(self.received.elapsed().as_secs_f64());
        }
    }
}

impl EventFrame {
    /// Builds the frame of a verified event; `None` when the payload is not
    /// UTF-8 (cannot happen for an event that parsed).
    pub fn new(delivery: &Delivery, event: &VoiceEvent, received: Instant) -> Option<Self> {
        let payload = std::str::from_utf8(&delivery.event.payload).ok()?;
        let text = ServerFrame::event_json(event.kind, &delivery.cursor.to_string(), payload);
        Some(Self {
            text: text.into(),
            cursor: delivery.cursor,
            user: event.user_id,
            received,
            latency: None,
        })
    }

    /// Marks a live frame: its drop records the fan-out latency.
    pub fn observed(mut self, metrics: Arc<Metrics>) -> Self {
        self.latency = Some(metrics);
        self
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

pub fn ack(cursor: Cursor, recovered: bool) -> Utf8Bytes {
    ServerFrame::ack_json(&cursor.to_string(), recovered).into()
}

pub fn error(code: CloseCode, message: &str) -> Utf8Bytes {
    ServerFrame::error_json(code, message).into()
}
