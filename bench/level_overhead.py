"""Benchmark: one level's networks as concurrent Ray Train jobs against the plain loop.

The crop tables of level ``--level`` (default 2) are cut by the library from

- ``--data synth``: the demo's procedural faces (``params.yaml: synth``, what ``make demo``
  trains on), or
- ``--data DIR``: a CUHK-format data set, ``DIR/trainImageList.txt`` with images under
  ``DIR/images`` (e.g. MTFL's training set). ``--data`` defaults to ``$FACECASCADE_DATA``,
  else ``synth``.

The previous level's points, around which levels 2 and 3 cut their patches, are the
ground truth plus Gaussian noise of ``--prev-noise`` inter-ocular distances per
coordinate instead of a trained previous level: the tables then have the pipeline's
row counts and layout, which is all the timings depend on. Tables are cached in
``--work`` (rebuilt when their recipe changes).

It measures, in one run (so the ratios share the machine's load):

- the plain loop: ``fit_one`` for each net in this process, one after another, before
  and after the Ray level (each net's faster run counts: the machine may be shared);
- the plain loop in parallel without Ray: one process per core, each training the
  nets ``orchestration.deal`` gives its job (what the cores themselves allow: two
  processes training at once share caches and memory bandwidth);
- the Ray level: ``orchestration.train_level``, its wall time and each job's own time
  (first line of the worker to its end), the time from the level's start to the first
  worker's first line and from the last worker's end to the level's end, and per-net
  training samples/s;
- the control: the level's first net as the only job on the same Ray (the other cores
  idle), its samples/s against the plain loop's;
- MLflow: logging each job as a network run from the driver (SQLite store);
- where the CPU goes while the Ray level runs: every process of the local Ray (all of them
  descend from this one) sampled with psutil, by kind (``ray::RayTrainWorker``, each of Ray
  Train's per-job helper actors, Ray's own daemons), and the share of the machine that is
  not training;

and prints each figure beside its goal: the level's wall time at most 1.25 x (sum of
the plain loop / cores), each net's samples/s under Ray at least 0.9 x the plain loop's.
Beside the JSON it draws ``level_overhead_{data}.png``: each job's nets on a time line
against the ideal and the plain loop on one process per core, and the CPU by process kind.
``--recipe recipes/real.yaml`` trains with the real-data recipe's settings (batch size,
epochs, optimiser, windows...), as ``make real`` does.
Ray lowers its workers' CPU priority by default (``RAY_worker_niceness``); the bench sets
it to 0 so that on a shared machine the workers compete as the plain loop does.

    python bench/level_overhead.py --data synth   # -> bench/results/level_overhead_demo.json
    python bench/level_overhead.py --data DIR     # -> bench/results/level_overhead_{DIR name}.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml
from benchdata import load_average, machine

from facecascade import orchestration, tracking
from facecascade.config import Config, load_config
from facecascade.crops import read_crop_table, write_level_crops
from facecascade.formats import assign_split, faces_to_arrays, ingest
from facecascade.io import write_json_atomic
from facecascade.recipe import flatten, load_recipe
from facecascade.report import new_figure, save_figure
from facecascade.specs import level_nets, net_options
from facecascade.synth import write_synthetic_dataset
from facecascade.train import VAL_BATCH, ArrayBatches, fit_one

ROOT = Path(__file__).resolve().parents[1]
#: goals of the level's wall time (x sum of plain loop / cores) and of samples/s (x plain)
WALL_GOAL, RATE_GOAL = 1.25, 0.9
#: the process kind of Ray Train's workers, which run the training loop
TRAINING_KIND = "ray::RayTrainWorker"


def _recipe(args: argparse.Namespace, cfg: Config) -> dict:
    """Everything the cached tables depend on."""
    sections = {"synth": cfg.synth, "split": cfg.data.split, "frame": cfg.frame,
                "crops": cfg.level(args.level).crops}
    return {"data": args.data, "level": args.level, "prev_noise": args.prev_noise,
            "seed": cfg.resources.seed, **{k: repr(v) for k, v in sections.items()}}


def build_tables(args: argparse.Namespace, cfg: Config, work: Path) -> Path:
    """Cut (or reuse) the level's crop tables in ``work/crops``; returns that directory."""
    crops = work / "crops"
    stamp = work / "recipe.json"
    recipe = _recipe(args, cfg)
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return crops
    t = time.perf_counter()
    if args.data == "synth":
        root = work / "raw"
        list_path = write_synthetic_dataset(root, n=cfg.synth.n_faces,
                                            size=cfg.synth.image_size, seed=cfg.synth.seed)
    else:
        root, list_path = Path(args.data) / "images", Path(args.data) / "trainImageList.txt"
    faces, _, _ = ingest("cuhk", root=root, list_path=list_path,
                         max_image_pixels=cfg.data.max_image_pixels)
    faces = assign_split(faces, val_fraction=cfg.data.split.val_fraction,
                         seed=cfg.data.split.seed)
    points, _ = faces_to_arrays(faces)
    iod = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    rng = np.random.default_rng(cfg.resources.seed)
    prev = points + rng.normal(0.0, 1.0, points.shape) * args.prev_noise * iod[:, None, None]
    write_level_crops(args.level, faces, root, crops, cfg, prev_points=prev)
    write_json_atomic(recipe, stamp)
    print(f"tables of level {args.level} cut from {len(faces)} faces in "
          f"{time.perf_counter() - t:.0f} s -> {crops}")
    return crops


