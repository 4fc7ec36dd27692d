//! Live views, fed from NATS: a bot's events as they go to its callback
//! (`<p>.dispatch.<bot>`), and a "changed" signal for the pages that show conversations (an
//! event of the conversation, or a status of one of the bot's messages), on which the page's
//! script fetches its fragment again, and a steady "changed" for numbers with no event of
//! their own (a broadcast's counts). Each open page holds one plain subscription, dropped
//! when the browser goes; nothing is stored.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use patchbay_contract::DispatchJob;

use crate::Console;
use crate::page::ConsoleError;

/// Event ids remembered per stream, so a retried or replayed delivery is shown once.
const RECENT: usize = 256;

/// The server-sent events of a page: `kind` events whose data is what `render` makes of each
/// job it keeps (`None`: skipped).
fn stream<S, F>(
    messages: S,
    kind: &'static str,
    mut render: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    S: Stream<Item = async_nats::Message> + Send + 'static,
    F: FnMut(&async_nats::Message) -> Option<String> + Send + 'static,
{
    let events = messages.filter_map(move |m| {
        let data = render(&m);
        async move { data.map(|d| Ok(Event::default().event(kind).data(d))) }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn subscribe(
    console: &Console,
    subject: String,
) -> Result<async_nats::Subscriber, ConsoleError> {
    let sub = console.bus.client().subscribe(subject).await.map_err(|e| {
        tracing::warn!(error = %e, "could not subscribe for a live view");
        ConsoleError::Unavailable
    })?;
    // The server has the subscription before the page hears it is live: nothing published
    // after that is missed.
    console.bus.client().flush().await.map_err(|e| {
        tracing::warn!(error = %e, "could not subscribe for a live view");
        ConsoleError::Unavailable
    })?;
    Ok(sub)
}

/// `changed` every `every` (the first after `every`): for numbers that move without an event
/// of their own, such as a broadcast's counts. The page stops listening once what it shows
/// has ended (an element with `data-live-end` in its fragment).
pub(crate) fn ticks(every: Duration) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = tokio::time::Instant::now() + every;
    let ticks = futures::stream::unfold(tokio::time::interval_at(start, every), |mut i| async {
        i.tick().await;
        // (An event without data is never dispatched by the browser.)
        Some((Ok(Event::default().event("changed").data("tick")), i))
    });
    Sse::new(ticks).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The bot's own events (not its partner apps' copies) as `event` rows, each rendered by
/// `row`, each event once.
pub(crate) async fn events<F>(
    console: &Console,
    bot_id: &str,
    mut row: F,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<F>>, ConsoleError>
where
    F: FnMut(&DispatchJob) -> Option<String> + Send + 'static,
{
    let subject = console
        .bus
        .subjects()
        .dispatch(bot_id)
        .map_err(|_| ConsoleError::Internal)?;
    let sub = subscribe(console, subject).await?;
    let mut seen: VecDeque<String> = VecDeque::with_capacity(RECENT);
    Ok(stream(sub, "event", move |m| {
        let job: DispatchJob = serde_json::from_slice(&m.payload).ok()?;
        if job.event.installation.is_some() || seen.contains(&job.event.id) {
            return None;
        }
        if seen.len() == RECENT {
            seen.pop_front();
        }
        seen.push_back(job.event.id.clone());
        row(&job)
    }))
}

/// `changed` whenever an event of the bot (of `conversation`, when given) goes out, or a
/// status of one of its messages comes in.
pub(crate) async fn changes(
    console: &Console,
    bot_id: &str,
    conversation: Option<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ConsoleError> {
    let s = console.bus.subjects();
    let dispatch_subject = s.dispatch(bot_id).map_err(|_| ConsoleError::Internal)?;
    let dispatch = subscribe(console, dispatch_subject.clone()).await?;
    let status = subscribe(
        console,
        s.status(bot_id).map_err(|_| ConsoleError::Internal)?,
    )
    .await?;
    Ok(stream(
        futures::stream::select(dispatch, status),
        "changed",
        move |m| {
            if m.subject.as_str() != dispatch_subject {
                return Some("status".into());
            }
            let job: DispatchJob = serde_json::from_slice(&m.payload).ok()?;
            match &conversation {
                Some(c) if job.event.conversation_id.as_ref() != Some(c) => None,
                _ => Some(job.event.event_type.as_str().to_owned()),
            }
        },
    ))
}
