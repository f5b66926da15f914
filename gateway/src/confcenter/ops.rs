//! The config center's changes: save a draft, publish, roll back, gray release, promote,
//! abandon, and set globals. Each reads its blobs, computes the new effective contents
//! (and every descendant's that changes: PV + 1), stores them, and commits the new config
//! state only if the config state is still the one it read (else it starts over; after
//! three tries, 409).

use std::collections::BTreeMap;

use apus_auth::{Action, Principal};
use apus_rules::config::{
    effective, ConfigDoc, ConfigFile, ContentType, Draft, FileKey, GrayRelease, GrayTarget,
    Release, ReleaseKind, MAX_FILE,
};
use apus_schema::time::now_us;
use apus_schema::{ChangeKind, ChangeRecord};

use super::ConfigCenter;
use crate::state::Edit;
use crate::GatewayError;

/// A draft as edited.
#[derive(Debug, Clone, Default)]
pub struct DraftEdit {
    pub content: String,
    /// Required for a new file.
    pub content_type: Option<ContentType>,
    /// `Some(None)` removes the parent; `None` keeps it.
    pub parent: Option<Option<String>>,
    /// The FV the edit was based on (409 if the file moved on).
    pub base_fv: Option<u64>,
}

/// A change to one file.
#[derive(Debug, Clone)]
pub enum Op {
    Draft(DraftEdit),
    Publish,
    Rollback { release: u64 },
    Gray { target: GrayTarget },
    Promote,
    Abandon,
}

/// Marks a state that moved while the change was computed (the change starts over).
pub(super) const MOVED: &str = "the config state moved meanwhile";

pub(super) fn bad(m: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(m.into())
}

pub(super) fn authorize(t: &Principal, project: &str, env: &str) -> Result<(), GatewayError> {
    t.check(Action::Change, project, env).map_err(|e| {
        tracing::warn!(actor = %t.name, project, env, error = %e, "config change denied");
        GatewayError::Forbidden(e.to_string())
    })
}

fn new_release(
    f: &ConfigFile,
    kind: ReleaseKind,
    blob: &str,
    eff: &str,
    size: usize,
    t: &Principal,
    reason: &str,
) -> Release {
    let (fv, pv) = match kind {
        ReleaseKind::Republish => (f.fv, f.pv + 1),
        _ => (f.fv + 1, f.pv),
    };
    Release {
        id: 0,
        fv,
        pv,
        kind,
        blob: blob.into(),
        effective: eff.into(),
        size: size as u64,
        author: t.name.clone(),
        reason: reason.into(),
        ts: now_us(),
    }
}

/// Put a release in force on `f` (FV/PV follow it).
fn install(f: &mut ConfigFile, r: Release) {
    f.fv = r.fv;
    f.pv = r.pv;
    f.push(r);
}

impl ConfigCenter {
    /// The effective content of `key`'s parent in force (`None` without a parent).
    pub(super) async fn parent_effective(
        &self,
        doc: &ConfigDoc,
        parent: Option<&str>,
        changed: &BTreeMap<String, String>,
    ) -> Result<Option<String>, GatewayError> {
        let Some(p) = parent else { return Ok(None) };
        if let Some(t) = changed.get(p) {
            return Ok(Some(t.clone()));
        }
        let r = doc
            .files
            .get(p)
            .and_then(ConfigFile::current)
            .ok_or_else(|| bad(format!("parent `{p}` has no release")))?;
        Ok(Some(self.text(&r.effective).await?))
    }

    /// Release `blob` (an earlier release's or a gray release's own content) as a new
    /// release of `kind`, its effective content computed against today's parent and
    /// globals; the effective content.
    #[allow(clippy::too_many_arguments)]
    async fn release_blob(
        &self,
        doc: &mut ConfigDoc,
        f: &ConfigFile,
        k: &str,
        blob: &str,
        kind: ReleaseKind,
        vars: &BTreeMap<String, String>,
        t: &Principal,
        reason: &str,
    ) -> Result<String, GatewayError> {
        let raw = self.text(blob).await?;
        let pe = self
            .parent_effective(doc, f.parent.as_deref(), &BTreeMap::new())
            .await?;
        let eff = effective(f.content_type, &raw, pe.as_deref(), vars).map_err(bad)?;
        let digest = self.put(&eff).await?;
        let r = new_release(f, kind, blob, &digest, eff.len(), t, reason);
        if let Some(file) = doc.files.get_mut(k) {
            install(file, r);
        }
        Ok(eff)
    }

