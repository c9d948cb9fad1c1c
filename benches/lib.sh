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
