//! Config files as the control plane keeps them: metadata and release history, with every
//! content a content-addressed blob (the `blob` fields are SHA-256 hex digests; the bytes
//! live in the control store's blob area, so a 5 MB file never rides inside the release
//! state).
//!
//! Versions: **FV** counts published edits of the file itself; **PV** counts changes of
//! its effective content caused by a parent or a global variable. A release is immutable;
//! rollback publishes an earlier release's content as a new release.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::format::ContentType;
use super::gray::GrayTarget;

/// Largest file (raw or effective).
pub const MAX_FILE: usize = 5 << 20;
/// Releases kept per file (older ones drop out of the state; their blobs stay).
pub const MAX_RELEASES: usize = 50;
/// The project every project may inherit from.
pub const COMMON: &str = "common";

/// `project/env/pool/path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileKey {
    pub project: String,
    pub env: String,
    pub pool: String,
    pub path: String,
}

/// Most parents above a file.
pub const MAX_DEPTH: usize = 16;

/// Whether `s` is a valid project, env or pool name (or path segment).
pub fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

impl FileKey {
    /// Parse `project/env/pool/path` (the path may have `/`; no `..`, at most 256 bytes).
    pub fn parse(s: &str) -> Result<FileKey, String> {
        let mut it = s.splitn(4, '/');
        let (Some(project), Some(env), Some(pool), Some(path)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(format!("`{s}`: expected project/env/pool/path"));
        };
        for (what, v) in [("project", project), ("env", env), ("pool", pool)] {
            if !segment_ok(v) {
                return Err(format!(
                    "{what} `{v}`: 1 to 64 of letters, digits, `-`, `_`, `.`"
                ));
            }
        }
        if path.len() > 256 || !path.split('/').all(segment_ok) {
            return Err(format!(
                "path `{path}`: segments of letters, digits, `-`, `_`, `.` (no `..`), at most 256 bytes"
            ));
        }
        Ok(FileKey {
            project: project.into(),
            env: env.into(),
            pool: pool.into(),
            path: path.into(),
        })
    }
    /// The project/env its globals come from.
    pub fn scope(&self) -> String {
        format!("{}/{}", self.project, self.env)
    }
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.project, self.env, self.pool, self.path
        )
    }
}

/// Why a release was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseKind {
    /// The file's own draft published.
    Publish,
    /// An earlier release's content published again.
    Rollback,
    /// A parent or a global changed the effective content.
    Republish,
    /// A gray release promoted to everyone.
    Promote,
}

/// One immutable release of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// 1, 2, … per file.
    pub id: u64,
    pub fv: u64,
    pub pv: u64,
    pub kind: ReleaseKind,
    /// The file's own content.
    pub blob: String,
    /// The effective content (parent merged, globals substituted).
    pub effective: String,
    pub size: u64,
    pub author: String,
    pub reason: String,
    pub ts: i64,
}

impl Release {
    /// The key clients send back to get 304 (`{id}-{digest prefix}`).
    pub fn key(&self) -> String {
        format!(
            "{}-{}",
            self.id,
            &self.effective[..self.effective.len().min(12)]
        )
    }
}

/// An unpublished edit: its content, and the type and parent it will put in force when
/// published (the file keeps its own until then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub blob: String,
    pub content_type: ContentType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub size: u64,
    pub author: String,
    pub ts: i64,
    /// The FV it was edited from (a publish of another edit meanwhile conflicts).
    pub base_fv: u64,
}

/// A release given to some clients first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrayRelease {
    pub release: Release,
    pub target: GrayTarget,
}

/// One config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub content_type: ContentType,
    /// `project/env/pool/path` of the parent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub fv: u64,
    pub pv: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<Draft>,
    /// Newest last; at most [`MAX_RELEASES`].
    #[serde(default)]
    pub releases: Vec<Release>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gray: Option<GrayRelease>,
    /// The last release number given (ids keep growing when old releases drop out).
    #[serde(default)]
    pub last_id: u64,
}

