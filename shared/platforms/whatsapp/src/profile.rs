//! The business profile of a WhatsApp number (`GET`/`PATCH /v1/channels/{id}/profile`, what
//! chat-api called `/me`): `about`, `address`, `description`, `email`, `vertical`,
//! `websites` and the picture (`profile_picture_url` read; `photo_url` to change it).
//!
//! * read: `GET /<PHONE_NUMBER_ID>/whatsapp_business_profile?fields=about,address,…`, whose
//!   answer is `{"data": [{…}]}`;
//! * change: `POST /<PHONE_NUMBER_ID>/whatsapp_business_profile` with `messaging_product` and
//!   the keys given (`null` empties a text, or `websites`; `vertical` cannot be emptied, as
//!   Meta says). A new picture is fetched from `photo_url` (JPEG or PNG, at most 5 MB) and
//!   handed to Meta's Resumable Upload API first: `GET /app` for the token's app,
//!   `POST /<app id>/uploads?file_length&file_type` for an upload session, then
//!   `POST /<session>` with the bytes (`Authorization: OAuth <token>`, `file_offset: 0`) for
//!   the handle the profile's `profile_picture_handle` takes.
//!
//! Meta's refusals are classified as sends' are ([`crate::outbound::classify`]).

use patchbay_platform::SendError;
use patchbay_platform::meta::call_graph;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::credentials::WhatsappCredentials;
use crate::outbound::classify;

/// The texts of the profile and Meta's limits in characters.
const TEXTS: [(&str, usize); 5] = [
    ("about", 139),
    ("address", 256),
    ("description", 512),
    ("email", 128),
    ("vertical", 64),
];

/// What a read asks for.
const FIELDS: &str = "about,address,description,email,profile_picture_url,websites,vertical";

fn invalid(message: String) -> SendError {
    SendError::permanent("invalid_request", message, None)
}

/// `change` as the profile's `POST` body (without the picture), and the picture's URL.
fn body_of(change: &Map<String, Value>) -> Result<(Map<String, Value>, Option<String>), SendError> {
    let mut body = Map::new();
    let mut photo = None;
    for (key, value) in change {
        if let Some((_, max)) = TEXTS.iter().find(|(k, _)| k == key) {
            let text = match value {
                Value::Null if key == "vertical" => {
                    return Err(invalid(
                        "vertical: cannot be emptied once set (Meta's rule); give another".into(),
                    ));
                }
                Value::Null => String::new(),
                Value::String(s) if s.chars().count() <= *max => s.clone(),
                Value::String(_) => {
                    return Err(invalid(format!(
                        "{key}: at most {max} characters (WhatsApp's limit)"
                    )));
                }
                _ => return Err(invalid(format!("{key}: must be a text or null"))),
            };
            body.insert(key.clone(), json!(text));
            continue;
        }
        match key.as_str() {
            "websites" => {
                let sites = match value {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a.clone(),
                    _ => return Err(invalid("websites: must be a list of URLs or null".into())),
                };
                let ok = sites.len() <= 2
                    && sites.iter().all(|w| {
                        w.as_str().is_some_and(|u| {
                            (u.starts_with("https://") || u.starts_with("http://"))
                                && u.chars().count() <= 256
                        })
                    });
                if !ok {
                    return Err(invalid(
                        "websites: at most 2 http(s) URLs of at most 256 characters".into(),
                    ));
                }
                body.insert(key.clone(), Value::Array(sites));
            }
            "photo_url" => match value.as_str() {
                Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
                    photo = Some(u.to_owned());
                }
                _ => {
                    return Err(invalid(
                        "photo_url: must be the http(s) URL of a JPEG or PNG picture".into(),
                    ));
                }
            },
            other => {
                return Err(invalid(format!(
                    "{other}: a WhatsApp business profile has about, address, description, \
                     email, vertical, websites and photo_url"
                )));
            }
        }
    }
    Ok((body, photo))
}

