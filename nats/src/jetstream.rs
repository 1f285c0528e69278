//! The NATS JetStream [`Bus`].
//!
//! - Events are stored in one stream (`{prefix}.v1.>`, de-duplicated by
//!   `Nats-Msg-Id`).
//! - Live delivery uses the stream's RePublish to `{prefix}.live.v1.>`: only
//!   what the stream stored is republished (a refused duplicate never
//!   reaches subscribers), each message carrying `Nats-Sequence` and
//!   `Nats-Last-Sequence` (the previous sequence of the same subject). A
//!   subscriber that sees a previous sequence it never delivered, or whose
//!   connection reconnected or overflowed, refills from the stream with an
//!   ordered consumer before yielding anything later.
//! - Cursors are `{epoch}-{sequence}`, the epoch being the stream's creation
//!   time in unix nanoseconds, so a cursor of a deleted stream is never read
//!   as a position in its successor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Client, HeaderMap};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OnceCell, mpsc, watch};
use voicewatch_protocol::signing::{
    HEADER_KEY_ID, HEADER_MSG_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use voicewatch_protocol::subject::{guild_filter, stream_subjects, validate_prefix};
use voicewatch_protocol::{Cursor, SignedEvent, Snowflake, Stamp, Subject};

use crate::bus::{
    Bus, BusError, Delivery, DeliveryStream, IncomingRequest, PublishAck, Replay, RequestStream,
    Respond,
};
use crate::config::{NatsArgs, Storage};

/// The queue group of every served subject.
pub const QUEUE_GROUP: &str = "voicewatch";

const H_SEQUENCE: &str = "Nats-Sequence";
const H_LAST_SEQUENCE: &str = "Nats-Last-Sequence";
const H_SUBJECT: &str = "Nats-Subject";

/// The RePublish destination of the stream: `{prefix}.live.v1`.
pub fn live_prefix(prefix: &str) -> String {
    format!("{prefix}.live.v1")
}

/// The stream definition (also in `nats/conf/stream-VOICE.json`).
pub fn stream_config(args: &NatsArgs) -> stream::Config {
    stream::Config {
        name: args.stream.clone(),
        description: Some("voicewatch voice events (protocol v1)".into()),
        subjects: vec![stream_subjects(&args.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: args.stream_max_age,
        duplicate_window: args.stream_duplicate_window,
        storage: match args.stream_storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: args.stream_replicas.max(1),
        allow_direct: true,
        republish: Some(stream::Republish {
            source: stream_subjects(&args.subject_prefix),
            destination: format!("{}.>", live_prefix(&args.subject_prefix)),
            headers_only: false,
        }),
        ..Default::default()
    }
}

fn epoch_of(info: &stream::Info) -> u64 {
    // Creation time in nanoseconds: a delete and recreate inside one
    // millisecond still changes it. Before 1970 cannot happen.
    u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    args: NatsArgs,
    live: String,
    epoch: AtomicU64,
    /// Highest sequence seen in the current epoch; a lower one in an ack
    /// means the stream was recreated behind our back.
    high_water: AtomicU64,
    /// When (ms since `started`) a sequence regression last made us look
    /// at the stream: concurrent publishers see acks out of order, so
    /// regressions are checked at most once a second.
    last_regression_check: AtomicU64,
    started: std::time::Instant,
    /// Bumped after a reconnect (and re-provisioning) or a slow-consumer
    /// drop: live subscriptions refill from the stream.
    resync: watch::Sender<u64>,
    /// Follows the client's connection events.
    connected: watch::Sender<bool>,
    kv: OnceCell<kv::Store>,
    /// Stream-info requests shared by concurrent subscribers (see
    /// [`Inner::stream_info_after`]): a connect storm on an edge with many
    /// guilds would otherwise send one request per guild and time out.
    info_tickets: AtomicU64,
    info_lock: tokio::sync::Mutex<Option<(u64, stream::Info)>>,
}

/// The JetStream [`Bus`]. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl NatsBus {
    /// Connects, provisions the stream and the KV bucket, and starts
    /// following connection events.
    pub async fn connect(args: NatsArgs) -> Result<Self, BusError> {
        validate_prefix(&args.subject_prefix).map_err(|e| BusError::Config(e.to_string()))?;
        if args.nats_url.is_empty() {
            return Err(BusError::Config("VOICEWATCH_NATS_URL is not set".into()));
        }
        let addrs = args
            .nats_url
            .iter()
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Config(format!("VOICEWATCH_NATS_URL: {e}")))?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let max_delay = args.nats_reconnect_max_delay;
        let client = async_nats::ConnectOptions::new()
            .name("voicewatch")
            .connection_timeout(args.nats_connect_timeout)
            .request_timeout(Some(args.nats_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                // Fast first retries: a restarted server is usually back
                // within a second.
                let ms = 25u64.saturating_mul(1 << attempts.min(10));
                Duration::from_millis(ms).min(max_delay)
            })
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .connect(addrs)
            .await
            .map_err(unavailable)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(args.nats_timeout);
        let inner = Arc::new(Inner {
            client,
            js,
            live: live_prefix(&args.subject_prefix),
            args,
            epoch: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            last_regression_check: AtomicU64::new(0),
            started: std::time::Instant::now(),
            resync: watch::channel(0).0,
            connected: watch::channel(true).0,
            kv: OnceCell::new(),
            info_tickets: AtomicU64::new(0),
            info_lock: tokio::sync::Mutex::new(None),
        });
        let bus = Self { inner };
        bus.ensure_stream().await?;
        bus.kv().await?;
        tokio::spawn(follow_events(Arc::downgrade(&bus.inner), events_rx));
        Ok(bus)
    }

    pub fn args(&self) -> &NatsArgs {
        &self.inner.args
    }

    /// The underlying client (for tests and tools).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Waits until the client reports being connected (or not), as told
    /// by its connection events.
    pub async fn wait_connected(&self, connected: bool, timeout: Duration) -> Result<(), BusError> {
        let mut rx = self.inner.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c == connected))
            .await
            .map_err(|_| BusError::Timeout)?
            .map(|_| ())
            .map_err(|_| BusError::Closed)
    }

    /// Creates the stream or brings its configuration up to date; safe to
    /// call from every process at once. Returns the epoch.
    pub async fn ensure_stream(&self) -> Result<u64, BusError> {
        self.inner.ensure_stream().await
    }

    async fn kv(&self) -> Result<&kv::Store, BusError> {
        let inner = &self.inner;
        inner
            .kv
            .get_or_try_init(|| async {
                let cfg = kv::Config {
                    bucket: inner.args.kv_bucket.clone(),
                    history: 1,
                    storage: match inner.args.stream_storage {
                        Storage::File => stream::StorageType::File,
                        Storage::Memory => stream::StorageType::Memory,
                    },
                    num_replicas: inner.args.stream_replicas.max(1),
                    ..Default::default()
                };
                match inner.js.create_or_update_key_value(cfg).await {
                    Ok(store) => Ok(store),
                    Err(e) => match inner.js.get_key_value(&inner.args.kv_bucket).await {
                        Ok(store) => Ok(store),
                        Err(_) => Err(unavailable(e)),
                    },
                }
            })
            .await
    }
}

