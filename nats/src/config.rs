//! NATS options shared by every binary (`#[command(flatten)]` them).
//!
//! The names of protocol section 8 (`VOICEWATCH_NATS_URL`,
//! `VOICEWATCH_SUBJECT_PREFIX`, `VOICEWATCH_STREAM`) are fixed; the others
//! are this crate's.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Where the stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Storage {
    File,
    Memory,
}

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated. Unset: `standalone`/`demo` use
    /// the in-process bus; `worker`/`edge` refuse to start.
    #[arg(long = "nats-url", env = "VOICEWATCH_NATS_URL", value_delimiter = ',')]
    pub nats_url: Vec<String>,

    /// Subject prefix: events are published to `{prefix}.v1.{guild}.{kind}`.
    #[arg(long, env = "VOICEWATCH_SUBJECT_PREFIX", default_value = "voice")]
    pub subject_prefix: String,

    /// JetStream stream name.
    #[arg(long, env = "VOICEWATCH_STREAM", default_value = "VOICE")]
    pub stream: String,

    /// How long the stream keeps events (replay horizon), e.g. `24h`, `30m`.
    #[arg(long, env = "VOICEWATCH_STREAM_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub stream_max_age: Duration,

    /// JetStream de-duplication window for `Nats-Msg-Id`.
    #[arg(long, env = "VOICEWATCH_STREAM_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub stream_duplicate_window: Duration,

    /// Stream storage.
    #[arg(long, env = "VOICEWATCH_STREAM_STORAGE", value_enum, default_value_t = Storage::File)]
    pub stream_storage: Storage,

    /// Stream (and KV bucket) replicas; 3 in a 3-node cluster.
    #[arg(long, env = "VOICEWATCH_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// JetStream key/value bucket for small durable state.
    #[arg(long, env = "VOICEWATCH_KV_BUCKET", default_value = "VOICEWATCH_STATE")]
    pub kv_bucket: String,

    /// Events held while the bus is unreachable before publishers get
    /// back-pressure.
    #[arg(long, env = "VOICEWATCH_OUTBOX_SIZE", default_value_t = 10_000)]
    pub outbox_size: usize,

    /// Timeout of one JetStream operation (publish ack, stream info, KV).
    #[arg(long, env = "VOICEWATCH_NATS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_timeout: Duration,

    /// Timeout of establishing the first connection.
    #[arg(long, env = "VOICEWATCH_NATS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_connect_timeout: Duration,

    /// Longest pause between reconnect attempts.
    #[arg(long, env = "VOICEWATCH_NATS_RECONNECT_MAX_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub nats_reconnect_max_delay: Duration,
}

impl NatsArgs {
    /// The defaults, for `urls` (what an empty command line gives).
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            nats_url: urls.into_iter().map(Into::into).collect(),
            subject_prefix: "voice".into(),
            stream: "VOICE".into(),
            stream_max_age: Duration::from_secs(24 * 3600),
            stream_duplicate_window: Duration::from_secs(120),
            stream_storage: Storage::File,
            stream_replicas: 1,
            kv_bucket: "VOICEWATCH_STATE".into(),
            outbox_size: 10_000,
            nats_timeout: Duration::from_secs(5),
            nats_connect_timeout: Duration::from_secs(5),
            nats_reconnect_max_delay: Duration::from_secs(2),
        }
    }
}

/// `500ms`, `5s`, `2m`, `24h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 5s, 2m, 24h"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => return Err(format!("unknown duration unit {u:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn defaults_match_new_and_urls_split() {
        let cli = Cli::try_parse_from(["x", "--nats-url", "nats://a:1,nats://b:2"]).unwrap();
        let want = NatsArgs::new(["nats://a:1", "nats://b:2"]);
        assert_eq!(format!("{:?}", cli.nats), format!("{want:?}"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
