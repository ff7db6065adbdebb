"""The network module of the cascade's 23 named networks (:mod:`facecascade.specs`).

:func:`create_net` builds a :class:`LandmarkNet` from a name. Convolutions are
unpadded ("valid"), pooling is max 2x2 with stride 2 rounding down, so F1 ends at
2x2x80 and EN1/NM1 at 2 wide x 1 high x 80 feature maps. The specs, their
registry and :func:`facecascade.specs.net_options` live in :mod:`facecascade.specs`
(no PyTorch).

>>> create_net("EN1")(torch.zeros(1, 1, 31, 39)).shape
torch.Size([1, 6])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .specs import PAPER_TOTAL_PARAMETERS, SPECS, NetSpec, conv_stages, get_spec, input_wh

# Level-1 convs from this (0-based) index on get locally shared weights when asked.
_LOCAL_SHARE_FROM = 2
_LOCAL_SHARE_GRID = (2, 2)


def _xavier_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    """Glorot-uniform fill in place: U(-a, a), ``a = sqrt(6 / (fan_in + fan_out))``."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class LocallySharedConv2d(nn.Module):
    """Convolution whose weights are shared only within each region of a grid.

    The output map is split into ``grid = (rows, cols)`` near-equal regions
    (boundaries ``i * size // n``); each region has its own kernel and bias and is
    computed by an ordinary convolution over the input slice it needs, then the
    regions are stitched together. With ``grid=(1, 1)`` it is a plain
    :class:`torch.nn.Conv2d` (unpadded, stride 1). This is the locally shared
    convolution of Sun et al. 2013 for the upper layers of the level-1 nets.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    kernel_size : int
        Side of the square kernel.
    grid : (int, int)
        Regions along height and width.

    Examples
    --------
    >>> conv = LocallySharedConv2d(3, 8, 3, grid=(2, 2))
    >>> tuple(conv(torch.zeros(1, 3, 8, 8)).shape)
    (1, 8, 6, 6)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 grid: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        if min(grid) < 1:
            raise ValueError(f"grid == {grid!r}, must be two positive ints")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.grid = (int(grid[0]), int(grid[1]))
        gh, gw = self.grid
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(gh, gw, out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(gh, gw, out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (the fans of one region's kernel), zero biases."""
        k2 = self.kernel_size ** 2
        _xavier_(self.weight, self.in_channels * k2, self.out_channels * k2)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        gh, gw = self.grid
        h_out, w_out = x.shape[-2] - k + 1, x.shape[-1] - k + 1
        if h_out < gh or w_out < gw:
            raise ValueError(f"LocallySharedConv2d: output {h_out}x{w_out} (h x w) is smaller "
                             f"than the grid {gh}x{gw}")
        rows = [i * h_out // gh for i in range(gh + 1)]
        cols = [j * w_out // gw for j in range(gw + 1)]
        stripes = []
        for i in range(gh):
            r0, r1 = rows[i], rows[i + 1]
            parts = [F.conv2d(x[..., r0:r1 + k - 1, cols[j]:cols[j + 1] + k - 1],
                              self.weight[i, j], self.bias[i, j])
                     for j in range(gw)]
            stripes.append(torch.cat(parts, dim=-1))
        return torch.cat(stripes, dim=-2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"grid={self.grid}")


class LandmarkNet(nn.Module):
    """A cascade network built from its :class:`NetSpec` alone.

    Layers: for each conv, convolution + ReLU (+ 2x2 max pooling where the plan
    says); flatten; for each hidden fc, linear + ReLU + dropout; a final linear
    layer with ``spec.n_outputs`` outputs. Weights are Xavier-uniform, biases zero.

    Parameters
    ----------
    spec : NetSpec
        The architecture.
    dropout : float
        Dropout probability after each hidden fully connected layer.
    local_share : bool
        Level-1 nets only: locally shared weights (2x2 grid, or fewer regions when
        the map is smaller) in conv3 and conv4.
    input_size : int or (int, int), optional
        Input ``(width, height)`` instead of ``spec.input_size``.

    Input is ``(B, 1, H, W)`` float32 (standardised crops); output is ``(B, 2k)``
    relative coordinates ``x0, y0, x1, y1, ...`` of ``spec.points``.
    """

    def __init__(self, spec: NetSpec, dropout: float = 0.25, local_share: bool = False,
                 input_size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout == {dropout!r}, must be in [0, 1)")
        if local_share and spec.level != 1:
            raise ValueError(f"{spec.name}: local_share is for level-1 nets only "
                             f"(F1, EN1, NM1), not level {spec.level}")
        self.spec = spec
        self.local_share = local_share
        self.input_size = input_wh(spec, input_size)
        stages = conv_stages(spec, self.input_size)

        layers: list[nn.Module] = []
        in_ch = 1
        for i, ((k, ch), pool, (_, conv_hw, _)) in enumerate(
                zip(spec.convs, spec.pool_after, stages, strict=True)):
            if local_share and i >= _LOCAL_SHARE_FROM:
                # fewer regions where the map is smaller than the grid (EN1/NM1 conv4: 2x1)
                grid = (min(_LOCAL_SHARE_GRID[0], conv_hw[0]),
                        min(_LOCAL_SHARE_GRID[1], conv_hw[1]))
                layers.append(LocallySharedConv2d(in_ch, ch, k, grid=grid))
            else:
                layers.append(nn.Conv2d(in_ch, ch, k))
            layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2d(2, stride=2))
            in_ch = ch
        self.features = nn.Sequential(*layers)

        ch, _, (h, w) = stages[-1]
        width = ch * h * w
        head: list[nn.Module] = [nn.Flatten()]
        for hidden in spec.fcs:
            head += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        head.append(nn.Linear(width, spec.n_outputs))
        self.head = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, LocallySharedConv2d):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, h = self.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, h, w):
            raise ValueError(f"{self.spec.name} expects input (B, 1, {h}, {w}), "
                             f"got {tuple(x.shape)}")
        return self.head(self.features(x))


