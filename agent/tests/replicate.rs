//! Director configuration replication between two endpoints in one process over 127.0.0.1:
//! copying, incremental updates, deletions, interruption, tampering, replay, wrong keys, forged
//! manifests, and the target symlink. Faults are injected by a proxy task that understands the
//! framing (hello, then `u32 len | u64 counter | body | 16-byte MAC`) of the holder's side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::config::ClusterKey;
use agent::replicate::wire::{Channel, Entry, EntryKind, Manifest, Message, Role, HELLO_LEN};
use agent::replicate::{
    last_sync, replica_age, replica_dir, serve_sender, sync_once, Endpoint, Limits, ReplicaConfig,
    ReplicateCounters, ReplicateError, SyncReport, TreeError, WireError,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const CLUSTER: u32 = 0x00BA_C01A;

fn key(b: u8) -> ClusterKey {
    ClusterKey::new(vec![b; 32])
}

fn holder_ep() -> Endpoint {
    Endpoint::new(CLUSTER, 1, key(7))
}

fn standby_ep() -> Endpoint {
    Endpoint::new(CLUSTER, 2, key(7))
}

struct Holder {
    addr: SocketAddr,
    counters: Arc<ReplicateCounters>,
    _stop: watch::Sender<bool>,
}

async fn holder(source: &Path) -> Holder {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let counters = Arc::new(ReplicateCounters::default());
    let (tx, rx) = watch::channel(false);
    tokio::spawn(serve_sender(
        l,
        source.to_owned(),
        holder_ep(),
        counters.clone(),
        rx,
    ));
    Holder {
        addr,
        counters,
        _stop: tx,
    }
}

struct Standby {
    cfg: ReplicaConfig,
    counters: ReplicateCounters,
    ep: Endpoint,
}

impl Standby {
    fn new(state: &Path, target: Option<PathBuf>) -> Self {
        Self {
            cfg: ReplicaConfig {
                state_dir: state.to_owned(),
                target,
            },
            counters: ReplicateCounters::default(),
            ep: standby_ep(),
        }
    }
    async fn sync(&self, addr: SocketAddr) -> Result<SyncReport, ReplicateError> {
        sync_once(addr, &self.cfg, &self.ep, &self.counters).await
    }
    fn current(&self) -> PathBuf {
        replica_dir(&self.cfg.state_dir).join("current")
    }
    fn current_gen(&self) -> String {
        std::fs::read_link(self.current())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
    fn generations(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(replica_dir(&self.cfg.state_dir))
            .expect("replica dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gen-"))
            .collect();
        v.sort();
        v
    }
}

/// A tree of `files` files of about `bytes` bytes in total, in nested directories with
/// assorted modes.
fn make_tree(root: &Path, files: usize, bytes: usize) {
    std::fs::create_dir_all(root).expect("root");
    for i in 0..files {
        let dir = root
            .join(format!("d{}", i % 7))
            .join(format!("sub{}", i % 3));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(format!("f{i}.conf"));
        let body: Vec<u8> = (0..bytes / files)
            .map(|j| u8::try_from((i * 31 + j) % 251).unwrap_or(0))
            .collect();
        std::fs::write(&p, body).expect("write");
        let mode = [0o640, 0o600, 0o644, 0o755][i % 4];
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(root.join("d1"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod dir");
}

/// Path -> (mode, sha256) of every entry under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).expect("stat");
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            let mode = md.permissions().mode() & 0o777;
            if md.is_dir() {
                stack.push(p);
                out.insert(rel, (mode, "dir".to_owned()));
            } else {
                let h = Sha256::digest(std::fs::read(&p).expect("read"));
                out.insert(rel, (mode, format!("{h:x}")));
            }
        }
    }
    out
}

/// Waits up to two seconds for `cond`, for counters the other task bumps after replying.
async fn eventually(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 2 s");
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Close both sides after forwarding this many holder frames.
    DropAfter(usize),
    /// Close in the middle of holder frame k.
    CutMid(usize),
    /// Flip one bit in the body of holder frame k.
    FlipBit(usize),
    /// Send holder frame k twice.
    Replay(usize),
    /// Rewrite the length of holder frame k to 4 GiB - 1.
    HugeLength(usize),
}

/// A man in the middle between the standby and the holder at `upstream`, for one connection.
async fn proxy(upstream: SocketAddr, fault: Fault) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((client, _)) = l.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        });
        let mut hello = [0u8; HELLO_LEN];
        if sr.read_exact(&mut hello).await.is_err() || cw.write_all(&hello).await.is_err() {
            return;
        }
        let mut k = 0usize;
        loop {
            let mut hdr = [0u8; 12];
            if sr.read_exact(&mut hdr).await.is_err() {
                break;
            }
            let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let mut body = vec![0u8; len + 16];
            if sr.read_exact(&mut body).await.is_err() {
                break;
            }
            let mut frame = hdr.to_vec();
            frame.extend_from_slice(&body);
            match fault {
                Fault::DropAfter(n) if k == n => break,
                Fault::CutMid(n) if k == n => {
                    let _ = cw.write_all(&frame[..frame.len() / 2]).await;
                    break;
                }
                Fault::FlipBit(n) if k == n => frame[12 + len / 2] ^= 0x10,
                Fault::HugeLength(n) if k == n => frame[0..4].copy_from_slice(&[0xff; 4]),
                Fault::Replay(n) if k == n => {
                    let _ = cw.write_all(&frame).await;
                }
                _ => {}
            }
            if cw.write_all(&frame).await.is_err() {
                break;
            }
            k += 1;
        }
        drop(cw);
        up.abort();
    });
    addr
}

