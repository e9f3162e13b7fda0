//! Sweeps: `key: [values]` axes form a grid (Cartesian product), `zip: {a: [..], b: [..]}` pairs
//! values, `points: [{..}, ..]` lists explicit points, `random: {n, seed, params}` draws points;
//! all of them combine as a product.

use serde_json::{Map, Value};

/// One sweep member: parameter assignments in the order the sweep declares them.
pub type Assignment = Vec<(String, Value)>;

/// The member name: `base` or `base[k=v,k2=v2]`.
pub fn member_name(base: &str, labels: &Assignment) -> String {
    if labels.is_empty() {
        return base.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", super::format_value(v)))
        .collect();
    format!("{base}[{}]", inner.join(","))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Each axis lists alternatives; a member picks one alternative from every axis.
    axes: Vec<Vec<Assignment>>,
}

impl Sweep {
    pub fn parse(value: &Value) -> Result<Sweep, String> {
        let map = value
            .as_object()
            .ok_or("`sweep` must be a mapping, e.g. `sweep: {lr: [0.1, 0.01]}`")?;
        if map.is_empty() {
            return Err("empty sweep: list at least one parameter and its values".into());
        }
        let mut axes = Vec::new();
        for (key, values) in map {
            match key.as_str() {
                "zip" => axes.push(parse_zip(values)?),
                "points" => axes.push(parse_points(values)?),
                "random" => axes.push(parse_random(values)?),
                _ => {
                    let items = values
                        .as_array()
                        .ok_or_else(|| format!("sweep `{key}` must be a list of values"))?;
                    if items.is_empty() {
                        return Err(format!("empty sweep: `{key}` has no values"));
                    }
                    axes.push(
                        items
                            .iter()
                            .map(|v| vec![(key.clone(), v.clone())])
                            .collect(),
                    );
                }
            }
        }
        Ok(Sweep { axes })
    }

    /// How many members [`Sweep::expand`] would build (`None` past `usize::MAX`).
    pub fn count(&self) -> Option<usize> {
        self.axes
            .iter()
            .try_fold(1usize, |acc, axis| acc.checked_mul(axis.len()))
    }

    /// Every member, in declaration order (the last axis varies fastest).
    pub fn expand(&self) -> Vec<Assignment> {
        let mut members: Vec<Assignment> = vec![Vec::new()];
        for axis in &self.axes {
            members = members
                .iter()
                .flat_map(|m| {
                    axis.iter().map(move |alt| {
                        let mut next = m.clone();
                        next.extend(alt.iter().cloned());
                        next
                    })
                })
                .collect();
        }
        members
    }

    /// The parameter names this sweep sets.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for alt in self.axes.iter().flatten() {
            for (k, _) in alt {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        keys
    }
}

fn parse_zip(value: &Value) -> Result<Vec<Assignment>, String> {
    let map: &Map<String, Value> = value
        .as_object()
        .ok_or("`sweep.zip` must map parameters to equally long lists")?;
    let mut len = None;
    for (k, v) in map {
        let n = v
            .as_array()
            .ok_or_else(|| format!("`sweep.zip.{k}` must be a list"))?
            .len();
        if n == 0 {
            return Err(format!("empty sweep: `zip.{k}` has no values"));
        }
        match len {
            None => len = Some(n),
            Some(m) if m != n => {
                return Err(format!(
                    "`sweep.zip` lists differ in length ({m} vs {n} for `{k}`); zipped lists pair values one to one"
                ));
            }
            _ => {}
        }
    }
    let len = len.ok_or("empty sweep: `zip` lists no parameters")?;
    Ok((0..len)
        .map(|i| map.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect())
        .collect())
}

fn parse_points(value: &Value) -> Result<Vec<Assignment>, String> {
    let items = value
        .as_array()
        .ok_or("`sweep.points` must be a list of mappings, e.g. `[{depth: 1, width: 16}]`")?;
    if items.is_empty() {
        return Err("empty sweep: `points` is empty".into());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, p)| match p.as_object() {
            Some(m) if !m.is_empty() => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            _ => Err(format!("`sweep.points[{i}]` must be a non-empty mapping")),
        })
        .collect()
}

/// The most points a random sweep draws: its members are allocated when the file is read, before
/// the plan's own bound on stages applies.
pub const MAX_RANDOM_POINTS: u64 = 100_000;

