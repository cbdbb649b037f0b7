//! What COPY, WORKDIR and USER do inside the build VM, as shell scripts run
//! as root (POSIX sh: they must work on busybox too). Arguments reach the
//! scripts as positional parameters, never spliced into the text.

use hearth_vmm::ProcessSpec;

/// `sh -c SCRIPT hearth ARGS…`: `$1…` are the arguments.
fn script(script: &str, args: &[&str]) -> ProcessSpec {
    let mut all = vec!["-c".to_owned(), script.to_owned(), "hearth".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    ProcessSpec {
        cmd: "/bin/sh".into(),
        args: all,
        user: Some("root".into()),
        ..ProcessSpec::default()
    }
}

/// Unpacks the archive `$1` and moves its entry `$2` (relative to the build
/// context) to `$3` (relative to workdir `$4`, else the home of `$5`), owned
/// by `$6` and, when `$7` is not empty, with that mode. A directory's
/// contents are merged into the target; a trailing slash on the target
/// means "into this directory", as Docker's COPY does.
const COPY: &str = r#"set -e
archive="$1"; source="$2"; target="$3"; workdir="$4"; user="$5"; owner="$6"; mode="$7"
if [ -z "$workdir" ]; then
    workdir=$(awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd)
fi
case "$target" in
    /*) ;;
    *) target="${workdir:-/}/$target" ;;
esac
unpack=$(mktemp -d /tmp/hearth-copy.XXXXXX)
tar -xf "$archive" -C "$unpack"
rm -f "$archive"
source="${source%/}"
entry="$unpack/$source"
[ -z "$source" ] || [ "$source" = "." ] && entry="$unpack"
if [ ! -e "$entry" ] && [ ! -L "$entry" ]; then
    echo "the source path $2 is not in the uploaded files" >&2
    exit 1
fi
if [ -d "$entry" ] && [ ! -L "$entry" ]; then
    chown -R "$owner" "$entry"
    [ -n "$mode" ] && chmod -R "$mode" "$entry"
    mkdir -p "$target"
    (cd "$entry" && tar -cf - .) | (cd "$target" && tar -xf -)
else
    chown -h "$owner" "$entry"
    [ -n "$mode" ] && [ ! -L "$entry" ] && chmod "$mode" "$entry"
    case "$target" in
        */) mkdir -p "$target"; target="$target$(basename "$entry")" ;;
        *) mkdir -p "$(dirname "$target")" ;;
    esac
    rm -rf "$target"
    mv "$entry" "$target"
fi
rm -rf "$unpack"
"#;

pub fn copy(
    archive: &str,
    source: &str,
    target: &str,
    workdir: Option<&str>,
    user: &str,
    owner: &str,
    mode: Option<&str>,
) -> ProcessSpec {
    script(
        COPY,
        &[
            archive,
            source,
            target,
            workdir.unwrap_or(""),
            user,
            owner,
            mode.unwrap_or(""),
        ],
    )
}

/// Creates directory `$1` (made absolute against `$2`, else `/`), giving
/// what it creates to `$3`, and prints its absolute path.
const WORKDIR: &str = r#"set -e
target="$1"; current="$2"; user="$3"
case "$target" in
    /*) ;;
    *) target="${current:-/}/$target" ;;
esac
if [ ! -d "$target" ]; then
    first="$target"
    while [ ! -d "$(dirname "$first")" ]; do first=$(dirname "$first"); done
    mkdir -p "$target"
    chown -R "$user:" "$first" 2>/dev/null || chown -R "$user" "$first"
fi
cd "$target" && pwd
"#;

pub fn workdir(target: &str, current: Option<&str>, user: &str) -> ProcessSpec {
    script(WORKDIR, &[target, current.unwrap_or(""), user])
}

/// Creates user `$1` with a home directory unless it exists.
const USER: &str = r#"set -e
user="$1"
if id -u "$user" >/dev/null 2>&1; then exit 0; fi
if command -v useradd >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$user"
else
    adduser -D "$user"
fi
"#;

pub fn user(name: &str) -> ProcessSpec {
    script(USER, &[name])
}
