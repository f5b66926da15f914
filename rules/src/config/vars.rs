//! `${global.NAME}` variables: defined per project and env, substituted into a file's own
//! content before it is merged over its parent's. Other `${…}` forms (Spring's
//! placeholders, shell variables) are left alone.

use std::collections::{BTreeMap, BTreeSet};

const OPEN: &str = "${global.";

/// Whether a variable name is valid: 1 to 64 of letters, digits, `_`, `-`, `.`.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The global variables `text` uses.
pub fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len()..];
        match after.find('}') {
            Some(end) => {
                out.insert(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Replace every `${global.NAME}` with its value; an unknown or malformed name is an error
/// that names it (and its line).
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        // (Counted only for an error: counting for every variable is quadratic.)
        let line = || text[..consumed + at].matches('\n').count() + 1;
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "line {}: `${{global.` without a closing `}}`",
                line()
            ));
        };
        let name = &after[..end];
        if !valid_name(name) {
            return Err(format!("line {}: bad variable name `{name}`", line()));
        }
        let v = vars
            .get(name)
            .ok_or_else(|| format!("line {}: unknown variable `global.{name}`", line()))?;
        out.push_str(v);
        if out.len() > super::model::MAX_FILE {
            return Err(format!(
                "line {}: with its variables the file passes {} bytes",
                line(),
                super::model::MAX_FILE
            ));
        }
        let step = at + OPEN.len() + end + 1;
        consumed += step;
        rest = &rest[step..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_are_substituted_and_unknown_ones_named() {
        let vars = BTreeMap::from([
            ("db.host".to_string(), "10.0.0.5".to_string()),
            ("region".to_string(), "eu".to_string()),
        ]);
        let t = "url = jdbc://${global.db.host}:3306\nregion=${global.region}\nkeep=${spring.x}\n";
        assert_eq!(
            substitute(t, &vars).unwrap(),
            "url = jdbc://10.0.0.5:3306\nregion=eu\nkeep=${spring.x}\n"
        );
        assert_eq!(
            used(t),
            BTreeSet::from(["db.host".to_string(), "region".to_string()])
        );
        let e = substitute("a=1\nb=${global.nope}\n", &vars).unwrap_err();
        assert!(e.contains("line 2") && e.contains("global.nope"), "{e}");
        assert!(substitute("a=${global.x", &vars)
            .unwrap_err()
            .contains("closing"));
        assert!(substitute("a=${global.a b}", &vars)
            .unwrap_err()
            .contains("bad variable"));
    }
}