impl ConfigFile {
    pub fn new(ct: ContentType, parent: Option<String>) -> ConfigFile {
        ConfigFile {
            content_type: ct,
            parent,
            fv: 0,
            pv: 0,
            draft: None,
            releases: Vec::new(),
            gray: None,
            last_id: 0,
        }
    }
    /// The release everyone gets.
    pub fn current(&self) -> Option<&Release> {
        self.releases.last()
    }
    pub fn release(&self, id: u64) -> Option<&Release> {
        self.releases.iter().find(|r| r.id == id)
    }
    /// A new release (id assigned, history trimmed).
    pub fn push(&mut self, mut r: Release) -> &Release {
        self.last_id += 1;
        r.id = self.last_id;
        self.releases.push(r);
        if self.releases.len() > MAX_RELEASES {
            let drop = self.releases.len() - MAX_RELEASES;
            self.releases.drain(..drop);
        }
        self.releases.last().expect("just pushed")
    }
}

/// Global variables of one project/env.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Globals {
    pub vars: BTreeMap<String, String>,
    pub version: u64,
}

/// Every config file and global, in the release state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDoc {
    #[serde(default)]
    pub files: BTreeMap<String, ConfigFile>,
    /// By `project/env`.
    #[serde(default)]
    pub globals: BTreeMap<String, Globals>,
}

impl ConfigDoc {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.globals.is_empty()
    }

    /// The parents of `key`, nearest first; a cycle or an unknown parent is an error.
    pub fn ancestors(&self, key: &str, parent: Option<&str>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::from([key.to_string()]);
        let mut next = parent.map(str::to_string);
        while let Some(p) = next {
            if !seen.insert(p.clone()) {
                return Err(format!(
                    "inheritance cycle: {key} → {} → {p}",
                    out.join(" → ")
                ));
            }
            let f = self
                .files
                .get(&p)
                .ok_or_else(|| format!("unknown parent `{p}`"))?;
            out.push(p.clone());
            next = f.parent.clone();
        }
        Ok(out)
    }

    /// Check a parent may be named by `key`: it exists, is published, has the same
    /// content type, and sits in the same project or in `common`.
    pub fn check_parent(&self, key: &FileKey, ct: ContentType, parent: &str) -> Result<(), String> {
        let pk = FileKey::parse(parent)?;
        if pk.project != key.project && pk.project != COMMON {
            return Err(format!(
                "parent `{parent}`: a file inherits from its own project or `{COMMON}`"
            ));
        }
        if pk.env != key.env {
            return Err(format!(
                "parent `{parent}`: a file inherits from its own env ({}), never another's",
                key.env
            ));
        }
        let p = self
            .files
            .get(parent)
            .ok_or_else(|| format!("unknown parent `{parent}`"))?;
        if p.current().is_none() {
            return Err(format!("parent `{parent}` has no release yet"));
        }
        if p.content_type != ct {
            return Err(format!(
                "parent `{parent}` is {}, this file is {}",
                p.content_type.as_str(),
                ct.as_str()
            ));
        }
        let chain = self.ancestors(&key.to_string(), Some(parent))?;
        if chain.len() > MAX_DEPTH {
            return Err(format!("more than {MAX_DEPTH} parents above this file"));
        }
        Ok(())
    }

    /// Files whose parent is `key`.
    pub fn children(&self, key: &str) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, f)| f.parent.as_deref() == Some(key))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every descendant of `roots`, parents before children (the order to re-publish in).
    pub fn descendants(&self, roots: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut queue: std::collections::VecDeque<String> = roots.iter().cloned().collect();
        let mut seen: BTreeSet<String> = roots.iter().cloned().collect();
        while let Some(k) = queue.pop_front() {
            for c in self.children(&k) {
                if seen.insert(c.clone()) {
                    out.push(c.clone());
                    queue.push_back(c);
                }
            }
        }
        out
    }

    /// The dependency tree under `roots` as nested JSON (`{"key": {child: {…}}}`).
    pub fn tree(&self, key: &str) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for c in self.children(key) {
            let sub = self.tree(&c);
            m.insert(c, sub);
        }
        serde_json::Value::Object(m)
    }

    /// The globals of a project/env (empty if none).
    pub fn vars(&self, scope: &str) -> BTreeMap<String, String> {
        self.globals
            .get(scope)
            .map(|g| g.vars.clone())
            .unwrap_or_default()
    }
}

