//! Presence: how many replicas of a service are alive right now, so that a limit meant for
//! the whole installation (an API rate limit) can be shared fairly between them. Each replica
//! keeps a record `<name>.<member>` in the members bucket, exactly like a consumer-group member
//! (see [`crate::group`]), and counts the fresh records of its name.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use patchbay_contract::topology::MEMBER_HEARTBEAT;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Bus;
use crate::group::{Members, live_members, members_bucket, put_owns, watch_members};

/// The live count of one service's replicas (at least 1: this one).
#[derive(Debug, Clone)]
pub struct Presence {
    live: Arc<AtomicUsize>,
}

impl Presence {
    /// Replicas alive now, this one included.
    pub fn replicas(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// Joins the presence group `name` until `shutdown` (then leaves at once).
    pub fn join(
        bus: &Bus,
        name: &'static str,
        process: String,
        shutdown: CancellationToken,
    ) -> Self {
        let live = Arc::new(AtomicUsize::new(1));
        let count = live.clone();
        let bus = bus.clone();
        tokio::spawn(async move {
            let Some(bucket) = members_bucket(&bus, &shutdown).await else {
                return;
            };
            let member = ulid::Ulid::new().to_string().to_ascii_lowercase();
            let key = format!("{name}.{member}");
            let members: Members = Arc::default();
            let watching = shutdown.child_token();
            let watcher = tokio::spawn(watch_members(
                bucket.clone(),
                name,
                members.clone(),
                Arc::new(Notify::new()),
                watching.clone(),
            ));
            let mut tick = tokio::time::interval(MEMBER_HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                put_owns(&bucket, &key, &process, Vec::new()).await;
                count.store(live_members(&members, &member).len(), Ordering::Relaxed);
            }
            let _ = bucket.delete(&key).await;
            watching.cancel();
            let _ = watcher.await;
        });
        Self { live }
    }
}
