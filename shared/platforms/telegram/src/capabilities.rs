//! What Telegram can show: every media kind, inline-keyboard buttons, reply keyboards for quick
//! replies (their payloads are lost: the tap arrives as the title's text), no carousels (cards
//! are sent one by one) and no templates.

use patchbay_platform::{Capabilities, Support};

/// Telegram's capabilities.
pub fn capabilities() -> Capabilities {
    Capabilities {
        media: |_| Support::Native,
        buttons: Support::Native,
        quick_replies: Support::Native,
        carousel: Support::Degraded,
        template: Support::Unsupported,
    }
}
