"""Measure Ray's fixed costs on this machine: ``ray.init``, Train V2 vs V1, concurrent trainers.

Every measurement runs in a fresh subprocess, because ``RAY_TRAIN_V2_ENABLED`` must be
set before ``ray.train`` is imported and a Ray session cannot be restarted cleanly with
another Train API. The parent prints one line per case and writes all figures as JSON.

Usage::

    python bench/ray_overhead.py [out.json] [--quick] [--cpus 2]
    python bench/ray_overhead.py bench/results/ray_level.json --level --n 10

``--quick`` skips the 10-trainer cases. ``--level`` instead times
:func:`facecascade.orchestration.train_level` on ten tiny blob tables for each
``--max-concurrent-list`` value (0: as many jobs as the CPUs fit, each training its share
of the nets; 10: one job per net, all launched at once).

The trivial job is one "epoch" of a tiny torch model on random data (the same work
in a plain loop is timed too), reporting one metric dict with a checkpoint, i.e. the
minimal shape of a real job. Cases with ``data`` also pass a small Parquet table
through ``ray.data.read_parquet`` and iterate it three times in the worker with
``get_dataset_shard``, as :mod:`facecascade.orchestration` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("bench/results/ray_overhead.json")


def _trivial_work(seed: int) -> float:
    """One epoch of a tiny regression model on random data; returns the last loss."""
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 225, generator=g)
    y = torch.randn(2048, 4, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(225, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.zeros(())
    for i in range(0, len(x), 64):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[i:i + 64]), y[i:i + 64])
        loss.backward()
        opt.step()
    return float(loss.detach())


def _train_fn(config: dict[str, Any]) -> None:
    """Per-worker function of the trivial job: work, optional data pass, one report."""
    import ray.train
    import torch

    start = time.time()
    rows = 0
    epoch_s: list[float] = []
    if config.get("data"):
        shard = ray.train.get_dataset_shard("train")
        for _ in range(int(config.get("epochs", 1))):
            t = time.time()
            for batch in shard.iter_batches(batch_size=256, batch_format="numpy"):
                rows += len(batch["pixels"])
            epoch_s.append(round(time.time() - t, 3))
    loss = _trivial_work(int(config.get("seed", 0)))
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"loss": loss}, Path(tmp) / "state.pt")
        ray.train.report(
            {"loss": loss, "rows": rows, "start": start, "end": time.time(),
             "epoch_iter_s": epoch_s},
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
        )


def _make_table(path: Path, n: int = 2000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, size=(n, 225), dtype=np.uint8)
    tgt = rng.random((n, 4), dtype=np.float32)
    table = pa.table({
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(pix.ravel()), 225),
        "target": pa.FixedSizeListArray.from_arrays(pa.array(tgt.ravel()), 4),
    })
    pq.write_table(table, path, row_group_size=500)


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """Run one case inside this (fresh) process and return its figures."""
    t0 = time.perf_counter()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=True)
    t_init = time.perf_counter() - t0
    out: dict[str, Any] = {"api": args.api, "n": args.n, "launch": args.launch,
                           "data": args.data, "cpus_per_net": args.cpus_per_net,
                           "ray_init_s": round(t_init, 2)}
    try:
        import ray.train
        from ray.train.torch import TorchTrainer

        out["train_v2"] = ray.train.v2._internal.constants.is_v2_enabled()
        tmp = Path(tempfile.mkdtemp(prefix="rayovh-"))
        table = tmp / "t.parquet"
        if args.data:
            _make_table(table)

        def fit_one(i: int) -> dict[str, Any]:
            import ray.train as rt
            from ray.train.torch import TorchTrainer as TT

            # Ray Data's V2 Parquet source adds a ListFiles step whose tasks always ask
            # for one CPU: with every CPU held by trainers' workers it never runs (hang).
            # The V1 source has a single read step that honours ray_remote_args.
            ray.data.DataContext.get_current().use_datasource_v2 = False
            kw: dict[str, Any] = {}
            if not rt.v2._internal.constants.is_v2_enabled():
                kw["trainer_resources"] = {"CPU": 0}
            trainer = TT(
                _train_fn,
                train_loop_config={"seed": i, "data": args.data, "epochs": 3},
                scaling_config=rt.ScalingConfig(
                    num_workers=1, resources_per_worker={"CPU": args.cpus_per_net}, **kw),
                run_config=rt.RunConfig(
                    name=f"bench-{i}", storage_path=str(tmp / "runs"),
                    failure_config=rt.FailureConfig(max_failures=1),
                    checkpoint_config=rt.CheckpointConfig(num_to_keep=2)),
                # read tasks take no logical CPU: the trainers' workers may hold them all
                datasets=({"train": ray.data.read_parquet(
                    str(table), ray_remote_args={"num_cpus": 0})} if args.data else None),
            )
            res = trainer.fit()
            return {k: res.metrics[k] for k in ("start", "end", "rows", "epoch_iter_s")}

        del TorchTrainer
        t1 = time.perf_counter()
        if args.launch == "task":
            env = {"RAY_TRAIN_V2_ENABLED": os.environ.get("RAY_TRAIN_V2_ENABLED", "1")}
            remote = ray.remote(num_cpus=0, max_retries=0)(fit_one).options(
                runtime_env={"env_vars": env})
            jobs = ray.get([remote.remote(i) for i in range(args.n)])
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(args.n) as pool:
                jobs = list(pool.map(fit_one, range(args.n)))
        wall = time.perf_counter() - t1
        t2 = time.perf_counter()
        for i in range(args.n):
            _trivial_work(i)
        plain = time.perf_counter() - t2
        out.update({
            "fit_wall_s": round(wall, 2),
            "plain_loop_s": round(plain, 3),
            "overhead_s": round(wall - plain, 2),
            "overhead_per_job_s": round((wall - plain) / args.n, 2),
            "job_seconds": [round(j["end"] - j["start"], 2) for j in jobs],
            "rows_seen": [j["rows"] for j in jobs],
            "data_epoch_iter_s": [j["epoch_iter_s"] for j in jobs],
            "max_running_at_once": _max_overlap([(j["start"], j["end"]) for j in jobs]),
        })
    finally:
        ray.shutdown()
    return out


def _blob_table(n: int, seed: int, size: int = 15) -> Any:
    """A crop table of noisy blobs whose target is the blob centre (learnable)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    centre = rng.uniform(3.0, size - 4.0, size=(n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = (xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2
    img = 40 + 180 * np.exp(-d2 / 8.0) + rng.normal(0, 8, size=(n, size, size))

    def fixed(v: Any, width: int, dtype: Any) -> Any:
        return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), type=dtype), width)

    return pa.table({
        "face_id": pa.array(np.arange(n), pa.int64()),
        "aug_id": pa.array(np.zeros(n), pa.int32()),
        "pixels": fixed(np.clip(img, 0, 255).astype(np.uint8), size * size, pa.uint8()),
        "target": fixed((centre / size).astype(np.float32), 2, pa.float32()),
        "win_wh": fixed(np.full((n, 2), 2.0 * size, np.float32), 2, pa.float32()),
        "iod": pa.array(np.full(n, 2.0 * size), pa.float32()),
    })


