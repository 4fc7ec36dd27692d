//! The JetStream ceiling: the same number of hops as Patchbay's path, with nothing else.
//! `hops` work-queue streams with file storage are chained: a publisher puts `n` messages of
//! `payload` bytes into the first one (publish with ack, pipelined), and for every stream a
//! durable pull consumer takes each message, publishes it to the next stream, waits for that
//! ack and then acks the message explicitly (a publish that fails, e.g. an ack lost to a loaded
//! cluster, naks it instead, so it is forwarded again); the last stage only acks. Run against the same
//! nats-server as Patchbay, on the same cores. The publisher offers the messages all at once
//! (the ceiling), or ([`Offer`]) at a fixed rate, what the bare hops cost the server when
//! nothing batches them, as at a quiet installation's rates, or in a closed loop as the
//! bench's round trip is driven: a fixed number in the chain at a time, the next one published
//! when one has passed the last hop.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// How the publisher offers the messages.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// As fast as the first stream takes them (at most 1,000 unacknowledged publishes).
    AllAtOnce,
    /// At this many a second.
    Rate(f64),
    /// This many in the chain at a time: the next is published when one has left the last hop.
    Window(usize),
}

/// Messages per second through all `hops`, each stream with `replicas` replicas, offered as
/// `offer` says.
pub async fn run(
    url: &str,
    hops: usize,
    n: usize,
    payload: usize,
    replicas: usize,
    offer: Offer,
) -> anyhow::Result<f64> {
    let pace = match offer {
        Offer::Rate(r) => Some(r),
        Offer::AllAtOnce | Offer::Window(_) => None,
    };
    // A closed loop's free places in the chain; the last stage gives one back per message.
    let window = match offer {
        Offer::Window(w) => Some(std::sync::Arc::new(tokio::sync::Semaphore::new(w.max(1)))),
        Offer::AllAtOnce | Offer::Rate(_) => None,
    };
    let tag = patchbay_testkit::unique_prefix();
    let setup = jetstream::new(crate::stack::connect(url).await?);
    for i in 0..hops {
        setup
            .get_or_create_stream(stream::Config {
                name: format!("CEIL_{tag}_{i}"),
                subjects: vec![format!("ceil.{tag}.{i}")],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut stages = Vec::new();
    let mut done_tx = Some(done_tx);
    for i in 0..hops {
        let client = crate::stack::connect(url).await?;
        let js = jetstream::new(client);
        let s = js.get_stream(format!("CEIL_{tag}_{i}")).await?;
        let c = s
            .get_or_create_consumer(
                "stage",
                consumer::pull::Config {
                    durable_name: Some("stage".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await?;
        let next = (i + 1 < hops).then(|| format!("ceil.{tag}.{}", i + 1));
        let (last_tx, freed) = if i + 1 == hops {
            (done_tx.take(), window.clone())
        } else {
            (None, None)
        };
        stages.push(tokio::spawn(stage(js, c, next, n, last_tx, freed)));
    }
    let js = jetstream::new(crate::stack::connect(url).await?);
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    let mut ticks = pace.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
    for _ in 0..n {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        if let Some(w) = &window {
            w.acquire().await.context("closed loop")?.forget();
        }
        if acks.len() >= 1000 {
            acks.next().await.context("publish")??;
        }
        let f = js.publish(format!("ceil.{tag}.0"), body.clone()).await?;
        acks.push(f.into_future());
        if pace.is_some() || window.is_some() {
            // Acks that came in meanwhile, so a paced or closed run holds none back.
            while let Some(Some(a)) = futures::FutureExt::now_or_never(acks.next()) {
                a.context("publish")?;
            }
        }
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    // Done when the last stage has acked every message; a stage that stops with an error
    // ends the run at once rather than leave it waiting for the deadline.
    let aborts: Vec<_> = stages
        .iter()
        .map(tokio::task::JoinHandle::abort_handle)
        .collect();
    let mut running: FuturesUnordered<_> = stages.into_iter().collect();
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline, done_rx);
    let outcome = loop {
        tokio::select! {
            done = &mut done_rx => break done.context("ceiling: the last stage is gone"),
            Some(ended) = running.next() => match ended {
                Ok(Ok(())) => {} // the last stage, done: `done_rx` has it
                Ok(Err(e)) => break Err(e.context("ceiling: a stage stopped")),
                Err(e) => break Err(anyhow::anyhow!("ceiling: a stage panicked: {e}")),
            },
            () = &mut deadline => break Err(anyhow::anyhow!("ceiling: the chain did not finish in 10 minutes")),
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    for a in aborts {
        a.abort();
    }
    outcome?;
    for i in 0..hops {
        let _ = setup.delete_stream(format!("CEIL_{tag}_{i}")).await;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed;
    Ok(rate)
}

/// Pulls a stage starts again after an error before it gives up.
const PULL_RETRIES: usize = 20;

async fn stage(
    js: jetstream::Context,
    c: consumer::Consumer<consumer::pull::Config>,
    next: Option<String>,
    n: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    freed: Option<std::sync::Arc<tokio::sync::Semaphore>>,
) -> anyhow::Result<()> {
    let mut messages = c.stream().max_messages_per_batch(500).messages().await?;
    let mut inflight = FuturesUnordered::new();
    let mut finished = 0usize;
    let mut pull_errors = 0usize;
    loop {
        tokio::select! {
            Some(m) = messages.next(), if inflight.len() < 1000 => {
                let m = match m {
                    Ok(m) => m,
                    // A loaded cluster moves a consumer's leader or misses a heartbeat (the
                    // pull answers "no responders"): pull again, a few times at most.
                    Err(e) if pull_errors < PULL_RETRIES => {
                        pull_errors += 1;
                        eprintln!("  ceiling: pull failed ({e}); pulling again");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        messages = c.stream().max_messages_per_batch(500).messages().await?;
                        continue;
                    }
                    Err(e) => return Err(anyhow::anyhow!("pull: {e} ({PULL_RETRIES} retries)")),
                };
                let ack = match &next {
                    Some(subject) => Some(js.publish(subject.clone(), m.payload.clone()).await),
                    None => None,
                };
                inflight.push(async move {
                    let stored = match ack {
                        None => true,
                        Some(Ok(a)) => a.await.is_ok(),
                        Some(Err(_)) => false,
                    };
                    // Not stored in the next stream (a publish ack lost to a loaded cluster):
                    // given back, to be delivered and forwarded again. A lost ack of ours has
                    // it redelivered after the ack wait.
                    let _ = if stored {
                        m.ack().await
                    } else {
                        m.ack_with(jetstream::AckKind::Nak(None)).await
                    };
                    stored
                });
            }
            Some(stored) = inflight.next() => {
                if !stored {
                    continue;
                }
                finished += 1;
                if let Some(f) = &freed {
                    f.add_permits(1);
                }
                if finished == n {
                    if let Some(d) = done {
                        let _ = d.send(());
                    }
                    return Ok(());
                }
            }
        }
    }
}
