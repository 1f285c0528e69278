//! Drives events straight onto the bus: sealed with the contract's HMAC
//! (`SignedEvent::seal`), published on `{prefix}.v1.{guild}.{kind}` with the
//! contract headers, through JetStream (edge target, acks awaited in a
//! pipeline) or core NATS (nats-ws target).

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::HeaderMap;
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::{Map, Value};
use voicewatch_protocol::signing::{
    HEADER_KEY_ID, HEADER_MSG_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use voicewatch_protocol::{
    EventId, EventKind, Keyring, SignedEvent, Snowflake, Timestamp, VoiceEvent,
};

use crate::load::clock::{mono_ns, unix_ms};

#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishStats {
    pub published: u64,
    /// Publishes the bus refused or did not acknowledge.
    pub errors: u64,
    /// Events per guild index (acknowledged or not).
    #[serde(skip)]
    pub per_guild: Vec<u64>,
    pub seconds: f64,
    /// Slowest JetStream acknowledgement, ms.
    pub max_ack_ms: f64,
    /// Full path: events the worker published more than once (same id).
    pub repeated: u64,
}

pub struct Publisher {
    client: async_nats::Client,
    js: Option<async_nats::jetstream::Context>,
    keyring: Keyring,
    prefix: String,
    run: String,
    seq: u64,
}

impl Publisher {
    pub async fn connect(
        url: &str,
        jetstream: bool,
        keys: &str,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("voicewatch-load")
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let keyring = Keyring::parse(keys).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            js: jetstream.then(|| async_nats::jetstream::new(client.clone())),
            client,
            keyring,
            prefix: prefix.to_owned(),
            run: format!("{:08x}", rand::random::<u32>()),
            seq: 0,
        })
    }

    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Creates the stream if nobody has (normally the edge's bus has).
    pub async fn ensure_stream(&self, name: &str) -> anyhow::Result<()> {
        let Some(js) = &self.js else { return Ok(()) };
        if js.get_stream(name).await.is_ok() {
            return Ok(());
        }
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![voicewatch_protocol::subject::stream_subjects(&self.prefix)],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream {name}: {e}"))?;
        Ok(())
    }

    fn seal(&mut self, guild: u64) -> anyhow::Result<(String, HeaderMap, bytes::Bytes)> {
        self.seq += 1;
        let seq = self.seq;
        let mut extra = Map::new();
        extra.insert("lt".into(), Value::from(mono_ns()));
        extra.insert("ls".into(), Value::from(seq));
        let snow = |v: u64| Snowflake::new(v).context("zero id");
        let event = VoiceEvent {
            id: EventId::new(format!("ld-{}-{seq}", self.run))
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            kind: EventKind::Left,
            guild_id: snow(guild)?,
            user_id: snow(20_000_000 + seq % 1000)?,
            channel_id: None,
            previous_channel_id: Some(snow(4000)?),
            occurred_at: Timestamp::now(),
            extra,
        };
        let signed = SignedEvent::seal(&event, &self.keyring, unix_ms());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, signed.id.as_str());
        headers.insert(HEADER_TIMESTAMP, signed.stamp.timestamp.as_str());
        if let Some(kid) = &signed.stamp.key_id {
            headers.insert(HEADER_KEY_ID, kid.as_str());
        }
        headers.insert(HEADER_SIGNATURE, signed.stamp.signature.as_str());
        Ok((
            signed.subject.to_string_with(&self.prefix),
            headers,
            signed.payload,
        ))
    }

    /// Publishes `rate` events per second for `duration`, round-robin over
    /// `guilds` (ids); `total` caps the count (for probes).
    pub async fn run(
        &mut self,
        guilds: &[u64],
        rate: f64,
        duration: Duration,
        total: Option<u64>,
    ) -> PublishStats {
        let mut stats = PublishStats {
            per_guild: vec![0; guilds.len()],
            ..Default::default()
        };
        if guilds.is_empty() || rate <= 0.0 {
            return stats;
        }
        let start = Instant::now();
        let mut acks = FuturesUnordered::new();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut gi = 0usize;
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            let mut due = (elapsed.as_secs_f64() * rate) as u64;
            if let Some(t) = total {
                due = due.min(t);
            }
            while stats.published < due {
                let guild = guilds[gi];
                stats.per_guild[gi] += 1;
                gi = (gi + 1) % guilds.len();
                stats.published += 1;
                let Ok((subject, headers, payload)) = self.seal(guild) else {
                    stats.errors += 1;
                    continue;
                };
                match &self.js {
                    Some(js) => match js.publish_with_headers(subject, headers, payload).await {
                        Ok(ack) => {
                            let sent = Instant::now();
                            acks.push(ack.into_future().map(move |r| (r, sent)));
                        }
                        Err(_) => stats.errors += 1,
                    },
                    None => {
                        if self
                            .client
                            .publish_with_headers(subject, headers, payload)
                            .await
                            .is_err()
                        {
                            stats.errors += 1;
                        }
                    }
                }
                // Bound the acknowledgements in flight.
                while acks.len() > 2048 {
                    if let Some((r, sent)) = acks.next().await {
                        note_ack(&mut stats, r.is_ok(), sent);
                    }
                }
            }
            while let Some(Some((r, sent))) = acks.next().now_or_never() {
                note_ack(&mut stats, r.is_ok(), sent);
            }
            let done = match total {
                Some(t) => stats.published >= t,
                None => elapsed >= duration,
            };
            if done {
                break;
            }
        }
        let _ = self.client.flush().await;
        while let Some((r, sent)) = acks.next().await {
            note_ack(&mut stats, r.is_ok(), sent);
        }
        stats.seconds = start.elapsed().as_secs_f64();
        stats
    }
}

