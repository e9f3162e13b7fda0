//! Content-addressed entries on disk. Knows keys and directories, not YAML, ops or the DAG.
//!
//! Layout under the cache root:
//! - `entries/<key>/` — `meta.json`, `log.txt` and `out/` (the stage's outputs). An entry exists
//!   only once it is complete: it is written under `tmp/` and renamed into place.
//! - `locks/<key>.lock` — held while a process computes that key, so two runs on one cache
//!   compute each stage once. `locks/<key>.job` names the Slurm job computing the key, so that
//!   a driver started after a killed one adopts the job (see `schedule::slurm`).
//! - `failed/<key>/` — the last failed attempt of a key (its log only), never used as an entry.
//! - `damaged/<key>.<time>/` — entries found damaged (a file missing, resized or changed), moved
//!   aside so that the stage is recomputed; kept for inspection until `gc`.
//! - `runs/<id>.json` — per pipeline file, the key each stage name had on its last run (for
//!   `pipeline status` to explain what changed).
//! - `filehash.json` — the memo of file content hashes.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub op: String,
    pub op_version: u32,
    pub engine_version: String,
    /// Stage names that resolved to this key when it was computed.
    pub stages: Vec<String>,
    pub fingerprint: Value,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub duration_s: f64,
    pub threads: usize,
    pub device: String,
    /// Output files (relative to `out/`) with the size and blake3 they had at commit.
    pub outputs: Vec<FileRecord>,
}

/// What an entry's output file was when it was committed; serving the entry checks the size,
/// `verify` the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// The state of a key's entry, as far as a check could tell.
#[derive(Debug)]
pub enum EntryState {
    Missing,
    /// Servable; its output records.
    Ok(Vec<FileRecord>),
    /// Why the entry cannot be served.
    Damaged(String),
}

impl EntryState {
    pub fn is_ok(&self) -> bool {
        matches!(self, EntryState::Ok(_))
    }
}

/// How closely to look at an entry before serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The metadata parses and every recorded file exists as a regular file of its size.
    Sizes,
    /// As `Sizes`, and every file's blake3 matches its record.
    Hashes,
}

#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
    /// `entries/`, open: checks resolve paths relative to it (shorter path walks per entry).
    entries: std::sync::Arc<File>,
}

/// Held while this process computes a key; released on drop (or by the OS if the process dies).
/// Processes a stage starts inherit the descriptor, so the lock outlives a killed engine for as
/// long as one of them still works on the key.
pub struct KeyLock {
    file: File,
}

impl KeyLock {
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

/// A half-written entry under `tmp/`; it becomes an entry only through [`Cache::commit`].
pub struct Pending {
    pub key: String,
    pub dir: PathBuf,
}

impl Pending {
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }
}

