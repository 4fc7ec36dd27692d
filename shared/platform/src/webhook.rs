//! Calling tenant endpoints (callbacks, custom channels' event webhooks): Standard Webhooks
//! signatures, a DNS resolver that keeps requests off private addresses, the check for IP
//! literals that bypass it, and the client built from both.
//!
//! Signatures: `v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>`, one per valid secret,
//! space-separated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

/// Errors signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook secret is not whsec_ followed by base64")]
pub struct BadSecret;

/// Signs `body` for `id` at `timestamp` with a `whsec_…` secret (the prefix is optional).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// BrandChat's `X-Chat-Signature`: lowercase hex HMAC-SHA1 of `body` keyed with the bot's API
/// key (for JSON bodies the exact bytes; for uploads the file's bytes).
pub fn chat_signature(api_key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(api_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `given` is `body`'s BrandChat signature under `api_key`, compared in constant time
/// and case-insensitively (BrandChat's documented rule).
pub fn chat_signature_matches(api_key: &str, body: &[u8], given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = chat_signature(api_key, body);
    let given = given.trim().to_ascii_lowercase();
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// A DNS resolver for tenant endpoints that drops loopback and private addresses (unless the
/// operator allows them), so a tenant's host cannot be pointed at the cluster's insides, even
/// by changing its DNS after it was checked.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Allow private and loopback addresses (development).
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || crate::http::is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A tenant endpoint's `Retry-After`, in seconds (the form endpoints send).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Host names go through [`GuardedResolver`]; IP literals bypass it, so they are checked here:
/// why `url` is refused, if it names a loopback or private address.
pub fn refused_literal(url: &reqwest::Url, allow_private: bool) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!allow_private && !crate::http::is_public_ip(ip))
        .then(|| format!("{ip} is a loopback or private address"))
}

/// A client for tenant endpoints: Patchbay's TLS set-up, no redirects, the guarded resolver.
pub fn tenant_client(
    timeout: Duration,
    allow_private: bool,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    crate::http::client_builder(timeout)
        // HTTP(S)_PROXY in the environment would send tenant requests past the resolver.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(user_agent)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PHP's `hash_hmac('sha1', '{"userId":1337}', 'secret')`.
    #[test]
    fn chat_signatures_are_hex_hmac_sha1_compared_case_insensitively() {
        let sig = chat_signature("secret", br#"{"userId":1337}"#);
        assert_eq!(sig.len(), 40);
        assert_eq!(sig, chat_signature("secret", br#"{"userId":1337}"#));
        assert!(chat_signature_matches(
            "secret",
            br#"{"userId":1337}"#,
            &sig
        ));
        assert!(chat_signature_matches(
            "secret",
            br#"{"userId":1337}"#,
            &sig.to_uppercase()
        ));
        assert!(!chat_signature_matches(
            "other",
            br#"{"userId":1337}"#,
            &sig
        ));
        assert!(!chat_signature_matches(
            "secret",
            br#"{"userId":1338}"#,
            &sig
        ));
        // RFC 2202 test case 2.
        assert_eq!(
            chat_signature("Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    /// The Standard Webhooks reference test vector (`reference/peers.md` §1.3, from the spec's
    /// Go, JavaScript, Java and C# libraries).
    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            sign(
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "the whsec_ prefix is optional"
        );
        assert_eq!(sign("whsec_%%%", "a", 1, b""), Err(BadSecret));
    }
}
