//! The console's pages, one module per area; [`routes`] mounts them under `/console`.

mod agent;
mod broadcasts;
mod developer;
mod operator;
mod sign_in;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::Console;
use crate::session::{Role, Signed};

/// Every console route.
pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route(
            "/console/sign-in",
            get(sign_in::page).post(sign_in::sign_in),
        )
        .route("/console/sign-out", post(sign_in::sign_out))
        .merge(operator::routes())
        .merge(developer::routes())
        .merge(broadcasts::routes())
        .merge(agent::routes())
}

/// `/console`: the signed-in person's first page, or the sign-in page.
async fn home(signed: Result<Signed, crate::page::ConsoleError>) -> Redirect {
    match signed {
        Ok(s) => Redirect::to(home_of(s.session.role)),
        Err(_) => Redirect::to("/console/sign-in"),
    }
}

/// The first page of `role`.
pub(crate) fn home_of(role: Role) -> &'static str {
    match role {
        Role::Operator => "/console/bots",
        Role::Developer => "/console/bot",
        Role::Agent => "/console/inbox",
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../static/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/console.js"),
    )
}

/// A listing as the API answers it (`{"items": [...]}`).
#[derive(serde::Deserialize)]
pub(crate) struct Items<T> {
    pub(crate) items: Vec<T>,
}

/// The query of a page a form redirected to: what was done, for its notice.
#[derive(serde::Deserialize)]
pub(crate) struct Notice {
    #[serde(default)]
    pub(crate) done: Option<String>,
}

/// Percent-encodes a query value.
pub(crate) fn q(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A path segment the API gets from a person (an id): only the characters ids are made of.
pub(crate) fn id_ok(id: &str) -> Result<&str, crate::page::ConsoleError> {
    if !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(crate::page::ConsoleError::BadForm(format!(
            "{id:?} is no id"
        )))
    }
}

/// A time as the pages show it (UTC, to the second).
pub(crate) fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
