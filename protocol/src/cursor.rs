//! Stream positions handed to clients as opaque cursors.
//!
//! A cursor is the stream sequence of the last event a client saw plus the
//! stream's epoch. The epoch changes when a stream is deleted and recreated
//! (sequences start over), so an old cursor is never mistaken for a
//! position in the new stream.

use std::fmt;
use std::str::FromStr;

/// `{epoch}-{seq}` on the wire; clients treat it as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor")]
pub struct CursorError;

impl Cursor {
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once('-').ok_or(CursorError)?;
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CursorError);
            }
            t.parse::<u64>().map_err(|_| CursorError)
        };
        Ok(Self {
            epoch: num(epoch)?,
            seq: num(seq)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cursor::new(1_764_000_000_000, 42);
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        for bad in ["", "1", "-1", "1-", "a-1", "1-2-3", "1--2"] {
            assert_eq!(bad.parse::<Cursor>(), Err(CursorError), "{bad}");
        }
    }
}
