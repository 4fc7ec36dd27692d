//! What Messenger can show: images, audio (voice notes are sent as audio), video and files by
//! URL or saved attachment id, button templates, quick replies and generic-template carousels.
//! Locations have no outbound form and become a text with a map link; stickers by id and
//! templates are refused (`unsupported_content`).

use patchbay_platform::{Capabilities, Support};

/// Messenger's capabilities.
pub fn capabilities() -> Capabilities {
    Capabilities {
        media: |kind| match kind {
            "location" => Support::Degraded,
            "sticker" => Support::Unsupported,
            _ => Support::Native,
        },
        buttons: Support::Native,
        quick_replies: Support::Native,
        carousel: Support::Native,
        template: Support::Unsupported,
    }
}
