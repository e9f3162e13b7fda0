//! Where stages run: the executor and its Slurm settings, from (first wins) the command line,
//! the environment, `pipeline-site.yaml` in the project folder, then
//! `$XDG_CONFIG_HOME/pipeline/site.yaml` (`~/.config/…`). A pipeline file never names a cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::schedule::slurm::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// Every stage on this machine.
    Local,
    /// Stages as Slurm jobs (cheap ones here).
    Slurm,
}

/// The executor options of `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct ExecutorArgs {
    /// Where stages run [default: local, or as the site file says].
    #[arg(long, env = "PIPELINE_EXECUTOR", value_enum)]
    executor: Option<Executor>,
    /// Slurm partition for the jobs.
    #[arg(long, env = "PIPELINE_SLURM_PARTITION")]
    partition: Option<String>,
    /// Slurm account to charge.
    #[arg(long, env = "PIPELINE_SLURM_ACCOUNT")]
    account: Option<String>,
    /// Slurm quality of service.
    #[arg(long, env = "PIPELINE_SLURM_QOS")]
    qos: Option<String>,
    /// More sbatch arguments, split at spaces: `--sbatch-args "--constraint=a100 --nice=10"`.
    #[arg(long, env = "PIPELINE_SLURM_SBATCH_ARGS", allow_hyphen_values = true)]
    sbatch_args: Option<String>,
    /// Jobs of this run queued or running at once [default: 500].
    #[arg(long, env = "PIPELINE_SLURM_MAX_JOBS")]
    max_jobs: Option<usize>,
    /// Seconds between two `squeue` calls [default: 0.5].
    #[arg(long, env = "PIPELINE_SLURM_POLL")]
    poll_interval: Option<f64>,
    /// Resubmit a stage whose job was lost to NODE_FAIL, PREEMPTED or BOOT_FAIL up to N times
    /// [default: 1].
    #[arg(long, env = "PIPELINE_RETRIES")]
    retries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    executor: Option<Executor>,
    #[serde(default)]
    slurm: SlurmFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmFile {
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    sbatch_args: Option<Vec<String>>,
    max_jobs: Option<usize>,
    poll_interval: Option<f64>,
    retries: Option<usize>,
    /// The binary jobs run (default: this one); must be the same path on every node.
    binary: Option<PathBuf>,
}

const SITE_FILE: &str = "pipeline-site.yaml";

fn site_files(project: &Path) -> Vec<PathBuf> {
    let mut files = vec![project.join(SITE_FILE)];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(config) = config {
        files.push(config.join("pipeline").join("site.yaml"));
    }
    files
}

fn read_site(path: &Path) -> Result<Option<SiteFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.len() > 1 << 20 {
        bail!(
            "{} is over 1 MiB; a site file is a few lines",
            path.display()
        );
    }
    let site: SiteFile = yaml_serde::from_str(&text).with_context(|| {
        format!(
            "{}: a site file has `executor: local|slurm` and `slurm:` with partition, account, qos, sbatch_args, max_jobs, poll_interval, retries, binary",
            path.display()
        )
    })?;
    Ok(Some(site))
}

impl ExecutorArgs {
    /// The Slurm settings when stages go to Slurm; `None` for the local executor.
    pub fn resolve(&self, project: &Path) -> Result<Option<Settings>> {
        let mut sites = Vec::new();
        for path in site_files(project) {
            if let Some(site) = read_site(&path)? {
                sites.push(site);
            }
        }
        let executor = self
            .executor
            .or_else(|| sites.iter().find_map(|s| s.executor))
            .unwrap_or(Executor::Local);
        if executor == Executor::Local {
            return Ok(None);
        }
        macro_rules! pick {
            ($field:ident) => {
                self.$field
                    .clone()
                    .or_else(|| sites.iter().find_map(|s| s.slurm.$field.clone()))
            };
        }
        let sbatch_args = match &self.sbatch_args {
            Some(text) => text.split_whitespace().map(str::to_owned).collect(),
            None => sites
                .iter()
                .find_map(|s| s.slurm.sbatch_args.clone())
                .unwrap_or_default(),
        };
        for arg in &sbatch_args {
            if arg.starts_with("--wait") || arg == "-W" || arg.starts_with("--array") {
                bail!("sbatch argument `{arg}` cannot be used: the engine tracks its jobs itself");
            }
        }
        let poll = pick!(poll_interval).unwrap_or(0.5);
        if !(0.05..=60.0).contains(&poll) {
            bail!("the Slurm poll interval must be from 0.05 to 60 seconds (got {poll})");
        }
        let max_jobs = pick!(max_jobs).unwrap_or(500);
        if max_jobs == 0 {
            bail!("--max-jobs must be at least 1");
        }
        let binary = match sites.iter().find_map(|s| s.slurm.binary.clone()) {
            Some(binary) => binary,
            None => std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .context("locating the pipeline executable for the jobs")?,
        };
        Ok(Some(Settings {
            partition: pick!(partition),
            account: pick!(account),
            qos: pick!(qos),
            sbatch_args,
            max_jobs,
            poll_interval: Duration::from_secs_f64(poll),
            retries: pick!(retries).unwrap_or(1),
            binary,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> ExecutorArgs {
        ExecutorArgs {
            executor: None,
            partition: None,
            account: None,
            qos: None,
            sbatch_args: None,
            max_jobs: None,
            poll_interval: None,
            retries: None,
        }
    }

    #[test]
    fn the_command_line_wins_over_the_project_site_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            none().resolve(dir.path()).unwrap().is_none(),
            "local by default"
        );
        std::fs::write(
            dir.path().join(SITE_FILE),
            "executor: slurm\nslurm:\n  partition: gpu\n  qos: low\n  sbatch_args: [--constraint=a100]\n  max_jobs: 20\n",
        )
        .unwrap();
        let s = none().resolve(dir.path()).unwrap().unwrap();
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(s.qos.as_deref(), Some("low"));
        assert_eq!(s.sbatch_args, ["--constraint=a100"]);
        assert_eq!((s.max_jobs, s.retries), (20, 1));
        let mut cli = none();
        cli.partition = Some("cpu".into());
        cli.sbatch_args = Some("--nice=5 --exclusive".into());
        let s = cli.resolve(dir.path()).unwrap().unwrap();
        assert_eq!(s.partition.as_deref(), Some("cpu"));
        assert_eq!(s.sbatch_args, ["--nice=5", "--exclusive"]);
        cli.executor = Some(Executor::Local);
        assert!(cli.resolve(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_bad_site_file_or_setting_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SITE_FILE),
            "executor: slurm\nslurm: {partiton: x}\n",
        )
        .unwrap();
        let e = format!("{:#}", none().resolve(dir.path()).unwrap_err());
        assert!(e.contains(SITE_FILE) && e.contains("partiton"), "{e}");
        std::fs::write(dir.path().join(SITE_FILE), "executor: slurm\n").unwrap();
        let mut cli = none();
        cli.sbatch_args = Some("--wait".into());
        let e = format!("{:#}", cli.resolve(dir.path()).unwrap_err());
        assert!(e.contains("--wait"), "{e}");
        cli.sbatch_args = None;
        cli.poll_interval = Some(0.0);
        assert!(cli.resolve(dir.path()).is_err());
    }
}
