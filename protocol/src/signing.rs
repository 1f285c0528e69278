//! HMAC-SHA256 stamps on bus messages and ingested events (contract
//! section 2): `Vw-Signature: v1=hex(HMAC(secret, "v1:" + ts + ":" + body))`.

use std::fmt;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::{EventError, EventKind, VoiceEvent};
use crate::snowflake::Snowflake;
use crate::subject::Subject;

pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_TIMESTAMP: &str = "Vw-Timestamp";
pub const HEADER_KEY_ID: &str = "Vw-Key-Id";
pub const HEADER_SIGNATURE: &str = "Vw-Signature";
/// Default tolerance between a live message's timestamp and the verifier's
/// clock.
pub const DEFAULT_TOLERANCE_MS: i64 = 300_000;

type HmacSha256 = Hmac<Sha256>;

struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The configured HMAC keys. The first one signs; all of them verify, so
/// keys can be rotated without a flag day.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no HMAC key configured (expected kid=secret[,kid=secret...])")]
    Empty,
    #[error("HMAC key entry {0} is not kid=secret")]
    NotKeyValue(usize),
    #[error("HMAC key id {0:?} must be 1 to 64 characters of [A-Za-z0-9._-]")]
    InvalidKeyId(String),
    #[error("HMAC key {0:?} has an empty secret")]
    EmptySecret(String),
    #[error("HMAC key id {0:?} is configured twice")]
    DuplicateKeyId(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    MissingSignature,
    #[error("signature header is not v1=<64 lowercase hex digits>")]
    MalformedSignature,
    #[error("timestamp header missing")]
    MissingTimestamp,
    #[error("timestamp header is not unix milliseconds")]
    MalformedTimestamp,
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp is {skew_ms} ms from now, over the tolerance")]
    Stale { skew_ms: i64 },
}

/// The signature headers of one message, as strings (as received, or as
/// produced by [`Keyring::sign`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp {
    /// `Vw-Timestamp`: unix milliseconds.
    pub timestamp: String,
    /// `Vw-Key-Id`: absent means the default (first configured) key.
    pub key_id: Option<String>,
    /// `Vw-Signature`: `v1={hex}`.
    pub signature: String,
}

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Keyring {
    /// Parses `kid=secret[,kid=secret…]` (the `VOICEWATCH_HMAC_KEYS` format).
    /// A secret is everything after the first `=`.
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (id, secret) = entry.split_once('=').ok_or(KeyringError::NotKeyValue(i))?;
            keys.push((id.to_owned(), secret.as_bytes().to_vec()));
        }
        Self::new(keys)
    }

    pub fn new(keys: Vec<(String, Vec<u8>)>) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (id, secret) in keys {
            if !valid_key_id(&id) {
                return Err(KeyringError::InvalidKeyId(id));
            }
            if secret.is_empty() {
                return Err(KeyringError::EmptySecret(id));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateKeyId(id));
            }
            out.push(Key { id, secret });
        }
        Ok(Self { keys: out })
    }

    /// The id of the key that signs.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    fn mac(secret: &[u8], timestamp: &str, payload: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(b"v1:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(payload);
        mac
    }

    /// Signs `payload` at `timestamp_ms` with the first key.
    pub fn sign(&self, timestamp_ms: i64, payload: &[u8]) -> Stamp {
        let key = &self.keys[0];
        let timestamp = timestamp_ms.to_string();
        let digest = Self::mac(&key.secret, &timestamp, payload)
            .finalize()
            .into_bytes();
        Stamp {
            timestamp,
            key_id: Some(key.id.clone()),
            signature: format!("v1={}", hex::encode(digest)),
        }
    }

    /// Verifies a stamp over `payload`. With `now_ms` (a live message) the
    /// timestamp must be within `tolerance_ms` of it; replayed history is
    /// verified with `None`, since it is old by design.
    pub fn verify(
        &self,
        stamp: &Stamp,
        payload: &[u8],
        now_ms: Option<i64>,
        tolerance_ms: i64,
    ) -> Result<(), SignatureError> {
        if stamp.signature.is_empty() {
            return Err(SignatureError::MissingSignature);
        }
        let hex_sig = stamp
            .signature
            .strip_prefix("v1=")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or(SignatureError::MalformedSignature)?;
        let sig = hex::decode(hex_sig).map_err(|_| SignatureError::MalformedSignature)?;
        if stamp.timestamp.is_empty() {
            return Err(SignatureError::MissingTimestamp);
        }
        if !stamp.timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::MalformedTimestamp);
        }
        let ts: i64 = stamp
            .timestamp
            .parse()
            .map_err(|_| SignatureError::MalformedTimestamp)?;
        let key = match stamp.key_id.as_deref() {
            None => &self.keys[0],
            Some(id) => self
                .keys
                .iter()
                .find(|k| k.id == id)
                .ok_or_else(|| SignatureError::UnknownKey(id.to_owned()))?,
        };
        // verify_slice compares in constant time.
        Self::mac(&key.secret, &stamp.timestamp, payload)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        if let Some(now) = now_ms {
            let skew_ms = now.saturating_sub(ts);
            if skew_ms.saturating_abs() > tolerance_ms {
                return Err(SignatureError::Stale { skew_ms });
            }
        }
        Ok(())
    }
}

