//! The patch formats the API server accepts: JSON merge patch (RFC 7386, also standing in for
//! strategic merge and server-side apply) and JSON patch (RFC 6902).

use serde_json::Value;

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// RFC 6902. The error is a message for the client.
pub(crate) fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in operations {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {op} lacks {name:?}"))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {op} lacks \"value\""))
        };
        let path = pointer(field("path")?)?;
        match field("op")? {
            "add" => add(target, &path, value()?)?,
            "remove" => {
                remove(target, &path)?;
            }
            "replace" => {
                let slot = get_mut(target, &path)?;
                *slot = value()?;
            }
            "test" => {
                if *get_mut(target, &path)? != value()? {
                    return Err(format!("test operation failed: {op}"));
                }
            }
            "move" => {
                let moved = remove(target, &pointer(field("from")?)?)?;
                add(target, &path, moved)?;
            }
            "copy" => {
                let copied = get_mut(target, &pointer(field("from")?)?)?.clone();
                add(target, &path, copied)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_mut<'a>(target: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut at = target;
    for token in path {
        at = match at {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path /{} does not exist", path.join("/")))?;
    }
    Ok(at)
}

fn split_last(path: &[String]) -> Result<(&[String], &String), String> {
    match path.split_last() {
        Some((last, parent)) => Ok((parent, last)),
        None => Err("the operation needs a non-root path".to_owned()),
    }
}

fn add(target: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_last(path)?;
    match get_mut(target, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("array index {last:?} out of range"))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!(
            "cannot add below a scalar at /{}",
            parent.join("/")
        )),
    }
}

fn remove(target: &mut Value, path: &[String]) -> Result<Value, String> {
    let (parent, last) = split_last(path)?;
    let missing = || format!("path /{} does not exist", path.join("/"));
    match get_mut(target, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(missing),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::{json_patch, merge};

    #[test]
    fn merge_patch_merges_objects_and_null_removes() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"a": {"b": [1, 2]}, "x~/y": 1});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "add", "path": "/a/b/0", "value": 0},
                {"op": "replace", "path": "/x~0~1y", "value": 2},
                {"op": "test", "path": "/x~0~1y", "value": 2},
                {"op": "remove", "path": "/a/b/1"},
                {"op": "copy", "from": "/a", "path": "/c"},
                {"op": "move", "from": "/c", "path": "/d"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": [0, 2, 3]}, "x~/y": 2, "d": {"b": [0, 2, 3]}})
        );
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/x~0~1y", "value": 9}])
            )
            .is_err()
        );
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
    }
}
