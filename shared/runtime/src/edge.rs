//! The HTTP listener and its bounds, so no client can hold the process's connections or make
//! it work for free: every connection is served by hyper's HTTP/1 server with a header read
//! timeout (which also closes kept-alive connections left idle), every request body must
//! arrive within a deadline once a handler reads it (408 and the connection closed), and
//! `/admin`, `/go`, the token exchange and the ingress routes are limited per client address (429 with
//! `Retry-After`), and a connection whose response makes no progress for the write timeout (a
//! client that stopped reading) is closed. The client address is the peer's, or, when the peer is a trusted proxy,
//! the last address in `X-Forwarded-For` that is not one ([`ClientIp`]).
//!
//! Stopping: the listener closes, every connection finishes the request in hand and closes,
//! and whatever is still open after the shutdown grace is dropped, so a held connection never
//! keeps the process from exiting.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use patchbay_config::{Config, TrustedProxies};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ApiError;

/// The client's address as [`serve`] determined it, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The bounds of the listener, from the configuration.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// hyper's header read timeout (and so the idle keep-alive bound).
    pub header_timeout: Duration,
    /// How long a body may take to arrive once read.
    pub body_timeout: Duration,
    /// How long writing a response may make no progress.
    pub write_timeout: Duration,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// The limit on `/admin` and `/go` per client address.
    pub public_limit: (u32, u32),
    /// The limit on the ingress routes per client address.
    pub ingress_limit: (u32, u32),
    /// How long open connections may take to finish once the process stops.
    pub grace: Duration,
}

impl EdgeSettings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            header_timeout: config.http_header_timeout(),
            body_timeout: config.http_body_timeout(),
            write_timeout: config.http_write_timeout(),
            trusted_proxies: config.http_trusted_proxies.clone(),
            public_limit: (config.http_ip_rate_per_second, config.http_ip_rate_burst),
            ingress_limit: (
                config.ingress_ip_rate_per_second,
                config.ingress_ip_rate_burst,
            ),
            grace: config.shutdown_grace(),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish within the
/// grace period and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    settings: EdgeSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let edge = Arc::new(Edge {
        body_timeout: settings.body_timeout,
        trusted_proxies: settings.trusted_proxies.clone(),
        public: IpLimits::new(settings.public_limit),
        ingress: IpLimits::new(settings.ingress_limit),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let edge = edge.clone();
            let router = router.clone();
            async move { Ok::<_, Infallible>(edge.handle(router, peer, req).await) }
        });
        let stream = WriteStall {
            io: stream,
            timeout: settings.write_timeout,
            sleep: None,
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let hard_stop = hard_stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = connection => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection closed with an error");
                    }
                }
                () = hard_stop.cancelled() => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
    hard_stop.cancel();
    Ok(())
}

struct Edge {
    body_timeout: Duration,
    trusted_proxies: TrustedProxies,
    public: IpLimits,
    ingress: IpLimits,
}

