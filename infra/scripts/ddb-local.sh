#!/usr/bin/env bash
# Starts, stops or reports AWS's DynamoDB Local (in memory) in the background.
# Usage: infra/scripts/ddb-local.sh start|stop|status [port]     (default port 8000)
#
# DynamoDB Local cannot bind to loopback only: start it inside infra/scripts/in-netns.sh
# (a private network namespace with only a loopback), as test.sh and bench.sh do.
# Files: $DDB_LOCAL_STATE_DIR (default .local/ddb)/pid and ddb.log.
# Extra JVM options: DDB_LOCAL_JAVA_OPTS (e.g. "-Xmx1g").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMD="${1:-}"
PORT="${2:-8000}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
STATE_DIR="${DDB_LOCAL_STATE_DIR:-$DDB_DIR}"
PIDFILE="$STATE_DIR/pid"
LOG="$STATE_DIR/ddb.log"
START_TIMEOUT=30

# pid of our DynamoDB Local if it is alive, else nothing.
running_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == java ]] || return 1
    printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True inside a network namespace that has no interface but the loopback.
private_netns() {
    [[ "${AF_IN_NETNS:-}" == 1 ]] && return 0
    have ip || return 1
    ! ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -qvx lo
}

log_tail() {
    if [[ -s "$LOG" ]]; then
        say "last lines of $LOG:"
        tail -n 20 "$LOG" >&2
    fi
}

start() {
    local home pid i t0
    home="$(ddb_home)" || die "DynamoDB Local is not installed: run infra/scripts/install-tools.sh"
    if pid="$(running_pid)"; then
        if port_open "$PORT"; then
            say "already running (pid $pid) on 127.0.0.1:$PORT"
            return 0
        fi
        die "a DynamoDB Local from $PIDFILE is running (pid $pid) but port $PORT does not answer here (another namespace or port?)"
    fi
    if port_open "$PORT"; then
        die "port $PORT is already in use"
    fi
    if ! private_netns; then
        warn "not in a private network namespace: DynamoDB Local will listen on all interfaces (use infra/scripts/in-netns.sh)"
    fi
    mkdir -p "$STATE_DIR"
    rm -f "$PIDFILE"
    t0="$(date +%s%N)"
    # shellcheck disable=SC2086  # DDB_LOCAL_JAVA_OPTS is a list of options
    nohup java ${DDB_LOCAL_JAVA_OPTS:-} \
        -Djava.library.path="$home/DynamoDBLocal_lib" \
        -jar "$home/DynamoDBLocal.jar" \
        -inMemory -sharedDb -disableTelemetry -port "$PORT" \
        >"$LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if port_open "$PORT"; then
            say "DynamoDB Local up on 127.0.0.1:$PORT (pid $pid, $((($(date +%s%N) - t0) / 1000000)) ms)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            log_tail
            die "DynamoDB Local exited during start-up"
        fi
        sleep 0.1
    done
    log_tail
    kill "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "DynamoDB Local did not accept connections on port $PORT within ${START_TIMEOUT}s"
}

stop() {
    local pid i
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid did not stop after 10 s: killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}

status() {
    local pid
    if pid="$(running_pid)"; then
        if port_open "$PORT"; then
            say "running (pid $pid), answering on 127.0.0.1:$PORT"
        else
            say "running (pid $pid), but not answering on 127.0.0.1:$PORT from here"
        fi
        return 0
    fi
    say "not running"
    return 3
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
