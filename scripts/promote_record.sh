#!/usr/bin/env bash
# Move each model's @production alias in the registry to the version a deploy record names:
#   scripts/promote_record.sh deploy-record-prod.json
# What scripts/deploy.sh runs once prod's smoke test passed, and what .github/workflows/cd.yml
# runs with staging's credentials when prod lives in an account of its own (the registry is
# staging's). --force: these versions already serve in prod (applied, released, smoke-tested);
# the alias records it, and the live-evaluation gate is for choosing what to deploy, not for
# recording what did. NAME@ALIAS entries (the shadow) keep their own alias and are skipped.
set -euo pipefail
shopt -s inherit_errexit
RECORD="${1:?usage: scripts/promote_record.sh DEPLOY_RECORD}"
RIDES="${RIDES:-.venv/bin/rides}"
ENTRIES="$(python3 -c '
import json, sys
record = json.load(open(sys.argv[1]))
if record.get("environment") != "prod" and record.get("environment") != "stg":
    sys.exit(f"{sys.argv[1]} is not a deploy record")
for model, found in record["models"].items():
    if "@" not in model:
        print(model, found["version"])
' "$RECORD")"
[ -n "$ENTRIES" ] || { echo "promote: $RECORD names no model" >&2; exit 1; }
while read -r MODEL VERSION; do
  "$RIDES" promote --model-name "$MODEL" --version "$VERSION" --alias production --to none --force
done <<<"$ENTRIES"
