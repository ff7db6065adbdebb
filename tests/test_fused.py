"""The fast path (fused level graphs on vectorised crops) against the reference Cascade.

Parity is measured in units of the box side (``sqrt(w h)``). Given the same
previous-level points, a fused level agrees with the reference to float32
rounding (~1e-7). Through the whole cascade, those 1e-7 differences in a level's
points can move a next-level window across one of OpenCV's 1/32-pixel sampling
bins (``warpAffine``'s fixed-point coordinates), which changes that crop and so
the net's output: a few percent of faces then differ by up to ~1e-3 of the box
side (random weights, which are the harshest case). The end-to-end tests check
that distribution.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facecascade.cascade import Cascade
from facecascade.config import Config, config_from_dict
from facecascade.crops import net_windows
from facecascade.fastpath import FastCascade
from facecascade.frame import face_frame
from facecascade.fused import GroupedNets, SeparateNets, group_nets, level_plan
from facecascade.images import to_gray
from facecascade.nets import create_net
from facecascade.specs import get_spec, level_nets
from facecascade.synth import generate

DATA = Path(os.environ.get("FACECASCADE_DATA")
            or Path(__file__).resolve().parents[1].parent / "shared/data/mtfl-train")
TOL = 1e-4  # of the box side


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _random_net(name, seed, **kw):
    torch.manual_seed(seed)
    net = create_net(name, dropout=0.0, **kw).eval()
    with torch.no_grad():  # biases nonzero too, so a misplaced bias shows
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("names", [["EN1", "NM1"], ["F1"], level_nets(2)])
def test_grouped_nets_compute_each_net(names):
    nets = [_random_net(n, i) for i, n in enumerate(names)]
    w, h = get_spec(names[0]).input_size
    x = torch.randn(4, len(names), h, w)
    grouped = GroupedNets(nets, (w, h)).eval()
    with torch.no_grad():
        got = grouped(x)
        want = torch.stack([net(x[:, i:i + 1]) for i, net in enumerate(nets)], dim=1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_after_convs_and_linears_is_folded():
    nets = []
    for seed in range(3):
        net = _random_net("LE21", seed)
        layers, features = [], list(net.features)
        for m in features:
            layers.append(m)
            if isinstance(m, nn.Conv2d):
                bn = nn.BatchNorm2d(m.out_channels)
                layers.append(bn)
        net.features = nn.Sequential(*layers)
        head = []
        for m in net.head:
            head.append(m)
            if isinstance(m, nn.Linear) and m.out_features == 60:
                head.append(nn.BatchNorm1d(60))
        net.head = nn.Sequential(*head)
        g = torch.Generator().manual_seed(seed)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.data.copy_(torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(torch.randn(m.num_features, generator=g))
        nets.append(net.eval())
    x = torch.randn(5, 3, 15, 15)
    grouped = GroupedNets(nets, (15, 15)).eval()
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in grouped.modules())
    with torch.no_grad():
        want = torch.stack([net(x[:, i:i + 1]) for i, net in enumerate(nets)], dim=1)
        torch.testing.assert_close(grouped(x), want, rtol=1e-4, atol=1e-4)


def test_wider_specs_group_too():
    """Layer widths come from the nets, not from constants."""
    from facecascade.nets import LandmarkNet

    spec = get_spec("LE21")
    wide = type(spec)(**{**spec.__dict__, "convs": ((3, 8), (3, 24)), "fcs": (32, 16)})
    nets = [LandmarkNet(wide, dropout=0.0).eval() for _ in range(2)]
    x = torch.randn(2, 2, 15, 15)
    with torch.no_grad():
        torch.testing.assert_close(
            GroupedNets(nets, (15, 15))(x),
            torch.stack([n(x[:, i:i + 1]) for i, n in enumerate(nets)], dim=1),
            rtol=1e-5, atol=1e-5)


def test_locally_shared_level1_nets_run_separately_in_the_graph():
    nets = [_random_net(n, 0, local_share=True) for n in ("EN1", "NM1")]
    module = group_nets(nets, (39, 31))
    assert isinstance(module, SeparateNets)
    x = torch.randn(2, 2, 31, 39)
    with torch.no_grad():
        torch.testing.assert_close(
            module(x), torch.stack([n(x[:, i:i + 1]) for i, n in enumerate(nets)], dim=1))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_plan_windows_are_net_windows_bit_for_bit(level):
    cfg = Config()
    cascade = Cascade.untrained(cfg, levels=3, seed=0)
    plan = level_plan(cfg, level, cascade.nets)
    assert sorted(plan.order) == sorted(level_nets(level))
    rng = np.random.default_rng(level)
    boxes = rng.uniform(0, 100, (50, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(20, 90, (50, 2))], axis=1)
    frames = face_frame(boxes, cfg.frame.scale)
    prev = rng.uniform(0, 200, (50, 5, 2))
    fast = FastCascade(cfg, {n: net.state_dict() for n, net in cascade.nets.items()}, levels=3)
    size = (frames[:, 2:] - frames[:, :2])[:, None, :]
    anchor = frames[:, None, :2] if level == 1 else prev[:, plan.anchor_points]
    got = np.concatenate([anchor + plan.fractions[None, :, :2] * size,
                          anchor + plan.fractions[None, :, 2:] * size], axis=2)
    for j, name in enumerate(plan.order):
        want = net_windows(get_spec(name), frames, cfg, prev)
        np.testing.assert_array_equal(got[:, j], want)
    assert fast.levels == 3


def _errors(got, want, boxes):
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return {k: np.abs(got[k] - want[k]).max(axis=(1, 2)) / side for k in want}


def _check_parity(fast, grays, boxes):
    """Per level (same inputs): every face within TOL; end to end: the distribution."""
    ref = fast.reference()
    grays = [to_gray(g) for g in grays]
    index = np.arange(len(boxes))
    want = ref.predict(grays, boxes)
    frames = face_frame(boxes, fast.cfg.frame.scale)
    per_level = {k: fast.predict_level(k, grays, index, frames, want.get(k - 1))
                 for k in (1, 2, 3)}
    for k, err in _errors(per_level, want, boxes).items():
        assert err.max() <= TOL, f"level {k} given the reference's inputs: {err.max():.2e}"
    errors = _errors(fast.predict(grays, boxes), want, boxes)
    assert errors[1].max() <= TOL
    for k, err in errors.items():
        assert np.median(err) <= 1e-6, (k, np.median(err))
        assert (err <= TOL).mean() >= 0.93, (k, (err <= TOL).mean())
        assert err.max() <= 1e-2, (k, err.max())
    return errors


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_fast_path_agrees_with_reference_on_procedural_faces(backend):
    faces = generate(150, seed=0, size=128)
    boxes = np.stack([f.box for f in faces])
    fast = FastCascade.untrained(Config(), levels=3, seed=0)
    fast.backend, fast.threads = backend, 1
    _check_parity(fast, [f.image for f in faces], boxes)
    one = fast.predict([faces[0].image], boxes[:1])  # a single face: the grouped graphs
    assert one[3].shape == (1, 5, 2) and np.isfinite(one[3]).all()


def test_fast_path_agrees_with_reference_with_points_sized_patches():
    faces = generate(150, seed=1, size=128)
    boxes = np.stack([f.box for f in faces])
    fast = FastCascade.untrained(config_from_dict({"frame": {"patches": "points"}}), levels=3,
                                 seed=0)
    fast.threads = 1
    _check_parity(fast, [f.image for f in faces], boxes)


def test_fast_path_gates_small_faces_as_the_reference_does():
    faces = generate(150, seed=2, size=128)
    boxes = np.stack([f.box for f in faces])
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    cut_px = float(np.median(2 * 0.08 * side))  # about half the faces keep level 2's points
    fast = FastCascade.untrained(config_from_dict(
        {"level3": {"crops": {"min_window_px": cut_px}}}), levels=3, seed=0)
    fast.threads = 1
    out = fast.predict([f.image for f in faces], boxes)
    kept = np.all(out[3] == out[2], axis=(1, 2))
    assert 0.3 < kept.mean() < 0.7
    _check_parity(fast, [f.image for f in faces], boxes)


def test_fast_path_keeps_the_previous_points_share_as_the_reference_does():
    faces = generate(100, seed=3, size=128)
    boxes = np.stack([f.box for f in faces])
    cfg = config_from_dict({"frame": {"patches": "points"}, "level2": {"model": {"keep": 0.2}},
                            "level3": {"model": {"keep": 0.5}}})
    fast = FastCascade.untrained(cfg, levels=3, seed=0)
    fast.threads = 1
    _check_parity(fast, [f.image for f in faces], boxes)


def test_fast_path_keeps_level1_fusion_weights():
    d = Config().to_dict()
    d["level1"]["model"]["fusion"] = {"F1": 3.0, "EN1": 1.0, "NM1": 0.5}
    cfg = config_from_dict(d)
    faces = generate(20, seed=1, size=96)
    boxes = np.stack([f.box for f in faces])
    fast = FastCascade.untrained(cfg, levels=1, seed=2)
    got = fast.predict([f.image for f in faces], boxes)[1]
    want = fast.reference().predict([f.image for f in faces], boxes)[1]
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    assert (np.abs(got - want).max(axis=(1, 2)) / side).max() <= TOL


def test_several_faces_per_image_and_batches():
    faces = generate(6, seed=2, size=128)
    images = [f.image for f in faces[:3]]
    boxes = np.stack([f.box for f in faces])
    index = np.array([0, 1, 2, 2, 1, 0])
    fast = FastCascade.untrained(Config(), levels=2, seed=3)
    whole = fast.predict(images, boxes, index)
    small = fast.predict(images, boxes, index, batch_size=4)
    np.testing.assert_allclose(small[2], whole[2], atol=1e-9)
    want = fast.reference().predict(images, boxes, index)
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    assert (np.abs(whole[1] - want[1]).max(axis=(1, 2)) / side).max() <= TOL


def test_threads_split_a_batch_into_parts_with_the_same_result():
    faces = generate(100, seed=4, size=96)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    one = FastCascade.untrained(Config(), levels=2, seed=0)
    two = FastCascade.from_cascade(one, threads=3)
    one.threads = 1
    got, want = two.predict(images, boxes), one.predict(images, boxes)
    # float32 sums depend on the batch a face is in: ~1e-6 px, then the 1/32-px bins
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    assert (_errors(got, want, boxes)[2] <= TOL).mean() >= 0.95


def test_load_cascade_gives_the_fast_path_by_default(tmp_path):
    from facecascade.cascade import load_cascade, save_cascade

    save_cascade(Cascade.untrained(Config(), levels=1, seed=0), tmp_path / "c")
    assert isinstance(load_cascade(tmp_path / "c"), FastCascade)
    ref = load_cascade(tmp_path / "c", fast=False)
    assert type(ref) is Cascade


def test_a_saved_artifact_keeps_its_level_graphs_and_loading_uses_them(tmp_path):
    from facecascade.cascade import load_cascade, save_cascade

    faces = generate(6, seed=5, size=96)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    save_cascade(Cascade.untrained(Config(), levels=3, seed=0), tmp_path / "c")
    # level 1: one graph (its nets run apart either way); levels 2 and 3: one face, batches
    assert len(list((tmp_path / "c" / "graphs").glob("level*.onnx"))) == 5
    loaded = load_cascade(tmp_path / "c")
    got = loaded.predict(images, boxes)
    one = loaded.predict(images[:1], boxes[:1])
    used = {(k, g) for k in (1, 2, 3) for g in (True, False)}
    assert loaded.graph_sources == dict.fromkeys(used, "saved")
    fresh = FastCascade.from_cascade(load_cascade(tmp_path / "c", fast=False))
    want = fresh.predict(images, boxes)
    assert set(fresh.graph_sources.values()) == {"exported"}
    for k in (1, 2, 3):
        np.testing.assert_array_equal(got[k], want[k])
        np.testing.assert_allclose(one[k], got[k][:1], atol=1e-3)


def test_a_graph_saved_for_other_weights_is_not_used(tmp_path):
    from facecascade.cascade import load_cascade, save_cascade
    from facecascade.fastpath import GRAPH_DIR

    faces = generate(6, seed=5, size=96)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    save_cascade(Cascade.untrained(Config(), levels=1, seed=0), tmp_path / "a")
    save_cascade(Cascade.untrained(Config(), levels=1, seed=1), tmp_path / "b")
    # b's folder holds a's graph (as if its weights had been replaced after saving)
    for f in (tmp_path / "b" / GRAPH_DIR).iterdir():
        f.unlink()
    for f in (tmp_path / "a" / GRAPH_DIR).iterdir():
        (tmp_path / "b" / GRAPH_DIR / f.name).write_bytes(f.read_bytes())
    b = load_cascade(tmp_path / "b")
    got = b.predict(images, boxes)[1]
    assert b.graph_sources == {(1, False): "exported"}
    np.testing.assert_allclose(got, b.reference().predict(images, boxes)[1], atol=1e-3)


def test_the_graph_key_follows_weights_and_settings():
    from facecascade.fused import graph_key

    def key(cfg, seed, grouped=True):
        c = FastCascade.untrained(cfg, levels=2, seed=seed)
        plan, nets = c._level(2, grouped)
        return graph_key(plan, nets)

    base = key(Config(), 0)
    assert key(Config(), 0) == base
    assert key(Config(), 1) != base
    assert key(config_from_dict({"level2": {"model": {"keep": 0.1}}}), 0) != base
    assert key(Config(), 0, grouped=False) != base


@pytest.mark.realdata
def test_fast_path_agrees_with_reference_on_real_faces():
    if not (DATA / "trainImageList.txt").is_file():
        pytest.skip(f"MTFL data not found at {DATA}")
    from facecascade.formats import faces_to_arrays, read_cuhk
    from facecascade.images import load_image

    faces, _ = read_cuhk(DATA / "trainImageList.txt", DATA / "images")
    faces = faces.iloc[np.linspace(0, len(faces) - 1, 300).astype(int)]
    _, boxes = faces_to_arrays(faces)
    grays = [to_gray(load_image(DATA / "images" / p, max_pixels=10**8)) for p in faces["path"]]
    errors = _check_parity(FastCascade.untrained(Config(), levels=3, seed=0), grays, boxes)
    assert (errors[2] <= TOL).mean() >= 0.97


def test_fast_path_agrees_with_reference_with_aligned_widths():
    faces = generate(150, seed=3, size=128)
    boxes = np.stack([f.box for f in faces])
    cfg = config_from_dict({f"level{k}": {"model": {"widths": "aligned"}} for k in (1, 2, 3)})
    fast = FastCascade.untrained(cfg, levels=3, seed=0)
    fast.threads = 1
    plan = level_plan(cfg, 2, fast.nets)
    assert len(plan.groups) == 1  # the ten patch nets still form one grouped module
    _check_parity(fast, [f.image for f in faces], boxes)


@pytest.mark.parametrize("patches", ["box", "points"])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_fast_windows_are_the_reference_windows_bit_for_bit(level, patches):
    from facecascade.crops import patch_frames
    from facecascade.fastpath import small_windows
    from facecascade.sampling import level_windows

    cfg = config_from_dict({"frame": {"patches": patches}})
    cascade = Cascade.untrained(cfg, levels=3, seed=0)
    plan = level_plan(cfg, level, cascade.nets)
    rng = np.random.default_rng(level)
    boxes = rng.uniform(0, 100, (60, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(20, 90, (60, 2))], axis=1)
    frames = face_frame(boxes, cfg.frame.scale)
    prev = boxes[:, None, :2] + rng.uniform(0, 1, (60, 5, 2)) * (boxes[:, None, 2:]
                                                                   - boxes[:, None, :2])
    prev[0] = prev[0, 0]  # a degenerate estimate: the frame's clip applies
    scale = cfg.frame.points_scale if level > 1 and patches == "points" else 0.0
    want_patch = frames if level == 1 else patch_frames(frames, prev, cfg)
    for windows_of in (level_windows, small_windows):  # compiled, and numpy for a few faces
        windows, patch = windows_of(plan, frames, prev, scale)
        np.testing.assert_array_equal(patch, want_patch)
        for j, name in enumerate(plan.order):
            np.testing.assert_array_equal(windows[:, j],
                                          net_windows(get_spec(name), want_patch, cfg, prev))


def test_a_single_face_runs_the_grouped_graph_and_a_batch_the_separate_one():
    fast = FastCascade.untrained(Config(), levels=3, seed=0)
    for level, n_groups in ((1, 3), (2, 1), (3, 1)):
        assert len(level_plan(fast.cfg, level, fast.nets).groups) == n_groups
        apart = level_plan(fast.cfg, level, fast.nets, grouped=False)
        assert [names for names, _ in apart.groups] == [(n,) for n in level_nets(level)]
    faces = generate(40, seed=4, size=128)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    ref = fast.reference().predict(images, boxes)
    fast.threads = 1
    batch = fast.predict(images, boxes)
    ones = [fast.predict(images[i:i + 1], boxes[i:i + 1]) for i in range(len(faces))]
    single = _errors({k: np.concatenate([o[k] for o in ones]) for k in (1, 2, 3)}, batch, boxes)
    for err in single.values():  # the same nets, their sums in another order
        assert np.median(err) <= 1e-6 and (err <= TOL).mean() >= 0.9 and err.max() <= 1e-2
    assert {(k, g) for k in (1, 2, 3) for g in (True, False)} <= set(fast.graph_sources)
    errors = _errors(batch, ref, boxes)
    assert all(np.median(e) <= 1e-6 for e in errors.values())


def test_a_single_face_too_small_for_level_3_keeps_level_2s_points():
    face = generate(1, seed=2, size=128)[0]
    fast = FastCascade.untrained(config_from_dict({"level3": {"crops": {"min_window_px": 1e6}}}),
                                 levels=3, seed=0)
    out = fast.predict([face.image], face.box[None])
    np.testing.assert_array_equal(out[3], out[2])


def test_no_faces_and_a_partly_gated_batch_in_threads():
    faces = generate(80, seed=8, size=128)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    cut_px = float(np.quantile(2 * 0.08 * side, 0.3))  # level 3 keeps a third of the faces
    cfg = config_from_dict({"level3": {"crops": {"min_window_px": cut_px}}})
    fast = FastCascade.untrained(cfg, levels=3, seed=0)
    empty = fast.predict([], np.zeros((0, 4)))
    assert all(v.shape == (0, 5, 2) for v in empty.values())
    fast.threads = 2
    got = fast.predict(images, boxes)
    kept = np.all(got[3] == got[2], axis=(1, 2))
    assert 0.1 < kept.mean() < 0.6
    fast.threads = 1
    one_thread = fast.predict(images, boxes)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(got[k], one_thread[k])
    with pytest.raises(ValueError, match=r"prev \(3, 5, 2\)"):
        fast.predict_level(2, [f.image[..., 0] for f in faces], np.arange(80),
                           face_frame(boxes, 1.0), np.zeros((3, 5, 2)))


def test_a_damaged_saved_graph_is_exported_again(tmp_path):
    from facecascade.cascade import load_cascade, save_cascade

    faces = generate(4, seed=6, size=96)
    images, boxes = [f.image for f in faces], np.stack([f.box for f in faces])
    save_cascade(Cascade.untrained(Config(), levels=1, seed=0), tmp_path / "c")
    for f in (tmp_path / "c" / "graphs").glob("level1-*.onnx"):
        f.write_bytes(f.read_bytes()[:100])  # truncated
    c = load_cascade(tmp_path / "c")
    with pytest.warns(UserWarning, match="not a usable graph"):
        got = c.predict(images, boxes)[1]
    assert c.graph_sources[(1, False)] == "exported"
    np.testing.assert_allclose(got, c.reference().predict(images, boxes)[1], atol=1e-3)
