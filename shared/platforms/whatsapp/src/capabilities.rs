//! What WhatsApp can show: every media kind (voice as audio), locations, stickers (by media
//! id or URL), reply buttons, lists and CTA-URL buttons, and approved templates. Quick replies
//! become reply buttons or a list; carousels are sent card by card (`degrade`).

use patchbay_platform::{Capabilities, Support};

/// WhatsApp's capabilities.
pub fn capabilities() -> Capabilities {
    Capabilities {
        media: |_| Support::Native,
        buttons: Support::Native,
        quick_replies: Support::Native,
        carousel: Support::Degraded,
        template: Support::Native,
    }
}
