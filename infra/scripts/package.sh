#!/usr/bin/env bash
# Builds the Lambda deployment zips (release, arm64, provided.al2023) with cargo lambda and
# prints their sizes: target/lambda/<function>/bootstrap.zip.
# Usage: infra/scripts/package.sh [function ...]     (default: every function)
# Needs the venv (cargo-lambda + ziglang as the cross linker): install-tools.sh --sam.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FUNCTIONS=("$@")
((${#FUNCTIONS[@]})) || FUNCTIONS=(enqueue admin api claim reconcile cleanup webhook)
TARGET_TRIPLE=aarch64-unknown-linux-gnu

bash "$SCRIPTS_DIR/install-tools.sh" --sam
use_venv
cd "$ROOT"

# cargo lambda would add the target itself; doing it here gives a clearer error offline.
if have rustup && ! rustup target list --installed | grep -qx "$TARGET_TRIPLE"; then
    say "adding Rust target $TARGET_TRIPLE"
    rustup target add "$TARGET_TRIPLE" ||
        die "could not add the $TARGET_TRIPLE standard library (rustup target add $TARGET_TRIPLE)"
fi

bin_args=()
for f in "${FUNCTIONS[@]}"; do
    bin_args+=(--bin "$f")
done

t0="$(now_s)"
say "cargo lambda build --release --arm64 --output-format zip --locked ${bin_args[*]}"
cargo lambda build --release --arm64 --output-format zip --locked "${bin_args[@]}"
say "built in $(($(now_s) - t0)) s"

LAMBDA_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/lambda"
for f in "${FUNCTIONS[@]}"; do
    zip="$LAMBDA_DIR/$f/bootstrap.zip"
    [[ -f "$zip" ]] || die "expected $zip was not produced"
    bytes="$(stat -c %s "$zip")"
    printf '%-10s %10d bytes  %6s  %s\n' "$f" "$bytes" "$(numfmt --to=iec "$bytes")" "${zip#"$ROOT"/}"
done
