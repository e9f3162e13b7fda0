//! Replicates as the gathering ops see them: members that differ only in their `rep` label form
//! one configuration, summarised by mean, sample standard deviation and N.
//!
//! Two configurations are called *not distinguishable* when their 95% confidence intervals of
//! the mean (Student's t, N−1 degrees of freedom) overlap. That is a conservative reading:
//! intervals that just touch correspond to p ≈ 0.01 for equal spreads, so "distinguishable" here
//! means clearly apart, and "not distinguishable" means more seeds are needed to tell.

use super::InputItem;
use super::runs::labels_text;
use crate::artifacts::{RunRecord, describe_params};
use crate::spec::{Assignment, REPLICATE_LABEL, member_name};

/// The replicates of one configuration, in the order the members were gathered.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The member name without `rep` (`grid[depth=6,width=16]`).
    pub name: String,
    /// The labels without `rep`.
    pub labels: Assignment,
    /// Indices into the gathered items.
    pub members: Vec<usize>,
}

/// Whether any gathered member is a replicate (has a `rep` label).
pub fn any_replicates(items: &[InputItem]) -> bool {
    items
        .iter()
        .any(|i| i.labels.iter().any(|(k, _)| k == REPLICATE_LABEL))
}

/// Groups the items by stage and labels other than `rep`, first appearance first.
pub fn group(items: &[InputItem]) -> Vec<Group> {
    let mut groups: Vec<(String, Group)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let base = item.stage.split('[').next().unwrap_or(&item.stage);
        let labels: Assignment = item
            .labels
            .iter()
            .filter(|(k, _)| k != REPLICATE_LABEL)
            .cloned()
            .collect();
        let name = member_name(base, &labels);
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, g)) => g.members.push(i),
            None => groups.push((
                name.clone(),
                Group {
                    name,
                    labels,
                    members: vec![i],
                },
            )),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// "3" when every configuration has 3 replicates, else the range ("2–3").
pub fn replicate_counts(groups: &[Group]) -> String {
    let counts = groups.iter().map(|g| g.members.len());
    match (counts.clone().min(), counts.max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "0".into(),
    }
}

/// The replicate number of an item (`None` for a stage without replicates).
pub fn replicate_of(item: &InputItem) -> Option<u64> {
    item.labels
        .iter()
        .find(|(k, _)| k == REPLICATE_LABEL)
        .and_then(|(_, v)| v.as_u64())
}

/// Mean and spread of one metric over a configuration's replicates. Non-finite values
/// (diverged runs) are counted apart and left out of the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Finite values.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (N−1); NaN for fewer than 2 values.
    pub sd: f64,
    /// Values that were not finite.
    pub diverged: usize,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stats {
        let (mut finite, mut diverged) = (Vec::new(), 0);
        for v in values {
            if v.is_finite() {
                finite.push(v);
            } else {
                diverged += 1;
            }
        }
        let n = finite.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            finite.iter().sum::<f64>() / n as f64
        };
        let sd = if n < 2 {
            f64::NAN
        } else {
            (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Stats {
            n,
            mean,
            sd,
            diverged,
        }
    }

    /// The 95% confidence interval of the mean (Student's t); `None` below 2 values.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        if self.n < 2 {
            return None;
        }
        let half = t95(self.n - 1) * self.sd / (self.n as f64).sqrt();
        Some((self.mean - half, self.mean + half))
    }

    /// `0.8123 ± 0.0101` (one value: `0.8123`; none: `diverged`), with the diverged count.
    pub fn display(&self, format: impl Fn(f64) -> String) -> String {
        let mut text = match self.n {
            0 => "diverged".to_string(),
            1 => format(self.mean),
            _ => format!("{} ± {}", format(self.mean), format(self.sd)),
        };
        if self.diverged > 0 && self.n > 0 {
            text.push_str(&format!(" ({} diverged)", self.diverged));
        }
        text
    }
}

/// Whether two configurations' 95% intervals are apart. A configuration with one value beside
/// a replicated one counts as exact (in a table of replicated runs, a single run is one whose
/// op has no seed, such as gradient boosting): then the question is whether that value lies
/// outside the other's interval. `None` when neither has an interval or a side has no value.
pub fn distinguishable(a: &Stats, b: &Stats) -> Option<bool> {
    let interval = |s: &Stats| match s.n {
        0 => None,
        1 => Some((s.mean, s.mean)),
        _ => s.ci95(),
    };
    if a.n < 2 && b.n < 2 {
        return None;
    }
    let ((alo, ahi), (blo, bhi)) = (interval(a)?, interval(b)?);
    Some(ahi < blo || bhi < alo)
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.021,
        61..=120 => 2.000,
        _ => 1.960,
    }
}

/// The configurations among gathered items: replicates grouped when there are any, else every
/// item on its own; and whether there were replicates.
pub fn configurations(items: &[InputItem]) -> (Vec<Group>, bool) {
    if any_replicates(items) {
        (group(items), true)
    } else {
        (singletons(items), false)
    }
}

/// Every item a configuration of its own (gathered runs without replicates).
fn singletons(items: &[InputItem]) -> Vec<Group> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| Group {
            name: item.stage.clone(),
            labels: item.labels.clone(),
            members: vec![i],
        })
        .collect()
}

/// A legend label for a configuration: its labels (`lr=0.01, width=16`), else its name.
pub fn group_label(g: &Group) -> String {
    if g.labels.is_empty() {
        g.name.clone()
    } else {
        labels_text(&g.labels)
    }
}

