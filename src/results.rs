//! `results/`: what people look at, refreshed from cache entries after each run.
//!
//! Rules (see the README, "Publishing"):
//! - Published files are copies, independent of the cache: editing one never changes an entry.
//!   Each is written under a temporary name in its folder and renamed into place, so a reader
//!   (or a concurrent run) never sees half a file, and a symbolic link at the destination is
//!   replaced, never written through.
//! - Nothing is published through a symbolic link: a link at any folder below the results root
//!   is refused (the root itself may be a link: that is the user's choice of location).
//! - A manifest (`.pipeline-published.json`) records what this engine wrote, by stage; only
//!   those files are ever pruned, never a user's own file, even in `results/` itself.
//! - One run publishes at a time (`.pipeline-publish.lock`); the manifest is re-read after
//!   taking the lock.
//! - A copied file's blake3 must equal the entry's record, or the file is not published.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cache::FileRecord;

const MANIFEST: &str = ".pipeline-published.json";
const LOCK: &str = ".pipeline-publish.lock";
const TMP_PREFIX: &str = ".pipeline-tmp.";

/// A published file, as the engine left it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Published {
    /// The stage (member) name that published it.
    stage: String,
    blake3: String,
    size: u64,
    /// Modification time (ns) after writing: a different one means someone edited the file.
    mtime_ns: i128,
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    /// Path relative to the results root → what was published there.
    files: BTreeMap<String, Published>,
}

/// The results folder, locked for this run's publishing.
pub struct Publisher {
    root: PathBuf,
    manifest: Manifest,
    _lock: File,
    seq: u64,
}

/// What publishing one stage did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub written: usize,
    pub pruned: usize,
    /// Files the engine wrote earlier but a person edited since: left alone, not pruned.
    pub kept_edited: Vec<String>,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.written > 0 || self.pruned > 0
    }
}

impl Publisher {
    /// Opens (creating) the results root and takes the publishing lock.
    pub fn open(root: &Path) -> Result<Publisher> {
        fs::create_dir_all(root)
            .with_context(|| format!("creating the results folder {}", root.display()))?;
        let lock = crate::cache::lock_file(&root.join(LOCK))?;
        let mut manifest: Manifest = match fs::read(root.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Manifest::default(),
        };
        // The manifest is a file in the user's folder: a path in it that is not plain and
        // relative (an edit, say `../x`) is dropped, never acted upon.
        manifest
            .files
            .retain(|path, _| checked_relative(path).is_ok_and(|p| p.as_os_str() == path.as_str()));
        Ok(Publisher {
            root: root.to_path_buf(),
            manifest,
            _lock: lock,
            seq: 0,
        })
    }

