//! Sign-in and sign-out. One field takes the operator's admin token, a bot's API key or an
//! agent's invite; the API tells which it is (`GET /v1/me` answers for a bot's credentials,
//! `GET /admin/v1/tenants` for the admin token).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use patchbay_config::secrets::new_url_token;
use serde::Deserialize;

use crate::Console;
use crate::api::Call;
use crate::page::{ConsoleError, Nav, render_with};
use crate::session::{Posted, Role, SIGN_IN_COOKIE, Session, cookie, same};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nav: Nav,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SignInQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
}

/// `GET /console/sign-in`.
pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    Query(q): Query<SignInQuery>,
) -> Result<Response, ConsoleError> {
    let notice = if q.ended.is_some() {
        Some("Your session has ended. Sign in again.".to_owned())
    } else if q.signed_out.is_some() {
        Some("You are signed out.".to_owned())
    } else {
        None
    };
    form(&console, StatusCode::OK, notice, None)
}

fn form(
    console: &Console,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let csrf = new_url_token().map_err(|_| ConsoleError::Internal)?;
    let mut response = render_with(
        status,
        &SignInPage {
            nav: Nav::anonymous(),
            csrf: csrf.clone(),
            notice,
            error,
        },
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, console.sessions.sign_in_cookie(&csrf));
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credential: String,
}

/// What `GET /v1/me` answers.
#[derive(Deserialize)]
struct Me {
    bot_id: String,
    bot_name: String,
    #[serde(default)]
    agent: Option<MeAgent>,
}

#[derive(Deserialize)]
struct MeAgent {
    name: String,
}

/// `POST /console/sign-in`.
pub(crate) async fn sign_in(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let f: SignInForm =
        serde_urlencoded::from_bytes(&body).map_err(|e| ConsoleError::BadForm(e.to_string()))?;
    if !cookie(&headers, SIGN_IN_COOKIE).is_some_and(|c| same(&f.csrf, c)) {
        return Err(ConsoleError::Csrf);
    }
    let credential = f.credential.trim();
    match start_session(&console, credential).await? {
        Ok(response) => Ok(response),
        Err(error) => form(&console, error.0, None, Some(error.1)),
    }
}

/// Signs in with `credential`: the session started (a redirect to the role's first page with
/// its cookie), or why not (the status and the message for the form).
pub(crate) async fn start_session(
    console: &Console,
    credential: &str,
) -> Result<Result<Response, (StatusCode, String)>, ConsoleError> {
    if credential.is_empty() {
        return Ok(Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter the admin token, an API key or an agent invite.".into(),
        )));
    }
    let me = console.api.call(Call::get(credential, "/v1/me")).await?;
    let session = if me.ok() {
        let me: Me = me.into()?;
        Session {
            role: if me.agent.is_some() {
                Role::Agent
            } else {
                Role::Developer
            },
            bearer: credential.to_owned(),
            csrf: String::new(),
            bot_id: Some(me.bot_id),
            bot_name: Some(me.bot_name),
            agent: me.agent.map(|a| a.name),
            expires_at: chrono::Utc::now(),
            keys: Default::default(),
        }
    } else if console
        .api
        .call(Call::get(credential, "/admin/v1/tenants"))
        .await?
        .ok()
    {
        Session {
            role: Role::Operator,
            bearer: credential.to_owned(),
            csrf: String::new(),
            bot_id: None,
            bot_name: None,
            agent: None,
            expires_at: chrono::Utc::now(),
            keys: Default::default(),
        }
    } else {
        let (_, message) = me.error();
        return Ok(Err((
            StatusCode::UNAUTHORIZED,
            format!("This credential is not accepted: {message}."),
        )));
    };
    let role = session.role;
    let token = console.sessions.create(session).await?;
    tracing::info!(role = role.label(), "console sign-in");
    let mut response = Redirect::to(super::home_of(role)).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, console.sessions.cookie(&token));
    Ok(Ok(response))
}

/// `POST /console/sign-out`: the session ends everywhere at once.
pub(crate) async fn sign_out(
    State(console): State<Arc<Console>>,
    posted: Posted<Empty>,
) -> Result<Response, ConsoleError> {
    console.sessions.end(&posted.token).await?;
    let mut response = Redirect::to("/console/sign-in?signed_out=1").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, console.sessions.cleared());
    Ok(response)
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(crate) struct Empty {}
