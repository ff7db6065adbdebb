"""The fast inference path: each cascade level as one graph, fed by vectorised crops.

:class:`FastCascade` is a :class:`facecascade.cascade.Cascade` (same
``predict``, ``predict_level``, manifest and artifact) whose ``predict_level``
runs a level in three steps for a whole batch of faces:

1. **windows** of every net of the level for every face in one compiled pass
   (:func:`level_windows`: the patch frames of
   :func:`facecascade.crops.patch_frames` and ``anchor + fraction * frame size``,
   the arithmetic of :func:`facecascade.crops.net_windows`, bit for bit);
2. **crops** of all those windows, standardised, in one compiled pass per image
   (:func:`facecascade.sampling.crop_groups`: the reference ``warpAffine`` crops to
   the bit, then :func:`facecascade.crops.standardise`);
3. **one graph** per level (:class:`LevelGraph`): standardised crops and windows
   in, fused points out: the nets, the nets' relative outputs back to image pixels and
   the fusion (eq. 4 weighted average at level 1, pair averages at levels 2 and 3,
   and the share ``model.keep`` of the previous estimate, which is every patch
   window's centre). Each level has two such graphs (:func:`level_plan`): for a
   single face, the ten patch nets run as one stack of grouped convolutions
   (:class:`GroupedNets`); for a batch, every net runs as its own convolution stack,
   which onnxruntime's blocked (NCHWc) kernels run much faster than grouped
   convolutions once there are two faces or more (:data:`MIN_GROUP`). Level 1's three
   nets run apart in both.

Steps 1 and 2 are numba-compiled (``cache=True``: compiled once per machine, then
loaded) so that a single face costs little more than its graphs: for one face the
numpy glue of the same arithmetic took longer than the networks.

The graphs run on onnxruntime (exported with ``torch.onnx.export``, one session
per graph, default) or as the fused torch modules (``backend="torch"``);
``bench/inference_speed.py`` measures both. Exporting a level costs about a second
(the first trace), so a cascade artifact keeps its level graphs
(``graphs/level{L}-{key}.onnx``, :meth:`FastCascade.write_graphs`, called by
:func:`facecascade.cascade.save_cascade`): ``key`` (:func:`graph_key`) hashes the
level's plan, layers and weights, and a graph is used only when its key is the
one of the weights and settings loaded, so a stale or foreign graph is exported
afresh, never trusted. Grouped modules are built from the
nets' modules, so they follow any layer widths of the specs (``nets.NetSpec``);
a ``BatchNorm`` after a convolution or linear layer is folded into its weights.
Nets whose layers cannot be grouped (e.g. locally shared convolutions) run as
they are, inside the same graph.

:class:`facecascade.cascade.Cascade` stays the reference;
``tests/test_fused.py`` checks that both agree.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from torch import nn

from .cascade import Cascade
from .config import Config
from .crops import MIN_STD, net_windows, refined_faces
from .io import atomic_path
from .sampling import CropLayout, crop_groups
from .specs import get_spec, level_nets

#: graph backends of :class:`FastCascade`
BACKENDS = ("onnxruntime", "torch")
#: ONNX opset of the level graphs
OPSET = 17
#: fewest faces in a part of a batch run by its own thread
MIN_PART = 32
#: fewest nets of one layer plan run as one grouped module, for a single face. Measured
#: with onnxruntime on one thread (aligned widths, us per face): the ten patch nets grouped
#: 77 at batch 1, 80 at 256; as ten nets 96 and 31 (the grouped convolutions miss
#: onnxruntime's blocked NCHWc kernels, which win from two faces on); EN1 and NM1 grouped
#: 158 (level 1) against 147 apart. So one face runs the grouped graph, a batch the other.
MIN_GROUP = 3
#: layout version of the level graphs; part of :func:`graph_key`
GRAPH_VERSION = 3
#: folder of a cascade artifact holding its level graphs
GRAPH_DIR = "graphs"


class NotGroupable(ValueError):
    """Nets whose layers cannot be stacked as grouped convolutions."""


# ---------------------------------------------------------------------------- grouped nets

def _layers(net: nn.Module) -> list[nn.Module]:
    """The layer sequence of a :class:`facecascade.nets.LandmarkNet` (features, then head)."""
    if not (isinstance(getattr(net, "features", None), nn.Sequential)
            and isinstance(getattr(net, "head", None), nn.Sequential)):
        raise NotGroupable(f"{type(net).__name__} has no features/head sequences")
    return [m for m in (*net.features, *net.head) if not isinstance(m, (nn.Dropout, nn.Identity))]


def _fold(weight: torch.Tensor, bias: torch.Tensor | None,
          bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a conv/linear layer with the (eval-mode) BatchNorm after it folded in."""
    weight = weight.detach().clone()
    bias = (torch.zeros(weight.shape[0]) if bias is None else bias.detach().clone())
    if bn is None:
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight, (bias - bn.running_mean) * scale + shift


