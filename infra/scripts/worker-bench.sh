#!/usr/bin/env bash
# The reference worker's figures through the local runner (embedded DynamoDB, real processes on
# loopback, the tests crate's fake Bot API): webhook-to-reply latency p50/p95 over 50 messages to
# one sticky worker (echo engine), enqueue-to-claim latency inside and after the fast-poll
# window, requests per message. Release build by default; PROFILE=debug runs the debug build.
# Usage: infra/scripts/worker-bench.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

release=(--release)
if [ "${PROFILE:-release}" = "debug" ]; then
    release=()
fi
t0="$(now_s)"
say "building: cargo build ${release[*]} -p worker -p local-runner --locked"
cargo build "${release[@]}" -p worker -p local-runner --locked
say "built in $(($(now_s) - t0)) s"
cargo test "${release[@]}" -p local-runner --test e2e --locked -- --ignored --nocapture worker_latency_figures 2>/dev/null \
    | grep '^FIGURE'
