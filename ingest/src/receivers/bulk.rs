//! The Elasticsearch `_bulk` body, split and paired without side effects: NDJSON action
//! lines (`{"index":{"_index":"shop","_id":"1"}}`), each `index` / `create` action followed
//! by its document line. [`bulk_actions`] says what every action line asks for and which
//! document goes with it; the handler maps the documents onto `logs` rows
//! ([`super::parse_log`], then [`super::SharedMiner::template`]), keeps the refused lines
//! as dead letters, and answers with one [`bulk_item`] per action.
//!
//! Hostile input: an unreadable action line is refused on its own (the next line is then
//! read as an action); `delete` is refused without a document; any other unsupported action
//! (`update`, …) is refused together with the document line it carries; an action on the
//! last line is refused for want of a document. Blank lines are skipped wherever they are.

use serde_json::{json, Value};

use super::lines;

/// One action line of a `_bulk` body and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkAction<'a> {
    /// Line number (from 1, blank lines counted) of the action line.
    pub line: usize,
    /// The action's name as sent (`index`, `create`, `delete`, …); `index` when the line is
    /// not a readable action.
    pub action: String,
    /// `_index` of the action's metadata, else the default index.
    pub index: String,
    /// `_id` of the action's metadata, else one made by the caller's generator; empty when
    /// the line is not a readable action.
    pub id: String,
    pub outcome: BulkOutcome<'a>,
}

/// What an action line comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkOutcome<'a> {
    /// An `index` or `create` action and its document line (number, bytes), not yet read.
    Document { line: usize, doc: &'a [u8] },
    /// Refused: the reason, and the action line as sent (for the dead letter).
    Rejected { reason: String, raw: &'a [u8] },
}

/// Splits a `_bulk` body into its actions, in order, lazily (one line of lookahead at most).
/// `default_index` is the index of the URL (`/{index}/_bulk`), used when an action names
/// none. `gen_id` makes the `_id` of an action that has none; it gets the action's number
/// (from 1, counting readable actions only) and is called only then, in order.
pub fn bulk_actions<'a>(
    body: &'a [u8],
    default_index: &'a str,
    mut gen_id: impl FnMut(u64) -> String + 'a,
) -> impl Iterator<Item = BulkAction<'a>> + 'a {
    let mut rest = lines(body);
    let mut seq = 0u64;
    std::iter::from_fn(move || {
        let (n, raw) = rest.next()?;
        Some(read_action(
            n,
            raw,
            &mut rest,
            default_index,
            &mut seq,
            &mut gen_id,
        ))
    })
}

/// Reads the action on line `n` (`raw`), taking its document line from `rest`.
fn read_action<'a>(
    n: usize,
    raw: &'a [u8],
    rest: &mut impl Iterator<Item = (usize, &'a [u8])>,
    default_index: &str,
    seq: &mut u64,
    gen_id: &mut impl FnMut(u64) -> String,
) -> BulkAction<'a> {
    let unreadable = |reason: String| BulkAction {
        line: n,
        action: "index".into(),
        index: default_index.to_string(),
        id: String::new(),
        outcome: BulkOutcome::Rejected { reason, raw },
    };
    let action: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return unreadable(format!("invalid action line: {e}")),
    };
    let Some((name, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
        return unreadable("empty action".into());
    };
    let index = meta
        .get("_index")
        .and_then(Value::as_str)
        .unwrap_or(default_index)
        .to_string();
    *seq += 1;
    let id = meta
        .get("_id")
        .and_then(Value::as_str)
        .map_or_else(|| gen_id(*seq), str::to_string);
    let outcome = if name != "index" && name != "create" {
        if name != "delete" {
            rest.next(); // update carries a document line
        }
        BulkOutcome::Rejected {
            reason: format!("action `{name}` is not supported (only index and create)"),
            raw,
        }
    } else if let Some((line, doc)) = rest.next() {
        BulkOutcome::Document { line, doc }
    } else {
        BulkOutcome::Rejected {
            reason: "action without a document line".into(),
            raw,
        }
    };
    BulkAction {
        line: n,
        action: name.clone(),
        index,
        id,
        outcome,
    }
}

