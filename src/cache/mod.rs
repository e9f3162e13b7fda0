//! Content-addressed entries on disk. Knows keys and directories, not YAML, ops or the DAG.
//!
//! Layout under the cache root:
//! - `entries/<key>/` — `meta.json`, `log.txt` and `out/` (the stage's outputs). An entry exists
//!   only once it is complete: it is written under `tmp/` and renamed into place.
//! - `locks/<key>.lock` — held while a process computes that key, so two runs on one cache
//!   compute each stage once.
//! - `failed/<key>/` — the last failed attempt of a key (its log), never used as an entry.
//! - `runs/<id>.json` — per pipeline file, the key each stage name had on its last run (for
//!   `pipeline status` to explain what changed).
//! - `filehash.json` — the memo of file content hashes.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Output files, relative to `out/`.
    pub outputs: Vec<String>,
}

#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Held while this process computes a key; released on drop (or by the OS if the process dies).
pub struct KeyLock {
    _file: File,
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
        Ok(Cache { root })
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

    pub fn has(&self, key: &str) -> bool {
        self.entry_dir(key).join("meta.json").is_file()
    }

    pub fn file_memo_path(&self) -> PathBuf {
        self.root.join("filehash.json")
    }

    pub fn read_meta(&self, key: &str) -> Result<Meta> {
        let path = self.entry_dir(key).join("meta.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Blocks until no other process computes `key`.
    pub fn lock(&self, key: &str) -> Result<KeyLock> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(KeyLock { _file: file })
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

    /// Writes `meta.json` and renames the pending entry into place (replacing an older entry
    /// of the same key, as `--force` asks).
    pub fn commit(&self, pending: Pending, meta: &Meta) -> Result<()> {
        let meta_path = pending.dir.join("meta.json");
        fs::write(&meta_path, serde_json::to_vec_pretty(meta)?)
            .with_context(|| format!("writing {}", meta_path.display()))?;
        let dest = self.entry_dir(&pending.key);
        if dest.exists() {
            let trash = pending.dir.with_extension("old");
            fs::rename(&dest, &trash).with_context(|| format!("replacing {}", dest.display()))?;
            let _ = fs::remove_dir_all(&trash);
        }
        fs::rename(&pending.dir, &dest)
            .with_context(|| format!("committing {}", dest.display()))?;
        Ok(())
    }

    /// Keeps a failed attempt's folder under `failed/<key>` (for its log); returns the log path.
    pub fn keep_failed(&self, pending: Pending) -> PathBuf {
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
        for sub in ["tmp", "failed"] {
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

/// Files under `dir`, relative to it, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = fs::read_dir(dir) else { return };
        for e in read.flatten() {
            let path = e.path();
            if path.is_dir() {
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
        cache.commit(pending, &meta("k1")).unwrap();
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
    fn gc_keeps_reachable_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        for key in ["keep", "drop"] {
            let lock = cache.lock(key).unwrap();
            let p = cache.begin(key, &lock).unwrap();
            fs::write(p.out_dir().join("f"), "12345").unwrap();
            cache.commit(p, &meta(key)).unwrap();
        }
        let keep: HashSet<String> = ["keep".to_string()].into();
        let report = cache.gc(&keep, false).unwrap();
        assert_eq!(report.kept, 1);
        assert_eq!(report.removed.len(), 1);
        assert!(cache.has("keep") && !cache.has("drop"));
    }
}
