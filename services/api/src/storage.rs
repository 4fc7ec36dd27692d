//! What each bot stores (its uploads, `POST /v1/media`, and its BrandChat files), counted
//! against its quota (`PATCHBAY_MEDIA_QUOTA_BYTES`) without listing the object stores.
//!
//! A bot's usage is one record in the quotas bucket (`storage.<bot id>`): the bytes of its
//! files by the hour they expire (uploads live [`UPLOAD_TTL`]; BrandChat's files until they are
//! deleted). An upload reserves its size with compare-and-set before the file is stored, so
//! two uploads at once cannot both take the last bytes (and from any replica), and gives the
//! reservation back when storing fails. Bytes count until the end of the hour their file
//! expires in (at most an hour longer than the file lives).
//!
//! The record is rebuilt from the stores when it is missing (the first upload of a bot, or
//! after the quotas bucket's TTL passed without an upload): the one listing of the stores, and
//! only then.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::object_store::ObjectStore;
use futures::StreamExt;
use patchbay_contract::topology::UPLOAD_TTL;
use patchbay_runtime::ApiError;
use serde::{Deserialize, Serialize};

/// Compare-and-set attempts before a reservation gives up (replicas racing for one bot).
const ATTEMPTS: usize = 16;

/// Which store a file goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `POST /v1/media`: kept [`UPLOAD_TTL`].
    Upload,
    /// BrandChat's `file/upload`: kept until deleted.
    BrandchatFile,
}

/// A bot's stored bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Usage {
    /// Bytes of expiring files by the hour they expire in (Unix hours, rounded up).
    expiring: BTreeMap<i64, u64>,
    /// Bytes of files kept until deleted.
    kept: u64,
}

impl Usage {
    fn prune(&mut self, now_hour: i64) {
        self.expiring = self.expiring.split_off(&now_hour.saturating_add(1));
    }

    fn used(&self) -> u64 {
        self.expiring
            .values()
            .fold(self.kept, |sum, b| sum.saturating_add(*b))
    }

    fn add(&mut self, hour: Option<i64>, size: u64) {
        match hour {
            Some(h) => {
                let b = self.expiring.entry(h).or_default();
                *b = b.saturating_add(size);
            }
            None => self.kept = self.kept.saturating_add(size),
        }
    }

    fn remove(&mut self, hour: Option<i64>, size: u64) {
        match hour {
            Some(h) => {
                if let Some(b) = self.expiring.get_mut(&h) {
                    *b = b.saturating_sub(size);
                    if *b == 0 {
                        self.expiring.remove(&h);
                    }
                }
            }
            None => self.kept = self.kept.saturating_sub(size),
        }
    }
}

/// The hour (Unix hours) a file stored at `at` (Unix seconds) for `ttl` expires in, rounded up.
fn expiry_hour(at: i64, ttl: Duration) -> i64 {
    let end = at.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    end.saturating_add(3599).div_euclid(3600)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A reservation an upload holds: given back with [`Ledger::release`] if storing fails.
#[derive(Debug)]
pub(crate) struct Reservation {
    bot_id: String,
    hour: Option<i64>,
    size: u64,
}

/// The bots' stored bytes (see the module documentation).
pub(crate) struct Ledger {
    kv: kv::Store,
    uploads: ObjectStore,
    files: ObjectStore,
    quota: u64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("the bot's storage record: {e}"))
}

impl Ledger {
    /// The ledger in the quotas bucket `kv`, over the `uploads` and BrandChat `files` stores,
    /// each bot allowed `quota` bytes.
    pub(crate) fn new(kv: kv::Store, uploads: ObjectStore, files: ObjectStore, quota: u64) -> Self {
        Self {
            kv,
            uploads,
            files,
            quota,
        }
    }

    /// The most bytes a bot stores.
    pub(crate) fn quota(&self) -> u64 {
        self.quota
    }

    fn key(bot_id: &str) -> String {
        format!("storage.{bot_id}")
    }

