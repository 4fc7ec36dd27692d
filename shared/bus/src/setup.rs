//! The `<p>_setup` bucket: how each channel's configuration at its platform stands, for the
//! platforms Patchbay configures itself (Kik's `/v1/config`). The platform's sender records the
//! outcome of every attempt; the admin API shows it with the channel
//! (`GET /admin/v1/bots/{bot_id}/channels/{channel_id}`), so an operator sees a refused API key
//! or what the platform read back without reading logs.

use async_nats::jetstream::kv;
use chrono::Utc;
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{ChannelSetup, SetupState, V1};

use crate::{Bus, BusError};

/// The channels' setup records.
#[derive(Clone)]
pub struct SetupLog {
    kv: kv::Store,
}

impl std::fmt::Debug for SetupLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupLog").finish_non_exhaustive()
    }
}

impl SetupLog {
    /// The installation's bucket (created with the topology).
    pub async fn open(bus: &Bus) -> Result<Self, BusError> {
        let name = bus.subjects().bucket(Bucket::Setup);
        let kv = bus
            .jetstream()
            .get_key_value(&name)
            .await
            .map_err(|e| BusError::Unavailable(format!("bucket {name}: {e}")))?;
        Ok(Self { kv })
    }

    /// Records the outcome of an attempt on `channel_id`. Never fails the caller: the setup
    /// itself has happened (or not) whatever this record says; a record that cannot be written
    /// is logged.
    pub async fn record(
        &self,
        channel_id: &str,
        state: SetupState,
        detail: impl Into<String>,
        platform_config: Option<serde_json::Value>,
        attempts: u32,
    ) {
        let record = ChannelSetup {
            v: V1,
            state,
            detail: detail.into(),
            platform_config,
            attempts,
            at: Utc::now(),
        };
        let written = match serde_json::to_vec(&record) {
            Ok(value) => self
                .kv
                .put(channel_id, value.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::warn!(channel_id, error = %e, "could not record the channel's setup");
        }
    }

    /// The last record of `channel_id`, if any.
    pub async fn read(&self, channel_id: &str) -> Result<Option<ChannelSetup>, BusError> {
        let entry = self
            .kv
            .entry(channel_id)
            .await
            .map_err(|e| BusError::Unavailable(format!("setup bucket: {e}")))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value).ok(),
            _ => None,
        })
    }
}
