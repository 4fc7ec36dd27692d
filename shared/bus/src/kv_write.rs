//! Compare-and-set writes to a key-value bucket: the one way replicas that read an entry, decide,
//! and write it back keep from overwriting each other.

use async_nats::jetstream::kv;
use bytes::Bytes;

/// Writes `value` under `key` only if the entry is still at `revision` (`None`: only if the
/// key holds nothing). `Ok(Some(new revision))` when written, `Ok(None)` when another writer
/// came first (read again and decide again), `Err` when the bucket could not be reached.
pub async fn write_at(
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
) -> Result<Option<u64>, String> {
    match revision {
        Some(r) => match kv.update(key, value, r).await {
            Ok(new) => Ok(Some(new)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.to_string()),
        },
        None => match kv.create(key, value).await {
            Ok(new) => Ok(Some(new)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    }
}
