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
    /// How the stream splits its subjects into partitions (`None`: not partitioned).
    pub partitioning: Option<Partitioning>,
    /// The most messages kept per subject, the oldest dropped first (`None`: no bound). The
    /// dead letters' subjects end with the bot or channel, so one key's flood of dead letters
    /// cannot take the stream from the others.
    pub max_messages_per_subject: Option<i64>,
    /// What happens when a subject holds `max_messages_per_subject`: `true` refuses the new
    /// message (a pipeline stream: one key's backlog is bounded, the work already queued is
    /// kept), `false` drops the oldest (the dead letters).
    pub discard_new_per_subject: bool,
}

/// How a pipeline stream is split into partitions, so several replicas of a consumer can share
/// its work while each bot's (or channel's) messages stay with one of them, in order.
///
/// Publishers use plain subjects (`<p>.dispatch.<bot>`); the stream's subject transform
/// inserts a partition number before the last token, computed by the server from that token
/// (`{{partition(n,k)}}`, a hash of the bot or channel id), so the stored subject is
/// `<p>.dispatch.<n>.<bot>`. Every partition has its own durable consumer that one replica
/// at a time reads (see `patchbay-bus`'s consumer groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// What publishers publish to, e.g. `pb.dispatch.*` or `pb.ingress.*.*`.
    pub source: String,
    /// The stored subject, e.g. `pb.dispatch.{{partition(8,1)}}.{{wildcard(1)}}`.
    pub destination: String,
    /// Number of partitions.
    pub count: u32,
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
    /// How long a Patchbay link (`/go/<token>`) lives in the links bucket.
    pub link_ttl: Duration,
    /// How long a console sign-in lasts: TTL of the sessions bucket.
    pub session_ttl: Duration,
    /// Partitions of each pipeline stream (see [`Partitioning`]): the most replicas of one
    /// consumer that share its work.
    pub partitions: u32,
    /// Dead letters kept per consumer and bot (or channel); older ones are dropped first.
    pub dead_letters_per_key: i64,
    /// The most messages one key (the bot or channel a pipeline subject ends with) may have
    /// waiting in each pipeline stream; beyond it the key's publishes are refused
    /// ([`StreamSpec::discard_new_per_subject`]) while other keys' flow.
    pub backlog_per_key: i64,
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_stream_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            code_ttl: Duration::from_secs(300),
            link_ttl: DAY,
            session_ttl: Duration::from_secs(8 * 3600),
            partitions: DEFAULT_PARTITIONS,
            dead_letters_per_key: DEFAULT_DEAD_LETTERS_PER_KEY,
            backlog_per_key: DEFAULT_BACKLOG_PER_KEY,
        }
    }
}

/// How often a consumer-group replica renews its membership.
pub const MEMBER_HEARTBEAT: Duration = Duration::from_secs(1);

/// A replica that has not renewed its membership for this long is gone: its partitions are
/// given to the others. Longer than a JetStream leader election after a node failure (a few
/// seconds, during which renewals fail), so that one does not make every replica give its
/// partitions up.
pub const MEMBER_TTL: Duration = Duration::from_secs(10);

/// How long a reply context stays in the replies bucket: longer than any platform's reply
/// token lives (LINE: about a minute), so the sender, not the bucket, decides freshness.
pub const REPLY_CONTEXT_TTL: Duration = Duration::from_secs(300);

/// Dead letters kept per consumer and bot (or channel) unless configured otherwise.
pub const DEFAULT_DEAD_LETTERS_PER_KEY: i64 = 10_000;

/// Messages one bot or channel may have waiting in each pipeline stream unless configured
/// otherwise: at the default `max_stream_bytes` (1 GiB) and messages of about a kilobyte,
/// a hundred keys at their bound before the stream is full.
pub const DEFAULT_BACKLOG_PER_KEY: i64 = 10_000;

/// Default number of partitions of each pipeline stream.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 256;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Keyed streams name a platform before the key: `<p>.ingress.<platform>.<channel>`.
fn platform_token(stream: Stream) -> bool {
    matches!(stream, Stream::Ingress | Stream::Outbound | Stream::Bulk)
}

fn partitioning(s: &Subjects, stream: Stream, count: u32) -> Partitioning {
    let count = count.clamp(1, MAX_PARTITIONS);
    let base = format!("{}.{}", s.prefix(), stream.token());
    if platform_token(stream) {
        Partitioning {
            source: format!("{base}.*.*"),
            destination: format!(
                "{base}.{{{{wildcard(1)}}}}.{{{{partition({count},2)}}}}.{{{{wildcard(2)}}}}"
            ),
            count,
        }
    } else {
        Partitioning {
            source: format!("{base}.*"),
            destination: format!("{base}.{{{{partition({count},1)}}}}.{{{{wildcard(1)}}}}"),
            count,
        }
    }
}

