//! Runs the Debian tools the builders drive, with a deadline, keeping the
//! tail of their stderr for the error message.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{GuestError, Result};

/// How much of a failed command's stderr an error carries.
const STDERR_TAIL: usize = 2000;
/// How long one step may run: generous for debootstrap on a slow mirror,
/// but a hung download still ends.
pub const STEP_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// Runs `command` to completion within [`STEP_DEADLINE`]; a non-zero exit
/// or a timeout is an error naming `step`.
pub fn run(step: &'static str, command: &mut Command) -> Result<Output> {
    run_within(step, command, STEP_DEADLINE)
}

pub fn run_within(step: &'static str, command: &mut Command, deadline: Duration) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    let spawn_error = |source| GuestError::Spawn {
        step,
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    // Drain both pipes on threads so a chatty tool never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_error)? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GuestError::TimedOut {
                step,
                command: describe(command),
                after: deadline,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let start = (start..stderr.len())
        .find(|i| stderr.is_char_boundary(*i))
        .unwrap_or(stderr.len());
    Err(GuestError::CommandFailed {
        step,
        command: describe(command),
        status: output.status,
        stderr: stderr[start..].trim().to_owned(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_stderr_and_hangs_end() {
        let failed = run(
            "testing",
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
        );
        let message = failed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("testing") && message.contains("oops"),
            "{message}"
        );

        let started = Instant::now();
        let hung = run_within(
            "waiting",
            Command::new("sleep").arg("30"),
            Duration::from_millis(200),
        );
        assert!(matches!(hung, Err(GuestError::TimedOut { .. })));
        assert!(started.elapsed() < Duration::from_secs(5));

        let output = run("echoing", Command::new("echo").arg("hi"))
            .map(|o| o.stdout)
            .unwrap_or_default();
        assert_eq!(output, b"hi\n");
    }
}
