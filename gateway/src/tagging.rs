//! Request tagging, pure functions: request IDs, the W3C `baggage` merge, and the client
//! address behind trusted proxies. The proxy calls these; they do no IO.

use std::net::IpAddr;

use apus_rules::CidrSet;

/// Whether an incoming `x-request-id` is safe to keep: 1-128 chars of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh request ID (UUID v4, 32 hex digits without dashes), written into `buf`: no
/// allocation on the request path.
pub fn write_request_id(buf: &mut [u8; 32]) -> &str {
    uuid::Uuid::new_v4().simple().encode_lower(buf)
}

/// Largest baggage header we keep (W3C limit).
const MAX_BAGGAGE: usize = 8192;

/// Merge `key=value` into an existing W3C baggage header: entries with the same key are
/// replaced, the others (and their properties) are kept in order.
pub fn merge_baggage(existing: Option<&str>, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(existing.map_or(0, str::len) + key.len() + value.len() + 2);
    if let Some(e) = existing.filter(|e| e.len() <= MAX_BAGGAGE) {
        for member in e.split(',') {
            let m = member.trim();
            if m.is_empty() {
                continue;
            }
            let k = m.split(['=', ';']).next().unwrap_or("").trim();
            if k == key {
                continue;
            }
            out.push_str(m);
            out.push(',');
        }
    }
    out.push_str(key);
    out.push('=');
    out.push_str(value);
    out
}

/// The client address: the socket peer, unless the peer is a trusted proxy and sent
/// `X-Forwarded-For`, in which case the right-most untrusted address in that list.
/// Every `X-Forwarded-For` line of a request, joined in order (RFC 9110: repeated fields
/// are one comma-separated list). Reading only the first line would let a client's own
/// line win over the one a trusted proxy appended. A line that is not text becomes a
/// malformed hop, so nothing left of it is believed.
pub fn forwarded_for<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out: Option<String> = None;
    for l in lines {
        let l = std::str::from_utf8(l).unwrap_or("?");
        match &mut out {
            Some(s) => {
                s.push(',');
                s.push_str(l);
            }
            None => out = Some(l.to_string()),
        }
    }
    out
}

pub fn client_ip(peer: IpAddr, xff: Option<&str>, trusted: &CidrSet) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let Some(xff) = xff else { return peer };
    let mut last_valid = None;
    for part in xff.rsplit(',') {
        let Ok(ip) = part.trim().parse::<IpAddr>() else {
            // A malformed hop: stop believing anything further left.
            break;
        };
        last_valid = Some(ip);
        if !trusted.contains(ip) {
            return ip;
        }
    }
    last_valid.unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"a".repeat(129)));
        let mut buf = [0u8; 32];
        let id = write_request_id(&mut buf);
        assert_eq!(id.len(), 32);
        assert!(valid_request_id(id));
    }

    #[test]
    fn baggage_merge() {
        assert_eq!(merge_baggage(None, "env", "gray"), "env=gray");
        assert_eq!(
            merge_baggage(Some("userId=42, env=stable;p=1,foo=bar"), "env", "gray"),
            "userId=42,foo=bar,env=gray"
        );
        assert_eq!(merge_baggage(Some(" , "), "env", "gray"), "env=gray");
        assert_eq!(merge_baggage(Some(&"x".repeat(9000)), "env", "g"), "env=g");
    }

    #[test]
    fn client_ip_through_trusted_proxies() {
        let trusted = CidrSet::new(&[
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let ext: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(
            client_ip(lo, Some("198.51.100.1, 203.0.113.5, 10.1.1.1"), &trusted),
            ext
        );
        assert_eq!(client_ip(lo, None, &trusted), lo);
        assert_eq!(client_ip(lo, Some("garbage"), &trusted), lo);
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(ext, Some("1.2.3.4"), &trusted), ext);
        assert_eq!(
            client_ip(lo, Some("10.0.0.2"), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(lo, Some("1.2.3.4"), &CidrSet::default()), lo);
        // Two header lines: the client's own, then the one our proxy appended.
        let lines = [&b"6.6.6.6"[..], &b"203.0.113.5"[..]];
        let joined = forwarded_for(lines.into_iter()).unwrap();
        assert_eq!(client_ip(lo, Some(&joined), &trusted), ext);
        let bad = [&b"203.0.113.5"[..], &b"\xff"[..]];
        let joined = forwarded_for(bad.into_iter()).unwrap();
        assert_eq!(client_ip(lo, Some(&joined), &trusted), lo);
        assert_eq!(forwarded_for(std::iter::empty()), None);
    }
}
