"""MLflow runs: the tree of a pipeline run, and Ray Tune searches.

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
comes from :func:`facecascade.lineage.pipeline_key` (git commit, params hash, data
hash). Network runs are written by the driver once its jobs are over
(:func:`log_network_run`), with the jobs' own start and end times and per-epoch
timestamps, so that a SQLite store sees a single writer. No run is left
``RUNNING`` when an exception escapes (:func:`level_run`, :func:`fail_on_error`,
:func:`fail_pipeline_run`), nor when only part of the pipeline runs: every stage
that opens the pipeline run ends it (:func:`end_stage`), FINISHED with the list of
the stages that ran; the next stage with the same key reopens it, until the
register stage marks it complete. The model logged by the register stage, and the
registry, are in :mod:`facecascade.registry`.

Nothing secret is logged: parameters and tags pass through :func:`redact`, and
environment variables are never logged.

Typical use (``root`` is the project directory)::

    client = configure(cfg, project_dir=root)
    tags = lineage.lineage(cfg, project_dir=root)
    parent = parent_run(client, experiment_id(client, cfg.mlflow.experiment),
                        tags["pipeline_key"], tags=tags)                # every stage
    with level_run(client, parent, k, dataclasses.asdict(cfg.level(k))) as level_id:
        for job in result.jobs.values():                               # train stage k
            log_network_run(client, level_id, job)
    end_stage(client, parent, f"train@{k}")
    end_stage(client, parent, "register", complete=True)               # register stage

This module and :mod:`facecascade.registry` are the only ones that import ``mlflow``;
library modules import them inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from .lineage import lineage

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config

logger = logging.getLogger(__name__)

PIPELINE_KEY_TAG = "facecascade.pipeline_key"
KIND_TAG = "facecascade.kind"
LEVEL_TAG = "facecascade.level"
NET_TAG = "facecascade.net"
ERROR_TAG = "facecascade.error"
STOPPED_EARLY_TAG = "facecascade.stopped_early"
#: the pipeline stages that ended well under a pipeline run, in order (``train@1,train@2``)
STAGES_TAG = "facecascade.stages"
#: ``true`` once the register stage ended the pipeline run; ``false`` until then
COMPLETE_TAG = "facecascade.complete"
PARENT_TAG = "mlflow.parentRunId"

_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_SECRET_KEY = re.compile(r"token|secret|password|key", re.IGNORECASE)
#: keys that match the pattern above but are known not to be secrets
_NOT_SECRET = frozenset({"pipeline_key", PIPELINE_KEY_TAG})
_URI_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
SAFE_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
# MLflow limits (mlflow.utils.validation): values are truncated to these lengths.
_MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 5000
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
    uri = tracking_uri(cfg, project_dir=project_dir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    db = _sqlite_path(uri)
    location = (db.parent / "mlartifacts").as_uri() if db is not None else None
    exp_id = experiment_id(client, cfg.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return client


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
    flat = _flatten(redact(params))
    items = [Param(k, v if len(v) <= _MAX_PARAM_LEN else v[:_MAX_PARAM_LEN - 3] + "...")
             for k, v in flat.items()]
    for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])


def _log_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Any]) -> None:
    """Log ``mlflow.entities.Metric`` points in batches of MLflow's maximum size."""
    for i in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=list(metrics[i:i + _MAX_METRICS_PER_BATCH]))


