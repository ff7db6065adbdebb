"""Integration tests of :mod:`facecascade.orchestration` on a real local Ray (2 CPUs).

One Ray session serves the module (``ray.init`` costs seconds). The crop tables are
15x15 grey blobs whose target is the blob centre, so a few epochs visibly lower the
validation NME. Runtime on the shared 2-core development machine: about 4 min for the
file (the 10-net level ~190 s, the kill-and-resume test ~35 s, the failing net ~20 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from facecascade import orchestration as orch
from facecascade.config import Config, config_from_dict
from facecascade.specs import level_nets

pytestmark = pytest.mark.integration

SIZE = 15
EPOCHS = 4


def blob_table(n: int, seed: int) -> pa.Table:
    """A crop table (ARCHITECTURE.md schema) of ``n`` noisy blobs; target = blob centre."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(3.0, SIZE - 4.0, size=(n, 2))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    d2 = ((xx[None] - centre[:, 0, None, None]) ** 2
          + (yy[None] - centre[:, 1, None, None]) ** 2)
    img = 40 + 180 * np.exp(-d2 / 8.0) + rng.normal(0, 8, size=(n, SIZE, SIZE))
    pixels = np.clip(img, 0, 255).astype(np.uint8).reshape(n, -1)
    target = (centre / SIZE).astype(np.float32)

    def fixed(values: np.ndarray, width: int, dtype: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=dtype), width)

    return pa.table({
        "face_id": pa.array(np.arange(n), pa.int64()),
        "aug_id": pa.array(np.zeros(n), pa.int32()),
        "pixels": fixed(pixels, SIZE * SIZE, pa.uint8()),
        "target": fixed(target, 2, pa.float32()),
        "win_wh": fixed(np.full((n, 2), 2.0 * SIZE, np.float32), 2, pa.float32()),
        "iod": pa.array(np.full(n, 2.0 * SIZE), pa.float32()),
    })


def write_tables(crop_dir: Path, nets: list[str], n_train: int = 1024, n_val: int = 256) -> None:
    crop_dir.mkdir(parents=True, exist_ok=True)
    for i, net in enumerate(nets):
        pq.write_table(blob_table(n_train, 2 * i), crop_dir / f"{net}.train.parquet",
                       row_group_size=256)
        pq.write_table(blob_table(n_val, 2 * i + 1), crop_dir / f"{net}.val.parquet")


def small_config(**resources: object) -> Config:
    train = {"epochs": EPOCHS, "batch_size": 32, "lr": 0.02, "lr_step": 1000, "patience": 10}
    return config_from_dict({
        "level2": {"train": train},
        "resources": {"cpus_per_net": 1.0, "max_failures": 2, "torch_threads": 1,
                      "checkpoint_seconds": 0, **resources},
    })


@pytest.fixture(scope="module")
def ray_session():
    orch.connect(num_cpus=2)
    yield
    orch.shutdown()


def test_level_nets() -> None:
    assert level_nets(1) == ["F1", "EN1", "NM1"]
    two = level_nets(2)
    assert len(two) == 10 and two[0] == "LE21" and two[-1] == "RM22"
    assert level_nets(3) == [n.replace("2", "3", 1) for n in two]
    with pytest.raises(ValueError):
        level_nets(4)


def test_train_level_all_nets(ray_session: None, tmp_path: Path) -> None:
    nets = level_nets(2)
    write_tables(tmp_path / "crops", nets)
    t0 = time.perf_counter()
    result = orch.train_level(2, crop_dir=tmp_path / "crops", out_dir=tmp_path / "models",
                              cfg=small_config(), run_name="t-all",
                              storage_path=tmp_path / "ray")
    wall = time.perf_counter() - t0
    print(f"\nlevel 2, {len(nets)} nets: {wall:.1f} s wall, concurrency {result.concurrency}, "
          "per job "
          + ", ".join(f"{j.net} {j.seconds:.1f}s" for j in result.jobs.values()))
    assert list(result.jobs) == nets
    for net, job in result.jobs.items():
        assert job.ok, job.error
        state = torch.load(tmp_path / "models" / f"{net}.pt", weights_only=True)
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor)
                                               for v in state.values())
        assert [h["epoch"] for h in job.history] == list(range(1, EPOCHS + 1))
        assert job.best_val_nme < job.history[0]["val_nme"], (net, job.history)
        assert job.start < job.history[0]["time"] <= job.history[-1]["time"] <= job.end
        assert job.restarts == 0 and job.params["train"]["epochs"] == EPOCHS
        saved = json.loads((tmp_path / "models" / f"{net}.history.json").read_text())
        assert saved["net"] == net and len(saved["history"]) == EPOCHS
    jobs = list(result.jobs.values())
    overlapping = [(a.net, b.net) for i, a in enumerate(jobs) for b in jobs[i + 1:]
                   if max(a.start, b.start) < min(a.end, b.end)]
    assert overlapping, "no two jobs ran at the same time"


