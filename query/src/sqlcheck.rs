//! What a user's SQL may do, decided on its syntax tree before any store sees it:
//! - one read-only statement (`SELECT`, `WITH … SELECT`, `EXPLAIN` of one);
//! - only Apus's tables (and the query's own CTEs), unqualified — no other database, no
//!   `system.*`, no table functions (`url()`, `remote()`, `mysql()`, `file()`: SSRF and file
//!   reads from the ClickHouse host; `generate_series()` and friends);
//! - no `SETTINGS` or `FORMAT` clause (they would lift the server's limits or change the
//!   answer's shape);
//! - no function whose output size its arguments set (`repeat('x', 1e12)` allocates
//!   outside DataFusion's memory pool in one step, which no timeout can interrupt);
//! - at most [`MAX_TOKENS`] tokens, so no expression is deep enough to exhaust a stack.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Query, Statement, TableFactor, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::{
    ClickHouseDialect, Dialect as SqlDialect, GenericDialect,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::QueryError;
use apus_store::read::Dialect;

/// Most tokens (words, literals, operators; not whitespace) in one user query.
pub const MAX_TOKENS: usize = 4096;

/// Functions whose output size is set by an argument, not by the data (either dialect).
const AMPLIFIERS: &[&str] = &[
    "repeat",
    "lpad",
    "rpad",
    "leftpad",
    "rightpad",
    "space",
    "replicate",
    "replace",
    "regexp_replace",
    "replaceall",
    "replaceregexpall",
    "replaceregexpone",
    "overlay",
    "array_repeat",
    "arraywithconstant",
    "arrayresize",
    "range",
    "generate_series",
    "randomstring",
    "randomfixedstring",
    "randomprintableascii",
    "randomstringutf8",
];

/// The tables user SQL may read.
fn allowed_tables() -> Vec<String> {
    let mut t: Vec<String> = apus_schema::Table::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    t.extend(["slow_sql_1h", "access_log_1h", "slow_sql_hourly"].map(String::from));
    let all: Vec<String> = t.iter().map(|n| format!("{n}_all")).collect();
    t.extend(all);
    t
}

struct Check {
    tables: Vec<String>,
    local: bool,
}

fn bare(name: &str) -> String {
    name.trim_matches(|c| c == '"' || c == '`')
        .to_ascii_lowercase()
}

impl Visitor for Check {
    type Break = String;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
        if q.settings.is_some() {
            return ControlFlow::Break("a SETTINGS clause is not allowed".into());
        }
        if q.format_clause.is_some() {
            return ControlFlow::Break("a FORMAT clause is not allowed".into());
        }
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.tables.push(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<String> {
        match t {
            TableFactor::Table { name, args, .. } => {
                let shown = name.to_string();
                if args.is_some() {
                    return ControlFlow::Break(format!(
                        "table functions such as `{shown}(…)` are not allowed"
                    ));
                }
                let parts: Vec<String> = shown.split('.').map(bare).collect();
                let ok = match parts.as_slice() {
                    [t] => self.tables.contains(t),
                    // The embedded store's own catalog lists only Apus's tables.
                    [s, _] => self.local && s == "information_schema",
                    _ => false,
                };
                if ok {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!(
                        "unknown table `{shown}`: user SQL reads Apus's tables only ({})",
                        apus_schema::Table::ALL.map(|t| t.name()).join(", ")
                    ))
                }
            }
            TableFactor::Derived { .. } | TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break("this kind of FROM item is not allowed".into()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<String> {
        if let Expr::Function(f) = e {
            let name = f.name.to_string();
            let last = bare(name.rsplit('.').next().unwrap_or(&name));
            if AMPLIFIERS.contains(&last.as_str()) {
                return ControlFlow::Break(format!(
                    "function `{name}` is not allowed in user SQL: its output size is set by \
                     its arguments"
                ));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Reject anything but one read-only query over Apus's tables, with the reason.
pub fn check(sql: &str, dialect: Dialect) -> Result<(), QueryError> {
    let bad = |m: String| QueryError::BadRequest(format!("SQL: {m}"));
    let d: &dyn SqlDialect = match dialect {
        Dialect::ClickHouse => &ClickHouseDialect {},
        Dialect::DataFusion => &GenericDialect {},
    };
    let tokens = Tokenizer::new(d, sql)
        .tokenize()
        .map_err(|e| bad(e.to_string()))?;
    let n = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .count();
    if n > MAX_TOKENS {
        return Err(bad(format!(
            "{n} tokens; at most {MAX_TOKENS} are allowed in one query"
        )));
    }
    let stmts = Parser::parse_sql(d, sql).map_err(|e| bad(e.to_string()))?;
    let stmt = match stmts.as_slice() {
        [] => return Err(bad("empty statement".into())),
        [s @ Statement::Query(_)] => s,
        [s @ Statement::Explain { statement, .. }]
            if matches!(**statement, Statement::Query(_)) =>
        {
            s
        }
        [s] => {
            return Err(bad(format!(
                "only SELECT queries are allowed here, not `{}`",
                s.to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            )))
        }
        _ => return Err(bad("one statement per request".into())),
    };
    let mut c = Check {
        tables: allowed_tables(),
        local: dialect == Dialect::DataFusion,
    };
    match stmt.visit(&mut c) {
        ControlFlow::Break(why) => Err(bad(why)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_queries_over_apus_tables() {
        for d in [Dialect::DataFusion, Dialect::ClickHouse] {
            for ok in [
                "SELECT 1",
                "SELECT pool, count(*) FROM access_log GROUP BY pool",
                "with a as (select 1 AS x) select * from a",
                "SELECT * FROM logs l JOIN (SELECT request_id FROM access_log) a ON l.request_id = a.request_id",
                "EXPLAIN SELECT * FROM slow_sql",
            ] {
                assert!(check(ok, d).is_ok(), "{d:?} {ok}: {:?}", check(ok, d));
            }
        }
        assert!(check(
            "SELECT table_name FROM information_schema.tables",
            Dialect::DataFusion
        )
        .is_ok());
    }

    #[test]
    fn refused_with_the_reason() {
        for (bad, why) in [
            ("DROP TABLE logs", "only SELECT"),
            ("SELECT 1; SELECT 2", "one statement"),
            ("", "empty"),
            ("SELECT * FROM system.tables", "unknown table"),
            ("SELECT * FROM other_db.logs", "unknown table"),
            ("SELECT * FROM nope", "unknown table"),
            (
                "SELECT * FROM url('http://169.254.169.254/', CSV, 'a String')",
                "table functions",
            ),
            (
                "SELECT * FROM generate_series(1, 1000000000000)",
                "table functions",
            ),
            ("SELECT repeat('x', 1000000000000)", "output size"),
            ("SELECT length(lpad('x', 999999999999, 'y'))", "output size"),
            (
                "SELECT * FROM (SELECT REPEAT('a', 1e12) AS x) t",
                "output size",
            ),
            (
                "SELECT * FROM logs SETTINGS max_execution_time = 100000",
                "SETTINGS",
            ),
        ] {
            let d = if why == "SETTINGS" {
                Dialect::ClickHouse
            } else {
                Dialect::DataFusion
            };
            let e = check(bad, d).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let deep = format!("SELECT {}1", "1 + ".repeat(5000));
        assert!(check(&deep, Dialect::DataFusion)
            .unwrap_err()
            .to_string()
            .contains("tokens"));
    }
}
