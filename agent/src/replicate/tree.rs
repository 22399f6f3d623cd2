//! The replica on disk: walking a source tree into a manifest, checking a received manifest,
//! staging a new generation and switching to it atomically.
//!
//! # Layout
//!
//! ```text
//! <state_dir>/replica/
//!     lock                 flock(2): one sync at a time per state directory
//!     gen-41/              the previous complete generation
//!     gen-42/              the current generation (a complete tree)
//!     gen-43.partial/      a generation being staged; never pointed at, removed on failure
//!     current -> gen-42    replaced by rename(2), the only switch
//!     last-sync.json       the last successful sync (time, generation, manifest hash)
//! /opt/bacula/etc -> <state_dir>/replica/current
//! ```
//!
//! A generation is staged completely in `gen-N.partial` (every file written, hashed against
//! the manifest and fsynced; every directory fsynced), renamed to `gen-N`, and only then does
//! `current` move, by renaming a fresh symlink over it. Whatever fails or is interrupted
//! before that rename leaves `current` at the last complete generation, so a half-copied tree
//! is never used. Unchanged files are copied from the current generation (re-hashed while
//! copying), never hard-linked, so generations share no inode and an in-place edit or a mode
//! change in one cannot alter another.
//!
//! Only directories and regular files are replicated. A symlink, device, socket or FIFO in the
//! source fails the sync on the holder with a message naming it: the Director's configuration
//! is plain files, and a symlink in the replica could point a later write, or the Director,
//! outside the tree. Permission bits are kept (`mode & 0o777`, no set-id or sticky bits);
//! numeric owner and group are kept when the receiver runs as root, which the Director's
//! `root:bacula 0640` files need on the standby.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wire::{Entry, EntryKind, Manifest, Message};
use super::Limits;

/// Errors of the on-disk side.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The source holds something other than a directory or regular file.
    #[error("{path}: {what} cannot be replicated (only directories and regular files are)")]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A limit on the tree was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    Limit {
        /// Which limit, with the offending path or count.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A received manifest names a path that must not be created.
    #[error("refused path {path:?}: {reason}")]
    BadPath {
        /// The path, lossily decoded.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file's contents do not match the manifest's hash or size.
    #[error("{path}: contents do not match the manifest (sha256 or size)")]
    HashMismatch {
        /// The file.
        path: String,
    },
    /// Another sync holds the replica lock.
    #[error("{path}: another sync is running")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The target exists as a real directory.
    #[error(
        "{path} is a real directory; watchkeeper never deletes it. Move it away (for example \
         `mv {path} {path}.orig`) so it can be replaced by a symlink to {replica}"
    )]
    TargetIsDirectory {
        /// The target.
        path: PathBuf,
        /// What it should link to.
        replica: PathBuf,
    },
    /// The target exists and is neither a directory nor our symlink.
    #[error("{path} exists and is not a symlink to {replica} ({found}); refusing to touch it")]
    TargetForeign {
        /// The target.
        path: PathBuf,
        /// What it should link to.
        replica: PathBuf,
        /// What was found.
        found: String,
    },
}

/// The record of the last successful sync, `<state_dir>/replica/last-sync.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    /// When it completed, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Generation `current` pointed at afterwards.
    pub generation: u64,
    /// SHA-256 of the encoded manifest, hex.
    pub manifest_sha256: String,
    /// Regular files in the tree.
    pub files: u64,
    /// Bytes in those files.
    pub bytes: u64,
}

/// The replica directory under a state directory.
pub fn replica_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(REPLICA_DIR)
}

