#!/usr/bin/env bash
# Deploy one environment from a laptop, the way .github/workflows/cd.yml does:
#   make deploy ENV=stg        (needs: AWS credentials, docker, terraform >= 1.10,
#                               MLFLOW_TRACKING_URI of the shared tracking server)
# Steps: ECR + bucket first (bootstrap) → build and push the image → (PROMOTE=1: move
# @production to what @staging serves) → resolve the environment's alias → apply everything
# → smoke test (one ride in, its prediction out).
set -euo pipefail
cd "$(dirname "$0")/.."

ENV="${ENV:?set ENV=stg or ENV=prod}"
# Each environment serves its own registry alias: stg → @staging, prod → @production.
if [ "$ENV" = "prod" ]; then ALIAS="${MODEL_ALIAS:-production}"; else ALIAS="${MODEL_ALIAS:-staging}"; fi
TAG="${IMAGE_TAG:-$(git rev-parse --short=12 HEAD)}"
RIDES=".venv/bin/rides"
TF="terraform -chdir=infra"
VARS=(-var-file="vars/${ENV}.tfvars" -var "image_tag=${TAG}" -var "batch_image_tag=batch-${TAG}")

: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the shared MLflow tracking server}"
export RIDES_TARGET=aws  # never talk to a local stack by accident
unset AWS_ENDPOINT_URL

$TF init -input=false -reconfigure -backend-config="backend/${ENV}.hcl"
# The repository must exist before the first push; the bucket before the first training run.
$TF apply -input=false -auto-approve "${VARS[@]}" -target=module.ecr -target=module.model_bucket

REPO="$($TF output -raw ecr_repository_url)"
REGISTRY="${REPO%%/*}"
aws ecr get-login-password --region "$(aws configure get region || echo "${AWS_DEFAULT_REGION:-us-east-1}")" \
  | docker login --username AWS --password-stdin "$REGISTRY"
# Tags are immutable: build and push each image once per commit.
push_image() {  # push_image <tag> <dockerfile>
  if ! aws ecr describe-images --repository-name "${REPO#*/}" --image-ids "imageTag=$1" >/dev/null 2>&1; then
    docker build -f "$2" -t "${REPO}:$1" .
    docker push "${REPO}:$1"
  fi
}
push_image "${TAG}" lambda_function/Dockerfile
push_image "batch-${TAG}" lambda_function/Dockerfile.batch

MODEL_VARS=()
# model name → the Terraform variables that carry its location and version
for entry in "ride-duration:model_uri:model_version" "ride-fare:fare_model_uri:fare_model_version" \
             "ride-tip:tip_model_uri:tip_model_version"; do
  IFS=: read -r MODEL URI_VAR VERSION_VAR <<<"$entry"
  if [ "${PROMOTE:-0}" = "1" ]; then
    $RIDES promote --model-name "$MODEL" --version staging --alias "$ALIAS" --to none || continue
  fi
  if MODEL_JSON="$($RIDES resolve "${MODEL}@${ALIAS}" 2>/dev/null)"; then
    URI="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["uri"])' <<<"$MODEL_JSON")"
    VERSION="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' <<<"$MODEL_JSON")"
    MODEL_VARS+=(-var "${URI_VAR}=${URI}" -var "${VERSION_VAR}=${VERSION}")
    echo "model: ${MODEL} v${VERSION} (${URI})"
  else
    echo "no ${MODEL} at @${ALIAS} yet: its consumer's event source mapping stays disabled"
  fi
done

$TF apply -input=false -auto-approve "${VARS[@]}" "${MODEL_VARS[@]}"

if [[ " ${MODEL_VARS[*]} " == *" model_uri="* ]]; then  # the duration consumer is live
  $RIDES smoke --timeout 180
fi
