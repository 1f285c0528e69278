//! One client's protocol state machine (contract section 4), in one task:
//! auth frame within the timeout → token → guild interest → replay → ack →
//! live (event frames, pings, refreshes) → close with a contract code, the
//! error frame first.
//!
//! The task owns the socket; nothing else writes to it. Event frames reach it
//! through the connection's bounded queue ([`ConnShared`]); closes requested
//! from outside (drain, slow consumer) through the same struct.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{Instant, sleep, sleep_until, timeout};
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

/// Serves one upgraded socket until it closes. `refused` closes it at once
/// (connection limits are answered with 4029 over the WebSocket, as the
/// contract asks).
pub(crate) async fn serve(
    mut socket: WebSocket,
    st: Arc<EdgeState>,
    slot: Result<ConnSlot, (CloseCode, &'static str)>,
) {
    let m = Arc::clone(&st.metrics);
    m.connections_opened.inc();
    m.connections.inc();
    let code = match slot {
        Err((code, message)) => Box::pin(close(&mut socket, &st, code, message)).await,
        Ok(slot) => {
            let mut conn = Conn {
                shared: Arc::clone(&slot.shared),
                st: &st,
                guilds: Vec::new(),
                joined: false,
                user: None,
                user_slot: None,
                expires: Instant::now(),
                last_cursor: Cursor::default(),
                tokens: st.args.inbound_burst,
                refill_at: Instant::now(),
                last_inbound: Instant::now(),
            };
            let end = conn.run(&mut socket).await;
            let code = match end {
                End::Close(code, message) => {
                    Box::pin(close(&mut socket, &st, code, &message)).await
                }
                End::PeerClosed(code) => {
                    // Lets tungstenite write its close reply.
                    let _ = timeout(st.close_timeout(), socket.recv()).await;
                    code
                }
                End::Gone => 0,
            };
            if conn.joined {
                st.hub.leave(slot.shared.id, &conn.guilds);
            }
            drop(conn);
            drop(slot);
            code
        }
    };
    m.closed(code);
    m.connections.dec();
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

struct Conn<'a> {
    shared: Arc<ConnShared>,
    st: &'a Arc<EdgeState>,
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
}

/// Frames written per turn before the socket is read again.
const WRITE_BATCH: usize = 64;

impl Conn<'_> {
    async fn run(&mut self, socket: &mut WebSocket) -> End {
        // Boxed: the auth path (replay, bus calls) is large and runs once;
        // an idle connection keeps only the live loop's state.
        match Box::pin(self.authenticate(socket)).await {
            Ok(()) => self.live(socket).await,
            Err(end) => end,
        }
    }

    fn requested_close(&self) -> End {
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
            _ = self.shared.close.notified() => Err(self.requested_close()),
            _ = self.st.hard_stop.cancelled() => Err(End::Gone),
            _ = sleep(stall) => Err(End::Gone),
        }
    }

    async fn send_event(&mut self, socket: &mut WebSocket, f: &EventFrame) -> Result<(), End> {
        self.send(socket, Message::Text(f.text.clone())).await?;
        self.last_cursor = f.cursor;
        self.st.metrics.events_delivered.inc();
        Ok(())
    }

    async fn authenticate(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let deadline = Instant::now() + Duration::from_millis(self.st.args.auth_timeout_ms);
        let frame = loop {
            tokio::select! {
                biased;
                _ = self.shared.close.notified() => return Err(self.requested_close()),
                _ = self.st.hard_stop.cancelled() => return Err(End::Gone),
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
        let Some(user_slot) = self.st.limits.acquire_user(self.st, claims.sub) else {
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
    async fn refresh(&mut self, socket: &mut WebSocket, token: &str) -> Result<(), End> {
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
        self.send(socket, Message::Text(frames::ack(self.last_cursor, true)))
            .await
    }

    async fn live(&mut self, socket: &mut WebSocket) -> End {
        let heartbeat = Duration::from_millis(self.st.args.heartbeat_ms.max(1));
        let ws_ping = Duration::from_millis(self.st.args.ws_ping_ms.max(1));
        let dead_after = self.st.dead_after();
        let mut next_heartbeat = Instant::now() + heartbeat;
        let mut next_ws_ping = Instant::now() + ws_ping;
        loop {
            if self.shared.close_requested().is_some() {
                return self.requested_close();
            }
            let mut written = 0;
            while written < WRITE_BATCH {
                let Some(f) = self.shared.pop() else { break };
                if let Err(end) = self.send_event(socket, &f).await {
                    return end;
                }
                written += 1;
            }
            let more = written == WRITE_BATCH;
            let wake = next_heartbeat
                .min(next_ws_ping)
                .min(self.expires)
                .min(self.last_inbound + dead_after);
            let step: Result<(), End> = tokio::select! {
                biased;
                _ = self.shared.close.notified() => Err(self.requested_close()),
                _ = self.st.hard_stop.cancelled() => Err(End::Gone),
                msg = socket.recv() => match self.inbound(msg) {
                    Err(end) => Err(end),
                    Ok(None) => Ok(()),
                    Ok(Some(ClientFrame::Ping)) => {
                        self.send(socket, Message::Text(frames::PONG)).await
                    }
                    Ok(Some(ClientFrame::Auth { token, .. })) => {
                        Box::pin(self.refresh(socket, &token)).await
                    }
                },
                _ = std::future::ready(()), if more => Ok(()),
                _ = self.shared.data.notified() => Ok(()),
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= self.expires {
                        Err(End::Close(CloseCode::TokenExpired, "token expired".into()))
                    } else if now >= self.last_inbound + dead_after {
                        self.st.metrics.dead_peers.inc();
                        Err(End::Gone)
                    } else if now >= next_heartbeat {
                        next_heartbeat = now + heartbeat;
                        self.send(socket, Message::Text(frames::PING)).await
                    } else if now >= next_ws_ping {
                        next_ws_ping = now + ws_ping;
                        self.send(socket, Message::Ping(Default::default())).await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
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
        (
            "Notified",
            std::mem::size_of::<tokio::sync::futures::Notified<'static>>(),
        ),
        (
            "Cancelled",
            std::mem::size_of::<tokio_util::sync::WaitForCancellationFuture<'static>>(),
        ),
        ("Conn", std::mem::size_of::<Conn<'static>>()),
        ("End", std::mem::size_of::<End>()),
        ("Message", std::mem::size_of::<Message>()),
    ]
}
