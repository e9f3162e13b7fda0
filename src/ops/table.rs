//! `table`: one row per run with chosen parameter and metric columns, as CSV and Markdown,
//! naming the best and the worst run by a metric.

use std::fmt::Write as _;
use std::fs;

use anyhow::{Context, Result};

use super::replicates::{Group, Stats, configurations, describe_groups, distinguishable};
use super::{InputKind, InputSpec, Op, OpContext, OutputSpec, ParamSpec, ParamType};
use crate::artifacts::{ItemSummary, RunRecord, canonical_metric, metric_label};
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
        "Tabulate runs: parameters and final metrics per run (with replicates: mean ± sd and N per \
         configuration), best and worst named."
    }
    fn version(&self) -> u32 {
        // 2: the report's parameter line no longer lists one value per run for many runs.
        // 3: it leaves out the op's defaults.
        // 4: replicates make one row per configuration (mean ± sd, N).
        4
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
        let items = ctx.input("runs");
        let mut runs = Vec::new();
        for item in items {
            runs.push(
                RunRecord::read(&item.dir).with_context(|| format!("input `{}`", item.stage))?,
            );
        }
        // One row per configuration: its replicates (if any) summarised.
        let (groups, aggregated) = configurations(items);
        let runs_have = |c: &str| runs.iter().any(|r| r.params.contains_key(c));
        let value_of = |run: &RunRecord, metric: &str| {
            if run.diverged {
                f64::NAN
            } else {
                run.final_metric(metric)
            }
        };
        let stats_of = |g: &Group, metric: &str| {
            Stats::of(g.members.iter().map(|&i| value_of(&runs[i], metric)))
        };
        let shared = |g: &Group, text: &dyn Fn(&RunRecord) -> Option<String>| -> Option<String> {
            let first = text(&runs[g.members[0]]);
            g.members
                .iter()
                .all(|&i| text(&runs[i]) == first)
                .then_some(first)
                .flatten()
        };
        // A cell, and for metrics of replicated rows the standard deviation (CSV column `_sd`).
        let cell = |g: &Group, column: &str| -> Result<(String, Option<f64>)> {
            let first = &runs[g.members[0]];
            let single = g.members.len() == 1;
            Ok(match column {
                "stage" => (g.name.clone(), None),
                "steps_per_epoch" => (
                    shared(g, &|r| Some(r.steps_per_epoch.to_string()))
                        .unwrap_or_else(|| "varies".into()),
                    None,
                ),
                "n_parameters" => (
                    shared(g, &|r| Some(r.n_parameters.to_string()))
                        .unwrap_or_else(|| "varies".into()),
                    None,
                ),
                "diverged" if single => (first.diverged.to_string(), None),
                "diverged" => (
                    format!(
                        "{}/{}",
                        g.members.iter().filter(|&&i| runs[i].diverged).count(),
                        g.members.len()
                    ),
                    None,
                ),
                // A parameter first (`lr` is also recorded per epoch, but the setting is meant).
                c if canonical_metric(c).is_some() && !runs_have(c) => {
                    let metric = canonical_metric(c).unwrap_or(c);
                    if single {
                        (format_metric(first.final_metric(metric)), None)
                    } else {
                        let stats = stats_of(g, metric);
                        (stats.display(format_metric), Some(stats.sd))
                    }
                }
                c => match shared(g, &|r| r.params.get(c).map(format_value)) {
                    Some(v) => (v, None),
                    None if g.members.iter().any(|&i| runs[i].params.contains_key(c)) => {
                        ("varies".to_string(), None)
                    }
                    // A parameter of some runs only (e.g. the lr of the neural baselines).
                    None if runs_have(c) => ("—".to_string(), None),
                    None => anyhow::bail!(
                        "unknown column `{c}`: not a metric, nor a parameter of `{}`{}",
                        items[g.members[0]].stage,
                        crate::suggest::did_you_mean(c, first.params.keys().map(String::as_str))
                    ),
                },
            })
        };
        let mut rows = Vec::new();
        for g in &groups {
            rows.push(
                columns
                    .iter()
                    .map(|c| cell(g, c))
                    .collect::<Result<Vec<_>>>()?,
            );
        }

        // Each row's score by `rank_by` (higher is better; diverged runs lowest): the mean over
        // the replicates that did not diverge.
        let metric = if rank_by.is_empty() {
            None
        } else {
            Some(
                canonical_metric(rank_by)
                    .with_context(|| format!("unknown metric `{rank_by}` for rank_by"))?,
            )
        };
        let scores: Option<Vec<f64>> = metric.map(|metric| {
            let sign = if metric.ends_with("_acc") { 1.0 } else { -1.0 };
            groups
                .iter()
                .map(|g| {
                    let mean = stats_of(g, metric).mean;
                    if mean.is_finite() {
                        sign * mean
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect()
        });
        let order: Vec<usize> = match &scores {
            Some(values) => {
                let mut order: Vec<usize> = (0..groups.len()).collect();
                order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
                order
            }
            None => Vec::new(),
        };
        let ranking = metric.zip(order.first().copied().zip(order.last().copied()));
        // The best `best_per_group` rows of each group (e.g. each baseline), when asked.
        let group_by = ctx.params.str("group_by")?;
        let per_group = ctx.params.usize("best_per_group")?;
        let mut group_best: Vec<(usize, String)> = Vec::new();
        if !(group_by.is_empty() || per_group == 0 || order.is_empty()) {
            let group_of = |g: &Group| {
                runs[g.members[0]]
                    .params
                    .get(group_by)
                    .map(format_value)
                    .unwrap_or_default()
            };
            let mut kinds: Vec<String> = groups.iter().map(group_of).collect();
            kinds.dedup();
            for kind in kinds {
                group_best.extend(
                    order
                        .iter()
                        .filter(|&&i| group_of(&groups[i]) == kind)
                        .take(per_group)
                        .map(|&i| (i, kind.clone())),
                );
            }
        }

        let mut csv =
            csv::Writer::from_path(ctx.out_dir.join("table.csv")).context("writing table.csv")?;
        // Replicated rows: each metric's mean, then its standard deviation, then N.
        let sd_columns: Vec<bool> = (0..columns.len())
            .map(|c| rows.iter().any(|r| r[c].1.is_some()))
            .collect();
        let mut header: Vec<String> = Vec::new();
        for (c, name) in columns.iter().enumerate() {
            header.push(name.clone());
            if sd_columns[c] {
                header.push(format!("{name}_sd"));
            }
        }
        if aggregated {
            header.push("n".into());
        }
        csv.write_record(&header)?;
        for (g, row) in groups.iter().zip(&rows) {
            let mut record = Vec::new();
            for (c, (text, sd)) in row.iter().enumerate() {
                if sd_columns[c] {
                    let metric = canonical_metric(&columns[c]).unwrap_or(&columns[c]);
                    let stats = stats_of(g, metric);
                    record.push(csv_number(stats.mean));
                    record.push(sd.map_or(String::new(), csv_number));
                } else {
                    record.push(text.clone());
                }
            }
            if aggregated {
                record.push(g.members.len().to_string());
            }
            csv.write_record(&record)?;
        }
        csv.flush()?;

        let mut md = String::new();
        if !title.is_empty() {
            let _ = writeln!(md, "**{title}**\n");
        }
        let mut md_columns = columns.clone();
        if aggregated {
            md_columns.push("N".into());
        }
        let _ = writeln!(md, "| {} |", md_columns.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(md_columns.len()));
        for (i, (g, row)) in groups.iter().zip(&rows).enumerate() {
            let mark = match (ranking, group_best.iter().find(|(b, _)| *b == i)) {
                (Some((_, (_, w))), _) if w == i && groups.len() > 1 => " *(worst)*".to_string(),
                (_, Some((_, kind))) => format!(" **(best of {kind})**"),
                (Some((_, (b, _))), _) if b == i && group_best.is_empty() => {
                    " **(best)**".to_string()
                }
                _ => String::new(),
            };
            let mut cells: Vec<String> = row.iter().map(|(text, _)| text.clone()).collect();
            if let Some(last) = cells.last_mut() {
                last.push_str(&mark);
            }
            if aggregated {
                cells.push(g.members.len().to_string());
            }
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        if aggregated {
            let _ = writeln!(
                md,
                "\nMean ± sample standard deviation over N replicates (seeds); ranked by the mean."
            );
        }
        fs::write(ctx.out_dir.join("table.md"), &md).context("writing table.md")?;

        let describe = |g: &Group, metric: &str| {
            if g.members.len() == 1 {
                format_metric(value_of(&runs[g.members[0]], metric))
            } else {
                format!(
                    "{}, N={}",
                    stats_of(g, metric).display(format_metric),
                    g.members.len()
                )
            }
        };
        let reading = match ranking {
            Some((metric, (b, w))) => {
                let mut text = format!(
                    "best {}: {} ({}); worst: {} ({})",
                    metric_label(metric),
                    groups[b].name,
                    describe(&groups[b], metric),
                    groups[w].name,
                    describe(&groups[w], metric),
                );
                if let Some(&second) = order.get(1) {
                    let (best, next) = (
                        stats_of(&groups[b], metric),
                        stats_of(&groups[second], metric),
                    );
                    match distinguishable(&best, &next) {
                        Some(false) => text.push_str(&format!(
                            "; the best and the runner-up {} ({}) are not distinguishable (95% intervals overlap)",
                            groups[second].name,
                            describe(&groups[second], metric)
                        )),
                        Some(true) => text.push_str(&format!(
                            "; ahead of the runner-up {} beyond the 95% intervals",
                            groups[second].name
                        )),
                        None => {}
                    }
                }
                text
            }
            None => format!("{} runs", runs.len()),
        };
        let records: Vec<&RunRecord> = runs.iter().collect();
        let params = describe_groups(&records, &groups, aggregated);
        ItemSummary {
            id: ctx.params.str("id")?.to_string(),
            title: title.to_string(),
            figures: vec![],
            table_md: Some("table.md".into()),
            reading,
            params,
        }
        .write(ctx.out_dir)
    }
}

fn csv_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
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