async fn follow_events(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<async_nats::Event>) {
    while let Some(event) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match event {
            async_nats::Event::Connected => {
                inner.connected.send_replace(true);
                tracing::info!("nats reconnected; re-provisioning the stream");
                // The server may have lost a memory stream, or this may be a
                // node that never saw it; subscriptions refill either way.
                if let Err(e) = inner.ensure_stream().await {
                    tracing::warn!(error = %e, "stream provisioning after reconnect failed");
                }
                inner.resync.send_modify(|g| *g += 1);
            }
            async_nats::Event::SlowConsumer(sid) => {
                tracing::warn!(sid, "nats slow consumer: live messages dropped; refilling");
                inner.resync.send_modify(|g| *g += 1);
            }
            async_nats::Event::Disconnected => {
                inner.connected.send_replace(false);
                tracing::warn!("nats disconnected");
            }
            other => tracing::info!(event = %other, "nats event"),
        }
    }
}

impl Inner {
    fn prefix(&self) -> &str {
        &self.args.subject_prefix
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn set_epoch(&self, epoch: u64, last_seq: u64) {
        let old = self.epoch.swap(epoch, Ordering::SeqCst);
        if old != epoch {
            if old != 0 {
                tracing::warn!(old, new = epoch, "stream epoch changed (stream recreated)");
            }
            self.high_water.store(last_seq, Ordering::SeqCst);
        } else {
            self.high_water.fetch_max(last_seq, Ordering::SeqCst);
        }
    }

    async fn ensure_stream(&self) -> Result<u64, BusError> {
        let cfg = stream_config(&self.args);
        let mut last_err = None;
        // Two processes creating at once: one create loses the race and the
        // retry updates what the other created.
        for _ in 0..3 {
            match self.js.create_or_update_stream(cfg.clone()).await {
                Ok(info) => {
                    let epoch = epoch_of(&info);
                    self.set_epoch(epoch, info.state.last_sequence);
                    return Ok(epoch);
                }
                Err(e) => {
                    use jetstream::context::CreateStreamErrorKind as K;
                    if matches!(e.kind(), K::JetStream(_)) {
                        tracing::warn!(error = %e, "stream create/update refused; retrying");
                    }
                    last_err = Some(e);
                }
            }
        }
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        Err(BusError::Unavailable(format!(
            "provisioning stream {}: {e}",
            self.args.stream
        )))
    }

    /// Stream info from a request sent after everything this client sent
    /// before the call (a SUB, say). Concurrent callers share requests: a
    /// caller reuses an answer whose request left after the caller took its
    /// ticket, so N subscribes at once cost one or two requests, not N.
    async fn stream_info_after(&self) -> Result<stream::Info, BusError> {
        let ticket = self.info_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.info_lock.lock().await;
        if let Some((sent_after, info)) = &*last
            && *sent_after >= ticket
        {
            return Ok(info.clone());
        }
        // Every ticket up to here was taken before this request is sent.
        let sent_after = self.info_tickets.load(Ordering::SeqCst);
        let info = self.stream_info().await?;
        *last = Some((sent_after, info.clone()));
        Ok(info)
    }

    async fn stream_info(&self) -> Result<stream::Info, BusError> {
        let stream = self
            .js
            .get_stream_no_info(&self.args.stream)
            .await
            .map_err(unavailable)?;
        let info = stream.get_info().await.map_err(unavailable)?;
        self.set_epoch(epoch_of(&info), info.state.last_sequence);
        Ok(info)
    }

    fn headers(event: &SignedEvent) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_MSG_ID, event.id.as_str());
        h.insert(HEADER_TIMESTAMP, event.stamp.timestamp.as_str());
        if let Some(kid) = &event.stamp.key_id {
            h.insert(HEADER_KEY_ID, kid.as_str());
        }
        h.insert(HEADER_SIGNATURE, event.stamp.signature.as_str());
        h
    }

    async fn publish_once(
        &self,
        subject: &str,
        event: &SignedEvent,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        self.js
            .publish_with_headers(
                subject.to_owned(),
                Self::headers(event),
                event.payload.clone(),
            )
            .await?
            .await
    }

    /// The event a stored or republished message carries; `None` (and a
    /// warning) for a message on the stream's subjects that does not
    /// follow the contract's subject layout.
    fn signed_event(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> Option<SignedEvent> {
        let subject = match Subject::parse(self.prefix(), subject) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(subject, error = %e, "skipping a stream message with a foreign subject");
                return None;
            }
        };
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        Some(SignedEvent {
            subject,
            id: get(HEADER_MSG_ID).unwrap_or_default(),
            payload,
            stamp: Stamp {
                timestamp: get(HEADER_TIMESTAMP).unwrap_or_default(),
                key_id: get(HEADER_KEY_ID),
                signature: get(HEADER_SIGNATURE).unwrap_or_default(),
            },
        })
    }

    /// Stored events of `guilds` after `after` (sequence) in order, at most
    /// `max`; the flag says more exist. The epoch is the caller's.
    async fn fetch_after(
        &self,
        guilds: &[Snowflake],
        after: u64,
        max: usize,
        epoch: u64,
    ) -> Result<(Vec<Delivery>, bool), BusError> {
        if guilds.is_empty() {
            return Ok((Vec::new(), false));
        }
        let stream = self
            .js
            .get_stream_no_info(&self.args.stream)
            .await
            .map_err(unavailable)?;
        let mut filters: Vec<String> = guilds
            .iter()
            .map(|g| guild_filter(self.prefix(), *g))
            .collect();
        filters.sort();
        filters.dedup();
        let (filter_subject, filter_subjects) = if filters.len() == 1 {
            (filters.pop().unwrap_or_default(), Vec::new())
        } else {
            (String::new(), filters)
        };
        let consumer: consumer::Consumer<consumer::pull::OrderedConfig> = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject,
                filter_subjects,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let mut out = Vec::with_capacity((pending as usize).min(max));
        let mut more = false;
        if pending > 0 && max > 0 {
            let mut messages = consumer.messages().await.map_err(unavailable)?;
            loop {
                let next = tokio::time::timeout(self.args.nats_timeout, messages.next())
                    .await
                    .map_err(|_| BusError::Timeout)?;
                let Some(msg) = next else { break };
                let msg = msg.map_err(unavailable)?;
                let info = msg.info().map_err(unavailable)?;
                let (seq, left) = (info.stream_sequence, info.pending);
                let m = msg.message;
                if let Some(event) =
                    self.signed_event(m.subject.as_str(), m.headers.as_ref(), m.payload)
                {
                    out.push(Delivery {
                        event,
                        cursor: Cursor::new(epoch, seq),
                    });
                }
                if left == 0 {
                    break;
                }
                if out.len() >= max {
                    more = true;
                    break;
                }
            }
        }
        // Ordered consumers expire on their own; deleting now keeps the
        // server's consumer count flat under many replays.
        let _ = stream.delete_consumer(&name).await;
        Ok((out, more))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, event: &SignedEvent) -> Result<PublishAck, BusError> {
        let inner = &self.inner;
        if inner.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".into()));
        }
        let subject = event.subject.to_string_with(inner.prefix());
        let mut result = inner.publish_once(&subject, event).await;
        if let Err(e) = &result
            && e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
        {
            // Deleted under us: provision again and retry once.
            inner.ensure_stream().await?;
            result = inner.publish_once(&subject, event).await;
        }
        let ack = result.map_err(|e| match e.kind() {
            jetstream::context::PublishErrorKind::TimedOut => BusError::Timeout,
            _ => unavailable(e),
        })?;
        if ack.sequence < inner.high_water.load(Ordering::SeqCst) {
            let now = inner.started.elapsed().as_millis() as u64;
            let last = inner.last_regression_check.load(Ordering::SeqCst);
            if now.saturating_sub(last) >= 1000
                && inner
                    .last_regression_check
                    .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                inner.stream_info().await?;
            }
        } else {
            inner.high_water.fetch_max(ack.sequence, Ordering::SeqCst);
        }
        Ok(PublishAck {
            cursor: Cursor::new(inner.epoch(), ack.sequence),
            duplicate: ack.duplicate,
        })
    }

    async fn subscribe(&self, guild: Snowflake) -> Result<DeliveryStream, BusError> {
        let inner = Arc::clone(&self.inner);
        let sub = inner
            .client
            .subscribe(format!("{}.{guild}.*", inner.live))
            .await
            .map_err(unavailable)?;
        // This request travels after the SUB on the same connection, so
        // every event stored after its answer is republished to us.
        let info = inner.stream_info_after().await?;
        let live = LiveSub {
            resync: inner.resync.subscribe(),
            inner,
            guild,
            sub,
            epoch: epoch_of(&info),
            last: info.state.last_sequence,
            last_ts: None,
            queue: std::collections::VecDeque::new(),
            needs_refill: false,
        };
        Ok(futures::stream::unfold(live, |mut s| async move {
            let d = s.next().await?;
            Some((d, s))
        })
        .boxed())
    }

    async fn head(&self) -> Result<Cursor, BusError> {
        // Shared with concurrent callers: every connecting client asks.
        let info = self.inner.stream_info_after().await?;
        Ok(Cursor::new(epoch_of(&info), info.state.last_sequence))
    }

    async fn replay(
        &self,
        guilds: &[Snowflake],
        after: Cursor,
        limit: usize,
    ) -> Result<Replay, BusError> {
        let info = self.inner.stream_info().await?;
        let epoch = epoch_of(&info);
        let last = info.state.last_sequence;
        let head = Cursor::new(epoch, last);
        let same_epoch = after.epoch == epoch && after.seq <= last;
        let from = if same_epoch { after.seq } else { 0 };
        // Anything between the cursor and the first kept sequence was
        // removed (age limit, purge): we cannot tell whose it was.
        let mut recovered = same_epoch && info.state.first_sequence <= from + 1;
        let mut guilds = guilds.to_vec();
        guilds.sort();
        guilds.dedup();
        let (events, more) = if from >= last {
            (Vec::new(), false)
        } else {
            // Right after a failover the cluster may still be electing the
            // leaders a consumer needs; a few quick retries ride it out.
            (|| self.inner.fetch_after(&guilds, from, limit, epoch))
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(Duration::from_secs(1))
                        .with_max_times(4),
                )
                .when(|e| matches!(e, BusError::Unavailable(_) | BusError::Timeout))
                .notify(|e, after| tracing::warn!(error = %e, retry_in = ?after, "replay failed; retrying"))
                .await?
        };
        if more {
            recovered = false;
        }
        // The fetch may run past the stream end seen above: the position a
        // client is at is never before the last event it was given.
        let head = match events.last() {
            Some(d) if d.cursor.seq > head.seq => d.cursor,
            _ => head,
        };
        Ok(Replay {
            events,
            recovered,
            head,
        })
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let req = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match tokio::time::timeout(
            timeout,
            self.inner.client.send_request(subject.to_owned(), req),
        )
        .await
        {
            Err(_) => Err(BusError::Timeout),
            Ok(Ok(msg)) => Ok(msg.payload),
            Ok(Err(e)) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::NoResponders(subject.to_owned())
                }
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout,
                _ => unavailable(e),
            }),
        }
    }

    async fn serve(&self, subject: &str) -> Result<RequestStream, BusError> {
        let sub = self
            .inner
            .client
            .queue_subscribe(subject.to_owned(), QUEUE_GROUP.to_owned())
            .await
            .map_err(unavailable)?;
        // A round trip after the SUB: once it returns the server knows we
        // serve (other servers of a cluster learn it a moment later).
        self.inner.js.query_account().await.map_err(unavailable)?;
        let client = self.inner.client.clone();
        Ok(sub
            .filter_map(move |msg| {
                let client = client.clone();
                async move {
                    let reply = msg.reply?;
                    Some(IncomingRequest {
                        payload: msg.payload,
                        responder: Box::new(NatsResponder { client, reply }),
                    })
                }
            })
            .boxed())
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Bytes>, BusError> {
        crate::validate_kv_key(key)?;
        let store = self.kv().await?;
        tokio::time::timeout(self.inner.args.nats_timeout, store.get(key))
            .await
            .map_err(|_| BusError::Timeout)?
            .map_err(unavailable)
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        crate::validate_kv_key(key)?;
        let store = self.kv().await?;
        tokio::time::timeout(self.inner.args.nats_timeout, store.put(key, value))
            .await
            .map_err(|_| BusError::Timeout)?
            .map(|_| ())
            .map_err(unavailable)
    }

    fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }
}

