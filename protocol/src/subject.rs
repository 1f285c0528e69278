//! Bus subjects: `{prefix}.v1.{guildId}.{kind}` (contract section 2).

use std::fmt;

use crate::event::EventKind;
use crate::snowflake::Snowflake;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "voice";
/// The default JetStream stream name.
pub const DEFAULT_STREAM: &str = "VOICE";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject prefix must be non-empty dot-separated tokens of [A-Za-z0-9_-]")]
    InvalidPrefix,
    #[error("subject is not {{prefix}}.v1.{{guildId}}.{{kind}}")]
    Malformed,
    #[error("subject has prefix {found:?}, expected {expected:?}")]
    WrongPrefix { expected: String, found: String },
    #[error("subject guild is not a snowflake")]
    InvalidGuild,
    #[error("unknown event kind {0:?} in subject")]
    UnknownKind(String),
}

/// Checks a prefix: one or more tokens without wildcards or whitespace.
pub fn validate_prefix(prefix: &str) -> Result<(), SubjectError> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(SubjectError::InvalidPrefix)
    }
}

/// Where one event is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject {
    pub guild_id: Snowflake,
    pub kind: EventKind,
}

impl Subject {
    pub fn new(guild_id: Snowflake, kind: EventKind) -> Self {
        Self { guild_id, kind }
    }

    /// `{prefix}.v1.{guild}.{kind}`.
    pub fn to_string_with(&self, prefix: &str) -> String {
        format!(
            "{prefix}.v1.{}.{}",
            self.guild_id,
            self.kind.subject_token()
        )
    }

    /// Parses a subject published under `prefix`.
    pub fn parse(prefix: &str, subject: &str) -> Result<Self, SubjectError> {
        let rest = subject
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(".v1."))
            .ok_or_else(|| match subject.split_once(".v1.") {
                Some((found, _)) => SubjectError::WrongPrefix {
                    expected: prefix.to_owned(),
                    found: found.to_owned(),
                },
                None => SubjectError::Malformed,
            })?;
        let (guild, kind) = rest.split_once('.').ok_or(SubjectError::Malformed)?;
        let guild_id = guild.parse().map_err(|_| SubjectError::InvalidGuild)?;
        let kind = EventKind::from_subject_token(kind)
            .ok_or_else(|| SubjectError::UnknownKind(kind.to_owned()))?;
        Ok(Self { guild_id, kind })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_with(DEFAULT_PREFIX))
    }
}

/// Every event subject of the stream: `{prefix}.v1.>`.
pub fn stream_subjects(prefix: &str) -> String {
    format!("{prefix}.v1.>")
}

/// Every event of one guild: `{prefix}.v1.{guild}.*`.
pub fn guild_filter(prefix: &str, guild_id: Snowflake) -> String {
    format!("{prefix}.v1.{guild_id}.*")
}

/// The request/reply subject of the rejoin check (outside the stream).
pub fn rejoin_rpc_subject(prefix: &str) -> String {
    format!("{prefix}.rpc.v1.rejoin")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    #[test]
    fn builds_and_parses() {
        let s = Subject::new(g(2000), EventKind::Left);
        assert_eq!(s.to_string_with("voice"), "voice.v1.2000.left");
        assert_eq!(Subject::parse("voice", "voice.v1.2000.left"), Ok(s));
        assert_eq!(
            Subject::parse("a.b", "a.b.v1.7.moved"),
            Ok(Subject::new(g(7), EventKind::Moved))
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Subject::parse("voice", "voice.v1.2000"),
            Err(SubjectError::Malformed)
        );
        assert_eq!(
            Subject::parse("voice", "voice.v1.x.left"),
            Err(SubjectError::InvalidGuild)
        );
        assert_eq!(
            Subject::parse("voice", "voice.v1.2000.gone"),
            Err(SubjectError::UnknownKind("gone".into()))
        );
        assert!(matches!(
            Subject::parse("voice", "other.v1.2000.left"),
            Err(SubjectError::WrongPrefix { .. })
        ));
        assert!(validate_prefix("voice").is_ok());
        assert!(validate_prefix("a.b").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b"] {
            assert_eq!(
                validate_prefix(bad),
                Err(SubjectError::InvalidPrefix),
                "{bad}"
            );
        }
    }
}
