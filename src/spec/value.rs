//! Values: YAML → JSON with canonical numbers, compact display, `--set` scalars.

use serde_json::{Map, Number, Value};

/// Largest integer a f64 holds exactly; integral floats below it are stored as integers so that
/// `1` and `1.0` are the same value (and the same cache key).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

pub fn number_from_f64(x: f64) -> Option<Value> {
    if x.fract() == 0.0 && x.abs() < EXACT_INT {
        Some(Value::Number(Number::from(x as i64)))
    } else {
        Number::from_f64(x).map(Value::Number)
    }
}

pub fn yaml_to_json(value: &yaml_serde::Value) -> Result<Value, String> {
    yaml_to_json_at(value).map_err(|(path, e)| {
        if path.is_empty() {
            e
        } else {
            format!("{}: {e}", path.join("."))
        }
    })
}

/// [`yaml_to_json`], with the key path of a value that cannot be converted (for a location).
pub fn yaml_to_json_at(value: &yaml_serde::Value) -> Result<Value, (Vec<String>, String)> {
    let mut path = Vec::new();
    convert(value, &mut path).map_err(|e| (path, e))
}

/// On error, `path` is left pointing at the offending value.
fn convert(value: &yaml_serde::Value, path: &mut Vec<String>) -> Result<Value, String> {
    use yaml_serde::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                let x = n.as_f64().unwrap_or(f64::NAN);
                number_from_f64(x).ok_or_else(|| {
                    format!("the number {n} is not finite (NaN and infinity are not allowed)")
                })?
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(convert(item, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("mapping keys must be strings, found {other:?}")),
                };
                path.push(key.clone());
                out.insert(key, convert(v, path)?);
                path.pop();
            }
            Value::Object(out)
        }
        Y::Tagged(t) => return Err(format!("YAML tags like `{}` are not supported", t.tag)),
    })
}

/// A value as shown in member names and messages: `0.01`, `adam`, `[1,2]`.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format_f64(x),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(format_value).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", format_value(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Shortest round-tripping form, in scientific notation for very small or large magnitudes.
fn format_f64(x: f64) -> String {
    let plain = format!("{x}");
    let sci = format!("{x:e}");
    if plain.len() > sci.len() + 2 {
        sci
    } else {
        plain
    }
}

/// Parses a `--set` value as YAML (`7`, `0.1`, `true`, `[1, 2]`, `text`).
pub fn parse_scalar(raw: &str) -> Result<Value, String> {
    let yaml: yaml_serde::Value =
        yaml_serde::from_str(raw).map_err(|e| format!("cannot parse value: {e}"))?;
    yaml_to_json(&yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_are_integers() {
        let a: yaml_serde::Value = yaml_serde::from_str("{a: 1.0, b: 1, c: 0.5}").unwrap();
        let v = yaml_to_json(&a).unwrap();
        assert_eq!(v["a"], v["b"]);
        assert!(v["a"].is_i64());
        assert_eq!(v["c"], 0.5);
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_value(&serde_json::json!(0.01)), "0.01");
        assert_eq!(format_value(&serde_json::json!(0.00001)), "1e-5");
        assert_eq!(format_value(&serde_json::json!([1, "a"])), "[1,a]");
    }

    #[test]
    fn rejects_non_finite() {
        let a: yaml_serde::Value = yaml_serde::from_str("{a: {b: [1, .nan]}}").unwrap();
        let (path, _) = yaml_to_json_at(&a).unwrap_err();
        assert_eq!(path, ["a", "b", "1"]);
    }
}
