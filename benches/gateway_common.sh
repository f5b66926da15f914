# Shared by benches/gateway_peers.sh and benches/gateway_flips.sh (sourced, not run):
# one generated rule set written in each gateway's own language, the upstream, and the
# measuring helpers. The writers expect $W (work dir) and $WORKERS to be set.
#
# The rule set, the same on every gateway, in this order (first match wins):
#   beta    100k tenants (x-tenant-id: tenant-N, N even < 200000)  -> gray
#   office  10k client CIDRs (5k /16 and 5k /24, none holding 127/8) -> gray
#   canary  header x-canary: on                                     -> gray
#   pct     sticky 5 % of tenants                                   -> gray
#   else                                                            -> stable
# wrk sends tenants drawn uniformly from 0..199999 from 127.0.0.1, so half hit the tenant
# rule and the other half are checked against every rule. Each gateway tags the upstream
# request (x-request-id, x-env-tag, baggage) and the response (x-env-tag, x-request-id).
# The sticky percentage uses each peer's own hash (nginx split_clients: murmur2; HAProxy
# and Lua: crc32); Caddy has no hash function without a plugin, so it skips that rule.

UP_STABLE=18001
UP_GRAY=18002

# Install the peers (Debian packages) that are missing.
install_peers() {
  local missing=0 c
  for c in nginx wrk haproxy caddy; do command -v "$c" >/dev/null || missing=1; done
  [ -f /usr/share/nginx/modules/ngx_http_lua_module.so ] || missing=1
  [ $missing = 0 ] || apt-get install -y nginx wrk haproxy caddy libnginx-mod-http-lua >/dev/null
}

# The binaries a bench runs: BIN (`apus`: $APUS_BIN, or built) and FLOOR (the Pingora floor
# example next to it, built when BIN lives in a cargo release dir).
find_binaries() {
  [ -n "${APUS_BIN:-}" ] || cargo build --release --quiet --bin apus --bin apus-gateway
  BIN=${APUS_BIN:-${CARGO_TARGET_DIR:-target}/release/apus}
  local dir
  dir=$(cd "$(dirname "$BIN")" && pwd)
  FLOOR=$dir/examples/pingora_floor
  if [ "$(basename "$dir")" = release ]; then
    CARGO_TARGET_DIR=$(dirname "$dir") cargo build --release --quiet --example pingora_floor
  fi
  [ -x "$FLOOR" ] || { echo "no Pingora floor binary at $FLOOR"; return 1; }
}

# The command that runs Apus's gateway, into the array GW: the slim `apus-gateway` next to
# $BIN (what a fleet node runs: the gateway without the other roles linked in), else
# `apus gateway`; APUS_GATEWAY=all-in-one picks the latter. Says which.
gateway_cmd() {
  local slim
  slim=$(dirname "$BIN")/apus-gateway
  # Only a slim binary linked by the same build as $BIN (within 10 minutes of it): a
  # leftover from an older build would silently stand in for the build under test.
  local age=999999
  [ -x "$slim" ] && age=$(($(stat -c %Y "$BIN") - $(stat -c %Y "$slim")))
  if [ "${APUS_GATEWAY:-slim}" = slim ] && [ "$age" -le 600 ]; then
    GW=("$slim")
  else
    [ -x "$slim" ] && [ "${APUS_GATEWAY:-slim}" = slim ] && echo "ignoring $slim: older than $BIN"
    GW=("$BIN" gateway)
  fi
  echo "apus runs as: ${GW[*]}"
}

# Kill what a run started: the PIDS array and the daemons' pid files under $W.
PIDS=()
cleanup() {
  local p f
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in up nginx nginx-lua haproxy; do [ -f "$W/$f.pid" ] && kill "$(cat "$W/$f.pid")" 2>/dev/null; done
  true
}

gen_rules() {
  python3 - "$W" <<'PY'
import sys
w = sys.argv[1]
tenants = [f"tenant-{i}" for i in range(0, 200000, 2)]
cidrs = [f"{11 + i // 256}.{i % 256}.0.0/16" for i in range(5000)]
cidrs += [f"{100 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24" for i in range(5000)]
open(f"{w}/tenants.txt", "w").write("\n".join(tenants) + "\n")
open(f"{w}/tenants.map", "w").write("".join(f"{t} 1\n" for t in tenants))
open(f"{w}/cidrs.map", "w").write("".join(f"{c} 1\n" for c in cidrs))
with open(f"{w}/nginx-map.conf", "w") as f:
    f.write("map $http_x_tenant_id $gray_tenant {\n  default 0;\n  include %s/nginx-tenants.conf;\n  include %s/nginx-flip.conf;\n}\n" % (w, w))
    f.write("geo $gray_cidr {\n  default 0;\n")
    for c in cidrs:
        f.write(f"  {c} 1;\n")
    f.write("}\n")
open(f"{w}/nginx-flip.conf", "w").write("")
open(f"{w}/nginx-tenants.conf", "w").write("".join(f"  {t} 1;\n" for t in tenants))
with open(f"{w}/apus-rules.toml", "w") as f:
    f.write('[[routes.gray_rules]]\nname = "beta"\npool = "gray"\ntenants_file = "tenants.txt"\n')
    f.write('[[routes.gray_rules]]\nname = "office"\npool = "gray"\ncidrs = [' + ",".join(f'"{c}"' for c in cidrs) + "]\n")
    f.write('[[routes.gray_rules]]\nname = "canary"\npool = "gray"\nheader = { name = "x-canary", value = "on" }\n')
    f.write('[[routes.gray_rules]]\nname = "pct"\npool = "gray"\npercent = 5.0\n')
with open(f"{w}/caddy-tenants.conf", "w") as f:
    for t in tenants:
        f.write(f"    {t} 1\n")
open(f"{w}/caddy-cidrs.txt", "w").write(" ".join(cidrs))
PY
}