def test_worker_killed_resumes_from_checkpoint(ray_session: None, tmp_path: Path) -> None:
    nets = ["N21"]
    write_tables(tmp_path / "crops", nets)
    pid_file = tmp_path / "worker.pid"
    pid_path = str(pid_file)

    def hook(net: str, record: dict) -> None:
        # runs in the Ray worker: after epoch 2 of the first attempt, publish the pid and
        # wait to be killed (by the watcher thread below)
        if record["epoch"] == 2 and record["attempt"] == 0 and not os.path.exists(pid_path):
            with open(pid_path + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(pid_path + ".tmp", pid_path)
            time.sleep(60)

    killed: list[int] = []

    def watcher(stop: threading.Event) -> None:
        while not stop.is_set():
            if pid_file.exists():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.1)

    stop = threading.Event()
    thread = threading.Thread(target=watcher, args=(stop,), daemon=True)
    thread.start()
    try:
        result = orch.train_level(2, crop_dir=tmp_path / "crops", out_dir=tmp_path / "models",
                                  cfg=small_config(max_failures=2), run_name="t-kill",
                                  storage_path=tmp_path / "ray", nets=nets, epoch_hook=hook)
    finally:
        stop.set()
        thread.join(5)
    job = result.jobs["N21"]
    assert killed, "the worker never published its pid"
    assert job.ok and job.restarts >= 1, job
    assert len(job.attempt_starts) == job.restarts + 1
    epochs = [h["epoch"] for h in job.history]
    assert epochs == list(range(1, EPOCHS + 1)) and job.epochs_run == EPOCHS
    resumed = [h["epoch"] for h in job.history if h["attempt"] >= 1]
    assert resumed and resumed[0] > 1, job.history  # continued from a checkpoint, not from 0
    assert job.history[0]["attempt"] == 0
    torch.load(tmp_path / "models" / "N21.pt", weights_only=True)


def test_failing_net_names_it(ray_session: None, tmp_path: Path) -> None:
    nets = ["LE21", "RE21"]
    write_tables(tmp_path / "crops", nets)
    (tmp_path / "crops" / "RE21.train.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(orch.LevelTrainingError) as info:
        orch.train_level(2, crop_dir=tmp_path / "crops", out_dir=tmp_path / "models",
                         cfg=small_config(max_failures=0), run_name="t-fail",
                         storage_path=tmp_path / "ray", nets=nets)
    err = info.value
    assert "RE21" in str(err) and "LE21" not in err.failures
    assert list(err.failures) == ["RE21"]
    assert err.result.jobs["LE21"].ok  # the other net finished and was written
    assert (tmp_path / "models" / "LE21.pt").exists()
    assert not (tmp_path / "models" / "RE21.pt").exists()


def test_rejects_nets_of_another_level(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="level 2"):
        orch.train_level(2, crop_dir=tmp_path, out_dir=tmp_path, cfg=small_config(),
                         run_name="x", storage_path=tmp_path, nets=["F1"])


def test_nets_of_one_job_train_in_turn_and_fail_alone(ray_session: None, tmp_path: Path) -> None:
    """max_concurrent=1: one trainer trains both nets; RE21's patches are 10x10, not 15x15."""
    nets = ["LE21", "RE21"]
    write_tables(tmp_path / "crops", nets, n_train=256, n_val=64)
    bad = blob_table(256, 9).set_column(
        2, "pixels", pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(256 * 100, np.uint8)),
                                                       100))
    pq.write_table(bad, tmp_path / "crops" / "RE21.train.parquet")
    with pytest.raises(orch.LevelTrainingError) as info:
        orch.train_level(2, crop_dir=tmp_path / "crops", out_dir=tmp_path / "models",
                         cfg=small_config(max_concurrent=1, max_failures=0), run_name="t-one",
                         storage_path=tmp_path / "ray", nets=nets)
    result = info.value.result
    assert result.concurrency == 1 and list(info.value.failures) == ["RE21"]
    le, re = result.jobs["LE21"], result.jobs["RE21"]
    assert le.ok and le.params["job_nets"] == nets and re.params["job_nets"] == nets
    assert le.run_path == re.run_path
    assert [h["epoch"] for h in le.history] == list(range(1, EPOCHS + 1))
    assert le.error is None and "do not hold crops of width 15" in re.error, re.error
    assert (tmp_path / "models" / "LE21.pt").exists()
    assert not (tmp_path / "models" / "RE21.pt").exists()


def test_tables_over_the_memory_limit_stream_from_parquet(ray_session: None,
                                                          tmp_path: Path) -> None:
    write_tables(tmp_path / "crops", ["N22"], n_train=512, n_val=128)
    result = orch.train_level(2, crop_dir=tmp_path / "crops", out_dir=tmp_path / "models",
                              cfg=small_config(), run_name="t-stream",
                              storage_path=tmp_path / "ray", nets=["N22"],
                              in_memory_max_bytes=0)
    job = result.jobs["N22"]
    assert job.ok and job.params["data"] == "parquet stream"
    assert [h["epoch"] for h in job.history] == list(range(1, EPOCHS + 1))
    assert job.best_val_nme < job.history[0]["val_nme"]
    assert all(h["samples_per_s"] > 0 for h in job.history)


def test_a_checkpoint_reads_back_as_bytes_for_the_launcher_and_as_weights_for_the_driver(
        tmp_path: Path) -> None:
    # the launcher process returns the weights' file bytes (it never imports torch); the
    # driver loads them into the same state dict the worker saved
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / f"LE21{orch.WEIGHTS_SUFFIX}")
    meta = {"LE21": {"status": "ok"}, "LE22": {"status": "failed"}}
    (tmp_path / orch.META_FILE).write_text(json.dumps({"nets": meta, "net": None}))
    metas, now, raw = orch._read_checkpoint(tmp_path, load=False)
    assert metas == meta and now is None and set(raw) == {"LE21"}
    assert isinstance(raw["LE21"], bytes)
    assert torch.equal(orch._load_state(raw["LE21"])["w"], state["w"])
    _, _, loaded = orch._read_checkpoint(tmp_path)
    assert torch.equal(loaded["LE21"]["w"], state["w"])
