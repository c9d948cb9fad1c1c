# shellcheck shell=bash
# What the harness scripts share (sourced by load.sh, growth.sh, isolation.sh and
# metrics.sh; not run on its own).

# wrk, from Debian's packages if missing.
ensure_wrk() {
  command -v wrk >/dev/null && return 0
  echo "installing wrk from Debian's packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
}

# A scratch directory in $WORK, removed on exit with the service
# ($SERVER_PID) stopped. Subshells (command substitutions) leave both alone.
bench_workdir() {
  WORK=$(mktemp -d)
  SERVER_PID=
  BENCH_SHELL=$BASHPID
  trap bench_cleanup EXIT
}

bench_cleanup() {
  [ "$BASHPID" = "$BENCH_SHELL" ] || return 0
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# wait_ready URL [any] [TRIES]: until URL answers 2xx (anything, with "any"),
# polling every 50 ms, 200 times unless told otherwise.
wait_ready() {
  local fail=-f
  [ "${2:-}" = any ] && fail=
  for _ in $(seq 1 "${3:-200}"); do
    curl -s $fail -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "not ready: $1" >&2
  exit 1
}

# The organisation and product every harness asks about.
put_acme() { # BASE_URL ADMIN_TOKEN
  curl -sf -X PUT "$1/organizations/acme" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d '{"name":"Acme"}' >/dev/null
  curl -sf -X PUT "$1/products/ACME-VPN" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d '{"name":"Acme VPN","vendor":"acme","category":"vpn"}' >/dev/null
}

# wrk's output (run with --latency) on stdin -> "rps p50_ms p99_ms bad": bad
# is what a script's done() reported as "failures N", else wrk's non-2xx count.
wrk_stats() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Requests\/sec/ { rps = $2 }
    /Non-2xx/ { non2xx += $5 }
    /^failures/ { failures = $2; counted = 1 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, counted ? failures : non2xx }'
}

# Every script may pace itself: PACE_MS (milliseconds each connection waits
# between requests) turns wrk's closed loop into a fixed offered rate.
lua_common() {
  cat <<LUA
local pace = tonumber(os.getenv("PACE_MS") or "0")
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local threads, counter = 0, 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  prefix = "load-" .. tostring(tid) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9)) .. "-"
end
-- Jittered (0.5 to 1.5 times the pace) so that the connections do not
-- fall into step and arrive in bursts.
function delay()
  if pace == 0 then return 0 end
  return math.floor(pace * (0.5 + math.random()))
end
LUA
}

# lua_issue BODY: a wrk script issuing licences of BODY, each with an
# Idempotency-Key of its own.
lua_issue() {
  lua_common
  cat <<LUA
local body = '$1'
function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/v1/licenses", nil, body)
end
LUA
}

# A webhook receiver for the benchmarks (load.sh, webhooks.sh), standard
# library only: python3 RECEIVER.py PORT SECRETS_FILE. SECRETS_FILE holds a
# JSON object {"/path": "whsec_…"}: the endpoint at each path and its secret,
# read again when a path is not in it yet. Every POST is verified (Standard
# Webhooks: HMAC-SHA256 over id.timestamp.body, any of the signatures) and
# answered 204, keep-alive; GET /stats answers {"posts", "bad", "unique",
# "per_path": {path: unique}, "first", "last", "lags"}: times are Unix seconds
# of the first and last new event, lags the seconds from each new event's
# `timestamp` (its commit) to its receipt.
webhook_receiver_py() {
  cat <<'PY'
import base64, hashlib, hmac, json, sys, threading, time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, secrets_file = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
keys, seen = {}, set()
stats = {"posts": 0, "bad": 0, "unique": 0, "per_path": {}, "first": None, "last": None, "lags": []}

def key(path):
    if path not in keys:
        for p, s in json.load(open(secrets_file)).items():
            keys[p] = base64.b64decode(s.removeprefix("whsec_"))
    return keys.get(path)

class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        now = time.time()
        msg_id, ts = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
        k = key(self.path)
        ok = False
        if k is not None:
            mac = base64.b64encode(hmac.new(k, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
            ok = any(hmac.compare_digest(s.partition(",")[2], mac)
                     for s in self.headers.get("webhook-signature", "").split())
        with lock:
            stats["posts"] += 1
            if not ok:
                stats["bad"] += 1
            elif (self.path, msg_id) not in seen:
                seen.add((self.path, msg_id))
                stats["unique"] += 1
                stats["per_path"][self.path] = stats["per_path"].get(self.path, 0) + 1
                stats["first"] = stats["first"] or now
                stats["last"] = now
                created = json.loads(body)["timestamp"].replace("Z", "+00:00")
                stats["lags"].append(now - datetime.fromisoformat(created).timestamp())
        self.answer(204 if ok else 400)

    def do_GET(self):
        with lock:
            self.answer(200, json.dumps(stats).encode())

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
PY
}

# receiver_stats PORT FIELD: one field of the receiver's /stats.
receiver_stats() {
  curl -sf "http://127.0.0.1:$1/stats" | python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$2"
}
