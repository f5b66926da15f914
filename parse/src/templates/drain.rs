//! The Drain prefix tree and cluster store behind [`TemplateMiner`].
//!
//! Layout: `roots[token count]` → up to `depth - 2` levels keyed by the line's leading
//! tokens (a `<*>` child collects wildcards and overflow past `max_children`) → a leaf
//! listing cluster slots. Clusters live in a slab (`slots`) threaded on an intrusive LRU
//! list, so lookup, touch and eviction are O(1) apart from the leaf scan.
//!
//! Invariants: every live cluster is listed in exactly one leaf, the one its `path` names;
//! `ids` maps exactly the live clusters' ids to their slots; `live <= max_clusters`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::mask::{mask_token, WILDCARD};
use super::{fnv1a64, Match, MinerConfig, TemplateId};

const NIL: u32 = u32::MAX;

/// FNV for the tree's small string-keyed maps: much cheaper than SipHash on short tokens,
/// and flooding is bounded by `max_children` per node anyway.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Default)]
struct Node {
    children: FnvMap<Box<str>, Node>,
    clusters: Vec<u32>,
}

struct Cluster {
    id: TemplateId,
    tokens: Vec<Box<str>>,
    template: Arc<str>,
    /// Lines matched (saturating): the evidence behind the template's constant words.
    size: u32,
    /// Routing keys below the token-count level, to find the leaf again on eviction.
    path: Box<[Box<str>]>,
    prev: u32,
    next: u32,
}

/// Online template miner (Drain). See the module docs of [`crate::templates`].
pub struct TemplateMiner {
    cfg: MinerConfig,
    roots: FnvMap<usize, Node>,
    slots: Vec<Option<Cluster>>,
    free: Vec<u32>,
    ids: HashMap<TemplateId, u32>,
    live: usize,
    /// Most recently used cluster slot.
    head: u32,
    /// Least recently used cluster slot: the next to evict.
    tail: u32,
}

impl TemplateMiner {
    /// A miner with `cfg`, out-of-range values clamped (depth ≥ 3, similarity in 0..=1,
    /// max_children ≥ 2, max_clusters ≥ 1 and < 2³², max_tokens ≥ 1).
    pub fn new(mut cfg: MinerConfig) -> Self {
        cfg.depth = cfg.depth.max(3);
        cfg.similarity = if cfg.similarity.is_nan() {
            MinerConfig::default().similarity
        } else {
            cfg.similarity.clamp(0.0, 1.0)
        };
        cfg.max_children = cfg.max_children.max(2);
        cfg.max_clusters = cfg.max_clusters.clamp(1, (NIL - 1) as usize);
        cfg.max_tokens = cfg.max_tokens.max(1);
        Self {
            cfg,
            roots: FnvMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            live: 0,
            head: NIL,
            tail: NIL,
        }
    }

    /// The effective (clamped) configuration.
    pub fn config(&self) -> &MinerConfig {
        &self.cfg
    }

    /// Number of live clusters.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no cluster exists yet.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live templates, in no particular order.
    pub fn templates(&self) -> impl Iterator<Item = (TemplateId, &str)> {
        self.slots
            .iter()
            .flatten()
            .map(|c| (c.id, c.template.as_ref()))
    }

    /// Adds one log message (without its header fields) and returns its template.
    pub fn add(&mut self, line: &str) -> Match {
        let tokens = tokenize(self.cfg.max_tokens, line);
        self.add_tokens(&tokens)
    }

