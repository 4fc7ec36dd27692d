//! The kit's servers start, answer, and go away.

use patchbay_testkit::{nats::NatsServer, postgres::PgServer};

#[tokio::test]
async fn nats_and_postgres_start_on_free_ports_and_restart() {
    let (nats, pg) = tokio::join!(NatsServer::start(), PgServer::start());
    let mut nats = nats.expect("nats starts");
    let pg = pg.expect("postgres starts");
    let url = nats.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("nats accepts");
    nats.restart().await.expect("nats restarts");
    assert_eq!(nats.url(), url, "same port after restart");
    let pg_port: u16 = pg
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    tokio::net::TcpStream::connect(("127.0.0.1", pg_port))
        .await
        .expect("postgres accepts");
}
