//! Who may do what on NATS: every service's role and the subjects it may publish and subscribe
//! to, derived from the same names as the rest of the contract, so the server's permissions
//! cannot drift from what the services do.
//!
//! Each process connects as its own NATS user, `<prefix>-<role>` (see [`Role::user`]). The
//! permissions allow exactly what the role's code uses:
//!
//! - the stream subjects it publishes to (an ingress only to `<p>.ingress.<its platform>.*`),
//! - the JetStream API of its own durable consumers only, partition by partition (create,
//!   info, next, unpin, ack), never another service's,
//! - the key-value buckets and object stores it reads, and separately those it writes,
//! - the request/reply operations it serves and the ones it calls (the dispatcher may ask
//!   `auth` to disable a webhook, nothing else of `auth`),
//! - replies only through its own inbox prefix, `_INBOX.<prefix>.<role>`, so no service can
//!   read another's replies (fresh API keys, channel credentials).
//!
//! Creating or changing streams, buckets and object stores belongs to [`Role::Migrate`]
//! (`patchbay migrate`) and [`Role::All`] (`patchbay all`, everything in one process).
//! [`Role::Migrate`] also re-seals the buckets that keep sealed values
//! (`patchbay master-key reseal`, [`SEALED_BUCKETS`]); it reads no stream and calls no service.

use crate::subjects::{Bucket, Stream, Subjects};
use crate::topology::{self, ConsumerSpec, TopologySettings};
use crate::wire::{Platform, auth_ops, outbound_ops};

/// The buckets whose entries hold values sealed with the master key: what
/// `patchbay master-key reseal` rewrites.
pub const SEALED_BUCKETS: [Bucket; 4] = [
    Bucket::Config,
    Bucket::Tokens,
    Bucket::Replies,
    Bucket::Sessions,
];

/// What a process is, for NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Every service in one process (`patchbay all`): all of the below together.
    All,
    /// `patchbay migrate` and `patchbay master-key reseal`: creates and updates the topology,
    /// and rewrites the buckets that keep sealed values.
    Migrate,
    /// `auth`: owns the config bucket.
    Auth,
    /// `bot-router`.
    Router,
    /// `normaliser`.
    Normaliser,
    /// `webhook-dispatcher`.
    Dispatcher,
    /// `api`: the HTTP API.
    Api,
    /// `console`: the web console (the API's requests over NATS, live views of the bots'
    /// events, its sessions).
    Console,
    /// `ingress-<platform>`.
    Ingress(Platform),
    /// `outbound-<platform>`.
    Outbound(Platform),
}

/// Every platform, for roles generated per platform.
pub const PLATFORMS: [Platform; 8] = [
    Platform::Telegram,
    Platform::Messenger,
    Platform::Whatsapp,
    Platform::Wechat,
    Platform::Kik,
    Platform::Line,
    Platform::Viber,
    Platform::Custom,
];

impl Role {
    /// Every role: the users an installation's NATS server knows.
    pub fn every() -> Vec<Role> {
        let mut roles = vec![
            Role::All,
            Role::Migrate,
            Role::Auth,
            Role::Router,
            Role::Normaliser,
            Role::Dispatcher,
            Role::Api,
            Role::Console,
        ];
        roles.extend(PLATFORMS.iter().map(|&p| Role::Ingress(p)));
        roles.extend(PLATFORMS.iter().map(|&p| Role::Outbound(p)));
        roles
    }

    /// The role's name: the service's name (`bot-router`, `ingress-line`), `patchbay` for
    /// [`Role::All`] and `migrate`.
    pub fn name(self) -> String {
        match self {
            Role::All => "patchbay".into(),
            Role::Migrate => "migrate".into(),
            Role::Auth => "auth".into(),
            Role::Router => "bot-router".into(),
            Role::Normaliser => "normaliser".into(),
            Role::Dispatcher => "webhook-dispatcher".into(),
            Role::Api => "api".into(),
            Role::Console => "console".into(),
            Role::Ingress(p) => format!("ingress-{}", p.as_str()),
            Role::Outbound(p) => format!("outbound-{}", p.as_str()),
        }
    }

