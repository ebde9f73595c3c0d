//! RFC 6902 JSON Patch operations, as far as the injector writes them (`add` only), and
//! RFC 6901 JSON Pointer escaping.

use serde::Serialize;
use serde_json::Value;

/// One JSON Patch operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatchOp {
    /// Always `"add"`: the injector only adds (an `add` to an existing object member
    /// replaces it; to `…/-` it appends to an array).
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

impl PatchOp {
    /// Returns an `add` of `value` at `path`.
    pub fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            op: "add",
            path: path.into(),
            value,
        }
    }
}

/// Escapes one reference token of a JSON Pointer: `~` becomes `~0`, then `/` becomes `~1`
/// (in that order, so that `~1` in a key does not turn into `/`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tilde_before_slash() {
        assert_eq!(escape("tessera.dev/status"), "tessera.dev~1status");
        assert_eq!(escape("a~1b"), "a~01b");
        assert_eq!(escape("~/"), "~0~1");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn serializes_as_rfc6902() {
        let op = PatchOp::add("/spec/volumes/-", serde_json::json!({"name": "v"}));
        assert_eq!(
            serde_json::to_value(&op).unwrap(),
            serde_json::json!({"op": "add", "path": "/spec/volumes/-", "value": {"name": "v"}})
        );
    }
}