impl Edge {
    async fn handle(
        &self,
        router: axum::Router,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Response {
        let client = client_ip(&self.trusted_proxies, peer.ip(), req.headers());
        let limits = match limit_class(req.uri().path()) {
            Some(Class::Public) => Some(&self.public),
            Some(Class::Ingress) => Some(&self.ingress),
            None => None,
        };
        if let Some(limits) = limits
            && let Err(seconds) = limits.admit(client)
        {
            metrics::counter!("patchbay_http_ip_limited_total").increment(1);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from this address; retry after {seconds} s"),
            );
            error.retry_after = Some(seconds);
            return error.into_response();
        }
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        parts.extensions.insert(ClientIp(client));
        let body = Body::new(DeadlineBody {
            inner: body,
            timeout: self.body_timeout,
            sleep: None,
            timed_out: timed_out.clone(),
        });
        let response =
            match tower::ServiceExt::oneshot(router, Request::from_parts(parts, body)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        if timed_out.load(Ordering::Relaxed) {
            metrics::counter!("patchbay_http_body_timeouts_total").increment(1);
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        response
    }
}

/// Which per-address limit a path falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `/admin/…` and `/go/…`: the operator API and people's browsers.
    Public,
    /// Platforms' webhooks, custom channels' apps, platforms fetching bots' files (`/media`)
    /// BrandChat clients (`/brandchat`), BotDistrikt clients (`/api/webchat_apps`), chat-api
    /// and Web1on1 clients (`/chat-api`, `/web1on1`), UChat's partners and API chat systems
    /// (`/api/partner`, `/api/apichat`): machines, at machine rates.
    Ingress,
}

fn limit_class(path: &str) -> Option<Class> {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    // The token exchange has no Bearer, so no bot's request limit: its callers are limited
    // by address as the other public routes are. So are partners (a partner's key is no
    // bot's), at machine rates.
    if under("/admin")
        || under("/go")
        || path == "/v1/auth/token"
        || path == "/web1on1/v2/auth/token"
    {
        Some(Class::Public)
    } else if under("/webhooks")
        || under("/v1/custom")
        || under("/media")
        || under("/brandchat")
        || under("/v1/partner")
        || under("/api/webchat_apps")
        || under("/api/apichat")
        || under("/api/partner")
        || under("/chat-api")
        || under("/web1on1")
    {
        Some(Class::Ingress)
    } else {
        None
    }
}

/// The client of a request from `peer`: `peer` itself unless it is a trusted proxy, else the
/// last `X-Forwarded-For` address that is not a trusted proxy (the one the nearest trusted
/// proxy saw), or the first one when all are trusted.
pub fn client_ip(
    trusted: &TrustedProxies,
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The key an address is limited under: IPv4 as is, IPv6 by its /64 (one subscriber's
/// network), IPv4-mapped IPv6 as the IPv4 address.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

type KeyedLimiter =
    RateLimiter<IpAddr, governor::state::keyed::DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// Most addresses one limiter tracks; beyond it (after forgetting those back at a full
/// bucket), it starts over.
const MAX_TRACKED: usize = 100_000;

/// A token bucket per client address (GCRA), bounded in size.
struct IpLimits {
    quota: Quota,
    limiter: RwLock<Arc<KeyedLimiter>>,
    checks: AtomicU64,
}

impl IpLimits {
    fn new((per_second, burst): (u32, u32)) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            quota,
            limiter: RwLock::new(Arc::new(RateLimiter::keyed(quota))),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `ip`: `Err(seconds to wait)` beyond its limit.
    fn admit(&self, ip: IpAddr) -> Result<(), u64> {
        let limiter = self
            .limiter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 && limiter.len() > MAX_TRACKED
        {
            limiter.retain_recent();
            if limiter.len() > MAX_TRACKED {
                tracing::warn!(
                    tracked = limiter.len(),
                    "too many client addresses; limits start over"
                );
                *self.limiter.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(RateLimiter::keyed(self.quota));
            }
        }
        limiter.check_key(&limit_key(ip)).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }
}

/// A connection whose writes fail once they made no progress for `timeout`: a client that
/// stops reading cannot hold a response, and the connection, forever.
struct WriteStall {
    io: tokio::net::TcpStream,
    timeout: Duration,
    /// Armed when a write first waits, dropped when one makes progress.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteStall {
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.sleep = None;
            return r;
        }
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!("patchbay_http_write_timeouts_total").increment(1);
                Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for WriteStall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteStall {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, r)
    }
}

/// A request body that must arrive within `timeout` of the handler's first read; past it the
/// read fails and [`Edge::handle`] answers 408.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a body read gets past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let timeout = this.timeout;
        // The clock starts at the first read and is never reset: a body sent a byte at a time
        // gets no more time than one that stalls.
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimeout.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(s: &str) -> TrustedProxies {
        s.parse().unwrap_or_default()
    }

    fn xff(v: &str) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = proxies("10.0.0.0/8");
        let h = xff("198.51.100.7, 203.0.113.9, 10.0.0.2");
        // Not a proxy: the header is the client's own word.
        assert_eq!(client_ip(&trusted, ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // From the proxy: the last address it did not add itself.
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &h), ip("203.0.113.9"));
        // No header, or nothing parseable: the proxy.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &xff("unknown")),
            ip("10.0.0.1")
        );
        // Nothing trusted configured: always the peer.
        assert_eq!(client_ip(&proxies(""), ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn paths_fall_under_their_limits() {
        assert_eq!(limit_class("/admin/v1/bots"), Some(Class::Public));
        assert_eq!(limit_class("/go/abc"), Some(Class::Public));
        assert_eq!(limit_class("/v1/auth/token"), Some(Class::Public));
        assert_eq!(limit_class("/v1/auth/tokens"), None);
        assert_eq!(limit_class("/v1/partner/apps"), Some(Class::Ingress));
        assert_eq!(limit_class("/v1/partners"), None);
        assert_eq!(limit_class("/webhooks/telegram/ch_1"), Some(Class::Ingress));
        assert_eq!(limit_class("/webhooks/messenger"), Some(Class::Ingress));
        assert_eq!(
            limit_class("/v1/custom/ch_1/messages"),
            Some(Class::Ingress)
        );
        assert_eq!(limit_class("/media/bot_1/med_1"), Some(Class::Ingress));
        assert_eq!(
            limit_class("/brandchat/api/user/profile"),
            Some(Class::Ingress)
        );
        assert_eq!(limit_class("/mediafile"), None);
        assert_eq!(limit_class("/v1/messages"), None);
        assert_eq!(limit_class("/gone"), None);
        assert_eq!(limit_class("/healthz"), None);
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let limits = IpLimits::new((1, 2));
        let a = ip("192.0.2.1");
        assert!(limits.admit(a).is_ok());
        assert!(limits.admit(a).is_ok());
        let wait = limits.admit(a).expect_err("the burst is spent");
        assert!(wait >= 1);
        assert!(limits.admit(ip("192.0.2.2")).is_ok(), "another address");
    }
}
