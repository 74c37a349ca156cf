#!/usr/bin/env bash
# Runs the queue benchmark (integration-tests' queue-bench binary, release build) against
# DynamoDB Local in a private network namespace; it prints its own figures.
# Usage: infra/scripts/bench.sh [queue-bench args]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$SCRIPTS_DIR/install-tools.sh"
cd "$ROOT"

t0="$(now_s)"
say "building: cargo build --release -p integration-tests --bin queue-bench --locked"
cargo build --release -p integration-tests --bin queue-bench --locked
say "built in $(($(now_s) - t0)) s"

# Each phase gets a fresh DynamoDB Local: the emulator slows down as its one shared database
# grows, which would bill one phase for the data of the one before.
# `--phase NAME` runs that phase only; other arguments go to every phase.
phases="requests depth-sticky depth-unassigned throughput protocol reconcile partitions"
args=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--phase" ] && [ $# -ge 2 ]; then
        phases="$2"
        shift 2
    else
        args+=("$1")
        shift
    fi
done
rc=0
for phase in $phases; do
    say "phase $phase: queue-bench in a private network namespace with a fresh DynamoDB Local"
    DDB_LOCAL_PORT=8000 bash "$SCRIPTS_DIR/in-netns.sh" bash "$SCRIPTS_DIR/with-ddb.sh" \
        "$ROOT/target/release/queue-bench" --phase "$phase" ${args[@]+"${args[@]}"} || { rc=$?; break; }
done
exit "$rc"
