//! The alarm API on the query listener.
//!
//! | path | what |
//! |---|---|
//! | `GET /api/v1/alarms` | active label sets (pending, firing, recently resolved) and the history from the `alarms` table |
//! | `GET /api/v1/alarms/rules` | rules with their switch, error, last evaluation |
//! | `GET, POST /api/v1/alarms/switches` | on/off per project+env and per rule (audited) |
//! | `GET, POST /api/v2/silences`, `GET, DELETE /api/v2/silence/{id}` | silences, shaped as Alertmanager's API (audited) |
//!
//! Reads need a reader's token; changes need a release manager's (or admin's) token whose
//! scope covers the project and environment changed.

use std::sync::Arc;
use std::time::Duration;

use apus_auth::{Action, Principal};
use apus_rules::alarm::{parse_rfc3339, rfc3339, Silence, SilenceState, State};
use apus_schema::time::now_us;
use apus_schema::{ChangeRecord, Micros};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{persist, Alarms, Record};
use crate::api::pairs;
use crate::engine::Engine;
use crate::params::Params;
use crate::QueryError;
use apus_store::read::json::{num, text};

#[derive(Clone)]
struct Api {
    engine: Arc<Engine>,
    alarms: Option<Arc<Alarms>>,
}

type ApiResult = Result<Response, QueryError>;

/// The alarm routes (merged into the query API's router, behind its auth middleware).
pub fn router(engine: Arc<Engine>, alarms: Option<Arc<Alarms>>) -> Router {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/rules", get(rules))
        .route("/api/v1/alarms/switches", get(switches).post(set_switch))
        .route("/api/v2/silences", get(silences).post(put_silence))
        .route(
            "/api/v2/silence/{id}",
            delete(expire_silence).get(get_silence),
        )
        .with_state(Api { engine, alarms })
}

fn evaluator(a: &Api) -> Result<&Arc<Alarms>, QueryError> {
    a.alarms.as_ref().ok_or_else(|| {
        QueryError::NotFound("alarms are off: set `rules_dir` in the [alarms] config".into())
    })
}

/// Active label sets and history.
async fn list(AxState(a): AxState<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(
        &pairs(q)?,
        &["project", "env", "rule", "state", "fingerprint", "severity"],
        &["limit"],
        now_us(),
    )?;
    let limit = p.usize_opt("limit", 200, 10_000)?;
    let want = |k: &str, v: &str| p.dims.iter().all(|(dk, dv)| dk != k || dv == v);
    let mut active = Vec::new();
    if let Some(al) = &a.alarms {
        let now = now_us();
        let g = al.lock();
        for slot in g.rules.values() {
            let r = &slot.rule;
            if !(want("project", &r.project) && want("env", &r.env) && want("rule", &r.id())) {
                continue;
            }
            for (fp, s) in &slot.series {
                let st = s.tracker.state;
                let fp = format!("{fp:016x}");
                if st == State::Inactive || !want("state", st.name()) || !want("fingerprint", &fp) {
                    continue;
                }
                let silenced = g.silences.iter().any(|x| x.mutes(&s.labels, now));
                active.push(json!({
                    "rule": r.id(),
                    "fingerprint": fp,
                    "state": st.name(),
                    "labels": s.labels,
                    "annotations": s.annotations,
                    "value": s.tracker.value,
                    "since": rfc3339(s.tracker.active_since),
                    "fired_at": (s.tracker.fired_at > 0).then(|| rfc3339(s.tracker.fired_at)),
                    "resolved_at": (s.tracker.resolved_at > 0).then(|| rfc3339(s.tracker.resolved_at)),
                    "silenced": silenced,
                }));
            }
        }
    }
    let e = &a.engine;
    let d = e.dialect();
    let sql = format!(
        "SELECT {us} AS at_us, project, env, rule, fingerprint, state, severity, labels, value, \
         since_us, message FROM {t} WHERE {} ORDER BY at_us DESC LIMIT {limit}",
        p.conditions(d, &[]),
        us = d.us(),
        t = e.table("alarms"),
    );
    let history: Vec<Value> = e
        .rows(&sql)
        .await?
        .into_iter()
        .map(|mut r| {
            let at = num(&r, "at_us") as i64;
            let since = num(&r, "since_us") as i64;
            let labels: Value = serde_json::from_str(text(&r, "labels")).unwrap_or(Value::Null);
            r.insert("time".into(), json!(rfc3339(at)));
            r.insert("since".into(), json!(rfc3339(since)));
            r.insert("labels".into(), labels);
            r.remove("at_us");
            r.remove("since_us");
            Value::Object(r)
        })
        .collect();
    Ok(Json(json!({
        "evaluator": a.alarms.is_some(),
        "active": active,
        "history": history,
        "from": rfc3339(p.from_us),
        "to": rfc3339(p.to_us),
    }))
    .into_response())
}

