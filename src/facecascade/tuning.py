"""Ray Tune hyperparameter searches over one network's training.

A search trains the network named in ``params.yaml``'s ``tune`` section on its crop
tables (``{net}.train.parquet`` / ``{net}.val.parquet`` of a level's crop directory)
with configurations sampled from the section's space: learning rate (log-uniform),
momentum (uniform), batch size, dropout, weight decay and the loss (choices). Every other
training setting comes from the network's level section. Each trial is a Ray Tune function trainable
with explicit resources (``resources.cpus_per_net`` / ``gpus_per_net``) that reports
the validation NME after every epoch; an ASHA scheduler stops weak trials early. The
crop tables go to the object store once (``tune.with_parameters``), not per trial.

Trials restart from scratch on a failure (``resources.max_failures``): they are a few
epochs long, and a search is judged by its best trial, not by one trial's survival.

This module and :mod:`facecascade.orchestration` are the only ones that import Ray;
:func:`facecascade.tracking.log_search` writes a search to MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, SearchConfig
from .specs import get_spec, net_options

logger = logging.getLogger(__name__)

#: TrainConfig fields a search samples; the rest come from the network's level section
SEARCHED = ("optimizer", "lr", "lr_schedule", "momentum", "batch_size", "dropout",
            "weight_decay", "loss")
#: what a trial reports after every epoch (its history records)
REPORTED = ("epoch", "train_loss", "val_nme", "lr")


@dataclass
class TrialResult:
    """One trial: its sampled settings, per-epoch history and how it ended.

    ``status`` is ``"finished"`` (ran ``max_epochs``), ``"stopped"`` (ASHA stopped
    it early) or ``"failed"`` (``error`` says why).
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def best_val_nme(self) -> float:
        vals = [h["val_nme"] for h in self.history]
        return min(vals) if vals else float("inf")

    @property
    def epochs(self) -> int:
        return len(self.history)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self),
                "best_val_nme": self.best_val_nme if self.history else None,
                "epochs": self.epochs}


@dataclass
class SearchResult:
    """All trials of a search, best first by validation NME."""

    net: str
    level: int
    space: dict[str, Any]
    trials: list[TrialResult]
    seconds: float

    @property
    def reported(self) -> list[TrialResult]:
        """The trials that reported at least one epoch."""
        return [t for t in self.trials if t.history]

    @property
    def best(self) -> TrialResult:
        if not self.reported:
            raise RuntimeError(f"search over {self.net}: no trial reported an epoch")
        return min(self.reported, key=lambda t: t.best_val_nme)

    def best_train_params(self, cfg: Config) -> dict[str, Any]:
        """The level's ``train`` section with the best trial's settings, as for params.yaml."""
        base = dataclasses.asdict(cfg.level(self.level).train)
        return {**base, **self.best_settings}

    @property
    def best_settings(self) -> dict[str, Any]:
        """The searched settings of the best trial (what ``--apply`` writes)."""
        return {k: self.best.config[k] for k in SEARCHED if k in self.best.config}

    def to_dict(self, cfg: Config | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "net": self.net, "level": self.level, "space": self.space,
            "seconds": self.seconds,
            "best": self.best.to_dict() if self.reported else None,
            "trials": [t.to_dict() for t in self.trials]}
        if cfg is not None and out["best"] is not None:
            out[f"suggested_level{self.level}_train"] = self.best_train_params(cfg)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SearchResult:
        """The search a ``search.json`` holds (:meth:`to_dict`'s output)."""
        trials = [TrialResult(trial_id=t["trial_id"], config=dict(t["config"]),
                              status=t["status"], history=list(t["history"]),
                              error=t.get("error")) for t in doc["trials"]]
        return cls(net=doc["net"], level=int(doc["level"]), space=dict(doc["space"]),
                   trials=trials, seconds=float(doc["seconds"]))

    def table(self) -> str:
        """A text table of the trials, best first."""
        rows = sorted(self.trials, key=lambda t: t.best_val_nme)
        lines = [f"{'trial':12s} {'optim':>5s} {'sched':>6s} {'lr':>9s} {'momentum':>8s} "
                 f"{'batch':>5s} {'dropout':>7s} {'wd':>7s} {'loss':>9s} {'epochs':>6s} "
                 f"{'val NME%':>8s}"
                 "  status"]
        for t in rows:
            c = t.config
            nme = f"{100 * t.best_val_nme:8.2f}" if t.history else f"{'-':>8s}"
            lines.append(f"{t.trial_id:12s} {c.get('optimizer', '-'):>5s} "
                         f"{c.get('lr_schedule', '-'):>6s} {c['lr']:9.2e} {c['momentum']:8.3f} "
                         f"{c['batch_size']:5d} {c['dropout']:7.2f} "
                         f"{c.get('weight_decay', float('nan')):7.1e} {c.get('loss', '-'):>9s} "
                         f"{t.epochs:6d} {nme}  "
                         f"{t.status}" + (f" ({t.error})" if t.error else ""))
        return "\n".join(lines)


