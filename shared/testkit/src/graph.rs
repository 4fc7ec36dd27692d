//! A fake Meta Graph API for Messenger and the WhatsApp Cloud API, speaking their wire format
//! (`reference/platforms.md` §2.3, §2.5, §3.3): `POST /<page_id>/messages` (Send API) and
//! `POST /<phone_number_id>/messages` (Cloud API) with `Authorization: Bearer <token>` (or an
//! `access_token` query parameter), `GET /<psid>?fields=…` (user profile). It checks request
//! shapes and answers Meta's success bodies (`{"recipient_id","message_id"}`,
//! `{"messaging_product","contacts","messages":[{"id"}]}`) or its error envelope
//! `{"error":{"message","type","code","error_subcode"?,"error_data"?,"fbtrace_id"}}`. Known
//! ids and tokens only; calls recorded; failures can be queued.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Which Meta product an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// A Facebook Page (Send API).
    Messenger,
    /// A WhatsApp business phone number (Cloud API).
    Whatsapp,
}

/// One API call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    /// `POST` or `GET`.
    pub method: String,
    /// The object id in the path (Page id, phone number id, PSID).
    pub id: String,
    /// The token given (Bearer or `access_token`).
    pub token: Option<String>,
    /// The query string's parameters.
    pub query: HashMap<String, String>,
    /// The JSON body (`Null` for `GET`).
    pub body: Value,
    /// The HTTP status the fake answered.
    pub status: u16,
}

/// A Graph error to answer instead of success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// Graph `code`.
    pub code: i64,
    /// Graph `error_subcode`.
    pub subcode: Option<i64>,
    /// The message.
    pub message: String,
}

