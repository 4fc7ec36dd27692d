//! What every inbound adapter promises whatever it is sent, checked by each platform crate's
//! `fuzz_` tests (`docs/security.md`): a rejection says why, every envelope and event it makes
//! can cross NATS (it survives a JSON round trip unchanged, but for the last bit of a float:
//! serde_json's parser is not exact without its `float_roundtrip` feature), and a normalised
//! event belongs to the envelope's channel and bot. Panics are the test harness's to catch.
//! No I/O.

use axum::http::{HeaderMap, HeaderValue};
use patchbay_contract::ids::{new_id, prefix};
use patchbay_contract::{InboundEvent, IngressEnvelope, V1};
use serde_json::Value;

use crate::{InboundAdapter, NormaliseError, Rejection, Split};

/// The bot the envelopes checked here belong to.
pub const BOT_ID: &str = "bot_01HZX0000000000000000000AB";

/// The text of a rejection, or why it is not a clear one.
pub fn rejection(r: &Rejection) -> Result<String, String> {
    let (Rejection::Unauthorized(why) | Rejection::Malformed(why)) = r;
    if why.trim().is_empty() {
        return Err(format!("a rejection with no reason: {r:?}"));
    }
    Ok(why.clone())
}

/// `A::verify` of a request: `Ok(true)` accepted, `Ok(false)` refused with a reason, `Err`
/// refused without one.
pub fn verify<A: InboundAdapter>(
    creds: &A::Credentials,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<bool, String> {
    match A::verify(creds, headers, body) {
        Ok(()) => Ok(true),
        Err(r) => rejection(&r).map(|_| false),
    }
}

/// A signed request's check by `A::verify`, `headers` holding whatever else it needs: the
/// platform's signature `good` in header `name` passes; `flipped` (the same signature with one
/// bit of the MAC flipped) and `arbitrary` (any bytes a caller may send) are refused with a
/// reason, unless `arbitrary` is a form of `good` (the same MAC in another letter case).
pub fn signature<A: InboundAdapter>(
    creds: &A::Credentials,
    mut headers: HeaderMap,
    name: &'static str,
    body: &[u8],
    good: &str,
    flipped: &str,
    arbitrary: &[u8],
) -> Result<(), String> {
    let value = |v: &[u8]| HeaderValue::from_bytes(v).map_err(|e| format!("{v:?}: {e}"));
    headers.insert(name, value(good.as_bytes())?);
    if let Err(r) = A::verify(creds, &headers, body) {
        return Err(format!("a correct signature {good:?} refused: {r}"));
    }
    headers.insert(name, value(flipped.as_bytes())?);
    if verify::<A>(creds, &headers, body)? {
        return Err(format!("a signature one bit off accepted: {flipped:?}"));
    }
    // A header value holds visible ASCII, spaces and tabs only; the HTTP layer drops the rest.
    if let Ok(v) = HeaderValue::from_bytes(arbitrary) {
        headers.insert(name, v);
        if verify::<A>(creds, &headers, body)?
            && !arbitrary.trim_ascii().eq_ignore_ascii_case(good.as_bytes())
        {
            return Err(format!("an arbitrary signature accepted: {arbitrary:?}"));
        }
    }
    headers.remove(name);
    if verify::<A>(creds, &headers, body)? {
        return Err("a request without a signature accepted".into());
    }
    Ok(())
}

/// `A::split` of `body`, checked: `Ok(None)` for a clear rejection, the envelopes' parts when
/// each has a key and carries its channel's id in it, `Err` naming a broken promise.
pub fn split<A: InboundAdapter>(
    channel_id: &str,
    body: &[u8],
) -> Result<Option<Vec<Split>>, String> {
    match A::split(channel_id, body) {
        Err(r) => rejection(&r).map(|_| None),
        Ok(splits) => {
            for s in &splits {
                if !s.dedupe_key.contains(channel_id) {
                    return Err(format!(
                        "dedupe key {:?} does not name channel {channel_id}",
                        s.dedupe_key
                    ));
                }
            }
            Ok(Some(splits))
        }
    }
}

/// The envelope the ingress publishes for `split`, after a JSON round trip as the normaliser
/// receives it; `Err` when the round trip changes it.
pub fn envelope<A: InboundAdapter>(
    channel_id: &str,
    split: Split,
) -> Result<IngressEnvelope, String> {
    let envelope = IngressEnvelope {
        v: V1,
        id: new_id(prefix::ENVELOPE),
        platform: A::PLATFORM,
        channel_id: channel_id.to_owned(),
        bot_id: BOT_ID.to_owned(),
        received_at: chrono::Utc::now(),
        dedupe_key: split.dedupe_key,
        body: split.body,
        order_key: split.order_key,
    };
    let wire = serde_json::to_string(&envelope).map_err(|e| format!("envelope: {e}"))?;
    let back: IngressEnvelope =
        serde_json::from_str(&wire).map_err(|e| format!("envelope does not decode: {e}"))?;
    if !same(
        &serde_json::to_value(&envelope),
        &serde_json::to_value(&back),
    ) {
        return Err(format!("envelope changes on the wire: {wire}"));
    }
    Ok(back)
}

/// `A::normalise` of `envelope`, checked: `Ok(None)` for a clear rejection; else the events,
/// each of which survives the trip to the router unchanged and names the envelope's channel
/// and bot.
pub fn normalise<A: InboundAdapter>(
    envelope: &IngressEnvelope,
) -> Result<Option<Vec<InboundEvent>>, String> {
    let events = match A::normalise(envelope) {
        Err(NormaliseError(why)) if why.trim().is_empty() => {
            return Err("a normalisation error with no reason".into());
        }
        Err(_) => return Ok(None),
        Ok(events) => events,
    };
    for e in &events {
        let wire = serde_json::to_string(e).map_err(|err| format!("event: {err}"))?;
        let back: InboundEvent = serde_json::from_str(&wire)
            .map_err(|err| format!("event does not decode at the router: {err}: {wire}"))?;
        if !same(&serde_json::to_value(e), &serde_json::to_value(&back)) {
            return Err(format!("event changes on the wire: {wire}"));
        }
        if e.channel.id != envelope.channel_id
            || e.bot_id != envelope.bot_id
            || e.channel.platform != A::PLATFORM
        {
            return Err(format!("event of another channel or bot: {wire}"));
        }
    }
    Ok(Some(events))
}

/// [`split`], then [`envelope`] and [`normalise`] of every envelope: what a webhook body goes
/// through from the ingress to the router. The events made, or the first broken promise.
pub fn pipeline<A: InboundAdapter>(
    channel_id: &str,
    body: &[u8],
) -> Result<Vec<InboundEvent>, String> {
    let mut events = Vec::new();
    for s in split::<A>(channel_id, body)?.unwrap_or_default() {
        let env = envelope::<A>(channel_id, s)?;
        events.extend(normalise::<A>(&env)?.unwrap_or_default());
    }
    Ok(events)
}

/// Checks that most of `seeds` (payloads a platform's fuzz tests start their near-valid inputs
/// from) make events through [`pipeline`]: at least three in four, since a few valid ones (a
/// receipt of an unknown message, typing) make none. Panics otherwise, or on a broken promise.
pub fn assert_seeds_taken<A: InboundAdapter>(channel_id: &str, seeds: &[Vec<u8>]) {
    let taken = seeds
        .iter()
        .filter(|body| {
            !pipeline::<A>(channel_id, body)
                .expect("a seed breaks no promise")
                .is_empty()
        })
        .count();
    assert!(
        taken * 4 >= seeds.len() * 3,
        "{taken} of {} seeds make events",
        seeds.len()
    );
}

/// Whether two encodings are the same document, floats equal to within rounding.
fn same(a: &serde_json::Result<Value>, b: &serde_json::Result<Value>) -> bool {
    fn eq(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => x == y || ((x - y) / x).abs() < 1e-12,
                    _ => false,
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| eq(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
            }
            _ => a == b,
        }
    }
    matches!((a, b), (Ok(a), Ok(b)) if eq(a, b))
}

