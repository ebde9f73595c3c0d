//! A small RFC 6902 applier (`add`, `replace`, `remove`, `test`) with RFC 6901 pointers,
//! written independently of the injector's patch builder to check its output. Also
//! compiled into the crate's unit tests (`src/mutate/tests.rs`).

use serde_json::Value;

/// Applies `patch` (a JSON array of operations) to `document`, all or nothing.
pub fn apply(document: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a patch is an array")?;
    let mut work = document.clone();
    for op in ops {
        let name = op["op"].as_str().ok_or("op without a name")?;
        let path = op["path"].as_str().ok_or("op without a path")?;
        let tokens = parse_pointer(path)?;
        match name {
            "add" => add(&mut work, &tokens, value_of(op)?)?,
            "replace" => {
                let target = resolve(&mut work, &tokens)?;
                *target = value_of(op)?;
            }
            "remove" => remove(&mut work, &tokens)?,
            "test" => {
                if *resolve(&mut work, &tokens)? != value_of(op)? {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    *document = work;
    Ok(())
}

/// Splits a JSON Pointer into unescaped reference tokens (`~1` is `/`, `~0` is `~`).
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("pointer {pointer:?} does not start with /"))?;
    rest.split('/')
        .map(|token| {
            let mut out = String::new();
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => return Err(format!("bad escape in {pointer:?}")),
                }
            }
            Ok(out)
        })
        .collect()
}

fn value_of(op: &Value) -> Result<Value, String> {
    op.get("value")
        .cloned()
        .ok_or_else(|| "op without a value".to_owned())
}

fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    if token.len() > 1 && token.starts_with('0') {
        return Err(format!("index {token:?} has a leading zero"));
    }
    let index: usize = token.parse().map_err(|_| format!("bad index {token:?}"))?;
    let bound = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if index > bound || (!allow_end && len == 0) {
        return Err(format!("index {index} out of bounds ({len})"));
    }
    Ok(index)
}

fn resolve<'a>(document: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut current = document;
    for token in tokens {
        current = match current {
            Value::Object(map) => map
                .get_mut(token)
                .ok_or_else(|| format!("no member {token:?}"))?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                &mut items[index]
            }
            _ => return Err(format!("cannot descend into a scalar at {token:?}")),
        };
    }
    Ok(current)
}

fn add(document: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match resolve(document, parent_tokens)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true)?;
            items.insert(index, value);
        }
        _ => return Err(format!("parent of {last:?} is a scalar")),
    }
    Ok(())
}

fn remove(document: &mut Value, tokens: &[String]) -> Result<(), String> {
    let (last, parent_tokens) = tokens.split_last().ok_or("cannot remove the root")?;
    match resolve(document, parent_tokens)? {
        Value::Object(map) => map
            .remove(last)
            .map(|_| ())
            .ok_or_else(|| format!("no member {last:?}")),
        Value::Array(items) => {
            let index = array_index(last, items.len(), false)?;
            items.remove(index);
            Ok(())
        }
        _ => Err(format!("parent of {last:?} is a scalar")),
    }
}

#[cfg(test)]
mod self_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc6902_appendix_examples() {
        let mut doc = json!({"foo": ["bar", "baz"], "a/b": {"m~n": 1}});
        let patch = json!([
            {"op": "add", "path": "/foo/1", "value": "qux"},
            {"op": "add", "path": "/foo/-", "value": "end"},
            {"op": "replace", "path": "/a~1b/m~0n", "value": 2},
            {"op": "add", "path": "/new", "value": {}},
            {"op": "remove", "path": "/foo/0"},
        ]);
        apply(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"foo": ["qux", "baz", "end"], "a/b": {"m~n": 2}, "new": {}})
        );
    }

    #[test]
    fn a_failing_op_leaves_the_document_alone() {
        let mut doc = json!({"a": 1});
        let patch = json!([
            {"op": "add", "path": "/b", "value": 2},
            {"op": "add", "path": "/missing/child", "value": 3},
        ]);
        assert!(apply(&mut doc, &patch).is_err());
        assert_eq!(doc, json!({"a": 1}));
        // Appending to a missing array, past the end, into a scalar, without a leading /.
        for (doc, path) in [
            (json!({}), "/x/-"),
            (json!({"x": []}), "/x/1"),
            (json!({"a": 1}), "/a/0"),
            (json!({}), "nope"),
        ] {
            let patch = json!([{"op": "add", "path": path, "value": 0}]);
            assert!(apply(&mut doc.clone(), &patch).is_err(), "{path}");
        }
    }
}
