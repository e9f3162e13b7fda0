//! Renders scheduler events: a live display (indicatif) on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::schedule::{Event, Reporter, Summary};

/// Picks the live display when stdout is a terminal and CI is not set.
pub fn reporter(quiet: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    let live = std::io::stdout().is_terminal() && std::env::var_os("CI").is_none();
    if live && !quiet {
        Box::new(LiveReporter::new())
    } else {
        Box::new(PlainReporter::new(std::io::stdout(), quiet))
    }
}

/// One line per finished, failed or skipped stage; progress at most every 10 s per stage.
pub struct PlainReporter<W: Write> {
    out: W,
    quiet: bool,
    total: usize,
    done: usize,
    last_progress: HashMap<usize, Instant>,
    /// Names of running stages: two stages side by side print progress lines in turn.
    names: HashMap<usize, String>,
    /// Running stages' GPUs, named when they finish (`ran x (2.1s on cuda:0)`).
    gpus: HashMap<usize, crate::ops::Device>,
}

impl<W: Write> PlainReporter<W> {
    pub fn new(out: W, quiet: bool) -> Self {
        PlainReporter {
            out,
            quiet,
            total: 0,
            done: 0,
            last_progress: HashMap::new(),
            names: HashMap::new(),
            gpus: HashMap::new(),
        }
    }
}

impl<W: Write> Reporter for PlainReporter<W> {
    fn event(&mut self, event: &Event) {
        let out = &mut self.out;
        let _ = match event {
            Event::Planned {
                total,
                cached,
                to_run,
            } => {
                self.total = *total;
                self.done = *cached;
                if self.quiet {
                    Ok(())
                } else {
                    writeln!(out, "{total} stages: {cached} cached, {to_run} to run")
                }
            }
            Event::WouldRun { name, .. } => writeln!(out, "would run {name}"),
            Event::Started {
                node, name, device, ..
            } => {
                self.names.insert(*node, name.clone());
                if device.is_gpu() {
                    self.gpus.insert(*node, *device);
                } else {
                    self.gpus.remove(node);
                }
                Ok(())
            }
            Event::Progress { node, message } => {
                let now = Instant::now();
                let due = self
                    .last_progress
                    .get(node)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10));
                if due && !self.quiet {
                    self.last_progress.insert(*node, now);
                    match self.names.get(node) {
                        Some(name) => writeln!(out, "  … {name}: {message}"),
                        None => writeln!(out, "  … {message}"),
                    }
                } else {
                    Ok(())
                }
            }
            Event::Finished {
                node,
                name,
                seconds,
                by_other_run,
            } => {
                self.done += 1;
                let on = self
                    .gpus
                    .remove(node)
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default();
                if self.quiet {
                    Ok(())
                } else if *by_other_run {
                    writeln!(
                        out,
                        "[{}/{}] cached {name} (computed by another run)",
                        self.done, self.total
                    )
                } else {
                    writeln!(
                        out,
                        "[{}/{}] ran {name} ({}{on})",
                        self.done,
                        self.total,
                        format_seconds(*seconds)
                    )
                }
            }
            Event::Failed {
                name,
                error,
                log_tail,
                log_path,
                ..
            } => {
                self.done += 1;
                let _ = writeln!(out, "[{}/{}] FAILED {name}: {error}", self.done, self.total);
                write_log_tail(out, log_tail, log_path)
            }
            Event::Skipped { name, because, .. } => writeln!(out, "skipped {name}: {because}"),
            Event::Warning(message) => writeln!(out, "warning: {message}"),
            Event::Interrupted => writeln!(out, "interrupted: stopping running stages"),
        };
    }
}

fn write_log_tail(
    out: &mut dyn Write,
    log_tail: &str,
    log_path: &std::path::Path,
) -> std::io::Result<()> {
    if !log_tail.trim().is_empty() {
        writeln!(out, "  log ({}):", log_path.display())?;
        for line in log_tail.lines() {
            writeln!(out, "  | {line}")?;
        }
    }
    Ok(())
}

pub fn format_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else {
        format!(
            "{}m{:02}s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    }
}

/// The live display: a bar for the run, a line per running stage with the op's progress.
pub struct LiveReporter {
    multi: MultiProgress,
    main: ProgressBar,
    running: HashMap<usize, ProgressBar>,
    cached: usize,
    failed: usize,
}

impl LiveReporter {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let main = multi.add(ProgressBar::new(0));
        main.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} stages  {msg}  [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        LiveReporter {
            multi,
            main,
            running: HashMap::new(),
            cached: 0,
            failed: 0,
        }
    }

    fn refresh_message(&self) {
        self.main.set_message(format!(
            "{} running · {} cached{}",
            self.running.len(),
            self.cached,
            if self.failed > 0 {
                format!(" · {} failed", self.failed)
            } else {
                String::new()
            }
        ));
    }
}

impl Reporter for LiveReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Planned { total, cached, .. } => {
                self.main.set_length(*total as u64);
                self.main.set_position(*cached as u64);
                self.cached = *cached;
            }
            Event::WouldRun { name, .. } => {
                let _ = self.multi.println(format!("would run {name}"));
            }
            Event::Started {
                node,
                name,
                threads,
                device,
            } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                let extra = if device.is_gpu() {
                    format!(" ({device})")
                } else if *threads > 1 {
                    format!(" ({threads} threads)")
                } else {
                    String::new()
                };
                bar.set_prefix(format!("{name}{extra}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running.insert(*node, bar);
            }
            Event::Progress { node, message } => {
                if let Some(bar) = self.running.get(node) {
                    bar.set_message(message.clone());
                }
            }
            Event::Finished {
                node,
                name,
                seconds,
                by_other_run,
            } => {
                if let Some(bar) = self.running.remove(node) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.main.inc(1);
                let line = if *by_other_run {
                    self.cached += 1;
                    format!("✓ {name} (computed by another run)")
                } else {
                    format!("✓ {name} {}", format_seconds(*seconds))
                };
                let _ = self.multi.println(line);
            }
            Event::Failed {
                node,
                name,
                error,
                log_tail,
                log_path,
            } => {
                if let Some(bar) = self.running.remove(node) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.main.inc(1);
                self.failed += 1;
                let mut text = Vec::new();
                let _ = writeln!(text, "✗ {name}: {error}");
                let _ = write_log_tail(&mut text, log_tail, log_path);
                let _ = self
                    .multi
                    .println(String::from_utf8_lossy(&text).trim_end());
            }
            Event::Skipped { name, because, .. } => {
                let _ = self.multi.println(format!("- skipped {name}: {because}"));
            }
            Event::Warning(message) => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
            Event::Interrupted => {
                let _ = self.multi.println("interrupted: stopping running stages");
            }
        }
        self.refresh_message();
    }
}

impl Drop for LiveReporter {
    fn drop(&mut self) {
        for bar in self.running.values() {
            bar.finish_and_clear();
        }
        self.main.finish_and_clear();
    }
}

/// The closing lines of a run.
pub fn print_summary(out: &mut dyn Write, summary: &Summary, seconds: f64) {
    let _ = writeln!(
        out,
        "{} ran, {} cached, {} failed, {} skipped in {}{}",
        summary.ran,
        summary.cached,
        summary.failed,
        summary.skipped,
        format_seconds(seconds),
        if summary.interrupted {
            " (interrupted: rerun to resume)"
        } else {
            ""
        }
    );
    for (name, error, _) in &summary.failures {
        let _ = writeln!(out, "failed: {name}: {error}");
    }
    for (name, why) in &summary.fallbacks {
        let _ = writeln!(out, "on the CPU instead of the GPU: {name}: {why}");
    }
}
