# shellcheck shell=bash
# perf/lib.sh: shared by perf/profile, perf/syscalls, perf/compare and perf/ceiling (sourced, not run).
#
# Tools installation, the release build, free loopback ports, starting the
# mock provider, shardgate and nginx with generated configs, the wrk load of
# a scenario, and the cleanup trap that stops every process started here (by
# pid only). The sourcing script sets `set -euo pipefail` and its knobs
# (SCENARIO, SHARDS, SKIP_BUILD, ...) before calling these.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/shardgate
LOG_TAG=${LOG_TAG:-perf}

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# install_tools CMD:PACKAGE...: apt-get installs the packages whose command
# is missing (root only; `apt-get update` only when the lists lack one).
install_tools() {
    local need=() spec cmd pkg
    for spec in "$@"; do
        cmd=${spec%%:*} pkg=${spec#*:}
        command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || need+=("$pkg")
    done
    ((${#need[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}; run as root or install them: apt-get install ${need[*]}"
    log "installing ${need[*]}"
    for pkg in "${need[@]}"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            log "package lists lack $pkg: apt-get update"
            apt-get update -q >/dev/null
            break
        fi
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}

# perf must be able to sample here: this VM has no hardware counters, so the
# scripts only use cpu-clock, software events and tracepoints.
check_perf() {
    perf stat -e task-clock,raw_syscalls:sys_enter -- true >/dev/null 2>&1 ||
        die "perf cannot count task-clock / raw_syscalls:sys_enter here (perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null); run as root)"
}

build_release() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release --bin shardgate (SKIP_BUILD=1 skips)"
        (cd "$ROOT" && cargo build --release --bin shardgate --quiet)
    fi
    [[ -x $BIN ]] || die "$BIN not found: build it (cargo build --release) or unset SKIP_BUILD"
}

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardgate-perf.XXXXXX")
PIDS=() # everything started here, stopped on exit by pid only

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 5 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    # Newest first: the load and the proxies stop before the mock.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if ((rc != 0)); then
        log "failed (exit $rc); logs kept in $WORK"
        local f
        for f in "$WORK"/*.log; do
            [[ -s $f ]] || continue
            echo "---- tail $f" >&2
            tail -n 15 "$f" >&2
        done
    elif [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "temp dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return 0
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_listening PID LOGFILE PORT
wait_listening() {
    local pid=$1 logf=$2 port=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "process $pid exited at startup: see $logf"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listening on 127.0.0.1:$port after 10 s: see $logf"
}

# ---------------------------------------------------------------- scenarios
CHAT_BODY='{"model":"mock-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}'
STREAM_BODY='{"model":"mock-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"stream":true}'
MSG_BODY='{"model":"claude-mock","max_tokens":32,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'

# set_scenario NAME: URL path (REQ_PATH), wrk script (LUA) and the smoke
# request (SMOKE_BODY, SMOKE_HEADER, SMOKE_EXPECT) of a scenario.
#   passthrough  OpenAI chat, non-streaming (loadtest/chat.lua)
#   translate    Anthropic Messages in, OpenAI mock out (loadtest/messages.lua)
#   stream       OpenAI chat with stream: true, 8 SSE chunks from the mock
set_scenario() {
    SMOKE_HEADER='x-perf: 1'
    case $1 in
    passthrough)
        REQ_PATH=/v1/chat/completions LUA=$ROOT/loadtest/chat.lua
        SMOKE_BODY=$CHAT_BODY SMOKE_EXPECT='"chat.completion"'
        ;;
    translate)
        REQ_PATH=/v1/messages LUA=$ROOT/loadtest/messages.lua
        SMOKE_BODY=$MSG_BODY SMOKE_EXPECT='"type":"message"' SMOKE_HEADER='anthropic-version: 2023-06-01'
        ;;
    stream)
        REQ_PATH=/v1/chat/completions LUA=$WORK/stream.lua
        SMOKE_BODY=$STREAM_BODY SMOKE_EXPECT='[DONE]'
        cat >"$LUA" <<EOF
-- generated by perf/lib.sh: the chat.lua request with "stream": true
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$STREAM_BODY'
EOF
        ;;
    *) die "SCENARIO is passthrough, translate or stream, got '$1'" ;;
    esac
}

# smoke NAME PORT PID: one request of the scenario must answer 200 with the
# expected shape before any load.
smoke() {
    local name=$1 port=$2 pid=$3 code
    code=$(curl -s -o "$WORK/smoke-$name.out" -w '%{http_code}' --max-time 5 \
        -H 'content-type: application/json' -H "$SMOKE_HEADER" --data-binary "$SMOKE_BODY" \
        "http://127.0.0.1:$port$REQ_PATH" || true)
    if [[ $code != 200 ]] || ! grep -qF "$SMOKE_EXPECT" "$WORK/smoke-$name.out"; then
        kill -0 "$pid" 2>/dev/null || log "$name (pid $pid) is dead"
        die "$name smoke request answered HTTP '$code': $(head -c 300 "$WORK/smoke-$name.out" 2>/dev/null)"
    fi
}

start_mock() {
    MOCK_PORT=$(free_port)
    "$BIN" mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" --shards "${MOCK_SHARDS:-1}" \
        --stream-chunks 8 >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    wait_listening "$MOCK_PID" "$WORK/mock.log" "$MOCK_PORT"
    log "mock provider pid $MOCK_PID on 127.0.0.1:$MOCK_PORT"
    # The workload for `perf stat/record -p PID -- $WORK/window FILE SECS`:
    # perf counts only while it runs, so the mock's request count read at
    # its start and end brackets exactly the counted window (reading it
    # around the perf command would add perf's own start-up, a noticeable
    # fraction of a second with many events and threads).
    cat >"$WORK/window" <<EOF
#!/usr/bin/env bash
set -euo pipefail
count() {
    echo "\$(curl -s --max-time 5 http://127.0.0.1:$MOCK_PORT/mock/stats |
        sed -n 's/.*"chat_requests":\([0-9]*\).*/\1/p') \$(date +%s.%N)"
}
count >"\$1.start"
sleep "\$2"
count >"\$1.end"
EOF
    chmod +x "$WORK/window"
}

# window_result FILE: "REQUESTS SECONDS" of a window run by $WORK/window.
window_result() {
    local n0 t0 n1 t1
    read -r n0 t0 <"$1.start"
    read -r n1 t1 <"$1.end"
    [[ -n $n0 && -n $n1 ]] || die "could not read the mock's request count around the window"
    awk -v a="$n0" -v b="$n1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%d %.3f", b - a, e - s }'
}

