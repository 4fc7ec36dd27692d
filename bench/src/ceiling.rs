//! The JetStream ceiling: the same number of hops as Patchbay's path, with nothing else.
//! `hops` work-queue streams with file storage are chained: a publisher puts `n` messages of
//! `payload` bytes into the first one (publish with ack, pipelined), and for every stream a
//! durable pull consumer takes each message, publishes it to the next stream, waits for that
//! ack and then acks the message explicitly; the last stage only acks. Run against the same
//! nats-server as Patchbay, on the same cores.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Messages per second through all `hops`, each stream with `replicas` replicas.
pub async fn run(
    url: &str,
    hops: usize,
    n: usize,
    payload: usize,
    replicas: usize,
) -> anyhow::Result<f64> {
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
        let last_tx = if i + 1 == hops { done_tx.take() } else { None };
        stages.push(tokio::spawn(stage(js, c, next, n, last_tx)));
    }
    let js = jetstream::new(crate::stack::connect(url).await?);
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for _ in 0..n {
        if acks.len() >= 1000 {
            acks.next().await.context("publish")??;
        }
        let f = js.publish(format!("ceil.{tag}.0"), body.clone()).await?;
        acks.push(f.into_future());
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    tokio::time::timeout(Duration::from_secs(600), done_rx)
        .await
        .context("ceiling: the chain did not finish in 10 minutes")??;
    let elapsed = start.elapsed().as_secs_f64();
    for s in stages {
        s.abort();
    }
    for i in 0..hops {
        let _ = setup.delete_stream(format!("CEIL_{tag}_{i}")).await;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed;
    Ok(rate)
}

async fn stage(
    js: jetstream::Context,
    c: consumer::Consumer<consumer::pull::Config>,
    next: Option<String>,
    n: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut messages = c.stream().max_messages_per_batch(500).messages().await?;
    let mut inflight = FuturesUnordered::new();
    let mut finished = 0usize;
    loop {
        tokio::select! {
            Some(m) = messages.next(), if inflight.len() < 1000 => {
                let m = m.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
                let ack = match &next {
                    Some(subject) => Some(js.publish(subject.clone(), m.payload.clone()).await?),
                    None => None,
                };
                inflight.push(async move {
                    if let Some(a) = ack {
                        a.await.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
                    }
                    m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    anyhow::Ok(())
                });
            }
            Some(r) = inflight.next() => {
                r?;
                finished += 1;
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
