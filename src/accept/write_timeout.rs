//! A write timeout for the player port's HTTP connections: a write that makes no progress for
//! the set time fails, so hyper closes the connection and drops its response (an event stream
//! and what it holds). A timer inside the response body could not do this: when the client
//! stops reading, hyper stops polling the body, and only the socket's writes are still polled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::info;

/// `inner` whose writes fail with `TimedOut` once one has been pending for `timeout` (zero: never).
pub(crate) struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    remote: SocketAddr,
    /// Armed while a write is pending; reused from one stall to the next.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration, remote: SocketAddr) -> Self {
        Self {
            inner,
            timeout,
            remote,
            timer: None,
            armed: false,
        }
    }

    /// Passes a finished write through and disarms; on a pending one, arms the timer (its waker
    /// is registered with `cx`, so the connection's task is polled again when it fires) and
    /// fails the write once it has fired.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() || self.timeout.is_zero() {
            self.armed = false;
            return poll;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            info!(
                remote = %self.remote,
                "HTTP connection closed: nothing could be written to it for {:?}", self.timeout
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn remote() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stalled_for_the_timeout_fails() {
        let (near, _far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(5), remote());
        // The 16-byte pipe takes 16 bytes; the rest waits for a reader that never comes.
        let err = io
            .write_all(&[0; 64])
            .await
            .expect_err("the write times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(5), remote());
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            let mut total = 0;
            while total < 256 {
                // Each read comes 4 s after the last: under the timeout every time.
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += far.read(&mut buf).await.expect("read");
            }
        });
        io.write_all(&[0; 256]).await.expect("no stall lasts 5 s");
        reader.await.expect("reader");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_never_times_out() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::ZERO, remote());
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let mut out = Vec::new();
            far.read_to_end(&mut out).await.expect("read");
            out.len()
        });
        io.write_all(&[0; 64]).await.expect("written after an hour");
        drop(io);
        assert_eq!(reader.await.expect("reader"), 64);
    }
}