write_upstream() {
  cat > "$W/upstream.conf" <<CONF
worker_processes 1;
pid $W/up.pid;
error_log $W/up-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$UP_STABLE; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:$UP_GRAY; location / { return 200 "gray\n"; } }
}
CONF
}

# apus gateway on $1, admin on $2.
write_apus() {
  cat > "$W/apus.toml" <<CONF
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
threads = $WORKERS
access_log = "off"
[[pools]]
name = "stable"
servers = ["127.0.0.1:$UP_STABLE"]
[[pools]]
name = "gray"
servers = ["127.0.0.1:$UP_GRAY"]
[[routes]]
name = "api"
stable_pool = "stable"
tenant_sources = [{ header = "x-tenant-id" }]
$(cat "$W/apus-rules.toml")
CONF
}

# The proxying and tagging both nginx peers do once $pool is set.
nginx_proxy_to_pool() {
  cat <<'CONF'
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header x-request-id $request_id;
      proxy_set_header x-env-tag $pool;
      proxy_set_header baggage "env=$pool";
      add_header x-env-tag $pool;
      add_header x-request-id $request_id;
      proxy_pass http://$pool;
CONF
}

# nginx geo + map + split_clients on $1.
write_nginx() {
  cat > "$W/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  map_hash_bucket_size 128;
  map_hash_max_size 262144;
  include $W/nginx-map.conf;
  map \$http_x_canary \$gray_hdr { default 0; on 1; }
  split_clients "pct:\$http_x_tenant_id" \$gray_pct { 5% 1; * 0; }
  map "\$gray_tenant\$gray_cidr\$gray_hdr\$gray_pct" \$pool { default stable; ~1 gray; }
  upstream stable { server 127.0.0.1:$UP_STABLE; keepalive 64; }
  upstream gray { server 127.0.0.1:$UP_GRAY; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    location / {
$(nginx_proxy_to_pool)
    }
  }
}
CONF
}

# nginx + Lua (OpenResty style: tenants and CIDR prefixes in shared dicts, loaded at start,
# changed at run time through /flip on $2) on $1.
write_nginx_lua() {
  cat > "$W/nginx-lua.conf" <<CONF
load_module /usr/share/nginx/modules/ndk_http_module.so;
load_module /usr/share/nginx/modules/ngx_http_lua_module.so;
worker_processes $WORKERS;
pid $W/nginx-lua.pid;
error_log $W/nginx-lua-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  lua_shared_dict tenants 64m;
  lua_shared_dict cidrs 8m;
  init_by_lua_block {
    local t = ngx.shared.tenants
    for line in io.lines("$W/tenants.txt") do t:set(line, 1) end
    local c = ngx.shared.cidrs
    for line in io.lines("$W/cidrs.map") do
      local a, b, x, y, len = line:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/(%d+)")
      if len == "16" then c:set("16:" .. a .. "." .. b, 1) else c:set("24:" .. a .. "." .. b .. "." .. x, 1) end
    end
  }
  upstream stable { server 127.0.0.1:$UP_STABLE; keepalive 64; }
  upstream gray { server 127.0.0.1:$UP_GRAY; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    location / {
      set_by_lua_block \$pool {
        local t = ngx.var.http_x_tenant_id
        if t and ngx.shared.tenants:get(t) then return "gray" end
        local a, b, c = ngx.var.remote_addr:match("^(%d+)%.(%d+)%.(%d+)%.")
        local cs = ngx.shared.cidrs
        if a and (cs:get("16:" .. a .. "." .. b) or cs:get("24:" .. a .. "." .. b .. "." .. c)) then return "gray" end
        if ngx.var.http_x_canary == "on" then return "gray" end
        if t and ngx.crc32_short("pct:" .. t) % 100 < 5 then return "gray" end
        return "stable"
      }
$(nginx_proxy_to_pool)
    }
  }
  server {
    listen 127.0.0.1:$2;
    location = /flip {
      content_by_lua_block {
        local args = ngx.req.get_uri_args()
        if args.gray == "1" then ngx.shared.tenants:set(args.tenant, 1) else ngx.shared.tenants:delete(args.tenant) end
        ngx.say("ok")
      }
    }
  }
}
CONF
}

