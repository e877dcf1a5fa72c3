//! The gateway's TCP listener, with a cap on open connections and an idle timeout.
//!
//! Each accepted connection holds a semaphore permit until it closes. At the cap the listener
//! stops accepting: new connections wait in the kernel's accept backlog, and past that the
//! kernel refuses them. So a flood of clients costs a bounded number of file descriptors and
//! tasks, never the console's own.
//!
//! A connection with no bytes moving either way for [`IDLE_TIMEOUT`] is closed, so idle
//! keep-alive connections, clients that stall halfway through a request and clients that stop
//! reading cannot hold places forever. (axum's `serve` sets no hyper timer, so hyper's own
//! header timeout is not available.) Event streams stay open: their keep-alive comments are
//! traffic.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Duration, Instant, Sleep},
};

/// Open connections the gateway serves at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may see no traffic at all. Longer than the event streams' 15 s
/// keep-alive and than any request timeout a stack would set.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl CappedListener {
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        CappedListener {
            inner,
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle,
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so this only waits for a connection to end.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => std::future::pending().await,
        };
        // axum's own accept logs and retries errors (EMFILE and the like) with a pause.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        (
            CappedStream {
                stream,
                _permit: permit,
                idle: self.idle,
                last_moved: Instant::now(),
                quiet: Box::pin(tokio::time::sleep(self.idle)),
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its permit; dropping it frees a place.
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    /// When bytes last moved either way.
    last_moved: Instant,
    /// Fires at the earliest `idle` after the last bytes moved. Not pushed back by every move
    /// (moving a timer in tokio's wheel costs far more than reading the clock): when it fires
    /// early, it is set again for `idle` after the last move.
    quiet: Pin<Box<Sleep>>,
}

impl CappedStream {
    /// Bytes moved: the connection is not idle.
    fn moved(&mut self) {
        self.last_moved = Instant::now();
    }

    /// Called when the socket is not ready: an error once the connection has been quiet too
    /// long (hyper then closes it), else `Pending` with the timer armed.
    fn idle_check<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        loop {
            if self.quiet.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_moved + self.idle;
            if due <= Instant::now() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle too long",
                )));
            }
            // Bytes moved since the timer was set: wait for the rest of the quiet time.
            self.quiet.as_mut().reset(due);
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.moved();
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.moved();
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.moved();
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_next_connection_waits_until_one_closes() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = inner.local_addr().unwrap();
        let mut listener = CappedListener::new(inner, 2, IDLE_TIMEOUT);
        let _c1 = TcpStream::connect(address).await.unwrap();
        let _c2 = TcpStream::connect(address).await.unwrap();
        let _c3 = TcpStream::connect(address).await.unwrap();
        let (first, _) = listener.accept().await;
        let (_second, _) = listener.accept().await;
        let third = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted over the cap"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(third.is_ok(), "a freed place was not reused");
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_and_a_busy_one_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = inner.local_addr().unwrap();
        let mut listener = CappedListener::new(inner, 4, Duration::from_millis(300));
        let mut client = TcpStream::connect(address).await.unwrap();
        let (mut server, _) = listener.accept().await;
        // Bytes every 100 ms keep it open past the idle timeout.
        let mut buf = [0u8; 8];
        for _ in 0..6 {
            client.write_all(b"x").await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(1), server.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n, 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then silence: the read fails with TimedOut, about when it should.
        let started = std::time::Instant::now();
        let quiet = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("the idle timeout never fired");
        assert_eq!(quiet.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }
}
