//! Group commit: the requests of concurrent callers go to the database together, as one
//! statement over arrays, instead of one round trip (and one commit) each.
//!
//! A [`GroupCommit`] has one writer task and a queue. The writer takes everything that is
//! waiting (up to [`MAX_BATCH`]) and runs it as one batch; while it does, the next requests
//! queue up. By default there is no timer: a lone request goes at once, so batching costs no
//! latency at low load and grows by itself with the load. A statement nobody waits on to go
//! on (history: a send's status, a callback's attempt log) may [`linger`](GroupCommit::lingering):
//! a request that finds the writer idle and alone waits that long for company, so at low
//! rates such writes go several to a statement too. Each caller waits for its own answer, so a
//! message is acknowledged only after its own row is committed.
//!
//! The inserts behind a group commit are set-based: one `INSERT … SELECT FROM unnest(…)` over
//! parallel arrays, one element per request, each row numbered `WITH ORDINALITY` so the
//! answers find their requests. One statement cannot touch a row twice (`ON CONFLICT DO
//! UPDATE` refuses to), so requests sharing a row go in successive statements of one
//! transaction: [`waves`] splits a batch so, keeping each row's requests in their order, and
//! [`WaveConnection`] runs them. Lookups and updates stay per row whatever plan PostgreSQL
//! caches: per-request subqueries, or PL/pgSQL functions that run the single-row statement once
//! per element (a cached generic plan joins a parameter array by hash over a sequential scan).
//!
//! **One bad request does not fail the others.** When a batch of several fails with an error
//! that is not the database being unavailable, each request is run again alone, so only the
//! one at fault gets the error.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Requests in one batch at most.
pub const MAX_BATCH: usize = 128;

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

    /// The batch's execution panicked: counted against the request (so a request that always
    /// panics is dead-lettered in the end), while the writer goes on with the next batch.
    fn abandoned() -> Self {
        Self {
            unavailable: false,
            message: "the batch was abandoned (its execution panicked)".to_owned(),
        }
    }
}

type Answer<R> = oneshot::Sender<Result<R, BatchError>>;
type RunFuture<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, sqlx::Error>> + Send>>;
type RunFn<Q, R> = dyn Fn(Vec<Q>) -> RunFuture<R> + Send + Sync;

/// Group commit of requests `Q` answered by `R` (see the module documentation).
pub struct GroupCommit<Q, R> {
    tx: mpsc::UnboundedSender<(Q, Answer<R>)>,
    name: &'static str,
}

impl<Q, R> Clone for GroupCommit<Q, R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            name: self.name,
        }
    }
}

impl<Q, R> GroupCommit<Q, R>
where
    Q: Clone + Send + 'static,
    R: Send + 'static,
{
    /// Starts the writer, which runs batches of at most [`MAX_BATCH`] requests with `run`;
    /// `run` answers one `R` per request, in order. It stops when the last handle is dropped.
    /// `name` labels the batch-size histogram (`patchbay_db_batch_size{batch}`).
    pub fn start<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, sqlx::Error>> + Send + 'static,
    {
        Self::lingering(name, std::time::Duration::ZERO, run)
    }

    /// Like [`start`](Self::start), except that a lone request (nothing else waiting when
    /// the writer takes it) waits up to `linger` for others to go with it; a batch that
    /// finds several waiting goes at once, as one under load always does.
    pub fn lingering<F, Fut>(name: &'static str, linger: std::time::Duration, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, sqlx::Error>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Q, Answer<R>)>();
        let run: Arc<RunFn<Q, R>> = Arc::new(move |batch| Box::pin(run(batch)));
        tokio::spawn(async move {
            let mut taken = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut taken, MAX_BATCH).await > 0 {
                if taken.len() == 1 && !linger.is_zero() {
                    let until = tokio::time::Instant::now() + linger;
                    while taken.len() < MAX_BATCH {
                        let room = MAX_BATCH - taken.len();
                        match tokio::time::timeout_at(until, rx.recv_many(&mut taken, room)).await {
                            Ok(n) if n > 0 => {}
                            // Closed, or the time is up.
                            _ => break,
                        }
                    }
                }
                metrics::histogram!("patchbay_db_batch_size", "batch" => name)
                    .record(taken.len() as f64);
                let (requests, answers): (Vec<Q>, Vec<Answer<R>>) = taken.drain(..).unzip();
                let started = std::time::Instant::now();
                // Its own task, so a panic drops this batch's answers (its callers get an
                // error) and not the writer.
                if let Err(e) = tokio::spawn(execute(run.clone(), requests, answers)).await {
                    tracing::error!(batch = name, error = %e, "a batch panicked");
                }
                metrics::histogram!("patchbay_db_batch_seconds", "batch" => name)
                    .record(started.elapsed().as_secs_f64());
            }
        });
        Self { tx, name }
    }

    /// Queues `request` at once (before the returned future is first polled) to run with
    /// whatever else is waiting; the future resolves once its batch is committed.
    /// `patchbay_db_batch_seconds{batch}` is the time each batch took to run (a connection,
    /// the statements, the commit); `patchbay_db_request_seconds{batch}` a request's whole
    /// wait, from its submission to its answer (the queue, a linger, its batch).
    pub fn submit(&self, request: Q) -> impl Future<Output = Result<R, BatchError>> + use<Q, R> {
        let (answer, answered) = oneshot::channel();
        let queued = self.tx.send((request, answer)).is_ok();
        let (name, submitted) = (self.name, std::time::Instant::now());
        async move {
            if !queued {
                return Err(BatchError::stopped());
            }
            let answer = answered.await.map_err(|_| BatchError::abandoned())?;
            metrics::histogram!("patchbay_db_request_seconds", "batch" => name)
                .record(submitted.elapsed().as_secs_f64());
            answer
        }
    }
}

