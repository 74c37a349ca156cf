"""Expands the SAM transform of a template offline and writes plain CloudFormation JSON.

Used by lint-template.sh: cfn-lint on the expanded template checks references made inside
AWS::Serverless::* resources (policy templates, event sources), which `sam validate --lint`
does not. Needs the project venv (aws-sam-translator, PyYAML).
Usage: python sam-expand.py TEMPLATE.yaml OUT.json
"""

import json
import sys

import yaml
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """Offline stand-in for the IAM managed-policy lookup (the template uses policy templates)."""

    def load(self):
        return {}


def main(src_path: str, out_path: str) -> None:
    with open(src_path, encoding="utf-8") as f:
        template = yaml.safe_load(f)
    # Local CodeUri paths are replaced by S3 locations at package time; the translator wants one.
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://placeholder-bucket/code.zip"
    expanded = transform(template, {}, NoManagedPolicies())
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(expanded, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
