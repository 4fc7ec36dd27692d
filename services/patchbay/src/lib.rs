//! The catalogue of services, for `patchbay all`, `patchbay service <name>` and the tests.

use patchbay_runtime::StartFn;

/// Every service by name, in start order (owners of state first, HTTP edges last).
pub const SERVICES: &[(&str, StartFn)] = &[
    ("auth", patchbay_auth::start),
    ("bot-router", patchbay_bot_router::start),
    ("normaliser", patchbay_normaliser::start),
    ("webhook-dispatcher", patchbay_webhook_dispatcher::start),
    ("outbound-telegram", patchbay_outbound_telegram::start),
    ("ingress-telegram", patchbay_ingress_telegram::start),
    ("api", patchbay_api::start),
];

/// The start functions of every service.
pub fn all() -> Vec<StartFn> {
    SERVICES.iter().map(|(_, s)| *s).collect()
}

/// The start function of the service `name`.
pub fn by_name(name: &str) -> Option<StartFn> {
    SERVICES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
