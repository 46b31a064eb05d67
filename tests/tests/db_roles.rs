//! The database as the functions see it (issue 14): they connect as a runtime role that owns
//! nothing and holds only the grants the code needs (migrations/V9__runtime_role.sql); always
//! over TLS verified against the cluster's CA (plaintext is refused); with credentials from the
//! Secrets Manager secret the deployed config names, re-read after a password rotation without
//! rebuilding the pool.

use holdfast_adapters::config::{Config, DatabaseSource};
use holdfast_adapters::db::{self, DbFault};
use holdfast_adapters::sql::Sql;
use holdfast_tests::{api_request, response_json, wait_for, TestAws, TestDb};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// The group role the migrations grant to (V9); the login user in `DATABASE_URL` is a member.
const RUNTIME_GROUP: &str = "holdfast_runtime";

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(SqlState::code)
}

#[tokio::test]
async fn the_runtime_role_cannot_disable_the_audit_trigger_rewrite_audit_rows_or_change_the_schema() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("runtime conn");
    // What it may do: append to the audit and read it.
    c.batch_execute("INSERT INTO flag_audit (action, actor, flag, environment) VALUES ('proposed', 'ada', 'holds.ttlSeconds', 'dev')")
        .await
        .expect("the runtime role appends to the audit");
    let refused = [
        // The append-only guard: only the owner may touch a table's triggers.
        "ALTER TABLE flag_audit DISABLE TRIGGER flag_audit_no_update_delete",
        "ALTER TABLE flag_audit DISABLE TRIGGER ALL",
        "DROP TRIGGER flag_audit_no_update_delete ON flag_audit",
        "CREATE OR REPLACE FUNCTION flag_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        // Rewriting or removing audit rows.
        "UPDATE flag_audit SET actor = 'mallory'",
        "DELETE FROM flag_audit",
        "TRUNCATE flag_audit",
        // Any DDL: a table, a temporary table, a column, a schema, an index.
        "CREATE TABLE scratch (id int)",
        "CREATE TEMP TABLE scratch (id int)",
        "ALTER TABLE bookings ADD COLUMN note text",
        "CREATE SCHEMA scratch",
        "CREATE INDEX scratch ON bookings (guest_email)",
        "DROP TABLE idempotency_keys",
    ];
    for sql in refused {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE.code()), "{sql}: {e:?}");
    }
    // Granting itself UPDATE gets nothing (it holds no grant option): PostgreSQL only warns, so
    // the proof is that UPDATE is still refused afterwards.
    let _ = c.batch_execute("GRANT UPDATE, DELETE, TRUNCATE ON flag_audit TO CURRENT_USER").await;
    let _ = c.batch_execute(&format!("GRANT UPDATE ON flag_audit TO {RUNTIME_GROUP}")).await;
    let e = c.batch_execute("UPDATE flag_audit SET actor = 'mallory'").await.expect_err("still refused");
    assert_eq!(sqlstate(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE.code()), "{e:?}");
    // The row is as written, and the trigger is still enabled.
    let row = c
        .fetch_one(
            "SELECT (SELECT actor FROM flag_audit), (SELECT tgenabled FROM pg_trigger WHERE tgname = 'flag_audit_no_update_delete')",
            &[],
        )
        .await
        .expect("read back");
    let (actor, enabled): (String, i8) = (row.get(0), row.get(1));
    assert_eq!((actor.as_str(), enabled as u8 as char), ("ada", 'O'));
}

#[tokio::test]
async fn the_runtime_role_owns_nothing_and_holds_only_what_the_code_needs() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("runtime conn");
    let me: String = c.fetch_one("SELECT current_user::text", &[]).await.expect("user").get(0);
    // Nothing in the database belongs to the runtime login or its group.
    let owned: Vec<String> = c
        .fetch(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) IN ($1, $2)
             UNION ALL SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) IN ($1, $2)",
            &[&me, &RUNTIME_GROUP],
        )
        .await
        .expect("ownership")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(owned.is_empty(), "the runtime role owns {owned:?}");
    // Every table the code uses is granted (a new table whose migration forgot its grants fails
    // here by name); none grants what no code does: TRUNCATE, REFERENCES, TRIGGER.
    let rows = c
        .fetch(
            "SELECT t.tablename::text,
                    has_table_privilege($1, format('public.%I', t.tablename), 'SELECT'),
                    has_table_privilege($1, format('public.%I', t.tablename), 'TRUNCATE, REFERENCES, TRIGGER')
               FROM pg_tables t WHERE t.schemaname = 'public' AND t.tablename <> 'refinery_schema_history'
              ORDER BY 1",
            &[&me],
        )
        .await
        .expect("privileges");
    assert!(rows.len() >= 18, "the migrated tables: {}", rows.len());
    for r in &rows {
        let (table, select, ddl_ish): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        assert!(select, "the runtime role cannot read {table}: grant it in the table's migration");
        assert!(!ddl_ish, "the runtime role may TRUNCATE/REFERENCE/TRIGGER {table}");
    }
    // The migrations' history is the owner's business.
    let history: bool = c
        .fetch_one("SELECT has_table_privilege($1, 'refinery_schema_history', 'SELECT')", &[&me])
        .await
        .expect("h")
        .get(0);
    assert!(!history);
    // The audit: exactly SELECT and INSERT.
    let audit: Vec<String> = c
        .fetch(
            "SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) AS p
              WHERE has_table_privilege($1, 'flag_audit', p)",
            &[&me],
        )
        .await
        .expect("audit privileges")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["SELECT", "INSERT"]);
    // And the owner owns the schema's tables (it ran the migrations).
    let owner = db.owner_pool();
    let o = owner.get().await.expect("owner conn");
    let not_owner: i64 = o
        .fetch_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user", &[])
        .await
        .expect("owners")
        .get(0);
    assert_eq!(not_owner, 0);
}

