#!/usr/bin/env bash
# Runs CMD inside a private network namespace whose only interface is an up loopback, so
# servers started there (DynamoDB Local binds to every interface) are unreachable from
# outside, and nothing inside reaches the network. Build with cargo outside, run `--offline` inside.
# Usage: infra/scripts/in-netns.sh CMD [ARGS...]
# Falls back to `unshare -rn` (a user namespace, for non-root users), and failing that runs
# CMD directly with a warning.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || die "usage: in-netns.sh CMD [ARGS...]"

if [[ "${AF_IN_NETNS:-}" == 1 ]]; then
    exec "$@" # already inside one
fi
have unshare || die "unshare not found: run infra/scripts/install-tools.sh (package util-linux)"
have ip || die "ip not found: run infra/scripts/install-tools.sh (package iproute2)"

# shellcheck disable=SC2016  # $@ is expanded by the inner bash
INNER='ip link set lo up && exec "$@"'
if unshare -n true 2>/dev/null; then
    export AF_IN_NETNS=1
    exec unshare -n bash -c "$INNER" _ "$@"
elif unshare -rn true 2>/dev/null; then
    export AF_IN_NETNS=1
    exec unshare -rn bash -c "$INNER" _ "$@"
fi

warn "cannot create a network namespace here (unshare -n is not permitted): running without one."
warn "DynamoDB Local will then listen on ALL interfaces of this machine while the command runs."
exec "$@"