const DISTRIBUTIONS: &[&str] = &["uniform", "log_uniform", "int_uniform", "choice"];

/// `random: {n: 20, seed: 0, params: {lr: {log_uniform: [1e-5, 1]}, width: {choice: [8, 16]}}}`.
/// Point `i` draws each parameter from its own hash of (seed, i, name), so raising `n` keeps the
/// first points and their cache entries, and adding a parameter leaves the others' draws alone.
/// Drawn floats are rounded to 3 significant digits: member names stay readable and name the
/// exact value used. A point equal to an earlier one (possible with `choice`) is dropped.
fn parse_random(value: &Value) -> Result<Vec<Assignment>, String> {
    const HINT: &str = "e.g. `random: {n: 20, seed: 0, params: {lr: {log_uniform: [1.0e-5, 1]}}}`";
    let map = value
        .as_object()
        .ok_or_else(|| format!("`sweep.random` must be a mapping, {HINT}"))?;
    for key in map.keys() {
        if !["n", "seed", "params"].contains(&key.as_str()) {
            return Err(format!(
                "`sweep.random` has no key `{key}`{}; it takes n, seed and params",
                crate::suggest::did_you_mean(key, ["n", "seed", "params"])
            ));
        }
    }
    let n = match map.get("n").map(Value::as_u64) {
        Some(Some(n)) if (1..=MAX_RANDOM_POINTS).contains(&n) => n,
        Some(_) => {
            return Err(format!(
                "`sweep.random.n` must be an integer from 1 to {MAX_RANDOM_POINTS}"
            ));
        }
        None => {
            return Err(format!(
                "`sweep.random` needs `n`, the number of points; {HINT}"
            ));
        }
    };
    let seed = match map.get("seed") {
        None => 0,
        Some(v) => v.as_i64().ok_or("`sweep.random.seed` must be an integer")?,
    };
    let params = match map.get("params") {
        Some(Value::Object(p)) if !p.is_empty() => p,
        _ => {
            return Err(format!(
                "`sweep.random.params` must map parameters to distributions; {HINT}"
            ));
        }
    };
    let mut dists = Vec::new();
    for (key, spec) in params {
        dists.push((key.clone(), Distribution::parse(key, spec)?));
    }
    let mut points: Vec<Assignment> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        let point: Assignment = dists
            .iter()
            .map(|(key, d)| (key.clone(), d.draw(unit_draw(seed, i, key))))
            .collect();
        let values: Vec<&Value> = point.iter().map(|(_, v)| v).collect();
        if seen.insert(serde_json::to_string(&values).unwrap_or_default()) {
            points.push(point);
        }
    }
    Ok(points)
}

#[derive(Debug, Clone, PartialEq)]
enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    IntUniform(i64, i64),
    Choice(Vec<Value>),
}

impl Distribution {
    fn parse(key: &str, spec: &Value) -> Result<Distribution, String> {
        let shape = || {
            format!(
                "`sweep.random.params.{key}` must be one of {{uniform: [lo, hi]}}, {{log_uniform: [lo, hi]}}, \
                 {{int_uniform: [lo, hi]}}, {{choice: [values]}}"
            )
        };
        let map = spec
            .as_object()
            .filter(|m| m.len() == 1)
            .ok_or_else(shape)?;
        let (kind, arg) = map.iter().next().ok_or_else(shape)?;
        let pair = |what: &str| -> Result<(f64, f64), String> {
            match arg.as_array().map(Vec::as_slice) {
                Some([a, b]) => match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() && a <= b => Ok((a, b)),
                    _ => Err(format!(
                        "`sweep.random.params.{key}.{what}` must be two numbers [lo, hi] with lo ≤ hi"
                    )),
                },
                _ => Err(format!(
                    "`sweep.random.params.{key}.{what}` must be a list [lo, hi]"
                )),
            }
        };
        Ok(match kind.as_str() {
            "uniform" => {
                let (a, b) = pair("uniform")?;
                Distribution::Uniform(a, b)
            }
            "log_uniform" => {
                let (a, b) = pair("log_uniform")?;
                if a <= 0.0 {
                    return Err(format!(
                        "`sweep.random.params.{key}.log_uniform` needs a lower bound above 0, got {a}"
                    ));
                }
                Distribution::LogUniform(a, b)
            }
            "int_uniform" => match arg.as_array().map(Vec::as_slice) {
                Some([a, b]) => match (a.as_i64(), b.as_i64()) {
                    (Some(a), Some(b)) if a <= b => Distribution::IntUniform(a, b),
                    _ => {
                        return Err(format!(
                            "`sweep.random.params.{key}.int_uniform` must be two integers [lo, hi] with lo ≤ hi"
                        ));
                    }
                },
                _ => {
                    return Err(format!(
                        "`sweep.random.params.{key}.int_uniform` must be a list [lo, hi]"
                    ));
                }
            },
            "choice" => match arg.as_array() {
                Some(items) if !items.is_empty() => Distribution::Choice(items.clone()),
                _ => {
                    return Err(format!(
                        "`sweep.random.params.{key}.choice` must be a non-empty list"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "`sweep.random.params.{key}`: unknown distribution `{other}`{}; {}",
                    crate::suggest::did_you_mean(other, DISTRIBUTIONS.iter().copied()),
                    shape()
                ));
            }
        })
    }

