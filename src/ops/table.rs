//! `table`: one row per run with chosen parameter and metric columns, as CSV and Markdown,
//! naming the best and the worst run by a metric.

use std::fmt::Write as _;
use std::fs;

use anyhow::{Context, Result};

use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ItemSummary, RunRecord, canonical_metric, describe_params, metric_label};
use crate::spec::format_value;

pub struct Table;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "columns",
        ty: ParamType::List(&ParamType::Str),
        default: None,
        doc: "columns in order: `stage`, a training parameter (depth, lr, ...), a final metric \
              (validation_acc, ...), `steps_per_epoch` or `n_parameters`",
    },
    ParamSpec {
        name: "rank_by",
        ty: ParamType::Str,
        default: Some("validation_acc"),
        doc: "metric that names the best and worst run (empty: none)",
    },
    ParamSpec {
        name: "title",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "table title",
    },
    ParamSpec {
        name: "id",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "experiment id for the report, e.g. 6.2.1.1",
    },
];

const INPUTS: &[InputSpec] = &[InputSpec {
    name: "runs",
    kind: InputKind::Gather,
    doc: "training runs, one row each",
    required: true,
}];

const OUTPUTS: &[OutputSpec] = &[
    OutputSpec {
        name: "table.csv",
        doc: "the table",
    },
    OutputSpec {
        name: "table.md",
        doc: "the table in Markdown, best and worst marked",
    },
    OutputSpec {
        name: "summary.json",
        doc: "title and reading, for the report",
    },
];

impl Op for Table {
    fn name(&self) -> &'static str {
        "table"
    }
    fn doc(&self) -> &'static str {
        "Tabulate runs: parameters and final metrics per run, best and worst named."
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

    fn run(&self, ctx: &OpContext) -> Result<()> {
        let columns = ctx.params.str_list("columns")?;
        let rank_by = ctx.params.str("rank_by")?;
        let title = ctx.params.str("title")?;
        let mut runs = Vec::new();
        for item in ctx.input("runs") {
            runs.push((
                item,
                RunRecord::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?,
            ));
        }
        let cell = |item: &super::InputItem, run: &RunRecord, column: &str| -> Result<String> {
            Ok(match column {
                "stage" => item.stage.clone(),
                "steps_per_epoch" => run.steps_per_epoch.to_string(),
                "n_parameters" => run.n_parameters.to_string(),
                "diverged" => run.diverged.to_string(),
                c if canonical_metric(c).is_some() => format_metric(run.final_metric(c)),
                c => match run.params.get(c) {
                    Some(v) => format_value(v),
                    None => anyhow::bail!(
                        "unknown column `{c}`: not a metric, nor a parameter of `{}`{}",
                        item.stage,
                        crate::suggest::did_you_mean(c, run.params.keys().map(String::as_str))
                    ),
                },
            })
        };
        let mut rows = Vec::new();
        for (item, run) in &runs {
            rows.push(
                columns
                    .iter()
                    .map(|c| cell(item, run, c))
                    .collect::<Result<Vec<_>>>()?,
            );
        }

        let ranking = if rank_by.is_empty() {
            None
        } else {
            let metric = canonical_metric(rank_by)
                .with_context(|| format!("unknown metric `{rank_by}` for rank_by"))?;
            let sign = if metric.ends_with("_acc") { 1.0 } else { -1.0 };
            let score = |r: &RunRecord| {
                let v = r.final_metric(metric);
                if v.is_finite() && !r.diverged {
                    sign * v
                } else {
                    f64::NEG_INFINITY
                }
            };
            let best = (0..runs.len()).max_by(|&a, &b| {
                score(&runs[a].1)
                    .total_cmp(&score(&runs[b].1))
                    .then(b.cmp(&a))
            });
            let worst = (0..runs.len()).min_by(|&a, &b| {
                score(&runs[a].1)
                    .total_cmp(&score(&runs[b].1))
                    .then(a.cmp(&b))
            });
            best.zip(worst).map(|(b, w)| (metric, b, w))
        };

        let mut csv =
            csv::Writer::from_path(ctx.out_dir.join("table.csv")).context("writing table.csv")?;
        csv.write_record(&columns)?;
        for row in &rows {
            csv.write_record(row)?;
        }
        csv.flush()?;

        let mut md = String::new();
        if !title.is_empty() {
            let _ = writeln!(md, "**{title}**\n");
        }
        let _ = writeln!(md, "| {} |", columns.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(columns.len()));
        for (i, row) in rows.iter().enumerate() {
            let mark = match ranking {
                Some((_, b, _)) if b == i => " **(best)**",
                Some((_, _, w)) if w == i => " *(worst)*",
                _ => "",
            };
            let _ = writeln!(md, "| {}{mark} |", row.join(" | "));
        }
        fs::write(ctx.out_dir.join("table.md"), &md).context("writing table.md")?;

        let reading = match ranking {
            Some((metric, b, w)) => format!(
                "best {}: {} ({}); worst: {} ({})",
                metric_label(metric),
                runs[b].0.stage,
                format_metric(runs[b].1.final_metric(metric)),
                runs[w].0.stage,
                format_metric(runs[w].1.final_metric(metric)),
            ),
            None => format!("{} runs", runs.len()),
        };
        let records: Vec<&RunRecord> = runs.iter().map(|(_, r)| r).collect();
        ItemSummary {
            id: ctx.params.str("id")?.to_string(),
            title: title.to_string(),
            figures: vec![],
            table_md: Some("table.md".into()),
            reading,
            params: describe_params(&records),
        }
        .write(ctx.out_dir)
    }
}

pub fn format_metric(v: f64) -> String {
    if v.is_nan() {
        "diverged".into()
    } else if v.is_infinite() {
        "inf".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}