/// The Elasticsearch-shaped result of one action, `{"<action>": {"_index", "_id", "status",
/// …}}`: status 201 with `"result": "created"` when `error` is `None`, else status 400 with a
/// `mapper_parsing_exception` carrying the reason.
pub fn bulk_item(action: &str, index: &str, id: &str, error: Option<String>) -> Value {
    let status = if error.is_some() { 400 } else { 201 };
    let mut o = json!({ "_index": index, "_id": id, "status": status });
    match error {
        Some(reason) => {
            o["error"] = json!({ "type": "mapper_parsing_exception", "reason": reason });
        }
        None => {
            o["result"] = json!("created");
            o["_version"] = json!(1);
        }
    }
    json!({ action: o })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(body: &str) -> Vec<BulkAction<'_>> {
        bulk_actions(body.as_bytes(), "logs-default", |seq| format!("gen-{seq}")).collect()
    }

    fn doc<'a>(line: usize, doc: &'a str) -> BulkOutcome<'a> {
        BulkOutcome::Document {
            line,
            doc: doc.as_bytes(),
        }
    }

    fn reason(a: &BulkAction<'_>) -> String {
        match &a.outcome {
            BulkOutcome::Rejected { reason, .. } => reason.clone(),
            BulkOutcome::Document { .. } => panic!("not rejected: {a:?}"),
        }
    }

    #[test]
    fn pairs_actions_with_documents() {
        let body = "{\"index\":{\"_index\":\"shop\",\"_id\":\"a1\"}}\n{\"message\":\"one\"}\n\
                    \r\n\
                    {\"create\":{}}\r\n{\"message\":\"two\"}\r\n\n";
        let a = all(body);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            BulkAction {
                line: 1,
                action: "index".into(),
                index: "shop".into(),
                id: "a1".into(),
                outcome: doc(2, "{\"message\":\"one\"}"),
            }
        );
        // Blank lines count but are skipped; CR is not part of the line; the URL's index
        // and a generated id fill in what the action leaves out.
        assert_eq!(
            a[1],
            BulkAction {
                line: 4,
                action: "create".into(),
                index: "logs-default".into(),
                id: "gen-2".into(),
                outcome: doc(5, "{\"message\":\"two\"}"),
            }
        );
        assert!(all("").is_empty());
        assert!(all("\n \n\t\r\n").is_empty());
    }

    #[test]
    fn ids_are_generated_only_when_missing_and_numbered_by_readable_action() {
        let mut asked = Vec::new();
        let body =
            b"{\"index\":{}}\n{}\nnot json\n{\"index\":{\"_id\":\"x\"}}\n{}\n{\"index\":{}}\n{}\n";
        let ids: Vec<String> = bulk_actions(body, "", |seq| {
            asked.push(seq);
            format!("g{seq}")
        })
        .map(|a| a.id)
        .collect();
        assert_eq!(ids, ["g1", "", "x", "g3"]);
        assert_eq!(asked, [1, 3]);
    }

    #[test]
    fn unreadable_action_lines_are_refused_alone() {
        let a = all("{\"index\":\n{\"message\":\"m\"}\n");
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].line, a[0].action.as_str()), (1, "index"));
        assert_eq!(
            (a[0].index.as_str(), a[0].id.as_str()),
            ("logs-default", "")
        );
        assert!(reason(&a[0]).starts_with("invalid action line: "), "{a:?}");
        assert_eq!(
            a[0].outcome,
            BulkOutcome::Rejected {
                reason: reason(&a[0]),
                raw: b"{\"index\":",
            }
        );
        // The document line after it is then read as an action, as Elasticsearch does.
        assert_eq!((a[1].line, a[1].action.as_str()), (2, "message"));
        assert!(reason(&a[1]).contains("not supported"));

        for empty in ["{}", "[1]", "\"index\"", "7", "null"] {
            let a = all(empty);
            assert_eq!(a.len(), 1, "{empty}");
            assert_eq!(reason(&a[0]), "empty action", "{empty}");
            assert_eq!((a[0].action.as_str(), a[0].id.as_str()), ("index", ""));
        }
        // Metadata that is not an object is ignored.
        let a = all("{\"index\":5}\n{}\n");
        assert_eq!(
            (a[0].index.as_str(), a[0].id.as_str()),
            ("logs-default", "gen-1")
        );
        assert_eq!(a[0].outcome, doc(2, "{}"));
    }

    #[test]
    fn unsupported_actions() {
        let body = "{\"delete\":{\"_index\":\"i\",\"_id\":\"d1\"}}\n\
                    {\"update\":{\"_id\":\"u1\"}}\n{\"doc\":{\"message\":\"x\"}}\n\
                    {\"index\":{}}\n{\"message\":\"kept\"}\n";
        let a = all(body);
        assert_eq!(a.len(), 3);
        // delete has no document line: the next line is the next action.
        assert_eq!(
            (
                a[0].line,
                a[0].action.as_str(),
                a[0].index.as_str(),
                a[0].id.as_str()
            ),
            (1, "delete", "i", "d1")
        );
        assert_eq!(
            reason(&a[0]),
            "action `delete` is not supported (only index and create)"
        );
        // update carries one, which is skipped with it.
        assert_eq!((a[1].line, a[1].action.as_str()), (2, "update"));
        assert_eq!(
            a[1].outcome,
            BulkOutcome::Rejected {
                reason: "action `update` is not supported (only index and create)".into(),
                raw: b"{\"update\":{\"_id\":\"u1\"}}",
            }
        );
        assert_eq!((a[2].line, a[2].id.as_str()), (4, "gen-3"));
        assert_eq!(a[2].outcome, doc(5, "{\"message\":\"kept\"}"));
    }

    #[test]
    fn action_without_a_document() {
        let a = all("{\"index\":{}}\n{\"message\":\"m\"}\n\n{\"create\":{\"_id\":\"c\"}}\n\n");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].line, 4);
        assert_eq!(
            a[1].outcome,
            BulkOutcome::Rejected {
                reason: "action without a document line".into(),
                raw: b"{\"create\":{\"_id\":\"c\"}}",
            }
        );
    }

    #[test]
    fn documents_are_not_read_here() {
        // Whatever the document line holds is the handler's to judge.
        let a = all("{\"index\":{}}\nnot json at all\n");
        assert_eq!(a[0].outcome, doc(2, "not json at all"));
    }

    #[test]
    fn items_are_elasticsearch_shaped() {
        assert_eq!(
            bulk_item("create", "shop", "x1", None),
            json!({"create": {"_index": "shop", "_id": "x1", "status": 201,
                              "result": "created", "_version": 1}})
        );
        assert_eq!(
            bulk_item("delete", "shop", "", Some("nope".into())),
            json!({"delete": {"_index": "shop", "_id": "", "status": 400,
                              "error": {"type": "mapper_parsing_exception", "reason": "nope"}}})
        );
    }
}