    /// The role of a process named `name` (as [`Role::name`]; `patchbay-migrate` is
    /// [`Role::Migrate`]).
    pub fn from_name(name: &str) -> Option<Role> {
        if name == "patchbay-migrate" {
            return Some(Role::Migrate);
        }
        Role::every().into_iter().find(|r| r.name() == name)
    }

    /// The NATS user of this role under `subjects`' prefix: `<prefix>-<role>`.
    pub fn user(self, subjects: &Subjects) -> String {
        format!("{}-{}", subjects.prefix(), self.name())
    }

    /// The prefix of this role's reply inboxes: `_INBOX.<prefix>.<role>`.
    pub fn inbox_prefix(self, subjects: &Subjects) -> String {
        format!("_INBOX.{}.{}", subjects.prefix(), self.name())
    }

    /// Whether the role creates and updates streams, buckets and object stores.
    pub fn manages_topology(self) -> bool {
        matches!(self, Role::All | Role::Migrate)
    }
}

/// The subjects a role may publish and subscribe to, as NATS permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (requests included).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (the reply subject only, once).
    pub allow_responses: bool,
}

impl Permissions {
    fn publish(&mut self, subject: impl Into<String>) {
        let s = subject.into();
        if !self.publish.contains(&s) {
            self.publish.push(s);
        }
    }

    fn subscribe(&mut self, subject: impl Into<String>) {
        let s = subject.into();
        if !self.subscribe.contains(&s) {
            self.subscribe.push(s);
        }
    }

    fn merge(&mut self, other: Permissions) {
        for s in other.publish {
            self.publish(s);
        }
        for s in other.subscribe {
            self.subscribe(s);
        }
        self.allow_responses |= other.allow_responses;
    }
}

/// Builds one role's permissions.
struct Grants<'a> {
    s: &'a Subjects,
    settings: &'a TopologySettings,
    p: Permissions,
}

