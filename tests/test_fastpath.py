"""Serving from an artifact's saved level graphs (facecascade.fastpath): the graph index,
what invalidates it, and predicting without PyTorch."""

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from facecascade.cascade import Cascade, load_cascade, read_manifest, save_cascade
from facecascade.config import Config
from facecascade.crops import MIN_STD
from facecascade.fastpath import (
    GRAPH_DIR,
    GRAPH_INDEX,
    FastCascade,
    read_graph_index,
)
from facecascade.plans import LevelPlan, plan_level
from facecascade.synth import generate

BOTH = {(k, g) for k in (1, 2, 3) for g in (True, False)}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastpath") / "cascade"
    save_cascade(Cascade.untrained(Config(), levels=3, seed=3), path)
    return path


@pytest.fixture(scope="module")
def faces():
    faces = generate(5, seed=9, size=96)
    return [f.image for f in faces], np.stack([f.box for f in faces])


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_saving_indexes_every_level_graph_with_its_plan(artifact):
    index = json.loads((artifact / GRAPH_DIR / GRAPH_INDEX).read_text())
    assert {(e["level"], e["grouped"]) for e in index["graphs"]} == BOTH
    saved = read_graph_index(artifact, read_manifest(artifact))
    assert set(saved) == BOTH
    for (level, _), graph in saved.items():
        assert graph.path.is_file() and graph.path.parent == artifact / GRAPH_DIR
        assert graph.plan.same_windows(plan_level(Config(), level))
    # the grouped graph of a patch level groups its ten nets; the batch graph does not
    assert len(saved[(2, True)].plan.groups) == 1 and len(saved[(2, False)].plan.groups) == 10


def test_a_loaded_artifact_predicts_from_its_saved_graphs_without_building_nets(artifact, faces):
    images, boxes = faces
    loaded = load_cascade(artifact)
    got = loaded.predict(images, boxes)
    one = loaded.predict(images[:1], boxes[:1])
    assert loaded.graph_sources == dict.fromkeys(BOTH, "saved")
    assert "nets" not in vars(loaded)  # the weights file was not even read
    want = FastCascade.from_cascade(load_cascade(artifact, fast=False)).predict(images, boxes)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(got[k], want[k])
        np.testing.assert_allclose(one[k], got[k][:1], atol=1e-3)
    # the networks are still there when asked for: read from weights.pt then
    ref = loaded.reference().predict(images, boxes)
    np.testing.assert_allclose(ref[1], got[1], atol=1e-3)


