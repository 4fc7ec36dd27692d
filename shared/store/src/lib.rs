//! PostgreSQL access for the services that own tables. Each owner has its own schema (`auth`,
//! `router`, `dispatcher`) with its own migrations and migrations table, and its pool's
//! `search_path` points at that schema alone, so a service cannot touch another's tables by
//! accident. Migrations are embedded in the binaries and applied at start under sqlx's advisory
//! lock, so replicas starting together do not race.

pub mod batch;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, SqlSafeStr};

/// One embedded migration: version, description, SQL.
pub type EmbeddedMigration = (i64, &'static str, &'static str);

/// Errors opening or migrating a service's database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The database could not be reached in time.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// A migration failed.
    #[error("migrating schema {schema}: {message}")]
    Migrate {
        /// The schema.
        schema: String,
        /// The failure.
        message: String,
    },
}

/// Opens a pool for `schema`, creating the schema and applying `migrations` first. Retries the
/// first connection for up to `wait`, so a service may start before its database.
pub async fn connect(
    url: &str,
    schema: &'static str,
    max_connections: u32,
    migrations: &[EmbeddedMigration],
    wait: Duration,
) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Url(e.to_string()))?
        // No JIT: a cached generic plan of a keyset page (`… limit $n`) is estimated far above
        // `jit_above_cost`, and compiling it cost ~9 ms on every execution of a statement that
        // runs in a fraction of a millisecond (measured on the broadcast driver's release).
        .options([("search_path", schema), ("jit", "off")]);
    let deadline = tokio::time::Instant::now() + wait;
    let pool = loop {
        match PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
        {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, schema, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(StoreError::Connect(e.to_string())),
        }
    };
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.create_schema(schema);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.run(&pool).await.map_err(|e| StoreError::Migrate {
        schema: schema.to_owned(),
        message: e.to_string(),
    })?;
    Ok(pool)
}

/// Whether `e` means the database is unreachable or overloaded (retry without limit), as
/// opposed to a statement failing (which counts against the message).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03" || c == "53300"))
}
