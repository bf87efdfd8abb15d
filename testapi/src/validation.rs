//! Generic object checks applied to every resource: metadata.name rules and
//! the shape of metadata fields (labels, annotations, finalizers, owners).

use serde_json::Value;

use crate::errors::Cause;
use crate::resources::NameRule;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// The shape of one RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both
/// ends (no length limit: that is the caller's rule).
fn label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_label(s: &str) -> bool {
    s.len() <= 63 && label_shape(s)
}

/// A lower-case RFC 1123 subdomain as Kubernetes checks it: at most 253 characters matching
/// the subdomain pattern. Unlike DNS, no part between dots is limited to 63 characters
/// (apimachinery checks only the whole length and the pattern).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(label_shape)
}

/// Field errors for `metadata.name` under a resource's naming rule.
pub fn validate_name(name: &str, rule: NameRule) -> Vec<Cause> {
    let field = "metadata.name";
    let quoted = serde_json::to_string(name).unwrap_or_default();
    let mut out = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {quoted}: must be no more than 253 characters"),
                ));
            } else if !is_dns_subdomain(name) {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {quoted}: {SUBDOMAIN_MSG}"),
                ));
            }
        }
        NameRule::Label => {
            if !is_label(name) {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {quoted}: {LABEL_MSG}"),
                ));
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {quoted}: may not be '{name}'"),
                ));
            } else if name.contains('/') || name.contains('%') {
                out.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {quoted}: may not contain '/' or '%'"),
                ));
            }
        }
    }
    out
}

/// Reject metadata whose shape no real client could produce (the real
/// server fails to decode such bodies: 400).
pub fn check_metadata_shape(obj: &Value) -> Result<(), String> {
    let Some(meta) = obj.get("metadata") else {
        return Ok(());
    };
    let Some(meta) = meta.as_object() else {
        return Err("metadata must be an object".into());
    };
    for key in ["labels", "annotations"] {
        match meta.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(format!("metadata.{key}.{k}: expected a string value"));
                }
            }
            Some(_) => return Err(format!("metadata.{key} must be a map of strings")),
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return Err("metadata.finalizers must be a list of strings".into()),
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_object) => {}
        Some(_) => return Err("metadata.ownerReferences must be a list of objects".into()),
    }
    for key in [
        "name",
        "generateName",
        "namespace",
        "resourceVersion",
        "uid",
    ] {
        if let Some(v) = meta.get(key) {
            if !v.is_string() && !v.is_null() {
                return Err(format!("metadata.{key} must be a string"));
            }
        }
    }
    Ok(())
}

/// Label keys and values follow the real server's rules; bad ones are 422.
pub fn validate_labels(obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(labels) = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    else {
        return out;
    };
    for (k, v) in labels {
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let name_ok = !name.is_empty() && name.len() <= 63 && label_value_ok(name);
        let prefix_ok = prefix.is_none_or(is_dns_subdomain);
        if !name_ok || !prefix_ok {
            out.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                format!("Invalid value: {}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", serde_json::to_string(k).unwrap_or_default()),
            ));
        }
        let val = v.as_str().unwrap_or_default();
        if val.len() > 63 || !(val.is_empty() || label_value_ok(val)) {
            out.push(Cause::new(
                "FieldValueInvalid",
                "metadata.labels",
                format!("Invalid value: {}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", serde_json::to_string(val).unwrap_or_default()),
            ));
        }
    }
    out
}

fn label_value_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_limit_the_whole_name_not_its_parts() {
        let long_part = "a".repeat(100);
        assert!(
            is_dns_subdomain(&long_part),
            "a 100-character name without dots is valid"
        );
        assert!(is_dns_subdomain(&format!("{long_part}.example")));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert!(!is_dns_subdomain("Upper"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_label(&"a".repeat(64)));
    }

    #[test]
    fn names() {
        assert!(validate_name("a.b-c", NameRule::Subdomain).is_empty());
        assert_eq!(validate_name("Bad", NameRule::Subdomain).len(), 1);
        assert_eq!(validate_name("a.b", NameRule::Label).len(), 1);
        assert!(validate_name("system:controller:x", NameRule::PathSegment).is_empty());
    }
}
