//! The HTTP client for platform APIs: rustls with the `ring` provider, connection reuse, no
//! redirects, a per-call timeout.

use std::time::Duration;

/// A client builder with Patchbay's TLS set-up and defaults.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("Patchbay/", env!("CARGO_PKG_VERSION")))
}
