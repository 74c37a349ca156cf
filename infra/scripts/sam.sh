#!/usr/bin/env bash
# Runs the project's pinned SAM CLI from the repository root (so samconfig.toml is used), with
# the venv's cargo-lambda and zig first on PATH, which `sam build` (rust-cargolambda) needs.
# Usage: infra/scripts/sam.sh build | deploy --guided | deploy | validate | ...
# Deploying uses your own AWS credentials (profile or environment), as plain `sam` would.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || die "usage: sam.sh SAM-ARGS... (e.g. build, deploy --guided)"
[[ -x "$VENV_DIR/bin/sam" ]] || bash "$SCRIPTS_DIR/install-tools.sh" --sam
use_venv
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"
cd "$ROOT"
exec sam "$@"
