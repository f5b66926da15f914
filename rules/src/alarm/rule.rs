//! Alarm rule files: the TOML an SRE writes, checked field by field into [`AlarmRule`]s.
//!
//! ```toml
//! [[rule]]
//! name = "CheckoutErrors"
//! project = "shop"
//! env = "prod"
//! severity = "critical"
//! kind = "error_rate"            # or p99_latency, no_requests, unhealthy_upstreams,
//!                                #    exception_template, slow_sql_fingerprint,
//!                                #    gray_regression, sql
//! filter = { route = "checkout" }
//! group_by = ["pool", "tag"]
//! window = "1m"
//! min_requests = 20
//! condition = "> 0.05"           # or "change > 50%" against the previous window
//! for = "0s"
//! keep_firing_for = "30s"
//! labels = { team = "payments" }
//! annotations = { summary = "{{ $labels.pool }}: {{ $value }} of requests fail" }
//! ```

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::duration::parse_duration;
use super::Labels;

/// What a rule asks of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Share of requests answered 5xx (or refused by the gateway), per label set.
    ErrorRate,
    /// p99 of the request latency in milliseconds.
    P99Latency,
    /// Requests in the window, for label sets that had traffic in the previous window.
    NoRequests,
    /// Upstream servers the gateway's health checks hold out of their pool.
    UnhealthyUpstreams,
    /// Exception templates new in the window or surging against the previous window.
    ExceptionTemplate,
    /// Slow-SQL fingerprints new in the window or surging against the previous window.
    SlowSqlFingerprint,
    /// The gray lane's error rate (or p99) worse than stable's on the same route.
    GrayRegression,
    /// A user SQL aggregate: every column but `value` is a label.
    Sql,
}

impl Kind {
    /// The table the kind reads (the one whose new rows wake its evaluation).
    pub fn table(self) -> &'static str {
        match self {
            Kind::ErrorRate | Kind::P99Latency | Kind::NoRequests | Kind::GrayRegression => {
                "access_log"
            }
            Kind::UnhealthyUpstreams => "metrics",
            Kind::ExceptionTemplate => "logs",
            Kind::SlowSqlFingerprint => "slow_sql",
            Kind::Sql => "",
        }
    }

    /// Dimensions a filter or `group_by` of this kind may name.
    pub fn dimensions(self) -> &'static [&'static str] {
        match self {
            Kind::ErrorRate | Kind::P99Latency | Kind::NoRequests | Kind::GrayRegression => &[
                "project", "env", "route", "pool", "upstream", "tag", "tenant", "host", "method",
            ],
            Kind::UnhealthyUpstreams => &["project", "env", "pool", "server"],
            Kind::ExceptionTemplate => &["project", "env", "pool", "host", "tenant", "tag"],
            Kind::SlowSqlFingerprint => &["project", "env", "pool", "db", "user"],
            Kind::Sql => &[],
        }
    }

    /// The condition a rule of this kind gets when it states none.
    fn default_condition(self) -> Option<Condition> {
        let c = |op, threshold| Condition {
            op,
            threshold,
            relative: false,
        };
        match self {
            Kind::NoRequests => Some(c(Op::Lt, 1.0)),
            Kind::UnhealthyUpstreams | Kind::ExceptionTemplate | Kind::SlowSqlFingerprint => {
                Some(c(Op::Gt, 0.0))
            }
            _ => None,
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

/// When a series' value makes the rule true.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub op: Op,
    pub threshold: f64,
    /// Compare the relative change against the previous window, `(cur - prev) / prev`,
    /// instead of the value.
    pub relative: bool,
}

impl Condition {
    /// Parse `"> 0.05"`, `">= 3"`, `"< 1"`, `"change > 50%"`, `"change < -0.3"`.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let t = s.trim();
        let (relative, t) = match t.strip_prefix("change") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, t),
        };
        let (op, rest) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .iter()
            .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r.trim())))
            .ok_or_else(|| {
                format!("`{s}`: expected `> N`, `>= N`, `< N`, `<= N` or `change > N%`")
            })?;
        let (num, pct) = match rest.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (rest, false),
        };
        let mut threshold: f64 = num
            .parse()
            .map_err(|_| format!("`{s}`: `{num}` is not a number"))?;
        if !threshold.is_finite() {
            return Err(format!("`{s}`: the threshold must be finite"));
        }
        if pct {
            threshold /= 100.0;
        }
        Ok(Condition {
            op,
            threshold,
            relative,
        })
    }

    /// Whether `value` (or the change from `previous` to `value`) meets the condition. A
    /// relative condition with no previous value (or a previous 0) is false: a change
    /// against nothing is undefined, and new series have their own kinds.
    pub fn holds(&self, value: f64, previous: Option<f64>) -> bool {
        let v = if self.relative {
            match previous {
                Some(p) if p != 0.0 && p.is_finite() => (value - p) / p.abs(),
                _ => return false,
            }
        } else {
            value
        };
        if !v.is_finite() {
            return false;
        }
        match self.op {
            Op::Gt => v > self.threshold,
            Op::Ge => v >= self.threshold,
            Op::Lt => v < self.threshold,
            Op::Le => v <= self.threshold,
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        };
        if self.relative {
            write!(f, "change {op} {}%", self.threshold * 100.0)
        } else {
            write!(f, "{op} {}", self.threshold)
        }
    }
}

