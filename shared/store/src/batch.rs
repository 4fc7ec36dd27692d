//! Group commit: the requests of concurrent callers go to the database together, as one
//! statement over arrays, instead of one round trip (and one commit) each.
//!
//! A [`GroupCommit`] has a few writer tasks sharing one queue. A writer takes everything that
//! is waiting (up to a maximum) and runs it as one batch; while it does, the next requests
//! queue up for the next writer. There is no timer: a lone request goes at once, so batching
//! costs no latency at low load and grows by itself with the load. Each caller waits for its
//! own answer, so a message is acknowledged only after its own row is committed.
//!
//! **Conflicts within a batch.** PostgreSQL refuses an `insert … on conflict do update` that
//! touches one row twice in one statement. Requests declare the rows they write
//! ([`Batchable::keys`]); [`rounds`] splits a batch into rounds in which no key repeats, each
//! run as its own statement, in arrival order.
//!
//! **One bad request does not fail the others.** When a batch of several fails with an error
//! that is not the database being unavailable, each request is run again alone, so only the
//! one at fault gets the error.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// A failed batch, as each of its callers sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BatchError {
    /// The database is unreachable or overloaded (see [`crate::is_unavailable`]): not the
    /// request's fault.
    pub unavailable: bool,
    /// What failed.
    pub message: String,
}

impl BatchError {
    fn of(e: &sqlx::Error) -> Self {
        Self {
            unavailable: crate::is_unavailable(e),
            message: e.to_string(),
        }
    }

    fn stopped() -> Self {
        Self {
            unavailable: true,
            message: "the batch writer stopped".to_owned(),
        }
    }
}

/// A request that can share a statement with others.
pub trait Batchable {
    /// The rows this request writes with `on conflict do update` (or updates): two requests
    /// sharing a key never go in one statement.
    fn keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Splits `items` into rounds in which no key appears twice, keeping arrival order within and
/// across rounds for requests that share a key.
pub fn rounds<T: Batchable>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out: Vec<(HashSet<String>, Vec<T>)> = Vec::new();
    for item in items {
        let keys = item.keys();
        // After the last round that holds one of its keys, so same-key requests keep order.
        let after = out
            .iter()
            .rposition(|(used, _)| keys.iter().any(|k| used.contains(k)))
            .map_or(0, |i| i + 1);
        let slot = match out.get_mut(after) {
            Some(s) => s,
            None => {
                out.push((HashSet::new(), Vec::new()));
                out.last_mut().expect("just pushed")
            }
        };
        slot.0.extend(keys);
        slot.1.push(item);
    }
    out.into_iter().map(|(_, v)| v).collect()
}

type Answer<R> = oneshot::Sender<Result<R, BatchError>>;
type RunFuture<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, sqlx::Error>> + Send>>;
type RunFn<Q, R> = dyn Fn(Vec<Q>) -> RunFuture<R> + Send + Sync;

/// Group commit of requests `Q` answered by `R` (see the module documentation).
pub struct GroupCommit<Q, R> {
    tx: mpsc::UnboundedSender<(Q, Answer<R>)>,
}

impl<Q, R> Clone for GroupCommit<Q, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Q, R> GroupCommit<Q, R>
where
    Q: Batchable + Clone + Send + 'static,
    R: Send + 'static,
{
    /// Starts `writers` writer tasks running batches of at most `max_batch` requests with
    /// `run`, which answers one `R` per request, in order. They stop when the last handle is
    /// dropped. `name` labels the batch-size histogram (`patchbay_db_batch_size{batch}`).
    pub fn start<F, Fut>(name: &'static str, writers: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, sqlx::Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<(Q, Answer<R>)>();
        let rx = Arc::new(Mutex::new(rx));
        let run: Arc<RunFn<Q, R>> = Arc::new(move |batch| Box::pin(run(batch)));
        let max_batch = max_batch.max(1);
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let mut taken = Vec::with_capacity(max_batch);
                loop {
                    let n = rx.lock().await.recv_many(&mut taken, max_batch).await;
                    if n == 0 {
                        break;
                    }
                    metrics::histogram!("patchbay_db_batch_size", "batch" => name).record(n as f64);
                    let (requests, answers): (Vec<Q>, Vec<Answer<R>>) = taken.drain(..).unzip();
                    execute(&*run, requests, answers).await;
                }
            });
        }
        Self { tx }
    }

    /// Queues `request` at once (before the returned future is first polled) to run with
    /// whatever else is waiting; the future resolves once its batch is committed.
    pub fn submit(&self, request: Q) -> impl Future<Output = Result<R, BatchError>> + use<Q, R> {
        let (answer, answered) = oneshot::channel();
        let queued = self.tx.send((request, answer)).is_ok();
        async move {
            if !queued {
                return Err(BatchError::stopped());
            }
            answered.await.map_err(|_| BatchError::stopped())?
        }
    }
}

