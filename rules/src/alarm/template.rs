//! The small template language of annotations and receiver bodies: `{{ $labels.pool }}`,
//! `{{ $value }}` in annotations (as in Prometheus rules; also `{{ $evidence.x }}`, the
//! numbers a built-in kind measured, e.g. `gray_error_rate`), and `{{ .status }}`,
//! `{{ .commonLabels.alertname }}`, `{{ .commonAnnotations.summary }}`,
//! `{{ .alertsText }}` in bodies (paths into the webhook payload). A path that names nothing
//! renders empty. Nothing else (no loops, no functions): a template cannot run away.

use serde_json::Value;

/// Largest template accepted.
pub const MAX_TEMPLATE: usize = 16 * 1024;

/// Check a template's syntax: every `{{` closed, every placeholder a path.
pub fn check(t: &str) -> Result<(), String> {
    if t.len() > MAX_TEMPLATE {
        return Err(format!("template longer than {MAX_TEMPLATE} bytes"));
    }
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let j = after.find("}}").ok_or_else(|| {
            format!(
                "`{{{{` at byte {} is never closed",
                t.len() - rest.len() + i
            )
        })?;
        let path = after[..j].trim();
        let ok = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'$' | b'-'));
        if !ok {
            return Err(format!(
                "`{{{{ {path} }}}}`: expected a path like $labels.pool or .status"
            ));
        }
        rest = &after[j + 2..];
    }
    Ok(())
}

/// Render `t`, looking each `{{ path }}` up in `data` (`$labels.x` → `data.labels.x`,
/// `$value` → `data.value`, `.a.b` → `data.a.b`). `escape` is applied to each inserted
/// value (JSON string escaping for JSON bodies).
pub fn render(t: &str, data: &Value, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let path = after[..j].trim();
        let path = path
            .strip_prefix('$')
            .or_else(|| path.strip_prefix('.'))
            .unwrap_or(path);
        let mut v = data;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            v = v.get(part).unwrap_or(&Value::Null);
        }
        let s = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) => format_value(f),
                None => n.to_string(),
            },
            other => other.to_string(),
        };
        out.push_str(&escape(&s));
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// No escaping.
pub fn plain(s: &str) -> String {
    s.to_string()
}

/// Escaping for a value placed inside a JSON string literal.
pub fn json_escape(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q[1..q.len().saturating_sub(1)].to_string()
}

/// A value as people read it: up to 4 significant decimals, no float noise.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_labels_value_and_paths() {
        let d = json!({"labels": {"pool": "gray"}, "value": 0.1234567, "status": "firing"});
        assert_eq!(
            render(
                "{{ $labels.pool }} at {{ $value }} ({{.status}}) {{ $labels.none }}!",
                &d,
                plain
            ),
            "gray at 0.1235 (firing) !"
        );
        assert_eq!(
            render(
                "{{ .labels.pool }}",
                &json!({"labels": {"pool": "a\"b"}}),
                json_escape
            ),
            "a\\\"b"
        );
        assert_eq!(format_value(3.0), "3");
        assert!(check("{{ $labels.pool }}").is_ok());
        for bad in ["{{ $labels.", "{{ }}", "{{ range .Alerts }}"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
