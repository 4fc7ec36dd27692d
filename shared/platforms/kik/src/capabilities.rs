//! What a Kik bot can send (`reference/platforms.md` §5.3 and §9):
//!
//! | content | support | shown as |
//! |---|---|---|
//! | text | native | `text` |
//! | image | native | `picture` by `picUrl`; a caption follows as a `text` (Kik pictures have none) |
//! | video | native | `video` by `videoUrl`; a caption follows as a `text` |
//! | audio, voice, file | degraded | a `link` message to the file's URL (the adapter; Kik cannot send audio or files); by `file_id` only: refused, `unsupported_content` |
//! | location | degraded | a text with name, address and map link (`degrade`) |
//! | buttons | native | a `text` with a suggested-response keyboard; URL buttons become `title: url` lines of the text (suggested responses cannot open links) |
//! | quick replies | native | a `text` with a suggested-response keyboard |
//! | carousel | degraded | one card after the other: a `picture`, then its text and buttons (`degrade`) |
//! | sticker, template | unsupported | refused: `unsupported_content` (Kik receives stickers but the bot API does not send them) |

use patchbay_platform::{Capabilities, Support};

fn media(kind: &str) -> Support {
    match kind {
        "audio" | "voice" | "file" | "location" => Support::Degraded,
        "sticker" => Support::Unsupported,
        _ => Support::Native,
    }
}

/// Kik's capabilities.
pub const CAPABILITIES: Capabilities = Capabilities {
    media,
    buttons: Support::Native,
    quick_replies: Support::Native,
    carousel: Support::Degraded,
    template: Support::Unsupported,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kik_shows_what_section_9_says() {
        for (kind, expected) in [
            ("text", Support::Native),
            ("image", Support::Native),
            ("video", Support::Native),
            ("audio", Support::Degraded),
            ("voice", Support::Degraded),
            ("file", Support::Degraded),
            ("location", Support::Degraded),
            ("sticker", Support::Unsupported),
        ] {
            assert_eq!((CAPABILITIES.media)(kind), expected, "{kind}");
        }
        assert_eq!(CAPABILITIES.carousel, Support::Degraded);
        assert_eq!(CAPABILITIES.template, Support::Unsupported);
    }
}
