#!/usr/bin/env bash
# Starts, stops or reports moto_server (AWS emulator: Secrets Manager, S3, Scheduler) in the
# background, bound to 127.0.0.1.
# Usage: infra/scripts/moto.sh start|stop|status [port]     (default port $MOTO_PORT or 5005)
#
# Installed by infra/scripts/install-tools.sh into the venv .local/moto. with-ddb.sh starts it
# next to DynamoDB Local, inside the private network namespace of in-netns.sh.
# Files: $MOTO_STATE_DIR (default .local/moto/run)/moto.pid and moto.log.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR  # lib.sh, whose svc_* functions read the SVC_* settings
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CMD="${1:-}"
PORT="${2:-${MOTO_PORT:-5005}}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
STATE_DIR="${MOTO_STATE_DIR:-$MOTO_DIR/run}"

# Settings of the svc_* functions in lib.sh.
SVC_NAME="moto_server"
SVC_MATCH="moto_server" # a Python entry-point script: its path is in the cmdline
SVC_PIDFILE="$STATE_DIR/moto.pid"
SVC_LOG="$STATE_DIR/moto.log"
SVC_PORT="$PORT"
SVC_START_TIMEOUT=30
SVC_STOP_TIMEOUT=5

start() {
    local bin="$MOTO_DIR/bin/moto_server"
    [[ -x "$bin" ]] || die "moto_server is not installed ($bin): run infra/scripts/install-tools.sh"
    if svc_already_up; then
        return 0
    fi
    svc_launch "$bin" -H 127.0.0.1 -p "$PORT"
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
