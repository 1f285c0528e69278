//! A TCP stream that can be cut from outside, even after it was upgraded
//! to a WebSocket (the demo's "stop the edge" button).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Cuts every stream made with its [`KillSwitch::token`].
pub struct KillSwitch(CancellationToken);

impl KillSwitch {
    pub fn new() -> Self {
        Self(CancellationToken::new())
    }

    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }

    pub fn kill(&self) {
        self.0.cancel();
    }
}

pub struct Killable {
    inner: TcpStream,
    /// Only armed streams are cut: the demo arms WebSocket connections, so
    /// the HTTP request that pressed "stop" still gets its answer.
    armed: Arc<AtomicBool>,
    /// Polled on every read and write so that a kill wakes the task that
    /// owns the stream, wherever it is waiting.
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Killable {
    pub fn new(inner: TcpStream, token: CancellationToken, armed: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            armed,
            killed: Box::pin(token.cancelled_owned()),
        }
    }

    fn is_killed(&mut self, cx: &mut Context<'_>) -> bool {
        self.killed.as_mut().poll(cx).is_ready() && self.armed.load(Ordering::Relaxed)
    }
}

fn cut() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection cut")
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_killed(cx) {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
