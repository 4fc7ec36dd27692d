//! The load generator: closed loop (N workers, each waits for its own message to come out at
//! the far end before sending the next) and open loop (a paced schedule at a fixed offered
//! rate; latency counted from the scheduled time, so a stalled system cannot hide its queue).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patchbay_wechat::crypto::AesKey;
use serde_json::{Value, json};

use crate::fakes::{Fakes, Recorder};
use crate::stack::{Bot, Stack, WechatChannel};

/// What one message exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Update in → tenant callback → inline reply → `sendMessage` at the fake API.
    RoundTrip,
    /// A safe-mode (signed, AES-encrypted) WeChat text webhook in → tenant callback → inline
    /// reply → `custom/send` at the fake WeChat API.
    WechatRoundTrip,
    /// Update in → tenant callback.
    Inbound,
    /// `POST /v1/messages` → `sendMessage` at the fake API.
    Outbound,
}

impl Target {
    fn tag(self) -> &'static str {
        match self {
            Self::RoundTrip => "rt",
            Self::WechatRoundTrip => "wx",
            Self::Inbound => "in",
            Self::Outbound => "out",
        }
    }
}

/// Shared by every request.
pub struct Ctx {
    pub http: reqwest::Client,
    pub bot: Bot,
    pub api_url: String,
    pub tenant: Arc<Recorder>,
    pub telegram: Arc<Recorder>,
    pub wechat: Arc<Recorder>,
    update_id: AtomicI64,
    /// WeChat's `MsgId` of the next webhook (ingress collapses retries by it).
    wechat_msg_id: AtomicI64,
    /// The WeChat channel's webhook URL and AES key, derived once.
    wechat_webhook: reqwest::Url,
    wechat_key: AesKey,
    seq: AtomicU64,
    /// For [`Ctx::drained`]: the work-queue streams and the dispatcher's outbox.
    js: async_nats::jetstream::Context,
    work_queues: Vec<String>,
    pg: sqlx::PgPool,
}

impl Ctx {
    pub async fn new(stack: &Stack, fakes: &Fakes, bot: Bot) -> anyhow::Result<Self> {
        let subjects = patchbay_contract::Subjects::new(&stack.prefix)
            .map_err(|e| anyhow::anyhow!("prefix: {e}"))?;
        let work_queues = patchbay_contract::subjects::Stream::ALL
            .into_iter()
            .filter(|s| *s != patchbay_contract::subjects::Stream::Dlq)
            .map(|s| subjects.stream(s))
            .collect();
        let wechat_webhook = reqwest::Url::parse(&bot.wechat.webhook_url)?;
        let wechat_key = AesKey::from_encoding_aes_key(&bot.wechat.encoding_aes_key)
            .map_err(|e| anyhow::anyhow!("WeChat channel: {e}"))?;
        Ok(Self {
            http: stack.http.clone(),
            bot,
            api_url: stack.url("api"),
            tenant: fakes.tenant.clone(),
            telegram: fakes.telegram.clone(),
            wechat: fakes.wechat.clone(),
            update_id: AtomicI64::new(1),
            wechat_msg_id: AtomicI64::new(1),
            wechat_webhook,
            wechat_key,
            seq: AtomicU64::new(0),
            js: async_nats::jetstream::new(crate::stack::connect(&stack.nats.url()).await?),
            work_queues,
            pg: stack.pg.clone(),
        })
    }

