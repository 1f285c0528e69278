//! One gateway connection: HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE,
//! RESUME → replay + RESUMED (or op 9 false), and the control messages a test
//! sends through [`super::Simulator`].

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::model::{self, frame};
use super::{Conn, Ctl, Inner, Session};

#[derive(Deserialize)]
struct Incoming {
    op: u8,
    #[serde(default)]
    d: Value,
}

#[derive(Deserialize)]
struct Identify {
    token: String,
    #[serde(default)]
    shard: Option<[u32; 2]>,
}

#[derive(Deserialize)]
struct Resume {
    token: String,
    session_id: String,
    seq: u64,
}

pub(crate) async fn serve(inner: Arc<Inner>, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn_id, interval) = inner.with(|st| {
        let id = st.next_id();
        st.conns.insert(
            id,
            Conn {
                tx,
                session: None,
                zombie: false,
            },
        );
        st.stats.connections += 1;
        (id, st.cfg.heartbeat_interval)
    });
    let hello = frame(
        None,
        None,
        10,
        &json!({"heartbeat_interval": interval.as_millis() as u64}),
    );
    if ws.send(Message::Text(hello.into())).await.is_ok() {
        run(&inner, conn_id, &mut ws, &mut rx).await;
    }
    inner.with(|st| {
        if let Some(conn) = st.conns.remove(&conn_id)
            && let Some(s) = conn.session.and_then(|sid| st.sessions.get_mut(&sid))
            && s.conn == Some(conn_id)
        {
            s.conn = None;
        }
        st.recount_active();
    });
}

async fn run(
    inner: &Inner,
    conn_id: u64,
    ws: &mut WebSocket,
    rx: &mut mpsc::UnboundedReceiver<Ctl>,
) {
    loop {
        tokio::select! {
            msg = ws.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => {
                        // Polling once more flushes the close reply the
                        // WebSocket layer queued, as Discord answers a close.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.recv()).await;
                        return;
                    }
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                match handle(inner, conn_id, text.as_str()) {
                    Action::None => {}
                    Action::Close(code, reason) => {
                        let _ = ws.send(close(code, reason)).await;
                        return;
                    }
                }
            }
            ctl = rx.recv() => match ctl {
                Some(Ctl::Frame(f)) => {
                    if ws.send(Message::Text(Utf8Bytes::from(&*f))).await.is_err() {
                        return;
                    }
                }
                Some(Ctl::Close(code, reason)) => {
                    let _ = ws.send(close(code, reason)).await;
                    return;
                }
                Some(Ctl::Drop) | None => return,
            },
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

enum Action {
    None,
    Close(u16, &'static str),
}

fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

fn handle(inner: &Inner, conn_id: u64, text: &str) -> Action {
    let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
        return Action::Close(4002, "decode error");
    };
    inner.with(|st| {
        match msg.op {
            1 => {
                st.stats.heartbeats += 1;
                if let Some(c) = st.conns.get(&conn_id)
                    && !c.zombie {
                        let _ = c.tx.send(Ctl::Frame(frame(None, None, 11, &Value::Null).into()));
                    }
                Action::None
            }
            2 => {
                let Ok(id) = serde_json::from_value::<Identify>(msg.d) else {
                    return Action::Close(4002, "decode error");
                };
                if strip_bot(&id.token) != st.cfg.token {
                    return Action::Close(4004, "authentication failed");
                }
                if st.conns.get(&conn_id).is_some_and(|c| c.session.is_some()) {
                    return Action::Close(4005, "already authenticated");
                }
                let [shard, total] = id.shard.unwrap_or([0, 1]);
                if total == 0 || shard >= total {
                    return Action::Close(4010, "invalid shard");
                }
                st.stats.identifies += 1;
                let n = st.next_id();
                let sid = format!("sim-session-{n}");
                st.sessions.insert(
                    sid.clone(),
                    Session { shard: (shard, total), seq: 0, buffer: Default::default(), conn: Some(conn_id), resumable: true },
                );
                if let Some(c) = st.conns.get_mut(&conn_id) {
                    c.session = Some(sid.clone());
                }
                let mine: Vec<u64> = st.guilds.keys().copied().filter(|g| model::shard_for(*g, total) == shard).collect();
                let resume_url = format!("ws://{}/resume", st.addr);
                let ready = json!({
                    "v": 10,
                    "user": {"id": "1000", "username": "voicewatch-sim", "discriminator": "0", "bot": true, "mfa_enabled": false},
                    "guilds": mine.iter().map(|g| json!({"id": g.to_string(), "unavailable": true})).collect::<Vec<_>>(),
                    "session_id": sid,
                    "resume_gateway_url": resume_url,
                    "application": {"id": "1000", "flags": 0},
                    "shard": [shard, total],
                });
                st.dispatch_raw(&sid, "READY", &ready.to_string());
                for g in mine {
                    if let Some(guild) = st.guilds.get(&g)
                        && !guild.unavailable {
                            let d = guild.to_guild_create().to_string();
                            st.dispatch_raw(&sid, "GUILD_CREATE", &d);
                        }
                }
                st.recount_active();
                Action::None
            }
            6 => {
                let Ok(r) = serde_json::from_value::<Resume>(msg.d) else {
                    return Action::Close(4002, "decode error");
                };
                if strip_bot(&r.token) != st.cfg.token {
                    return Action::Close(4004, "authentication failed");
                }
                let Some(tx) = st.conns.get(&conn_id).map(|c| c.tx.clone()) else { return Action::None };
                let ok = st.sessions.get(&r.session_id).is_some_and(|s| {
                    s.resumable
                        && r.seq <= s.seq
                        // Every dispatch after the client's seq must still be buffered.
                        && (r.seq == s.seq || s.buffer.front().is_some_and(|(first, _)| *first <= r.seq + 1))
                });
                if !ok {
                    st.stats.resumes_refused += 1;
                    st.sessions.remove(&r.session_id);
                    let _ = tx.send(Ctl::Frame(frame(None, None, 9, &json!(false)).into()));
                    return Action::None;
                }
                // Take the session over from any older connection.
                let old = st.sessions.get(&r.session_id).and_then(|s| s.conn);
                if let Some(old) = old.filter(|o| *o != conn_id)
                    && let Some(c) = st.conns.get_mut(&old) {
                        c.session = None;
                        let _ = c.tx.send(Ctl::Drop);
                    }
                if let Some(c) = st.conns.get_mut(&conn_id) {
                    c.session = Some(r.session_id.clone());
                }
                if let Some(s) = st.sessions.get_mut(&r.session_id) {
                    s.conn = Some(conn_id);
                    for (seq, f) in &s.buffer {
                        if *seq > r.seq {
                            let _ = tx.send(Ctl::Frame(f.clone()));
                        }
                    }
                }
                st.stats.resumes_ok += 1;
                st.dispatch_raw(&r.session_id, "RESUMED", "{}");
                st.recount_active();
                Action::None
            }
            // Presence, voice and member requests: accepted and ignored.
            3 | 4 | 8 => Action::None,
            _ => Action::Close(4001, "unknown opcode"),
        }
    })
}
