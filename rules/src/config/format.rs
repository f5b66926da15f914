//! Content types of config files: validation with line and column, and the merge of a
//! parent's content with a child's for the key-value formats.
//!
//! - `properties`: `key = value` / `key: value` lines, `#`/`!` comments; merge is by key
//!   (the child's value wins; the parent's order, then the child's new keys).
//! - `json` and `yaml`: objects/mappings merge deeply (the child wins; arrays and scalars
//!   are replaced).
//! - `xml` and `text`: no merge (the child's own content); XML is checked to be
//!   well-formed.

use serde::{Deserialize, Serialize};

/// A file's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Properties,
    Json,
    Yaml,
    Xml,
    Text,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Properties => "properties",
            ContentType::Json => "json",
            ContentType::Yaml => "yaml",
            ContentType::Xml => "xml",
            ContentType::Text => "text",
        }
    }
    /// Whether a child's content merges over its parent's.
    pub fn merges(self) -> bool {
        matches!(
            self,
            ContentType::Properties | ContentType::Json | ContentType::Yaml
        )
    }
    /// The MIME type clients are told.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Properties => "text/x-java-properties; charset=utf-8",
            ContentType::Json => "application/json",
            ContentType::Yaml => "application/yaml",
            ContentType::Xml => "application/xml",
            ContentType::Text => "text/plain; charset=utf-8",
        }
    }
}

/// Content that does not parse as its declared type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind} at line {line}, column {column}: {message}")]
pub struct FormatError {
    pub kind: &'static str,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn err(kind: &'static str, line: usize, column: usize, message: impl Into<String>) -> FormatError {
    FormatError {
        kind,
        line,
        column,
        message: message.into(),
    }
}

/// Check `text` parses as `ct`.
pub fn validate(ct: ContentType, text: &str) -> Result<(), FormatError> {
    match ct {
        ContentType::Properties => parse_properties(text).map(|_| ()),
        ContentType::Json => serde_json::from_str::<serde_json::Value>(text)
            .map(|_| ())
            .map_err(|e| err("invalid JSON", e.line(), e.column(), e.to_string())),
        ContentType::Yaml => yaml(text).map(|_| ()),
        ContentType::Xml => check_xml(text),
        ContentType::Text => Ok(()),
    }
}

/// Most YAML nodes a file may expand to: aliases replay their anchor's whole subtree, so
/// a 200 KB file of aliases to a big list would expand to billions of values.
pub const MAX_YAML_NODES: usize = 2_000_000;

/// Counts the nodes of a YAML document as its parser (aliases expanded) walks them,
/// allocating nothing, and stops past the budget.
struct Budget<'a>(&'a std::cell::Cell<usize>);

impl<'de> serde::de::DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.spend::<D::Error>()?;
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(Budget(self.0), d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(Budget(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_key_seed(Budget(self.0))?.is_some() {
            a.next_value_seed(Budget(self.0))?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess;
        let ((), v) = a.variant_seed(Budget(self.0))?;
        v.newtype_variant_seed(Budget(self.0))
    }
}

impl Budget<'_> {
    fn spend<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.0.get() + 1;
        self.0.set(n);
        if n > MAX_YAML_NODES {
            return Err(E::custom(format!(
                "the document expands to over {MAX_YAML_NODES} nodes (aliases?)"
            )));
        }
        Ok(())
    }
}

fn yaml(text: &str) -> Result<serde_yaml::Value, FormatError> {
    let at = |e: &serde_yaml::Error| {
        e.location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0))
    };
    // First count what the parse would build (aliases expanded), then build it.
    let count = std::cell::Cell::new(0);
    for doc in serde_yaml::Deserializer::from_str(text) {
        serde::de::DeserializeSeed::deserialize(Budget(&count), doc).map_err(|e| {
            let (line, column) = at(&e);
            err("invalid YAML", line, column, e.to_string())
        })?;
    }
    serde_yaml::from_str::<serde_yaml::Value>(text).map_err(|e| {
        let (line, column) = at(&e);
        err("invalid YAML", line, column, e.to_string())
    })
}

