#!/usr/bin/env bash
# Starts, stops or reports AWS's DynamoDB Local (in memory) in the background.
# Usage: infra/scripts/ddb-local.sh start|stop|status [port]     (default port 8000)
#
# DynamoDB Local cannot bind to loopback only: start it inside infra/scripts/in-netns.sh
# (a private network namespace with only a loopback), as test.sh and bench.sh do.
# Files: $DDB_LOCAL_STATE_DIR (default .local/ddb)/pid and ddb.log.
# Extra JVM options: DDB_LOCAL_JAVA_OPTS (e.g. "-Xmx1g").
set -euo pipefail
# shellcheck source-path=SCRIPTDIR  # lib.sh, whose svc_* functions read the SVC_* settings
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMD="${1:-}"
PORT="${2:-8000}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
STATE_DIR="${DDB_LOCAL_STATE_DIR:-$DDB_DIR}"

# Settings of the svc_* functions in lib.sh.
SVC_NAME="DynamoDB Local"
SVC_MATCH="DynamoDBLocal.jar"
SVC_PIDFILE="$STATE_DIR/pid"
SVC_LOG="$STATE_DIR/ddb.log"
SVC_PORT="$PORT"
SVC_START_TIMEOUT=30
SVC_STOP_TIMEOUT=10

# True inside a network namespace that has no interface but the loopback.
private_netns() {
    [[ "${AF_IN_NETNS:-}" == 1 ]] && return 0
    have ip || return 1
    ! ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -qvx lo
}

start() {
    local home
    home="$(ddb_home)" || die "DynamoDB Local is not installed: run infra/scripts/install-tools.sh"
    if svc_already_up; then
        return 0
    fi
    if ! private_netns; then
        warn "not in a private network namespace: DynamoDB Local will listen on all interfaces (use infra/scripts/in-netns.sh)"
    fi
    # shellcheck disable=SC2086  # DDB_LOCAL_JAVA_OPTS is a list of options
    svc_launch java ${DDB_LOCAL_JAVA_OPTS:-} \
        -Djava.library.path="$home/DynamoDBLocal_lib" \
        -jar "$home/DynamoDBLocal.jar" \
        -inMemory -sharedDb -disableTelemetry -port "$PORT"
}

case "$CMD" in
    start) start ;;
    stop) svc_stop ;;
    status) svc_status ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
