//! What a LINE bot can send (`reference/platforms.md` §6.3 and §9):
//!
//! | content | support | shown as |
//! |---|---|---|
//! | text | native | `text` |
//! | image | native | `image` (`originalContentUrl`, and the same URL as `previewImageUrl`); a caption follows as a `text` |
//! | location | native | `location` (`title`: the name, else "Location"; `address`: the address, else the coordinates) |
//! | sticker | native | `sticker` (`packageId` and `stickerId` from an id `<packageId>:<stickerId>`, as inbound stickers carry it) |
//! | video, audio, voice, file | degraded | a `text` with the caption (or file name) and the URL (the adapter: LINE's video needs a preview image and its audio a duration, which the content model does not carry, and LINE sends no files); by `file_id` only: refused, `unsupported_content` |
//! | buttons | native | a `confirm` template for exactly two buttons, else `buttons` templates of at most four actions each, with `altText` |
//! | quick replies | native | a `text` with `quickReply.items` (at most 13) |
//! | carousel | native | a `carousel` template when every card has the same number (1 to 3) of buttons, as LINE requires; otherwise one card after the other (`degrade`) |
//! | template | unsupported | refused: `unsupported_content` (LINE has no pre-approved templates) |
//! | native (`platform: line`) | pass-through | LINE's own message object as given (Flex Messages); natives of other platforms refused |

use patchbay_platform::{Capabilities, Support};

fn media(kind: &str) -> Support {
    match kind {
        "video" | "audio" | "voice" | "file" => Support::Degraded,
        _ => Support::Native,
    }
}

/// LINE's capabilities.
pub const CAPABILITIES: Capabilities = Capabilities {
    media,
    buttons: Support::Native,
    quick_replies: Support::Native,
    carousel: Support::Native,
    template: Support::Unsupported,
};

/// The same, with carousels shown card by card (for those LINE's carousel cannot take).
pub const CARD_BY_CARD: Capabilities = Capabilities {
    carousel: Support::Degraded,
    ..CAPABILITIES
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_what_section_9_says() {
        for (kind, expected) in [
            ("text", Support::Native),
            ("image", Support::Native),
            ("location", Support::Native),
            ("sticker", Support::Native),
            ("video", Support::Degraded),
            ("audio", Support::Degraded),
            ("voice", Support::Degraded),
            ("file", Support::Degraded),
        ] {
            assert_eq!((CAPABILITIES.media)(kind), expected, "{kind}");
        }
        assert_eq!(CAPABILITIES.carousel, Support::Native);
        assert_eq!(CARD_BY_CARD.carousel, Support::Degraded);
        assert_eq!(CAPABILITIES.template, Support::Unsupported);
    }
}
