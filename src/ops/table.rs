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
        name: "group_by",
        ty: ParamType::Str,
        default: Some("''"),
        doc: "a parameter grouping the runs (e.g. baseline); with best_per_group, the best of each group are named",
    },
    ParamSpec {
        name: "best_per_group",
        ty: ParamType::IntRange(0, 1_000_000),
        default: Some("0"),
        doc: "runs named best in each group",
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
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        3
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
        let runs_have = |c: &str| runs.iter().any(|(_, r)| r.params.contains_key(c));
        let cell = |item: &super::InputItem, run: &RunRecord, column: &str| -> Result<String> {
            Ok(match column {
                "stage" => item.stage.clone(),
                "steps_per_epoch" => run.steps_per_epoch.to_string(),
                "n_parameters" => run.n_parameters.to_string(),
                "diverged" => run.diverged.to_string(),
                // A parameter first (`lr` is also recorded per epoch, but the setting is meant).
                c if canonical_metric(c).is_some() && !runs_have(c) => {
                    format_metric(run.final_metric(c))
                }
                c => match run.params.get(c) {
                    Some(v) => format_value(v),
                    // A parameter of some runs only (e.g. the lr of the neural baselines).
                    None if runs_have(c) => "—".to_string(),
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

        // Each run's score by `rank_by` (higher is better; diverged runs lowest).
        let scores = if rank_by.is_empty() {
            None
        } else {
            let metric = canonical_metric(rank_by)
                .with_context(|| format!("unknown metric `{rank_by}` for rank_by"))?;
            let sign = if metric.ends_with("_acc") { 1.0 } else { -1.0 };
            let values: Vec<f64> = runs
                .iter()
                .map(|(_, r)| {
                    let v = r.final_metric(metric);
                    if v.is_finite() && !r.diverged {
                        sign * v
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            Some((metric, values))
        };
        let ranking = scores.as_ref().and_then(|(metric, values)| {
            let best =
                (0..runs.len()).max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)));
            let worst =
                (0..runs.len()).min_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
            best.zip(worst).map(|(b, w)| (*metric, b, w))
        });
        // The best `best_per_group` runs of each group (e.g. each baseline), when asked.
        let group_by = ctx.params.str("group_by")?;
        let per_group = ctx.params.usize("best_per_group")?;
        let mut group_best: Vec<(usize, String)> = Vec::new();
        if let (false, Some((_, values))) = (group_by.is_empty() || per_group == 0, &scores) {
            let group_of =
                |r: &RunRecord| r.params.get(group_by).map(format_value).unwrap_or_default();
            let mut groups: Vec<String> = runs.iter().map(|(_, r)| group_of(r)).collect();
            groups.dedup();
            for group in groups {
                let mut members: Vec<usize> = (0..runs.len())
                    .filter(|&i| group_of(&runs[i].1) == group)
                    .collect();
                members.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
                group_best.extend(
                    members
                        .into_iter()
                        .take(per_group)
                        .map(|i| (i, group.clone())),
                );
            }
        }

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
            let mark = match (ranking, group_best.iter().find(|(g, _)| *g == i)) {
                (Some((_, _, w)), _) if w == i => " *(worst)*".to_string(),
                (_, Some((_, group))) => format!(" **(best of {group})**"),
                (Some((_, b, _)), _) if b == i && group_best.is_empty() => {
                    " **(best)**".to_string()
                }
                _ => String::new(),
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
