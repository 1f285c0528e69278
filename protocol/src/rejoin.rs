//! The rejoin check (contract section 6): the HTTP body the browser sends,
//! the answer it gets, and the request the edge forwards to the worker over
//! the bus.

use serde::{Deserialize, Serialize};

use crate::snowflake::Snowflake;

/// `POST /api/voice/rejoin` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejoinRequest {
    pub guild_id: Snowflake,
    pub channel_id: Snowflake,
}

/// What the edge asks the worker (over request/reply): the user is the
/// token's `sub`, already authenticated by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejoinQuery {
    pub user_id: Snowflake,
    pub guild_id: Snowflake,
    pub channel_id: Snowflake,
}

/// Why a rejoin is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejoinError {
    Unauthorized,
    NotInGuild,
    ChannelNotFound,
    MissingPermissions,
    ChannelFull,
    DiscordError,
    RateLimited,
}

impl RejoinError {
    pub const ALL: [RejoinError; 7] = [
        RejoinError::Unauthorized,
        RejoinError::NotInGuild,
        RejoinError::ChannelNotFound,
        RejoinError::MissingPermissions,
        RejoinError::ChannelFull,
        RejoinError::DiscordError,
        RejoinError::RateLimited,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RejoinError::Unauthorized => "unauthorized",
            RejoinError::NotInGuild => "not_in_guild",
            RejoinError::ChannelNotFound => "channel_not_found",
            RejoinError::MissingPermissions => "missing_permissions",
            RejoinError::ChannelFull => "channel_full",
            RejoinError::DiscordError => "discord_error",
            RejoinError::RateLimited => "rate_limited",
        }
    }

    pub const fn http_status(self) -> u16 {
        match self {
            RejoinError::Unauthorized => 401,
            RejoinError::NotInGuild => 403,
            RejoinError::ChannelNotFound => 404,
            RejoinError::MissingPermissions => 403,
            RejoinError::ChannelFull => 409,
            RejoinError::DiscordError => 502,
            RejoinError::RateLimited => 429,
        }
    }

    /// A default human message for the answer's `message`.
    pub const fn default_message(self) -> &'static str {
        match self {
            RejoinError::Unauthorized => "token missing, invalid or expired, or guild not in token",
            RejoinError::NotInGuild => "you are not a member of this server",
            RejoinError::ChannelNotFound => "that voice channel no longer exists",
            RejoinError::MissingPermissions => "you may not connect to that voice channel",
            RejoinError::ChannelFull => "that voice channel is full",
            RejoinError::DiscordError => "Discord did not answer; try again",
            RejoinError::RateLimited => "too many rejoin checks; wait a moment",
        }
    }
}

/// The answer, both on the bus and (as JSON) to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejoinOutcome {
    Ok {
        guild_id: Snowflake,
        channel_id: Snowflake,
    },
    Refused {
        error: RejoinError,
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guild_id: Option<Snowflake>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel_id: Option<Snowflake>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<RejoinError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl RejoinOutcome {
    pub fn refused(error: RejoinError) -> Self {
        RejoinOutcome::Refused {
            error,
            message: error.default_message().to_owned(),
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            RejoinOutcome::Ok { .. } => 200,
            RejoinOutcome::Refused { error, .. } => error.http_status(),
        }
    }

    /// The contract's JSON answer.
    pub fn to_json(&self) -> String {
        let wire = match self {
            RejoinOutcome::Ok {
                guild_id,
                channel_id,
            } => Wire {
                ok: true,
                guild_id: Some(*guild_id),
                channel_id: Some(*channel_id),
                url: Some(format!(
                    "https://discord.com/channels/{guild_id}/{channel_id}"
                )),
                error: None,
                message: None,
            },
            RejoinOutcome::Refused { error, message } => Wire {
                ok: false,
                guild_id: None,
                channel_id: None,
                url: None,
                error: Some(*error),
                message: Some(message.clone()),
            },
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let w: Wire = serde_json::from_slice(bytes)?;
        match (w.ok, w.guild_id, w.channel_id, w.error) {
            (true, Some(guild_id), Some(channel_id), _) => Ok(RejoinOutcome::Ok {
                guild_id,
                channel_id,
            }),
            (false, _, _, Some(error)) => Ok(RejoinOutcome::Refused {
                error,
                message: w
                    .message
                    .unwrap_or_else(|| error.default_message().to_owned()),
            }),
            _ => Err(serde::de::Error::custom("inconsistent rejoin answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_answer_matches_contract() {
        let o = RejoinOutcome::Ok {
            guild_id: Snowflake::new(2000).unwrap(),
            channel_id: Snowflake::new(4000).unwrap(),
        };
        assert_eq!(
            o.to_json(),
            r#"{"ok":true,"guildId":"2000","channelId":"4000","url":"https://discord.com/channels/2000/4000"}"#
        );
        assert_eq!(RejoinOutcome::from_json(o.to_json().as_bytes()).unwrap(), o);
    }

    #[test]
    fn every_error_round_trips() {
        for e in RejoinError::ALL {
            let o = RejoinOutcome::refused(e);
            let j = o.to_json();
            assert!(j.contains(&format!(r#""error":"{}""#, e.as_str())), "{j}");
            assert_eq!(RejoinOutcome::from_json(j.as_bytes()).unwrap(), o);
        }
    }
}
