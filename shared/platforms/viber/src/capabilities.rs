//! What a Viber bot can send (`reference/platforms.md` §7.3 and §9):
//!
//! | content | support | shown as |
//! |---|---|---|
//! | text | native | `text` |
//! | image | native | `picture` by URL, the caption as its `text` |
//! | location | native | `location`; a name or address follows as a `text` |
//! | sticker | native | `sticker` by its numeric `sticker_id` |
//! | video, file, audio, voice | degraded | a `url` message to the file (the adapter: Viber's `video` and `file` messages need the size in bytes, which the content model does not carry, and Viber has no audio); a caption follows as a `text`; by `file_id` only: refused, `unsupported_content` |
//! | buttons | native | a `text` with a keyboard (`reply` and `open-url` buttons) |
//! | quick replies | native | a `text` with a keyboard, two replies a row |
//! | carousel | native | `rich_media`, at most six cards a message |
//! | template | unsupported | refused: `unsupported_content` (Viber has no templates) |

use patchbay_platform::{Capabilities, Support};

fn media(kind: &str) -> Support {
    match kind {
        "video" | "file" | "audio" | "voice" => Support::Degraded,
        _ => Support::Native,
    }
}

/// Viber's capabilities.
pub const CAPABILITIES: Capabilities = Capabilities {
    media,
    buttons: Support::Native,
    quick_replies: Support::Native,
    carousel: Support::Native,
    template: Support::Unsupported,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viber_shows_what_section_9_says() {
        for (kind, expected) in [
            ("text", Support::Native),
            ("image", Support::Native),
            ("location", Support::Native),
            ("sticker", Support::Native),
            ("video", Support::Degraded),
            ("file", Support::Degraded),
            ("audio", Support::Degraded),
            ("voice", Support::Degraded),
        ] {
            assert_eq!((CAPABILITIES.media)(kind), expected, "{kind}");
        }
        assert_eq!(CAPABILITIES.carousel, Support::Native);
        assert_eq!(CAPABILITIES.template, Support::Unsupported);
    }
}
