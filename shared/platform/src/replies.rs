//! Reply contexts: what a platform gives with an inbound event to answer that event once, for
//! a short time (LINE's reply token), carried from the ingress to the sender.
//!
//! The ingress asks the adapter for the split's context ([`crate::InboundAdapter::reply_context`])
//! and keeps it, before publishing, in the `<p>_replies` bucket under the id the event will
//! have (`derive_id(evt, <envelope id>, 0)`). A tenant's inline reply reaches the sender as
//! `OutboundJob::in_reply_to` = that event id, so the sender [`Replies::take`]s the context:
//! it reads the entry and deletes it at the revision it read, so of two senders (two messages
//! of one inline reply, two replicas, a redelivered job) exactly one gets the token and the
//! others fall back to the platform's other way to send. Entries expire with the bucket's TTL
//! (`topology::REPLY_CONTEXT_TTL`), longer than any token lives; the sender judges freshness
//! from [`ReplyContext::issued_at`].
//!
//! Keeping is best effort: when the bucket cannot be written the event is published anyway
//! and its replies go the other way.

use async_nats::jetstream::kv::{Operation, Store};
use patchbay_bus::Bus;
use patchbay_contract::ReplyContext;
use patchbay_contract::subjects::Bucket;

/// The replies bucket.
#[derive(Clone)]
pub struct Replies {
    kv: Store,
    /// Seals each context (a reply token is a credential for one answer), the event id as
    /// associated data.
    seal: Option<patchbay_config::MasterKey>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").finish_non_exhaustive()
    }
}

impl Replies {
    /// The installation's replies bucket (created by `patchbay migrate` and every service's
    /// start, with the other buckets).
    pub async fn open(bus: &Bus) -> Result<Self, String> {
        let name = bus.subjects().bucket(Bucket::Replies);
        let kv = bus
            .jetstream()
            .get_key_value(&name)
            .await
            .map_err(|e| format!("cannot open the {name} bucket: {e}"))?;
        Ok(Self {
            kv,
            seal: bus.master_key().cloned(),
        })
    }

    /// Reply contexts kept in `kv` (tests give a bucket of their own), sealed with `seal`.
    pub fn from_store(kv: Store, seal: Option<patchbay_config::MasterKey>) -> Self {
        Self { kv, seal }
    }

    /// Keeps `context` for the sender of replies to `event_id`.
    pub async fn keep(&self, event_id: &str, context: &ReplyContext) -> Result<(), String> {
        let mut value = serde_json::to_vec(context).map_err(|e| e.to_string())?;
        if let Some(key) = &self.seal {
            value = key
                .seal(event_id, &value)
                .map_err(|e| e.to_string())?
                .into_bytes();
        }
        self.kv
            .put(event_id, value.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot keep the reply context of {event_id}: {e}"))
    }

    /// Takes the context kept for `event_id` if it is for `channel_id`: `None` when there is
    /// none (never kept, expired, taken by another sender) or it cannot be read. Deletes it at
    /// the revision read, so it is taken once.
    pub async fn take(&self, event_id: &str, channel_id: &str) -> Option<ReplyContext> {
        let entry = self
            .kv
            .entry(event_id)
            .await
            .map_err(|e| tracing::warn!(error = %e, "cannot read the replies bucket"))
            .ok()??;
        if entry.operation != Operation::Put {
            return None;
        }
        let json = match &self.seal {
            Some(key) => key
                .open(
                    event_id,
                    std::str::from_utf8(&entry.value).unwrap_or_default(),
                )
                .map_err(
                    |e| tracing::warn!(error = %e, "a reply context cannot be opened; ignored"),
                )
                .ok()?,
            None => entry.value.to_vec(),
        };
        let context: ReplyContext = serde_json::from_slice(&json)
            .map_err(|e| tracing::warn!(error = %e, "an unreadable reply context; ignored"))
            .ok()?;
        if context.channel_id != channel_id {
            return None;
        }
        self.kv
            .delete_expect_revision(event_id, Some(entry.revision))
            .await
            .map_err(
                |e| tracing::info!(error = %e, event_id, "reply context taken by another sender"),
            )
            .ok()?;
        Some(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::V1;
    use patchbay_testkit::nats::NatsServer;

    fn context(channel: &str) -> ReplyContext {
        ReplyContext {
            v: V1,
            channel_id: channel.into(),
            token: "rt-1".into(),
            issued_at: chrono::Utc::now(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_context_is_taken_once_and_only_for_its_channel() {
        let nats = NatsServer::start().await.expect("nats-server");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: "t_replies".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let key = patchbay_config::MasterKey::from_base64(
            &patchbay_config::MasterKey::generate_base64().unwrap(),
        )
        .unwrap();
        let replies = Replies::from_store(kv.clone(), Some(key));
        assert_eq!(replies.take("evt_none", "ch_1").await, None, "never kept");
        replies.keep("evt_1", &context("ch_1")).await.unwrap();
        // Sealed in the bucket: whoever reads it there does not get the token.
        let stored = kv.get("evt_1").await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&stored).contains("rt-1"));
        assert!(
            Replies::from_store(kv.clone(), None)
                .take("evt_1", "ch_1")
                .await
                .is_none(),
            "opened without the key"
        );
        assert_eq!(
            replies.take("evt_1", "ch_2").await,
            None,
            "another channel's event"
        );
        // Eight senders at once: exactly one gets the token.
        let takes = (0..8).map(|_| replies.take("evt_1", "ch_1"));
        let got: Vec<_> = futures::future::join_all(takes)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].token, "rt-1");
        assert_eq!(replies.take("evt_1", "ch_1").await, None, "taken");
    }
}
