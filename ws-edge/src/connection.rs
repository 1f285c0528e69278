//! One client's protocol state machine (contract section 4), in one task:
//! auth frame within the timeout → token → guild interest → replay → ack →
//! live (event frames, pings, refreshes) → close with a contract code, the
//! error frame first.
//!
//! The task owns the socket; nothing else writes to it. Event frames reach it
//! through the connection's bounded queue ([`ConnShared`]); closes requested
//! from outside (drain, slow consumer) through the same struct.
//!
//! Once live, the connection is one hand-written poll loop ([`Conn::poll_live`])
//! over the socket, the queue and a single timer. An idle connection is the
//! bulk of an edge's memory, and a delivery its hot path: the loop keeps no
//! per-await futures (one `Sleep`, reset only when its deadline moves), and a
//! delivery costs a wake, a pop and a socket write — no timer registration.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{Sink, Stream};
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout};
use voicewatch_protocol::{ClientFrame, CloseCode, Cursor, Scope, Snowflake};

use crate::frames::{self, EventFrame};
use crate::hub::now_ms;
use crate::listener::{ConnSlot, UserSlot};
use crate::outbound::ConnShared;
use crate::state::EdgeState;

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// We close with a contract code, error frame first.
    Close(CloseCode, Cow<'static, str>),
    /// The peer sent a close frame with this code.
    PeerClosed(u16),
    /// The socket is gone (EOF, I/O error, dead peer, hard stop).
    Gone,
}

