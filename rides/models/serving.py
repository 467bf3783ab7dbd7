"""What a service or job serves, found the same way everywhere (the web service, batch
scoring, promotion checks): an explicit artifact location, or the registry's NAME@ALIAS."""

from __future__ import annotations

import os

from rides.models.registry import PromotionError, parse_model_ref, resolve
from rides.stream.model import LoadedModel, ModelLoadError, load_model


def load_serving_model(ref: str = "ride-duration@production", model_uri: str | None = None) -> LoadedModel:
    """MODEL_URI (or `model_uri`) if set, else the registry's NAME@ALIAS / NAME/VERSION.
    Errors are ModelLoadError or RegistryError, each one line."""
    name, version_or_alias = parse_model_ref(ref)
    uri = model_uri or os.environ.get("MODEL_URI")
    if uri:
        return load_model(
            uri, name=os.environ.get("MODEL_NAME") or name, version=os.environ.get("MODEL_VERSION") or None
        )
    found = resolve(name, version_or_alias)
    return load_model(found.uri, name=name, version=found.version)


def check_artifacts(uri: str) -> None:
    """The MLmodel file and the flavor's model file must be readable at `uri` (before any
    alias moves to it)."""
    try:
        load_model(uri)
    except ModelLoadError as exc:
        raise PromotionError(f"artifacts are missing or unusable: {exc}") from None
