"""The cascade as an MLflow model: the pyfunc model, the model registry and its ``champion``.

:func:`log_cascade_model` logs a cascade artifact directory as an MLflow pyfunc
model (models-from-code, so no pickle: the model object is :class:`CascadeModel`,
whose ``predict`` is :func:`facecascade.request.predict_frame`), with a signature,
an input example and the request limits of ``serve``. :func:`register_cascade`
makes a new registry version carrying the lineage tags
(:mod:`facecascade.lineage`), and :func:`promote_if_better` moves the ``champion``
alias only to a version that beats the current champion's ``val_nme`` and whose
pipeline run is ``FINISHED``. Registry stages are deprecated in MLflow; aliases
are used instead (``models:/<name>@champion``).

Typical use, in the register stage (``parent`` is the pipeline run of
:func:`facecascade.tracking.parent_run`, ``tags`` its :func:`facecascade.lineage.lineage`)::

    with tracking.fail_on_error(client, parent):
        uri = log_cascade_model(client, parent, cascade_dir, cfg, tags=tags)
    tracking.finish_run(client, parent)
    version = register_cascade(uri, name=cfg.mlflow.model_name, val_nme=val_nme,
                               lineage=tags, client=client)
    promote_if_better(client, cfg.mlflow.model_name, version, val_nme)
"""

from __future__ import annotations

import base64
import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from .cascade import load_cascade, read_manifest
from .inference import BOX_EDGE_COLUMNS, XY_COLUMNS
from .lineage import LINEAGE_KEYS
from .request import RequestError, predict_frame
from .tracking import SAFE_KEY, redacted_tags

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config

logger = logging.getLogger(__name__)

CHAMPION = "champion"


class CascadeModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc model of a landmark cascade.

    ``load_context`` loads the cascade from artifact ``cascade`` (with the fast path's
    compiled passes: a served model answers many requests of a face or two) and the
    request limits from the model config; ``predict`` is :func:`facecascade.request.predict_frame`,
    with request errors raised as ``MlflowException(INVALID_PARAMETER_VALUE)``, which
    ``mlflow models serve`` answers with HTTP 400 and the reason.
    """

    def load_context(self, context: Any) -> None:
        self.cascade = load_cascade(context.artifacts["cascade"], device="cpu")
        if hasattr(self.cascade, "load_compiled"):  # the fast path (an artifact's default)
            self.cascade.load_compiled()
        conf = dict(context.model_config or {})
        self.limits = {"max_image_bytes": int(conf.get("max_image_bytes", 10_000_000)),
                       "max_image_pixels": int(conf.get("max_image_pixels", 40_000_000)),
                       "allow_paths": bool(conf.get("allow_paths", True))}

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return predict_frame(self.cascade, model_input, **self.limits)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


_MODEL_CODE = '''\
"""MLflow models-from-code entry of a facecascade model; the logic is in facecascade.registry."""
import mlflow

from facecascade.registry import CascadeModel

mlflow.models.set_model(CascadeModel())
'''


def model_signature() -> Any:
    """The pyfunc signature: ``image`` string and optional box doubles in; faces out."""
    inputs = Schema([ColSpec("string", "image"),
                     *(ColSpec("double", c, required=False) for c in BOX_EDGE_COLUMNS)])
    outputs = Schema([ColSpec("long", "row"), ColSpec("long", "face"),
                      *(ColSpec("double", c) for c in (*BOX_EDGE_COLUMNS, *XY_COLUMNS))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_request(*, size: int = 96) -> pd.DataFrame:
    """A one-row request: a grey base64 PNG of ``size`` pixels with a centred box."""
    import cv2

    yy, xx = np.mgrid[0:size, 0:size]
    image = ((xx + yy) * (255 / (2 * size))).astype(np.uint8)
    ok, png = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover
        raise RuntimeError("cv2.imencode failed")
    m = size / 6
    box = (m, m, size - m, size - m)
    return pd.DataFrame({"image": [base64.b64encode(png.tobytes()).decode("ascii")],
                         **{c: [v] for c, v in zip(BOX_EDGE_COLUMNS, box, strict=True)}})


def _requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "opencv-python", "pillow", "pyyaml",
                 "tqdm"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def log_cascade_model(client: MlflowClient, run_id: str, cascade_dir: str | Path,
                      cfg: Config, *, name: str = "cascade", allow_paths: bool = True,
                      bundle_code: bool = True, tags: Mapping[str, Any] | None = None) -> str:
    """Log a cascade artifact directory as a pyfunc model of run ``run_id``.

    The model is logged from code (no pickle): MLflow stores a three-line entry
    file that instantiates :class:`CascadeModel`, the cascade directory as
    artifact ``cascade``, a signature (:func:`model_signature`), an input example
    (:func:`example_request`, checked by MLflow by predicting it) and, as model
    config, the limits ``serve.max_image_bytes`` and ``serve.max_image_pixels``.
    With ``bundle_code`` the ``facecascade`` package is copied into the model
    (``code/``), so a served model runs the code it was logged with.

    Parameters
    ----------
    client : MlflowClient
        Must use the current tracking URI (see :func:`facecascade.tracking.configure`).
    run_id : str
        Run the model belongs to: the pipeline run. Log before the run is
        finished; register after.
    cascade_dir : str or Path
        Directory written by :func:`facecascade.cascade.save_cascade`.
    cfg : Config
        Parameters (``serve`` limits).
    name : str
        Name of the logged model.
    allow_paths : bool
        Whether requests may name image files on the serving machine.
    bundle_code : bool
        Copy the ``facecascade`` package into the model.
    tags : mapping, optional
        Tags of the logged model (redacted), e.g. the lineage.

    Returns
    -------
    str
        The model URI, ``models:/<model_id>``.
    """
    if client.tracking_uri != mlflow.get_tracking_uri():
        raise ValueError(f"client tracking URI {client.tracking_uri!r} is not MLflow's current "
                         f"{mlflow.get_tracking_uri()!r}; call configure() first")
    cascade_dir = Path(cascade_dir)
    manifest = read_manifest(cascade_dir)
    package_dir = Path(__file__).resolve().parent
    config = {"max_image_bytes": cfg.serve.max_image_bytes,
              "max_image_pixels": cfg.serve.max_image_pixels,
              "allow_paths": allow_paths}
    with tempfile.TemporaryDirectory(prefix="facecascade-model-") as tmp:
        code_file = Path(tmp) / "facecascade_model.py"
        code_file.write_text(_MODEL_CODE, encoding="utf-8")
        info = Model.log(
            artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
            python_model=str(code_file),
            artifacts={"cascade": str(cascade_dir)},
            model_config=config,
            signature=model_signature(),
            input_example=example_request(),
            pip_requirements=_requirements(),
            code_paths=[str(package_dir)] if bundle_code else None,
            metadata={"facecascade_levels": int(manifest["levels"]),
                      "facecascade_manifest_version": manifest.get("version")},
            tags=redacted_tags(tags or {}),
        )
    return info.model_uri


def _model_run_id(client: MlflowClient, model_uri: str) -> str | None:
    """Run id the logged model ``models:/<model_id>`` (or ``runs:/<id>/...``) comes from."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/", 1)[0]
    if model_uri.startswith("models:/"):
        model_id = model_uri[len("models:/"):]
        if "/" not in model_id and "@" not in model_id:
            return client.get_logged_model(model_id).source_run_id
    return None


