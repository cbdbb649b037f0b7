//! Template names as the SDKs write them, `name` or `name:tag`, checked by
//! E2B's rules: trimmed and lowercased; a name is lowercase letters, digits,
//! `-` and `_`; a tag may also have `.`. A template without a tag is its
//! `default` tag (E2B's name for it), so `name:default` is `name`.

/// The tag a build gets when it is requested without one.
pub const DEFAULT_TAG: &str = "default";
/// Longest name or tag taken.
const MAX_LEN: usize = 128;

/// A parsed `name[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    pub name: String,
    /// `None` for no tag (or `default`).
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a template name is required")]
    Missing,
    #[error(
        "invalid template name '{0}': use lowercase letters, digits, '-' and '_' (1 to 128 characters)"
    )]
    Name(String),
    #[error(
        "invalid tag '{0}': use lowercase letters, digits, '-', '_' and '.' (1 to 128 characters)"
    )]
    Tag(String),
    #[error("invalid tag '{0}': a tag cannot be a UUID (build IDs are)")]
    UuidTag(String),
    #[error("hearth has no team namespaces: name the template '{0}', without '{1}/'")]
    Namespace(String, String),
}

fn clean(value: &str) -> String {
    value.trim().to_lowercase()
}

fn is_name(value: &str) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_tag(value: &str) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

/// Parses `name[:tag]`. A tag may be a build ID here (E2B resolves
/// `name:<build ID>` to that build).
pub fn parse(input: &str) -> Result<NameRef, NameError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(NameError::Missing);
    }
    let (name, tag) = match input.split_once(':') {
        Some((name, tag)) => (name, Some(tag)),
        None => (input, None),
    };
    let name = clean(name);
    if let Some((namespace, rest)) = name.split_once('/') {
        return Err(NameError::Namespace(rest.to_owned(), namespace.to_owned()));
    }
    if !is_name(&name) {
        return Err(NameError::Name(name));
    }
    let tag = match tag.map(clean) {
        Some(tag) if !is_tag(&tag) => return Err(NameError::Tag(tag)),
        Some(tag) if tag == DEFAULT_TAG => None,
        other => other,
    };
    Ok(NameRef { name, tag })
}

/// A tag to assign: checked, lowercased, and never a UUID.
pub fn tag(input: &str) -> Result<String, NameError> {
    let tag = clean(input);
    if !is_tag(&tag) {
        return Err(NameError::Tag(input.to_owned()));
    }
    if uuid::Uuid::parse_str(&tag).is_ok() {
        return Err(NameError::UuidTag(tag));
    }
    Ok(tag)
}

/// Tags to assign, checked, without repeats, in the order given.
pub fn tags<'a>(inputs: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, NameError> {
    let mut out: Vec<String> = Vec::new();
    for input in inputs {
        let tag = tag(input)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_follow_e2bs_rules() {
        let parsed = parse(" My-App_1:V1.2 ").ok();
        assert_eq!(
            parsed,
            Some(NameRef {
                name: "my-app_1".into(),
                tag: Some("v1.2".into())
            })
        );
        assert_eq!(parse("app:default").map(|n| n.tag), Ok(None));
        assert_eq!(parse("app").map(|n| n.tag), Ok(None));
        assert!(matches!(parse(""), Err(NameError::Missing)));
        assert!(matches!(parse("a b"), Err(NameError::Name(_))));
        assert!(matches!(parse("app.x"), Err(NameError::Name(_))));
        assert!(matches!(parse("app:"), Err(NameError::Tag(_))));
        assert!(matches!(parse("app:a/b"), Err(NameError::Tag(_))));
        assert!(matches!(parse("team/app"), Err(NameError::Namespace(..))));
        assert!(matches!(parse(&"a".repeat(129)), Err(NameError::Name(_))));
        assert_eq!(
            tags(["v1", "V1", "prod"]).ok(),
            Some(vec!["v1".into(), "prod".into()])
        );
        assert!(matches!(
            tag("6f1c1a8e-3b9a-4c56-9d2e-0b1f2a3c4d5e"),
            Err(NameError::UuidTag(_))
        ));
        assert!(matches!(tag("a b"), Err(NameError::Tag(_))));
    }
}
