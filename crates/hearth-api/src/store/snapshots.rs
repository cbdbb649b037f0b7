//! Snapshots of sandboxes. Each is a template of its team (a row, a ready
//! build on the node that holds its files, its name as an alias), so that a
//! create names it as any template; the `snapshots` row says it is one and
//! of which sandbox.

use sqlx::Row;

use super::{Store, StoreResult, now_ms};

/// A snapshot as it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Its template id.
    pub snapshot_id: String,
    pub team_id: String,
    pub sandbox_id: String,
    pub build_id: String,
    pub node: String,
    pub name: Option<String>,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub envd_version: String,
}

/// A snapshot as it is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub sandbox_id: String,
    pub names: Vec<String>,
    pub created_at: i64,
}

/// What a listing of snapshots keeps.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter<'a> {
    pub sandbox_id: Option<&'a str>,
    pub name: Option<&'a str>,
    /// Only those after this `(created_at, snapshot_id)`, newest first.
    pub after: Option<(i64, &'a str)>,
}

impl Store {
    /// Writes the snapshot with its template, build and name; `false` (and
    /// nothing written) when its name is taken.
    pub async fn insert_snapshot(&self, s: &NewSnapshot) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO templates (template_id, team_id, public, build_id, cpu_count,
                memory_mb, disk_size_mb, envd_version, created_at, updated_at, spawn_count)
             VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8, $8, 0)",
        )
        .bind(&s.snapshot_id)
        .bind(&s.team_id)
        .bind(&s.build_id)
        .bind(s.cpu_count)
        .bind(s.memory_mb)
        .bind(s.disk_size_mb)
        .bind(&s.envd_version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(name) = &s.name {
            let claimed = sqlx::query(
                "INSERT INTO template_aliases (alias, template_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(&s.snapshot_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO template_builds (build_id, template_id, team_id, status, started, tags,
                cpu_count, memory_mb, disk_size_mb, envd_version, node, created_at, updated_at,
                finished_at)
             VALUES ($1, $2, $3, 'ready', 1, '[]', $4, $5, $6, $7, $8, $9, $9, $9)",
        )
        .bind(&s.build_id)
        .bind(&s.snapshot_id)
        .bind(&s.team_id)
        .bind(s.cpu_count)
        .bind(s.memory_mb)
        .bind(s.disk_size_mb)
        .bind(&s.envd_version)
        .bind(&s.node)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO snapshots (snapshot_id, team_id, sandbox_id, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&s.snapshot_id)
        .bind(&s.team_id)
        .bind(&s.sandbox_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A team's paused sandboxes and snapshots.
    pub async fn count_kept(&self, team_id: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM sandboxes WHERE team_id = $1 AND state = 'paused')
                  + (SELECT COUNT(*) FROM snapshots WHERE team_id = $1) AS kept",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("kept")?)
    }

    /// Whether template `template_id` is a snapshot.
    pub async fn is_snapshot(&self, template_id: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM snapshots WHERE snapshot_id = $1")
                .bind(template_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Up to `limit` of a team's snapshots, newest first.
    pub async fn snapshots_of(
        &self,
        team_id: &str,
        filter: &SnapshotFilter<'_>,
        limit: i64,
    ) -> StoreResult<Vec<SnapshotRecord>> {
        let (after_at, after_id) = filter.after.unwrap_or((0, ""));
        let rows = sqlx::query(
            "SELECT s.snapshot_id, s.sandbox_id, s.created_at FROM snapshots s
             WHERE s.team_id = $1
               AND ($2 = '' OR s.sandbox_id = $2)
               AND ($3 = '' OR EXISTS (SELECT 1 FROM template_aliases a
                    WHERE a.template_id = s.snapshot_id AND a.alias = $3))
               AND ($4 = 0 OR s.created_at < $5 OR (s.created_at = $5 AND s.snapshot_id < $6))
             ORDER BY s.created_at DESC, s.snapshot_id DESC
             LIMIT $7",
        )
        .bind(team_id)
        .bind(filter.sandbox_id.unwrap_or(""))
        .bind(filter.name.unwrap_or(""))
        .bind(i64::from(filter.after.is_some()))
        .bind(after_at)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut snapshots = Vec::with_capacity(rows.len());
        for row in &rows {
            let snapshot_id: String = row.try_get("snapshot_id")?;
            snapshots.push(SnapshotRecord {
                names: self.aliases_of(&snapshot_id).await?,
                snapshot_id,
                sandbox_id: row.try_get("sandbox_id")?,
                created_at: row.try_get("created_at")?,
            });
        }
        Ok(snapshots)
    }
}