/// Reads the record of the last successful sync, if there is a readable one.
pub fn last_sync(state_dir: &Path) -> Option<LastSync> {
    let text = fs::read(replica_dir(state_dir).join(LAST_SYNC)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Time since the last successful sync, measured on the wall clock (the record must survive
/// restarts). A record from the future (clock stepped back) reads as zero.
pub fn replica_age(state_dir: &Path) -> Option<Duration> {
    let rec = last_sync(state_dir)?;
    let at = UNIX_EPOCH + Duration::from_millis(rec.unix_ms);
    Some(
        SystemTime::now()
            .duration_since(at)
            .unwrap_or(Duration::ZERO),
    )
}

/// Walks `root` into a manifest, hashing every file. Symlinks (other than `root` itself),
/// devices, sockets and FIFOs are refused.
pub(crate) fn walk(root: &Path, limits: &Limits) -> Result<Manifest, TreeError> {
    let meta = fs::metadata(root).map_err(io("stat", root))?;
    if !meta.is_dir() {
        return Err(TreeError::Unsupported {
            path: root.to_owned(),
            what: "a non-directory root",
        });
    }
    let mut m = Manifest {
        root_mode: meta.mode() & MODE_MASK,
        root_uid: meta.uid(),
        root_gid: meta.gid(),
        entries: Vec::new(),
    };
    let mut total: u64 = 0;
    // Explicit stack: depth is bounded by the path length limit, the entry count by max_files.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(OsStr::from_bytes(&rel));
        let rd = fs::read_dir(&dir).map_err(io("read directory", &dir))?;
        for de in rd {
            let de = de.map_err(io("read directory", &dir))?;
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(de.file_name().as_bytes());
            let full = de.path();
            if path.len() > limits.max_path_len {
                return Err(TreeError::Limit {
                    what: format!("path length of {}", full.display()),
                    limit: limits.max_path_len as u64,
                });
            }
            if m.entries.len() >= limits.max_files {
                return Err(TreeError::Limit {
                    what: format!("entry count of {}", root.display()),
                    limit: limits.max_files as u64,
                });
            }
            let md = fs::symlink_metadata(&full).map_err(io("stat", &full))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                EntryKind::Dir
            } else if ft.is_file() {
                if md.len() > limits.max_file_size {
                    return Err(TreeError::Limit {
                        what: format!("size of {}", full.display()),
                        limit: limits.max_file_size,
                    });
                }
                let (size, sha256) = hash_file(&full, limits.max_file_size)?;
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(TreeError::Limit {
                        what: format!("total size of {}", root.display()),
                        limit: limits.max_total_bytes,
                    });
                }
                EntryKind::File { size, sha256 }
            } else {
                return Err(TreeError::Unsupported {
                    path: full,
                    what: if ft.is_symlink() {
                        "a symlink"
                    } else {
                        "a special file"
                    },
                });
            };
            m.entries.push(Entry {
                path,
                mode: md.mode() & MODE_MASK,
                uid: md.uid(),
                gid: md.gid(),
                kind,
            });
        }
    }
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(m)
}

/// Checks a received manifest against the limits and the path rules: relative paths of
/// non-empty components other than `.` and `..`, no NUL, each path once, every parent listed
/// as a directory. Returns the total bytes of its files.
pub(crate) fn check_manifest(m: &Manifest, limits: &Limits) -> Result<u64, TreeError> {
    if m.entries.len() > limits.max_files {
        return Err(TreeError::Limit {
            what: format!("manifest of {} entries", m.entries.len()),
            limit: limits.max_files as u64,
        });
    }
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut total: u64 = 0;
    for e in &m.entries {
        let bad = |reason| TreeError::BadPath {
            path: String::from_utf8_lossy(&e.path).into_owned(),
            reason,
        };
        check_path(&e.path, limits).map_err(bad)?;
        if !seen.insert(&e.path) {
            return Err(bad("listed twice"));
        }
        if let Some(cut) = e.path.iter().rposition(|&c| c == b'/') {
            if !dirs.contains(&e.path[..cut]) {
                return Err(bad("parent is not a directory listed before it"));
            }
        }
        match e.kind {
            EntryKind::Dir => {
                dirs.insert(&e.path);
            }
            EntryKind::File { size, .. } => {
                if size > limits.max_file_size {
                    return Err(TreeError::Limit {
                        what: format!("size of {}", String::from_utf8_lossy(&e.path)),
                        limit: limits.max_file_size,
                    });
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(TreeError::Limit {
                        what: "total size of the manifest".to_owned(),
                        limit: limits.max_total_bytes,
                    });
                }
            }
        }
    }
    Ok(total)
}

