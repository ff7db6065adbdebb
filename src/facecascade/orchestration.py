"""Train the networks of one cascade level with Ray Train, all of them together.

:func:`facecascade.train.fit_one` knows nothing of Ray: the per-worker function here
gives it its batch sources and an ``on_epoch`` callback that writes the checkpoint
dict and reports it (at most every ``resources.checkpoint_seconds``).

Jobs. A level runs as few Ray Train (V2) jobs as the cluster fits at
once: ``resources.max_concurrent``, or 0 for ``floor(cluster CPUs / cpus_per_net)``
(likewise for GPUs; ``Config.level_resources``: a level may set its own
``cpus_per_net``). Each job has one worker (the nets are tiny, data parallelism
would gain nothing) sized by ``cpus_per_net`` / ``gpus_per_net``, and trains its share
of the level's nets one after another (:func:`deal`: about equal table bytes per
job). A trainer's fixed cost (a controller and worker processes with their imports)
is then paid once per job rather than once per net, and never per epoch. The trainer
is a one-worker ``DataParallelTrainer``: ``TorchTrainer`` is the same with a
``torch.distributed`` process group set up, which nets that share no gradients never
use. Its controller polls the worker every ``resources.poll_seconds``; with
``max_concurrent`` at least the number of nets, every net has a job of its own. Each
job's ``trainer.fit()`` runs in a zero-CPU Ray task, cancelled with its trainer if the
driver is interrupted. Each net keeps its own outcome: a net whose training raises
fails alone, and the next net of its job trains.

Data. The driver reads each net's crop tables once and puts their columns in the
object store; the worker trains on them in memory (:class:`~facecascade.train.ArrayBatches`),
so an epoch costs only its training. A net whose tables are larger than
``in_memory_max_bytes`` (uncompressed, from the Parquet metadata) streams them
instead: ``ray.data.read_parquet`` and ``get_dataset_shard(...).iter_batches`` with a
bounded local shuffle buffer, so a table larger than memory still trains. Its read
tasks request no logical CPU (the trainers' workers may hold every CPU, and read
tasks that wait for one would deadlock the level), which Ray Data's V1 Parquet
source honours and its V2 source does not.

Start-up. A job's trainer, its controller and its worker are three processes, started
together with the other jobs' on the same CPUs; this module imports neither torch nor the
networks at its top, so that the processes that only launch and control a job (and load
this module to find the worker's function) do not import them.

Fault tolerance. ``FailureConfig(max_failures=resources.max_failures)``: a worker that
dies is restarted and resumes from its last reported checkpoint: the exact ``fit_one``
state of the net in training, the best weights of the nets already trained, and a
small ``meta.json`` with every net's per-epoch history, restart count and start
time. The launching task returns the weights and histories from the last checkpoint,
and the driver re-scores each net's weights on its own validation table before it
writes ``out_dir/{net}.pt`` and ``out_dir/{net}.history.json``.

Run names are ``f"{run_name}-{net}-{net}..."`` (a job's nets) under ``storage_path``
(absolute; on a multi-node cluster it must be storage every node sees). With
``restore=True`` a job whose run directory exists continues it (Ray Train resumes a
run of the same name and storage from its latest checkpoint: a crashed stage re-run
with the same ``run_name`` and resources resumes); otherwise an existing run directory
of that name is removed first, so a re-run starts clean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecascade.config import Config, ResourcesConfig

logger = logging.getLogger(__name__)

#: set to a false value, selects Ray Train's deprecated V1 API, which this module refuses
TRAIN_V2_ENV = "RAY_TRAIN_V2_ENABLED"
#: how often a Ray Train V2 controller polls its workers (``resources.poll_seconds``)
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
#: Ray Train V2's preemption watcher (off on a one-node cluster, where nothing is preempted)
TRAIN_PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

STATE_FILE = "state.pt"
META_FILE = "meta.json"
WEIGHTS_SUFFIX = ".best.pt"
COLUMNS = ("pixels", "target", "win_wh", "iod")
#: rows in the worker's local shuffle buffer when streaming (bounded memory; a row group)
DEFAULT_SHUFFLE_BUFFER = 8192
#: of the cluster's object store, the share the jobs running at once may fill with tables
OBJECT_STORE_SHARE = 0.5

#: ``hook(net, record)`` called in the worker after each epoch's report (tests, probes)
EpochHook = Callable[[str, dict[str, Any]], None]


class LevelTrainingError(RuntimeError):
    """One or more networks of a level failed; raised after all jobs of the level ended.

    Attributes
    ----------
    failures : dict of str to str
        Network name to its error message.
    result : LevelResult
        The whole level's outcome, including the networks that succeeded (their
        weights were written).
    """

    def __init__(self, failures: Mapping[str, str], result: LevelResult) -> None:
        self.failures = dict(failures)
        self.result = result
        lines = "\n".join(f"  {net}: {err}" for net, err in self.failures.items())
        super().__init__(f"level {result.level}: {len(self.failures)} of {len(result.jobs)} "
                         f"network(s) failed: {', '.join(self.failures)}\n{lines}")


@dataclass(frozen=True)
class JobResult:
    """Outcome of the training job of one network.

    Attributes
    ----------
    net : str
        Network name.
    status : str
        ``"ok"`` or ``"failed"``.
    history : list of dict
        One record per epoch, across restarts: ``fit_one``'s metrics (``epoch``
        1-based, ``step``, ``train_loss``, ``val_nme``, ``lr``, ``seconds``,
        ``samples_per_s``) plus ``time`` (epoch seconds at the end of the epoch) and
        ``attempt`` (0 for the first run of the worker, ``k`` after ``k`` restarts).
    best_val_nme, best_epoch : float, int or None
        Best validation NME and its 1-based epoch (``None`` if the job failed early).
    start, end : float or None
        Epoch seconds measured inside the worker: when the net's training began (for
        the first net of a job, the worker's first line) and ended.
    seconds : float or None
        ``end - start``.
    restarts : int
        Times the worker resumed from a checkpoint.
    error : str or None
        The failure, for ``status == "failed"``.
    epochs_run : int
        Epochs completed in total.
    stopped_early : bool
        Whether early stopping ended training.
    attempt_starts : list of float
        Start time of every attempt of the worker.
    weights_path, history_path : str or None
        Files written by the driver (absolute paths).
    run_path : str
        Ray Train run directory of the net's job (checkpoints, logs).
    params : dict
        Everything the job was run with: ``train`` (TrainConfig fields), ``resources``,
        ``seed``, ``local_share``, ``widths``, ``level``, ``train_table``, ``val_table``, ``data``
        (``"object store"`` or ``"parquet stream"``, see the module docstring),
        ``run_name`` and ``job_nets`` (the nets of its job, in training order).
    """

    net: str
    status: str
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_nme: float | None = None
    best_epoch: int | None = None
    start: float | None = None
    end: float | None = None
    seconds: float | None = None
    restarts: int = 0
    error: str | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    attempt_starts: list[float] = field(default_factory=list)
    weights_path: str | None = None
    history_path: str | None = None
    run_path: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LevelResult:
    """Outcome of :func:`train_level`.

    Attributes
    ----------
    level : int
        Cascade level.
    jobs : dict of str to JobResult
        One per network, in launch order.
    seconds : float
        Wall time of the whole level in the driver.
    start, end : float
        Epoch seconds in the driver around the whole level.
    concurrency : int
        Jobs the level ran as, all at once.
    """

    level: int
    jobs: dict[str, JobResult]
    seconds: float
    start: float
    end: float
    concurrency: int

    @property
    def failed(self) -> dict[str, str]:
        """Failed networks and their errors."""
        return {n: j.error or "unknown error" for n, j in self.jobs.items() if not j.ok}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- session


def connect(*, num_cpus: int | None = None, runtime_env: Mapping[str, Any] | None = None,
            verbose: bool = False) -> None:
    """Attach to a Ray cluster or start a local one (no-op if already connected).

    Parameters
    ----------
    num_cpus : int, optional
        Local cluster only: logical CPUs (default ``os.cpu_count()``).
    runtime_env : mapping, optional
        Job-level runtime environment passed to ``ray.init`` (e.g. ``py_modules`` or
        ``pip`` for a remote cluster whose image lacks ``facecascade``). Not needed
        locally: the editable install makes the package importable on workers.
    verbose : bool
        Forward worker output to the driver's console and log at INFO.

    Notes
    -----
    With ``RAY_ADDRESS`` set (e.g. under ``ray job submit``) it attaches with
    ``ray.init(address=...)``; otherwise it starts a local Ray without dashboard.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
    }
    if runtime_env is not None:
        kwargs["runtime_env"] = dict(runtime_env)
    address = os.environ.get("RAY_ADDRESS")
    t0 = time.perf_counter()
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    logger.info("ray %s (%s) in %.1f s", ray.__version__, address or "local",
                time.perf_counter() - t0)


