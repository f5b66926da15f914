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
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
