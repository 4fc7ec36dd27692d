//! `console`: the web console for operators, bot developers and human agents, served under
//! `/console` on the public listener.
//!
//! It holds no credential of its own and reads no database: every page asks the API over NATS
//! (`<p>.rpc.api.http`, [`api::ApiClient`]) with the signed-in person's own credential (the
//! operator's admin token, a bot's API key, an agent's invite), so each role sees and does
//! exactly what its API allows. Live views (the event tail, the agents' inbox and conversations)
//! are fed from the bots' dispatch and status subjects ([`live`]). Sessions live sealed in the
//! `<p>_sessions` bucket ([`session`]): any replica serves any request.
//!
//! Pages are server-rendered (askama templates, `templates/`), work without JavaScript except
//! for live updates and the "try it" box (`static/console.js`, served with the page), and send
//! a strict Content-Security-Policy.

mod api;
mod live;
mod page;
mod session;
mod views;

use std::sync::Arc;

use futures::future::BoxFuture;
use patchbay_runtime::{BoxError, Deps, Service};

/// What every handler shares.
pub(crate) struct Console {
    /// The API over NATS.
    pub(crate) api: api::ApiClient,
    /// The sessions bucket.
    pub(crate) sessions: session::Sessions,
    /// The bus, for live views.
    pub(crate) bus: patchbay_bus::Bus,
    /// Where platforms and browsers reach the public listener (webhook URLs shown to
    /// operators).
    pub(crate) public_url: String,
}

/// Starts the service.
pub fn start(deps: Deps) -> BoxFuture<'static, Result<Service, BoxError>> {
    Box::pin(async move {
        let key = deps.config.require_master_key()?;
        let ttl = std::time::Duration::from_millis(deps.config.console_session_ttl_ms);
        let secure = deps.config.public_url.starts_with("https://");
        let console = Arc::new(Console {
            api: api::ApiClient::new(&deps.bus),
            sessions: session::Sessions::open(&deps.bus, key, ttl, secure).await?,
            bus: deps.bus.clone(),
            public_url: deps.config.public_url.trim_end_matches('/').to_owned(),
        });
        let routes = views::routes()
            .layer(axum::middleware::from_fn(page::security_headers))
            .with_state(console);
        Ok(Service::new("console").routes(routes))
    })
}