# Chat requests the mock has answered so far (every scenario reaches it as
# one chat request per client request, so deltas count proxied requests).
mock_chat_count() {
    curl -s --max-time 5 "http://127.0.0.1:$MOCK_PORT/mock/stats" |
        sed -n 's/.*"chat_requests":\([0-9]*\).*/\1/p'
}

# start_shardgate SHARDS [NAME [BINARY]]: the loadtest/run config shape (one
# keyless OpenAI provider on the mock, claude-mock routed to it), no access
# log. NAME (default shardgate) names its files; BINARY defaults to $BIN.
start_shardgate() {
    local shards=$1 name=${2:-shardgate} bin=${3:-$BIN}
    local cfg=$WORK/$name.toml
    SG_PORT=$(free_port)
    cat >"$cfg" <<EOF
# generated by perf/lib.sh
[server]
listen = "127.0.0.1:$SG_PORT"
shards = $shards
drain_timeout_ms = 1000

[[providers]]
name = "mock"
protocol = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"

[routing]
default_provider = "mock"

# Anthropic clients' model on the OpenAI mock (the translate scenario)
[[models]]
name = "claude-mock"
provider = "mock"
upstream_model = "mock-model"
EOF
    "$bin" serve --config "$cfg" >"$WORK/$name.log" 2>&1 &
    SG_PID=$!
    PIDS+=("$SG_PID")
    wait_listening "$SG_PID" "$WORK/$name.log" "$SG_PORT"
    smoke "$name" "$SG_PORT" "$SG_PID"
    log "$name ($bin) pid $SG_PID on 127.0.0.1:$SG_PORT, shards=$shards"
}

