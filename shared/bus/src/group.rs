//! Consumer groups: several replicas of one consumer share its stream, in order.
//!
//! Each pipeline stream is split into partitions by the bot or channel id (the stream's
//! subject transform, see `patchbay_contract::topology::Partitioning`), and every partition
//! has its own durable consumer. A replica of a consumer is a *member* of its group:
//!
//! * **Membership.** Every member keeps a record `<consumer>.<member>` in the members bucket,
//!   renewed every [`MEMBER_HEARTBEAT`], listing the partitions it runs (or is still draining).
//!   A record not renewed for [`MEMBER_TTL`] has expired: that member is gone. A member that
//!   stops cleanly deletes its record at once.
//! * **Assignment.** Every member computes the same assignment from the same member list:
//!   rendezvous hashing with bounded load, so partitions are spread evenly (no member gets more
//!   than ⌈partitions ∕ members⌉) and few move when a member joins or leaves.
//! * **Exclusive reading.** Views of the membership can differ for a moment, so assignment
//!   alone cannot keep two members off one partition. The partition consumers use JetStream's
//!   pinned-client priority policy: the server delivers to one reader only. A member giving a
//!   partition up stops pulling, finishes (or naks) what it holds, then unpins, and the new
//!   owner, already pulling, is pinned at once. A pin left by a crashed member is released by
//!   the new owner as soon as no live member lists that partition, or by the server after the
//!   pin timeout.
//! * **Order across a hand-over.** Before handling its first message the new owner handles the
//!   messages that were handed out and never acknowledged, in stream order (see
//!   [`crate::consume`]).
//!
//! A member that cannot renew its record (NATS unreachable from it) gives up its partitions
//! before its record expires, so that the others can take them over safely.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use patchbay_contract::subjects::Bucket;
use patchbay_contract::topology::{ConsumerSpec, MEMBER_HEARTBEAT, MEMBER_TTL};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consume::{Handler, PIN_GROUP, PartitionRun, run_partition};
use crate::{Bus, BusError};

/// How a consumer group runs in this process.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Partitions of the stream (the topology's setting).
    pub partitions: u32,
    /// Messages handled at once by this member, across its partitions.
    pub concurrency: usize,
    /// How long a partition given up (or the process stopping) may take to finish what it
    /// holds.
    pub grace: Duration,
    /// A name for this process in the member records (for operators).
    pub process: String,
}

/// What a member publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    process: String,
    /// Partitions it runs or is still draining.
    owns: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    at: Instant,
    owns: Vec<u32>,
}

pub(crate) type Members = Arc<std::sync::Mutex<HashMap<String, Seen>>>;

struct Running {
    stop: CancellationToken,
    handle: JoinHandle<()>,
    /// The server delivered to this reader, or a stale pin was released: nothing to unpin.
    settled: Arc<AtomicBool>,
}

