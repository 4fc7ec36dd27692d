//! Following a key-value bucket: every entry from the bucket's history on, then each change as
//! it happens, reopened after an interruption (NATS restarting, a leader moving), until
//! shutdown. What the caller keeps in memory from it (the configuration view, a consumer
//! group's members, cancelled broadcasts) is its own.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Hands every entry of `bucket` whose key matches `keys` (a subject filter, `>` for all) to
/// `on_entry`, from the oldest kept revision on and then as it changes, until `shutdown`.
/// A watch that cannot be opened is tried again after `retry`; one that ends or fails is
/// reopened, with its history again (so `on_entry` must take an entry it has seen before,
/// and an older revision of a key after a newer one, in its stride). `what` names the bucket
/// in the logs.
pub async fn follow_bucket(
    bucket: &kv::Store,
    keys: &str,
    what: &str,
    retry: Duration,
    shutdown: &CancellationToken,
    mut on_entry: impl FnMut(kv::Entry),
) {
    while !shutdown.is_cancelled() {
        let mut watch = match bucket.watch_with_history(keys).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(bucket = what, error = %e, "cannot watch the bucket; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry) => continue,
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
                Some(Ok(entry)) => on_entry(entry),
                Some(Err(e)) => {
                    tracing::warn!(bucket = what, error = %e, "bucket watch interrupted; reopening");
                    break;
                }
                None => break,
            }
        }
    }
}
