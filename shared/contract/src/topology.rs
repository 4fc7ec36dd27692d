//! The JetStream topology: every stream, key-value bucket and durable consumer Patchbay uses,
//! as plain data. `patchbay-bus` turns these into server calls and applies them idempotently at
//! start-up; nothing else declares a stream or a consumer.

use std::time::Duration;

use crate::subjects::{Bucket, Stream, Subjects};
use crate::wire::Platform;

/// How a stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Each message is removed once its one consumer acknowledged (or terminated) it. Used for
    /// the pipeline streams: Postgres keeps the history, the stream only holds work in flight.
    WorkQueue,
    /// Messages are kept until `max_age` (dead letters, so they can be inspected and replayed).
    Limits,
}

/// One stream's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Which stream.
    pub stream: Stream,
    /// Retention policy.
    pub retention: Retention,
    /// How long an unconsumed message may stay.
    pub max_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
}

/// Settings of the whole topology that operators may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySettings {
    /// Stream and bucket replicas (1 on one machine, 3 on Kubernetes).
    pub replicas: usize,
    /// Byte limit of each pipeline stream; when full, publishes fail (and HTTP edges answer
    /// 503) instead of old work being dropped. Zero means unlimited.
    pub max_stream_bytes: i64,
    /// Duplicate window of the pipeline streams.
    pub duplicate_window: Duration,
    /// How long a one-time code lives in the codes bucket.
    pub code_ttl: Duration,
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_stream_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            code_ttl: Duration::from_secs(300),
        }
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The settings of every stream.
pub fn streams(settings: &TopologySettings) -> Vec<StreamSpec> {
    Stream::ALL
        .iter()
        .map(|&stream| match stream {
            Stream::Dlq => StreamSpec {
                stream,
                retention: Retention::Limits,
                max_age: 30 * DAY,
                duplicate_window: settings.duplicate_window,
            },
            _ => StreamSpec {
                stream,
                retention: Retention::WorkQueue,
                max_age: 7 * DAY,
                duplicate_window: settings.duplicate_window,
            },
        })
        .collect()
}

/// Every key-value bucket and its TTL (`None`: keys live until deleted).
pub fn buckets(settings: &TopologySettings) -> Vec<(Bucket, Option<Duration>)> {
    vec![
        (Bucket::Config, None),
        (Bucket::Codes, Some(settings.code_ttl)),
        (Bucket::Sent, Some(7 * DAY)),
    ]
}

/// One durable pull consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name; also names the consumer's dead-letter subject.
    pub durable: &'static str,
    /// The stream it reads.
    pub stream: Stream,
    /// Subject filter within the stream.
    pub filter: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries after which the runtime dead-letters a message that still fails.
    pub max_attempts: u32,
    /// Upper bound of unacknowledged messages held by all instances together.
    pub max_ack_pending: i64,
    /// Delays between attempts when a handler asks for a retry without saying when.
    pub backoff: Vec<Duration>,
}

impl ConsumerSpec {
    /// The delay before attempt `delivered + 1`, from the backoff list (its last entry repeats).
    pub fn backoff_for(&self, delivered: u64) -> Duration {
        let idx = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(idx)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

fn pipeline_backoff() -> Vec<Duration> {
    [1, 2, 5, 10, 30, 60, 120, 300, 600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn pipeline(durable: &'static str, stream: Stream, filter: String) -> ConsumerSpec {
    ConsumerSpec {
        durable,
        stream,
        filter,
        ack_wait: Duration::from_secs(30),
        max_attempts: 10,
        max_ack_pending: 1000,
        backoff: pipeline_backoff(),
    }
}

/// The normaliser's consumer of raw platform envelopes.
pub fn normaliser(s: &Subjects) -> ConsumerSpec {
    pipeline(
        "normaliser",
        Stream::Ingress,
        s.stream_filter(Stream::Ingress),
    )
}

/// The bot-router's consumer of canonical inbound events.
pub fn router_inbound(s: &Subjects) -> ConsumerSpec {
    pipeline(
        "router-inbound",
        Stream::Inbound,
        s.stream_filter(Stream::Inbound),
    )
}

/// The bot-router's consumer of send commands.
pub fn router_send(s: &Subjects) -> ConsumerSpec {
    pipeline("router-send", Stream::Send, s.stream_filter(Stream::Send))
}

/// The bot-router's consumer of platform send results.
pub fn router_status(s: &Subjects) -> ConsumerSpec {
    pipeline(
        "router-status",
        Stream::Status,
        s.stream_filter(Stream::Status),
    )
}

/// The webhook-dispatcher's consumer. `attempts` is the length of the retry schedule.
pub fn dispatcher(s: &Subjects, attempts: u32) -> ConsumerSpec {
    ConsumerSpec {
        max_attempts: attempts.max(1),
        ..pipeline(
            "webhook-dispatcher",
            Stream::Dispatch,
            s.stream_filter(Stream::Dispatch),
        )
    }
}

/// One platform's outbound sender.
pub fn outbound(s: &Subjects, platform: Platform) -> ConsumerSpec {
    let durable = match platform {
        Platform::Telegram => "outbound-telegram",
        Platform::Messenger => "outbound-messenger",
        Platform::Whatsapp => "outbound-whatsapp",
        Platform::Wechat => "outbound-wechat",
        Platform::Kik => "outbound-kik",
        Platform::Line => "outbound-line",
        Platform::Viber => "outbound-viber",
        Platform::Custom => "outbound-custom",
    };
    pipeline(durable, Stream::Outbound, s.outbound_platform(platform))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_step() {
        let s = Subjects::new("pb").unwrap();
        let c = normaliser(&s);
        assert_eq!(c.backoff_for(1), Duration::from_secs(1));
        assert_eq!(c.backoff_for(2), Duration::from_secs(2));
        assert_eq!(c.backoff_for(100), Duration::from_secs(600));
    }

    #[test]
    fn only_dead_letters_are_kept_after_consumption() {
        for spec in streams(&TopologySettings::default()) {
            let expected = if spec.stream == Stream::Dlq {
                Retention::Limits
            } else {
                Retention::WorkQueue
            };
            assert_eq!(spec.retention, expected, "{:?}", spec.stream);
        }
    }
}
