//! `MountResource` on a real ext4 filesystem: an image file on a loop device, mounted on a
//! temporary directory with mount(2). Start, monitor, stop and their idempotency; data written
//! survives a remount; a busy mount is refused naming the process that holds it; fsck preens a
//! clean filesystem and refuses one it cannot fix; a foreign mount at the mountpoint is never
//! taken for ours nor unmounted.
//!
//! Needs root (mount, losetup). Without root the tests print why and return, except under
//! CI=true, where they fail. Every loop device, mount and process a test creates is removed by
//! that test, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use drivers::resource::mount::{FsckPolicy, MountParams, MountResource};
use drivers::resource::{Resource as _, ResourceErrorKind, ResourceState};
use tokio::time::Instant;

/// An ext4 image on a loop device with a mountpoint beside it; drop unmounts whatever is left
/// at the mountpoint, kills the processes the test started and detaches the loop device.
struct LoopFs {
    dir: tempfile::TempDir,
    device: PathBuf,
    mountpoint: PathBuf,
    children: Vec<Child>,
}

impl LoopFs {
    fn new() -> Self {
        let dir = hwtests::util::unique_tempdir("wkmnt").expect("tempdir");
        let image = dir.path().join("fs.img");
        let file = std::fs::File::create(&image).expect("image");
        file.set_len(32 << 20).expect("size image");
        drop(file);
        run("mkfs.ext4", &["-q", "-F", path_str(&image)]);
        let out = Command::new("losetup")
            .args(["--find", "--show", path_str(&image)])
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mountpoint");
        Self {
            dir,
            device,
            mountpoint,
            children: Vec::new(),
        }
    }

    fn resource(&self, fsck: FsckPolicy) -> MountResource {
        MountResource::new(
            "backup-fs",
            MountParams {
                device: self.device.clone(),
                mountpoint: self.mountpoint.clone(),
                fstype: "ext4".to_owned(),
                options: vec!["noatime".to_owned(), "errors=remount-ro".to_owned()],
                fsck,
            },
        )
        .expect("valid params")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Bounded: at most a few mounts were stacked here by the test.
        for _ in 0..4 {
            if mount_options(&self.mountpoint).is_none() {
                break;
            }
            let _ = Command::new("umount").arg(&self.mountpoint).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs as root: mount tests must run"
    );
    eprintln!("skipped: mounting needs root");
    false
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The options of the top mount at `mountpoint`, from mountinfo, or `None` when nothing is
/// mounted there.
fn mount_options(mountpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let options = fields.next()?;
            (point == path_str(mountpoint)).then(|| options.to_owned())
        })
        .next_back()
}

#[tokio::test]
async fn mounts_monitors_unmounts_and_refuses_busy_unmount() {
    if !root_or_skip() {
        return;
    }
    let mut fs = LoopFs::new();
    let mut mount = fs.resource(FsckPolicy::Preen);
    let metrics = mount.metrics();

    assert_eq!(mount.monitor(deadline()).await, Ok(ResourceState::Stopped));
    mount
        .stop(deadline())
        .await
        .expect("stopping a stopped mount");

    mount.start(deadline()).await.expect("start");
    let options = mount_options(&fs.mountpoint).expect("mounted");
    assert!(options.split(',').any(|o| o == "noatime"), "{options}");
    assert!(options.split(',').any(|o| o == "rw"), "{options}");
    assert_eq!(mount.monitor(deadline()).await, Ok(ResourceState::Running));
    mount
        .start(deadline())
        .await
        .expect("starting a running mount");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        metrics.mounts.load(Relaxed),
        1,
        "second start must not mount again"
    );
    assert_eq!(
        metrics.fscks.load(Relaxed),
        1,
        "preen ran once, before the mount"
    );

    std::fs::write(fs.mountpoint.join("volume-0001"), b"bacula").expect("write");

    // A process with its cwd inside holds the mount: stop refuses, naming it.
    let holder = Command::new("sleep")
        .arg("60")
        .current_dir(&fs.mountpoint)
        .spawn()
        .expect("sleep");
    let holder_pid = holder.id();
    fs.children.push(holder);
    let e = mount.stop(deadline()).await.expect_err("busy unmount");
    assert_eq!(e.kind, ResourceErrorKind::Failed, "{e}");
    assert!(e.message.contains("busy"), "{e}");
    assert!(
        e.message.contains(&format!("pid {holder_pid} (sleep) cwd")),
        "{e}"
    );
    assert_eq!(mount.monitor(deadline()).await, Ok(ResourceState::Running));
    for child in &mut fs.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    fs.children.clear();

    mount.stop(deadline()).await.expect("stop");
    assert_eq!(mount_options(&fs.mountpoint), None);
    assert_eq!(mount.monitor(deadline()).await, Ok(ResourceState::Stopped));
    mount.stop(deadline()).await.expect("stop again");
    assert!(!fs.mountpoint.join("volume-0001").exists());

    // The data is on the device, not in the directory.
    mount.start(deadline()).await.expect("start again");
    assert_eq!(
        std::fs::read(fs.mountpoint.join("volume-0001")).expect("read back"),
        b"bacula"
    );
    mount.stop(deadline()).await.expect("final stop");
}

#[tokio::test]
async fn foreign_mount_at_the_mountpoint_is_refused_and_left_alone() {
    if !root_or_skip() {
        return;
    }
    let fs = LoopFs::new();
    let mut mount = fs.resource(FsckPolicy::Never);
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "wk-foreign",
            path_str(&fs.mountpoint),
        ],
    );
    for (action, result) in [
        ("monitor", mount.monitor(deadline()).await.err()),
        ("start", mount.start(deadline()).await.err()),
        ("stop", mount.stop(deadline()).await.err()),
    ] {
        let e = result.unwrap_or_else(|| panic!("{action} must refuse a foreign mount"));
        assert_eq!(e.kind, ResourceErrorKind::Failed, "{e}");
        assert!(e.message.contains("wk-foreign"), "{e}");
        assert!(e.message.contains("refusing"), "{e}");
    }
    let options = mount_options(&fs.mountpoint).expect("the foreign mount is still there");
    assert!(options.contains("rw"), "{options}");
    run("umount", &[path_str(&fs.mountpoint)]);
    // With the mountpoint free again, ours mounts.
    mount.start(deadline()).await.expect("start");
    mount.stop(deadline()).await.expect("stop");
}

#[tokio::test]
async fn fsck_refuses_a_filesystem_it_cannot_fix() {
    if !root_or_skip() {
        return;
    }
    let fs = LoopFs::new();
    // Clearing the root directory's inode is damage that preen mode must not repair alone.
    run("debugfs", &["-w", "-R", "clri <2>", path_str(&fs.device)]);
    let mut mount = fs.resource(FsckPolicy::Force);
    let e = mount.start(deadline()).await.expect_err("must refuse");
    assert_eq!(e.kind, ResourceErrorKind::Failed, "{e}");
    assert!(e.message.contains("fsck"), "{e}");
    assert!(e.message.contains("not mounted"), "{e}");
    assert_eq!(mount_options(&fs.mountpoint), None);
    let _ = &fs.dir;
}
