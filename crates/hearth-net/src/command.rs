//! Runs `ip` and `nft`, turning a failure into an error with their stderr.

use tokio::process::Command;

use crate::error::NetError;

/// `ip` and `nft` answer in milliseconds; one that hangs is killed (the
/// child is dropped, and so killed, when the wait times out).
const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    use tokio::io::AsyncWriteExt;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| NetError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| NetError::Spawn {
                program: program.to_owned(),
                source,
            })?;
    }
    let output = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| NetError::TimedOut {
            command: format!("{program} {}", args.join(" ")),
            after: COMMAND_DEADLINE,
        })?
        .map_err(|source| NetError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(NetError::CommandFailed {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
