//! An in-memory view of the config bucket (bots, channels, API keys), kept current by a
//! watcher, so no request path reads Postgres for configuration. A key the view has not seen
//! yet (it was written a moment ago) is read from the bucket directly and cached, so a bot
//! created one instant is usable the next.
//!
//! A key the bucket does not have either is remembered as absent for [`ABSENT_TTL`] (at most
//! [`ABSENT_MAX`] of them), so a caller repeating a wrong API key or channel id costs one
//! bucket read, not one per request. The watch delivering the key clears that at once: a key
//! created after it was asked for works as soon as this view sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use patchbay_contract::subjects::Bucket;
use patchbay_contract::{ApiKeyRecord, BotRecord, ChannelRecord, config_keys};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::{Bus, BusError};

#[derive(Clone)]
enum Record {
    Bot(Arc<BotRecord>),
    Channel(Arc<ChannelRecord>),
    ApiKey(Arc<ApiKeyRecord>),
    Deleted,
}

struct Slot {
    revision: u64,
    record: Record,
}

/// How long a key the bucket did not have is believed absent without asking again.
pub const ABSENT_TTL: Duration = Duration::from_secs(30);
/// Most keys remembered as absent; beyond it (after dropping the expired) they are forgotten.
pub const ABSENT_MAX: usize = 10_000;

/// The watched view. Cheap to clone.
#[derive(Clone)]
pub struct ConfigView {
    store: kv::Store,
    entries: Arc<RwLock<HashMap<String, Slot>>>,
    /// Keys the bucket did not have, and when that was learnt.
    absent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for ConfigView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigView").finish_non_exhaustive()
    }
}

fn decode(key: &str, value: &[u8]) -> Option<Record> {
    fn parse<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<Arc<T>> {
        serde_json::from_slice(value)
            .map_err(|e| tracing::error!(%key, error = %e, "unreadable config record; ignored"))
            .ok()
            .map(Arc::new)
    }
    let kind = key.split('.').next()?;
    match kind {
        "bot" => parse(key, value).map(Record::Bot),
        "channel" => parse(key, value).map(Record::Channel),
        "apikey" => parse(key, value).map(Record::ApiKey),
        _ => None,
    }
}

impl ConfigView {
    /// Opens the bucket and starts the watcher, which runs until `shutdown`.
    pub async fn start(bus: &Bus, shutdown: CancellationToken) -> Result<Self, BusError> {
        let bucket = bus.subjects().bucket(Bucket::Config);
        let store = bus
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(|e| BusError::Setup(format!("bucket {bucket}: {e}")))?;
        let view = Self {
            store,
            entries: Arc::default(),
            absent: Arc::default(),
        };
        let watcher = view.clone();
        tokio::spawn(async move { watcher.watch(shutdown).await });
        Ok(view)
    }

    async fn watch(self, shutdown: CancellationToken) {
        crate::follow_bucket(
            &self.store,
            ">",
            "config",
            Duration::from_secs(1),
            &shutdown,
            |entry| {
                let record = match entry.operation {
                    Operation::Put => match decode(&entry.key, &entry.value) {
                        Some(r) => r,
                        None => return,
                    },
                    Operation::Delete | Operation::Purge => Record::Deleted,
                };
                self.insert(entry.key, entry.revision, record);
            },
        )
        .await;
    }

    fn insert(&self, key: String, revision: u64, record: Record) {
        self.absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(slot) if slot.revision >= revision => {}
            _ => {
                map.insert(key, Slot { revision, record });
            }
        }
    }

    /// Whether `key` was found absent less than [`ABSENT_TTL`] ago.
    fn known_absent(&self, key: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|at| at.elapsed() < ABSENT_TTL)
    }

    fn remember_absent(&self, key: String) {
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        if absent.len() >= ABSENT_MAX {
            absent.retain(|_, at| at.elapsed() < ABSENT_TTL);
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
        }
        absent.insert(key, Instant::now());
    }

    async fn lookup(&self, key: String) -> Result<Option<Record>, BusError> {
        if let Some(slot) = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(match slot.record {
                Record::Deleted => None,
                ref r => Some(r.clone()),
            });
        }
        if self.known_absent(&key) {
            return Ok(None);
        }
        self.read_store(key).await
    }

    /// `key` as the bucket has it now (and remembered, or remembered as absent), past what the
    /// watch delivered so far. Counted (`patchbay_config_reads_total{kind}`).
    async fn read_store(&self, key: String) -> Result<Option<Record>, BusError> {
        let kind = key.split('.').next().unwrap_or_default().to_owned();
        metrics::counter!("patchbay_config_reads_total", "kind" => kind).increment(1);
        let entry = self
            .store
            .entry(key.clone())
            .await
            .map_err(|e| BusError::Unavailable(format!("config bucket: {e}")))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            self.remember_absent(key);
            return Ok(None);
        };
        let Some(record) = decode(&key, &entry.value) else {
            self.remember_absent(key);
            return Ok(None);
        };
        self.insert(key, entry.revision, record.clone());
        Ok(Some(record))
    }

    /// The bot `id`.
    pub async fn bot(&self, id: &str) -> Result<Option<Arc<BotRecord>>, BusError> {
        Ok(match self.lookup(config_keys::bot(id)).await? {
            Some(Record::Bot(b)) => Some(b),
            _ => None,
        })
    }

    /// The bot `id` as the config bucket has it now, for the rare reads that must see a change
    /// made a moment ago (the watch delivers it within milliseconds, but not before).
    pub async fn bot_latest(&self, id: &str) -> Result<Option<Arc<BotRecord>>, BusError> {
        Ok(match self.read_store(config_keys::bot(id)).await? {
            Some(Record::Bot(b)) => Some(b),
            _ => None,
        })
    }

    /// The channel `id`.
    pub async fn channel(&self, id: &str) -> Result<Option<Arc<ChannelRecord>>, BusError> {
        Ok(match self.lookup(config_keys::channel(id)).await? {
            Some(Record::Channel(c)) => Some(c),
            _ => None,
        })
    }

    /// Every enabled channel of `platform` the view has seen (for platforms that post one
    /// app's webhooks for many channels to one URL, routed by an id inside the payload).
    pub fn channels(&self, platform: patchbay_contract::Platform) -> Vec<Arc<ChannelRecord>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|slot| match &slot.record {
                Record::Channel(c) if c.platform == platform && c.enabled => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// The API key whose SHA-256 hex is `hash`, if it exists and has not expired.
    pub async fn api_key(&self, hash: &str) -> Result<Option<Arc<ApiKeyRecord>>, BusError> {
        Ok(match self.lookup(config_keys::api_key(hash)).await? {
            Some(Record::ApiKey(k)) if k.expires_at.is_none_or(|t| t > chrono::Utc::now()) => {
                Some(k)
            }
            _ => None,
        })
    }
}
