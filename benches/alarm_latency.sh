#!/usr/bin/env bash
# Event-to-notification latency of alarms: from the moment ingest acknowledges the
# access-log rows that cross a threshold to the webhook request arriving, with 100 rules
# over 1,000 label sets each while ingest takes background rows at >= 50k rows/s.
# Side by side, the same alarm through Prometheus (scraping Apus's /metrics every
# interval, evaluating its usual rule) and Alertmanager 0.25, with default and tuned
# settings (skipped, and said so, when `prometheus` is not installed).
#
#   benches/alarm_latency.sh [SAMPLES] [RATE_ROWS_PER_S]
#   GROUP_WAIT=0s (Apus's route group_wait, default 1s)  PROM_DEFAULTS=0 (skip the
#   Prometheus run with default intervals, which takes ~8 minutes)
#
# Ends with: RESULT alarm_latency rules=100 series=1000 p50_ms=… p99_ms=…
#            prometheus_default_p50_ms=… prometheus_tuned_p50_ms=…
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${1:-20}
RATE=${2:-50000}
scripts/setup >/dev/null
# The side-by-side peer: Prometheus (Debian's 2.42) in front of the Alertmanager.
if ! command -v prometheus >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null || true
  command -v systemctl >/dev/null && systemctl stop prometheus 2>/dev/null || true
fi
[ -n "${APUS_BIN:-}" ] || cargo build --release --quiet --bin apus
BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
W=$(mktemp -d /tmp/apus-alarm-bench-XXXX)
export W BIN SAMPLES RATE
exec python3 - <<'PY'
import http.client, http.server, json, os, random, shutil, signal, socket, statistics
import subprocess, sys, threading, time

W, BIN = os.environ["W"], os.environ["BIN"]
SAMPLES, RATE = int(os.environ["SAMPLES"]), int(os.environ["RATE"])
RULES, TENANTS = 100, 1000
TOKEN = "bench-admin-token-0001"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

# --- the webhook receiver: arrival times of firing alerts by tenant ----------------------
arrivals, lock = {}, threading.Lock()
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n) or b"{}")
        t = time.monotonic()
        with lock:
            for a in body.get("alerts", []):
                if a.get("status") == "firing":
                    key = (a["labels"].get("route") or a["labels"].get("r", ""), a["labels"].get("tenant", ""))
                    arrivals.setdefault(key, t)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
hook_port = free_port()
hook = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
threading.Thread(target=hook.serve_forever, daemon=True).start()

# --- apus run with 100 rules --------------------------------------------------------------
ports = {k: free_port() for k in ["gw", "admin", "ing", "q", "up"]}
os.makedirs(f"{W}/alarms")
with open(f"{W}/alarms/bench.toml", "w") as f:
    for i in range(RULES):
        f.write(f'''[[rule]]
name = "Errors{i}"
project = "bench"
env = "prod"
kind = "error_rate"
filter = {{ route = "r{i}" }}
group_by = ["route", "tenant"]
window = "30s"
min_requests = 5
condition = "> 0.5"
''')
with open(f"{W}/apus.toml", "w") as f:
    f.write(f'''
[ingest]
listen = "127.0.0.1:{ports["ing"]}"
[query]
listen = "127.0.0.1:{ports["q"]}"
[query.alarms]
rules_dir = "alarms"
[[query.alarms.receivers]]
name = "hook"
url = "http://127.0.0.1:{hook_port}/"
[query.alarms.route]
receiver = "hook"
group_by = ["alertname", "tenant"]
group_wait = "{os.environ.get("GROUP_WAIT", "1s")}"
[gateway]
listen = "127.0.0.1:{ports["gw"]}"
admin_listen = "127.0.0.1:{ports["admin"]}"
access_log = "off"
[[gateway.pools]]
name = "stable"
servers = ["127.0.0.1:{ports["up"]}"]
[[gateway.routes]]
name = "api"
project = "bench"
env = "prod"
stable_pool = "stable"
[[gateway.tokens]]
name = "bench"
token = "{TOKEN}"
role = "admin"
''')
log = open(f"{W}/apus.log", "w")
apus = subprocess.Popen([BIN, "run", "--config", f"{W}/apus.toml", "--data-dir", f"{W}/data"],
                        stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, APUS_LOG="warn"))
