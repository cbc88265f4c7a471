//! One client connection: `TCP_NODELAY`, the header and idle cut-offs, and
//! HTTP/1.1 served by hyper.
//!
//! A connection is in one of three phases:
//!
//! - **head**: the client owes us a request head. It has
//!   [`ConnectionLimits::header_timeout`] from the moment the connection was
//!   accepted, or from the first byte of a later request, to send all of it
//!   (a slowloris client that trickles header lines is cut off at the same
//!   deadline: bytes do not extend it).
//! - **busy**: at least one request is being answered (from the moment its
//!   head is parsed until its response body is dropped by hyper, which
//!   happens once the last byte is written or the connection fails). No
//!   limit applies: an image build may take minutes and a slow reader may
//!   take long to download a large blob.
//! - **idle**: a keep-alive connection between requests. It is closed when
//!   no byte of a new request arrives within
//!   [`ConnectionLimits::idle_timeout`].
//!
//! The phases are enforced in [`Watched`], the socket wrapper hyper reads
//! from: when a read would wait and the deadline has passed, the read fails
//! with `TimedOut` and hyper closes the connection.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, HttpBody},
};
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tower::ServiceExt;

/// Default [`ConnectionLimits::header_timeout`] (`NIXERY_HEADER_TIMEOUT`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ConnectionLimits::idle_timeout`] (`NIXERY_IDLE_TIMEOUT`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may take to send a request head, and to start the
/// next request on a keep-alive connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time from a request's start to the end of its head.
    pub header_timeout: Duration,
    /// Longest time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Where a connection is in its life; see the module docs.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Head { deadline: Instant },
    Busy { requests: usize },
    Idle { deadline: Instant },
}

/// The phase of one connection, shared by its socket and its service.
#[derive(Debug)]
struct Clock {
    limits: ConnectionLimits,
    phase: Mutex<Phase>,
    /// The read that waited while the connection was busy: woken when the
    /// connection turns idle, so that the idle deadline is armed.
    reader: AtomicWaker,
}

impl Clock {
    fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            phase: Mutex::new(Phase::Head {
                deadline: Instant::now() + limits.header_timeout,
            }),
            reader: AtomicWaker::new(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Phase) -> T) -> T {
        let mut phase = self.phase.lock();
        f(&mut phase)
    }

    /// A request head was parsed: the connection is busy until the
    /// returned guard is dropped.
    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.with(|phase| {
            *phase = match *phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
            }
        });
        RequestGuard {
            clock: self.clone(),
        }
    }

    fn request_finished(&self) {
        let idle_timeout = self.limits.idle_timeout;
        let now_idle = self.with(|phase| match *phase {
            Phase::Busy { requests } if requests > 1 => {
                *phase = Phase::Busy {
                    requests: requests - 1,
                };
                false
            }
            Phase::Busy { .. } => {
                *phase = Phase::Idle {
                    deadline: Instant::now() + idle_timeout,
                };
                true
            }
            Phase::Head { .. } | Phase::Idle { .. } => false,
        });
        if now_idle {
            self.reader.wake();
        }
    }

    /// Bytes arrived from the client: an idle connection starts a head.
    fn bytes_received(&self) {
        let header_timeout = self.limits.header_timeout;
        self.with(|phase| {
            if let Phase::Idle { .. } = *phase {
                *phase = Phase::Head {
                    deadline: Instant::now() + header_timeout,
                };
            }
        });
    }

    /// The deadline for the client's next bytes, if one applies now.
    fn deadline(&self) -> Option<Instant> {
        self.with(|phase| match *phase {
            Phase::Head { deadline } | Phase::Idle { deadline } => Some(deadline),
            Phase::Busy { .. } => None,
        })
    }

    fn is_idle(&self) -> bool {
        self.with(|phase| matches!(phase, Phase::Idle { .. }))
    }
}

/// Marks one request in flight; dropping it ends the request.
#[derive(Debug)]
struct RequestGuard {
    clock: Arc<Clock>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.clock.request_finished();
    }
}

/// The accepted socket, failing reads once the client is late.
pub struct Watched {
    stream: TcpStream,
    clock: Arc<Clock>,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, clock: Arc<Clock>) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(Instant::now()));
        Self {
            stream,
            clock,
            timer,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some(deadline) = this.clock.deadline() else {
                    this.clock.reader.register(cx.waker());
                    // The request may have ended since the phase was read.
                    if this.clock.deadline().is_some() {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let what = if this.clock.is_idle() {
                            "idle keep-alive connection"
                        } else {
                            "request head not received"
                        };
                        tracing::debug!(reason = what, "closing connection");
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The application as a hyper service that tells the connection's clock
/// when each request starts and ends.
#[derive(Clone)]
pub struct Tracked {
    app: Router,
    clock: Arc<Clock>,
    /// The client's address, given to handlers as `ConnectInfo` (the
    /// failed-login allowance is kept per address).
    peer: Option<std::net::SocketAddr>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.clock.request_started();
        let mut request = request.map(Body::new);
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that ends its request when hyper drops it.
pub struct TrackedBody {
    body: Body,
    _guard: RequestGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Prepare an accepted socket: `TCP_NODELAY` on (responses leave as soon as
/// they are written instead of waiting for the client's delayed ACK), and
/// the limits of `limits` on reads. Returns the socket and the service that
/// must answer its requests.
pub fn prepare(stream: TcpStream, app: Router, limits: ConnectionLimits) -> (Watched, Tracked) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
    }
    let clock = Clock::new(limits);
    let peer = stream.peer_addr().ok();
    (
        Watched::new(stream, clock.clone()),
        Tracked { app, clock, peer },
    )
}
