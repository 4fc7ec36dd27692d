//! WeChat Official Account webhooks as WeChat sends them (`reference/platforms.md` §4.1-4.2):
//! XML bodies for every inbound kind, and the signed query strings (and encrypted bodies) of
//! the three message modes. For tests here and in the end-to-end suite.

use crate::crypto::{self, AesKey};

/// The Official Account's AppID of the official Python sample.
pub const APP_ID: &str = "wx2c2769f8efd9abc2";
/// The server configuration's Token of the official Python sample.
pub const TOKEN: &str = "spamtest";
/// The EncodingAESKey of the official samples.
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The Official Account's original id (`ToUserName`).
pub const OA: &str = "gh_oa01";
/// A user's OpenID.
pub const OPENID: &str = "oUser123";
/// A `CreateTime` (2026-01-01T00:00:00Z).
pub const TIME: i64 = 1767225600;

fn xml(from: &str, create_time: i64, msg_type: &str, fields: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{fields}</xml>"
    )
}

/// A text message.
pub fn text(from: &str, msg_id: i64, content: &str) -> String {
    xml(
        from,
        TIME,
        "text",
        &format!("<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId>"),
    )
}

/// A tap on an in-chat menu (`msgmenu`) item: a text message with the item's id.
pub fn menu_tap(from: &str, msg_id: i64, label: &str, item_id: &str) -> String {
    xml(
        from,
        TIME,
        "text",
        &format!(
            "<Content><![CDATA[{label}]]></Content><MsgId>{msg_id}</MsgId>\
             <bizmsgmenuid>{item_id}</bizmsgmenuid>"
        ),
    )
}

/// A picture.
pub fn image(from: &str, msg_id: i64, pic_url: &str, media_id: &str) -> String {
    xml(
        from,
        TIME,
        "image",
        &format!(
            "<PicUrl><![CDATA[{pic_url}]]></PicUrl><MediaId><![CDATA[{media_id}]]></MediaId>\
             <MsgId>{msg_id}</MsgId>"
        ),
    )
}

/// A voice message, with WeChat's speech recognition when the account has it on.
pub fn voice(from: &str, msg_id: i64, media_id: &str, recognition: Option<&str>) -> String {
    let recognition = recognition
        .map(|r| format!("<Recognition><![CDATA[{r}]]></Recognition>"))
        .unwrap_or_default();
    xml(
        from,
        TIME,
        "voice",
        &format!(
            "<MediaId><![CDATA[{media_id}]]></MediaId><Format><![CDATA[amr]]></Format>\
             {recognition}<MsgId>{msg_id}</MsgId>"
        ),
    )
}

/// A video (`kind` `video` or `shortvideo`).
pub fn video(from: &str, msg_id: i64, kind: &str, media_id: &str) -> String {
    xml(
        from,
        TIME,
        kind,
        &format!(
            "<MediaId><![CDATA[{media_id}]]></MediaId><ThumbMediaId><![CDATA[thumb_{media_id}]]></ThumbMediaId>\
             <MsgId>{msg_id}</MsgId>"
        ),
    )
}

/// A location the user shared.
pub fn location(from: &str, msg_id: i64, x: f64, y: f64, label: &str) -> String {
    xml(
        from,
        TIME,
        "location",
        &format!(
            "<Location_X>{x}</Location_X><Location_Y>{y}</Location_Y><Scale>15</Scale>\
             <Label><![CDATA[{label}]]></Label><MsgId>{msg_id}</MsgId>"
        ),
    )
}

/// A link the user shared.
pub fn link(from: &str, msg_id: i64, title: &str, description: &str, url: &str) -> String {
    xml(
        from,
        TIME,
        "link",
        &format!(
            "<Title><![CDATA[{title}]]></Title><Description><![CDATA[{description}]]></Description>\
             <Url><![CDATA[{url}]]></Url><MsgId>{msg_id}</MsgId>"
        ),
    )
}

/// An event push (`subscribe`, `SCAN`, `unsubscribe`, `CLICK`, `VIEW`, …) at `create_time`.
pub fn event(from: &str, create_time: i64, event: &str, key: Option<&str>) -> String {
    let key = key
        .map(|k| format!("<EventKey><![CDATA[{k}]]></EventKey>"))
        .unwrap_or_default();
    xml(
        from,
        create_time,
        "event",
        &format!("<Event><![CDATA[{event}]]></Event>{key}"),
    )
}

/// The outcome of a template message (`TEMPLATESENDJOBFINISH`): `status` `success`,
/// `failed:user block` or `failed: system failed`.
pub fn template_finished(from: &str, create_time: i64, msg_id: i64, status: &str) -> String {
    xml(
        from,
        create_time,
        "event",
        &format!(
            "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msg_id}</MsgID>\
             <Status><![CDATA[{status}]]></Status>"
        ),
    )
}

/// The query string WeChat adds to every webhook of a plaintext-mode account, signed with
/// `token`.
pub fn query(token: &str, timestamp: &str, nonce: &str, openid: &str) -> Vec<(String, String)> {
    vec![
        (
            "signature".into(),
            crypto::signature(&[token, timestamp, nonce]),
        ),
        ("timestamp".into(), timestamp.into()),
        ("nonce".into(), nonce.into()),
        ("openid".into(), openid.into()),
    ]
}

/// A safe-mode webhook of `xml`: the body (`<xml><ToUserName/><Encrypt/></xml>`) and its query
/// (with `encrypt_type=aes` and `msg_signature`). `compatible` adds the plaintext fields too,
/// as the compatible mode does.
pub fn encrypted(
    xml: &str,
    token: &str,
    app_id: &str,
    aes_key: &str,
    timestamp: &str,
    nonce: &str,
    compatible: bool,
) -> (String, Vec<(String, String)>) {
    let key = AesKey::from_encoding_aes_key(aes_key).expect("a valid EncodingAESKey");
    let encrypt = crypto::encrypt(&key, app_id, *b"0123456789abcdef", xml);
    let fields = if compatible {
        xml.trim_start_matches("<xml>")
            .trim_end_matches("</xml>")
            .to_owned()
    } else {
        format!("<ToUserName><![CDATA[{OA}]]></ToUserName>")
    };
    let body = format!("<xml>{fields}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
    let mut query = query(token, timestamp, nonce, OPENID);
    query.push(("encrypt_type".into(), "aes".into()));
    query.push((
        "msg_signature".into(),
        crypto::signature(&[token, timestamp, nonce, &encrypt]),
    ));
    (body, query)
}
