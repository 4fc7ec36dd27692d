//! `patchbay migrate`, as a Kubernetes Job runs it: two at once against a fresh NATS and
//! PostgreSQL both succeed, and leave every stream, bucket and schema in place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use patchbay_testkit::nats::NatsServer;
use patchbay_testkit::postgres::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_at_once_both_succeed() {
    let (nats, pg) = tokio::join!(NatsServer::start(), PgServer::start());
    let (nats, pg) = (nats.unwrap(), pg.unwrap());
    let prefix = patchbay_testkit::unique_prefix();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_patchbay"))
            .arg("migrate")
            .env("PATCHBAY_NATS_URL", nats.url())
            .env("PATCHBAY_NATS_PREFIX", &prefix)
            .env("PATCHBAY_DATABASE_URL", pg.url())
            .env("PATCHBAY_PARTITIONS", "4")
            .env("PATCHBAY_LOG_FORMAT", "text")
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (run(), run());
    let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(a.success() && b.success(), "migrations exited {a} and {b}");

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let subjects = patchbay_contract::Subjects::new(&prefix).unwrap();
    for stream in patchbay_contract::subjects::Stream::ALL {
        let mut s = js.get_stream(subjects.stream(stream)).await.unwrap();
        let info = s.info().await.unwrap();
        if stream != patchbay_contract::subjects::Stream::Dlq {
            let transform = info.config.subject_transform.clone().unwrap();
            assert!(
                transform.destination.contains("partition(4,"),
                "{stream:?}: {}",
                transform.destination
            );
        }
    }
    for bucket in ["config", "codes", "sent", "members", "links"] {
        js.get_key_value(format!("{prefix}_{bucket}"))
            .await
            .unwrap_or_else(|e| panic!("bucket {bucket}: {e}"));
    }
    let db = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    for (schema, migrations) in patchbay::SCHEMAS {
        // The schema names are the catalogue's constants.
        let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {schema}._sqlx_migrations where success"
        )))
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(applied, migrations.len() as i64, "schema {schema}");
    }
}
