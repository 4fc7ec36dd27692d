//! Enrichment at the ingress: what a webhook lacks but the platform's API tells (Messenger
//! sends only a page-scoped id; its user profile API gives name and picture). The ingress
//! calls [`crate::InboundAdapter::enrich`] with the channel's credentials and a per-process
//! [`Cache`], waits at most [`BUDGET`] (platforms expect a fast answer: Meta within 5 s), and
//! publishes whatever it has then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the ingress waits for enrichment before publishing without it.
pub const BUDGET: Duration = Duration::from_millis(1500);

/// How long a found value is reused.
const FOUND_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long "the platform had nothing" is remembered (no permission, no opt-in), so a busy
/// user does not cost a lookup per message.
const MISSING_TTL: Duration = Duration::from_secs(3600);
/// Entries kept at most; beyond, the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// What an adapter gets to enrich a channel's envelopes.
pub struct Context<'a, C> {
    /// An HTTP client (rustls, no redirects, the outbound timeout).
    pub http: &'a reqwest::Client,
    /// The channel's opened credentials.
    pub creds: &'a C,
    /// The platform API's base URL (the channel's override or the configured default).
    pub base_url: &'a str,
    /// The channel.
    pub channel_id: &'a str,
    /// Values looked up before, per process.
    pub cache: &'a Cache,
    /// The installation's bus, for what platforms share between services (WeChat's access
    /// tokens, in the `<p>_tokens` bucket); `None` in unit tests.
    pub bus: Option<&'a patchbay_bus::Bus>,
}

/// A cached value and when it was put.
type Entry = (Instant, Option<serde_json::Value>);

/// Looked-up values by key (`<channel>:<user>`), with expiry. `Some(None)` from
/// [`Cache::get`] means "looked up, the platform had nothing". Clones share the entries (a
/// task of the adapter's own may fill them later).
#[derive(Debug, Default, Clone)]
pub struct Cache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Cache {
    /// The cached value of `key`, if still fresh.
    pub fn get(&self, key: &str) -> Option<Option<serde_json::Value>> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, value) = map.get(key)?;
        let ttl = if value.is_some() {
            FOUND_TTL
        } else {
            MISSING_TTL
        };
        (at.elapsed() < ttl).then(|| value.clone())
    }

    /// Remembers `value` (or that there was none) for `key`.
    pub fn put(&self, key: String, value: Option<serde_json::Value>) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_remembers_found_and_missing_values() {
        let c = Cache::default();
        assert_eq!(c.get("ch:1"), None);
        c.put(
            "ch:1".into(),
            Some(serde_json::json!({"display_name": "Ana"})),
        );
        c.put("ch:2".into(), None);
        assert_eq!(
            c.get("ch:1"),
            Some(Some(serde_json::json!({"display_name": "Ana"})))
        );
        assert_eq!(c.get("ch:2"), Some(None));
    }
}