/// A signed event as it travels on the bus: the exact payload bytes that
/// were signed, where it was published, and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    pub subject: Subject,
    /// `Nats-Msg-Id` (JetStream de-duplication).
    pub id: String,
    pub payload: Bytes,
    pub stamp: Stamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("payload: {0}")]
    Event(#[from] EventError),
    #[error("payload guildId/type disagree with the subject")]
    SubjectMismatch,
}

impl SignedEvent {
    /// Serializes and signs an event (the producer side).
    pub fn seal(event: &VoiceEvent, keyring: &Keyring, now_ms: i64) -> Self {
        let payload = Bytes::from(event.to_bytes());
        let stamp = keyring.sign(now_ms, &payload);
        Self {
            subject: Subject::new(event.guild_id, event.kind),
            id: event.id.as_str().to_owned(),
            payload,
            stamp,
        }
    }

    pub fn guild_id(&self) -> Snowflake {
        self.subject.guild_id
    }

    pub fn kind(&self) -> EventKind {
        self.subject.kind
    }

    /// Verifies the stamp, parses the payload and checks it against the
    /// subject (the verifier side).
    pub fn open(
        &self,
        keyring: &Keyring,
        now_ms: Option<i64>,
        tolerance_ms: i64,
    ) -> Result<VoiceEvent, OpenError> {
        keyring.verify(&self.stamp, &self.payload, now_ms, tolerance_ms)?;
        let event = VoiceEvent::from_slice(&self.payload)?;
        if event.guild_id != self.subject.guild_id || event.kind != self.subject.kind {
            return Err(OpenError::SubjectMismatch);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_parsing() {
        let k = Keyring::parse("k1=abc,k2=de=f").unwrap();
        assert_eq!(k.signing_key_id(), "k1");
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert_eq!(
            Keyring::parse("nokey").unwrap_err(),
            KeyringError::NotKeyValue(0)
        );
        assert_eq!(
            Keyring::parse("a=1,a=2").unwrap_err(),
            KeyringError::DuplicateKeyId("a".into())
        );
        assert_eq!(
            Keyring::parse("a=").unwrap_err(),
            KeyringError::EmptySecret("a".into())
        );
        assert!(format!("{k:?}").contains("k1") && !format!("{k:?}").contains("abc"));
    }

    #[test]
    fn rotation_and_freshness() {
        let old = Keyring::parse("old=s1").unwrap();
        let both = Keyring::parse("new=s2,old=s1").unwrap();
        let stamp = old.sign(1_000, b"{}");
        assert_eq!(both.verify(&stamp, b"{}", Some(1_000), 300_000), Ok(()));
        assert_eq!(
            both.verify(&stamp, b"{}", Some(400_000), 300_000),
            Err(SignatureError::Stale { skew_ms: 399_000 })
        );
        assert_eq!(both.verify(&stamp, b"{}", None, 300_000), Ok(()));
        assert_eq!(
            both.verify(&stamp, b"{ }", None, 1),
            Err(SignatureError::Mismatch)
        );
        let unknown = Stamp {
            key_id: Some("gone".into()),
            ..stamp.clone()
        };
        assert_eq!(
            both.verify(&unknown, b"{}", None, 1),
            Err(SignatureError::UnknownKey("gone".into()))
        );
    }
}
