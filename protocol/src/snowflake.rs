//! Discord ids. On the wire they are decimal strings (JSON numbers lose
//! precision above 2^53 in browsers); in memory a non-zero `u64`.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Discord snowflake: a non-zero 64-bit id written as a decimal string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snowflake(NonZeroU64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnowflakeError {
    #[error("snowflake is empty")]
    Empty,
    #[error("snowflake must be decimal digits only")]
    NotDecimal,
    #[error("snowflake must not have leading zeros")]
    LeadingZero,
    #[error("snowflake does not fit in 64 bits")]
    Overflow,
    #[error("snowflake must not be zero")]
    Zero,
}

impl Snowflake {
    /// Builds a snowflake from a number; `None` for zero.
    pub const fn new(id: u64) -> Option<Self> {
        match NonZeroU64::new(id) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl FromStr for Snowflake {
    type Err = SnowflakeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SnowflakeError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SnowflakeError::NotDecimal);
        }
        if s == "0" {
            return Err(SnowflakeError::Zero);
        }
        // A canonical form keeps "0042" and "42" from being two spellings of
        // one id, which would break subject matching and de-duplication.
        if s.starts_with('0') {
            return Err(SnowflakeError::LeadingZero);
        }
        let n: u64 = s.parse().map_err(|_| SnowflakeError::Overflow)?;
        Snowflake::new(n).ok_or(SnowflakeError::Zero)
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snowflake({})", self.0)
    }
}

impl Serialize for Snowflake {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_decimal() {
        assert_eq!("2000".parse::<Snowflake>().map(Snowflake::get), Ok(2000));
        assert_eq!(
            "18446744073709551615"
                .parse::<Snowflake>()
                .map(Snowflake::get),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!("".parse::<Snowflake>(), Err(SnowflakeError::Empty));
        assert_eq!("0".parse::<Snowflake>(), Err(SnowflakeError::Zero));
        assert_eq!("012".parse::<Snowflake>(), Err(SnowflakeError::LeadingZero));
        assert_eq!("-1".parse::<Snowflake>(), Err(SnowflakeError::NotDecimal));
        assert_eq!("1e3".parse::<Snowflake>(), Err(SnowflakeError::NotDecimal));
        assert_eq!(
            "18446744073709551616".parse::<Snowflake>(),
            Err(SnowflakeError::Overflow)
        );
    }

    #[test]
    fn json_is_a_string() {
        let s: Snowflake = serde_json::from_str("\"123\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"123\"");
        assert!(serde_json::from_str::<Snowflake>("123").is_err());
    }
}
