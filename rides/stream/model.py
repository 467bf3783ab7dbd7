"""Load an MLflow model from S3 (or a local directory), cache it, report its version.

The consumer's cold start matters, so this reads the MLflow model format itself instead of
importing mlflow (over 1.5 s here): it fetches `MLmodel`, then only the file the chosen
flavor needs.

- `onnx` flavor (the project's own models): served with onnxruntime on a float32 matrix
  whose column names are stored in the model's metadata (`rides_features`).
- `sklearn` flavor (MLOps Zoomcamp models, e.g. DictVectorizer + regressor pipelines):
  unpickled and called with the Zoomcamp feature dicts.
- `models:/name@alias` URIs are resolved through the MLflow registry first, which needs
  mlflow and a reachable tracking server.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import yaml

from rides import RidesError
from rides.stream.features import RideFeatures


class ModelLoadError(RidesError):
    """The model at a URI cannot be loaded; the message names the URI and the reason."""


@dataclass
class LoadedModel:
    uri: str
    name: str
    version: str
    flavor: str
    feature_names: tuple[str, ...] = ()
    _predict: Any = field(default=None, repr=False)

    def predict(self, features: RideFeatures) -> np.ndarray:
        """One vectorized call for the whole batch; returns float64 predictions."""
        if len(features) == 0:
            return np.empty(0)
        return np.asarray(self._predict(features), dtype=np.float64).reshape(-1)


def _cache_dir() -> Path:
    # Lambda only lets us write to /tmp; the same place works everywhere else.
    return Path(os.environ.get("RIDES_MODEL_CACHE", Path(tempfile.gettempdir()) / "rides-models"))


def _fetch(uri: str, relative: str, s3=None) -> Path:
    """Return a local path for `relative` inside the model directory at `uri` (`s3`: the client for s3:// URIs)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else uri) / relative
        if not path.exists():
            raise ModelLoadError(f"cannot load model from {uri}: {relative} not found")
        return path
    if parsed.scheme != "s3":
        raise ModelLoadError(f"cannot load model from {uri}: unsupported scheme {parsed.scheme!r}")
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/").rstrip("/")
    key = f"{prefix}/{relative}" if prefix else relative
    local = _cache_dir() / hashlib.sha256(uri.encode()).hexdigest()[:16] / relative
    if local.exists():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        tmp = local.with_suffix(local.suffix + ".part")
        # get_object, not download_file: the transfer manager's thread pool and buffers cost
        # hundreds of MB of peak memory for a file of a few MB.
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with tmp.open("wb") as handle:
            for block in body.iter_chunks(1 << 20):
                handle.write(block)
        tmp.replace(local)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        reason = (
            f"s3://{bucket}/{key} does not exist"
            if code in ("404", "NoSuchKey")
            else (f"S3 error {code}: {exc.response.get('Error', {}).get('Message', '')}")
        )
        raise ModelLoadError(f"cannot load model from {uri}: {reason}") from None
    except BotoCoreError as exc:
        raise ModelLoadError(f"cannot load model from {uri}: {exc}") from None
    return local


def _onnx_predictor(path: Path, feature_names: tuple[str, ...]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One Lambda vCPU-ish: more threads only add contention on 1–2 cores.
    options.intra_op_num_threads = int(os.environ.get("RIDES_ONNX_THREADS", "1"))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(features: RideFeatures):
        return session.run(None, {input_name: features.matrix(feature_names)})[0]

    return predict


def _sklearn_predictor(path: Path, serialization: str):
    # The model bucket is trusted by design (only the training pipeline writes to it), so
    # pickles and every type in a skops file are loaded as they are.
    if serialization == "skops":  # MLflow 3's default for sklearn
        import skops.io

        model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    else:
        with path.open("rb") as handle:
            if serialization == "cloudpickle":
                import cloudpickle

                model = cloudpickle.load(handle)
            else:
                model = pickle.load(handle)

    def predict(features: RideFeatures):
        return model.predict(features.dicts())

    return predict


def resolve_registry_uri(uri: str) -> str:
    """`models:/name@alias` or `models:/name/3` → the artifact location, by MLflow's own resolver
    (MLFLOW_TRACKING_URI names the registry; needs mlflow, which the images leave out)."""
    try:
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    except ImportError:
        raise ModelLoadError(f"cannot load model from {uri}: models:/ URIs need mlflow") from None
    try:
        return ModelsArtifactRepository.get_underlying_uri(uri)
    except Exception as exc:  # mlflow raises many types; one clear message is what we want
        raise ModelLoadError(f"cannot load model from {uri}: {exc}") from None


def load_model(uri: str, *, name: str = "ride-duration", version: str | None = None) -> LoadedModel:
    """Load the MLflow model directory at `uri`. Errors become one `ModelLoadError`."""
    if not uri:
        raise ModelLoadError("cannot load model: MODEL_URI is not set")
    location = resolve_registry_uri(uri) if uri.startswith("models:/") else uri
    if not location.startswith("s3://"):
        return _load(uri, location, None, name, version)
    from rides.stream.aws import short_lived_client

    s3 = short_lived_client("s3")
    try:
        return _load(uri, location, s3, name, version)
    finally:
        # The S3 client and what botocore parsed for it (~12 MB) are needed only at start-up:
        # free them before the first batch needs the memory.
        del s3
        gc.collect()


def read_metadata(uri: str) -> dict:
    """The MLmodel file's `metadata` (what training stored beside the model: its features, the
    drift reference), without loading the model itself."""
    location = resolve_registry_uri(uri) if uri.startswith("models:/") else uri
    s3 = None
    if location.startswith("s3://"):
        from rides.stream.aws import short_lived_client

        s3 = short_lived_client("s3")
    try:
        spec = yaml.safe_load(_fetch(location, "MLmodel", s3).read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"cannot load model from {uri}: MLmodel is not valid YAML ({exc})") from None
    return (spec or {}).get("metadata") or {}


def _load(uri: str, location: str, s3, name: str, version: str | None) -> LoadedModel:
    try:
        spec = yaml.safe_load(_fetch(location, "MLmodel", s3).read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"cannot load model from {uri}: MLmodel is not valid YAML ({exc})") from None
    flavors = (spec or {}).get("flavors") or {}
    metadata = spec.get("metadata") or {}
    # The registry version is not inside the artifacts; the deploy passes it (MODEL_VERSION).
    run_version = version or str(spec.get("run_id") or spec.get("model_id") or "unknown")
    try:
        if "onnx" in flavors:
            feature_names = tuple(metadata.get("rides_features") or ())
            if not feature_names:
                raise ModelLoadError(f"cannot load model from {uri}: onnx model has no rides_features")
            path = _fetch(location, flavors["onnx"]["data"], s3)
            return LoadedModel(uri, name, run_version, "onnx", feature_names, _onnx_predictor(path, feature_names))
        if "sklearn" in flavors:
            flavor = flavors["sklearn"]
            path = _fetch(location, flavor["pickled_model"], s3)
            return LoadedModel(
                uri,
                name,
                run_version,
                "sklearn",
                (),
                _sklearn_predictor(path, flavor.get("serialization_format", "pickle")),
            )
    except ModelLoadError:
        raise
    except Exception as exc:  # a corrupt file or a missing library: say which, once
        raise ModelLoadError(f"cannot load model from {uri}: {type(exc).__name__}: {exc}") from None
    raise ModelLoadError(
        f"cannot load model from {uri}: no supported flavor (have {sorted(flavors)}, need onnx or sklearn)"
    )


# A Lambda container serves one model; the local runner may serve a few (duration, fare, tip)
# in one process. Least recently used models go first, so promotions cannot grow memory.
MAX_CACHED_MODELS = 4
_cache: OrderedDict[tuple[str, str, str | None], LoadedModel] = OrderedDict()
_lock = threading.Lock()


def get_model(uri: str, *, name: str = "ride-duration", version: str | None = None) -> LoadedModel:
    """Load once per process (per Lambda container) and reuse; a new URI loads anew."""
    key = (uri, name, version)
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = load_model(uri, name=name, version=version)
            _cache[key] = model
            while len(_cache) > MAX_CACHED_MODELS:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(key)
    return model
