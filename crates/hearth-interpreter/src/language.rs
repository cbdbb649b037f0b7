//! The languages a context can run, as the SDKs name them, the kernels that
//! run them, and the code that sets or clears an environment variable in
//! each (the kernel's process environment, which the user's code reads).

use std::fmt;

/// A context's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    Bash,
    R,
    Java,
}

/// A language no kernel here is for.
#[derive(Debug, thiserror::Error)]
#[error("unknown language '{0}': use python, javascript, typescript, bash, r or java")]
pub struct UnknownLanguage(pub String);

/// An environment variable name no language can take.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{0}' is not an environment variable name (letters, digits and _, not starting with a digit)"
)]
pub struct BadEnvName(pub String);

impl Language {
    /// The SDKs' names: case and surrounding space do not matter, `js` and
    /// `ts` are short for JavaScript and TypeScript; none means Python.
    pub fn parse(name: Option<&str>) -> Result<Self, UnknownLanguage> {
        let name = name.map(str::trim).unwrap_or_default().to_ascii_lowercase();
        Ok(match name.as_str() {
            "" | "python" | "python3" => Self::Python,
            "javascript" | "js" => Self::JavaScript,
            "typescript" | "ts" => Self::TypeScript,
            "bash" | "sh" => Self::Bash,
            "r" => Self::R,
            "java" => Self::Java,
            _ => return Err(UnknownLanguage(name)),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::JavaScript => "javascript",
            Self::TypeScript => "typescript",
            Self::Bash => "bash",
            Self::R => "r",
            Self::Java => "java",
        }
    }

    /// Kernel names that run this language, the preferred first. Deno's
    /// kernel runs JavaScript and TypeScript both (as E2B's template does).
    pub fn kernel_names(self) -> &'static [&'static str] {
        match self {
            Self::Python => &["python3", "python"],
            Self::JavaScript | Self::TypeScript => &["deno"],
            Self::Bash => &["bash"],
            Self::R => &["ir", "r"],
            Self::Java => &["java"],
        }
    }

