"""Where a model comes from: a cascade directory, an exported ONNX file or an MLflow model URI.

:func:`load_model` is how the CLI (``--model``) and ``facecascade evaluate`` open a
model; it imports MLflow (through :mod:`facecascade.registry`) only for a URI and
onnxruntime only for an ``.onnx`` file.
"""

from __future__ import annotations

from pathlib import Path

from .cascade import Cascade, load_cascade
from .config import Config

#: prefixes of the MLflow model URIs :func:`load_model` accepts
URI_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")


def load_model(spec: str | Path, *, cfg: Config | None = None) -> Cascade:
    """Load a cascade from a local artifact directory, an ``.onnx`` file or an MLflow model URI.

    A path ending in ``.onnx`` (written by ``facecascade export``) gives a
    :class:`facecascade.export.OnnxCascade`: same ``predict``/``predict_level``,
    ``cfg`` and ``levels``, nets run by onnxruntime.
    For a URI, the tracking server is ``MLFLOW_TRACKING_URI`` or else
    ``cfg.mlflow.tracking_uri`` (relative SQLite paths against the working directory).
    """
    text = str(spec)
    if text.startswith(URI_PREFIXES):
        from .registry import download_cascade
        from .tracking import configure

        configure(cfg or Config(), project_dir=Path.cwd())
        return load_cascade(download_cascade(text))
    path = Path(text)
    if path.suffix.lower() == ".onnx" and not path.is_dir():
        from .export import load_onnx

        return load_onnx(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory (or use a models:/ URI)")
    return load_cascade(path)
