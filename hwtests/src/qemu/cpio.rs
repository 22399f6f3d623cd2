//! A minimal writer of `newc` cpio archives, the format the kernel unpacks as an initramfs.
//!
//! Written here rather than by calling `cpio` so that a guest's file modes (a cluster key must
//! be 0600) and device nodes (`/dev/console`) do not depend on the host's files or on root.
//! The archive is left uncompressed: the kernel takes it as is, and the guest has memory to
//! spare.

use std::io::{self, Write};

/// An archive being built in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory (parents must be added first).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, 0o040_755, &[], (0, 0))
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(path, 0o100_000 | (perm & 0o7777), data, (0, 0))
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, 0o120_777, target.as_bytes(), (0, 0))
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(path, 0o020_000 | (perm & 0o7777), &[], (major, minor))
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> &mut Self {
        let name = path.trim_start_matches('/');
        let name_size = name.len() + 1;
        let ino = if mode == 0 { 0 } else { self.next_ino };
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o040_000 != 0 { 2 } else { 1 },
            0, // mtime
            field(data.len()),
            0,
            0,
            rdev.0,
            rdev.1,
            field(name_size),
            0, // check
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        let _ = self.write(header.as_bytes());
        let _ = self.write(name.as_bytes());
        let _ = self.write(&[0]);
        self.pad();
        let _ = self.write(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }
}

/// A size as a header field; archives here stay far below 4 GiB.
fn field(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_headers_well_formed() {
        let mut c = Cpio::new();
        c.dir("bin")
            .file("bin/x", 0o600, b"abc")
            .symlink("bin/y", "x");
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // Second header: after the first (110 + "bin\0" padded to 116) with no data.
        assert_eq!(&bytes[116..122], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("TRAILER!!!"));
        // The file's mode field: 0o100600 = 0x8180.
        assert!(text.contains("000081800000000000000000"));
    }
}
