//! Template builds: their status, shape, node and failure reason, and the
//! log lines their node streamed.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{BuildLogRecord, BuildRecord, BuildStatus, Store, StoreError, StoreResult, now_ms};

/// What a ready build runs with, as its node reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildShape {
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub envd_version: String,
}

/// How a log level ranks, for "this level and above".
pub fn severity(level: &str) -> i64 {
    match level {
        "debug" => 0,
        "warn" => 2,
        "error" => 3,
        _ => 1,
    }
}

fn build(row: &AnyRow) -> StoreResult<BuildRecord> {
    let status: String = row.try_get("status")?;
    let tags: String = row.try_get("tags")?;
    Ok(BuildRecord {
        build_id: row.try_get("build_id")?,
        template_id: row.try_get("template_id")?,
        team_id: row.try_get("team_id")?,
        status: BuildStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            what: "build status",
            detail: status.clone(),
        })?,
        started: row.try_get::<i64, _>("started")? != 0,
        tags: serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt {
            what: "build tags",
            detail: e.to_string(),
        })?,
        cpu_count: row.try_get("cpu_count")?,
        memory_mb: row.try_get("memory_mb")?,
        disk_size_mb: row.try_get("disk_size_mb")?,
        envd_version: row.try_get("envd_version")?,
        node: row.try_get("node")?,
        reason_message: row.try_get("reason_message")?,
        reason_step: row.try_get("reason_step")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn log_entry(row: &AnyRow) -> StoreResult<BuildLogRecord> {
    Ok(BuildLogRecord {
        timestamp: row.try_get("logged_at")?,
        level: row.try_get("level")?,
        message: row.try_get("message")?,
        step: row.try_get("step")?,
    })
}