    /// Makes `results/<dir>/` hold `files` (records of the entry folder `source`) for `stage`,
    /// and removes what `stage` published earlier but no longer produces.
    pub fn publish(
        &mut self,
        stage: &str,
        dir: &str,
        source: &Path,
        files: &[FileRecord],
    ) -> Result<Outcome> {
        let dir_rel =
            checked_relative(dir).with_context(|| format!("publishing `{stage}` to `{dir}`"))?;
        let mut outcome = Outcome::default();
        let mut swept = std::collections::HashSet::new();
        let mut wanted = std::collections::HashSet::with_capacity(files.len());
        for record in files {
            let file_rel =
                checked_relative(&record.path).with_context(|| format!("publishing `{stage}`"))?;
            let rel = dir_rel.join(&file_rel);
            let rel_text = rel.to_string_lossy().into_owned();
            wanted.insert(rel_text.clone());
            let dest = self.root.join(&rel);
            let parent_rel = rel.parent().unwrap_or(Path::new(""));
            self.make_dirs(parent_rel)
                .with_context(|| format!("publishing `{stage}`"))?;
            if swept.insert(parent_rel.to_path_buf()) {
                self.sweep_temporaries(parent_rel);
            }
            if self.unchanged(&rel_text, &dest, record) {
                if let Some(p) = self.manifest.files.get_mut(&rel_text) {
                    p.stage = stage.to_string();
                }
                continue;
            }
            let mtime_ns = self
                .copy_checked(&source.join(&record.path), &dest, record)
                .with_context(|| format!("publishing `{stage}`: {rel_text}"))?;
            self.manifest.files.insert(
                rel_text,
                Published {
                    stage: stage.to_string(),
                    blake3: record.blake3.clone(),
                    size: record.size,
                    mtime_ns,
                },
            );
            outcome.written += 1;
        }
        // What this stage published before and does not produce now would mislead.
        let stale: Vec<String> = self
            .manifest
            .files
            .iter()
            .filter(|(path, p)| p.stage == stage && !wanted.contains(path.as_str()))
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            let Some(record) = self.manifest.files.remove(&path) else {
                continue;
            };
            let full = self.root.join(&path);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_file() && matches_record(&m, &record) => {
                    if self.inside_without_links(Path::new(&path)) {
                        fs::remove_file(&full)
                            .with_context(|| format!("removing {}", full.display()))?;
                        outcome.pruned += 1;
                    }
                }
                Ok(_) => outcome.kept_edited.push(path),
                Err(_) => {}
            }
        }
        Ok(outcome)
    }

    /// Writes the manifest (temporary name, then rename).
    pub fn save(&mut self) -> Result<()> {
        let path = self.root.join(MANIFEST);
        let tmp = self.tmp_name(&self.root.clone());
        fs::write(&tmp, serde_json::to_vec_pretty(&self.manifest)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    fn tmp_name(&mut self, dir: &Path) -> PathBuf {
        self.seq += 1;
        dir.join(format!("{TMP_PREFIX}{}.{}", std::process::id(), self.seq))
    }

    /// Creates `rel` (a folder below the root) one component at a time, refusing any component
    /// that is a symbolic link or not a folder.
    fn make_dirs(&self, rel: &Path) -> Result<()> {
        let mut at = self.root.clone();
        for component in rel.components() {
            at.push(component);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => bail!(
                    "{} is a symbolic link; results are never written through links \
                     (remove it, or choose another `publish:` folder)",
                    at.display()
                ),
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "{} is a file where a folder is needed; move it away",
                    at.display()
                ),
                Err(_) => match fs::create_dir(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                            bail!("{} appeared as a non-folder meanwhile", at.display());
                        }
                    }
                    Err(e) => return Err(e).with_context(|| format!("creating {}", at.display())),
                },
            }
        }
        Ok(())
    }

    /// Removes temporary files a killed publisher left in `rel` (we hold the publishing lock, so
    /// no other publisher is writing them).
    fn sweep_temporaries(&self, rel: &Path) {
        let Ok(read) = fs::read_dir(self.root.join(rel)) else {
            return;
        };
        for entry in read.flatten() {
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Whether every folder on the way to `rel` (below the root) is a real folder.
    fn inside_without_links(&self, rel: &Path) -> bool {
        let mut at = self.root.clone();
        let parent = rel.parent().unwrap_or(Path::new(""));
        parent.components().all(|c| {
            at.push(c);
            fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir())
        })
    }

    /// The destination still holds exactly what was published from this record.
    fn unchanged(&self, rel: &str, dest: &Path, record: &FileRecord) -> bool {
        let Some(published) = self.manifest.files.get(rel) else {
            return false;
        };
        published.blake3 == record.blake3
            && fs::symlink_metadata(dest)
                .is_ok_and(|m| m.is_file() && matches_record(&m, published))
    }

    /// Copies `src` to a temporary file beside `dest`, checks its blake3 against the record,
    /// then renames it over `dest`. Returns the new file's mtime.
    fn copy_checked(&mut self, src: &Path, dest: &Path, record: &FileRecord) -> Result<i128> {
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = self.tmp_name(&dir);
        let result = (|| -> Result<i128> {
            let mut input =
                File::open(src).with_context(|| format!("opening {}", src.display()))?;
            let mut output = File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                output.write_all(&buf[..n])?;
                size += n as u64;
            }
            output.flush()?;
            drop(output);
            if size != record.size || hasher.finalize().to_hex().as_str() != record.blake3 {
                bail!(
                    "the cached file {} no longer matches its entry's record (run `pipeline verify`)",
                    src.display()
                );
            }
            fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))?;
            let m = fs::symlink_metadata(dest)?;
            Ok(mtime_ns(&m))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

fn matches_record(m: &fs::Metadata, p: &Published) -> bool {
    m.len() == p.size && mtime_ns(m) == p.mtime_ns
}

/// A relative path of plain components (`.` allowed and dropped): no root, no `..`.
fn checked_relative(path: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => bail!("`{path}` is not a relative path inside the results folder"),
        }
    }
    Ok(out)
}

