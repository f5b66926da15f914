#!/usr/bin/env python3
"""Flip one gateway's routing once a second for SECS seconds, while wrk loads it (started by
benches/gateway_flips.sh), and measure each flip.

Each flip k moves tenant `probe-k` into the gray pool (and the previous flip's out), the way that
gateway is changed at run time:
  apus       PATCH /admin/v1/routes/api/rules/flip (the previous probe out, probe-k in; the
             `flip` rule is PUT once, before the generated ones)
  nginx      rewrite the tenant map file, `nginx -s reload`
  haproxy    `add map` / `del map` on the runtime API socket
  nginx_lua  GET /flip on the Lua endpoint (a shared-dict update)
Per flip: call_ms, from sending the change until the gateway accepted it (the API answered,
the reload signal was sent), and apply_ms, from that moment until the first request for
probe-k, each on a fresh connection (a new client: nginx's old workers keep serving
routing of the old generation on existing connections), reaches gray. Peak RSS of the
gateway's processes (with their children: nginx keeps two generations during a reload) is
sampled every 100 ms. probe_ms is a probe's own round trip for a tenant no flip moves (the
same fresh connection under the same load), so apply_ms - probe_ms is the wait for the change.

    flip_driver.py KIND PORT SECS WORKDIR ROOT_PID [ADMIN_PORT]
prints: flips=N call_ms_med=… apply_ms_med=… probe_ms_med=… apply_ms_max=… missed=… rss_peak_mb=… rss_start_mb=…
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

kind, port, secs, work, root = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
admin = int(sys.argv[6]) if len(sys.argv) > 6 else 0


def tree(pid):
    out = [pid]
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return out
    for k in kids:
        out += tree(int(k))
    return out


def rss_mb(pid):
    total = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


peak = [0.0]
stop = threading.Event()


def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(root))
        time.sleep(0.1)


def routed_gray(tenant):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/api/probe", headers={"x-tenant-id": tenant})
        return c.getresponse().read().startswith(b"gray")
    except OSError:
        return False
    finally:
        c.close()


token = ""
apus_rules = None
if kind == "apus":
    token = open(os.path.join(work, "apus-data/auth/admin.token")).read().strip()
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    c.request("GET", "/admin/v1/routes", headers={"Authorization": "Bearer " + token})
    apus_rules = json.loads(c.getresponse().read())["routes"][0]["gray_rules"]
    apus_conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)


def apus_call(method, path, body):
    apus_conn.request(method, path, body=json.dumps(body),
                      headers={"Authorization": "Bearer " + token, "content-type": "application/json"})
    r = apus_conn.getresponse()
    r.read()
    assert r.status == 200, r.status


if kind == "apus":
    # The rule the flips edit, made once (untimed) the way a release manager would: each
    # flip then moves one tenant out and the next in, like HAProxy's del map + add map.
    apus_call("PUT", "/admin/v1/routes/api/rules",
              {"rules": [{"name": "flip", "pool": "gray", "tenants": ["probe-0"]}] + apus_rules,
               "reason": "bench: the flip rule"})


def haproxy_cmd(cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(work, "haproxy.sock"))
    s.sendall((cmd + "\n").encode())
    out = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        out += b
    s.close()
    return out


last = ["probe-0"]


def flip(k):
    # Out goes the tenant the last flip moved in (probes the sticky 5 % already routes to
    # gray are skipped, so that is not always probe-(k-1)).
    new, old = f"probe-{k}", last[0]
    last[0] = new
    if kind == "apus":
        apus_call("PATCH", "/admin/v1/routes/api/rules/flip",
                  {"add_tenants": [new], "remove_tenants": [old], "reason": f"bench flip {k}"})
    elif kind == "nginx":
        with open(os.path.join(work, "nginx-flip.conf"), "w") as f:
            f.write(f"  {new} 1;\n")
        subprocess.run(["nginx", "-c", os.path.join(work, "nginx.conf"), "-s", "reload"], check=True,
                       stderr=subprocess.DEVNULL)
    elif kind == "haproxy":
        tm = os.path.join(work, "tenants.map")
        haproxy_cmd(f"del map {tm} {old}")
        haproxy_cmd(f"add map {tm} {new} 1")
    elif kind == "nginx_lua":
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        c.request("GET", f"/flip?tenant={old}&gray=0")
        c.getresponse().read()
        c.request("GET", f"/flip?tenant={new}&gray=1")
        c.getresponse().read()
        c.close()


start_rss = rss_mb(root)
threading.Thread(target=sampler, daemon=True).start()
calls, applies, probes, missed = [], [], [], 0
t_end = time.monotonic() + secs
k = 0
while time.monotonic() < t_end - 1:
    k += 1
    # A probe tenant the other rules already send to gray (the sticky 5 %) proves nothing.
    while routed_gray(f"probe-{k}"):
        k += 1
    # One probe's own round trip (a fresh connection under the same load, nothing to
    # change): the floor under apply_ms for a gateway whose change is in force when its
    # call returns.
    tp = time.monotonic()
    routed_gray("probe-rtt")
    probes.append((time.monotonic() - tp) * 1000)
    t0 = time.monotonic()
    flip(k)
    t1 = time.monotonic()
    calls.append((t1 - t0) * 1000)
    while not routed_gray(f"probe-{k}"):
        if time.monotonic() - t1 > 5:
            missed += 1
            break
    else:
        applies.append((time.monotonic() - t1) * 1000)
    time.sleep(max(0.0, t0 + 1 - time.monotonic()))
stop.set()


def med(v):
    v = sorted(v)
    return round(v[len(v) // 2], 2) if v else -1


print(f"flips={k} call_ms_med={med(calls)} apply_ms_med={med(applies)} probe_ms_med={med(probes)} "
      f"apply_ms_max={round(max(applies), 2) if applies else -1} missed={missed} "
      f"rss_peak_mb={round(peak[0], 1)} rss_start_mb={round(start_rss, 1)}")
