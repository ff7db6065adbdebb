"""Tests of facecascade.train: lr schedule, standardisation, batches, the loop, checkpoints."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from facecascade.config import TrainConfig
from facecascade.train import (
    ArrayBatches,
    FitResult,
    distance_loss,
    euclidean_loss,
    fit_one,
    l1_loss,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    standardise,
)

SIZE = 15
TIMING_KEYS = ("seconds", "samples_per_s")


def blobs(n: int, seed: int) -> dict[str, np.ndarray]:
    """15x15 grey images of one bright blob; target = its centre in relative coordinates."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(3, SIZE - 4, (n, 2))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    d2 = (xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2
    image = 40 + 180 * np.exp(-d2 / (2 * 1.5 ** 2)) + rng.normal(0, 5, (n, SIZE, SIZE))
    return {
        "pixels": np.clip(image, 0, 255).astype(np.uint8).reshape(n, -1),
        "target": ((centre + 0.5) / SIZE).astype(np.float32),
        "win_wh": np.full((n, 2), SIZE, np.float32),
        "iod": np.full(n, 2.0 * SIZE, np.float32),
    }


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets train fastest on one thread, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return blobs(512, 0), blobs(128, 1)


def sources(data, batch_size: int = 32):
    train, val = data
    return (ArrayBatches(train, batch_size, shuffle=True, seed=3),
            ArrayBatches(val, 128, shuffle=False, seed=0))


def fit(data, cfg: TrainConfig, **kwargs) -> FitResult:
    train, val = sources(data)
    return fit_one("LE21", train, val, cfg, device="cpu", log_every=0, **kwargs)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in history]


def test_lr_at():
    cfg = TrainConfig(lr=5e-3, lr_decay=0.9, lr_step=100)
    assert lr_at(0, cfg) == 5e-3
    assert lr_at(99, cfg) == 5e-3
    assert lr_at(100, cfg) == pytest.approx(4.5e-3)
    assert lr_at(250, cfg) == pytest.approx(5e-3 * 0.81)
    assert lr_at(1000, cfg) == pytest.approx(5e-3 * 0.9 ** 10)
    assert lr_at(10**6, TrainConfig(lr=0.1, lr_decay=1.0)) == 0.1


def test_standardise():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (4, 31 * 39), dtype=np.uint8)
    x = standardise(px, (39, 31))
    assert x.shape == (4, 1, 31, 39) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, rtol=1e-4)
    # row-major: pixel (row r, col c) of a crop is element r * W + c
    assert x[1, 0, 2, 5] == standardise(px.reshape(4, 31, 39), (39, 31))[1, 0, 2, 5]
    flat = standardise(np.full((1, 225), 77, np.uint8), (15, 15))
    assert np.all(flat == 0)
    with pytest.raises(ValueError, match=r"expected \(b, 225\)"):
        standardise(px, (15, 15))


def test_array_batches_order_depends_on_seed_and_epoch():
    cols = {"a": np.arange(10), "b": np.arange(10) * 2}
    src = ArrayBatches(cols, 4, shuffle=True, seed=5)
    assert len(src) == 3
    e0 = np.concatenate([b["a"] for b in src(0)])
    assert sorted(e0.tolist()) == list(range(10))
    assert np.array_equal(e0, np.concatenate([b["a"] for b in ArrayBatches(
        cols, 4, shuffle=True, seed=5)(0)]))
    assert not np.array_equal(e0, np.concatenate([b["a"] for b in src(1)]))
    assert all(np.array_equal(b["b"], 2 * b["a"]) for b in src(2))
    plain = ArrayBatches(cols, 4, shuffle=False, seed=5)
    assert np.concatenate([b["a"] for b in plain(7)]).tolist() == list(range(10))
    with pytest.raises(ValueError, match="equal length"):
        ArrayBatches({"a": np.arange(3), "b": np.arange(4)}, 2, shuffle=False, seed=0)


