//! `${params.x}` interpolation: a string that is exactly one reference takes the referenced value
//! with its type; references inside longer strings are formatted. `$${` escapes a literal `${`.

use serde_json::{Map, Value};

use super::value::format_value;

const PREFIX: &str = "${params.";

pub fn interpolate(value: &Value, params: &Map<String, Value>) -> Result<Value, String> {
    interpolate_with(value, &mut |path| lookup(params, path).cloned())
}

fn interpolate_with(
    value: &Value,
    lookup: &mut dyn FnMut(&str) -> Result<Value, String>,
) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => interpolate_str(s, lookup)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| interpolate_with(v, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), interpolate_with(v, lookup)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn lookup<'a>(params: &'a Map<String, Value>, path: &str) -> Result<&'a Value, String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    let mut value = params.get(first).ok_or_else(|| {
        format!(
            "`${{params.{path}}}` refers to an unknown parameter `{first}`{}",
            crate::suggest::did_you_mean(first, params.keys().map(String::as_str))
        )
    })?;
    for part in parts {
        // `x.0` indexes a list.
        let next = match (value, part.parse::<usize>()) {
            (Value::Array(items), Ok(i)) => items.get(i),
            _ => value.get(part),
        };
        value = next.ok_or_else(|| format!("`${{params.{path}}}`: `{part}` not found"))?;
    }
    Ok(value)
}

fn interpolate_str(
    s: &str,
    lookup: &mut dyn FnMut(&str) -> Result<Value, String>,
) -> Result<Value, String> {
    if !s.contains("${") {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(inner) = s.strip_prefix(PREFIX).and_then(|r| r.strip_suffix('}'))
        && !inner.contains('}')
    {
        return lookup(inner);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(body) = after.strip_prefix(PREFIX) {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            out.push_str(&format_value(&lookup(&body[..end])?));
            rest = &body[end + 1..];
        } else {
            // Not ours (e.g. a shell variable `${n}`): keep it verbatim.
            out.push_str("${");
            rest = &after[2..];
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// Resolves references between pipeline parameters (depth first, each once); returns the
/// offending key on error.
pub fn resolve_params(params: &Map<String, Value>) -> Result<Map<String, Value>, (String, String)> {
    let mut done: Map<String, Value> = Map::new();
    for key in params.keys() {
        let mut stack = Vec::new();
        resolve_one(key, params, &mut done, &mut stack).map_err(|e| (key.clone(), e))?;
    }
    // Keep declaration order.
    Ok(params
        .keys()
        .map(|k| (k.clone(), done[k].clone()))
        .collect())
}

fn resolve_one(
    key: &str,
    raw: &Map<String, Value>,
    done: &mut Map<String, Value>,
    stack: &mut Vec<String>,
) -> Result<Value, String> {
    if let Some(v) = done.get(key) {
        return Ok(v.clone());
    }
    if stack.iter().any(|k| k == key) {
        stack.push(key.to_string());
        return Err(format!(
            "parameters refer to each other in a cycle: {}",
            stack.join(" → ")
        ));
    }
    let value = raw
        .get(key)
        .cloned()
        .ok_or_else(|| "unknown parameter".to_string())?;
    stack.push(key.to_string());
    let resolved = interpolate_with(&value, &mut |path| {
        let first = path.split('.').next().unwrap_or_default();
        if !raw.contains_key(first) {
            return lookup(raw, path).cloned();
        }
        let base = resolve_one(first, raw, done, stack)?;
        let mut single = Map::new();
        single.insert(first.to_string(), base);
        lookup(&single, path).cloned()
    })?;
    stack.pop();
    done.insert(key.to_string(), resolved.clone());
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> Map<String, Value> {
        json!({"lr": 0.01, "dir": "data", "nested": {"a": [1, 2]}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn whole_reference_keeps_type() {
        assert_eq!(
            interpolate(&json!("${params.lr}"), &params()).unwrap(),
            json!(0.01)
        );
        assert_eq!(
            interpolate(&json!("${params.nested.a}"), &params()).unwrap(),
            json!([1, 2])
        );
    }

    #[test]
    fn embedded_references_and_escapes() {
        let v = interpolate(
            &json!("${params.dir}/x-${params.lr} $${params.dir} ${HOME}"),
            &params(),
        )
        .unwrap();
        assert_eq!(v, json!("data/x-0.01 ${params.dir} ${HOME}"));
    }

    #[test]
    fn unknown_reference_suggests() {
        let e = interpolate(&json!("${params.dri}"), &params()).unwrap_err();
        assert!(e.contains("did you mean `dir`"), "{e}");
    }

    #[test]
    fn params_refer_to_params() {
        let p = json!({"a": "${params.b}/x", "b": "${params.c}", "c": 3})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(resolve_params(&p).unwrap()["a"], json!("3/x"));
        let cyc = json!({"a": "${params.b}", "b": "${params.a}"})
            .as_object()
            .unwrap()
            .clone();
        assert!(resolve_params(&cyc).is_err());
    }
}
