"""MLflow tracking, the pyfunc model and the registry: the only module that imports ``mlflow``.

``mlflow`` is imported inside the functions, never at module import.

Runs
----
One *pipeline* run per pipeline execution, one *level* child run per cascade level
and one *network* grandchild run per network::

    pipeline-<key>            tag facecascade.pipeline_key = <key>
    ├── level1                tag mlflow.parentRunId = <pipeline run>
    │   ├── F1                tag mlflow.parentRunId = <level1 run>, created after the fact
    │   ├── EN1
    │   └── NM1
    ├── level2 ...
    └── level3 ...

DVC runs the stages as separate processes, so each stage finds its pipeline run
again through the tag ``facecascade.pipeline_key`` (:func:`parent_run`); the key
comes from :func:`pipeline_key` (git commit, params hash, data hash). Network runs
are written by the driver once its jobs are over (:func:`log_network_run`), with
the jobs' own start and end times and per-epoch timestamps, so that a SQLite store
sees a single writer. No run is left ``RUNNING`` when an exception escapes
(:func:`level_run`, :func:`fail_on_error`).

Model and registry
------------------
:func:`log_cascade_model` logs a cascade artifact directory as an MLflow pyfunc
model (models-from-code, so no pickle: the model object is
:class:`CascadeModel`), with a signature, an input example and the request limits
of ``serve``. :func:`register_cascade` makes a new registry version carrying the
lineage tags, and :func:`promote_if_better` moves the ``champion`` alias only to a
version that beats the current champion's ``val_nme`` and whose pipeline run is
``FINISHED``. Registry stages are deprecated in MLflow; aliases are used instead
(``models:/<name>@champion``).

Nothing secret is logged: parameters and tags pass through :func:`redact`, and
environment variables are never logged.

Typical use
-----------
::

    client = configure(cfg, project_dir=root)
    exp = experiment_id(client, cfg.mlflow.experiment)
    key = pipeline_key(git_commit=git_commit(root), params_hash=params_hash(cfg),
                       data_md5=dvc_file_md5(root / "data.dvc"))
    parent = parent_run(client, exp, key, tags=lineage)           # every stage
    with level_run(client, parent, k, cfg.to_dict()[f"level{k}"]) as level_id:
        for job in jobs:                                            # train stage k
            log_network_run(client, level_id, job)
    with fail_on_error(client, parent):                             # register stage
        uri = log_cascade_model(client, parent, cascade_dir, cfg)
        client.log_metric(parent, "val_nme", val_nme)
        finish_run(client, parent)
    version = register_cascade(uri, name=cfg.mlflow.model_name, val_nme=val_nme,
                               lineage={**lineage, "pipeline_key": key})
    promote_if_better(client, cfg.mlflow.model_name, version, val_nme)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from .cascade import Cascade
    from .config import Config

logger = logging.getLogger(__name__)

PIPELINE_KEY_TAG = "facecascade.pipeline_key"
KIND_TAG = "facecascade.kind"
LEVEL_TAG = "facecascade.level"
NET_TAG = "facecascade.net"
ERROR_TAG = "facecascade.error"
STOPPED_EARLY_TAG = "facecascade.stopped_early"
PARENT_TAG = "mlflow.parentRunId"
CHAMPION = "champion"
#: lineage tags every registered version carries (besides ``val_nme`` and ``pipeline_run_id``)
LINEAGE_KEYS = ("git_commit", "data_dvc_md5", "params_hash", "pipeline_key")
#: columns of a prediction request / response
BOX_COLUMNS = ("box_left", "box_top", "box_right", "box_bottom")
POINT_COLUMNS = tuple(f"{a}{i}" for i in range(1, 6) for a in ("x", "y"))
OUTPUT_COLUMNS = ("row", "face", *BOX_COLUMNS, *POINT_COLUMNS)

_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_SECRET_KEY = re.compile(r"token|secret|password|key", re.IGNORECASE)
#: keys that match the pattern above but are known not to be secrets
_NOT_SECRET = frozenset({"pipeline_key", PIPELINE_KEY_TAG})
_URI_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm",
                             ".ppm", ".pbm", ".jp2", ".gif"})
# MLflow limits (mlflow.utils.validation): values are truncated to these lengths.
_MAX_PARAM_LEN = 6000
_MAX_TAG_LEN = 5000
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000


class NetworkJob(Protocol):
    """What :func:`log_network_run` reads from a finished network job (duck-typed)."""

    net: str
    status: str
    history: Sequence[Mapping[str, Any]]
    best_val_nme: float | None
    best_epoch: int | None
    start: float | None
    end: float | None
    restarts: int
    error: str | None
    weights_path: str | Path | None


class RequestError(ValueError):
    """A prediction request is malformed, too large or its image cannot be decoded."""


# --------------------------------------------------------------------------- setup
def tracking_uri(cfg: Config, *, project_dir: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> str:
    """The tracking (and registry) URI to use.

    ``MLFLOW_TRACKING_URI`` in the environment wins and is returned unchanged.
    Otherwise ``cfg.mlflow.tracking_uri`` is used; a relative SQLite path in it
    (``sqlite:///mlflow.db``) is resolved against ``project_dir`` (the current
    directory when not given), so every stage, whatever its working directory,
    writes the same database. Absolute SQLite paths (``sqlite:////abs/mlflow.db``)
    and other schemes (``http://...``) are returned unchanged.

    Parameters
    ----------
    cfg : Config
        Parameters (``mlflow.tracking_uri``).
    project_dir : str or Path, optional
        Directory relative SQLite paths are resolved against.
    environ : mapping, optional
        Environment to read ``MLFLOW_TRACKING_URI`` from (default ``os.environ``).

    Examples
    --------
    >>> from facecascade.config import Config
    >>> tracking_uri(Config(), project_dir="/proj", environ={})
    'sqlite:////proj/mlflow.db'
    >>> tracking_uri(Config(), environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    'http://127.0.0.1:5000'
    """
    env = os.environ if environ is None else environ
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    uri = cfg.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix):]
        if path and path != ":memory:" and not path.startswith("/"):
            base = Path(project_dir) if project_dir is not None else Path.cwd()
            return prefix + str((base / path).resolve())
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of an absolute SQLite URI, else None."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and uri[len(prefix):].startswith("/"):
        return Path(uri[len(prefix):].split("?", 1)[0])
    return None


def experiment_id(client: MlflowClient, name: str, *, artifact_location: str | None = None,
                  ) -> str:
    """Id of experiment ``name``, created (with ``artifact_location``) when missing.

    Raises
    ------
    ValueError
        If the experiment exists but is deleted.
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment {name!r} is deleted; restore it "
                         f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) "
                         "or set mlflow.experiment to another name")
    return exp.experiment_id


def configure(cfg: Config, *, project_dir: str | Path) -> MlflowClient:
    """Point MLflow at the project's store and experiment; return a client.

    Sets the tracking and registry URIs (:func:`tracking_uri`) and the active
    experiment ``cfg.mlflow.experiment``, creating it if needed. With a SQLite
    store, a new experiment keeps its artifacts in ``mlartifacts/`` beside the
    database (MLflow's default would be ``./mlruns`` in the working directory).

    Parameters
    ----------
    cfg : Config
        Parameters (section ``mlflow``).
    project_dir : str or Path
        Directory relative SQLite paths are resolved against.

    Returns
    -------
    MlflowClient
        Client on that tracking and registry URI.

    Notes
    -----
    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to this
    process's environment (so that subprocesses inherit it); a second call in
    the same process therefore sees that variable and keeps the first store.
    """
    import mlflow

    uri = tracking_uri(cfg, project_dir=project_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    db = _sqlite_path(uri)
    location = (db.parent / "mlartifacts").as_uri() if db is not None else None
    exp_id = experiment_id(client, cfg.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return client


# --------------------------------------------------------------------------- lineage
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
    """sha256 (hex) of the canonical JSON of ``cfg.to_dict()`` (sorted keys, no spaces)."""
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


def _scrub(value: Any) -> Any:
    """Remove ``user:password@`` from URIs inside strings."""
    return _URI_USERINFO.sub("***@", value) if isinstance(value, str) else value


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``mapping`` without secret-looking keys, for anything logged.

    Keys matching ``token|secret|password|key`` (any case) are dropped, except
    the known ``pipeline_key``; nested mappings are redacted too, and
    credentials in URIs (``scheme://user:pass@host``) are masked.

    Examples
    --------
    >>> redact({"lr": 0.1, "api_key": "x", "Auth_Token": "y", "pipeline_key": "k",
    ...         "uri": "http://u:p@host/db"})
    {'lr': 0.1, 'pipeline_key': 'k', 'uri': 'http://***@host/db'}
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        k = str(key)
        last = k.rsplit(".", 1)[-1]
        if k not in _NOT_SECRET and last not in _NOT_SECRET and _SECRET_KEY.search(k):
            continue
        out[k] = redact(value) if isinstance(value, Mapping) else _scrub(value)
    return out


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to strings; lists become JSON."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        k = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{k}."))
        elif isinstance(value, (list, tuple)):
            out[k] = json.dumps(value)
        else:
            out[k] = str(value)
    return out


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log redacted, flattened params in batches (values cut to MLflow's 6000 chars)."""
    from mlflow.entities import Param

    flat = _flatten(redact(params))
    items = [Param(k, v if len(v) <= _MAX_PARAM_LEN else v[:_MAX_PARAM_LEN - 3] + "...")
             for k, v in flat.items()]
    for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])


def _log_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Any]) -> None:
    """Log ``mlflow.entities.Metric`` points in batches of MLflow's maximum size."""
    for i in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=list(metrics[i:i + _MAX_METRICS_PER_BATCH]))


