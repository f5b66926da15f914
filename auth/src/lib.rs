//! Who may do what, for every listener: the gateway's admin API, the ingest receivers and
//! the query API. A request presents a token (`Authorization: Bearer`, Elasticsearch-style
//! `Basic` or `ApiKey`, as shippers and Prometheus' `remote_write` send them); the token
//! names a [`Principal`] with a [`Role`] and the `project/env` [`Scope`]s it is bound to.
//!
//! Secure by default: with no token configured, [`resolve`] creates an admin token in the
//! data directory (mode 0600) for the binary to print once; only an explicit `--no-auth`
//! on loopback listeners turns checking off.
//!
//! Must never depend on: any Apus crate, a runtime, the network.

#![warn(clippy::print_stdout)]

mod bootstrap;
mod tokens;

use serde::{Deserialize, Serialize};

pub use bootstrap::{
    admin_token_path, is_loopback, load_file, new_token, resolve, Origin, TokensFile,
};
pub use tokens::{Tokens, MIN_TOKEN_LEN};

/// Errors of authentication and authorization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that match no token (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A known principal that may not do this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The token configuration is wrong (refused at start).
    #[error("token configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Unauthorized(_) => http::StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => http::StatusCode::FORBIDDEN,
            AuthError::Config(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, everywhere.
    Admin,
    /// Read, and change releases and configuration within its scopes.
    ReleaseManager,
    /// Read within its scopes.
    Viewer,
    /// Write telemetry (logs, metrics, slow logs, access logs) within its scopes; never
    /// change events.
    Shipper,
    /// A gateway or control-plane node: write telemetry and change events.
    Gateway,
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read dashboards, rankings, search, SQL, release state.
    Read,
    /// Change gray rules, pools, approvals, configuration.
    Change,
    /// Send telemetry to the ingest receivers.
    Ingest,
    /// Write change events (the audit trail root cause trusts).
    WriteChanges,
}

impl Role {
    /// Whether the role allows `a` at all (scopes decide where).
    pub fn allows(self, a: Action) -> bool {
        use Action::*;
        use Role::*;
        matches!(
            (self, a),
            (Admin, _)
                | (ReleaseManager, Read | Change)
                | (Viewer, Read)
                | (Shipper, Ingest)
                | (Gateway, Ingest | WriteChanges)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReleaseManager => "release_manager",
            Role::Viewer => "viewer",
            Role::Shipper => "shipper",
            Role::Gateway => "gateway",
        }
    }
}

/// A `project/env` pattern; `*` matches any value of its half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Project, or `*`.
    pub project: String,
    /// Environment, or `*`.
    pub env: String,
}

impl Scope {
    /// Parse `project/env` (either half may be `*`), or `*` for everything. A bare word is
    /// refused: it cannot say whether it names a project or an environment.
    pub fn parse(s: &str) -> Result<Scope, AuthError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Scope::all());
        }
        let bad = || {
            AuthError::Config(format!(
                "scope `{s}` must be `project/env` (`*` for any: `shop/*`, `*/prod`, `*`)"
            ))
        };
        let (p, e) = s.split_once('/').ok_or_else(bad)?;
        let ok = |x: &str| {
            x == "*"
                || (!x.is_empty()
                    && x.len() <= 128
                    && x.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)))
        };
        if !ok(p) || !ok(e) {
            return Err(bad());
        }
        Ok(Scope {
            project: p.into(),
            env: e.into(),
        })
    }

    /// `*/*`.
    pub fn all() -> Scope {
        Scope {
            project: "*".into(),
            env: "*".into(),
        }
    }

    /// Whether the scope holds `project`/`env`.
    pub fn covers(&self, project: &str, env: &str) -> bool {
        (self.project == "*" || self.project == project) && (self.env == "*" || self.env == env)
    }

    /// Whether the scope holds everything.
    pub fn is_all(&self) -> bool {
        self.project == "*" && self.env == "*"
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.project, self.env)
    }
}