# start_nginx WORKERS: loadtest/run's nginx shape (reverse proxy with
# upstream keep-alive, no buffering, no access log, pinned like glommio).
start_nginx() {
    local workers=$1 dir=$WORK/nginx
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    NG_PORT=$(free_port)
    mkdir -p "$dir/logs" "$dir/tmp"
    # Workers drop to an unprivileged user when started as root: let them in.
    chmod 755 "$WORK" "$dir" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
# generated by perf/lib.sh (the shape of loadtest/run's)
worker_processes $workers;
worker_cpu_affinity auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;

events {
    worker_connections 8192;
}

http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

    keepalive_timeout 65s;
    keepalive_requests 1000000;
    tcp_nodelay on;

    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$NG_PORT reuseport;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    "$NGINX" -t -q -e "$dir/logs/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$WORK/nginx-t.log" 2>&1 ||
        die "nginx -t failed: $(cat "$WORK/nginx-t.log")"
    "$NGINX" -e "$dir/logs/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
    NG_PID=$!
    PIDS+=("$NG_PID")
    wait_listening "$NG_PID" "$WORK/nginx.log" "$NG_PORT"
    smoke nginx "$NG_PORT" "$NG_PID"
    log "nginx master pid $NG_PID on 127.0.0.1:$NG_PORT, worker_processes=$workers"
}

# nginx_pids: the master and its workers, comma-separated (for perf -p).
nginx_pids() {
    local kids
    kids=$(pgrep -P "$NG_PID" | paste -sd, -)
    echo "$NG_PID${kids:+,$kids}"
}

# start_wrk NAME PORT SECS: wrk with the scenario's script in the background
# (bounded by -d and by timeout); its output goes to $WORK/wrk-NAME.out.
start_wrk() {
    local name=$1 port=$2 secs=$3
    timeout --kill-after=5 $((secs + 30)) \
        wrk -t"${THREADS:-2}" -c"${CONNECTIONS:-64}" -d"${secs}s" --timeout 5s \
        -s "$LUA" "http://127.0.0.1:$port$REQ_PATH" >"$WORK/wrk-$name.out" 2>&1 &
    WRK_PID=$!
    PIDS+=("$WRK_PID")
}

# finish_wrk NAME: waits for the background wrk and fails on socket errors
# or non-2xx answers.
finish_wrk() {
    local name=$1 rc=0
    wait "$WRK_PID" || rc=$?
    ((rc == 0)) || die "wrk ($name) exited with $rc: $(tail -n 5 "$WORK/wrk-$name.out")"
    if grep -qE 'Socket errors|Non-2xx' "$WORK/wrk-$name.out"; then
        die "wrk ($name) saw errors: $(grep -E 'Socket errors|Non-2xx' "$WORK/wrk-$name.out")"
    fi
    # shellcheck disable=SC2034 # read by the scripts that source this file
    WRK_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/wrk-$name.out")
}

# ---------------------------------------------------------------- rounds
# cpu_ticks PIDS: CPU ticks (user + system, all threads) so far of a
# comma-separated pid list.
cpu_ticks() {
    local files=() pid
    for pid in ${1//,/ }; do files+=("/proc/$pid/stat"); done
    awk '{ s += $14 + $15 } END { print s }' "${files[@]}"
}

# measure_round NAME ROUND PORT PIDS: one wrk run (SECS) against PORT, with
# the CPU per request of PIDS (requests counted at the mock); appends
# "NAME ROUND req/s µs" to $WORK/rounds.
measure_round() {
    local name=$1 round=$2 port=$3 pids=$4 t0 t1 n0 n1 us
    t0=$(cpu_ticks "$pids")
    n0=$(mock_chat_count)
    start_wrk "$name-$round" "$port" "${SECS:?the sourcing script sets SECS}"
    finish_wrk "$name-$round"
    n1=$(mock_chat_count)
    t1=$(cpu_ticks "$pids")
    us=$(awk -v t=$((t1 - t0)) -v n=$((n1 - n0)) -v h="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", n ? t / h * 1e6 / n : 0 }')
    printf '%s\t%s\t%s\t%s\n' "$name" "$round" "$WRK_RPS" "$us" >>"$WORK/rounds"
    log "round $round $name: $WRK_RPS req/s, $us CPU µs per request"
}

# round_median NAME COLUMN: the median of COLUMN (3 req/s, 4 µs) of NAME's rounds.
round_median() {
    awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$WORK/rounds" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