    /// Code that sets `vars` (name, value) and clears `unset` in the
    /// kernel's process. Names must have passed [`check_env_name`]; values
    /// are quoted for the language, so they are data, never code.
    pub fn env_code(self, vars: &[(&str, &str)], unset: &[&str]) -> String {
        let mut code = String::new();
        match self {
            Self::Python => {
                code.push_str("import os as _hearth_os\n");
                for (name, value) in vars {
                    code.push_str(&format!(
                        "_hearth_os.environ[{}] = {}\n",
                        quoted(name, Wide::Python),
                        quoted(value, Wide::Python)
                    ));
                }
                for name in unset {
                    code.push_str(&format!(
                        "_hearth_os.environ.pop({}, None)\n",
                        quoted(name, Wide::Python)
                    ));
                }
                code.push_str("del _hearth_os\n");
            }
            Self::JavaScript | Self::TypeScript => {
                // Deno's environment (Node's where there is no Deno), in
                // plain JavaScript (Deno runs cells as TypeScript without
                // checking types); a block keeps the helpers out of the
                // user's scope.
                code.push_str(
                    "{\nconst _d = globalThis.Deno;\n\
                     const _set = (k, v) => { if (_d) _d.env.set(k, v); else globalThis.process.env[k] = v; };\n\
                     const _unset = (k) => { if (_d) _d.env.delete(k); else delete globalThis.process.env[k]; };\n",
                );
                for (name, value) in vars {
                    code.push_str(&format!(
                        "_set({}, {});\n",
                        quoted(name, Wide::Surrogates),
                        quoted(value, Wide::Surrogates)
                    ));
                }
                for name in unset {
                    code.push_str(&format!("_unset({});\n", quoted(name, Wide::Surrogates)));
                }
                code.push_str("}\n");
            }
            Self::Bash => {
                for (name, value) in vars {
                    code.push_str(&format!("export {name}={}\n", shell_quoted(value)));
                }
                for name in unset {
                    code.push_str(&format!("unset {name}\n"));
                }
            }
            Self::R => {
                for (name, value) in vars {
                    code.push_str(&format!(
                        "Sys.setenv({} = {})\n",
                        quoted(name, Wide::Braced),
                        quoted(value, Wide::Braced)
                    ));
                }
                for name in unset {
                    code.push_str(&format!("Sys.unsetenv({})\n", quoted(name, Wide::Braced)));
                }
            }
            Self::Java => {
                // The JVM cannot change its own environment: properties are
                // what Java code can read at run time.
                for (name, value) in vars {
                    code.push_str(&format!(
                        "System.setProperty({}, {});\n",
                        quoted(name, Wide::Surrogates),
                        quoted(value, Wide::Surrogates)
                    ));
                }
                for name in unset {
                    code.push_str(&format!(
                        "System.clearProperty({});\n",
                        quoted(name, Wide::Surrogates)
                    ));
                }
            }
        }
        code
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names every language can set: what a shell accepts.
pub fn check_env_name(name: &str) -> Result<(), BadEnvName> {
    let mut chars = name.chars();
    let good = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if good {
        Ok(())
    } else {
        Err(BadEnvName(name.to_owned()))
    }
}

/// How a language writes a character beyond the Basic Multilingual Plane in
/// a string literal.
#[derive(Clone, Copy)]
enum Wide {
    /// A `\uXXXX` surrogate pair: JavaScript and Java join it.
    Surrogates,
    /// `\UXXXXXXXX`: Python (which would not join a pair).
    Python,
    /// `\U{XXXXX}`: R.
    Braced,
}

/// A double-quoted string literal that the language reads as `text`:
/// JSON's escapes, everything else outside printable ASCII as `\uXXXX`, and
/// wider characters as `wide` says (JSON's `\/` is never produced).
fn quoted(text: &str, wide: Wide) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            _ => match wide {
                Wide::Surrogates => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                Wide::Python => out.push_str(&format!("\\U{:08x}", u32::from(c))),
                Wide::Braced => out.push_str(&format!("\\U{{{:x}}}", u32::from(c))),
            },
        }
    }
    out.push('"');
    out
}

/// A single-quoted shell word.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_the_sdks_send_them() -> Result<(), UnknownLanguage> {
        assert_eq!(Language::parse(None)?, Language::Python);
        assert_eq!(Language::parse(Some(" Python "))?, Language::Python);
        assert_eq!(Language::parse(Some("js"))?, Language::JavaScript);
        assert_eq!(Language::parse(Some("TS"))?, Language::TypeScript);
        assert_eq!(Language::parse(Some("typescript"))?.as_str(), "typescript");
        assert!(Language::parse(Some("cobol")).is_err());
        Ok(())
    }

    #[test]
    fn env_names_are_what_a_shell_takes() {
        for good in ["A", "_x", "PATH_2"] {
            assert!(check_env_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2A", "A-B", "A B", "A=B", "É"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_quoted_as_data() {
        let text = "a\"b\\c\n\u{e9}\u{1f600}";
        assert_eq!(
            quoted(text, Wide::Surrogates),
            r#""a\"b\\c\n\u00e9\ud83d\ude00""#
        );
        assert_eq!(quoted(text, Wide::Python), r#""a\"b\\c\n\u00e9\U0001f600""#);
        assert_eq!(quoted(text, Wide::Braced), r#""a\"b\\c\n\u00e9\U{1f600}""#);
        assert_eq!(shell_quoted("it's $HOME"), r#"'it'\''s $HOME'"#);
        let python = Language::Python.env_code(&[("K", "v'\"")], &["GONE"]);
        assert!(
            python.contains(r#"_hearth_os.environ["K"] = "v'\"""#),
            "{python}"
        );
        assert!(
            python.contains(r#"_hearth_os.environ.pop("GONE", None)"#),
            "{python}"
        );
        let bash = Language::Bash.env_code(&[("K", "$(rm -rf /)")], &["GONE"]);
        assert_eq!(bash, "export K='$(rm -rf /)'\nunset GONE\n");
    }
}