def _signature(net: nn.Module) -> tuple:
    """What must match for nets to be grouped: layer types and hyperparameters."""
    sig: list[Any] = []
    for m in _layers(net):
        if isinstance(m, nn.Conv2d):
            sig.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride,
                        m.padding, m.dilation, m.groups, m.padding_mode))
        elif isinstance(m, nn.Linear):
            sig.append(("linear", m.in_features, m.out_features))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            sig.append(("bn", m.num_features))
        elif isinstance(m, nn.MaxPool2d):
            sig.append(("maxpool", m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode))
        elif isinstance(m, (nn.ReLU, nn.Flatten)):
            sig.append((type(m).__name__,))
        else:
            raise NotGroupable(f"layer {type(m).__name__} cannot be grouped")
    return tuple(sig)


class GroupedNets(nn.Module):
    """``g`` nets of one layer plan as one stack of grouped convolutions.

    Convolutions become ``Conv2d(g * in, g * out, groups=g)`` (net ``i`` owns
    channels ``i * out ... (i + 1) * out - 1``); the first linear layer after
    the flatten becomes a grouped convolution whose kernel covers the whole
    feature map, later linear layers grouped 1x1 convolutions; ReLU and max
    pooling stay as they are; dropout is dropped (inference) and BatchNorm folded.

    Input ``(B, g, H, W)`` (net ``i`` reads channel ``i``); output ``(B, g, k)``,
    the ``k`` outputs of each net.

    Raises
    ------
    NotGroupable
        When the nets have different layer plans or a layer this class does not know.
    """

    def __init__(self, nets: Sequence[nn.Module], input_size: tuple[int, int]) -> None:
        super().__init__()
        if len({_signature(n) for n in nets}) != 1:
            raise NotGroupable("nets with different layer plans")
        g = len(nets)
        self.g = g
        per_net = [_layers(n) for n in nets]
        w, h = input_size
        shape = torch.zeros(1, 1, h, w)  # tracks the feature map of net 0 up to the flatten
        layers: list[nn.Module] = []
        flat_shape: tuple[int, ...] | None = None
        first_linear = True
        i = 0
        with torch.no_grad():
            while i < len(per_net[0]):
                m0 = per_net[0][i]
                nxt = per_net[0][i + 1] if i + 1 < len(per_net[0]) else None
                bn_next = isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm1d))
                if isinstance(m0, nn.Conv2d):
                    folded = [_fold(ms[i].weight, ms[i].bias, ms[i + 1] if bn_next else None)
                              for ms in per_net]
                    conv = nn.Conv2d(g * m0.in_channels, g * m0.out_channels, m0.kernel_size,
                                     stride=m0.stride, padding=m0.padding, dilation=m0.dilation,
                                     groups=g * m0.groups, padding_mode=m0.padding_mode)
                    conv.weight.copy_(torch.cat([f[0] for f in folded]))
                    conv.bias.copy_(torch.cat([f[1] for f in folded]))
                    layers.append(conv)
                    shape = m0(shape)
                elif isinstance(m0, nn.Linear):
                    folded = [_fold(ms[i].weight, ms[i].bias, ms[i + 1] if bn_next else None)
                              for ms in per_net]
                    if first_linear and flat_shape is not None:
                        c, fh, fw = flat_shape
                        kernel = (fh, fw)
                        weights = [f[0].reshape(m0.out_features, c, fh, fw) for f in folded]
                    else:
                        kernel = (1, 1)
                        weights = [f[0].reshape(m0.out_features, m0.in_features, 1, 1)
                                   for f in folded]
                    first_linear = False
                    conv = nn.Conv2d(weights[0].shape[1] * g, g * m0.out_features, kernel,
                                     groups=g)
                    conv.weight.copy_(torch.cat(weights))
                    conv.bias.copy_(torch.cat([f[1] for f in folded]))
                    layers.append(conv)
                elif isinstance(m0, nn.Flatten):
                    flat_shape = tuple(shape.shape[1:])
                elif isinstance(m0, (nn.ReLU, nn.MaxPool2d)):
                    layers.append(copy.deepcopy(m0))
                    if flat_shape is None:
                        shape = m0(shape)
                i += 2 if bn_next and isinstance(m0, (nn.Conv2d, nn.Linear)) else 1
        if flat_shape is None:
            raise NotGroupable("no flatten between the convolutions and the linear layers")
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).reshape(x.shape[0], self.g, -1)