/// One checked alarm rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmRule {
    pub name: String,
    pub project: String,
    pub env: String,
    pub severity: String,
    pub kind: Kind,
    /// Exact-match filters on the kind's dimensions.
    pub filter: BTreeMap<String, String>,
    /// The dimensions that make a label set (one alarm per distinct value tuple).
    pub group_by: Vec<String>,
    pub window_us: i64,
    pub condition: Condition,
    pub for_us: i64,
    pub keep_firing_for_us: i64,
    pub labels: Labels,
    pub annotations: Labels,
    /// Least requests (or occurrences) in the window for a series to count.
    pub min_requests: u64,
    /// `gray_regression`: compare `error_rate` or `p99`.
    pub metric: String,
    /// `gray_regression`: the lane tags compared.
    pub gray_tag: String,
    pub stable_tag: String,
    /// `sql`: the query, with `$window` where the time condition goes.
    pub sql: String,
    /// Off by the file's `enabled = false`; the API's switches add to this.
    pub enabled: bool,
    /// The file the rule came from.
    pub file: String,
}

impl AlarmRule {
    /// The rule's identity across reloads: `project/env/name`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.project, self.env, self.name)
    }
}

/// A rule as written: every field optional so that each missing or wrong one can be
/// named.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    project: Option<String>,
    env: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    kind: Option<Kind>,
    #[serde(default)]
    filter: BTreeMap<String, String>,
    #[serde(default)]
    group_by: Vec<String>,
    window: Option<String>,
    condition: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    min_requests: Option<u64>,
    metric: Option<String>,
    gray_tag: Option<String>,
    stable_tag: Option<String>,
    sql: Option<String>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// Why a rule file was refused: the file, the rule and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: rule `{rule}`: `{field}`: {reason}")]
pub struct RuleFileError {
    pub file: String,
    pub rule: String,
    pub field: String,
    pub reason: String,
}

/// Most rules one directory may hold.
pub const MAX_RULES: usize = 10_000;
/// Longest window a rule may look at.
pub const MAX_WINDOW_US: i64 = 24 * 3_600_000_000;

const NAME_OK: &str = "letters, digits, `_`, `-` and `.`, 1 to 128 of them";

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn label_name_ok(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 128
}

