#!/usr/bin/env bash
# Deploy one environment, the way .github/workflows/cd.yml does:
#   make deploy ENV=stg                                   serves @staging, writes deploy-record-stg.json
#   make deploy ENV=prod PROMOTE=1 DEPLOY_RECORD=deploy-record-stg.json
#                                                         serves exactly what staging deployed and
#                                                         smoke-tested, then moves @production
#   make deploy ENV=prod                                  serves @production again (a redeploy)
# Prod in an account of its own (docs: README, "Two accounts"): staging exports its models
# (EXPORT_MODELS_TO=dir), prod imports them into its own bucket (IMPORT_MODELS_FROM=dir), with
# BACKEND_CONFIG=backend/prod-account.hcl VAR_FILE=vars/prod-account.tfvars.
# Needs: AWS credentials, AWS_REGION (no default: it is where everything goes), docker,
# terraform >= 1.10, MLFLOW_TRACKING_URI of the tracking server. Global names derive from the
# account: the state bucket is <NAME_PREFIX>-terraform-state-<account>-<region> (infra/bootstrap
# creates it), the model bucket <NAME_PREFIX>-models-<env>-<account>-<region>.
#
# Steps: the models to serve → what serves now (to roll back to) → bootstrap (ECR, bucket) →
# images → apply (publishes a version of every function, moves nothing) → release (each `live`
# alias to its new version, through CodeDeploy) → smoke test → failed release or smoke test:
# aliases back, apply what served before, exit 1, no registry alias moves → passed: move
# @production (PROMOTE=1) → write the deploy record.
# No failure is swallowed: every command that fails stops the deploy with its message, and a
# registry that cannot be read never turns into "no model" (which would disable a consumer).
set -euo pipefail
shopt -s inherit_errexit # a failing command inside $(...) fails the deploy too
cd "$(dirname "$0")/.."

ENV="${ENV:?set ENV=stg or ENV=prod}"
PROMOTE="${PROMOTE:-0}"
RIDES="${RIDES:-.venv/bin/rides}"
TF="terraform -chdir=infra"
RECORD_OUT="${RECORD_OUT:-deploy-record-${ENV}.json}"
BACKEND_CONFIG="${BACKEND_CONFIG:-backend/${ENV}.hcl}"
VAR_FILE="${VAR_FILE:-vars/${ENV}.tfvars}"

: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the shared MLflow tracking server}"
export RIDES_TARGET=aws  # never talk to a local stack by accident
unset AWS_ENDPOINT_URL

fail() { echo "deploy ${ENV}: $*" >&2; exit 1; }
# json FILE EXPRESSION: evaluate a Python expression over the JSON in FILE (bound to `d`).
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# The models to deploy, by the names of Terraform's `models` map: the stream's (the registry
# Terraform reads too), the web service's quick model and the shadow (NAME@ALIAS: that alias, not
# the environment's).
STREAM_MODELS="$(json rides/stream/models.json '" ".join(m["model_name"] for m in d)')" \
  && [ -n "$STREAM_MODELS" ] || fail "cannot read the models from rides/stream/models.json"
read -r -a MODELS <<<"${STREAM_MODELS} ride-duration-quick ride-duration@shadow"

# One setting says where everything goes, and nothing falls back to a region of its own.
AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
[ -n "$AWS_REGION" ] || fail "set AWS_REGION (or AWS_DEFAULT_REGION): the region ${ENV} is deployed to"
export AWS_REGION AWS_DEFAULT_REGION="$AWS_REGION"
NAME_PREFIX="${NAME_PREFIX:-rides}"
ACCOUNT="$(aws sts get-caller-identity --query Account --output text)" \
  || fail "cannot read the AWS account: no credentials?"
[[ "$ACCOUNT" =~ ^[0-9]{12}$ ]] || fail "unexpected account id from sts get-caller-identity: '$ACCOUNT'"
STATE_BUCKET="${STATE_BUCKET:-${NAME_PREFIX}-terraform-state-${ACCOUNT}-${AWS_REGION}}"
COMMIT="$(git rev-parse HEAD)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# -- what to serve ----------------------------------------------------------------------------
if [ "$ENV" = "prod" ] && [ "$PROMOTE" = "1" ]; then
  # Exactly what staging deployed and smoke-tested: never @staging as it is now.
  : "${DEPLOY_RECORD:?PROMOTE=1 deploys staging's record: set DEPLOY_RECORD to staging's deploy-record-stg.json}"
  [ "$(json "$DEPLOY_RECORD" 'd["environment"]')" = "stg" ] || fail "$DEPLOY_RECORD is not a staging record"
  [ "$(json "$DEPLOY_RECORD" 'd["smoke_test"]')" = "passed" ] || fail "staging's smoke test did not pass"
  # The infrastructure comes from this checkout and the images from staging's registry by
  # digest: both must be what staging deployed and tested.
  RECORDED="$(json "$DEPLOY_RECORD" 'd.get("commit") or ""')"
  [ -n "$RECORDED" ] || fail "$DEPLOY_RECORD names no commit (an older record): deploy staging again first"
  [ "$RECORDED" = "$COMMIT" ] || fail "this checkout is ${COMMIT}, but staging deployed and tested ${RECORDED}"
  [ -n "$(json "$DEPLOY_RECORD" '"ok" if all(i.get("digest", "").startswith("sha256:") for i in d.get("images", {}).values()) and d.get("images") else ""')" ] \
    || fail "$DEPLOY_RECORD names no image digests: deploy staging again first"
  cp "$DEPLOY_RECORD" "$WORK/wanted.json"
  TAG="$(json "$WORK/wanted.json" 'd["image_tag"]')"
