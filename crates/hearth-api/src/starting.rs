//! Creates in flight per team, so that a team's sandbox limit holds while
//! several of its creates run at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone)]
pub struct Starting(Arc<Mutex<HashMap<String, i64>>>);

/// Counts one create until dropped.
#[derive(Debug)]
pub struct StartingGuard {
    starting: Starting,
    team: String,
}

impl Starting {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, i64>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn begin(&self, team: &str) -> StartingGuard {
        self.with(|m| *m.entry(team.to_owned()).or_default() += 1);
        StartingGuard {
            starting: self.clone(),
            team: team.to_owned(),
        }
    }

    /// Creates of `team` in flight, this one included.
    pub fn count(&self, team: &str) -> i64 {
        self.with(|m| m.get(team).copied().unwrap_or(0))
    }
}

impl Drop for StartingGuard {
    fn drop(&mut self) {
        self.starting.with(|m| {
            if let Some(n) = m.get_mut(&self.team) {
                *n -= 1;
                if *n <= 0 {
                    m.remove(&self.team);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_uncount() {
        let starting = Starting::default();
        let a = starting.begin("t");
        let b = starting.begin("t");
        assert_eq!(starting.count("t"), 2);
        assert_eq!(starting.count("u"), 0);
        drop(a);
        assert_eq!(starting.count("t"), 1);
        drop(b);
        assert_eq!(starting.count("t"), 0);
    }
}
