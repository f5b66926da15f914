//! Where a process's tokens come from: tokens files, and the admin token created on the
//! first start when none is configured (secure by default).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{AuthError, Role, TokenConfig, Tokens};

/// The `[[tokens]]` of a tokens file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// The tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// Read a tokens file (TOML with `[[tokens]]`).
pub fn load_file(path: &Path) -> Result<Vec<TokenConfig>, AuthError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?;
    toml::from_str::<TokensFile>(&text)
        .map(|f| f.tokens)
        .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))
}

/// How the token set of a process was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Tokens came from the configuration.
    Configured,
    /// No token was configured: this admin token was created now.
    Created {
        /// The token, to print once.
        token: String,
        /// Where it is kept.
        path: PathBuf,
    },
    /// No token was configured: the admin token created by an earlier start is used.
    Existing {
        /// Where it is kept.
        path: PathBuf,
    },
    /// `--no-auth`.
    Open,
}

/// The file holding the generated admin token.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("admin.token")
}

/// Decide a process's tokens: `--no-auth` (only when every listener is on loopback), the
/// configured tokens, or else the admin token of `data_dir` (created on first start).
pub fn resolve(
    configured: Vec<TokenConfig>,
    data_dir: &Path,
    no_auth: bool,
    listeners: &[&str],
) -> Result<(Tokens, Origin), AuthError> {
    if no_auth {
        if let Some(l) = listeners.iter().find(|l| !is_loopback(l)) {
            return Err(AuthError::Config(format!(
                "--no-auth is allowed only when every listener is on loopback; `{l}` is not"
            )));
        }
        return Ok((Tokens::open(), Origin::Open));
    }
    if !configured.is_empty() {
        return Ok((Tokens::new(&configured)?, Origin::Configured));
    }
    let path = admin_token_path(data_dir);
    let (token, origin) = match std::fs::read_to_string(&path) {
        Ok(t) => (
            t.trim().to_string(),
            Origin::Existing { path: path.clone() },
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_token();
            write_private(&path, &token)
                .map_err(|e| AuthError::Config(format!("{}: {e}", path.display())))?;
            (
                token.clone(),
                Origin::Created {
                    token,
                    path: path.clone(),
                },
            )
        }
        Err(e) => return Err(AuthError::Config(format!("{}: {e}", path.display()))),
    };
    let cfg = TokenConfig {
        name: "admin".into(),
        token,
        role: Role::Admin,
        scopes: Vec::new(),
    };
    Ok((Tokens::new(&[cfg])?, origin))
}

/// A new random token (244 bits from the OS generator, hex).
pub fn new_token() -> String {
    format!(
        "apus_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Whether a listen address (`host:port`) is on loopback.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
