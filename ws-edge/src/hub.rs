//! Guild → connections, and the bus subscriptions behind them.
//!
//! The edge subscribes to a guild only while it has clients for it: the
//! first connection of a guild starts one task that owns the bus
//! subscription; the last one leaving stops it. That task is the only
//! reader of the guild's deliveries, so events of a guild are verified once,
//! encoded once and pushed to every connection in stream order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use voicewatch_bus::{Bus, BusError, Delivery};
use voicewatch_protocol::signing::OpenError;
use voicewatch_protocol::{CloseCode, Keyring, SignatureError, Snowflake, VoiceEvent};

use crate::frames::EventFrame;
use crate::metrics::Metrics;
use crate::outbound::ConnShared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    Pending,
    Ready,
    Failed,
}

struct Member {
    conn: Arc<ConnShared>,
    /// `scope: self`: only this user's events.
    only_user: Option<Snowflake>,
}

type Members = Arc<RwLock<Vec<Member>>>;

struct GuildEntry {
    members: Members,
    state: watch::Receiver<SubState>,
    task: AbortHandle,
}

/// How an event is checked before fan-out; shared with replay.
pub struct Verifier {
    pub keyring: Arc<Keyring>,
    pub tolerance_ms: i64,
    pub metrics: Arc<Metrics>,
}

impl Verifier {
    /// Opens a delivery of `guild` (live: with the freshness check), counting
    /// the reason when it is dropped.
    pub fn open(&self, guild: Option<Snowflake>, d: &Delivery, live: bool) -> Option<VoiceEvent> {
        if guild.is_some_and(|g| g != d.event.guild_id()) {
            self.metrics.dropped("wrong_guild");
            return None;
        }
        let now = live.then(now_ms);
        match d.event.open(&self.keyring, now, self.tolerance_ms) {
            Ok(e) => Some(e),
            Err(e) => {
                let reason = match e {
                    OpenError::Signature(SignatureError::MissingSignature) => "signature_missing",
                    OpenError::Signature(SignatureError::MalformedSignature) => {
                        "signature_malformed"
                    }
                    OpenError::Signature(
                        SignatureError::MissingTimestamp | SignatureError::MalformedTimestamp,
                    ) => "timestamp_malformed",
                    OpenError::Signature(SignatureError::UnknownKey(_)) => "unknown_key",
                    OpenError::Signature(SignatureError::Mismatch) => "signature_mismatch",
                    OpenError::Signature(SignatureError::Stale { .. }) => "stale",
                    OpenError::Event(_) => "invalid_event",
                    OpenError::SubjectMismatch => "subject_mismatch",
                };
                tracing::debug!(reason, id = %d.event.id, "dropped an event");
                self.metrics.dropped(reason);
                None
            }
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub struct Hub {
    bus: Arc<dyn Bus>,
    verifier: Arc<Verifier>,
    guilds: Mutex<HashMap<Snowflake, GuildEntry>>,
    metrics: Arc<Metrics>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        for (_, e) in self.guilds.get_mut().drain() {
            e.task.abort();
        }
    }
}

impl Hub {
    pub fn new(bus: Arc<dyn Bus>, verifier: Arc<Verifier>) -> Self {
        let metrics = Arc::clone(&verifier.metrics);
        Self {
            bus,
            verifier,
            guilds: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Adds a connection to guilds and waits until each one's subscription
    /// is live, so that every event stored from now on reaches `conn`
    /// (buffered until [`ConnShared::go_live`]).
    pub async fn join(
        &self,
        conn: &Arc<ConnShared>,
        guilds: &[Snowflake],
        only_user: Option<Snowflake>,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let mut waits = Vec::with_capacity(guilds.len());
        {
            let mut map = self.guilds.lock();
            for &g in guilds {
                let failed = map
                    .get(&g)
                    .is_some_and(|e| *e.state.borrow() == SubState::Failed);
                if failed && let Some(old) = map.remove(&g) {
                    old.task.abort();
                    self.metrics.guild_subscriptions.dec();
                }
                let entry = map.entry(g).or_insert_with(|| self.spawn_guild(g));
                entry.members.write().push(Member {
                    conn: Arc::clone(conn),
                    only_user,
                });
                waits.push(entry.state.clone());
            }
        }
        let ready = async {
            for mut w in waits {
                match w.wait_for(|s| *s != SubState::Pending).await {
                    Ok(s) if *s == SubState::Ready => {}
                    _ => return Err(BusError::Unavailable("guild subscription failed".into())),
                }
            }
            Ok(())
        };
        let r = match tokio::time::timeout(timeout, ready).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Timeout),
        };
        if r.is_err() {
            self.leave(conn.id, guilds);
        }
        r
    }

    /// Removes a connection from guilds; a guild left without connections is
    /// unsubscribed.
    pub fn leave(&self, conn_id: u64, guilds: &[Snowflake]) {
        let mut map = self.guilds.lock();
        for g in guilds {
            let Some(entry) = map.get(g) else { continue };
            let empty = {
                let mut m = entry.members.write();
                m.retain(|m| m.conn.id != conn_id);
                m.is_empty()
            };
            if empty && let Some(e) = map.remove(g) {
                e.task.abort();
                self.metrics.guild_subscriptions.dec();
            }
        }
    }

    pub fn subscribed_guilds(&self) -> usize {
        self.guilds.lock().len()
    }

    fn spawn_guild(&self, guild: Snowflake) -> GuildEntry {
        let members: Members = Arc::new(RwLock::new(Vec::new()));
        let (tx, rx) = watch::channel(SubState::Pending);
        self.metrics.guild_subscriptions.inc();
        let task = tokio::spawn(run_guild(
            guild,
            Arc::clone(&self.bus),
            Arc::clone(&self.verifier),
            Arc::clone(&members),
            tx,
        ));
        GuildEntry {
            members,
            state: rx,
            task: task.abort_handle(),
        }
    }
}

async fn run_guild(
    guild: Snowflake,
    bus: Arc<dyn Bus>,
    verifier: Arc<Verifier>,
    members: Members,
    state: watch::Sender<SubState>,
) {
    let metrics = Arc::clone(&verifier.metrics);
    let mut stream = match bus.subscribe(guild).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%guild, error = %e, "guild subscription failed");
            state.send_replace(SubState::Failed);
            return;
        }
    };
    state.send_replace(SubState::Ready);
    // A bus may hand the same stored event over twice (a live gap refilled
    // from the stream overlaps what already came); clients must never see
    // one twice or out of order, so anything at or before the last cursor of
    // this epoch is dropped.
    let mut last: Option<voicewatch_protocol::Cursor> = None;
    while let Some(d) = stream.next().await {
        let received = Instant::now();
        metrics.events_received.inc();
        if last.is_some_and(|l| l.epoch == d.cursor.epoch && d.cursor.seq <= l.seq) {
            metrics.dropped("duplicate");
            continue;
        }
        last = Some(d.cursor);
        let Some(event) = verifier.open(Some(guild), &d, true) else {
            continue;
        };
        let Some(frame) = EventFrame::new(&d, &event, received) else {
            metrics.dropped("encoding");
            continue;
        };
        let frame = Arc::new(frame.observed(Arc::clone(&metrics)));
        for m in members.read().iter() {
            if m.only_user.is_none_or(|u| u == frame.user) {
                m.conn.push(&frame);
            }
        }
    }
    // The bus closed this subscription: clients reconnect (to any edge) and
    // resume, rather than silently missing events.
    tracing::warn!(%guild, "guild subscription ended");
    state.send_replace(SubState::Failed);
    for m in members.read().iter() {
        m.conn.request_close(CloseCode::Restart);
    }
}
