//! What a WeChat Official Account can send through the customer-service and template-message
//! APIs (`reference/platforms.md` §4.3 and §9):
//!
//! | content | support | shown as |
//! |---|---|---|
//! | text | native | `text` |
//! | image, voice, video | native | `image` / `voice` / `video` by `media_id` (URLs are uploaded as temporary media first) |
//! | audio | native | `voice` (WeChat plays AMR and MP3 up to 2 MB and 60 s as voice messages) |
//! | buttons | native | `msgmenu` (postback and reply buttons), URL buttons as `<a href>` links in its text |
//! | quick replies | native | `msgmenu` |
//! | carousel | native | one `news` message (one article) per card |
//! | template | native | a template message (service accounts) |
//! | location | degraded | a text with a map link (`degrade`) |
//! | file | degraded | a text with a link to the file (the adapter; WeChat cannot send files) |
//! | sticker | unsupported | refused: `unsupported_content` |

use patchbay_platform::{Capabilities, Support};

fn media(kind: &str) -> Support {
    match kind {
        "location" | "file" => Support::Degraded,
        "sticker" => Support::Unsupported,
        _ => Support::Native,
    }
}

/// WeChat's capabilities.
pub const CAPABILITIES: Capabilities = Capabilities {
    media,
    buttons: Support::Native,
    quick_replies: Support::Native,
    carousel: Support::Native,
    template: Support::Native,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_shows_what_section_9_says() {
        for (kind, expected) in [
            ("text", Support::Native),
            ("image", Support::Native),
            ("voice", Support::Native),
            ("audio", Support::Native),
            ("video", Support::Native),
            ("file", Support::Degraded),
            ("location", Support::Degraded),
            ("sticker", Support::Unsupported),
        ] {
            assert_eq!((CAPABILITIES.media)(kind), expected, "{kind}");
        }
    }
}
