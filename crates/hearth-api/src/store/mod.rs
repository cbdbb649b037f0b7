//! The control plane's state: teams, API keys, templates (with their
//! builds, build logs and tags) and running sandboxes, in SQLite (one file, the default) or PostgreSQL (cluster
//! mode). One SQL dialect serves both: portable types (TEXT, BIGINT), `$n`
//! placeholders, times as Unix milliseconds.

mod builds;
mod migrations;
mod records;
mod sandboxes;
mod snapshots;
mod tags;
mod teams;
mod templates;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use builds::{BuildShape, severity};
pub use records::{
    ApiKeyRecord, BuildLogRecord, BuildRecord, BuildStatus, SandboxRecord, TagRecord, TeamRecord,
    TemplateRecord,
};
pub use snapshots::{NewSnapshot, SnapshotFilter, SnapshotRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("'{0}' is not a database URL hearth supports (sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("no randomness from the OS: {0}")]
    Random(#[from] getrandom::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which database a store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating it when it is a missing SQLite file) the database at
    /// `url` and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    // A writer waits for the one before it instead of failing.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                // WAL lets readers run beside the writer; the mode is kept in
                // the file, so setting it once is enough.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await?;
                pool
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .connect(url)
                    .await?
            }
        };
        let store = Self { pool, backend };
        migrations::apply(&store.pool, backend).await?;
        Ok(store)
    }

    /// The SQLite database file at `path`, created when missing.
    pub async fn open_sqlite_file(path: &std::path::Path) -> StoreResult<Self> {
        Self::open(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
