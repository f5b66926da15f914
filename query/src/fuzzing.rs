//! Invariants for the fuzz target `query` (`fuzz/`; replayed over the seed corpus by this
//! module's tests): whatever bytes arrive as a query string, parsing refuses them with a
//! reason or yields parameters whose time range is ordered and bounded and whose filters,
//! printed as SQL in either dialect, parse as one statement — a value never escapes its
//! literal. The same bytes as a user's SQL are refused or accepted by the read-only check
//! without panicking.

use datafusion::sql::sqlparser::dialect::{
    ClickHouseDialect, Dialect as SqlDialect, GenericDialect,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::params::{Params, MAX_RANGE_US};
use apus_store::read::Dialect;

const NOW: i64 = 1_800_000_000_000_000;

/// Query-string and SQL input of arbitrary bytes.
pub fn query_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(&text) {
        let dims = ["project", "env", "pool", "route", "tag", "tenant"];
        if let Ok(p) = Params::parse(&pairs, &dims, &["limit", "order", "q"], NOW) {
            assert!(p.from_us < p.to_us, "ordered range");
            assert!(p.to_us - p.from_us <= MAX_RANGE_US, "bounded range");
            let _ = p.usize_opt("limit", 10, 1000);
            let _ = p.choice("order", &["total", "calls"]);
            for (d, sql) in [
                (Dialect::DataFusion, &GenericDialect {} as &dyn SqlDialect),
                (
                    Dialect::ClickHouse,
                    &ClickHouseDialect {} as &dyn SqlDialect,
                ),
            ] {
                let where_ = p.conditions(d, &[]);
                let q = format!("SELECT count(*) FROM access_log WHERE {where_}");
                let parsed = Parser::parse_sql(sql, &q);
                assert!(
                    parsed.as_ref().is_ok_and(|s| s.len() == 1),
                    "{d:?} filters escape their literals: {q} → {parsed:?}"
                );
            }
        }
    }
    for d in [Dialect::DataFusion, Dialect::ClickHouse] {
        let _ = crate::sqlcheck::check(&text, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the committed seeds of `fuzz/corpus/query`.
    #[test]
    fn seed_corpus_holds_the_invariants() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/query");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            query_input(&std::fs::read(e.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 3, "{n} seeds in {}", dir.display());
    }
}
