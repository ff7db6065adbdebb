"""Lineage of a pipeline run: the git commit, the ``data.dvc`` hash and the params hash.

These three name what a model was made from. They are tagged on the pipeline's
MLflow run and on every registered model version (:mod:`facecascade.registry`),
and together they give the *pipeline key* that lets the stages of one ``dvc repro``,
each a separate process, find their common MLflow run again
(:func:`facecascade.tracking.parent_run`). :func:`training_runs` adds the MLflow runs
that trained each level and network of a model, read from the level directories.
Nothing here imports MLflow.

Typical use (``root`` is the project directory)::

    tags = lineage(cfg, project_dir=root)
    tags["pipeline_key"] == pipeline_key(git_commit=git_commit(root),
                                         params_hash=params_hash(cfg),
                                         data_md5=dvc_file_md5(root / "data.dvc"))
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config

#: lineage tags every registered version carries (besides ``val_nme`` and ``pipeline_run_id``)
LINEAGE_KEYS = ("git_commit", "data_dvc_md5", "params_hash", "pipeline_key")
#: the file a train stage writes beside a level's weights: its MLflow level and network runs
LEVEL_FILE = "level.json"
#: tag prefixes naming the runs that trained a model: ``+ "1"`` (level), ``+ "F1"`` (network)
LEVEL_RUN_TAG = "facecascade.level_run."
NETWORK_RUN_TAG = "facecascade.network_run."


def git_commit(project_dir: str | Path, *, ignore: Sequence[str] = ("dvc.lock",)) -> str:
    """Commit of the checkout at ``project_dir``, with ``-dirty`` if tracked files changed.

    Untracked files and the paths in ``ignore`` do not count as changes: DVC
    rewrites ``dvc.lock`` after every stage, and a pipeline's commit must read the
    same in all its stages.

    Returns
    -------
    str
        40 hex digits, maybe with ``-dirty``; ``"unknown"`` outside a git checkout.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project_dir), *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                     *(f":(exclude){p}" for p in ignore))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if status else commit


def dvc_file_md5(path: str | Path) -> str:
    """The md5 DVC recorded for the output of a ``.dvc`` file (e.g. ``data.dvc``).

    A directory's md5 ends with ``.dir``. With several outputs, the sha256 of their
    sorted ``path:md5`` lines is returned.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it lists no output with an md5.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .dvc file")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    outs = [o for o in doc.get("outs") or [] if isinstance(o, Mapping) and o.get("md5")]
    if not outs:
        raise ValueError(f"{path}: no output with an md5 (run `dvc add` or `dvc commit`)")
    if len(outs) == 1:
        return str(outs[0]["md5"])
    lines = sorted(f"{o.get('path', '')}:{o['md5']}" for o in outs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def params_hash(cfg: Config) -> str:
    """sha256 (hex) of the canonical JSON of ``cfg.to_dict()`` (sorted keys, no spaces).

    >>> from facecascade.config import Config
    >>> params_hash(Config()) == params_hash(Config())
    True
    """
    text = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def pipeline_key(*, git_commit: str, params_hash: str, data_md5: str) -> str:
    """Key that names one pipeline execution across its stage processes.

    The first 16 hex digits of the sha256 of the three parts; stages of one
    ``dvc repro`` compute the same key and so find the same pipeline run.

    Examples
    --------
    >>> pipeline_key(git_commit="abc", params_hash="def", data_md5="123.dir")
    '2161a5264b3fa05a'
    """
    text = f"git_commit={git_commit}\nparams_hash={params_hash}\ndata_md5={data_md5}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lineage(cfg: Config, *, project_dir: str | Path) -> dict[str, str]:
    """The tags of :data:`LINEAGE_KEYS` for ``cfg`` in the checkout at ``project_dir``.

    ``data_dvc_md5`` is ``"none"`` when ``data.dvc`` does not exist (e.g. the
    procedural data set, made by a stage rather than added with ``dvc add``).
    """
    project_dir = Path(project_dir)
    dvc_file = project_dir / "data.dvc"
    data_md5 = dvc_file_md5(dvc_file) if dvc_file.is_file() else "none"
    commit = git_commit(project_dir)
    phash = params_hash(cfg)
    return {"git_commit": commit, "data_dvc_md5": data_md5, "params_hash": phash,
            "pipeline_key": pipeline_key(git_commit=commit, params_hash=phash,
                                         data_md5=data_md5)}


def training_runs(level_dirs: Sequence[str | Path]) -> dict[str, str]:
    """Tags naming the MLflow runs that trained the weights in ``level_dirs``.

    The train stage writes :data:`LEVEL_FILE` beside each level's weights, with its
    level run and one run per network. DVC caches the directory with the weights,
    so a level reused from the cache (after an edit that retrains only level 3)
    still names the runs that trained it, under an earlier pipeline run.

    Returns
    -------
    dict
        ``{"facecascade.level_run.1": <run id>, ..., "facecascade.network_run.F1":
        <run id>, ...}``: one tag per level and per network.

    Raises
    ------
    ValueError
        A level directory without the file, or a file without its runs (written by
        an older version: retrain that level, ``dvc repro -f train@L``).
    """
    tags: dict[str, str] = {}
    for level_dir in level_dirs:
        path = Path(level_dir) / LEVEL_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            level, level_run, runs = int(doc["level"]), str(doc["level_run_id"]), \
                dict(doc["network_runs"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: no record of the runs that trained this level ({exc}); "
                             "retrain it (dvc repro -f train@L)") from None
        tags[f"{LEVEL_RUN_TAG}{level}"] = level_run
        tags.update({f"{NETWORK_RUN_TAG}{net}": str(run) for net, run in runs.items()})
    return tags