# HAProxy 2.6 (map_str / map_ip, runtime API on $W/haproxy.sock) on $1.
write_haproxy() {
  cat > "$W/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  maxconn 4096
  stats socket $W/haproxy.sock mode 600 level admin
  pidfile $W/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$1
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  acl gray_tenant req.hdr(x-tenant-id),map_str($W/tenants.map) -m found
  acl gray_cidr src,map_ip($W/cidrs.map) -m found
  acl gray_hdr req.hdr(x-canary) -m str on
  acl gray_pct req.hdr(x-tenant-id),crc32,mod(100) lt 5
  http-request set-var(txn.pool) str(gray) if gray_tenant || gray_cidr || gray_hdr || gray_pct
  http-request set-var(txn.pool) str(stable) unless { var(txn.pool) -m found }
  http-request set-header x-request-id %[unique-id]
  http-request set-header x-env-tag %[var(txn.pool)]
  http-request set-header baggage env=%[var(txn.pool)]
  http-response set-header x-env-tag %[var(txn.pool)]
  http-response set-header x-request-id %[unique-id]
  use_backend gray if { var(txn.pool) -m str gray }
  default_backend stable
backend stable
  http-reuse always
  server s1 127.0.0.1:$UP_STABLE
backend gray
  http-reuse always
  server g1 127.0.0.1:$UP_GRAY
CONF
}

# Caddy 2.6 (map + remote_ip matchers; no sticky percentage without a plugin) on $1.
write_caddy() {
  {
    echo "{"
    echo "  admin off"
    echo "  auto_https off"
    echo "}"
    echo "http://127.0.0.1:$1 {"
    echo "  map {header.X-Tenant-Id} {gray_tenant} {"
    cat "$W/caddy-tenants.conf"
    echo "    default 0"
    echo "  }"
    echo "  @t vars {gray_tenant} 1"
    echo "  @c remote_ip $(cat "$W/caddy-cidrs.txt")"
    echo "  @h header X-Canary on"
    echo "  route {"
    echo "    vars pool stable"
    echo "    vars @t pool gray"
    echo "    vars @c pool gray"
    echo "    vars @h pool gray"
    echo "    request_header x-request-id {http.request.uuid}"
    echo "    request_header x-env-tag {vars.pool}"
    echo "    request_header baggage env={vars.pool}"
    echo "    header x-env-tag {vars.pool}"
    echo "    header x-request-id {http.request.uuid}"
    echo "    @g vars pool gray"
    echo "    reverse_proxy @g 127.0.0.1:$UP_GRAY"
    echo "    reverse_proxy 127.0.0.1:$UP_STABLE"
    echo "  }"
    echo "}"
  } > "$W/Caddyfile"
}

# wrk's request script: a uniform random tenant per request.
write_wrk_script() {
  cat > "$W/req.lua" <<'LUA'
math.randomseed(42)
request = function()
  return wrk.format("GET", "/api/orders", { ["x-tenant-id"] = "tenant-" .. math.random(0, 199999) })
end
LUA
}

# Routing check: tenant-10 (listed) to gray, tenant-11 (unlisted) to stable, on port $1.
check_routing() {
  curl -fsS -H 'x-tenant-id: tenant-10' "http://127.0.0.1:$1/api/x" | grep -q gray ||
    { echo "gateway on $1 does not route tenant-10 to gray"; return 1; }
  curl -fsS -H 'x-tenant-id: tenant-11' "http://127.0.0.1:$1/api/x" | grep -q stable ||
    { echo "gateway on $1 does not route tenant-11 to stable"; return 1; }
}

# Wait until port $1 answers (up to 60 s: nginx and Caddy parse 100k-entry maps).
wait_port() {
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1"
  return 1
}

ticks() { # pids -> CPU ticks (user + system) of those processes, all threads
  for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ t += $1 } END { print t }'
}
HZ=$(getconf CLK_TCK)

# run PORT PIDS... -> "rps p99_ms cpu_us_per_request max_ms errors"
run_wrk() {
  local port=$1; shift
  local t0 t1 out
  t0=$(ticks "$@")
  out=$(wrk -t1 -c"${CONNS:-64}" -d"${SECS}s" --latency -s "${WRK_SCRIPT:-$W/req.lua}" "http://127.0.0.1:$port/" 2>/dev/null)
  t1=$(ticks "$@")
  parse_wrk "$((t1 - t0))" <<<"$out"
}

# wrk's output on stdin, CPU ticks $1 -> "rps p99_ms cpu_us_per_request max_ms errors"
parse_wrk() {
  awk -v t="${1:-0}" -v hz="$HZ" '
    function ms(v) { if (v ~ /us$/) { sub(/us/, "", v); return v / 1000 } if (v ~ /ms$/) { sub(/ms/, "", v); return v + 0 } sub(/s/, "", v); return v * 1000 }
    /Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +99%/ { p99 = ms($2) }
    /^ +Latency +[0-9]/ { mx = ms($4) }
    /Non-2xx/ { e += $NF }
    /Socket errors/ { for (i = 3; i <= NF; i++) { v = $i; gsub(/,/, "", v); if (v ~ /^[0-9]+$/) e += v } }
    END { printf "%s %s %.1f %s %d\n", rps, p99, (n > 0) ? t * 1e6 / hz / n : 0, mx, e }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
