"""The registry and the pyfunc model on a real SQLite store: versions, lineage, champion,
and the served model's answers to good and bad requests."""

from __future__ import annotations

import base64
import dataclasses
import os

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from test_images import _huge_png

from facecascade import registry as rg
from facecascade import tracking as tr
from facecascade.cascade import Cascade, save_cascade
from facecascade.config import Config
from facecascade.inference import BOX_EDGE_COLUMNS, XY_COLUMNS
from facecascade.request import RESPONSE_COLUMNS

LINEAGE = {"git_commit": "0" * 40, "data_dvc_md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
           "params_hash": "ab" * 32}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.set_num_threads(1)


def png_b64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


def face_like(size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)



# ----------------------------------------------------------------------------- registry + model
@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    return save_cascade(Cascade.untrained(Config(), levels=3, seed=0),
                        tmp_path_factory.mktemp("art") / "cascade")


def log_pipeline(client, exp, cfg, cascade_dir, key, *, finish=True):
    parent = tr.parent_run(client, exp, key)
    uri = rg.log_cascade_model(client, parent, cascade_dir, cfg)
    if finish:
        tr.finish_run(client, parent)
    return parent, uri


def test_register_versions_lineage_and_champion(store, cascade_dir):
    cfg, client, exp = store
    name = "fc-test"
    versions = []
    for key, nme in (("p1", 0.10), ("p2", 0.12), ("p3", 0.08)):
        parent, uri = log_pipeline(client, exp, cfg, cascade_dir, key)
        assert uri.startswith("models:/")
        v = rg.register_cascade(uri, name=name, val_nme=nme,
                                lineage={**LINEAGE, "pipeline_key": key})
        versions.append(v)
        mv = client.get_model_version(name, v)
        assert mv.run_id == parent
        assert {k: mv.tags[k] for k in LINEAGE} == LINEAGE
        assert mv.tags["pipeline_key"] == key and float(mv.tags["val_nme"]) == nme
        promoted = rg.promote_if_better(client, name, v, nme)
        champion = str(client.get_model_version_by_alias(name, "champion").version)
        if key == "p1":
            assert promoted and champion == "1"
        elif key == "p2":  # worse: champion stays
            assert not promoted and champion == "1"
        else:  # better: champion moves
            assert promoted and champion == "3"
        if key == "p1":  # re-running the register stage does not duplicate
            assert rg.register_cascade(uri, name=name, val_nme=nme,
                                       lineage={**LINEAGE, "pipeline_key": key}) == v
    assert versions == ["1", "2", "3"]


def test_unfinished_pipeline_never_becomes_champion(store, cascade_dir):
    cfg, client, exp = store
    parent, uri = log_pipeline(client, exp, cfg, cascade_dir, "u1", finish=False)
    with pytest.raises(RuntimeError, match="RUNNING"):
        rg.register_cascade(uri, name="fc-u", val_nme=0.01,
                            lineage={**LINEAGE, "pipeline_key": "u1"})
    tr.finish_run(client, parent)
    v = rg.register_cascade(uri, name="fc-u", val_nme=0.05,
                            lineage={**LINEAGE, "pipeline_key": "u1"})
    client.update_run(parent, status="FAILED")  # e.g. marked failed after registering
    with pytest.raises(RuntimeError, match="FAILED"):
        rg.promote_if_better(client, "fc-u", v, 0.05)
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("fc-u", "champion")


@pytest.fixture(scope="module")
def champion(store, cascade_dir):
    cfg, client, exp = store
    small = dataclasses.replace(cfg, serve=dataclasses.replace(
        cfg.serve, max_image_bytes=60_000, max_image_pixels=250_000))
    _, uri = log_pipeline(client, exp, small, cascade_dir, "c1")
    v = rg.register_cascade(uri, name="fc-serve", val_nme=0.1,
                            lineage={**LINEAGE, "pipeline_key": "c1"})
    assert rg.promote_if_better(client, "fc-serve", v, 0.1)
    return mlflow.pyfunc.load_model("models:/fc-serve@champion")


def check_faces(out: pd.DataFrame, boxes: np.ndarray | None = None) -> None:
    assert list(out.columns) == list(RESPONSE_COLUMNS)
    pts = out[list(XY_COLUMNS)].to_numpy().reshape(-1, 5, 2)
    assert np.isfinite(pts).all()
    if boxes is not None:
        for p, (left, top, right, bottom) in zip(pts, boxes, strict=True):
            w, h = right - left, bottom - top
            assert (p[:, 0] >= left - w).all() and (p[:, 0] <= right + w).all()
            assert (p[:, 1] >= top - h).all() and (p[:, 1] <= bottom + h).all()