/// Splits a batch whose requests touch the rows named by `keys` (one list per request) into
/// waves in which no row is touched twice: each request goes into the wave after the last
/// one holding any of its keys, so the requests of one row run in their order. Answers the
/// requests' indexes, wave by wave; almost always one wave, all of them.
pub fn waves<K, I>(keys: impl IntoIterator<Item = I>) -> Vec<Vec<usize>>
where
    K: Eq + Hash,
    I: IntoIterator<Item = K>,
{
    let mut last: HashMap<K, usize> = HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, request_keys) in keys.into_iter().enumerate() {
        let request_keys: Vec<K> = request_keys.into_iter().collect();
        let wave = request_keys
            .iter()
            .filter_map(|k| last.get(k).map(|w| w + 1))
            .max()
            .unwrap_or(0);
        for k in request_keys {
            last.insert(k, wave);
        }
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        if let Some(w) = waves.get_mut(wave) {
            w.push(i);
        }
    }
    waves
}

/// The connection a batch's waves run on: in one transaction when there are several, so the
/// batch commits as a whole; a lone statement commits by itself.
pub enum WaveConnection {
    /// One wave: no transaction statements.
    Single(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// Several waves, one transaction.
    Transaction(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WaveConnection {
    /// A connection for `waves` statements.
    pub async fn open(pool: &sqlx::PgPool, waves: usize) -> Result<Self, sqlx::Error> {
        Ok(if waves > 1 {
            Self::Transaction(pool.begin().await?)
        } else {
            Self::Single(pool.acquire().await?)
        })
    }

    /// Where the next wave's statement runs.
    pub fn connection(&mut self) -> &mut sqlx::PgConnection {
        match self {
            Self::Single(c) => c,
            Self::Transaction(t) => t,
        }
    }

    /// Commits the waves (a transaction dropped before this rolls back).
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Single(_) => Ok(()),
            Self::Transaction(t) => t.commit().await,
        }
    }
}

/// The answers of a batch of `n` requests in the batch's order, from each wave's answers in
/// the wave's order.
pub fn in_order<R>(
    n: usize,
    waves: &[Vec<usize>],
    answers: Vec<Vec<R>>,
) -> Result<Vec<R>, sqlx::Error> {
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for (wave, answers) in waves.iter().zip(answers) {
        if answers.len() != wave.len() {
            return Err(sqlx::Error::Protocol(format!(
                "a statement for {} requests gave {} answers",
                wave.len(),
                answers.len()
            )));
        }
        for (&i, r) in wave.iter().zip(answers) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| sqlx::Error::Protocol(format!("request {i} of {n} got no answer")))
        })
        .collect()
}

