//! A rule's tenant names as one block of text and a table of `(offset, length)` slots into
//! it: the set the proxy looks tenants up in.
//!
//! A `HashSet<Box<str>>` of 100k names held a 16-byte slot and a heap allocation per name
//! (3.8 MB); this keeps an 8-byte slot per name and, for a `tenants_file`, no copy of the
//! names at all: they are slices of the file's text, which the rule keeps anyway to tell
//! whether the file changed (1.2 MB for 100k names). Lookups cost what they did: one hash,
//! one slot, one comparison against the text.

use std::hash::BuildHasher as _;
use std::sync::Arc;

use hashbrown::HashTable;

/// Tenant names, each a slice of `text`.
pub(super) struct TenantSet {
    text: Arc<str>,
    /// `(start, len)` of each distinct name in `text`.
    slots: HashTable<(u32, u32)>,
    /// Seeded per process: the names come from a release manager's list and are only looked
    /// up with request values, so speed matters, not SipHash's flood resistance.
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for TenantSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSet")
            .field("names", &self.slots.len())
            .finish()
    }
}

impl TenantSet {
    /// The names of `inline` (each trimmed, taken whole) and the lines of `file_text`
    /// (trimmed; blank lines and `#` comments skipped). With no inline names, the names are
    /// slices of the file's text itself; otherwise both go into one new block.
    ///
    /// The text must be under 4 GiB (tenants files are capped far below).
    pub(super) fn new(inline: &[String], file_text: Option<&Arc<str>>) -> TenantSet {
        let mut spans: Vec<(u32, u32)> = Vec::with_capacity(inline.len());
        let (text, file_start): (Arc<str>, usize) = match (inline.is_empty(), file_text) {
            (true, Some(t)) => (t.clone(), 0),
            (_, file) => {
                let mut s = String::new();
                for t in inline {
                    let t = t.trim();
                    spans.push((s.len() as u32, t.len() as u32));
                    s.push_str(t);
                }
                let file_start = s.len();
                if let Some(f) = file {
                    s.push_str(f);
                }
                (s.into(), file_start)
            }
        };
        if file_text.is_some() {
            let base = text.as_ptr() as usize;
            spans.extend(
                text[file_start..]
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| ((l.as_ptr() as usize - base) as u32, l.len() as u32)),
            );
        }
        let name = |&(s, l): &(u32, u32)| &text[s as usize..(s + l) as usize];
        let hasher = foldhash::fast::RandomState::default();
        let mut slots = HashTable::with_capacity(spans.len());
        for span in spans {
            let n = name(&span);
            let h = hasher.hash_one(n);
            if slots.find(h, |x| name(x) == n).is_none() {
                slots.insert_unique(h, span, |x| hasher.hash_one(name(x)));
            }
        }
        TenantSet {
            text,
            slots,
            hasher,
        }
    }

    /// Whether `name` is one of the tenants.
    #[inline]
    pub(super) fn contains(&self, name: &str) -> bool {
        let h = self.hasher.hash_one(name);
        self.slots
            .find(h, |&(s, l)| {
                l as usize == name.len() && &self.text[s as usize..(s + l) as usize] == name
            })
            .is_some()
    }

    /// How many distinct names.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the names are slices of `text` (no copy of them was made).
    #[cfg(test)]
    pub(super) fn shares(&self, text: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.text, text)
    }
}

#[cfg(test)]
mod tests {
    use super::TenantSet;
    use std::sync::Arc;

    #[test]
    fn names_from_a_file_are_slices_of_its_text() {
        let file: Arc<str> = "# beta tenants\nacme\n  globex  \n\nacme\ninitech\n".into();
        let s = TenantSet::new(&[], Some(&file));
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
        let s = TenantSet::new(&[" umbrella ".into(), "acme".into()], Some(&file));
        assert!(!s.shares(&file));
        assert_eq!(s.len(), 3);
        for t in ["umbrella", "acme", "globex"] {
            assert!(s.contains(t), "{t}");
        }
        assert!(!s.contains(" umbrella "));
        // An inline name is taken whole, even one that would be a comment in a file.
        let odd = TenantSet::new(&["#vip".into()], None);
        assert!(odd.contains("#vip"));
        let only_inline = TenantSet::new(&["a".into(), "b".into()], None);
        assert!(
            only_inline.contains("a") && only_inline.contains("b") && !only_inline.contains("c")
        );
        assert_eq!(TenantSet::new(&[], None).len(), 0);
        assert!(!TenantSet::new(&[], None).contains(""));
    }

    #[test]
    fn a_hundred_thousand_names_are_all_found_and_others_not() {
        let text: String = (0..200_000)
            .step_by(2)
            .map(|i| format!("tenant-{i}\n"))
            .collect();
        let file: Arc<str> = text.into();
        let s = TenantSet::new(&[], Some(&file));
        assert_eq!(s.len(), 100_000);
        for i in 0..200_000 {
            assert_eq!(s.contains(&format!("tenant-{i}")), i % 2 == 0, "tenant-{i}");
        }
    }
}
