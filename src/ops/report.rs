//! `report`: gathers plot and table stages into `report.md` and a self-contained `report.html`
//! (figures embedded), grouped by experiment id, each with its parameters and one-line reading.

use std::fmt::Write as _;
use std::fs;

use anyhow::{Context, Result};
use base64::Engine as _;

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::ItemSummary;

pub struct Report;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "title",
        ty: ParamType::Str,
        default: Some("Report"),
        doc: "the report's title",
    },
    ParamSpec {
        name: "intro",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "a paragraph under the title (Markdown)",
    },
    ParamSpec {
        name: "sections",
        ty: ParamType::Map,
        default: Some("{}"),
        doc: "section headings by experiment id, e.g. {6.1.2.1: Learning rate}; items without a heading use their own title",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "items",
    kind: InputKind::Gather,
    doc: "plot and table stages, in report order",
    required: true,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "report.md",
        doc: "Markdown, figures in figures/",
    },
    OutputSpec {
        name: "report.html",
        doc: "one self-contained page: figures embedded, tables, parameters",
    },
    OutputSpec {
        name: "figures/",
        doc: "every figure (PNG and SVG)",
    },
];

impl Op for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    fn doc(&self) -> &'static str {
        "Assemble plots and tables into report.md and a self-contained report.html."
    }
    fn version(&self) -> u32 {
        1
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn outputs(&self) -> &'static [OutputSpec] {
        OUTPUTS
    }
    fn publishes(&self) -> bool {
        true
    }
    fn runs_local(&self) -> bool {
        true
    }

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let title = ctx.params.str("title")?;
        let intro = ctx.params.str("intro")?;
        let headings = ctx
            .params
            .get("sections")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        let mut md = format!("# {title}\n\n");
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
            escape(title),
            escape(title)
        );
        if !intro.is_empty() {
            let _ = write!(md, "{intro}\n\n");
            let _ = writeln!(html, "<p>{}</p>", escape(intro));
        }
        let figures_dir = ctx.out_dir.join("figures");
        let mut current_id = None::<String>;
        for item in ctx.input("items") {
            let summary =
                ItemSummary::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?;
            if current_id.as_deref() != Some(summary.id.as_str()) || summary.id.is_empty() {
                let heading = match headings.get(&summary.id).and_then(|v| v.as_str()) {
                    Some(h) => format!("{} {h}", summary.id),
                    None if summary.id.is_empty() => summary.title.clone(),
                    None => format!("{} {}", summary.id, summary.title),
                };
                let _ = write!(md, "## {heading}\n\n");
                let _ = writeln!(html, "<h2>{}</h2>", escape(&heading));
                current_id = Some(summary.id.clone());
            }
            let _ = write!(md, "### {}\n\n*{}*\n\n", summary.title, summary.reading);
            let _ = writeln!(
                html,
                "<section><h3>{}</h3>\n<p class=\"reading\">{}</p>",
                escape(&summary.title),
                escape(&summary.reading)
            );
            for figure in &summary.figures {
                let src = item.dir.join(figure);
                let rel = format!("figures/{}/{figure}", safe_name(&item.stage));
                let dest = ctx.out_dir.join(&rel);
                fs::create_dir_all(dest.parent().unwrap_or(&figures_dir))?;
                fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
                if figure.ends_with(".png") {
                    let _ = write!(md, "![{}]({rel})\n\n", summary.title);
                    let bytes =
                        fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                    let _ = writeln!(
                        html,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{data}\">",
                        escape(&summary.title)
                    );
                }
            }
            if let Some(table) = &summary.table_md {
                let text = fs::read_to_string(item.dir.join(table))
                    .with_context(|| format!("reading {table} of `{}`", item.stage))?;
                // The section already carries the title.
                let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
                let _ = writeln!(md, "{}\n", rows.join("\n"));
                html.push_str(&markdown_table_to_html(&text));
            }
            if !summary.params.is_empty() {
                let list: Vec<String> = summary
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = write!(md, "Parameters: `{}`\n\n", list.join("`, `"));
                let _ = writeln!(
                    html,
                    "<p class=\"params\">Parameters: {}</p>",
                    escape(&list.join(", "))
                );
            }
            html.push_str("</section>\n");
        }
        html.push_str("</body></html>\n");
        fs::write(ctx.out_dir.join("report.md"), md).context("writing report.md")?;
        fs::write(ctx.out_dir.join("report.html"), html).context("writing report.html")?;
        Ok(())
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}\
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}\
.reading{font-style:italic}.params{color:#555;font-size:.9em}section{margin-bottom:2em}";

/// `**(best…)**` → `<b>(best…)</b>`.
fn bold_marks(s: &str) -> String {
    match (s.find("**("), s.rfind(")**")) {
        (Some(a), Some(b)) if b > a => {
            format!("{}<b>{}</b>{}", &s[..a], &s[a + 2..b + 1], &s[b + 3..])
        }
        _ => s.to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn safe_name(stage: &str) -> String {
    stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The pipe tables that the table op writes, as HTML (bold and italic marks kept).
fn markdown_table_to_html(md: &str) -> String {
    let mut html = String::new();
    let mut header_done = false;
    for line in md.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if !header_done {
            html.push_str("<table><tr>");
            for c in &cells {
                let _ = write!(html, "<th>{}</th>", escape(c));
            }
            html.push_str("</tr>\n");
            header_done = true;
        } else {
            html.push_str("<tr>");
            for c in &cells {
                let text = bold_marks(&escape(c)).replace("*(worst)*", "<i>(worst)</i>");
                let _ = write!(html, "<td>{text}</td>");
            }
            html.push_str("</tr>\n");
        }
    }
    if header_done {
        html.push_str("</table>\n");
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_become_html() {
        let html = markdown_table_to_html("| a | b |\n|---|---|\n| 1 | 2 **(best)** |\n");
        assert!(
            html.contains("<th>a</th>") && html.contains("<td>2 <b>(best)</b></td>"),
            "{html}"
        );
    }
}