    /// Whether no work is pending anywhere: every work-queue stream is empty (a message leaves
    /// one only once its handler is done, its output stored in the next) and the dispatcher
    /// has no parked event. Then no copy of anything can still arrive.
    async fn drained(&self) -> bool {
        for name in &self.work_queues {
            let held = match self.js.get_stream(name).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages),
                Err(_) => return false,
            };
            if held.map_or(true, |n| n > 0) {
                return false;
            }
        }
        sqlx::query_scalar::<_, i64>("select count(*) from dispatcher.parked")
            .fetch_one(&self.pg)
            .await
            .is_ok_and(|n| n == 0)
    }

    fn recorder(&self, t: Target) -> &Recorder {
        match t {
            Target::Inbound => &self.tenant,
            Target::RoundTrip | Target::Outbound => &self.telegram,
            Target::WechatRoundTrip => &self.wechat,
        }
    }

    fn next_id(&self, t: Target, run: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{run}-{n}", t.tag())
    }

    /// The request of one message, ready to send: built (for WeChat: encrypted and signed)
    /// before its clock starts, so the generator's own work is not in the latency.
    fn prepare(&self, t: Target, id: &str, chat: i64) -> reqwest::RequestBuilder {
        match t {
            Target::RoundTrip | Target::Inbound => {
                let uid = self.update_id.fetch_add(1, Ordering::Relaxed);
                let mut update = patchbay_telegram::fixtures::text_update(uid, chat, id);
                // Sent now, as a user's message is: the fixture's fixed date would make every
                // message look days old to the messaging window.
                update["message"]["date"] = json!(chrono::Utc::now().timestamp());
                self.http
                    .post(&self.bot.webhook_url)
                    .header("X-Telegram-Bot-Api-Secret-Token", &self.bot.secret)
                    .json(&update)
            }
            Target::Outbound => self
                .http
                .post(format!("{}/v1/messages", self.api_url))
                .bearer_auth(&self.bot.api_key)
                .json(&json!({"platform": "telegram", "address": chat.to_string(),
                              "channel_id": self.bot.channel_id,
                              "messages": [{"type": "text", "text": id}]})),
            Target::WechatRoundTrip => self.wechat_update(id, chat),
        }
    }

    /// A WeChat text webhook from user `chat` (see [`wechat_webhook`]).
    fn wechat_update(&self, id: &str, chat: i64) -> reqwest::RequestBuilder {
        let msg_id = self.wechat_msg_id.fetch_add(1, Ordering::Relaxed);
        let (url, body) = wechat_webhook(
            &self.wechat_webhook,
            &self.bot.wechat,
            &self.wechat_key,
            msg_id,
            &format!("oBench{chat}"),
            id,
            chrono::Utc::now().timestamp(),
        );
        self.http
            .post(url)
            .header("content-type", "text/xml")
            .body(body)
    }

    /// Sends a prepared message; true when Patchbay accepted it (stored).
    async fn send(req: reqwest::RequestBuilder) -> bool {
        req.timeout(Duration::from_secs(10))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// A text message `text` from `openid` as WeChat posts it in safe mode, at unix time `now`:
/// the signed URL and the body. The XML (created `now`, so the 48-hour window is open) is
/// AES-encrypted for the AppID into `<Encrypt>`; the query is signed with the Token
/// (`signature` over Token, timestamp and nonce; `msg_signature` also over the ciphertext).
/// A few microseconds in a release build: AES-256-CBC of ~300 bytes and two SHA-1s.
pub fn wechat_webhook(
    webhook: &reqwest::Url,
    ch: &WechatChannel,
    key: &AesKey,
    msg_id: i64,
    openid: &str,
    text: &str,
    now: i64,
) -> (reqwest::Url, String) {
    use patchbay_wechat::{crypto, fixtures};
    let xml = fixtures::text(openid, msg_id, text).replace(
        &format!("<CreateTime>{}</CreateTime>", fixtures::TIME),
        &format!("<CreateTime>{now}</CreateTime>"),
    );
    // The 16 random bytes WeChat puts first only have to differ: the MsgId does that.
    let mut random = *b"patchbay-bench-0";
    random[..8].copy_from_slice(&msg_id.to_be_bytes());
    let encrypt = crypto::encrypt(key, &ch.app_id, random, &xml);
    let (timestamp, nonce) = (now.to_string(), msg_id.to_string());
    let msg_signature = crypto::signature(&[&ch.token, &timestamp, &nonce, &encrypt]);
    let mut url = webhook.clone();
    url.query_pairs_mut()
        .extend_pairs(fixtures::query(&ch.token, &timestamp, &nonce, openid))
        .append_pair("encrypt_type", "aes")
        .append_pair("msg_signature", &msg_signature);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        fixtures::OA
    );
    (url, body)
}

/// How a run was driven.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `workers` concurrent conversations, each one message in flight.
    Closed { workers: usize },
    /// A fixed offered rate per second over `users` conversations.
    Open { rate: f64, users: i64 },
}

