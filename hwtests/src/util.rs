//! Small helpers shared by hardware-in-the-loop tests.

use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `cmd` to completion with captured output, killing it (by PID) after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    run_bounded_input(cmd, "", timeout)
}

/// [`run_bounded`] with `input` on the program's stdin.
pub fn run_bounded_input(
    cmd: &mut Command,
    input: &str,
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        });
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout.as_mut() {
            let _ = std::io::Read::read_to_end(pipe, &mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(pipe, &mut buf);
        }
        buf
    });
    let began = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if began.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {timeout:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Nearest-rank percentile `p` (0 to 100) of an ascending sample; 0 for an empty one.
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (sorted.len() * p.min(100)).div_ceil(100).max(1);
    sorted
        .get(rank.min(sorted.len()).wrapping_sub(1))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(super::percentile(&v, 50), 50);
        assert_eq!(super::percentile(&v, 99), 99);
        assert_eq!(super::percentile(&v, 100), 100);
        assert_eq!(super::percentile(&[7], 99), 7);
        assert_eq!(super::percentile(&[], 50), 0);
        assert_eq!(super::percentile(&[1, 2, 3], 50), 2);
    }

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