#[tokio::test]
async fn first_sync_incremental_change_and_delete() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("etc");
    make_tree(&src, 200, 2 << 20);
    let h = holder(&src).await;
    let target = tmp.path().join("bacula-etc");
    let s = Standby::new(&tmp.path().join("state"), Some(target.clone()));
    assert_eq!(replica_age(&s.cfg.state_dir), None);

    let t = Instant::now();
    let r = s.sync(h.addr).await.expect("first sync");
    let first = t.elapsed();
    assert_eq!((r.files_total, r.files_sent, r.generation), (200, 200, 1));
    assert!(r.changed);
    assert_eq!(
        snapshot(&s.current()),
        snapshot(&src),
        "tree, modes and hashes equal"
    );
    assert_eq!(
        snapshot(&target),
        snapshot(&src),
        "target resolves to the copy"
    );
    assert_eq!(
        std::fs::read_link(&target).expect("target link"),
        std::fs::canonicalize(replica_dir(&s.cfg.state_dir))
            .expect("canon")
            .join("current")
    );
    let age = replica_age(&s.cfg.state_dir).expect("age after sync");
    assert!(age < Duration::from_secs(5), "{age:?}");
    let rec = last_sync(&s.cfg.state_dir).expect("record");
    assert_eq!(rec.generation, 1);
    assert_eq!(rec.manifest_sha256, r.manifest_sha256);

    // Nothing changed: nothing sent, no new generation.
    let t = Instant::now();
    let r = s.sync(h.addr).await.expect("idle sync");
    let idle = t.elapsed();
    assert_eq!((r.files_sent, r.generation, r.changed), (0, 1, false));

    // One file changed: only it travels.
    let one = src.join("d3/sub0/f3.conf");
    std::fs::write(&one, b"Director { Name = new }\n").expect("edit");
    let t = Instant::now();
    let r = s.sync(h.addr).await.expect("incremental sync");
    let incr = t.elapsed();
    assert_eq!((r.files_sent, r.generation), (1, 2));
    assert_eq!(r.bytes_sent, 24);
    assert_eq!(snapshot(&s.current()), snapshot(&src));
    // A mode change alone makes a new generation without sending contents.
    std::fs::set_permissions(&one, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let r = s.sync(h.addr).await.expect("mode sync");
    assert_eq!((r.files_sent, r.generation, r.changed), (0, 3, true));
    assert_eq!(snapshot(&s.current()), snapshot(&src));

    // A deleted file disappears in the new generation; old generations are pruned to two.
    std::fs::remove_file(src.join("d0/sub0/f0.conf")).expect("rm");
    let r = s.sync(h.addr).await.expect("delete sync");
    assert_eq!(r.generation, 4);
    assert!(!s.current().join("d0/sub0/f0.conf").exists());
    assert_eq!(snapshot(&s.current()), snapshot(&src));
    assert_eq!(s.generations(), vec!["gen-3", "gen-4"]);
    assert_eq!(s.counters.snapshot().completed, 5);
    // The holder counts a session once it has read the acknowledgement, which may be just
    // after the standby returns.
    eventually(|| h.counters.snapshot().completed == 5).await;

    println!(
        "timings, 200 files / 2 MiB over 127.0.0.1: first sync {:.1} ms, unchanged {:.1} ms, \
         one file changed {:.1} ms",
        first.as_secs_f64() * 1e3,
        idle.as_secs_f64() * 1e3,
        incr.as_secs_f64() * 1e3
    );
}