/// A token as configured (`[[tokens]]` in a config or tokens file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: recorded as the actor of changes, and the user name of `Basic` auth.
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub role: Role,
    /// Where it may do it: `project/env` patterns. Default: everything, except for release
    /// managers, who must list theirs.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Where it may act (never empty but for a release manager with none).
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// The principal of `--no-auth`: an admin named `anonymous`.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            scopes: vec![Scope::all()],
        }
    }

    /// Whether the role allows `a` anywhere.
    pub fn check_role(&self, a: Action) -> Result<(), AuthError> {
        if self.role.allows(a) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "token `{}` ({}) may not {}",
                self.name,
                self.role.name(),
                match a {
                    Action::Read => "read",
                    Action::Change => "change releases or configuration",
                    Action::Ingest => "send telemetry",
                    Action::WriteChanges => "write change events",
                }
            )))
        }
    }

    /// Whether `a` is allowed on `project`/`env`.
    pub fn check(&self, a: Action, project: &str, env: &str) -> Result<(), AuthError> {
        self.check_role(a)?;
        if self.role == Role::Admin || self.scopes.iter().any(|s| s.covers(project, env)) {
            Ok(())
        } else {
            let verb = match a {
                Action::Read => "read",
                Action::Change => "change",
                Action::Ingest | Action::WriteChanges => "write",
            };
            Err(AuthError::Forbidden(format!(
                "token `{}` may not {verb} project `{project}` env `{env}`: it is bound to {}",
                self.name,
                self.scope_list()
            )))
        }
    }

    /// Whether the principal's scopes hold every project and environment.
    pub fn covers_all(&self) -> bool {
        self.role == Role::Admin || self.scopes.iter().any(Scope::is_all)
    }

    /// The scopes as text, for messages.
    pub fn scope_list(&self) -> String {
        if self.scopes.is_empty() {
            return "no scope".into();
        }
        self.scopes
            .iter()
            .map(Scope::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn tok(name: &str, token: &str, role: Role, scopes: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            token: token.into(),
            role,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn hdr(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn tokens() -> Tokens {
        Tokens::new(&[
            tok("alice", "alice-admin-token-1", Role::Admin, &[]),
            tok(
                "bob",
                "bob-release-token-1",
                Role::ReleaseManager,
                &["shop/prod"],
            ),
            tok("fb", "filebeat-token-0001", Role::Shipper, &["shop/*"]),
            tok("gw", "gateway-token-00001", Role::Gateway, &[]),
        ])
        .unwrap()
    }

    #[test]
    fn schemes() {
        let t = tokens();
        assert_eq!(
            t.authenticate(&hdr("Bearer alice-admin-token-1"))
                .unwrap()
                .name,
            "alice"
        );
        let basic = format!("Basic {}", b64("fb:filebeat-token-0001"));
        assert_eq!(t.authenticate(&hdr(&basic)).unwrap().name, "fb");
        let wrong_user = format!("Basic {}", b64("alice:filebeat-token-0001"));
        assert!(t.authenticate(&hdr(&wrong_user)).is_err());
        let apikey = format!("ApiKey {}", b64("gw:gateway-token-00001"));
        assert_eq!(t.authenticate(&hdr(&apikey)).unwrap().name, "gw");
        assert_eq!(
            t.authenticate(&hdr("ApiKey gateway-token-00001"))
                .unwrap()
                .name,
            "gw"
        );
        for bad in ["Bearer nope", "Token x", "Basic !!!", "Bearer"] {
            assert!(
                matches!(t.authenticate(&hdr(bad)), Err(AuthError::Unauthorized(_))),
                "{bad}"
            );
        }
        assert!(t.authenticate(&http::HeaderMap::new()).is_err());
        let mut two = hdr("Bearer alice-admin-token-1");
        two.append(
            http::header::AUTHORIZATION,
            "Bearer bob-release-token-1".parse().unwrap(),
        );
        assert!(t.authenticate(&two).is_err());
    }

    #[test]
    fn roles_and_scopes() {
        let t = tokens();
        let p = |h: &str| t.authenticate(&hdr(&format!("Bearer {h}"))).unwrap();
        let bob = p("bob-release-token-1");
        assert!(bob.check(Action::Change, "shop", "prod").is_ok());
        assert!(bob.check(Action::Change, "shop", "staging").is_err());
        assert!(bob.check(Action::Change, "prod", "shop").is_err());
        assert!(bob.check(Action::Ingest, "shop", "prod").is_err());
        assert!(!bob.covers_all());
        let fb = p("filebeat-token-0001");
        assert!(fb.check(Action::Ingest, "shop", "any").is_ok());
        assert!(fb.check(Action::Ingest, "bank", "prod").is_err());
        assert!(fb.check(Action::WriteChanges, "shop", "prod").is_err());
        assert!(fb.check(Action::Read, "shop", "prod").is_err());
        let gw = p("gateway-token-00001");
        assert!(gw.check(Action::WriteChanges, "x", "y").is_ok());
        assert!(p("alice-admin-token-1").covers_all());
    }

    #[test]
    fn config_is_checked() {
        for bad in [
            vec![tok("a", "short", Role::Admin, &[])],
            vec![tok("a", "long-enough-token-1", Role::Viewer, &["prod"])],
            vec![
                tok("a", "long-enough-token-1", Role::Viewer, &[]),
                tok("b", "long-enough-token-1", Role::Viewer, &[]),
            ],
            vec![tok("a:b", "long-enough-token-1", Role::Viewer, &[])],
        ] {
            assert!(Tokens::new(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(Scope::parse("*").unwrap(), Scope::all());
        assert!(Scope::parse("shop/*").unwrap().covers("shop", "x"));
        assert!(Scope::parse("a/b/c").is_err());
    }

    #[test]
    fn first_start_creates_a_private_admin_token() {
        let dir = std::env::temp_dir().join(format!("apus-auth-{}", uuid::Uuid::new_v4()));
        let (t, o) = resolve(Vec::new(), &dir, false, &["0.0.0.0:1"]).unwrap();
        let Origin::Created { token, path } = o else {
            panic!("{o:?}")
        };
        assert_eq!(t.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, o2) = resolve(Vec::new(), &dir, false, &[]).unwrap();
        assert!(matches!(o2, Origin::Existing { .. }));
        assert!(t2.authenticate(&hdr(&format!("Bearer {token}"))).is_ok());
        assert!(resolve(Vec::new(), &dir, true, &["0.0.0.0:80"]).is_err());
        assert!(
            resolve(Vec::new(), &dir, true, &["127.0.0.1:80", "[::1]:9"])
                .unwrap()
                .0
                .is_open()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
