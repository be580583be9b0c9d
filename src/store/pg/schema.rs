//! The PostgreSQL schema and its migrations: numbered steps applied in order at start-up, in
//! one transaction under an advisory lock (replicas starting together do not race). A database
//! whose schema is newer than this build's is refused: an older build would ignore what it does
//! not know.

use postgres::Client;

use crate::ports::StoreError;

/// The schema this build writes.
pub const VERSION: i64 = 2;

/// Migration `n` (1-based) takes a database from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema (docs/replicas.md).
    r#"
    CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
    CREATE TABLE incidents (id int8 PRIMARY KEY, body text NOT NULL);
    CREATE TABLE events (
        incident int8 NOT NULL, seq int4 NOT NULL, body text NOT NULL,
        PRIMARY KEY (incident, seq));
    CREATE TABLE fingerprints (fingerprint text COLLATE "C" PRIMARY KEY, incident int8 NOT NULL);
    CREATE TABLE outbox (
        sink text COLLATE "C" NOT NULL, seq int8 NOT NULL, incident int8 NOT NULL,
        body text NOT NULL, PRIMARY KEY (sink, seq));
    CREATE TABLE outbox_dead (
        sink text COLLATE "C" NOT NULL, seq int8 NOT NULL, record text NOT NULL,
        PRIMARY KEY (sink, seq));
    CREATE TABLE timers (incident int8 PRIMARY KEY, body text NOT NULL);
    CREATE TABLE executions (
        key text COLLATE "C" PRIMARY KEY, incident int8 NOT NULL, status text NOT NULL,
        term int8 NOT NULL, body text NOT NULL);
    CREATE INDEX executions_incident ON executions (incident, key);
    CREATE INDEX executions_status ON executions (status);
    CREATE TABLE history (
        fingerprint text COLLATE "C" NOT NULL, id int8 NOT NULL, body text NOT NULL,
        PRIMARY KEY (fingerprint, id));
    CREATE TABLE threads (
        sink text COLLATE "C" NOT NULL, incident int8 NOT NULL, body text NOT NULL,
        PRIMARY KEY (sink, incident));
    CREATE TABLE thread_index (
        sink text COLLATE "C" NOT NULL, channel text COLLATE "C" NOT NULL,
        message_id text COLLATE "C" NOT NULL, incident int8 NOT NULL,
        PRIMARY KEY (sink, channel, message_id));
    CREATE TABLE chat_cursors (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
    CREATE SEQUENCE outbox_seq INCREMENT BY 1024 MINVALUE 1 START 1;
    CREATE TABLE lease (
        id int4 PRIMARY KEY CHECK (id = 1), holder text NOT NULL, term int8 NOT NULL,
        expires_at timestamptz NOT NULL);
    INSERT INTO lease (id, holder, term, expires_at) VALUES (1, '', 0, '-infinity');
    "#,
    // 2: the journal: one row per group commit holding its timeline events and its
    // fingerprint and timer changes, folded into their tables later (docs/replicas.md).
    // `lo`..`hi`: the incidents with events in it (`lo > hi`: none); `n`: changes in it.
    r#"
    CREATE TABLE journal (
        seq bigserial PRIMARY KEY, lo int8 NOT NULL, hi int8 NOT NULL, n int4 NOT NULL,
        events text, deltas text);
    -- A row holds a whole commit's changes (100+ KiB in a storm): stored out of line as it is,
    -- not compressed on the writer's path first.
    ALTER TABLE journal ALTER COLUMN events SET STORAGE EXTERNAL,
        ALTER COLUMN deltas SET STORAGE EXTERNAL;
    "#,
];

/// An arbitrary, fixed advisory lock key for migrations ("incidentd" in ASCII, cut to 8 bytes).
const MIGRATION_LOCK: i64 = 0x696e_6369_6465_6e74;

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Storage(format!("PostgreSQL: {e}"))
}

/// Brings the database to [`VERSION`], or refuses a newer one. Returns the version found.
pub fn migrate(client: &mut Client) -> Result<i64, StoreError> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .map_err(pg)?
        .get(0);
    let found: i64 = if has_meta {
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .map_err(pg)?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    if found > VERSION {
        return Err(StoreError::Storage(format!(
            "the database has schema version {found}; this build knows up to {VERSION}: \
             run a newer incidentd (or restore an export into an empty database)"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&(n as i64 + 1).to_string()],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)?;
    Ok(found)
}