/// `properties` lines as ordered `(key, value)` pairs.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, FormatError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let indent = raw.len() - line.len();
        let Some(sep) = line.find(['=', ':']) else {
            return Err(err(
                "invalid properties",
                i + 1,
                indent + 1,
                "expected `key = value`",
            ));
        };
        let key = line[..sep].trim();
        if key.is_empty() {
            return Err(err("invalid properties", i + 1, indent + 1, "empty key"));
        }
        let value = line[sep + 1..].trim().to_string();
        match at.get(key) {
            Some(&i) => out[i].1 = value,
            None => {
                at.insert(key.to_string(), out.len());
                out.push((key.to_string(), value));
            }
        }
    }
    Ok(out)
}

/// A minimal well-formedness check: tags balance, one root, quoted attributes.
fn check_xml(text: &str) -> Result<(), FormatError> {
    let b = text.as_bytes();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut stack: Vec<(String, usize, usize)> = Vec::new();
    let mut roots = 0;
    let bad = |l, c, m: &str| Err(err("invalid XML", l, c, m));
    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize| {
        for &c in &b[*i..(*i + n).min(b.len())] {
            if c == b'\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
        }
        *i = (*i + n).min(b.len());
    };
    while i < b.len() {
        if b[i] != b'<' {
            if stack.is_empty() && !b[i].is_ascii_whitespace() {
                return bad(line, col, "text outside the root element");
            }
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        let (l0, c0) = (line, col);
        let rest = &text[i..];
        let skip_to = |pat: &str| rest.find(pat).map(|p| p + pat.len());
        let n = if rest.starts_with("<?") {
            skip_to("?>")
        } else if rest.starts_with("<!--") {
            skip_to("-->")
        } else if rest.starts_with("<![CDATA[") {
            if stack.is_empty() {
                return bad(l0, c0, "CDATA outside the root element");
            }
            skip_to("]]>")
        } else if rest.starts_with("<!") {
            skip_to(">")
        } else {
            // A tag: find its end outside quotes.
            let mut q: Option<u8> = None;
            let mut end = None;
            for (k, &c) in rest.as_bytes().iter().enumerate().skip(1) {
                match q {
                    Some(x) if c == x => q = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => q = Some(c),
                    None if c == b'<' => return bad(l0, c0, "`<` inside a tag"),
                    None if c == b'>' => {
                        end = Some(k);
                        break;
                    }
                    None => {}
                }
            }
            let Some(end) = end else {
                return bad(l0, c0, "unclosed tag");
            };
            let tag = &rest[1..end];
            let closing = tag.starts_with('/');
            let empty = tag.ends_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            if name.is_empty() {
                return bad(l0, c0, "a tag without a name");
            }
            if closing {
                match stack.pop() {
                    Some((open, _, _)) if open == name => {}
                    Some((open, ol, oc)) => {
                        return bad(
                            l0,
                            c0,
                            &format!("`</{name}>` closes `<{open}>` opened at {ol}:{oc}"),
                        )
                    }
                    None => return bad(l0, c0, &format!("`</{name}>` closes nothing")),
                }
            } else {
                if stack.is_empty() {
                    roots += 1;
                    if roots > 1 {
                        return bad(l0, c0, "a second root element");
                    }
                }
                if !empty {
                    stack.push((name, l0, c0));
                }
            }
            Some(end + 1)
        };
        let Some(n) = n else {
            return bad(l0, c0, "unterminated markup");
        };
        advance(&mut i, &mut line, &mut col, n);
    }
    if let Some((open, l, c)) = stack.pop() {
        return bad(l, c, &format!("`<{open}>` is never closed"));
    }
    if roots == 0 {
        return bad(line, col, "no root element");
    }
    Ok(())
}

/// The effective content of a child over its parent's effective content (both already
/// valid as `ct`): merged for key-value formats, the child's own otherwise.
pub fn merge(ct: ContentType, parent: &str, child: &str) -> Result<String, FormatError> {
    match ct {
        ContentType::Properties => {
            let mut kv = parse_properties(parent)?;
            let mut at: std::collections::HashMap<String, usize> = kv
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            for (k, v) in parse_properties(child)? {
                match at.get(&k) {
                    Some(&i) => kv[i].1 = v,
                    None => {
                        at.insert(k.clone(), kv.len());
                        kv.push((k, v));
                    }
                }
            }
            Ok(kv.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect())
        }
        ContentType::Json => {
            let parse = |t: &str| {
                serde_json::from_str::<serde_json::Value>(t)
                    .map_err(|e| err("invalid JSON", e.line(), e.column(), e.to_string()))
            };
            let mut p = parse(parent)?;
            deep_json(&mut p, parse(child)?);
            serde_json::to_string_pretty(&p).map_err(|e| err("JSON", 0, 0, e.to_string()))
        }
        ContentType::Yaml => {
            let mut p = yaml(parent)?;
            deep_yaml(&mut p, yaml(child)?);
            // The emitter cannot print every document the parser reads (some tags).
            serde_yaml::to_string(&p).map_err(|e| {
                err(
                    "YAML that cannot be merged",
                    0,
                    0,
                    format!("the merged document cannot be written back: {e}"),
                )
            })
        }
        ContentType::Xml | ContentType::Text => Ok(child.to_string()),
    }
}

fn deep_json(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) => deep_json(x, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

fn deep_yaml(into: &mut serde_yaml::Value, from: serde_yaml::Value) {
    match (into, from) {
        (serde_yaml::Value::Mapping(a), serde_yaml::Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) => deep_yaml(x, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_validates_with_line_and_column() {
        assert!(validate(ContentType::Properties, "a = 1\n# c\nb: 2\n").is_ok());
        let e = validate(ContentType::Properties, "a = 1\n  oops\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        let e = validate(ContentType::Json, "{\n  \"a\": 1,\n  \"b\": }\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = validate(ContentType::Yaml, "a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
        assert!(validate(ContentType::Yaml, "a:\n  b: 1\n").is_ok());
        assert!(validate(
            ContentType::Xml,
            "<?xml version=\"1.0\"?>\n<a x=\"1>2\"><b/><!-- c --><c>t</c></a>\n"
        )
        .is_ok());
        let e = validate(ContentType::Xml, "<a>\n  <b></c>\n</a>").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6), "{e}");
        assert!(validate(ContentType::Xml, "<a></a><b/>")
            .unwrap_err()
            .message
            .contains("second root"));
        assert!(validate(ContentType::Xml, "<a>")
            .unwrap_err()
            .message
            .contains("never closed"));
        assert!(validate(ContentType::Text, "anything { at all").is_ok());
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_before_it_expands() {
        let list: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
        let refs = vec!["*a"; 2000].join(", ");
        let bomb = format!("a: &a [{}]\nb: [{refs}]\n", list.join(", "));
        let e = validate(ContentType::Yaml, &bomb).unwrap_err();
        assert!(e.message.contains("expands to over"), "{e}");
        assert!(validate(
            ContentType::Yaml,
            "base: &b {x: 1}\nprod:\n  <<: *b\n  y: 2\n"
        )
        .is_ok());
    }

    #[test]
    fn key_value_formats_merge_and_the_child_wins() {
        let m = merge(
            ContentType::Properties,
            "db.host = a\ndb.port = 1\n",
            "db.port = 2\nx = y\n",
        )
        .unwrap();
        assert_eq!(m, "db.host=a\ndb.port=2\nx=y\n");
        let m = merge(
            ContentType::Json,
            r#"{"db": {"host": "a", "port": 1}, "list": [1, 2]}"#,
            r#"{"db": {"port": 2}, "list": [3]}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"db": {"host": "a", "port": 2}, "list": [3]})
        );
        let m = merge(
            ContentType::Yaml,
            "db:\n  host: a\n  port: 1\n",
            "db:\n  port: 2\n",
        )
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&m).unwrap();
        assert_eq!(v["db"]["host"], serde_yaml::Value::from("a"));
        assert_eq!(v["db"]["port"], serde_yaml::Value::from(2));
        assert_eq!(merge(ContentType::Xml, "<a/>", "<b/>").unwrap(), "<b/>");
    }
}
