//! Degradation of content a platform cannot show natively, the same way on every platform
//! (as Bot Framework's connector does):
//!
//! * a carousel becomes a sequence of cards, each a picture or text with its buttons;
//! * buttons on a platform without buttons become a numbered text list (URLs spelled out);
//! * quick replies on a platform without them become a numbered text list;
//! * a location on a platform that cannot send one becomes a text: its name, its address and
//!   a map link (`https://www.openstreetmap.org/?mlat=…&mlon=…`);
//! * anything else unsupported is refused with `unsupported_content`.

use patchbay_contract::content::{Button, Media};
use patchbay_contract::{Content, DeliveryError};

/// How far a platform supports a kind of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Shown as is.
    Native,
    /// Rewritten by [`degrade`].
    Degraded,
    /// Refused.
    Unsupported,
}

/// Support per content kind.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Text, images, audio, voice, video, files, locations, stickers: support per kind.
    pub media: fn(&str) -> Support,
    /// Buttons.
    pub buttons: Support,
    /// Quick replies.
    pub quick_replies: Support,
    /// Carousels.
    pub carousel: Support,
    /// Templates.
    pub template: Support,
}

fn unsupported(kind: &str, platform: &str) -> DeliveryError {
    DeliveryError {
        code: "unsupported_content".into(),
        message: format!("{platform} cannot show {kind} messages"),
        platform_code: None,
    }
}

fn numbered(text: &str, items: impl Iterator<Item = String>) -> String {
    let mut out = text.to_owned();
    for (i, item) in items.enumerate() {
        out.push_str(&format!("\n{}. {item}", i + 1));
    }
    out
}

fn button_line(b: &Button) -> String {
    match b {
        Button::Url { title, url, .. } => format!("{title}: {url}"),
        other => other.title().to_owned(),
    }
}

