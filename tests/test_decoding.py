"""Decoding ahead of inference: each file once, list order kept, errors in place."""

import cv2
import numpy as np

from facecascade.decoding import decode_ahead
from facecascade.images import ImageError


def _write(path, value, shape=(6, 8, 3)):
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def test_each_file_once_in_order_with_errors(tmp_path, monkeypatch):
    import facecascade.decoding as dec

    a, b = _write(tmp_path / "a.png", 10), _write(tmp_path / "b.png", 200)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    calls = []
    real = dec._decode
    monkeypatch.setattr(dec, "_decode", lambda p, m: calls.append(p) or real(p, m))
    files = [a, b, a, tmp_path / "bad.jpg", b, a, tmp_path / "none.png"]
    for workers, ahead in ((1, 2), (2, 32), (0, 1)):
        calls.clear()
        out = list(decode_ahead(files, max_pixels=10**6, workers=workers, ahead=ahead))
        assert sorted(map(str, calls)) == sorted(map(str, set(files)))  # each file once
        assert [o[0, 0] for o in (out[0], out[1], out[2], out[4], out[5])] == [10, 200, 10, 200,
                                                                              10]
        assert out[0].ndim == 2  # grey
        assert isinstance(out[3], ImageError) and out[3].reason.startswith("image unreadable")
        assert isinstance(out[6], ImageError) and out[6].reason == "image missing"


def test_predict_list_decodes_each_image_once(tmp_path, monkeypatch):
    """Two faces of one photo in a list: the photo is decoded once, both faces predicted."""
    import facecascade.decoding as dec
    from facecascade.cascade import Cascade
    from facecascade.config import Config
    from facecascade.inference import FaceRequest, predict_requests

    photo = _write(tmp_path / "p.png", 0, shape=(80, 120, 3))
    calls = []
    real = dec._decode
    monkeypatch.setattr(dec, "_decode", lambda p, m: calls.append(p) or real(p, m))
    reqs = [FaceRequest("p.png", photo, np.array([[5.0, 5, 50, 60]]), [1]),
            FaceRequest("p.png", photo, np.array([[60.0, 10, 110, 70]]), [2])]
    points, problems = predict_requests(Cascade.untrained(Config(), levels=1), reqs,
                                        max_pixels=10**6, progress=False)
    assert calls == [photo] and len(points) == 2 and problems.empty


def test_decoding_ahead_stops_at_the_pixel_budget(tmp_path, monkeypatch):
    """Far ahead by count, but no more decoded images held than ``ahead_pixels`` allows."""
    import time

    import facecascade.decoding as dec

    files = [_write(tmp_path / f"{i}.png", i) for i in range(10)]  # 6 x 8 = 48 pixels each
    calls = []
    real = dec._decode
    monkeypatch.setattr(dec, "_decode", lambda p, m: calls.append(p) or real(p, m))
    for budget, most in ((2 * 48, 4), (None, 10)):
        calls.clear()
        it = decode_ahead(files, max_pixels=10**6, ahead=20, ahead_pixels=budget)
        assert next(it)[0, 0] == 0
        time.sleep(0.3)  # the decoding thread runs as far as it may
        assert (2 <= len(calls) <= most) if budget else len(calls) == most, (budget, len(calls))
        assert [im[0, 0] for im in it] == list(range(1, 10))  # the rest, in order
        assert len(calls) == 10


def test_an_image_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ImageError("x/y.jpg", "image unreadable: truncated JPEG")))
    assert (err.path, err.reason, str(err)) == \
        ("x/y.jpg", "image unreadable: truncated JPEG", "x/y.jpg: image unreadable: truncated JPEG")


def test_requests_decode_ahead_of_inference_with_a_thread(tmp_path, monkeypatch):
    """While the first image is used, the decoding thread has already read the next ones;
    without one, each image is decoded when it is needed."""
    import time

    import facecascade.decoding as dec
    from facecascade.inference import FaceRequest, _decoded

    files = [_write(tmp_path / f"{i}.png", i) for i in range(6)]
    calls = []
    real = dec._decode
    monkeypatch.setattr(dec, "_decode", lambda p, m: calls.append(p) or real(p, m))
    reqs = [FaceRequest(f.name, f, np.array([[0.0, 0, 5, 5]]), [i]) for i, f in enumerate(files)]
    it = _decoded(reqs, 10**6, 4, 1)
    assert next(it)[0, 0] == 0
    time.sleep(0.3)
    assert len(calls) >= 4  # ahead: more than the one image asked for
    assert [im[0, 0] for im in it] == [1, 2, 3, 4, 5]
    calls.clear()
    it = _decoded(reqs, 10**6, 4, 0)
    assert next(it)[0, 0] == 0 and len(calls) == 1
