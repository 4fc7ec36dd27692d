//! TLS between a service and NATS (`PATCHBAY_NATS_TLS_CA_FILE`), against a real nats-server
//! that requires it, with certificates made here by `openssl` (a private CA and a server
//! certificate for 127.0.0.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use patchbay_bus::{Bus, NatsAccess};
use patchbay_contract::Subjects;
use patchbay_testkit::nats::NatsServer;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (make tools installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`server.pem`,
/// `server.key`).
fn certificates(dir: &Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=patchbay test CA",
            "-out",
            "ca.pem",
            days[0],
            days[1],
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "server.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "san.ext",
            days[0],
            days[1],
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_a_tls_only_nats_with_the_ca_and_nothing_reaches_it_without() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
        dir.path().join("server.pem"),
        dir.path().join("server.key")
    );
    let nats = NatsServer::start_with_config(tls).await.unwrap();
    let url = nats.url().replace("nats://", "tls://");

    // Without the CA: the server's certificate is not trusted, and a plain client is refused.
    let untrusted = async_nats::ConnectOptions::new()
        .require_tls(true)
        .connect(url.as_str())
        .await;
    assert!(untrusted.is_err(), "connected without trusting the CA");
    let plain = async_nats::connect(nats.url()).await;
    assert!(plain.is_err(), "a plain connection was taken");

    // With it, as a service configured with PATCHBAY_NATS_TLS_CA_FILE.
    let access = NatsAccess {
        tls_ca_file: Some(dir.path().join("ca.pem")),
        ..NatsAccess::default()
    };
    let subjects = Subjects::new(&patchbay_testkit::unique_prefix()).unwrap();
    let bus = Bus::connect(&url, "tls-test", subjects, Duration::from_secs(5), &access)
        .await
        .unwrap();
    let mut sub = bus.client().subscribe("tls.echo").await.unwrap();
    bus.client()
        .publish("tls.echo", "over TLS".into())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut sub))
        .await
        .expect("the message came back")
        .unwrap();
    assert_eq!(got.payload.as_ref(), b"over TLS");
    assert!(bus.is_connected());
}
