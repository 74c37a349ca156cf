#!/usr/bin/env bash
# Starts, stops or reports moto_server (AWS emulator: Secrets Manager, S3, Scheduler) in the
# background, bound to 127.0.0.1.
# Usage: infra/scripts/moto.sh start|stop|status [port]     (default port $MOTO_PORT or 5005)
#
# Installed by infra/scripts/install-tools.sh into the venv .local/moto. with-ddb.sh starts it
# next to DynamoDB Local, inside the private network namespace of in-netns.sh.
# Files: $MOTO_STATE_DIR (default .local/moto/run)/moto.pid and moto.log.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMD="${1:-}"
PORT="${2:-${MOTO_PORT:-5005}}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
STATE_DIR="${MOTO_STATE_DIR:-$MOTO_DIR/run}"
PIDFILE="$STATE_DIR/moto.pid"
LOG="$STATE_DIR/moto.log"
START_TIMEOUT=30

# pid of our moto_server if it is alive, else nothing.
running_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: moto_server is a Python entry-point script.
    grep -q moto_server "/proc/$pid/cmdline" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
    if [[ -s "$LOG" ]]; then
        say "last lines of $LOG:"
        tail -n 20 "$LOG" >&2
    fi
}

start() {
    local bin="$MOTO_DIR/bin/moto_server" pid t0 i
    [[ -x "$bin" ]] || die "moto_server is not installed ($bin): run infra/scripts/install-tools.sh"
    if pid="$(running_pid)"; then
        if port_open "$PORT"; then
            say "already running (pid $pid) on 127.0.0.1:$PORT"
            return 0
        fi
        die "a moto_server from $PIDFILE is running (pid $pid) but port $PORT does not answer here (another namespace or port?)"
    fi
    if port_open "$PORT"; then
        die "port $PORT is already in use"
    fi
    mkdir -p "$STATE_DIR"
    rm -f "$PIDFILE"
    t0="$(date +%s%N)"
    nohup "$bin" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
    # wait_port polls in 0.1 s steps; check the process too, so a crash fails fast.
    for ((i = 0; i < START_TIMEOUT; i++)); do
        if wait_port 127.0.0.1 "$PORT" 1; then
            say "moto_server up on 127.0.0.1:$PORT (pid $pid, $((($(date +%s%N) - t0) / 1000000)) ms)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            log_tail
            die "moto_server exited during start-up"
        fi
    done
    log_tail
    kill "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    die "moto_server did not accept connections on port $PORT within ${START_TIMEOUT}s"
}

stop() {
    local pid i
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid did not stop after 5 s: killing it"
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
