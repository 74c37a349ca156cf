#!/usr/bin/env bash
# Runs CMD with a fresh in-memory DynamoDB Local on 127.0.0.1:$DDB_LOCAL_PORT (default 8000)
# and a fresh moto_server (Secrets Manager, S3, Scheduler) on 127.0.0.1:$MOTO_PORT (default
# 5005), DYNAMODB_ENDPOINT and MOTO_ENDPOINT pointing at them and dummy AWS credentials; always
# stops both afterwards and exits with CMD's status. Their logs live in the run's state
# directory (.local/ddb/run.*, removed at the end; printed when a server fails to start).
# Meant to run inside in-netns.sh:
#   infra/scripts/in-netns.sh infra/scripts/with-ddb.sh cargo test --workspace --offline
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || die "usage: with-ddb.sh CMD [ARGS...]"
PORT="${DDB_LOCAL_PORT:-8000}"
MOTO_PORT="${MOTO_PORT:-5005}"

# A state directory of our own, so that runs in other namespaces never share a pid file.
mkdir -p "$DDB_DIR"
DDB_LOCAL_STATE_DIR="$(mktemp -d "$DDB_DIR/run.XXXXXX")"
MOTO_STATE_DIR="$DDB_LOCAL_STATE_DIR"
export DDB_LOCAL_STATE_DIR MOTO_STATE_DIR

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    bash "$SCRIPTS_DIR/moto.sh" stop "$MOTO_PORT" || true
    bash "$SCRIPTS_DIR/ddb-local.sh" stop "$PORT" || true
    rm -rf "$DDB_LOCAL_STATE_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$SCRIPTS_DIR/ddb-local.sh" start "$PORT"
bash "$SCRIPTS_DIR/moto.sh" start "$MOTO_PORT"

export DYNAMODB_ENDPOINT="http://127.0.0.1:$PORT"
export MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
export AWS_EC2_METADATA_DISABLED=true

set +e
"$@"
rc=$?
set -e
exit "$rc"