fn check_path(p: &[u8], limits: &Limits) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.len() > limits.max_path_len {
        return Err("path too long");
    }
    if p.contains(&0) {
        return Err("NUL byte in path");
    }
    if p[0] == b'/' {
        return Err("absolute path");
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty path component"),
            b"." | b".." => return Err("`.` or `..` component"),
            _ if c.len() > NAME_MAX => return Err("path component too long"),
            _ => {}
        }
    }
    Ok(())
}

/// Which files of `remote` the receiver must fetch, given its current tree `local`: those it
/// lacks as a regular file with the same hash.
pub(crate) fn needed(remote: &Manifest, local: Option<&Manifest>) -> Vec<u32> {
    let have: HashMap<&[u8], &[u8; 32]> = local
        .map(|l| {
            l.entries
                .iter()
                .filter_map(|e| match &e.kind {
                    EntryKind::File { sha256, .. } => Some((e.path.as_slice(), sha256)),
                    EntryKind::Dir => None,
                })
                .collect()
        })
        .unwrap_or_default();
    remote
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            EntryKind::File { sha256, .. } if have.get(e.path.as_slice()) != Some(&sha256) => {
                u32::try_from(i).ok()
            }
            _ => None,
        })
        .collect()
}

/// Whether the local tree already is the remote one (contents and modes; owners too when
/// `owners` is set), so no new generation is needed.
pub(crate) fn same_tree(remote: &Manifest, local: &Manifest, owners: bool) -> bool {
    let strip = |m: &Manifest| -> Manifest {
        let mut m = m.clone();
        if !owners {
            m.root_uid = 0;
            m.root_gid = 0;
            for e in &mut m.entries {
                e.uid = 0;
                e.gid = 0;
            }
        }
        m
    };
    strip(remote) == strip(local)
}

/// SHA-256 of the encoded manifest, hex.
pub(crate) fn manifest_hash(m: &Manifest) -> String {
    hex(&Sha256::digest(Message::Manifest(m.clone()).encode()))
}

/// An exclusive hold on a state directory's replica, for one sync.
pub(crate) struct Replica {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
    owners: bool,
}

