//! Runs `ip` and `nft`, turning a failure into an error with their stderr.

use tokio::process::Command;

use crate::error::NetError;

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
    let output = child
        .wait_with_output()
        .await
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
