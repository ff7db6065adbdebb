"""Benchmark: per-face latency of the full cascade, PyTorch eager vs onnxruntime.

The cascade (a saved directory, or an untrained 3-level one) is exported with
:func:`facecascade.export.export_onnx` and loaded back as an
:class:`~facecascade.export.OnnxCascade`; both run the same Python glue (crop
cutting, standardisation, fusion), so the difference is the networks' runtime.
Faces are procedural (``facecascade.synth``, 128x128 grey images, one face
each, detector-like boxes). For each batch size ``B`` the whole cascade runs
``predict`` on ``B`` faces, repeatedly; the per-face latency is the median
time over ``B``, as process CPU time (the headline: robust when other jobs
share the cores) and as wall time. The time inside the networks
(``Cascade._forward``) is timed separately, the rest is glue. One thread for
both backends by default.

    python bench/onnx_speed.py --out bench/results/onnx_speed.json
    python bench/onnx_speed.py --model models/cascade --batches 1 64 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecascade.cascade import Cascade, load_cascade
from facecascade.config import Config
from facecascade.export import export_onnx, load_onnx
from facecascade.images import to_gray
from facecascade.io import write_json_atomic
from facecascade.synth import generate

ROOT = Path(__file__).resolve().parents[1]


def _timed_forward(cascade: Cascade) -> list[float]:
    """Wrap ``cascade._forward`` (on the instance) to add each call's CPU seconds to a list."""
    spent: list[float] = []
    inner: Callable[[str, np.ndarray], np.ndarray] = cascade._forward

    def forward(name: str, x: np.ndarray) -> np.ndarray:
        t0 = time.process_time()
        out = inner(name, x)
        spent.append(time.process_time() - t0)
        return out

    cascade._forward = forward  # type: ignore[method-assign]
    return spent


def measure(cascade: Cascade, images: Sequence[np.ndarray], boxes: np.ndarray, *,
            batch: int, repeats: int, warmup: int = 3) -> dict[str, Any]:
    """Per-face latency (ms) of ``cascade.predict`` on ``batch`` faces, median of ``repeats``.

    ``cpu_ms`` is process CPU time (robust to other processes sharing the cores),
    ``wall_ms`` the elapsed time; ``nets_cpu_ms`` the CPU time inside the networks.
    """
    spent = _timed_forward(cascade)
    n = len(images)
    walls, cpus, nets = [], [], []
    for r in range(warmup + repeats):
        start = (r * batch) % max(n - batch + 1, 1)
        imgs, bx = images[start:start + batch], boxes[start:start + batch]
        spent.clear()
        w0, c0 = time.perf_counter(), time.process_time()
        cascade.predict(imgs, bx)
        c1, w1 = time.process_time(), time.perf_counter()
        if r >= warmup:
            walls.append((w1 - w0) / batch * 1e3)
            cpus.append((c1 - c0) / batch * 1e3)
            nets.append(sum(spent) / batch * 1e3)
    del cascade._forward  # back to the class's method
    cpu, net = statistics.median(cpus), statistics.median(nets)
    return {"batch": batch, "repeats": repeats, "cpu_ms": round(cpu, 4),
            "cpu_ms_min": round(min(cpus), 4), "nets_cpu_ms": round(net, 4),
            "glue_cpu_ms": round(cpu - net, 4), "wall_ms": round(statistics.median(walls), 4),
            "wall_ms_min": round(min(walls), 4), "faces_per_cpu_s": round(1e3 / cpu, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="cascade directory (default: an untrained 3-level cascade)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/onnx_speed.json"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--faces", type=int, default=128, help="distinct procedural faces")
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed runs per case (default: about 2,000 faces' worth, >= 10)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cascade = load_cascade(args.model, device="cpu", fast=False) if args.model else \
        Cascade.untrained(Config(), levels=3, seed=0)  # the reference glue, per-net forwards
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(cascade, Path(tmp) / "cascade.onnx")
        export_s = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        onnx_cascade = load_onnx(path, threads=args.threads)
        load_s = time.perf_counter() - t0

    faces = generate(max(args.faces, max(args.batches)), seed=0, size=128)
    images = [to_gray(f.image) for f in faces]
    boxes = np.stack([f.box for f in faces])
    got, want = onnx_cascade.predict(images, boxes), cascade.predict(images, boxes)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    agree = {str(k): float((np.abs(got[k] - want[k]).max(axis=(1, 2)) / side).max())
             for k in got}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for batch in args.batches:
        repeats = args.repeats or max(10, 2000 // batch)
        for backend, model in (("pytorch", cascade), ("onnxruntime", onnx_cascade)):
            row = {"backend": backend, **measure(model, images, boxes, batch=batch,
                                                 repeats=repeats)}
            rows.append(row)
            print(f"batch {batch:>4}  {backend:<12} CPU {row['cpu_ms']:8.3f} ms/face "
                  f"(nets {row['nets_cpu_ms']:.3f}, glue {row['glue_cpu_ms']:.3f}), "
                  f"wall {row['wall_ms']:8.3f} ms/face (min {row['wall_ms_min']:.3f})",
                  flush=True)
    speedup = {}
    for batch in args.batches:
        by = {r["backend"]: r for r in rows if r["batch"] == batch}
        speedup[str(batch)] = {
            "total": round(by["pytorch"]["cpu_ms"] / by["onnxruntime"]["cpu_ms"], 2),
            "nets": round(by["pytorch"]["nets_cpu_ms"] / by["onnxruntime"]["nets_cpu_ms"], 2)}
        up = speedup[str(batch)]
        print(f"batch {batch:>4}  onnxruntime speed-up (CPU time): {up['total']}x overall, "
              f"{up['nets']}x in the nets")
    result = {
        "what": "per-face latency of the full cascade (predict), PyTorch eager vs onnxruntime",
        "model": args.model or "untrained (Cascade.untrained(Config(), levels=3, seed=0))",
        "levels": cascade.levels, "threads": args.threads, "faces": len(images),
        "machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": load,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx")},
        "export": {"seconds": round(export_s, 3), "bytes": size,
                   "load_seconds": round(load_s, 3)},
        "max_diff_over_box_side": agree,
        "cases": rows, "speedup": speedup,
    }
    write_json_atomic(result, args.out)
    print(f"export {export_s:.2f} s ({size / 1e6:.2f} MB), load {load_s:.2f} s; "
          f"max |onnx - torch| / box side per level: "
          + ", ".join(f"{k}: {v:.1e}" for k, v in agree.items()))
    print(f"saved {args.out}")
    return 0


def _version(module: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(module)


if __name__ == "__main__":
    sys.exit(main())
