"""One function turns requests into points, for the CLI and for the served model alike."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from facecascade.cascade import Cascade
from facecascade.config import Config
from facecascade.images import ImageError
from facecascade.inference import BOX_EDGE_COLUMNS, XY_COLUMNS, FaceRequest, predict_requests
from facecascade.request import RESPONSE_COLUMNS, RequestError, predict_frame

BOX = np.array([[12.0, 10.0, 70.0, 76.0]])


@pytest.fixture(scope="module")
def cascade():
    torch.set_num_threads(1)
    return Cascade.untrained(Config(), levels=3, seed=0)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for i, size in enumerate((90, 80, 100)):
        files.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(files[-1]), rng.integers(0, 255, (size, size, 3), np.uint8))
    return files


def test_file_and_bytes_requests_give_the_same_points_as_the_served_model(cascade, photos):
    by_file = [FaceRequest(path=str(f), file=f, boxes=BOX) for f in photos]
    by_bytes = [FaceRequest(path=f"b{i}", data=f.read_bytes(), boxes=BOX)
                for i, f in enumerate(photos)]
    points, problems = predict_requests(cascade, by_file, max_pixels=10**7, progress=False)
    again, _ = predict_requests(cascade, iter(by_bytes), max_pixels=10**7, progress=False)
    assert problems.empty and points["request"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(points[list(XY_COLUMNS)], again[list(XY_COLUMNS)])
    # the served model: paths and base64 rows, same points, its own columns
    frame = pd.DataFrame({"image": [str(photos[0]),
                                    base64.b64encode(photos[1].read_bytes()).decode(),
                                    str(photos[2])],
                          **{c: [v] * 3 for c, v in zip(BOX_EDGE_COLUMNS, BOX[0], strict=True)}})
    served = predict_frame(cascade, frame, max_image_bytes=10**6, max_image_pixels=10**7)
    assert list(served.columns) == list(RESPONSE_COLUMNS)
    assert served["row"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(served[list(XY_COLUMNS)], points[list(XY_COLUMNS)])
    # and the cascade itself
    want = cascade.predict([cv2.imread(str(f)) for f in photos], np.repeat(BOX, 3, axis=0))[3]
    np.testing.assert_allclose(points[list(XY_COLUMNS)].to_numpy().reshape(-1, 5, 2), want)


def test_batches_bounded_by_pixels_give_the_same_points(cascade, photos):
    reqs = [FaceRequest(path=str(f), file=f, boxes=BOX) for f in photos]
    one, _ = predict_requests(cascade, reqs, max_pixels=10**7, progress=False, all_levels=True)
    # each image alone in its batch: 100 x 100 is the largest
    apart, _ = predict_requests(cascade, reqs, max_pixels=100 * 100, progress=False,
                                all_levels=True)
    pd.testing.assert_frame_equal(one, apart)
    assert one["level"].tolist() == [1, 2, 3] * 3


def test_bad_images_are_collected_or_raised(cascade, photos, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    reqs = [FaceRequest(path="bad.png", file=tmp_path / "bad.png", boxes=BOX),
            FaceRequest(path="good", file=photos[0], boxes=BOX),
            FaceRequest(path="gone.png", file=tmp_path / "gone.png")]
    points, problems = predict_requests(cascade, reqs, max_pixels=10**7, progress=False)
    assert points["path"].tolist() == ["good"] and points["request"].tolist() == [1]
    assert problems["request"].tolist() == [0, 2]
    assert problems["reason"].tolist() == ["image unreadable: not an image (unknown format)",
                                           "image missing"]
    with pytest.raises(ImageError, match="^bad.png: image unreadable"):
        predict_requests(cascade, reqs, max_pixels=10**7, progress=False, errors="raise")
    with pytest.raises(RequestError, match="row 1: base64 image: image too large"):
        predict_frame(cascade, pd.DataFrame({"image": [str(photos[0]), base64.b64encode(
            photos[2].read_bytes()).decode()]}), max_image_bytes=10**6, max_image_pixels=9000)


def test_progress_bar_writes_nothing_when_stderr_is_not_a_terminal(cascade, photos, capsys):
    reqs = [FaceRequest(path=str(f), file=f, boxes=BOX) for f in photos]
    predict_requests(cascade, reqs, max_pixels=10**7, progress=True)
    assert capsys.readouterr().err == ""


def test_batches_predicted_in_the_background_keep_order_and_errors(cascade, photos, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    reqs = [FaceRequest(path=str(f), file=f, boxes=BOX) for f in [*photos, *photos]]
    reqs.insert(2, FaceRequest(path="bad.png", file=tmp_path / "bad.png", boxes=BOX))
    # one image per batch: five batches, each but the last predicted while the next decodes
    ahead, problems = predict_requests(cascade, reqs, max_pixels=10**7, batch_images=1,
                                       progress=False, all_levels=True)
    inline, again = predict_requests(cascade, reqs, max_pixels=10**7, batch_images=1,
                                     progress=False, all_levels=True, overlap=False)
    pd.testing.assert_frame_equal(ahead, inline)
    pd.testing.assert_frame_equal(problems, again)
    assert ahead["request"].tolist() == [r for r in (0, 1, 3, 4, 5, 6) for _ in range(3)]

    class Failing:  # a model that fails on its second batch
        cfg = cascade.cfg
        calls = 0

        def predict(self, images, boxes, index):
            Failing.calls += 1
            if Failing.calls == 2:
                raise RuntimeError("model failed")
            return cascade.predict(images, boxes, index)

    with pytest.raises(RuntimeError, match="model failed"):
        predict_requests(Failing(), reqs, max_pixels=10**7, batch_images=1, progress=False)