else
  if [ "$ENV" = "prod" ]; then ALIAS="${MODEL_ALIAS:-production}"; else ALIAS="${MODEL_ALIAS:-staging}"; fi
  TAG="${IMAGE_TAG:-$(git rev-parse --short=12 HEAD)}"
  echo '{"models": {}}' >"$WORK/wanted.json"
  for MODEL in "${MODELS[@]}"; do
    REF="$MODEL"; [[ "$MODEL" == *@* ]] || REF="${MODEL}@${ALIAS}"
    # {} when the registry says there is no such alias; a registry error stops the deploy here.
    "$RIDES" resolve --missing-ok "${REF}" >"$WORK/${MODEL}.json" \
      || fail "cannot read ${REF} from the registry; nothing was changed"
    python3 - "$WORK/wanted.json" "$MODEL" "$WORK/${MODEL}.json" <<'PY'
import json, sys
wanted, model, found = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
record = json.load(open(wanted))
if found:
    record["models"][model] = {"uri": found["uri"], "version": str(found["version"])}
json.dump(record, open(wanted, "w"))
PY
  done
fi

VARS=(-var-file="${VAR_FILE}" -var "aws_region=${AWS_REGION}" -var "name_prefix=${NAME_PREFIX}"
      -var "image_tag=${TAG}" -var "batch_image_tag=batch-${TAG}")
model_vars() {  # model_vars FILE: the models of a deploy record as Terraform's `models` map (JSON, no spaces)
  echo "-var" "models=$(json "$1" 'json.dumps({m: {"uri": v["uri"], "version": str(v.get("version") or "")} for m, v in d["models"].items() if v.get("uri")}, separators=(",", ":"))')"
}

# -- bootstrap and image ------------------------------------------------------------------------
$TF init -input=false -reconfigure -backend-config="${BACKEND_CONFIG}" \
  -backend-config="bucket=${STATE_BUCKET}" -backend-config="region=${AWS_REGION}"
# What serves now, before anything changes: the rollback target ({} on a first deploy).
$TF output -json >"$WORK/outputs.json"
python3 - "$WORK/outputs.json" "$WORK/before.json" <<'PY'
import json, sys
deployed = json.load(open(sys.argv[1])).get("deployed", {}).get("value") or {}
models = {m: v for m, v in (deployed.get("models") or {}).items() if v.get("uri")}
json.dump({"image_tag": deployed.get("image_tag"), "image_digests": deployed.get("image_digests") or {},
           "models": models}, open(sys.argv[2], "w"))
PY

# A model served now must not silently lose its consumer because its alias went missing (a
# shadow, NAME@shadow, may end: that is how a challenger is retired).
for MODEL in $(json "$WORK/before.json" '" ".join(m for m in d["models"] if "@" not in m)'); do
  [ -n "$(json "$WORK/wanted.json" "d['models'].get('${MODEL}', {}).get('uri') or ''")" ] \
    || fail "${MODEL} is served now but has nothing to deploy: refusing to disable its consumer"
done

# The repository must exist before the first push; the bucket before the first training run.
$TF apply -input=false -auto-approve "${VARS[@]}" -target=module.ecr -target=module.model_bucket
if [ -n "${IMPORT_MODELS_FROM:-}" ]; then
  # Prod in its own account: the exported versions go into this account's bucket (the bucket
  # exists now), checked to load from there; the record is rewritten to point at them.
  [ "$ENV" = "prod" ] && [ "$PROMOTE" = "1" ] || fail "IMPORT_MODELS_FROM goes with ENV=prod PROMOTE=1"
  "$RIDES" models import --from "$IMPORT_MODELS_FROM" --bucket "$($TF output -raw model_bucket)" \
    --record-out "$WORK/wanted.json"