/// The property tests every JSON platform's parser gets from its test module: arbitrary bytes,
/// the platform's seed payloads with fields replaced, removed or added (`keys`: the field names
/// to use), and the seeds' bytes with bits flipped or cut; each through [`pipeline`], which
/// must keep every promise. The tests are named by the caller (`fuzz_<platform>_…`, which
/// `make fuzz` selects). Needs `patchbay-testkit` as a dev-dependency.
#[macro_export]
macro_rules! pipeline_fuzz_tests {
    (
        $adapter:ty, $channel:expr, $seeds:expr, $keys:expr,
        $bytes:ident, $near_valid:ident, $near_valid_bytes:ident $(,)?
    ) => {
        ::patchbay_testkit::fuzz::proptest::proptest! {
            #![proptest_config(::patchbay_testkit::fuzz::config())]

            #[test]
            fn $bytes(body in ::patchbay_testkit::fuzz::bytes(512)) {
                $crate::conformance::pipeline::<$adapter>($channel, &body)
                    .map_err(::patchbay_testkit::fuzz::proptest::test_runner::TestCaseError::fail)?;
            }

            #[test]
            fn $near_valid(value in ::patchbay_testkit::fuzz::near_valid_json($seeds, $keys)) {
                $crate::conformance::pipeline::<$adapter>($channel, value.to_string().as_bytes())
                    .map_err(::patchbay_testkit::fuzz::proptest::test_runner::TestCaseError::fail)?;
            }

            #[test]
            fn $near_valid_bytes(
                body in ::patchbay_testkit::fuzz::near_valid_bytes(
                    $seeds.iter().map(|v| v.to_string().into_bytes()).collect(),
                ),
            ) {
                $crate::conformance::pipeline::<$adapter>($channel, &body)
                    .map_err(::patchbay_testkit::fuzz::proptest::test_runner::TestCaseError::fail)?;
            }
        }
    };
}