impl Grants<'_> {
    /// Reading a stream's messages through the JetStream API (direct and message gets).
    fn read_stream(&mut self, stream: &str) {
        self.p.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        self.p.publish(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        self.p.publish(format!("$JS.API.DIRECT.GET.{stream}"));
        self.p.publish(format!("$JS.API.DIRECT.GET.{stream}.>"));
    }

    /// Ephemeral (ordered) consumers on a stream: how buckets are watched and listed, and
    /// objects read.
    fn ephemeral_consumers(&mut self, stream: &str) {
        self.p.publish(format!("$JS.API.CONSUMER.CREATE.{stream}"));
        self.p
            .publish(format!("$JS.API.CONSUMER.CREATE.{stream}.>"));
        self.p.publish(format!("$JS.API.CONSUMER.INFO.{stream}.*"));
        self.p
            .publish(format!("$JS.API.CONSUMER.DELETE.{stream}.*"));
        self.p
            .publish(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"));
        self.p.publish(format!("$JS.FC.{stream}.>"));
    }

    /// A role's own durable consumer, every partition of it.
    fn consume(&mut self, spec: &ConsumerSpec) {
        let stream = self.s.stream(spec.stream);
        self.p.publish(format!("$JS.API.STREAM.INFO.{stream}"));
        self.p.publish(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        let partitions = self.settings.partitions.clamp(1, topology::MAX_PARTITIONS);
        for n in 0..partitions {
            let durable = spec.partition_durable(n);
            self.p.publish(format!(
                "$JS.API.CONSUMER.CREATE.{stream}.{durable}.{}",
                spec.partition_filter(n)
            ));
            for op in ["DURABLE.CREATE", "INFO", "MSG.NEXT", "UNPIN"] {
                self.p
                    .publish(format!("$JS.API.CONSUMER.{op}.{stream}.{durable}"));
            }
            self.p.publish(format!("$JS.ACK.{stream}.{durable}.>"));
            // The acknowledgement subject's newer form, with domain and account hash.
            self.p.publish(format!("$JS.ACK.*.*.{stream}.{durable}.>"));
        }
        self.p
            .publish(format!("{}.dlq.{}.*", self.s.prefix(), spec.durable));
        self.write_bucket(Bucket::Members);
    }

    fn read_bucket(&mut self, bucket: Bucket) {
        let name = self.s.bucket(bucket);
        let stream = format!("KV_{name}");
        self.read_stream(&stream);
        self.ephemeral_consumers(&stream);
    }

    fn write_bucket(&mut self, bucket: Bucket) {
        self.read_bucket(bucket);
        self.p.publish(format!("$KV.{}.>", self.s.bucket(bucket)));
    }

    fn read_store(&mut self, store: &str) {
        let stream = format!("OBJ_{store}");
        self.read_stream(&stream);
        self.ephemeral_consumers(&stream);
    }

    fn write_store(&mut self, store: &str) {
        self.read_store(store);
        self.p.publish(format!("$O.{store}.>"));
        // Replacing or deleting an object purges its old chunks.
        self.p.publish(format!("$JS.API.STREAM.PURGE.OBJ_{store}"));
    }

    /// Serving `<p>.rpc.<service>.>`.
    fn serve(&mut self, service: &str) {
        self.p.subscribe(self.s.rpc_all(service));
        self.p.allow_responses = true;
    }

    /// Calling one operation (or `*`, every one) of `service`.
    fn call(&mut self, service: &str, op: &str) {
        self.p.publish(self.s.rpc(service, op));
    }

    fn publish_stream(&mut self, subject: String) {
        self.p.publish(subject);
    }

    fn manage_topology(&mut self) {
        for stream in stream_names(self.s, self.settings) {
            for op in ["CREATE", "UPDATE"] {
                self.p.publish(format!("$JS.API.STREAM.{op}.{stream}"));
            }
        }
        self.p.publish("$JS.API.STREAM.NAMES");
    }
}

/// The JetStream name of every stream, bucket (`KV_…`) and object store (`OBJ_…`) of the
/// topology.
pub fn stream_names(s: &Subjects, settings: &TopologySettings) -> Vec<String> {
    let mut streams: Vec<String> = Stream::ALL.iter().map(|&st| s.stream(st)).collect();
    streams.extend(
        topology::buckets(settings)
            .into_iter()
            .map(|(b, _)| format!("KV_{}", s.bucket(b))),
    );
    streams.extend(
        [s.media_store(), s.uploads_store(), s.files_store()]
            .into_iter()
            .map(|o| format!("OBJ_{o}")),
    );
    streams
}

/// The permissions of `role` in an installation with `subjects` and `settings` (the partition
/// count names the durable consumers, so permissions are regenerated when it changes).
pub fn permissions(subjects: &Subjects, settings: &TopologySettings, role: Role) -> Permissions {
    if role == Role::All {
        let mut all = Permissions::default();
        for r in Role::every() {
            if r != Role::All {
                all.merge(permissions(subjects, settings, r));
            }
        }
        // One process: its own inbox only.
        all.subscribe
            .retain(|s| !s.starts_with("_INBOX.") || s.starts_with(&inbox(subjects, role)));
        all.subscribe(inbox(subjects, role));
        return all;
    }
    let s = subjects;
    let mut g = Grants {
        s,
        settings,
        p: Permissions::default(),
    };
    g.p.subscribe(inbox(s, role));
    g.p.publish("$JS.API.INFO");
    // Every process waits at start until the topology exists (settings and counts, no
    // messages).
    for stream in stream_names(s, settings) {
        g.p.publish(format!("$JS.API.STREAM.INFO.{stream}"));
    }
    if role != Role::Migrate {
        // Every service watches the configuration.
        g.read_bucket(Bucket::Config);
    }
    let prefix = s.prefix();
    match role {
        Role::All => unreachable!("handled above"),
        Role::Migrate => {
            g.manage_topology();
            // `patchbay master-key reseal` rewrites the buckets that keep sealed values.
            for bucket in SEALED_BUCKETS {
                g.write_bucket(bucket);
            }
        }
        Role::Auth => {
            g.write_bucket(Bucket::Config);
            g.serve("auth");
            g.call("dispatcher", crate::wire::dispatcher_ops::VERIFY_ENDPOINT);
        }
        Role::Router => {
            g.consume(&topology::router_inbound(s));
            g.consume(&topology::router_send(s));
            g.consume(&topology::router_status(s));
            g.publish_stream(format!("{prefix}.dispatch.*"));
            g.publish_stream(format!("{prefix}.outbound.*.*"));
            g.publish_stream(format!("{prefix}.bulk.*.*"));
            g.publish_stream(format!("{prefix}.status.*"));
            // A broadcast's recipients, released into the send path.
            g.publish_stream(format!("{prefix}.send.*"));
            g.publish_stream(format!("{prefix}.custom.outcome.*"));
            g.write_bucket(Bucket::Broadcasts);
            g.write_bucket(Bucket::Links);
            g.write_bucket(Bucket::Quotas);
            g.serve("router");
        }
        Role::Normaliser => {
            g.consume(&topology::normaliser(s));
            g.publish_stream(format!("{prefix}.inbound.*"));
        }
        Role::Dispatcher => {
            g.consume(&topology::dispatcher(s, 1));
            g.publish_stream(format!("{prefix}.send.*"));
            g.publish_stream(format!("{prefix}.dispatch.*"));
            g.publish_stream(format!("{prefix}.custom.outcome.*"));
            g.read_stream(&s.stream(Stream::Dispatch));
            g.serve("dispatcher");
            g.call("auth", auth_ops::DISABLE_WEBHOOK);
        }
        Role::Api => {
            g.publish_stream(format!("{prefix}.send.*"));
            g.write_bucket(Bucket::Codes);
            g.write_bucket(Bucket::Links);
            g.write_bucket(Bucket::Quotas);
            g.write_bucket(Bucket::Members);
            g.read_bucket(Bucket::Setup);
            g.read_bucket(Bucket::Activity);
            // Revoking custom channels' user tokens.
            g.write_bucket(Bucket::CustomUsers);
            g.write_store(&s.files_store());
            g.read_store(&s.media_store());
            g.write_store(&s.uploads_store());
            for service in ["auth", "dispatcher", "router"] {
                g.call(service, "*");
            }
            // The console's requests.
            g.serve("api");
            for p in PLATFORMS {
                g.call(&Role::Outbound(p).name(), outbound_ops::FETCH_MEDIA);
                g.call(&Role::Outbound(p).name(), outbound_ops::CHANNEL_PROFILE);
            }
        }
        Role::Console => {
            g.call("api", crate::wire::api_ops::HTTP);
            // Live views: the events on their way to the bots, the statuses of their messages.
            g.p.subscribe(format!("{prefix}.dispatch.*"));
            g.p.subscribe(format!("{prefix}.status.*"));
            g.write_bucket(Bucket::Sessions);
        }
        Role::Ingress(platform) => {
            g.publish_stream(format!("{prefix}.ingress.{}.*", platform.as_str()));
            // Answering the platform inline with the bot's reply (WeChat's passive replies).
            g.p.subscribe(format!("{prefix}.passive.{}.*", platform.as_str()));
            g.p.allow_responses = true;
            // Reply contexts kept for the sender (LINE's reply tokens).
            g.write_bucket(Bucket::Replies);
            // Profile enrichment shares platform access tokens with the senders (WeChat).
            g.write_bucket(Bucket::Tokens);
            // When the platform last reached the channel.
            g.write_bucket(Bucket::Activity);
            // What the sender learned setting the channel up (LINE's bot user id, which every
            // webhook's `destination` must be).
            g.read_bucket(Bucket::Setup);
            if platform == Platform::Custom {
                g.p.subscribe(format!("{prefix}.custom.replies.*.*"));
                g.p.subscribe(format!("{prefix}.custom.outcome.*"));
                // Registered users and revoked tokens; whether an `external_id` already has a
                // user (a contact the tenant created).
                g.write_bucket(Bucket::CustomUsers);
                g.call("router", crate::wire::router_ops::GET_USER);
            }
        }
        Role::Outbound(platform) => {
            g.consume(&topology::outbound(s, platform));
            g.consume(&topology::bulk(s, platform));
            g.publish_stream(format!("{prefix}.status.*"));
            g.read_bucket(Bucket::Broadcasts);
            g.p.publish(format!("{prefix}.passive.{}.*", platform.as_str()));
            g.write_bucket(Bucket::Sent);
            g.write_bucket(Bucket::Replies);
            g.write_bucket(Bucket::Setup);
            g.write_bucket(Bucket::Tokens);
            g.write_store(&s.media_store());
            g.read_store(&s.uploads_store());
            g.serve(&role.name());
            if platform == Platform::Custom {
                g.publish_stream(format!("{prefix}.custom.replies.*.*"));
            }
        }
    }
    g.p
}

fn inbox(subjects: &Subjects, role: Role) -> String {
    format!("{}.>", role.inbox_prefix(subjects))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(role: Role) -> Permissions {
        permissions(
            &Subjects::new("pb").unwrap(),
            &TopologySettings {
                partitions: 2,
                ..TopologySettings::default()
            },
            role,
        )
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::every() {
            assert_eq!(Role::from_name(&role.name()), Some(role));
        }
        assert_eq!(Role::from_name("patchbay-migrate"), Some(Role::Migrate));
        assert_eq!(Role::from_name("ingress-nowhere"), None);
    }

    #[test]
    fn only_auth_and_its_callers_reach_auth() {
        for role in Role::every() {
            let p = perms(role);
            let serves = p.subscribe.iter().any(|s| s == "pb.rpc.auth.>");
            assert_eq!(serves, matches!(role, Role::Auth | Role::All), "{role:?}");
            let rotates = p
                .publish
                .iter()
                .any(|s| s == "pb.rpc.auth.*" || s == "pb.rpc.auth.rotate_key");
            assert_eq!(rotates, matches!(role, Role::Api | Role::All), "{role:?}");
        }
        assert!(
            perms(Role::Dispatcher)
                .publish
                .contains(&"pb.rpc.auth.disable_webhook".to_owned())
        );
    }

    #[test]
    fn each_role_reads_only_its_own_inbox() {
        for role in Role::every() {
            let inboxes: Vec<_> = perms(role)
                .subscribe
                .into_iter()
                .filter(|s| s.starts_with("_INBOX"))
                .collect();
            assert_eq!(inboxes, vec![format!("_INBOX.pb.{}.>", role.name())]);
        }
    }

    #[test]
    fn a_sender_uses_only_its_own_consumers() {
        let p = perms(Role::Outbound(Platform::Telegram));
        assert!(
            p.publish
                .contains(&"$JS.API.CONSUMER.MSG.NEXT.PB_OUTBOUND.outbound-telegram-p1".to_owned())
        );
        assert!(
            p.publish.contains(
                &"$JS.API.CONSUMER.CREATE.PB_OUTBOUND.outbound-telegram-p0.pb.outbound.telegram.0.*"
                    .to_owned()
            )
        );
        assert!(!p.publish.iter().any(|s| s.contains("outbound-whatsapp-p")));
        assert!(!p.publish.iter().any(|s| s.contains("STREAM.CREATE")));
        assert!(!p.publish.iter().any(|s| s.starts_with("$KV.pb_config")));
    }

    #[test]
    fn migrate_writes_only_the_buckets_with_sealed_values() {
        let p = perms(Role::Migrate);
        let written: Vec<&str> = p
            .publish
            .iter()
            .filter_map(|s| s.strip_prefix("$KV."))
            .collect();
        assert_eq!(
            written,
            vec![
                "pb_config.>",
                "pb_tokens.>",
                "pb_replies.>",
                "pb_sessions.>"
            ]
        );
        assert!(!p.publish.iter().any(|s| s.starts_with("pb.")), "{p:?}");
        assert!(
            !p.publish
                .iter()
                .any(|s| s.contains("CONSUMER.MSG.NEXT.PB_"))
        );
        assert!(!p.allow_responses);
    }

    #[test]
    fn only_migrate_and_all_manage_the_topology() {
        for role in Role::every() {
            let creates = perms(role)
                .publish
                .iter()
                .any(|s| s.starts_with("$JS.API.STREAM.CREATE."));
            assert_eq!(creates, role.manages_topology(), "{role:?}");
        }
    }
}