/// Serves one upgraded socket until it closes. A refused `slot` closes it
/// at once (connection limits are answered with 4029 over the WebSocket, as
/// the contract asks).
///
/// Not an `async fn`: its arguments would be stored twice in the task (once
/// as arguments, once moved into the body), and a connection's task is most
/// of its memory. The future only borrows the [`Session`] it owns.
pub(crate) fn serve(
    socket: WebSocket,
    st: Arc<EdgeState>,
    slot: Result<ConnSlot, (CloseCode, &'static str)>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut session = Session { socket, st, slot };
    async move { session.run().await }
}

/// What one connection's task owns.
struct Session {
    socket: WebSocket,
    st: Arc<EdgeState>,
    slot: Result<ConnSlot, (CloseCode, &'static str)>,
}

impl Session {
    async fn run(&mut self) {
        let m = &self.st.metrics;
        m.connections_opened.inc();
        m.connections.inc();
        let code = match &self.slot {
            Err((code, message)) => {
                Box::pin(close(&mut self.socket, &self.st, *code, message)).await
            }
            Ok(slot) => {
                let mut conn = Conn {
                    shared: Arc::clone(&slot.shared),
                    st: Arc::clone(&self.st),
                    guilds: Vec::new(),
                    joined: false,
                    user: None,
                    user_slot: None,
                    expires: Instant::now(),
                    last_cursor: Cursor::default(),
                    tokens: self.st.args.inbound_burst,
                    refill_at: Instant::now(),
                    last_inbound: Instant::now(),
                    control: VecDeque::new(),
                    stalled_since: None,
                };
                let end = conn.run(&mut self.socket).await;
                let code = match end {
                    End::Close(code, message) => {
                        Box::pin(close(&mut self.socket, &self.st, code, &message)).await
                    }
                    End::PeerClosed(code) => {
                        // Lets tungstenite write its close reply.
                        let wait = timeout(self.st.close_timeout(), self.socket.recv());
                        let _ = Box::pin(wait).await;
                        code
                    }
                    End::Gone => 0,
                };
                if conn.joined {
                    self.st.hub.leave(conn.shared.id, &conn.guilds);
                }
                code
            }
        };
        let m = &self.st.metrics;
        m.closed(code);
        m.connections.dec();
    }
}

/// Writes the error frame and the close frame, waits briefly for the peer's
/// close, and returns the code.
async fn close(socket: &mut WebSocket, st: &EdgeState, code: CloseCode, message: &str) -> u16 {
    let polite = async {
        socket
            .send(Message::Text(frames::error(code, message)))
            .await?;
        socket
            .send(Message::Close(Some(CloseFrame {
                code: code.code(),
                reason: code.error_code().into(),
            })))
            .await?;
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    };
    tokio::select! {
        _ = timeout(st.close_timeout(), polite) => {}
        _ = st.hard_stop.cancelled() => {}
    }
    code.code()
}

struct Conn {
    shared: Arc<ConnShared>,
    st: Arc<EdgeState>,
    guilds: Vec<Snowflake>,
    joined: bool,
    user: Option<Snowflake>,
    user_slot: Option<UserSlot>,
    expires: Instant,
    last_cursor: Cursor,
    /// Inbound rate limit: a token bucket.
    tokens: f64,
    refill_at: Instant,
    last_inbound: Instant,
    /// Frames of our own to write before the next event frame (pong,
    /// heartbeat, WebSocket ping, refresh ack). Rare: allocated only while
    /// non-empty.
    control: VecDeque<Message>,
    /// Since when the socket has refused writes (a stalled peer is dropped
    /// after [`EdgeState::dead_after`]).
    stalled_since: Option<Instant>,
}

/// Frames written per poll before yielding to other connections.
const WRITE_BATCH: usize = 64;
/// Inbound messages handled per poll before yielding.
const READ_BATCH: usize = 16;

impl Conn {
    async fn run(&mut self, socket: &mut WebSocket) -> End {
        // Boxed: the auth path (replay, bus calls) is large and runs once;
        // an idle connection keeps only the live loop's state.
        match Box::pin(self.authenticate(socket)).await {
            Ok(()) => self.live(socket).await,
            Err(end) => end,
        }
    }

    fn requested_close(&self) -> End {
        if self.shared.stopped() {
            return End::Gone;
        }
        let code = self.shared.close_requested().unwrap_or(CloseCode::Restart);
        let message = match code {
            CloseCode::SlowConsumer => "outbound buffer over its limit",
            CloseCode::Restart => "service restart",
            _ => "closed by the server",
        };
        End::Close(code, message.into())
    }

    /// Reads one inbound message; `Ok(None)` for control frames.
    fn inbound(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Result<Option<ClientFrame>, End> {
        let msg = match msg {
            None => return Err(End::Gone),
            // Oversized or malformed WebSocket frames, bad UTF-8, ...
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read error");
                return Err(End::Close(
                    CloseCode::ProtocolError,
                    "malformed WebSocket frame".into(),
                ));
            }
            Some(Ok(m)) => m,
        };
        let now = Instant::now();
        self.last_inbound = now;
        if let Message::Close(c) = msg {
            return Err(End::PeerClosed(c.map_or(1005, |c| c.code)));
        }
        self.st.metrics.inbound_frames.inc();
        // Token bucket over every data and control frame.
        let rate = self.st.args.inbound_rate;
        let burst = self.st.args.inbound_burst;
        self.tokens = (self.tokens + (now - self.refill_at).as_secs_f64() * rate).min(burst);
        self.refill_at = now;
        if self.tokens < 1.0 {
            self.st.metrics.reject("inbound_rate");
            return Err(End::Close(CloseCode::RateLimited, "too many frames".into()));
        }
        self.tokens -= 1.0;
        match msg {
            Message::Text(t) => ClientFrame::parse(t.as_bytes())
                .map(Some)
                .map_err(|e| End::Close(CloseCode::ProtocolError, e.to_string().into())),
            Message::Binary(_) => Err(End::Close(
                CloseCode::ProtocolError,
                "binary frames are not part of the protocol".into(),
            )),
            _ => Ok(None),
        }
    }

    /// Writes one message unless a close is requested or the peer stalls.
    async fn send(&self, socket: &mut WebSocket, msg: Message) -> Result<(), End> {
        let stall = self.st.dead_after();
        tokio::select! {
            biased;
            r = socket.send(msg) => r.map_err(|_| End::Gone),
            _ = self.shared.closing() => Err(self.requested_close()),
            _ = sleep(stall) => Err(End::Gone),
        }
    }

    async fn authenticate(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let deadline = Instant::now() + Duration::from_millis(self.st.args.auth_timeout_ms);
        let frame = loop {
            tokio::select! {
                biased;
                _ = self.shared.closing() => return Err(self.requested_close()),
                msg = socket.recv() => {
                    if let Some(f) = self.inbound(msg)? {
                        break f;
                    }
                }
                _ = sleep_until(deadline) => {
                    self.st.metrics.auth_failure("timeout");
                    return Err(End::Close(CloseCode::AuthTimeout, "no auth frame in time".into()));
                }
            }
        };
        let ClientFrame::Auth {
            token,
            resume,
            scope,
        } = frame
        else {
            return Err(End::Close(
                CloseCode::ProtocolError,
                "the first frame must be auth".into(),
            ));
        };
        let claims = self.verify(&token)?;
        let Some(user_slot) = self.st.limits.acquire_user(&self.st, claims.sub) else {
            self.st.metrics.reject("per_user");
            return Err(End::Close(
                CloseCode::RateLimited,
                "too many connections for this user".into(),
            ));
        };
        self.user_slot = Some(user_slot);
        self.user = Some(claims.sub);
        let mut guilds = claims.guilds.clone();
        guilds.sort_unstable();
        guilds.dedup();
        self.guilds = guilds;
        let only_user = (scope == Scope::SelfOnly).then_some(claims.sub);
        let bus_timeout = Duration::from_millis(self.st.args.bus_timeout_ms);
        let unavailable = || End::Close(CloseCode::Restart, "event bus unavailable".into());

        // Interest first, then the position: every event stored after the
        // join is buffered live, every one before it is in the replay or
        // before the head; the overlap is cut by cursor in go_live.
        self.joined = true;
        if self
            .st
            .hub
            .join(&self.shared, &self.guilds, only_user, bus_timeout)
            .await
            .is_err()
        {
            self.joined = false;
            return Err(unavailable());
        }
        let cursor = resume.map(|c| c.parse::<Cursor>());
        let (head, recovered) = match cursor {
            Some(Ok(after)) => {
                let replay = match timeout(
                    bus_timeout,
                    self.st
                        .bus
                        .replay(&self.guilds, after, self.st.args.resume_max_events),
                )
                .await
                {
                    Ok(Ok(r)) => r,
                    _ => {
                        self.st.metrics.resume("error");
                        return Err(unavailable());
                    }
                };
                // The position after the replay: the head, or the last
                // replayed event if the bus read past its head.
                let mut position = replay.head;
                for d in &replay.events {
                    let same_epoch = d.cursor.epoch == after.epoch;
                    if same_epoch && d.cursor.seq <= after.seq {
                        self.st.metrics.dropped("duplicate");
                        continue;
                    }
                    if d.cursor.epoch == position.epoch && d.cursor.seq > position.seq {
                        position = d.cursor;
                    }
                    if !self.guilds.contains(&d.event.guild_id()) {
                        self.st.metrics.dropped("wrong_guild");
                        continue;
                    }
                    let Some(ev) = self.st.verifier.open(None, d, false) else {
                        continue;
                    };
                    if only_user.is_some_and(|u| u != ev.user_id) {
                        continue;
                    }
                    let Some(frame) = EventFrame::new(d, &ev, std::time::Instant::now()) else {
                        continue;
                    };
                    self.send(socket, Message::Text(frame.text.clone())).await?;
                    self.st.metrics.replayed_events.inc();
                }
                self.st.metrics.resume(if replay.recovered {
                    "recovered"
                } else {
                    "not_recovered"
                });
                (position, replay.recovered)
            }
            other => {
                if matches!(other, Some(Err(_))) {
                    self.st.metrics.resume("invalid_cursor");
                }
                match timeout(bus_timeout, self.st.bus.head()).await {
                    Ok(Ok(h)) => (h, false),
                    _ => return Err(unavailable()),
                }
            }
        };
        self.send(socket, Message::Text(frames::ack(head, recovered)))
            .await?;
        self.last_cursor = head;
        self.shared.go_live(head);
        self.expires = self.expiry(claims.exp);
        self.st.metrics.auth_ok.inc();
        Ok(())
    }

    fn verify(&self, token: &str) -> Result<voicewatch_protocol::Claims, End> {
        self.st.jwt.verify(token, now_ms() / 1000).map_err(|e| {
            self.st.metrics.auth_failure(e.reason());
            End::Close(CloseCode::AuthFailed, e.to_string().into())
        })
    }

    fn expiry(&self, exp: i64) -> Instant {
        let left_ms = exp.saturating_mul(1000).saturating_sub(now_ms()).max(0);
        Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
    }

    /// A later auth frame: a new token for the same user and no new guilds.
    /// Returns the ack to write.
    fn refresh(&mut self, token: &str) -> Result<Message, End> {
        let claims = self.verify(token)?;
        if Some(claims.sub) != self.user {
            self.st.metrics.auth_failure("refresh_subject");
            return Err(End::Close(
                CloseCode::AuthFailed,
                "a refreshed token must have the same sub".into(),
            ));
        }
        if !claims.guilds.iter().all(|g| self.guilds.contains(g)) {
            self.st.metrics.auth_failure("refresh_guilds");
            return Err(End::Close(
                CloseCode::AuthFailed,
                "a refreshed token may not add guilds".into(),
            ));
        }
        let removed: Vec<Snowflake> = self
            .guilds
            .iter()
            .filter(|g| !claims.guilds.contains(g))
            .copied()
            .collect();
        if !removed.is_empty() {
            self.st.hub.leave(self.shared.id, &removed);
            self.guilds.retain(|g| !removed.contains(g));
        }
        self.expires = self.expiry(claims.exp);
        self.st.metrics.auth_ok.inc();
        Ok(Message::Text(frames::ack(self.last_cursor, true)))
    }

    /// The live phase, until the connection ends.
    async fn live(&mut self, socket: &mut WebSocket) -> End {
        let now = Instant::now();
        let heartbeat = Duration::from_millis(self.st.args.heartbeat_ms.max(1));
        let ws_ping = Duration::from_millis(self.st.args.ws_ping_ms.max(1));
        let mut timers = Timers {
            heartbeat,
            ws_ping,
            dead_after: self.st.dead_after(),
            next_heartbeat: now + heartbeat,
            next_ws_ping: now + ws_ping,
        };
        let mut timer = std::pin::pin!(sleep_until(timers.next_wake(self)));
        poll_fn(|cx| self.poll_live(cx, socket, &mut timers, timer.as_mut())).await
    }

    /// One turn of the live phase: close requests, then everything the peer
    /// sent, then everything queued for it, then the timer.
    fn poll_live(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
        timers: &mut Timers,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<End> {
        // Registered before looking at the queue, so no push is missed.
        self.shared.register(cx.waker());
        if self.shared.stopped() || self.shared.close_requested().is_some() {
            return Poll::Ready(self.requested_close());
        }
        let mut socket = Pin::new(socket);
        // Stays true if the batch ran out before the socket said Pending:
        // nothing would wake us for the rest, so we wake ourselves.
        let mut more_to_read = true;
        for _ in 0..READ_BATCH {
            let msg = match socket.as_mut().poll_next(cx) {
                Poll::Pending => {
                    more_to_read = false;
                    break;
                }
                Poll::Ready(msg) => msg,
            };
            match self.inbound(msg) {
                Err(end) => return Poll::Ready(end),
                Ok(None) => {}
                Ok(Some(ClientFrame::Ping)) => self.control.push_back(Message::Text(frames::PONG)),
                Ok(Some(ClientFrame::Auth { token, .. })) => match self.refresh(&token) {
                    Ok(ack) => self.control.push_back(ack),
                    Err(end) => return Poll::Ready(end),
                },
            }
        }
        let mut written = 0;
        // Event frames and their bytes, accounted once per turn.
        let (mut delivered, mut popped) = (0u64, 0usize);
        let mut blocked = false;
        while written < WRITE_BATCH {
            match socket.as_mut().poll_ready(cx) {
                Poll::Pending => {
                    blocked = true;
                    break;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                Poll::Ready(Ok(())) => {}
            }
            let msg = if let Some(m) = self.control.pop_front() {
                m
            } else if let Some(f) = self.shared.pop() {
                popped += f.len();
                delivered += 1;
                self.last_cursor = f.cursor;
                Message::Text(f.text.clone())
            } else {
                break;
            };
            if socket.as_mut().start_send(msg).is_err() {
                self.shared.popped(popped);
                return Poll::Ready(End::Gone);
            }
            written += 1;
        }
        self.shared.popped(popped);
        if delivered > 0 {
            self.st.metrics.events_delivered.inc_by(delivered);
        }
        if written > 0 {
            if self.control.is_empty() && self.control.capacity() > 0 {
                self.control = VecDeque::new();
            }
            match socket.as_mut().poll_flush(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                Poll::Pending => blocked = true,
                Poll::Ready(Ok(())) => {}
            }
        }
        if blocked {
            self.stalled_since.get_or_insert_with(Instant::now);
        } else {
            self.stalled_since = None;
        }
        if written == WRITE_BATCH || more_to_read {
            // More may be queued or readable: let other tasks run, then
            // continue.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            let wake = timers.next_wake(self);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= self.expires {
                return Poll::Ready(End::Close(CloseCode::TokenExpired, "token expired".into()));
            }
            if now >= self.last_inbound + timers.dead_after {
                self.st.metrics.dead_peers.inc();
                return Poll::Ready(End::Gone);
            }
            if self
                .stalled_since
                .is_some_and(|t| now >= t + timers.dead_after)
            {
                return Poll::Ready(End::Gone);
            }
            let mut queued = false;
            if now >= timers.next_heartbeat {
                timers.next_heartbeat = now + timers.heartbeat;
                self.control.push_back(Message::Text(frames::PING));
                queued = true;
            }
            if now >= timers.next_ws_ping {
                timers.next_ws_ping = now + timers.ws_ping;
                self.control.push_back(Message::Ping(Default::default()));
                queued = true;
            }
            if queued && !blocked {
                // Write them on the next turn.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

/// The live phase's deadlines besides the token's expiry.
struct Timers {
    heartbeat: Duration,
    ws_ping: Duration,
    dead_after: Duration,
    next_heartbeat: Instant,
    next_ws_ping: Instant,
}

impl Timers {
    fn next_wake(&self, conn: &Conn) -> Instant {
        let mut wake = self
            .next_heartbeat
            .min(self.next_ws_ping)
            .min(conn.expires)
            .min(conn.last_inbound + self.dead_after);
        if let Some(t) = conn.stalled_since {
            wake = wake.min(t + self.dead_after);
        }
        wake
    }
}

/// Sizes of the per-connection state, for memory checks (`rss_edge`).
pub(crate) fn sizes() -> Vec<(&'static str, usize)> {
    fn ret<A, B, C, Fut>(_: fn(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }
    vec![
        ("serve future", ret(serve)),
        ("WebSocket", std::mem::size_of::<WebSocket>()),
        ("ConnShared", std::mem::size_of::<ConnShared>()),
        ("Sleep", std::mem::size_of::<tokio::time::Sleep>()),
        ("Conn", std::mem::size_of::<Conn>()),
        ("End", std::mem::size_of::<End>()),
        ("Message", std::mem::size_of::<Message>()),
    ]
}

#[cfg(test)]
mod tests {
    /// An idle connection's memory is mostly its task; this catches a change
    /// that makes the future balloon again (it was 1,928 bytes before the
    /// live phase became a poll loop and `serve` stopped copying its
    /// arguments; 1,008 after).
    #[test]
    fn the_connection_future_stays_small() {
        let sizes = super::sizes();
        let serve = sizes
            .iter()
            .find(|(name, _)| *name == "serve future")
            .map(|(_, n)| *n);
        assert!(serve.is_some_and(|n| n <= 1_200), "{sizes:?}");
    }
}