/// The settings of every stream.
pub fn streams(subjects: &Subjects, settings: &TopologySettings) -> Vec<StreamSpec> {
    Stream::ALL
        .iter()
        .map(|&stream| match stream {
            Stream::Dlq => StreamSpec {
                stream,
                retention: Retention::Limits,
                max_age: 30 * DAY,
                duplicate_window: settings.duplicate_window,
                partitioning: None,
                max_messages_per_subject: Some(settings.dead_letters_per_key.max(1)),
                discard_new_per_subject: false,
            },
            _ => StreamSpec {
                stream,
                retention: Retention::WorkQueue,
                max_age: 7 * DAY,
                duplicate_window: settings.duplicate_window,
                partitioning: Some(partitioning(subjects, stream, settings.partitions)),
                // Every pipeline subject ends with one bot or channel: bounded per key, so
                // one bot's backlog (a paced chat it floods, a stopped consumer) cannot fill
                // the stream every bot shares.
                max_messages_per_subject: Some(settings.backlog_per_key.max(1)),
                discard_new_per_subject: true,
            },
        })
        .collect()
}

/// How long a downloaded media file stays in the media store (then it is fetched from the
/// platform again, as long as the platform keeps it).
pub const MEDIA_TTL: Duration = DAY;

/// How long a file a bot uploaded for its sends is kept.
pub const UPLOAD_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Every key-value bucket and its TTL (`None`: keys live until deleted).
pub fn buckets(settings: &TopologySettings) -> Vec<(Bucket, Option<Duration>)> {
    vec![
        (Bucket::Config, None),
        (Bucket::Codes, Some(settings.code_ttl)),
        (Bucket::Links, Some(settings.link_ttl)),
        (Bucket::Sent, Some(7 * DAY)),
        (Bucket::Members, Some(MEMBER_TTL)),
        (Bucket::Tokens, Some(DAY)),
        (Bucket::Setup, None),
        (Bucket::Replies, Some(REPLY_CONTEXT_TTL)),
        (Bucket::CustomUsers, None),
        (Bucket::Sessions, Some(settings.session_ttl)),
        (Bucket::Activity, None),
        // As long as a broadcast's messages may wait in the pipeline.
        (Bucket::Broadcasts, Some(7 * DAY)),
        // A counter is written during its window only: kept a window after its last write.
        (
            Bucket::Quotas,
            Some(settings.link_ttl.max(settings.code_ttl)),
        ),
    ]
}

/// One durable pull consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name; also names the consumer's dead-letter subject.
    pub durable: &'static str,
    /// The stream it reads.
    pub stream: Stream,
    /// Subject filter within the stream, as publishers name subjects (all partitions).
    pub filter: String,
    /// The filter of one partition without its last two tokens: `<base>.<n>.*` is
    /// partition `n`'s filter.
    pub partition_base: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries after which the runtime dead-letters a message that still fails.
    pub max_attempts: u32,
    /// Upper bound of unacknowledged messages held by all instances together.
    pub max_ack_pending: i64,
    /// Delays between attempts when a handler asks for a retry without saying when.
    pub backoff: Vec<Duration>,
    /// Messages of one group (the handler's `group`: a sender's channel) whose payload a
    /// reader keeps in memory; the group's further messages wait in their lanes as references
    /// and are read again from the stream when their turn comes. `None`: no limit.
    pub group_budget: Option<usize>,
}

impl ConsumerSpec {
    /// The durable consumer of partition `n`: `<durable>-p<n>`.
    pub fn partition_durable(&self, n: u32) -> String {
        format!("{}-p{n}", self.durable)
    }

