#!/usr/bin/env bash
# Validates infra/template.yaml offline: `sam validate --lint`, then cfn-lint on the template
# expanded by aws-sam-translator (catches bad references inside AWS::Serverless::* resources).
# Installs the venv first (install-tools.sh --sam) if needed. Dummy credentials: no AWS call.
# Usage: infra/scripts/lint-template.sh [template]   (default infra/template.yaml)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEMPLATE="${1:-$ROOT/infra/template.yaml}"
[[ -f "$TEMPLATE" ]] || die "no template at $TEMPLATE"

bash "$SCRIPTS_DIR/install-tools.sh" --sam
use_venv
use_dummy_aws

# The Rust test reads the template with serde_yaml, which rejects CloudFormation short tags.
if grep -nE '^[^#]*([[:space:],[{]|^)![A-Za-z]' "$TEMPLATE" >&2; then
    die "short-form intrinsic tags (!Ref, !Sub, ...) found: use the long form (Ref:, Fn::Sub:)"
fi

say "sam validate --lint -t ${TEMPLATE#"$ROOT"/}"
cd "$ROOT"
sam validate --lint -t "$TEMPLATE"

# cfn-lint does not look inside AWS::Serverless::* resources, so a Ref to a missing table in
# a policy template passes `sam validate --lint`: lint the expanded template as well.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "cfn-lint on the expanded template (aws-sam-translator)"
python "$SCRIPTS_DIR/sam-expand.py" "$TEMPLATE" "$tmp/expanded.json"
cfn-lint -- "$tmp/expanded.json"
say "template ok"
