//! The voice event (contract section 1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::snowflake::{Snowflake, SnowflakeError};

/// Longest event id the contract allows.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// What happened to a user's voice connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "voice.left")]
    Left,
    #[serde(rename = "voice.joined")]
    Joined,
    #[serde(rename = "voice.moved")]
    Moved,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Left, EventKind::Joined, EventKind::Moved];

    /// The `type` field: `voice.left`, `voice.joined`, `voice.moved`.
    pub const fn as_type(self) -> &'static str {
        match self {
            EventKind::Left => "voice.left",
            EventKind::Joined => "voice.joined",
            EventKind::Moved => "voice.moved",
        }
    }

    /// The last subject token: the part of `type` after `voice.`.
    pub const fn subject_token(self) -> &'static str {
        match self {
            EventKind::Left => "left",
            EventKind::Joined => "joined",
            EventKind::Moved => "moved",
        }
    }

    pub fn from_type(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_type() == s)
    }

    pub fn from_subject_token(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.subject_token() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_type())
    }
}

/// An event id: 1 to 128 characters of `[A-Za-z0-9._:-]`, so that it is
/// safe as a `Nats-Msg-Id` header and in logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub fn new(id: impl Into<String>) -> Result<Self, EventError> {
        let id = id.into();
        let ok_len = (1..=MAX_EVENT_ID_LEN).contains(&id.len());
        let ok_chars = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok_len && ok_chars {
            Ok(Self(id))
        } else {
            Err(EventError::InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `occurredAt`: RFC 3339 in UTC with at least millisecond precision.
///
/// Kept as the exact string that was received so that printing an event
/// gives back the bytes that were signed; [`Timestamp::unix_millis`] parses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// Formats `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn from_unix_millis(ms: i64) -> Result<Self, EventError> {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|_| EventError::InvalidTimestamp)?;
        let s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
        Ok(Self(s))
    }

    pub fn now() -> Self {
        let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        // The current time always fits; fall back to the epoch rather than panic.
        Self::from_unix_millis(ms as i64)
            .unwrap_or_else(|_| Self("1970-01-01T00:00:00.000Z".into()))
    }

    pub fn parse(s: &str) -> Result<Self, EventError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| EventError::InvalidTimestamp)?;
        if !t.offset().is_utc() {
            return Err(EventError::InvalidTimestamp);
        }
        // RFC 3339 allows any number of fraction digits, the contract wants
        // at least three.
        let fraction_digits = s
            .split_once('.')
            .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count())
            .unwrap_or(0);
        if fraction_digits < 3 {
            return Err(EventError::InvalidTimestamp);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn unix_millis(&self) -> i64 {
        OffsetDateTime::parse(&self.0, &Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Timestamp::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON event object: {0}")]
    Json(String),
    #[error("id must be 1 to 128 characters of [A-Za-z0-9._:-]")]
    InvalidId,
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{field}: {source}")]
    InvalidSnowflake {
        field: &'static str,
        source: SnowflakeError,
    },
    #[error("channelId must be null for voice.left")]
    ChannelOnLeave,
    #[error("channelId is required for {0}")]
    MissingChannel(EventKind),
    #[error("previousChannelId must be null for voice.joined")]
    PreviousOnJoin,
    #[error("voice.moved must change the channel")]
    MoveToSameChannel,
    #[error("occurredAt must be RFC 3339 UTC with at least millisecond precision")]
    InvalidTimestamp,
}

/// One voice event. Unknown fields are kept in `extra` and printed back,
/// because consumers must pass on what they do not understand.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VoiceEvent {
    pub id: EventId,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub guild_id: Snowflake,
    pub user_id: Snowflake,
    pub channel_id: Option<Snowflake>,
    pub previous_channel_id: Option<Snowflake>,
    pub occurred_at: Timestamp,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The event as JSON types only, so that each field's failure becomes a
/// typed [`EventError`] instead of an opaque serde message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    guild_id: String,
    user_id: String,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    previous_channel_id: Option<String>,
    occurred_at: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn snowflake(field: &'static str, s: &str) -> Result<Snowflake, EventError> {
    Snowflake::from_str(s).map_err(|source| EventError::InvalidSnowflake { field, source })
}

impl VoiceEvent {
    /// Parses and validates one event from its JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EventError> {
        let raw: RawEvent =
            serde_json::from_slice(bytes).map_err(|e| EventError::Json(e.to_string()))?;
        let kind = EventKind::from_type(&raw.kind).ok_or(EventError::UnknownType(raw.kind))?;
        let event = VoiceEvent {
            id: EventId::new(raw.id)?,
            kind,
            guild_id: snowflake("guildId", &raw.guild_id)?,
            user_id: snowflake("userId", &raw.user_id)?,
            channel_id: raw
                .channel_id
                .as_deref()
                .map(|s| snowflake("channelId", s))
                .transpose()?,
            previous_channel_id: raw
                .previous_channel_id
                .as_deref()
                .map(|s| snowflake("previousChannelId", s))
                .transpose()?,
            occurred_at: Timestamp::parse(&raw.occurred_at)?,
            extra: raw.extra,
        };
        event.validate()?;
        Ok(event)
    }

    /// Checks the rules that tie fields together.
    pub fn validate(&self) -> Result<(), EventError> {
        match self.kind {
            EventKind::Left if self.channel_id.is_some() => Err(EventError::ChannelOnLeave),
            EventKind::Joined | EventKind::Moved if self.channel_id.is_none() => {
                Err(EventError::MissingChannel(self.kind))
            }
            EventKind::Joined if self.previous_channel_id.is_some() => {
                Err(EventError::PreviousOnJoin)
            }
            EventKind::Moved if self.channel_id == self.previous_channel_id => {
                Err(EventError::MoveToSameChannel)
            }
            _ => Ok(()),
        }
    }

    /// Compact JSON bytes: what gets signed and published.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings, options and a JSON map cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEFT: &str = r#"{"id":"e-2000-3001-sess-a-1","type":"voice.left","guildId":"2000","userId":"3001","channelId":null,"previousChannelId":"4000","occurredAt":"2026-11-28T00:00:00.123Z"}"#;

    #[test]
    fn contract_example_round_trips_byte_for_byte() {
        let e = VoiceEvent::from_slice(LEFT.as_bytes()).unwrap();
        assert_eq!(e.kind, EventKind::Left);
        assert_eq!(e.previous_channel_id.map(Snowflake::get), Some(4000));
        assert_eq!(String::from_utf8(e.to_bytes()).unwrap(), LEFT);
    }

    #[test]
    fn unknown_fields_survive() {
        let with_extra = LEFT.replace("}", r#","shard":3,"note":{"a":[1]}}"#);
        let e = VoiceEvent::from_slice(with_extra.as_bytes()).unwrap();
        let again = VoiceEvent::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(again.extra.get("shard"), Some(&Value::from(3)));
        assert_eq!(e, again);
    }

    #[test]
    fn timestamps() {
        assert!(Timestamp::parse("2026-11-28T00:00:00.123Z").is_ok());
        assert!(Timestamp::parse("2026-11-28T00:00:00.123456+00:00").is_ok());
        assert!(Timestamp::parse("2026-11-28T00:00:00Z").is_err());
        assert!(Timestamp::parse("2026-11-28T00:00:00.12Z").is_err());
        assert!(Timestamp::parse("2026-11-28T01:00:00.123+01:00").is_err());
        let t = Timestamp::from_unix_millis(1_795_824_000_123).unwrap();
        assert_eq!(t.unix_millis(), 1_795_824_000_123);
        assert!(Timestamp::parse(t.as_str()).is_ok());
    }
}
