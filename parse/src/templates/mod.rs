//! Online log-template mining (Drain-style) for the `logs.template_id` column.
//!
//! [`TemplateMiner`] groups log messages into templates as they stream in: each line is
//! masked ([`mask`]: numbers, IPs, hex, UUIDs, paths … become `<*>`), split on whitespace,
//! routed through a fixed-depth prefix tree keyed by token count and the first tokens, and
//! matched against the few clusters in the leaf it reaches by positional token similarity.
//! A match generalises the cluster's template (differing positions become `<*>`); no match
//! starts a new cluster. [`exception_template`] does the same for the message of a Java or
//! Python stack trace and names its exception class.
//!
//! Invariants:
//! - Memory is bounded: at most [`MinerConfig::max_clusters`] clusters (least recently used
//!   evicted), at most [`MinerConfig::max_tokens`] tokens per line, at most
//!   [`MinerConfig::max_children`] children per tree node.
//! - No input panics; every line (including an empty one) gets a template.
//! - A [`TemplateId`] is fixed when its cluster is created and never changes while the
//!   cluster lives, even as its template text generalises. See [`TemplateId`] for what is
//!   stable across nodes and restarts.

mod drain;
mod exception;
mod mask;

use std::sync::Arc;

use serde::Deserialize;

pub use drain::{tokenize, TemplateMiner};
pub use exception::exception_template;
pub use mask::{mask, mask_token, WILDCARD};

/// Identifies a template (cluster).
///
/// It is the 64-bit FNV-1a hash of the cluster's *initial* template text: the masked tokens
/// of the line that created the cluster, joined by single spaces. So the same founding line
/// gives the same id on every node and after a restart, with the same masking rules. What
/// is not guaranteed: that two nodes found a cluster with the same line (the first line of
/// a kind that each node sees may differ in its unmasked variables), and, in the rare case
/// that two live clusters would share an initial text (or hash), the later one gets a
/// rehashed id that depends on history.
pub type TemplateId = u64;

/// The outcome of adding one line to a [`TemplateMiner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The cluster the line joined or created.
    pub template_id: TemplateId,
    /// The cluster's template after this line was added (tokens joined by single spaces).
    pub template: Arc<str>,
    /// True when this line created the cluster or generalised its template.
    pub changed: bool,
}

/// Configuration of a [`TemplateMiner`]. Out-of-range values are clamped by
/// [`TemplateMiner::new`] rather than rejected, so a miner can always be built.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinerConfig {
    /// Depth of the prefix tree, counting the root and the token-count level; the first
    /// `depth - 2` tokens route a line (Drain's depth). At least 3.
    pub depth: usize,
    /// Minimum fraction of token positions where the line equals the cluster's template for
    /// the line to join it, in 0..=1 (Drain's similarity threshold). A masked token meeting
    /// a `<*>` counts as equal; a concrete token meeting one does not. 0.75 is what tuning
    /// on either half of the Loghub systems here picks for the other half (README).
    pub similarity: f64,
    /// Maximum children of a tree node; further distinct tokens share a `<*>` child.
    pub max_children: usize,
    /// Maximum live clusters; when full, the least recently matched one is evicted.
    pub max_clusters: usize,
    /// Maximum tokens considered per line; the rest of a longer line becomes one `<*>`.
    pub max_tokens: usize,
    /// Lines of evidence that make a template's word a constant: once a cluster has matched
    /// this many lines, a line that differs from it in a position where the template has
    /// always had one word (letters, no digits) and the line has another word does not
    /// join it, however similar the rest is. `Starting … initialization.` against
    /// `Starting … finalization.` or `client WindowsUpdateAgent` against `client SPP` are
    /// then two templates, as a person reads them; a position whose words vary from the
    /// start (user names) is generalised before the evidence accumulates. 0 turns it off.
    pub constant_evidence: u32,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.75,
            max_children: 100,
            max_clusters: 50_000,
            max_tokens: 128,
            constant_evidence: 3,
        }
    }
}

/// FNV-1a, 64 bit: tiny, deterministic across platforms and releases (unlike std's
/// `DefaultHasher`), which is what a persisted id needs.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_serde() {
        let c: MinerConfig = serde_json::from_str(r#"{"similarity":0.6}"#).unwrap();
        assert_eq!(c.similarity, 0.6);
        assert_eq!(c.depth, MinerConfig::default().depth);
        assert!(serde_json::from_str::<MinerConfig>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn fnv_is_the_reference_function() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
