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
    /// Phone number id → its business profile.
    business_profiles: HashMap<String, serde_json::Map<String, Value>>,
    /// Page id → its Messenger profile.
    messenger_profiles: HashMap<String, serde_json::Map<String, Value>>,
    /// Resumable upload session → (token, announced length, MIME type).
    upload_sessions: HashMap<String, (String, usize, String)>,
    /// Upload handle → (MIME type, bytes), served at `/pictures/<handle>` once a profile
    /// takes it.
    handles: HashMap<String, (String, Vec<u8>)>,
}

/// The app every token of the fake belongs to (`GET /app`).
pub const APP_ID: &str = "1029384756";

/// The verticals a WhatsApp business profile takes.
const VERTICALS: [&str; 19] = [
    "UNDEFINED",
    "OTHER",
    "AUTO",
    "BEAUTY",
    "APPAREL",
    "EDU",
    "ENTERTAIN",
    "EVENT_PLAN",
    "FINANCE",
    "GROCERY",
    "GOVT",
    "HOTEL",
    "HEALTH",
    "NONPROFIT",
    "PROF_SERVICES",
    "RETAIL",
    "TRAVEL",
    "RESTAURANT",
    "NOT_A_BIZ",
];

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
            .route("/v25.0/{id}", get(profile).post(finish_upload))
            .route("/v25.0/app", get(app))
            .route("/v25.0/{id}/uploads", post(start_upload))
            .route(
                "/v25.0/{id}/whatsapp_business_profile",
                get(business_profile).post(business_profile),
            )
            .route(
                "/v25.0/{id}/messenger_profile",
                get(messenger_profile)
                    .post(messenger_profile)
                    .delete(messenger_profile),
            )
            .route("/pictures/{handle}", get(picture))
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
        unauthorized()
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
            unauthorized()
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
        unauthorized()
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

fn unauthorized() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        error_body(&Failure::graph(
            401,
            190,
            None,
            "Invalid OAuth access token.",
        )),
    )
}

fn refused(message: &str) -> (StatusCode, Value) {
    (StatusCode::BAD_REQUEST, error_body(&invalid(message)))
}

/// Whether `token` is that of the sending object `id` of `product`.
fn owns(s: &Inner, id: &str, product: Product, token: Option<&str>) -> bool {
    token.is_some()
        && s.senders
            .get(id)
            .is_some_and(|(p, t)| *p == product && Some(t.as_str()) == token)
}

impl Inner {
    fn record(
        &mut self,
        method: &str,
        id: String,
        token: Option<String>,
        query: HashMap<String, String>,
        body: Value,
        status: StatusCode,
    ) {
        self.calls.push(Call {
            method: method.to_owned(),
            id,
            token,
            query,
            body,
            status: status.as_u16(),
        });
    }
}

/// `GET /v25.0/app`: the app the token belongs to.
async fn app(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    let known = s
        .senders
        .values()
        .any(|(_, t)| Some(t.as_str()) == token.as_deref());
    let (status, body) = if known {
        (
            StatusCode::OK,
            json!({"id": APP_ID, "name": "Patchbay test app", "link": "https://www.facebook.com/games/?app_id=1029384756"}),
        )
    } else {
        unauthorized()
    };
    s.record("GET", "app".into(), token, query, Value::Null, status);
    (status, Json(body)).into_response()
}

/// `POST /v25.0/<APP_ID>/uploads?file_length=&file_type=`: a resumable upload session.
async fn start_upload(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    let known = s
        .senders
        .values()
        .any(|(_, t)| Some(t.as_str()) == token.as_deref());
    let length = query
        .get("file_length")
        .and_then(|l| l.parse::<usize>().ok());
    let kind = query.get("file_type").cloned().unwrap_or_default();
    let (status, body) = match (known, id == APP_ID, length) {
        (false, _, _) => unauthorized(),
        (_, false, _) => refused("Unsupported post request: unknown app."),
        (_, _, None | Some(0)) => refused("The parameter file_length is required."),
        (_, _, Some(length)) => {
            if ![
                "image/jpeg",
                "image/png",
                "image/jpg",
                "video/mp4",
                "application/pdf",
            ]
            .contains(&kind.as_str())
            {
                refused("Param file_type is not a supported type.")
            } else {
                s.next += 1;
                let session = format!("upload:MTphdHRhY2htZW50{}", s.next);
                s.upload_sessions.insert(
                    session.clone(),
                    (token.clone().unwrap_or_default(), length, kind),
                );
                (StatusCode::OK, json!({"id": session}))
            }
        }
    };
    s.record(
        "POST",
        format!("{id}/uploads"),
        token,
        query,
        Value::Null,
        status,
    );
    (status, Json(body)).into_response()
}

