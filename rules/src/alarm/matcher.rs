//! Alertmanager's label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"` (regexes anchored at both ends), as in routes, inhibition rules and
//! silences. A label that is absent matches as the empty string.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::Labels;

/// One matcher, in the shape of Alertmanager's `/api/v2/silences` JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
    #[serde(skip)]
    re: Option<Regex>,
}

fn yes() -> bool {
    true
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Matcher) -> bool {
        (&self.name, &self.value, self.is_regex, self.is_equal)
            == (&o.name, &o.value, o.is_regex, o.is_equal)
    }
}

/// Longest regex a matcher may hold.
const MAX_REGEX: usize = 1024;

impl Matcher {
    /// A matcher, with its regex compiled (refused if it does not compile).
    pub fn new(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Result<Matcher, String> {
        if name.is_empty() || name.len() > 128 {
            return Err(format!(
                "matcher label name `{name}` must be 1 to 128 bytes"
            ));
        }
        let mut m = Matcher {
            name: name.into(),
            value: value.into(),
            is_regex,
            is_equal,
            re: None,
        };
        m.compile()?;
        Ok(m)
    }

    /// Compile the regex of a matcher that came from JSON.
    pub fn compile(&mut self) -> Result<(), String> {
        if self.is_regex {
            if self.value.len() > MAX_REGEX {
                return Err(format!(
                    "regex of `{}` longer than {MAX_REGEX} bytes",
                    self.name
                ));
            }
            let re = regex::RegexBuilder::new(&format!("^(?:{})$", self.value))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("regex of `{}`: {e}", self.name))?;
            self.re = Some(re);
        }
        Ok(())
    }

    /// Parse `name="value"` (also `name=value`), `!=`, `=~`, `!~`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let at = s
            .find(['=', '!'])
            .ok_or_else(|| format!("matcher `{s}`: expected name=\"value\", !=, =~ or !~"))?;
        let name = s[..at].trim();
        let rest = &s[at..];
        let (is_equal, is_regex, value) = if let Some(v) = rest.strip_prefix("=~") {
            (true, true, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (false, true, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (false, false, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (true, false, v)
        } else {
            return Err(format!(
                "matcher `{s}`: expected =, !=, =~ or !~ after the name"
            ));
        };
        let value = value.trim();
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(q) => unquote(q),
            None => value.to_string(),
        };
        Matcher::new(name, &value, is_regex, is_equal)
    }

    /// Whether the labels satisfy the matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match &self.re {
            Some(re) => re.is_match(v),
            None if self.is_regex => false,
            None => v == self.value,
        };
        hit == self.is_equal
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        write!(f, "{}{op}\"{}\"", self.name, quote(&self.value))
    }
}

/// Escape a value for `name="…"`: backslash, double quote and newline.
fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`quote`] (an unknown escape keeps its backslash).
fn unquote(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(e @ ('\\' | '"')) => out.push(e),
            Some(e) => {
                out.push('\\');
                out.push(e);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// All matchers hold.
pub fn all_match(ms: &[Matcher], labels: &Labels) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

/// Parse a list of matcher strings.
pub fn parse_all(ss: &[String]) -> Result<Vec<Matcher>, String> {
    ss.iter().map(|s| Matcher::parse(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_follow_alertmanager() {
        let l = labels(&[("severity", "critical"), ("pool", "gray-1")]);
        for (m, want) in [
            ("severity=\"critical\"", true),
            ("severity=critical", true),
            ("severity!=\"critical\"", false),
            ("pool=~\"gray.*\"", true),
            ("pool=~\"gray\"", false), // anchored
            ("pool!~\"stable|canary\"", true),
            ("team=\"\"", true), // absent = empty
            ("team!=\"\"", false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
        }
        for bad in ["severity", "=x", "pool=~\"(\""] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Matcher::parse("a=~\"b.*\"").unwrap().to_string(),
            "a=~\"b.*\""
        );
    }
}