/// Runs `handler` as one member of the consumer group `spec` until `shutdown`: joins the
/// group, runs the partitions assigned to this member, follows the membership as it changes,
/// and on shutdown drains its partitions (within `grace`), hands them over and leaves.
pub async fn run_group<T, H>(
    bus: Bus,
    spec: ConsumerSpec,
    options: GroupOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), BusError>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
    H: Handler<T>,
{
    let partitions = options.partitions.max(1);
    let member = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let key = format!("{}.{member}", spec.durable);
    let Some(bucket) = members_bucket(&bus, &shutdown).await else {
        return Ok(());
    };
    // A member that lost its record gives its partitions up after `MEMBER_TTL - 2 heartbeats`
    // and finishes them within `grace`; the pin must outlast that, or a new owner could be
    // served while the old one still works.
    let pin_timeout = MEMBER_TTL + options.grace + Duration::from_secs(5);
    let members: Members = Arc::default();
    let changed = Arc::new(Notify::new());
    let watching = shutdown.child_token();
    let watcher = tokio::spawn(watch_members(
        bucket.clone(),
        spec.durable,
        members.clone(),
        changed.clone(),
        watching.clone(),
    ));
    let running_permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut running: HashMap<u32, Running> = HashMap::new();
    let mut renewed: Option<Instant> = None;
    let mut assigned: BTreeSet<u32> = BTreeSet::new();
    let mut tick = tokio::time::interval(MEMBER_HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(consumer = spec.durable, %member, partitions, "joined consumer group");

    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
            () = shutdown.cancelled() => break,
        }
        running.retain(|p, r| {
            let done = r.handle.is_finished();
            if done {
                tracing::debug!(consumer = spec.durable, partition = p, "partition released");
            }
            !done
        });
        if put_record(&bucket, &key, &options.process, &running).await {
            renewed = Some(Instant::now());
        }
        let healthy = renewed.is_some_and(|t| t.elapsed() + 2 * MEMBER_HEARTBEAT < MEMBER_TTL);
        let live = live_members(&members, &member);
        let wanted: BTreeSet<u32> = if healthy {
            owned_by(&member, &live, spec.durable, partitions)
        } else {
            if !running.is_empty() {
                tracing::warn!(
                    consumer = spec.durable,
                    "cannot renew group membership; giving up partitions"
                );
            }
            BTreeSet::new()
        };
        for (p, r) in &running {
            if !wanted.contains(p) && !r.stop.is_cancelled() {
                tracing::info!(
                    consumer = spec.durable,
                    partition = p,
                    "handing partition over"
                );
                r.stop.cancel();
            }
        }
        let new: Vec<u32> = wanted
            .iter()
            .copied()
            .filter(|p| !running.contains_key(p))
            .collect();
        if wanted != assigned {
            tracing::info!(
                consumer = spec.durable,
                members = live.len(),
                partitions = ?wanted,
                "partitions assigned to this replica"
            );
            assigned.clone_from(&wanted);
        }
        if !new.is_empty() {
            // List a partition before reading it, so a new owner never mistakes this member's
            // pin for a stale one.
            let mut listed: Vec<u32> = running.keys().copied().chain(new.clone()).collect();
            listed.sort_unstable();
            if !put_owns(&bucket, &key, &options.process, listed).await {
                continue;
            }
            renewed = Some(Instant::now());
            for p in new {
                tracing::debug!(consumer = spec.durable, partition = p, "taking partition");
                let stop = shutdown.child_token();
                let settled = Arc::new(AtomicBool::new(false));
                let run = PartitionRun {
                    bus: bus.clone(),
                    spec: spec.clone(),
                    partition: p,
                    pin_timeout,
                    running: running_permits.clone(),
                    handler: handler.clone(),
                    shutdown: stop.clone(),
                    grace: options.grace,
                    delivering: settled.clone(),
                };
                let handle = tokio::spawn(run_and_unpin::<T, H>(run));
                running.insert(
                    p,
                    Running {
                        stop,
                        handle,
                        settled,
                    },
                );
            }
        }
        // A pin nobody live claims was left by a member that died: release it now rather
        // than after the pin timeout.
        for (p, r) in &running {
            if r.settled.load(Ordering::Relaxed) || r.stop.is_cancelled() {
                continue;
            }
            if !claimed_by_others(&live, &member, *p) {
                unpin(&bus, &spec, *p).await;
                r.settled.store(true, Ordering::Relaxed);
            }
        }
    }

    // Leave: delete the record so the others take over at once, drain, hand over.
    let _ = bucket.delete(&key).await;
    for r in running.values() {
        r.stop.cancel();
    }
    for (_, r) in running {
        let _ = r.handle.await;
    }
    watching.cancel();
    let _ = watcher.await;
    tracing::info!(consumer = spec.durable, %member, "left consumer group");
    Ok(())
}