def _level_child(args: argparse.Namespace) -> dict[str, Any]:
    """Time one ``train_level`` of level 2 (``--n`` nets, 4 epochs of 1024 rows each)."""
    import pyarrow.parquet as pq

    from facecascade import orchestration as orch
    from facecascade.config import config_from_dict
    from facecascade.specs import level_nets

    tmp = Path(tempfile.mkdtemp(prefix="raylevel-"))
    nets = level_nets(2)[:args.n]
    for i, net in enumerate(nets):
        pq.write_table(_blob_table(1024, 2 * i), tmp / f"{net}.train.parquet", row_group_size=256)
        pq.write_table(_blob_table(256, 2 * i + 1), tmp / f"{net}.val.parquet")
    cfg = config_from_dict({
        "level2": {"train": {"epochs": 4, "batch_size": 32, "lr": 0.02, "lr_step": 1000}},
        "resources": {"cpus_per_net": args.cpus_per_net, "max_concurrent": args.max_concurrent,
                      "torch_threads": 1}})
    t0 = time.perf_counter()
    orch.connect(num_cpus=args.cpus)
    t_init = time.perf_counter() - t0
    try:
        res = orch.train_level(2, crop_dir=tmp, out_dir=tmp / "models", cfg=cfg,
                               run_name="bench", storage_path=tmp / "ray", nets=nets)
    finally:
        orch.shutdown()
    jobs = list(res.jobs.values())
    return {"mode": "level", "n": len(nets),
            "max_concurrent": args.max_concurrent, "concurrency": res.concurrency,
            "cpus_per_net": args.cpus_per_net, "ray_init_s": round(t_init, 2),
            "level_wall_s": round(res.seconds, 2),
            "job_seconds": [round(j.seconds, 2) for j in jobs],
            "train_seconds": [round(sum(h["seconds"] for h in j.history), 2) for j in jobs],
            "max_running_at_once": _max_overlap([(j.start, j.end) for j in jobs])}


