//! Errors in a pipeline file: collected, located (line:column) and rendered together.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub location: Option<(usize, usize)>,
    pub message: String,
    pub help: Option<String>,
}

/// Collects every error of one file; keys are given as paths and located in the source.
pub struct Diagnostics<'a> {
    path: PathBuf,
    source: &'a str,
    items: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(path: &Path, source: &'a str) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, key_path: &[&str], message: String, help: Option<String>) {
        let path: Vec<String> = key_path.iter().map(|s| s.to_string()).collect();
        self.push_path(path, message, help);
    }

    pub fn push_path(&mut self, key_path: Vec<String>, message: String, help: Option<String>) {
        let location = if key_path.is_empty() {
            None
        } else {
            locate(self.source, &key_path)
        };
        self.items.push(Diagnostic {
            location,
            message,
            help,
        });
    }

    pub fn push_at(
        &mut self,
        location: Option<(usize, usize)>,
        message: String,
        help: Option<String>,
    ) {
        self.items.push(Diagnostic {
            location,
            message,
            help,
        });
    }

    pub fn push_plain(&mut self, message: String) {
        self.items.push(Diagnostic {
            location: None,
            message,
            help: None,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn finish(self) -> Result<(), SpecError> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    pub fn into_error(self) -> SpecError {
        SpecError {
            path: self.path,
            items: self.items,
        }
    }
}

/// One or more located errors in a pipeline file.
#[derive(Debug)]
pub struct SpecError {
    pub path: PathBuf,
    pub items: Vec<Diagnostic>,
}

impl SpecError {
    pub fn plain(path: &Path, message: String) -> Self {
        SpecError {
            path: path.to_path_buf(),
            items: vec![Diagnostic {
                location: None,
                message,
                help: None,
            }],
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match d.location {
                Some((line, col)) => {
                    write!(f, "{}:{line}:{col}: {}", self.path.display(), d.message)?
                }
                None => write!(f, "{}: {}", self.path.display(), d.message)?,
            }
            if let Some(help) = &d.help {
                write!(f, "\n  help: {help}")?;
            }
        }
        if self.items.len() > 1 {
            write!(
                f,
                "\n{} errors in {}",
                self.items.len(),
                self.path.display()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Finds the line and column (1-based) of a key path in block-style YAML, falling back to the
/// deepest parent found (flow mappings on one line are searched on that line).
pub fn locate(source: &str, key_path: &[String]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut parent_indent: isize = -1;
    let mut start = 0;
    let mut found: Option<(usize, usize)> = None;
    for key in key_path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = (line.len() - trimmed.len()) as isize;
            if indent <= parent_indent {
                break;
            }
            if key_matches(trimmed, key) {
                hit = Some((i, indent as usize));
                break;
            }
        }
        match hit {
            Some((line, indent)) => {
                found = Some((line + 1, indent + 1));
                parent_indent = indent as isize;
                start = line + 1;
            }
            None => {
                // Flow style: `a: {op: shell, sweeep: x}` on the parent's line.
                if let Some((line, _)) = found {
                    let text = lines[line - 1];
                    for pattern in [
                        format!("{{{key}:"),
                        format!(", {key}:"),
                        format!("{{ {key}:"),
                    ] {
                        if let Some(pos) = text.find(&pattern) {
                            let col = pos + pattern.len() - key.len();
                            return Some((line, col));
                        }
                    }
                }
                return found;
            }
        }
    }
    found
}

fn key_matches(trimmed: &str, key: &str) -> bool {
    let rest = trimmed.strip_prefix("- ").unwrap_or(trimmed);
    let unquoted = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_prefix(key))
        .and_then(|r| r.strip_prefix('"'))
        .or_else(|| {
            rest.strip_prefix('\'')
                .and_then(|r| r.strip_prefix(key))
                .and_then(|r| r.strip_prefix('\''))
        })
        .or_else(|| rest.strip_prefix(key));
    matches!(unquoted, Some(r) if r.trim_start().starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn locates_block_and_flow_keys() {
        let src = "params:\n  seed: 1\nstages:\n  a:\n    op: shell\n  b: {op: x, sweeep: 1}\n";
        assert_eq!(locate(src, &path(&["stages", "a", "op"])), Some((5, 5)));
        assert_eq!(
            locate(src, &path(&["stages", "b", "sweeep"])),
            Some((6, 14))
        );
        assert_eq!(locate(src, &path(&["stages", "c"])), Some((3, 1)));
        // `seed` under params is not confused with a stage key.
        assert_eq!(locate(src, &path(&["stages", "seed"])), Some((3, 1)));
    }
}