/// The raw outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    pub mode: Mode,
    pub sent: usize,
    pub errors: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: u64,
    /// Calls the fake platform refused during the run (the WeChat fake: an access token it did
    /// not give); counted with `errors` as rejected.
    pub refused: u64,
    /// Whether the stack had no work pending when duplicates were counted (see
    /// [`Ctx::drained`]); `false` when it was still busy after `settle`.
    pub drained: bool,
    pub elapsed_s: f64,
    pub latencies_ms: Vec<f64>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            f64_of(self.delivered) / self.elapsed_s
        } else {
            0.0
        }
    }

    /// The `q` quantile of latency, ms (nearest rank).
    pub fn quantile(&self, q: f64) -> f64 {
        let v = &self.latencies_ms;
        if v.is_empty() {
            return 0.0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

pub fn f64_of(n: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}

/// Sent ids and their start (or scheduled) times.
type Sent = Arc<Mutex<Vec<(String, Instant)>>>;

/// Closed loop for `duration`.
pub async fn closed(
    ctx: Arc<Ctx>,
    t: Target,
    run: &str,
    workers: usize,
    duration: Duration,
    settle: Duration,
) -> Outcome {
    let sent: Sent = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let refused = ctx.recorder(t).refused();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (ctx, sent, errors, run) = (ctx.clone(), sent.clone(), errors.clone(), run.to_owned());
        #[allow(clippy::cast_possible_wrap)]
        let chat = 10_000 + w as i64;
        tasks.push(tokio::spawn(async move {
            let mut last = start;
            while Instant::now() < deadline {
                let id = ctx.next_id(t, &run);
                let rx = ctx.recorder(t).wait(&id);
                let req = ctx.prepare(t, &id, chat);
                let t0 = Instant::now();
                if !Ctx::send(req).await {
                    ctx.recorder(t).unwait(&id);
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                sent.lock().expect("lock").push((id.clone(), t0));
                match tokio::time::timeout(Duration::from_secs(30), rx).await {
                    Ok(Ok(at)) => last = last.max(at),
                    _ => {
                        ctx.recorder(t).unwait(&id);
                        break; // lost or very late: settle() counts it
                    }
                }
            }
            last
        }));
    }
    let mut end = start;
    for task in tasks {
        if let Ok(last) = task.await {
            end = end.max(last);
        }
    }
    let errors = usize::try_from(errors.load(Ordering::Relaxed)).unwrap_or(0);
    finish(
        &ctx,
        t,
        Mode::Closed { workers },
        sent,
        errors,
        refused,
        start,
        end,
        settle,
    )
    .await
}

/// Open loop: `rate` per second for `duration`, over `users` conversations whose chat ids
/// start at `chat_base`.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    ctx: Arc<Ctx>,
    t: Target,
    run: &str,
    rate: f64,
    users: i64,
    chat_base: i64,
    duration: Duration,
    settle: Duration,
) -> Outcome {
    let sent: Sent = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let n = (rate * duration.as_secs_f64()).round() as u64;
    let refused = ctx.recorder(t).refused();
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for i in 0..n {
        #[allow(clippy::cast_precision_loss)]
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        let id = ctx.next_id(t, run);
        #[allow(clippy::cast_possible_wrap)]
        let chat = chat_base + (i as i64 % users);
        // Built before its scheduled time, sent on it.
        let req = ctx.prepare(t, &id, chat);
        tokio::time::sleep_until(at.into()).await;
        let (sent, errors) = (sent.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            if Ctx::send(req).await {
                sent.lock().expect("lock").push((id, at));
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let errors = usize::try_from(errors.load(Ordering::Relaxed)).unwrap_or(0);
    finish(
        &ctx,
        t,
        Mode::Open { rate, users },
        sent,
        errors,
        refused,
        start,
        start,
        settle,
    )
    .await
}

/// Waits until every accepted message arrived (or `settle` passed without progress), then
/// counts latency, loss and duplicates.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Ctx,
    t: Target,
    mode: Mode,
    sent: Sent,
    errors: usize,
    refused_before: u64,
    start: Instant,
    end: Instant,
    settle: Duration,
) -> Outcome {
    let sent = std::mem::take(&mut *sent.lock().expect("lock"));
    let rec = ctx.recorder(t);
    let mut arrived = rec.count_arrived(sent.iter().map(|(id, _)| id));
    let mut progress = Instant::now();
    while arrived < sent.len() && progress.elapsed() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rec.count_arrived(sent.iter().map(|(id, _)| id));
        if now > arrived {
            progress = Instant::now();
            arrived = now;
        }
    }
    // Duplicates may trail the last original (a redelivery, a retried call): counted once no
    // work is pending anywhere, so none can still come.
    let drained_by = Instant::now() + settle;
    let mut drained = ctx.drained().await;
    while !drained && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drained = ctx.drained().await;
    }
    let mut latencies = Vec::with_capacity(sent.len());
    let (mut delivered, mut duplicated, mut last) = (0, 0u64, end);
    for (id, t0) in &sent {
        if let Some((at, count)) = rec.get(id) {
            delivered += 1;
            duplicated += u64::from(count.saturating_sub(1));
            latencies.push(at.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
            last = last.max(at);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Outcome {
        mode,
        sent: sent.len(),
        errors,
        delivered,
        lost: sent.len() - delivered,
        duplicated,
        refused: rec.refused().saturating_sub(refused_before),
        drained,
        elapsed_s: last.saturating_duration_since(start).as_secs_f64(),
        latencies_ms: latencies,
    }
}

/// One histogram (`_bucket` lines plus `_sum` and `_count`) from a Prometheus text page.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Upper bound → cumulative count, `+Inf` included.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The `q` quantile of what was recorded between `before` and `self`, interpolated within
    /// its bucket as Prometheus' `histogram_quantile` does.
    pub fn quantile_since(&self, before: &Histogram, q: f64) -> f64 {
        let delta: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let b = before
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, c - b)
            })
            .collect();
        let Some(&(_, total)) = delta.last() else {
            return 0.0;
        };
        if total <= 0.0 {
            return 0.0;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, c) in &delta {
            if c >= rank {
                if le.is_infinite() {
                    return lower.0; // beyond the last bound: the last bound is all we know
                }
                let within = c - lower.1;
                return if within > 0.0 {
                    lower.0 + (le - lower.0) * (rank - lower.1) / within
                } else {
                    le
                };
            }
            lower = (le, c);
        }
        lower.0
    }
}

