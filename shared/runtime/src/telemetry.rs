//! One telemetry set-up for every binary: `tracing` with JSON or text logs (coloured only on a
//! terminal), OpenTelemetry spans
//! (exported over OTLP/HTTP when `PATCHBAY_OTLP_ENDPOINT` is set; always created, so
//! `traceparent` travels through NATS either way), W3C propagation, and the Prometheus recorder.
//!
//! Metric names follow one scheme: `patchbay_<area>_<what>_<unit>` with `_total` for counters
//! and `_seconds` for histograms (exported as Prometheus histograms with fixed buckets);
//! labels name the consumer, stream, route or platform.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use patchbay_config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes exported spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid configuration: PATCHBAY_LOG_LEVEL: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("invalid configuration: PATCHBAY_OTLP_ENDPOINT: {0}")]
    Exporter(String),
}

/// Installs logging and tracing for `service`. Later calls in the same process (tests start
/// several stacks) keep the first subscriber.
pub fn init(service: &str, config: &Config) -> Result<TelemetryGuard, TelemetryError> {
    install_globals();
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&config.log_level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let exporting = config.otlp_endpoint.is_some();
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()
            .is_ok(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    // Colours for people at a terminal; none in files and pipes.
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init()
            .is_ok(),
    };
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::debug!(service, exporting, "telemetry initialised");
        Ok(TelemetryGuard(Some(provider)))
    } else {
        Ok(TelemetryGuard(None))
    }
}

/// Process-wide pieces every service needs even without [`init`]: the W3C propagator and the
/// Prometheus recorder. Idempotent.
pub fn install_globals() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = metrics_handle();
    });
}

/// Bucket bounds of every `_seconds` histogram: from half a millisecond (a publish, a
/// group-committed statement) to half a minute (a slow tenant's timeout). Histograms rather
/// than summaries, so replicas aggregate (`histogram_quantile` over `sum by (le)`) and any
/// window can be asked for.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of `patchbay_db_batch_size` (requests per group-committed statement, at most
/// 128).
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The Prometheus recorder's handle, installing the recorder on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("patchbay_db_batch_size".into()),
                    BATCH_SIZE_BUCKETS,
                )
            })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "histogram buckets refused; exporting summaries");
                PrometheusBuilder::new()
            })
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}