/// The effective content of a file: its own content with its project/env globals
/// substituted, merged over the parent's effective content (key-value formats), checked
/// to parse as its type.
pub fn effective(
    ct: ContentType,
    own: &str,
    parent_effective: Option<&str>,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let own = super::vars::substitute(own, vars)?;
    super::format::validate(ct, &own).map_err(|e| e.to_string())?;
    let out = match parent_effective {
        Some(p) if ct.merges() => super::format::merge(ct, p, &own).map_err(|e| e.to_string())?,
        _ => own,
    };
    if out.len() > MAX_FILE {
        return Err(format!(
            "the effective content is {} bytes, over {MAX_FILE}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(ct: ContentType, parent: Option<&str>) -> ConfigFile {
        let mut f = ConfigFile::new(ct, parent.map(str::to_string));
        f.push(Release {
            id: 0,
            fv: 1,
            pv: 0,
            kind: ReleaseKind::Publish,
            blob: "aa".repeat(32),
            effective: "bb".repeat(32),
            size: 1,
            author: "a".into(),
            reason: String::new(),
            ts: 0,
        });
        f
    }

    #[test]
    fn keys_parents_cycles_and_the_tree() {
        assert!(FileKey::parse("shop/prod/web/conf/app.properties").is_ok());
        for bad in [
            "shop/prod/web",
            "shop/prod/web/../x",
            "sh op/prod/web/a",
            "a/b/c/",
        ] {
            assert!(FileKey::parse(bad).is_err(), "{bad}");
        }
        let mut d = ConfigDoc::default();
        d.files.insert(
            "common/prod/all/base.properties".into(),
            released(ContentType::Properties, None),
        );
        d.files.insert(
            "shop/prod/web/app.properties".into(),
            released(
                ContentType::Properties,
                Some("common/prod/all/base.properties"),
            ),
        );
        d.files.insert(
            "shop/prod/web-eu/app.properties".into(),
            released(
                ContentType::Properties,
                Some("shop/prod/web/app.properties"),
            ),
        );
        let k = FileKey::parse("shop/prod/api/app.properties").unwrap();
        d.check_parent(
            &k,
            ContentType::Properties,
            "common/prod/all/base.properties",
        )
        .unwrap();
        assert!(d
            .check_parent(&k, ContentType::Json, "common/prod/all/base.properties")
            .unwrap_err()
            .contains("is properties"));
        assert!(d
            .check_parent(&k, ContentType::Properties, "shop/prod/web/nope")
            .unwrap_err()
            .contains("unknown parent"));
        let dev = FileKey::parse("shop/dev/web/a.properties").unwrap();
        assert!(d
            .check_parent(
                &dev,
                ContentType::Properties,
                "shop/prod/web/app.properties"
            )
            .unwrap_err()
            .contains("own env"));
        let other = FileKey::parse("bank/prod/web/a.properties").unwrap();
        assert!(d
            .check_parent(
                &other,
                ContentType::Properties,
                "shop/prod/web/app.properties"
            )
            .is_err());
        // web → web-eu → web would be a cycle.
        let web = FileKey::parse("shop/prod/web/app.properties").unwrap();
        assert!(d
            .check_parent(
                &web,
                ContentType::Properties,
                "shop/prod/web-eu/app.properties"
            )
            .unwrap_err()
            .contains("cycle"));
        assert_eq!(
            d.descendants(&["common/prod/all/base.properties".into()]),
            [
                "shop/prod/web/app.properties",
                "shop/prod/web-eu/app.properties"
            ]
        );
        let t = d.tree("common/prod/all/base.properties");
        assert!(t["shop/prod/web/app.properties"]["shop/prod/web-eu/app.properties"].is_object());
    }

    #[test]
    fn effective_content_and_release_ids() {
        let vars = BTreeMap::from([("db".to_string(), "10.0.0.5".to_string())]);
        let e = effective(
            ContentType::Properties,
            "db.host = ${global.db}\n",
            Some("db.host=x\ndb.port=3306\n"),
            &vars,
        )
        .unwrap();
        assert_eq!(e, "db.host=10.0.0.5\ndb.port=3306\n");
        assert!(effective(ContentType::Json, "{", None, &vars).is_err());
        assert!(effective(ContentType::Text, "${global.zzz}", None, &vars)
            .unwrap_err()
            .contains("global.zzz"));
        let mut f = released(ContentType::Text, None);
        for _ in 0..(MAX_RELEASES + 5) {
            let r = f.current().unwrap().clone();
            f.push(r);
        }
        assert_eq!(f.releases.len(), MAX_RELEASES);
        assert_eq!(f.current().unwrap().id, MAX_RELEASES as u64 + 6);
        assert!(f
            .current()
            .unwrap()
            .key()
            .starts_with(&format!("{}-bbbb", f.last_id)));
    }
}
