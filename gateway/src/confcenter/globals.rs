//! Global variables: setting a project/env's variables re-publishes every file there
//! whose effective content changes (PV + 1), with its descendants.

use std::collections::BTreeMap;

use apus_auth::Principal;
use apus_schema::{ChangeKind, ChangeRecord};

use super::ops::{authorize, bad, MOVED};
use super::ConfigCenter;
use crate::state::Edit;
use crate::GatewayError;

impl ConfigCenter {
    /// Replace the global variables of `project/env`; every file there whose effective
    /// content changes is re-published (PV + 1), with its descendants.
    pub async fn set_globals(
        &self,
        t: &Principal,
        project: &str,
        env: &str,
        vars: BTreeMap<String, String>,
        reason: &str,
    ) -> Result<ChangeRecord, GatewayError> {
        for (what, v) in [("project", project), ("env", env)] {
            if !apus_rules::config::segment_ok(v) {
                return Err(bad(format!("{what} `{v}`: letters, digits, `-`, `_`, `.`")));
            }
        }
        authorize(t, project, env)?;
        if self.protected(env) && t.role != apus_auth::Role::Admin {
            return Err(GatewayError::Forbidden(format!(
                "env {env} is protected: its globals are changed by admins only"
            )));
        }
        if vars.len() > 256 {
            return Err(bad("at most 256 variables"));
        }
        for (k, v) in &vars {
            if !apus_rules::config::vars::valid_name(k) || v.len() > 4096 {
                return Err(bad(format!(
                    "variable `{k}`: a name of letters, digits, `_`, `-`, `.` and a value of at most 4 KiB"
                )));
            }
        }
        let scope = format!("{project}/{env}");
        for _ in 0..3 {
            let base = self.release.load_full().doc.config.clone();
            let mut doc = base.clone();
            let mut changed = BTreeMap::new();
            let mut n = 0;
            let in_scope: Vec<String> = doc
                .files
                .keys()
                .filter(|k| k.starts_with(&format!("{scope}/")))
                .cloned()
                .collect();
            for k in in_scope {
                let r = self
                    .refresh(&mut doc, &k, &vars, &changed, t, reason, "would break")
                    .await?;
                if let Some((eff, true)) = r {
                    n += 1;
                    changed.insert(k, eff);
                }
            }
            n += self
                .republish(&mut doc, changed, Some((&scope, &vars)), t, reason)
                .await?;
            let g = doc.globals.entry(scope.clone()).or_default();
            g.vars = vars.clone();
            g.version += 1;
            let said = format!(
                "globals of {scope} set ({} variables, version {}); {n} file(s) re-published",
                vars.len(),
                g.version
            );
            let r = self
                .release
                .change(None, &t.name, reason, |c| {
                    if c.doc.config != base {
                        return Err(GatewayError::Conflict(MOVED.into()));
                    }
                    let mut d = (*c.doc).clone();
                    d.config = doc.clone();
                    let mut e = Edit::new(d, ChangeKind::ConfigGlobals, project, env, &scope);
                    e.summary = Some(said.clone());
                    Ok(e)
                })
                .await;
            match r {
                Err(GatewayError::Conflict(m)) if m == MOVED => continue,
                r => return r,
            }
        }
        Err(GatewayError::Conflict(
            "the config state kept changing; retry".into(),
        ))
    }
}