def space_description(scfg: SearchConfig) -> dict[str, Any]:
    """The search space as plain data (for logs, MLflow params and the result JSON)."""
    return {"optimizer": {"choice": list(scfg.optimizer)},
            "lr": {"loguniform": list(scfg.lr)},
            "lr_schedule": {"choice": list(scfg.lr_schedule)},
            "momentum": {"uniform": list(scfg.momentum)},
            "batch_size": {"choice": list(scfg.batch_size)},
            "dropout": {"choice": list(scfg.dropout)},
            "weight_decay": {"choice": list(scfg.weight_decay)},
            "loss": {"choice": list(scfg.loss)}, "subset": scfg.subset}


def subset_faces(face_id: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Row mask keeping every crop of a random ``share`` of the faces (at least one face).

    >>> int(subset_faces(np.array([1, 1, 2, 2, 3, 3, 4, 4]), 0.5, seed=0).sum())
    4
    """
    faces = np.unique(face_id)
    if share >= 1:
        return np.ones(len(face_id), dtype=bool)
    keep = np.random.default_rng(seed).permutation(faces)[:max(1, round(share * len(faces)))]
    return np.isin(face_id, keep)


def search_key(cfg: Config, net: str, crop_dir: str | Path) -> str:
    """Identity of a search: its space, the level's other settings and the crop tables' bytes.

    A finished search with the same key is not run again; an interrupted one resumes
    under the Tune experiment named after it.
    """
    level = get_spec(net).level
    h = hashlib.sha256(json.dumps({
        "net": net, "tune": dataclasses.asdict(cfg.tune),
        "train": {k: v for k, v in dataclasses.asdict(cfg.level(level).train).items()
                  if k not in SEARCHED},  # the searched ones are the trials' own
        "seed": cfg.resources.seed,
        "local_share": net_options(net, cfg)["local_share"],
        # the papers' widths keep the keys of searches made before widths existed
        **({"widths": w} if (w := net_options(net, cfg)["widths"]) != "paper" else {}),
    }, sort_keys=True).encode())
    for split in ("train", "val"):
        path = Path(crop_dir) / f"{net}.{split}.parquet"
        if path.is_file():
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _param_space(scfg: SearchConfig) -> dict[str, Any]:
    from ray import tune

    return {"lr": tune.loguniform(*scfg.lr) if scfg.lr[0] < scfg.lr[1] else scfg.lr[0],
            "momentum": (tune.uniform(*scfg.momentum) if scfg.momentum[0] < scfg.momentum[1]
                         else scfg.momentum[0]),
            "batch_size": tune.choice(list(scfg.batch_size)),
            "dropout": tune.choice(list(scfg.dropout)),
            "weight_decay": tune.choice(list(scfg.weight_decay)),
            "loss": tune.choice(list(scfg.loss)),
            "optimizer": tune.choice(list(scfg.optimizer)),
            "lr_schedule": tune.choice(list(scfg.lr_schedule))}


def _trial(config: dict[str, Any], *, train: Mapping[str, Any], val: Mapping[str, Any],
           setup: Mapping[str, Any]) -> None:
    """Function trainable: train with the sampled settings, report val NME every epoch."""
    from ray import tune

    from facecascade.config import TrainConfig
    from facecascade.train import VAL_BATCH, ArrayBatches, fit_one

    tcfg = TrainConfig(**{**setup["train"], **{k: config[k] for k in SEARCHED},
                          "epochs": setup["max_epochs"], "patience": setup["max_epochs"]})
    tcfg.validate("tune")

    def on_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        del state
        tune.report({k: float(metrics[k]) for k in REPORTED})

    fit_one(setup["net"], ArrayBatches(train, tcfg.batch_size, shuffle=True,
                                       seed=setup["seed"]),
            ArrayBatches(val, VAL_BATCH, shuffle=False, seed=0), tcfg, seed=setup["seed"],
            local_share=setup["local_share"], widths=setup["widths"], on_epoch=on_epoch,
            log_every=0, threads=setup["threads"])


def _trial_result(result: Any, max_epochs: int) -> TrialResult:
    """A :class:`TrialResult` from one Ray Tune ``Result``."""
    df = result.metrics_dataframe
    history: list[dict[str, Any]] = []
    if df is not None and len(df) and "val_nme" in df:
        history = [{**rec, "epoch": int(rec["epoch"])}
                   for rec in df[list(REPORTED)].astype(float).to_dict("records")]
    trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
    config = {k: result.config[k] for k in SEARCHED if k in result.config}
    if result.error is not None:
        status, error = "failed", f"{type(result.error).__name__}: {result.error}"[:2000]
    else:
        status, error = ("finished" if len(history) >= max_epochs else "stopped"), None
    return TrialResult(trial_id=trial_id, config=config, status=status, history=history,
                       error=error)


def tune_net(cfg: Config, crop_dir: str | Path, *, storage_path: str | Path,
             name: str | None = None, net: str | None = None, progress: bool = True
             ) -> SearchResult:
    """Run the ``cfg.tune`` search over one network on a connected Ray cluster.

    Parameters
    ----------
    cfg : Config
        ``cfg.tune`` is the search; the network's level section gives the other
        training settings; ``cfg.resources`` gives each trial's CPUs/GPUs, the
        concurrency cap, retries and the weights seed.
    crop_dir : path
        Holds ``{net}.train.parquet`` and ``{net}.val.parquet`` (a crops stage output).
    storage_path : path
        Ray Tune's experiment storage (trial results); every node must see it.
    name : str, optional
        Experiment name (default ``tune-{net}-{time}``).
    net : str, optional
        Overrides ``cfg.tune.net``.
    progress : bool
        Print Tune's status table while it runs.

    Raises
    ------
    ValueError
        Unknown network name.
    FileNotFoundError
        A crop table is missing.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from .crops import read_crop_table

    scfg = cfg.tune
    net = net or scfg.net
    spec = get_spec(net)
    level = spec.level
    crop_dir = Path(crop_dir)
    tables = {}
    for split in ("train", "val"):
        path = crop_dir / f"{net}.{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: crop table of {net} not found (run the crops "
                                    f"stage of level {level} first)")
        tables[split] = read_crop_table(path)
    keep = subset_faces(tables["train"]["face_id"], scfg.subset, scfg.seed)
    tables["train"] = {k: v[keep] for k, v in tables["train"].items()}
    if not ray.is_initialized():
        raise RuntimeError("Ray is not connected: call orchestration.connect() first")
    res = cfg.level_resources(level)
    setup = {"net": net, "train": dataclasses.asdict(cfg.level(level).train),
             "max_epochs": scfg.max_epochs, "seed": res.seed, "threads": res.torch_threads,
             **net_options(net, cfg)}
    resources = {"cpu": res.cpus_per_net, **({"gpu": res.gpus_per_net}
                                             if res.gpus_per_net > 0 else {})}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, train=tables["train"], val=tables["val"], setup=setup),
        resources)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=scfg.max_epochs,
                              grace_period=scfg.grace_period,
                              reduction_factor=scfg.reduction_factor)
    name = name or f"tune-{net}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment = Path(storage_path).resolve() / name
    if tune.Tuner.can_restore(experiment):
        logger.info("search over %s: resuming the interrupted search in %s", net, experiment)
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=_param_space(scfg),
            tune_config=tune.TuneConfig(
                metric="val_nme", mode="min", scheduler=scheduler,
                num_samples=scfg.num_samples, max_concurrent_trials=res.max_concurrent or None,
                search_alg=BasicVariantGenerator(random_state=scfg.seed)),
            run_config=tune.RunConfig(
                name=name, storage_path=str(experiment.parent),
                failure_config=tune.FailureConfig(max_failures=res.max_failures),
                verbose=1 if progress else 0))
    t0 = time.perf_counter()
    grid = tuner.fit()
    trials = [_trial_result(grid[i], scfg.max_epochs) for i in range(len(grid))]
    result = SearchResult(net=net, level=level, space=space_description(scfg), trials=trials,
                          seconds=time.perf_counter() - t0)
    logger.info("search over %s: %d trials in %.1f s", net, len(trials), result.seconds)
    return result


