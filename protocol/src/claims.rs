//! Client token claims (contract section 5). Signature checking belongs to
//! the edge (it owns the keys); the rules about what the claims must say
//! live here so that every producer of tokens can test against them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::snowflake::Snowflake;

/// The edge's default cap on the `guilds` claim.
pub const DEFAULT_MAX_GUILDS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The Discord user id.
    pub sub: Snowflake,
    /// Guilds whose events this connection may receive.
    pub guilds: Vec<Snowflake>,
    /// Expiry, seconds since the epoch. Required.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// A string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimsLimits {
    pub max_guilds: usize,
    /// Leeway for `exp`/`nbf`/`iat`, seconds.
    pub leeway_secs: i64,
}

impl Default for ClaimsLimits {
    fn default() -> Self {
        Self {
            max_guilds: DEFAULT_MAX_GUILDS,
            leeway_secs: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the guilds claim is empty")]
    NoGuilds,
    #[error("the guilds claim lists {got} guilds, more than the limit of {max}")]
    TooManyGuilds { max: usize, got: usize },
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
}

impl Claims {
    /// Checks the contract's rules at `now` (seconds since the epoch).
    pub fn validate(&self, now: i64, limits: ClaimsLimits) -> Result<(), ClaimsError> {
        if self.guilds.is_empty() {
            return Err(ClaimsError::NoGuilds);
        }
        if self.guilds.len() > limits.max_guilds {
            return Err(ClaimsError::TooManyGuilds {
                max: limits.max_guilds,
                got: self.guilds.len(),
            });
        }
        if self.exp <= now - limits.leeway_secs {
            return Err(ClaimsError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now + limits.leeway_secs) {
            return Err(ClaimsError::NotYetValid);
        }
        if self.iat.is_some_and(|iat| iat > now + limits.leeway_secs) {
            return Err(ClaimsError::IssuedInFuture);
        }
        Ok(())
    }

    pub fn allows_guild(&self, guild: Snowflake) -> bool {
        self.guilds.contains(&guild)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rules() {
        let l = ClaimsLimits::default();
        let ok = claims(r#"{"sub":"3001","guilds":["2000"],"exp":100}"#);
        assert_eq!(ok.validate(99, l), Ok(()));
        assert_eq!(ok.validate(100, l), Err(ClaimsError::Expired));
        let none = claims(r#"{"sub":"3001","guilds":[],"exp":100}"#);
        assert_eq!(none.validate(0, l), Err(ClaimsError::NoGuilds));
        let nbf = claims(r#"{"sub":"3001","guilds":["1"],"exp":100,"nbf":50}"#);
        assert_eq!(nbf.validate(49, l), Err(ClaimsError::NotYetValid));
        let many = Claims {
            guilds: (1..=101).filter_map(Snowflake::new).collect(),
            ..ok.clone()
        };
        assert_eq!(
            many.validate(0, l),
            Err(ClaimsError::TooManyGuilds { max: 100, got: 101 })
        );
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"x","guilds":["1"],"exp":1}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"1","guilds":["1"]}"#).is_err());
    }
}
