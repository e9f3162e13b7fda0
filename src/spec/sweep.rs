//! Sweeps: `key: [values]` axes form a grid (Cartesian product), `zip: {a: [..], b: [..]}` pairs
//! values, `points: [{..}, ..]` lists explicit points; all of them combine as a product.

use serde_json::{Map, Value};

/// One sweep member: parameter assignments in the order the sweep declares them.
pub type Assignment = Vec<(String, Value)>;

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
}