impl Replica {
    /// Creates the replica directory if needed, takes its lock and removes leftovers of
    /// interrupted syncs (partial generations, temporary links).
    pub(crate) fn open(state_dir: &Path) -> Result<Self, TreeError> {
        let dir = replica_dir(state_dir);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let dir = fs::canonicalize(&dir).map_err(io("resolve", &dir))?;
        let lock_path = dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| TreeError::Busy {
                path: lock_path.clone(),
            })?;
        let r = Self {
            dir,
            _lock: lock,
            owners: nix::unistd::geteuid().is_root(),
        };
        for name in r.names()? {
            let p = r.dir.join(&name);
            if name.ends_with(PARTIAL_SUFFIX) {
                fs::remove_dir_all(&p).map_err(io("remove leftover", &p))?;
            } else if name.ends_with(TMP_SUFFIX) {
                fs::remove_file(&p).map_err(io("remove leftover", &p))?;
            }
        }
        Ok(r)
    }

    /// Whether owners are replicated (the receiver runs as root).
    pub(crate) fn owners(&self) -> bool {
        self.owners
    }

    /// The `current` link's path; the target symlink points here.
    pub(crate) fn current_link(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// The generation `current` points at, if any.
    pub(crate) fn current(&self) -> Option<u64> {
        let t = fs::read_link(self.current_link()).ok()?;
        parse_gen(t.to_str()?)
    }

    /// Walks the current generation. `None` if there is none or it cannot be walked (then
    /// every file is fetched again).
    pub(crate) fn current_manifest(&self, limits: &Limits) -> Option<Manifest> {
        let g = self.current()?;
        walk(&self.dir.join(gen_name(g)), limits).ok()
    }

    /// Starts staging the next generation.
    pub(crate) fn stage(&self, manifest: Manifest) -> Result<Staging, TreeError> {
        let mut next = self.current().unwrap_or(0);
        for name in self.names()? {
            if let Some(g) = parse_gen(&name) {
                next = next.max(g);
            }
        }
        let generation = next + 1;
        let path = self
            .dir
            .join(format!("{}{PARTIAL_SUFFIX}", gen_name(generation)));
        fs::create_dir(&path).map_err(io("create", &path))?;
        set_mode(&path, 0o700)?;
        let s = Staging {
            path,
            generation,
            manifest,
            received: 0,
            written: Vec::new(),
            done: false,
        };
        for e in &s.manifest.entries {
            if e.kind == EntryKind::Dir {
                let p = s.path.join(OsStr::from_bytes(&e.path));
                fs::create_dir(&p).map_err(io("create", &p))?;
                set_mode(&p, 0o700)?;
            }
        }
        Ok(s)
    }

    /// Finishes `staging`: copies the files it did not receive from the current generation,
    /// sets modes and owners, fsyncs everything, renames it into place and switches
    /// `current` to it. Removes generations older than the previous one.
    pub(crate) fn commit(&self, mut staging: Staging, received: &[u32]) -> Result<u64, TreeError> {
        let prev = self.current();
        let received: HashSet<u32> = received.iter().copied().collect();
        if let Some(pg) = prev {
            let from = self.dir.join(gen_name(pg));
            let entries = staging.manifest.entries.clone();
            for (i, e) in entries.iter().enumerate() {
                let EntryKind::File { size, sha256 } = &e.kind else {
                    continue;
                };
                if u32::try_from(i).is_ok_and(|i| received.contains(&i)) {
                    continue;
                }
                let src = from.join(OsStr::from_bytes(&e.path));
                let mut f = File::open(&src).map_err(io("open", &src))?;
                let mut data = Vec::new();
                Read::take(&mut f, size.saturating_add(1))
                    .read_to_end(&mut data)
                    .map_err(io("read", &src))?;
                staging.write_file(e, *size, sha256, &data, self.owners)?;
            }
        }
        // Every file must now be present and hashed; a count short of the manifest means a
        // file was neither received nor available to copy.
        let files = staging
            .manifest
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count();
        if staging.received != files {
            return Err(TreeError::HashMismatch {
                path: "(files missing from the transfer)".to_owned(),
            });
        }
        // Every file must be durable before anything can point at this generation.
        for p in &staging.written {
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync", p))?;
        }
        // Directories: final modes and owners deepest first, then fsync each.
        for e in staging.manifest.entries.iter().rev() {
            if e.kind == EntryKind::Dir {
                let p = staging.path.join(OsStr::from_bytes(&e.path));
                finish_dir(&p, e.mode, e.uid, e.gid, self.owners)?;
            }
        }
        let m = &staging.manifest;
        finish_dir(
            &staging.path,
            m.root_mode,
            m.root_uid,
            m.root_gid,
            self.owners,
        )?;
        let generation = staging.generation;
        let final_path = self.dir.join(gen_name(generation));
        fs::rename(&staging.path, &final_path).map_err(io("rename", &staging.path))?;
        staging.done = true;
        fsync_dir(&self.dir)?;
        self.switch(generation)?;
        self.prune(generation, prev)?;
        Ok(generation)
    }

    /// Points `current` at generation `g`: a new symlink under a temporary name, renamed over
    /// `current` (atomic), then the directory fsynced so the switch survives a crash.
    fn switch(&self, g: u64) -> Result<(), TreeError> {
        let tmp = self.dir.join(format!("{CURRENT}{TMP_SUFFIX}"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(gen_name(g), &tmp).map_err(io("symlink", &tmp))?;
        let cur = self.current_link();
        fs::rename(&tmp, &cur).map_err(io("rename", &cur))?;
        fsync_dir(&self.dir)
    }

    /// Removes every generation but `keep` and `prev`.
    fn prune(&self, keep: u64, prev: Option<u64>) -> Result<(), TreeError> {
        for name in self.names()? {
            match parse_gen(&name) {
                Some(g) if g != keep && Some(g) != prev => {
                    let p = self.dir.join(&name);
                    make_writable(&p);
                    fs::remove_dir_all(&p).map_err(io("remove old generation", &p))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the sync record atomically (temporary file, fsync, rename, fsync directory).
    pub(crate) fn record(&self, rec: &LastSync) -> Result<(), TreeError> {
        let path = self.dir.join(LAST_SYNC);
        let tmp = self.dir.join(format!("{LAST_SYNC}{TMP_SUFFIX}"));
        let text = serde_json::to_vec_pretty(rec).map_err(|e| TreeError::Io {
            op: "encode",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(&text).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        fsync_dir(&self.dir)
    }

    fn names(&self) -> Result<Vec<String>, TreeError> {
        let rd = fs::read_dir(&self.dir).map_err(io("read directory", &self.dir))?;
        let mut v = Vec::new();
        for de in rd {
            let de = de.map_err(io("read directory", &self.dir))?;
            if let Ok(s) = de.file_name().into_string() {
                v.push(s);
            }
        }
        Ok(v)
    }
}

/// A generation being staged. Dropped without commit, it removes itself.
pub(crate) struct Staging {
    path: PathBuf,
    generation: u64,
    manifest: Manifest,
    received: usize,
    written: Vec<PathBuf>,
    done: bool,
}

impl Staging {
    /// Writes the file at manifest index `index` with `data`, after checking size and hash.
    pub(crate) fn receive(
        &mut self,
        index: u32,
        data: &[u8],
        owners: bool,
    ) -> Result<(), TreeError> {
        let e = self
            .manifest
            .entries
            .get(index as usize)
            .cloned()
            .ok_or(TreeError::BadPath {
                path: format!("#{index}"),
                reason: "index outside the manifest",
            })?;
        let EntryKind::File { size, sha256 } = e.kind else {
            return Err(TreeError::BadPath {
                path: String::from_utf8_lossy(&e.path).into_owned(),
                reason: "contents sent for a directory",
            });
        };
        self.write_file(&e, size, &sha256, data, owners)
    }

    fn write_file(
        &mut self,
        e: &Entry,
        size: u64,
        sha256: &[u8; 32],
        data: &[u8],
        owners: bool,
    ) -> Result<(), TreeError> {
        if data.len() as u64 != size || Sha256::digest(data).as_slice() != sha256 {
            return Err(TreeError::HashMismatch {
                path: String::from_utf8_lossy(&e.path).into_owned(),
            });
        }
        let p = self.path.join(OsStr::from_bytes(&e.path));
        // create_new: a path can be written once; O_NOFOLLOW: never through a link.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(io("create", &p))?;
        f.write_all(data).map_err(io("write", &p))?;
        if owners {
            std::os::unix::fs::fchown(&f, Some(e.uid), Some(e.gid)).map_err(io("chown", &p))?;
        }
        f.set_permissions(Permissions::from_mode(e.mode & MODE_MASK))
            .map_err(io("chmod", &p))?;
        // fsync comes at commit: one here would cost a journal commit per file, while fsyncs
        // issued back to back at the end mostly find their data already committed by the
        // first (the idea of git's batch fsync mode).
        self.written.push(p);
        self.received += 1;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            make_writable(&self.path);
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes sure `target` is, or can become, a symlink to `current`: absent, or already that
/// symlink. A real directory or anything else there is refused and left alone.
pub(crate) fn check_target(target: &Path, current: &Path) -> Result<bool, TreeError> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TreeError::Io {
            op: "stat",
            path: target.to_owned(),
            source: e,
        }),
        Ok(md) if md.file_type().is_symlink() => {
            let to = fs::read_link(target).map_err(io("read link", target))?;
            if to == current {
                Ok(true)
            } else {
                Err(TreeError::TargetForeign {
                    path: target.to_owned(),
                    replica: current.to_owned(),
                    found: format!("a symlink to {}", to.display()),
                })
            }
        }
        Ok(md) if md.is_dir() => Err(TreeError::TargetIsDirectory {
            path: target.to_owned(),
            replica: current.to_owned(),
        }),
        Ok(_) => Err(TreeError::TargetForeign {
            path: target.to_owned(),
            replica: current.to_owned(),
            found: "a file".to_owned(),
        }),
    }
}

/// What [`adopt_target`] found at the target and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAdoption {
    /// The target already was the symlink to the copy.
    AlreadyLinked,
    /// Nothing was there; the symlink was created.
    Linked,
    /// A real directory was there: it was renamed to `aside` and the symlink put in its place.
    MovedAside {
        /// Where the directory is now.
        aside: PathBuf,
    },
}

/// Makes `target` the symlink to the replica's `current` generation under `state_dir`, moving
/// a real directory there aside first (the role-reversal rule in the module docs). Refuses when
/// there is no complete generation yet, and leaves a file or a foreign symlink alone.
pub fn adopt_target(state_dir: &Path, target: &Path) -> Result<TargetAdoption, TreeError> {
    let dir = replica_dir(state_dir);
    let dir = fs::canonicalize(&dir).map_err(io("resolve", &dir))?;
    let current = dir.join(CURRENT);
    // Only a complete generation may take the directory's place.
    fs::read_link(&current).map_err(io("read link", &current))?;
    let md = match fs::symlink_metadata(target) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            link_target(target, &current)?;
            return Ok(TargetAdoption::Linked);
        }
        Err(e) => return Err(io("stat", target)(e)),
    };
    if !md.file_type().is_dir() {
        check_target(target, &current)?;
        return Ok(TargetAdoption::AlreadyLinked);
    }
    let aside = aside_name(target)?;
    fs::rename(target, &aside).map_err(io("move aside", target))?;
    if let Err(e) = std::os::unix::fs::symlink(&current, target) {
        // Put the directory back rather than leave the path empty.
        let _ = fs::rename(&aside, target);
        return Err(io("symlink", target)(e));
    }
    if let Some(p) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsync_dir(p)?;
    }
    Ok(TargetAdoption::MovedAside { aside })
}

/// A free name `<target>.before-watchkeeper-<unix seconds>[-n]` beside `target`. rename(2)
/// would replace an empty directory of that name, so the name must not exist at all.
fn aside_name(target: &Path) -> Result<PathBuf, TreeError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut base = target.as_os_str().to_owned();
    base.push(format!("{ASIDE_INFIX}{secs}"));
    for n in 0..MAX_ASIDE_TRIES {
        let mut name = base.clone();
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let p = PathBuf::from(name);
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(io("stat", &p)(e)),
            Ok(_) => {}
        }
    }
    Err(TreeError::Limit {
        what: format!("directories moved aside beside {}", target.display()),
        limit: MAX_ASIDE_TRIES,
    })
}

/// Creates the symlink `target -> current` if it is absent. symlink(2) fails rather than
/// replace anything that appeared meanwhile, which is then checked (and refused) again.
pub(crate) fn link_target(target: &Path, current: &Path) -> Result<(), TreeError> {
    if check_target(target, current)? {
        return Ok(());
    }
    match std::os::unix::fs::symlink(current, target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_target(target, current)?;
        }
        Err(e) => {
            return Err(TreeError::Io {
                op: "symlink",
                path: target.to_owned(),
                source: e,
            })
        }
    }
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => Ok(()),
    }
}