/// First sync direct, then change every file and sync through `fault`; returns the tree as it
/// was after the first sync, the standby and the holder.
async fn sync_then_fault(
    tmp: &Path,
    fault: Fault,
) -> (
    BTreeMap<String, (u32, String)>,
    Standby,
    Holder,
    ReplicateError,
) {
    let src = tmp.join("etc");
    make_tree(&src, 20, 20_000);
    let h = holder(&src).await;
    let s = Standby::new(&tmp.join("state"), None);
    s.sync(h.addr).await.expect("first sync");
    let before = snapshot(&s.current());
    for i in 0..20 {
        let p = src
            .join(format!("d{}", i % 7))
            .join(format!("sub{}", i % 3))
            .join(format!("f{i}.conf"));
        std::fs::write(p, format!("changed {i}\n")).expect("edit");
    }
    let via = proxy(h.addr, fault).await;
    let err = s.sync(via).await.expect_err("faulty sync must fail");
    (before, s, h, err)
}

fn assert_untouched(before: &BTreeMap<String, (u32, String)>, s: &Standby) {
    assert_eq!(s.current_gen(), "gen-1");
    assert_eq!(
        &snapshot(&s.current()),
        before,
        "previous generation intact"
    );
    assert_eq!(s.generations(), vec!["gen-1"], "no partial generation left");
    assert_eq!(last_sync(&s.cfg.state_dir).map(|r| r.generation), Some(1));
}

#[tokio::test]
async fn interrupted_transfer_keeps_previous_generation() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Frame 0 is the manifest, frames 1..=20 the files: drop after 10 of them.
    let (before, s, h, err) = sync_then_fault(tmp.path(), Fault::DropAfter(11)).await;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::Closed,
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&before, &s);
    assert_eq!(s.counters.snapshot().interrupted, 1);
    // The next sync completes.
    let r = s.sync(h.addr).await.expect("resync");
    assert_eq!((r.files_sent, r.generation), (20, 2));
}

#[tokio::test]
async fn cut_inside_a_message_is_truncation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (before, s, _h, err) = sync_then_fault(tmp.path(), Fault::CutMid(5)).await;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::Truncated,
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&before, &s);
    assert_eq!(s.counters.snapshot().truncated, 1);
}

#[tokio::test]
async fn tampered_byte_rejected_and_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (before, s, _h, err) = sync_then_fault(tmp.path(), Fault::FlipBit(3)).await;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::BadMac { counter: 4 },
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&before, &s);
    assert_eq!(s.counters.snapshot().forged, 1);
    // Tampering with the manifest (the first message) is caught the same way.
    let via = proxy(_h.addr, Fault::FlipBit(0)).await;
    let err = s.sync(via).await.expect_err("tampered manifest");
    assert!(matches!(err, ReplicateError::Wire { .. }), "{err}");
    assert_untouched(&before, &s);
}