type Points = Vec<(f64, f64)>;

/// The pointwise mean of curves with the same x positions, and ±1 sample sd around it (empty
/// for a single curve). Points missing from shorter curves are left out of that point's mean.
pub fn mean_curve(curves: &[Points]) -> (Points, Points) {
    if let [only] = curves {
        return (only.clone(), Vec::new());
    }
    let len = curves.iter().map(Vec::len).max().unwrap_or(0);
    let mut points = Vec::with_capacity(len);
    let mut spread = Vec::with_capacity(len);
    for j in 0..len {
        let Some(x) = curves.iter().find_map(|c| c.get(j)).map(|p| p.0) else {
            continue;
        };
        let stats = Stats::of(curves.iter().filter_map(|c| c.get(j)).map(|p| p.1));
        points.push((x, stats.mean));
        spread.push(if stats.n >= 2 {
            (stats.mean - stats.sd, stats.mean + stats.sd)
        } else {
            (f64::NAN, f64::NAN)
        });
    }
    (points, spread)
}

/// The parameter line of a figure: what differs from the op's defaults or between the
/// configurations shown, from one replicate of each; with replicates, `replicates: N` instead
/// of the seeds.
pub fn describe_groups(
    runs: &[&RunRecord],
    groups: &[Group],
    aggregated: bool,
) -> Vec<(String, String)> {
    let representatives: Vec<&RunRecord> = groups.iter().map(|g| runs[g.members[0]]).collect();
    let mut params = describe_params(&representatives);
    if aggregated {
        params.retain(|(k, _)| k != "seed");
        params.push(("replicates".into(), replicate_counts(groups)));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::PathBuf;

    fn item(stage: &str, labels: &[(&str, Value)]) -> InputItem {
        InputItem {
            stage: stage.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn stats_match_hand_computed_values() {
        // Mean 0.8, deviations −0.02, 0, +0.02: variance 0.0008/2 = 0.0004, sd 0.02.
        let s = Stats::of([0.78, 0.80, 0.82]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.80).abs() < 1e-12);
        assert!((s.sd - 0.02).abs() < 1e-12);
        // t(2) = 4.303: half-width 4.303 × 0.02 / √3 = 0.049687…
        let (lo, hi) = s.ci95().unwrap();
        assert!((hi - 0.80 - 0.0496867).abs() < 1e-6, "{hi}");
        assert!((0.80 - lo - 0.0496867).abs() < 1e-6, "{lo}");
        assert_eq!(s.display(|v| format!("{v:.2}")), "0.80 ± 0.02");

        let d = Stats::of([1.0, f64::NAN, 3.0]);
        assert_eq!((d.n, d.mean, d.diverged), (2, 2.0, 1));
        assert!((d.sd - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            d.display(|v| format!("{v}")),
            "2 ± 1.4142135623730951 (1 diverged)"
        );
        let one = Stats::of([0.5]);
        assert!(one.sd.is_nan() && one.ci95().is_none());
        assert_eq!(one.display(|v| format!("{v}")), "0.5");
        assert_eq!(
            Stats::of([f64::NAN]).display(|v| format!("{v}")),
            "diverged"
        );
    }

    #[test]
    fn intervals_decide_distinguishability() {
        let a = Stats::of([0.80, 0.81, 0.82]);
        let close = Stats::of([0.81, 0.82, 0.83]);
        let far = Stats::of([0.90, 0.91, 0.92]);
        assert_eq!(distinguishable(&a, &close), Some(false));
        assert_eq!(distinguishable(&a, &far), Some(true));
        assert_eq!(distinguishable(&a, &Stats::of([0.9])), Some(true));
        assert_eq!(distinguishable(&a, &Stats::of([0.81])), Some(false));
        assert_eq!(distinguishable(&Stats::of([0.8]), &Stats::of([0.9])), None);
        assert_eq!(distinguishable(&a, &Stats::of([f64::NAN])), None);
    }

    #[test]
    fn replicates_group_by_everything_but_rep() {
        let items = [
            item("g[w=8,rep=1]", &[("w", json!(8)), ("rep", json!(1))]),
            item("g[w=16,rep=1]", &[("w", json!(16)), ("rep", json!(1))]),
            item("g[w=8,rep=2]", &[("w", json!(8)), ("rep", json!(2))]),
            item("h", &[]),
        ];
        assert!(any_replicates(&items));
        let groups = group(&items);
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.name.as_str(), g.members.clone()))
                .collect::<Vec<_>>(),
            [("g[w=8]", vec![0, 2]), ("g[w=16]", vec![1]), ("h", vec![3])]
        );
        assert_eq!(replicate_of(&items[2]), Some(2));
        assert_eq!(replicate_of(&items[3]), None);
        assert_eq!(group_label(&groups[0]), "w=8");
        assert_eq!(replicate_counts(&groups), "1–2");
    }

    #[test]
    fn mean_curves_average_pointwise_with_one_sd() {
        let (points, spread) = mean_curve(&[
            vec![(1.0, 1.0), (2.0, 0.5)],
            vec![(1.0, 3.0), (2.0, 0.5)],
            vec![(1.0, 2.0)],
        ]);
        assert_eq!(points, [(1.0, 2.0), (2.0, 0.5)]);
        assert_eq!(spread, [(1.0, 3.0), (0.5, 0.5)]);
        let (one, none) = mean_curve(&[vec![(1.0, 4.0)]]);
        assert_eq!((one, none.len()), (vec![(1.0, 4.0)], 0));
    }
}
