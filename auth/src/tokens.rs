//! The tokens a listener accepts, and how a request presents one.

use std::sync::Arc;

use base64::Engine as _;

use crate::{AuthError, Principal, Role, Scope, TokenConfig};

/// The tokens a listener accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Arc<Principal>)>,
    open: bool,
}

/// Shortest token accepted: a guessable token is no token.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Check and index `cfgs`: names and tokens unique, tokens long enough, scopes valid.
    pub fn new(cfgs: &[TokenConfig]) -> Result<Tokens, AuthError> {
        let mut entries: Vec<(Vec<u8>, Arc<Principal>)> = Vec::new();
        for c in cfgs {
            if c.token.len() < MIN_TOKEN_LEN || c.token.chars().any(char::is_whitespace) {
                return Err(AuthError::Config(format!(
                    "token `{}` must be at least {MIN_TOKEN_LEN} characters with no spaces",
                    c.name
                )));
            }
            if c.name.is_empty() || c.name.contains(':') {
                return Err(AuthError::Config(format!(
                    "token name `{}` must be non-empty, with no `:`",
                    c.name
                )));
            }
            if entries
                .iter()
                .any(|(t, p)| t == c.token.as_bytes() || p.name == c.name)
            {
                return Err(AuthError::Config(format!(
                    "token `{}`: names and tokens must be unique",
                    c.name
                )));
            }
            let scopes = if c.scopes.is_empty() && c.role != Role::ReleaseManager {
                vec![Scope::all()]
            } else {
                c.scopes
                    .iter()
                    .map(|s| Scope::parse(s))
                    .collect::<Result<Vec<_>, _>>()?
            };
            entries.push((
                c.token.as_bytes().to_vec(),
                Arc::new(Principal {
                    name: c.name.clone(),
                    role: c.role,
                    scopes,
                }),
            ));
        }
        Ok(Tokens {
            entries,
            open: false,
        })
    }

    /// No checking at all (`--no-auth`): every request is [`Principal::anonymous`].
    pub fn open() -> Tokens {
        Tokens {
            entries: Vec::new(),
            open: true,
        }
    }

    /// Whether checking is off.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of the credentials in `headers`: `Authorization: Bearer TOKEN`,
    /// `Basic base64(NAME:TOKEN)`, or `ApiKey TOKEN` / `ApiKey base64(NAME:TOKEN)`.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Principal>, AuthError> {
        if self.open {
            return Ok(Arc::new(Principal::anonymous()));
        }
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return Err(AuthError::Unauthorized(
                "send one `Authorization: Bearer TOKEN` (or Basic / ApiKey) header".into(),
            ));
        };
        let v = v
            .to_str()
            .map_err(|_| AuthError::Unauthorized("Authorization header is not ASCII".into()))?;
        let (scheme, cred) = v.trim().split_once(' ').unwrap_or((v, ""));
        let cred = cred.trim();
        let (user, secret): (Option<String>, String) = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => (None, cred.to_string()),
            "basic" => {
                let (u, p) = decode_pair(cred).ok_or_else(|| {
                    AuthError::Unauthorized("Basic credentials are not base64(user:token)".into())
                })?;
                (Some(u), p)
            }
            "apikey" => match decode_pair(cred) {
                Some((u, p)) => (Some(u), p),
                None => (None, cred.to_string()),
            },
            _ => {
                return Err(AuthError::Unauthorized(format!(
                    "unsupported Authorization scheme `{scheme}`; use Bearer, Basic or ApiKey"
                )))
            }
        };
        let mut found: Option<&Arc<Principal>> = None;
        for (t, p) in &self.entries {
            if constant_time_eq(t, secret.as_bytes()) {
                found = Some(p);
            }
        }
        let p = found.ok_or_else(|| AuthError::Unauthorized("unknown token".into()))?;
        if let Some(u) = user {
            if u != p.name {
                return Err(AuthError::Unauthorized(format!(
                    "user `{u}` does not hold this token (Basic/ApiKey user = the token's name)"
                )));
            }
        }
        Ok(p.clone())
    }
}

fn decode_pair(b64: &str) -> Option<(String, String)> {
    if b64.len() > 4096 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
