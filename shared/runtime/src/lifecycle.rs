//! The service lifecycle. A service is a library with a [`StartFn`]: given its [`Deps`] it
//! returns routes and background tasks. [`launch`] connects to NATS, ensures the topology,
//! starts the given services and serves all their routes on one listener; [`main`] wraps that
//! for a binary. A per-service binary passes one `StartFn`, `patchbay all` passes them all:
//! the same code either way, always talking over NATS.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use futures::future::BoxFuture;
use patchbay_bus::{Bus, ConfigView, NatsAccess};
use patchbay_config::Config;
use patchbay_contract::Subjects;
use patchbay_contract::access::Role;
use patchbay_contract::topology::TopologySettings;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::http::{Readiness, ops_routes, track_requests};

/// Any error a service reports at start or while running.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A background task of a service (a consumer, a responder).
pub type Task = BoxFuture<'static, Result<(), BoxError>>;

/// How a service is started.
pub type StartFn = fn(Deps) -> BoxFuture<'static, Result<Service, BoxError>>;

/// What every service is given.
#[derive(Clone, Debug)]
pub struct Deps {
    /// The process's name (`patchbay` or the service's), for logs and group membership.
    pub process: Arc<str>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The bus.
    pub bus: Bus,
    /// The watched config bucket.
    pub view: ConfigView,
    /// Cancelled when the process should stop.
    pub shutdown: CancellationToken,
    /// Checks behind `/readyz`.
    pub readiness: Readiness,
}

impl Deps {
    /// Opens the service's own PostgreSQL schema (created and migrated if needed) and adds it
    /// to `/readyz`.
    pub async fn database(
        &self,
        schema: &'static str,
        migrations: &[patchbay_store::EmbeddedMigration],
    ) -> Result<sqlx::PgPool, BoxError> {
        let url = self.config.require_database_url()?;
        let pool = patchbay_store::connect(
            url,
            schema,
            self.config.database_max_connections,
            migrations,
            std::time::Duration::from_secs(60),
        )
        .await?;
        let check = pool.clone();
        self.readiness
            .add(format!("postgres:{schema}"), move || !check.is_closed());
        Ok(pool)
    }

    /// Runs `handler` as this process's member of the consumer group `spec` (the partitions
    /// assigned to it, with the configured concurrency) until shutdown, then drains within
    /// the grace period and hands its partitions over.
    pub fn consumer<T, H>(
        &self,
        spec: patchbay_contract::topology::ConsumerSpec,
        handler: Arc<H>,
    ) -> impl std::future::Future<Output = Result<(), patchbay_bus::BusError>> + Send + 'static
    where
        T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        H: patchbay_bus::Handler<T>,
    {
        patchbay_bus::run_group::<T, H>(
            self.bus.clone(),
            spec,
            patchbay_bus::GroupOptions {
                partitions: self.config.partitions,
                concurrency: self.config.consumer_concurrency,
                grace: self.config.shutdown_grace(),
                process: self.process.to_string(),
            },
            handler,
            self.shutdown.clone(),
        )
    }
}

/// A started service: its HTTP routes and its background tasks.
pub struct Service {
    /// Its name, for logs.
    pub name: &'static str,
    /// Routes it serves (merged onto the process's one listener).
    pub routes: axum::Router,
    /// Tasks that run until shutdown.
    pub tasks: Vec<Task>,
}

impl Service {
    /// A service with no routes and no tasks yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            routes: axum::Router::new(),
            tasks: Vec::new(),
        }
    }

    /// Adds routes.
    pub fn routes(mut self, routes: axum::Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Adds a background task.
    pub fn task<F, E>(mut self, task: F) -> Self
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.tasks
            .push(Box::pin(async move { task.await.map_err(Into::into) }));
        self
    }
}

/// A running process.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Asks it to stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until it stopped; the error of the first task that failed, if any.
    pub async fn wait(self) -> Result<(), String> {
        self.handle
            .await
            .unwrap_or_else(|e| Err(format!("process task failed: {e}")))
    }

    /// Stops it and waits.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown();
        self.wait().await
    }
}

/// Topology settings from the configuration.
pub fn topology_settings(config: &Config) -> TopologySettings {
    TopologySettings {
        replicas: config.nats_replicas,
        max_stream_bytes: config.nats_max_stream_bytes,
        duplicate_window: std::time::Duration::from_millis(config.nats_duplicate_window_ms),
        partitions: config.partitions,
        dead_letters_per_key: config.dead_letters_per_key,
        backlog_per_key: config.pipeline_backlog_per_key,
        code_ttl: std::time::Duration::from_millis(config.code_ttl_ms),
        link_ttl: std::time::Duration::from_millis(config.link_ttl_ms),
        session_ttl: std::time::Duration::from_millis(config.console_session_ttl_ms),
    }
}