    /// Reserves `size` bytes of `kind` for `bot_id`: `Err(used)` (what its files take now)
    /// when they do not fit in its quota.
    pub(crate) async fn reserve(
        &self,
        bot_id: &str,
        kind: Kind,
        size: u64,
    ) -> Result<Result<Reservation, u64>, ApiError> {
        let hour = match kind {
            Kind::Upload => Some(expiry_hour(now_secs(), UPLOAD_TTL)),
            Kind::BrandchatFile => None,
        };
        let key = Self::key(bot_id);
        for _ in 0..ATTEMPTS {
            let (mut usage, revision) = match self.kv.entry(&key).await.map_err(unavailable)? {
                Some(e) if e.operation == kv::Operation::Put => (
                    serde_json::from_slice::<Usage>(&e.value).map_err(unavailable)?,
                    Some(e.revision),
                ),
                _ => (self.rebuild(bot_id).await?, None),
            };
            usage.prune(now_secs().div_euclid(3600));
            let used = usage.used();
            if used.saturating_add(size) > self.quota {
                return Ok(Err(used));
            }
            usage.add(hour, size);
            if self.write(&key, &usage, revision).await? {
                return Ok(Ok(Reservation {
                    bot_id: bot_id.to_owned(),
                    hour,
                    size,
                }));
            }
        }
        Err(ApiError::unavailable(
            "the bot's storage record is changing too fast; try again",
        ))
    }

    /// Gives back a reservation whose file was not stored (a failure is logged: the bytes then
    /// count until the record is rebuilt or they expire).
    pub(crate) async fn release(&self, r: Reservation) {
        let key = Self::key(&r.bot_id);
        for _ in 0..ATTEMPTS {
            let entry = match self.kv.entry(&key).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => e,
                // Gone: the next reservation rebuilds it from the stores.
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, bot_id = %r.bot_id, "giving back reserved storage failed");
                    return;
                }
            };
            let Ok(mut usage) = serde_json::from_slice::<Usage>(&entry.value) else {
                return;
            };
            usage.remove(r.hour, r.size);
            match self.write(&key, &usage, Some(entry.revision)).await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = ?e, bot_id = %r.bot_id, "giving back reserved storage failed");
                    return;
                }
            }
        }
    }

    /// Writes `usage` if the record is still at `revision` (`None`: does not exist): whether
    /// it was written.
    async fn write(
        &self,
        key: &str,
        usage: &Usage,
        revision: Option<u64>,
    ) -> Result<bool, ApiError> {
        let bytes = serde_json::to_vec(usage).map_err(unavailable)?;
        patchbay_bus::write_at(&self.kv, key, bytes.into(), revision)
            .await
            .map(|written| written.is_some())
            .map_err(unavailable)
    }

    /// The bot's usage as the stores hold it now.
    async fn rebuild(&self, bot_id: &str) -> Result<Usage, ApiError> {
        let mut usage = Usage::default();
        for (store, ttl) in [(&self.uploads, Some(UPLOAD_TTL)), (&self.files, None)] {
            let prefix = format!("{bot_id}/");
            let mut listing = store
                .list()
                .await
                .map_err(|e| ApiError::unavailable(format!("reading the stored files: {e}")))?;
            while let Some(info) = listing.next().await {
                let info = info
                    .map_err(|e| ApiError::unavailable(format!("reading the stored files: {e}")))?;
                if info.deleted || !info.name.starts_with(&prefix) {
                    continue;
                }
                let hour = ttl.map(|ttl| {
                    let at = info.modified.map_or_else(now_secs, |m| m.timestamp());
                    expiry_hour(at, ttl)
                });
                usage.add(hour, info.size as u64);
            }
        }
        tracing::info!(
            bot_id,
            used = usage.used(),
            "storage record rebuilt from the stores"
        );
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_until_the_hour_their_file_expires_in() {
        assert_eq!(expiry_hour(0, Duration::from_secs(1)), 1);
        assert_eq!(expiry_hour(3600, Duration::from_secs(3600)), 2);
        assert_eq!(expiry_hour(3601, Duration::from_secs(3600)), 3);
        let mut u = Usage::default();
        u.add(Some(10), 100);
        u.add(Some(12), 50);
        u.add(None, 7);
        assert_eq!(u.used(), 157);
        u.prune(9);
        assert_eq!(u.used(), 157, "nothing expired before hour 10 ends");
        u.prune(10);
        assert_eq!(u.used(), 57, "hour 10's files are gone");
        u.remove(Some(12), 50);
        u.remove(None, 7);
        assert_eq!(u, Usage::default(), "emptied hours are dropped");
        u.remove(Some(3), 5);
        assert_eq!(u.used(), 0, "never below zero");
    }
}
