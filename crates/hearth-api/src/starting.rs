//! A team's limit on sandboxes running at once, creates in flight included.
//!
//! Admission and the end of a create are serialised per team: a create is
//! admitted while its team's gate is held (rows counted, creates in flight
//! counted, its own counted), and a successful create writes its row and
//! stops counting as in flight while holding the same gate. So an admission
//! sees every other create either as a row or as in flight, never as
//! neither, and concurrent creates can never pass the limit together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{ApiError, ApiResult};
use crate::store::StoreResult;

/// One team's gate and its creates in flight.
#[derive(Debug, Default)]
struct Team {
    gate: tokio::sync::Mutex<()>,
    in_flight: Mutex<i64>,
}

impl Team {
    fn add(&self, n: i64) {
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    fn in_flight(&self) -> i64 {
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates in flight per team.
#[derive(Debug, Default, Clone)]
pub struct Starting(Arc<Mutex<HashMap<String, Arc<Team>>>>);

/// An admitted create; it counts as in flight until [`Admitted::finish`]
/// or until dropped (a create that failed, which leaves no row).
#[derive(Debug)]
pub struct Admitted {
    team: Arc<Team>,
    counted: bool,
}

impl Starting {
    fn team(&self, team_id: &str) -> Arc<Team> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(team_id.to_owned())
            .or_default()
            .clone()
    }

    /// Admits one create of `team_id` if its rows (`running`, read under
    /// the team's gate) and creates in flight leave room under `limit`.
    pub async fn admit<F>(&self, team_id: &str, limit: i64, running: F) -> ApiResult<Admitted>
    where
        F: Future<Output = StoreResult<i64>>,
    {
        let team = self.team(team_id);
        let _gate = team.gate.lock().await;
        let running = running.await?;
        let in_flight = team.in_flight();
        if running.saturating_add(in_flight) >= limit {
            return Err(ApiError::TooManyRequests(format!(
                "you have reached the maximum number of concurrent sandboxes of your team \
                 ({limit}; {running} running, {in_flight} starting): kill some first"
            )));
        }
        team.add(1);
        Ok(Admitted {
            team: team.clone(),
            counted: true,
        })
    }

    /// Creates of `team_id` in flight now.
    pub fn in_flight(&self, team_id: &str) -> i64 {
        self.team(team_id).in_flight()
    }
}

impl Admitted {
    /// Ends the create with `write` (its row), under the team's gate: once
    /// it returns, the create is counted by its row, or (when `write`
    /// failed) not at all.
    pub async fn finish<T, F>(mut self, write: F) -> T
    where
        F: Future<Output = T>,
    {
        let team = self.team.clone();
        let _gate = team.gate.lock().await;
        let written = write.await;
        self.counted = false;
        team.add(-1);
        written
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // A create that ends without a row needs no gate: nothing of it is
        // left for an admission to count.
        if self.counted {
            self.team.add(-1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admissions_count_until_finished_or_dropped() -> ApiResult<()> {
        let starting = Starting::default();
        let a = starting.admit("t", 2, async { Ok(0) }).await?;
        let b = starting.admit("t", 2, async { Ok(0) }).await?;
        assert_eq!(starting.in_flight("t"), 2);
        assert_eq!(starting.in_flight("u"), 0);
        let refused = starting.admit("t", 2, async { Ok(0) }).await;
        assert!(matches!(refused, Err(ApiError::TooManyRequests(_))));
        drop(a);
        assert_eq!(starting.in_flight("t"), 1);
        b.finish(async {}).await;
        assert_eq!(starting.in_flight("t"), 0);
        Ok(())
    }

    #[tokio::test]
    async fn rows_count_against_the_limit() {
        let starting = Starting::default();
        let refused = starting.admit("t", 3, async { Ok(3) }).await;
        assert!(matches!(refused, Err(ApiError::TooManyRequests(_))));
        assert_eq!(starting.in_flight("t"), 0);
    }
}