def _run_level_suite(args: argparse.Namespace) -> int:
    results = []
    for mc in [int(v) for v in args.max_concurrent_list.split(",")]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        cmd = [sys.executable, __file__, "--child-level", "--n", str(args.n),
               "--cpus", str(args.cpus), "--cpus-per-net", str(args.cpus_per_net),
               "--max-concurrent", str(mc)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        res = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
            "mode": "level", "max_concurrent": mc, "error": proc.stderr[-2000:]}
        results.append(res)
        print(json.dumps(res), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "ray_cpus": args.cpus},
                               "levels": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


CASES: list[tuple[str, int, str, bool]] = [
    # api, n, launch, data
    ("v2", 1, "task", False),
    ("v1", 1, "task", False),
    ("v2", 1, "task", True),
    ("v1", 1, "task", True),
    ("v2", 4, "task", True),
    ("v2", 4, "thread", True),
    ("v1", 4, "task", True),
    ("v2", 10, "task", True),
    ("v1", 10, "task", True),
]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run one case (``--child``) or the whole suite."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--api", choices=("v1", "v2"), default="v2")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--launch", choices=("task", "thread"), default="task")
    p.add_argument("--data", action="store_true")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--cpus-per-net", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="skip the 10-trainer cases")
    p.add_argument("--only", default="", help="comma list of case indices to run")
    p.add_argument("--level", action="store_true",
                   help="time train_level instead (use --n 10 for a whole level)")
    p.add_argument("--max-concurrent-list", default="0,10",
                   help="--level: resources.max_concurrent values to compare")
    p.add_argument("--child-level", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-concurrent", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    if args.child_level:
        print(json.dumps(_level_child(args)))
        return 0
    if args.level:
        return _run_level_suite(args)

    cases = list(enumerate(CASES))
    if args.only:
        keep = {int(i) for i in args.only.split(",")}
        cases = [c for c in cases if c[0] in keep]
    if args.quick:
        cases = [c for c in cases if c[1][1] < 10]
    results: list[dict[str, Any]] = []
    for idx, (api, n, launch, data) in cases:
        env = dict(os.environ, RAY_TRAIN_V2_ENABLED="1" if api == "v2" else "0")
        env.pop("RAY_ADDRESS", None)
        cmd = [sys.executable, __file__, "--child", "--api", api, "--n", str(n),
               "--launch", launch, "--cpus", str(args.cpus),
               "--cpus-per-net", str(args.cpus_per_net)] + (["--data"] if data else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        total = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            res = {"case": idx, "api": api, "n": n, "launch": launch, "data": data,
                   "error": proc.stderr[-2000:]}
        else:
            res = {"case": idx, **json.loads(lines[-1])}
        res["process_s"] = round(total, 2)
        results.append(res)
        print(json.dumps(res), flush=True)
    plain = _timed_plain()
    report = {"machine": {"cpus": os.cpu_count(), "ray_cpus": args.cpus,
                          "cpus_per_net": args.cpus_per_net},
              "plain_one_job_s": plain, "cases": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def _timed_plain() -> float:
    t0 = time.perf_counter()
    _trivial_work(0)
    return round(time.perf_counter() - t0, 3)


if __name__ == "__main__":
    raise SystemExit(main())