def create_net(name: str, *, dropout: float = 0.25, local_share: bool = False,
               input_size: int | tuple[int, int] | None = None,
               widths: str = "paper") -> LandmarkNet:
    """Build the network called ``name`` (see :func:`facecascade.specs.list_nets`).

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"F1"``, ``"EN1"``, ``"LE21"``.
    dropout : float
        Dropout after the hidden fully connected layers (docs/METHOD.md: 0.25).
    local_share : bool
        Level-1 nets only: locally shared weights in conv3 and conv4.
    input_size : int or (int, int), optional
        Input ``(width, height)`` instead of the spec's (e.g. ``level2.input_size``).
    widths : str
        Conv channel plan, a key of :data:`facecascade.specs.WIDTHS` (``levelN.model.widths``).

    Raises
    ------
    ValueError
        For an unknown name (listing close matches) or widths, ``local_share`` on a
        patch net, or an input too small for the layer plan.

    Examples
    --------
    >>> net = create_net("LE21")
    >>> tuple(net(torch.zeros(3, 1, 15, 15)).shape)
    (3, 2)
    """
    return LandmarkNet(get_spec(name, widths), dropout=dropout, local_share=local_share,
                       input_size=input_size)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters of ``model``.

    >>> count_parameters(create_net("LE21"))
    17362
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(local_share: bool = False, widths: str = "paper") -> list[tuple[str, int]]:
    """``(name, parameters)`` of the 23 networks, then a final ``("total", sum)`` row.

    ``local_share`` applies to the level-1 nets only (patch nets are plain); ``widths``
    is a :data:`facecascade.specs.WIDTHS` plan.

    >>> parameter_table()[-1]
    ('total', 572622)
    >>> parameter_table(widths="aligned")[-1]
    ('total', 467206)
    """
    rows = [(name, count_parameters(
        create_net(name, local_share=local_share and SPECS[name].level == 1, widths=widths)))
        for name in SPECS]
    return rows + [("total", sum(n for _, n in rows))]


def format_parameter_table(local_share: bool = False, widths: str = "paper") -> str:
    """Text table of :func:`parameter_table` with the total beside the paper's 643,920.

    >>> print(format_parameter_table().splitlines()[0])
    network  level  outputs  parameters
    """
    rows = parameter_table(local_share=local_share, widths=widths)
    lines = [f"{'network':<7}  {'level':>5}  {'outputs':>7}  {'parameters':>10}"]
    for name, n in rows[:-1]:
        spec = SPECS[name]
        lines.append(f"{name:<7}  {spec.level:>5}  {spec.n_outputs:>7}  {n:>10,}")
    total = rows[-1][1]
    ratio = total / PAPER_TOTAL_PARAMETERS
    lines.append(f"{'total':<7}  {'':>5}  {'':>7}  {total:>10,}")
    lines.append(f"{'paper':<7}  {'':>5}  {'':>7}  {PAPER_TOTAL_PARAMETERS:>10,}"
                 f"  (ours = {ratio:.1%} of the paper's; "
                 f"local_share={'on' if local_share else 'off'}, widths={widths})")
    return "\n".join(lines)
