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

/// Whether `ip` is on the public internet: globally routable unicast, not loopback, private,
/// link-local, shared (CGNAT), benchmarking (`198.18.0.0/15`), documentation, reserved
/// (`240.0.0.0/4`), multicast or unspecified; for IPv6, within global unicast (`2000::/3`) and
/// not a form that embeds an IPv4 address (NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4
/// `2002::/16`, Teredo `2001::/32`, IPv4-compatible `::/96`), whose IPv4 part could be anything.
/// IPv4-mapped addresses are judged by their IPv4 part. Callback and media URLs must resolve to
/// such addresses unless the operator allows private ones (SSRF guard).
pub fn is_public_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(a == 0
                || a == 10
                || a == 127
                || (a == 100 && (64..128).contains(&b))
                || (a == 169 && b == 254)
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 192 && b == 88 && c == 99)
                || (a == 198 && (b == 18 || b == 19))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || a >= 224)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let global_unicast = (s[0] & 0xe000) == 0x2000;
            global_unicast
                && s[0] != 0x2002
                && !(s[0] == 0x2001 && s[1] < 0x0200)
                && !(s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Checks a tenant callback URL: absolute http(s) with a host, and (unless `allow_private`)
/// resolving only to public addresses. The error is fit to show the caller.
pub async fn check_callback_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    let host = url.host_str().ok_or("must have a host")?.to_owned();
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<_> = tokio::net::lookup_host((host_for_lookup.as_str(), port))
        .await
        .map_err(|e| format!("host {host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host {host} does not resolve"));
    }
    // Which address is not said: a caller must not learn what an internal name resolves to.
    if addrs.iter().any(|a| !is_public_ip(a.ip())) {
        return Err(format!(
            "host {host} resolves to an address that is not public; the operator must allow private callbacks (PATCHBAY_ALLOW_PRIVATE_CALLBACKS=true)"
        ));
    }
    Ok(url)
}

struct HttpInject<'a>(&'a mut axum::http::HeaderMap);

impl opentelemetry::propagation::Injector for HttpInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HttpExtract<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HttpExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// W3C trace context of the current span, as HTTP headers for an outgoing request.
pub fn trace_headers() -> axum::http::HeaderMap {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut headers = axum::http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HttpInject(&mut headers));
    });
    headers
}

/// Makes the trace context of an incoming request (if any) the parent of `span`.
pub fn adopt_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if headers.contains_key("traceparent") {
        let cx =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpExtract(headers)));
        let _ = span.set_parent(cx);
    }
}

/// A `multipart/form-data` body (reqwest is built without its multipart feature): the text
/// `fields`, then one file part named `file_field`; its `Content-Type` header and bytes. The
/// boundary is chosen so that it does not occur in the file.
pub fn multipart(
    fields: &[(&str, &str)],
    file_field: &str,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, Vec<u8>) {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let boundary = (0u32..)
        .map(|i| format!("patchbay-media-{i:08x}"))
        .find(|b| !contains(b.as_bytes()))
        .unwrap_or_else(|| "patchbay-media".into());
    let quoted = |v: &str| v.replace(['"', '\r', '\n'], "_");
    let mut body = Vec::with_capacity(bytes.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                quoted(name)
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
             Content-Type: {content_type}\r\n\r\n",
            quoted(file_field),
            quoted(filename)
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            // Ways around a check of the plain private ranges: the cloud metadata address
            // embedded in NAT64, 6to4, Teredo and IPv4-compatible IPv6, and IPv4 ranges that
            // are not globally routable.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:56f1:5601",
            "::a9fe:a9fe",
            "::",
            "100::1",
            "2001:db8::1",
            "fec0::1",
            "ff02::1",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_callbacks_need_the_operator_flag() {
        let e = check_callback_url("http://127.0.0.1:9/hook", false)
            .await
            .unwrap_err();
        assert!(e.contains("PATCHBAY_ALLOW_PRIVATE_CALLBACKS"), "{e}");
        assert!(
            check_callback_url("http://127.0.0.1:9/hook", true)
                .await
                .is_ok()
        );
        let e = check_callback_url("http://localhost:9/hook", false)
            .await
            .unwrap_err();
        assert!(!e.contains("127.0.0.1") && !e.contains("::1"), "{e}");
        assert!(
            check_callback_url("ftp://example.com/", true)
                .await
                .is_err()
        );
    }
}