#[tokio::test]
async fn the_runtime_role_sees_other_sessions_transaction_starts() {
    // The metrics aggregator holds a window back while a transaction that began inside it is
    // open; it can only see other roles' transactions with pg_read_all_stats.
    let db = TestDb::new().await;
    let owner = db.owner_pool();
    let mut o = owner.get().await.expect("owner conn");
    let tx = o.transaction().await.expect("begin");
    let pid: i32 = tx.fetch_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    tx.fetch_one("SELECT now()", &[]).await.expect("start the transaction");
    let c = db.pool.get().await.expect("runtime conn");
    let row = c
        .fetch_one("SELECT usename::text, xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .expect("pg_stat_activity");
    let (user, seen): (String, bool) = (row.get(0), row.get(1));
    assert_ne!(user, c.fetch_one("SELECT current_user::text", &[]).await.expect("me").get::<_, String>(0));
    assert!(seen, "the runtime role cannot see another role's xact_start");
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn connections_are_tls_verified_and_plaintext_is_refused() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("runtime conn");
    let (ssl, version): (bool, Option<String>) = {
        let r =
            c.fetch_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.expect("ssl");
        (r.get(0), r.get(1))
    };
    assert!(ssl, "the runtime pool's session is not encrypted");
    assert!(version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")), "{version:?}");

    // The same role and password without TLS, straight to PostgreSQL (not through PgBouncer,
    // which refuses plaintext itself): no pg_hba.conf line admits it.
    let direct = db.direct_url();
    let base = direct.split_once('?').map_or(direct.as_str(), |(h, _)| h).to_string();
    let plain = db::pool_from_url(&format!("{base}?sslmode=disable"), 1).expect("pool");
    let e = match plain.get().await {
        Err(deadpool_postgres::PoolError::Backend(e)) => e,
        other => panic!("plaintext login was not refused by the server: {:?}", other.map(|_| ())),
    };
    assert_eq!(sqlstate(&e), Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION.code()), "{e:?}");
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(message.contains("no encryption"), "{message}");

    // TLS without the cluster's CA (Mozilla's roots only): the server is not trusted.
    let untrusted = db::pool_from_url(&format!("{base}?sslmode=require"), 1).expect("pool");
    let e = match untrusted.get().await {
        Err(deadpool_postgres::PoolError::Backend(e)) => e,
        other => panic!("an unverifiable server was accepted: {:?}", other.map(|_| ())),
    };
    assert!(e.as_db_error().is_none(), "refused by the client, before any login: {e:?}");
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    // Either way the caller sees "database unavailable" (retriable), not a bug.
    assert!(DbFault::from(deadpool_postgres::PoolError::Backend(e)).is_retriable());
}

/// A login role of the runtime group with its own password (so rotating it disturbs no other
/// test), and the deployed configuration reading it from the emulator's Secrets Manager.
struct SecretRole {
    db: TestDb,
    aws: TestAws,
    role: String,
    secret_name: String,
    secret_arn: String,
    secrets: aws_sdk_secretsmanager::Client,
}

impl SecretRole {
    async fn new(password_in_secret: Option<&str>) -> SecretRole {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let role = format!("hf_test_role_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let password = Uuid::new_v4().simple().to_string();
        let admin = db.admin_pool();
        admin
            .get()
            .await
            .expect("admin conn")
            .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {RUNTIME_GROUP}"))
            .await
            .expect("create role");
        let secrets = aws_sdk_secretsmanager::Client::new(&aws.sdk);
        let value = Self::secret_json(&role, password_in_secret.unwrap_or(&password));
        let secret_name = aws.name("db");
        let out = secrets.create_secret().name(&secret_name).secret_string(value).send().await.expect("secret");
        let secret_arn = out.arn().expect("arn").to_string();
        SecretRole { db, aws, role, secret_name, secret_arn, secrets }
    }

    fn secret_json(user: &str, password: &str) -> String {
        serde_json::json!({ "username": user, "password": password, "engine": "postgres" }).to_string()
    }

    /// The configuration the template gives a function: host, port, database, secret ARN and
    /// CA file; no URL, no password. Straight to PostgreSQL: this test's login role is not in
    /// the local PgBouncer's auth file (in AWS, RDS Proxy reads the same secret).
    fn config(&self) -> Config {
        let (pg, _) = db::parse_url(&self.db.direct_url(), tokio_postgres::config::SslMode::Require).expect("url");
        let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
        let vars: HashMap<&str, String> = HashMap::from([
            ("HOLDFAST_ENV", "dev".to_string()),
            ("DATABASE_HOST", "127.0.0.1".to_string()),
            ("DATABASE_PORT", port),
            ("DATABASE_NAME", self.db.name.clone()),
            // The template passes the ARN; the emulator resolves only names through SSM's
            // /aws/reference/secretsmanager/ path (it splits the parameter name at ':'), so the
            // secret's name stands in for it. The code path is the same.
            ("DATABASE_SECRET_ARN", self.secret_name.clone()),
            ("DATABASE_POOL_SIZE", "1".to_string()),
            ("HOLDFAST_PG_CA_FILE", holdfast_tests::ca_file()),
            ("HOLDFAST_SSM_PREFIX", format!("/{}/dev", self.aws.prefix)),
        ]);
        let cfg = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        assert!(matches!(cfg.database, DatabaseSource::Secret { .. }));
        cfg
    }

    async fn drop_role(self) {
        let admin = self.db.admin_pool();
        let c = admin.get().await.expect("admin conn");
        c.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", &[&self.role])
            .await
            .expect("terminate");
        c.batch_execute(&format!("DROP ROLE {}", self.role)).await.expect("drop role");
    }
}

#[tokio::test]
async fn a_rotated_password_is_read_again_and_the_same_pool_reconnects() {
    let t = SecretRole::new(None).await;
    let ssm = aws_sdk_ssm::Client::new(&t.aws.sdk);
    let pool = db::pool_from_config(&t.config(), &ssm).await.expect("pool, the deployed way");
    let c = pool.get().await.expect("connect with the secret");
    let row = c
        .fetch_one("SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("query");
    assert_eq!((row.get::<_, String>(0), row.get::<_, bool>(1)), (t.role.clone(), true));

    // Rotation, as Secrets Manager's single-user rotation does it: new password on the role,
    // then the secret's new value.
    let rotated = Uuid::new_v4().simple().to_string();
    let admin = t.db.admin_pool();
    let a = admin.get().await.expect("admin conn");
    a.batch_execute(&format!("ALTER ROLE {} PASSWORD '{rotated}'", t.role)).await.expect("alter role");
    t.secrets
        .put_secret_value()
        .secret_id(&t.secret_arn)
        .secret_string(SecretRole::secret_json(&t.role, &rotated))
        .send()
        .await
        .expect("update secret");
    // The open session is unaffected by the rotation; end it, so the pool must log in again.
    let pid: i32 = c.fetch_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
    a.run("SELECT pg_terminate_backend($1)", &[&pid]).await.expect("terminate");
    wait_for("the client to see its session end", Duration::from_secs(5), || async { c.is_closed().then_some(()) })
        .await;
    drop(c);

    // The next query on the same pool: the cached password fails (28P01), the secret is read
    // again, the new password logs in.
    let c = pool.get().await.expect("the same pool reconnects after the rotation");
    let user: String = c.fetch_one("SELECT current_user::text", &[]).await.expect("query").get(0);
    assert_eq!(user, t.role);
    drop(c);
    drop(pool);
    t.drop_role().await;
}

#[tokio::test]
async fn a_wrong_secret_is_a_retriable_503_not_a_panic() {
    let t = SecretRole::new(Some("not-the-password")).await;
    let cfg = t.config();
    // The pool itself, as every function builds it: the login is refused even after the
    // re-read, and that is "database unavailable", retriable.
    let ssm = aws_sdk_ssm::Client::new(&t.aws.sdk);
    let pool = db::pool_from_config(&cfg, &ssm).await.expect("the secret reads and parses");
    let e = pool.get().await.map(|_| ()).expect_err("the wrong password is refused");
    if let deadpool_postgres::PoolError::Backend(e) = &e {
        assert_eq!(sqlstate(e), Some(SqlState::INVALID_PASSWORD.code()), "{e:?}");
    }
    let fault = DbFault::from(e);
    assert_eq!(fault, DbFault::Unavailable);
    assert!(fault.is_retriable());
    // Through the holds API, built the deployed way: a 503 with Retry-After.
    let svc = holds_api::build(&cfg).await.expect("a cold start does not need the database");
    let body = serde_json::json!({ "party_size": 2, "start": "2030-01-07T19:00:00Z" }).to_string();
    let path = format!("/restaurants/{}/quotes", Uuid::new_v4());
    let resp = holds_api::api::handle(&svc, api_request("POST", &path, &body, Some("ada"), &[])).await;
    assert!(resp.headers().get("retry-after").is_some());
    let (status, v) = response_json(resp);
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("database_unavailable")), "{v}");
    t.drop_role().await;
}
