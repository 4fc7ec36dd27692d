//! An in-memory view of the config bucket (bots, channels, API keys), kept current by a
//! watcher, so no request path reads Postgres for configuration. A key the view has not seen
//! yet (it was written a moment ago) is read from the bucket directly and cached, so a bot
//! created one instant is usable the next.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
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

/// The watched view. Cheap to clone.
#[derive(Clone)]
pub struct ConfigView {
    store: kv::Store,
    entries: Arc<RwLock<HashMap<String, Slot>>>,
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
        };
        let watcher = view.clone();
        tokio::spawn(async move { watcher.watch(shutdown).await });
        Ok(view)
    }

    async fn watch(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut watch = match self.store.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch config bucket; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    n = watch.next() => n,
                    () = shutdown.cancelled() => return,
                };
                match next {
                    Some(Ok(entry)) => {
                        let record = match entry.operation {
                            Operation::Put => match decode(&entry.key, &entry.value) {
                                Some(r) => r,
                                None => continue,
                            },
                            Operation::Delete | Operation::Purge => Record::Deleted,
                        };
                        self.insert(entry.key, entry.revision, record);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "config watch interrupted");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    fn insert(&self, key: String, revision: u64, record: Record) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(slot) if slot.revision >= revision => {}
            _ => {
                map.insert(key, Slot { revision, record });
            }
        }
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
        self.read_store(key).await
    }

    /// `key` as the bucket has it now (and remembered), past what the watch delivered so far.
    async fn read_store(&self, key: String) -> Result<Option<Record>, BusError> {
        let entry = self
            .store
            .entry(key.clone())
            .await
            .map_err(|e| BusError::Unavailable(format!("config bucket: {e}")))?;
        let Some(entry) = entry else { return Ok(None) };
        if entry.operation != Operation::Put {
            return Ok(None);
        }
        let Some(record) = decode(&key, &entry.value) else {
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
