//! Templates the teams may start sandboxes from, and their aliases.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult, TemplateRecord, now_ms};

fn template(row: &AnyRow, aliases: Vec<String>) -> StoreResult<TemplateRecord> {
    Ok(TemplateRecord {
        template_id: row.try_get("template_id")?,
        team_id: row.try_get("team_id")?,
        public: row.try_get::<i64, _>("public")? != 0,
        build_id: row.try_get("build_id")?,
        cpu_count: row.try_get("cpu_count")?,
        memory_mb: row.try_get("memory_mb")?,
        disk_size_mb: row.try_get("disk_size_mb")?,
        envd_version: row.try_get("envd_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_spawned_at: row.try_get("last_spawned_at")?,
        spawn_count: row.try_get("spawn_count")?,
        aliases,
    })
}

impl Store {
    /// Adds the template, or updates its build and shape when it exists
    /// (a node rebuilt it); aliases are added, never taken from another.
    pub async fn put_template(&self, record: &TemplateRecord) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO templates (template_id, team_id, public, build_id, cpu_count, memory_mb,
                disk_size_mb, envd_version, created_at, updated_at, spawn_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 0)
             ON CONFLICT (template_id) DO UPDATE SET build_id = $4, cpu_count = $5,
                memory_mb = $6, disk_size_mb = $7, envd_version = $8, updated_at = $9",
        )
        .bind(&record.template_id)
        .bind(&record.team_id)
        .bind(i64::from(record.public))
        .bind(&record.build_id)
        .bind(record.cpu_count)
        .bind(record.memory_mb)
        .bind(record.disk_size_mb)
        .bind(&record.envd_version)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for alias in &record.aliases {
            sqlx::query(
                "INSERT INTO template_aliases (alias, template_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(alias)
            .bind(&record.template_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn aliases_of(&self, template_id: &str) -> StoreResult<Vec<String>> {
        let rows =
            sqlx::query("SELECT alias FROM template_aliases WHERE template_id = $1 ORDER BY alias")
                .bind(template_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("alias")?))
            .collect()
    }

    /// The template with this id or alias.
    pub async fn template(&self, id_or_alias: &str) -> StoreResult<Option<TemplateRecord>> {
        let row = sqlx::query(
            "SELECT * FROM templates WHERE template_id = $1
             OR template_id = (SELECT template_id FROM template_aliases WHERE alias = $1)
             ORDER BY CASE WHEN template_id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(id_or_alias)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("template_id")?;
        let aliases = self.aliases_of(&id).await?;
        template(&row, aliases).map(Some)
    }

    /// The templates a team may use: its own and the public ones.
    pub async fn templates_for(&self, team_id: &str) -> StoreResult<Vec<TemplateRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM templates WHERE (team_id = $1 OR public = 1)
                AND template_id NOT IN (SELECT snapshot_id FROM snapshots)
             ORDER BY created_at, template_id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        let mut templates = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("template_id")?;
            let aliases = self.aliases_of(&id).await?;
            templates.push(template(row, aliases)?);
        }
        Ok(templates)
    }

    /// Deletes the template with its aliases, builds, build logs and tags;
    /// whether it existed.
    pub async fn delete_template(&self, template_id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM template_aliases WHERE template_id = $1",
            "DELETE FROM template_tags WHERE template_id = $1",
            "DELETE FROM template_build_logs WHERE build_id IN
                (SELECT build_id FROM template_builds WHERE template_id = $1)",
            "DELETE FROM template_builds WHERE template_id = $1",
            "DELETE FROM snapshots WHERE snapshot_id = $1",
        ] {
            sqlx::query(statement)
                .bind(template_id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM templates WHERE template_id = $1")
            .bind(template_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Whether the template existed.
    pub async fn set_template_public(&self, template_id: &str, public: bool) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE templates SET public = $1, updated_at = $2 WHERE template_id = $3")
                .bind(i64::from(public))
                .bind(now_ms())
                .bind(template_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(updated > 0)
    }

    /// How many sandboxes of `team_id` run from the template.
    pub async fn count_sandboxes_from(&self, team_id: &str, template_id: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sandboxes WHERE team_id = $1 AND template_id = $2",
        )
        .bind(team_id)
        .bind(template_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Counts a sandbox started from the template.
    pub async fn template_spawned(&self, template_id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE templates SET spawn_count = spawn_count + 1, last_spawned_at = $1
             WHERE template_id = $2",
        )
        .bind(now_ms())
        .bind(template_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
