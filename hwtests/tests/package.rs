//! The Debian package (`scripts/package.sh`, which `scripts/test.sh` runs before the tests):
//! lintian accepts it, and it installs, removes and purges cleanly on this machine.
//!
//! Why on the real machine and not in a chroot: what is checked is what an administrator
//! gets (dpkg's conffile handling, the maintainer scripts run by dpkg with the system's
//! `groupadd`, `deb-systemd-helper`, man-db), and a chroot would need a Debian base system
//! built first. To be safe on a machine that is not only a test machine, the install test
//! refuses to start when anything it would overwrite or purge is already there (a watchkeeper
//! package, /etc/watchkeeper, /var/lib/watchkeeper, any file of the package), never starts the
//! service (the package does not either), and purges the package and deletes the group it
//! created when it ends, passing or failing. A marker file says that an installed package is
//! this test's own, so that a run killed half-way is cleaned up by the next.
//!
//! The install test needs root: it says so and returns when not root, except under CI=true,
//! where it fails. The package must have been built: a missing one is a failure, not a skip.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PACKAGE: &str = "watchkeeper";
/// Present while a package this test installed may be on the machine; says whether the
/// watchkeeper group was there before.
const MARKER: &str = "/var/tmp/watchkeeper-package-test.installed";

/// The workspace root (hwtests' parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The .deb `scripts/package.sh` built: `$WK_DEB`, or `debian/` in the target directory this
/// test was built in.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("WK_DEB") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/package-HASH
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target directory above the test binary");
    let arch = stdout(&run("dpkg", &["--print-architecture"]));
    let path = target.join("debian").join(format!(
        "{PACKAGE}_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    assert!(
        path.is_file(),
        "{} is missing: build it with `bash scripts/package.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The files (not directories) the package ships, as absolute paths.
fn shipped_files(deb: &Path) -> Vec<String> {
    let deb = deb.to_str().expect("utf-8 path");
    ok("dpkg-deb", &["-c", deb])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

fn assert_mode(path: &str, want: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
        (want, 0, 0),
        "{path}: mode {:o} owner {}:{}, want {want:o} root:root",
        meta.permissions().mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// dpkg's status of the package (`ii`, `rc`, …), or None when dpkg knows nothing of it.
fn dpkg_status() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", PACKAGE]);
    let status = stdout(&out).trim().to_owned();
    (out.status.success() && !status.is_empty()).then_some(status)
}

fn group_exists() -> bool {
    run("getent", &["group", PACKAGE]).status.success()
}

/// Purges the package and deletes the group if this test made them, however the test ends.
struct Cleanup {
    group_existed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let out = run("dpkg", &["--purge", PACKAGE]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: dpkg --purge {PACKAGE}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if !self.group_existed && group_exists() {
            let _ = run("groupdel", &[PACKAGE]);
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

/// True when root; otherwise says why the test does not run, or fails under CI=true.
fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "dpkg -i needs root: CI=true runs as root, so this test must run"
    );
    eprintln!("SKIPPED (not root): installing a package needs root");
    false
}

/// Refuses to go on when the machine has a watchkeeper installation this test did not make;
/// purges one it did make in a run that was killed.
fn preflight(files: &[String]) {
    if let Some(status) = dpkg_status() {
        assert!(
            Path::new(MARKER).exists(),
            "a {PACKAGE} package is on this machine (dpkg status {status}) and this test did not \
             install it: not replacing and purging it"
        );
        eprintln!("purging the package a killed run of this test left (status {status})");
        ok("dpkg", &["--purge", PACKAGE]);
        let marker = std::fs::read_to_string(MARKER).unwrap_or_default();
        if marker.contains("group_existed=false") && group_exists() {
            ok("groupdel", &[PACKAGE]);
        }
        let _ = std::fs::remove_file(MARKER);
    }
    for path in files
        .iter()
        .map(String::as_str)
        .chain(["/etc/watchkeeper", "/var/lib/watchkeeper"])
    {
        assert!(
            !exists(path),
            "{path} exists and belongs to no {PACKAGE} package: the test would overwrite or \
             purge it, so it does not run here"
        );
    }
}

#[test]
fn installs_removes_and_purges_cleanly() {
    let deb = deb();
    if !root_or_skip() {
        return;
    }
    let started = Instant::now();
    let deb_str = deb.to_str().expect("utf-8 path");
    let files = shipped_files(&deb);
    preflight(&files);
    let cleanup = Cleanup {
        group_existed: group_exists(),
    };
    std::fs::write(
        MARKER,
        format!("{deb_str}\ngroup_existed={}\n", cleanup.group_existed),
    )
    .expect("marker");

    // What the package ships, where and with which modes.
    let want: &[(&str, u32)] = &[
        ("/usr/bin/watchkeeper", 0o755),
        ("/usr/sbin/fence_watchkeeper", 0o755),
        ("/usr/lib/systemd/system/watchkeeper.service", 0o644),
        ("/etc/watchkeeper/watchkeeper.toml", 0o640),
        ("/usr/share/man/man1/watchkeeper.1.gz", 0o644),
        ("/usr/share/man/man1/watchkeeper-run.1.gz", 0o644),
        ("/usr/share/man/man8/fence_watchkeeper.8.gz", 0o644),
        ("/usr/share/bash-completion/completions/watchkeeper", 0o644),
        ("/usr/share/zsh/vendor-completions/_watchkeeper", 0o644),
        (
            "/usr/share/fish/vendor_completions.d/watchkeeper.fish",
            0o644,
        ),
        ("/usr/share/doc/watchkeeper/copyright", 0o644),
        ("/usr/share/doc/watchkeeper/changelog.gz", 0o644),
    ];
    let mut rules: Vec<String> = std::fs::read_dir(workspace().join("udev"))
        .expect("udev/")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rules"))
        .map(|n| format!("/usr/lib/udev/rules.d/{n}"))
        .collect();
    rules.sort();
    assert!(!rules.is_empty(), "udev/ has no rules files");
    let shipped: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    for path in want
        .iter()
        .map(|(p, _)| *p)
        .chain(rules.iter().map(String::as_str))
    {
        assert!(
            shipped.contains(path),
            "{path} not in the package: {files:?}"
        );
    }

    // Install.
    let installed = ok("dpkg", &["--install", deb_str]);
    assert!(
        installed.contains("cluster.key"),
        "postinst says: {installed}"
    );
    assert_eq!(dpkg_status().as_deref(), Some("ii"));
    for (path, m) in want {
        assert_mode(path, *m);
    }
    for r in &rules {
        assert_mode(r, 0o644);
    }
    assert_mode("/etc/watchkeeper", 0o750);
    assert_mode("/var/lib/watchkeeper", 0o750);
    assert!(group_exists(), "the postinst creates the watchkeeper group");
    assert!(
        !exists("/etc/systemd/system/multi-user.target.wants/watchkeeper.service"),
        "the unit must not be enabled before the node is configured"
    );
    ok("dpkg", &["--verify", PACKAGE]);

    // The cluster key: made by the postinst, private, and never replaced.
    assert_mode("/etc/watchkeeper/cluster.key", 0o600);
    let key = std::fs::read_to_string("/etc/watchkeeper/cluster.key").expect("key");
    assert!(
        key.trim().len() == 64 && key.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "key {key:?}"
    );

    // The binaries from their installed paths.
    let version = ok("/usr/bin/watchkeeper", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("watchkeeper {}", env!("CARGO_PKG_VERSION"))
    );
    let metadata = ok("/usr/sbin/fence_watchkeeper", &["-o", "metadata"]);
    assert!(metadata.contains("<resource-agent name=\"fence_watchkeeper\""));

    // Man pages render, without a groff warning (what lintian's groff check runs).
    for (page, expect) in [
        ("/usr/share/man/man1/watchkeeper.1.gz", "watchkeeper-run(1)"),
        ("/usr/share/man/man1/watchkeeper-keygen.1.gz", "SYNOPSIS"),
        ("/usr/share/man/man8/fence_watchkeeper.8.gz", "--ip"),
    ] {
        let text = ok("man", &["-l", "-P", "cat", "-E", "UTF-8", page]);
        let plain: String = strip_overstrike(&text);
        assert!(plain.contains(expect), "{page} rendered:\n{plain}");
        let warnings = run(
            "man",
            &["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
        );
        assert!(
            warnings.status.success() && warnings.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&warnings.stderr)
        );
    }
    assert!(
        !files.iter().any(|f| f.contains("generate")),
        "hidden subcommands get no page"
    );

    // bash completes a subcommand; the zsh and fish scripts are theirs (checked by the shell
    // when it is installed).
    let completed = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/watchkeeper && \
             COMP_WORDS=(watchkeeper check-c) COMP_CWORD=1 COMP_LINE='watchkeeper check-c' \
             COMP_POINT=19 && _watchkeeper watchkeeper check-c watchkeeper && \
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    );
    assert_eq!(completed.trim(), "check-config");
    let zsh = std::fs::read_to_string("/usr/share/zsh/vendor-completions/_watchkeeper")
        .expect("zsh completion");
    assert!(zsh.starts_with("#compdef watchkeeper"), "{zsh}");
    let fish = std::fs::read_to_string("/usr/share/fish/vendor_completions.d/watchkeeper.fish")
        .expect("fish completion");
    assert!(fish.contains("complete -c watchkeeper"), "{fish}");
    for (shell, script) in [
        ("zsh", "/usr/share/zsh/vendor-completions/_watchkeeper"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/watchkeeper.fish",
        ),
    ] {
        if run("sh", &["-c", &format!("command -v {shell}")])
            .status
            .success()
        {
            ok(shell, &["-n", script]);
        }
    }

    // Installing again (an upgrade to the same version) keeps the key.
    ok("dpkg", &["--install", deb_str]);
    assert_eq!(
        std::fs::read_to_string("/etc/watchkeeper/cluster.key").expect("key"),
        key,
        "a reinstall must not replace the cluster key"
    );

    // Remove: the programs go, the configuration, the key and the state stay.
    ok("dpkg", &["--remove", PACKAGE]);
    assert_eq!(dpkg_status().as_deref(), Some("rc"));
    for f in &files {
        if f.starts_with("/etc/") {
            assert!(exists(f), "{f} removed by dpkg -r");
        } else {
            assert!(!exists(f), "{f} left by dpkg -r");
        }
    }
    assert_mode("/etc/watchkeeper/cluster.key", 0o600);
    assert!(Path::new("/var/lib/watchkeeper").is_dir());

    // Purge: nothing is left.
    ok("dpkg", &["--purge", PACKAGE]);
    assert_eq!(dpkg_status(), None);
    for path in files
        .iter()
        .map(String::as_str)
        .chain(["/etc/watchkeeper", "/var/lib/watchkeeper"])
    {
        assert!(!exists(path), "{path} left by dpkg -P");
    }
    assert!(
        !exists("/var/lib/systemd/deb-systemd-helper-enabled/watchkeeper.service.dsh-also"),
        "deb-systemd-helper state left by dpkg -P"
    );
    eprintln!(
        "installed, reinstalled, removed and purged {} ({} files) in {:.1} s",
        deb.display(),
        files.len(),
        started.elapsed().as_secs_f64()
    );
}

/// man's output to a pipe keeps bold and underline as overstrikes (`x\bx`, `_\bx`).
fn strip_overstrike(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn lintian_accepts_the_package_and_every_override_is_justified() {
    let deb = deb();
    let started = Instant::now();
    // Every override carries its reason in the comment lines just above it.
    let overrides = std::fs::read_to_string(workspace().join("packaging/deb/lintian-overrides"))
        .expect("packaging/deb/lintian-overrides");
    let mut previous = "";
    for line in overrides.lines() {
        if !line.trim().is_empty() && !line.starts_with('#') {
            assert!(
                previous.starts_with("# "),
                "lintian override without a justification above it: {line}"
            );
        }
        previous = line;
    }

    let out = run(
        "lintian",
        &[
            "--fail-on",
            "error,warning",
            "--display-info",
            deb.to_str().expect("utf-8 path"),
        ],
    );
    let report = stdout(&out);
    eprintln!(
        "lintian ({:.1} s):\n{report}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "lintian: {}\n{report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in report.lines() {
        assert!(
            !(line.starts_with("E: ") || line.starts_with("W: ")),
            "lintian: {line}"
        );
        assert!(
            !line.contains("unused-override") && !line.contains("mismatched-override"),
            "a stale override: {line}"
        );
    }
}
