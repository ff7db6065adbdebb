"""The CLI contracts: `predict --list` rows, columns and order; `ingest` rejects; count-params."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from facecascade.cascade import Cascade
from facecascade.cli import main
from facecascade.config import Config
from facecascade.inference import XY_COLUMNS

XY = list(XY_COLUMNS)


@pytest.fixture
def cuhk_list(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name in ("b.png", "a.png"):
        cv2.imwrite(str(tmp_path / "imgs" / name), rng.integers(0, 255, (90, 100), np.uint8))
    lines = [  # two faces in b.png, listed around one in a.png: list order must be kept
        "imgs/b.png 10 60 10 70 25 30 45 30 35 42 28 55 44 55",
        "imgs/a.png 30 90 20 80 45 40 70 40 58 52 48 65 68 65",
        "imgs\\b.png 40 95 15 75 55 35 80 35 68 47 58 60 78 60",  # backslash path
    ]
    (tmp_path / "list.txt").write_text("\r\n".join(lines) + "\r\n")
    return tmp_path


def test_predict_list_contract(model_dir, cuhk_list, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["predict", "--list", str(cuhk_list / "list.txt"), "--format", "cuhk",
                 "--root", str(cuhk_list), "--model", str(model_dir), "--out", str(out),
                 "--quiet"]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["path", *XY_COLUMNS]
    assert list(df["path"]) == ["imgs/b.png", "imgs/a.png", "imgs/b.png"]
    # final-level points in image pixels, from the list's boxes
    cascade = Cascade.untrained(Config(), levels=3, seed=0)
    imgs = [cv2.imread(str(cuhk_list / "imgs" / n)) for n in ("b.png", "a.png")]
    boxes = np.array([[10, 10, 60, 70], [30, 20, 90, 80], [40, 15, 95, 75]], float)
    want = cascade.predict(imgs, boxes, np.array([0, 1, 0]))[3].reshape(3, 10)
    np.testing.assert_allclose(df[XY].to_numpy(), want, atol=2e-3)

    all_out = tmp_path / "all.csv"
    assert main(["predict", "--list", str(cuhk_list / "list.txt"), "--format", "cuhk",
                 "--root", str(cuhk_list), "--model", str(model_dir), "--out", str(all_out),
                 "--all-levels", "--quiet"]) == 0
    df_all = pd.read_csv(all_out)
    assert list(df_all.columns) == ["path", "level", *XY_COLUMNS]
    assert list(df_all["level"]) == [1, 2, 3] * 3
    np.testing.assert_allclose(df_all[df_all["level"] == 3][XY].to_numpy(),
                               df[XY].to_numpy())


def test_predict_writes_json_and_parquet(model_dir, cuhk_list, tmp_path):
    for suffix in (".json", ".parquet"):
        out = tmp_path / f"o{suffix}"
        assert main(["predict", "--list", str(cuhk_list / "list.txt"), "--root", str(cuhk_list),
                     "--model", str(model_dir), "--out", str(out), "--quiet"]) == 0
        df = pd.read_json(out) if suffix == ".json" else pd.read_parquet(out)
        assert len(df) == 3


def test_ingest_command_writes_rejects_with_line_numbers(cuhk_list, tmp_path, capsys):
    lst = cuhk_list / "list.txt"
    bad = "imgs/a.png 1 2 3\n../etc/passwd 1 2 3 4 1 1 1 1 1 1 1 1 1 1\n"
    lst.write_text(lst.read_text() + bad)
    faces, rejects = tmp_path / "f.parquet", tmp_path / "r.parquet"
    assert main(["ingest", "--format", "cuhk", "--root", str(cuhk_list), "--list", str(lst),
                 "--out", str(faces), "--rejects", str(rejects)]) == 0
    r = pd.read_parquet(rejects)
    assert list(r.columns) == ["file", "line", "reason"]
    assert list(r["line"]) == [4, 5]
    assert len(pd.read_parquet(faces)) == 3
    assert "rejected: 2" in capsys.readouterr().out
    assert main(["ingest", "--format", "cuhk", "--root", str(cuhk_list), "--list", str(lst),
                 "--out", str(faces), "--rejects", str(rejects), "--strict"]) == 2


def test_count_params_prints_paper_total(capsys):
    assert main(["count-params"]) == 0
    out = capsys.readouterr().out
    assert "572,622" in out and "643,920" in out


def test_show_metrics_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    assert main(["show-metrics", str(bad)]) == 2
    assert f"{bad}:1: not a metrics JSON" in capsys.readouterr().err


def test_predict_reports_every_bad_image_and_keeps_the_good(model_dir, cuhk_list, tmp_path,
                                                            capsys):
    """Bad images through `predict --list`: each gets its reason on stderr, no traceback,
    the good faces keep their rows (list order) and `--strict` turns problems into exit 1."""
    from test_images import _huge_png

    imgs = cuhk_list / "imgs"
    ok, jpg = cv2.imencode(".jpg", np.full((90, 100, 3), 128, np.uint8))
    (imgs / "cut.jpg").write_bytes(jpg.tobytes()[:-40])
    (imgs / "empty.jpg").write_bytes(b"")
    (imgs / "text.jpg").write_text("this is not an image\n")
    (imgs / "huge.png").write_bytes(_huge_png(100_000, 90_000))
    cv2.imwrite(str(imgs / "deep.png"), (np.arange(90 * 100).reshape(90, 100) * 7).astype(
        np.uint16))  # 16-bit grey: read correctly, predicted
    box = "10 60 10 70 25 30 45 30 35 42 28 55 44 55"
    names = ["a.png", "cut.jpg", "empty.jpg", "text.jpg", "huge.png", "gone.jpg", "deep.png"]
    (cuhk_list / "bad.txt").write_text("".join(f"imgs/{n} {box}\n" for n in names))
    out = tmp_path / "out.csv"
    args = ["predict", "--list", str(cuhk_list / "bad.txt"), "--format", "cuhk", "--root",
            str(cuhk_list), "--model", str(model_dir), "--out", str(out), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    want = {"cut.jpg": "truncated JPEG", "empty.jpg": "empty file",
            "text.jpg": "not an image", "huge.png": "pixels"}
    for name, reason in want.items():
        line = next(ln for ln in err.splitlines() if f"imgs/{name}" in ln)
        assert line.startswith("no prediction for") and reason in line, line
    # a missing file is found while reading the list: named by list file and line
    assert "skipped bad.txt:6: image missing: imgs/gone.jpg" in err
    df = pd.read_csv(out)
    assert list(df["path"]) == ["imgs/a.png", "imgs/deep.png"]
    assert np.isfinite(df[XY].to_numpy()).all()
    assert main([*args, "--strict"]) == 1


def test_drawing_path_stays_in_out_dir_and_never_overwrites_the_source(tmp_path):
    from facecascade.inference import drawing_path

    used: set = set()
    out = tmp_path / "out"
    assert drawing_path(out, "imgs/a.jpg", tmp_path / "imgs/a.jpg", used) == out / "imgs/a.png"
    assert drawing_path(out, "imgs\\b.jpg", tmp_path / "imgs/b.jpg", used) == out / "imgs/b.png"
    # absolute and escaping paths keep only their name; a second a.jpg gets a suffix
    assert drawing_path(out, "/data/x/a.jpg", "/data/x/a.jpg", used) == out / "a.png"
    assert drawing_path(out, "/data/y/a.jpg", "/data/y/a.jpg", used) == out / "a-2.png"
    assert drawing_path(out, "../../etc/c.jpg", "/etc/c.jpg", used) == out / "c.png"
    # drawing into the folder of a PNG input: the input is not overwritten
    src = tmp_path / "d.png"
    assert drawing_path(tmp_path, "d.png", src, used) == tmp_path / "d.points.png"


@pytest.mark.realdata
def test_predict_real_photo_without_box_draws_into_out_dir_only(model_dir, tmp_path, mtfl):
    folder = mtfl / "images/net_7876"
    photo = folder / "1006_0_0.jpg"
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "pts.csv"
    assert main(["predict", str(photo), "--model", str(model_dir), "--out", str(out),
                 "--draw", str(tmp_path / "drawn"), "--quiet"]) == 0
    df = pd.read_csv(out)
    assert len(df) == 1 and df["path"][0] == str(photo)  # the detector found the one face
    box = df[["box_left", "box_top", "box_right", "box_bottom"]].to_numpy()[0]
    assert 100 < box[2] - box[0] < 350  # a face-sized box in the 400x400 photo
    assert [p.name for p in (tmp_path / "drawn").iterdir()] == ["1006_0_0.png"]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside it


def test_commands_run_outside_a_project_with_default_params(cuhk_list, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert main(["ingest", "--format", "cuhk", "--root", str(cuhk_list), "--list",
                 str(cuhk_list / "list.txt"), "--out", "f.parquet", "--rejects", "r.parquet"]) == 0
    assert len(pd.read_parquet("f.parquet")) == 3
    # a params file named explicitly must exist
    assert main(["--params", "nope.yaml", "ingest", "--format", "cuhk", "--root", str(cuhk_list),
                 "--list", str(cuhk_list / "list.txt"), "--out", "g.parquet",
                 "--rejects", "s.parquet"]) == 2
    assert "nope.yaml: params file not found" in capsys.readouterr().err
