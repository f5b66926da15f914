//! End-to-end tests of the gateway's admin API for rule changes: tokens and scopes, refused
//! input, whole-rule `PUT`s and single-entry `PATCH`es, each in force when it returns.

mod common;

use common::*;
use serde_json::json;

#[test]
fn admin_auth_and_invalid_rules() {
    let s = setup(ROUTE);
    let c = client();
    let bare = bare_client();
    let rules = json!([{ "name": "all", "pool": "gray" }]);
    let r = bare
        .put(s.gw.admin_url("/admin/v1/routes/api/rules"))
        .json(&json!({"rules": rules}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        set_rules(&c, &s.gw, "wrong-token-xyz", rules.clone()).0,
        401
    );
    assert_eq!(set_rules(&c, &s.gw, VIEWER, rules.clone()).0, 403);
    assert_eq!(
        bare.get(s.gw.admin_url("/admin/v1/routes"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    // Invalid: unknown pool, bad CIDR, percent out of range. Refused with the reason;
    // the old rules keep serving.
    for (bad, why) in [
        (
            json!([{ "name": "x", "pool": "nope" }]),
            "unknown pool `nope`",
        ),
        (
            json!([{ "name": "x", "pool": "gray", "cidrs": ["10.0.0.300/8"] }]),
            "bad CIDR",
        ),
        (
            json!([{ "name": "x", "pool": "gray", "percent": 150 }]),
            "outside 0-100",
        ),
        // Reading files through the API: /dev/zero never ends, /etc/shadow is an oracle.
        (
            json!([{ "name": "x", "pool": "gray", "tenants_file": "/dev/zero" }]),
            "only in the config file",
        ),
        (
            json!([{ "name": "x", "pool": "gray", "tenants_file": "../../etc/shadow" }]),
            "only in the config file",
        ),
    ] {
        let (st, body) = set_rules(&c, &s.gw, ADMIN, bad);
        assert_eq!(st, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    let (_, up, _, _) = get(&c, &s.gw.url("/"), &[("x-tenant-id", "acme")]);
    assert_eq!(up, "gray-1", "old rules still serve");
    let (_, up, _, _) = get(&c, &s.gw.url("/"), &[("x-tenant-id", "zzz")]);
    assert_eq!(up, "stable-1");
    // A valid change by an in-scope release manager, then a rollback to v1.
    assert_eq!(set_rules(&c, &s.gw, RM_PROD, rules).0, 200);
    let (_, up, _, _) = get(&c, &s.gw.url("/"), &[("x-tenant-id", "zzz")]);
    assert_eq!(up, "gray-1");
    let r = c
        .post(s.gw.admin_url("/admin/v1/rollback"))
        .bearer_auth(RM_PROD)
        .json(&json!({"version": 1, "reason": "errors up"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["change"]["kind"], "rollback");
    assert_eq!(v["change"]["to_version"], 3);
    let (_, up, _, _) = get(&c, &s.gw.url("/"), &[("x-tenant-id", "zzz")]);
    assert_eq!(up, "stable-1");
}

/// `PATCH` one rule's entries as `token`; the status and the JSON answer.
fn patch_rule(
    c: &reqwest::blocking::Client,
    gw: &Gateway,
    token: &str,
    rule: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c
        .patch(gw.admin_url(&format!("/admin/v1/routes/api/rules/{rule}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

#[test]
fn single_tenants_and_cidrs_move_without_resending_the_rules() {
    let s = setup(ROUTE);
    let c = client();
    let up = |tenant: &str| get(&c, &s.gw.url("/"), &[("x-tenant-id", tenant)]).1;
    let up_from = |ip: &str| get(&c, &s.gw.url("/"), &[("x-forwarded-for", ip)]).1;
    assert_eq!(
        (up("acme").as_str(), up("initech").as_str()),
        ("gray-1", "stable-1")
    );
    // Move initech in and acme out in one call: one version, audited as a rule change.
    let (st, v) = patch_rule(
        &c,
        &s.gw,
        RM_PROD,
        "beta",
        json!({"add_tenants": ["initech"], "remove_tenants": ["acme"], "reason": "swap"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["change"]["kind"], "gray_rules");
    assert_eq!(v["change"]["to_version"], 2);
    assert!(
        v["change"]["summary"].as_str().unwrap().contains("swap"),
        "{v}"
    );
    // In force when the call returns.
    assert_eq!(
        (up("acme").as_str(), up("initech").as_str()),
        ("stable-1", "gray-1")
    );
    // CIDRs the same way; the other rule's tenants are untouched.
    let (st, v) = patch_rule(
        &c,
        &s.gw,
        RM_PROD,
        "office",
        json!({"add_cidrs": ["11.0.0.0/8"]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(up_from("11.2.3.4"), "gray-1");
    assert_eq!(up("initech"), "gray-1");
    let routes = || -> serde_json::Value {
        c.get(s.gw.admin_url("/admin/v1/routes"))
            .bearer_auth(RM_PROD)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let v = routes();
    let rules = &v["routes"][0]["gray_rules"];
    assert_eq!(rules[0]["tenants"], json!(["initech"]));
    assert_eq!(rules[1]["cidrs"], json!(["10.0.0.0/8", "11.0.0.0/8"]));
    // A retry that changes nothing makes no version; bad input changes nothing.
    for (rule, body, status, why) in [
        (
            "beta",
            json!({"add_tenants": ["initech"]}),
            400,
            "nothing to change",
        ),
        (
            "office",
            json!({"add_cidrs": ["11.0.0.0/33"]}),
            400,
            "bad CIDR",
        ),
        ("nope", json!({"add_tenants": ["x"]}), 404, "rule nope"),
        // Emptying the list would make the rule match every tenant.
        (
            "beta",
            json!({"remove_tenants": ["initech"]}),
            400,
            "match every tenant",
        ),
        ("beta", json!({"add_tenant": ["x"]}), 400, "unknown field"),
    ] {
        let (st, v) = patch_rule(&c, &s.gw, RM_PROD, rule, body);
        assert_eq!(st, status, "{v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(v["version"], 3);
    assert_eq!(routes()["version"], 3, "refused patches made no version");
    // The same scope and roles as a whole change.
    let (st, _) = patch_rule(&c, &s.gw, VIEWER, "beta", json!({"add_tenants": ["x"]}));
    assert_eq!(st, 403);
    let (st, _) = patch_rule(
        &c,
        &s.gw,
        "wrong-token-xyz",
        "beta",
        json!({"add_tenants": ["x"]}),
    );
    assert_eq!(st, 401);
}

#[test]
fn release_manager_scope_is_enforced() {
    let route = ROUTE.replace("env = \"prod\"", "env = \"staging\"");
    let s = setup(&route);
    let c = client();
    let (st, body) = set_rules(&c, &s.gw, RM_PROD, json!([]));
    assert_eq!(st, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("may not change"),
        "{body}"
    );
}

/// `apus-gateway`, the gateway-only binary a fleet node runs, is `apus gateway`: it routes
/// and tags, guards its admin API with the same tokens and puts a change in force when the
/// call returns; and it carries none of the other roles (a fraction of `apus`'s size).
#[test]
fn the_slim_gateway_binary_routes_tags_and_takes_changes() {
    let (s1, g1) = (free_port(), free_port());
    let _ups = [upstream(s1, "stable-1"), upstream(g1, "gray-1")];
    let gw = Gateway::start_slim(&format!("{}{}", pools(&[s1], &[g1], 200), ROUTE));
    let c = client();
    let (st, up, tag, body) = get(&c, &gw.url("/orders"), &[("x-tenant-id", "acme")]);
    assert_eq!((st, up.as_str(), tag.as_str()), (200, "gray-1", "gray"));
    assert_eq!(body["baggage"], "env=gray");
    let (_, up, _, _) = get(&c, &gw.url("/orders"), &[("x-tenant-id", "initech")]);
    assert_eq!(up, "stable-1");
    let rules = json!([{ "name": "beta", "pool": "gray", "tenants": ["initech"] }]);
    assert_eq!(set_rules(&c, &gw, "wrong-token-xyz", rules.clone()).0, 401);
    assert_eq!(set_rules(&c, &gw, ADMIN, rules).0, 200);
    let (_, up, _, _) = get(&c, &gw.url("/orders"), &[("x-tenant-id", "initech")]);
    assert_eq!(up, "gray-1", "in force when the call returned");
    let size = |p: &str| std::fs::metadata(p).unwrap().len();
    assert!(
        size(GATEWAY_BIN) * 4 < size(BIN),
        "apus-gateway ({} bytes) links more than the gateway: apus is {} bytes",
        size(GATEWAY_BIN),
        size(BIN)
    );
}