    /// Recompute `k`'s effective content with `vars` and the parents' contents in
    /// `changed`, and re-publish it (PV + 1) if it changed. Its effective content and
    /// whether it was re-published; `None` if it has no release.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn refresh(
        &self,
        doc: &mut ConfigDoc,
        k: &str,
        vars: &BTreeMap<String, String>,
        changed: &BTreeMap<String, String>,
        t: &Principal,
        reason: &str,
        why: &str,
    ) -> Result<Option<(String, bool)>, GatewayError> {
        let Some(f) = doc.files.get(k).cloned() else {
            return Ok(None);
        };
        let Some(cur) = f.current().cloned() else {
            return Ok(None);
        };
        let raw = self.text(&cur.blob).await?;
        let pe = self
            .parent_effective(doc, f.parent.as_deref(), changed)
            .await?;
        let eff = effective(f.content_type, &raw, pe.as_deref(), vars)
            .map_err(|e| bad(format!("`{k}` {why}: {e}")))?;
        let digest = apus_control::digest(eff.as_bytes());
        let moved = digest != cur.effective;
        if moved {
            self.put(&eff).await?;
            let r = new_release(
                &f,
                ReleaseKind::Republish,
                &cur.blob,
                &digest,
                eff.len(),
                t,
                reason,
            );
            if let Some(file) = doc.files.get_mut(k) {
                install(file, r);
            }
        }
        Ok(Some((eff, moved)))
    }

    /// Re-publish the descendants of `changed`'s files whose effective content changes
    /// (PV + 1), on `doc`. `vars` overrides the globals of one project/env.
    pub(super) async fn republish(
        &self,
        doc: &mut ConfigDoc,
        mut changed: BTreeMap<String, String>,
        vars: Option<(&str, &BTreeMap<String, String>)>,
        t: &Principal,
        reason: &str,
    ) -> Result<usize, GatewayError> {
        let roots: Vec<String> = changed.keys().cloned().collect();
        let mut n = 0;
        for d in doc.descendants(&roots) {
            let scope = FileKey::parse(&d).map(|k| k.scope()).unwrap_or_default();
            let v = match vars {
                Some((s, v)) if s == scope => v.clone(),
                _ => doc.vars(&scope),
            };
            let why = "(inherits this) would break";
            if let Some((eff, moved)) = self.refresh(doc, &d, &v, &changed, t, reason, why).await? {
                n += usize::from(moved);
                changed.insert(d, eff);
            }
        }
        Ok(n)
    }

    /// Apply `op` to `key` as `t`.
    pub async fn apply(
        &self,
        t: &Principal,
        key: &FileKey,
        op: Op,
        reason: &str,
    ) -> Result<ChangeRecord, GatewayError> {
        authorize(t, &key.project, &key.env)?;
        for _ in 0..3 {
            let cur = self.release.load_full();
            let base = cur.doc.config.clone();
            let (new, kind, said) = self.compute(&base, t, key, &op, reason).await?;
            let r = self.commit(&base, new, kind, key, t, reason, &said).await;
            match r {
                Err(GatewayError::Conflict(m)) if m == MOVED => continue,
                r => return r,
            }
        }
        Err(GatewayError::Conflict(format!(
            "config {key}: the config state kept changing; retry"
        )))
    }

    /// The config state after `op`, its change kind and what to say of it.
    async fn compute(
        &self,
        base: &ConfigDoc,
        t: &Principal,
        key: &FileKey,
        op: &Op,
        reason: &str,
    ) -> Result<(ConfigDoc, ChangeKind, String), GatewayError> {
        let k = key.to_string();
        let mut doc = base.clone();
        let vars = doc.vars(&key.scope());
        let existing = doc.files.get(&k).cloned();
        let file = || {
            existing
                .clone()
                .ok_or_else(|| GatewayError::NotFound(format!("config file {k}")))
        };
        let mut changed = BTreeMap::new();
        let (kind, mut said) = match op {
            Op::Draft(e) => {
                if e.content.len() > MAX_FILE {
                    return Err(GatewayError::TooLarge(format!(
                        "config file of {} bytes, over {MAX_FILE}",
                        e.content.len()
                    )));
                }
                let ct = e
                    .content_type
                    .or(existing.as_ref().map(|f| f.content_type))
                    .ok_or_else(|| bad("content_type is required for a new file"))?;
                let parent = match &e.parent {
                    Some(p) => p.clone(),
                    None => existing.as_ref().and_then(|f| f.parent.clone()),
                };
                if let Some(p) = &parent {
                    doc.check_parent(key, ct, p).map_err(bad)?;
                }
                if let (Some(b), Some(f)) = (e.base_fv, &existing) {
                    if b != f.fv {
                        return Err(GatewayError::Conflict(format!(
                            "config {k} is at FV {}, the edit is based on FV {b}",
                            f.fv
                        )));
                    }
                }
                let pe = self
                    .parent_effective(&doc, parent.as_deref(), &changed)
                    .await?;
                effective(ct, &e.content, pe.as_deref(), &vars).map_err(bad)?;
                let blob = self.put(&e.content).await?;
                let f = doc
                    .files
                    .entry(k.clone())
                    .or_insert_with(|| ConfigFile::new(ct, parent.clone()));
                if f.current().is_none() {
                    // Nothing released yet: the file takes the draft's type and parent.
                    f.content_type = ct;
                    f.parent = parent.clone();
                }
                f.draft = Some(Draft {
                    blob,
                    content_type: ct,
                    parent,
                    size: e.content.len() as u64,
                    author: t.name.clone(),
                    ts: now_us(),
                    base_fv: f.fv,
                });
                (
                    ChangeKind::ConfigDraft,
                    format!("draft saved ({} bytes)", e.content.len()),
                )
            }
            Op::Publish | Op::Gray { .. } => {
                let f = file()?;
                let d = f.draft.clone().ok_or_else(|| {
                    GatewayError::Conflict(format!("config {k} has no draft to publish"))
                })?;
                if self.protected(&key.env) && d.author == t.name {
                    return Err(GatewayError::Forbidden(format!(
                        "env {} is protected: the draft by {} needs another publisher",
                        key.env, d.author
                    )));
                }
                if d.base_fv != f.fv {
                    return Err(GatewayError::Conflict(format!(
                        "the draft of {k} was edited at FV {}, the file is at FV {} now; save it again",
                        d.base_fv, f.fv
                    )));
                }
                if f.gray.is_some() {
                    return Err(GatewayError::Conflict(format!(
                        "{k} has a gray release: promote or abandon it first"
                    )));
                }
                let reshaped = d.content_type != f.content_type || d.parent != f.parent;
                if reshaped && matches!(op, Op::Gray { .. }) {
                    return Err(bad(
                        "a draft that changes the type or the parent is published, not grayed",
                    ));
                }
                if let Some(p) = &d.parent {
                    doc.check_parent(key, d.content_type, p).map_err(bad)?;
                }
                let raw = self.text(&d.blob).await?;
                let pe = self
                    .parent_effective(&doc, d.parent.as_deref(), &changed)
                    .await?;
                let eff = effective(d.content_type, &raw, pe.as_deref(), &vars).map_err(bad)?;
                let digest = self.put(&eff).await?;
                let mut r = new_release(
                    &f,
                    ReleaseKind::Publish,
                    &d.blob,
                    &digest,
                    eff.len(),
                    t,
                    reason,
                );
                let file = doc.files.get_mut(&k).expect("read above");
                file.draft = None;
                file.content_type = d.content_type;
                file.parent = d.parent.clone();
                if let Op::Gray { target } = op {
                    target.check().map_err(bad)?;
                    r.id = file.last_id + 1;
                    file.gray = Some(GrayRelease {
                        release: r,
                        target: target.clone(),
                    });
                    (
                        ChangeKind::ConfigGray,
                        format!("gray release to {}", describe(target)),
                    )
                } else {
                    install(file, r);
                    changed.insert(k.clone(), eff);
                    let r = file.current().expect("just pushed");
                    (
                        ChangeKind::ConfigRelease,
                        format!("release {} (FV {}, PV {}) published", r.id, r.fv, r.pv),
                    )
                }
            }
            Op::Rollback { release } => {
                let f = file()?;
                if f.gray.is_some() {
                    return Err(GatewayError::Conflict(format!(
                        "{k} has a gray release: promote or abandon it first"
                    )));
                }
                let old = f.release(*release).cloned().ok_or_else(|| {
                    GatewayError::NotFound(format!(
                        "release {release} of {k} (kept: the last {})",
                        f.releases.len()
                    ))
                })?;
                let kind = ReleaseKind::Rollback;
                let eff = self
                    .release_blob(&mut doc, &f, &k, &old.blob, kind, &vars, t, reason)
                    .await?;
                changed.insert(k.clone(), eff);
                let file = &doc.files[&k];
                (
                    ChangeKind::ConfigRelease,
                    format!(
                        "rolled back to release {release}'s content as release {}",
                        file.last_id
                    ),
                )
            }
            Op::Promote => {
                let f = file()?;
                let g = f.gray.clone().ok_or_else(|| {
                    GatewayError::Conflict(format!("config {k} has no gray release"))
                })?;
                // Recomputed against today's parent and globals, which may have moved since
                // the gray release was made.
                let kind = ReleaseKind::Promote;
                let eff = self
                    .release_blob(&mut doc, &f, &k, &g.release.blob, kind, &vars, t, reason)
                    .await?;
                changed.insert(k.clone(), eff);
                let file = doc.files.get_mut(&k).expect("read above");
                file.gray = None;
                (
                    ChangeKind::ConfigRelease,
                    format!("gray release promoted as release {}", file.last_id),
                )
            }
            Op::Abandon => {
                let f = file()?;
                if f.gray.is_none() {
                    return Err(GatewayError::Conflict(format!(
                        "config {k} has no gray release"
                    )));
                }
                doc.files.get_mut(&k).expect("read above").gray = None;
                (ChangeKind::ConfigGray, "gray release abandoned".to_string())
            }
        };
        if !changed.is_empty() {
            let n = self.republish(&mut doc, changed, None, t, reason).await?;
            if n > 0 {
                said.push_str(&format!("; {n} inheriting file(s) re-published"));
            }
        }
        Ok((doc, kind, said))
    }

    /// Commit `new` if the config state is still `base`.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        base: &ConfigDoc,
        new: ConfigDoc,
        kind: ChangeKind,
        key: &FileKey,
        t: &Principal,
        reason: &str,
        said: &str,
    ) -> Result<ChangeRecord, GatewayError> {
        self.release
            .change(None, &t.name, reason, |c| {
                if c.doc.config != *base {
                    return Err(GatewayError::Conflict(MOVED.into()));
                }
                let mut doc = (*c.doc).clone();
                doc.config = new.clone();
                let mut e = Edit::new(doc, kind, &key.project, &key.env, &key.to_string());
                e.summary = Some(format!("config {key}: {said}"));
                let mut touched = apus_schema::Touched::new();
                touched.add("pool", &key.pool).add("config", &key.path);
                e.touched = Some(touched);
                Ok(e)
            })
            .await
    }
}

fn describe(t: &GrayTarget) -> String {
    let mut parts = Vec::new();
    if !t.ips.is_empty() {
        parts.push(format!("ips {}", t.ips.join(",")));
    }
    if !t.labels.is_empty() {
        let l: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("labels {}", l.join(",")));
    }
    if let Some(p) = t.percent {
        parts.push(format!("{p} % of instances"));
    }
    parts.join(", ")
}