struct NatsResponder {
    client: Client,
    reply: async_nats::Subject,
}

#[async_trait]
impl Respond for NatsResponder {
    async fn respond(self: Box<Self>, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(self.reply, payload)
            .await
            .map_err(unavailable)
    }
}

/// One guild's live subscription: republished messages, checked against
/// the sequences already delivered, refilled from the stream on a gap.
struct LiveSub {
    inner: Arc<Inner>,
    guild: Snowflake,
    sub: async_nats::Subscriber,
    resync: watch::Receiver<u64>,
    epoch: u64,
    /// Sequence of the last event delivered (or skipped as foreign); every
    /// stored event of the guild up to it has been dealt with.
    last: u64,
    /// `Nats-Time-Stamp` (unix ns) of the last delivered live message.
    last_ts: Option<i128>,
    queue: std::collections::VecDeque<Delivery>,
    needs_refill: bool,
}

impl LiveSub {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(d) = self.queue.pop_front() {
                return Some(d);
            }
            if self.needs_refill {
                if let Err(e) = self.refill().await {
                    tracing::warn!(guild = %self.guild, error = %e, "refill failed; retrying");
                    // A retry pace, not synchronisation: wait for a
                    // reconnect or give the server a moment.
                    let _ = tokio::time::timeout(Duration::from_millis(250), self.resync.changed())
                        .await;
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = self.resync.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.needs_refill = true;
                }
                msg = self.sub.next() => {
                    let msg = msg?;
                    self.on_live(msg).await;
                }
            }
        }
    }

    async fn on_live(&mut self, msg: async_nats::Message) {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let Some(seq) = header(H_SEQUENCE).and_then(|s| s.parse::<u64>().ok()) else {
            tracing::warn!(subject = %msg.subject, "live message without Nats-Sequence; refilling");
            self.needs_refill = true;
            return;
        };
        let prev = header(H_LAST_SEQUENCE)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let ts = header("Nats-Time-Stamp").and_then(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp_nanos())
        });
        if seq <= self.last {
            // Normally a message already refilled from the stream; but a
            // newer timestamp with a lower sequence is a recreated stream.
            let newer = matches!((ts, self.last_ts), (Some(t), Some(l)) if t > l);
            if newer && let Ok(info) = self.inner.stream_info().await {
                let epoch = epoch_of(&info);
                if epoch != self.epoch {
                    self.epoch = epoch;
                    self.last = 0;
                    self.needs_refill = true;
                }
            }
            return;
        }
        if prev > self.last {
            // The stream holds an event of this guild we never saw.
            self.needs_refill = true;
            return;
        }
        let Some(original) = header(H_SUBJECT) else {
            self.needs_refill = true;
            return;
        };
        self.last = seq;
        self.last_ts = ts;
        if let Some(event) = self
            .inner
            .signed_event(&original, msg.headers.as_ref(), msg.payload)
        {
            self.queue.push_back(Delivery {
                event,
                cursor: Cursor::new(self.epoch, seq),
            });
        }
    }

    async fn refill(&mut self) -> Result<(), BusError> {
        let info = self.inner.stream_info().await?;
        let epoch = epoch_of(&info);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.last = 0;
        }
        loop {
            let (events, more) = self
                .inner
                .fetch_after(&[self.guild], self.last, 1024, self.epoch)
                .await?;
            let before = self.last;
            if let Some(d) = events.last() {
                self.last = d.cursor.seq;
            }
            self.queue.extend(events);
            if !more || self.last == before {
                break;
            }
        }
        // The fetch ran to the end of the stream as of (at least) `info`.
        self.last = self.last.max(info.state.last_sequence);
        self.needs_refill = false;
        Ok(())
    }
}
