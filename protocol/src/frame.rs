//! Browser WebSocket frames (contract section 4): one JSON object per text
//! frame, every one with `"v":1`.

use serde_json::Value;

use crate::close::CloseCode;
use crate::event::EventKind;

/// Whose events a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Every event of the token's guilds.
    #[default]
    Guild,
    /// Only events whose userId is the token's `sub`.
    SelfOnly,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Guild => "guild",
            Scope::SelfOnly => "self",
        }
    }
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Auth {
        token: String,
        /// The cursor of `"resume":{"cursor":C}`, kept as sent: cursors are
        /// opaque to clients and a bad one only means "not recovered".
        resume: Option<String>,
        scope: Scope,
    },
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not a JSON object")]
    NotJson,
    #[error("frame must carry \"v\":1")]
    UnsupportedVersion,
    #[error("frame has no string \"type\"")]
    MissingType,
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("auth frame needs a non-empty string \"token\"")]
    MissingToken,
    #[error("\"resume\" must be {{\"cursor\": string}}")]
    InvalidResume,
    #[error("\"scope\" must be \"guild\" or \"self\"")]
    InvalidScope,
    #[error("server frame is missing or has a bad {0:?}")]
    BadField(&'static str),
}

fn object(text: &[u8]) -> Result<serde_json::Map<String, Value>, FrameError> {
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(FrameError::NotJson),
    }
}

fn version_and_type(map: &serde_json::Map<String, Value>) -> Result<&str, FrameError> {
    if map.get("v").and_then(Value::as_u64) != Some(1) {
        return Err(FrameError::UnsupportedVersion);
    }
    map.get("type")
        .and_then(Value::as_str)
        .ok_or(FrameError::MissingType)
}

