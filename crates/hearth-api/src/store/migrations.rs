//! The schema, as numbered steps applied once each, in order, at start.

use sqlx::{AnyConnection, AnyPool, Connection};

use super::{Backend, StoreResult};

/// Each step is a list of statements; a step never changes once released.
const STEPS: &[&[&str]] = &[
    TEAMS_KEYS_TEMPLATES_SANDBOXES,
    TEMPLATE_BUILDS,
    SANDBOX_STATE,
    SANDBOX_AUTO_RESUME,
    SNAPSHOTS,
    SANDBOX_PAUSE_KIND,
    ENDED_SANDBOXES,
];

/// Sandboxes that ended, for as long as their node keeps their logs: whose
/// they were and on which node, so that only their team reads those logs.
const ENDED_SANDBOXES: &[&str] = &[
    "CREATE TABLE ended_sandboxes (
        sandbox_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        node TEXT NOT NULL,
        ended_at BIGINT NOT NULL
    )",
    "CREATE INDEX ended_sandboxes_at ON ended_sandboxes (ended_at)",
];

/// Whether a paused sandbox kept its memory (1) or only its filesystem (0):
/// traffic does not resume the latter (it would boot again).
const SANDBOX_PAUSE_KIND: &[&str] =
    &["ALTER TABLE sandboxes ADD COLUMN paused_memory BIGINT NOT NULL DEFAULT 1"];

/// Snapshots of sandboxes: templates that say which sandbox they were.
const SNAPSHOTS: &[&str] = &[
    "CREATE TABLE snapshots (
        snapshot_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        sandbox_id TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE INDEX snapshots_team ON snapshots (team_id, created_at)",
];

/// Paused sandboxes that traffic resumes: for how many seconds (0: none).
const SANDBOX_AUTO_RESUME: &[&str] =
    &["ALTER TABLE sandboxes ADD COLUMN auto_resume_secs BIGINT NOT NULL DEFAULT 0"];

/// Sandboxes can be paused (`state`: `running` or `paused`), and paused
/// rather than killed at their timeout (`auto_pause`: 0 no, 1 with memory,
/// 2 only the filesystem).
const SANDBOX_STATE: &[&str] = &[
    "ALTER TABLE sandboxes ADD COLUMN state TEXT NOT NULL DEFAULT 'running'",
    "ALTER TABLE sandboxes ADD COLUMN auto_pause BIGINT NOT NULL DEFAULT 0",
];

const TEAMS_KEYS_TEMPLATES_SANDBOXES: &[&str] = &[
    "CREATE TABLE teams (
        team_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        max_sandboxes BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        key_suffix TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT
    )",
    "CREATE INDEX api_keys_team ON api_keys (team_id)",
    "CREATE TABLE templates (
        template_id TEXT PRIMARY KEY,
        team_id TEXT,
        public BIGINT NOT NULL,
        build_id TEXT NOT NULL,
        cpu_count BIGINT NOT NULL,
        memory_mb BIGINT NOT NULL,
        disk_size_mb BIGINT NOT NULL,
        envd_version TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_spawned_at BIGINT,
        spawn_count BIGINT NOT NULL
    )",
    "CREATE TABLE template_aliases (
        alias TEXT PRIMARY KEY,
        template_id TEXT NOT NULL
    )",
    "CREATE TABLE sandboxes (
        sandbox_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        template_id TEXT NOT NULL,
        alias TEXT,
        build_id TEXT NOT NULL,
        node TEXT NOT NULL,
        client_id TEXT NOT NULL,
        host_address TEXT NOT NULL,
        envd_version TEXT NOT NULL,
        envd_access_token TEXT,
        traffic_access_token TEXT,
        allow_internet BIGINT NOT NULL,
        network TEXT NOT NULL,
        metadata TEXT NOT NULL,
        cpu_count BIGINT NOT NULL,
        memory_mb BIGINT NOT NULL,
        disk_size_mb BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        end_at BIGINT NOT NULL
    )",
    "CREATE INDEX sandboxes_team ON sandboxes (team_id)",
    "CREATE INDEX sandboxes_end ON sandboxes (end_at)",
];

/// Template builds, their logs and tags. A team's template row keeps its
/// current build (`build_id`, empty until one is ready) and shape.
const TEMPLATE_BUILDS: &[&str] = &[
    "CREATE TABLE template_builds (
        build_id TEXT PRIMARY KEY,
        template_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        status TEXT NOT NULL,
        started BIGINT NOT NULL,
        tags TEXT NOT NULL,
        cpu_count BIGINT NOT NULL,
        memory_mb BIGINT NOT NULL,
        disk_size_mb BIGINT NOT NULL,
        envd_version TEXT NOT NULL,
        node TEXT NOT NULL,
        reason_message TEXT,
        reason_step TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        finished_at BIGINT
    )",
    "CREATE INDEX template_builds_template ON template_builds (template_id, created_at)",
    "CREATE INDEX template_builds_status ON template_builds (status)",
    "CREATE TABLE template_build_logs (
        build_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        logged_at BIGINT NOT NULL,
        severity BIGINT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        step TEXT,
        PRIMARY KEY (build_id, seq)
    )",
    "CREATE TABLE template_tags (
        template_id TEXT NOT NULL,
        tag TEXT NOT NULL,
        build_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (template_id, tag)
    )",
];

/// Any number, the same in every hearth: the PostgreSQL advisory lock that
/// makes control planes starting together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6865_6172_7468;

pub async fn apply(pool: &AnyPool, backend: Backend) -> StoreResult<()> {
    let mut conn = pool.acquire().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let applied = apply_steps(&mut conn).await;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    applied
}

async fn apply_steps(conn: &mut AnyConnection) -> StoreResult<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS hearth_schema (step BIGINT PRIMARY KEY)")
        .execute(&mut *conn)
        .await?;
    for (index, statements) in STEPS.iter().enumerate() {
        let step = i64::try_from(index).unwrap_or(i64::MAX);
        let mut tx = conn.begin().await?;
        let claimed =
            sqlx::query("INSERT INTO hearth_schema (step) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(step)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            continue;
        }
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
