//! Small helpers shared by hardware-in-the-loop tests.

use std::io;

/// A fresh directory named `<prefix>…` under the system temporary directory, removed when the
/// returned guard drops.
///
/// Tests put cable symlinks, logs, configs and control sockets here. Unix socket paths are
/// limited to 107 bytes, so keep `prefix` short and do not point `TMPDIR` somewhere deep.
pub fn unique_tempdir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempdirs_are_unique_and_removed() {
        let a = unique_tempdir("wk-").expect("tempdir");
        let b = unique_tempdir("wk-").expect("tempdir");
        assert_ne!(a.path(), b.path());
        assert!(a
            .path()
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("wk-")));
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }
}
