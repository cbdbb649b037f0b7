//! Teams and their API keys. A key is shown once, when created; the store
//! keeps only its hash and the few characters needed to recognise it.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{ApiKeyRecord, Store, StoreResult, TeamRecord, now_ms};
use crate::secrets;

/// Characters of a key kept in the clear on each side, for display.
const SHOWN_PREFIX: usize = 6;
const SHOWN_SUFFIX: usize = 4;

fn team(row: &AnyRow) -> StoreResult<TeamRecord> {
    Ok(TeamRecord {
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        max_sandboxes: row.try_get("max_sandboxes")?,
        created_at: row.try_get("created_at")?,
    })
}

fn api_key(row: &AnyRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        key_id: row.try_get("key_id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        key_prefix: row.try_get("key_prefix")?,
        key_suffix: row.try_get("key_suffix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    pub async fn create_team(&self, name: &str, max_sandboxes: i64) -> StoreResult<TeamRecord> {
        self.create_team_with_id(&secrets::uuid(), name, max_sandboxes)
            .await
    }

    /// A team with an ID chosen by the caller (`hearth up`'s default team
    /// keeps its ID across databases, and with it its template build cache).
    pub async fn create_team_with_id(
        &self,
        team_id: &str,
        name: &str,
        max_sandboxes: i64,
    ) -> StoreResult<TeamRecord> {
        let record = TeamRecord {
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            max_sandboxes,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO teams (team_id, name, max_sandboxes, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&record.team_id)
        .bind(&record.name)
        .bind(record.max_sandboxes)
        .bind(record.created_at)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// Sets how many sandboxes a team may run at once; whether it exists.
    pub async fn set_team_max_sandboxes(
        &self,
        team_id: &str,
        max_sandboxes: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE teams SET max_sandboxes = $1 WHERE team_id = $2")
            .bind(max_sandboxes)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn team(&self, team_id: &str) -> StoreResult<Option<TeamRecord>> {
        sqlx::query("SELECT * FROM teams WHERE team_id = $1")
            .bind(team_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(team)
            .transpose()
    }

    pub async fn teams(&self) -> StoreResult<Vec<TeamRecord>> {
        sqlx::query("SELECT * FROM teams ORDER BY created_at, team_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(team)
            .collect()
    }

    /// A new key for `team_id`: the record, and the key itself (not kept).
    pub async fn create_api_key(
        &self,
        team_id: &str,
        name: &str,
    ) -> StoreResult<(ApiKeyRecord, String)> {
        let key = secrets::api_key()?;
        let record = ApiKeyRecord {
            key_id: secrets::uuid(),
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            key_prefix: key[..SHOWN_PREFIX].to_owned(),
            key_suffix: key[key.len() - SHOWN_SUFFIX..].to_owned(),
            created_at: now_ms(),
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (key_id, team_id, name, key_hash, key_prefix, key_suffix, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.key_id)
        .bind(&record.team_id)
        .bind(&record.name)
        .bind(secrets::key_hash(&key))
        .bind(&record.key_prefix)
        .bind(&record.key_suffix)
        .bind(record.created_at)
        .execute(&self.pool)
        .await?;
        Ok((record, key))
    }

    /// The team and key record a presented key belongs to, if any.
    pub async fn authenticate(&self, key: &str) -> StoreResult<Option<(TeamRecord, ApiKeyRecord)>> {
        // Every API request comes through here: one query, not two.
        let Some(row) = sqlx::query(
            "SELECT k.*, t.name AS team_name, t.max_sandboxes, t.created_at AS team_created_at
             FROM api_keys k JOIN teams t ON t.team_id = k.team_id WHERE k.key_hash = $1",
        )
        .bind(secrets::key_hash(key))
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let key = api_key(&row)?;
        let team = TeamRecord {
            team_id: key.team_id.clone(),
            name: row.try_get("team_name")?,
            max_sandboxes: row.try_get("max_sandboxes")?,
            created_at: row.try_get("team_created_at")?,
        };
        Ok(Some((team, key)))
    }

    /// Records that a key was used; called at most once a minute per key.
    pub async fn touch_api_key(&self, key_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_id = $2")
            .bind(now_ms())
            .bind(key_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn api_keys(&self, team_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query("SELECT * FROM api_keys WHERE team_id = $1 ORDER BY created_at, key_id")
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(api_key)
            .collect()
    }

    /// Whether the team had the key.
    pub async fn delete_api_key(&self, team_id: &str, key_id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND key_id = $2")
            .bind(team_id)
            .bind(key_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    /// Whether the team had the key.
    pub async fn rename_api_key(
        &self,
        team_id: &str,
        key_id: &str,
        name: &str,
    ) -> StoreResult<bool> {
        let updated =
            sqlx::query("UPDATE api_keys SET name = $1 WHERE team_id = $2 AND key_id = $3")
                .bind(name)
                .bind(team_id)
                .bind(key_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(updated > 0)
    }
}