/// Hex of bytes, lower case.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Reads a file of at most `max` bytes, returning its contents.
pub(crate) fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, TreeError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("open", path))?;
    let mut data = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io("read", path))?;
    if data.len() as u64 > max {
        return Err(TreeError::Limit {
            what: format!("size of {}", path.display()),
            limit: max,
        });
    }
    Ok(data)
}

fn hash_file(path: &Path, max: u64) -> Result<(u64, [u8; 32]), TreeError> {
    let data = read_file(path, max)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(&data));
    Ok((data.len() as u64, out))
}

fn finish_dir(p: &Path, mode: u32, uid: u32, gid: u32, owners: bool) -> Result<(), TreeError> {
    if owners {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io("chown", p))?;
    }
    set_mode(p, mode & MODE_MASK)?;
    fsync_dir(p)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), TreeError> {
    fs::set_permissions(p, Permissions::from_mode(mode)).map_err(io("chmod", p))
}

fn fsync_dir(p: &Path) -> Result<(), TreeError> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", p))
}

/// Gives the owner write and search permission on every directory under `p`, so that a tree
/// with read-only directories can be removed when not running as root. Best effort.
fn make_writable(p: &Path) {
    let mut stack = vec![p.to_owned()];
    let mut budget = MAX_CLEANUP_DIRS;
    while let Some(d) = stack.pop() {
        if budget == 0 {
            return;
        }
        budget -= 1;
        let Ok(md) = fs::symlink_metadata(&d) else {
            continue;
        };
        if !md.is_dir() {
            continue;
        }
        let _ = fs::set_permissions(&d, Permissions::from_mode((md.mode() & 0o777) | 0o700));
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn gen_name(g: u64) -> String {
    format!("{GEN_PREFIX}{g}")
}

fn parse_gen(name: &str) -> Option<u64> {
    let n = name.strip_prefix(GEN_PREFIX)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Permission bits kept: set-id and sticky bits are dropped so a replicated file can never
/// gain privileges on the standby.
const MODE_MASK: u32 = 0o777;
/// Longest path component Linux accepts.
const NAME_MAX: usize = 255;
/// Bound on directories visited when clearing a tree for removal.
const MAX_CLEANUP_DIRS: usize = 100_000;
/// Names tried for one directory moved aside within the same second.
const MAX_ASIDE_TRIES: u64 = 100;
/// Between the target and the time in the name of a directory moved aside.
const ASIDE_INFIX: &str = ".before-watchkeeper-";
const REPLICA_DIR: &str = "replica";
const CURRENT: &str = "current";
const LOCK: &str = "lock";
const LAST_SYNC: &str = "last-sync.json";
const GEN_PREFIX: &str = "gen-";
const PARTIAL_SUFFIX: &str = ".partial";
const TMP_SUFFIX: &str = ".tmp";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, dir: bool) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind: if dir {
                EntryKind::Dir
            } else {
                EntryKind::File {
                    size: 0,
                    sha256: [0; 32],
                }
            },
        }
    }

    fn check(entries: Vec<Entry>) -> Result<u64, TreeError> {
        check_manifest(
            &Manifest {
                entries,
                ..Manifest::default()
            },
            &Limits::default(),
        )
    }

    #[test]
    fn traversal_and_odd_paths_refused() {
        for p in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "",
            "a\0b",
        ] {
            assert!(
                matches!(check(vec![entry(p, false)]), Err(TreeError::BadPath { .. })),
                "{p:?}"
            );
        }
        assert!(check(vec![entry("a", true), entry("a/b", false)]).is_ok());
        assert!(
            check(vec![entry("a/b", false)]).is_err(),
            "parent not listed"
        );
        assert!(check(vec![entry("a", false), entry("a", false)]).is_err());
        assert!(check(vec![entry("a", false), entry("a/b", false)]).is_err());
    }

    #[test]
    fn adopt_moves_a_real_directory_aside_and_refuses_the_rest() -> Result<(), TreeError> {
        let tmp = tempfile::tempdir().map_err(io("tempdir", Path::new("/tmp")))?;
        let state = tmp.path().join("state");
        let target = tmp.path().join("etc");
        fs::create_dir(&target).map_err(io("mkdir", &target))?;
        fs::write(target.join("own.conf"), b"mine").map_err(io("write", &target))?;
        // No complete generation yet: the directory stays.
        Replica::open(&state)?;
        assert!(adopt_target(&state, &target).is_err());
        assert!(target.join("own.conf").is_file());
        let r = Replica::open(&state)?;
        let staging = r.stage(Manifest::default())?;
        r.commit(staging, &[])?;
        drop(r);
        let TargetAdoption::MovedAside { aside } = adopt_target(&state, &target)? else {
            panic!("a real directory is moved aside");
        };
        assert_eq!(
            fs::read(aside.join("own.conf")).ok().as_deref(),
            Some(&b"mine"[..])
        );
        assert!(aside.to_string_lossy().contains(".before-watchkeeper-"));
        assert_eq!(
            adopt_target(&state, &target)?,
            TargetAdoption::AlreadyLinked
        );
        // A foreign symlink is left alone.
        let other = tmp.path().join("other");
        std::os::unix::fs::symlink(&aside, &other).map_err(io("symlink", &other))?;
        assert!(matches!(
            adopt_target(&state, &other),
            Err(TreeError::TargetForeign { .. })
        ));
        Ok(())
    }

    #[test]
    fn generation_names() {
        assert_eq!(parse_gen("gen-12"), Some(12));
        assert_eq!(parse_gen("gen-12.partial"), None);
        assert_eq!(parse_gen("gen-"), None);
        assert_eq!(parse_gen("current"), None);
    }
}
