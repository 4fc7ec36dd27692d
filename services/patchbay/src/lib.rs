//! The catalogue of services, for `patchbay all`, `patchbay service <name>`, `patchbay migrate`
//! and the tests.

pub mod nats_auth;
pub mod reseal;

use std::time::Duration;

use patchbay_config::Config;
use patchbay_runtime::{BoxError, StartFn};

/// Every service by name, in start order (owners of state first, HTTP edges last).
pub const SERVICES: &[(&str, StartFn)] = &[
    ("auth", patchbay_auth::start),
    ("bot-router", patchbay_bot_router::start),
    ("normaliser", patchbay_normaliser::start),
    ("webhook-dispatcher", patchbay_webhook_dispatcher::start),
    ("outbound-telegram", patchbay_outbound_telegram::start),
    ("ingress-telegram", patchbay_ingress_telegram::start),
    ("outbound-custom", patchbay_outbound_custom::start),
    ("ingress-custom", patchbay_ingress_custom::start),
    ("outbound-messenger", patchbay_outbound_messenger::start),
    ("ingress-messenger", patchbay_ingress_messenger::start),
    ("outbound-whatsapp", patchbay_outbound_whatsapp::start),
    ("ingress-whatsapp", patchbay_ingress_whatsapp::start),
    ("outbound-wechat", patchbay_outbound_wechat::start),
    ("ingress-wechat", patchbay_ingress_wechat::start),
    ("outbound-kik", patchbay_outbound_kik::start),
    ("ingress-kik", patchbay_ingress_kik::start),
    ("outbound-viber", patchbay_outbound_viber::start),
    ("ingress-viber", patchbay_ingress_viber::start),
    ("outbound-line", patchbay_outbound_line::start),
    ("ingress-line", patchbay_ingress_line::start),
    ("api", patchbay_api::start),
    ("console", patchbay_console::start),
];

/// The start functions of every service.
pub fn all() -> Vec<StartFn> {
    SERVICES.iter().map(|(_, s)| *s).collect()
}

/// The start function of the service `name`.
pub fn by_name(name: &str) -> Option<StartFn> {
    SERVICES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Every PostgreSQL schema and its migrations, by owning service.
pub const SCHEMAS: &[(&str, &[patchbay_store::EmbeddedMigration])] = &[
    ("auth", patchbay_auth::MIGRATIONS),
    ("router", patchbay_bot_router::MIGRATIONS),
    ("dispatcher", patchbay_webhook_dispatcher::MIGRATIONS),
];

/// Creates or updates every JetStream stream and bucket and applies every schema's
/// migrations, then returns: what a Kubernetes Job runs before the services start. Safe to run
/// many times and from several places at once (topology calls are idempotent; migrations run
/// under PostgreSQL advisory locks). Services without NATS credentials do the same at start, so
/// this is the ordered path, not the only one; services with their own NATS users (a locked-down
/// NATS) may not create streams and wait for it.
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    let subjects = patchbay_contract::Subjects::new(&config.nats_prefix)?;
    let bus = patchbay_bus::Bus::connect(
        &config.nats_url,
        "patchbay-migrate",
        subjects,
        config.publish_timeout(),
        &patchbay_runtime::lifecycle::nats_access(config, "patchbay-migrate")?,
    )
    .await?;
    bus.ensure_topology(&patchbay_runtime::lifecycle::topology_settings(config))
        .await?;
    tracing::info!(
        prefix = config.nats_prefix,
        partitions = config.partitions,
        "JetStream streams and buckets are up to date"
    );
    let url = config.require_database_url()?;
    for (schema, migrations) in SCHEMAS {
        let pool =
            patchbay_store::connect(url, schema, 1, migrations, Duration::from_secs(120)).await?;
        pool.close().await;
        tracing::info!(schema, "schema is up to date");
    }
    Ok(())
}
