//! Publishing PostgreSQL's truth to the config bucket without losing a race.
//!
//! Two writers can publish one key at once: a republish (at start, or of a whole bot) and a
//! change (a revoked key, a disabled bot). A plain put lets the slower one win, and the slower
//! one may carry what it read before the change: a revoked key written back, for good. So every
//! write is revision-checked: read the entry's revision, then read the database, then write
//! only if the entry is still at that revision; otherwise read both again. Whoever writes last
//! read the database after every earlier write, so the bucket ends at the database's state.

use std::future::Future;

use async_nats::jetstream::kv::{self, Store};
use patchbay_contract::RpcError;
use serde::Serialize;

/// How often a write is tried again when other writers keep changing the entry.
const ATTEMPTS: usize = 20;

/// Revision-checked writes to the config bucket.
#[derive(Clone)]
pub(crate) struct ConfigWriter {
    kv: Store,
}

fn unavailable(key: &str, e: impl std::fmt::Display) -> RpcError {
    tracing::error!(%key, error = %e, "cannot publish config");
    RpcError::new(
        503,
        "unavailable",
        "stored, but not yet published to the services; retry shortly",
    )
}

impl ConfigWriter {
    pub(crate) fn new(kv: Store) -> Self {
        Self { kv }
    }

    /// Makes `key` hold what `load` reads (deleted when it reads `None`), read after the
    /// entry's revision, written only at that revision.
    pub(crate) async fn sync<T, F, Fut>(&self, key: &str, load: F) -> Result<(), RpcError>
    where
        T: Serialize,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, RpcError>>,
    {
        for _ in 0..ATTEMPTS {
            let revision = match self.kv.entry(key).await {
                Ok(Some(e)) => e.revision,
                Ok(None) => 0,
                Err(e) => return Err(unavailable(key, e)),
            };
            let written = match load().await? {
                Some(value) => {
                    let bytes = serde_json::to_vec(&value)
                        .map_err(|e| RpcError::new(500, "internal", e.to_string()))?;
                    patchbay_bus::write_at(
                        &self.kv,
                        key,
                        bytes.into(),
                        (revision != 0).then_some(revision),
                    )
                    .await
                    .map_err(|e| unavailable(key, e))?
                    .is_some()
                }
                None if revision == 0 => return Ok(()),
                None => match self.kv.delete_expect_revision(key, Some(revision)).await {
                    Ok(()) => true,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => return Err(unavailable(key, e)),
                },
            };
            // Otherwise another writer came between: read both again.
            if written {
                return Ok(());
            }
        }
        Err(unavailable(key, "the entry kept changing"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use patchbay_testkit::nats::NatsServer;
    use tokio::sync::Mutex;

    use super::*;

    /// A republish that read an API key before its revocation, and writes after the revocation
    /// published its delete: the key must stay revoked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_republish_racing_a_revocation_does_not_bring_the_key_back() {
        let nats = NatsServer::start().await.expect("nats-server");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js
            .create_key_value(kv::Config {
                bucket: "t_config".into(),
                history: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        let writer = ConfigWriter::new(kv.clone());
        // The database: the key is active.
        let db: Arc<Mutex<Option<&'static str>>> = Arc::new(Mutex::new(Some("active key")));
        let load = |db: Arc<Mutex<Option<&'static str>>>| async move { Ok(*db.lock().await) };
        writer.sync("apikey.h", || load(db.clone())).await.unwrap();

        // The republish reads the database; between its read and its write the key is revoked
        // (database, then bucket).
        let revoked = Arc::new(AtomicBool::new(false));
        let republish = || {
            let (db, revoked, writer) = (db.clone(), revoked.clone(), writer.clone());
            async move {
                let read = *db.lock().await;
                if !revoked.swap(true, Ordering::SeqCst) {
                    *db.lock().await = None;
                    writer
                        .sync("apikey.h", || async { Ok(None::<&str>) })
                        .await?;
                }
                Ok(read)
            }
        };
        writer.sync("apikey.h", republish).await.unwrap();

        let entry = kv.get("apikey.h").await.unwrap();
        assert_eq!(entry, None, "the revoked key was written back");
    }
}