/// Rewrites `content` into what `caps` can show, in order; or says why it cannot be sent.
pub fn degrade(
    content: &Content,
    caps: &Capabilities,
    platform: &str,
) -> Result<Vec<Content>, DeliveryError> {
    match content {
        Content::Buttons { text, buttons } => match caps.buttons {
            Support::Native => Ok(vec![content.clone()]),
            Support::Degraded => Ok(vec![Content::Text {
                text: numbered(text, buttons.iter().map(button_line)),
            }]),
            Support::Unsupported => Err(unsupported("buttons", platform)),
        },
        Content::QuickReplies { text, replies } => match caps.quick_replies {
            Support::Native => Ok(vec![content.clone()]),
            Support::Degraded => Ok(vec![Content::Text {
                text: numbered(text, replies.iter().map(|r| r.title.clone())),
            }]),
            Support::Unsupported => Err(unsupported("quick reply", platform)),
        },
        Content::Carousel { cards } => match caps.carousel {
            Support::Native => Ok(vec![content.clone()]),
            Support::Unsupported => Err(unsupported("carousel", platform)),
            Support::Degraded => {
                let mut out = Vec::new();
                for card in cards {
                    let text = match &card.subtitle {
                        Some(s) => format!("{}\n{s}", card.title),
                        None => card.title.clone(),
                    };
                    if let Some(url) = &card.image_url {
                        out.push(Content::Image(Media {
                            url: Some(url.clone()),
                            file_id: None,
                            caption: card.buttons.is_empty().then(|| text.clone()),
                            filename: None,
                            mime_type: None,
                            media_id: None,
                            download_url: None,
                            preview_url: None,
                            duration_ms: None,
                            size_bytes: None,
                        }));
                        if !card.buttons.is_empty() {
                            out.extend(degrade(
                                &Content::Buttons {
                                    text,
                                    buttons: card.buttons.clone(),
                                },
                                caps,
                                platform,
                            )?);
                        }
                    } else if card.buttons.is_empty() {
                        out.push(Content::Text { text });
                    } else {
                        out.extend(degrade(
                            &Content::Buttons {
                                text,
                                buttons: card.buttons.clone(),
                            },
                            caps,
                            platform,
                        )?);
                    }
                }
                Ok(out)
            }
        },
        Content::Template(_) => match caps.template {
            Support::Native => Ok(vec![content.clone()]),
            _ => Err(unsupported("template", platform)),
        },
        Content::Postback { .. } => Err(unsupported("postback (inbound-only)", platform)),
        // Applied by the router to the user's fields; never sent.
        Content::Field(_) => Err(unsupported("field (a contact field, never sent)", platform)),
        // Only the platform it is written for takes it, before degrading anything.
        Content::Native { platform: own, .. } => {
            Err(unsupported(&format!("{own}-native"), platform))
        }
        Content::Location(l) if (caps.media)("location") == Support::Degraded => {
            let mut lines: Vec<String> = [&l.name, &l.address]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            lines.push(format!(
                "https://www.openstreetmap.org/?mlat={}&mlon={}",
                l.latitude, l.longitude
            ));
            Ok(vec![Content::Text {
                text: lines.join("\n"),
            }])
        }
        other => match (caps.media)(other.kind()) {
            Support::Unsupported => Err(unsupported(other.kind(), platform)),
            _ => Ok(vec![other.clone()]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_contract::content::Card;

    fn caps(buttons: Support) -> Capabilities {
        Capabilities {
            media: |k| {
                if k == "sticker" {
                    Support::Unsupported
                } else {
                    Support::Native
                }
            },
            buttons,
            quick_replies: Support::Degraded,
            carousel: Support::Degraded,
            template: Support::Unsupported,
        }
    }

    #[test]
    fn buttons_become_a_numbered_list_without_button_support() {
        let c = Content::Buttons {
            text: "Pick".into(),
            buttons: vec![
                Button::Postback {
                    title: "Yes".into(),
                    payload: "y".into(),
                },
                Button::Url {
                    title: "Site".into(),
                    url: "https://x.test".into(),
                    reuse_seconds: None,
                },
            ],
        };
        assert_eq!(
            degrade(&c, &caps(Support::Degraded), "x").unwrap(),
            vec![Content::Text {
                text: "Pick\n1. Yes\n2. Site: https://x.test".into()
            }]
        );
        assert_eq!(degrade(&c, &caps(Support::Native), "x").unwrap(), vec![c]);
    }

    #[test]
    fn carousels_become_cards_in_order() {
        let c = Content::Carousel {
            cards: vec![
                Card {
                    title: "A".into(),
                    subtitle: Some("a".into()),
                    image_url: Some("https://i/a.png".into()),
                    buttons: vec![],
                },
                Card {
                    title: "B".into(),
                    subtitle: None,
                    image_url: None,
                    buttons: vec![Button::Postback {
                        title: "Buy".into(),
                        payload: "b".into(),
                    }],
                },
            ],
        };
        let out = degrade(&c, &caps(Support::Native), "x").unwrap();
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Content::Image(m) if m.caption.as_deref() == Some("A\na")));
        assert!(matches!(&out[1], Content::Buttons { text, .. } if text == "B"));
    }

    #[test]
    fn locations_become_a_text_with_a_map_link_where_degraded() {
        let caps = Capabilities {
            media: |k| {
                if k == "location" {
                    Support::Degraded
                } else {
                    Support::Native
                }
            },
            ..caps(Support::Native)
        };
        let l = Content::Location(patchbay_contract::content::Location {
            latitude: 38.5,
            longitude: -9.25,
            name: Some("Rossio".into()),
            address: None,
        });
        assert_eq!(
            degrade(&l, &caps, "x").unwrap(),
            vec![Content::Text {
                text: "Rossio\nhttps://www.openstreetmap.org/?mlat=38.5&mlon=-9.25".into()
            }]
        );
    }

    #[test]
    fn unsupported_kinds_are_refused_with_a_reason() {
        let e = degrade(
            &Content::Sticker { id: "s".into() },
            &caps(Support::Native),
            "Foo",
        )
        .unwrap_err();
        assert_eq!(e.code, "unsupported_content");
        assert_eq!(e.message, "Foo cannot show sticker messages");
    }

    #[test]
    fn native_messages_are_left_to_their_own_platform() {
        let flex = Content::Native {
            platform: patchbay_contract::Platform::Line,
            message: serde_json::json!({"type": "flex", "altText": "a", "contents": {}}),
        };
        let e = degrade(&flex, &caps(Support::Native), "Kik").unwrap_err();
        assert_eq!(e.code, "unsupported_content");
        assert_eq!(e.message, "Kik cannot show line-native messages");
    }
}
