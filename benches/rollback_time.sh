#!/usr/bin/env bash
# Time from a bad rollout step taking effect to the rollback being in force, under ~1,000
# requests/s through the gateway (apus run, embedded store), and false rollbacks of a good
# build. Each run starts a rollout (10 % → analysis ×3 → 50 % → analysis ×3 → 100 %) with
# its own tag, on a gray pool whose build answers 500 to everyone (bad) or works (good).
#
#   benches/rollback_time.sh [BAD_RUNS] [GOOD_RUNS] [INTERVAL]
#
# Ends with: RESULT rollback_time runs=… p50_s=… max_s=… false_rollbacks=… bad_requests=…
#            bad_share=…
set -euo pipefail
cd "$(dirname "$0")/.."
BAD=${1:-5}
GOOD=${2:-5}
INTERVAL=${3:-5s}
scripts/setup >/dev/null
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet --bin apus
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-rollback-bench-XXXX)
export W BIN BAD GOOD INTERVAL
exec python3 - <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, threading, time

W, BIN = os.environ["W"], os.environ["BIN"]
BAD, GOOD, INTERVAL = int(os.environ["BAD"]), int(os.environ["GOOD"]), os.environ["INTERVAL"]
TOKEN = "bench-admin-token-0001"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

ports = {k: free_port() for k in ["gw", "admin", "ing", "q", "stable", "good", "bad"]}
procs = []
def up(name, port, *extra):
    procs.append(subprocess.Popen([BIN, "upstream", "--listen", f"127.0.0.1:{port}", "--name", name, *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
up("stable-1", ports["stable"]); up("gray-good", ports["good"]); up("gray-bad", ports["bad"], "--fail-tenant", "*")
open(f"{W}/apus.toml", "w").write(f'''
[ingest]
listen = "127.0.0.1:{ports["ing"]}"
[query]
listen = "127.0.0.1:{ports["q"]}"
[gateway]
listen = "127.0.0.1:{ports["gw"]}"
admin_listen = "127.0.0.1:{ports["admin"]}"
access_log = "in-process"
[[gateway.pools]]
name = "stable"
servers = ["127.0.0.1:{ports["stable"]}"]
[[gateway.pools]]
name = "good"
servers = ["127.0.0.1:{ports["good"]}"]
[[gateway.pools]]
name = "bad"
servers = ["127.0.0.1:{ports["bad"]}"]
[[gateway.routes]]
name = "api"
project = "bench"
env = "prod"
stable_pool = "stable"
tenant_sources = [{{ header = "x-tenant-id" }}]
[[gateway.tokens]]
name = "bench"
token = "{TOKEN}"
role = "admin"
''')
procs.append(subprocess.Popen([BIN, "run", "--config", f"{W}/apus.toml", "--data-dir", f"{W}/data"],
                              stdout=subprocess.DEVNULL, stderr=open(f"{W}/apus.log", "w"),
                              env=dict(os.environ, APUS_LOG="info")))
def api(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", ports["admin"], timeout=10)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    return r.status, (json.loads(data) if data else None)
for _ in range(300):
    try:
        if api("GET", "/admin/v1/status")[0] == 200: break
    except Exception: pass
    time.sleep(0.1)

# --- ~1,000 requests/s from 10,000 tenants -------------------------------------------------
stop, counts, lock = threading.Event(), {"ok": 0, "bad": 0}, threading.Lock()
def load(k):
    c = http.client.HTTPConnection("127.0.0.1", ports["gw"], timeout=10)
    i, nxt = k, time.monotonic()
    while not stop.is_set():
        try:
            c.request("GET", "/pay", headers={"x-tenant-id": f"t{i % 10000}"})
            r = c.getresponse(); r.read()
            with lock: counts["bad" if r.status >= 500 else "ok"] += 1
        except Exception:
            c = http.client.HTTPConnection("127.0.0.1", ports["gw"], timeout=10)
        i += 4
        nxt += 0.004
        time.sleep(max(0, nxt - time.monotonic()))
threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(4)]
for t in threads: t.start()
time.sleep(3)

def rollout(name, pool):
    return {"reason": "bench", "rollout": {
        "name": name, "route": "api", "pool": pool, "tag": name,
        "steps": [{"set_weight": 10}, {"analysis": {"count": 3}}, {"set_weight": 50},
                  {"analysis": {"count": 3}}, {"set_weight": 100}],
        "analysis": {"interval": INTERVAL, "window": "30s", "failure_limit": 0, "min_requests": 50,
                     "max_error_rate": 0.05, "max_error_increase": 0.02, "alpha": 0.01}}}

def phase(name):
    return api("GET", "/admin/v1/rollouts")[1]["rollouts"][name]["progress"]

times, false_rb, bad_req, bad_total, inconclusive = [], 0, 0, 0, 0
runs = [("bad", i) for i in range(BAD)] + [("good", i) for i in range(GOOD)]
for kind, i in runs:
    name = f"{kind}{i}"
    api("PUT", "/admin/v1/routes/api/rules", {"rules": [], "reason": "bench reset"})
    time.sleep(0.5)
    with lock: before = dict(counts)
    st, _ = api("POST", "/admin/v1/rollouts", rollout(name, kind))
    assert st == 200, st
    t0 = time.monotonic()
    while True:
        p = phase(name)
        if p["phase"] != "progressing": break
        if time.monotonic() - t0 > 300: break
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    with lock: after = dict(counts)
    if kind == "bad":
        if p["phase"] == "aborted":
            times.append(elapsed)
            bad_req += after["bad"] - before["bad"]
            bad_total += (after["bad"] + after["ok"]) - (before["bad"] + before["ok"])
        print(f"{name}: {p['phase']} after {elapsed:.1f} s, {after['bad'] - before['bad']} failed requests", file=sys.stderr)
    else:
        if p["phase"] == "aborted": false_rb += 1
        if p["phase"] == "paused": inconclusive += 1; api("POST", f"/admin/v1/rollouts/{name}/abort", {"reason": "bench"})
        print(f"{name}: {p['phase']} after {elapsed:.1f} s ({p.get('reason', '')[:200]})", file=sys.stderr)
stop.set()
rate = (counts["ok"] + counts["bad"]) / max(1e-9, time.monotonic() - t0)
for p in procs: p.kill()
p50 = statistics.median(times) if times else float("nan")
mx = max(times) if times else float("nan")
print(f"load: ~{sum(counts.values())} requests; good runs paused as inconclusive: {inconclusive}")
print(f"RESULT rollback_time runs={len(times)} p50_s={p50:.1f} max_s={mx:.1f} false_rollbacks={false_rb} "
      f"bad_requests={bad_req} bad_share={bad_req / max(1, bad_total):.4f}")
PY
