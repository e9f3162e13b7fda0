//! Parameter declarations (name, type, default, doc) and the resolved parameters an op reads.

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    Bool,
    Int,
    Float,
    /// An integer in an inclusive range: counts and sizes that decide allocations get a bound.
    IntRange(i64, i64),
    /// A number in an inclusive range.
    FloatRange(f64, f64),
    /// A number > 0 (learning rates, regularisation strengths).
    PositiveFloat,
    Str,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    List(&'static ParamType),
    Map,
    Any,
}

impl std::fmt::Display for ParamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamType::Bool => write!(f, "bool"),
            ParamType::Int => write!(f, "int"),
            ParamType::Float => write!(f, "float"),
            ParamType::IntRange(lo, hi) if *hi >= 1 << 20 => write!(f, "int ≥ {lo}"),
            ParamType::IntRange(lo, hi) => write!(f, "int in {lo}..={hi}"),
            ParamType::FloatRange(lo, hi) if *hi == f64::MAX => write!(f, "float ≥ {lo}"),
            ParamType::FloatRange(lo, hi) => write!(f, "float in {lo}..={hi}"),
            ParamType::PositiveFloat => write!(f, "float > 0"),
            ParamType::Str => write!(f, "string"),
            ParamType::Choice(options) => write!(f, "{}", options.join("|")),
            ParamType::List(inner) => write!(f, "list of {inner}"),
            ParamType::Map => write!(f, "map"),
            ParamType::Any => write!(f, "any"),
        }
    }
}

impl ParamType {
    /// Checks a value against the type; returns a description of the mismatch.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let ok = match self {
            ParamType::Bool => value.is_boolean(),
            ParamType::Int => value.is_i64() || value.is_u64(),
            ParamType::Float => value.is_number(),
            ParamType::IntRange(lo, hi) => {
                return match value.as_i64() {
                    Some(v) if (*lo..=*hi).contains(&v) => Ok(()),
                    Some(v) if v < *lo => Err(format!("{v} is below the minimum {lo}")),
                    Some(v) => Err(format!("{v} is above the maximum {hi}")),
                    None if value.is_u64() => Err(format!("{value} is above the maximum {hi}")),
                    None => Err(format!("expected {self}, got {}", describe(value))),
                };
            }
            ParamType::FloatRange(lo, hi) => {
                return match value.as_f64() {
                    Some(v) if v.is_finite() && v >= *lo && v <= *hi => Ok(()),
                    Some(v) => Err(format!("{} is outside {self}", describe_number(v))),
                    None => Err(format!("expected {self}, got {}", describe(value))),
                };
            }
            ParamType::PositiveFloat => {
                return match value.as_f64() {
                    Some(v) if v.is_finite() && v > 0.0 => Ok(()),
                    Some(v) => Err(format!("{} must be > 0", describe_number(v))),
                    None => Err(format!("expected {self}, got {}", describe(value))),
                };
            }
            ParamType::Str => value.is_string(),
            ParamType::Choice(options) => {
                return match value.as_str() {
                    Some(s) if options.contains(&s) => Ok(()),
                    Some(s) => Err(match crate::suggest::closest(s, options.iter().copied()) {
                        Some(best) => format!(
                            "`{s}` is not one of {}; did you mean `{best}`?",
                            options.join(", ")
                        ),
                        None => format!("`{s}` is not one of {}", options.join(", ")),
                    }),
                    None => Err(format!(
                        "expected one of {}, got {}",
                        options.join(", "),
                        describe(value)
                    )),
                };
            }
            ParamType::List(inner) => {
                return match value.as_array() {
                    Some(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                        inner.check(item).map_err(|e| format!("item {i}: {e}"))
                    }),
                    None => Err(format!("expected a list, got {}", describe(value))),
                };
            }
            ParamType::Map => value.is_object(),
            ParamType::Any => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self}, got {}", describe(value)))
        }
    }
}

fn describe_number(v: f64) -> String {
    crate::spec::format_value(&serde_json::json!(v))
}

fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    };
    format!("{kind} {}", crate::spec::format_value(value))
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// A YAML literal; `None` makes the parameter required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// Resolved parameters: defaults filled in, types checked, numbers canonical.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&Value> {
        self.get(name)
            .ok_or_else(|| anyhow!("parameter `{name}` is not set"))
    }

    pub fn f64(&self, name: &str) -> Result<f64> {
        self.required(name)?
            .as_f64()
            .ok_or_else(|| anyhow!("parameter `{name}` is not a number"))
    }

    pub fn i64(&self, name: &str) -> Result<i64> {
        self.required(name)?
            .as_i64()
            .ok_or_else(|| anyhow!("parameter `{name}` is not an integer"))
    }

    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.i64(name)?;
        usize::try_from(v).map_err(|_| anyhow!("parameter `{name}` must be ≥ 0, got {v}"))
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        self.required(name)?
            .as_bool()
            .ok_or_else(|| anyhow!("parameter `{name}` is not a bool"))
    }

    pub fn str(&self, name: &str) -> Result<&str> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| anyhow!("parameter `{name}` is not a string"))
    }

    pub fn str_list(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("parameter `{name}` must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(anyhow!("parameter `{name}` is not a list")),
        }
    }

    pub fn f64_list(&self, name: &str) -> Result<Vec<f64>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| anyhow!("parameter `{name}` must be a list of numbers"))
                })
                .collect(),
            Some(_) => Err(anyhow!("parameter `{name}` is not a list")),
        }
    }

    /// A list of exactly three numbers (per-channel R, G, B values).
    pub fn rgb(&self, name: &str) -> Result<[f32; 3]> {
        match self.f64_list(name)?.as_slice() {
            [r, g, b] => Ok([*r as f32, *g as f32, *b as f32]),
            other => Err(anyhow!(
                "parameter `{name}` needs three values (R, G, B), got {}",
                other.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_check_and_explain() {
        assert!(ParamType::Float.check(&json!(1)).is_ok());
        assert!(ParamType::Int.check(&json!(1.5)).is_err());
        let epochs = ParamType::IntRange(1, 1000);
        assert!(
            epochs
                .check(&json!(0))
                .unwrap_err()
                .contains("below the minimum 1")
        );
        assert!(epochs.check(&json!(-3)).is_err());
        assert!(
            epochs
                .check(&json!(u64::MAX))
                .unwrap_err()
                .contains("above")
        );
        assert!(
            ParamType::PositiveFloat
                .check(&json!(0))
                .unwrap_err()
                .contains("> 0")
        );
        assert!(ParamType::PositiveFloat.check(&json!(1e-5)).is_ok());
        assert!(ParamType::FloatRange(0.0, 1.0).check(&json!(1.5)).is_err());
        let err = ParamType::Choice(&["adam", "sgd"])
            .check(&json!("adma"))
            .unwrap_err();
        assert!(err.contains("did you mean `adam`"), "{err}");
        let err = ParamType::List(&ParamType::Float)
            .check(&json!([1, "x"]))
            .unwrap_err();
        assert!(err.contains("item 1"), "{err}");
    }

    #[test]
    fn typed_getters() {
        let p = Params(
            json!({"lr": 0.1, "n": 3, "name": "x", "xs": [1, 2.5]})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(p.f64("lr").unwrap(), 0.1);
        assert_eq!(p.f64("n").unwrap(), 3.0);
        assert_eq!(p.usize("n").unwrap(), 3);
        assert_eq!(p.f64_list("xs").unwrap(), vec![1.0, 2.5]);
        assert!(p.i64("lr").is_err());
        assert!(p.str("missing").is_err());
    }
}