    /// The subject filter of partition `n` (stored subjects, after the stream's transform).
    pub fn partition_filter(&self, n: u32) -> String {
        format!("{}.{n}.*", self.partition_base)
    }

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
    // `pb.ingress.>` → `pb.ingress.*`; `pb.outbound.telegram.>` → `pb.outbound.telegram`;
    // `pb.dispatch.>` → `pb.dispatch`.
    let trimmed = filter.trim_end_matches(".>");
    let partition_base = if platform_token(stream) && trimmed.split('.').count() == 2 {
        format!("{trimmed}.*")
    } else {
        trimmed.to_owned()
    };
    ConsumerSpec {
        durable,
        stream,
        filter,
        partition_base,
        ack_wait: Duration::from_secs(30),
        max_attempts: 10,
        max_ack_pending: 1000,
        backoff: pipeline_backoff(),
        group_budget: None,
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

/// Unacknowledged messages a sender's partition may have. A channel waiting for its pace holds
/// its messages unacknowledged (as references beyond [`OUTBOUND_GROUP_BUDGET`]), and the
/// server hands out nothing more once a partition has this many: so it is far above what one
/// channel is expected to queue, and the other channels of the partition keep flowing past a
/// flood of up to this many messages.
pub const OUTBOUND_MAX_ACK_PENDING: i64 = 20_000;

/// Messages of one channel whose payload a sender keeps in memory (see
/// [`ConsumerSpec::group_budget`]): two seconds of Telegram's 30/s.
pub const OUTBOUND_GROUP_BUDGET: usize = 64;

/// The durable names of one platform's sender: its conversations' messages, its broadcasts'.
fn sender_durables(platform: Platform) -> (&'static str, &'static str) {
    match platform {
        Platform::Telegram => ("outbound-telegram", "bulk-telegram"),
        Platform::Messenger => ("outbound-messenger", "bulk-messenger"),
        Platform::Whatsapp => ("outbound-whatsapp", "bulk-whatsapp"),
        Platform::Wechat => ("outbound-wechat", "bulk-wechat"),
        Platform::Kik => ("outbound-kik", "bulk-kik"),
        Platform::Line => ("outbound-line", "bulk-line"),
        Platform::Viber => ("outbound-viber", "bulk-viber"),
        Platform::Custom => ("outbound-custom", "bulk-custom"),
    }
}

/// One platform's outbound sender.
pub fn outbound(s: &Subjects, platform: Platform) -> ConsumerSpec {
    ConsumerSpec {
        max_ack_pending: OUTBOUND_MAX_ACK_PENDING,
        group_budget: Some(OUTBOUND_GROUP_BUDGET),
        ..pipeline(
            sender_durables(platform).0,
            Stream::Outbound,
            s.outbound_platform(platform),
        )
    }
}

/// Messages of one channel's broadcasts a sender keeps in memory: the bulk stream holds only
/// what `bot-router` released (a window per broadcast), and they wait for the channel's pace.
pub const BULK_GROUP_BUDGET: usize = 64;

/// One platform's sender of broadcast messages (`<p>.bulk.<platform>.>`): the same sender,
/// a second consumer, so a broadcast's messages never stand in the queue of the channel's
/// conversations.
pub fn bulk(s: &Subjects, platform: Platform) -> ConsumerSpec {
    ConsumerSpec {
        max_ack_pending: OUTBOUND_MAX_ACK_PENDING,
        group_budget: Some(BULK_GROUP_BUDGET),
        ..pipeline(
            sender_durables(platform).1,
            Stream::Bulk,
            s.bulk_platform(platform),
        )
    }
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
    fn partitions_are_inserted_before_the_key() {
        let s = Subjects::new("pb").unwrap();
        let settings = TopologySettings {
            partitions: 4,
            ..TopologySettings::default()
        };
        let specs = streams(&s, &settings);
        let by = |st: Stream| specs.iter().find(|x| x.stream == st).unwrap().clone();
        let d = by(Stream::Dispatch).partitioning.unwrap();
        assert_eq!(d.source, "pb.dispatch.*");
        assert_eq!(
            d.destination,
            "pb.dispatch.{{partition(4,1)}}.{{wildcard(1)}}"
        );
        let i = by(Stream::Ingress).partitioning.unwrap();
        assert_eq!(i.source, "pb.ingress.*.*");
        assert_eq!(
            i.destination,
            "pb.ingress.{{wildcard(1)}}.{{partition(4,2)}}.{{wildcard(2)}}"
        );
        assert!(by(Stream::Dlq).partitioning.is_none());

        assert_eq!(dispatcher(&s, 3).partition_filter(2), "pb.dispatch.2.*");
        assert_eq!(normaliser(&s).partition_filter(0), "pb.ingress.*.0.*");
        assert_eq!(
            outbound(&s, Platform::Telegram).partition_filter(7),
            "pb.outbound.telegram.7.*"
        );
        assert_eq!(
            outbound(&s, Platform::Telegram).partition_durable(7),
            "outbound-telegram-p7"
        );
        assert_eq!(router_status(&s).partition_filter(1), "pb.status.1.*");
    }

    #[test]
    fn only_dead_letters_are_kept_after_consumption_and_every_stream_is_bounded_per_key() {
        let s = Subjects::new("pb").unwrap();
        for spec in streams(&s, &TopologySettings::default()) {
            let expected = if spec.stream == Stream::Dlq {
                Retention::Limits
            } else {
                Retention::WorkQueue
            };
            assert_eq!(spec.retention, expected, "{:?}", spec.stream);
            // Every stream is bounded per subject (per bot or channel); the pipeline refuses
            // what is beyond the bound, the dead letters drop their oldest.
            let settings = TopologySettings::default();
            let expected = if spec.stream == Stream::Dlq {
                settings.dead_letters_per_key
            } else {
                settings.backlog_per_key
            };
            assert_eq!(
                spec.max_messages_per_subject,
                Some(expected),
                "{:?}",
                spec.stream
            );
            assert_eq!(
                spec.discard_new_per_subject,
                spec.stream != Stream::Dlq,
                "{:?}",
                spec.stream
            );
        }
    }
}