/// `POST /v25.0/upload:<session>` with `Authorization: OAuth <token>`, `file_offset: 0` and
/// the file: its handle.
async fn finish_upload(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("OAuth "))
        .map(str::to_owned);
    let offset = headers.get("file_offset").and_then(|v| v.to_str().ok());
    let (status, answer) = match s.upload_sessions.get(&id).cloned() {
        None => refused("Unsupported post request."),
        Some((owner, _, _)) if Some(owner.as_str()) != token.as_deref() => unauthorized(),
        Some(_) if offset != Some("0") => refused("The header file_offset is required."),
        Some((_, length, _)) if length != body.len() => {
            refused("The file is not as long as file_length said.")
        }
        Some((_, _, kind)) => {
            s.upload_sessions.remove(&id);
            s.next += 1;
            let handle = format!("4::aW1hZ2U{}", s.next);
            s.handles.insert(handle.clone(), (kind, body.to_vec()));
            (StatusCode::OK, json!({"h": handle}))
        }
    };
    s.record(
        "POST",
        id,
        token,
        HashMap::new(),
        json!({"file_size": body.len()}),
        status,
    );
    (status, Json(answer)).into_response()
}

/// `GET /pictures/<handle>`: a profile picture uploaded through a handle.
async fn picture(State(inner): State<Arc<Mutex<Inner>>>, Path(handle): Path<String>) -> Response {
    let s = inner.lock().unwrap_or_else(|p| p.into_inner());
    match s.handles.get(&handle) {
        Some((kind, bytes)) => (
            [(axum::http::header::CONTENT_TYPE, kind.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET`/`POST /v25.0/<PHONE_NUMBER_ID>/whatsapp_business_profile`: the business profile,
/// read (`?fields=`, answered as `{"data": [{…}]}`) or changed (`messaging_product`, the keys
/// to set; an empty text removes one; `profile_picture_handle` from an upload).
async fn business_profile(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: axum::http::Method,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = if !owns(&s, &id, Product::Whatsapp, token.as_deref()) {
        unauthorized()
    } else if method == axum::http::Method::GET {
        let profile = s.business_profiles.get(&id).cloned().unwrap_or_default();
        let mut out = serde_json::Map::new();
        for f in query.get("fields").map_or("", String::as_str).split(',') {
            if let Some(v) = profile.get(f) {
                out.insert(f.to_owned(), v.clone());
            }
        }
        out.insert("messaging_product".into(), json!("whatsapp"));
        (StatusCode::OK, json!({"data": [out]}))
    } else {
        match change_business_profile(&mut s, &id, &body) {
            Ok(()) => (StatusCode::OK, json!({"success": true})),
            Err(message) => refused(&message),
        }
    };
    s.record(
        method.as_str(),
        format!("{id}/whatsapp_business_profile"),
        token,
        query,
        body,
        status,
    );
    (status, Json(answer)).into_response()
}

fn change_business_profile(s: &mut Inner, id: &str, body: &Value) -> Result<(), String> {
    let Some(change) = body.as_object() else {
        return Err("The request body must be a JSON object.".into());
    };
    if change.get("messaging_product") != Some(&json!("whatsapp")) {
        return Err("The parameter messaging_product is required.".into());
    }
    let mut profile = s.business_profiles.get(id).cloned().unwrap_or_default();
    for (key, value) in change {
        let limit = match key.as_str() {
            "messaging_product" => continue,
            "about" => 139,
            "address" => 256,
            "description" => 512,
            "email" => 128,
            "vertical" => {
                if !value.as_str().is_some_and(|v| VERTICALS.contains(&v)) {
                    return Err(format!(
                        "Param vertical must be one of {{{}}}",
                        VERTICALS.join(", ")
                    ));
                }
                usize::MAX
            }
            "websites" => {
                let sites = value.as_array().cloned().unwrap_or_default();
                if sites.len() > 2 {
                    return Err("Param websites must have at most 2 entries.".into());
                }
                if sites.is_empty() {
                    profile.remove(key);
                } else {
                    profile.insert(key.clone(), Value::Array(sites));
                }
                continue;
            }
            "profile_picture_handle" => {
                let handle = value.as_str().unwrap_or_default();
                if !s.handles.contains_key(handle) {
                    return Err("Param profile_picture_handle is not a valid upload handle.".into());
                }
                profile.insert(
                    "profile_picture_url".into(),
                    json!(format!("{}/pictures/{handle}", s.origin)),
                );
                continue;
            }
            other => {
                return Err(format!(
                    "Param {other} is not a field of the business profile."
                ));
            }
        };
        let Some(text) = value.as_str() else {
            return Err(format!("Param {key} must be a string."));
        };
        if text.chars().count() > limit {
            return Err(format!(
                "Param {key} must be at most {limit} characters long."
            ));
        }
        if key == "email" && !text.is_empty() && !text.contains('@') {
            return Err("Param email must be a valid email address.".into());
        }
        if text.is_empty() {
            profile.remove(key);
        } else {
            profile.insert(key.clone(), json!(text));
        }
    }
    s.business_profiles.insert(id.to_owned(), profile);
    Ok(())
}

/// `GET`/`POST`/`DELETE /v25.0/<PAGE_ID>/messenger_profile`: the Page's Messenger profile, read
/// (`?fields=`, `{"data": [{…}]}`, empty when nothing is set), changed (the keys to set; a
/// persistent menu needs a get-started button, as Meta says) or emptied (`{"fields": [...]}`).
async fn messenger_profile(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: axum::http::Method,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const KEYS: [&str; 4] = ["greeting", "get_started", "persistent_menu", "ice_breakers"];
    let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
    let token = token(&headers, &query);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut profile = s.messenger_profiles.get(&id).cloned().unwrap_or_default();
    let (status, answer) = if !owns(&s, &id, Product::Messenger, token.as_deref()) {
        unauthorized()
    } else if method == axum::http::Method::GET {
        let mut out = serde_json::Map::new();
        for f in query.get("fields").map_or("", String::as_str).split(',') {
            if let Some(v) = profile.get(f) {
                out.insert(f.to_owned(), v.clone());
            }
        }
        let data = if out.is_empty() {
            json!([])
        } else {
            json!([out])
        };
        (StatusCode::OK, json!({"data": data}))
    } else if method == axum::http::Method::DELETE {
        let fields = body["fields"].as_array().cloned().unwrap_or_default();
        if fields.is_empty()
            || !fields
                .iter()
                .all(|f| f.as_str().is_some_and(|f| KEYS.contains(&f)))
        {
            refused("param fields must be non-empty and name profile fields")
        } else {
            for f in fields {
                profile.remove(f.as_str().unwrap_or_default());
            }
            s.messenger_profiles.insert(id.clone(), profile);
            (StatusCode::OK, json!({"result": "success"}))
        }
    } else {
        match body.as_object() {
            Some(change)
                if !change.is_empty() && change.keys().all(|k| KEYS.contains(&k.as_str())) =>
            {
                let has_start =
                    change.contains_key("get_started") || profile.contains_key("get_started");
                if change.contains_key("persistent_menu") && !has_start {
                    refused(
                        "You must set a Get Started button if you also wish to use persistent menu.",
                    )
                } else {
                    profile.extend(change.clone());
                    s.messenger_profiles.insert(id.clone(), profile);
                    (StatusCode::OK, json!({"result": "success"}))
                }
            }
            _ => refused(
                "Requires one of the params: greeting, get_started, persistent_menu, ice_breakers",
            ),
        }
    };
    s.record(
        method.as_str(),
        format!("{id}/messenger_profile"),
        token,
        query,
        body,
        status,
    );
    (status, Json(answer)).into_response()
}