def test_fit_one_learns_blob_centres(data):
    train, val = data
    baseline = np.mean(np.linalg.norm((val["target"] - train["target"].mean(0)) * val["win_wh"],
                                      axis=1) / val["iod"])
    result = fit(data, TrainConfig(epochs=6, patience=6))
    assert result.epochs_run == 6 and not result.stopped_early
    assert result.best_val_nme < 0.5 * baseline
    assert result.best_val_nme == min(m["val_nme"] for m in result.history)
    assert result.history[result.best_epoch - 1]["val_nme"] == result.best_val_nme
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    assert [m["epoch"] for m in result.history] == list(range(1, 7))
    assert result.history[-1]["step"] == 6 * 16
    assert all(t.device.type == "cpu" for t in result.state_dict.values())


def test_distance_loss_bounds_each_face_gradient():
    """The distance and L1 losses pull every face by a bounded step, whatever its error; eq. 6's
    squared error pulls a face 100 times off 100 times harder (its worst faces dominate)."""
    target = torch.zeros(2, 4)
    pred = torch.tensor([[0.03, 0.04, 0.0, 0.01], [3.0, 4.0, 0.0, 1.0]], requires_grad=True)
    assert float(distance_loss(pred.detach(), target)) == pytest.approx((0.06 + 6.0) / 2)
    for loss, ratio in ((distance_loss, 1.0), (l1_loss, 1.0), (euclidean_loss, 100.0)):
        (grad,) = torch.autograd.grad(loss(pred, target), pred)
        per_point = grad.reshape(2, 2, 2).norm(dim=2)
        assert (per_point[1] / per_point[0]).tolist() == pytest.approx([ratio, ratio])
    zero = torch.zeros(1, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(distance_loss(zero, torch.zeros(1, 2)), zero)
    assert torch.isfinite(grad).all()


def test_every_configurable_loss_has_a_function():
    # config.LOSSES (validated names) and train.LOSSES (the functions) are kept apart so
    # that config does not import torch; they must name the same losses
    from facecascade import config, train

    assert set(train.LOSSES) == set(config.LOSSES)


def test_fit_one_trains_with_the_configured_loss(data):
    a = fit(data, TrainConfig(epochs=2, loss="euclidean"), seed=5)
    b = fit(data, TrainConfig(epochs=2, loss="distance"), seed=5)
    c = fit(data, TrainConfig(epochs=2, loss="l1"), seed=5)
    # the distance is about sqrt(2 * euclidean) per point: a different quantity is minimised
    assert b.history[0]["train_loss"] > 2 * a.history[0]["train_loss"]
    assert c.history[0]["train_loss"] > b.history[0]["train_loss"]  # |dx| + |dy| >= distance
    for other in (b, c):
        assert not torch.equal(a.state_dict["head.1.weight"], other.state_dict["head.1.weight"])
    train, val = data
    baseline = np.mean(np.linalg.norm((val["target"] - train["target"].mean(0)) * val["win_wh"],
                                      axis=1) / val["iod"])
    assert fit(data, TrainConfig(epochs=6, patience=6, loss="distance")).best_val_nme < \
        0.5 * baseline


def test_fit_one_is_deterministic_for_a_seed(data):
    cfg = TrainConfig(epochs=2)
    a, b = fit(data, cfg, seed=11), fit(data, cfg, seed=11)
    assert_same_weights(a.state_dict, b.state_dict)
    assert untimed(a.history) == untimed(b.history)
    c = fit(data, cfg, seed=12)
    assert not torch.equal(a.state_dict["head.1.weight"], c.state_dict["head.1.weight"])


def test_on_epoch_metrics_and_state(data):
    calls = []
    fit(data, TrainConfig(epochs=2), on_epoch=lambda m, s: calls.append((m, s)))
    assert len(calls) == 2
    metrics, state = calls[-1]
    assert set(metrics) == {"epoch", "step", "train_loss", "val_nme", "lr", "seconds",
                            "samples_per_s"}
    assert metrics["epoch"] == 2 and metrics["lr"] == lr_at(metrics["step"], TrainConfig())
    for key in ("model", "optimizer", "epoch", "step", "best_val_nme", "best_state",
                "bad_epochs", "torch_rng", "history", "name", "config"):
        assert key in state, key
    assert state["name"] == "LE21" and state["config"]["epochs"] == 2
    assert calls[0][1]["epoch"] == 1  # states are snapshots, not live references
    assert not torch.equal(calls[0][1]["model"]["head.1.weight"], state["model"]["head.1.weight"])


def test_resume_from_disk_is_exact(data, tmp_path):
    cfg = TrainConfig(epochs=4, patience=4, lr_step=10)  # lr decays inside the run
    straight = fit(data, cfg, seed=2)

    ckpt = tmp_path / "ckpt" / "LE21.pt"
    seen = []

    def save_and_stop(metrics, state):
        seen.append(metrics["epoch"])
        save_checkpoint(state, ckpt)
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt  # a worker dying after epoch 2

    with pytest.raises(KeyboardInterrupt):
        fit(data, cfg, seed=2, on_epoch=save_and_stop)
    assert seen == [1, 2] and [p.name for p in ckpt.parent.iterdir()] == ["LE21.pt"]

    state = load_checkpoint(ckpt)
    resumed = fit(data, cfg, seed=2, resume=state)
    assert_same_weights(straight.state_dict, resumed.state_dict)
    assert untimed(straight.history) == untimed(resumed.history)
    assert (resumed.epochs_run, resumed.best_epoch, resumed.best_val_nme) == \
        (straight.epochs_run, straight.best_epoch, straight.best_val_nme)


def test_resume_refuses_another_network(data, tmp_path):
    states = []
    fit(data, TrainConfig(epochs=1), on_epoch=lambda m, s: states.append(s))
    train, val = sources(data)
    with pytest.raises(ValueError, match="not 'LE22'"):
        fit_one("LE22", train, val, TrainConfig(epochs=2), resume=states[0], device="cpu")


def test_early_stopping_keeps_best_weights(data):
    train, _ = sources(data)
    val = blobs(64, 9)

    def worsening_val(epoch):  # targets drift away every epoch: only epoch 1 is best
        yield {**val, "target": val["target"] + 10.0 * epoch}

    states = []
    result = fit_one("LE21", train, worsening_val, TrainConfig(epochs=10, patience=2),
                     device="cpu", log_every=0, on_epoch=lambda m, s: states.append(s))
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert_same_weights(result.state_dict, states[0]["model"])


def test_empty_source_is_an_error(data):
    _, val = sources(data)
    with pytest.raises(ValueError, match="no samples"):
        fit_one("LE21", lambda epoch: iter(()), val, TrainConfig(epochs=1), device="cpu")


def test_level1_local_share_trains(tmp_path):
    rng = np.random.default_rng(0)
    n = 32
    cols = {"pixels": rng.integers(0, 256, (n, 31 * 39), dtype=np.uint8),
            "target": rng.uniform(0.2, 0.8, (n, 6)).astype(np.float32),
            "win_wh": np.full((n, 2), 40.0, np.float32), "iod": np.full(n, 15.0, np.float32)}
    states = []
    result = fit_one("EN1", ArrayBatches(cols, 16, shuffle=True, seed=0),
                     ArrayBatches(cols, 32, shuffle=False, seed=0), TrainConfig(epochs=1),
                     local_share=True, device="cpu", on_epoch=lambda m, s: states.append(s))
    assert np.isfinite(result.best_val_nme)
    save_checkpoint(states[-1], tmp_path / "en1.pt")
    assert load_checkpoint(tmp_path / "en1.pt")["local_share"] is True


class _RunsShell:
    """Unpickling this calls os.system (a crafted, malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_crafted_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "facecascade.train.checkpoint/1", "model": _RunsShell(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a facecascade checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_fit_one_trains_the_configured_widths_and_resume_checks_them(data):
    states = []
    aligned = fit(data, TrainConfig(epochs=1), widths="aligned",
                  on_epoch=lambda m, s: states.append(s))
    assert aligned.state_dict["features.0.weight"].shape[0] == 16
    assert states[0]["widths"] == "aligned"
    train, val = sources(data)
    with pytest.raises(ValueError, match="widths"):
        fit_one("LE21", train, val, TrainConfig(epochs=2), resume=states[0], device="cpu")