def _tags(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Redacted string tags (values cut to 5000 chars)."""
    return {k: v[:_MAX_TAG_LEN] for k, v in _flatten(redact(mapping)).items()}


def _check_status(status: str) -> str:
    if status not in _RUN_STATUSES:
        raise ValueError(f"status == {status!r}, must be one of {_RUN_STATUSES}")
    return status


def _ms(seconds: float) -> int:
    return int(round(float(seconds) * 1000))


# --------------------------------------------------------------------------- runs
def parent_run(client: MlflowClient, experiment_id: str, key: str, *,
               tags: Mapping[str, Any] | None = None) -> str:
    """Find or create the pipeline run tagged ``facecascade.pipeline_key = key``.

    The newest run with that tag that is not ``FINISHED`` is reused (and set back
    to ``RUNNING`` if an earlier stage failed); otherwise a new run named
    ``pipeline-<key>`` is created. A finished pipeline is never reopened, so a
    forced re-run with the same key gets its own run.

    Parameters
    ----------
    client : MlflowClient
    experiment_id : str
    key : str
        From :func:`pipeline_key`; letters, digits and ``._:-`` only.
    tags : mapping, optional
        Extra tags of a new run (redacted), e.g. the lineage.

    Returns
    -------
    str
        The run id.
    """
    if not _SAFE_KEY.match(key):
        raise ValueError(f"pipeline key {key!r} must match {_SAFE_KEY.pattern}")
    runs = client.search_runs([experiment_id],
                              filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    for run in runs:
        if run.info.status != "FINISHED":
            if run.info.status != "RUNNING":
                logger.info("reopening pipeline run %s (was %s)", run.info.run_id,
                            run.info.status)
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    all_tags = {**_tags(tags or {}), PIPELINE_KEY_TAG: key, KIND_TAG: "pipeline"}
    run = client.create_run(experiment_id, tags=all_tags, run_name=f"pipeline-{key}")
    return run.info.run_id


def fail_pipeline_run(cfg: Config, *, project_dir: str | Path, error: BaseException,
                      status: str = "FAILED") -> str | None:
    """Mark this pipeline's open run FAILED after a stage that does not log to MLflow failed.

    Finds the RUNNING run tagged with this checkout's pipeline key (:func:`lineage`)
    and ends it FAILED with the error as tag ``facecascade.error``, so no pipeline is
    left RUNNING by a failed ``crops``/``predict``/``evaluate`` stage. Creates
    nothing: without a store or such a run it does nothing. Never raises (the
    stage's own error is what the user must see).

    Returns
    -------
    str or None
        The id of the run marked FAILED.
    """
    try:
        uri = tracking_uri(cfg, project_dir=project_dir)
        db = _sqlite_path(uri)
        if db is not None and not db.is_file():
            return None
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.get_experiment_by_name(cfg.mlflow.experiment)
        if exp is None:
            return None
        key = lineage(cfg, project_dir=project_dir)["pipeline_key"]
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'",
            max_results=1)
        if not runs:
            return None
        run_id = runs[0].info.run_id
        client.set_tag(run_id, ERROR_TAG, _error_text(error))
        client.set_terminated(run_id, status=_check_status(status))
        return run_id
    except Exception:  # noqa: BLE001 - never hide the stage's error
        logger.exception("could not mark the pipeline run FAILED")
        return None


def start_level_run(client: MlflowClient, parent_id: str, level: int,
                    params: Mapping[str, Any]) -> str:
    """Create the child run ``level{level}`` of pipeline run ``parent_id`` and log ``params``.

    Prefer :func:`level_run`, which also ends the run. ``params`` may be nested
    (flattened with dots) and pass through :func:`redact`.

    Returns
    -------
    str
        The run id (status ``RUNNING``).
    """
    if level not in (1, 2, 3):
        raise ValueError(f"level == {level!r}, must be 1, 2 or 3")
    parent = client.get_run(parent_id)
    run = client.create_run(parent.info.experiment_id, run_name=f"level{level}",
                            tags={PARENT_TAG: parent_id, KIND_TAG: "level",
                                  LEVEL_TAG: str(level)})
    with fail_on_error(client, run.info.run_id):
        _log_params(client, run.info.run_id, params)
    return run.info.run_id


def finish_run(client: MlflowClient, run_id: str, status: str = "FINISHED", *,
               end_time: float | None = None) -> None:
    """End run ``run_id`` with ``status`` (FINISHED, FAILED or KILLED).

    ``end_time`` is in epoch seconds (now by default).
    """
    client.set_terminated(run_id, status=_check_status(status),
                          end_time=None if end_time is None else _ms(end_time))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_TAG_LEN]


@contextlib.contextmanager
def fail_on_error(client: MlflowClient, *run_ids: str) -> Iterator[None]:
    """Mark ``run_ids`` FAILED (KILLED on Ctrl-C) if the block raises; then re-raise.

    The error text goes to tag ``facecascade.error``. Runs are left alone when the
    block succeeds.
    """
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        for rid in run_ids:
            try:
                client.set_tag(rid, ERROR_TAG, _error_text(exc))
                client.set_terminated(rid, status=status)
            except Exception:  # never hide the original error
                logger.exception("could not mark run %s %s", rid, status)
        raise


@contextlib.contextmanager
def level_run(client: MlflowClient, parent_id: str, level: int,
              params: Mapping[str, Any]) -> Iterator[str]:
    """Context manager around one level's child run.

    Yields the run id; the run ends FINISHED when the block succeeds. If an
    exception escapes, the level run *and* the pipeline run are marked FAILED
    (the next attempt with the same key reopens the pipeline run).

    Examples
    --------
    ::

        with level_run(client, parent, 2, cfg.level(2).to_dict()) as level_id:
            for job in train_level(...):
                log_network_run(client, level_id, job)
    """
    run_id = start_level_run(client, parent_id, level, params)
    with fail_on_error(client, run_id, parent_id):
        yield run_id
    finish_run(client, run_id, "FINISHED")


def _spec_params(net: str) -> dict[str, Any]:
    try:
        from .nets import get_spec
    except ImportError:  # pragma: no cover
        return {}
    try:
        return {"spec": get_spec(net).to_dict()}
    except (KeyError, ValueError):
        return {}


_JOB_STATUS = {"finished": "FINISHED", "ok": "FINISHED", "failed": "FAILED",
               "killed": "KILLED"}


def _job_status(status: Any) -> str:
    """MLflow status of a job status (``FINISHED``/``ok``, ``FAILED``/``failed``, ``KILLED``)."""
    try:
        return _JOB_STATUS[str(status).lower()]
    except KeyError:
        raise ValueError(f"job status == {status!r}, must be one of "
                         f"{sorted(set(_JOB_STATUS) | set(_RUN_STATUSES))}") from None


def log_network_run(client: MlflowClient, level_run_id: str, job: NetworkJob, *,
                    params: Mapping[str, Any] | None = None) -> str:
    """Write one network's run under level run ``level_run_id`` after the job is over.

    Called from the driver (one SQLite writer). The run gets the job's start and
    end times, params (``net``, ``spec.*`` from the registry, the job's own
    ``params`` attribute if it has one, then ``params``; all redacted), one point
    per epoch of every number in the history records (``train_loss``, ``val_nme``,
    ``lr``, ``epoch_seconds`` for ``seconds``, ``iterations`` for ``step``, ...;
    step = epoch, timestamp = the record's ``time``), summary metrics
    ``best_val_nme``, ``best_epoch``, ``epochs_run`` and ``restarts``, the
    weights file under artifact ``weights/``, and ends with the job's status.

    Parameters
    ----------
    client : MlflowClient
    level_run_id : str
        The level's run (from :func:`level_run`).
    job : NetworkJob
        Duck-typed result (e.g. ``orchestration.JobResult``): ``net, status
        (FINISHED/ok, FAILED/failed), history, best_val_nme, best_epoch, start, end,
        restarts, error, weights_path``; times in epoch seconds (a missing start or
        end falls back to the history's times, then to now).
    params : mapping, optional
        Extra params, e.g. ``{"train": ...}`` (nested mappings are flattened).

    Returns
    -------
    str
        The network run's id.
    """
    from mlflow.entities import Metric

    status = _job_status(job.status)
    history = list(job.history or [])
    times = [float(h["time"]) for h in history if h.get("time") is not None]
    now = time.time()
    start = float(job.start) if job.start is not None else min(times, default=now)
    end = float(job.end) if job.end is not None else max(times, default=now)
    level_run_ = client.get_run(level_run_id)
    tags = {PARENT_TAG: level_run_id, KIND_TAG: "network", NET_TAG: job.net}
    if LEVEL_TAG in level_run_.data.tags:
        tags[LEVEL_TAG] = level_run_.data.tags[LEVEL_TAG]
    run = client.create_run(level_run_.info.experiment_id, start_time=_ms(start), tags=tags,
                            run_name=job.net)
    run_id = run.info.run_id
    with fail_on_error(client, run_id):
        job_params = getattr(job, "params", None)
        _log_params(client, run_id, {
            "net": job.net, **_spec_params(job.net),
            **(dict(job_params) if isinstance(job_params, Mapping) else {}),
            **dict(params or {})})
        renames = {"seconds": "epoch_seconds", "step": "iterations"}
        metrics = []
        for h in history:
            epoch = int(h["epoch"])
            ts = _ms(h["time"]) if h.get("time") is not None else _ms(end)
            for k, v in h.items():
                if k in ("epoch", "time") or isinstance(v, (str, bool)) or v is None:
                    continue
                if isinstance(v, (int, float, np.number)):
                    metrics.append(Metric(renames.get(k, k), float(v), ts, epoch))
        summary = {"epochs_run": len(history), "restarts": job.restarts or 0}
        if job.best_val_nme is not None:
            summary["best_val_nme"] = job.best_val_nme
        if job.best_epoch is not None:
            summary["best_epoch"] = job.best_epoch
        best_step = int(job.best_epoch) if job.best_epoch is not None else 0
        metrics += [Metric(k, float(v), _ms(end), best_step) for k, v in summary.items()]
        _log_metrics(client, run_id, metrics)
        if job.error:
            client.set_tag(run_id, ERROR_TAG, str(job.error)[:_MAX_TAG_LEN])
        if getattr(job, "stopped_early", None) is not None:
            client.set_tag(run_id, STOPPED_EARLY_TAG, str(bool(job.stopped_early)))
        if job.weights_path and Path(job.weights_path).is_file():
            client.log_artifact(run_id, str(job.weights_path), "weights")
        elif status == "FINISHED":
            logger.warning("network %s finished without a weights file (%s)", job.net,
                           job.weights_path)
    client.set_terminated(run_id, status=status, end_time=_ms(end))
    return run_id


def log_search(client: MlflowClient, experiment_id: str, search: Any, *,
               params: Mapping[str, Any] | None = None,
               artifacts: Sequence[str | Path] = ()) -> str:
    """Write a Ray Tune search (:class:`facecascade.tuning.SearchResult`) to MLflow.

    One run ``tune-{net}`` (tag ``facecascade.kind = search``) holds the space and
    ``params`` as params, the best trial's settings as ``best.*`` params, metric
    ``best_val_nme`` and the ``artifacts`` (e.g. the curves plot and result JSON);
    under it, one child run per trial with its sampled settings, one point per epoch
    of each number in its history (``train_loss``, ``val_nme``, ``lr``), and status
    FINISHED (ran to the end or was stopped early by the scheduler, tag
    :data:`STOPPED_EARLY_TAG`) or FAILED.

    Returns
    -------
    str
        The search run's id.
    """
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, run_name=f"tune-{search.net}",
                            tags={KIND_TAG: "search", NET_TAG: search.net,
                                  LEVEL_TAG: str(search.level)})
    run_id = run.info.run_id
    with fail_on_error(client, run_id):
        _log_params(client, run_id, {"net": search.net, "space": search.space,
                                     "trials": len(search.trials), **dict(params or {})})
        now = _ms(time.time())
        for trial in search.trials:
            child = client.create_run(experiment_id, run_name=trial.trial_id,
                                      tags={PARENT_TAG: run_id, KIND_TAG: "trial",
                                            NET_TAG: search.net})
            cid = child.info.run_id
            _log_params(client, cid, trial.config)
            metrics = [Metric(k, float(v), now, int(h["epoch"]))
                       for h in trial.history for k, v in h.items() if k != "epoch"]
            if trial.history:
                metrics.append(Metric("best_val_nme", trial.best_val_nme, now, 0))
            _log_metrics(client, cid, metrics)
            client.set_tag(cid, STOPPED_EARLY_TAG, str(trial.status == "stopped"))
            if trial.error:
                client.set_tag(cid, ERROR_TAG, trial.error[:_MAX_TAG_LEN])
            client.set_terminated(cid, status="FAILED" if trial.status == "failed"
                                  else "FINISHED")
        if search.reported:
            best = search.best
            _log_params(client, run_id, {"best": {"trial": best.trial_id, **best.config}})
            client.log_metric(run_id, "best_val_nme", best.best_val_nme)
        client.log_metric(run_id, "search_seconds", float(search.seconds))
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# --------------------------------------------------------------------------- model
def _is_path(value: str) -> bool:
    """Whether an ``image`` string names a file rather than holding base64."""
    if value.startswith("data:") or len(value) > 4096 or "\x00" in value:
        return False
    if Path(value).suffix.lower() in _IMAGE_SUFFIXES:  # "." is not a base64 character
        return True
    try:
        return os.path.isfile(value)
    except (OSError, ValueError):
        return False


def _b64decode(value: str, row: int, max_bytes: int) -> bytes:
    """Decode a base64 image string, refusing oversize ones before decoding."""
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(f"row {row}: a data URI image must be base64, "
                               "as in 'data:image/png;base64,...'")
    approx = len(text) * 3 // 4
    if approx > max_bytes:
        raise RequestError(f"row {row}: base64 image of {len(text)} characters decodes to "
                           f"about {approx} bytes, over the limit serve.max_image_bytes = "
                           f"{max_bytes}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"row {row}: image is neither an image file path nor valid "
                           f"base64 ({exc})") from None


def read_request_image(value: Any, row: int, *, max_bytes: int, max_pixels: int,
                       allow_paths: bool = True) -> np.ndarray:
    """Decode the ``image`` cell of request row ``row`` to a BGR uint8 image.

    A string ending in an image suffix (``.png``, ``.jpg``, ...) or naming an
    existing file is a path (when ``allow_paths``); anything else is base64,
    optionally as a ``data:image/...;base64,`` URI. Files and base64 strings over
    ``max_bytes`` are refused before reading or decoding; images whose header
    claims more than ``max_pixels``, and formats without a header parser (whose
    size is unknown before decoding), are refused before decoding their pixels.

    Raises
    ------
    RequestError
        With the row and the reason.
    """
    from .images import ImageError, decode_image, header_from_bytes

    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"row {row}: image must be a non-empty string (a file path or "
                           f"base64), got {type(value).__name__} {value!r:.40}")
    if allow_paths and _is_path(value):
        label = f"image file {value!r}"
        path = Path(value)
        if not path.is_file():
            raise RequestError(f"row {row}: {label} does not exist")
        size = path.stat().st_size
        if size > max_bytes:
            raise RequestError(f"row {row}: {label} has {size} bytes, over the limit "
                               f"serve.max_image_bytes = {max_bytes}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RequestError(f"row {row}: {label} unreadable: {exc.strerror or exc}") from None
    else:
        label = "base64 image"
        data = _b64decode(value, row, max_bytes)
    try:
        if header_from_bytes(data) is None:
            raise RequestError(f"row {row}: {label}: unknown image format (send PNG, JPEG, "
                               "BMP, GIF, TIFF or WebP)")
        return decode_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise RequestError(f"row {row}: {label}: {exc.reason}") from None


def _request_boxes(frame: pd.DataFrame) -> np.ndarray:
    """(n, 4) boxes of the request rows, NaN rows where the face is to be detected."""
    present = [c for c in BOX_COLUMNS if c in frame.columns]
    if not present:
        return np.full((len(frame), 4), np.nan)
    if len(present) != 4:
        missing = [c for c in BOX_COLUMNS if c not in frame.columns]
        raise RequestError(f"box columns come together: got {present}, missing {missing}")
    try:
        boxes = np.stack([pd.to_numeric(frame[c], errors="raise").to_numpy(np.float64)
                          for c in BOX_COLUMNS], axis=1)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"box columns must be numbers or null: {exc}") from None
    for row, box in enumerate(boxes):
        nan = np.isnan(box)
        if nan.all():
            continue
        if nan.any() or not np.isfinite(box).all():
            raise RequestError(f"row {row}: box {box.tolist()} must be 4 finite numbers or "
                               "all null (null = detect the faces)")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RequestError(f"row {row}: box {box.tolist()} must have right > left and "
                               "bottom > top")
    return boxes


def predict_frame(cascade: Cascade, frame: pd.DataFrame, *, max_image_bytes: int,
                  max_image_pixels: int, allow_paths: bool = True) -> pd.DataFrame:
    """Landmarks for a request table: the logic of :class:`CascadeModel`, without MLflow.

    Parameters
    ----------
    cascade : Cascade
    frame : DataFrame
        Column ``image`` (file path or base64 PNG/JPEG) and optional
        ``box_left, box_top, box_right, box_bottom`` (NaN = detect faces). A row
        with a box is one face; a row without is an image, all of whose detected
        faces are returned.
    max_image_bytes, max_image_pixels : int
        Request limits (``serve`` section).
    allow_paths : bool
        Whether ``image`` may name a file on this machine.

    Returns
    -------
    DataFrame
        One row per face: ``row`` (request row), ``face`` (index within the row's
        image), the box and ``x1, y1, ..., x5, y5``: the last level's points (LE, RE,
        N, LM, RM) in image pixels. Rows whose image has no detected face give none.

    Raises
    ------
    RequestError
        Malformed request, image too large or undecodable; the message names the row.
    """
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"the request must be a table, got {type(frame).__name__}")
    if "image" not in frame.columns:
        raise RequestError(f"the request needs a column 'image', got {list(frame.columns)}")
    boxes_in = _request_boxes(frame)
    parts: list[pd.DataFrame] = []
    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    index: list[int] = []
    rows: list[int] = []
    faces: list[int] = []
    pixels = 0

    def flush() -> None:
        nonlocal pixels
        if boxes:
            b = np.asarray(boxes, np.float64).reshape(-1, 4)
            pts = cascade.predict(images, b, np.asarray(index, np.int64))
            final = pts[max(pts)].reshape(len(b), 10)
            part = pd.DataFrame({"row": np.asarray(rows, np.int64),
                                 "face": np.asarray(faces, np.int64)})
            for j, c in enumerate(BOX_COLUMNS):
                part[c] = b[:, j]
            for j, c in enumerate(POINT_COLUMNS):
                part[c] = final[:, j]
            parts.append(part)
        for items in (images, boxes, index, rows, faces):
            items.clear()
        pixels = 0

    for row, value in enumerate(frame["image"].tolist()):
        image = read_request_image(value, row, max_bytes=max_image_bytes,
                                   max_pixels=max_image_pixels, allow_paths=allow_paths)
        if np.isnan(boxes_in[row]).all():
            from .detect import find_faces

            found = find_faces(image, cascade.cfg.detect)
        else:
            found = boxes_in[row][None]
        if not len(found):
            continue
        # bound the memory of a request: predict whenever a batch holds an image's worth
        if pixels + image.shape[0] * image.shape[1] > max_image_pixels:
            flush()
        images.append(image)
        pixels += image.shape[0] * image.shape[1]
        for face, box in enumerate(found):
            boxes.append(box)
            index.append(len(images) - 1)
            rows.append(row)
            faces.append(face)
    flush()
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("row", "face") else np.float64)
                             for c in OUTPUT_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def __getattr__(name: str) -> Any:
    # PEP 562: CascadeModel subclasses mlflow's PythonModel, so it is built on first use
    # and mlflow is not imported with this module.
    if name == "CascadeModel":
        return _cascade_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _cascade_model_class() -> type:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class CascadeModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc model of a landmark cascade.

        ``load_context`` loads the cascade from artifact ``cascade`` and the request
        limits from the model config; ``predict`` is :func:`predict_frame`, with
        request errors raised as ``MlflowException(INVALID_PARAMETER_VALUE)``, which
        ``mlflow models serve`` answers with HTTP 400 and the reason.
        """

        def load_context(self, context: Any) -> None:
            from .cascade import load_cascade

            self.cascade = load_cascade(context.artifacts["cascade"], device="cpu")
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

    CascadeModel.__module__ = __name__
    CascadeModel.__qualname__ = "CascadeModel"
    return CascadeModel


_MODEL_CODE = '''\
"""MLflow models-from-code entry of a facecascade model; the logic is in facecascade.tracking."""
import mlflow

from facecascade.tracking import CascadeModel

mlflow.models.set_model(CascadeModel())
'''


def model_signature() -> Any:
    """The pyfunc signature: ``image`` string and optional box doubles in; faces out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image"),
                     *(ColSpec("double", c, required=False) for c in BOX_COLUMNS)])
    outputs = Schema([ColSpec("long", "row"), ColSpec("long", "face"),
                      *(ColSpec("double", c) for c in (*BOX_COLUMNS, *POINT_COLUMNS))])
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
    return pd.DataFrame({"image": [base64.b64encode(png.tobytes()).decode("ascii")],
                         "box_left": [m], "box_top": [m], "box_right": [size - m],
                         "box_bottom": [size - m]})


def _requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "opencv-python", "pyyaml"):
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
        Must use the current tracking URI (see :func:`configure`).
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
    import mlflow
    from mlflow.models import Model

    from .cascade import read_manifest

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
            tags=_tags(tags or {}),
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
    import mlflow

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
    if "'" in name or not _SAFE_KEY.match(key):
        raise ValueError(f"model name {name!r} must not contain quotes and pipeline key "
                         f"{key!r} must match {_SAFE_KEY.pattern}")
    for mv in client.search_model_versions(f"name = '{name}' and tags.pipeline_key = '{key}'"):
        if mv.tags.get("pipeline_run_id") == run_id:
            logger.info("model %s version %s already holds pipeline %s", name, mv.version, key)
            return str(mv.version)
    tags = {**_tags(lineage), "val_nme": repr(float(val_nme)), "pipeline_run_id": run_id}
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
    from mlflow.exceptions import MlflowException

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


def child_runs(client: MlflowClient, parent_id: str) -> Iterable[Any]:
    """Child runs of ``parent_id`` (a pipeline's levels, a level's networks), oldest first."""
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              order_by=["attributes.start_time ASC"])


def download_cascade(model_uri: str, *, dst: str | Path | None = None) -> Path:
    """Download a logged cascade model (``models:/name@alias``, ``runs:/...``) and return
    the cascade artifact directory inside it (the one holding ``manifest.json``).

    The tracking URI is MLflow's current one (``MLFLOW_TRACKING_URI`` or :func:`configure`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=None if dst is None else str(dst)))
    except MlflowException as exc:  # unknown model, alias or run; one line, no traceback
        first = (str(exc.message).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{model_uri}: cannot load from {mlflow.get_tracking_uri()}: {first}"
                         ) from None
    found = sorted(local.rglob("manifest.json"))
    if not found:
        raise FileNotFoundError(f"{model_uri}: no cascade artifact (manifest.json) in the model")
    return found[0].parent


def lineage(cfg: Config, *, project_dir: str | Path, data_file: str = "data.dvc"
            ) -> dict[str, str]:
    """Lineage tags of a pipeline run: git commit, ``data.dvc`` hash, params hash, and the
    pipeline key derived from the three (which finds the parent run across stages)."""
    project_dir = Path(project_dir)
    dvc_file = project_dir / data_file
    data_md5 = dvc_file_md5(dvc_file) if dvc_file.is_file() else "none"
    commit = git_commit(project_dir)
    phash = params_hash(cfg)
    return {"git_commit": commit, "data_dvc_md5": data_md5, "params_hash": phash,
            "pipeline_key": pipeline_key(git_commit=commit, params_hash=phash,
                                         data_md5=data_md5)}