class SeparateNets(nn.Module):
    """Nets that cannot be grouped, with :class:`GroupedNets`' interface: ``(B, g, H, W) ->
    (B, g, k)``."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(copy.deepcopy(n).eval() for n in nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x[:, i:i + 1]) for i, net in enumerate(self.nets)], dim=1)


def group_nets(nets: Sequence[nn.Module], input_size: tuple[int, int]) -> nn.Module:
    """:class:`GroupedNets` of ``nets`` when their layers allow it, else :class:`SeparateNets`."""
    try:
        return GroupedNets(nets, input_size)
    except NotGroupable:
        return SeparateNets(nets)


# ---------------------------------------------------------------------------- level graph

@dataclass(frozen=True)
class LevelPlan:
    """Which nets a level has, in graph order, and how their windows are placed.

    ``groups`` are ``(names, (W, H))`` of nets run as one module; ``order`` is
    every net of the level in graph order (the groups one after the other).
    A net's window is ``anchor + fractions * (frame w, h, w, h)`` where the
    anchor is the frame's top-left corner (level 1) or the previous estimate of
    the net's point (``anchor_points``; levels 2 and 3).
    """

    level: int
    groups: tuple[tuple[tuple[str, ...], tuple[int, int]], ...]
    order: tuple[str, ...]
    fractions: np.ndarray  # (m, 4)
    anchor_points: np.ndarray | None  # (m,) point index, None at level 1
    fusion: np.ndarray  # (5, P): fused point q = sum_p fusion[q, p] * net point p
    keep: float = 0.0  # share of the previous estimate (the window centres), levels 2 and 3

    @functools.cached_property
    def layout(self) -> CropLayout:
        """The crop groups of :func:`facecascade.sampling.crop_groups`, in graph order."""
        return CropLayout.of([(size, len(names)) for names, size in self.groups])

    @functools.cached_property
    def anchors(self) -> np.ndarray:
        """Per net, the point its window is centred on, or -1 for the frame (level 1)."""
        m = len(self.order)
        return (np.full(m, -1, np.int64) if self.anchor_points is None
                else np.ascontiguousarray(self.anchor_points, np.int64))


def level_plan(cfg: Config, level: int, nets: Mapping[str, nn.Module], *,
               grouped: bool = True) -> LevelPlan:
    """The :class:`LevelPlan` of ``level``: with ``grouped``, nets of the same input size
    and layer plan are one group when there are at least :data:`MIN_GROUP` of them (the
    ten patch nets), else every net is a group of its own. Either way the nets keep
    their order of :func:`facecascade.nets.level_nets`, so the windows are the same."""
    names = level_nets(level)
    keys: dict[Any, list[str]] = {}
    for name in names:
        try:
            sig = _signature(nets[name]) if grouped else name
        except NotGroupable:
            sig = name  # a group of its own
        keys.setdefault((get_spec(name).input_size, sig), []).append(name)
    groups = tuple(group for (size, _), ns in keys.items()
                   for group in ([(tuple(ns), size)] if len(ns) >= MIN_GROUP
                                 else [((n,), size) for n in ns]))
    order = tuple(n for ns, _ in groups for n in ns)
    unit = np.array([[0.0, 0.0, 1.0, 1.0]])
    zeros = np.zeros((1, 5, 2))
    fractions = np.ascontiguousarray(
        np.concatenate([net_windows(get_spec(n), unit, cfg, zeros) for n in order]))
    anchors = None if level == 1 else np.array([get_spec(n).points[0] for n in order])
    weights = [cfg.level1.model.fusion[n] if level == 1 else 1.0 for n in order]
    point_of = [p for n in order for p in get_spec(n).points]
    weight_of = [w for n, w in zip(order, weights, strict=True) for _ in get_spec(n).points]
    fusion = np.zeros((5, len(point_of)))
    for j, (p, w) in enumerate(zip(point_of, weight_of, strict=True)):
        fusion[p, j] = w
    fusion /= fusion.sum(axis=1, keepdims=True)
    keep = 0.0 if level == 1 else cfg.level(level).model.keep
    return LevelPlan(level, groups, order, fractions, anchors, fusion, keep)


class LevelGraph(nn.Module):
    """One cascade level as one module: crops and windows in, fused points out.

    ``forward(*crops, windows)``: ``crops[j]`` float32 ``(B, g_j, H_j, W_j)`` of the
    ``j``-th group of the plan, standardised (:func:`facecascade.crops.standardise`),
    ``windows`` float32 ``(B, m, 4)`` of every net in plan order; returns float32
    ``(B, 5, 2)`` points in image pixels. The nets' relative outputs are mapped to
    their windows and fused with the plan's weights. A patch window is centred on the
    previous estimate of its point, so keeping a share ``plan.keep`` of that estimate
    moves each relative output towards 0.5 (the window's centre) by that share.
    """

    def __init__(self, plan: LevelPlan, nets: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.groups = nn.ModuleList(
            group_nets([nets[n] for n in names], size).eval() for names, size in plan.groups)
        net_of_point = [i for i, n in enumerate(plan.order) for _ in get_spec(n).points]
        self.register_buffer("net_of_point", torch.tensor(net_of_point, dtype=torch.int64))
        self.register_buffer("fusion", torch.tensor(plan.fusion, dtype=torch.float32))
        self.keep = float(plan.keep)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *crops, windows = inputs
        outs = []
        for module, x in zip(self.groups, crops, strict=True):
            y = module(x)
            outs.append(y.reshape(y.shape[0], -1, 2))
        rel = torch.cat(outs, dim=1)  # (B, P, 2)
        if self.keep:
            rel = rel * (1.0 - self.keep) + 0.5 * self.keep
        win = windows.index_select(1, self.net_of_point)  # (B, P, 4)
        points = rel * (win[..., 2:] - win[..., :2]) + win[..., :2]
        return torch.matmul(self.fusion, points)


def export_level(graph: LevelGraph, plan: LevelPlan) -> bytes:
    """The ONNX model (bytes) of a :class:`LevelGraph`; inputs ``crops0.. , windows``."""
    example = [torch.zeros(2, len(names), size[1], size[0]) for names, size in plan.groups]
    example.append(torch.zeros(2, len(plan.order), 4))
    example[-1][..., 2:] = 1.0
    names = [f"crops{j}" for j in range(len(plan.groups))] + ["windows"]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graph, tuple(example), buf, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["points"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "points"]},
                          do_constant_folding=True)
    return buf.getvalue()


def graph_key(plan: LevelPlan, nets: Mapping[str, nn.Module]) -> str:
    """Hash of what a level graph is made of: the plan, the nets' layers and weights.

    Two levels with the same key export the same graph (:func:`export_level`).
    """
    h = hashlib.sha256(repr((GRAPH_VERSION, OPSET, plan.level, plan.groups, plan.order,
                             plan.keep)).encode())
    for a in (plan.fractions, plan.fusion, plan.anchor_points):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    for name in plan.order:
        h.update(repr(nets[name]).encode())
        for k, v in nets[name].state_dict().items():
            h.update(repr((k, tuple(v.shape), str(v.dtype))).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def graph_file(level: int, key: str) -> str:
    """File name of a level graph in an artifact's :data:`GRAPH_DIR`."""
    return f"level{level}-{key}.onnx"


class _OrtLevel:
    """A level graph on onnxruntime: ``(crops, windows) -> points``."""

    def __init__(self, model: bytes, n_groups: int) -> None:
        import onnxruntime as ort

        # one thread per run: FastCascade runs parts of a batch in parallel instead (the
        # glue too), and a spinning intra-op pool burns CPU on a shared machine
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.names = [f"crops{j}" for j in range(n_groups)] + ["windows"]

    def __call__(self, crops: Sequence[np.ndarray], windows: np.ndarray) -> np.ndarray:
        feed = dict(zip(self.names, [*crops, windows], strict=True))
        return self.session.run(None, feed)[0]


class _TorchLevel:
    """A level graph as a torch module: ``(crops, windows) -> points``."""

    def __init__(self, graph: LevelGraph) -> None:
        self.graph = graph

    def __call__(self, crops: Sequence[np.ndarray], windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.graph(*(torch.from_numpy(c) for c in crops),
                              torch.from_numpy(windows)).numpy()


class FastCascade(Cascade):
    """A :class:`Cascade` whose levels run as fused graphs on vectorised crops.

    Same constructor as :class:`Cascade`, plus:

    Parameters
    ----------
    backend : {"onnxruntime", "torch"}
        Where the level graphs run.
    threads : int, optional
        Parts of a batch run at once, in Python threads (the compiled passes and
        onnxruntime release the GIL), each part on one onnxruntime thread; default
        ``os.cpu_count()``. A part has at least :data:`MIN_PART` faces, so a single
        face runs on one thread. The torch backend runs whole batches with torch's
        own threads (``torch.set_num_threads``).

    graphs : str or Path, optional
        A folder of saved level graphs (an artifact's :data:`GRAPH_DIR`): a level
        whose graph is there under its :func:`graph_key` is not exported again.

    The graphs are built on first use of a level; :attr:`graph_sources` says
    where each came from (``"exported"`` or ``"saved"``), keyed by ``(level,
    grouped)``; :meth:`reference` gives the plain :class:`Cascade` of the same weights.
    """

    def __init__(self, cfg: Config, weights: Mapping[str, Mapping[str, torch.Tensor]], *,
                 levels: int, device: str | torch.device | None = None,
                 backend: str = "onnxruntime", threads: int | None = None,
                 graphs: str | Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend == {backend!r}, must be one of {BACKENDS}")
        super().__init__(cfg, weights, levels=levels, device=device)
        self.backend = backend
        self.threads = threads
        self.graphs = None if graphs is None else Path(graphs)
        self.graph_sources: dict[tuple[int, bool], str] = {}
        self._runners: dict[tuple[int, bool], tuple[LevelPlan, Any]] = {}
        self._window_plans: dict[int, LevelPlan] = {}

    @classmethod
    def from_cascade(cls, cascade: Cascade, **kwargs: Any) -> FastCascade:
        """The fast path of an existing (reference) cascade's weights."""
        weights = {n: net.state_dict() for n, net in cascade.nets.items()}
        return cls(cascade.cfg, weights, levels=cascade.levels, **kwargs)

    def reference(self) -> Cascade:
        """The reference :class:`Cascade` of the same weights."""
        return Cascade(self.cfg, {n: net.state_dict() for n, net in self.nets.items()},
                       levels=self.levels, device=self.device)

    def _level(self, level: int, grouped: bool = True,
               ) -> tuple[LevelPlan, dict[str, nn.Module]]:
        cpu = {n: copy.deepcopy(net).cpu().eval() for n, net in self.nets.items()
               if get_spec(n).level == level}
        return level_plan(self.cfg, level, cpu, grouped=grouped), cpu

    def _window_plan(self, level: int) -> LevelPlan:
        """The plan whose windows a level's graphs read (both share its net order)."""
        if level not in self._window_plans:
            nets = {n: net for n, net in self.nets.items() if get_spec(n).level == level}
            self._window_plans[level] = level_plan(self.cfg, level, nets, grouped=False)
        return self._window_plans[level]

    def runner(self, level: int, *, grouped: bool = True) -> tuple[LevelPlan, Any]:
        """The plan and the graph runner of ``level`` (built on first use): with ``grouped``
        the graph that runs a single face, without it the one that runs batches
        (:func:`level_plan`, :data:`MIN_GROUP`)."""
        key = (level, grouped)
        if key not in self._runners:
            plan, cpu = self._level(level, grouped)
            other = self._runners.get((level, not grouped))
            if other is not None and other[0].groups == plan.groups:  # level 1: one graph
                self._runners[key] = other
                if (level, not grouped) in self.graph_sources:  # onnxruntime only
                    self.graph_sources[key] = self.graph_sources[(level, not grouped)]
                return other
            graph = LevelGraph(plan, cpu).eval()
            if self.backend == "torch":
                run: Any = _TorchLevel(graph)
            else:
                run, self.graph_sources[key] = None, "exported"
                saved = (self.graphs / graph_file(level, graph_key(plan, cpu))
                         if self.graphs is not None else None)
                if saved is not None and saved.is_file():
                    try:
                        run = _OrtLevel(saved.read_bytes(), len(plan.groups))
                        self.graph_sources[key] = "saved"
                    except Exception as exc:  # noqa: BLE001 - a damaged cache is re-made
                        warnings.warn(f"{saved}: not a usable graph ({exc}); exporting it "
                                      "again", stacklevel=2)
                if run is None:
                    run = _OrtLevel(export_level(graph, plan), len(plan.groups))
            self._runners[key] = (plan, run)
        return self._runners[key]

    def write_graphs(self, folder: str | Path) -> list[Path]:
        """Export every level's graphs (for one face and for batches) into ``folder``,
        each under its :func:`graph_key`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for level in self.levels_available:
            for grouped in (True, False):
                plan, cpu = self._level(level, grouped)
                f = folder / graph_file(level, graph_key(plan, cpu))
                if not f.is_file():  # the two plans of a level may be the same
                    with atomic_path(f) as tmp:
                        tmp.write_bytes(export_level(LevelGraph(plan, cpu).eval(), plan))
                    out.append(f)
        return out

    def predict_level(self, level: int, grays: Sequence[np.ndarray], image_index: np.ndarray,
                      frames: np.ndarray, prev: np.ndarray | None, *,
                      batch_size: int = 1024) -> np.ndarray:
        """Points ``(n, 5, 2)`` after ``level``, as :meth:`Cascade.predict_level` (fast path)."""
        if level not in self.levels_available:
            raise ValueError(f"level == {level}, this cascade has levels 1..{self.levels}")
        if level > 1 and prev is None:
            raise ValueError(f"level {level} needs the previous level's points (prev)")
        frames = np.asarray(frames, np.float64)
        n = len(frames)
        if frames.shape != (n, 4) or (level > 1 and np.shape(prev) != (n, 5, 2)):
            raise ValueError(f"frames {frames.shape} and prev {np.shape(prev)}: expected "
                             f"({n}, 4) and ({n}, 5, 2)")
        plan = self._window_plan(level)
        prev = (np.zeros((n, 5, 2)) if level == 1 else
                np.ascontiguousarray(prev, np.float64))
        points = level > 1 and self.cfg.frame.patches == "points"
        windows, patch = level_windows(plan, frames, prev,
                                       self.cfg.frame.points_scale if points else 0.0)
        out = np.empty((n, 5, 2))
        faces = slice(None)
        if level > 1 and self.cfg.level(level).crops.min_window_px > 0:
            refine = refined_faces(level, patch, self.cfg)  # the others keep prev
            if not refine.all():
                out[~refine] = prev[~refine]
                faces = np.flatnonzero(refine)
        image_index = np.asarray(image_index, np.int64)
        count = n if isinstance(faces, slice) else len(faces)
        if count == 0:
            return out
        graph_plan, run = self.runner(level, grouped=count == 1)
        if graph_plan.order != plan.order:  # level_plan keeps level_nets' order in both
            raise RuntimeError(f"level {level}: graph order {graph_plan.order} is not the "
                               f"windows' order {plan.order}")
        workers = 1  # os.cpu_count() reads a file each call: not asked for one face
        if self.backend == "onnxruntime" and count >= 2 * MIN_PART:
            workers = min(self.threads or os.cpu_count() or 1, count // MIN_PART)
        if workers == 1 and count <= batch_size:
            parts = [faces]  # one face, or a batch that needs no splitting
        else:
            rows = np.arange(n)[faces]
            step = min(batch_size, -(-count // workers))
            parts = [rows[start:start + step] for start in range(0, count, step)]

        layout = graph_plan.layout

        def run_part(rows: np.ndarray | slice) -> None:
            win = windows[rows]
            crops = crop_groups(grays, image_index[rows], win, layout, min_std=MIN_STD)
            out[rows] = run(crops, win.astype(np.float32))

        if workers > 1 and len(parts) > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="level") as pool:
                list(pool.map(run_part, parts))
        else:
            for rows in parts:
                run_part(rows)
        return out


@numba.njit(cache=True, nogil=True)
def _level_windows(frames: np.ndarray, prev: np.ndarray, fractions: np.ndarray,
                   anchors: np.ndarray, points_scale: float, windows: np.ndarray,
                   patch: np.ndarray) -> None:
    for i in range(frames.shape[0]):
        left, top, right, bottom = frames[i, 0], frames[i, 1], frames[i, 2], frames[i, 3]
        if points_scale > 0:  # frame.points_frame, operation for operation
            p = prev[i]
            dx, dy = p[1, 0] - p[0, 0], p[1, 1] - p[0, 1]
            iod = np.sqrt(dx * dx + dy * dy)
            dx = (p[3, 0] + p[4, 0]) / 2 - (p[0, 0] + p[1, 0]) / 2
            dy = (p[3, 1] + p[4, 1]) / 2 - (p[0, 1] + p[1, 1]) / 2
            size = points_scale * np.sqrt(iod * np.sqrt(dx * dx + dy * dy))
            side = np.sqrt((right - left) * (bottom - top))
            size = min(max(size, 0.5 * side), 2.0 * side)
            cx, cy, half = (left + right) / 2, (top + bottom) / 2, size / 2
            left, top, right, bottom = cx - half, cy - half, cx + half, cy + half
        patch[i, 0], patch[i, 1], patch[i, 2], patch[i, 3] = left, top, right, bottom
        w, h = right - left, bottom - top
        for j in range(fractions.shape[0]):
            if anchors[j] < 0:
                ax, ay = left, top
            else:
                ax, ay = prev[i, anchors[j], 0], prev[i, anchors[j], 1]
            windows[i, j, 0] = ax + fractions[j, 0] * w
            windows[i, j, 1] = ay + fractions[j, 1] * h
            windows[i, j, 2] = ax + fractions[j, 2] * w
            windows[i, j, 3] = ay + fractions[j, 3] * h


def level_windows(plan: LevelPlan, frames: np.ndarray, prev: np.ndarray,
                  points_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``(n, m, 4)`` of the plan's nets and the patch frames ``(n, 4)`` they use.

    ``frames`` are the faces' box frames; with ``points_scale > 0`` (``frame.patches:
    points``, levels 2 and 3) the patch frames are
    :func:`facecascade.frame.points_frame` of ``prev``, else ``frames``. A level-1 window
    is anchored at its frame's top-left corner, a patch window at the previous estimate
    of its point. The same numbers as :func:`facecascade.crops.patch_frames` and
    :func:`facecascade.crops.net_windows`, bit for bit, in one compiled pass.
    """
    frames = np.ascontiguousarray(frames, np.float64)
    n, m = len(frames), len(plan.order)
    windows, patch = np.empty((n, m, 4)), np.empty((n, 4))
    _level_windows(frames, np.ascontiguousarray(prev, np.float64), plan.fractions,
                   plan.anchors, float(points_scale), windows, patch)
    return windows, patch