/// A `publish:` folder as written by a user, normalised: `""`, `.`, `./` mean the results folder
/// itself (`.`); `a//b/./c/` is `a/b/c`. Refused: absolute paths, `..`, control characters,
/// backslashes and names the engine uses for itself.
pub fn normalise_publish_dir(dir: &str) -> Result<String, String> {
    if dir.chars().any(|c| c.is_control()) {
        return Err("`publish` contains a control character".into());
    }
    if dir.contains('\\') {
        return Err("`publish` contains a backslash; separate folders with `/`".into());
    }
    if dir.starts_with('/') {
        return Err(format!(
            "`publish: {dir}` is an absolute path; it must be a folder inside results/"
        ));
    }
    let parts: Vec<&str> = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!(
            "`publish: {dir}` leaves the results folder (`..`); it must be a folder inside results/"
        ));
    }
    if let Some(p) = parts.iter().find(|p| p.starts_with(".pipeline-")) {
        return Err(format!("`{p}` is a name the engine uses for itself"));
    }
    if parts.iter().any(|p| p.len() > 255) {
        return Err("`publish` has a folder name longer than 255 bytes".into());
    }
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// The folder name for a stage member: the member name itself where it is safe, else with the
/// unsafe characters written as `%XX` (`/` → `%2F`, `%` → `%25`, control characters, `\`).
/// Stage names start with a letter or `_`, so a name is never `.` or `..`. The mapping is
/// injective (`%` itself is escaped), and names too long for a file system are shortened with a
/// hash of the full name.
pub fn member_folder(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '/' || c == '%' || c == '\\' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    const MAX: usize = 200;
    if out.len() > MAX {
        let mut cut = 160;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = blake3::hash(name.as_bytes()).to_hex();
        out = format!("{}~{}", &out[..cut], &hash[..16]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path) -> Vec<FileRecord> {
        crate::cache::record_files(dir).unwrap()
    }

    #[test]
    fn mirrors_prunes_and_leaves_user_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "a").unwrap();
        fs::write(src.join("sub/b.txt"), "b").unwrap();
        let results = tmp.path().join("results");
        fs::create_dir_all(&results).unwrap();
        fs::write(results.join("NOTES.txt"), "mine").unwrap();
        let mut p = Publisher::open(&results).unwrap();
        let first = p.publish("s", ".", &src, &records(&src)).unwrap();
        assert_eq!(first.written, 2);
        assert_eq!(fs::read_to_string(results.join("sub/b.txt")).unwrap(), "b");
        let again = p.publish("s", ".", &src, &records(&src)).unwrap();
        assert!(!again.changed(), "second refresh changes nothing");
        fs::remove_file(src.join("a.txt")).unwrap();
        let pruned = p.publish("s", ".", &src, &records(&src)).unwrap();
        assert_eq!(pruned.pruned, 1);
        assert!(!results.join("a.txt").exists());
        assert_eq!(
            fs::read_to_string(results.join("NOTES.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_hostile_manifest_entry_is_never_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.txt"), "a").unwrap();
        let results = tmp.path().join("results");
        fs::create_dir_all(&results).unwrap();
        let victim = tmp.path().join("victim.txt");
        fs::write(&victim, "v").unwrap();
        let m = fs::symlink_metadata(&victim).unwrap();
        let manifest = serde_json::json!({"files": {"../victim.txt": {
            "stage": "s", "blake3": "x", "size": 1, "mtime_ns": mtime_ns(&m)}}});
        fs::write(results.join(MANIFEST), manifest.to_string()).unwrap();
        fs::write(results.join(".pipeline-tmp.1.1"), "left by a killed run").unwrap();
        let mut p = Publisher::open(&results).unwrap();
        p.publish("s", ".", &src, &records(&src)).unwrap();
        p.save().unwrap();
        assert!(victim.exists(), "a path outside results/ is never pruned");
        assert!(
            !results.join(".pipeline-tmp.1.1").exists(),
            "stale temporaries are swept"
        );
    }

    #[test]
    fn a_damaged_source_is_not_published() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("a.txt"), "abc").unwrap();
        let recs = records(&src);
        fs::write(src.join("a.txt"), "xyz").unwrap();
        let results = tmp.path().join("results");
        let mut p = Publisher::open(&results).unwrap();
        let err = p.publish("s", "s", &src, &recs).unwrap_err();
        assert!(format!("{err:#}").contains("no longer matches"), "{err:#}");
        assert!(!results.join("s/a.txt").exists());
    }

    #[test]
    fn publish_dirs_are_normalised_or_refused() {
        assert_eq!(normalise_publish_dir("").unwrap(), ".");
        assert_eq!(normalise_publish_dir("./").unwrap(), ".");
        assert_eq!(normalise_publish_dir("a//b/./c/").unwrap(), "a/b/c");
        assert!(normalise_publish_dir("/tmp").is_err());
        assert!(normalise_publish_dir("a/../../b").is_err());
        assert!(normalise_publish_dir("a\nb").is_err());
    }

    #[test]
    fn member_folders_are_safe_and_readable() {
        assert_eq!(member_folder("lr[lr=0.01]"), "lr[lr=0.01]");
        assert_eq!(
            member_folder("s[x=/../../tmp/a]"),
            "s[x=%2F..%2F..%2Ftmp%2Fa]"
        );
        assert_eq!(member_folder("s[x=100%]"), "s[x=100%25]");
        assert_ne!(member_folder("s[x=%2F]"), member_folder("s[x=/]"));
        let long = format!("s[x={}]", "y".repeat(400));
        assert!(member_folder(&long).len() <= 200);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z_][a-z0-9_.-]{0,8}\\[[a-z]=[ -~]{0,12}\\]",
                "[a-z][/%.\\\\\u{0}-\u{1f}\u{7f}é∂a-z]{0,16}",
                "\\PC{1,300}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            /// A member folder is one safe path component.
            #[test]
            fn folders_are_single_safe_components(n in name()) {
                let f = member_folder(&n);
                prop_assert!(!f.is_empty() && f.len() <= 255);
                prop_assert!(f != "." && f != "..");
                prop_assert!(!f.contains('/') && !f.contains('\\'));
                prop_assert!(!f.chars().any(|c| c.is_control()));
                prop_assert_eq!(Path::new(&f).components().count(), 1);
            }

            /// Distinct names never share a folder.
            #[test]
            fn the_mapping_is_injective(a in name(), b in name()) {
                if a != b {
                    prop_assert_ne!(member_folder(&a), member_folder(&b));
                }
            }

            /// Names that are already safe stay as they are (readable).
            #[test]
            fn safe_names_are_kept(n in "[a-z][a-z0-9_.-]{0,8}\\[[a-z]=[a-zA-Z0-9.=,+-]{0,12}\\]") {
                prop_assert_eq!(member_folder(&n), n);
            }
        }
    }
}
