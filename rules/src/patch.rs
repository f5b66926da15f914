//! Moving single entries into and out of one gray rule (the admin API's `PATCH`): what
//! HAProxy's `add map`/`del map` does, on the rule spec, so the change is then validated,
//! committed and audited like any other.
//!
//! Entries are compared the way the rule compiles them: tenants trimmed, CIDRs as the
//! networks they denote (`10.0.0.1/8` is `10.0.0.0/8`, `1.2.3.4` is `1.2.3.4/32`).

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::GrayRuleSpec;

/// Entries to add to and remove from one list of a rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entries<'a> {
    pub add: &'a [String],
    pub remove: &'a [String],
}

impl GrayRuleSpec {
    /// Remove and add tenants and CIDRs; whether the rule changed. An entry both removed
    /// and added stays where it is; adding a listed entry or removing an absent one
    /// changes nothing. Refused (with the reason, the rule untouched): a bad CIDR or an
    /// empty tenant, and emptying a list, which would drop that condition and make the
    /// rule match every tenant (or address): delete the rule instead.
    pub fn edit_entries(
        &mut self,
        tenants: Entries<'_>,
        cidrs: Entries<'_>,
    ) -> Result<bool, String> {
        let mut t = self.tenants.clone();
        let mut c = self.cidrs.clone();
        let changed = edit(&mut t, tenants, tenant_key)? | edit(&mut c, cidrs, cidr_key)?;
        let emptied = |old: &Vec<String>, new: &Vec<String>| !old.is_empty() && new.is_empty();
        if emptied(&self.tenants, &t) && self.tenants_file.is_none() {
            return Err(format!(
                "removing the last tenant of rule `{}` would make it match every tenant; \
                 replace the route's rules without it instead",
                self.name
            ));
        }
        if emptied(&self.cidrs, &c) {
            return Err(format!(
                "removing the last CIDR of rule `{}` would make it match every address; \
                 replace the route's rules without it instead",
                self.name
            ));
        }
        self.tenants = t;
        self.cidrs = c;
        Ok(changed)
    }
}

fn tenant_key(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("a tenant may not be empty".into());
    }
    Ok(t.to_string())
}

fn cidr_key(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("bad CIDR `{t}`"))
}

/// Apply `e` to `list` by `key`; whether it changed. Copies the list only if it does.
fn edit<K: Eq + Hash>(
    list: &mut Arc<Vec<String>>,
    e: Entries<'_>,
    key: impl Fn(&str) -> Result<K, String>,
) -> Result<bool, String> {
    let add = e
        .add
        .iter()
        .map(|a| Ok((key(a)?, a)))
        .collect::<Result<Vec<_>, String>>()?;
    let remove = e
        .remove
        .iter()
        .map(|r| key(r))
        .collect::<Result<HashSet<K>, String>>()?;
    let adding: HashSet<&K> = add.iter().map(|(k, _)| k).collect();
    let gone: HashSet<&K> = remove.iter().filter(|k| !adding.contains(k)).collect();
    // Listed entries compiled before, so their keys are valid; one that is not is kept.
    let keys: Vec<Option<K>> = list.iter().map(|s| key(s).ok()).collect();
    let listed: HashSet<&K> = keys.iter().flatten().collect();
    let mut seen = HashSet::new();
    let new: Vec<String> = add
        .iter()
        .filter(|(k, _)| !listed.contains(k) && seen.insert(k))
        .map(|(_, a)| a.trim().to_string())
        .collect();
    let goes = |k: &Option<K>| k.as_ref().is_some_and(|k| gone.contains(k));
    if new.is_empty() && !keys.iter().any(goes) {
        return Ok(false);
    }
    let v = Arc::make_mut(list);
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        !goes(&keys[i - 1])
    });
    v.extend(new);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn rule(tenants: &[&str], cidrs: &[&str]) -> GrayRuleSpec {
        let mut r: GrayRuleSpec =
            serde_json::from_str(r#"{"name": "beta", "pool": "gray"}"#).unwrap();
        r.tenants = Arc::new(strings(tenants));
        r.cidrs = Arc::new(strings(cidrs));
        r
    }
    fn e<'a>(add: &'a [String], remove: &'a [String]) -> Entries<'a> {
        Entries { add, remove }
    }

    #[test]
    fn entries_come_and_go_once_and_the_list_is_copied_only_on_change() {
        let mut r = rule(&["a", "b", "c"], &[]);
        let old = r.tenants.clone();
        let none = Entries::default();
        // Listed already (also after trimming), duplicated, absent from the removal:
        // nothing changes, nothing is copied.
        let (add, rm) = (strings(&["a", " b ", "b"]), strings(&["z"]));
        assert_eq!(r.edit_entries(e(&add, &rm), none), Ok(false));
        assert!(Arc::ptr_eq(&r.tenants, &old));
        // Removed and added at once: stays where it is, no change.
        let both = strings(&["b"]);
        assert_eq!(r.edit_entries(e(&both, &both), none), Ok(false));
        // Removed, then new ones appended once; the old version is untouched.
        let (add, rm) = (strings(&["d", "d ", "a"]), strings(&["b"]));
        assert_eq!(r.edit_entries(e(&add, &rm), none), Ok(true));
        assert_eq!(*r.tenants, strings(&["a", "c", "d"]));
        assert_eq!(*old, strings(&["a", "b", "c"]));
    }

    #[test]
    fn cidrs_compare_as_networks_and_bad_input_leaves_the_rule_alone() {
        let mut r = rule(&["t"], &["10.0.0.0/8", "1.2.3.4"]);
        let none = Entries::default();
        let (add, rm) = (strings(&["10.1.2.3/8"]), strings(&["1.2.3.4/32"]));
        assert_eq!(r.edit_entries(none, e(&add, &rm)), Ok(true));
        assert_eq!(*r.cidrs, strings(&["10.0.0.0/8"]));
        let before = r.clone();
        let bad = strings(&["10.0.0.300/8"]);
        assert!(r
            .edit_entries(none, e(&bad, &[]))
            .unwrap_err()
            .contains("bad CIDR"));
        let blank = strings(&[" "]);
        assert!(r.edit_entries(e(&blank, &[]), none).is_err());
        // Emptying a list would drop its condition: every address or tenant would match.
        let last = strings(&["10.0.0.0/8"]);
        let err = r.edit_entries(none, e(&[], &last)).unwrap_err();
        assert!(err.contains("match every address"), "{err}");
        let t = strings(&["t"]);
        let err = r.edit_entries(e(&[], &t), none).unwrap_err();
        assert!(err.contains("match every tenant"), "{err}");
        assert_eq!(r, before);
        // With a tenants file behind it, the inline list may empty.
        r.tenants_file = Some("tenants.txt".into());
        assert_eq!(r.edit_entries(e(&[], &t), none), Ok(true));
    }
}
