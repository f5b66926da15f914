#!/usr/bin/env bash
# Config change notification latency: N clients long-poll one file through `apus gateway`
# (signed requests, as `apus config watch` sends them); a release is published; each
# client, once notified, fetches the new content. Latency is from the publish call
# returning to a client holding the new content. Also: the gateway's memory per idle
# long-poll connection (RSS with the clients holding, minus before, over N, in the first
# round: later rounds reuse the memory the first one freed).
#
#   benches/config_notify.sh [CLIENTS] [ROUNDS]
#
# Ends with: RESULT config_notify clients=… p50_ms=… p99_ms=… rss_per_conn_kb=…
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
ROUNDS=${2:-3}
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet --bin apus
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-config-bench-XXXX)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export W BIN N ROUNDS
exec python3 - <<'PY'
import asyncio, base64, hashlib, hmac, json, os, socket, statistics, subprocess, time, urllib.request

W, BIN, N, ROUNDS = os.environ["W"], os.environ["BIN"], int(os.environ["N"]), int(os.environ["ROUNDS"])
TOKEN, KEY, SECRET = "bench-admin-token-0001", "bench", "bench-secret-0123456789"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

gw, admin, dead = free_port(), free_port(), free_port()
open(f"{W}/gateway.toml", "w").write(f'''
listen = "127.0.0.1:{gw}"
admin_listen = "127.0.0.1:{admin}"
config_long_poll_secs = 120
[[config_access_keys]]
key = "{KEY}"
secret = "{SECRET}"
project = "bench"
env = "prod"
[[pools]]
name = "stable"
servers = ["127.0.0.1:{dead}"]
[[routes]]
name = "api"
project = "bench"
env = "prod"
stable_pool = "stable"
[[tokens]]
name = "bench"
token = "{TOKEN}"
role = "admin"
''')
proc = subprocess.Popen([BIN, "gateway", "--config", f"{W}/gateway.toml", "--data-dir", f"{W}/data"],
                        stdout=subprocess.DEVNULL, stderr=open(f"{W}/gateway.log", "w"),
                        env={**os.environ, "APUS_LOG": "warn"})
BASE = f"http://127.0.0.1:{admin}"
FILE = "bench/prod/web/app.properties"

def call(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")

for _ in range(200):
    try:
        urllib.request.urlopen(BASE + "/health", timeout=1); break
    except Exception:
        time.sleep(0.1)

def publish(v):
    call("PUT", f"/admin/v1/config/files/{FILE}", {"content": f"version = {v}\n", "content_type": "properties"})
    call("POST", f"/admin/v1/config/publish/{FILE}", {"reason": f"bench {v}"})

def rss_kb():
    for l in open(f"/proc/{proc.pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def signed(pq):
    ts = str(int(time.time() * 1000))
    sig = base64.b64encode(hmac.new(SECRET.encode(), (ts + "\n" + pq).encode(), hashlib.sha256).digest()).decode()
    return f"authorization: Apus {KEY}:{sig}\r\ntimestamp: {ts}\r\n"

async def get(reader, writer, pq):
    writer.write(f"GET {pq} HTTP/1.1\r\nhost: x\r\n{signed(pq)}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    length = 0
    for l in head.split(b"\r\n"):
        if l.lower().startswith(b"content-length:"):
            length = int(l.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return status, body

async def client(i, key, holding, published, out, want):
    reader, writer = await asyncio.open_connection("127.0.0.1", admin)
    q = f"/config/v1/notifications?project=bench&env=prod&pool=web&watch=app.properties%40{key}&instance=i{i}&timeout=120"
    task = asyncio.ensure_future(get(reader, writer, q))
    holding.append(i)
    status, _ = await task
    if status != 200:
        out.append(None); return
    st, body = await get(reader, writer, f"/config/v1/{FILE}?instance=i{i}")
    content = json.loads(body)["content"]
    t = time.perf_counter()
    writer.close()
    out.append((t - published[0]) * 1000 if want in content else None)

async def round_(v, key):
    holding, published, out = [], [0.0], []
    before = rss_kb()
    tasks = [asyncio.ensure_future(client(i, key, holding, published, out, f"version = {v}")) for i in range(N)]
    while len(holding) < N:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    held = rss_kb()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, publish, v)
    published[0] = time.perf_counter()
    await asyncio.gather(*tasks)
    return out, (held - before) / N

publish(0)
p50s, p99s, rss = [], [], []
for r in range(1, ROUNDS + 1):
    key = call("GET", f"/admin/v1/config/files/{FILE}")["current"]["key"]
    out, per = asyncio.run(round_(r, key))
    ok = sorted(x for x in out if x is not None)
    if len(ok) < N:
        raise SystemExit(f"round {r}: {N - len(ok)} clients missed the release")
    p50, p99 = ok[len(ok) // 2], ok[min(len(ok) - 1, int(len(ok) * 0.99))]
    print(f"round {r}: clients={N} p50_ms={p50:.1f} p99_ms={p99:.1f} max_ms={ok[-1]:.1f} rss_per_conn_kb={per:.1f}", flush=True)
    p50s.append(p50); p99s.append(p99); rss.append(per)
proc.terminate(); proc.wait()
# Memory: the first round's growth (a fresh process; later rounds reuse what it freed).
print(f"RESULT config_notify clients={N} p50_ms={statistics.median(p50s):.1f} p99_ms={statistics.median(p99s):.1f} rss_per_conn_kb={rss[0]:.1f}")
PY
