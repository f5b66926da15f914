//! Tenant ID extraction from a borrowed request, without allocation.

use crate::matcher::Headers;
use crate::model::TenantSource;

/// Value of cookie `name` in a `Cookie` header value.
pub(crate) fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// Value of query parameter `name` (not percent-decoded: tenant IDs are plain tokens).
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The tenant ID of a request: the first non-empty value among `sources`, in order.
pub fn extract_tenant<'a>(
    sources: &[TenantSource],
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a dyn Headers,
) -> Option<&'a str> {
    sources.iter().find_map(|s| {
        match s {
            TenantSource::Header(h) => headers.get(h),
            TenantSource::Query(q) => query.and_then(|qs| query_value(qs, q)),
            TenantSource::Cookie(c) => headers.get("cookie").and_then(|v| cookie_value(v, c)),
            TenantSource::PathSegment(i) => path.split('/').filter(|s| !s.is_empty()).nth(*i),
        }
        .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<(&'static str, &'static str)>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn sources_in_order() {
        let srcs = vec![
            TenantSource::Header("x-tenant-id".into()),
            TenantSource::Query("orgId".into()),
            TenantSource::Cookie("tenant".into()),
            TenantSource::PathSegment(1),
        ];
        let h = H(vec![("Cookie", "a=1; tenant=c9; b=2")]);
        assert_eq!(
            extract_tenant(&srcs, "/t/p7/x", Some("x=1&orgId=q5"), &h),
            Some("q5")
        );
        assert_eq!(
            extract_tenant(&srcs, "/t/p7/x", Some("orgId="), &h),
            Some("c9")
        );
        let h = H(vec![("X-Tenant-Id", "h1")]);
        assert_eq!(extract_tenant(&srcs, "/t/p7", None, &h), Some("h1"));
        let h = H(vec![]);
        assert_eq!(extract_tenant(&srcs, "/t/p7", None, &h), Some("p7"));
        assert_eq!(extract_tenant(&srcs, "/t", None, &h), None);
    }
}