def test_serving_a_saved_artifact_imports_neither_torch_nor_numba(artifact, faces, tmp_path):
    """One face: the saved graphs, and the windows and crops of numpy and OpenCV."""
    images, boxes = faces
    np.save(tmp_path / "image.npy", images[0])
    np.save(tmp_path / "box.npy", boxes[:1])
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from facecascade.cascade import load_cascade
        c = load_cascade({str(artifact)!r})
        points = c.predict([np.load({str(tmp_path / 'image.npy')!r})],
                           np.load({str(tmp_path / 'box.npy')!r}))[3]
        print(json.dumps({{"torch": "torch" in sys.modules, "numba": "numba" in sys.modules,
                          "points": points.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["torch"] is False and result["numba"] is False
    want = load_cascade(artifact).predict(images[:1], boxes[:1])[3]
    np.testing.assert_array_equal(np.array(result["points"]), want)


def test_new_weights_make_the_index_stale(artifact, faces, tmp_path):
    images, boxes = faces
    path = _copy(artifact, tmp_path / "c")
    save_cascade(Cascade.untrained(Config(), levels=3, seed=4), tmp_path / "other",
                 graphs=False)
    (path / "weights.pt").write_bytes((tmp_path / "other" / "weights.pt").read_bytes())
    assert read_graph_index(path, read_manifest(path)) is None
    c = load_cascade(path)
    got = c.predict(images, boxes)
    assert set(c.graph_sources.values()) == {"exported"}
    want = load_cascade(tmp_path / "other", fast=False).predict(images, boxes)
    np.testing.assert_allclose(got[1], want[1], atol=1e-3)


def test_edited_params_make_the_index_stale(artifact, faces, tmp_path):
    images, boxes = faces
    path = _copy(artifact, tmp_path / "c")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["params"]["level1"]["model"]["fusion"] = {"F1": 3.0, "EN1": 1.0, "NM1": 0.5}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert read_graph_index(path, read_manifest(path)) is None
    c = load_cascade(path)
    got = c.predict(images, boxes)[1]
    assert c.graph_sources[(1, False)] == "exported"
    np.testing.assert_allclose(got, c.reference().predict(images, boxes)[1], atol=1e-3)


def test_an_indexed_plan_unlike_the_params_plan_is_not_trusted(artifact, faces, tmp_path):
    images, boxes = faces
    path = _copy(artifact, tmp_path / "c")
    index_file = path / GRAPH_DIR / GRAPH_INDEX
    index = json.loads(index_file.read_text())
    for entry in index["graphs"]:
        if entry["level"] == 2:
            entry["plan"]["fractions"][0][0] += 0.01
    index_file.write_text(json.dumps(index))
    c = load_cascade(path)
    with pytest.warns(UserWarning, match="its plan is not the one"):
        got = c.predict(images, boxes)
    assert "nets" in vars(c)  # level 2's graph was found from the weights instead
    want = load_cascade(artifact).predict(images, boxes)
    np.testing.assert_array_equal(got[2], want[2])


@pytest.mark.parametrize("damage", ["not json {", '{"format": "facecascade.graphs"}',
                                    "path"])
def test_a_damaged_index_falls_back_to_exporting(artifact, faces, tmp_path, damage):
    images, boxes = faces
    path = _copy(artifact, tmp_path / "c")
    index_file = path / GRAPH_DIR / GRAPH_INDEX
    if damage == "path":  # a file name that would leave the graphs folder
        index = json.loads(index_file.read_text())
        index["graphs"][0]["file"] = "../weights.pt"
        damage = json.dumps(index)
    index_file.write_text(damage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = load_cascade(path)
    assert c.saved == {}
    if damage.startswith("not json") or "../" in damage:
        assert any("not a usable graph index" in str(w.message) for w in caught)
    got = c.predict(images, boxes)
    want = load_cascade(artifact).predict(images, boxes)
    np.testing.assert_array_equal(got[3], want[3])


def test_an_artifact_without_an_index_still_uses_its_graphs(artifact, faces, tmp_path):
    # artifacts saved before the index: their graphs are found by their keys (with torch)
    images, boxes = faces
    path = _copy(artifact, tmp_path / "c")
    (path / GRAPH_DIR / GRAPH_INDEX).unlink()
    c = load_cascade(path)
    c.predict(images, boxes)
    c.predict(images[:1], boxes[:1])
    assert c.graph_sources == dict.fromkeys(BOTH, "saved")


def test_a_plan_round_trips_through_json_exactly():
    for level in (1, 2, 3):
        plan = plan_level(Config(), level)
        back = LevelPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
        assert back.same_windows(plan) and back.groups == plan.groups
    with pytest.raises(ValueError, match="not a level plan"):
        LevelPlan.from_dict({"level": 2})


def test_small_calls_cut_without_compiling_until_a_batch_loads_the_compiled_passes(faces):
    from facecascade.fastpath import COMPILE_MIN_FACES, small_crops, small_windows
    from facecascade.sampling import crop_groups, level_windows

    images, boxes = faces
    auto = FastCascade.untrained(Config(), levels=3, seed=0)
    compiled, small = FastCascade.from_cascade(auto), FastCascade.from_cascade(auto)
    compiled.compiled, small.compiled = True, False
    assert auto.passes(COMPILE_MIN_FACES - 1) == (small_windows, small_crops)
    got = auto.predict(images[:3], boxes[:3])
    assert auto._compiled_passes is None  # three faces: nothing compiled was loaded
    want = compiled.predict(images[:3], boxes[:3])
    side = np.sqrt(np.prod(boxes[:3, 2:] - boxes[:3, :2], axis=1))
    for k in (1, 2, 3):  # the same crop bytes; standardised in float32 instead of exactly
        assert (np.abs(got[k] - want[k]).max(axis=(1, 2)) / side).max() <= 1e-5
    assert auto.passes(COMPILE_MIN_FACES) == (level_windows, crop_groups)
    assert auto.passes(1) == (level_windows, crop_groups)  # loaded: used from then on
    assert small.passes(10 * COMPILE_MIN_FACES) == (small_windows, small_crops)


def test_small_crops_are_the_compiled_crops():
    from facecascade.fastpath import small_crops
    from facecascade.plans import CropLayout
    from facecascade.sampling import crop_groups

    rng = np.random.default_rng(2)
    grays = [rng.integers(0, 256, (int(h), int(w)), dtype=np.uint8)
             for h, w in rng.integers(20, 120, (4, 2))]
    index = rng.integers(0, len(grays), 30)
    corner = rng.uniform(-20, 100, (30, 3, 2))
    size = rng.uniform(3, 60, (30, 3, 2))
    windows = np.concatenate([corner, corner + size], axis=-1)
    layout = CropLayout.of([((39, 39), 1), ((15, 15), 2)])
    for got, want in zip(small_crops(grays, index, windows, layout),
                         crop_groups(grays, index, windows, layout, min_std=MIN_STD),
                         strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
