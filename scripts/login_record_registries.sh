#!/usr/bin/env bash
# Log docker in to every ECR registry a deploy record's images come from, with the credentials
# in effect (.github/workflows/cd.yml: staging's role, before prod's deploy copies the images
# by digest from staging's account).
set -euo pipefail
shopt -s inherit_errexit
RECORD="${1:?usage: scripts/login_record_registries.sh DEPLOY_RECORD}"
REGISTRIES="$(python3 -c '
import json, sys
print("\n".join(sorted({i["repository"].split("/", 1)[0] for i in json.load(open(sys.argv[1]))["images"].values()})))
' "$RECORD")"
[ -n "$REGISTRIES" ] || { echo "login: $RECORD names no images" >&2; exit 1; }
while read -r REGISTRY; do
  REGION="$(cut -d. -f4 <<<"$REGISTRY")"  # <account>.dkr.ecr.<region>.amazonaws.com
  aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin "$REGISTRY"
done <<<"$REGISTRIES"