def shutdown() -> None:
    """Disconnect from (or stop the local) Ray, if connected."""
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _require_train_v2() -> None:
    """Refuse Ray Train's V1 API: the jobs here are written for V2."""
    value = os.environ.get(TRAIN_V2_ENV, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        raise RuntimeError(f"{TRAIN_V2_ENV}={os.environ[TRAIN_V2_ENV]} selects Ray Train's "
                           "deprecated V1 API; facecascade trains with V2: unset it")


# --------------------------------------------------------------------------- worker side


def _numpy_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The crop columns of a Ray Data numpy batch as 2-D / 1-D numpy arrays."""
    import numpy as np

    out: dict[str, Any] = {}
    for name in COLUMNS:
        col = batch[name]
        if isinstance(col, np.ndarray) and col.dtype == object:
            col = np.stack(col)
        out[name] = np.asarray(col)
    return out


def _shard_source(name: str, batch_size: int, shuffle_buffer: int | None,
                  seed: int) -> Callable[[int], Any]:
    """A ``BatchSource`` streaming the dataset shard ``name`` of this worker."""
    import ray.train

    shard = ray.train.get_dataset_shard(name)

    def source(epoch: int) -> Any:
        kw: dict[str, Any] = {}
        if shuffle_buffer:
            kw = {"local_shuffle_buffer_size": shuffle_buffer,
                  "local_shuffle_seed": seed * 100_003 + epoch}
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", **kw):
            yield _numpy_batch(batch)

    return source


def _batch_sources(config: Mapping[str, Any], net: str, batch_size: int) -> tuple[Any, Any]:
    """(train, val) batch sources of ``net``: its tables in the object store, or streamed."""
    import ray

    from facecascade.train import VAL_BATCH, ArrayBatches

    data = config["data"][net]
    if data["mode"] == "stream":
        return (_shard_source(f"{net}.train", batch_size, config["shuffle_buffer"],
                              config["seed"]),
                _shard_source(f"{net}.val", VAL_BATCH, None, config["seed"]))
    train, val = ray.get([data["train"], data["val"]])
    return (ArrayBatches(train, batch_size, shuffle=True, seed=config["seed"]),
            ArrayBatches(val, VAL_BATCH, shuffle=False, seed=0))


def _new_meta(net: str) -> dict[str, Any]:
    return {"net": net, "status": None, "start": None, "end": None, "restarts": 0,
            "attempt_starts": [], "history": [], "error": None}


def _train_worker(config: dict[str, Any]) -> None:
    """Per-worker function of one job: train its nets one after another, report progress.

    After an epoch or a net, it reports with a checkpoint when ``resources.checkpoint_seconds``
    have passed since the last one (0: every time), and always after its last net: Ray
    Train V2 takes reports from a worker about every 2 s, which on small tables costs
    more than the epochs. A restarted worker loses at most that much work. A
    checkpoint holds ``meta.json`` (every net's history and outcome, and which net is in
    training), that net's exact ``fit_one`` state and the best weights of the nets
    already trained; a restarted worker resumes from it. A net
    whose training raises is recorded as failed and the worker goes on to the next.
    """
    start = time.time()
    import ray.train
    import torch

    from facecascade import train as tr
    from facecascade.config import TrainConfig

    tcfg = TrainConfig(**config["train"])
    hook = config.get("hook")
    metas = {net: _new_meta(net) for net in config["nets"]}
    best: dict[str, Any] = {}
    now: dict[str, Any] = {"net": None}  # the net in training, if any
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            metas, now["net"], best = _read_checkpoint(Path(d))
            if now["net"] is not None:
                resume = tr.load_checkpoint(Path(d) / STATE_FILE)
                metas[now["net"]]["restarts"] += 1
                logger.warning("%s: resuming after epoch %s (restart %d)", now["net"],
                               resume["epoch"], metas[now["net"]]["restarts"])

    last = {"checkpoint": time.monotonic()}

    def report(metrics: Mapping[str, Any], state: Mapping[str, Any] | None,
               force: bool = False) -> None:
        # Ray Train V2 takes about one report per 2 s from a worker (a report blocks until
        # the controller has taken the previous ones): report, with a checkpoint, only
        # every checkpoint_seconds and at the job's end. The history is in the checkpoint.
        if not force and time.monotonic() - last["checkpoint"] < config["checkpoint_seconds"]:
            return
        last["checkpoint"] = time.monotonic()
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool))}
        with tempfile.TemporaryDirectory(prefix="fc-ckpt-") as tmp:
            if state is not None:
                tr.save_checkpoint(state, Path(tmp) / STATE_FILE)
            for net, weights in best.items():
                torch.save(weights, Path(tmp) / f"{net}{WEIGHTS_SUFFIX}")
            (Path(tmp) / META_FILE).write_text(json.dumps({"nets": metas, "net": now["net"]}),
                                               encoding="utf-8")
            ray.train.report(scalars, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    for net in config["nets"]:
        meta = metas[net]
        if meta["status"] is not None:
            continue  # trained before a restart
        meta["start"] = meta["start"] or start  # the first net carries the worker's start
        meta["attempt_starts"].append(start)
        now["net"] = net

        def on_epoch(metrics: dict[str, Any], state: dict[str, Any], net: str = net,
                     meta: dict[str, Any] = meta) -> None:
            record = {**metrics, "time": time.time(), "attempt": meta["restarts"]}
            meta["history"].append(record)
            report({**record, "restarts": meta["restarts"]}, state)
            if hook is not None:
                hook(net, record)

        try:
            train_src, val_src = _batch_sources(config, net, tcfg.batch_size)
            fit = tr.fit_one(net, train_src, val_src, tcfg, seed=config["seed"],
                             local_share=config["local_share"], widths=config["widths"],
                             resume=resume,
                             on_epoch=on_epoch, log_every=0, threads=config["torch_threads"])
        except Exception as exc:  # noqa: BLE001 - one net's failure is its own
            meta.update(status="failed", error=_error_text(exc))
        else:
            best[net] = fit.state_dict
            meta.update(status="ok", best_val_nme=fit.best_val_nme, best_epoch=fit.best_epoch,
                        epochs_run=fit.epochs_run, stopped_early=fit.stopped_early)
        meta["end"] = start = time.time()
        now["net"], resume = None, None
        # this net's outcome in a checkpoint: a restart does not train it again (the last
        # net's always: the launcher reads the job's result from it)
        report({"final": 1, "end": meta["end"]}, None, force=net == config["nets"][-1])


# --------------------------------------------------------------------------- launcher task


def _read_checkpoint(d: Path, *, load: bool = True,
                     ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(every net's meta, the net in training or None, finished nets' best weights: state
    dicts, or with ``load=False`` their files' bytes, for a process without torch)."""
    saved = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    done = [net for net, meta in saved["nets"].items() if meta["status"] == "ok"]
    weights = {net: (d / f"{net}{WEIGHTS_SUFFIX}").read_bytes() for net in done}
    if load:
        weights = {net: _load_state(data) for net, data in weights.items()}
    return saved["nets"], saved["net"], weights


def _load_state(data: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """A state dict from the bytes of its ``torch.save`` file (or the state dict itself)."""
    if not isinstance(data, bytes):
        return data
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _latest_checkpoint(run_path: str) -> Path | None:
    """The newest checkpoint directory under a local run directory."""
    if _is_uri(run_path):
        return None
    metas = sorted(Path(run_path).glob(f"**/checkpoint_*/{META_FILE}"),
                   key=lambda p: p.stat().st_mtime)
    return metas[-1].parent if metas else None


def _error_text(exc: BaseException) -> str:
    """One-paragraph error: the innermost cause first, then the wrapper."""
    inner = exc
    while inner.__cause__ is not None and inner.__cause__ is not inner:
        inner = inner.__cause__
    text = f"{type(inner).__name__}: {inner}".strip()
    if inner is not exc:
        text += f" (via {type(exc).__name__})"
    return text[:4000]


def _parquet_datasets(job: Mapping[str, Any]) -> dict[str, Any]:
    """The streamed tables of a job's nets as Ray Datasets (module docstring)."""
    if all(data["mode"] != "stream" for data in job["loop_config"]["data"].values()):
        return {}  # nothing streams: Ray Data is not even imported
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # the V2 Parquet source plans a file-listing step whose tasks always ask for one
    # CPU (ray_remote_args do not reach it): with every CPU held by trainers it never
    # runs and the level hangs; the V1 source reads in one step that honours them
    ctx.use_datasource_v2 = False
    return {f"{net}.{split}": ray.data.read_parquet(job["tables"][net][split],
                                                    ray_remote_args={"num_cpus": 0})
            for net, data in job["loop_config"]["data"].items() if data["mode"] == "stream"
            for split in ("train", "val")}


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Body of the zero-CPU Ray task of one job: build the trainer, fit, read back.

    Returns ``{net: {"status", "meta", "weights", "error"}}`` for every net of the job.
    """
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    run_path = f"{job['storage_path'].rstrip('/')}/{job['name']}"
    res = job["resources"]
    resources = {"CPU": res["cpus_per_net"]}
    if res["gpus_per_net"] > 0:
        resources["GPU"] = res["gpus_per_net"]
    error = None
    try:
        trainer_kw: dict[str, Any] = {}
        datasets = _parquet_datasets(job)
        if datasets:
            from ray.data import ExecutionOptions

            trainer_kw = {"datasets": datasets, "dataset_config": ray.train.DataConfig(
                execution_options=ExecutionOptions(preserve_order=True))}
        # TorchTrainer is this trainer with a torch.distributed process group set up on the
        # workers, and torch imported in the controller: one-worker jobs that do not share
        # gradients need neither, and they cost a job about 6 s to start (bench/ray_overhead.py)
        trainer = DataParallelTrainer(
            _train_worker, train_loop_config=job["loop_config"],
            scaling_config=ray.train.ScalingConfig(
                num_workers=1, use_gpu=res["gpus_per_net"] > 0,
                resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=job["name"], storage_path=job["storage_path"],
                failure_config=ray.train.FailureConfig(max_failures=res["max_failures"]),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
            **trainer_kw)
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("training ended without a checkpoint")
        with result.checkpoint.as_directory() as d:
            metas, _, weights = _read_checkpoint(Path(d), load=False)
    except Exception as exc:  # noqa: BLE001 - the nets it did not finish fail with it
        error = _error_text(exc)
        latest = _latest_checkpoint(run_path)
        metas, _, weights = (_read_checkpoint(latest, load=False) if latest
                             else ({}, None, {}))
    out = {}
    for net in job["loop_config"]["nets"]:
        meta = metas.get(net) or {}
        if meta.get("status") == "ok":
            out[net] = {"status": "ok", "meta": meta, "weights": weights[net],
                        "run_path": run_path}
        else:
            out[net] = {"status": "failed", "meta": meta, "run_path": run_path,
                        "error": meta.get("error") or error or "not trained"}
    return out


# --------------------------------------------------------------------------- driver side


def _is_uri(path: str) -> bool:
    return "://" in path


def _absolute(path: str | Path) -> str:
    """``path`` made absolute, or unchanged if it is a URI (``s3://...``)."""
    text = str(path)
    return text.rstrip("/") if _is_uri(text) else str(Path(text).resolve())


def _concurrency(res: ResourcesConfig, n_jobs: int) -> int:
    """Jobs to run at once: ``max_concurrent`` if set, else what the cluster fits."""
    import ray

    if res.max_concurrent > 0:
        return min(res.max_concurrent, n_jobs)
    total = ray.cluster_resources()
    fit = math.floor(total.get("CPU", 0.0) / res.cpus_per_net + 1e-9)
    if res.gpus_per_net > 0:
        fit = min(fit, math.floor(total.get("GPU", 0.0) / res.gpus_per_net + 1e-9))
    return max(1, min(fit, n_jobs))


def table_bytes(path: str | Path) -> int:
    """Uncompressed size of a Parquet table, from its footer (no data is read)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def _named(path: str, read: Callable[[str], Any]) -> Any:
    """``read(path)``, any failure turned into a ``ValueError`` naming the file."""
    try:
        return read(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValueError(f"{path}: {type(exc).__name__}: {exc}") from None


def _job_data(train_table: str, val_table: str, limit: float,
              ) -> tuple[dict[str, Any], Any, int]:
    """A net's ``data`` spec, its val columns (``None`` when streaming), its tables' bytes.

    Tables up to ``limit`` bytes together go to the object store; larger ones stream.
    Raises ``ValueError`` naming the file for a table that cannot be read.
    """
    import ray

    from facecascade.crops import read_crop_table

    size = _named(train_table, table_bytes) + _named(val_table, table_bytes)
    if size > limit:
        return {"mode": "stream"}, None, size
    train = _named(train_table, read_crop_table)
    val = _named(val_table, read_crop_table)
    return {"mode": "memory", "train": ray.put(train), "val": ray.put(val)}, val, size


def deal(costs: Mapping[str, float], slots: int) -> list[list[str]]:
    """Nets dealt to at most ``slots`` jobs of about equal total cost.

    Largest first, each to the job with the least cost so far; within a job the
    nets keep their order in ``costs``.

    >>> deal({"F1": 5.0, "EN1": 4.0, "NM1": 4.0}, 2)
    [['F1'], ['EN1', 'NM1']]
    >>> deal({"a": 1, "b": 1, "c": 1, "d": 1}, 2)
    [['a', 'c'], ['b', 'd']]
    """
    order = list(costs)
    loads: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(min(slots, len(order)))]
    for net in sorted(order, key=lambda n: -costs[n]):
        i = min(range(len(loads)), key=lambda k: loads[k][0])
        loads[i] = (loads[i][0] + costs[net], loads[i][1] + [net])
    return [sorted(nets, key=order.index) for _, nets in loads]


def _check_returned_weights(net: str, weights: Mapping[str, Any], meta: Mapping[str, Any],
                            params: Mapping[str, Any], val: Mapping[str, Any] | None,
                            ) -> str | None:
    """Check in the driver that the weights a job returned are the ones it validated.

    The returned weights are evaluated on the net's own validation table (``val``, or
    read from ``params["val_table"]``); their NME must equal the best validation NME
    the worker reported, and the checkpoint must name this net. Guards against a
    result reaching the wrong network.
    """
    import torch

    from facecascade.crops import read_crop_table
    from facecascade.nets import create_net
    from facecascade.train import VAL_BATCH, ArrayBatches, evaluate_nme

    if meta.get("net") not in (None, net):
        return f"returned result belongs to {meta.get('net')!r}, not {net!r}"
    model = create_net(net, local_share=bool(params.get("local_share")),
                       widths=params.get("widths", "paper"))
    model.load_state_dict(dict(weights))
    model.eval()
    if val is None:
        val = read_crop_table(params["val_table"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the other jobs' workers hold the cores meanwhile
    try:
        nme = evaluate_nme(model, ArrayBatches(val, VAL_BATCH, shuffle=False, seed=0)(0),
                           torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    reported = meta.get("best_val_nme")
    if reported is not None and abs(nme - reported) > 1e-4 * max(1.0, abs(reported)):
        return (f"returned weights score val NME {nme:.6f} on {params['val_table']}, but the "
                f"job reported {reported:.6f}: the result does not belong to this network")
    return None


def _job_result(net: str, raw: Mapping[str, Any], params: dict[str, Any],
                out_dir: Path, val: Mapping[str, Any] | None) -> JobResult:
    """Write the weights and history of a finished job; build its :class:`JobResult`."""
    import torch

    from facecascade.io import atomic_path, write_json_atomic

    meta = raw.get("meta") or {}
    ok = raw.get("status") == "ok"
    if ok:
        raw = {**raw, "weights": _load_state(raw["weights"])}
        problem = _check_returned_weights(net, raw["weights"], meta, params, val)
        if problem:
            ok, raw = False, {**raw, "status": "failed", "error": problem}
    start, end = meta.get("start"), meta.get("end")
    weights_path = None
    if ok:
        weights_path = out_dir / f"{net}.pt"
        with atomic_path(weights_path) as tmp:
            torch.save(dict(raw["weights"]), tmp)
    job = JobResult(
        net=net, status="ok" if ok else "failed", history=list(meta.get("history", [])),
        best_val_nme=meta.get("best_val_nme"), best_epoch=meta.get("best_epoch"),
        start=start, end=end,
        seconds=(end - start) if start is not None and end is not None else None,
        restarts=int(meta.get("restarts", 0)), error=raw.get("error"),
        epochs_run=int(meta.get("epochs_run", len(meta.get("history", [])))),
        stopped_early=bool(meta.get("stopped_early", False)),
        attempt_starts=list(meta.get("attempt_starts", [])),
        weights_path=str(weights_path) if weights_path else None,
        history_path=str(out_dir / f"{net}.history.json") if ok else None,
        run_path=str(raw.get("run_path", "")), params=params)
    if ok:
        write_json_atomic(job.to_dict(), out_dir / f"{net}.history.json")
    return job


def train_level(
    level: int,
    *,
    crop_dir: str | Path,
    out_dir: str | Path,
    cfg: Config,
    run_name: str,
    storage_path: str | Path,
    nets: Sequence[str] | None = None,
    restore: bool = False,
    in_memory_max_bytes: float | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    epoch_hook: EpochHook | None = None,
) -> LevelResult:
    """Train the networks of ``level`` in concurrent Ray Train jobs (module docstring).

    Connects to Ray first if needed (:func:`connect`).

    Parameters
    ----------
    level : int
        1, 2 or 3.
    crop_dir : path
        Directory of the crop tables ``{net}.train.parquet`` and ``{net}.val.parquet``
        (schema in ``docs/ARCHITECTURE.md``).
    out_dir : path
        Receives ``{net}.pt`` (best state dict, ``torch.load(weights_only=True)``)
        and ``{net}.history.json`` (the :class:`JobResult` as JSON) per network.
    cfg : Config
        ``cfg.level(level).train`` for the loop, ``cfg.level_resources(level)`` for the jobs,
        ``cfg.level1.model.local_share`` for level 1, ``model.widths``.
    run_name : str
        Prefix of the Ray Train run names (``f"{run_name}-{net}-..."``); keep it free
        of timestamps so a re-run with ``restore=True`` finds its runs again.
    storage_path : path
        Ray Train storage (made absolute; shared storage on a multi-node cluster).
    nets : sequence of str, optional
        A subset of the level's networks (default: all of them).
    restore : bool
        Continue existing runs of the same names instead of starting afresh.
    in_memory_max_bytes : float, optional
        A net whose two tables hold more bytes (uncompressed) streams them from
        Parquet instead of training from the object store. Default: the share
        :data:`OBJECT_STORE_SHARE` of the cluster's object store, divided among the
        jobs that run at once.
    shuffle_buffer : int
        Rows of the worker's local shuffle buffer when streaming.
    epoch_hook : callable, optional
        ``epoch_hook(net, record)`` run in the worker after each epoch's checkpoint
        is reported (fault-injection tests, probes). Must be picklable by value.

    Returns
    -------
    LevelResult

    Raises
    ------
    LevelTrainingError
        After all jobs ended, if any failed; its message names every failed
        network with its error, and ``.result`` holds the whole :class:`LevelResult`.
    ValueError
        For a network not of this level.
    RuntimeError
        If ``RAY_TRAIN_V2_ENABLED`` selects Ray Train's V1 API.
    """
    import ray

    from facecascade.specs import level_nets, net_options

    all_nets = level_nets(level)
    chosen = list(all_nets if nets is None else nets)
    unknown = [n for n in chosen if n not in all_nets]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"nets == {chosen!r}: must be distinct networks of level {level} "
                         f"({', '.join(all_nets)})")
    _require_train_v2()
    connect()
    crops = _absolute(crop_dir)
    storage = _absolute(storage_path)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not _is_uri(storage):
        Path(storage).mkdir(parents=True, exist_ok=True)

    section = cfg.level(level)
    tcfg = section.train
    arch = net_options(level_nets(level)[0], cfg)  # the same for every net of a level
    local_share, widths = arch["local_share"], arch["widths"]
    level_res = cfg.level_resources(level)
    resources = dataclasses.asdict(level_res)
    limit = _concurrency(level_res, len(chosen))
    if in_memory_max_bytes is None:
        store = ray.cluster_resources().get("object_store_memory", 0.0)
        in_memory_max_bytes = OBJECT_STORE_SHARE * store / limit

    t0, wall0 = time.perf_counter(), time.time()
    params: dict[str, dict[str, Any]] = {}
    data: dict[str, dict[str, Any]] = {}
    vals: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    raw: dict[str, dict[str, Any]] = {}
    for net in chosen:
        params[net] = {"level": level, "net": net, "train": dataclasses.asdict(tcfg),
                       "resources": resources, "seed": cfg.resources.seed,
                       "local_share": local_share, "widths": widths,
                       "train_table": f"{crops}/{net}.train.parquet",
                       "val_table": f"{crops}/{net}.val.parquet", "data": None,
                       "run_name": None, "job_nets": None}
        try:
            data[net], vals[net], sizes[net] = _job_data(
                params[net]["train_table"], params[net]["val_table"], in_memory_max_bytes)
        except ValueError as exc:  # unreadable table: this net fails, the others train
            raw[net] = {"status": "failed", "error": str(exc)}
            continue
        params[net]["data"] = "object store" if data[net]["mode"] == "memory" \
            else "parquet stream"

    jobs = []
    for group in deal(sizes, limit):
        name = f"{run_name}-{'-'.join(group)}"
        old_run = Path(storage) / name
        if not restore and not _is_uri(storage) and old_run.exists():
            logger.info("removing the previous run directory %s", old_run)
            shutil.rmtree(old_run)
        for net in group:
            params[net].update(run_name=name, job_nets=group)
        jobs.append({"name": name, "storage_path": storage, "resources": resources,
                     "tables": {net: {"train": params[net]["train_table"],
                                      "val": params[net]["val_table"]} for net in group},
                     "loop_config": {
                         "nets": group, "train": dataclasses.asdict(tcfg),
                         "seed": cfg.resources.seed, "local_share": local_share,
                         "widths": widths,
                         "torch_threads": cfg.resources.torch_threads,
                         "checkpoint_seconds": cfg.resources.checkpoint_seconds,
                         "shuffle_buffer": shuffle_buffer, "hook": epoch_hook,
                         "data": {net: data[net] for net in group}}})

    remote = ray.remote(num_cpus=0, max_retries=0)(_run_job)
    logger.info("level %d: %d net(s) in %d job(s): %s", level, len(sizes), len(jobs),
                "; ".join(", ".join(j["loop_config"]["nets"]) for j in jobs))
    # the controllers poll their workers every poll_seconds (Ray Train reads it from the
    # environment of the process that builds the trainer, and passes it on). On one node
    # nothing is preempted: each job's preemption watcher, which polls the node's drain
    # state, only costs CPU (a level of MTFL's level 2 at 8 epochs: 94 -> 90 s without)
    env_vars = {TRAIN_POLL_ENV: str(cfg.resources.poll_seconds)}
    if sum(bool(node.get("Alive")) for node in ray.nodes()) == 1:
        env_vars[TRAIN_PREEMPTION_ENV] = "0"
    env = {"env_vars": env_vars}
    running = {remote.options(name=f"train-{job['name']}", runtime_env=env).remote(job): job
               for job in jobs}
    results: dict[str, JobResult] = {}
    try:
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                job = running.pop(ref)
                try:
                    raw.update(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - the launching task itself died
                    raw.update({net: {"status": "failed", "error": _error_text(exc)}
                                for net in job["loop_config"]["nets"]})
                logger.info("level %d: %s", level, ", ".join(
                    f"{net} {raw[net]['status']}" for net in job["loop_config"]["nets"]))
                # checked and written while the other jobs still train; a net whose
                # result cannot be checked or written fails alone
                for net in job["loop_config"]["nets"]:
                    try:
                        results[net] = _job_result(net, raw[net], params[net], out_dir,
                                                   vals.get(net))
                    except Exception as exc:  # noqa: BLE001
                        results[net] = _job_result(
                            net, {**raw[net], "status": "failed", "error": _error_text(exc)},
                            params[net], out_dir, vals.get(net))
    finally:
        for ref in running:  # interrupted: stop the jobs still running (their actors follow)
            ray.cancel(ref, force=True)
    for net in chosen:  # nets whose tables could not be read never had a job
        if net not in results:
            results[net] = _job_result(net, raw[net], params[net], out_dir, vals.get(net))
    results = {net: results[net] for net in chosen}
    seconds = time.perf_counter() - t0

    level_result = LevelResult(level=level, jobs=results, seconds=seconds, start=wall0,
                               end=time.time(), concurrency=len(jobs))
    if level_result.failed:
        raise LevelTrainingError(level_result.failed, level_result)
    return level_result
