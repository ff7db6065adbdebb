"""A broken or hostile model, checkpoint or crop table gets one line naming the file.

Tried as a user would: ``facecascade predict --model ...`` exits 2 with one line on
stderr that names the file at fault, no traceback, and never PyTorch's advice to
retry with ``weights_only=False``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch

from facecascade.cascade import load_cascade
from facecascade.cli import main
from facecascade.crops import read_crop_table
from facecascade.train import load_checkpoint


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def model(model_dir, tmp_path):
    path = tmp_path / "cascade"
    shutil.copytree(model_dir, path)
    return path


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (80, 80), np.uint8))
    return path


def predict_error(model, photo, tmp_path, capsys) -> str:
    """Run ``facecascade predict`` and return its one error line."""
    capsys.readouterr()
    code = main(["predict", str(photo), "--model", str(model), "--out",
                 str(tmp_path / "out.csv"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    # (MLflow's own INFO log lines, e.g. when it creates a new SQLite store, are not errors)
    lines = [x for x in err.strip().splitlines() if " INFO mlflow" not in x]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only" not in err
    return lines[0]


def test_manifest_that_is_not_json(model, photo, tmp_path, capsys):
    text = (model / "manifest.json").read_text()
    (model / "manifest.json").write_text(text.replace('"levels": 3,', '"levels": 3', 1))
    line = predict_error(model, photo, tmp_path, capsys)
    assert f"{model / 'manifest.json'}:" in line and "not valid JSON" in line


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(levels="three"), "levels == 'three'"),
    (lambda m: m.update(params={"level2": {"crops": {"shakes": -1}}}), "shakes"),
    (lambda m: m.pop("params"), "params must be a JSON object"),
])
def test_manifest_with_bad_fields(model, photo, tmp_path, capsys, edit, words):
    manifest = json.loads((model / "manifest.json").read_text())
    edit(manifest)
    (model / "manifest.json").write_text(json.dumps(manifest))
    line = predict_error(model, photo, tmp_path, capsys)
    assert str(model / "manifest.json") in line and words in line


def test_weights_that_do_not_fit_the_networks(model, photo, tmp_path, capsys):
    weights = torch.load(model / "weights.pt", weights_only=True)
    key = next(iter(weights["EN1"]))
    weights["EN1"][key] = torch.zeros(3, 1, 2, 2)
    torch.save(weights, model / "weights.pt")
    line = predict_error(model, photo, tmp_path, capsys)
    assert str(model / "weights.pt") in line
    assert f"weights of EN1 do not fit the network: {key} has shape [3, 1, 2, 2]" in line
    weights["EN1"] = {"not_a_layer": torch.zeros(2)}
    torch.save(weights, model / "weights.pt")
    assert "unexpected ['not_a_layer']" in predict_error(model, photo, tmp_path, capsys)
    del weights["RM32"]
    torch.save(weights, model / "weights.pt")
    assert "no weights for ['RM32']" in predict_error(model, photo, tmp_path, capsys)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_weights_that_would_run_code_are_refused(model, photo, tmp_path, capsys, writer):
    marker = tmp_path / "pwned"
    payload = {"F1": RunsCode(marker)}
    if writer == "pickle":
        (model / "weights.pt").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, model / "weights.pt")
    line = predict_error(model, photo, tmp_path, capsys)
    assert str(model / "weights.pt") in line and "refused" in line
    assert not marker.exists()


def test_truncated_weights(model, photo, tmp_path, capsys):
    data = (model / "weights.pt").read_bytes()
    (model / "weights.pt").write_bytes(data[: len(data) // 2])
    line = predict_error(model, photo, tmp_path, capsys)
    assert str(model / "weights.pt") in line and "not a readable PyTorch" in line


def test_load_cascade_raises_one_line_value_errors(model):
    (model / "weights.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError) as info:
        load_cascade(model)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_checkpoint_that_would_run_code_is_refused_without_pytorch_advice(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "facecascade.train.checkpoint/1", "model": RunsCode(marker)}, path)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: refused") and "\n" not in msg
    assert "weights_only" not in msg and not marker.exists()


def test_broken_crop_tables_are_named(tmp_path):
    junk = tmp_path / "F1.train.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=rf"^{junk}: not a readable crop table"):
        read_crop_table(junk)
    import pandas as pd

    other = tmp_path / "LE21.val.parquet"
    pd.DataFrame({"face_id": [1], "x": [2.0]}).to_parquet(other)
    with pytest.raises(ValueError, match=rf"^{other}: not a crop table: no column 'aug_id'"):
        read_crop_table(other)
    with pytest.raises(FileNotFoundError, match="crop table not found"):
        read_crop_table(tmp_path / "none.parquet")


def test_unknown_registered_model_uri(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = predict_error("models:/no-such-model@champion", photo, tmp_path, capsys)
    assert "models:/no-such-model@champion" in line and "no-such-model" in line


def test_broken_onnx_file(photo, tmp_path, capsys):
    bad = tmp_path / "cascade.onnx"
    bad.write_bytes(b"not an onnx model")
    line = predict_error(bad, photo, tmp_path, capsys)
    assert str(bad) in line