#[tokio::test]
async fn replayed_message_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (before, s, _h, err) = sync_then_fault(tmp.path(), Fault::Replay(2)).await;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::Replay {
                    got: 3,
                    expected: 4
                },
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&before, &s);
    assert_eq!(s.counters.snapshot().replayed, 1);
}

#[tokio::test]
async fn oversized_message_rejected_before_reading_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (before, s, _h, err) = sync_then_fault(tmp.path(), Fault::HugeLength(1)).await;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::Oversized { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&before, &s);
    assert_eq!(s.counters.snapshot().oversized, 1);
}

#[tokio::test]
async fn wrong_cluster_key_fails_handshake() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("etc");
    make_tree(&src, 5, 500);
    let h = holder(&src).await;
    let mut s = Standby::new(&tmp.path().join("state"), None);
    s.ep.key = key(8);
    let err = s.sync(h.addr).await.expect_err("wrong key");
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::ClosedUnauthenticated,
                ..
            }
        ),
        "{err}"
    );
    // The holder saw the bad key, and sent nothing about its tree.
    eventually(|| h.counters.snapshot().key_mismatch == 1).await;
    assert_eq!(s.current_gen(), "");

    // A holder of another cluster refuses the hello before anything is authenticated.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let counters_other = Arc::new(ReplicateCounters::default());
    let (_tx, rx) = watch::channel(false);
    let mut bad = holder_ep();
    bad.key = key(9);
    tokio::spawn(serve_sender(
        l,
        src.clone(),
        bad,
        counters_other.clone(),
        rx,
    ));
    s.ep.key = key(9);
    s.ep.cluster_id = CLUSTER + 1;
    let err = s.sync(addr).await.expect_err("other cluster");
    let _ = &counters_other;
    assert!(
        matches!(
            err,
            ReplicateError::Wire {
                source: WireError::ClosedUnauthenticated,
                ..
            }
        ),
        "{err}"
    );
}

/// A holder that knows the key but sends `manifest` (and then files for it).
async fn forged_holder(manifest: Manifest, files: Vec<(u32, Vec<u8>)>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((stream, _)) = l.accept().await else {
            return;
        };
        let ep = holder_ep();
        let me = agent::replicate::wire::Identity {
            cluster_id: CLUSTER,
            node_id: 1,
        };
        let Ok(mut ch) = Channel::handshake(
            stream,
            Role::Server,
            me,
            ep.key.expose(),
            1 << 20,
            Duration::from_secs(5),
        )
        .await
        else {
            return;
        };
        if ch.recv().await.is_err() {
            return;
        }
        let _ = ch.send(&Message::Manifest(manifest).encode()).await;
        let _ = ch.recv().await;
        for (index, data) in files {
            let _ = ch.send(&Message::File { index, data }.encode()).await;
        }
        let _ = ch.recv().await;
    });
    addr
}

fn file_entry(path: &str, data: &[u8]) -> Entry {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&Sha256::digest(data));
    Entry {
        path: path.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        kind: EntryKind::File {
            size: data.len() as u64,
            sha256,
        },
    }
}

