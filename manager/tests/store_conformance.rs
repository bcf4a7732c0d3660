//! The store conformance suite: every [`StoreOps`] operation and its error cases, checked by
//! the same generic functions (`conformance/mod.rs`) on each backend: SQLite (a file in a
//! temporary directory) and PostgreSQL (a real server from Debian's package, one database per
//! test: `tether_tests::pg`). The concurrency checks open a second handle on the same data, a
//! second "manager". Then the checks only PostgreSQL has: racing migrations, the URL and
//! connection errors that must never show the password.
mod conformance;

use conformance as checks;
use tether_manager::store::{StoreError, StoreOps};

/// SQLite: a file in a temporary directory; a second handle is a second connection to it.
mod sqlite_backend {
    use tether_manager::store::{SqliteStore, StoreError};
    use uuid::Uuid;

    pub type S = SqliteStore;
    pub type Place = tempfile::TempDir;

    fn path(place: &Place) -> std::path::PathBuf {
        place.path().join("tether.db")
    }

    pub async fn open() -> (S, Place) {
        let dir = tempfile::tempdir().unwrap();
        (SqliteStore::open(&path(&dir)).unwrap(), dir)
    }

    pub async fn another(place: &Place) -> S {
        SqliteStore::open(&path(place)).unwrap()
    }

    pub async fn sealed_of(place: &Place, rotation: Uuid) -> Option<Vec<u8>> {
        let conn = rusqlite::Connection::open(path(place)).unwrap();
        conn.query_row("SELECT sealed_successor FROM rotations WHERE id = ?1", [rotation.to_string()], |r| {
            r.get(0)
        })
        .unwrap()
    }

    pub async fn newer_schema(place: &Place) -> StoreError {
        let conn = rusqlite::Connection::open(path(place)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        SqliteStore::open(&path(place)).unwrap_err()
    }
}

/// PostgreSQL: a new database on the test process's server; a second handle is a second
/// `PgStore` (its own pool), as another manager would have.
mod pg_backend {
    use tether_manager::store::{PgStore, StoreError};
    use uuid::Uuid;

    pub type S = PgStore;
    pub type Place = String;

    pub async fn open() -> (S, Place) {
        let url = tether_tests::pg::database().await.unwrap();
        (PgStore::connect(&url).await.unwrap(), url)
    }

    pub async fn another(place: &Place) -> S {
        PgStore::connect(place).await.unwrap()
    }

