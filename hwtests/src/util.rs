//! Small helpers shared by hardware-in-the-loop tests.

use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh directory named `<prefix>…` under the system temporary directory, removed when the
/// returned guard drops.
///
/// Tests put cable symlinks, logs, configs and control sockets here. Unix socket paths are
/// limited to 107 bytes, so keep `prefix` short and do not point `TMPDIR` somewhere deep.
pub fn unique_tempdir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir()
}

/// A binary of this workspace's build, next to the running test (`target/<profile>/`), or the
/// path in the environment variable `env` when set.
///
/// # Panics
///
/// If the binary is missing: the workspace must be built first (`cargo build --workspace`).
pub fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if matches!(
        dir.file_name().and_then(OsStr::to_str),
        Some("deps" | "examples")
    ) {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Runs a fence agent (ClusterLabs' or `fence_watchkeeper`) to completion with `args`, and
/// `stdin` as its standard input if given (otherwise none), capturing stdout and stderr.
///
/// `PYTHONWARNINGS=ignore` keeps the Python agents' deprecation warnings out of stderr, so what
/// is compared is what the agents say.
///
/// # Panics
///
/// If the program cannot be started (`scripts/deps-fence.sh` installs the agents).
pub fn run_agent(program: &Path, args: &[String], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/deps-fence.sh installs the agents)",
                program.display()
            )
        });
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().expect("wait")
}

/// The first line of a program's stdout (a fence agent's answer line), empty if there is none.
pub fn first_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Owned copies of `a`, for argument lists.
pub fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Where the fence-agents packages install the ClusterLabs agents.
pub const AGENT_DIR: &str = "/usr/sbin";

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

    #[test]
    fn first_line_is_the_answer_line() {
        let out = run_agent(
            Path::new("/bin/sh"),
            &strings(&["-c", "echo one; echo two"]),
            None,
        );
        assert_eq!(first_line(&out), "one");
        let out = run_agent(Path::new("/bin/cat"), &[], Some("piped\n"));
        assert_eq!(first_line(&out), "piped");
        let out = run_agent(Path::new("/bin/true"), &[], None);
        assert_eq!(first_line(&out), "");
    }
}
