//! Running sandboxes: which team owns each, which node runs it, and when
//! it ends.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SandboxRecord, Store, StoreError, StoreResult, now_ms};

/// The `state` column's values.
const RUNNING: &str = "running";
const PAUSED: &str = "paused";
/// The `auto_pause` column's values.
const AUTO_PAUSE_NONE: i64 = 0;
const AUTO_PAUSE_MEMORY: i64 = 1;
const AUTO_PAUSE_FILESYSTEM: i64 = 2;

fn sandbox(row: &AnyRow) -> StoreResult<SandboxRecord> {
    let corrupt = |what, error: serde_json::Error| StoreError::Corrupt {
        what,
        detail: error.to_string(),
    };
    let network: String = row.try_get("network")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(SandboxRecord {
        sandbox_id: row.try_get("sandbox_id")?,
        team_id: row.try_get("team_id")?,
        template_id: row.try_get("template_id")?,
        alias: row.try_get("alias")?,
        build_id: row.try_get("build_id")?,
        node: row.try_get("node")?,
        client_id: row.try_get("client_id")?,
        host_address: row.try_get("host_address")?,
        envd_version: row.try_get("envd_version")?,
        envd_access_token: row.try_get("envd_access_token")?,
        traffic_access_token: row.try_get("traffic_access_token")?,
        allow_internet: row.try_get::<i64, _>("allow_internet")? != 0,
        network: serde_json::from_str(&network).map_err(|e| corrupt("sandbox network", e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("sandbox metadata", e))?,
        cpu_count: row.try_get("cpu_count")?,
        memory_mb: row.try_get("memory_mb")?,
        disk_size_mb: row.try_get("disk_size_mb")?,
        started_at: row.try_get("started_at")?,
        end_at: row.try_get("end_at")?,
        paused: row.try_get::<String, _>("state")? == PAUSED,
        paused_memory: row.try_get::<i64, _>("paused_memory")? != 0,
        auto_pause: row.try_get::<i64, _>("auto_pause")? != AUTO_PAUSE_NONE,
        auto_pause_memory: row.try_get::<i64, _>("auto_pause")? != AUTO_PAUSE_FILESYSTEM,
        auto_resume_secs: Some(row.try_get::<i64, _>("auto_resume_secs")?).filter(|s| *s > 0),
    })
}

impl Store {
    pub async fn insert_sandbox(&self, record: &SandboxRecord) -> StoreResult<()> {
        let metadata =
            serde_json::to_string(&record.metadata).map_err(|e| StoreError::Corrupt {
                what: "sandbox metadata",
                detail: e.to_string(),
            })?;
        sqlx::query(
            "INSERT INTO sandboxes (sandbox_id, team_id, template_id, alias, build_id, node,
                client_id, host_address, envd_version, envd_access_token, traffic_access_token,
                allow_internet, network, metadata, cpu_count, memory_mb, disk_size_mb,
                started_at, end_at, state, auto_pause, auto_resume_secs, paused_memory)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $17, $18, $19, $20, $21, $22, $23)",
        )
        .bind(&record.sandbox_id)
        .bind(&record.team_id)
        .bind(&record.template_id)
        .bind(&record.alias)
        .bind(&record.build_id)
        .bind(&record.node)
        .bind(&record.client_id)
        .bind(&record.host_address)
        .bind(&record.envd_version)
        .bind(&record.envd_access_token)
        .bind(&record.traffic_access_token)
        .bind(i64::from(record.allow_internet))
        .bind(record.network.to_string())
        .bind(metadata)
        .bind(record.cpu_count)
        .bind(record.memory_mb)
        .bind(record.disk_size_mb)
        .bind(record.started_at)
        .bind(record.end_at)
        .bind(if record.paused { PAUSED } else { RUNNING })
        .bind(match (record.auto_pause, record.auto_pause_memory) {
            (false, _) => AUTO_PAUSE_NONE,
            (true, true) => AUTO_PAUSE_MEMORY,
            (true, false) => AUTO_PAUSE_FILESYSTEM,
        })
        .bind(record.auto_resume_secs.unwrap_or(0))
        .bind(i64::from(record.paused_memory))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn sandbox(&self, sandbox_id: &str) -> StoreResult<Option<SandboxRecord>> {
        sqlx::query("SELECT * FROM sandboxes WHERE sandbox_id = $1")
            .bind(sandbox_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(sandbox)
            .transpose()
    }

    /// A team's sandboxes, newest first.
    pub async fn sandboxes_of(&self, team_id: &str) -> StoreResult<Vec<SandboxRecord>> {
        sqlx::query(
            "SELECT * FROM sandboxes WHERE team_id = $1 ORDER BY started_at DESC, sandbox_id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(sandbox)
        .collect()
    }

    /// Every sandbox on `node`.
    pub async fn sandboxes_on(&self, node: &str) -> StoreResult<Vec<SandboxRecord>> {
        sqlx::query("SELECT * FROM sandboxes WHERE node = $1")
            .bind(node)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sandbox)
            .collect()
    }

    pub async fn count_sandboxes_of(&self, team_id: &str) -> StoreResult<i64> {
        // Paused ones hold no VM: the concurrency limit is for running ones.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sandboxes WHERE team_id = $1 AND state = 'running'",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// How many sandboxes there are, by team, template and state.
    pub async fn count_sandboxes_by_kind(&self) -> StoreResult<Vec<SandboxCount>> {
        let rows = sqlx::query(
            "SELECT team_id, template_id, state, COUNT(*) AS n FROM sandboxes \
             GROUP BY team_id, template_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SandboxCount {
                    team_id: row.try_get("team_id")?,
                    template_id: row.try_get("template_id")?,
                    state: row.try_get("state")?,
                    count: row.try_get("n")?,
                })
            })
            .collect()
    }

    /// Running sandboxes whose end time is at or before `now_ms` (a paused
    /// one has no end until it is resumed).
    pub async fn sandboxes_ended(&self, now_ms: i64) -> StoreResult<Vec<SandboxRecord>> {
        sqlx::query("SELECT * FROM sandboxes WHERE end_at <= $1 AND state = 'running'")
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sandbox)
            .collect()
    }

    /// Deletes the row if it is still past its end at `now_ms`; whether it
    /// did (the caller then owns killing the VM).
    pub async fn claim_ended(&self, sandbox_id: &str, now_ms: i64) -> StoreResult<bool> {
        self.end_sandbox(
            "DELETE FROM sandboxes WHERE sandbox_id = $1 AND end_at <= $2 AND state = 'running' \
             RETURNING team_id, node",
            sandbox_id,
            Some(now_ms),
        )
        .await
    }

    /// Deletes a sandbox's row with `delete` (which returns its team and
    /// node) and remembers it in `ended_sandboxes`, in one transaction; the
    /// remembered ones older than [`ENDED_KEPT_MS`] go. Whether a row went.
    async fn end_sandbox(
        &self,
        delete: &str,
        sandbox_id: &str,
        now: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let mut query = sqlx::query(delete).bind(sandbox_id);
        if let Some(now) = now {
            query = query.bind(now);
        }
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            return Ok(false);
        };
        let (team_id, node): (String, String) = (row.try_get("team_id")?, row.try_get("node")?);
        let ended_at = now_ms();
        sqlx::query(
            "INSERT INTO ended_sandboxes (sandbox_id, team_id, node, ended_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (sandbox_id) DO UPDATE \
             SET team_id = excluded.team_id, node = excluded.node, ended_at = excluded.ended_at",
        )
        .bind(sandbox_id)
        .bind(team_id)
        .bind(node)
        .bind(ended_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ended_sandboxes WHERE ended_at < $1")
            .bind(ended_at - ENDED_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The team and node of a sandbox that ended in the last
    /// [`ENDED_KEPT_MS`].
    pub async fn ended_sandbox(&self, sandbox_id: &str) -> StoreResult<Option<EndedSandbox>> {
        let row = sqlx::query(
            "SELECT team_id, node FROM ended_sandboxes WHERE sandbox_id = $1 AND ended_at >= $2",
        )
        .bind(sandbox_id)
        .bind(now_ms() - ENDED_KEPT_MS)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(EndedSandbox {
                team_id: row.try_get("team_id")?,
                node: row.try_get("node")?,
            })
        })
        .transpose()
    }

    /// The ids of every sandbox.
    pub async fn sandbox_ids(&self) -> StoreResult<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT sandbox_id FROM sandboxes")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("sandbox_id")?))
            .collect()
    }

    /// Whether the sandbox existed.
    pub async fn set_sandbox_end(&self, sandbox_id: &str, end_at: i64) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE sandboxes SET end_at = $1 WHERE sandbox_id = $2")
            .bind(end_at)
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(updated > 0)
    }

    /// Whether the sandbox existed.
    pub async fn set_sandbox_network(
        &self,
        sandbox_id: &str,
        allow_internet: bool,
        network: &serde_json::Value,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE sandboxes SET allow_internet = $1, network = $2 WHERE sandbox_id = $3",
        )
        .bind(i64::from(allow_internet))
        .bind(network.to_string())
        .bind(sandbox_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Marks a running sandbox paused, with its memory or only its
    /// filesystem; false when there is no running sandbox of that id.
    pub async fn mark_paused(&self, sandbox_id: &str, memory: bool) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE sandboxes SET state = 'paused', paused_memory = $1
             WHERE sandbox_id = $2 AND state = 'running'",
        )
        .bind(i64::from(memory))
        .bind(sandbox_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Claims a running sandbox past its end at `now_ms` for an auto-pause:
    /// marks it paused; whether it did (the caller then pauses it).
    pub async fn claim_for_pause(&self, sandbox_id: &str, now_ms: i64) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE sandboxes
             SET state = 'paused', paused_memory = CASE WHEN auto_pause = $1 THEN 0 ELSE 1 END
             WHERE sandbox_id = $2 AND end_at <= $3 AND state = 'running' AND auto_pause <> 0",
        )
        .bind(AUTO_PAUSE_FILESYSTEM)
        .bind(sandbox_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Takes back a claim for a pause that did not happen.
    pub async fn unclaim_pause(&self, sandbox_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sandboxes SET state = 'running' WHERE sandbox_id = $1")
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a paused sandbox running again, where its node now reaches it
    /// and until when; false when there is no paused sandbox of that id.
    pub async fn mark_resumed(
        &self,
        sandbox_id: &str,
        host_address: &str,
        end_at: i64,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE sandboxes SET state = 'running', host_address = $1, end_at = $2
             WHERE sandbox_id = $3 AND state = 'paused'",
        )
        .bind(host_address)
        .bind(end_at)
        .bind(sandbox_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Whether the sandbox existed.
    pub async fn delete_sandbox(&self, sandbox_id: &str) -> StoreResult<bool> {
        self.end_sandbox(
            "DELETE FROM sandboxes WHERE sandbox_id = $1 RETURNING team_id, node",
            sandbox_id,
            None,
        )
        .await
    }
}

/// How long an ended sandbox is remembered (its logs readable): a node's
/// default log retention.
pub const ENDED_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// Whose a sandbox that ended was, and where it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSandbox {
    pub team_id: String,
    pub node: String,
}

/// Sandboxes of one team, template and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCount {
    pub team_id: String,
    pub template_id: String,
    pub state: String,
    pub count: i64,
}
