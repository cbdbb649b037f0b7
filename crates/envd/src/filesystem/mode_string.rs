//! File modes printed the way Go's `fs.FileMode.String()` prints them, which
//! is what upstream envd reports as `permissions` (e.g. `drwxr-xr-x`).

/// Formats `st_mode` as type letters followed by `rwxrwxrwx`.
pub fn permissions(st_mode: u32) -> String {
    let file_type = st_mode & libc::S_IFMT;
    let mut out = String::with_capacity(12);
    // Type and special bits, in Go's order: d a l T L D p S u g c t ?.
    if file_type == libc::S_IFDIR {
        out.push('d');
    }
    if file_type == libc::S_IFLNK {
        out.push('L');
    }
    if file_type == libc::S_IFBLK || file_type == libc::S_IFCHR {
        out.push('D');
    }
    if file_type == libc::S_IFIFO {
        out.push('p');
    }
    if file_type == libc::S_IFSOCK {
        out.push('S');
    }
    if st_mode & libc::S_ISUID != 0 {
        out.push('u');
    }
    if st_mode & libc::S_ISGID != 0 {
        out.push('g');
    }
    if file_type == libc::S_IFCHR {
        out.push('c');
    }
    if st_mode & libc::S_ISVTX != 0 {
        out.push('t');
    }
    if out.is_empty() {
        out.push('-');
    }
    const RWX: [char; 3] = ['r', 'w', 'x'];
    for bit in 0..9 {
        let mask = 1 << (8 - bit);
        out.push(if st_mode & mask != 0 {
            RWX[bit % 3]
        } else {
            '-'
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::permissions;

    #[test]
    fn formats_like_go() {
        assert_eq!(permissions(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(permissions(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(
            permissions(libc::S_IFDIR | libc::S_ISVTX | 0o777),
            "dtrwxrwxrwx"
        );
        assert_eq!(
            permissions(libc::S_IFREG | libc::S_ISUID | 0o755),
            "urwxr-xr-x"
        );
        assert_eq!(permissions(libc::S_IFCHR | 0o666), "Dcrw-rw-rw-");
    }
}
