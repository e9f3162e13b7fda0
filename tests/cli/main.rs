//! Integration tests: the real `pipeline` binary on small real pipelines in temporary folders.
//! Shell stages append their name to `ran.log`, which proves what ran and what was cached.

mod engine;
mod errors;
mod gpu;
mod hardening;
mod ml;
mod replicates;
mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Default)]
pub struct Project {
    dir: TempDir,
}

/// A temporary folder (the default `TempDir` has no `Default`).
pub struct TempDir(tempfile::TempDir);

impl Default for TempDir {
    fn default() -> Self {
        TempDir(tempfile::tempdir().expect("temp dir"))
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Project {
    pub fn new() -> Project {
        Project::default()
    }

    pub fn path(&self) -> &Path {
        self.dir.0.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline"));
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("PIPELINE_CACHE")
            .env_remove("PIPELINE_RESULTS");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("running pipeline"))
    }

    /// Stage names in `ran.log`, in the order they ran.
    pub fn ran(&self) -> Vec<String> {
        self.read("ran.log").lines().map(str::to_owned).collect()
    }

    pub fn clear_ran(&self) {
        let _ = std::fs::remove_file(self.path().join("ran.log"));
    }

    pub fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join("cache/entries"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// Sorted copy, for comparing what ran regardless of parallel order.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The README's op table stays true: every op is documented there.
#[test]
fn readme_lists_every_op() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for op in pipeline::ops::registry() {
        assert!(
            readme.contains(&format!("| `{}` |", op.name())),
            "README.md lacks op `{}`",
            op.name()
        );
    }
}