#[tokio::test]
async fn forged_manifest_paths_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let s = Standby::new(&state, None);
    let outside = tmp.path().join("x");
    for p in [
        "../x".to_owned(),
        "../../x".to_owned(),
        outside.display().to_string(),
        "a/../../x".to_owned(),
    ] {
        let m = Manifest {
            root_mode: 0o755,
            entries: vec![file_entry(&p, b"pwned")],
            ..Manifest::default()
        };
        let addr = forged_holder(m, vec![(0, b"pwned".to_vec())]).await;
        let err = s.sync(addr).await.expect_err("traversal");
        assert!(
            matches!(
                err,
                ReplicateError::Tree {
                    source: TreeError::BadPath { .. },
                    ..
                }
            ),
            "{p}: {err}"
        );
    }
    assert!(!outside.exists());
    assert!(!state.join("x").exists());
    assert_eq!(s.counters.snapshot().bad_manifest, 4);
    assert_eq!(s.current_gen(), "");

    // Contents that do not match the manifest's hash are refused too.
    let m = Manifest {
        root_mode: 0o755,
        entries: vec![file_entry("a.conf", b"good")],
        ..Manifest::default()
    };
    let addr = forged_holder(m, vec![(0, b"evil".to_vec())]).await;
    let err = s.sync(addr).await.expect_err("hash");
    assert!(
        matches!(
            err,
            ReplicateError::Tree {
                source: TreeError::HashMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.counters.snapshot().hash_mismatch, 1);
    assert_eq!(s.current_gen(), "");
    assert!(s.generations().is_empty());
}

#[tokio::test]
async fn existing_real_directory_target_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("etc");
    make_tree(&src, 3, 300);
    let h = holder(&src).await;
    let target = tmp.path().join("opt-bacula-etc");
    std::fs::create_dir(&target).expect("real dir");
    std::fs::write(target.join("bacula-dir.conf"), b"keep me").expect("write");
    let s = Standby::new(&tmp.path().join("state"), Some(target.clone()));
    let err = s.sync(h.addr).await.expect_err("real directory");
    assert!(
        matches!(
            err,
            ReplicateError::Local(TreeError::TargetIsDirectory { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Move it away"), "{err}");
    assert_eq!(
        std::fs::read(target.join("bacula-dir.conf")).expect("still there"),
        b"keep me"
    );
    assert_eq!(h.counters.snapshot().completed, 0, "holder never contacted");
    // A symlink elsewhere is refused as well.
    let other = tmp.path().join("other");
    std::os::unix::fs::symlink(&src, &other).expect("link");
    let s2 = Standby::new(&tmp.path().join("state2"), Some(other));
    let err = s2.sync(h.addr).await.expect_err("foreign link");
    assert!(
        matches!(err, ReplicateError::Local(TreeError::TargetForeign { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn symlink_in_source_is_refused_by_the_holder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("etc");
    make_tree(&src, 3, 300);
    std::os::unix::fs::symlink("/etc/passwd", src.join("passwd")).expect("link");
    let h = holder(&src).await;
    let s = Standby::new(&tmp.path().join("state"), None);
    let err = s.sync(h.addr).await.expect_err("symlink");
    assert!(
        matches!(&err, ReplicateError::PeerAborted { reason, .. } if reason.contains("symlink")),
        "{err}"
    );
    assert_eq!(s.counters.snapshot().peer_aborted, 1);
}

#[tokio::test]
async fn limits_are_enforced_on_receive() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("etc");
    make_tree(&src, 10, 100_000);
    let h = holder(&src).await;
    let mut s = Standby::new(&tmp.path().join("state"), None);
    s.ep.limits = Limits {
        max_file_size: 1000,
        ..Limits::default()
    };
    let err = s.sync(h.addr).await.expect_err("too big");
    assert!(
        matches!(
            err,
            ReplicateError::Tree {
                source: TreeError::Limit { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.current_gen(), "");
}

#[test]
fn status_reports_replica_age_and_parses_older_reports() {
    // A report from an agent without replication parses, with no copy.
    let old = r#"{"cluster":"c","node":"a","node_id":1,"incarnation":3,"uptime_ms":5,
        "heartbeat_interval_ms":100,"deadtime_ms":1000,"peers":[],"links":[]}"#;
    let mut st: agent::runtime::Status = serde_json::from_str(old).expect("older report");
    assert_eq!(st.replica_age_ms, None);
    assert!(agent::cli::render(&st).contains("Director config copy: no copy"));
    st.replica_age_ms = Some(12_345);
    assert!(agent::cli::render(&st).contains("Director config copy: 12 s old"));
    let back: agent::runtime::Status =
        serde_json::from_str(&serde_json::to_string(&st).expect("encode")).expect("decode");
    assert_eq!(back, st);
}