/// Full path: the simulator makes the changes, the worker publishes; this
/// counts what reached the bus, per guild index, to know what each client
/// must receive.
pub async fn run_full_path(
    client: async_nats::Client,
    prefix: &str,
    sim: std::net::SocketAddr,
    guilds: usize,
    users: u32,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<PublishStats> {
    let mut sub = client
        .subscribe(voicewatch_protocol::subject::stream_subjects(prefix))
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to the bus: {e}"))?;
    let start = Instant::now();
    let body = serde_json::json!({
        "guilds": guilds,
        "users": users,
        "rate": rate.round() as u64,
        "durationSecs": duration.as_secs_f64(),
    });
    let http = reqwest::Client::builder()
        .timeout(duration + Duration::from_secs(120))
        .build()?;
    let load = tokio::spawn(async move {
        http.post(format!("http://{sim}/control/load"))
            .json(&body)
            .send()
            .await
    });
    let mut stats = PublishStats {
        per_guild: vec![0; guilds],
        ..Default::default()
    };
    // A publish the worker retried reaches this core subscription twice but
    // is stored (and delivered by the edge) once: count event ids, not
    // messages.
    let mut seen = std::collections::HashSet::new();
    let mut count = |stats: &mut PublishStats, m: &async_nats::Message| {
        let guild = m
            .subject
            .as_str()
            .split('.')
            .nth(2)
            .and_then(|g| g.parse::<u64>().ok());
        // Only the load guilds count (the simulator also has demo guilds).
        let Some(i) = guild.and_then(crate::load::assign::sim_guild_index) else {
            return;
        };
        if i >= stats.per_guild.len() {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let first = serde_json::from_slice::<Id>(&m.payload).map_or(true, |e| seen.insert(e.id));
        if first {
            stats.published += 1;
            stats.per_guild[i] += 1;
        } else {
            stats.repeated += 1;
        }
    };
    tokio::pin!(load);
    let outcome = loop {
        tokio::select! {
            r = &mut load => break r,
            Some(m) = sub.next() => count(&mut stats, &m),
        }
    };
    match outcome {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => anyhow::bail!("simulator load run answered {}", resp.status()),
        Ok(Err(e)) => anyhow::bail!("simulator load run: {e}"),
        Err(e) => anyhow::bail!("simulator load run: {e}"),
    }
    // The worker publishes what the simulator dispatched last a moment later.
    let quiet = Duration::from_secs(2);
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        count(&mut stats, &m);
    }
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

fn note_ack(stats: &mut PublishStats, ok: bool, sent: Instant) {
    if !ok {
        stats.errors += 1;
    }
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    if ms > stats.max_ack_ms {
        stats.max_ack_ms = ms;
    }
}