def plain_loop(nets: list[str], crops: Path, cfg: Config, level: int, *,
               quiet: bool = False) -> dict[str, dict]:
    """Each net trained in this process, one after another, on its tables in memory."""
    tcfg = cfg.level(level).train
    torch.set_num_threads(cfg.resources.torch_threads)
    out = {}
    for net in nets:
        tr = read_crop_table(crops / f"{net}.train.parquet")
        va = read_crop_table(crops / f"{net}.val.parquet")
        t = time.perf_counter()
        fit = fit_one(net, ArrayBatches(tr, tcfg.batch_size, shuffle=True,
                                        seed=cfg.resources.seed),
                      ArrayBatches(va, VAL_BATCH, shuffle=False, seed=0), tcfg,
                      seed=cfg.resources.seed, log_every=0,
                      threads=cfg.resources.torch_threads, **net_options(net, cfg))
        out[net] = {"seconds": time.perf_counter() - t, "rows": len(tr["pixels"]),
                    "samples_per_s": statistics.mean(h["samples_per_s"] for h in fit.history)}
        if not quiet:
            print(f"plain {net}: {out[net]['seconds']:.1f} s, "
                  f"{out[net]['samples_per_s']:.0f} samples/s")
    return out


def _plain_share(args: tuple) -> tuple[list[str], float, float, dict]:
    nets, crops, cfg, level = args
    start = time.time()  # after the process's start-up: training only
    out = plain_loop(nets, crops, cfg, level, quiet=True)
    return nets, start, time.time(), out


def plain_parallel(nets: list[str], crops: Path, cfg: Config, level: int,
                   cores: int) -> dict:
    """The plain loop on ``cores`` processes at once, the nets dealt to them by
    ``orchestration.deal`` (as a level of 1-CPU jobs deals them): the wall time the cores
    allow without Ray."""
    import multiprocessing as mp

    sizes = {n: orchestration.table_bytes(crops / f"{n}.train.parquet") for n in nets}
    shares = orchestration.deal(sizes, cores)
    with mp.get_context("spawn").Pool(len(shares)) as pool:
        done = pool.map(_plain_share, [(s, crops, cfg, level) for s in shares])
    wall = max(end for _, _, end, _ in done) - min(start for _, start, _, _ in done)
    rates = {n: r["samples_per_s"] for *_, out in done for n, r in out.items()}
    print(f"plain loop on {len(shares)} processes at once: {wall:.1f} s wall (training)")
    return {"wall_s": wall, "process_s": [end - start for _, start, end, _ in done],
            "shares": shares, "samples_per_s": rates}


