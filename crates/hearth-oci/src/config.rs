//! The image config blob: the process settings hearth keeps, and the platform
//! check for images that come without an index.

use serde::Deserialize;

use crate::ImageConfig;
use crate::error::OciError;

/// The config document; everything is optional because Docker writes `null`
/// for unset fields and old images lack whole sections.
#[derive(Deserialize)]
struct RawImage {
    os: Option<String>,
    architecture: Option<String>,
    config: Option<RawConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

/// Parses a config blob and refuses images built for another platform (a
/// single-platform manifest names its platform only here).
pub(crate) fn parse(reference: &str, bytes: &[u8]) -> Result<ImageConfig, OciError> {
    let raw: RawImage = serde_json::from_slice(bytes).map_err(|source| OciError::BadConfig {
        reference: reference.to_owned(),
        source,
    })?;
    let os = raw.os.as_deref().unwrap_or("linux");
    let architecture = raw.architecture.as_deref().unwrap_or("amd64");
    if os != "linux" || architecture != "amd64" {
        return Err(OciError::NoAmd64 {
            reference: reference.to_owned(),
            available: vec![format!("{os}/{architecture}")],
        });
    }
    let Some(config) = raw.config else {
        return Ok(ImageConfig::default());
    };
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    Ok(ImageConfig {
        env: config.env.unwrap_or_default(),
        working_dir: non_empty(config.working_dir),
        user: non_empty(config.user),
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
    })
}

/// The config document for an image of one layer whose uncompressed tar
/// has the digest `diff_id`.
pub(crate) fn render(config: &ImageConfig, architecture: &str, diff_id: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": config.env,
            "WorkingDir": config.working_dir.as_deref().unwrap_or(""),
            "User": config.user.as_deref().unwrap_or(""),
            "Entrypoint": config.entrypoint,
            "Cmd": config.cmd,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_style_config_with_nulls() {
        let blob = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","LANG=C.UTF-8"],
            "WorkingDir":"","User":"app","Entrypoint":null,"Cmd":["python3"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = parse("img", blob).expect("parses");
        assert_eq!(
            config,
            ImageConfig {
                env: vec!["PATH=/usr/bin".into(), "LANG=C.UTF-8".into()],
                working_dir: None,
                user: Some("app".into()),
                entrypoint: vec![],
                cmd: vec!["python3".into()],
            }
        );
    }

    #[test]
    fn round_trips_what_it_renders() {
        let config = ImageConfig {
            env: vec!["A=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
        };
        let blob = render(&config, "amd64", "sha256:00");
        assert_eq!(parse("img", &blob).expect("parses"), config);
    }

    #[test]
    fn refuses_other_platforms() {
        let blob = render(&ImageConfig::default(), "arm64", "sha256:00");
        match parse("img", &blob) {
            Err(OciError::NoAmd64 { available, .. }) => assert_eq!(available, ["linux/arm64"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_config_is_reported() {
        assert!(matches!(
            parse("img", b"{not json"),
            Err(OciError::BadConfig { .. })
        ));
    }
}
