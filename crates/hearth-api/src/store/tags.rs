//! Template tags: `name:tag` names one ready build of a template.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreResult, TagRecord, now_ms};

fn tag(row: &AnyRow) -> StoreResult<TagRecord> {
    Ok(TagRecord {
        template_id: row.try_get("template_id")?,
        tag: row.try_get("tag")?,
        build_id: row.try_get("build_id")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Points `tag` at `build_id` (moving it if it pointed elsewhere).
pub(super) async fn put_tag(
    tx: &mut Transaction<'_, Any>,
    template_id: &str,
    tag: &str,
    build_id: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (template_id, tag) DO UPDATE SET build_id = $3, created_at = $4",
    )
    .bind(template_id)
    .bind(tag)
    .bind(build_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn tag(&self, template_id: &str, name: &str) -> StoreResult<Option<TagRecord>> {
        sqlx::query("SELECT * FROM template_tags WHERE template_id = $1 AND tag = $2")
            .bind(template_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tag)
            .transpose()
    }

    pub async fn tags_of(&self, template_id: &str) -> StoreResult<Vec<TagRecord>> {
        sqlx::query("SELECT * FROM template_tags WHERE template_id = $1 ORDER BY tag")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tag)
            .collect()
    }

    /// Points every one of `tags` at `build_id`.
    pub async fn put_tags(
        &self,
        template_id: &str,
        tags: &[String],
        build_id: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for name in tags {
            put_tag(&mut tx, template_id, name, build_id, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_tags(&self, template_id: &str, tags: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for name in tags {
            sqlx::query("DELETE FROM template_tags WHERE template_id = $1 AND tag = $2")
                .bind(template_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