/// Parse and check one rule file. `taken` holds the ids of rules already read from other
/// files of the same directory (a duplicate is refused).
pub fn parse_rule_file(
    file: &str,
    text: &str,
    taken: &mut HashSet<String>,
) -> Result<Vec<AlarmRule>, RuleFileError> {
    let err = |rule: &str, field: &str, reason: String| RuleFileError {
        file: file.to_string(),
        rule: rule.to_string(),
        field: field.to_string(),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        err(
            "?",
            "?",
            e.to_string().lines().collect::<Vec<_>>().join(" "),
        )
    })?;
    let mut out = Vec::with_capacity(raw.rule.len());
    for (i, r) in raw.rule.into_iter().enumerate() {
        let label = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        let e = |field: &str, reason: String| err(&label, field, reason);
        let need = |v: Option<String>, field: &str| -> Result<String, RuleFileError> {
            let v = v.ok_or_else(|| e(field, "missing".into()))?;
            if name_ok(&v) {
                Ok(v)
            } else {
                Err(e(field, format!("`{v}`: use {NAME_OK}")))
            }
        };
        let name = need(r.name, "name")?;
        let project = need(r.project, "project")?;
        let env = need(r.env, "env")?;
        let kind = r.kind.ok_or_else(|| e("kind", "missing".into()))?;
        let dims = kind.dimensions();
        for k in r.filter.keys() {
            if kind != Kind::Sql && !dims.contains(&k.as_str()) {
                return Err(e(
                    "filter",
                    format!("`{k}` is no dimension of {kind:?}; use one of {dims:?}"),
                ));
            }
        }
        if kind == Kind::Sql && !r.filter.is_empty() {
            return Err(e("filter", "a sql rule filters in its own WHERE".into()));
        }
        for g in &r.group_by {
            if kind != Kind::Sql && !dims.contains(&g.as_str()) {
                return Err(e(
                    "group_by",
                    format!("`{g}` is no dimension of {kind:?}; use one of {dims:?}"),
                ));
            }
        }
        if kind == Kind::Sql && !r.group_by.is_empty() {
            return Err(e(
                "group_by",
                "a sql rule's label sets are its non-`value` columns".into(),
            ));
        }
        let dur = |v: Option<String>, field: &str, default: i64| -> Result<i64, RuleFileError> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(&s).map_err(|m| e(field, m)),
            }
        };
        let window_us = dur(r.window, "window", 60_000_000)?;
        if !(1_000_000..=MAX_WINDOW_US).contains(&window_us) {
            return Err(e("window", "must be from 1s to 24h".into()));
        }
        let for_us = dur(r.for_, "for", 0)?;
        let keep_firing_for_us = dur(r.keep_firing_for, "keep_firing_for", 0)?;
        let condition = match r.condition {
            Some(c) => Condition::parse(&c).map_err(|m| e("condition", m))?,
            None => kind
                .default_condition()
                .ok_or_else(|| e("condition", format!("missing (no default for {kind:?})")))?,
        };
        for (k, _) in r.labels.iter().chain(r.annotations.iter()) {
            if !label_name_ok(k) {
                return Err(e(
                    "labels",
                    format!("`{k}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
        }
        for reserved in ["alertname", "project", "env", "severity"] {
            if r.labels.contains_key(reserved) {
                return Err(e(
                    "labels",
                    format!("`{reserved}` is set from the rule itself"),
                ));
            }
        }
        for (k, v) in &r.annotations {
            super::template::check(v).map_err(|m| e(&format!("annotations.{k}"), m))?;
        }
        let only = |set: bool, field: &str, kinds: &[Kind]| -> Result<(), RuleFileError> {
            if set && !kinds.contains(&kind) {
                Err(e(field, format!("not a parameter of {kind:?}")))
            } else {
                Ok(())
            }
        };
        only(r.metric.is_some(), "metric", &[Kind::GrayRegression])?;
        only(r.gray_tag.is_some(), "gray_tag", &[Kind::GrayRegression])?;
        only(
            r.stable_tag.is_some(),
            "stable_tag",
            &[Kind::GrayRegression],
        )?;
        only(r.sql.is_some(), "sql", &[Kind::Sql])?;
        let metric = r.metric.unwrap_or_else(|| "error_rate".into());
        if !matches!(metric.as_str(), "error_rate" | "p99") {
            return Err(e("metric", format!("`{metric}`: use error_rate or p99")));
        }
        let sql = r.sql.unwrap_or_default();
        if kind == Kind::Sql {
            if sql.trim().is_empty() {
                return Err(e("sql", "missing".into()));
            }
            if !sql.contains("$window") {
                return Err(e(
                    "sql",
                    "must hold `$window` where the time condition goes (… WHERE $window …)".into(),
                ));
            }
            if sql.len() > 16 * 1024 {
                return Err(e("sql", "longer than 16 KiB".into()));
            }
        }
        let rule = AlarmRule {
            name,
            project,
            env,
            severity: r.severity.unwrap_or_else(|| "warning".into()),
            kind,
            filter: r.filter,
            group_by: r.group_by,
            window_us,
            condition,
            for_us,
            keep_firing_for_us,
            labels: r.labels,
            annotations: r.annotations,
            min_requests: r.min_requests.unwrap_or(match kind {
                Kind::ExceptionTemplate | Kind::SlowSqlFingerprint => 3,
                Kind::NoRequests | Kind::UnhealthyUpstreams | Kind::Sql => 0,
                _ => 10,
            }),
            metric,
            gray_tag: r.gray_tag.unwrap_or_else(|| "gray".into()),
            stable_tag: r.stable_tag.unwrap_or_else(|| crate::STABLE_TAG.into()),
            sql,
            enabled: r.enabled.unwrap_or(true),
            file: file.to_string(),
        };
        if !taken.insert(rule.id()) {
            return Err(e("name", format!("`{}` is defined twice", rule.id())));
        }
        if taken.len() > MAX_RULES {
            return Err(e("rule", format!("more than {MAX_RULES} rules")));
        }
        out.push(rule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Vec<AlarmRule>, RuleFileError> {
        parse_rule_file("a.toml", text, &mut HashSet::new())
    }

    #[test]
    fn conditions_parse_and_hold() {
        let c = Condition::parse("> 0.05").unwrap();
        assert!(c.holds(0.06, None) && !c.holds(0.05, None) && !c.holds(f64::NAN, None));
        let c = Condition::parse("change > 50%").unwrap();
        assert!(c.relative && (c.threshold - 0.5).abs() < 1e-12);
        assert!(c.holds(16.0, Some(10.0)) && !c.holds(15.0, Some(10.0)));
        assert!(!c.holds(16.0, None) && !c.holds(16.0, Some(0.0)));
        assert!(Condition::parse("<= -3").unwrap().holds(-3.0, None));
        for bad in ["", "0.5", "> x", "=> 1", "> inf", "change"] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Condition::parse("change>=10%").unwrap().to_string(),
            "change >= 10%"
        );
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let r = one(r#"
            [[rule]]
            name = "Errors"
            project = "shop"
            env = "prod"
            kind = "error_rate"
            filter = { route = "api" }
            group_by = ["pool"]
            condition = "> 0.05"
            annotations = { summary = "{{ $labels.pool }} at {{ $value }}" }

            [[rule]]
            name = "Quiet"
            project = "shop"
            env = "prod"
            kind = "no_requests"
            window = "30s"
            for = "1m"
            "#)
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id(), "shop/prod/Errors");
        assert_eq!((r[0].window_us, r[0].min_requests), (60_000_000, 10));
        assert_eq!(r[1].condition, Condition::parse("< 1").unwrap());
        assert_eq!((r[1].window_us, r[1].for_us), (30_000_000, 60_000_000));
    }

    #[test]
    fn bad_rules_name_file_rule_and_field() {
        let cases = [
            ("name = \"x\"\nproject=\"p\"\nenv=\"e\"", "kind"),
            ("name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"error_rate\"", "condition"),
            (
                "name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"error_rate\"\ncondition=\"> 1\"\nfilter={ colour = \"red\" }",
                "filter",
            ),
            (
                "name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"error_rate\"\ncondition=\"> 1\"\nwindow=\"5\"",
                "window",
            ),
            (
                "name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"sql\"\ncondition=\"> 1\"\nsql=\"SELECT 1\"",
                "sql",
            ),
            (
                "name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"error_rate\"\ncondition=\"> 1\"\nmetric=\"p99\"",
                "metric",
            ),
            (
                "name=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"error_rate\"\ncondition=\"> 1\"\nannotations={ s = \"{{ $labels.\" }",
                "annotations.s",
            ),
            ("name=\"a b\"\nproject=\"p\"\nenv=\"e\"", "name"),
        ];
        for (body, field) in cases {
            let e = one(&format!("[[rule]]\n{body}")).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.file, "a.toml");
        }
        let e = one("[[rule]]\nname=\"x\"\nbogus=1").unwrap_err();
        assert!(e.reason.contains("bogus"), "{e}");
        let twice = "[[rule]]\nname=\"x\"\nproject=\"p\"\nenv=\"e\"\nkind=\"no_requests\"\n";
        let e = one(&format!("{twice}{twice}")).unwrap_err();
        assert!(e.reason.contains("twice") && e.rule == "x", "{e}");
    }
}
