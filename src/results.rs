//! `results/`: what people look at, refreshed from cache entries after each run. Files are hard
//! links to the entry (copies where linking fails), so refreshing is cheap and never copies twice.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cache::list_files;

/// Makes `results/<dir>/` mirror `source` (an entry's `out/`); returns whether anything changed.
pub fn publish(results_root: &Path, dir: &str, source: &Path) -> Result<bool> {
    let dest_dir = results_root.join(dir);
    let wanted = list_files(source);
    let mut changed = false;
    for rel in &wanted {
        let src = source.join(rel);
        let dest = dest_dir.join(rel);
        if same_file(&src, &dest) {
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let _ = fs::remove_file(&dest);
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest)
                .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
        }
        changed = true;
    }
    // Files an older version of the stage produced, but this one does not, would mislead.
    // `.` (results/ itself) is shared by several stages, so nothing is removed there.
    if dir != "." {
        for rel in list_files(&dest_dir) {
            if !wanted.contains(&rel) {
                let _ = fs::remove_file(dest_dir.join(&rel));
                changed = true;
            }
        }
    }
    Ok(changed)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev() == y.dev() && x.ino() == y.ino())
                || (x.len() == y.len()
                    && x.mtime() == y.mtime()
                    && x.mtime_nsec() == y.mtime_nsec()
                    && fs::read(a).ok() == fs::read(b).ok())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "a").unwrap();
        fs::write(src.join("sub/b.txt"), "b").unwrap();
        let results = tmp.path().join("results");
        assert!(publish(&results, "stage", &src).unwrap());
        assert_eq!(
            fs::read_to_string(results.join("stage/sub/b.txt")).unwrap(),
            "b"
        );
        assert!(
            !publish(&results, "stage", &src).unwrap(),
            "second refresh changes nothing"
        );
        fs::remove_file(src.join("a.txt")).unwrap();
        publish(&results, "stage", &src).unwrap();
        assert!(!results.join("stage/a.txt").exists());
    }
}