impl ClientFrame {
    /// Parses one client text frame. Unknown fields are ignored.
    pub fn parse(text: &[u8]) -> Result<Self, FrameError> {
        let map = object(text)?;
        match version_and_type(&map)? {
            "ping" => Ok(ClientFrame::Ping),
            "auth" => {
                let token = match map.get("token") {
                    Some(Value::String(t)) if !t.is_empty() => t.clone(),
                    _ => return Err(FrameError::MissingToken),
                };
                let resume = match map.get("resume") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(r)) => match r.get("cursor") {
                        Some(Value::String(c)) => Some(c.clone()),
                        _ => return Err(FrameError::InvalidResume),
                    },
                    Some(_) => return Err(FrameError::InvalidResume),
                };
                let scope = match map.get("scope") {
                    None | Some(Value::Null) => Scope::Guild,
                    Some(Value::String(s)) if s == "guild" => Scope::Guild,
                    Some(Value::String(s)) if s == "self" => Scope::SelfOnly,
                    Some(_) => return Err(FrameError::InvalidScope),
                };
                Ok(ClientFrame::Auth {
                    token,
                    resume,
                    scope,
                })
            }
            other => Err(FrameError::UnknownType(other.to_owned())),
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            ClientFrame::Ping => r#"{"v":1,"type":"ping"}"#.to_owned(),
            ClientFrame::Auth {
                token,
                resume,
                scope,
            } => {
                let mut out = format!(r#"{{"v":1,"type":"auth","token":{}"#, json_str(token));
                if let Some(c) = resume {
                    out.push_str(&format!(r#","resume":{{"cursor":{}}}"#, json_str(c)));
                }
                if *scope != Scope::Guild {
                    out.push_str(&format!(r#","scope":"{}""#, scope.as_str()));
                }
                out.push('}');
                out
            }
        }
    }
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    Ack {
        cursor: String,
        recovered: bool,
    },
    Event {
        event: EventKind,
        cursor: String,
        payload: Value,
    },
    Ping,
    Pong,
    Error {
        code: String,
        message: String,
    },
}

fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// `{"v":1,"type":"ping"}`: shared by every connection, built once.
pub const PING_JSON: &str = r#"{"v":1,"type":"ping"}"#;
/// `{"v":1,"type":"pong"}`.
pub const PONG_JSON: &str = r#"{"v":1,"type":"pong"}"#;

impl ServerFrame {
    /// The ack of a successful auth.
    pub fn ack_json(cursor: &str, recovered: bool) -> String {
        format!(
            r#"{{"v":1,"type":"ack","event":"auth.ok","cursor":{},"recovered":{recovered}}}"#,
            json_str(cursor)
        )
    }

    /// One event frame around the event's JSON bytes, which are inserted
    /// as they are: the edge builds this once per event and shares it
    /// between every connection of the guild.
    pub fn event_json(kind: EventKind, cursor: &str, payload_json: &str) -> String {
        format!(
            r#"{{"v":1,"type":"event","event":"{}","cursor":{},"payload":{payload_json}}}"#,
            kind.as_type(),
            json_str(cursor)
        )
    }

    /// The error frame sent just before closing with `close`.
    pub fn error_json(close: CloseCode, message: &str) -> String {
        format!(
            r#"{{"v":1,"type":"error","code":"{}","message":{}}}"#,
            close.error_code(),
            json_str(message)
        )
    }

    pub fn to_json(&self) -> String {
        match self {
            ServerFrame::Ack { cursor, recovered } => Self::ack_json(cursor, *recovered),
            ServerFrame::Event {
                event,
                cursor,
                payload,
            } => Self::event_json(*event, cursor, &payload.to_string()),
            ServerFrame::Ping => PING_JSON.to_owned(),
            ServerFrame::Pong => PONG_JSON.to_owned(),
            ServerFrame::Error { code, message } => format!(
                r#"{{"v":1,"type":"error","code":{},"message":{}}}"#,
                json_str(code),
                json_str(message)
            ),
        }
    }

    /// Parses a server frame (clients, tests and the load harness).
    pub fn parse(text: &[u8]) -> Result<Self, FrameError> {
        let map = object(text)?;
        let str_field = |name: &'static str| {
            map.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(FrameError::BadField(name))
        };
        match version_and_type(&map)? {
            "ping" => Ok(ServerFrame::Ping),
            "pong" => Ok(ServerFrame::Pong),
            "ack" => {
                if map.get("event").and_then(Value::as_str) != Some("auth.ok") {
                    return Err(FrameError::BadField("event"));
                }
                Ok(ServerFrame::Ack {
                    cursor: str_field("cursor")?,
                    recovered: map
                        .get("recovered")
                        .and_then(Value::as_bool)
                        .ok_or(FrameError::BadField("recovered"))?,
                })
            }
            "event" => {
                let event = map
                    .get("event")
                    .and_then(Value::as_str)
                    .and_then(EventKind::from_type)
                    .ok_or(FrameError::BadField("event"))?;
                let payload = match map.get("payload") {
                    Some(p @ Value::Object(_)) => p.clone(),
                    _ => return Err(FrameError::BadField("payload")),
                };
                Ok(ServerFrame::Event {
                    event,
                    cursor: str_field("cursor")?,
                    payload,
                })
            }
            "error" => Ok(ServerFrame::Error {
                code: str_field("code")?,
                message: str_field("message")?,
            }),
            other => Err(FrameError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_with_resume_and_scope() {
        let f = ClientFrame::parse(
            br#"{"v":1,"type":"auth","token":"t","resume":{"cursor":"1-2"},"scope":"self","x":1}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Auth {
                token: "t".into(),
                resume: Some("1-2".into()),
                scope: Scope::SelfOnly
            }
        );
        assert_eq!(ClientFrame::parse(f.to_json().as_bytes()).unwrap(), f);
    }

    #[test]
    fn event_frame_embeds_payload() {
        let j = ServerFrame::event_json(EventKind::Left, "1-5", r#"{"guildId":"2"}"#);
        assert_eq!(
            j,
            r#"{"v":1,"type":"event","event":"voice.left","cursor":"1-5","payload":{"guildId":"2"}}"#
        );
        assert!(matches!(
            ServerFrame::parse(j.as_bytes()),
            Ok(ServerFrame::Event { .. })
        ));
    }
}