def process_kind(proc: psutil.Process) -> str | None:
    """What a process of the local Ray is: its Ray title (``ray::RayTrainWorker``, a task's
    name...) or its program (``raylet``, ``gcs_server``, ``log_monitor.py``...); None if gone.

    >>> process_kind(psutil.Process()) in {"python", "python3", "python3.11", "pytest"}
    True
    """
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    if not cmd:
        return None
    if cmd[0].startswith("ray::"):
        title = cmd[0].split()[0].split(".")[0]  # an actor's title names its method too
        # launching tasks are named after their job (train-RUN-NETS...)
        return "ray::(launching task)" if title.startswith("ray::train-") else title
    scripts = [Path(a).name for a in cmd[1:3] if a.endswith(".py")]
    return scripts[0] if scripts else Path(cmd[0]).name


class ProcessCpu:
    """CPU seconds of this process's descendants while the block runs, by kind.

    Sampled every ``every`` s in a thread (a process that ends between two samples loses
    at most that much of its CPU); a process keeps the last kind seen other than
    ``ray::IDLE`` (a pooled worker is idle before and after its task; a worker with a
    runtime environment is ``setup_worker.py`` until it takes its title), and the CPU
    it had before the block is not counted.
    """

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._seen: dict[int, list] = {}  # pid -> [kind, cpu at first sight, last cpu]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-cpu", daemon=True)

    def _sample(self, *, before: bool = False) -> None:
        """One sample; ``before``: the block's start, whose CPU so far is not counted."""
        for proc in psutil.Process().children(recursive=True):
            kind = process_kind(proc)
            if kind is None:
                continue
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            cpu = times.user + times.system
            entry = self._seen.setdefault(proc.pid, [kind, cpu if before else 0.0, cpu])
            entry[2] = cpu
            if kind != "ray::IDLE":
                entry[0] = kind

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> ProcessCpu:
        self._sample(before=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_kind(self) -> dict[str, dict[str, float]]:
        """``{kind: {"processes", "cpu_s"}}``, most CPU first."""
        out: dict[str, dict[str, float]] = {}
        for kind, first, last in self._seen.values():
            row = out.setdefault(kind, {"processes": 0, "cpu_s": 0.0})
            row["processes"] += 1
            row["cpu_s"] += last - first
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_s"]))


@dataclasses.dataclass
class RayRun:
    """The Ray level of one bench run."""

    result: orchestration.LevelResult
    init_s: float  #: ``ray.init``
    cores: int
    mlflow_s: float  #: logging one job as a network run
    cpu_by_kind: dict[str, dict[str, float]]  #: while the level ran (:class:`ProcessCpu`)
    alone: orchestration.LevelResult  #: the level's first net as the cluster's only job


def ray_level(crops: Path, cfg: Config, level: int, tmp: Path) -> RayRun:
    """``train_level`` on a fresh local Ray, the level's first net alone on it (the control:
    one job with the other cores idle), then each job logged to MLflow."""
    t = time.perf_counter()
    orchestration.connect()
    init_s = time.perf_counter() - t
    import ray

    cores = int(ray.cluster_resources().get("CPU", os.cpu_count()))
    try:
        driver0 = time.process_time()
        with ProcessCpu() as cpu:
            result = orchestration.train_level(level, crop_dir=crops, out_dir=tmp / "out",
                                               cfg=cfg, run_name="bench",
                                               storage_path=tmp / "ray")
        cpu_by_kind = {"driver (this process)": {"processes": 1,
                                                 "cpu_s": time.process_time() - driver0},
                       **cpu.by_kind()}
        alone = orchestration.train_level(level, crop_dir=crops, out_dir=tmp / "alone",
                                          cfg=cfg, run_name="bench-alone",
                                          storage_path=tmp / "ray", nets=level_nets(level)[:1])
    finally:
        orchestration.shutdown()
    import mlflow

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = tracking.parent_run(client, tracking.experiment_id(client, "bench"), "bench",
                                 tags={})
    level_id = tracking.start_level_run(client, parent, level, {})
    t = time.perf_counter()
    for job in result.jobs.values():
        tracking.log_network_run(client, level_id, job)
    mlflow_s = (time.perf_counter() - t) / len(result.jobs)
    return RayRun(result, init_s, cores, mlflow_s, cpu_by_kind, alone)


def cpu_figures(cpu_by_kind: dict[str, dict[str, float]], wall: float,
                cores: int) -> dict[str, Any]:
    """The level's CPU by process kind: what trained, and what Ray itself took.

    >>> f = cpu_figures({"ray::RayTrainWorker": {"processes": 2, "cpu_s": 18.0},
    ...                  "raylet": {"processes": 1, "cpu_s": 1.0}}, wall=10.0, cores=2)
    >>> f["training_cpu_s"], f["other_cpu_s"], f["other_cpu_share_of_machine"]
    (18.0, 1.0, 0.05)
    """
    training = cpu_by_kind.get(TRAINING_KIND, {}).get("cpu_s", 0.0)
    other = sum(v["cpu_s"] for k, v in cpu_by_kind.items() if k != TRAINING_KIND)
    return {"cpu_by_process_kind": {k: {"processes": v["processes"],
                                        "cpu_s": round(v["cpu_s"], 2)}
                                    for k, v in cpu_by_kind.items()},
            "training_cpu_s": round(training, 2), "other_cpu_s": round(other, 2),
            "other_cpu_share_of_machine": round(other / (wall * cores), 4)}


def figures(args, cfg, crops, plain, run: RayRun, parallel) -> dict:
    """The figures of one run, each beside its goal."""
    result, cores, jobs = run.result, run.cores, run.result.jobs
    (alone_net, alone), = run.alone.jobs.items()
    alone_rate = statistics.mean(h["samples_per_s"] for h in alone.history)
    plain_sum = sum(p["seconds"] for p in plain.values())
    ideal = plain_sum / cores
    rates = {}
    for net, job in jobs.items():
        ray_rate = statistics.mean(h["samples_per_s"] for h in job.history)
        rates[net] = {"ray": ray_rate, "plain": plain[net]["samples_per_s"],
                      "ratio": ray_rate / plain[net]["samples_per_s"]}
    ratios = [r["ratio"] for r in rates.values()]
    starts = [j.start for j in jobs.values() if j.start is not None]
    ends = [j.end for j in jobs.values() if j.end is not None]
    return {
        "data": "demo (procedural faces)" if args.data == "synth" else Path(args.data).name,
        "level": args.level, "nets": len(jobs),
        "rows_per_net_train": int(statistics.median(p["rows"] for p in plain.values())),
        "epochs": cfg.level(args.level).train.epochs, "cores": cores,
        "cpus_per_net": cfg.level_resources(args.level).cpus_per_net,
        "concurrency": result.concurrency,
        "data_path": sorted({j.params["data"] for j in jobs.values()}),
        "ray_init_s": run.init_s,
        "level_wall_s": result.seconds,
        "sum_of_job_s": sum(j.seconds for j in jobs.values()),
        "plain_sum_s": plain_sum,
        "ideal_wall_s": ideal,
        "wall_over_ideal": result.seconds / ideal,
        "wall_goal": f"<= {WALL_GOAL} x ideal ({WALL_GOAL * ideal:.1f} s)",
        "wall_goal_met": result.seconds <= WALL_GOAL * ideal,
        "samples_per_s_ratio_median": statistics.median(ratios),
        "samples_per_s_ratio_min": min(ratios),
        "samples_per_s_goal": f">= {RATE_GOAL} x plain for every net",
        "samples_per_s_goal_met": min(ratios) >= RATE_GOAL,
        "per_job_overhead_s": (sum(j.seconds for j in jobs.values()) - plain_sum) / len(jobs),
        "level_start_to_first_worker_s": min(starts) - result.start if starts else None,
        "last_worker_end_to_level_end_s": result.end - max(ends) if ends else None,
        "plain_parallel_wall_s": parallel["wall_s"],
        "wall_over_plain_parallel": result.seconds / parallel["wall_s"],
        "plain_parallel_over_ideal": parallel["wall_s"] / ideal,
        "plain_parallel_samples_per_s_ratio_median": statistics.median(
            parallel["samples_per_s"][n] / plain[n]["samples_per_s"] for n in plain),
        "recipe": Path(args.recipe).name if args.recipe else None,
        "overrides": args.set,
        "mlflow_log_per_job_s": run.mlflow_s,
        **cpu_figures(run.cpu_by_kind, result.seconds, cores),
        "one_job_alone": {"net": alone_net, "job_s": alone.seconds,
                          "level_wall_s": run.alone.seconds,
                          "plain_s": plain[alone_net]["seconds"],
                          "samples_per_s_ratio": alone_rate / plain[alone_net]["samples_per_s"]},
        "plain_s": {n: p["seconds"] for n, p in plain.items()},
        "ray_job_s": {n: j.seconds for n, j in jobs.items()},
        "samples_per_s": rates,
        "machine": machine(args.load_at_start),
    }


def plot(fig: dict[str, Any], result: orchestration.LevelResult, parallel: dict,
         path: Path) -> Path:
    """The level on a time line (each job a row, each net a bar, from the worker's first
    line) against the ideal, the goal and the plain loop on one process per core; and the
    CPU of every kind of process while it ran."""
    figure = new_figure(10, 6.5)
    timeline, cpu = figure.subplots(2, 1, height_ratios=(1, 1.3))
    rows = {tuple(j.params["job_nets"]): None for j in result.jobs.values()}
    colours = {net: f"C{i % 10}" for i, net in enumerate(result.jobs)}
    for row, nets in enumerate(rows):
        for net in nets:
            job = result.jobs[net]
            if job.start is None or job.end is None:
                continue
            left = job.start - result.start
            timeline.barh(row, job.end - job.start, left=left, color=colours[net],
                          edgecolor="white")
            timeline.text(left + (job.end - job.start) / 2, row, net, ha="center",
                          va="center", fontsize=8, color="white")
    marks = [(fig["ideal_wall_s"], "ideal (plain loop / cores)", "k", "-"),
             (WALL_GOAL * fig["ideal_wall_s"], f"goal ({WALL_GOAL} x ideal)", "k", "--"),
             (parallel["wall_s"], "plain loop, one process per core", "C7", "-."),
             (result.seconds, "the level under Ray", "C3", "-")]
    for x, label, colour, style in marks:
        timeline.axvline(x, color=colour, linestyle=style, label=f"{label}: {x:.1f} s")
    timeline.set_yticks(range(len(rows)), [f"job {i + 1}" for i in range(len(rows))])
    timeline.set_xlabel("seconds from the level's start (each net from its worker's first "
                        "line; the first one's includes the worker's imports)")
    timeline.set_title(f"level {fig['level']} on {fig['data']}: {fig['nets']} nets in "
                       f"{fig['concurrency']} Ray Train jobs, {fig['cores']} cores")
    timeline.set_xlim(0, 1.02 * max(x for x, *_ in marks))
    timeline.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    kinds = list(fig["cpu_by_process_kind"].items())[:14][::-1]
    cpu.barh([k for k, _ in kinds], [v["cpu_s"] for _, v in kinds],
             color=["C0" if k == TRAINING_KIND else "C1" for k, _ in kinds])
    for i, (_, v) in enumerate(kinds):
        cpu.text(v["cpu_s"], i, f" {v['cpu_s']:.1f} s ({v['processes']})", va="center",
                 fontsize=8)
    cpu.tick_params(axis="y", labelsize=8)
    cpu.set_xlabel("CPU seconds while the level ran (processes of that kind)")
    cpu.set_title(f"training {fig['training_cpu_s']:.0f} s; everything else "
                  f"{fig['other_cpu_s']:.0f} s = {fig['other_cpu_share_of_machine']:.0%} of "
                  f"{fig['cores']} cores x {fig['level_wall_s']:.0f} s")
    return save_figure(figure, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FACECASCADE_DATA") or "synth",
                    help="'synth' or a CUHK-format data set directory")
    ap.add_argument("--level", type=int, default=2, choices=(2, 3))
    ap.add_argument("--prev-noise", type=float, default=0.05,
                    help="noise of the stand-in previous level, inter-ocular distances")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--work", help="table cache (default outputs/bench/level{L}-{data})")
    ap.add_argument("--out", help="JSON (default bench/results/level_overhead_{data}.json)")
    ap.add_argument("--recipe", help="a recipe file applied over --params (recipes/real.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params override, e.g. resources.cpus_per_net=1.0")
    ap.add_argument("--tables-only", action="store_true", help="cut the tables and stop")
    ap.add_argument("--plain-runs", type=int, default=2, choices=(1, 2),
                    help="plain loops: before and after the Ray level (2, each net's faster "
                         "run counts, for a shared machine) or before it only (1)")
    args = ap.parse_args()
    args.load_at_start = load_average()
    logging.basicConfig(level=logging.WARNING)
    if args.data != "synth" and not (Path(args.data) / "trainImageList.txt").is_file():
        print(f"{args.data}: no trainImageList.txt (give --data synth or a CUHK-format "
              "data set)", file=sys.stderr)
        return 2
    overrides = dict(flatten(load_recipe(args.recipe))) if args.recipe else {}
    overrides.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    cfg = load_config(args.params, overrides)
    name = "demo" if args.data == "synth" else Path(args.data).name
    work = Path(args.work or ROOT / f"outputs/bench/level{args.level}-{name}")
    out = Path(args.out or ROOT / f"bench/results/level_overhead_{name}.json")
    crops = build_tables(args, cfg, work)
    if args.tables_only:
        return 0
    nets = level_nets(args.level)

    before = plain_loop(nets, crops, cfg, args.level)
    os.environ.setdefault("RAY_worker_niceness", "0")
    with tempfile.TemporaryDirectory(prefix="fc-bench-") as tmp:
        run = ray_level(crops, cfg, args.level, Path(tmp))
    cores = run.cores
    parallel = plain_parallel(nets, crops, cfg, args.level, cores)
    after = plain_loop(nets, crops, cfg, args.level) if args.plain_runs > 1 else before
    plain = {net: min(before[net], after[net], key=lambda p: p["seconds"]) for net in nets}
    fig = figures(args, cfg, crops, plain, run, parallel)
    print(json.dumps({k: v for k, v in fig.items() if not isinstance(v, dict)}, indent=2))
    print(f"level {args.level} ({fig['data']}): wall {fig['level_wall_s']:.1f} s against "
          f"ideal {fig['ideal_wall_s']:.1f} s = plain loop {fig['plain_sum_s']:.1f} s / "
          f"{cores} cores: {fig['wall_over_ideal']:.2f} x (goal <= {WALL_GOAL}); sum of "
          f"jobs {fig['sum_of_job_s']:.1f} s; samples/s under Ray / plain: median "
          f"{fig['samples_per_s_ratio_median']:.2f}, min {fig['samples_per_s_ratio_min']:.2f} "
          f"(goal >= {RATE_GOAL}); the plain loop on {cores} processes at once: "
          f"{fig['plain_parallel_wall_s']:.1f} s ({fig['plain_parallel_over_ideal']:.2f} x ideal, "
          f"samples/s {fig['plain_parallel_samples_per_s_ratio_median']:.2f} x)")
    print(f"CPU while the level ran: training {fig['training_cpu_s']:.1f} s, everything else "
          f"{fig['other_cpu_s']:.1f} s = {fig['other_cpu_share_of_machine']:.1%} of the "
          f"machine ({cores} cores x {fig['level_wall_s']:.1f} s)")
    alone = fig["one_job_alone"]
    print(f"{alone['net']} alone (one job, the other cores idle): {alone['job_s']:.1f} s in the "
          f"worker, {alone['level_wall_s']:.1f} s for the level, plain loop "
          f"{alone['plain_s']:.1f} s; samples/s {alone['samples_per_s_ratio']:.2f} x plain")
    write_json_atomic(fig, out)
    print(f"-> {out}, {plot(fig, run.result, parallel, out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
