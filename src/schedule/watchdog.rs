//! Stage processes never outlive the engine. A SIGKILL cannot be caught, so the engine cannot
//! clean up after itself; instead one small helper process (`pipeline __watchdog`, started with
//! the first stage process) learns every stage's process group through a pipe and, when the pipe
//! closes without a goodbye (the engine died), kills those groups. `PR_SET_PDEATHSIG` alone would
//! reach only a stage's first process, not what `sh -c` starts.

use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::Mutex;

/// The pipe to the watchdog; `None` until the first stage process starts, or if it could not be
/// started (then stages still get `PR_SET_PDEATHSIG`, and the key lock stays held by orphans).
static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);

fn send(line: &str) {
    let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    if pipe.is_none() {
        *pipe = start();
    }
    if let Some(stdin) = pipe.as_mut()
        && writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_err()
    {
        *pipe = None;
    }
}

fn start() -> Option<ChildStdin> {
    use std::os::unix::process::CommandExt;
    let exe = std::path::Path::new("/proc/self/exe");
    let mut command = Command::new(if exe.exists() {
        exe.to_path_buf()
    } else {
        std::env::current_exe().ok()?
    });
    command
        .arg("__watchdog")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C in the terminal is the engine's to handle, not the watchdog's.
        .process_group(0);
    // Through the engine's one spawn path, so that it never inherits a stage's key lock.
    let mut child = crate::ops::spawn_exclusive(&mut command, None).ok()?;
    child.stdin.take()
}

/// Watch a stage process (the leader of its own process group).
pub fn watch(pid: u32) {
    send(&format!("+{pid}"));
}

/// The stage process ended normally.
pub fn unwatch(pid: u32) {
    send(&format!("-{pid}"));
}

/// Watch a Slurm job of this run: cancelled if the engine dies while it is queued or running.
pub fn watch_job(id: u64) {
    send(&format!("+j{id}"));
}

pub fn unwatch_job(id: u64) {
    send(&format!("-j{id}"));
}

/// `pipeline __watchdog`: reads `+pid` / `-pid` (and `+jID` / `-jID` for Slurm jobs) lines; at
/// end of input kills the process groups still listed (with SIGKILL: the engine that would have
/// stopped them gently is gone) and cancels the jobs with one `scancel`.
pub fn watchdog_main() -> ExitCode {
    // SAFETY: ignoring SIGINT/SIGHUP for this process only.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut groups = std::collections::HashSet::new();
    let mut jobs = std::collections::BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, pid) = line.split_at(line.len().min(1));
        if let Some(id) = pid.strip_prefix('j').and_then(|id| id.parse::<u64>().ok()) {
            match sign {
                "+" => jobs.insert(id),
                _ => jobs.remove(&id),
            };
            continue;
        }
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if pid <= 1 {
            continue;
        }
        match sign {
            "+" => {
                groups.insert(pid);
            }
            "-" => {
                groups.remove(&pid);
            }
            _ => {}
        }
    }
    for pid in groups {
        // SAFETY: kill(2) on a process group that the engine created for a stage.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    if !jobs.is_empty() {
        let _ = Command::new("scancel")
            .args(jobs.iter().map(u64::to_string))
            .stdin(Stdio::null())
            .status();
    }
    ExitCode::SUCCESS
}