def cleanup(*_):
    for p in procs:
        try: p.kill()
        except Exception: pass
procs = [apus]
signal.signal(signal.SIGTERM, lambda *a: (cleanup(), sys.exit(1)))
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", ports["q"], timeout=1); c.request("GET", "/health")
        if c.getresponse().status == 200: break
    except Exception: time.sleep(0.1)

def post(conn, rows_text):
    conn.request("POST", "/ingest/v1/access", rows_text,
                 {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"})
    r = conn.getresponse(); r.read()
    return r.status

def row(ts, route, tenant, status):
    return ('{"ts":%d,"request_id":"","project":"bench","env":"prod","route":"%s","pool":"stable",'
            '"upstream":"","tag":"stable","tenant":"%s","client_ip":"","method":"GET","host":"",'
            '"path":"/","status":%d,"latency_us":1000,"upstream_latency_us":900,"bytes_in":0,"bytes_out":0}'
            % (ts, route, tenant, status))

# --- background load: healthy rows over 100 routes x 1000 tenants -------------------------
BATCH = 5000
template = "\n".join(row(0, f"r{random.randrange(RULES)}", f"t{random.randrange(TENANTS)}", 200)
                     .replace('"ts":0', '"ts":TS') for _ in range(BATCH))
stop, sent, rejected = threading.Event(), [0], [0]
def load(share):
    conn = http.client.HTTPConnection("127.0.0.1", ports["ing"], timeout=30)
    interval = BATCH / share
    nxt = time.monotonic()
    while not stop.is_set():
        body = template.replace("TS", str(int(time.time() * 1e6)))
        try:
            st = post(conn, body)
        except Exception:
            if stop.is_set(): return
            conn = http.client.HTTPConnection("127.0.0.1", ports["ing"], timeout=30)
            continue
        if st == 200: sent[0] += BATCH
        else: rejected[0] += 1
        nxt += interval
        time.sleep(max(0, nxt - time.monotonic()))
threads = [threading.Thread(target=load, args=(RATE / 2,), daemon=True) for _ in range(2)]
t0 = time.monotonic()
for t in threads: t.start()
time.sleep(8)  # warm up: every rule sees 1000 healthy label sets

# --- samples: a burst of errors for one (route, tenant); ack -> webhook -------------------
conn = http.client.HTTPConnection("127.0.0.1", ports["ing"], timeout=30)
lat = []
for i in range(SAMPLES):
    route, tenant = f"r{random.randrange(RULES)}", f"burst{i}"
    now = int(time.time() * 1e6)
    body = "\n".join(row(now, route, tenant, 500) for _ in range(20))
    assert post(conn, body) == 200
    acked = time.monotonic()
    deadline = acked + 30
    while time.monotonic() < deadline:
        with lock:
            at = arrivals.get((route, tenant))
        if at: break
        time.sleep(0.005)
    if at: lat.append((at - acked) * 1000)
    else: print(f"sample {i}: no webhook within 30 s", file=sys.stderr)
    time.sleep(0.5)
elapsed = time.monotonic() - t0
stop.set()
rate = sent[0] / elapsed
# evaluator CPU: the process's CPU seconds per 1k rows ingested (includes ingest itself)
cpu = sum(int(x) for x in open(f"/proc/{apus.pid}/stat").read().split()[13:15]) / os.sysconf("SC_CLK_TCK")
# the evaluator's own time: the sum of its signal queries (apus_alarm_eval_seconds)
eval_s = float("nan")
try:
    c = http.client.HTTPConnection("127.0.0.1", ports["q"], timeout=5); c.request("GET", "/metrics")
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith("apus_alarm_eval_seconds_sum"):
            eval_s = float(line.split()[-1])
except Exception as e:
    print(f"metrics: {e}", file=sys.stderr)
apus.kill()

def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
print(f"apus: samples={len(lat)}/{SAMPLES} p50_ms={p50:.0f} p99_ms={p99:.0f} "
      f"background_rows_per_s={rate:.0f} rejected_batches={rejected[0]} "
      f"process_cpu_ms_per_1k_rows={cpu / max(1, sent[0]) * 1e6:.2f} "
      f"evaluator_query_ms_per_1k_rows={eval_s / max(1, sent[0]) * 1e6:.2f}")

# --- Prometheus + Alertmanager: the same alarm the usual way --------------------------------
def prometheus_run(scrape, evaluate, group_wait, n):
    if not shutil.which("prometheus") or not shutil.which("prometheus-alertmanager"):
        return float("nan")
    d = f"{W}/prom-{scrape}"
    os.makedirs(d)
    amp, pp, up = free_port(), free_port(), free_port()
    arrivals.clear()
    # the target: a tiny exporter with a failing-requests counter per tenant, which the
    # bench bumps (as an application's /metrics would).
    counts, clock = {}, threading.Lock()
    class Exp(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with clock:
                body = "".join(f'app_requests_total{{tenant="{t}",code="500"}} {c}\n' for t, c in counts.items())
                body += 'app_requests_total{tenant="idle",code="200"} 1\n'
            b = body.encode(); self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
        def log_message(self, *a): pass
    exp = http.server.ThreadingHTTPServer(("127.0.0.1", up), Exp)
    threading.Thread(target=exp.serve_forever, daemon=True).start()
    open(f"{d}/am.yml", "w").write(f"route:\n  receiver: hook\n  group_by: [alertname, tenant]\n  group_wait: {group_wait}\n"
                                   f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n")
    # the usual range: four scrape intervals, at least a minute
    rng = f"{max(60, 4 * int(scrape.rstrip('s')))}s"
    open(f"{d}/rules.yml", "w").write("groups:\n  - name: bench\n    rules:\n      - alert: Errors\n"
                                      f"        expr: increase(app_requests_total{{code=\"500\"}}[{rng}]) > 5\n")
    open(f"{d}/prom.yml", "w").write(f"global:\n  scrape_interval: {scrape}\n  evaluation_interval: {evaluate}\n"
                                     f"rule_files: [{d}/rules.yml]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{amp}']\n"
                                     f"scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{up}']\n")
    am = subprocess.Popen(["prometheus-alertmanager", f"--config.file={d}/am.yml", f"--storage.path={d}/am",
                           f"--web.listen-address=127.0.0.1:{amp}", "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pr = subprocess.Popen(["prometheus", f"--config.file={d}/prom.yml", f"--storage.tsdb.path={d}/tsdb",
                           f"--web.listen-address=127.0.0.1:{pp}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.extend([am, pr])
    time.sleep(5)
    out = []
    for i in range(n):
        tenant = f"p{i}"
        with clock: counts[tenant] = 0
        # let a scrape see the zero first, so increase() has a baseline
        time.sleep(float(scrape.rstrip("s")) * 2 + 1)
        with clock: counts[tenant] = 20
        acked = time.monotonic()
        deadline = acked + 400
        while time.monotonic() < deadline:
            with lock:
                at = arrivals.get(("", tenant))
            if at: break
            time.sleep(0.01)
        if at: out.append((at - acked) * 1000)
    am.kill(); pr.kill(); exp.shutdown()
    return statistics.median(out) if out else float("nan")

tuned = prometheus_run("1s", "1s", "0s", 5)
print(f"prometheus tuned (scrape 1s, eval 1s, group_wait 0s): p50_ms={tuned:.0f}")
default = prometheus_run("60s", "60s", "30s", 2) if os.environ.get("PROM_DEFAULTS", "1") == "1" else float("nan")
print(f"prometheus defaults (scrape 1m, eval 1m, group_wait 30s): p50_ms={default:.0f}")
cleanup()
print(f"RESULT alarm_latency group_wait={os.environ.get('GROUP_WAIT', '1s')} rules={RULES} series={TENANTS} p50_ms={p50:.0f} p99_ms={p99:.0f} "
      f"prometheus_default_p50_ms={default:.0f} prometheus_tuned_p50_ms={tuned:.0f}")
PY
