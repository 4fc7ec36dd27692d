//! API request limits per bot: requests per second and burst (the installation's default, or
//! the bot's own), for the whole installation. Each `api` replica knows how many replicas are
//! alive ([`Presence`]) and enforces its share: the rate divided by the replica count, the
//! burst divided too (at least 1). With a load balancer spreading requests evenly that adds up
//! to the bot's limit; uneven spreading can only make a bot hit its limit sooner, never let it
//! exceed it by more than the rounding.
//!
//! Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (this replica's
//! share, IETF draft `RateLimit` header fields); a refused request gets 429 with `Retry-After`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use patchbay_bus::Presence;
use patchbay_contract::RateLimit;
use patchbay_runtime::ApiError;

use crate::Api;
use crate::auth::{bearer_token, key_owner};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One replica's share of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Share {
    /// Time to earn one request.
    period: Duration,
    burst: u32,
}

impl Share {
    fn of(limit: RateLimit, replicas: usize) -> Self {
        let n = u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
        let per_second = f64::from(limit.per_second.max(1)) / f64::from(n);
        Self {
            period: Duration::from_secs_f64(1.0 / per_second),
            burst: (limit.burst / n).max(1),
        }
    }
}

/// The limiters of this replica, one per bot, rebuilt when the bot's limit or the replica count
/// changes.
pub(crate) struct Limits {
    default: RateLimit,
    presence: Presence,
    limiters: Mutex<HashMap<String, (Share, Arc<Limiter>)>>,
}

impl Limits {
    pub(crate) fn new(default: RateLimit, presence: Presence) -> Self {
        Self {
            default,
            presence,
            limiters: Mutex::default(),
        }
    }

    /// Counts one request of `bot_id` against its share: `Err(seconds to wait)` beyond it.
    pub(crate) fn admit(&self, bot_id: &str, limit: Option<RateLimit>) -> Result<(), u64> {
        let (_, limiter) = self.limiter(bot_id, limit);
        limiter.check().map(drop).map_err(|not_until| {
            metrics::counter!("patchbay_api_rate_limited_total").increment(1);
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        })
    }

    fn limiter(&self, bot_id: &str, limit: Option<RateLimit>) -> (Share, Arc<Limiter>) {
        let share = Share::of(limit.unwrap_or(self.default), self.presence.replicas());
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, l)) = map.get(bot_id)
            && *s == share
        {
            return (share, l.clone());
        }
        let burst = NonZeroU32::new(share.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(share.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter =
            Arc::new(RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>());
        map.insert(bot_id.to_owned(), (share, limiter.clone()));
        (share, limiter)
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: u64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

/// The bot credential a request carries, where the routes take one: a Bearer on `/v1`, the
/// key a Web1on1 token wraps (or the Bearer) on `/web1on1`, `?token=` on `/chat-api`.
fn credential(req: &Request) -> Option<String> {
    let path = req.uri().path();
    if path.starts_with("/v1/") {
        bearer_token(req.headers()).map(str::to_owned)
    } else if path.starts_with("/web1on1/") {
        crate::web1on1::credential(bearer_token(req.headers())?).ok()
    } else if path.starts_with("/chat-api/") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query()?).ok()?;
        pairs
            .into_iter()
            .find(|(k, v)| k == "token" && !v.is_empty())
            .map(|(_, v)| v)
    } else {
        None
    }
}

/// Applies the calling bot's limit to the requests of its credentials (`/v1`, and the
/// compatibility routes that take one); others pass (the handlers' own authentication
/// answers a missing or wrong key).
pub(crate) async fn limit(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let Some(key) = credential(&req) else {
        return next.run(req).await;
    };
    let Ok(Some(owner)) = key_owner(&api, &key).await else {
        return next.run(req).await;
    };
    let Some(bot) = owner.bot.clone() else {
        return next.run(req).await;
    };
    // The handler's authentication uses this instead of resolving the key again.
    req.extensions_mut().insert(owner);
    let (share, limiter) = api.limits.limiter(&bot.id, bot.rate_limit);
    let full_in = |remaining: u32| {
        (share.period * share.burst.saturating_sub(remaining))
            .as_secs_f64()
            .ceil() as u64
    };
    let chat_api = req.uri().path().starts_with("/chat-api/");
    match limiter.check() {
        Ok(state) => {
            let remaining = state.remaining_burst_capacity();
            let mut response = next.run(req).await;
            let h = response.headers_mut();
            set(h, "ratelimit-limit", u64::from(share.burst));
            set(h, "ratelimit-remaining", u64::from(remaining));
            set(h, "ratelimit-reset", full_in(remaining));
            response
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            metrics::counter!("patchbay_api_rate_limited_total").increment(1);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this bot may make {} requests at once and then one every {:?} on this \
                     replica; retry after {seconds} s",
                    share.burst, share.period
                ),
            );
            error.retry_after = Some(seconds);
            let mut response = if chat_api {
                // chat-api's own error shape.
                (
                    error.status,
                    [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                    axum::Json(serde_json::json!({"error": error.message})),
                )
                    .into_response()
            } else {
                error.into_response()
            };
            let h = response.headers_mut();
            set(h, "ratelimit-limit", u64::from(share.burst));
            set(h, "ratelimit-remaining", 0);
            set(h, "ratelimit-reset", seconds);
            response
        }
    }
}