/// How the process `process` connects to NATS: its role's user (when the configuration has
/// a password), its role's inbox prefix, and TLS as configured.
pub fn nats_access(config: &Config, process: &str) -> Result<NatsAccess, BoxError> {
    let subjects = Subjects::new(&config.nats_prefix)?;
    let role = Role::from_name(process);
    let credentials = match (config.nats_password()?, role) {
        (Some(password), Some(role)) => Some((role.user(&subjects), password)),
        (Some(_), None) => {
            return Err(format!(
                "{process} has no NATS role, so PATCHBAY_NATS_PASSWORD cannot name its user"
            )
            .into());
        }
        (None, _) => None,
    };
    Ok(NatsAccess {
        credentials,
        inbox_prefix: role.map(|r| r.inbox_prefix(&subjects)),
        tls_ca_file: config.nats_tls_ca_file.as_ref().map(Into::into),
        tls_client: config
            .nats_tls_cert_file
            .as_ref()
            .zip(config.nats_tls_key_file.as_ref())
            .map(|(c, k)| (c.into(), k.into())),
    })
}

/// Creates or updates the topology when the process may (it connected without credentials, or
/// its role manages it), or else waits until `patchbay migrate` created it.
async fn prepare_topology(
    bus: &Bus,
    config: &Config,
    process: &str,
    access: &NatsAccess,
    shutdown: &CancellationToken,
) -> Result<(), BoxError> {
    let settings = topology_settings(config);
    let manages = access.credentials.is_none()
        || Role::from_name(process).is_some_and(Role::manages_topology);
    if manages {
        bus.ensure_topology(&settings).await?;
    } else {
        bus.await_topology(&settings, shutdown).await?;
    }
    Ok(())
}

/// Connects, ensures the topology, starts `starts` and serves their routes on `listener` until
/// `shutdown`. Returns once every service started.
pub async fn launch(
    process: &str,
    config: Config,
    starts: &[StartFn],
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, BoxError> {
    crate::telemetry::install_globals();
    let subjects = Subjects::new(&config.nats_prefix)?;
    let access = nats_access(&config, process)?;
    let bus = Bus::connect(
        &config.nats_url,
        process,
        subjects,
        config.publish_timeout(),
        &access,
    )
    .await?;
    let bus = match config.master_key()? {
        Some(keys) => bus.with_master_key(keys),
        None => bus,
    };
    prepare_topology(&bus, &config, process, &access, &shutdown).await?;
    let view = ConfigView::start(&bus, shutdown.clone()).await?;
    let readiness = Readiness::default();
    let edge = crate::edge::EdgeSettings::of(&config);
    let nats = bus.clone();
    readiness.add("nats", move || nats.is_connected());
    let deps = Deps {
        process: Arc::from(process),
        config: Arc::new(config),
        bus,
        view,
        shutdown: shutdown.clone(),
        readiness: readiness.clone(),
    };
    let mut services = Vec::with_capacity(starts.len());
    for start in starts {
        let service = start(deps.clone()).await?;
        tracing::info!(service = service.name, "service started");
        services.push(service);
    }
    let mut router = ops_routes(readiness);
    let mut tasks = Vec::new();
    for s in services {
        router = router.merge(s.routes);
        tasks.extend(s.tasks.into_iter().map(|t| (s.name, t)));
    }
    let router = router.layer(axum::middleware::from_fn(track_requests));
    let addr = listener.local_addr()?;
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        let mut set: JoinSet<(&'static str, Result<(), BoxError>)> = JoinSet::new();
        for (name, task) in tasks {
            set.spawn(async move { (name, task.await) });
        }
        let http_stop = stop.clone();
        set.spawn(async move {
            let r = crate::edge::serve(listener, router, edge, http_stop)
                .await
                .map_err(BoxError::from);
            ("http", r)
        });
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            let failure = match joined {
                Ok((_, Ok(()))) => None,
                Ok((name, Err(e))) => Some(format!("{name}: {e}")),
                Err(e) => Some(format!("task panicked: {e}")),
            };
            if let Some(f) = failure {
                tracing::error!(error = %f, "service failed; stopping the process");
                stop.cancel();
                first_error.get_or_insert(f);
            }
        }
        first_error.map_or(Ok(()), Err)
    });
    Ok(Running {
        addr,
        shutdown,
        handle,
    })
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stop signal received; draining");
        token.cancel();
    });
}

/// The whole `main` of a service binary: configuration, telemetry, runtime, launch, wait.
/// Exit codes: 0 after a clean stop, 1 when a service failed, 2 for bad configuration.
pub fn main(process: &'static str, starts: &[StartFn]) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{process}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{process}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match crate::telemetry::init(process, &config) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{process}: {e}");
                return ExitCode::from(2);
            }
        };
        for key in Config::unknown_env_keys() {
            tracing::warn!(%key, "environment variable matches no configuration key; ignored");
        }
        let listener = match TcpListener::bind(config.http_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %config.http_addr, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        let running = match launch(process, config, starts, listener, shutdown).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %running.addr, "listening");
        match running.wait().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "stopped after a failure");
                ExitCode::FAILURE
            }
        }
    })
}