/// Histograms of the stage metrics by `(service, metric{labels})`.
pub fn parse_histograms(pages: &[(&'static str, String)]) -> BTreeMap<String, Histogram> {
    const METRICS: [&str; 7] = [
        "patchbay_db_batch_size",
        "patchbay_db_batch_seconds",
        "patchbay_db_request_seconds",
        "patchbay_consumer_handle_seconds",
        "patchbay_publish_seconds",
        "patchbay_http_request_seconds",
        "patchbay_webhook_attempt_seconds",
    ];
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    for (service, text) in pages {
        for line in text.lines() {
            let Some(metric) = METRICS.iter().find(|m| line.starts_with(*m)) else {
                continue;
            };
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let rest = &head[metric.len()..];
            let (suffix, labels) = match rest.split_once('{') {
                Some((s, l)) => (s, l.trim_end_matches('}')),
                None => (rest, ""),
            };
            let mut le = None;
            let kept: Vec<&str> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .filter(|l| match l.strip_prefix("le=") {
                    Some(b) => {
                        le = b.trim_matches('"').parse::<f64>().ok();
                        false
                    }
                    None => true,
                })
                .collect();
            let key = format!("{service} {metric}{{{}}}", kept.join(","));
            let e = out.entry(key).or_default();
            match (suffix, le) {
                ("_bucket", Some(le)) => e.buckets.push((le, value)),
                ("_sum", _) => e.sum = value,
                ("_count", _) => e.count = value,
                _ => {}
            }
        }
    }
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Per-stage rows for one scenario: mean, p50 and p99 of what the services recorded during
/// it (differences of `_sum`, `_count` and the buckets).
const BATCH_SIZE: &str = "patchbay_db_batch_size";

/// Group commit: per batched statement, how many statements ran during the scenario and how
/// many requests each carried on average (`patchbay_db_batch_size`).
pub fn batch_rows(
    before: &BTreeMap<String, Histogram>,
    after: &BTreeMap<String, Histogram>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for (key, a) in after.iter().filter(|(k, _)| k.contains(BATCH_SIZE)) {
        let b = before.get(key).cloned().unwrap_or_default();
        let n = a.count - b.count;
        if n < 1.0 {
            continue;
        }
        rows.push(json!({
            "batch": key,
            "statements": n,
            "mean_requests": (a.sum - b.sum) / n,
            "p99_requests": a.quantile_since(&b, 0.99),
        }));
    }
    rows
}

pub fn stage_rows(
    before: &BTreeMap<String, Histogram>,
    after: &BTreeMap<String, Histogram>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for (key, a) in after {
        if key.contains(BATCH_SIZE) {
            continue;
        }
        if ["/metrics", "/readyz", "/healthz"]
            .iter()
            .any(|r| key.contains(&format!("route=\"{r}\"")))
        {
            continue;
        }
        let b = before.get(key).cloned().unwrap_or_default();
        let n = a.count - b.count;
        if n < 1.0 {
            continue;
        }
        rows.push(json!({
            "stage": key,
            "count": n,
            "mean_ms": (a.sum - b.sum) / n * 1000.0,
            "p50_ms": a.quantile_since(&b, 0.5) * 1000.0,
            "p99_ms": a.quantile_since(&b, 0.99) * 1000.0,
        }));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(buckets: &[(&str, u32)], sum: f64) -> String {
        let mut s = String::new();
        for (le, c) in buckets {
            s.push_str(&format!(
                "patchbay_publish_seconds_bucket{{stream=\"S\",le=\"{le}\"}} {c}\n"
            ));
        }
        let count = buckets.last().map_or(0, |b| b.1);
        s.push_str(&format!(
            "patchbay_publish_seconds_sum{{stream=\"S\"}} {sum}\npatchbay_publish_seconds_count{{stream=\"S\"}} {count}\n"
        ));
        s
    }

    #[test]
    fn quantiles_come_from_what_was_recorded_in_between() {
        // Before: 100 fast observations. During: 10 more fast ones and 90 between 10 and 25 ms.
        let before = parse_histograms(&[(
            "router",
            page(&[("0.01", 100), ("0.025", 100), ("+Inf", 100)], 0.5),
        )]);
        let after = parse_histograms(&[(
            "router",
            page(&[("0.01", 110), ("0.025", 200), ("+Inf", 200)], 2.3),
        )]);
        let key = "router patchbay_publish_seconds{stream=\"S\"}";
        let (b, a) = (&before[key], &after[key]);
        assert_eq!(a.count - b.count, 100.0);
        // Rank 50 of 100: the 40th of the 90 in (0.01, 0.025].
        let p50 = a.quantile_since(b, 0.5);
        assert!((p50 - (0.01 + 0.015 * 40.0 / 90.0)).abs() < 1e-9, "{p50}");
        // Rank 5: within the first bucket, interpolated from 0.
        let p05 = a.quantile_since(b, 0.05);
        assert!((p05 - 0.005).abs() < 1e-9, "{p05}");
        // Nothing recorded in between: 0.
        assert_eq!(a.quantile_since(a, 0.99), 0.0);
    }

    #[test]
    fn wechat_webhooks_are_signed_and_encrypted_as_the_ingress_checks_them() {
        use patchbay_wechat::{crypto, fixtures, inbound};
        let ch = WechatChannel {
            webhook_url: "http://127.0.0.1:1/webhooks/wechat/ch_1".into(),
            app_id: "wxbench00000000001".into(),
            token: fixtures::TOKEN.into(),
            encoding_aes_key: fixtures::AES_KEY.into(),
        };
        let key = AesKey::from_encoding_aes_key(&ch.encoding_aes_key).unwrap();
        let base = reqwest::Url::parse(&ch.webhook_url).unwrap();
        let (url, body) = wechat_webhook(&base, &ch, &key, 42, "oBench7", "wx-c-9", 1_800_000_000);
        assert_eq!(url.path(), "/webhooks/wechat/ch_1");
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["encrypt_type"], "aes");
        assert_eq!(q["openid"], "oBench7");
        let (ts, nonce) = (q["timestamp"].as_str(), q["nonce"].as_str());
        assert_eq!((ts, nonce), ("1800000000", "42"));
        assert!(crypto::signature_matches(
            &q["signature"],
            &[fixtures::TOKEN, ts, nonce]
        ));
        let outer = inbound::fields(&body).unwrap();
        let encrypt = &outer["Encrypt"];
        assert!(
            !outer.contains_key("MsgType"),
            "safe mode: nothing in the clear"
        );
        assert!(crypto::signature_matches(
            &q["msg_signature"],
            &[fixtures::TOKEN, ts, nonce, encrypt]
        ));
        let xml = crypto::decrypt(&key, &ch.app_id, encrypt).unwrap();
        let f = inbound::fields(&xml).unwrap();
        assert_eq!(f["Content"], "wx-c-9");
        assert_eq!(f["MsgId"], "42");
        assert_eq!(f["FromUserName"], "oBench7");
        assert_eq!(f["CreateTime"], "1800000000");
        assert_eq!(f["MsgType"], "text");
    }

    #[test]
    fn beyond_the_last_bound_reports_the_last_bound() {
        let before = parse_histograms(&[("x", page(&[("1", 0), ("+Inf", 0)], 0.0))]);
        let after = parse_histograms(&[("x", page(&[("1", 1), ("+Inf", 10)], 50.0))]);
        let key = "x patchbay_publish_seconds{stream=\"S\"}";
        assert_eq!(after[key].quantile_since(&before[key], 0.99), 1.0);
    }
}
