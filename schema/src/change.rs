//! The kinds of change a `changes` row records: every way release state moves. The table
//! keeps the kind as text (`ChangeKind::as_str`), so rows written by older versions and by
//! other producers still read; this enum is the list producers write from.

use serde::{Deserialize, Serialize};

/// What a change was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The release state seeded from a config file (version 1 of an empty store).
    Seed,
    /// A route's gray rules replaced.
    GrayRules,
    /// An earlier version's rules re-applied.
    Rollback,
    /// A server put on a pool's shelf.
    ServerAdd,
    /// A server taking no new requests.
    ServerDrain,
    /// A drained server back in rotation.
    ServerUndrain,
    /// A server taken off a pool.
    ServerRemove,
    /// A change to a protected environment, waiting for approvals.
    ChangeProposed,
    /// An approval of a proposed change (not yet the last one needed).
    ChangeApproved,
    /// A proposed change dropped.
    ChangeRejected,
    /// A whole state imported (`apus rules import`).
    Import,
    /// A rollout started, stepped, paused, resumed, promoted or completed.
    RolloutStep,
    /// A step of a serial pool release (started, deployed, healthy, settled, failed, done);
    /// its drains and undrains are `server_drain` / `server_undrain`.
    PoolRelease,
    /// A config file's draft saved.
    ConfigDraft,
    /// A config file released (publish, rollback, promote of a gray release, and the
    /// re-publish of the files inheriting from it).
    ConfigRelease,
    /// A config file's gray release started or abandoned.
    ConfigGray,
    /// A project/env's global variables changed (and the files using them re-published).
    ConfigGlobals,
}

impl ChangeKind {
    /// The text stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Seed => "seed",
            ChangeKind::GrayRules => "gray_rules",
            ChangeKind::Rollback => "rollback",
            ChangeKind::ServerAdd => "server_add",
            ChangeKind::ServerDrain => "server_drain",
            ChangeKind::ServerUndrain => "server_undrain",
            ChangeKind::ServerRemove => "server_remove",
            ChangeKind::ChangeProposed => "change_proposed",
            ChangeKind::ChangeApproved => "change_approved",
            ChangeKind::ChangeRejected => "change_rejected",
            ChangeKind::Import => "import",
            ChangeKind::RolloutStep => "rollout_step",
            ChangeKind::PoolRelease => "pool_release",
            ChangeKind::ConfigDraft => "config_draft",
            ChangeKind::ConfigRelease => "config_release",
            ChangeKind::ConfigGray => "config_gray",
            ChangeKind::ConfigGlobals => "config_globals",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_serde() {
        for k in [
            ChangeKind::Seed,
            ChangeKind::GrayRules,
            ChangeKind::ServerUndrain,
            ChangeKind::ChangeProposed,
            ChangeKind::Import,
            ChangeKind::RolloutStep,
            ChangeKind::PoolRelease,
            ChangeKind::ConfigRelease,
            ChangeKind::ConfigGlobals,
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}

/// What a change touched: `dimension:value` items (`route:api pool:gray tag:gray
/// tenant:acme`; a value `*` means every value of the dimension, a trailing `*` a prefix).
/// Root cause matches them against the dimension values that explain an anomaly. The
/// `changes.touched` column holds the text form (items separated by spaces), written with
/// `to_string` and read back with [`Touched::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched(Vec<(String, String)>);

impl Touched {
    /// Nothing touched yet.
    pub fn new() -> Touched {
        Touched::default()
    }

    /// Add `dimension:value` (whitespace in either becomes `_`, so the text form stays one
    /// item per word); a repeated item is kept once.
    pub fn add(&mut self, dimension: &str, value: &str) -> &mut Touched {
        let clean = |s: &str| s.replace(char::is_whitespace, "_");
        let item = (clean(dimension), clean(value));
        if !self.0.contains(&item) {
            self.0.push(item);
        }
        self
    }

    /// Read the text form; a word without `:` is a value in any dimension (`""`).
    pub fn parse(text: &str) -> Touched {
        text.split_whitespace().collect()
    }

    /// The `(dimension, value)` items, in the order added.
    pub fn items(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(d, v)| (d.as_str(), v.as_str()))
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<&'a str> for Touched {
    /// From `dimension:value` words.
    fn from_iter<I: IntoIterator<Item = &'a str>>(items: I) -> Touched {
        let mut t = Touched::new();
        for item in items {
            match item.split_once(':') {
                Some((d, v)) => t.add(d, v),
                None => t.add("", item),
            };
        }
        t
    }
}

impl std::fmt::Display for Touched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (d, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if d.is_empty() {
                f.write_str(v)?;
            } else {
                write!(f, "{d}:{v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod touched_tests {
    use super::Touched;

    #[test]
    fn text_form_round_trips() {
        let mut t = Touched::new();
        t.add("pool", "gray")
            .add("upstream", "10.0.0.1:80")
            .add("tenant", "acme corp")
            .add("pool", "gray");
        let text = t.to_string();
        assert_eq!(text, "pool:gray upstream:10.0.0.1:80 tenant:acme_corp");
        assert_eq!(Touched::parse(&text), t);
        let items: Vec<_> = Touched::parse("route:api gray")
            .items()
            .map(|(d, v)| (d.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            items,
            vec![
                ("route".into(), "api".into()),
                (String::new(), "gray".into())
            ]
        );
        assert!(Touched::parse("  ").is_empty());
    }
}