fi
REPO="$($TF output -raw ecr_repository_url)"
REGISTRY="${REPO%%/*}"
aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$REGISTRY"
digest_of() {  # digest_of <tag>: the digest of REPO:<tag>, or nothing when there is no such image
  local out
  if out="$(aws ecr describe-images --repository-name "${REPO#*/}" --image-ids "imageTag=$1" \
      --query 'imageDetails[0].imageDigest' --output text 2>&1)"; then
    echo "$out"
  elif grep -q ImageNotFoundException <<<"$out"; then
    echo ""
  else
    fail "cannot look up image $1: $out"
  fi
}
record_image() {  # record_image <tag> <digest>
  echo "$1 ${REPO} $2" >>"$WORK/images.txt"
}
if [ "$ENV" = "prod" ] && [ "$PROMOTE" = "1" ]; then
  # Staging's images, copied by digest: prod never builds. An image already here under the tag
  # must be that digest (tags are immutable), and a copy must arrive as that digest.
  for IMAGE in $(json "$WORK/wanted.json" '" ".join(d["images"])'); do
    SOURCE="$(json "$WORK/wanted.json" "d['images']['${IMAGE}']['repository']")"
    DIGEST="$(json "$WORK/wanted.json" "d['images']['${IMAGE}']['digest']")"
    HERE="$(digest_of "$IMAGE")"
    if [ -z "$HERE" ]; then
      docker buildx imagetools create --tag "${REPO}:${IMAGE}" "${SOURCE}@${DIGEST}" \
        || fail "cannot copy ${SOURCE}@${DIGEST} to ${REPO}:${IMAGE}"
      HERE="$(digest_of "$IMAGE")"
    fi
    [ "$HERE" = "$DIGEST" ] || fail "${REPO}:${IMAGE} is ${HERE:-missing}, not the ${DIGEST} staging tested"
    record_image "$IMAGE" "$DIGEST"
  done
else
  # Tags are immutable: build and push each image once per commit, FROM the base image's digest at
  # that moment, for Lambda's platform (an ARM laptop or Docker Desktop's containerd store would
  # otherwise push an arm64 image or a manifest list, which Lambda refuses).
  pin_base() {  # pin_base <dockerfile>: <base tag>@<its digest now>
    local base digest
    base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$1")"
    [ -n "$base" ] || fail "$1 has no ARG BASE_IMAGE"
    digest="$(docker buildx imagetools inspect "$base" --format '{{json .Manifest}}' \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')" || fail "cannot resolve the digest of $base"
    [[ "$digest" == sha256:* ]] || fail "cannot resolve the digest of $base: got '$digest'"
    echo "${base}@${digest}"
  }
  push_image() {  # push_image <tag> <dockerfile>
    local base digest
    digest="$(digest_of "$1")"
    if [ -n "$digest" ]; then
      echo "image ${REPO}:$1 is already there (${digest})"
    else
      base="$(pin_base "$2")"
      docker build --platform linux/amd64 --provenance=false --build-arg "BASE_IMAGE=${base}" -f "$2" -t "${REPO}:$1" .
      docker push "${REPO}:$1"
      echo "$1 ${base}" >>"$WORK/bases.txt"
      digest="$(digest_of "$1")"
      [[ "$digest" == sha256:* ]] || fail "pushed ${REPO}:$1 but the registry names no digest for it"
    fi
    record_image "$1" "$digest"
  }
  push_image "${TAG}" lambda_function/Dockerfile
  push_image "batch-${TAG}" lambda_function/Dockerfile.batch
  push_image "web-${TAG}" web/Dockerfile
fi
# The functions run repository@digest: exactly the images just recorded.
IMAGE_DIGESTS="$(python3 -c 'import json, sys; print(json.dumps({t: d for t, _, d in (l.split() for l in open(sys.argv[1]))}))' "$WORK/images.txt")"
VARS+=(-var "image_digests=${IMAGE_DIGESTS}")

# -- apply, release, test, and roll back or promote --------------------------------------------
read -r -a NEW_VARS <<<"$(model_vars "$WORK/wanted.json" | tr '\n' ' ')"
# Publishes a version of every function; the `live` aliases (what the triggers call) stay put.
$TF apply -input=false -auto-approve "${VARS[@]}" "${NEW_VARS[@]}"
$TF output -json releases >"$WORK/releases.json"

# The rides CLI (smoke test, promotion) finds this environment's resources by their names.
$TF output -json names >"$WORK/names.json"
NAMES="$(json "$WORK/names.json" \
  '"\n".join(f"RIDES_{k.upper()}={v}" for k, v in d.items() if k in ("input_stream", "predictions_stream", "decisions_stream", "completions_stream", "dead_letter_queue", "failed_batches_queue", "decisions_table", "evaluations_table", "consumer_function", "model_bucket"))')"
