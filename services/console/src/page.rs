//! What every page shares: the header's navigation, rendering, errors as pages, and the
//! security headers.

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::Answer;
use crate::session::{Role, Session};

/// The header: who is signed in, the links of their role, and the sign-out form.
pub(crate) struct Nav {
    pub(crate) role: Option<Role>,
    pub(crate) who: String,
    pub(crate) csrf: String,
    /// The current section, marked `aria-current`.
    pub(crate) current: &'static str,
}

impl Nav {
    /// The header of `session`'s pages.
    pub(crate) fn of(session: &Session, current: &'static str) -> Self {
        Nav {
            role: Some(session.role),
            who: session.who(),
            csrf: session.csrf.clone(),
            current,
        }
    }

    /// The header before sign-in.
    pub(crate) fn anonymous() -> Self {
        Nav {
            role: None,
            who: String::new(),
            csrf: String::new(),
            current: "",
        }
    }

    /// Whether `section` is the current one.
    pub(crate) fn is_current(&self, section: &str) -> bool {
        section == self.current
    }

    /// The links of the role: (section, href, label).
    pub(crate) fn links(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        match self.role {
            Some(Role::Operator) => vec![("bots", "/console/bots", "Bots")],
            Some(Role::Developer) => vec![
                ("bot", "/console/bot", "Bot"),
                ("events", "/console/bot/events", "Live events"),
                ("deliveries", "/console/bot/deliveries", "Deliveries"),
                ("journey", "/console/bot/journey", "Journey"),
                ("inbox", "/console/inbox", "Conversations"),
                ("agents", "/console/bot/agents", "Agents"),
                ("broadcasts", "/console/bot/broadcasts", "Broadcasts"),
            ],
            Some(Role::Agent) => vec![("inbox", "/console/inbox", "Inbox")],
            None => Vec::new(),
        }
    }
}

/// Renders a page.
pub(crate) fn render(page: &impl Template) -> Result<Response, ConsoleError> {
    let html = page.render().map_err(|e| {
        tracing::error!(error = %e, "a page did not render");
        ConsoleError::Internal
    })?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// Renders a page with a status other than 200.
pub(crate) fn render_with(status: StatusCode, page: &impl Template) -> Response {
    match render(page) {
        Ok(mut r) => {
            *r.status_mut() = status;
            r
        }
        Err(e) => e.into_response(),
    }
}

/// Why a page cannot be shown.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// No session (or it ended): to the sign-in page.
    SignIn { ended: bool },
    /// The role may not see it.
    Forbidden(String),
    /// A form without this session's CSRF token.
    Csrf,
    /// A form that does not read.
    BadForm(String),
    /// The API refused (its status and error shown).
    Refused(Answer),
    /// The API did not answer.
    Unavailable,
    /// Something that is no fault of the person (logged).
    Internal,
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignIn { ended } => {
                let to = if ended {
                    "/console/sign-in?ended=1"
                } else {
                    "/console/sign-in"
                };
                return Redirect::to(to).into_response();
            }
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not for this sign-in", m),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your console session (or the session changed). \
                 Nothing was done; open the page again and resend it."
                    .into(),
            ),
            ConsoleError::BadForm(m) => (StatusCode::BAD_REQUEST, "Form refused", m),
            ConsoleError::Refused(answer) => {
                let (code, message) = answer.error();
                (
                    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
                    "Refused",
                    format!("{message} ({code})"),
                )
            }
            ConsoleError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The API did not answer in time; try again in a moment.".into(),
            ),
            ConsoleError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The console could not show this page; the operator finds why in its logs.".into(),
            ),
        };
        render_with(
            status,
            &ErrorPage {
                nav: Nav::anonymous(),
                title: title.into(),
                message,
            },
        )
    }
}

/// The Content-Security-Policy of every console page: scripts, styles and live updates from
/// the console only; no framing; forms post to the console only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every console answer.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
