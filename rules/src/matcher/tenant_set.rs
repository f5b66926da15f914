//! A rule's tenant names as one block of text and a table of `(offset, length)` slots into
//! it: the set the proxy looks tenants up in.
//!
//! A `HashSet<Box<str>>` of 100k names held a 16-byte slot and a heap allocation per name
//! (3.8 MB); this keeps an 8-byte slot per name and, for a `tenants_file`, no copy of the
//! names at all: they are slices of the file's text, which the rule keeps anyway to tell
//! whether the file changed (1.2 MB for 100k names); inline names sit in a block of their
//! own. Lookups cost what they did: one hash,
//! one slot, one comparison against the text.

use std::hash::BuildHasher as _;
use std::sync::Arc;

use hashbrown::HashTable;

/// Tenant names, each a slice of the file's text or of the inline names' block.
pub(super) struct TenantSet {
    /// The `tenants_file` text (shared with the rule, never copied).
    file: Option<Arc<str>>,
    /// The inline names, trimmed, end to end.
    inline: Box<str>,
    /// `(start, len)` of each distinct name; `start` with [`INLINE`] set is in `inline`,
    /// otherwise in `file`.
    slots: HashTable<(u32, u32)>,
    /// Seeded per process: the names come from a release manager's list and are only looked
    /// up with request values, so speed matters, not SipHash's flood resistance.
    hasher: foldhash::fast::RandomState,
}

/// The bit of a slot's start that says the name is an inline one.
const INLINE: u32 = 1 << 31;

/// The most text either block may hold (offsets below [`INLINE`]).
pub(super) const MAX_TEXT: usize = INLINE as usize - 1;

impl std::fmt::Debug for TenantSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSet")
            .field("names", &self.slots.len())
            .finish()
    }
}

impl TenantSet {
    /// The names of `inline` (each trimmed, taken whole) and the lines of `file_text`
    /// (trimmed; blank lines and `#` comments skipped). Err when either holds more than
    /// [`MAX_TEXT`] bytes (tenants files are capped far below).
    pub(super) fn new(
        inline: &[String],
        file_text: Option<&Arc<str>>,
    ) -> Result<TenantSet, String> {
        let mut block = String::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(inline.len());
        for t in inline.iter().map(|t| t.trim()) {
            spans.push((block.len(), t.len()));
            block.push_str(t);
        }
        let longest = block.len().max(file_text.map_or(0, |t| t.len()));
        if longest > MAX_TEXT {
            return Err(format!("{longest} bytes of tenant names, over {MAX_TEXT}"));
        }
        // Both blocks are under MAX_TEXT: every offset and length fits below INLINE.
        let mut spans: Vec<(u32, u32)> = spans
            .into_iter()
            .map(|(s, l)| (s as u32 | INLINE, l as u32))
            .collect();
        if let Some(text) = file_text {
            let base = text.as_ptr() as usize;
            spans.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| ((l.as_ptr() as usize - base) as u32, l.len() as u32)),
            );
        }
        let mut set = TenantSet {
            file: file_text.cloned(),
            inline: block.into_boxed_str(),
            slots: HashTable::with_capacity(spans.len()),
            hasher: foldhash::fast::RandomState::default(),
        };
        for span in spans {
            let n = set.name(span);
            let h = set.hasher.hash_one(n);
            if set.slots.find(h, |&x| set.name(x) == n).is_none() {
                let (slots, hasher) = (&mut set.slots, &set.hasher);
                let (file, inline) = (&set.file, &set.inline);
                slots.insert_unique(h, span, |&x| hasher.hash_one(slice(file, inline, x)));
            }
        }
        Ok(set)
    }

    /// The `tenants_file` text the names were cut from (compared by the next compile to
    /// tell whether the file changed).
    pub(super) fn file(&self) -> &Option<Arc<str>> {
        &self.file
    }

    /// The name a slot points at.
    #[inline]
    fn name(&self, slot: (u32, u32)) -> &str {
        slice(&self.file, &self.inline, slot)
    }

    /// Whether `name` is one of the tenants.
    #[inline]
    pub(super) fn contains(&self, name: &str) -> bool {
        let h = self.hasher.hash_one(name);
        self.slots
            .find(h, |&(s, l)| {
                l as usize == name.len() && self.name((s, l)) == name
            })
            .is_some()
    }

    /// How many distinct names.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the file's names are slices of `text` (no copy of them was made).
    #[cfg(test)]
    pub(super) fn shares(&self, text: &Arc<str>) -> bool {
        self.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, text))
    }
}

/// The text of `slot` in the file or the inline block. Every slot was cut from its block at
/// char boundaries (trimmed lines and whole names), so the slice cannot fail.
#[inline]
fn slice<'a>(file: &'a Option<Arc<str>>, inline: &'a str, (s, l): (u32, u32)) -> &'a str {
    let (text, start) = if s & INLINE != 0 {
        (inline, (s & !INLINE) as usize)
    } else {
        (file.as_deref().unwrap_or(""), s as usize)
    };
    &text[start..start + l as usize]
}

#[cfg(test)]
mod tests {
    use super::TenantSet;
    use std::sync::Arc;

    #[test]
    fn names_from_a_file_are_slices_of_its_text() {
        let file: Arc<str> = "# beta tenants\nacme\n  globex  \n\nacme\ninitech\n".into();
        let s = TenantSet::new(&[], Some(&file)).unwrap();
        assert!(s.shares(&file), "no copy of the names");
        assert_eq!(
            s.len(),
            3,
            "distinct names; comments and blank lines skipped"
        );
        for t in ["acme", "globex", "initech"] {
            assert!(s.contains(t), "{t}");
        }
        for t in [
            "",
            "acm",
            "acme ",
            "# beta tenants",
            "globex  ",
            "initechx",
            "ACME",
        ] {
            assert!(!s.contains(t), "{t:?}");
        }
    }

    #[test]
    fn inline_names_and_a_file_make_one_set() {
        let file: Arc<str> = "acme\nglobex".into();
        let s = TenantSet::new(&[" umbrella ".into(), "acme".into()], Some(&file)).unwrap();
        assert!(
            s.shares(&file),
            "inline names beside a file do not copy the file"
        );
        assert_eq!(s.len(), 3);
        for t in ["umbrella", "acme", "globex"] {
            assert!(s.contains(t), "{t}");
        }
        assert!(!s.contains(" umbrella "));
        // An inline name is taken whole, even one that would be a comment in a file.
        let odd = TenantSet::new(&["#vip".into()], None).unwrap();
        assert!(odd.contains("#vip"));
        let only_inline = TenantSet::new(&["a".into(), "b".into()], None).unwrap();
        assert!(
            only_inline.contains("a") && only_inline.contains("b") && !only_inline.contains("c")
        );
        let empty = TenantSet::new(&[], None).unwrap();
        assert_eq!(empty.len(), 0);
        assert!(!empty.contains(""));
    }

    #[test]
    fn a_hundred_thousand_names_are_all_found_and_others_not() {
        let text: String = (0..200_000)
            .step_by(2)
            .map(|i| format!("tenant-{i}\n"))
            .collect();
        let file: Arc<str> = text.into();
        let s = TenantSet::new(&[], Some(&file)).unwrap();
        assert_eq!(s.len(), 100_000);
        for i in 0..200_000 {
            assert_eq!(s.contains(&format!("tenant-{i}")), i % 2 == 0, "tenant-{i}");
        }
    }
}
