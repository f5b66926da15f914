//! The accept loop of the ingest and query listeners, hardened against slow and greedy
//! clients: headers must arrive within a deadline (slowloris), a request body may not stall
//! longer than an idle limit (slow bodies), and a listener holds a bounded number of
//! connections (the rest are closed at once and counted), so one client cannot hold the
//! process's sockets, tasks or memory.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to read a request's headers (also how long an idle keep-alive connection lives).
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_idle: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The defaults (10 s headers, 30 s body idle, 4096 connections), each overridable
    /// with `APUS_HTTP_HEADER_TIMEOUT_MS`, `APUS_HTTP_BODY_IDLE_MS`,
    /// `APUS_HTTP_MAX_CONNECTIONS`.
    pub fn from_env() -> HttpLimits {
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d)
        };
        HttpLimits {
            header_timeout: Duration::from_millis(env("APUS_HTTP_HEADER_TIMEOUT_MS", 10_000)),
            body_idle: Duration::from_millis(env("APUS_HTTP_BODY_IDLE_MS", 30_000)),
            max_connections: env("APUS_HTTP_MAX_CONNECTIONS", 4096) as usize,
        }
    }
}

/// Serve `app` on `listener` until the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    what: &'static str,
    limits: HttpLimits,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("apus_http_connections_refused_total", "listener" => what)
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                let req = req.map(|b| axum::body::Body::new(IdleBody::new(b, limits.body_idle)));
                Box::pin(app.oneshot(req))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .without_shutdown();
            match conn.await {
                Ok(parts) => {
                    // Only the socket lingers: the service and buffer go now.
                    let hyper::server::conn::http1::Parts {
                        io,
                        read_buf,
                        service,
                        ..
                    } = parts;
                    drop((read_buf, service));
                    linger(io.into_inner(), limits).await
                }
                Err(e) => tracing::debug!(error = %e, "{what}: connection closed"),
            }
        });
    }
}

/// Close a connection the way nginx's `lingering_close` does: send FIN, then read and
/// discard what the client still sends (a body the server answered early, such as a 413
/// for an oversized upload) until it closes too, so that the client reads the answer
/// instead of a reset. Bounded: [`LINGER_IDLE`] without data, [`LINGER_TOTAL`] in all,
/// one 4 KiB buffer (nginx's size).
async fn linger(mut stream: tokio::net::TcpStream, limits: HttpLimits) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if stream.shutdown().await.is_err() {
        return;
    }
    let idle = LINGER_IDLE.min(limits.body_idle);
    let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut buf = [0u8; 4096];
    loop {
        let wait = deadline.min(tokio::time::Instant::now() + idle);
        match tokio::time::timeout_at(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

/// How long a closing connection waits for more of what the client sends.
const LINGER_IDLE: Duration = Duration::from_secs(5);
/// The longest a closing connection keeps reading.
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// A request body that fails when no data arrives for `idle`.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body stalled for more than {} ms",
                    self.idle.as_millis()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::DefaultBodyLimit;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A client that sends its whole oversized body before reading the answer (as
    /// `reqwest` and `curl` without `Expect` do) gets the 413, not a reset: the server
    /// answered early, then kept reading until the client was done.
    #[tokio::test]
    async fn an_early_413_reaches_a_client_still_sending() {
        let app = axum::Router::new()
            .route(
                "/up",
                axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() }),
            )
            .layer(DefaultBodyLimit::max(1 << 20));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(5),
            body_idle: Duration::from_secs(5),
            max_connections: 8,
        };
        tokio::spawn(serve(l, app, "test", limits));
        let body = vec![b'x'; 16 << 20];
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        // 16 MB does not fit in the socket buffers: this only finishes if the server
        // reads what it does not want.
        c.write_all(&body)
            .await
            .expect("the server reset the connection instead of lingering");
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
}