/// Runs one batch and answers every caller.
async fn execute<Q: Clone, R>(run: Arc<RunFn<Q, R>>, requests: Vec<Q>, answers: Vec<Answer<R>>) {
    let n = requests.len();
    let failed = |message: String| BatchError {
        unavailable: false,
        message,
    };
    // A copy only when a failure may need the requests one by one.
    let (outcome, requests) = if n == 1 {
        (run(requests).await, Vec::new())
    } else {
        (run(requests.clone()).await, requests)
    };
    match outcome {
        Ok(results) if results.len() == n => {
            for (answer, r) in answers.into_iter().zip(results) {
                let _ = answer.send(Ok(r));
            }
        }
        Ok(results) => {
            let err = failed(format!(
                "a batch of {n} requests got {} answers",
                results.len()
            ));
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
        Err(e) if n == 1 || crate::is_unavailable(&e) => {
            let err = BatchError::of(&e);
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
        Err(e) => {
            // One request may be at fault: each alone, so only it fails.
            tracing::debug!(error = %e, requests = n, "batch failed; running its requests one by one");
            for (answer, q) in answers.into_iter().zip(requests) {
                let r = match run(vec![q]).await {
                    Ok(mut v) if v.len() == 1 => Ok(v.remove(0)),
                    Ok(v) => Err(failed(format!("a request got {} answers", v.len()))),
                    Err(e) => Err(BatchError::of(&e)),
                };
                let _ = answer.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct N(u32);

    /// While the only writer is busy with a first request, the others wait and then go
    /// together, each answered with its own result.
    #[tokio::test]
    async fn waiting_requests_go_together_and_each_gets_its_answer() {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<usize>();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let gc = GroupCommit::start("test", move |batch: Vec<N>| {
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

    /// A lone request lingers for company: requests arriving within the linger go with it,
    /// as one batch.
    #[tokio::test(start_paused = true)]
    async fn a_lone_request_lingers_for_company() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = sizes.clone();
        let gc = GroupCommit::lingering(
            "test",
            std::time::Duration::from_millis(50),
            move |batch: Vec<N>| {
                s.lock().expect("sizes").push(batch.len());
                async move { Ok(batch.into_iter().map(|n| n.0).collect()) }
            },
        );
        let first = tokio::spawn(gc.submit(N(1)));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = tokio::spawn(gc.submit(N(2)));
        assert_eq!(first.await.expect("join").expect("answer"), 1);
        assert_eq!(second.await.expect("join").expect("answer"), 2);
        // Past the linger, a lone request goes alone.
        let started = tokio::time::Instant::now();
        assert_eq!(gc.submit(N(3)).await.expect("answer"), 3);
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        assert_eq!(*sizes.lock().expect("sizes"), [2, 1]);
    }

    /// A batch that fails is run again request by request, so only the bad one fails.
    #[tokio::test]
    async fn a_bad_request_fails_alone() {
        let gc = GroupCommit::start("test", |batch: Vec<N>| async move {
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

    /// A batch whose execution panics fails its callers (not as unavailable), and the writer
    /// goes on with the next batch.
    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_writer_goes_on() {
        let gc = GroupCommit::start("test", |batch: Vec<N>| async move {
            assert!(batch.iter().all(|n| n.0 != 13), "request 13 panics");
            Ok(batch.into_iter().map(|n| n.0).collect())
        });
        let e = gc
            .submit(N(13))
            .await
            .expect_err("the panicking batch fails");
        assert!(!e.unavailable, "{e}");
        assert_eq!(gc.submit(N(14)).await.expect("the next batch runs"), 14);
    }

    /// Requests sharing a key go in later waves than the ones before them; the others stay in
    /// the first.
    #[test]
    fn waves_keep_a_rows_requests_apart_and_in_order() {
        assert_eq!(waves([["a"], ["b"], ["c"]]), vec![vec![0, 1, 2]]);
        assert_eq!(
            waves([
                vec!["a", "x"],
                vec!["b"],
                vec!["a"],
                vec!["c", "x"],
                vec!["a"]
            ]),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // A request's wave follows the latest of its keys' waves.
        assert_eq!(
            waves([vec!["a"], vec!["a"], vec!["b"], vec!["b", "a"]]),
            vec![vec![0, 2], vec![1], vec![3]]
        );
        assert!(waves(Vec::<Vec<&str>>::new()).is_empty());
    }

    /// The database being unavailable fails the whole batch as unavailable, without retrying
    /// request by request.
    #[tokio::test]
    async fn unavailable_fails_the_batch_as_unavailable() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let gc = GroupCommit::start("test", move |_batch: Vec<N>| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Err::<Vec<u32>, _>(sqlx::Error::PoolTimedOut) }
        });
        let e = gc.submit(N(1)).await.expect_err("fails");
        assert!(e.unavailable);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
