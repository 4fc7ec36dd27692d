//! The `<p>_activity` bucket: when each channel's platform last reached Patchbay, as the
//! operator's channel views show it ("last event seen", "handshake"): written by the
//! platform's ingress after a webhook it verified and published, or a handshake it answered.
//! A replica writes a channel's record at most every [`EVERY`], in the background: a
//! webhook's answer never waits for it, and a busy channel costs one write per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use chrono::Utc;
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{ChannelActivity, V1};

use crate::{Bus, BusError};

/// How often one replica records the same channel's activity at most.
pub const EVERY: Duration = Duration::from_secs(30);

/// What reached the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seen {
    /// A webhook whose signature held, published.
    Event,
    /// A handshake (`GET` verification) answered.
    Handshake,
}

/// The channels' activity records.
#[derive(Clone)]
pub struct ActivityLog {
    kv: kv::Store,
    /// When this replica last wrote each (channel, kind).
    written: Arc<Mutex<HashMap<(String, Seen), Instant>>>,
}

impl std::fmt::Debug for ActivityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityLog").finish_non_exhaustive()
    }
}

impl ActivityLog {
    /// The installation's bucket (created with the topology).
    pub async fn open(bus: &Bus) -> Result<Self, BusError> {
        let name = bus.subjects().bucket(Bucket::Activity);
        let kv = bus
            .jetstream()
            .get_key_value(&name)
            .await
            .map_err(|e| BusError::Unavailable(format!("bucket {name}: {e}")))?;
        Ok(Self {
            kv,
            written: Arc::default(),
        })
    }

    /// Notes that `what` happened on `channel_id` now; recorded in the background unless this
    /// replica recorded it less than [`EVERY`] ago. A record that cannot be written is logged.
    pub fn seen(&self, channel_id: &str, what: Seen) {
        let now = Instant::now();
        {
            let Ok(mut written) = self.written.lock() else {
                return;
            };
            let key = (channel_id.to_owned(), what);
            if written
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < EVERY)
            {
                return;
            }
            // Bounded: entries older than the interval are of no use.
            if written.len() > 10_000 {
                written.retain(|_, at| now.duration_since(*at) < EVERY);
            }
            written.insert(key, now);
        }
        let log = self.clone();
        let channel_id = channel_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = log.record(&channel_id, what).await {
                tracing::warn!(%channel_id, error = %e, "could not record the channel's activity");
            }
        });
    }

    async fn record(&self, channel_id: &str, what: Seen) -> Result<(), BusError> {
        let mut record = self.read(channel_id).await?.unwrap_or(ChannelActivity {
            v: V1,
            last_event_at: None,
            handshake_at: None,
        });
        match what {
            Seen::Event => record.last_event_at = Some(Utc::now()),
            Seen::Handshake => record.handshake_at = Some(Utc::now()),
        }
        let value = serde_json::to_vec(&record)?;
        self.kv
            .put(channel_id, value.into())
            .await
            .map_err(|e| BusError::Unavailable(format!("activity bucket: {e}")))?;
        Ok(())
    }

    /// The record of `channel_id`, if its platform ever reached Patchbay.
    pub async fn read(&self, channel_id: &str) -> Result<Option<ChannelActivity>, BusError> {
        let entry = self
            .kv
            .entry(channel_id)
            .await
            .map_err(|e| BusError::Unavailable(format!("activity bucket: {e}")))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value).ok(),
            _ => None,
        })
    }
}
