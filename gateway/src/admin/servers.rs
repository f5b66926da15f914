//! Pool handlers: list servers and their health, and put servers on and off the shelf
//! (add, drain, undrain, remove), each a version of the release state.

use apus_schema::ChangeKind;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{
    authenticate, base_version, change_answer, may_change, parse_body, AdminState, Answer,
    ApiResult, Reason,
};
use crate::pools::Pool;
use crate::state::{Current, Edit};
use crate::GatewayError;
use apus_auth::{Principal, Role};

pub(super) async fn list_pools(s: &AdminState, h: &HeaderMap) -> ApiResult {
    authenticate(h, &s.tokens)?;
    let mut pools: Vec<_> = s
        .pools
        .values()
        .map(|p| json!({ "name": p.name, "servers": p.status() }))
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let v = s.release.load().version;
    Ok(Answer::versioned(
        v,
        json!({ "version": v, "pools": pools }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddServer {
    addr: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    base_version: Option<u64>,
}

/// Whether `t` may change pool `pool` (in the state `cur`).
pub(super) fn pool_scope(cur: &Current, t: &Principal, pool: &str) -> Result<(), GatewayError> {
    if !cur.doc.pools.contains_key(pool) {
        return Err(GatewayError::NotFound(format!("pool {pool}")));
    }
    if t.role == Role::Admin {
        return Ok(());
    }
    t.check_role(apus_auth::Action::Change)
        .map_err(|e| GatewayError::Forbidden(e.to_string()))?;
    // Anyone else may change a pool only if routes use it and every one is in scope: a
    // pool no route uses belongs to no project, so only admins touch it.
    let mut routes = cur
        .rules
        .routes()
        .filter(|r| r.stable_pool == pool || r.gray_rules.iter().any(|g| g.pool == pool))
        .peekable();
    if routes.peek().is_none() {
        return Err(GatewayError::Forbidden(format!(
            "pool {pool} is used by no route; only admins may change it"
        )));
    }
    routes.try_for_each(|r| may_change(t, &r.project, &r.env))
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum ServerOp {
    Add,
    Drain,
    Undrain,
    Remove,
}

impl ServerOp {
    fn kind(self) -> ChangeKind {
        match self {
            ServerOp::Add => ChangeKind::ServerAdd,
            ServerOp::Drain => ChangeKind::ServerDrain,
            ServerOp::Undrain => ChangeKind::ServerUndrain,
            ServerOp::Remove => ChangeKind::ServerRemove,
        }
    }
}

/// The edit of one server operation on the state `cur`.
fn server_edit(
    cur: &Current,
    t: &Principal,
    op: ServerOp,
    pool: &str,
    addr: &str,
) -> Result<Edit, GatewayError> {
    pool_scope(cur, t, pool)?;
    let addr = Pool::canonical(addr)?;
    let mut doc = (*cur.doc).clone();
    let p = doc.pools.entry(pool.to_string()).or_default();
    let present = p.servers.contains(&addr);
    match op {
        ServerOp::Add if present => {
            return Err(GatewayError::BadRequest(format!(
                "server {addr} is already in pool {pool}"
            )))
        }
        ServerOp::Add => p.servers.push(addr.clone()),
        _ if !present => {
            return Err(GatewayError::NotFound(format!(
                "server {addr} in pool {pool}"
            )))
        }
        ServerOp::Drain => {
            p.drained.insert(addr.clone());
        }
        ServerOp::Undrain => {
            p.drained.remove(&addr);
        }
        ServerOp::Remove => {
            p.servers.retain(|s| *s != addr);
            p.drained.remove(&addr);
        }
    }
    let kind = op.kind();
    let mut e = Edit::new(doc, kind, "", "", &format!("{pool}/{addr}"));
    e.summary = Some(format!("{kind} {addr} in pool {pool}"));
    let mut touched = apus_schema::Touched::new();
    touched.add("pool", pool).add("upstream", &addr);
    e.touched = Some(touched);
    Ok(e)
}

pub(super) async fn server_op(
    s: &AdminState,
    h: &HeaderMap,
    pool: &str,
    addr: Option<&str>,
    op: ServerOp,
    body: &[u8],
) -> ApiResult {
    let r = async {
        let t = &*authenticate(h, &s.tokens)?;
        let (addr, reason, base) = if op == ServerOp::Add {
            let b: AddServer = parse_body(body)?;
            (b.addr, b.reason, b.base_version)
        } else {
            let b: Reason = if body.is_empty() {
                Reason::default()
            } else {
                parse_body(body)?
            };
            (
                addr.unwrap_or_default().to_string(),
                b.reason,
                b.base_version,
            )
        };
        let base = base_version(h, base)?;
        if op == ServerOp::Add {
            let a: std::net::SocketAddr = addr
                .parse()
                .map_err(|_| GatewayError::BadRequest(format!("`{addr}` is not ip:port")))?;
            s.upstreams.check(a).map_err(|why| {
                GatewayError::Forbidden(format!("server {addr} may not be added: {why}"))
            })?;
        }
        s.release
            .change(base, &t.name, &reason, |cur| {
                server_edit(cur, t, op, pool, &addr)
            })
            .await
    }
    .await;
    change_answer(op.kind(), r)
}