while IFS= read -r line; do export "${line?}"; done <<<"$NAMES"
WEB_URL="$($TF output -json web_service_url)"

roll_back() {  # roll_back REASON: serve what served before, then fail
  echo "deploy ${ENV}: $1: rolling back to what served before" >&2
  # The aliases first (traffic returns at once), where the release recorded them ...
  if [ -f "$WORK/aliases-before.json" ]; then
    "$RIDES" release "$WORK/releases.json" --roll-back-to "$WORK/aliases-before.json"
  fi
  # ... then the configuration, so that the state and its `deployed` output say what serves
  # (a first deploy has nothing before it: its mappings are switched off, model_uri empty).
  local previous_tag rollback old_vars
  previous_tag="$(json "$WORK/before.json" 'd["image_tag"] or ""')"
  rollback=(-var-file="${VAR_FILE}" -var "aws_region=${AWS_REGION}" -var "name_prefix=${NAME_PREFIX}")
  if [ -n "$previous_tag" ]; then
    rollback+=(-var "image_tag=${previous_tag}" -var "batch_image_tag=batch-${previous_tag}"
               -var "image_digests=$(json "$WORK/before.json" 'json.dumps(d["image_digests"])')")
  fi
  read -r -a old_vars <<<"$(model_vars "$WORK/before.json" | tr '\n' ' ')"
  $TF apply -input=false -auto-approve "${rollback[@]}" "${old_vars[@]}"
  fail "$1; rolled back, no alias moved"
}

# Each alias to its new version: CodeDeploy shifts traffic (canary in prod) and stops and rolls
# back on the function's alarms; where the aliases stood is recorded before any moves.
if ! "$RIDES" release "$WORK/releases.json" --before-out "$WORK/aliases-before.json"; then
  roll_back "the release did not complete"
fi

SMOKE=skipped
if [ -n "$(json "$WORK/wanted.json" "d['models'].get('ride-duration', {}).get('uri') or ''")" ]; then
  # One ride through everything just deployed: each production model's prediction from the
  # version in the record, the decision, the evaluation's join of its completion, and the web
  # service's answer (IAM-signed).
  SMOKE_ARGS=(--timeout "${SMOKE_TIMEOUT:-180}" --record "$WORK/wanted.json")
  if [ "$WEB_URL" != "null" ]; then SMOKE_ARGS+=(--web-url "$(json <(echo "$WEB_URL") 'd')"); fi
  if "$RIDES" smoke "${SMOKE_ARGS[@]}"; then
    SMOKE=passed
  else
    roll_back "smoke test failed"
  fi
fi

# MOVE_REGISTRY_ALIAS=0: the registry is in another account (prod in an account of its own); the
# pipeline moves @production there afterwards, with staging's credentials, from this record.
if [ "$ENV" = "prod" ] && [ "$PROMOTE" = "1" ] && [ "${MOVE_REGISTRY_ALIAS:-1}" = "1" ]; then
  # Last: the alias says what serves, so it moves only once the new version is live and tested.
  # --force: the versions already serve here (applied, released, smoke-tested); the alias records
  # it. The live-evaluation gate is for choosing what to deploy: `rides promote` by an operator.
  RIDES="$RIDES" scripts/promote_record.sh "$WORK/wanted.json"
fi

touch "$WORK/bases.txt"
python3 - "$WORK/wanted.json" "$RECORD_OUT" "$ENV" "$TAG" "$SMOKE" "$WORK/bases.txt" "$WORK/images.txt" "$COMMIT" <<'PY'
import json, sys, time
wanted, out, env, tag, smoke, bases, images, commit = sys.argv[1:]
before = json.load(open(wanted))
record = {"environment": env, "image_tag": tag, "models": before["models"], "commit": commit,
          # every image the functions run, by digest: prod copies exactly these
          "images": {t: {"repository": r, "digest": d} for t, r, d in (l.split() for l in open(images))},
          "smoke_test": smoke, "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          # the base image digest each image built by this deploy was built FROM
          "base_images": dict(line.split(" ", 1) for line in open(bases).read().splitlines())
          or before.get("base_images", {})}
json.dump(record, open(out, "w"), indent=2)
print(f"deployed {env}: image {tag}, " + ", ".join(f"{m} v{v['version']}" for m, v in record["models"].items()))
PY
if [ -n "${EXPORT_MODELS_TO:-}" ] && [ "$SMOKE" = "passed" ]; then
  # For a prod in another account: exactly these versions' artifacts, carried by the pipeline.
  "$RIDES" models export --record "$RECORD_OUT" --to "$EXPORT_MODELS_TO"
fi
