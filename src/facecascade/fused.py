"""The level graphs of the fast path as torch modules, and their export to ONNX.

:mod:`facecascade.fastpath` runs each cascade level as one graph; this module builds
those graphs from a level's networks (it is the part of the fast path that needs
PyTorch):

- :class:`GroupedNets`: nets of one layer plan (the ten patch nets of a level) as one
  stack of grouped convolutions, for a single face; :class:`SeparateNets` for nets
  whose layers cannot be grouped (e.g. locally shared convolutions), which run as they
  are inside the same graph. Grouped modules are built from the nets' modules, so they
  follow any layer widths of the specs (:class:`facecascade.specs.NetSpec`); a
  ``BatchNorm`` after a convolution or linear layer is folded into its weights.
- :class:`LevelGraph`: standardised crops and windows in, fused points out (the nets,
  their relative outputs back to image pixels, and the level's fusion), for the
  :class:`facecascade.plans.LevelPlan` of :func:`level_plan`.
- :func:`export_level`: its ONNX model (``torch.onnx.export``, about a second a level),
  named in a folder by :func:`graph_key`, a hash of the plan, layers and weights;
  :class:`TorchLevel` runs it as a torch module instead (``backend="torch"``).

:class:`facecascade.cascade.Cascade` stays the reference; ``tests/test_fused.py``
checks that both agree.
"""

from __future__ import annotations

import copy
import hashlib
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import Config
from .plans import GRAPH_VERSION, OPSET, LevelPlan, plan_level
from .specs import get_spec, level_nets


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

def level_plan(cfg: Config, level: int, nets: Mapping[str, nn.Module], *,
               grouped: bool = True) -> LevelPlan:
    """The :class:`facecascade.plans.LevelPlan` of ``level``: with ``grouped``, nets of
    the same input size and layer plan (:func:`_signature`) are one group when there are
    at least :data:`facecascade.plans.MIN_GROUP` of them (the ten patch nets), else
    every net is a group of its own (:func:`facecascade.plans.plan_level`)."""
    signatures: dict[str, Any] = {}
    if grouped:
        for name in level_nets(level):
            try:
                signatures[name] = _signature(nets[name])
            except NotGroupable:
                pass  # a group of its own
    return plan_level(cfg, level, signatures if grouped else None)


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


class TorchLevel:
    """A level graph as a torch module: ``(crops, windows) -> points``."""

    def __init__(self, graph: LevelGraph) -> None:
        self.graph = graph

    def __call__(self, crops: Sequence[np.ndarray], windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.graph(*(torch.from_numpy(c) for c in crops),
                              torch.from_numpy(windows)).numpy()
