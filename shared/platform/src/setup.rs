//! What the configurators of platforms whose webhook Patchbay registers through their API
//! (Kik's `/v1/config`, Viber's `set_webhook`) share: how often they look at the config view,
//! how they back off, and the webhook URL they register.

use std::time::Duration;

use crate::spec::PlatformSpec;

/// How often the config view is looked at for new or changed channels.
pub const POLL: Duration = Duration::from_secs(1);
/// The first wait after a failure; doubled each time up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait before attempt `attempt + 1` (1 s, 2 s, 4 s, …, at most 5 minutes).
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_BACKOFF)
}

/// The webhook URL of `channel_id` on `spec`'s platform: `public_url` and the channel's
/// webhook path.
pub fn webhook_url(public_url: &str, spec: &PlatformSpec, channel_id: &str) -> String {
    format!(
        "{}{}",
        public_url.trim_end_matches('/'),
        (spec.webhook_path)(channel_id)
    )
}