def redacted_tags(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Redacted string tags (values cut to 5000 chars)."""
    return {k: v[:MAX_TAG_LEN] for k, v in _flatten(redact(mapping)).items()}


def _check_status(status: str) -> str:
    if status not in _RUN_STATUSES:
        raise ValueError(f"status == {status!r}, must be one of {_RUN_STATUSES}")
    return status


def _ms(seconds: float) -> int:
    return int(round(float(seconds) * 1000))


# --------------------------------------------------------------------------- runs
def _complete(run: Any) -> bool:
    """Whether a pipeline run is over for good (its register stage ended it).

    Runs made before :data:`COMPLETE_TAG` existed count as complete when FINISHED.
    """
    tag = run.data.tags.get(COMPLETE_TAG)
    return tag == "true" if tag is not None else run.info.status == "FINISHED"


def parent_run(client: MlflowClient, experiment_id: str, key: str, *,
               tags: Mapping[str, Any] | None = None) -> str:
    """Find or create the pipeline run tagged ``facecascade.pipeline_key = key``.

    The newest run with that tag that is not complete (:func:`end_stage` with
    ``complete``) is reused, and set back to ``RUNNING`` if an earlier stage ended
    it or failed; otherwise a new run named ``pipeline-<key>`` is created. A
    complete pipeline is never reopened, so a forced re-run with the same key gets
    its own run.

    Parameters
    ----------
    client : MlflowClient
    experiment_id : str
    key : str
        From :func:`facecascade.lineage.pipeline_key`; letters, digits and ``._:-`` only.
    tags : mapping, optional
        Extra tags of a new run (redacted), e.g. the lineage.

    Returns
    -------
    str
        The run id.
    """
    if not SAFE_KEY.match(key):
        raise ValueError(f"pipeline key {key!r} must match {SAFE_KEY.pattern}")
    for run in _key_runs(client, experiment_id, key):
        if not _complete(run):
            if run.info.status != "RUNNING":
                logger.info("reopening pipeline run %s (was %s)", run.info.run_id,
                            run.info.status)
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    all_tags = {**redacted_tags(tags or {}), PIPELINE_KEY_TAG: key, KIND_TAG: "pipeline",
                COMPLETE_TAG: "false"}
    run = client.create_run(experiment_id, tags=all_tags, run_name=f"pipeline-{key}")
    return run.info.run_id


def _key_runs(client: MlflowClient, experiment_id: str, key: str) -> list[Any]:
    """The pipeline runs tagged with ``key``, newest first."""
    return client.search_runs([experiment_id],
                              filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                              order_by=["attributes.start_time DESC"], max_results=50)


def end_stage(client: MlflowClient, parent_id: str, stage: str, *,
              complete: bool = False) -> None:
    """Record that pipeline stage ``stage`` ended well, and end the pipeline run FINISHED.

    Every stage that opens the pipeline run ends it this way, so a run of part of
    the pipeline (``dvc exp run train@1``) leaves no run ``RUNNING``: the run is
    FINISHED, tag :data:`STAGES_TAG` lists the stages that ran, in order, and
    :data:`COMPLETE_TAG` says whether the whole pipeline did (``complete``, given by
    the register stage). The next stage with the same key reopens the run
    (:func:`parent_run`); a stage that fails marks it FAILED instead
    (:func:`fail_on_error`, :func:`fail_pipeline_run`).
    """
    done = [s for s in client.get_run(parent_id).data.tags.get(STAGES_TAG, "").split(",") if s]
    client.log_batch(parent_id, tags=[
        RunTag(STAGES_TAG, ",".join([*(s for s in done if s != stage), stage])),
        RunTag(COMPLETE_TAG, "true" if complete else "false")])
    client.set_terminated(parent_id, status="FINISHED")


def tag_run(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` (redacted, flattened, cut to MLflow's length) on run ``run_id``."""
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in redacted_tags(tags).items()])


def fail_pipeline_run(cfg: Config, *, project_dir: str | Path, error: BaseException,
                      status: str = "FAILED") -> str | None:
    """Mark this pipeline's open run FAILED after a stage that does not log to MLflow failed.

    Finds the run tagged with this checkout's pipeline key
    (:func:`facecascade.lineage.lineage`) that is RUNNING, or FINISHED by an earlier
    stage but not complete (:func:`end_stage`), and ends it FAILED with the error as
    tag ``facecascade.error``: a failed ``crops``/``predict``/``evaluate`` stage shows
    on the pipeline run, which is never left RUNNING. Creates nothing: without a store or
    such a run it does nothing. Never raises (the stage's own error is what the
    user must see).

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
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.get_experiment_by_name(cfg.mlflow.experiment)
        if exp is None:
            return None
        key = lineage(cfg, project_dir=project_dir)["pipeline_key"]
        run = next((r for r in _key_runs(client, exp.experiment_id, key) if not _complete(r)),
                   None)
        if run is None or run.info.status not in ("RUNNING", "FINISHED"):
            return None
        run_id = run.info.run_id
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
    return f"{type(exc).__name__}: {exc}"[:MAX_TAG_LEN]


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

        with level_run(client, parent, 2, dataclasses.asdict(cfg.level(2))) as level_id:
            result = orchestration.train_level(2, crop_dir=..., out_dir=..., cfg=cfg)
            for job in result.jobs.values():
                log_network_run(client, level_id, job)
    """
    run_id = start_level_run(client, parent_id, level, params)
    with fail_on_error(client, run_id, parent_id):
        yield run_id
    finish_run(client, run_id, "FINISHED")


def _spec_params(net: str, widths: str = "paper") -> dict[str, Any]:
    try:
        from .specs import get_spec
    except ImportError:  # pragma: no cover
        return {}
    try:
        return {"spec": get_spec(net, widths).to_dict()}
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
        widths = (job_params.get("widths", "paper") if isinstance(job_params, Mapping)
                  else "paper")
        _log_params(client, run_id, {
            "net": job.net, **_spec_params(job.net, widths),
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
            client.set_tag(run_id, ERROR_TAG, str(job.error)[:MAX_TAG_LEN])
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
                client.set_tag(cid, ERROR_TAG, trial.error[:MAX_TAG_LEN])
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


def child_runs(client: MlflowClient, parent_id: str) -> Iterable[Any]:
    """Child runs of ``parent_id`` (a pipeline's levels, a level's networks), oldest first."""
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              order_by=["attributes.start_time ASC"])
