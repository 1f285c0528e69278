//! Just enough of the NATS client protocol to be a subscriber over
//! nats-server's WebSocket listener (the comparison target): server
//! operations arrive in binary frames that may hold several operations or
//! split one across frames, so bytes are buffered and parsed by line.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp {
    Info,
    Ping,
    Pong,
    Ok,
    Err(String),
    /// `MSG` or `HMSG`: the payload without headers.
    Msg(Bytes),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("NATS protocol: {0}")]
pub struct ProtoError(pub String);

#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

impl Parser {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete operation, `None` until more bytes arrive.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ProtoError> {
        let Some(eol) = find_crlf(&self.buf) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&self.buf[..eol])
            .map_err(|_| ProtoError("control line is not UTF-8".into()))?;
        let mut parts = line.split_ascii_whitespace();
        let op = parts.next().unwrap_or("").to_ascii_uppercase();
        let simple = |this: &mut Self, op: ServerOp| {
            this.buf.advance(eol + 2);
            Ok(Some(op))
        };
        match op.as_str() {
            "MSG" | "HMSG" => {
                let args: Vec<&str> = parts.collect();
                let (hdr, total) = if op == "MSG" {
                    let total = args.last().and_then(|s| s.parse::<usize>().ok());
                    (Some(0), total)
                } else {
                    let n = args.len();
                    let hdr = n.checked_sub(2).and_then(|i| args[i].parse::<usize>().ok());
                    let total = args.last().and_then(|s| s.parse::<usize>().ok());
                    (hdr, total)
                };
                let (Some(hdr), Some(total)) = (hdr, total) else {
                    return Err(ProtoError(format!("bad {op} line: {line}")));
                };
                if hdr > total {
                    return Err(ProtoError(format!("bad {op} sizes: {line}")));
                }
                let need = eol + 2 + total + 2;
                if self.buf.len() < need {
                    return Ok(None);
                }
                let mut frame = self.buf.split_to(need).freeze();
                frame.advance(eol + 2 + hdr);
                frame.truncate(total - hdr);
                Ok(Some(ServerOp::Msg(frame)))
            }
            "PING" => simple(self, ServerOp::Ping),
            "PONG" => simple(self, ServerOp::Pong),
            "+OK" => simple(self, ServerOp::Ok),
            "INFO" => simple(self, ServerOp::Info),
            "-ERR" => {
                let msg = line.get(4..).unwrap_or("").trim().to_owned();
                simple(self, ServerOp::Err(msg))
            }
            _ => Err(ProtoError(format!("unknown operation: {line}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_and_batched_operations() {
        let mut p = Parser::default();
        p.push(b"INFO {\"a\":1}\r\nPING\r\nMSG voice.v1.1.left 1 5\r\nhel");
        assert_eq!(p.next_op().unwrap(), Some(ServerOp::Info));
        assert_eq!(p.next_op().unwrap(), Some(ServerOp::Ping));
        assert_eq!(p.next_op().unwrap(), None);
        p.push(b"lo\r\nHMSG s 1 r 12 15\r\nNATS/1.0\r\n\r\nabc\r\n");
        assert_eq!(
            p.next_op().unwrap(),
            Some(ServerOp::Msg(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            p.next_op().unwrap(),
            Some(ServerOp::Msg(Bytes::from_static(b"abc")))
        );
        assert_eq!(p.next_op().unwrap(), None);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = Parser::default();
        p.push(b"WHAT\r\n");
        assert!(p.next_op().is_err());
    }
}