    /// [`TemplateMiner::add`] for a line already split and masked by [`tokenize`] with this
    /// miner's `max_tokens`: callers that share a miner behind a lock tokenize outside it.
    pub fn add_tokens(&mut self, tokens: &[Cow<'_, str>]) -> Match {
        if let Some(slot) = self.search(tokens) {
            return self.absorb(slot, tokens);
        }
        self.create(tokens)
    }

    fn route_levels(&self, n_tokens: usize) -> usize {
        n_tokens.min(self.cfg.depth - 2)
    }

    /// The best cluster for `tokens` in the leaf they route to, if similar enough.
    fn search(&self, tokens: &[Cow<'_, str>]) -> Option<u32> {
        let mut node = self.roots.get(&tokens.len())?;
        for tok in &tokens[..self.route_levels(tokens.len())] {
            node = node
                .children
                .get(route_key(tok))
                .or_else(|| node.children.get(WILDCARD))?;
        }
        let mut best: Option<(u32, f64, usize)> = None;
        for &slot in &node.clusters {
            let Some(c) = self.slots[slot as usize].as_ref() else {
                continue;
            };
            if self.cfg.constant_evidence > 0
                && c.size >= self.cfg.constant_evidence
                && contradicts_a_constant(&c.tokens, tokens)
            {
                continue;
            }
            let (sim, params) = similarity(&c.tokens, tokens);
            if best.is_none_or(|(_, bs, bp)| sim > bs || (sim == bs && params > bp)) {
                best = Some((slot, sim, params));
            }
        }
        best.filter(|&(_, sim, _)| sim >= self.cfg.similarity)
            .map(|(slot, _, _)| slot)
    }

    fn absorb(&mut self, slot: u32, tokens: &[Cow<'_, str>]) -> Match {
        self.touch(slot);
        let Some(c) = self.slots[slot as usize].as_mut() else {
            // `search` only returns live slots; degrade rather than panic if that breaks.
            return self.create(tokens);
        };
        c.size = c.size.saturating_add(1);
        let mut changed = false;
        for (t, l) in c.tokens.iter_mut().zip(tokens) {
            if t.as_ref() != WILDCARD && t.as_ref() != l.as_ref() {
                *t = WILDCARD.into();
                changed = true;
            }
        }
        if changed {
            c.template = join(&c.tokens).into();
        }
        Match {
            template_id: c.id,
            template: c.template.clone(),
            changed,
        }
    }

    fn create(&mut self, tokens: &[Cow<'_, str>]) -> Match {
        if self.live >= self.cfg.max_clusters {
            self.evict_lru();
        }
        let text = join(tokens);
        let mut id = fnv1a64(text.as_bytes());
        while self.ids.contains_key(&id) {
            id = fnv1a64(&id.to_le_bytes());
        }
        let path = self.insert_path(tokens);
        let template: Arc<str> = text.into();
        let cluster = Cluster {
            id,
            tokens: tokens.iter().map(|t| Box::from(t.as_ref())).collect(),
            template: template.clone(),
            size: 1,
            path,
            prev: NIL,
            next: NIL,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(cluster);
                s
            }
            None => {
                self.slots.push(Some(cluster));
                (self.slots.len() - 1) as u32
            }
        };
        self.leaf_mut(tokens.len(), slot).clusters.push(slot);
        self.ids.insert(id, slot);
        self.live += 1;
        self.push_front(slot);
        Match {
            template_id: id,
            template,
            changed: true,
        }
    }

    /// Chooses (and creates) the route for a new cluster, Drain's way: a token gets its own
    /// child while the node has room, keeping the last place for the shared `<*>` child.
    fn insert_path(&mut self, tokens: &[Cow<'_, str>]) -> Box<[Box<str>]> {
        let levels = self.route_levels(tokens.len());
        let max_children = self.cfg.max_children;
        let mut node = self.roots.entry(tokens.len()).or_default();
        let mut path = Vec::with_capacity(levels);
        for tok in &tokens[..levels] {
            let tok = route_key(tok);
            let key: &str = if node.children.contains_key(tok) {
                tok
            } else if tok == WILDCARD {
                WILDCARD
            } else {
                let has_wild = node.children.contains_key(WILDCARD);
                let n = node.children.len();
                if (has_wild && n < max_children) || (!has_wild && n + 1 < max_children) {
                    tok
                } else {
                    WILDCARD
                }
            };
            path.push(Box::<str>::from(key));
            node = node.children.entry(key.into()).or_default();
        }
        path.into_boxed_slice()
    }

    fn leaf_mut(&mut self, len: usize, slot: u32) -> &mut Node {
        let path = match self.slots[slot as usize].as_ref() {
            Some(c) => c.path.clone(),
            None => Box::default(),
        };
        let mut node = self.roots.entry(len).or_default();
        for key in path.iter() {
            node = node.children.entry(key.clone()).or_default();
        }
        node
    }

    fn evict_lru(&mut self) {
        let slot = self.tail;
        if slot == NIL {
            return;
        }
        self.unlink(slot);
        let Some(c) = self.slots[slot as usize].take() else {
            return;
        };
        self.free.push(slot);
        self.ids.remove(&c.id);
        self.live -= 1;
        let len = c.tokens.len();
        if let Some(root) = self.roots.get_mut(&len) {
            if remove_from(root, &c.path, slot) {
                self.roots.remove(&len);
            }
        }
    }

    fn touch(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    fn push_front(&mut self, slot: u32) {
        let old = self.head;
        if let Some(c) = self.slots[slot as usize].as_mut() {
            c.prev = NIL;
            c.next = old;
        }
        if old != NIL {
            if let Some(o) = self.slots[old as usize].as_mut() {
                o.prev = slot;
            }
        } else {
            self.tail = slot;
        }
        self.head = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let Some((prev, next)) = self.slots[slot as usize].as_ref().map(|c| (c.prev, c.next))
        else {
            return;
        };
        match prev {
            NIL => self.head = next,
            p => {
                if let Some(c) = self.slots[p as usize].as_mut() {
                    c.next = next;
                }
            }
        }
        match next {
            NIL => self.tail = prev,
            n => {
                if let Some(c) = self.slots[n as usize].as_mut() {
                    c.prev = prev;
                }
            }
        }
        if let Some(c) = self.slots[slot as usize].as_mut() {
            c.prev = NIL;
            c.next = NIL;
        }
    }
}

/// The tree key of a routing token. Tokens with digits or a masked part are likely
/// variables (hostnames like `node-7.dc`, ids like `blk_<*>`): routing them to the shared
/// `<*>` child keeps one kind of line on one branch, as Drain does.
fn route_key(tok: &str) -> &str {
    if tok.bytes().any(|b| b.is_ascii_digit()) || tok.contains(WILDCARD) || is_dotted_name(tok) {
        WILDCARD
    } else {
        tok
    }
}

/// A dotted name (`com.apple.CacheDelete.daily:`, `host.example.org`): a label that names
/// one of many things, so it does not split the tree (lines still compare on it).
fn is_dotted_name(tok: &str) -> bool {
    let b = tok.as_bytes();
    b.windows(3)
        .filter(|w| w[1] == b'.' && w[0].is_ascii_alphanumeric() && w[2].is_ascii_alphanumeric())
        .count()
        >= 2
}

/// Removes `slot` from the leaf at `path` below `node`, pruning nodes left empty so churn
/// does not grow the tree. Returns whether `node` itself is now empty.
fn remove_from(node: &mut Node, path: &[Box<str>], slot: u32) -> bool {
    match path.split_first() {
        None => node.clusters.retain(|&s| s != slot),
        Some((key, rest)) => {
            if let Some(child) = node.children.get_mut(key) {
                if remove_from(child, rest, slot) {
                    node.children.remove(key);
                }
            }
        }
    }
    node.clusters.is_empty() && node.children.is_empty()
}

/// A word: letters (and punctuation), no digits, nothing masked, not a `key=value`
/// pair (whose value is a variable by its form). The tokens a person reads as the
/// constant text of a message.
fn is_word(tok: &str) -> bool {
    tok.bytes().any(|b| b.is_ascii_alphabetic())
        && !tok.bytes().any(|b| b.is_ascii_digit() || b == b'=')
        && !tok.contains(WILDCARD)
}

/// Whether `tokens` has another word where the template has kept one word all along.
fn contradicts_a_constant(template: &[Box<str>], tokens: &[Cow<'_, str>]) -> bool {
    template
        .iter()
        .zip(tokens)
        .any(|(t, l)| t.as_ref() != l.as_ref() && is_word(t) && is_word(l))
}

/// Drain's sequence similarity: the fraction of positions where the template has the
/// line's token (wildcards do not count), and the template's wildcard count as tie-break.
fn similarity(template: &[Box<str>], tokens: &[Cow<'_, str>]) -> (f64, usize) {
    if template.is_empty() {
        return (1.0, 0);
    }
    let mut same = 0usize;
    let mut params = 0usize;
    for (t, l) in template.iter().zip(tokens) {
        if t.as_ref() == l.as_ref() {
            // Includes a masked token meeting a wildcard: a masked value is a known
            // variable, which is as good as an equal constant.
            same += 1;
        } else if t.as_ref() == WILDCARD {
            params += 1;
        }
    }
    (same as f64 / template.len() as f64, params)
}

fn join<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut s = String::with_capacity(tokens.iter().map(|t| t.as_ref().len() + 1).sum());
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(t.as_ref());
    }
    s
}

/// Splits `line` on whitespace and masks each token (the miner's first step); past
/// `max_tokens` the rest of the line becomes one `<*>`.
pub fn tokenize(max_tokens: usize, line: &str) -> Vec<Cow<'_, str>> {
    let max = max_tokens.max(1);
    let mut it = line.split_whitespace();
    let mut out: Vec<_> = it.by_ref().take(max).map(mask_token).collect();
    if out.len() == max && it.next().is_some() {
        out[max - 1] = WILDCARD.into();
    }
    out
}

#[cfg(test)]
mod tests;
