//! The voicewatch wire contract (`shared/protocol-v1.md`) in code.
//!
//! This crate does no I/O: it defines what travels between the gateway
//! worker, the bus, the edge and browsers, and how it is validated and
//! signed. Everything here is checked against the JSON test vectors in
//! `protocol/vectors/`, which the TypeScript SDK loads too.

pub mod claims;
pub mod close;
pub mod cursor;
pub mod event;
pub mod frame;
pub mod rejoin;
pub mod signing;
pub mod snowflake;
pub mod subject;

pub use claims::{Claims, ClaimsError, ClaimsLimits};
pub use close::CloseCode;
pub use cursor::Cursor;
pub use event::{EventError, EventId, EventKind, Timestamp, VoiceEvent};
pub use frame::{ClientFrame, FrameError, Scope, ServerFrame};
pub use rejoin::{RejoinError, RejoinOutcome, RejoinQuery, RejoinRequest};
pub use signing::{Keyring, KeyringError, SignatureError, SignedEvent, Stamp};
pub use snowflake::{Snowflake, SnowflakeError};
pub use subject::{Subject, SubjectError};

/// The protocol version carried in every WebSocket frame (`"v":1`) and in
/// every bus subject (`.v1.`).
pub const VERSION: u8 = 1;