impl Store {
    /// Records a requested build (status `waiting`). With `new_alias`, the
    /// template is new: its row and its name are added with it, unless the
    /// name was taken meanwhile (then nothing is written and this is
    /// `false`). For an existing template, its builds that were requested
    /// but never started are superseded, as E2B does.
    pub async fn register_build(
        &self,
        new_alias: Option<&str>,
        record: &BuildRecord,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let tags = serde_json::to_string(&record.tags).map_err(|e| StoreError::Corrupt {
            what: "build tags",
            detail: e.to_string(),
        })?;
        let mut tx = self.pool.begin().await?;
        if let Some(alias) = new_alias {
            sqlx::query(
                "INSERT INTO templates (template_id, team_id, public, build_id, cpu_count,
                    memory_mb, disk_size_mb, envd_version, created_at, updated_at, spawn_count)
                 VALUES ($1, $2, 0, '', $3, $4, 0, '', $5, $5, 0)",
            )
            .bind(&record.template_id)
            .bind(&record.team_id)
            .bind(record.cpu_count)
            .bind(record.memory_mb)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let claimed = sqlx::query(
                "INSERT INTO template_aliases (alias, template_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(alias)
            .bind(&record.template_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        } else {
            sqlx::query(
                "UPDATE template_builds SET status = 'error', reason_message = $1,
                    updated_at = $2, finished_at = $2
                 WHERE template_id = $3 AND status = 'waiting' AND started = 0",
            )
            .bind("The build was canceled because it was superseded by a newer one.")
            .bind(now)
            .bind(&record.template_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO template_builds (build_id, template_id, team_id, status, started, tags,
                cpu_count, memory_mb, disk_size_mb, envd_version, node, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(&record.build_id)
        .bind(&record.template_id)
        .bind(&record.team_id)
        .bind(record.status.as_str())
        .bind(i64::from(record.started))
        .bind(tags)
        .bind(record.cpu_count)
        .bind(record.memory_mb)
        .bind(record.disk_size_mb)
        .bind(&record.envd_version)
        .bind(&record.node)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn build(&self, build_id: &str) -> StoreResult<Option<BuildRecord>> {
        sqlx::query("SELECT * FROM template_builds WHERE build_id = $1")
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(build)
            .transpose()
    }

    /// A template's builds, newest first, from after `after` (the
    /// `(created_at, build_id)` of the last one of the previous page).
    pub async fn builds_of(
        &self,
        template_id: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<BuildRecord>> {
        let (at, id) = after.unwrap_or((i64::MAX, ""));
        sqlx::query(
            "SELECT * FROM template_builds WHERE template_id = $1
                AND (created_at < $2 OR (created_at = $2 AND build_id < $3) OR $3 = '')
             ORDER BY created_at DESC, build_id DESC LIMIT $4",
        )
        .bind(template_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(build)
        .collect()
    }

    pub async fn count_builds(&self, template_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM template_builds WHERE template_id = $1")
            .bind(template_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Accepts a build's start on `node`: only once, and only while it waits.
    pub async fn claim_build_start(&self, build_id: &str, node: &str) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE template_builds SET started = 1, node = $1, updated_at = $2
             WHERE build_id = $3 AND status = 'waiting' AND started = 0",
        )
        .bind(node)
        .bind(now_ms())
        .bind(build_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// A started build got its build slot; `false` if it ended meanwhile.
    pub async fn mark_building(&self, build_id: &str) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE template_builds SET status = 'building', updated_at = $1
             WHERE build_id = $2 AND status = 'waiting' AND started = 1",
        )
        .bind(now_ms())
        .bind(build_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// A build finished: it becomes ready and its template's current build
    /// (row, shape and envd version), and its tags point at it.
    pub async fn finish_build_ready(
        &self,
        build_id: &str,
        shape: &BuildShape,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE template_builds SET status = 'ready', cpu_count = $1, memory_mb = $2,
                disk_size_mb = $3, envd_version = $4, updated_at = $5, finished_at = $5
             WHERE build_id = $6 AND status = 'building'",
        )
        .bind(shape.cpu_count)
        .bind(shape.memory_mb)
        .bind(shape.disk_size_mb)
        .bind(&shape.envd_version)
        .bind(now)
        .bind(build_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let row = sqlx::query("SELECT * FROM template_builds WHERE build_id = $1")
            .bind(build_id)
            .fetch_one(&mut *tx)
            .await?;
        let record = build(&row)?;
        sqlx::query(
            "UPDATE templates SET build_id = $1, cpu_count = $2, memory_mb = $3,
                disk_size_mb = $4, envd_version = $5, updated_at = $6
             WHERE template_id = $7",
        )
        .bind(build_id)
        .bind(shape.cpu_count)
        .bind(shape.memory_mb)
        .bind(shape.disk_size_mb)
        .bind(&shape.envd_version)
        .bind(now)
        .bind(&record.template_id)
        .execute(&mut *tx)
        .await?;
        for tag in &record.tags {
            super::tags::put_tag(&mut tx, &record.template_id, tag, build_id, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A build failed (or was cancelled); `false` if it had ended already.
    pub async fn finish_build_error(
        &self,
        build_id: &str,
        message: &str,
        step: Option<&str>,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE template_builds SET status = 'error', reason_message = $1, reason_step = $2,
                updated_at = $3, finished_at = $3
             WHERE build_id = $4 AND status IN ('waiting', 'building')",
        )
        .bind(message)
        .bind(step)
        .bind(now)
        .bind(build_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Ends with `message` every build that a previous control plane
    /// started on one of `nodes` and never saw finish.
    pub async fn interrupt_builds(&self, nodes: &[String], message: &str) -> StoreResult<u64> {
        if nodes.is_empty() {
            return Ok(0);
        }
        let placeholders: Vec<String> = (0..nodes.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE template_builds SET status = 'error', reason_message = $1,
                updated_at = $2, finished_at = $2
             WHERE started = 1 AND status IN ('waiting', 'building') AND node IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(message).bind(now_ms());
        for node in nodes {
            query = query.bind(node);
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// Appends log lines numbered from `first_seq`, in one transaction.
    pub async fn append_build_logs(
        &self,
        build_id: &str,
        first_seq: i64,
        entries: &[BuildLogRecord],
    ) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (seq, entry) in (first_seq..).zip(entries) {
            sqlx::query(
                "INSERT INTO template_build_logs (build_id, seq, logged_at, severity, level,
                    message, step)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(build_id)
            .bind(seq)
            .bind(entry.timestamp)
            .bind(severity(&entry.level))
            .bind(&entry.level)
            .bind(&entry.message)
            .bind(&entry.step)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Log lines at `min_level` and above, in order: `limit` from the
    /// `offset`-th.
    pub async fn build_logs(
        &self,
        build_id: &str,
        min_level: &str,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Vec<BuildLogRecord>> {
        sqlx::query(
            "SELECT * FROM template_build_logs WHERE build_id = $1 AND severity >= $2
             ORDER BY seq LIMIT $3 OFFSET $4",
        )
        .bind(build_id)
        .bind(severity(min_level))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(log_entry)
        .collect()
    }

    /// Log lines at `min_level` and above from the time `cursor` (Unix ms):
    /// forward the oldest first from it, backward the newest first up to it.
    pub async fn build_logs_at(
        &self,
        build_id: &str,
        min_level: &str,
        cursor: Option<i64>,
        forward: bool,
        limit: i64,
    ) -> StoreResult<Vec<BuildLogRecord>> {
        let sql = if forward {
            "SELECT * FROM template_build_logs WHERE build_id = $1 AND severity >= $2
                AND logged_at >= $3 ORDER BY seq LIMIT $4"
        } else {
            "SELECT * FROM template_build_logs WHERE build_id = $1 AND severity >= $2
                AND logged_at <= $3 ORDER BY seq DESC LIMIT $4"
        };
        let cursor = cursor.unwrap_or(if forward { i64::MIN } else { i64::MAX });
        sqlx::query(sql)
            .bind(build_id)
            .bind(severity(min_level))
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(log_entry)
            .collect()
    }
}