async fn graph(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Value, SendError> {
    call_graph(http, method, url, token, body, "WhatsApp", classify).await
}

/// Uploads the picture at `url` through the Resumable Upload API; answers its handle.
async fn upload_picture(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    url: &str,
    ctx: patchbay_platform::media::Context<'_>,
) -> Result<String, SendError> {
    let picture = ctx
        .urls
        .get(url, ctx.max_bytes)
        .await
        .map_err(|e| match e {
            SendError::Permanent(e) => invalid(format!("photo_url: {}", e.message)),
            retry => retry,
        })?;
    let kind = picture
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if kind != "image/jpeg" && kind != "image/png" {
        return Err(invalid(format!(
            "photo_url: WhatsApp takes JPEG or PNG pictures, not {kind}"
        )));
    }
    let app = graph(http, Method::GET, &format!("{base}/app"), token, None).await?;
    let Some(app_id) = app["id"].as_str() else {
        return Err(SendError::permanent(
            "platform_error",
            "Meta named no app for the channel's access token (GET /app)",
            None,
        ));
    };
    let session = graph(
        http,
        Method::POST,
        &format!(
            "{base}/{app_id}/uploads?file_length={}&file_type={kind}",
            picture.bytes.len()
        ),
        token,
        None,
    )
    .await?;
    let Some(session) = session["id"].as_str() else {
        return Err(SendError::permanent(
            "platform_error",
            "Meta's upload session answer has no id",
            None,
        ));
    };
    let unreachable = |e: reqwest::Error| SendError::Retryable {
        reason: format!("WhatsApp unreachable: {}", e.without_url()),
        after: None,
    };
    let response = http
        .post(format!("{base}/{session}"))
        .header(reqwest::header::AUTHORIZATION, format!("OAuth {token}"))
        .header("file_offset", "0")
        .body(picture.bytes)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if !(200..300).contains(&status) {
        classify(status, &headers, &bytes)?;
    }
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    answer["h"].as_str().map(str::to_owned).ok_or_else(|| {
        SendError::permanent("platform_error", "Meta's upload answer has no handle", None)
    })
}

/// Applies `change` (when given), then reads the profile back.
pub async fn profile(
    http: &reqwest::Client,
    base_url: &str,
    creds: &WhatsappCredentials,
    change: Option<&Map<String, Value>>,
    ctx: patchbay_platform::media::Context<'_>,
) -> Result<Map<String, Value>, SendError> {
    let base = base_url.trim_end_matches('/');
    let token = &creds.access_token;
    let url = format!("{base}/{}/whatsapp_business_profile", creds.phone_number_id);
    if let Some(change) = change {
        let (mut body, photo) = body_of(change)?;
        if let Some(photo) = photo {
            let handle = upload_picture(http, base, token, &photo, ctx).await?;
            body.insert("profile_picture_handle".into(), json!(handle));
        }
        body.insert("messaging_product".into(), json!("whatsapp"));
        graph(http, Method::POST, &url, token, Some(&Value::Object(body))).await?;
    }
    let read = graph(
        http,
        Method::GET,
        &format!("{url}?fields={FIELDS}"),
        token,
        None,
    )
    .await?;
    let mut out = read["data"][0].as_object().cloned().unwrap_or_default();
    out.remove("messaging_product");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_change_becomes_metas_body_and_bad_keys_are_named() {
        let (body, photo) = body_of(&change(json!({
            "about": "Open 9-5", "address": null, "websites": ["https://acme.test"],
            "photo_url": "https://cdn.acme.test/logo.png"})))
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"about": "Open 9-5", "address": "", "websites": ["https://acme.test"]})
        );
        assert_eq!(photo.as_deref(), Some("https://cdn.acme.test/logo.png"));
        for (bad, field) in [
            (json!({"name": "x"}), "name"),
            (json!({"about": "x".repeat(140)}), "about"),
            (json!({"vertical": null}), "vertical"),
            (json!({"websites": ["a", "b", "c"]}), "websites"),
            (json!({"websites": ["ftp://x"]}), "websites"),
            (json!({"photo_url": "logo.png"}), "photo_url"),
        ] {
            let Err(SendError::Permanent(e)) = body_of(&change(bad)) else {
                panic!("refused");
            };
            assert_eq!(e.code, "invalid_request");
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
}