def run_search(cfg: Config, crop_dir: str | Path, out_dir: str | Path, *,
               project_dir: str | Path = ".", net: str | None = None,
               progress: bool = True, track: bool = True) -> tuple[SearchResult, str | None]:
    """A whole search: connect to Ray, :func:`tune_net`, write ``out_dir`` and log to MLflow.

    ``out_dir`` receives ``search.json`` (every trial, the best one, the level's
    ``train`` section with the best settings, ready for params.yaml, and the
    search's :func:`search_key`) and ``curves.png`` (validation NME per epoch per
    trial), atomically. With ``track`` the search is logged by
    :func:`facecascade.tracking.log_search`.

    A search whose ``search.json`` already holds the same key is finished: it is
    returned as it is, not run again (run id None). An interrupted search (the same
    key, no ``search.json``) resumes from its Tune experiment under
    ``resources.storage_path``.

    Returns
    -------
    (SearchResult, str or None)
        The search and its MLflow run id.
    """
    net = net or cfg.tune.net
    get_spec(net)
    key = search_key(cfg, net, crop_dir)
    done = Path(out_dir) / "search.json"
    if done.is_file():
        try:
            doc = json.loads(done.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = {}
        if doc.get("key") == key:
            logger.info("search over %s is finished (%s, key %s): not run again", net, done, key)
            return SearchResult.from_dict(doc), None
    from . import orchestration, tracking
    from .io import atomic_path, write_json_atomic
    from .report import plot_search_curves

    project_dir = Path(project_dir)
    orchestration.connect()
    try:
        result = tune_net(cfg, crop_dir, net=net, progress=progress, name=f"tune-{net}-{key}",
                          storage_path=project_dir / cfg.resources.storage_path)
    finally:
        orchestration.shutdown()
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        write_json_atomic({**result.to_dict(cfg), "key": key}, Path(tmp) / "search.json")
        if result.reported:
            plot_search_curves({t.trial_id: [h["val_nme"] for h in t.history]
                                for t in result.trials}, Path(tmp) / "curves.png",
                               best=result.best.trial_id,
                               title=f"Ray Tune search over {result.net}: validation NME")
    run_id = None
    if track:
        client = tracking.configure(cfg, project_dir=project_dir)
        run_id = tracking.log_search(
            client, tracking.experiment_id(client, cfg.mlflow.experiment), result,
            params={"tune": dataclasses.asdict(cfg.tune)},
            artifacts=sorted(out_dir.iterdir()))
    return result, run_id
