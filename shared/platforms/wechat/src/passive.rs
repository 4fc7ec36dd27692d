//! Passive replies: the answer WeChat takes in the webhook's own response, within its five
//! seconds, once per message from the user. The only way an Official Account without the
//! customer-service message API (unverified subscription accounts) can answer.
//!
//! | content | passive reply |
//! |---|---|
//! | text | `text` |
//! | image, voice, video by `file_id` (a WeChat `media_id`) | `image`, `voice`, `video` |
//! | image by URL | `news`: one article with the picture (a passive reply cannot upload media) |
//! | buttons, quick replies | `text`: the text, then one line per option; URL buttons as `<a href>` links (in-chat menus need the customer-service API) |
//! | carousel | `news`: the first card (a passive reply has one article) |
//! | anything else | cannot be an inline reply: the sender fails it (`unsupported_content`) |

use patchbay_contract::Content;
use patchbay_contract::content::Button;

/// How long the ingress waits for the bot's reply: WeChat's five seconds, less the time to
/// answer.
pub const WAIT: std::time::Duration = std::time::Duration::from_millis(4_500);

/// `text` inside a CDATA section, split where it holds `]]>`.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

fn article(title: &str, description: &str, pic_url: Option<&str>, url: Option<&str>) -> String {
    format!(
        "<MsgType>{}</MsgType><ArticleCount>1</ArticleCount><Articles><item><Title>{}</Title>\
         <Description>{}</Description><PicUrl>{}</PicUrl><Url>{}</Url></item></Articles>",
        cdata("news"),
        cdata(title),
        cdata(description),
        cdata(pic_url.unwrap_or_default()),
        cdata(url.unwrap_or_default()),
    )
}

/// The fields of the passive reply for `content`, or why it cannot be one.
fn fields(content: &Content) -> Result<String, String> {
    let text = |t: &str| {
        format!(
            "<MsgType>{}</MsgType><Content>{}</Content>",
            cdata("text"),
            cdata(t)
        )
    };
    let media = |kind: &str, element: &str, id: &str| {
        format!(
            "<MsgType>{}</MsgType><{element}><MediaId>{}</MediaId></{element}>",
            cdata(kind),
            cdata(id)
        )
    };
    Ok(match content {
        Content::Text { text: t } => text(t),
        Content::Image(m) => match (&m.file_id, &m.url) {
            (Some(id), _) => media("image", "Image", id),
            (None, Some(url)) => article(
                m.caption.as_deref().unwrap_or_default(),
                "",
                Some(url),
                Some(url),
            ),
            (None, None) => return Err("an image without file_id or url".into()),
        },
        Content::Voice(m) | Content::Audio(m) => match &m.file_id {
            Some(id) => media("voice", "Voice", id),
            None => return Err("a voice reply needs a WeChat media_id as file_id".into()),
        },
        Content::Video(m) => match &m.file_id {
            Some(id) => format!(
                "<MsgType>{}</MsgType><Video><MediaId>{}</MediaId><Title>{}</Title></Video>",
                cdata("video"),
                cdata(id),
                cdata(m.caption.as_deref().unwrap_or_default())
            ),
            None => return Err("a video reply needs a WeChat media_id as file_id".into()),
        },
        Content::Buttons { text: t, buttons } => {
            let lines: Vec<String> = buttons
                .iter()
                .map(|b| match b {
                    Button::Url { url, title, .. } => format!("<a href=\"{url}\">{title}</a>"),
                    other => format!("• {}", other.title()),
                })
                .collect();
            text(&format!("{t}\n{}", lines.join("\n")))
        }
        Content::QuickReplies { text: t, replies } => {
            let lines: Vec<String> = replies.iter().map(|r| format!("• {}", r.title)).collect();
            text(&format!("{t}\n{}", lines.join("\n")))
        }
        Content::Carousel { cards } => {
            let card = cards.first().ok_or("an empty carousel")?;
            let url = card.buttons.iter().find_map(|b| match b {
                Button::Url { url, .. } => Some(url.as_str()),
                _ => None,
            });
            article(
                &card.title,
                card.subtitle.as_deref().unwrap_or_default(),
                card.image_url.as_deref(),
                url.or(card.image_url.as_deref()),
            )
        }
        other => {
            return Err(format!(
                "{} content cannot be an inline reply",
                other.kind()
            ));
        }
    })
}

/// Whether `content` can be a passive reply (the sender checks before it hands it over).
pub fn supported(content: &Content) -> Result<(), String> {
    fields(content).map(|_| ())
}

/// The passive-reply XML answering `openid` from the account `account` (the webhook's
/// `FromUserName` and `ToUserName`) at `create_time`.
pub fn render(
    openid: &str,
    account: &str,
    create_time: i64,
    content: &Content,
) -> Result<String, String> {
    Ok(format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime>{}</xml>",
        cdata(openid),
        cdata(account),
        fields(content)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::fields as parse;
    use patchbay_contract::content::Media;

    fn one(content: &Content) -> std::collections::BTreeMap<String, String> {
        let xml = render("oUser", "gh_oa", 1767225601, content).unwrap();
        parse(&xml).unwrap()
    }

    #[test]
    fn passive_replies_are_the_documented_xml() {
        let t = one(&Content::Text {
            text: "hi ]]> there".into(),
        });
        assert_eq!(t["ToUserName"], "oUser");
        assert_eq!(t["FromUserName"], "gh_oa");
        assert_eq!(t["CreateTime"], "1767225601");
        assert_eq!(t["MsgType"], "text");
        assert_eq!(
            t["Content"], "hi ]]> there",
            "CDATA survives a hostile text"
        );

        let image = |file_id: Option<&str>, url: Option<&str>| {
            Content::Image(Media {
                url: url.map(str::to_owned),
                file_id: file_id.map(str::to_owned),
                caption: Some("menu".into()),
                filename: None,
                mime_type: None,
                media_id: None,
                download_url: None,
                preview_url: None,
                duration_ms: None,
                size_bytes: None,
            })
        };
        let xml = render("o", "gh", 1, &image(Some("m_1"), None)).unwrap();
        assert!(
            xml.contains("<Image><MediaId><![CDATA[m_1]]></MediaId></Image>"),
            "{xml}"
        );
        let xml = render(
            "o",
            "gh",
            1,
            &image(None, Some("https://cdn.example/a.jpg")),
        )
        .unwrap();
        assert!(
            xml.contains("<MsgType><![CDATA[news]]></MsgType><ArticleCount>1</ArticleCount>"),
            "{xml}"
        );
        assert!(
            xml.contains("<PicUrl><![CDATA[https://cdn.example/a.jpg]]></PicUrl>"),
            "{xml}"
        );

        let buttons = Content::Buttons {
            text: "Pick".into(),
            buttons: vec![
                serde_json::from_value::<Button>(serde_json::json!({"type": "postback", "title": "Yes", "payload": "Y"})).unwrap(),
                serde_json::from_value::<Button>(serde_json::json!({"type": "url", "title": "Site", "url": "https://example.com"})).unwrap(),
            ],
        };
        assert_eq!(
            one(&buttons)["Content"],
            "Pick\n• Yes\n<a href=\"https://example.com\">Site</a>"
        );
        assert!(supported(&Content::Sticker { id: "s".into() }).is_err());
    }
}