async fn run_and_unpin<T, H>(run: PartitionRun<H>)
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
    H: Handler<T>,
{
    let (bus, spec, partition) = (run.bus.clone(), run.spec.clone(), run.partition);
    if let Err(e) = run_partition::<T, H>(run).await {
        tracing::error!(consumer = spec.durable, partition, error = %e, "partition failed; will retry");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Everything in hand is finished or left to redelivery: let the next owner in now.
    unpin(&bus, &spec, partition).await;
}

async fn unpin(bus: &Bus, spec: &ConsumerSpec, partition: u32) {
    let name = bus.subjects().stream(spec.stream);
    let durable = spec.partition_durable(partition);
    match bus.jetstream().get_stream_no_info(&name).await {
        Ok(stream) => {
            if let Err(e) = stream.unpin_consumer(&durable, PIN_GROUP).await {
                tracing::debug!(consumer = durable, error = %e, "unpin failed; the pin times out instead");
            }
        }
        Err(e) => tracing::debug!(consumer = durable, error = %e, "unpin failed"),
    }
}

pub(crate) async fn members_bucket(bus: &Bus, shutdown: &CancellationToken) -> Option<kv::Store> {
    let name = bus.subjects().bucket(Bucket::Members);
    loop {
        match bus.jetstream().get_key_value(&name).await {
            Ok(b) => return Some(b),
            Err(e) => tracing::warn!(bucket = name, error = %e, "no members bucket yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

async fn put_record(
    bucket: &kv::Store,
    key: &str,
    process: &str,
    running: &HashMap<u32, Running>,
) -> bool {
    let mut owns: Vec<u32> = running.keys().copied().collect();
    owns.sort_unstable();
    put_owns(bucket, key, process, owns).await
}

pub(crate) async fn put_owns(bucket: &kv::Store, key: &str, process: &str, owns: Vec<u32>) -> bool {
    let record = Record {
        process: process.to_owned(),
        owns,
    };
    let Ok(body) = serde_json::to_vec(&record) else {
        return false;
    };
    match tokio::time::timeout(MEMBER_HEARTBEAT, bucket.put(key, body.into())).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::debug!(key, error = %e, "cannot renew membership");
            false
        }
        Err(_) => false,
    }
}

/// Follows the group's records; expired ones simply stop being renewed.
pub(crate) async fn watch_members(
    bucket: kv::Store,
    consumer: &'static str,
    members: Members,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let prefix = format!("{consumer}.");
    crate::follow_bucket(
        &bucket,
        &format!("{consumer}.*"),
        "members",
        MEMBER_HEARTBEAT,
        &stop,
        |entry| {
            let Some(id) = entry.key.strip_prefix(&prefix) else {
                return;
            };
            let mut map = members.lock().unwrap_or_else(|p| p.into_inner());
            // Whether a member joined or left (a renewal changes nothing to wake up for).
            let changed = match entry.operation {
                kv::Operation::Put => {
                    let owns = serde_json::from_slice::<Record>(&entry.value)
                        .map(|r| r.owns)
                        .unwrap_or_default();
                    // A record read from history may be old: date it by the server's clock.
                    let age = (chrono::Utc::now() - entry.created)
                        .to_std()
                        .unwrap_or_default();
                    let at = Instant::now()
                        .checked_sub(age.min(MEMBER_TTL))
                        .unwrap_or_else(Instant::now);
                    map.insert(id.to_owned(), Seen { at, owns }).is_none()
                }
                kv::Operation::Delete | kv::Operation::Purge => map.remove(id).is_some(),
            };
            drop(map);
            if changed {
                wake.notify_one();
            }
        },
    )
    .await;
}

/// Members whose record is fresh, with what they own; always includes `me`.
pub(crate) fn live_members(members: &Members, me: &str) -> HashMap<String, Vec<u32>> {
    let map = members.lock().unwrap_or_else(|p| p.into_inner());
    let mut live: HashMap<String, Vec<u32>> = map
        .iter()
        .filter(|(_, s)| s.at.elapsed() < MEMBER_TTL)
        .map(|(id, s)| (id.clone(), s.owns.clone()))
        .collect();
    live.entry(me.to_owned()).or_default();
    live
}

fn claimed_by_others(live: &HashMap<String, Vec<u32>>, me: &str, partition: u32) -> bool {
    live.iter()
        .any(|(id, owns)| id != me && owns.contains(&partition))
}

fn owned_by(
    me: &str,
    live: &HashMap<String, Vec<u32>>,
    consumer: &str,
    partitions: u32,
) -> BTreeSet<u32> {
    let mut ids: Vec<&str> = live.keys().map(String::as_str).collect();
    ids.sort_unstable();
    let owners = assign(consumer, &ids, partitions);
    owners
        .iter()
        .enumerate()
        .filter(|(_, o)| ids[**o] == me)
        .filter_map(|(p, _)| u32::try_from(p).ok())
        .collect()
}

/// The owner (an index into `members`) of each partition: rendezvous hashing with bounded
/// load. Every (partition, member) pair gets a stable score; pairs are taken best first, each
/// partition going to the best-scoring member that still has room under
/// ⌈partitions ∕ members⌉. Deterministic, so every member computes the same answer, and a
/// member joining or leaving moves little more than its share.
pub fn assign(consumer: &str, members: &[&str], partitions: u32) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    let n = partitions as usize;
    let cap = n.div_ceil(members.len());
    let mut pairs: Vec<(u64, usize, usize)> = (0..n)
        .flat_map(|p| (0..members.len()).map(move |m| (p, m)))
        .map(|(p, m)| (fnv1a(&[consumer, members[m], &p.to_string()]), p, m))
        .collect();
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut owner: Vec<Option<usize>> = vec![None; n];
    let mut load = vec![0usize; members.len()];
    for (_, p, m) in pairs {
        if owner[p].is_none() && load[m] < cap {
            owner[p] = Some(m);
            load[m] += 1;
        }
    }
    owner.into_iter().map(|o| o.unwrap_or(0)).collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms (the assignment must be).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_loads_are_even() {
        for n in 1..=6usize {
            let names: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
            let ids: Vec<&str> = names.iter().map(String::as_str).collect();
            for partitions in [1u32, 3, 8, 16] {
                let owners = assign("dispatcher", &ids, partitions);
                assert_eq!(owners.len(), partitions as usize);
                let cap = (partitions as usize).div_ceil(n);
                for i in 0..n {
                    let load = owners.iter().filter(|o| **o == i).count();
                    assert!(load <= cap, "{n} members, {partitions} partitions: {load}");
                }
            }
        }
    }

    #[test]
    fn assignment_is_deterministic_and_moves_little() {
        let before = ["a", "b", "c"];
        let x = assign("c1", &before, 16);
        assert_eq!(x, assign("c1", &before, 16));
        // A fourth member joins: it takes its share, and at least half the partitions stay
        // where they were (the even-load bound moves some more than the minimal quarter).
        let after = ["a", "b", "c", "d"];
        let y = assign("c1", &after, 16);
        let stayed = x
            .iter()
            .zip(&y)
            .filter(|(o, n)| before[**o] == after[**n])
            .count();
        assert_eq!(y.iter().filter(|o| **o == 3).count(), 4);
        assert!(stayed >= 8, "only {stayed} of 16 partitions stayed");
    }

    #[test]
    fn claims_of_other_members_count_not_mine() {
        let live: HashMap<String, Vec<u32>> =
            [("me".to_owned(), vec![1]), ("other".to_owned(), vec![2])].into();
        assert!(!claimed_by_others(&live, "me", 1));
        assert!(claimed_by_others(&live, "me", 2));
        assert!(!claimed_by_others(&live, "me", 3));
    }
}