def register_cascade(model_uri: str, *, name: str, val_nme: float, lineage: Mapping[str, str],
                     client: MlflowClient | None = None) -> str:
    """Register ``model_uri`` as a new version of registered model ``name``.

    The version gets tags ``git_commit``, ``data_dvc_md5``, ``params_hash``,
    ``pipeline_key`` (from ``lineage``, which must hold them), ``val_nme`` and
    ``pipeline_run_id``. Registering is refused unless the model's run is
    ``FINISHED``. Registering the same ``pipeline_key`` again returns the existing
    version (a re-run register stage does not duplicate it).

    Returns
    -------
    str
        The version number.
    """
    client = client or mlflow.MlflowClient()
    missing = [k for k in LINEAGE_KEYS if not lineage.get(k)]
    if missing:
        raise ValueError(f"lineage lacks {missing}; give {list(LINEAGE_KEYS)}")
    if not math.isfinite(val_nme):
        raise ValueError(f"val_nme == {val_nme!r}, must be finite")
    run_id = _model_run_id(client, model_uri)
    if run_id is None:
        raise ValueError(f"cannot tell the run of model {model_uri!r}; log it with "
                         "log_cascade_model")
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise RuntimeError(f"pipeline run {run_id} is {status}: finish it (finish_run) before "
                           "registering its model")
    key = str(lineage["pipeline_key"])
    if "'" in name or not SAFE_KEY.match(key):
        raise ValueError(f"model name {name!r} must not contain quotes and pipeline key "
                         f"{key!r} must match {SAFE_KEY.pattern}")
    for mv in client.search_model_versions(f"name = '{name}' and tags.pipeline_key = '{key}'"):
        if mv.tags.get("pipeline_run_id") == run_id:
            logger.info("model %s version %s already holds pipeline %s", name, mv.version, key)
            return str(mv.version)
    tags = {**redacted_tags(lineage), "val_nme": repr(float(val_nme)), "pipeline_run_id": run_id}
    mv = mlflow.register_model(model_uri, name, tags=tags)
    return str(mv.version)


def promote_if_better(client: MlflowClient, name: str, version: str | int, val_nme: float, *,
                      alias: str = CHAMPION) -> bool:
    """Point ``alias`` at ``version`` if its ``val_nme`` beats the current holder's.

    Lower is better; a tie keeps the current holder. A holder without a readable
    ``val_nme`` tag is replaced. The version's pipeline run must be ``FINISHED``.

    Returns
    -------
    bool
        True when ``version`` holds the alias afterwards.

    Raises
    ------
    RuntimeError
        If the version's run is not FINISHED.
    """
    version = str(version)
    mv = client.get_model_version(name, version)
    run_id = mv.run_id or mv.tags.get("pipeline_run_id")
    if not run_id:
        raise RuntimeError(f"model {name} version {version} has no run; cannot check that "
                           "its pipeline finished")
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise RuntimeError(f"model {name} version {version}: pipeline run {run_id} is "
                           f"{status}, only versions of FINISHED runs may become {alias!r}")
    if not math.isfinite(val_nme):
        logger.warning("val_nme == %r; %s stays where it is", val_nme, alias)
        return False
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None:
        if str(current.version) == version:
            return True
        try:
            best = float(current.tags["val_nme"])
        except (KeyError, ValueError):
            logger.warning("%s version %s has no readable val_nme tag; replacing it", alias,
                           current.version)
            best = math.inf
        if not val_nme < best:
            logger.info("%s stays at version %s (val_nme %.5f <= %.5f)", alias, current.version,
                        best, val_nme)
            return False
    client.set_registered_model_alias(name, alias, version)
    logger.info("%s -> %s version %s (val_nme %.5f)", alias, name, version, val_nme)
    return True


def download_cascade(model_uri: str, *, dst: str | Path | None = None) -> Path:
    """Download a logged cascade model (``models:/name@alias``, ``runs:/...``) and return
    the cascade artifact directory inside it (the one holding ``manifest.json``).

    The tracking URI is MLflow's current one (``MLFLOW_TRACKING_URI``, or the one set by
    :func:`facecascade.tracking.configure`). An unknown model, alias or run is a one-line
    ValueError naming the URI and the store, no traceback.
    """
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=None if dst is None else str(dst)))
    except MlflowException as exc:
        first = (str(exc.message).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{model_uri}: cannot load from {mlflow.get_tracking_uri()}: {first}"
                         ) from None
    found = sorted(local.rglob("manifest.json"))
    if not found:
        raise FileNotFoundError(f"{model_uri}: no cascade artifact (manifest.json) in the model")
    return found[0].parent
