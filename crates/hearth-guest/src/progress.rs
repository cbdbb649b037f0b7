//! Step-by-step progress of a build, printed to stderr with elapsed times so
//! that a long first build shows where it is.

use std::time::Instant;

/// Prints numbered steps and their durations.
#[derive(Debug, Clone)]
pub struct Progress {
    quiet: bool,
    started: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            started: Instant::now(),
        }
    }

    /// Runs one async step, printing its name before and its duration after.
    pub async fn step_async<T, E>(
        &self,
        name: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.say(&format!("{name} ..."));
        let begun = Instant::now();
        let result = work.await;
        self.finished(name, begun, result.is_ok());
        result
    }

    fn finished(&self, name: &str, begun: Instant, ok: bool) {
        let outcome = if ok { "done" } else { "failed" };
        self.say(&format!(
            "{name}: {outcome} in {:.1} s",
            begun.elapsed().as_secs_f64()
        ));
    }

    /// Runs one step, printing its name before and its duration after.
    pub fn step<T, E>(&self, name: &str, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.say(&format!("{name} ..."));
        let begun = Instant::now();
        let result = work();
        self.finished(name, begun, result.is_ok());
        result
    }

    /// Prints one line, prefixed with the time since the build began.
    pub fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("[{:6.1} s] {line}", self.started.elapsed().as_secs_f64());
        }
    }
}