    pub async fn client(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    pub async fn sealed_of(place: &Place, rotation: Uuid) -> Option<Vec<u8>> {
        client(place)
            .await
            .query_one("SELECT sealed_successor FROM rotations WHERE id = $1", &[&rotation.to_string()])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn newer_schema(place: &Place) -> StoreError {
        client(place)
            .await
            .execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)", &[])
            .await
            .unwrap();
        PgStore::connect(place).await.unwrap_err()
    }
}

/// The suite on one backend: a module of tests named after the checks.
macro_rules! conformance {
    ($name:ident, $backend:ident) => {
        mod $name {
            use super::*;
            use $backend as backend;

            macro_rules! single {
                ($check:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $check() {
                        let (s, _place) = backend::open().await;
                        checks::$check(&s).await;
                    }
                };
            }

            macro_rules! pair {
                ($check:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $check() {
                        let (a, place) = backend::open().await;
                        let b = backend::another(&place).await;
                        checks::$check(&a, &b).await;
                    }
                };
            }

            single!(meta);
            single!(accounts);
            single!(tokens);
            single!(revoke_and_delete);
            single!(token_policy);
            single!(admin_tokens);
            single!(last_operator);
            single!(restrictions);
            single!(audit);
            single!(rotation_refused_when_stale);
            single!(due_for_rotation);
            pair!(concurrent_token_names);
            pair!(concurrent_last_operator);
            pair!(concurrent_rotation_start);
            pair!(concurrent_revoke_and_rotation);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rotation_lifecycle() {
                let (s, place) = backend::open().await;
                checks::rotation_lifecycle(&s, |id| backend::sealed_of(&place, id)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn snapshot_restore() {
                let (from, _a) = backend::open().await;
                let (into, _b) = backend::open().await;
                checks::snapshot_restore(&from, &into).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_newer_schema_is_refused() {
                let (s, place) = backend::open().await;
                checks::with_account(&s, "acme").await;
                drop(s);
                match backend::newer_schema(&place).await {
                    StoreError::TooNew { found: 99, supported } => assert!(supported < 99),
                    other => panic!("a newer schema: {other:?}"),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_second_handle_sees_the_first_ones_writes() {
                let (a, place) = backend::open().await;
                let b = backend::another(&place).await;
                let t = checks::with_account(&a, "acme").await;
                assert_eq!(b.token(t.id).await.unwrap(), Some(t));
            }
        }
    };
}

conformance!(sqlite, sqlite_backend);
conformance!(postgres, pg_backend);

/// What only the PostgreSQL backend has: connecting, migrating, and its error messages.
mod postgres_only {
    use std::time::Duration;

    use tether_manager::store::{Location, PgStore, Store, StoreError, StoreOps};

    use super::pg_backend::client;

    /// A password to look for in every message.
    const PASSWORD: &str = "Quetzal-Wombat-4471";

    fn assert_no_secret(e: &StoreError, secrets: &[&str]) {
        let text = format!("{e} | {e:?}");
        for s in secrets {
            assert!(!text.contains(s), "the error shows a secret: {text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn managers_starting_together_on_an_empty_database_migrate_it_once() {
        let url = tether_tests::pg::database().await.unwrap();
        let (a, b, c) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(PgStore::connect(&url), PgStore::connect(&url), PgStore::connect(&url))
        })
        .await
        .expect("bounded");
        let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let row = client(&url)
            .await
            .query_one("SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM schema_migrations", &[])
            .await
            .unwrap();
        let (rows, versions): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(rows, versions, "each migration applied once");
        assert!(rows >= 1);
        super::checks::with_account(&a, "acme").await;
        assert!(b.account("acme").await.unwrap().is_some());
        // Idempotent, with managers serving.
        let again = PgStore::migrate_only(&url).await.unwrap();
        assert_eq!(again.from, again.to);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_only_migrates_an_empty_database_then_changes_nothing() {
        let url = tether_tests::pg::database().await.unwrap();
        let first = PgStore::migrate_only(&url).await.unwrap();
        assert_eq!(first.from, 0);
        assert!(first.to >= 1);
        let second = PgStore::migrate_only(&url).await.unwrap();
        assert_eq!((second.from, second.to), (first.to, first.to));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_connect_dispatches_to_postgres() {
        let url = tether_tests::pg::database().await.unwrap();
        let store = Store::connect(&Location::Postgres(url.clone())).await.unwrap();
        assert_eq!(store.kind(), "postgres");
        assert!(store.sqlite().is_none());
        let server = tether_tests::pg::shared().unwrap();
        assert!(!format!("{store:?}").contains(&server.password), "Debug shows no password");
        assert!(store.is_empty().await.unwrap());
        super::checks::with_account(&store, "acme").await;
        assert!(!store.is_empty().await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::connect(&Location::Sqlite(dir.path().join("t.db"))).await.unwrap();
        assert_eq!(sqlite.kind(), "sqlite");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_connection_error_shows_the_password() {
        // Starts the shared server off the async threads.
        tether_tests::pg::database().await.unwrap();
        let server = tether_tests::pg::shared().unwrap();
        let port = server.port;
        // A wrong password, on the real server.
        let url = format!("postgres://tether:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable");
        let e = PgStore::connect(&url).await.unwrap_err();
        assert_no_secret(&e, &[PASSWORD]);
        assert!(
            matches!(&e, StoreError::Postgres(m) if m.contains("28P01")),
            "password authentication failed: {e}"
        );
        // The right password, a database that does not exist.
        let url =
            format!("postgres://tether:{}@127.0.0.1:{port}/no_such_db?sslmode=disable", server.password);
        let e = PgStore::connect(&url).await.unwrap_err();
        assert_no_secret(&e, &[&server.password]);
        // TLS required by the URL, not offered by the server.
        let url = format!("postgres://tether:{}@127.0.0.1:{port}/postgres?sslmode=require", server.password);
        let e = PgStore::connect(&url).await.unwrap_err();
        assert_no_secret(&e, &[&server.password]);
        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url =
            format!("postgres://tether:{PASSWORD}@127.0.0.1:{closed}/db?sslmode=disable&connect_timeout=5");
        let e = PgStore::connect(&url).await.unwrap_err();
        assert_no_secret(&e, &[PASSWORD]);
        // Malformed URLs, with the password in the user info and as an option.
        for url in [
            format!("postgres://tether:{PASSWORD}@127.0.0.1:notaport/db"),
            format!("postgres://tether:{PASSWORD}@127.0.0.1/db?unknown_option={PASSWORD}"),
            format!("postgres://tether@127.0.0.1/db?password={PASSWORD}&sslmode=sometimes"),
            format!("http://tether:{PASSWORD}@127.0.0.1/db"),
        ] {
            let e = PgStore::connect(&url).await.unwrap_err();
            assert_no_secret(&e, &[PASSWORD]);
            assert!(e.to_string().contains("TETHER_DATABASE_URL"), "names the setting: {e}");
            let e = Store::connect(&Location::Postgres(url)).await.unwrap_err();
            assert_no_secret(&e, &[PASSWORD]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_verifies_the_server_certificate_and_host() {
        let certs = tempfile::tempdir().unwrap();
        let files = tether_manager::tls::ensure_generated(certs.path(), &[]).unwrap();
        let ca = files.ca.clone().unwrap();
        let setup = tether_tests::pg::Setup {
            conf: "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'".into(),
            files: vec![
                ("server.crt".into(), std::fs::read(&files.cert).unwrap()),
                ("server.key".into(), std::fs::read(&files.key).unwrap()),
            ],
            // TLS or nothing over TCP: a connection that succeeds used TLS.
            hba: Some("local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n".into()),
        };
        let server = tokio::task::spawn_blocking(move || tether_tests::pg::PgServer::start_with(&setup))
            .await
            .unwrap()
            .unwrap();
        let base = format!("postgres://tether:{}@127.0.0.1:{}/postgres", server.password, server.port);
        let verified = PgStore::connect(&format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display()))
            .await
            .unwrap();
        super::checks::with_account(&verified, "acme").await;
        let preferred = PgStore::connect(&format!("{base}?sslrootcert={}", ca.display())).await.unwrap();
        assert!(preferred.account("acme").await.unwrap().is_some());
        // The Mozilla roots do not know this CA.
        let e = PgStore::connect(&format!("{base}?sslmode=require")).await.unwrap_err();
        assert_no_secret(&e, &[&server.password]);
        assert!(e.to_string().contains("certificate"), "an unknown issuer: {e}");
        // Plain TCP is refused by this server, so the successes above were TLS.
        let e = PgStore::connect(&format!("{base}?sslmode=disable")).await.unwrap_err();
        assert_no_secret(&e, &[&server.password]);
        let e = PgStore::connect(&format!("{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "names the option: {e}");
        assert_no_secret(&e, &[&server.password]);
    }
}