def test_champion_predicts_from_path_and_base64_with_box(champion, tmp_path):
    image = face_like()
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    box = [20.0, 18.0, 76.0, 80.0]
    req = pd.DataFrame({"image": [str(path), png_b64(image), png_b64(image[:, :, 0])],
                        "box_left": [box[0]] * 3, "box_top": [box[1]] * 3,
                        "box_right": [box[2]] * 3, "box_bottom": [box[3]] * 3})
    out = champion.predict(req)
    assert out["row"].tolist() == [0, 1, 2] and out["face"].tolist() == [0, 0, 0]
    check_faces(out, np.array([box] * 3))
    # path and base64 of the same pixels give the same points
    # (to float32 precision: the fast path's sums depend on the face's place in the batch)
    np.testing.assert_allclose(out.iloc[0, 2:], out.iloc[1, 2:], atol=1e-4)
    # a served model cuts even one face with the compiled passes, loaded when it started
    cascade = champion.unwrap_python_model().cascade
    assert cascade._compiled_passes is not None and cascade.passes(1) == cascade.load_compiled()


def test_the_champion_serves_without_importing_torch(champion, store, tmp_path):
    # the registered artifact keeps its level graphs and their index: a serving process
    # loads models:/...@champion and predicts with onnxruntime alone
    import json
    import subprocess
    import sys

    cfg, _, _ = store
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face_like())
    code = (
        "import json, sys\n"
        "import mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model('models:/fc-serve@champion')\n"
        "out = model.predict(pd.DataFrame({'image': [sys.argv[2]], 'box_left': [20.0],\n"
        "                                  'box_top': [18.0], 'box_right': [76.0],\n"
        "                                  'box_bottom': [80.0]}))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'points': out.iloc[0, 2:].tolist()}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, cfg.mlflow.tracking_uri, str(path)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    req = pd.DataFrame({"image": [str(path)], "box_left": [20.0], "box_top": [18.0],
                        "box_right": [76.0], "box_bottom": [80.0]})
    np.testing.assert_allclose(result["points"], champion.predict(req).iloc[0, 2:].tolist(),
                               atol=1e-6)


@pytest.mark.realdata
def test_champion_detects_faces_without_box(champion, mtfl):
    files = sorted((mtfl / "images/lfw_5590").glob("*.jpg"))[:2]
    b64 = base64.b64encode(files[1].read_bytes()).decode("ascii")
    req = pd.DataFrame({"image": [str(files[0]), b64, str(files[0])],
                        "box_left": [np.nan, np.nan, 20.0], "box_top": [np.nan, np.nan, 20.0],
                        "box_right": [np.nan, np.nan, 60.0],
                        "box_bottom": [np.nan, np.nan, 60.0]})
    out = champion.predict(req)
    assert set(out["row"]) == {0, 1, 2}
    check_faces(out, out[list(BOX_EDGE_COLUMNS)].to_numpy())
    # box columns may also be left out entirely
    only = champion.predict(pd.DataFrame({"image": [str(files[0])]}))
    assert len(only) >= 1 and (only["row"] == 0).all()


@pytest.mark.parametrize(("image", "reason"), [
    ("this is not base64!", "valid base64"),
    (base64.b64encode(b"hello, not an image at all").decode(), "unknown image format"),
    (base64.b64encode(_huge_png(30_000, 30_000)).decode(), "too large"),
    (base64.b64encode(bytes(90_000)).decode(), "serve.max_image_bytes"),
    ("data:image/png,abc", "must be base64"),
    ("/no/such/face.jpg", "does not exist"),
], ids=["garbage", "not-image", "pixel-bomb", "over-bytes", "data-uri", "missing-file"])
def test_bad_images_are_refused_with_reason(champion, image, reason):
    req = pd.DataFrame({"image": [png_b64(face_like(48)), image]})
    with pytest.raises(MlflowException, match=reason) as err:
        champion.predict(req)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "row 1" in err.value.message


def test_truncated_png_and_bad_boxes_are_refused(champion):
    data = base64.b64decode(png_b64(face_like(64)))
    truncated = base64.b64encode(data[: len(data) // 2]).decode()
    with pytest.raises(MlflowException, match="row 0: base64 image: image unreadable"):
        champion.predict(pd.DataFrame({"image": [truncated]}))
    good = png_b64(face_like(64))
    partial = pd.DataFrame({"image": [good], "box_left": [1.0], "box_top": [np.nan],
                            "box_right": [30.0], "box_bottom": [30.0]})
    with pytest.raises(MlflowException, match="finite numbers or all null"):
        champion.predict(partial)
    inverted = partial.assign(box_top=[40.0])
    with pytest.raises(MlflowException, match="bottom > top"):
        champion.predict(inverted)

