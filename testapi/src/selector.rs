//! Label selectors (full syntax: `=`, `==`, `!=`, `in`, `notin`, `key`,
//! `!key`, `>`/`<`) and field selectors (`path=value`, `path==value`,
//! `path!=value`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq)]
struct LabelReq {
    key: String,
    op: LabelOp,
    values: Vec<String>,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
    In,
    NotIn,
    LParen,
    RParen,
    Comma,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '=' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::DoubleEq);
                    i += 2;
                } else {
                    out.push(Tok::Eq);
                    i += 1;
                }
            }
            '!' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::NotEq);
                    i += 2;
                } else {
                    out.push(Tok::Bang);
                    i += 1;
                }
            }
            '>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            '<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                });
            }
            other => return Err(format!("invalid character '{other}' in label selector")),
        }
    }
    Ok(out)
}

impl LabelSelector {
    /// Parse the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = tokenize(s)?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let ident = |t: Option<&Tok>| -> Option<String> {
            match t {
                Some(Tok::Ident(s)) => Some(s.clone()),
                // `in`/`notin` are valid label values.
                Some(Tok::In) => Some("in".into()),
                Some(Tok::NotIn) => Some("notin".into()),
                _ => None,
            }
        };
        while i < toks.len() {
            if toks[i] == Tok::Bang {
                let key = ident(toks.get(i + 1)).ok_or("expected a key after '!'")?;
                reqs.push(LabelReq {
                    key,
                    op: LabelOp::NotExists,
                    values: vec![],
                });
                i += 2;
            } else {
                let key = match &toks[i] {
                    Tok::Ident(k) => k.clone(),
                    t => return Err(format!("unexpected token {t:?} in label selector")),
                };
                i += 1;
                match toks.get(i) {
                    None | Some(Tok::Comma) => reqs.push(LabelReq {
                        key,
                        op: LabelOp::Exists,
                        values: vec![],
                    }),
                    Some(Tok::Eq) | Some(Tok::DoubleEq) | Some(Tok::NotEq) | Some(Tok::Gt)
                    | Some(Tok::Lt) => {
                        let op = match &toks[i] {
                            Tok::NotEq => LabelOp::NotEq,
                            Tok::Gt => LabelOp::Gt,
                            Tok::Lt => LabelOp::Lt,
                            _ => LabelOp::Eq,
                        };
                        i += 1;
                        // An empty value (`a=`) is allowed and matches an empty label.
                        let value = match ident(toks.get(i)) {
                            Some(v) => {
                                i += 1;
                                v
                            }
                            None => String::new(),
                        };
                        if matches!(op, LabelOp::Gt | LabelOp::Lt) && value.parse::<i64>().is_err()
                        {
                            return Err(format!(
                                "for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                            ));
                        }
                        reqs.push(LabelReq {
                            key,
                            op,
                            values: vec![value],
                        });
                    }
                    Some(Tok::In) | Some(Tok::NotIn) => {
                        let op = if toks[i] == Tok::In {
                            LabelOp::In
                        } else {
                            LabelOp::NotIn
                        };
                        i += 1;
                        if toks.get(i) != Some(&Tok::LParen) {
                            return Err("expected '(' after set operator".into());
                        }
                        i += 1;
                        let mut values = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::RParen) => {
                                    i += 1;
                                    break;
                                }
                                Some(Tok::Comma) => i += 1,
                                t => match ident(t) {
                                    Some(v) => {
                                        values.push(v);
                                        i += 1;
                                    }
                                    None => {
                                        return Err(
                                            "unterminated value set in label selector".into()
                                        )
                                    }
                                },
                            }
                        }
                        reqs.push(LabelReq { key, op, values });
                    }
                    Some(t) => {
                        return Err(format!(
                            "unexpected token {t:?} after key in label selector"
                        ))
                    }
                }
            }
            match toks.get(i) {
                None => {}
                Some(Tok::Comma) => i += 1,
                Some(t) => return Err(format!("expected ',' but found {t:?} in label selector")),
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| {
            let v = get(&r.key);
            match r.op {
                LabelOp::Eq => v == Some(r.values[0].as_str()),
                LabelOp::NotEq => v != Some(r.values[0].as_str()),
                LabelOp::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                LabelOp::NotIn => !v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Gt | LabelOp::Lt => {
                    let (Some(Ok(have)), Ok(want)) =
                        (v.map(str::parse::<i64>), r.values[0].parse::<i64>())
                    else {
                        return false;
                    };
                    if r.op == LabelOp::Gt {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    /// (dotted path, equal?, value)
    reqs: Vec<(String, bool, String)>,
}

/// Split on an unescaped separator; `\` escapes `\`, `,` and `=`.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (key, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            reqs.push((key.trim().to_string(), eq, unescape(value.trim())));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The field paths used, for checking they are supported.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.reqs.iter().map(|(k, _, _)| k.as_str())
    }

    /// Compare each field's string form; a missing field reads as "" (so
    /// `spec.nodeName=` selects unscheduled pods, as on a real server).
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let have = lookup_string(obj, path);
            (have == *want) == *eq
        })
    }
}

/// The value at a dotted path as the string a field selector compares to.
pub fn lookup_string(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn label_selector_syntax() {
        let o = obj(json!({"app": "a", "tier": "db", "n": "5"}));
        let cases = [
            ("app=a", true),
            ("app==a", true),
            ("app!=a", false),
            ("app in (a, b)", true),
            ("app notin (a,b)", false),
            ("missing notin (a)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=a,tier=db", true),
            ("app=a,tier=web", false),
            ("n>4", true),
            ("n<4", false),
            ("", true),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).expect(sel);
            assert_eq!(s.matches(&o), want, "{sel}");
        }
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("app=a b").is_err());
    }

    #[test]
    fn field_selector_paths() {
        let o = json!({"metadata": {"name": "x", "namespace": "ns"}, "spec": {"nodeName": "n1", "ready": true}});
        let s = FieldSelector::parse("metadata.name=x,spec.nodeName!=n2,spec.ready==true").unwrap();
        assert!(s.matches(&o));
        let s = FieldSelector::parse("spec.missing=").unwrap();
        assert!(s.matches(&o));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