    /// The value at `u` in [0, 1).
    fn draw(&self, u: f64) -> Value {
        match self {
            // Interpolated so that bounds near ±f64::MAX cannot overflow to infinity.
            Distribution::Uniform(a, b) => {
                number(round_significant(a * (1.0 - u) + b * u).clamp(*a, *b))
            }
            Distribution::LogUniform(a, b) => {
                number(round_significant((a.ln() + u * (b.ln() - a.ln())).exp()).clamp(*a, *b))
            }
            Distribution::IntUniform(a, b) => {
                // The span fits in u64 for any i64 bounds; `u < 1` keeps the offset below it.
                let span = (*b as i128 - *a as i128 + 1) as f64;
                let offset = ((u * span) as i128).min(*b as i128 - *a as i128);
                Value::from((*a as i128 + offset) as i64)
            }
            Distribution::Choice(items) => {
                let i = ((u * items.len() as f64) as usize).min(items.len() - 1);
                items[i].clone()
            }
        }
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// `x` with 3 significant digits (0.000316227… → 0.000316).
fn round_significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.2e}").parse().unwrap_or(x)
}

/// A uniform draw in [0, 1) from (seed, point, parameter), the same on every machine.
fn unit_draw(seed: i64, point: u64, key: &str) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(b"pipeline/random-sweep/v1");
    h.update(&seed.to_le_bytes());
    h.update(&point.to_le_bytes());
    h.update(key.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members(v: Value) -> Vec<String> {
        Sweep::parse(&v)
            .unwrap()
            .expand()
            .iter()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn grid_is_a_product() {
        assert_eq!(
            members(json!({"a": [1, 2], "b": ["x", "y"]})),
            ["a=1,b=\"x\"", "a=1,b=\"y\"", "a=2,b=\"x\"", "a=2,b=\"y\""]
        );
    }

    #[test]
    fn zip_pairs_and_points_combine() {
        let m =
            members(json!({"zip": {"bs": [1, 16], "ep": [1, 10]}, "points": [{"d": 1}, {"d": 6}]}));
        assert_eq!(
            m,
            [
                "bs=1,ep=1,d=1",
                "bs=1,ep=1,d=6",
                "bs=16,ep=10,d=1",
                "bs=16,ep=10,d=6"
            ]
        );
    }

    #[test]
    fn empty_and_ragged_sweeps_are_errors() {
        assert!(
            Sweep::parse(&json!({}))
                .unwrap_err()
                .contains("empty sweep")
        );
        assert!(
            Sweep::parse(&json!({"lr": []}))
                .unwrap_err()
                .contains("empty sweep")
        );
        assert!(
            Sweep::parse(&json!({"zip": {"a": [1], "b": [1, 2]}}))
                .unwrap_err()
                .contains("differ in length")
        );
    }

    fn random(n: u64, seed: i64) -> Vec<String> {
        members(json!({"random": {"n": n, "seed": seed, "params": {
            "lr": {"log_uniform": [1e-5, 1]},
            "width": {"choice": [8, 16, 32, 64]},
            "dropout": {"uniform": [0, 0.5]},
            "depth": {"int_uniform": [1, 6]},
        }}}))
    }

    #[test]
    fn random_sweeps_are_deterministic_readable_and_extend_by_prefix() {
        let five = random(5, 0);
        assert_eq!(five.len(), 5);
        // Pinned: the same draws on every machine and in every version of this file.
        assert_eq!(five[0], random(1, 0)[0]);
        assert_eq!(random(5, 0), five, "same seed, same points");
        assert_ne!(random(5, 1), five, "another seed, other points");
        let twenty = random(20, 0);
        assert_eq!(&twenty[..5], &five[..], "raising n keeps the first points");
        for m in &twenty {
            let parts: Vec<&str> = m.split(',').collect();
            let value = |k: &str| -> f64 {
                parts
                    .iter()
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let lr = value("lr");
            assert!((1e-5..=1.0).contains(&lr), "{m}");
            // Three significant digits: the name is the value used.
            assert_eq!(format!("{lr:.2e}").parse::<f64>().unwrap(), lr, "{m}");
            assert!([8.0, 16.0, 32.0, 64.0].contains(&value("width")), "{m}");
            assert!((0.0..=0.5).contains(&value("dropout")), "{m}");
            let depth = value("depth");
            assert!(depth.fract() == 0.0 && (1.0..=6.0).contains(&depth), "{m}");
        }
        // Log-uniform spreads over the decades, not into the top one only.
        let small = random(200, 3)
            .iter()
            .filter(|m| {
                m.contains("lr=") && {
                    let lr: f64 = m
                        .split(',')
                        .find_map(|p| p.strip_prefix("lr="))
                        .unwrap()
                        .parse()
                        .unwrap();
                    lr < 1e-3
                }
            })
            .count();
        assert!((50..=110).contains(&small), "{small} of 200 below 1e-3");
    }

    #[test]
    fn draws_are_pinned_across_machines() {
        // Any change here changes every random sweep's members, so their cache entries.
        let u = unit_draw(0, 0, "lr");
        assert_eq!(u, unit_draw(0, 0, "lr"));
        assert!((0.0..1.0).contains(&u));
        assert_eq!(format!("{u:.12}"), PINNED_DRAW);
    }
    const PINNED_DRAW: &str = "0.547984335633";

    #[test]
    fn random_combines_with_grids_and_drops_repeats() {
        let m = members(
            json!({"opt": ["adam", "sgd"], "random": {"n": 50, "params": {"w": {"choice": [1, 2]}}}}),
        );
        // 50 draws from two values leave two distinct points per grid value.
        assert_eq!(m.len(), 4, "{m:?}");
        for opt in ["adam", "sgd"] {
            for w in ["w=1", "w=2"] {
                assert!(m.contains(&format!("opt=\"{opt}\",{w}")), "{m:?}");
            }
        }
    }

    #[test]
    fn extreme_bounds_draw_finite_values_quickly() {
        let m = members(json!({"random": {"n": 100_000, "params": {
            "x": {"uniform": [-1.0e308, 1.0e308]},
            "i": {"int_uniform": [i64::MIN, i64::MAX]},
        }}}));
        assert_eq!(m.len(), 100_000);
        assert!(m.iter().all(|p| !p.contains("null")), "{:?}", &m[..3]);
    }

    #[test]
    fn bad_random_sweeps_say_what_is_wrong() {
        let err = |v: Value| Sweep::parse(&json!({"random": v})).unwrap_err();
        assert!(err(json!({"params": {"lr": {"uniform": [0, 1]}}})).contains("needs `n`"));
        assert!(err(json!({"n": 0, "params": {"lr": {"uniform": [0, 1]}}})).contains("from 1 to"));
        assert!(
            err(json!({"n": 2, "params": {"lr": {"log_uniform": [0, 1]}}})).contains("above 0")
        );
        assert!(err(json!({"n": 2, "params": {"lr": {"uniform": [1, 0]}}})).contains("lo ≤ hi"));
        assert!(
            err(json!({"n": 2, "params": {"lr": {"loguniform": [1, 2]}}}))
                .contains("did you mean `log_uniform`")
        );
        assert!(
            err(json!({"n": 2, "sed": 1, "params": {"lr": {"uniform": [0, 1]}}}))
                .contains("did you mean `seed`")
        );
    }
}