impl Failure {
    /// A Graph error.
    pub fn graph(status: u16, code: i64, subcode: Option<i64>, message: &str) -> Self {
        Self {
            status,
            code,
            subcode,
            message: message.to_owned(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Demo mode: any id and token; the product is told by the body.
    any: bool,
    /// Sending object id → (product, token).
    senders: HashMap<String, (Product, String)>,
    /// PSID → profile.
    profiles: HashMap<String, Value>,
    calls: Vec<Call>,
    next: u64,
    failures: VecDeque<Failure>,
    /// WhatsApp media id → (phone number id, MIME type, bytes).
    media: HashMap<String, (String, String, Vec<u8>)>,
    /// `http://<addr>`, for the media URLs it hands out.
    origin: String,
}

/// The fake. Stops when dropped.
pub struct FakeGraph {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeGraph {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/v25.0/{id}/messages", post(send))
            .route("/v25.0/{id}/media", post(upload))
            .route("/v25.0/{id}", get(profile))
            .route("/whatsapp_business/attachments/", get(attachment))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake graph");
        let addr = listener.local_addr().expect("addr");
        inner.lock().unwrap_or_else(|p| p.into_inner()).origin = format!("http://{addr}");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            inner,
            _server: server,
        }
    }

    /// The base URL (with the API version) to give a channel as `api_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v25.0", self.addr)
    }

    /// Accepts sends from the Page `page_id` with `token`.
    pub fn add_page(&self, page_id: &str, token: &str) {
        self.lock()
            .senders
            .insert(page_id.to_owned(), (Product::Messenger, token.to_owned()));
    }

    /// A file a WhatsApp user sent to `phone_number_id`: `GET /v25.0/<media_id>` with that
    /// number's token answers its short-lived URL, and the URL serves `bytes` to that token.
    pub fn add_whatsapp_media(
        &self,
        phone_number_id: &str,
        media_id: &str,
        mime: &str,
        bytes: &[u8],
    ) {
        self.lock().media.insert(
            media_id.to_owned(),
            (phone_number_id.to_owned(), mime.to_owned(), bytes.to_vec()),
        );
    }

    /// Accepts sends from the phone number `phone_number_id` with `token`.
    pub fn add_phone_number(&self, phone_number_id: &str, token: &str) {
        self.lock().senders.insert(
            phone_number_id.to_owned(),
            (Product::Whatsapp, token.to_owned()),
        );
    }

    /// Accepts any sending id and token (for the demo): a body with `messaging_product` is a
    /// WhatsApp send, any other a Messenger send.
    pub fn accept_any(&self) {
        self.lock().any = true;
    }

    /// Makes `GET /<psid>` answer these profile fields.
    pub fn set_profile(&self, psid: &str, profile: Value) {
        self.lock().profiles.insert(psid.to_owned(), profile);
    }

    /// Queues failures for the next send calls.
    pub fn fail_next(&self, failures: impl IntoIterator<Item = Failure>) {
        self.lock().failures.extend(failures);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Send calls for `id` (a Page or phone number id) so far.
    pub fn sends(&self, id: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.id == id)
            .collect()
    }

    /// Waits until at least `n` send calls for `id` arrived.
    pub async fn wait_for_sends(&self, id: &str, n: usize, timeout: Duration) -> Vec<Call> {
        crate::eventually(
            timeout,
            &format!("{n} sends for {id} at the fake Graph API"),
            || async {
                let c = self.sends(id);
                (c.len() >= n).then_some(c)
            },
        )
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Graph error envelope.
pub fn error_body(f: &Failure) -> Value {
    let mut e = json!({"message": f.message, "type": "OAuthException", "code": f.code,
                       "fbtrace_id": "AbCdEfGhIjK"});
    if let Some(s) = f.subcode {
        e["error_subcode"] = json!(s);
    }
    json!({"error": e})
}

/// `POST /v25.0/<PHONE_NUMBER_ID>/media`: a multipart upload (`messaging_product` =
/// `whatsapp`, `type` = the file's MIME type, `file`), with the number's token; its media id,
/// which `GET /v25.0/<media id>` then knows. The call's `body` records the fields and the
/// file's size.
async fn upload(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    multipart: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let token = token(&headers, &HashMap::new());
    let mut fields = serde_json::Map::new();
    let mut file: Option<(String, Vec<u8>)> = None;
    if let Ok(mut m) = multipart {
        while let Ok(Some(field)) = m.next_field().await {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "file" {
                let ct = field.content_type().unwrap_or_default().to_owned();
                if let Ok(b) = field.bytes().await {
                    fields.insert("file_size".into(), json!(b.len()));
                    file = Some((ct, b.to_vec()));
                }
            } else if let Ok(v) = field.text().await {
                fields.insert(name, json!(v));
            }
        }
    }
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let owner = s.senders.get(&id).map(|(_, t)| t.clone());
    let (status, body) = if token.is_none() || token != owner {
        (
            StatusCode::UNAUTHORIZED,
            error_body(&Failure::graph(
                401,
                190,
                None,
                "Invalid OAuth access token.",
            )),
        )
    } else if fields.get("messaging_product") != Some(&json!("whatsapp")) {
        (
            StatusCode::BAD_REQUEST,
            error_body(&invalid("The parameter messaging_product is required.")),
        )
    } else {
        match file {
            Some((ct, bytes)) if fields.get("type") == Some(&json!(ct)) && !bytes.is_empty() => {
                s.next += 1;
                let media_id = format!("{}", 4_490_000_000_000_000u64 + s.next);
                s.media.insert(media_id.clone(), (id.clone(), ct, bytes));
                (StatusCode::OK, json!({"id": media_id}))
            }
            _ => (
                StatusCode::BAD_REQUEST,
                error_body(&invalid(
                    "Param file must be a file with a type matching `type`.",
                )),
            ),
        }
    };
    s.calls.push(Call {
        method: "POST".into(),
        id: format!("{id}/media"),
        token,
        query: HashMap::new(),
        body: Value::Object(fields),
        status: status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// `GET /whatsapp_business/attachments/?mid=<media id>`: the file, with the number's token.
async fn attachment(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &HashMap::new());
    let id = query.get("mid").cloned().unwrap_or_default();
    let found = s.media.get(&id).cloned().filter(|(number, _, _)| {
        s.senders.get(number).map(|(_, t)| t.clone()) == token && token.is_some()
    });
    let response = match found {
        Some((_, mime, bytes)) => {
            ([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    };
    s.calls.push(Call {
        method: "GET".into(),
        id: format!("attachment:{id}"),
        token,
        query,
        body: Value::Null,
        status: response.status().as_u16(),
    });
    response
}

fn token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query.get("access_token").cloned())
}

fn invalid(message: &str) -> Failure {
    Failure::graph(400, 100, None, &format!("(#100) {message}"))
}

/// What is wrong with a Send API body, if anything.
fn check_messenger(b: &Value) -> Option<Failure> {
    if b.pointer("/recipient/id").and_then(Value::as_str).is_none() {
        return Some(invalid("param recipient must be non-empty."));
    }
    match b["messaging_type"].as_str() {
        Some("RESPONSE" | "UPDATE") if b.get("tag").is_none() => {}
        Some("MESSAGE_TAG") if b["tag"].is_string() => {}
        _ => return Some(invalid("messaging_type and tag do not match")),
    }
    let m = &b["message"];
    let text = m.get("text");
    let attachment = m.get("attachment");
    if text.is_some() == attachment.is_some() {
        return Some(invalid(
            "message must have exactly one of text and attachment",
        ));
    }
    if text
        .and_then(Value::as_str)
        .is_some_and(|t| t.chars().count() > 2000)
    {
        return Some(invalid(
            "Length of param message[text] must be less than or equal to 2000",
        ));
    }
    if let Some(q) = m.get("quick_replies")
        && q.as_array().is_none_or(|q| q.is_empty() || q.len() > 13)
    {
        return Some(invalid(
            "param message[quick_replies] must have 1 to 13 entries",
        ));
    }
    if let Some(a) = attachment {
        let kind = a["type"].as_str().unwrap_or_default();
        let ok = match kind {
            "image" | "audio" | "video" | "file" => {
                a.pointer("/payload/url").is_some() || a.pointer("/payload/attachment_id").is_some()
            }
            "template" => match a.pointer("/payload/template_type").and_then(Value::as_str) {
                Some("button") => a
                    .pointer("/payload/buttons")
                    .and_then(Value::as_array)
                    .is_some_and(|b| (1..=3).contains(&b.len())),
                Some("generic") => a
                    .pointer("/payload/elements")
                    .and_then(Value::as_array)
                    .is_some_and(|e| (1..=10).contains(&e.len())),
                _ => false,
            },
            _ => false,
        };
        if !ok {
            return Some(invalid("Invalid attachment"));
        }
    }
    None
}

/// What is wrong with a Cloud API body, if anything.
fn check_whatsapp(b: &Value) -> Option<Failure> {
    if b["messaging_product"] != "whatsapp" {
        return Some(invalid("The parameter messaging_product is required."));
    }
    if b.get("to").is_none() && b.get("recipient").is_none() {
        return Some(invalid("The parameter to is required."));
    }
    let Some(kind) = b["type"].as_str() else {
        return Some(invalid("The parameter type is required."));
    };
    if !b.get(kind).is_some_and(Value::is_object) {
        return Some(invalid(&format!("The parameter {kind} is required.")));
    }
    if kind == "template"
        && (b.pointer("/template/name").is_none() || b.pointer("/template/language/code").is_none())
    {
        return Some(invalid("template name and language.code are required"));
    }
    None
}

async fn send(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, response) = answer_send(&mut s, &id, token.as_deref(), &body);
    s.calls.push(Call {
        method: "POST".into(),
        id,
        token,
        query,
        body,
        status: status.as_u16(),
    });
    (status, Json(response)).into_response()
}

fn answer_send(s: &mut Inner, id: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let as_pair = |f: Failure| {
        (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST),
            error_body(&f),
        )
    };
    let known = s.senders.get(id).cloned().or_else(|| {
        s.any.then(|| {
            let product = if body.get("messaging_product").is_some() {
                Product::Whatsapp
            } else {
                Product::Messenger
            };
            (product, token.unwrap_or_default().to_owned())
        })
    });
    let Some((product, expected)) = known else {
        return as_pair(Failure::graph(
            400,
            100,
            Some(33),
            &format!("Unsupported post request. Object with ID '{id}' does not exist"),
        ));
    };
    if token != Some(expected.as_str()) {
        return as_pair(Failure::graph(
            401,
            190,
            None,
            "Invalid OAuth access token.",
        ));
    }
    let problem = match product {
        Product::Messenger => check_messenger(body),
        Product::Whatsapp => check_whatsapp(body),
    };
    if let Some(f) = problem.or_else(|| s.failures.pop_front()) {
        return as_pair(f);
    }
    s.next += 1;
    let n = s.next;
    match product {
        Product::Messenger => (
            StatusCode::OK,
            json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m_out_{n}")}),
        ),
        Product::Whatsapp => {
            let mut contact = json!({"input": body.get("to").or(body.get("recipient"))});
            if let Some(to) = body.get("to") {
                contact["wa_id"] = to.clone();
            } else {
                contact["user_id"] = body["recipient"].clone();
            }
            (
                StatusCode::OK,
                json!({"messaging_product": "whatsapp", "contacts": [contact],
                       "messages": [{"id": format!("wamid.OUT{n}")}]}),
            )
        }
    }
}

async fn profile(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    if let Some((number, mime, bytes)) = s.media.get(&id).cloned() {
        // A WhatsApp media id: its URL, for the number's own token only.
        let owner = s.senders.get(&number).map(|(_, t)| t.clone());
        let (status, body) = if token.is_some() && token == owner {
            let url = format!("{}/whatsapp_business/attachments/?mid={id}", s.origin);
            (
                StatusCode::OK,
                json!({"messaging_product": "whatsapp", "url": url, "mime_type": mime,
                       "sha256": "unchecked", "file_size": bytes.len(), "id": id}),
            )
        } else {
            (
                StatusCode::UNAUTHORIZED,
                error_body(&Failure::graph(
                    401,
                    190,
                    None,
                    "Invalid OAuth access token.",
                )),
            )
        };
        s.calls.push(Call {
            method: "GET".into(),
            id,
            token,
            query,
            body: Value::Null,
            status: status.as_u16(),
        });
        return (status, Json(body)).into_response();
    }
    let known_token = (s.any && token.is_some())
        || s.senders
            .values()
            .any(|(p, t)| *p == Product::Messenger && Some(t.as_str()) == token.as_deref());
    let (status, body) = if !known_token {
        (
            StatusCode::UNAUTHORIZED,
            error_body(&Failure::graph(
                401,
                190,
                None,
                "Invalid OAuth access token.",
            )),
        )
    } else {
        let fields: Vec<&str> = query
            .get("fields")
            .map_or(vec![], |f| f.split(',').collect());
        let mut out = json!({"id": id});
        if let Some(p) = s.profiles.get(&id) {
            for f in fields {
                if let Some(v) = p.get(f) {
                    out[f] = v.clone();
                }
            }
        }
        (StatusCode::OK, out)
    };
    s.calls.push(Call {
        method: "GET".into(),
        id,
        token,
        query,
        body: Value::Null,
        status: status.as_u16(),
    });
    (status, Json(body)).into_response()
}
