"""Roll a registered model out to the running consumer.

Order matters: resolve the version, check its artifacts, update the consumer, and only then
move the alias, so a bad promotion changes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rides.models.registry import PromotionError, Registered, quick_of, resolve, set_alias
from rides.models.serving import check_artifacts
from rides.settings import state_dir


def local_control_file(model_name: str) -> Path:
    """The local event-source runner watches this file for the model it should serve."""
    return state_dir() / "consumers" / f"{model_name}.json"


def read_local_model(model_name: str) -> dict | None:
    path = local_control_file(model_name)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def roll_out_local(model: Registered, role: str = "production") -> Path:
    """Tell the local consumer of `model.name` (its shadow consumer with role "shadow") what to serve."""
    path = local_control_file(model.name if role == "production" else f"{model.name}@{role}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"MODEL_URI": model.uri, "MODEL_VERSION": model.version, "promoted_at": time.time()}))
    tmp.replace(path)  # atomic: the runner never reads half a file
    return path


def roll_out_lambda(model: Registered, function_name: str, lambda_client=None, alias: str = "live") -> str:
    """Serve the model from the function's `live` alias: a new version with MODEL_URI and
    MODEL_VERSION changed (its other variables kept), then the alias moved to it. Returns the
    version. This is the operator's direct path; scripts/deploy.sh is the gated one (Terraform,
    CodeDeploy, smoke test)."""
    import boto3

    from rides.models.release import Release, release

    lam = lambda_client or boto3.client("lambda")
    current = lam.get_function_configuration(FunctionName=function_name)
    variables = dict(current.get("Environment", {}).get("Variables", {}))
    variables.update({"MODEL_URI": model.uri, "MODEL_VERSION": model.version})
    lam.update_function_configuration(FunctionName=function_name, Environment={"Variables": variables})
    lam.get_waiter("function_updated_v2").wait(FunctionName=function_name)
    version = lam.publish_version(FunctionName=function_name, Description=f"{model.name} version {model.version}")[
        "Version"
    ]
    try:
        target = lam.get_alias(FunctionName=function_name, Name=alias)["AliasArn"]
    except lam.exceptions.ResourceNotFoundException:
        target = function_name  # made without the alias (by hand): it serves $LATEST, which has the model
    else:
        release([Release(function_name, alias, version)], lambda_client=lam, codedeploy_client=None)
    # A mapping left disabled for want of a model (Terraform with an empty model_uri) starts now.
    for mapping in lam.list_event_source_mappings(FunctionName=target).get("EventSourceMappings", []):
        if mapping.get("State") == "Disabled":
            lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    return version


def promote(
    model_name: str,
    version_or_alias: str,
    *,
    alias: str = "production",
    target: str = "local",
    function_name: str | None = None,
    role: str = "production",
) -> Registered:
    """`role` "shadow": roll the version out to the model's shadow consumer (on AWS, the shadow
    function) instead, beside production; its predictions are evaluated, never decided on."""
    model = resolve(model_name, version_or_alias)
    check_artifacts(model.uri)
    if target == "local":
        roll_out_local(model, role)
    elif target == "lambda":
        if not function_name:
            raise PromotionError("--function is required to roll out to Lambda")
        roll_out_lambda(model, function_name)
    elif target != "none":
        raise PromotionError(f"unknown rollout target {target!r} (local, lambda or none)")
    # Last: the alias says what is running, so it moves only once the rollout worked.
    set_alias(model, alias)
    model.alias = alias
    if role == "production":  # the web service's quick model of the same run goes with it
        model.quick = quick_of(model)
        if model.quick is not None:
            set_alias(model.quick, alias)
            model.quick.alias = alias
    return model