/// Runs one batch round by round and answers every caller.
async fn execute<Q, R>(run: &RunFn<Q, R>, requests: Vec<Q>, answers: Vec<Answer<R>>)
where
    Q: Batchable + Clone,
{
    let mut answers: Vec<Option<Answer<R>>> = answers.into_iter().map(Some).collect();
    let indexed: Vec<Indexed<Q>> = requests
        .into_iter()
        .enumerate()
        .map(|(i, q)| Indexed(i, q))
        .collect();
    for round in rounds(indexed) {
        let (idx, reqs): (Vec<usize>, Vec<Q>) =
            round.into_iter().map(|Indexed(i, q)| (i, q)).unzip();
        let single = reqs.len() == 1;
        match run(reqs.clone()).await {
            Ok(results) if results.len() == idx.len() => {
                for (i, r) in idx.into_iter().zip(results) {
                    if let Some(a) = answers[i].take() {
                        let _ = a.send(Ok(r));
                    }
                }
            }
            Ok(results) => {
                let err = BatchError {
                    unavailable: false,
                    message: format!(
                        "a batch of {} requests got {} answers",
                        idx.len(),
                        results.len()
                    ),
                };
                for i in idx {
                    if let Some(a) = answers[i].take() {
                        let _ = a.send(Err(err.clone()));
                    }
                }
            }
            Err(e) if single || crate::is_unavailable(&e) => {
                let err = BatchError::of(&e);
                for i in idx {
                    if let Some(a) = answers[i].take() {
                        let _ = a.send(Err(err.clone()));
                    }
                }
            }
            Err(e) => {
                // One request may be at fault: each alone, so only it fails.
                tracing::debug!(error = %e, requests = idx.len(), "batch failed; running its requests one by one");
                for (i, q) in idx.into_iter().zip(reqs) {
                    let r = match run(vec![q]).await {
                        Ok(mut v) if v.len() == 1 => Ok(v.remove(0)),
                        Ok(v) => Err(BatchError {
                            unavailable: false,
                            message: format!("a request got {} answers", v.len()),
                        }),
                        Err(e) => Err(BatchError::of(&e)),
                    };
                    if let Some(a) = answers[i].take() {
                        let _ = a.send(r);
                    }
                }
            }
        }
    }
}

struct Indexed<Q>(usize, Q);

impl<Q: Batchable> Batchable for Indexed<Q> {
    fn keys(&self) -> Vec<String> {
        self.1.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct K(&'static str, u32);

    impl Batchable for K {
        fn keys(&self) -> Vec<String> {
            vec![self.0.to_owned()]
        }
    }

    #[test]
    fn rounds_keep_keys_apart_and_order_within_a_key() {
        let r = rounds(vec![
            K("a", 1),
            K("b", 2),
            K("a", 3),
            K("c", 4),
            K("a", 5),
            K("b", 6),
        ]);
        assert_eq!(
            r,
            vec![
                vec![K("a", 1), K("b", 2), K("c", 4)],
                vec![K("a", 3), K("b", 6)],
                vec![K("a", 5)],
            ]
        );
    }

    #[derive(Clone, Debug)]
    struct N(u32);
    impl Batchable for N {}

    /// While the only writer is busy with a first request, the others wait and then go
    /// together, each answered with its own result.
    #[tokio::test]
    async fn waiting_requests_go_together_and_each_gets_its_answer() {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<usize>();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let gc = GroupCommit::start("test", 1, 64, move |batch: Vec<N>| {
            let started = started_tx.clone();
            let g = g.clone();
            async move {
                let _ = started.send(batch.len());
                g.acquire().await.expect("open").forget();
                Ok(batch.into_iter().map(|n| n.0 * 10).collect())
            }
        });
        let first = tokio::spawn(gc.submit(N(1)));
        // The writer holds the first request before the others are submitted.
        let n = tokio::task::spawn_blocking(move || {
            let first = started_rx.recv().expect("first batch");
            (first, started_rx)
        })
        .await
        .expect("join");
        let (first_len, started_rx) = n;
        assert_eq!(first_len, 1);
        // Queued while the writer is busy (`submit` queues before it is awaited).
        let rest: Vec<_> = (2..=5).map(|i| tokio::spawn(gc.submit(N(i)))).collect();
        gate.add_permits(2);
        assert_eq!(first.await.expect("join").expect("answer"), 10);
        for (i, h) in (2..=5).zip(rest) {
            assert_eq!(h.await.expect("join").expect("answer"), i * 10);
        }
        let second_len = tokio::task::spawn_blocking(move || started_rx.recv().expect("second"))
            .await
            .expect("join");
        assert_eq!(second_len, 4, "the four waiting requests went as one batch");
    }

    /// A batch that fails is run again request by request, so only the bad one fails.
    #[tokio::test]
    async fn a_bad_request_fails_alone() {
        let gc = GroupCommit::start("test", 1, 64, |batch: Vec<N>| async move {
            if batch.iter().any(|n| n.0 == 13) {
                return Err(sqlx::Error::RowNotFound);
            }
            Ok(batch.into_iter().map(|n| n.0).collect())
        });
        let handles: Vec<_> = (10..16)
            .map(|i| {
                let answer = gc.submit(N(i));
                tokio::spawn(async move { (i, answer.await) })
            })
            .collect();
        for h in handles {
            let (i, r) = h.await.expect("join");
            if i == 13 {
                let e = r.expect_err("the bad request fails");
                assert!(!e.unavailable);
            } else {
                assert_eq!(r.expect("the others succeed"), i);
            }
        }
    }

    /// The database being unavailable fails the whole batch as unavailable, without retrying
    /// request by request.
    #[tokio::test]
    async fn unavailable_fails_the_batch_as_unavailable() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let gc = GroupCommit::start("test", 1, 64, move |_batch: Vec<N>| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Err::<Vec<u32>, _>(sqlx::Error::PoolTimedOut) }
        });
        let e = gc.submit(N(1)).await.expect_err("fails");
        assert!(e.unavailable);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_request_goes_after_every_round_holding_one_of_its_keys() {
        #[derive(Clone, Debug, PartialEq)]
        struct Two(&'static str, &'static str);
        impl Batchable for Two {
            fn keys(&self) -> Vec<String> {
                vec![self.0.to_owned(), self.1.to_owned()]
            }
        }
        let r = rounds(vec![
            Two("a", "x"),
            Two("a", "y"),
            Two("b", "y"),
            Two("c", "z"),
        ]);
        assert_eq!(
            r,
            vec![
                vec![Two("a", "x"), Two("c", "z")],
                vec![Two("a", "y")],
                vec![Two("b", "y")],
            ]
        );
    }
}