/// Rules with their state.
async fn rules(AxState(a): AxState<Api>) -> ApiResult {
    let al = evaluator(&a)?;
    let g = al.lock();
    let rules: Vec<Value> = g
        .rules
        .values()
        .map(|s| {
            let count = |st: State| s.series.values().filter(|x| x.tracker.state == st).count();
            json!({
                "id": s.rule.id(),
                "rule": &*s.rule,
                "enabled": g.enabled(&s.rule),
                "health": if s.error.is_some() { "error" } else if s.evaluations == 0 { "unknown" } else { "ok" },
                "error": s.error,
                "last_evaluation": (s.last_eval_us > 0).then(|| rfc3339(s.last_eval_us)),
                "last_duration_ms": s.last_took_ms,
                "evaluations": s.evaluations,
                "pending": count(State::Pending),
                "firing": count(State::Firing),
            })
        })
        .collect();
    Ok(Json(json!({
        "rules": rules,
        "dir": al.settings.rules_dir.display().to_string(),
        "reload_error": g.reload_error,
    }))
    .into_response())
}

async fn switches(AxState(a): AxState<Api>) -> ApiResult {
    let al = evaluator(&a)?;
    let g = al.lock();
    Ok(Json(json!({ "switches": g.switches })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    project: String,
    env: String,
    /// A rule's name; none = the whole project+env.
    #[serde(default)]
    rule: Option<String>,
    enabled: bool,
    #[serde(default)]
    comment: Option<String>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, QueryError> {
    if body.len() > 64 * 1024 {
        return Err(QueryError::BadRequest("body larger than 64 KiB".into()));
    }
    serde_json::from_slice(body).map_err(|e| QueryError::BadRequest(format!("body: {e}")))
}

/// Write the audit row of a change before applying it: no audit, no change.
async fn audit(al: &Alarms, rec: ChangeRecord) -> Result<(), QueryError> {
    let announced = rec.clone();
    match tokio::time::timeout(Duration::from_secs(5), (al.writer)(Record::Change(rec))).await {
        Ok(Ok(())) => {
            al.announce(&announced);
            Ok(())
        }
        Ok(Err(e)) => Err(QueryError::NotApplied(format!(
            "the audit row was not stored: {e}"
        ))),
        Err(_) => Err(QueryError::NotApplied(
            "the audit row was not stored in 5 s".into(),
        )),
    }
}

async fn set_switch(
    AxState(a): AxState<Api>,
    Extension(p): Extension<Arc<Principal>>,
    body: Bytes,
) -> ApiResult {
    let al = evaluator(&a)?;
    let b: SwitchBody = json_body(&body)?;
    p.check(Action::Change, &b.project, &b.env)?;
    let key = match &b.rule {
        Some(r) => {
            let id = format!("{}/{}/{r}", b.project, b.env);
            if !al.lock().rules.contains_key(&id) {
                return Err(QueryError::NotFound(format!("no rule `{id}`")));
            }
            id
        }
        None => {
            if b.project.is_empty()
                || b.env.is_empty()
                || b.project.len() > 128
                || b.env.len() > 128
            {
                return Err(QueryError::BadRequest(
                    "`project` and `env` must be 1 to 128 bytes".into(),
                ));
            }
            format!("{}/{}", b.project, b.env)
        }
    };
    let from = al.lock().switches.get(&key).copied().unwrap_or(true);
    let summary = format!(
        "alarms {} for {key}{}",
        if b.enabled {
            "switched on"
        } else {
            "switched off"
        },
        b.comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default()
    );
    audit(
        al,
        ChangeRecord {
            ts: Micros(now_us()),
            kind: "alarm_switch".into(),
            actor: p.name.clone(),
            project: b.project.clone(),
            env: b.env.clone(),
            scope: key.clone(),
            from_version: u64::from(from),
            to_version: u64::from(b.enabled),
            summary: summary.clone(),
            touched: String::new(),
        },
    )
    .await?;
    {
        let mut g = al.lock();
        let mut next = g.switches.clone();
        if b.enabled {
            next.remove(&key);
        } else {
            next.insert(key.clone(), false);
        }
        persist::save_switches(&al.state_dir, &next).map_err(QueryError::NotApplied)?;
        g.switches = next;
    }
    tracing::info!(actor = %p.name, %summary, "alarm switch");
    Ok(Json(json!({ "key": key, "enabled": b.enabled })).into_response())
}

fn silence_json(s: &Silence, now: i64) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    let state = match s.state(now) {
        SilenceState::Active => "active",
        SilenceState::Pending => "pending",
        SilenceState::Expired => "expired",
    };
    v["status"] = json!({ "state": state });
    v
}

async fn silences(AxState(a): AxState<Api>) -> ApiResult {
    let al = evaluator(&a)?;
    let now = now_us();
    let g = al.lock();
    let v: Vec<Value> = g.silences.iter().map(|s| silence_json(s, now)).collect();
    Ok(Json(v).into_response())
}

async fn get_silence(AxState(a): AxState<Api>, Path(id): Path<String>) -> ApiResult {
    let al = evaluator(&a)?;
    let g = al.lock();
    let s = g
        .silences
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| QueryError::NotFound(format!("no silence `{id}`")))?;
    Ok(Json(silence_json(s, now_us())).into_response())
}

/// The project and env a silence is bound to (its exact `project` and `env` matchers);
/// a token bound to some scopes may only silence inside them.
fn silence_scope(p: &Principal, s: &Silence) -> Result<(String, String), QueryError> {
    let exact = |k: &str| {
        s.matchers
            .iter()
            .find(|m| m.name == k && m.is_equal && !m.is_regex)
            .map(|m| m.value.clone())
    };
    match (exact("project"), exact("env")) {
        (Some(pr), Some(en)) => {
            p.check(Action::Change, &pr, &en)?;
            Ok((pr, en))
        }
        _ => {
            p.check_role(Action::Change)?;
            if !p.covers_all() {
                return Err(QueryError::Forbidden(format!(
                    "token `{}` is bound to {}: a silence needs project=\"…\" and env=\"…\" \
                     matchers inside it",
                    p.name,
                    p.scope_list()
                )));
            }
            Ok((String::new(), String::new()))
        }
    }
}

/// Most silences kept (expired ones are dropped first).
const MAX_SILENCES: usize = 10_000;

async fn put_silence(
    AxState(a): AxState<Api>,
    Extension(p): Extension<Arc<Principal>>,
    body: Bytes,
) -> ApiResult {
    let al = evaluator(&a)?;
    let mut s: Silence = json_body(&body)?;
    s.validate().map_err(QueryError::BadRequest)?;
    let (project, env) = silence_scope(&p, &s)?;
    let now = now_us();
    // As Alertmanager: updating a silence expires the old one and makes a new id.
    let old = (!s.id.is_empty()).then(|| s.id.clone());
    if let Some(o) = &old {
        if !al.lock().silences.iter().any(|x| &x.id == o) {
            return Err(QueryError::NotFound(format!("no silence `{o}`")));
        }
    }
    s.id = uuid::Uuid::new_v4().to_string();
    s.updated_at = rfc3339(now);
    let matchers: Vec<String> = s.matchers.iter().map(|m| m.to_string()).collect();
    audit(
        al,
        ChangeRecord {
            ts: Micros(now),
            kind: "silence".into(),
            actor: p.name.clone(),
            project,
            env,
            scope: s.id.clone(),
            from_version: 0,
            to_version: 0,
            summary: format!(
                "silence {} {{{}}} until {} by {}: {}",
                s.id,
                matchers.join(", "),
                s.ends_at,
                s.created_by,
                s.comment
            ),
            touched: String::new(),
        },
    )
    .await?;
    {
        let mut g = al.lock();
        let mut next = g.silences.clone();
        if let Some(o) = &old {
            for x in next.iter_mut().filter(|x| &x.id == o) {
                x.ends_at = rfc3339(now);
                x.updated_at = rfc3339(now);
            }
        }
        next.push(s.clone());
        if next.len() > MAX_SILENCES {
            next.retain(|x| x.state(now) != SilenceState::Expired);
        }
        if next.len() > MAX_SILENCES {
            return Err(QueryError::BadRequest(format!(
                "more than {MAX_SILENCES} silences"
            )));
        }
        persist::save_silences(&al.state_dir, &next).map_err(QueryError::NotApplied)?;
        g.silences = next;
    }
    al.dispatch_wake.notify_one();
    Ok(Json(json!({ "silenceID": s.id })).into_response())
}

async fn expire_silence(
    AxState(a): AxState<Api>,
    Extension(p): Extension<Arc<Principal>>,
    Path(id): Path<String>,
) -> ApiResult {
    let al = evaluator(&a)?;
    let s = al
        .lock()
        .silences
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .ok_or_else(|| QueryError::NotFound(format!("no silence `{id}`")))?;
    let (project, env) = silence_scope(&p, &s)?;
    let now = now_us();
    if s.state(now) == SilenceState::Expired {
        return Err(QueryError::BadRequest(format!(
            "silence `{id}` already expired"
        )));
    }
    audit(
        al,
        ChangeRecord {
            ts: Micros(now),
            kind: "silence_expire".into(),
            actor: p.name.clone(),
            project,
            env,
            scope: id.clone(),
            from_version: 0,
            to_version: 0,
            summary: format!("silence {id} expired"),
            touched: String::new(),
        },
    )
    .await?;
    {
        let mut g = al.lock();
        let mut next = g.silences.clone();
        for x in next.iter_mut().filter(|x| x.id == id) {
            // a pending silence ends before it starts: both at now
            if parse_rfc3339(&x.starts_at).unwrap_or(0) > now {
                x.starts_at = rfc3339(now);
            }
            x.ends_at = rfc3339(now);
            x.updated_at = rfc3339(now);
        }
        persist::save_silences(&al.state_dir, &next).map_err(QueryError::NotApplied)?;
        g.silences = next;
    }
    Ok(Json(json!({ "expired": id })).into_response())
}