static PENDING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Cache {
    pub fn open(root: &Path) -> Result<Cache> {
        // Absolute, because stages run in their own folders and read their inputs by path.
        let root = std::path::absolute(root)
            .with_context(|| format!("resolving cache folder `{}`", root.display()))?;
        for sub in ["entries", "tmp", "locks", "runs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create cache folder `{}`", dir.display()))?;
        }
        let entries_path = root.join("entries");
        let entries = File::open(&entries_path)
            .with_context(|| format!("opening cache folder `{}`", entries_path.display()))?;
        Ok(Cache {
            root,
            entries: std::sync::Arc::new(entries),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("out")
    }

    /// Whether `key` has an entry that passes the cheap check (see [`Cache::check`]).
    pub fn has(&self, key: &str) -> bool {
        self.check(key, Check::Sizes).is_ok()
    }

    /// Looks at `key`'s entry: missing, servable, or damaged (and why).
    pub fn check(&self, key: &str, how: Check) -> EntryState {
        let dir = self.entry_dir(key);
        if !safe_key(key) {
            return EntryState::Missing;
        }
        let bytes = match self.read_in_entries(&format!("{key}/meta.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if fs::symlink_metadata(&dir).is_ok() {
                    EntryState::Damaged("its meta.json is missing".into())
                } else {
                    EntryState::Missing
                };
            }
            Err(e) => return EntryState::Damaged(format!("its meta.json cannot be read: {e}")),
        };
        // Only what the check needs: skipping the fingerprint keeps a no-op rerun of many stages
        // fast.
        #[derive(Deserialize)]
        struct Served {
            key: String,
            outputs: Vec<FileRecord>,
        }
        let meta: Served = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                let older = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| {
                    v["outputs"]
                        .as_array()
                        .is_some_and(|o| o.iter().all(Value::is_string))
                });
                return EntryState::Damaged(if older {
                    "it was written by an older version, without size and hash records".into()
                } else {
                    format!("its meta.json is unreadable ({e})")
                });
            }
        };
        if meta.key != key {
            return EntryState::Damaged(format!("its meta.json belongs to key {}", meta.key));
        }
        let out = dir.join("out");
        for record in &meta.outputs {
            let Some(path) = safe_join(&out, &record.path) else {
                return EntryState::Damaged(format!("it records an unsafe path `{}`", record.path));
            };
            match self.stat_in_entries(&format!("{key}/out/{}", record.path)) {
                Ok(m) if m.is_file() && m.size == record.size => {}
                Ok(m) if m.is_file() => {
                    return EntryState::Damaged(format!(
                        "`{}` has {} bytes, {} were committed",
                        record.path, m.size, record.size
                    ));
                }
                Ok(_) => {
                    return EntryState::Damaged(format!(
                        "`{}` is no longer a regular file",
                        record.path
                    ));
                }
                Err(_) => return EntryState::Damaged(format!("`{}` is missing", record.path)),
            }
            if how == Check::Hashes {
                match hash_file(&path) {
                    Ok(h) if h == record.blake3 => {}
                    Ok(_) => {
                        return EntryState::Damaged(format!(
                            "`{}` changed since it was committed (blake3 differs)",
                            record.path
                        ));
                    }
                    Err(e) => {
                        return EntryState::Damaged(format!(
                            "`{}` cannot be read: {e}",
                            record.path
                        ));
                    }
                }
            }
        }
        EntryState::Ok(meta.outputs)
    }

    /// Moves a damaged entry aside (under `damaged/`) so that its key is computed again. Requires
    /// the key's lock: nobody may be committing it meanwhile. Returns where it went.
    pub fn quarantine(&self, key: &str, _lock: &KeyLock) -> Result<PathBuf> {
        let damaged = self.root.join("damaged");
        fs::create_dir_all(&damaged).with_context(|| format!("creating {}", damaged.display()))?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dest = damaged.join(format!("{key}.{stamp}"));
        let src = self.entry_dir(key);
        fs::rename(&src, &dest)
            .with_context(|| format!("moving damaged entry {} aside", src.display()))?;
        Ok(dest)
    }

    /// Keys of every entry in the cache.
    pub fn keys(&self) -> Result<Vec<String>> {
        let entries = self.root.join("entries");
        let mut keys: Vec<String> = fs::read_dir(&entries)
            .with_context(|| format!("reading {}", entries.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        Ok(keys)
    }

    pub fn file_memo_path(&self) -> PathBuf {
        self.root.join("filehash.json")
    }

    pub fn read_meta(&self, key: &str) -> Result<Meta> {
        let path = self.entry_dir(key).join("meta.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// The stage names an entry's metadata lists, even from a metadata file that no longer
    /// parses as a whole (a damaged or older entry).
    pub fn read_meta_lossy(&self, key: &str) -> Option<String> {
        let bytes = fs::read(self.entry_dir(key).join("meta.json")).ok()?;
        let value: Value = serde_json::from_slice(&bytes).ok()?;
        let names: Vec<&str> = value
            .get("stages")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    }

    /// Blocks until no other process computes `key`.
    pub fn lock(&self, key: &str) -> Result<KeyLock> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        Ok(KeyLock {
            file: lock_file(&path)?,
        })
    }

    /// Names the cluster job computing `key` while it runs (written and read under the key's
    /// lock), so that a driver started after a killed one adopts the job.
    pub fn claim_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.job"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh temporary entry. Requires the key's lock, which also makes it safe to sweep away
    /// what an earlier, killed attempt left for the same key.
    pub fn begin(&self, key: &str, _lock: &KeyLock) -> Result<Pending> {
        let tmp = self.root.join("tmp");
        if let Ok(read) = fs::read_dir(&tmp) {
            for stale in read.flatten() {
                if stale.file_name().to_string_lossy().starts_with(key) {
                    let _ = fs::remove_dir_all(stale.path());
                }
            }
        }
        let seq = PENDING_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("{key}.{}.{seq}", std::process::id()));
        fs::create_dir_all(dir.join("out"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Pending {
            key: key.to_string(),
            dir,
        })
    }

    /// Records every output's size and hash, writes `meta.json`, makes the files read-only and
    /// renames the pending entry into place (replacing an older entry of the same key, as
    /// `--force` asks). Outputs must be regular files and folders: a symbolic link would let a
    /// later reader (publishing, a dependent stage) follow it out of the cache.
    /// On an error (a full disk) nothing is committed and the caller still owns `pending`.
    pub fn commit(&self, pending: &Pending, meta: &Meta) -> Result<()> {
        let out = pending.out_dir();
        let mut meta = meta.clone();
        meta.outputs = record_files(&out)?;
        let meta_path = pending.dir.join("meta.json");
        fs::write(&meta_path, serde_json::to_vec(&meta)?)
            .with_context(|| format!("writing {}", meta_path.display()))?;
        // Read-only: an accidental write through a path into the cache fails instead of
        // silently changing what every later consumer reads.
        for record in &meta.outputs {
            set_read_only(&out.join(&record.path));
        }
        set_read_only(&meta_path);
        let dest = self.entry_dir(&pending.key);
        if fs::symlink_metadata(&dest).is_ok() {
            let trash = pending.dir.with_extension("old");
            fs::rename(&dest, &trash).with_context(|| format!("replacing {}", dest.display()))?;
            let _ = fs::remove_dir_all(&trash);
        }
        fs::rename(&pending.dir, &dest)
            .with_context(|| format!("committing {}", dest.display()))?;
        Ok(())
    }

    /// Keeps a failed attempt's log under `failed/<key>`; its partial outputs are deleted first
    /// (they may be what filled the disk). Returns the log path.
    pub fn keep_failed(&self, pending: Pending) -> PathBuf {
        let _ = fs::remove_dir_all(pending.out_dir());
        let dest = self.root.join("failed").join(&pending.key);
        let _ = fs::create_dir_all(self.root.join("failed"));
        let _ = fs::remove_dir_all(&dest);
        match fs::rename(&pending.dir, &dest) {
            Ok(()) => dest.join("log.txt"),
            Err(_) => pending.log_path(),
        }
    }

    pub fn discard(&self, pending: Pending) {
        let _ = fs::remove_dir_all(&pending.dir);
    }

    fn runs_path(&self, pipeline: &Path) -> PathBuf {
        let id = blake3::hash(pipeline.to_string_lossy().as_bytes()).to_hex();
        self.root.join("runs").join(format!("{}.json", &id[..16]))
    }

    /// The key each stage name of this pipeline had when it last completed.
    pub fn last_keys(&self, pipeline: &Path) -> BTreeMap<String, String> {
        fs::read(self.runs_path(pipeline))
            .ok()
            .and_then(|b| serde_json::from_slice::<RunIndex>(&b).ok())
            .map(|r| r.stages)
            .unwrap_or_default()
    }

    pub fn record_keys(
        &self,
        pipeline: &Path,
        completed: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        let path = self.runs_path(pipeline);
        let mut stages = self.last_keys(pipeline);
        stages.extend(completed);
        let index = RunIndex {
            pipeline: pipeline.to_path_buf(),
            stages,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec(&index)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Deletes every entry whose key is not in `keep`, and leftovers of killed runs.
    pub fn gc(&self, keep: &HashSet<String>, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        let entries = self.root.join("entries");
        for entry in
            fs::read_dir(&entries).with_context(|| format!("reading {}", entries.display()))?
        {
            let entry = entry?;
            let key = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&key) {
                report.kept += 1;
                continue;
            }
            let bytes = dir_size(&entry.path());
            let meta = self.read_meta(&key).ok();
            if !dry_run {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
                let _ = fs::remove_file(self.root.join("locks").join(format!("{key}.lock")));
            }
            report.removed.push((
                key,
                meta.map(|m| m.stages.join(", ")).unwrap_or_default(),
                bytes,
            ));
        }
        for sub in ["tmp", "failed", "damaged"] {
            let dir = self.root.join(sub);
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            for leftover in read.flatten() {
                let name = leftover.file_name().to_string_lossy().into_owned();
                let key = name.split('.').next().unwrap_or_default().to_string();
                // A temporary folder whose key is locked belongs to a running process.
                if sub == "tmp" && self.is_locked(&key) {
                    continue;
                }
                report.leftover_bytes += dir_size(&leftover.path());
                if !dry_run {
                    let _ = fs::remove_dir_all(leftover.path());
                }
            }
        }
        Ok(report)
    }

    fn is_locked(&self, key: &str) -> bool {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        match File::options().write(true).open(&path) {
            Ok(f) => matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RunIndex {
    pipeline: PathBuf,
    stages: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct GcReport {
    pub kept: usize,
    /// (key, stage names, bytes)
    pub removed: Vec<(String, String, u64)>,
    pub leftover_bytes: u64,
}

pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|read| read.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Files under `dir`, relative to it, sorted. Symbolic links are listed as files, never
/// followed (a link to `/` must not make this walk the machine).
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = fs::read_dir(dir) else { return };
        for e in read.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &path, out);
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The size and blake3 of every file under `out`; an error for anything that is neither a regular
/// file nor a folder (symbolic links, sockets) or whose name is not UTF-8.
pub fn record_files(out: &Path) -> Result<Vec<FileRecord>> {
    let mut records = Vec::new();
    for rel in list_files(out) {
        let path = out.join(&rel);
        let m =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if !m.is_file() {
            anyhow::bail!(
                "output `{rel}` is {}; outputs must be regular files",
                if m.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a regular file"
                }
            );
        }
        if path.to_str().is_none() {
            anyhow::bail!("output `{rel}` has a name that is not UTF-8");
        }
        let blake3 = hash_file(&path).with_context(|| format!("hashing {}", path.display()))?;
        records.push(FileRecord {
            path: rel,
            size: m.len(),
            blake3,
        });
    }
    Ok(records)
}

/// blake3 of a file's content, hex (memory-mapped when large).
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Opens (creating) `path` and blocks until this process holds its exclusive lock. A link
/// planted at the lock's place is refused, not opened for writing.
pub fn lock_file(path: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Keys are hex digests; anything else never names an entry (and never a path).
fn safe_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The type and size of a file, as `fstatat` without following links tells them.
struct Stat {
    mode: u32,
    size: u64,
}

impl Stat {
    fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

impl Cache {
    /// Reads a file at a path relative to `entries/`.
    fn read_in_entries(&self, rel: &str) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd};
        let c = std::ffi::CString::new(rel).map_err(std::io::Error::other)?;
        // SAFETY: openat on a directory descriptor we own, with a NUL-terminated path; the
        // returned descriptor is owned by the File below.
        let fd = unsafe {
            libc::openat(
                self.entries.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        // Plain reads into a stack buffer: `read_to_end` would first ask the size (two more
        // system calls per entry), and metadata files are small.
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(bytes),
                // A short read of a regular file is its end: saves the read that returns 0.
                Ok(n) if n < buf.len() => {
                    bytes.extend_from_slice(&buf[..n]);
                    return Ok(bytes);
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `lstat` of a path relative to `entries/`.
    fn stat_in_entries(&self, rel: &str) -> std::io::Result<Stat> {
        use std::os::fd::AsRawFd;
        let c = std::ffi::CString::new(rel).map_err(std::io::Error::other)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstatat writes a stat struct for a NUL-terminated path.
        let rc = unsafe {
            libc::fstatat(
                self.entries.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so the struct is initialised.
        let st = unsafe { st.assume_init() };
        Ok(Stat {
            mode: st.st_mode,
            size: st.st_size as u64,
        })
    }
}

/// `base/rel` where `rel` is a plain relative path (no `..`, no root): records come from a file
/// that could have been edited.
fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    use std::path::Component;
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| base.join(rel))
}

fn set_read_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o444));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> Meta {
        Meta {
            key: key.into(),
            op: "shell".into(),
            op_version: 1,
            engine_version: "test".into(),
            stages: vec!["a".into()],
            fingerprint: Value::Null,
            started_at: 0.0,
            duration_s: 0.0,
            threads: 1,
            device: "cpu".into(),
            outputs: vec![],
        }
    }

    #[test]
    fn miss_commit_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert!(!cache.has("k1"));
        let lock = cache.lock("k1").unwrap();
        let pending = cache.begin("k1", &lock).unwrap();
        fs::write(pending.out_dir().join("x.txt"), "hi").unwrap();
        assert!(!cache.has("k1"), "a pending entry is not an entry");
        cache.commit(&pending, &meta("k1")).unwrap();
        assert!(cache.has("k1"));
        assert_eq!(
            fs::read_to_string(cache.out_dir("k1").join("x.txt")).unwrap(),
            "hi"
        );
        assert_eq!(cache.read_meta("k1").unwrap().key, "k1");
    }

    #[test]
    fn abandoned_attempt_leaves_no_entry_and_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        {
            let lock = cache.lock("k2").unwrap();
            let pending = cache.begin("k2", &lock).unwrap();
            fs::write(pending.out_dir().join("partial"), "x").unwrap();
            std::mem::forget(pending); // as if the process died here
        }
        assert!(!cache.has("k2"));
        let lock = cache.lock("k2").unwrap();
        let _fresh = cache.begin("k2", &lock).unwrap();
        let leftovers = fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 1, "the stale attempt was swept");
    }

    #[test]
    fn an_entry_from_an_older_version_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let entry = cache.entry_dir("k3");
        fs::create_dir_all(entry.join("out")).unwrap();
        fs::write(entry.join("out/a.txt"), "a").unwrap();
        fs::write(
            entry.join("meta.json"),
            r#"{"key": "k3", "op": "shell", "outputs": ["a.txt"]}"#,
        )
        .unwrap();
        match cache.check("k3", Check::Sizes) {
            EntryState::Damaged(why) => assert!(why.contains("older version"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gc_keeps_reachable_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for key in ["keep", "drop"] {
            let lock = cache.lock(key).unwrap();
            let p = cache.begin(key, &lock).unwrap();
            fs::write(p.out_dir().join("f"), "12345").unwrap();
            cache.commit(&p, &meta(key)).unwrap();
        }
        let keep: HashSet<String> = ["keep".to_string()].into();
        let report = cache.gc(&keep, false).unwrap();
        assert_eq!(report.kept, 1);
        assert_eq!(report.removed.len(), 1);
        assert!(cache.has("keep") && !cache.has("drop"));
    }
}
