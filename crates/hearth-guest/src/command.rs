//! Runs the Debian tools the builders drive, keeping the tail of their
//! stderr for the error message.

use std::process::{Command, Output, Stdio};

use crate::error::{GuestError, Result};

/// How much of a failed command's stderr an error carries.
const STDERR_TAIL: usize = 2000;

/// Runs `command` to completion; a non-zero exit is an error naming `step`.
pub fn run(step: &'static str, command: &mut Command) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| GuestError::Spawn {
            step,
            program: program.clone(),
            source,
        })?;
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

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
