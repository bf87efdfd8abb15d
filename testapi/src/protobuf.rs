//! Decoding of Kubernetes protobuf request bodies for a few built-in kinds.
//!
//! kubectl's typed commands (`kubectl create namespace|configmap|secret|
//! serviceaccount`) send `application/vnd.kubernetes.protobuf` bodies and
//! have no JSON fallback. This module decodes the `k8s\0` envelope
//! (runtime.Unknown) and the messages of those kinds into their JSON form,
//! using field tables taken from the types' generated.proto numbering.
//! Responses are always JSON (clients accept it). Other kinds are 415.

use base64::Engine;
use serde_json::{json, Map, Value};

/// How one protobuf field maps to JSON.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    StrMap,
    BytesMap,
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
}

type Field = (u64, &'static str, Kind);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (4, "selfLink", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (8, "creationTimestamp", Kind::Time),
    (9, "deletionTimestamp", Kind::Time),
    (10, "deletionGracePeriodSeconds", Kind::Int),
    (11, "labels", Kind::StrMap),
    (12, "annotations", Kind::StrMap),
    (13, "ownerReferences", Kind::RepeatedMsg(OWNER_REFERENCE)),
    (14, "finalizers", Kind::RepeatedStr),
];

const NAMESPACE_SPEC: &[Field] = &[(1, "finalizers", Kind::RepeatedStr)];
const NAMESPACE_STATUS: &[Field] = &[(1, "phase", Kind::Str)];
const NAMESPACE: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(NAMESPACE_SPEC)),
    (3, "status", Kind::Msg(NAMESPACE_STATUS)),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::StrMap),
    (3, "binaryData", Kind::BytesMap),
    (4, "immutable", Kind::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::BytesMap),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::StrMap),
    (5, "immutable", Kind::Bool),
];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (
        3,
        "imagePullSecrets",
        Kind::RepeatedMsg(LOCAL_OBJECT_REFERENCE),
    ),
    (4, "automountServiceAccountToken", Kind::Bool),
];

fn schema_for(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("v1", "Namespace") => Some(NAMESPACE),
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        _ => None,
    }
}

/// A field as read off the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

/// A map entry message: key = 1, value = 2.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut r = Reader { buf: b };
    let mut key = String::new();
    let mut value = json!("");
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = utf8(k)?,
            (2, Wire::Bytes(v)) => {
                value = if bytes_value {
                    json!(base64::engine::general_purpose::STANDARD.encode(v))
                } else {
                    json!(utf8(v)?)
                }
            }
            _ => {}
        }
    }
    Ok((key, value))
}

/// google.protobuf.Timestamp-like meta.v1.Time {seconds = 1, nanos = 2}.
fn time(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf: b };
    let mut secs = 0i64;
    while let Some((n, w)) = r.next()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            secs = v as i64;
        }
    }
    if secs == 0 {
        // The zero Time is "unset".
        return Ok(Value::Null);
    }
    Ok(chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null))
}

fn message(b: &[u8], fields: &[Field]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((n, w)) = r.next()? {
        let Some((_, name, kind)) = fields.iter().find(|(num, _, _)| *num == n) else {
            continue;
        };
        let name = name.to_string();
        match (kind, w) {
            // Go emits unset optional strings as ""; JSON omits them.
            (Kind::Str, Wire::Bytes(v)) => {
                if !v.is_empty() {
                    out.insert(name, json!(utf8(v)?));
                }
            }
            (Kind::Int, Wire::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Kind::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Time, Wire::Bytes(v)) => {
                let t = time(v)?;
                if !t.is_null() {
                    out.insert(name, t);
                }
            }
            (Kind::Msg(sub), Wire::Bytes(v)) => {
                out.insert(name, message(v, sub)?);
            }
            (Kind::StrMap | Kind::BytesMap, Wire::Bytes(v)) => {
                let (k, val) = map_entry(v, matches!(kind, Kind::BytesMap))?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, val);
                }
            }
            (Kind::RepeatedStr, Wire::Bytes(v)) => {
                let entry = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!(utf8(v)?));
                }
            }
            (Kind::RepeatedMsg(sub), Wire::Bytes(v)) => {
                let item = message(v, sub)?;
                let entry = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(item);
                }
            }
            _ => return Err(format!("field {n} has an unexpected wire type")),
        }
    }
    Ok(Value::Object(out))
}

/// Decode a protobuf request body into JSON. Errors say why (for a 400),
/// `Ok(None)` means the kind is not one this server can decode (415).
pub fn decode(body: &[u8]) -> Result<Option<Value>, String> {
    let Some(unknown) = body.strip_prefix(b"k8s\0") else {
        return Err("protobuf body lacks the k8s envelope".into());
    };
    let mut r = Reader { buf: unknown };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((m, w2)) = t.next()? {
                    match (m, w2) {
                        (1, Wire::Bytes(v)) => api_version = utf8(v)?,
                        (2, Wire::Bytes(v)) => kind = utf8(v)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(v)) => raw = v,
            _ => {}
        }
    }
    let Some(fields) = schema_for(&api_version, &kind) else {
        return Ok(None);
    };
    let mut obj = message(raw, fields)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(Some(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let mut meta = Vec::new();
        bytes_field(1, b"s1", &mut meta);
        let mut label = Vec::new();
        bytes_field(1, b"app", &mut label);
        bytes_field(2, b"x", &mut label);
        bytes_field(11, &label, &mut meta);
        let mut secret = Vec::new();
        bytes_field(1, &meta, &mut secret);
        let mut entry = Vec::new();
        bytes_field(1, b"k", &mut entry);
        bytes_field(2, b"v", &mut entry);
        bytes_field(2, &entry, &mut secret);
        bytes_field(3, b"Opaque", &mut secret);
        let mut tm = Vec::new();
        bytes_field(1, b"v1", &mut tm);
        bytes_field(2, b"Secret", &mut tm);
        let mut unknown = b"k8s\0".to_vec();
        bytes_field(1, &tm, &mut unknown);
        bytes_field(2, &secret, &mut unknown);
        let v = decode(&unknown).unwrap().unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "s1", "labels": {"app": "x"}}, "data": {"k": "dg=="}})
        );
        assert!(decode(b"nope").is_err());
    }
}
