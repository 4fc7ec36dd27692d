//! The scope each bot route needs ([`patchbay_contract::scopes`]): [`BotAuth`](crate::auth::BotAuth)
//! looks the matched route up here and refuses a key without it (403 `missing_scope`). A bot
//! route missing from the table needs every scope, and the test below fails for it.

use axum::http::Method;

/// The "scope" of a route every credential of a bot may call (`GET /v1/me`).
pub(crate) const ANY: &str = "";

/// (method, route as mounted, scope).
pub(crate) const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/v1/me", ANY),
    ("POST", "/v1/messages", "messages:send"),
    ("POST", "/v1/conversations", "messages:send"),
    ("GET", "/v1/conversations", "messages:read"),
    (
        "POST",
        "/v1/conversations/{conversation_id}/handover",
        "messages:send",
    ),
    (
        "GET",
        "/v1/conversations/{conversation_id}/messages",
        "messages:read",
    ),
    ("GET", "/v1/messages/{message_id}/journey", "messages:read"),
    ("GET", "/v1/users", "users:read"),
    ("GET", "/v1/users/{user_id}", "users:read"),
    ("POST", "/v1/codes/claim", "users:read"),
    ("PATCH", "/v1/users/{user_id}", "users:write"),
    ("POST", "/v1/users/{user_id}/tokens/revoke", "users:write"),
    ("GET", "/v1/templates", "templates:read"),
    ("GET", "/v1/templates/{template_id}", "templates:read"),
    ("POST", "/v1/templates", "templates:write"),
    ("PUT", "/v1/templates/{template_id}", "templates:write"),
    ("DELETE", "/v1/templates/{template_id}", "templates:write"),
    ("GET", "/v1/broadcasts", "broadcasts:read"),
    ("GET", "/v1/broadcasts/{broadcast_id}", "broadcasts:read"),
    ("POST", "/v1/broadcasts", "broadcasts:write"),
    (
        "POST",
        "/v1/broadcasts/{broadcast_id}/cancel",
        "broadcasts:write",
    ),
    (
        "POST",
        "/v1/broadcasts/{broadcast_id}/pause",
        "broadcasts:write",
    ),
    (
        "POST",
        "/v1/broadcasts/{broadcast_id}/resume",
        "broadcasts:write",
    ),
    ("GET", "/v1/media/{media_id}", "media:read"),
    ("POST", "/v1/media", "media:write"),
    ("GET", "/v1/deliveries", "deliveries:read"),
    ("GET", "/v1/deliveries/{event_id}", "deliveries:read"),
    (
        "POST",
        "/v1/deliveries/{event_id}/retry",
        "deliveries:write",
    ),
    ("POST", "/v1/deliveries/replay", "deliveries:write"),
    ("GET", "/v1/webhook", "settings:read"),
    ("GET", "/v1/channels", "settings:read"),
    ("GET", "/v1/channels/{channel_id}", "settings:read"),
    ("GET", "/v1/channels/{channel_id}/profile", "settings:read"),
    (
        "PATCH",
        "/v1/channels/{channel_id}/profile",
        "settings:write",
    ),
    ("PUT", "/v1/webhook", "settings:write"),
    ("POST", "/v1/channels/{channel_id}/try", "settings:write"),
    ("POST", "/v1/webhook/secret/rotate", "settings:write"),
    (
        "POST",
        "/v1/channels/{channel_id}/tokens/revoke",
        "settings:write",
    ),
    ("GET", "/v1/apps", "settings:read"),
    ("GET", "/v1/apps/{app_id}", "settings:read"),
    ("POST", "/v1/apps/{app_id}/enable", "settings:write"),
    ("DELETE", "/v1/apps/{app_id}", "settings:write"),
    ("GET", "/v1/agents", "settings:read"),
    ("POST", "/v1/agents", "settings:keys"),
    ("DELETE", "/v1/agents/{agent_id}", "settings:keys"),
    ("POST", "/v1/keys/rotate", "settings:keys"),
    ("DELETE", "/v1/keys/{key_id}", "settings:keys"),
];

/// The scope `method` on the mounted route `path` needs; `None` for a route not in
/// [`ROUTES`] (which then needs every scope).
pub(crate) fn required(method: &Method, path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bot route the OpenAPI document lists has its scope, and every scope in the table
    /// is a known one on a listed route.
    #[test]
    fn every_bot_route_names_a_known_scope() {
        let bot_routes = crate::openapi::bot_operations();
        assert!(bot_routes.len() >= 20, "{bot_routes:?}");
        for (method, path) in &bot_routes {
            let m: Method = method.to_uppercase().parse().unwrap();
            assert!(
                required(&m, path).is_some(),
                "{method} {path} has no scope in services/api/src/scopes.rs"
            );
        }
        for (m, p, s) in ROUTES {
            assert!(*s == ANY || patchbay_contract::scopes::is_known(s), "{s}");
            assert!(
                bot_routes
                    .iter()
                    .any(|(bm, bp)| bm.eq_ignore_ascii_case(m) && bp == p),
                "{m} {p} is no bot route of the OpenAPI document"
            );
        }
    }
}
