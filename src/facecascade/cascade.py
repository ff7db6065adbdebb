"""Cascade inference over the three levels, and the cascade artifact.

``images + boxes -> level 1 (F1, EN1, NM1) -> weighted fusion (paper eq. 4)
-> level-2 windows around the fused points -> pair averages -> level 3``,
batched over faces; :meth:`Cascade.predict` returns the points of every level.

The artifact is a directory::

    manifest.json   format, version, levels, nets (spec summary), params (params.yaml as a dict)
    weights.pt      {net name: state dict}, loaded with torch.load(weights_only=True)
    graphs/         each level as one ONNX graph for the fast path (facecascade.fastpath),
                    and index.json: their plans, bound to weights.pt and params by SHA-256,
                    so that serving needs no PyTorch; graphs are exported again when stale

PyTorch is imported only when networks are built (:attr:`Cascade.nets`) or saved.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import geometry as geo
from .checks import check_boxes
from .config import Config, ConfigError, config_from_dict
from .crops import cut, net_windows, patch_frames, refined_faces, standardise
from .frame import face_frame
from .io import atomic_path, load_tensors
from .specs import get_spec, level_nets, net_options

if TYPE_CHECKING:
    import torch

MANIFEST_FORMAT = "facecascade.cascade"
MANIFEST_VERSION = 1


def cascade_nets(levels: int) -> list[str]:
    """The nets of a cascade of ``levels`` levels, level by level in registry order.

    >>> cascade_nets(1)
    ['F1', 'EN1', 'NM1']
    """
    return [n for k in range(1, levels + 1) for n in level_nets(k)]


class Cascade:
    """A trained (or partly trained) cascade of landmark networks.

    Parameters
    ----------
    cfg : Config
        The parameters the cascade was trained with (frame, regions, windows, fusion).
    weights : mapping of net name to state dict
        Weights of every net of levels ``1..levels``.
    levels : int
        How many levels the cascade has (1, 2 or 3).
    device : str or torch.device, optional
        Where to run the networks; CUDA when available by default.
    """

    def __init__(self, cfg: Config, weights: Mapping[str, Mapping[str, torch.Tensor]], *,
                 levels: int, device: str | torch.device | None = None):
        self._setup(cfg, weights, levels=levels, device=device)
        self.nets  # noqa: B018 - built now: weights that do not fit fail here, not later

    def _setup(self, cfg: Config, weights: Mapping[str, Mapping[str, torch.Tensor]], *,
               levels: int, device: str | torch.device | None) -> None:
        """Check and keep the constructor's arguments; the nets are built on first use."""
        if levels not in (1, 2, 3):
            raise ValueError(f"levels == {levels!r}, must be 1, 2 or 3")
        missing = [n for n in cascade_nets(levels) if n not in weights]
        if missing:
            raise ValueError(f"cascade of {levels} level(s) lacks weights for {missing}")
        self.cfg = cfg
        self.levels = levels
        self._weights = weights
        self._device = device

    @functools.cached_property
    def device(self) -> torch.device:
        """Where the networks run: the ``device`` asked for, else CUDA when available."""
        import torch

        if self._device is not None:
            return torch.device(self._device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @functools.cached_property
    def nets(self) -> dict[str, torch.nn.Module]:
        """The networks by name, in eval mode on :attr:`device` (built on first use)."""
        from .nets import create_net

        nets = {}
        for name in cascade_nets(self.levels):
            net = create_net(name, dropout=0.0, **net_options(name, self.cfg))
            net.load_state_dict(self._weights[name])
            nets[name] = net.to(self.device).eval()
        return nets

    @classmethod
    def untrained(cls, cfg: Config, *, levels: int = 3, seed: int = 0) -> Cascade:
        """A cascade with freshly initialised weights (for tests and plumbing)."""
        import torch

        from .nets import create_net

        torch.manual_seed(seed)
        weights = {name: create_net(name, **net_options(name, cfg)).state_dict()
                   for name in cascade_nets(levels)}
        return cls(cfg, weights, levels=levels)

    @property
    def manifest(self) -> dict[str, Any]:
        """The JSON manifest describing this cascade."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "levels": self.levels,
            "nets": {name: {"level": get_spec(name).level,
                            "input_size": list(get_spec(name).input_size),
                            "points": list(get_spec(name).points)}
                     for name in cascade_nets(self.levels)},
            "params": self.cfg.to_dict(),
        }

    # ------------------------------------------------------------------ inference
    def _run(self, name: str, grays: Sequence[np.ndarray], image_index: np.ndarray,
             windows: np.ndarray, batch_size: int) -> np.ndarray:
        """Absolute points ``(n, k, 2)`` predicted by net ``name`` on its windows."""
        spec = get_spec(name)
        maps = geo.window_to_output(windows, spec.input_size)
        crops = np.empty((len(windows), spec.input_size[1], spec.input_size[0]), np.uint8)
        for img_i in np.unique(image_index):
            sel = np.flatnonzero(image_index == img_i)
            crops[sel] = cut(grays[img_i], maps[sel], spec.input_size)
        out = np.empty((len(windows), 2 * len(spec.points)), np.float64)
        for start in range(0, len(windows), batch_size):
            out[start:start + batch_size] = self._forward(
                name, standardise(crops[start:start + batch_size], spec.input_size))
        return geo.to_abs(out.reshape(len(windows), len(spec.points), 2), windows)

    def _forward(self, name: str, x: np.ndarray) -> np.ndarray:
        """Raw outputs ``(b, 2k)`` of net ``name`` on standardised crops ``x`` (b, 1, H, W).

        The only backend-specific step of inference: a subclass running the nets
        elsewhere (e.g. :class:`facecascade.export.OnnxCascade`) overrides this alone.
        """
        import torch

        with torch.no_grad():
            return self.nets[name](torch.from_numpy(x).to(self.device)).cpu().numpy()

    def predict(self, images: Sequence[np.ndarray], boxes: np.ndarray,
                image_index: np.ndarray | None = None, *, levels: int | None = None,
                batch_size: int = 1024) -> dict[int, np.ndarray]:
        """Points of every level for faces given by their detector boxes.

        Parameters
        ----------
        images : sequence of uint8 arrays
            Grey ``(H, W)`` or BGR ``(H, W, 3)`` images.
        boxes : array (n, 4)
            One detector box per face (left, top, right, bottom) in its image's pixels.
        image_index : array (n,), optional
            Index into ``images`` of each face; by default face ``i`` is in image ``i``.
        levels : int, optional
            Stop after this many levels (default: all of the cascade's).

        Returns
        -------
        dict
            ``{1: (n, 5, 2), 2: ..., 3: ...}`` absolute points after each level.
        """
        boxes = check_boxes(boxes)
        n = len(boxes)
        image_index = np.arange(n) if image_index is None else np.asarray(image_index, int)
        if image_index.shape != (n,) or (n and (image_index.min() < 0
                                                or image_index.max() >= len(images))):
            raise ValueError(f"image_index must have shape ({n},) with values in "
                             f"[0, {len(images)}), got {image_index!r}")
        levels = self.levels if levels is None else levels
        if not 1 <= levels <= self.levels:
            raise ValueError(f"levels == {levels}, this cascade has {self.levels}")
        from .images import to_gray

        grays = [to_gray(np.asarray(im)) for im in images]
        frames = face_frame(boxes, self.cfg.frame.scale)
        result: dict[int, np.ndarray] = {}
        prev = None
        for k in range(1, levels + 1):
            prev = result[k] = self.predict_level(k, grays, image_index, frames, prev,
                                                  batch_size=batch_size)
        return result

    def predict_level(self, level: int, grays: Sequence[np.ndarray], image_index: np.ndarray,
                      frames: np.ndarray, prev: np.ndarray | None, *,
                      batch_size: int = 1024) -> np.ndarray:
        """Points ``(n, 5, 2)`` after ``level``, from the previous level's points ``prev``.

        Level 1 fuses F1, EN1 and NM1 with the eq. 4 weights of
        ``level1.model.fusion``; levels 2 and 3 average each point's pair of nets and keep
        a share ``model.keep`` of ``prev``: ``(1 - keep) * average + keep * prev``.
        ``frames`` are the faces' canonical frames (:func:`facecascade.frame.face_frame`);
        levels 2 and 3 size their windows by :func:`facecascade.crops.patch_frames`, and
        faces too small for a level's windows keep ``prev``
        (:func:`facecascade.crops.refined_faces`).
        """
        if level not in self.levels_available:
            raise ValueError(f"level == {level}, this cascade has levels 1..{self.levels}")
        gated = self._gate(level, grays, image_index, frames, prev, batch_size)
        if gated is not None:
            return gated
        if level > 1 and prev is not None:
            frames = patch_frames(frames, prev, self.cfg)
        n = len(frames)
        acc = np.zeros((n, 5, 2))
        weight = np.zeros(5)
        for name in level_nets(level):
            spec = get_spec(name)
            w = self.cfg.level1.model.fusion[name] if level == 1 else 1.0
            windows = net_windows(spec, frames, self.cfg, prev)
            acc[:, list(spec.points)] += w * self._run(name, grays, image_index, windows,
                                                       batch_size)
            weight[list(spec.points)] += w
        points = acc / weight[None, :, None]
        if level > 1 and self.cfg.level(level).model.keep > 0:
            keep = self.cfg.level(level).model.keep
            points = (1.0 - keep) * points + keep * np.asarray(prev, np.float64)
        return points

    def _gate(self, level: int, grays: Sequence[np.ndarray], image_index: np.ndarray,
              frames: np.ndarray, prev: np.ndarray | None, batch_size: int,
              ) -> np.ndarray | None:
        """``level``'s points when some faces are too small for it (they keep ``prev``, the
        others run through :meth:`predict_level`); ``None`` when every face is refined."""
        if level == 1 or prev is None or self.cfg.level(level).crops.min_window_px <= 0:
            return None  # nothing to gate (and no extra work on the single-face path)
        prev = np.asarray(prev, np.float64)
        refine = refined_faces(level, patch_frames(frames, prev, self.cfg), self.cfg)
        if refine.all():
            return None
        out = prev.copy()
        if refine.any():
            out[refine] = self.predict_level(level, grays, np.asarray(image_index)[refine],
                                             np.asarray(frames)[refine], prev[refine],
                                             batch_size=batch_size)
        return out

    @property
    def levels_available(self) -> range:
        """The levels this cascade can run (``range(1, levels + 1)``)."""
        return range(1, self.levels + 1)


def save_cascade(cascade: Cascade, path: str | Path, *, extra: Mapping[str, Any] | None = None,
                 graphs: bool = True) -> Path:
    """Write the cascade artifact directory atomically.

    ``manifest.json`` and ``weights.pt``, and with ``graphs`` the fast path's level
    graphs and their index (``graphs/``, :meth:`facecascade.fastpath.FastCascade.write_graphs`,
    :func:`facecascade.fastpath.write_graph_index`), so that loading the artifact
    neither exports them again nor needs PyTorch.
    """
    import torch

    from .fastpath import GRAPH_DIR, FastCascade, file_digest, params_digest, write_graph_index

    path = Path(path)
    manifest = cascade.manifest
    if extra:
        manifest["extra"] = dict(extra)
    with atomic_path(path, directory=True) as tmp:
        torch.save({n: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                    for n, net in cascade.nets.items()}, tmp / "weights.pt")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n",
                                           encoding="utf-8")
        if graphs:
            saved = FastCascade.from_cascade(cascade).write_graphs(tmp / GRAPH_DIR)
            write_graph_index(tmp / GRAPH_DIR, saved,
                              weights_sha256=file_digest(tmp / "weights.pt"),
                              params_sha256=params_digest(manifest))
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check the manifest of a cascade artifact directory.

    Every problem is a one-line error naming ``manifest.json`` (and the JSON line).
    """
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise FileNotFoundError(f"{path}: not a cascade artifact (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{mf}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
                         ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{mf}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{mf}: must hold a JSON object, not {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{mf}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{mf}: version {manifest.get('version')!r}, "
                         f"this facecascade reads {MANIFEST_VERSION}")
    levels = manifest.get("levels")
    if isinstance(levels, bool) or levels not in (1, 2, 3):
        raise ValueError(f"{mf}: levels == {levels!r}, must be 1, 2 or 3")
    if not isinstance(manifest.get("params"), dict):
        raise ValueError(f"{mf}: params must be a JSON object (the params.yaml it was "
                         "trained with)")
    manifest_config(manifest, mf)
    return manifest


def manifest_config(manifest: Mapping[str, Any], where: str | Path) -> Config:
    """The :class:`Config` of a manifest's ``params``; a ValueError naming ``where``."""
    try:
        return config_from_dict(manifest["params"])
    except ConfigError as exc:
        raise ValueError(f"{where}: params: {exc}") from None


def _fitted_weights(state: Any, name: str, cfg: Config, where: Path) -> dict[str, torch.Tensor]:
    """``state`` checked to be a state dict that fits network ``name``: a one-line
    ValueError naming ``where`` (the weights file) and the first key that does not fit."""
    import torch

    from .nets import create_net

    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{where}: the weights of {name} are not a state dict of tensors")
    want = create_net(name, dropout=0.0, **net_options(name, cfg)).state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise ValueError(f"{where}: the weights of {name} do not fit the network: "
                         + (f"missing {missing[:3]}" if missing else "")
                         + ("; " if missing and extra else "")
                         + (f"unexpected {extra[:3]}" if extra else ""))
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{where}: the weights of {name} do not fit the network: {k} has "
                             f"shape {list(state[k].shape)}, {name} needs {list(v.shape)}")
    return dict(state)


def load_cascade(path: str | Path, *, device: str | torch.device | None = None,
                 fast: bool = True) -> Cascade:
    """Load a cascade artifact directory; weights only, never arbitrary pickles.

    A broken or hostile artifact gets a one-line ValueError naming the file at fault.
    By default the cascade runs on the fast path (:class:`facecascade.fastpath.FastCascade`:
    fused level graphs on vectorised crops); ``fast=False`` gives the reference
    :class:`Cascade`. When the artifact's saved graphs match its weights and params
    (:func:`facecascade.fastpath.read_graph_index`), the fast path runs from them and
    ``weights.pt`` is read (with PyTorch) only if the networks are asked for; it was
    checked when the graphs were saved, and its SHA-256 is checked now.
    """
    path = Path(path)
    manifest = read_manifest(path)
    cfg, levels = manifest_config(manifest, path / "manifest.json"), int(manifest["levels"])
    wf = path / "weights.pt"
    if fast:
        from .fastpath import GRAPH_DIR, FastCascade, read_graph_index

        saved = read_graph_index(path, manifest)
        weights: Mapping[str, Any] = (_read_weights(wf, cfg, levels) if saved is None
                                      else _WeightsFile(wf, cfg, levels))
        return FastCascade(cfg, weights, levels=levels, device=device, graphs=path / GRAPH_DIR,
                           saved=saved)
    return Cascade(cfg, _read_weights(wf, cfg, levels), levels=levels, device=device)


def _read_weights(wf: Path, cfg: Config, levels: int) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts of a cascade's weights file, each checked to fit its network."""
    weights = load_tensors(wf, "cascade weights file")
    if not isinstance(weights, Mapping):
        raise ValueError(f"{wf}: must map network names to state dicts, "
                         f"not {type(weights).__name__}")
    needed = cascade_nets(levels)
    missing = [n for n in needed if n not in weights]
    if missing:
        raise ValueError(f"{wf}: no weights for {missing} (the manifest says {levels} level(s))")
    return {n: _fitted_weights(weights[n], n, cfg, wf) for n in needed}


class _WeightsFile(Mapping):
    """The weights of a cascade's nets in a weights file, read (:func:`_read_weights`) on
    first access of a net's weights; names and membership need no reading."""

    def __init__(self, path: Path, cfg: Config, levels: int) -> None:
        self.path, self.cfg, self.levels = path, cfg, levels
        self._names = cascade_nets(levels)

    @functools.cached_property
    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return _read_weights(self.path, self.cfg, self.levels)

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._names:
            raise KeyError(name)
        return self._weights[name]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def cascade_from_weight_files(cfg: Config, weight_dirs: Sequence[str | Path], *,
                              levels: int) -> Cascade:
    """Build a cascade from per-level directories of ``{net}.pt`` state dicts."""
    weights: dict[str, Any] = {}
    for k, d in zip(range(1, levels + 1), weight_dirs, strict=False):
        for name in level_nets(k):
            f = Path(d) / f"{name}.pt"
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing weights of {name} (level {k})")
            weights[name] = _fitted_weights(load_tensors(f, f"weights file of {name}"),
                                            name, cfg, f)
    return Cascade(cfg, weights, levels=levels)
