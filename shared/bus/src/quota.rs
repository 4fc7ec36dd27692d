//! Per-bot quotas of what a bot keeps in a shared key-value bucket (the links its messages'
//! URL buttons became, the one-time codes their openings minted), so one bot cannot fill a
//! bucket every bot needs.
//!
//! A quota counts what a bot took in a fixed window (`<kind>.<bot>.<window number>` in the
//! quotas bucket, taken with compare-and-set, so concurrent replicas never both take the last
//! unit). A window as long as what is counted lives means at most twice the quota is alive at
//! once: what the last window took, and this one's.

use std::time::Duration;

use async_nats::jetstream::kv;
use patchbay_contract::subjects::Bucket;

use crate::{Bus, BusError};

/// Compare-and-set attempts before a take gives up (replicas racing for one bot's counter).
const ATTEMPTS: usize = 16;

/// One kind of quota.
#[derive(Clone)]
pub struct Quota {
    kv: kv::Store,
    kind: &'static str,
    window: Duration,
    limit: u64,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("kind", &self.kind)
            .field("window", &self.window)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Quota {
    /// `limit` units of `kind` per bot and `window` (created by `ensure_topology`).
    pub async fn open(
        bus: &Bus,
        kind: &'static str,
        window: Duration,
        limit: u64,
    ) -> Result<Self, BusError> {
        let kv = bus
            .jetstream()
            .get_key_value(bus.subjects().bucket(Bucket::Quotas))
            .await
            .map_err(|e| BusError::Unavailable(format!("quotas bucket: {e}")))?;
        Ok(Self {
            kv,
            kind,
            window: window.max(Duration::from_secs(1)),
            limit,
        })
    }

    /// The most units a bot takes per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes one unit for `bot_id`: `Ok(false)` when its window's quota is used up.
    pub async fn take(&self, bot_id: &str) -> Result<bool, BusError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let window = now.as_secs() / self.window.as_secs().max(1);
        let key = format!("{}.{bot_id}.{window}", self.kind);
        let unavailable =
            |e: &dyn std::fmt::Display| BusError::Unavailable(format!("quota {key}: {e}"));
        for _ in 0..ATTEMPTS {
            let current = self.kv.entry(&key).await.map_err(|e| unavailable(&e))?;
            let (taken, revision) = match current {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u64::MAX),
                    Some(e.revision),
                ),
                _ => (0, None),
            };
            if taken >= self.limit {
                return Ok(false);
            }
            let written = crate::write_at(&self.kv, &key, (taken + 1).to_string().into(), revision)
                .await
                .map_err(|e| unavailable(&e))?;
            if written.is_some() {
                return Ok(true);
            }
        }
        Err(BusError::Unavailable(format!(
            "quota {key}: {ATTEMPTS} concurrent updates in a row"
        )))
    }
}
