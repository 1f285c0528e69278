//! One connection's bounded outbound queue, shared between the hub (which
//! pushes event frames) and the connection task (which writes them).
//!
//! The queue holds `Arc<EventFrame>`s and counts their bytes; a push that
//! would pass the limit empties the queue and marks the connection for a
//! 4008 close instead, so one slow reader never holds memory or slows the
//! others. While a connection authenticates (replay in flight) pushes are
//! buffered and later filtered by cursor, so replay and live never overlap.
//!
//! The connection task is woken through one [`AtomicWaker`] for both new
//! frames and close requests: no `Notify` futures per connection, and a push
//! costs a lock-free wake rather than a waiter-list lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::task::Waker;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use voicewatch_protocol::{CloseCode, Cursor};

use crate::frames::EventFrame;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Authenticating: keep frames, deliver none yet.
    Buffering,
    Live,
    /// Over the limit: nothing more is queued; the connection closes.
    Overflowed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Arc<EventFrame>>,
    bytes: usize,
    mode: Mode,
    /// The position given in the ack (set by `go_live`): the hub may lag
    /// behind the stream the replay read, so frames at or below it can still
    /// arrive after going live; they were replayed or precede the ack.
    floor: Option<Cursor>,
}

/// What the hub, the listener and the drain hold of a connection.
#[derive(Debug)]
pub struct ConnShared {
    pub id: u64,
    state: Mutex<State>,
    limit: usize,
    /// The connection task, woken for new frames and close requests.
    waker: AtomicWaker,
    /// A polite close was requested with this code (0: none).
    close_code: AtomicU16,
    /// Drop the socket at once, no close handshake (drain deadline).
    hard_stop: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ConnShared {
    pub fn new(id: u64, limit: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                mode: Mode::Buffering,
                floor: None,
            }),
            limit,
            waker: AtomicWaker::new(),
            close_code: AtomicU16::new(0),
            hard_stop: AtomicBool::new(false),
            metrics,
        }
    }

    /// Queues a frame; false when it was not queued (overflow or closing).
    pub fn push(&self, frame: &Arc<EventFrame>) -> bool {
        let len = frame.len();
        let mut s = self.state.lock();
        if s.mode == Mode::Overflowed {
            return false;
        }
        if s.floor
            .is_some_and(|f| f.epoch == frame.cursor.epoch && frame.cursor.seq <= f.seq)
        {
            drop(s);
            self.metrics.dropped("duplicate");
            return true;
        }
        if s.bytes + len > self.limit {
            s.mode = Mode::Overflowed;
            let freed = s.bytes;
            s.frames = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.metrics.outbound_queue_bytes.dec_by(freed as i64);
            self.metrics.dropped("slow_consumer");
            self.request_close(CloseCode::SlowConsumer);
            return false;
        }
        s.frames.push_back(Arc::clone(frame));
        s.bytes += len;
        let live = s.mode == Mode::Live;
        drop(s);
        self.metrics.outbound_queue_bytes.inc_by(len as i64);
        if live {
            self.waker.wake();
        }
        true
    }

    /// Ends buffering: frames at or before `floor` (already replayed, or
    /// before the position given in the ack) are dropped, the rest delivered;
    /// later pushes at or before `floor` are dropped too.
    pub fn go_live(&self, floor: Cursor) {
        let mut s = self.state.lock();
        if s.mode != Mode::Buffering {
            return;
        }
        let before = s.bytes;
        s.frames
            .retain(|f| f.cursor.epoch != floor.epoch || f.cursor.seq > floor.seq);
        s.bytes = s.frames.iter().map(|f| f.len()).sum();
        s.mode = Mode::Live;
        s.floor = Some(floor);
        let has = !s.frames.is_empty();
        let freed = before - s.bytes;
        drop(s);
        self.metrics.outbound_queue_bytes.dec_by(freed as i64);
        if has {
            self.waker.wake();
        }
    }

    /// The next frame to write, when live. The caller lowers the
    /// `outbound_queue_bytes` gauge once per batch ([`Self::popped`]).
    pub fn pop(&self) -> Option<Arc<EventFrame>> {
        let mut s = self.state.lock();
        if s.mode != Mode::Live {
            return None;
        }
        let f = s.frames.pop_front()?;
        s.bytes -= f.len();
        if s.frames.is_empty() && s.frames.capacity() > 16 {
            // Give back what a burst grew; idle connections stay small.
            s.frames = VecDeque::new();
        }
        Some(f)
    }

    /// Accounts for `bytes` taken out with [`Self::pop`].
    pub fn popped(&self, bytes: usize) {
        if bytes > 0 {
            self.metrics.outbound_queue_bytes.dec_by(bytes as i64);
        }
    }

    /// Registers the connection task to be woken by pushes and closes.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Asks the connection task to close with `code` (the first request wins).
    pub fn request_close(&self, code: CloseCode) {
        if self
            .close_code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// Asks the connection task to drop its socket now, without a close
    /// handshake (the drain's deadline, or the edge being dropped).
    pub fn stop_now(&self) {
        self.hard_stop.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn stopped(&self) -> bool {
        self.hard_stop.load(Ordering::Acquire)
    }

    /// Resolves when a close or a hard stop is requested.
    pub async fn closing(&self) {
        std::future::poll_fn(|cx| {
            self.register(cx.waker());
            if self.stopped() || self.close_requested().is_some() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    pub fn close_requested(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close_code.load(Ordering::Acquire))
    }
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        let s = self.state.get_mut();
        if s.bytes > 0 {
            self.metrics.outbound_queue_bytes.dec_by(s.bytes as i64);
        }
    }
}
